"""Issue 14, signed entries and the integrity of the key: whoever can write the
cache (a volume, a CI cache directory, a bucket) cannot make a job that sets
trusted_keys run their entry.  Each attack is forged as the issue did it: a
real entry of another project (an extra table standing for a backdoor) planted
under the victim's key, with the victim's own manifest in its meta."""
import os
import re
import shutil
import stat

import pytest

from helpers import chown_tree
from test_remote import fleet, s3_server  # noqa: F401  (pytest fixtures)


def sql_project(work, name="proj", tables=("a",), incremental=False, fixtures=None):
    """Migrations as .sql files applied by psql (idempotent, so a prefix can be reused)."""
    root = os.path.join(work.path, name)
    for i, t in enumerate(tables):
        work.file(f"{name}/migrations/{i:04d}_{t}.sql", f"create table if not exists {t} (id int primary key);\n")
    run = ("/bin/sh -c 'for f in migrations/*.sql; do psql -X -q -v ON_ERROR_STOP=1 -f \"$f\" || exit 1; done'")
    ini = ("[database]\nname = app\n"
           f"[step sql]\nroot = {root}\nmigrations = migrations/*.sql\nrun = {run}\n"
           f"incremental = {'yes' if incremental else 'no'}\n")
    if fixtures:
        work.file(f"{name}/fixtures/f.sql", f"insert into {tables[0]} values ({fixtures});\n")
        ini += (f"[step fix]\nroot = {root}\nmigrations = fixtures/*.sql\nlayer = fixtures\n"
                "run = /bin/sh -c 'psql -X -q -v ON_ERROR_STOP=1 -f fixtures/f.sql'\n")
    return work.file(f"{name}.ini", ini)


def keygen(work, name):
    r = work.run("keygen", os.path.join(work.path, name))
    assert r.rc == 0, r
    priv, pub, fp = r.stdout.split()
    return priv, pub, fp


def start(work, cfg, pgdata_name, signing=None, trusted=(), cache=None, **extra):
    pgdata = os.path.join(work.path, pgdata_name)
    env = {"PGDATA": pgdata, "PGSTASH_SOCKET_DIR": work.sock}
    if signing:
        env["PGSTASH_SIGNING_KEY_FILE"] = signing
    if trusted:
        env["PGSTASH_TRUSTED_KEYS"] = " ".join(trusted)
    if cache:
        env["PGSTASH_CACHE_DIR"] = cache
    env.update(extra)
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0, r
    return r, pgdata


def entry_dir(work, cache=None):
    return os.path.join(cache or work.cache, "pgstash-v1")


def meta_text(work, key, cache=None):
    with open(os.path.join(entry_dir(work, cache), key + ".meta")) as f:
        return f.read()


def write_meta(work, key, text, cache=None):
    p = os.path.join(entry_dir(work, cache), key + ".meta")
    with open(p, "w") as f:
        f.write(text)
    chown_tree(cache or work.cache)


def field(text, name):
    return re.search(rf"^{name} = (.*)$", text, re.M).group(1)


def set_field(text, name, value):
    return re.sub(rf"^{name} = .*$", f"{name} = {value}", text, flags=re.M)


def plant(work, victim_key, evil_key, cache=None):
    """Puts evil_key's archive under victim_key, with a meta claiming the
    victim's key and manifest (its own digest, size, signature)."""
    d = entry_dir(work, cache)
    victim = meta_text(work, victim_key, cache)
    evil = meta_text(work, evil_key, cache)
    shutil.copyfile(os.path.join(d, evil_key + ".tar.zst"), os.path.join(d, victim_key + ".tar.zst"))
    manifest = "".join(l + "\n" for l in victim.splitlines() if l.startswith("manifest = "))
    head = "".join(l + "\n" for l in evil.splitlines() if not l.startswith("manifest = "))
    write_meta(work, victim_key, set_field(head, "key", victim_key) + manifest, cache)


def has_table(work, pgdata, table, password=None):
    """`password`: the cluster's, when it was started with one (host mode then asks for it on the socket)."""
    return work.sql(f"select count(*) from pg_tables where tablename = '{table}'", db="app", pgdata=pgdata,
                    password=password) == "1"


def forged_cache(work, signing=None):
    """The victim's entry, then the attacker's entry (an extra table) planted under the victim's key."""
    cfg = sql_project(work)
    evil_cfg = sql_project(work, name="evil", tables=("a", "backdoor"))
    start(work, cfg, "pg-victim", signing=signing)
    start(work, evil_cfg, "pg-evil", signing=signing)
    key, evil_key = work.key(config=cfg), work.key(config=evil_cfg)
    plant(work, key, evil_key)
    return cfg, key


def test_verbose_hit_logs_the_signature_check_and_its_cost(work):
    """bench/ reads this line for issue 14's "verification costs <= 5 ms per hit"."""
    priv, pub, fp = keygen(work, "ci")
    cfg = sql_project(work)
    start(work, cfg, "pg1", signing=priv)
    key = work.key(config=cfg)
    env = {"PGDATA": os.path.join(work.path, "pg2"), "PGSTASH_SOCKET_DIR": work.sock, "PGSTASH_TRUSTED_KEYS": pub}
    r = work.run("-v", "prepare", config=cfg, env=env)
    assert r.rc == 0 and "cache hit" in r.stderr, r
    m = re.search(rf"debug: signature of {key[:12]} by {fp[:16]} verified in ([\d.]+) ms", r.stderr)
    assert m and float(m.group(1)) < 1000, r
    # Without trusted_keys nothing is verified, so nothing is said.
    env = {"PGDATA": os.path.join(work.path, "pg3"), "PGSTASH_SOCKET_DIR": work.sock}
    r = work.run("-v", "prepare", config=cfg, env=env)
    assert r.rc == 0 and "cache hit" in r.stderr and "verified in" not in r.stderr, r


def test_keygen_writes_a_private_key_and_signs_builds(work):
    priv, pub, fp = keygen(work, "ci")
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert "BEGIN PUBLIC KEY" in open(pub).read()
    again = work.run("keygen", os.path.join(work.path, "ci"))
    assert again.rc != 0 and "ci.key" in again.stderr, again
    cfg = sql_project(work)
    start(work, cfg, "pg1", signing=priv)
    key = work.key(config=cfg)
    assert field(meta_text(work, key), "signer") == fp
    ls = work.run("ls", config=cfg)
    assert ls.rc == 0 and fp[:16] in ls.stdout, ls
    v = work.run("verify", config=cfg, env={"PGSTASH_TRUSTED_KEYS": pub})
    assert v.rc == 0 and f"ok {key}" in v.stdout, v
    r, _ = start(work, cfg, "pg2", trusted=[pub])
    assert "cache hit" in r.stderr, r
    # A config file sets the same through [trust].
    with open(cfg, "a") as f:
        f.write(f"[trust]\ntrusted_keys = {pub}\n")
    r, _ = start(work, cfg, "pg3")
    assert "cache hit" in r.stderr, r
    bad = work.run("key", config=cfg, env={"PGSTASH_TRUSTED_KEYS": priv})
    assert bad.rc == 0, bad  # key does not read keys; a start does
    r = work.run("prepare", config=cfg, env={"PGSTASH_TRUSTED_KEYS": priv, "PGDATA": os.path.join(work.path, "pg4"),
                                               "PGSTASH_SOCKET_DIR": work.sock})
    assert r.rc != 0 and "not a PEM Ed25519 public key" in r.stderr, r


def test_unsigned_forgery_is_refused_with_trusted_keys(work):
    priv, pub, fp = keygen(work, "ci")
    cfg, key = forged_cache(work)
    # Without trusted_keys the forgery (right manifest, right digest) is what a start gets: the attack.
    v = work.run("verify", config=cfg)
    assert v.rc == 0, v
    r, pg = start(work, cfg, "pg-trusting", trusted=[pub], signing=priv)
    assert f"cache entry {key[:12]}… is refused, not trusted: unsigned" in r.stderr, r
    assert "cache miss" in r.stderr and "cached" in r.stderr, r
    assert not has_table(work, pg, "backdoor")
    # The rebuild replaced it, signed: the next start is a hit.
    assert field(meta_text(work, key), "signer") == fp
    r, pg = start(work, cfg, "pg-next", trusted=[pub])
    assert "cache hit" in r.stderr, r
    assert not has_table(work, pg, "backdoor")


def test_entry_signed_by_another_key_is_refused(work):
    priv, pub, fp = keygen(work, "ci")
    apriv, apub, afp = keygen(work, "attacker")
    cfg, key = forged_cache(work, signing=apriv)
    r, pg = start(work, cfg, "pg", trusted=[pub], signing=priv)
    assert "not in trusted_keys" in r.stderr and afp[:16] in r.stderr, r
    assert not has_table(work, pg, "backdoor")
    # The forgery is gone; the rebuild is signed by the trusted key.
    v = work.run("verify", key, config=cfg, env={"PGSTASH_TRUSTED_KEYS": pub})
    assert v.rc == 0, v


@pytest.mark.parametrize("what", ["pgdata_bytes", "pg_version", "parent", "layer", "archive"])
def test_tampered_signed_entry_is_refused(work, what):
    priv, pub, fp = keygen(work, "ci")
    cfg = sql_project(work)
    evil_cfg = sql_project(work, name="evil", tables=("a", "backdoor"))
    start(work, cfg, "pg1", signing=priv)
    key = work.key(config=cfg)
    text = meta_text(work, key)
    if what == "pgdata_bytes":
        text = set_field(text, "pgdata_bytes", int(field(text, "pgdata_bytes")) + 1)
    elif what == "pg_version":
        text = set_field(text, "pg_version", "15.99")
    elif what == "parent":
        text = set_field(text, "parent", "f" * 64)
    elif what == "layer":
        text = set_field(text, "layer", "fixtures")
    else:
        # The attacker's archive with its own digest and size, under the victim's signature.
        start(work, evil_cfg, "pg-evil")
        evil = meta_text(work, work.key(config=evil_cfg))
        d = entry_dir(work)
        shutil.copyfile(os.path.join(d, work.key(config=evil_cfg) + ".tar.zst"), os.path.join(d, key + ".tar.zst"))
        for f in ("archive_sha256", "archive_bytes"):
            text = set_field(text, f, field(evil, f))
    write_meta(work, key, text)
    v = work.run("verify", key, config=cfg, env={"PGSTASH_TRUSTED_KEYS": pub})
    assert v.rc == 1 and "tampered" in v.stdout, v
    r, pg = start(work, cfg, "pg2", trusted=[pub], signing=priv)
    assert "does not match the entry (tampered)" in r.stderr, r
    assert "cache miss" in r.stderr, r
    assert not has_table(work, pg, "backdoor")
    r, _ = start(work, cfg, "pg3", trusted=[pub])
    assert "cache hit" in r.stderr, r


def test_key_rotation(work):
    old, old_pub, old_fp = keygen(work, "old")
    new, new_pub, new_fp = keygen(work, "new")
    cfg = sql_project(work)
    start(work, cfg, "pg1", signing=old)
    key = work.key(config=cfg)
    # Both trusted while the new key rolls out: the old entry is still a hit.
    r, _ = start(work, cfg, "pg2", signing=new, trusted=[old_pub, new_pub])
    assert "cache hit" in r.stderr, r
    # The old key retired: its entry is rebuilt and signed by the new one.
    r, _ = start(work, cfg, "pg3", signing=new, trusted=[new_pub])
    assert "not in trusted_keys" in r.stderr and "cache miss" in r.stderr, r
    assert field(meta_text(work, key), "signer") == new_fp
    r, _ = start(work, cfg, "pg4", trusted=[new_pub])
    assert "cache hit" in r.stderr, r


def test_key_must_be_its_manifests_digest(work):
    """Without any signing: a meta whose manifest does not hash to its key (or is
    not this start's) is refused and rebuilt."""
    cfg = sql_project(work)
    start(work, cfg, "pg1")
    key = work.key(config=cfg)
    text = meta_text(work, key)
    write_meta(work, key, text.replace("manifest = ", "manifest = x", 1))
    v = work.run("verify", key, config=cfg)
    assert v.rc == 1 and "not the SHA-256 of its manifest" in v.stdout, v
    r, _ = start(work, cfg, "pg2")
    assert f"cache entry {key[:12]}… is refused" in r.stderr and "cache miss" in r.stderr, r
    r, _ = start(work, cfg, "pg3")
    assert "cache hit" in r.stderr, r


def test_prefix_candidate_must_be_trusted(work):
    priv, pub, fp = keygen(work, "ci")
    cfg = sql_project(work, incremental=True)
    start(work, cfg, "pg1")  # unsigned: e.g. a fork's job wrote it
    old_key = work.key(config=cfg)
    work.file("proj/migrations/0001_b.sql", "create table if not exists b (id int primary key);\n")
    r, pg = start(work, cfg, "pg2", trusted=[pub], signing=priv)
    assert f"cache entry {old_key[:12]}… is not a prefix candidate, not trusted: unsigned" in r.stderr, r
    assert "building (initdb" in r.stderr and "starting from cached entry" not in r.stderr, r
    # A trusted prefix is reused.
    work.file("proj/migrations/0002_c.sql", "create table if not exists c (id int primary key);\n")
    r, pg = start(work, cfg, "pg3", trusted=[pub], signing=priv)
    assert "starting from cached entry" in r.stderr, r
    assert has_table(work, pg, "c")


def test_layer_parent_must_be_trusted(work):
    priv, pub, fp = keygen(work, "ci")
    cfg = sql_project(work, fixtures="1")
    start(work, cfg, "pg1")  # both layers unsigned
    entries = [f[:-5] for f in os.listdir(entry_dir(work)) if f.endswith(".meta")]
    assert len(entries) == 2
    key = work.key(config=cfg)
    schema_key = [k for k in entries if k != key][0]
    os.unlink(os.path.join(entry_dir(work), key + ".meta"))  # only the schema layer is left
    r, pg = start(work, cfg, "pg2", trusted=[pub], signing=priv)
    assert f"cache entry {schema_key[:12]}… is refused, not trusted: unsigned" in r.stderr, r
    assert f"schema layer {schema_key[:12]}: restored" not in r.stderr, r
    assert work.sql("select count(*) from a", db="app", pgdata=pg) == "1"
    for k in (key, schema_key):
        assert field(meta_text(work, k), "signer") == fp


def test_remote_forgery_is_refused(work, fleet):
    """Anyone with the bucket's key uploads an unsigned entry; a clean runner with trusted_keys builds instead,
    without downloading its archive: how large it is and so how long its download may take is the unsigned
    meta's word (a meta claiming 8 EiB, served slowly, held a start for ever; attacker's review)."""
    priv, pub, fp = keygen(work, "ci")
    cfg = fleet.config()
    r = work.run("prepare", config=cfg, env=fleet.runner_env("attacker"), timeout=180)
    assert r.rc == 0, r
    key = work.key(config=cfg)
    assert fleet.obj(key, ".meta") in fleet.objects()
    env = fleet.runner_env("clean", {"PGSTASH_TRUSTED_KEYS": pub, "PGSTASH_SIGNING_KEY_FILE": priv})
    r = work.run("prepare", config=cfg, env=env, timeout=180)
    assert r.rc == 0, r
    assert "is refused, not trusted: unsigned (not downloaded)" in r.stderr and "cache miss" in r.stderr, r
    assert "downloaded " not in r.stderr and "remote hit" not in r.stderr, r


# ---- cache_mode ------------------------------------------------------------------------------------------

def tree_state(path):
    """Every path under `path` with its size and mtime: what a read-only start must not change."""
    out = {}
    for d, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


def read_only_tree(path):
    for d, dirs, files in os.walk(path):
        for n in files:
            os.chmod(os.path.join(d, n), 0o444)
        os.chmod(d, 0o555)


def test_read_only_cache_is_used_and_never_written(work):
    priv, pub, fp = keygen(work, "ci")
    cfg = sql_project(work)
    start(work, cfg, "pg1", signing=priv)
    key = work.key(config=cfg)
    read_only_tree(work.cache)  # e.g. a read-only mount of the CI cache
    before = tree_state(work.cache)
    r, pg = start(work, cfg, "pg2", trusted=[pub], PGSTASH_CACHE_MODE="read-only")
    assert "cache hit" in r.stderr, r
    assert has_table(work, pg, "a")
    ls = work.run("ls", config=cfg, env={"PGSTASH_CACHE_MODE": "read-only"})
    assert ls.rc == 0 and key in ls.stdout, ls
    pr = work.run("prune", "--max-entries=0", config=cfg, env={"PGSTASH_CACHE_MODE": "read-only"})
    assert pr.rc != 0 and "read-only" in pr.stderr, pr
    # A miss builds, and stores nothing.
    work.file("proj/migrations/0001_b.sql", "create table if not exists b (id int primary key);\n")
    r, pg = start(work, cfg, "pg3", PGSTASH_CACHE_MODE="read-only", signing=priv)
    assert "cache miss" in r.stderr and "not cached" in r.stderr and "cached 1" not in r.stderr, r
    assert has_table(work, pg, "b")
    assert tree_state(work.cache) == before


def test_read_only_refuses_untrusted_entries_without_removing_them(work):
    priv, pub, fp = keygen(work, "ci")
    cfg, key = forged_cache(work)
    before = tree_state(work.cache)
    r, pg = start(work, cfg, "pg", trusted=[pub], PGSTASH_CACHE_MODE="read-only")
    assert "is refused, not trusted: unsigned" in r.stderr and "not cached" in r.stderr, r
    assert not has_table(work, pg, "backdoor")
    assert tree_state(work.cache) == before


def test_cache_mode_off_and_bad_values(work):
    cfg = sql_project(work)
    start(work, cfg, "pg1")
    before = tree_state(work.cache)
    r, _ = start(work, cfg, "pg2", PGSTASH_CACHE_MODE="off")
    assert "cache_mode = off" in r.stderr and "cache miss" in r.stderr and "not cached" in r.stderr, r
    assert tree_state(work.cache) == before
    bad = work.run("key", config=cfg, env={"PGSTASH_CACHE_MODE": "readonly"})
    assert bad.rc == 2 and "PGSTASH_CACHE_MODE" in bad.stderr and "read-only" in bad.stderr, bad
    with open(cfg, "a") as f:
        f.write("[pgstash]\ncache_mode = sometimes\n")
    bad = work.run("key", config=cfg)
    assert bad.rc == 2 and f"{cfg}:" in bad.stderr, bad


def test_read_only_runner_uses_the_remote_without_writing(work, fleet):
    """A fork's job: empty local cache, read-only mode: a signed remote entry is a hit, and neither the
    bucket nor the cache directory gains anything; an unsigned one is refused and built, not uploaded."""
    priv, pub, fp = keygen(work, "ci")
    cfg = fleet.config()
    r = work.run("prepare", config=cfg, env=fleet.runner_env("main", {"PGSTASH_SIGNING_KEY_FILE": priv}), timeout=180)
    assert r.rc == 0, r
    objects = fleet.objects()
    env = fleet.runner_env("fork", {"PGSTASH_TRUSTED_KEYS": pub, "PGSTASH_CACHE_MODE": "read-only"})
    r = work.run("prepare", config=cfg, env=env, timeout=180)
    assert r.rc == 0, r
    assert "remote hit" in r.stderr, r
    assert fleet.objects() == objects
    assert os.listdir(os.path.join(work.path, "cache-fork")) == []
    # Another project only an untrusted runner built: refused, built locally, nothing written.
    cfg2 = fleet.config(name="other", tables=("x",))
    r = work.run("prepare", config=cfg2, env=fleet.runner_env("untrusted"), timeout=180)
    assert r.rc == 0, r
    objects = fleet.objects()
    env = fleet.runner_env("fork2", {"PGSTASH_TRUSTED_KEYS": pub, "PGSTASH_CACHE_MODE": "read-only",
                                     "PGDATA": os.path.join(work.path, "pg-fork2")})
    r = work.run("prepare", config=cfg2, env=env, timeout=180)
    assert r.rc == 0, r
    assert "not trusted: unsigned" in r.stderr and "not cached" in r.stderr, r
    assert fleet.objects() == objects
    assert os.listdir(os.path.join(work.path, "cache-fork2")) == []


# ---- defence in depth: what a restored cluster may hold ------------------------------------------------------

def test_dangerous_settings_in_the_entry_are_refused(work):
    """A cluster whose postgresql.auto.conf (ALTER SYSTEM in a migration, or a forger) loads a library,
    archives and moves hba_file: the entry is refused at restore and rebuilt; nothing ran."""
    evil_hba = work.file("evil_hba.conf", "local all all trust\nhost all all all trust\n")
    marker = os.path.join(work.path, "archived")
    cfg = sql_project(work)
    work.file("proj/migrations/0001_evil.sql",
              "alter system set shared_preload_libraries = 'pgstash_no_such_lib';\n"
              "alter system set archive_mode = on;\n"
              f"alter system set archive_command = 'touch {marker}';\n"
              f"alter system set hba_file = '{evil_hba}';\n")
    start(work, cfg, "pg1")
    r, pg = start(work, cfg, "pg2", POSTGRES_PASSWORD="secret", POSTGRES_HOST_AUTH_METHOD=None)
    assert "postgresql.auto.conf line 3 sets shared_preload_libraries" in r.stderr, r
    assert "removing bad cache entry" in r.stderr and "cache miss" in r.stderr, r
    assert not os.path.exists(marker)


def forge_archive(work, key, pgdata, extra, gzip=False):
    """Re-tars `pgdata` plus `extra` {name: bytes} as key's archive (uncompressed, or gzip) and makes the
    meta agree."""
    import hashlib
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(pgdata)):
            if not name.startswith("pgstash.") and name != "postmaster.opts" and name not in extra:
                t.add(os.path.join(pgdata, name), arcname=name)
        for name, data in extra.items():
            if isinstance(data, SparseMap):
                ti, data = data.tarinfo(name)
            else:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    d = entry_dir(work)
    os.unlink(os.path.join(d, key + ".tar.zst"))
    with open(os.path.join(d, key + (".tar.gz" if gzip else ".tar")), "wb") as f:
        f.write(raw)
    text = meta_text(work, key)
    text = set_field(text, "archive_sha256", hashlib.sha256(raw).hexdigest())
    text = set_field(text, "archive_bytes", len(raw))
    text = set_field(text, "compression", "gzip" if gzip else "none")
    write_meta(work, key, text)
    return raw


class SparseMap:
    """A file stored as GNU tar's sparse 1.0 entry (what GNU tar and bsdtar write for a file with holes):
    `ranges` [(offset, length)] of a file of `size` bytes, their data taken in turn from `data`."""

    def __init__(self, size, ranges, data):
        self.size, self.ranges, self.data = size, ranges, data

    def tarinfo(self, name):
        import tarfile
        head, _, base = name.rpartition("/")
        m = ("%d\n" % len(self.ranges) + "".join("%d\n%d\n" % r for r in self.ranges)).encode()
        body = m + b"\0" * (-len(m) % 512) + self.data
        ti = tarfile.TarInfo(head + "/GNUSparseFile.0/" + base)
        ti.size = len(body)
        ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
                          "GNU.sparse.realsize": str(self.size)}
        return ti, body


def elf_library():
    """The start of a real shared object (what a forger would plant)."""
    with open("/usr/lib/x86_64-linux-gnu/libc.so.6", "rb") as f:
        return f.read(8192)


# What a forger adds to a real entry: {name: content}.  "padded": blanks before the setting so that a reader
# going 1 KiB at a time would see its name cut in two ("shared_preload_librar", "ies"), neither of them
# refused.  The rest are session 15's review: a library under a name the allowlist of top-level paths lets
# through (a catalog setting, ALTER ROLE ... SET session_preload_libraries = 'base/1/99999', would load it);
# Debian's extension_destdir, which puts a directory of PGDATA before every library and extension script
# (its library alone, or the setting alone, is refused); log_filename with "../", which makes the final
# server write its log, lines the forger's log_line_prefix starts, as a file outside PGDATA.
FORGED = {
    "recovery.signal": {"recovery.signal": b"x"},
    "standby.signal": {"standby.signal": b"x"},
    "backup_label": {"backup_label": b"x"},
    "extras/evil.so": {"extras/evil.so": b"x"},
    "pg_tblspc/16384/x": {"pg_tblspc/16384/x": b"x"},
    "postgresql.auto.conf": {"postgresql.auto.conf": b"shared_preload_libraries = 'extras/evil.so'\n"},
    "postgresql.auto.conf padded": {"postgresql.auto.conf": b" " * 1002 + b"shared_preload_libraries = 'x'\n"},
    "a library under base": {"base/1/99999": "ELF"},
    "extension_destdir": {"postgresql.auto.conf": b"extension_destdir = 'base/pg'\n",
                          "base/pg/usr/lib/postgresql/15/lib/plpgsql.so": "ELF"},
    "extension_destdir alone": {"postgresql.auto.conf": b"extension_destdir = 'base/pg'\n"},
    "log_filename": {"postgresql.auto.conf": b"logging_collector = on\nlog_filename = '../../outside/x'\n"},
    # Where the final server listens is this machine's: a forged '*' would put a host's trust-all
    # pg_hba.conf line (POSTGRES_HOST_AUTH_METHOD=trust, meant for loopback there) on the network.
    "listen_addresses": {"postgresql.auto.conf": b"listen_addresses = '*'\n"},
    "listen_addresses in postgresql.conf": {"postgresql.conf": b"listen_addresses = '*'\nport = 55432\n"},
    # A sparse map may list a range twice: a library, then four zeros over its magic (a hole, not written),
    # passed the check of a large file's first bytes (attacker's review of session 15's ELF check).
    "a library in a sparse map listed twice": {"base/1/99999": "ELF twice"},
    # An extension's setting is its module's own: plperl runs this Perl in each interpreter it starts.
    "plperl.on_init": {"postgresql.auto.conf": b"plperl.on_init = 'system(q{touch /tmp/owned})'\n"},
    "pgsodium.getkey_script": {"postgresql.auto.conf": b"pgsodium.getkey_script = 'base/1/k.sh'\n",
                               "base/1/k.sh": b"#!/bin/sh\ntouch /tmp/owned\n"},
}


@pytest.mark.parametrize("case", FORGED)
def test_files_that_are_not_a_clusters_are_refused(work, case):
    cfg = sql_project(work)
    r, pg1 = start(work, cfg, "pg1")
    key = work.key(config=cfg)
    def forged(data):
        if data == "ELF":
            return elf_library()
        if data == "ELF twice":
            return SparseMap(300000, [(0, 8192), (0, 4)], elf_library() + b"\0" * 4)
        return data

    extra = {name: forged(data) for name, data in FORGED[case].items()}
    forge_archive(work, key, pg1, extra)
    r, pg = start(work, cfg, "pg2")
    assert "refused" in r.stderr and "removing bad cache entry" in r.stderr and "cache miss" in r.stderr, r
    for name, data in extra.items():
        path = os.path.join(pg, name)
        if name.endswith(".conf"):
            assert data.strip() not in open(path, "rb").read()
        else:
            assert not os.path.exists(path)
    r, pg = start(work, cfg, "pg3")
    assert "cache hit" in r.stderr, r


@pytest.mark.parametrize("meta_bytes", ["declared", "zero"])
def test_expansion_bomb_is_a_bad_entry(work, meta_bytes):
    """A small archive (digest and size right) that expands far past its meta's pgdata_bytes: refused
    before the big file is written, removed, rebuilt; the rebuild is cached and the next start hits it.
    "zero": the meta claims pgdata_bytes = 0, which once meant "no cap"; now a bad meta."""
    cfg = sql_project(work)
    r, pg1 = start(work, cfg, "pg1")
    key = work.key(config=cfg)
    declared = int(field(meta_text(work, key), "pgdata_bytes"))
    raw = forge_archive(work, key, pg1, {"base/1/bomb": bytes(declared + (64 << 20))}, gzip=True)
    assert len(raw) < declared // 4
    if meta_bytes == "zero":
        write_meta(work, key, set_field(meta_text(work, key), "pgdata_bytes", 0))
    r, pg = start(work, cfg, "pg2")
    if meta_bytes == "zero":
        assert "bad pgdata_bytes" in r.stderr, r
    else:
        assert "expands past the size its meta declares" in r.stderr, r
    assert "removing bad cache entry" in r.stderr and "cache miss" in r.stderr, r
    assert re.search(r"cache miss .*, cached ", r.stderr), r
    assert not os.path.exists(os.path.join(pg, "base", "1", "bomb"))
    assert field(meta_text(work, key), "compression") == "zstd"
    r, pg = start(work, cfg, "pg3")
    assert "cache hit" in r.stderr, r
    assert has_table(work, pg, "a")


def test_unstartable_entry_is_removed_and_rebuilt(work):
    """A well-formed entry whose cluster does not start (global/pg_control garbage): the per-start step
    fails, the entry is removed and rebuilt once, the rebuild replaces it, and the start succeeds."""
    cfg = sql_project(work)
    r, pg1 = start(work, cfg, "pg1")
    key = work.key(config=cfg)
    broken = os.path.join(work.path, "broken")
    shutil.copytree(pg1, broken, symlinks=True)
    with open(os.path.join(broken, "global", "pg_control"), "r+b") as f:
        f.write(b"\xa5" * 8192)
    raw = forge_archive(work, key, broken, {})
    import hashlib
    forged_sha = hashlib.sha256(raw).hexdigest()
    env = dict(POSTGRES_PASSWORD="secret", POSTGRES_HOST_AUTH_METHOD=None)
    r, pg = start(work, cfg, "pg2", **env)
    assert f"the cluster restored from cache entry {key[:12]}… does not start" in r.stderr, r
    assert r.stderr.count("does not start") == 1, r
    assert re.search(r"cache miss .*, cached ", r.stderr), r
    assert field(meta_text(work, key), "archive_sha256") != forged_sha
    assert has_table(work, pg, "a", password="secret")
    r, pg = start(work, cfg, "pg3", **env)
    assert "cache hit" in r.stderr and "does not start" not in r.stderr, r


def test_extra_superuser_in_a_restored_entry_is_warned_about(work):
    """An entry holding a superuser besides the configured user (a backdoor role, here made by a step):
    a hit names it in a warning, from the password step's own single-user session."""
    cfg = sql_project(work)
    work.file("proj/migrations/0001_evil.sql", "create role evil superuser login password 'x';\n")
    env = dict(POSTGRES_PASSWORD="secret", POSTGRES_HOST_AUTH_METHOD=None)
    r, _ = start(work, cfg, "pg1", **env)
    assert "superuser role" not in r.stderr, r  # built here, not restored
    r, _ = start(work, cfg, "pg2", **env)
    assert "cache hit" in r.stderr, r
    assert re.search(r'warning: the cluster restored from cache entry \w{12}… has superuser role other than '
                     r'"postgres": "evil"', r.stderr), r


def test_held_lock_costs_one_timeout(work):
    """Someone holds a hit's lock file: one lock_timeout, a build without the lock, not a second wait."""
    import fcntl
    import time
    cfg = sql_project(work)
    start(work, cfg, "pg1")
    key = work.key(config=cfg)
    lock = os.path.join(entry_dir(work), ".locks", key + ".lock")
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        t0 = time.monotonic()
        r, _ = start(work, cfg, "pg2", PGSTASH_LOCK_TIMEOUT="3")
        took = time.monotonic() - t0
    assert r.stderr.count("gave up waiting") == 1, r
    assert "gave up waiting for another builder" not in r.stderr, r
    assert "cache miss" in r.stderr, r
    assert took < 3 + 30, took
    # The entry it could not lock is still there: its own snapshot is dropped, and the log says so.
    assert f"not cached: an entry for {key[:12]}… was stored meanwhile" in r.stderr, r
    assert re.search(r"cache miss .*, not cached", r.stderr), r
    assert not re.search(r"(?<!not )cached ", r.stderr), r
