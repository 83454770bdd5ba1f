"""The README's "On a host" recipe, its exact lines taken from README.md and
run by bash in the directory of a pgstash.ini (a copy of examples/): once as
root (pgstash gives the directories to postgres and drops to it) and once as
that unprivileged user.  Both: prepare is a miss that caches, `run -p 5433 &`
reuses the prepared PGDATA and the server answers, the cache holds the entry.
TMPDIR points into the test's work dir, so the recipe's ${TMPDIR:-/tmp} paths
are private to the test.

Also: a cache dir the postgres user cannot reach, as root, is an error that
says what to do (exit 1), never a quiet start without caching.
"""
import glob
import os
import subprocess

import pytest

import readme
from helpers import IS_ROOT, PG_BINDIR, RUN_USER, USER_IDS, chown_tree, need

PORT = 5433


def recipe():
    blocks = readme.code_blocks("On a host (CI without Docker)")
    lines = readme.shell_lines(blocks[0])
    assert len(lines) == 3 and lines[-1].endswith("&"), f"README's host recipe is now {lines}"
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("who", ["root", "user"])
def test_readme_host_recipe(work, examples, who):
    if who == "root":
        need(IS_ROOT and USER_IDS is not None, f"needs root and a \"{RUN_USER}\" user")
    need(PG_BINDIR is not None, "no PostgreSQL")
    tmp = os.path.join(work.path, "tmp")
    os.makedirs(tmp, mode=0o755)
    chown_tree(tmp)
    lines = recipe()
    script = "\n".join(["set -e", f"cd {os.path.dirname(examples)}", *lines, "server=$!",
                        "trap 'kill -TERM $server 2>/dev/null; wait $server' EXIT",
                        "for i in $(seq 1 600); do pgstash healthcheck 2>/dev/null && break; sleep 0.1; done",
                        "pgstash healthcheck",
                        f"psql -X -h \"$PGSTASH_SOCKET_DIR\" -p {PORT} -U postgres -d app -Atc "
                        "'SELECT count(*) FROM django_migrations'"])
    env = {"PATH": f"{os.path.dirname(work.binary)}:{PG_BINDIR}:/usr/bin:/bin", "HOME": work.path,
           "LANG": "C.UTF-8", "TMPDIR": tmp}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    cmd = ["bash", "-c", script]
    if IS_ROOT and who == "user":
        cmd = ["/usr/sbin/runuser", "-u", RUN_USER, "--"] + cmd
    elif not IS_ROOT and who == "root":
        pytest.skip("not root")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"the README's host recipe failed as {who} (exit {r.returncode}):\n{out}"
    assert "cache miss" in out and "not usable" not in out, out
    assert "nothing to restore or migrate" in out, out  # run reused what prepare made
    assert int(r.stdout.strip().splitlines()[-1]) > 0, out
    assert glob.glob(os.path.join(tmp, "pgstash-cache", "pgstash-v1", "*.meta")), out


@pytest.mark.slow
def test_unreachable_cache_dir_as_root_is_an_error(work, examples):
    need(IS_ROOT and USER_IDS is not None, f"needs root and a \"{RUN_USER}\" user")
    hidden = os.path.join(work.path, "private")
    os.makedirs(hidden, mode=0o700)  # root's, like /root: postgres cannot search it
    r = work.run("prepare", config=examples, as_root=True,
                 env={"PGSTASH_CACHE_DIR": os.path.join(hidden, "cache")}, timeout=120)
    assert r.rc == 1, r
    assert "is not reachable for the postgres user" in r.stderr and "chmod o+x" in r.stderr, r
    assert "going on without caching" not in r.stderr, r
