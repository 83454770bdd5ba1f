"""Issue 14 item 5: a cache entry's meta is read only if it is a regular file
of at most 1 MiB, never through a link.  Each planted meta below hung a start
(a FIFO: 10 minutes, deaf to SIGTERM), ran it out of memory (a link to
/dev/zero) or cost hundreds of MB (a huge meta) before; now each is a bad
entry: a warning, the entry removed, a rebuild that is cached again."""
import os
import time

import pytest

from helpers import chown_tree
from test_trust import entry_dir, sql_project, start


def cached_key(work, cfg):
    r, _ = start(work, cfg, "data0")
    key = work.key(config=cfg)
    assert os.path.exists(os.path.join(entry_dir(work), key + ".meta")), r
    return key


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "huge"])
def test_planted_meta_is_a_bad_entry_rebuilt_in_bounded_time(work, kind):
    cfg = sql_project(work)
    key = cached_key(work, cfg)
    meta = os.path.join(entry_dir(work), key + ".meta")
    os.unlink(meta)
    if kind == "fifo":
        os.mkfifo(meta, 0o600)
    elif kind == "dev-zero-link":
        os.symlink("/dev/zero", meta)
    else:
        with open(meta, "wb") as f:
            f.truncate(300 * 1024 * 1024)   # sparse: 300 MB that read as zeros
    chown_tree(work.cache)
    t0 = time.time()
    r, _ = start(work, cfg, "data1")
    took = time.time() - t0
    assert took < 60, f"{kind}: the start took {took:.0f} s"
    assert f"removing bad cache entry {key[:12]}" in r.stderr, r
    why = {"fifo": "it is not a regular file", "dev-zero-link": "it is a symbolic link",
           "huge": "it is larger than any file of this kind can be"}[kind]
    assert why in r.stderr, r
    assert "cache miss" in r.stderr and "cached" in r.stderr, r
    # The rebuild replaced it with a real entry: the next start is a hit.
    assert os.path.isfile(meta) and not os.path.islink(meta) and os.path.getsize(meta) < 1024 * 1024
    r, _ = start(work, cfg, "data2")
    assert f"cache hit {key[:12]}" in r.stderr, r
