"""Least privilege (issue 15): root acts on nothing a less privileged user
controls, and the cache is private to its owner unless cache_group says."""
import grp
import hashlib
import os
import stat
import subprocess

import pytest

from helpers import IS_ROOT, USER_IDS, need, read_proc
from test_cache_cli import sql_project


def v1(work):
    return os.path.join(work.cache, "pgstash-v1")


def root_owned_dir(work, name):
    """work/NAME, root's own 0700 directory holding a file: what an attacker would aim root at."""
    d = os.path.join(work.path, name)
    os.makedirs(d)
    with open(os.path.join(d, "precious"), "w") as f:
        f.write("keep me\n")
    os.chmod(d, 0o700)
    return d


def test_symlinked_tmp_is_refused_not_swept(work):
    """A CI cache archive can carry .tmp -> /some/dir: `ls` (as root in `docker exec`) emptied the target."""
    r = work.run("ls")
    assert r.rc == 0, r
    victim = os.path.join(work.path, "victim")
    os.makedirs(victim)
    with open(os.path.join(victim, "precious"), "w") as f:
        f.write("keep me\n")
    if USER_IDS:
        os.chown(victim, *USER_IDS)
        os.chown(os.path.join(victim, "precious"), *USER_IDS)
    tmp = os.path.join(v1(work), ".tmp")
    os.rmdir(tmp)
    os.symlink(victim, tmp)
    if USER_IDS:
        os.lchown(tmp, *USER_IDS)
    for as_root in ([False, True] if IS_ROOT else [False]):
        r = work.run("ls", as_root=as_root)
        assert r.rc != 0, r
        assert "symbolic link" in r.stderr, r
        assert os.listdir(victim) == ["precious"], as_root


def test_store_dir_writable_by_others_is_refused(work):
    r = work.run("ls")
    assert r.rc == 0, r
    os.chmod(os.path.join(v1(work), ".locks"), 0o777)
    if IS_ROOT and USER_IDS:
        # Another user's (here: root's) world-writable directory is not narrowed, only refused.
        os.chown(os.path.join(v1(work), ".locks"), 0, 0)
        r = work.run("ls")
        assert r.rc != 0, r
        assert "belongs to uid 0" in r.stderr or "writable by others" in r.stderr, r
        os.chown(os.path.join(v1(work), ".locks"), *USER_IDS)
    # Our own: narrowed to 0700, and used.
    r = work.run("ls")
    assert r.rc == 0, r
    assert stat.S_IMODE(os.stat(os.path.join(v1(work), ".locks")).st_mode) == 0o700


def modes(top):
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, top)] = (stat.S_IMODE(st.st_mode), st.st_gid, stat.S_ISDIR(st.st_mode))
    return out


def test_cache_is_private_by_default(work):
    cfg = sql_project(work)
    r = work.run("prepare", config=cfg, env={"PGSTASH_SOCKET_DIR": work.sock})
    assert r.rc == 0, r
    assert "cache miss" in r.stderr
    v = work.run("verify", config=cfg)  # takes a key lock: the lock file exists
    assert v.rc == 0, v
    got = modes(v1(work))
    assert any(n.endswith(".lock") for n in got), got
    assert any(n.endswith(".meta") for n in got), got
    for n, (mode, _, is_dir) in got.items():
        assert mode == (0o700 if is_dir else 0o600), (n, oct(mode))
    assert stat.S_IMODE(os.stat(v1(work)).st_mode) == 0o700
    if IS_ROOT:
        # Another user cannot open (so cannot flock) a lock file, nor read an archive.
        lock = next(os.path.join(v1(work), n) for n in got if n.endswith(".lock"))
        p = subprocess.run(["python3", "-c", f"open({lock!r})"], user="nobody", capture_output=True,
                           text=True)
        assert p.returncode != 0 and "Permission denied" in p.stderr, p


def test_cache_group_mode(work):
    gid = USER_IDS[1] if USER_IDS else os.getgid()
    group = grp.getgrgid(gid).gr_name
    cfg = sql_project(work)
    r = work.run("prepare", config=cfg, env={"PGSTASH_SOCKET_DIR": work.sock, "PGSTASH_CACHE_GROUP": group})
    assert r.rc == 0, r
    v = work.run("verify", config=cfg, env={"PGSTASH_CACHE_GROUP": group})
    assert v.rc == 0, v
    got = modes(v1(work))
    assert any(n.endswith(".lock") for n in got), got
    for n, (mode, g, is_dir) in got.items():
        assert mode == (0o750 if is_dir else 0o640), (n, oct(mode))
        assert g == gid, n
    bad = work.run("ls", env={"PGSTASH_CACHE_GROUP": "no-such-group-pgstash"})
    assert bad.rc == 2, bad
    assert "cache_group" in bad.stderr and "no such group" in bad.stderr, bad


@pytest.mark.root
def test_cache_commands_as_root_act_as_the_owner(work):
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    r = work.run("ls")  # the cache, made by postgres
    assert r.rc == 0, r
    r = work.run("prune", as_root=True)
    assert r.rc == 0, r
    lock = os.path.join(v1(work), ".locks", "meta.lock")
    st = os.stat(lock)
    assert st.st_uid == USER_IDS[0], "prune as root created a root-owned lock file"
    assert stat.S_IMODE(st.st_mode) == 0o600


@pytest.mark.root
def test_symlinked_socket_dir_is_refused_as_root(work):
    """postgres plants socket_dir -> a root-owned directory: root chowned it postgres:postgres 3775."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    target = root_owned_dir(work, "rootdir")
    link = os.path.join(work.path, "psock")
    os.symlink(target, link)
    os.lchown(link, *USER_IDS)
    cfg = sql_project(work)
    r = work.run("prepare", config=cfg, env={"PGSTASH_SOCKET_DIR": link}, as_root=True)
    assert r.rc != 0, r
    assert "symbolic link" in r.stderr, r
    st = os.stat(target)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)
    assert os.stat(os.path.join(target, "precious")).st_uid == 0


@pytest.mark.root
def test_hard_link_in_pgdata_not_given_away(work):
    """A second name of root's file inside PGDATA (where fs.protected_hardlinks is off) stays root's."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    secret = os.path.join(root_owned_dir(work, "rootdir"), "precious")
    os.link(secret, os.path.join(work.pgdata, "stolen"))
    # pgstash's marker: a PGDATA root hands over (a killed build's), so that the walk meets the link.
    work.file("pgdata/pgstash.key", "building " + "0" * 64 + "\n")
    cfg = sql_project(work)
    work.run("prepare", config=cfg, env={"PGSTASH_SOCKET_DIR": work.sock}, as_root=True)
    assert os.stat(secret).st_uid == 0


# ---- 3b. root hands over only what pgstash or postgres put there; it runs nothing a config names ----

def config_naming(work, **paths):
    """sql_project's config with a [pgstash] section naming `paths` (pgdata = ..., cache_dir = ...): what a
    pull request may write.  Returns it and the env that lets the file say it (the harness's variables
    would override it)."""
    cfg = sql_project(work)
    with open(cfg) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write("[pgstash]\n" + "".join(f"{k} = {v}\n" for k, v in paths.items()) + text)
    names = {"pgdata": "PGDATA", "cache_dir": "PGSTASH_CACHE_DIR", "socket_dir": "PGSTASH_SOCKET_DIR",
             "pg_bindir": "PGSTASH_PG_BINDIR"}
    env = {"PGSTASH_SOCKET_DIR": work.sock}
    env.update({names[k]: None for k in paths})
    return cfg, env


def naming(work, via, **paths):
    """config_naming for via == "config"; for via == "env" the same paths from the environment (the
    operator's word), with sql_project's config as it is."""
    if via == "config":
        return config_naming(work, **paths)
    names = {"pgdata": "PGDATA", "cache_dir": "PGSTASH_CACHE_DIR", "socket_dir": "PGSTASH_SOCKET_DIR"}
    env = {"PGSTASH_SOCKET_DIR": work.sock}
    env.update({names[k]: v for k, v in paths.items()})
    return sql_project(work), env


NAMED_BY_CONFIG = "is named by the config file"


def victim_dir(work, name, mode=0o755):
    """work/NAME: root's directory holding root's 0600 file, as /etc or /run/secrets would."""
    d = os.path.join(work.path, name)
    os.makedirs(d)
    with open(os.path.join(d, "secret"), "w") as f:
        f.write("keep me\n")
    os.chmod(os.path.join(d, "secret"), 0o600)
    os.chmod(d, mode)
    return d


def owners_and_modes(top):
    """{relative path: (uid, gid, mode)} of top and everything below it."""
    out = {".": (os.lstat(top).st_uid, os.lstat(top).st_gid, stat.S_IMODE(os.lstat(top).st_mode))}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            out[os.path.relpath(os.path.join(dirpath, n), top)] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return out


@pytest.mark.root
@pytest.mark.parametrize("via", ["config", "env"])
def test_config_pgdata_of_foreign_files_is_not_handed_over(work, via):
    """`pgdata = /etc` in a config: root handed the whole tree to postgres, then pgdata refused to touch it.
    Now a config file may not name an existing directory that is not postgres' at all, and from the
    environment the content rule refuses it; either way nothing changes."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    victim = victim_dir(work, "victim", 0o700)
    before = owners_and_modes(victim)
    cfg, env = naming(work, via, pgdata=victim)
    r = work.run("prepare", config=cfg, env=env, as_root=True)
    assert r.rc == 1, r
    if via == "config":
        assert f'PGDATA "{victim}" {NAMED_BY_CONFIG}' in r.stderr, r
    else:
        assert f'PGDATA "{victim}" is not empty and holds no database cluster: refusing to touch it' in r.stderr, r
    assert owners_and_modes(victim) == before


@pytest.mark.root
@pytest.mark.parametrize("kind", ["pgdata", "socket_dir", "cache_dir"])
def test_config_may_not_hand_over_an_existing_empty_directory(work, kind):
    """An empty root directory on root's PATH (/usr/local/sbin in the official image) named by a config:
    handed to postgres, a step could plant a `psql` that a later `docker exec … psql` runs as root.  Now
    refused unchanged (the cache: left alone, and the start says it cannot be used); the same directory
    from the environment, the operator's word, is handed over."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    sbin = os.path.join(work.path, "usr-local-sbin")
    os.makedirs(sbin)
    os.chmod(sbin, 0o755)
    cfg, env = config_naming(work, **{kind: sbin})
    r = work.run("prepare", config=cfg, env=env, as_root=True)
    assert r.rc == 1, r
    assert NAMED_BY_CONFIG in r.stderr and sbin in r.stderr, r
    assert owners_and_modes(sbin) == {".": (0, 0, 0o755)}
    cfg, env = naming(work, "env", **{kind: sbin})
    r = work.run("prepare", config=cfg, env=env, as_root=True)
    assert r.rc == 0, r
    assert (os.lstat(sbin).st_uid, os.lstat(sbin).st_gid) == tuple(USER_IDS)


@pytest.mark.root
def test_pgdata_cluster_of_another_uid_is_handed_over(work):
    """The official image's habit: a volume whose cluster (pgstash's) an older container's uid owns is
    chowned to postgres and reused."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    cfg = sql_project(work)
    env = {"PGSTASH_SOCKET_DIR": work.sock}
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0, r
    for dirpath, dirnames, filenames in os.walk(work.pgdata):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), 999, 999)
    os.lchown(work.pgdata, 999, 999)
    r = work.run("prepare", config=cfg, env=env, as_root=True)
    assert r.rc == 0, r
    got = owners_and_modes(work.pgdata)
    assert {(uid, gid) for uid, gid, _ in got.values()} == {tuple(USER_IDS)}, got


@pytest.mark.root
def test_pgdata_made_group_writable_by_fsgroup_is_still_ours(work):
    """Kubernetes' fsGroup gives a volume's tree g+rwx (and setgid) again at every mount: pgstash's own
    cluster stays pgstash's (its marker is the directory owner's), and is handed back with mode 0700, as
    the official entrypoint's chmod does."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    cfg = sql_project(work)
    env = {"PGSTASH_SOCKET_DIR": work.sock}
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0, r
    os.chmod(work.pgdata, 0o2770)
    r = work.run("prepare", config=cfg, env=env, as_root=True)
    assert r.rc == 0, r
    assert "refusing" not in r.stderr, r
    assert stat.S_IMODE(os.lstat(work.pgdata).st_mode) == 0o700


@pytest.mark.root
@pytest.mark.parametrize("via", ["config", "env"])
def test_config_cache_dir_of_foreign_files_is_left_alone(work, via):
    """`cache_dir = /etc`: root fchowned the directory itself to postgres.  Now it is left as it is, and
    the start says why the cache cannot be used (never a quiet "not cached")."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    victim = victim_dir(work, "victim")
    before = owners_and_modes(victim)
    cfg, env = naming(work, via, cache_dir=victim)
    r = work.run("prepare", config=cfg, env=env, as_root=True)
    assert r.rc == 1, r
    if via == "config":
        assert f'cache directory "{victim}" {NAMED_BY_CONFIG}' in r.stderr, r
    else:
        assert f'cache directory "{victim}" holds "secret"' in r.stderr, r
    assert f'cache directory "{victim}" is not reachable' in r.stderr, r
    assert owners_and_modes(victim) == before


@pytest.mark.root
@pytest.mark.parametrize("via", ["config", "env"])
def test_config_socket_dir_of_foreign_files_changes_nothing(work, via):
    """`socket_dir = /etc`: root made it postgres' with mode 3775.  Now an error before anything is
    changed: neither it nor PGDATA (empty, so it could have been handed over) is touched."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    victim = victim_dir(work, "victim")
    before = owners_and_modes(victim)
    fresh = os.path.join(work.path, "freshdata")
    os.makedirs(fresh, mode=0o700)
    cfg, env = naming(work, via, socket_dir=victim, pgdata=fresh)
    r = work.run("prepare", config=cfg, env=env, as_root=True)
    assert r.rc == 1, r
    if via == "config":
        assert f'socket directory "{victim}" {NAMED_BY_CONFIG}' in r.stderr, r
    else:
        assert f'socket directory "{victim}" holds "secret"' in r.stderr, r
    assert owners_and_modes(victim) == before
    assert owners_and_modes(fresh) == {".": (0, 0, 0o700)}


@pytest.mark.root
def test_config_pg_bindir_never_runs_as_root(work):
    """`pg_bindir` in a config: `pgstash key` as root (on root's own cache, so it stays root) ran its
    `postgres --version` as uid 0, and `pgstash postgres --version` exec'd it as root."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    ids = os.path.join(work.path, "ids")
    open(ids, "w").close()
    os.chmod(ids, 0o666)
    bindir = os.path.join(work.path, "rootbin")
    os.makedirs(bindir)
    with open(os.path.join(bindir, "postgres"), "w") as f:
        f.write(f"#!/bin/sh\nid -u >> {ids}\necho 'postgres (PostgreSQL) 15.99'\n")
    os.chmod(os.path.join(bindir, "postgres"), 0o755)
    cache = os.path.join(work.path, "rootcache")
    os.makedirs(os.path.join(cache, "pgstash-v1"), mode=0o700)
    cfg, env = config_naming(work, pg_bindir=bindir, cache_dir=cache)
    r = work.run("key", config=cfg, env=env, as_root=True)
    assert r.rc == 0, r
    r = work.run("postgres", "--version", config=cfg, env=env, as_root=True)
    assert r.rc == 0 and "15.99" in r.stdout, r
    with open(ids) as f:
        ran_as = f.read().split()
    assert len(ran_as) == 3, ran_as  # key's version, and the help's version and exec
    assert "0" not in ran_as, ran_as
    assert set(ran_as) == {str(USER_IDS[0])}, ran_as


@pytest.mark.root
def test_key_as_root_reads_only_what_postgres_may(work):
    """`pgstash key --explain` as root on root's own cache read the files a config names as root and
    printed their SHA-256: a config from a pull request naming a root-only file learned its digest (and
    that it exists).  Now key fingerprints as the user prepare runs as: the file is unreadable, an error."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    root = os.path.join(work.path, "proj")
    secret = work.file("proj/migrations/0001_secret.sql", "root's secret\n")
    os.chown(secret, 0, 0)
    os.chmod(secret, 0o600)
    digest = hashlib.sha256(b"root's secret\n").hexdigest()
    cache = os.path.join(work.path, "rootcache")
    os.makedirs(os.path.join(cache, "pgstash-v1"), mode=0o700)
    cfg = work.file("key.ini", f"[pgstash]\ncache_dir = {cache}\n[database]\nname = app\n"
                               f"[step sql]\nroot = {root}\nmigrations = migrations/*.sql\nrun = true\n")
    r = work.run("key", "--explain", config=cfg, env={"PGSTASH_CACHE_DIR": None}, as_root=True)
    assert digest not in r.stdout and digest not in r.stderr, r
    assert r.rc != 0 and "0001_secret.sql" in r.stderr, r


@pytest.mark.root
def test_pgdata_of_secrets_with_a_keygen_key_is_not_handed_over(work):
    """PGDATA pointed at /run/secrets, which holds the signing key `pgstash keygen .../pgstash` wrote
    (README's own example names it pgstash.key): that file counted as pgstash's marker, so root handed
    the whole directory to postgres.  Only a marker's line in a marker's file counts."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    secrets = os.path.join(work.path, "secrets")
    os.makedirs(secrets, mode=0o755)
    r = work.run("keygen", os.path.join(secrets, "pgstash"), as_root=True)
    assert r.rc == 0, r
    assert os.path.isfile(os.path.join(secrets, "pgstash.key"))
    with open(os.path.join(secrets, "db_password"), "w") as f:
        f.write("keep me\n")
    os.chmod(os.path.join(secrets, "db_password"), 0o400)
    before = owners_and_modes(secrets)
    cfg = sql_project(work)
    r = work.run("prepare", config=cfg, env={"PGSTASH_SOCKET_DIR": work.sock, "PGDATA": secrets}, as_root=True)
    assert r.rc != 0, r
    assert f'PGDATA "{secrets}" is not empty and holds no database cluster: refusing to touch it' in r.stderr, r
    assert owners_and_modes(secrets) == before



def test_pgdata_holding_a_keygen_key_is_not_wiped(work):
    """Not root: PGDATA pointed at the user's own key directory, where `pgstash keygen .../pgstash` wrote
    pgstash.key.  The claim took that key for a marker of another key's cluster and emptied the
    directory, the private key with it."""
    keys = os.path.join(work.path, "keys")
    os.makedirs(keys, mode=0o700)
    work.chown_up(keys)
    r = work.run("keygen", os.path.join(keys, "pgstash"))
    assert r.rc == 0, r
    before = owners_and_modes(keys)
    cfg = sql_project(work)
    r = work.run("prepare", config=cfg, env={"PGSTASH_SOCKET_DIR": work.sock, "PGDATA": keys})
    assert r.rc == 1, r
    assert f'PGDATA "{keys}" is not empty and holds no database cluster: refusing to touch it' in r.stderr, r
    assert owners_and_modes(keys) == before

# ---- 4. every child gets a built environment ----------------------------------------------

SECRETS = {"POSTGRES_PASSWORD": "pw-topsecret-1", "AWS_SECRET_ACCESS_KEY": "aws-topsecret-2",
           "AWS_ACCESS_KEY_ID": "AKIATOPSECRET3", "PGSTASH_UNIT_SECRET": "pgstash-topsecret-4"}


def logging_bindir(work, log):
    """PG_BINDIR with a `postgres` that appends its argv and environment to `log`, then is the real one."""
    from helpers import PG_BINDIR
    d = work.wrapped_bindir("postgres", f"{{ echo \"ARGS $*\"; env; }} >> {log}\nexec {PG_BINDIR}/postgres \"$@\"",
                            "envbin")
    open(log, "w").close()
    work.chown_up(log)
    return d


def test_no_secret_reaches_a_step_or_postgres(work):
    from test_run import base_env, bg as _bg, small_config, stop, wait_healthy  # noqa: F401
    from helpers import Background
    log = os.path.join(work.path, "pgenv")
    bindir = logging_bindir(work, log)
    work.file("repo/dump.sh",
              "env > ../stepenv\n"
              "psql -XAt -c \"select encode(pg_read_binary_file('/proc/self/environ'), 'escape')\" > ../backendenv\n",
              mode=0o755)
    cfg = small_config(work, "/bin/sh dump.sh")
    env = base_env(work, PGSTASH_PG_BINDIR=bindir, **SECRETS)
    bg = Background(work)
    try:
        p = bg.start("run", "-c", "listen_addresses=", config=cfg, env=env)
        wait_healthy(work, bg, p, env)
        postmaster = read_proc(p.pid, "environ").decode(errors="replace")
        assert stop(bg, p) == 0, bg.output(p)
    finally:
        bg.cleanup()
    with open(os.path.join(work.path, "stepenv")) as f:
        step = f.read()
    with open(os.path.join(work.path, "backendenv")) as f:
        backend = f.read()
    with open(log) as f:
        pg = f.read()
    assert "ARGS --single" in pg, pg  # postgres --single ran (the password) and is covered
    assert "PGHOST=" in step and "DATABASE_URL=" in step, step
    for name, value in SECRETS.items():
        for what, text in (("step", step), ("temporary server", backend), ("postgres runs", pg),
                           ("final postmaster", postmaster)):
            assert value not in text, f"{name} reached the {what}"
    assert "PGPASSWORD=" not in step, step
    assert "PGDATA=" in postmaster


def test_postgres_help_gets_no_secret(work):
    """`pgstash postgres --version` (and -V, --help, --describe-config) exec'd the configured postgres
    with our whole environment: the AWS keys and POSTGRES_PASSWORD included."""
    log = os.path.join(work.path, "helpenv")
    bindir = os.path.join(work.path, "helpbin")
    os.makedirs(bindir)
    with open(os.path.join(bindir, "postgres"), "w") as f:
        f.write(f"#!/bin/sh\n{{ echo \"ARGS $*\"; env; }} >> {log}\necho 'postgres (PostgreSQL) 15.99'\n")
    os.chmod(os.path.join(bindir, "postgres"), 0o755)
    open(log, "w").close()
    os.chmod(log, 0o666)
    work.chown_up(bindir)
    cfg = sql_project(work)
    for args in (("--version",), ("--describe-config",)):
        r = work.run("postgres", *args, config=cfg, env={"PGSTASH_PG_BINDIR": bindir, **SECRETS}, as_root=IS_ROOT)
        assert r.rc == 0 and "15.99" in r.stdout, r
    with open(log) as f:
        text = f.read()
    assert "ARGS --describe-config" in text, text  # the exec itself, not only pgbin's version probe
    for name, value in SECRETS.items():
        assert value not in text, f"{name} reached postgres --version"
    assert "PATH=" in text, text


@pytest.mark.root
def test_config_cannot_probe_root_only_paths(work):
    """Loading a configuration as root stat()ed each step's root as root: `key` (or prepare) with
    root = /root-only/dir/NAME said "is not a directory" when NAME existed and "No such file" when not,
    through a directory postgres cannot search.  Now the check is made as postgres: one answer."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    private = os.path.join(work.path, "private")
    os.makedirs(private, mode=0o700)
    open(os.path.join(private, "present"), "w").close()
    said = {}
    for name in ("present", "absent"):
        cfg = work.file(f"{name}.ini", f"[database]\nname = app\n[step s]\nroot = {private}/{name}\n"
                                       "migrations = *.sql\nrun = true\n")
        r = work.run("key", config=cfg, as_root=True)
        assert r.rc != 0, r
        said[name] = r.stderr.replace(name, "NAME")
    assert said["present"] == said["absent"] and "Permission denied" in said["present"], said


@pytest.mark.root
def test_postgres_help_as_root_gets_postgres_home(work):
    """`pgstash postgres --describe-config` as root exec'd the configured postgres as the postgres user
    but with root's HOME, USER and LOGNAME, where every child proc starts gets its user's own."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    import pwd
    log = os.path.join(work.path, "helphome")
    bindir = os.path.join(work.path, "helpbin")
    os.makedirs(bindir)
    with open(os.path.join(bindir, "postgres"), "w") as f:
        f.write(f"#!/bin/sh\n{{ echo \"ARGS $*\"; echo \"HOME=$HOME USER=$USER LOGNAME=$LOGNAME\"; }} >> {log}\n"
                "echo 'postgres (PostgreSQL) 15.99'\n")
    os.chmod(os.path.join(bindir, "postgres"), 0o755)
    open(log, "w").close()
    os.chmod(log, 0o666)
    work.chown_up(bindir)
    cfg = sql_project(work)
    r = work.run("postgres", "--describe-config", config=cfg, as_root=True,
                 env={"PGSTASH_PG_BINDIR": bindir, "HOME": "/root", "USER": "root", "LOGNAME": "root"})
    assert r.rc == 0, r
    pw = pwd.getpwnam("postgres")
    with open(log) as f:
        text = f.read()
    want = f"HOME={pw.pw_dir} USER=postgres LOGNAME=postgres"
    assert text.count(want) == 2 and "ARGS --describe-config" in text, text


@pytest.mark.root
def test_key_as_root_leaves_no_broker_directory(work):
    """`pgstash key` as root with an image step becomes postgres and hands the Docker socket's group to
    a broker, whose private directory /tmp/pgstash-broker-* was left behind by every such key."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    import glob
    import pwd
    import socket
    sock_path = os.path.join(work.path, "docker.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    other_gid = next(g.gr_gid for g in grp.getgrall() if g.gr_gid not in (0, pwd.getpwnam("postgres").pw_gid))
    os.chown(sock_path, 0, other_gid)
    os.chmod(sock_path, 0o660)
    srv.listen(4)

    def answer():  # an engine that knows no API: key fails, after the broker relayed its ping
        try:
            while True:
                c, _ = srv.accept()
                c.recv(4096)
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                c.close()
        except OSError:
            pass
    import threading
    threading.Thread(target=answer, daemon=True).start()
    root = os.path.join(work.path, "proj")
    work.file("proj/migrations/0001.sql", "SELECT 1;\n")
    work.chown_up(root)
    cfg = work.file("key.ini", f"[pgstash]\ndocker_socket = {sock_path}\n[database]\nname = app\n"
                               f"[step s]\nroot = {root}\nmigrations = migrations/*.sql\nimage = alpine:3\n"
                               "image_id = yes\nrun = true\n")
    before = set(glob.glob("/tmp/pgstash-broker-*"))
    try:
        r = work.run("key", config=cfg, as_root=True, timeout=60)
    finally:
        srv.close()
    assert r.rc != 0 and "HTTP 404" in r.stderr, r  # the broker was started, and relayed the ping
    assert set(glob.glob("/tmp/pgstash-broker-*")) - before == set(), r


# ---- 5. the temporary server is never where a client looks for the real one ----------------

def probe(port, sock_dir):
    """What answers where clients look for the final server: TCP 127.0.0.1:port and the socket in
    sock_dir.  Returns the list of places that accepted a connection."""
    import socket
    got = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            got.append(f"127.0.0.1:{port}")
    path = os.path.join(sock_dir, f".s.PGSQL.{port}")
    if os.path.exists(path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            if s.connect_ex(path) == 0:
                got.append(path)
    return got


def test_temporary_server_is_not_on_the_final_port(work):
    """While a step runs, nothing answers on the final server's port or socket; the temporary server's
    socket is in a private directory and its pg_hba.conf trusts no TCP client.  (Before: its hba was
    PGDATA's, initdb's `host all all 127.0.0.1/32 trust`, and with container steps it listened on
    127.0.0.1:5432.)  The first thing that answers on the final port is the final server."""
    import time
    from helpers import Background, free_port
    from test_run import base_env, small_config, stop, wait_healthy
    work.file("repo/step.sh",
              "set -e\n"
              "cp \"$PGHOST/pg_hba.conf\" ../temphba\n"
              "stat -c '%a %u' \"$PGHOST\" > ../tempsockdir\n"
              "echo \"$PGHOST $PGPORT\" > ../tempwhere\n"
              "touch ../started\n"
              "while [ ! -e ../go ]; do sleep 0.05; done\n"
              "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE made_by_step (id int)'\n", mode=0o755)
    cfg = small_config(work, "/bin/sh step.sh")
    port = free_port()
    env = base_env(work, POSTGRES_PASSWORD="final-pw-8Jw", POSTGRES_HOST_AUTH_METHOD=None)
    sock = env["PGSTASH_SOCKET_DIR"]
    bg = Background(work)
    try:
        p = bg.start("run", "-c", "listen_addresses=127.0.0.1", "-p", str(port), config=cfg, env=env)
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(work.path, "started")):
            assert p.poll() is None and time.monotonic() < deadline, bg.output(p)
            assert probe(port, sock) == [], bg.output(p)
            time.sleep(0.02)
        # The step holds the build: probe for a second, as a readiness loop would.
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            assert probe(port, sock) == [], bg.output(p)
            time.sleep(0.02)
        open(os.path.join(work.path, "go"), "w").close()
        while True:
            got = probe(port, sock)
            if got:
                break
            assert p.poll() is None and time.monotonic() < deadline, bg.output(p)
            time.sleep(0.01)
        with open(os.path.join(work.pgdata, "postmaster.pid")) as f:
            assert f.readline().strip() == str(p.pid), "something other than the final server answered"
        wait_healthy(work, bg, p, env)
        assert stop(bg, p) == 0, bg.output(p)
    finally:
        bg.cleanup()
    with open(os.path.join(work.path, "tempwhere")) as f:
        host, tport = f.read().split()
    assert host != sock and not host.startswith(sock + "/"), host
    with open(os.path.join(work.path, "tempsockdir")) as f:
        mode, uid = f.read().split()
    assert mode == "700", mode
    if USER_IDS:
        assert int(uid) == USER_IDS[0]
    with open(os.path.join(work.path, "temphba")) as f:
        hba = [ln.split() for ln in f if ln.strip() and not ln.startswith("#")]
    assert hba, "empty pg_hba.conf"
    for line in hba:
        assert line[0] == "local" or line[-1] != "trust", line


# ---- 6. host mode: the final server asks local users for the password --------------------------

def as_nobody(argv, password=None):
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/"}
    if password:
        env["PGPASSWORD"] = password
    return subprocess.run(argv, user="nobody", group="nogroup", extra_groups=[], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, cwd="/")


def psql_argv(host, port, user="postgres"):
    from helpers import PG_BINDIR
    return [os.path.join(PG_BINDIR, "psql"), "-X", "-At", "-w", "-h", host, "-p", str(port), "-U", user, "-d",
            "postgres", "-c", "SELECT current_user"]


@pytest.mark.root
@pytest.mark.parametrize("local_auth", ["password", "peer"])
def test_host_mode_other_users_need_the_password(work, local_auth):
    """With POSTGRES_PASSWORD set, `nobody` logged in as postgres through the socket and over loopback
    (write_hba always trusted both) and could run COPY ... TO PROGRAM.  Now: the password (or, with
    local_auth = peer, the socket's peer check) is asked for; with the password `nobody` gets in over TCP."""
    need(IS_ROOT and USER_IDS is not None, "needs root to act as another local user (nobody)")
    from helpers import Background, free_port
    from test_run import base_env, small_config, stop, wait_healthy
    password = "host-pw-Zr4"
    cfg = small_config(work, "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE made_by_step (id int)'")
    # A socket directory anyone may enter, so that only pg_hba.conf decides (pgstash, not root, leaves it).
    sock = os.path.join(work.path, "opensock")
    os.makedirs(sock)
    os.chmod(sock, 0o1777)
    work.chown_up(sock)
    port = free_port()
    env = base_env(work, POSTGRES_PASSWORD=password, POSTGRES_HOST_AUTH_METHOD=None, PGSTASH_SOCKET_DIR=sock,
                   PGSTASH_LOCAL_AUTH=local_auth)
    bg = Background(work)
    try:
        p = bg.start("run", "-c", "listen_addresses=127.0.0.1", "-p", str(port), config=cfg, env=env)
        wait_healthy(work, bg, p, env)
        with open(os.path.join(work.pgdata, "pg_hba.conf")) as f:
            lines = [ln.split() for ln in f if ln.strip() and not ln.startswith("#")]
        assert not any(ln[-1] == "trust" for ln in lines), lines
        # No password: refused over loopback and through the socket.
        for host in ("127.0.0.1", sock):
            r = as_nobody(psql_argv(host, port))
            assert r.returncode != 0, (host, r)
            want = "Peer authentication failed" if host == sock and local_auth == "peer" else "password"
            assert want in r.stderr, (host, r)
        # The wrong password neither.
        r = as_nobody(psql_argv("127.0.0.1", port), password="wrong")
        assert r.returncode != 0 and "password authentication failed" in r.stderr, r
        # With the password: in, over TCP (and through the socket unless it checks the peer).
        r = as_nobody(psql_argv("127.0.0.1", port), password=password)
        assert r.returncode == 0 and r.stdout.strip() == "postgres", r
        r = as_nobody(psql_argv(sock, port), password=password)
        assert (r.returncode == 0) == (local_auth == "password"), r
        # The cluster's owner: with peer, the socket knows it; with password, it needs it too.
        own = work._as_user(psql_argv(sock, port), check=False)
        assert (own.returncode == 0) == (local_auth == "peer"), own
        assert stop(bg, p) == 0, bg.output(p)
    finally:
        bg.cleanup()


@pytest.mark.root
def test_socket_dir_open_to_others_only_when_configured(work):
    """Root prepares socket_dir: 0750 in host mode with a password, 03775 (the image's) with
    local_auth = trust or POSTGRES_HOST_AUTH_METHOD=trust."""
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    cfg = sql_project(work)
    cases = [({"POSTGRES_PASSWORD": "pw", "POSTGRES_HOST_AUTH_METHOD": None}, 0o750),
             ({"POSTGRES_PASSWORD": "pw", "POSTGRES_HOST_AUTH_METHOD": None, "PGSTASH_LOCAL_AUTH": "trust"}, 0o3775),
             ({}, 0o3775)]
    for i, (extra, mode) in enumerate(cases):
        d = os.path.join(work.path, f"rsock{i}")
        r = work.run("prepare", config=cfg, as_root=True, env=dict(extra, PGSTASH_SOCKET_DIR=d))
        assert r.rc == 0, r
        st = os.stat(d)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (mode, USER_IDS[0]), (extra, oct(st.st_mode))
