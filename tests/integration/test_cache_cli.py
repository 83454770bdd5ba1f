"""The cache as users see it through the binary: ls, verify, prune, and a
corrupted or hostile entry met by a real start (issue 3's "Must hold")."""
import glob
import io
import json
import os
import re
import tarfile
import time

import pytest

from helpers import PG_BINDIR, chown_tree


def sql_project(work, name="proj", tables=("a",)):
    """A tiny repo whose migrations are .sql files applied by psql: fast, real."""
    root = os.path.join(work.path, name)
    for i, t in enumerate(tables):
        work.file(f"{name}/migrations/{i:04d}_{t}.sql", f"create table {t} (id int primary key, v text);\n")
    run = ("/bin/sh -c 'for f in migrations/*.sql; do psql -X -q -v ON_ERROR_STOP=1 -f \"$f\" || exit 1; done'")
    cfg = work.file(f"{name}.ini",
                    "[database]\nname = app\n"
                    f"[step sql]\nroot = {root}\nmigrations = migrations/*.sql\nrun = {run}\n")
    return cfg


def env_for(work, pgdata):
    return {"PGDATA": pgdata, "PGSTASH_SOCKET_DIR": work.sock}


def prepare(work, cfg, pgdata_name):
    pgdata = os.path.join(work.path, pgdata_name)
    r = work.run("prepare", config=cfg, env=env_for(work, pgdata))
    return r, pgdata


def entry_files(work):
    d = os.path.join(work.cache, "pgstash-v1")
    return sorted(p for p in glob.glob(os.path.join(d, "*")) if not os.path.basename(p).startswith("."))


def test_ls_verify_after_miss(work):
    cfg = sql_project(work)
    r, _ = prepare(work, cfg, "pg1")
    assert r.rc == 0, r
    assert "cache miss" in r.stderr
    key = work.key(config=cfg)
    ls = work.run("ls", config=cfg)
    assert ls.rc == 0, ls
    assert key in ls.stdout and "schema" in ls.stdout and "15." in ls.stdout
    js = work.run("ls", "--json", config=cfg)
    assert js.rc == 0, js
    entries = json.loads(js.stdout)
    assert len(entries) == 1
    e = entries[0]
    assert e["key"] == key and e["layer"] == "schema"
    assert e["archive_bytes"] > 0 and e["pgdata_bytes"] > e["archive_bytes"]
    assert e["pg_version"].startswith("15")
    v = work.run("verify", config=cfg)
    assert v.rc == 0, v
    assert f"ok {key}" in v.stdout
    # A key that is not 64 hex characters is a usage error.
    bad = work.run("verify", "xyz", config=cfg)
    assert bad.rc == 2, bad


def test_verify_key_prefix(work):
    """verify takes what ls shows in short: a unique key prefix of 4 or more hex digits."""
    cfg = sql_project(work)
    r, _ = prepare(work, cfg, "pg1")
    assert r.rc == 0, r
    key = work.key(config=cfg)
    for prefix in (key[:4], key[:12], key):
        v = work.run("verify", prefix, config=cfg)
        assert v.rc == 0, v
        assert v.stdout.strip() == f"ok {key}", v
    # Too short, not hex, uppercase, too long: usage errors, before any cache access.
    for arg in (key[:3], "zzzz", "ABCD", key + "0"):
        u = work.run("verify", arg, config=cfg)
        assert u.rc == 2, (arg, u)
        assert "not a key or key prefix" in u.stderr, u
    # A prefix that matches nothing is a bad entry, not a usage error.
    other = "0123" if not key.startswith("0123") else "4567"
    n = work.run("verify", other, config=cfg)
    assert n.rc == 1, n
    assert f"BAD {other}: no such entry" in n.stdout, n
    # Two entries sharing a prefix: the prefix is ambiguous (an error), each full key is fine.
    d = os.path.join(work.cache, "pgstash-v1")
    twin = key[:4] + ("0" if key[4] != "0" else "1") + key[5:]
    for suffix in (".meta", ".tar.zst"):
        src = os.path.join(d, key + suffix)
        data = open(src, "rb").read()
        if suffix == ".meta":
            data = data.replace(key.encode(), twin.encode())
        open(os.path.join(d, twin + suffix), "wb").write(data)
    a = work.run("verify", key[:4], config=cfg)
    assert a.rc == 1, a
    assert f"BAD {key[:4]}: ambiguous key prefix" in a.stdout, a
    both = work.run("verify", key[:5], twin[:5], config=cfg)
    assert both.rc == 1, both
    # The twin is a copy under a key its manifest does not yield (issue 14): bad.
    assert f"ok {key}" in both.stdout, both
    assert f"BAD {twin}: its key is not the SHA-256 of its manifest" in both.stdout, both


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta-digest"])
def test_damaged_entry_detected_then_rebuilt(work, damage):
    cfg = sql_project(work)
    r, _ = prepare(work, cfg, "pg1")
    assert r.rc == 0 and "cache miss" in r.stderr, r
    key = work.key(config=cfg)
    archive = [p for p in entry_files(work) if p.endswith(".tar.zst")][0]
    meta = archive[: -len(".tar.zst")] + ".meta"
    size = os.path.getsize(archive)
    if damage == "flip":
        flip_byte(archive, size // 2)
    elif damage == "truncate":
        os.truncate(archive, size // 2)
    else:
        text = open(meta).read()
        m = re.search(r"archive_sha256 = ([0-9a-f]{64})", text)
        assert m, text
        text = text.replace(m.group(1), "0" * 64)
        open(meta, "w").write(text)
    v = work.run("verify", config=cfg)
    assert v.rc == 1, v
    assert "BAD" in v.stdout or "BAD" in v.stderr
    # The next start detects it before any server runs, removes it, rebuilds.
    r2, pg2 = prepare(work, cfg, "pg2")
    assert r2.rc == 0, r2
    assert "warning" in r2.stderr
    assert "cache miss" in r2.stderr and "cache hit" not in r2.stderr
    assert not os.path.exists(os.path.join(pg2, "postmaster.pid"))
    assert work.sql("select count(*) from pg_tables where tablename = 'a'", db="app", pgdata=pg2) == "1"
    v2 = work.run("verify", config=cfg)
    assert v2.rc == 0 and f"ok {key}" in v2.stdout, v2


def test_hostile_archive_with_matching_digest(work):
    """An entry whose digest is right but whose content escapes: refused, nothing outside PGDATA."""
    cfg = sql_project(work)
    r, _ = prepare(work, cfg, "pg1")
    assert r.rc == 0, r
    archive = [p for p in entry_files(work) if p.endswith(".tar.zst")][0]
    meta = archive[: -len(".tar.zst")] + ".meta"
    # Rebuild the archive uncompressed with an escaping entry, and make the meta agree with it.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = b"13\n"
        ti = tarfile.TarInfo("PG_VERSION")
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("../escaped")
        ti.size = 3
        t.addfile(ti, io.BytesIO(b"bad"))
        ti = tarfile.TarInfo("link")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "/etc"
        t.addfile(ti)
    raw = buf.getvalue()
    import hashlib
    digest = hashlib.sha256(raw).hexdigest()
    tar_path = archive[: -len(".zst")]
    os.unlink(archive)
    with open(tar_path, "wb") as f:
        f.write(raw)
    text = open(meta).read()
    text = re.sub(r"archive_sha256 = [0-9a-f]{64}", f"archive_sha256 = {digest}", text)
    text = re.sub(r"archive_bytes = \d+", f"archive_bytes = {len(raw)}", text)
    text = re.sub(r"compression = \w+", "compression = none", text)
    open(meta, "w").write(text)
    chown_tree(work.cache)
    r2, pg2 = prepare(work, cfg, "pg2")
    assert r2.rc == 0, r2
    assert "cache miss" in r2.stderr and "cache hit" not in r2.stderr
    assert not os.path.exists(os.path.join(work.path, "escaped"))
    assert not os.path.islink(os.path.join(pg2, "link"))


def test_prune_lru_and_dry_run(work):
    cfgs = [sql_project(work, name=f"p{i}", tables=(f"t{i}",)) for i in range(3)]
    keys = []
    for i, cfg in enumerate(cfgs):
        r, _ = prepare(work, cfg, f"pg{i}")
        assert r.rc == 0 and "cache miss" in r.stderr, r
        keys.append(work.key(config=cfg))
        time.sleep(1.1)
    assert len(set(keys)) == 3
    # Use the first again: it becomes the most recently used (last_used has
    # one-second resolution, so step past the second the builds ended in).
    time.sleep(1.1)
    r, _ = prepare(work, cfgs[0], "pg-again")
    assert r.rc == 0 and "cache hit" in r.stderr, r
    dry = work.run("prune", "--max-entries=1", "--dry-run", config=cfgs[0])
    assert dry.rc == 0, dry
    assert len([p for p in entry_files(work) if p.endswith(".meta")]) == 3
    assert keys[1][:12] in dry.stdout and keys[2][:12] in dry.stdout
    pr = work.run("prune", "--max-entries=1", config=cfgs[0])
    assert pr.rc == 0, pr
    metas = [os.path.basename(p) for p in entry_files(work) if p.endswith(".meta")]
    assert metas == [keys[0] + ".meta"], metas
    bad = work.run("prune", "--max-bytes=lots", config=cfgs[0])
    assert bad.rc == 2, bad


def test_unusable_cache_still_starts(work):
    cfg = sql_project(work)
    blocker = work.file("not-a-dir", "x")
    pgdata = os.path.join(work.path, "pg1")
    r = work.run("prepare", config=cfg,
                 env={"PGDATA": pgdata, "PGSTASH_SOCKET_DIR": work.sock, "PGSTASH_CACHE_DIR": blocker})
    assert r.rc == 0, r
    assert "warning" in r.stderr and "not-a-dir" in r.stderr
    assert work.sql("select count(*) from pg_tables where tablename = 'a'", db="app", pgdata=pgdata) == "1"
    assert open(blocker).read() == "x"


def test_stale_private_dirs_of_dead_runs_are_swept(work):
    """A pgstash killed with -9 leaves its socket/log directories in TMPDIR;
    the next start removes those whose pid is gone, and no others."""
    cfg = sql_project(work)
    # A short TMPDIR: pgstash ignores one too long for socket paths.
    import tempfile
    tmpdir = tempfile.mkdtemp(prefix="pgs-", dir="/tmp")
    dead = os.path.join(tmpdir, "pgstash-srv-999999-abcdef")   # no such pid (pid_max is lower)
    alive = os.path.join(tmpdir, f"pgstash-srv-{os.getpid()}-ghijkl")  # the test runner: alive
    other = os.path.join(tmpdir, "pgstash-unrelated")
    for d in (dead, alive, other):
        os.makedirs(d)
    with open(os.path.join(dead, "server.log"), "w") as f:
        f.write("old")
    chown_tree(tmpdir)
    pgdata = os.path.join(work.path, "pg1")
    r = work.run("prepare", config=cfg, env={"PGDATA": pgdata, "PGSTASH_SOCKET_DIR": work.sock, "TMPDIR": tmpdir})
    assert r.rc == 0, r
    assert not os.path.exists(dead)
    assert os.path.isdir(alive) and os.path.isdir(other)
    # Nothing of this run is left behind either.
    try:
        assert sorted(os.listdir(tmpdir)) == sorted([os.path.basename(alive), "pgstash-unrelated"])
    finally:
        import shutil
        shutil.rmtree(tmpdir, ignore_errors=True)
