"""`pgstash run` (issue 4, "Must hold"): bootstrap, then exec postgres.

  - the process that was started becomes the postmaster (postmaster.pid names
    it), the healthcheck says ready only once bootstrap is done and the
    server answers, and SIGINT to that pid is a clean fast shutdown (exit 0);
  - `pgstash -c k=v`, `pgstash postgres -c k=v` and `pgstash run -c k=v`
    hand their arguments to postgres;
  - the password is applied at every start (miss, hit, reuse), works over
    TCP from a non-loopback address (loopback is trusted in the image, as in
    the official one; on a host it asks for the password too, see
    test_privileges.py), never reaches a snapshot, the key, argv or the log;
  - PGDATA's background sync outlives pgstash: as PID 1 (a container) its
    syncer becomes the postmaster's child, which must reap it as a harmless
    exit 0, not a crashed backend that restarts the cluster.

pgstash runs in the background through Popen, as the run user when the suite
runs as root; its output goes to a .log file the harness keeps on failure.
"""
import contextlib
import os
import platform
import signal
import socket
import subprocess
import time

import pytest

import re
import shutil

from helpers import IS_ROOT, PG_BINDIR, USER_IDS, free_port, need, Background, final_marker, pgdata_unlocked, read_proc

pytestmark = pytest.mark.slow

# The step holds the build until the test creates work/go, so the test can
# look at the healthcheck while bootstrap is still under way.
GATED = ("/bin/sh -c 'touch ../started; while [ ! -e ../go ]; do sleep 0.05; done; "
         "psql -v ON_ERROR_STOP=1 -c \"CREATE TABLE made_by_step (id int)\"'")
QUICK = "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE made_by_step (id int)'"


# ---- helpers -------------------------------------------------------------------------------

def small_config(work, run, name="small.ini"):
    """One command step in work/repo (its working directory: ../x is work/x)."""
    work.file("repo/migrations/0001_init.sql", "-- one\n")
    return work.file(name, f"[pgstash]\n\n[database]\nname = app\n\n[step only]\nroot = repo\n"
                           f"migrations = migrations/*.sql\nrun = {run}\n")


def socket_dir(work):
    p = os.path.join(work.path, "ps")
    if not os.path.isdir(p):
        os.makedirs(p)
        work.chown_up(p)
    return p


def base_env(work, **extra):
    e = {"PGSTASH_SOCKET_DIR": socket_dir(work), "PGSTASH_INITDB_D": os.path.join(work.path, "initdb.d")}
    e.update(extra)
    return e


def fresh_pgdata(work, name):
    p = os.path.join(work.path, name)
    os.makedirs(p, mode=0o700)
    work.chown_up(p)
    return p


@pytest.fixture()
def bg(work):
    b = Background(work)
    yield b
    b.cleanup()


def wait_healthy(work, bg, p, env, timeout=90):
    """Polls `pgstash healthcheck` until it exits 0; fails if pgstash exits first."""
    deadline = time.monotonic() + timeout
    while True:
        hc = work.run("healthcheck", env=env)
        if hc.rc == 0:
            return hc
        if p.poll() is not None:
            raise AssertionError(f"pgstash exited ({p.returncode}) before it was healthy:\n{bg.output(p)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not healthy after {timeout} s: {hc!r}\n{bg.output(p)}")
        time.sleep(0.1)


def stop(bg, p, sig=signal.SIGINT):
    os.kill(p.pid, sig)
    try:
        return p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pgstash/postgres did not stop within 60 s of signal {sig}:\n{bg.output(p)}")


def psql_socket(work, sock, query, db="postgres"):
    p = work._as_user([os.path.join(PG_BINDIR, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", sock,
                       "-p", "5432", "-U", "postgres", "-d", db, "-c", query])
    return p.stdout.strip()


def psql_tcp(host, port, password, query="SELECT current_user"):
    """A TCP login as postgres with `password` (None: none); returns the CompletedProcess."""
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "5", "PGPASSFILE": "/nonexistent"}
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run([os.path.join(PG_BINDIR, "psql"), "-X", "-At", "-w",
                           f"host={host} port={port} user=postgres dbname=postgres sslmode=disable",
                           "-c", query], env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def first_line(path):
    with open(path) as f:
        return f.readline().strip()


# ---- 2. run execs postgres -----------------------------------------------------------------

def test_run_becomes_postgres_healthcheck_and_sigint(work, bg):
    cfg = small_config(work, GATED)
    env = base_env(work)
    hc = work.run("healthcheck", env=env)
    assert hc.rc != 0, hc  # nothing started yet

    p = bg.start("run", "-c", "listen_addresses=", config=cfg, env=env)
    started = os.path.join(work.path, "started")
    deadline = time.monotonic() + 60
    while not os.path.exists(started):
        assert p.poll() is None, bg.output(p)
        assert time.monotonic() < deadline, bg.output(p)
        time.sleep(0.05)
    # bootstrap is under way (the step waits): not ready, and still pgstash
    hc = work.run("healthcheck", env=env)
    assert hc.rc != 0, hc
    assert "not ready" in hc.stderr, hc
    assert not os.path.exists(os.path.join(work.pgdata, "postmaster.pid")) or \
        first_line(os.path.join(work.pgdata, "postmaster.pid")) != str(p.pid)
    time.sleep(0.3)
    assert work.run("healthcheck", env=env).rc != 0

    with open(os.path.join(work.path, "go"), "w"):
        pass
    wait_healthy(work, bg, p, env)
    assert p.poll() is None, bg.output(p)
    # the pid we started is the postmaster
    assert first_line(os.path.join(work.pgdata, "postmaster.pid")) == str(p.pid), bg.output(p)
    exe = os.fsdecode(read_proc(p.pid, "exe"))
    assert os.path.realpath(exe) == os.path.realpath(os.path.join(PG_BINDIR, "postgres")), exe
    sock = env["PGSTASH_SOCKET_DIR"]
    assert psql_socket(work, sock, "SELECT count(*) FROM made_by_step", db="app") == "0"

    rc = stop(bg, p, signal.SIGINT)
    out = bg.output(p)
    assert rc == 0, out
    assert not os.path.exists(os.path.join(work.pgdata, "postmaster.pid")), out
    assert "database system is shut down" in out, out
    hc = work.run("healthcheck", env=env)
    assert hc.rc != 0, hc


def test_prepare_is_not_healthy(work):
    cfg = small_config(work, QUICK)
    env = base_env(work)
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0, r
    hc = work.run("healthcheck", env=env)
    assert hc.rc != 0, hc


def test_sigterm_to_the_running_server_is_a_clean_stop(work, bg):
    cfg = small_config(work, QUICK)
    env = base_env(work)
    p = bg.start("run", "-c", "listen_addresses=", config=cfg, env=env)
    wait_healthy(work, bg, p, env)
    assert first_line(os.path.join(work.pgdata, "postmaster.pid")) == str(p.pid)
    rc = stop(bg, p, signal.SIGTERM)
    assert rc == 0, bg.output(p)
    assert not os.path.exists(os.path.join(work.pgdata, "postmaster.pid"))
    # a restart reuses the cleanly stopped cluster
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0, r
    assert "already holds" in r.stderr, r


@pytest.mark.parametrize("form", [
    ("-c", "listen_addresses=", "-c", "log_min_messages=warning"),
    ("postgres", "-c", "listen_addresses=", "-c", "log_min_messages=error"),
    ("run", "-c", "listen_addresses=", "-c", "log_min_messages=fatal"),
    ("postgres", "-c", "listen_addresses=", "-clog_min_messages=notice"),
], ids=["dash-c", "postgres", "run", "attached-c"])
def test_arguments_reach_postgres(work, bg, form):
    cfg = small_config(work, QUICK)
    env = base_env(work)
    want = form[-1].split("=", 1)[1]
    p = bg.start(*form, config=cfg, env=env)
    wait_healthy(work, bg, p, env)
    sock = env["PGSTASH_SOCKET_DIR"]
    assert psql_socket(work, sock, "SHOW log_min_messages") == want, bg.output(p)
    assert psql_socket(work, sock, "SHOW listen_addresses") == ""
    assert first_line(os.path.join(work.pgdata, "postmaster.pid")) == str(p.pid)
    assert stop(bg, p) == 0, bg.output(p)


# ---- 7. the password ------------------------------------------------------------------------

PW = {n: f"pw-{n}-Qz7{n[::-1]}K" for n in ("one", "two", "three")}


def outside_address():
    """A non-loopback IPv4 address of this machine (no packet is sent), or None.
    The image, as the official one, trusts 127.0.0.1 and ::1 and asks everyone
    else for the password (`host all all all scram-sha-256`): a password check
    over TCP that holds for both must come from elsewhere."""
    for target in ("198.51.100.1", "10.255.255.254", "8.8.8.8"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((target, 9))
                addr = s.getsockname()[0]
            except OSError:
                continue
        if not addr.startswith("127.") and addr != "0.0.0.0":
            return addr
    return None


def run_with_password(work, bg, cfg, pgdata, password, host, verbose=False, auth=None):
    """`run` (`-v run` when verbose) on TCP host:<free port> with POSTGRES_PASSWORD=password (and
    POSTGRES_HOST_AUTH_METHOD=auth); returns (process, port) once healthy."""
    port = free_port()
    env = base_env(work, PGDATA=pgdata, POSTGRES_PASSWORD=password, POSTGRES_HOST_AUTH_METHOD=auth)
    p = bg.start(*(["-v"] if verbose else []), "run", "-c", f"listen_addresses={host}", "-p", str(port), config=cfg, env=env)
    wait_healthy(work, bg, p, dict(env, PGPORT=str(port)))
    with open(f"/proc/{p.pid}/cmdline", "rb") as f:
        cmdline = f.read().decode(errors="replace")
    assert password not in cmdline
    return p, port


def assert_only_password(host, port, good, bad):
    ok = psql_tcp(host, port, good)
    assert ok.returncode == 0 and ok.stdout.strip() == "postgres", ok
    for pw in bad + [None]:
        no = psql_tcp(host, port, pw)
        assert no.returncode != 0, (pw, no)
        assert "password" in no.stderr, no


def test_password_is_applied_at_every_start(work, bg):
    host = outside_address()
    need(host is not None, "no non-loopback IPv4 address to test password logins over TCP with")
    cfg = small_config(work, QUICK)
    for n, pw in PW.items():
        ex = work.run("key", "--explain", config=cfg, env=base_env(work, POSTGRES_PASSWORD=pw))
        assert ex.rc == 0, ex
        assert pw not in ex.stdout and pw not in ex.stderr, ex
    keys = {work.key(config=cfg, env=base_env(work, POSTGRES_PASSWORD=pw)) for pw in PW.values()}
    assert len(keys) == 1

    # miss with "one"
    p, port = run_with_password(work, bg, cfg, work.pgdata, PW["one"], host)
    assert_only_password(host, port, PW["one"], [PW["two"]])
    assert stop(bg, p) == 0, bg.output(p)
    assert "cache miss" in bg.output(p)

    # hit with "two" into a fresh PGDATA
    second = fresh_pgdata(work, "pgdata2")
    p, port = run_with_password(work, bg, cfg, second, PW["two"], host)
    assert "cache hit" in bg.output(p), bg.output(p)
    assert_only_password(host, port, PW["two"], [PW["one"]])
    assert stop(bg, p) == 0, bg.output(p)

    # restart of the same PGDATA with "three"
    p, port = run_with_password(work, bg, cfg, second, PW["three"], host)
    assert "already holds" in bg.output(p), bg.output(p)
    assert_only_password(host, port, PW["three"], [PW["one"], PW["two"]])
    assert stop(bg, p) == 0, bg.output(p)

    # the snapshot holds no password: a hit without one has none set
    third = fresh_pgdata(work, "pgdata3")
    r = work.run("prepare", config=cfg, env=base_env(work, PGDATA=third))
    assert r.rc == 0 and "cache hit" in r.stderr, r
    assert work.sql("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'postgres'", pgdata=third) == "t"

    for p in bg.procs:
        out = bg.output(p)
        for pw in PW.values():
            assert pw not in out
    for dirpath, dirnames, filenames in os.walk(work.path):
        for n in filenames:
            if n.endswith(".log"):
                with open(os.path.join(dirpath, n), errors="replace") as f:
                    text = f.read()
                assert not any(pw in text for pw in PW.values()), os.path.join(dirpath, n)


def test_no_password_and_no_trust_is_refused(work):
    cfg = small_config(work, QUICK)
    r = work.run("prepare", config=cfg, env=base_env(work, POSTGRES_HOST_AUTH_METHOD=None, POSTGRES_PASSWORD=None))
    assert r.rc not in (0, None), r
    assert "POSTGRES_PASSWORD" in r.stderr, r
    assert os.listdir(work.pgdata) == []


def test_healthcheck_follows_a_custom_port(work, bg):
    """`pgstash -p N` (as `docker run IMAGE -p N`): the healthcheck must find
    the server where it listens, without being told PGPORT."""
    cfg = small_config(work, QUICK)
    env = base_env(work)
    port = free_port()
    p = bg.start("-p", str(port), "-c", "listen_addresses=", config=cfg, env=env)
    sock = env["PGSTASH_SOCKET_DIR"]
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(sock, f".s.PGSQL.{port}")):
        assert p.poll() is None, bg.output(p)
        assert time.monotonic() < deadline, bg.output(p)
        time.sleep(0.05)
    while work._as_user([os.path.join(PG_BINDIR, "pg_isready"), "-q", "-h", sock, "-p", str(port)],
                        check=False).returncode != 0:
        assert p.poll() is None, bg.output(p)
        assert time.monotonic() < deadline, bg.output(p)
        time.sleep(0.05)
    deadline = time.monotonic() + 15
    while True:
        hc = work.run("healthcheck", env=env)
        if hc.rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert hc.rc == 0, (hc, bg.output(p))
    assert stop(bg, p) == 0, bg.output(p)


@pytest.mark.root
def test_root_run_becomes_postgres_as_the_postgres_user(work, bg):
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    uid, gid = USER_IDS
    cfg = small_config(work, QUICK)
    top = os.path.join(work.path, "rootowned")
    os.makedirs(top)
    pgdata, cache, sock = (os.path.join(top, n) for n in ("pgdata", "cache", "sock"))
    for d in (pgdata, cache, sock):
        os.makedirs(d, mode=0o755)
    env = base_env(work, PGDATA=pgdata, PGSTASH_CACHE_DIR=cache, PGSTASH_SOCKET_DIR=sock)
    p = bg.start("run", "-c", "listen_addresses=", config=cfg, env=env, as_root=True)
    wait_healthy(work, bg, p, env)
    assert first_line(os.path.join(pgdata, "postmaster.pid")) == str(p.pid)
    with open(f"/proc/{p.pid}/status") as f:
        ids = {line.split(":")[0]: line.split()[1:] for line in f if line.startswith(("Uid:", "Gid:", "Groups:"))}
    assert ids["Uid"] == [str(uid)] * 4, ids
    assert ids["Gid"] == [str(gid)] * 4, ids
    assert "0" not in ids["Groups"], ids
    assert os.stat(pgdata).st_uid == uid
    assert stop(bg, p) == 0, bg.output(p)


def test_awkward_password(work, bg):
    host = outside_address()
    need(host is not None, "no non-loopback IPv4 address to test password logins over TCP with")
    cfg = small_config(work, QUICK)
    pw = "it's a \\\"pass\\word\\\" $HOME; --"
    p, port = run_with_password(work, bg, cfg, work.pgdata, pw, host)
    assert_only_password(host, port, pw, [pw[:-1]])
    assert stop(bg, p) == 0, bg.output(p)


def test_password_step_on_a_cluster_with_its_own_connection_settings(work, bg):
    """Issue 19: the single-user password step runs with max_connections=1 (and no WAL senders or
    workers) to spare shared memory.  A postmaster refuses that next to superuser_reserved_connections=5;
    single-user mode must not, and the final server must keep the cluster's own settings."""
    host = outside_address()
    need(host is not None, "no non-loopback IPv4 address to test password logins over TCP with")
    cfg = small_config(work, "psql -X -q -v ON_ERROR_STOP=1 -f migrations/0001_init.sql")
    work.file("repo/migrations/0001_init.sql", "ALTER SYSTEM SET max_connections = 30;\n"
              "ALTER SYSTEM SET superuser_reserved_connections = 5;\nALTER SYSTEM SET max_wal_senders = 4;\n")
    p, port = run_with_password(work, bg, cfg, work.pgdata, PW["one"], host)
    assert "cache miss" in bg.output(p), bg.output(p)
    assert stop(bg, p) == 0, bg.output(p)
    second = fresh_pgdata(work, "pgdata2")
    p, port = run_with_password(work, bg, cfg, second, PW["two"], host)
    assert "cache hit" in bg.output(p), bg.output(p)
    assert_only_password(host, port, PW["two"], [PW["one"]])
    for name, want in (("max_connections", "30"), ("superuser_reserved_connections", "5"), ("max_wal_senders", "4")):
        got = psql_tcp(host, port, PW["two"], f"SHOW {name}")
        assert got.returncode == 0 and got.stdout.strip() == want, (name, got)
    assert stop(bg, p) == 0, bg.output(p)


def stored_password(host, port, password):
    got = psql_tcp(host, port, password, "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
    assert got.returncode == 0, got
    return got.stdout.strip()


def test_password_verifier_computed_by_pgstash_unless_the_server_would_store_it_otherwise(work, bg):
    """Issue 19: for an ASCII password pgstash hands single-user mode the SCRAM-SHA-256 verifier the
    server would make (its 4096 HMAC rounds were a quarter of the step), and logins take the password.
    A cluster whose conf sets password_encryption gets the password itself and stores it its way (md5
    here, with POSTGRES_HOST_AUTH_METHOD=md5 as such a cluster needs); so does a password SASLprep may
    change (not ASCII)."""
    host = outside_address()
    need(host is not None, "no non-loopback IPv4 address to test password logins over TCP with")
    cfg = small_config(work, QUICK)
    p, port = run_with_password(work, bg, cfg, work.pgdata, PW["one"], host, verbose=True)
    assert "(as its SCRAM-SHA-256 verifier)" in bg.output(p), bg.output(p)
    assert stored_password(host, port, PW["one"]).startswith("SCRAM-SHA-256$4096:")
    assert_only_password(host, port, PW["one"], [PW["two"]])
    assert stop(bg, p) == 0, bg.output(p)

    second = fresh_pgdata(work, "pgdata2")
    accented = "pässwörd-ÿ-\u00a0-Ω"
    p, port = run_with_password(work, bg, cfg, second, accented, host, verbose=True)
    assert "cache hit" in bg.output(p) and "single-user mode in" in bg.output(p), bg.output(p)
    assert "SCRAM-SHA-256 verifier" not in bg.output(p), bg.output(p)
    assert stored_password(host, port, accented).startswith("SCRAM-SHA-256$4096:")
    assert_only_password(host, port, accented, [PW["one"]])
    assert stop(bg, p) == 0, bg.output(p)

    md5 = small_config(work, "psql -X -q -v ON_ERROR_STOP=1 -f migrations/0001_init.sql", name="md5.ini")
    work.file("repo/migrations/0001_init.sql", "ALTER SYSTEM SET password_encryption = 'md5';\n")
    third = fresh_pgdata(work, "pgdata3")
    p, port = run_with_password(work, bg, md5, third, PW["three"], host, verbose=True, auth="md5")
    assert "single-user mode in" in bg.output(p) and "SCRAM-SHA-256 verifier" not in bg.output(p), bg.output(p)
    assert stored_password(host, port, PW["three"]).startswith("md5")
    assert_only_password(host, port, PW["three"], [PW["one"]])
    assert stop(bg, p) == 0, bg.output(p)


# ---- the password's single-user session, started ahead (issue 19) ---------------------------------

def sessions_ahead(pgdata):
    """The pids of `postgres --single` processes on `pgdata` that read a config_file of their own."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--single" in argv and os.fsencode(pgdata) in argv and any(a.startswith(b"config_file=") for a in argv):
            found.append(int(pid))
    return found


def running(pid):
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_file(p, bg, path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert p.poll() is None, bg.output(p)
        assert time.monotonic() < deadline, bg.output(p)
        time.sleep(0.05)


def private_dirs(pid, what="single"):
    return [d for d in os.listdir("/tmp") if d.startswith(f"pgstash-{what}-{pid}-")]


def test_password_session_started_ahead_on_a_miss_and_a_hit(work, bg):
    """Issue 19: the single-user postgres that sets the password is started before the restore (or
    the build), loads while PGDATA fills, and reads the cluster only after: its configuration file
    includes PGDATA's postgresql.conf by a quoted path, here one with a quote, a backslash and a
    space.  The password works, and its private directory is gone."""
    host = outside_address()
    need(host is not None, "no non-loopback IPv4 address to test password logins over TCP with")
    cfg = small_config(work, QUICK)
    p, port = run_with_password(work, bg, cfg, work.pgdata, PW["one"], host, verbose=True)
    assert "cache miss" in bg.output(p) and "(postgres started ahead)" in bg.output(p), bg.output(p)
    assert stop(bg, p) == 0, bg.output(p)
    assert private_dirs(p.pid) == []

    odd = fresh_pgdata(work, "pg'da\\ta x")
    p, port = run_with_password(work, bg, cfg, odd, PW["two"], host, verbose=True)
    assert "cache hit" in bg.output(p) and "(postgres started ahead)" in bg.output(p), bg.output(p)
    assert_only_password(host, port, PW["two"], [PW["one"]])
    assert psql_tcp(host, port, PW["two"], "SHOW data_directory").stdout.strip() == odd
    assert stop(bg, p) == 0, bg.output(p)
    assert private_dirs(p.pid) == []


# openat(2) on the architectures whose /proc/PID/syscall we read
OPENAT = {"x86_64": "257", "aarch64": "56"}


def test_session_started_ahead_waits_outside_pgdata_and_dies_with_pgstash(work, bg):
    """Issue 19: while PGDATA is being built (or restored from an entry not yet verified), the
    session started ahead has read nothing of it: it waits in open() of its FIFO, with no descriptor
    in PGDATA and PGDATA not its working directory.  A pgstash killed meanwhile (SIGKILL: no
    cleanup) takes it along; it would otherwise wait for good."""
    cfg = small_config(work, GATED)
    env = base_env(work, POSTGRES_PASSWORD=PW["one"], POSTGRES_HOST_AUTH_METHOD=None)
    p = bg.start("-v", "run", "-c", "listen_addresses=", config=cfg, env=env)
    wait_for_file(p, bg, os.path.join(work.path, "started"))
    ahead = sessions_ahead(work.pgdata)
    assert len(ahead) == 1, bg.output(p)
    pid = ahead[0]
    time.sleep(0.5)  # loaded by now: it waits for its configuration
    assert os.readlink(f"/proc/{pid}/cwd") != work.pgdata
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            assert not target.startswith(work.pgdata + "/"), target
    call = OPENAT.get(platform.machine())
    if call:
        with open(f"/proc/{pid}/syscall") as f:
            assert f.read().split()[0] == call
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    deadline = time.monotonic() + 10
    while running(pid):
        assert time.monotonic() < deadline, f"the session started ahead (pid {pid}) outlived pgstash"
        time.sleep(0.05)
    work.file("go")  # the step ends; the temporary server is stopped by the teardown


def test_session_started_ahead_that_died_is_replaced(work, bg):
    """Issue 19: a session started ahead that ended before its turn (killed here) is replaced by a
    new one: the password is set all the same."""
    host = outside_address()
    need(host is not None, "no non-loopback IPv4 address to test password logins over TCP with")
    cfg = small_config(work, GATED)
    port = free_port()
    env = base_env(work, POSTGRES_PASSWORD=PW["one"], POSTGRES_HOST_AUTH_METHOD=None)
    p = bg.start("-v", "run", "-c", f"listen_addresses={host}", "-p", str(port), config=cfg, env=env)
    wait_for_file(p, bg, os.path.join(work.path, "started"))
    ahead = sessions_ahead(work.pgdata)
    assert len(ahead) == 1, bg.output(p)
    os.kill(ahead[0], signal.SIGKILL)
    work.file("go")
    wait_healthy(work, bg, p, dict(env, PGPORT=str(port)))
    out = bg.output(p)
    assert "started ahead ended before it read its configuration: killed by signal 9" in out, out
    assert "set in single-user mode in" in out and "(postgres started ahead)" not in out, out
    assert_only_password(host, port, PW["one"], [PW["two"]])
    assert stop(bg, p) == 0, bg.output(p)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_bootstrap_of_run(work, bg, sig):
    cfg = small_config(work, GATED)
    env = base_env(work)
    p = bg.start("run", "-c", "listen_addresses=", config=cfg, env=env)
    started = os.path.join(work.path, "started")
    deadline = time.monotonic() + 60
    while not os.path.exists(started):
        assert p.poll() is None, bg.output(p)
        assert time.monotonic() < deadline, bg.output(p)
        time.sleep(0.05)
    rc = stop(bg, p, sig)
    out = bg.output(p)
    assert rc == 128 + sig, out
    assert os.listdir(work.pgdata) == [], out
    assert not os.path.exists(os.path.join(work.cache, "pgstash-v1")) or \
        [n for n in os.listdir(os.path.join(work.cache, "pgstash-v1")) if not n.startswith(".")] == [], out
    hc = work.run("healthcheck", env=env)
    assert hc.rc != 0, hc


# ---- the background sync under postgres -------------------------------------------------------

@pytest.mark.parametrize("pid1", [False, True], ids=["plain", "pid1"])
def test_background_sync_does_not_disturb_the_server(work, bg, pid1):
    """`run` marks PGDATA "unsynced" and execs postgres while a detached
    syncer syncs it.  As PID 1 of a PID namespace (as in a container) the
    orphaned syncer is re-parented to PID 1, which is postgres by then:
    postgres must see it exit 0 (logged at DEBUG2 as a server process that
    exited with exit code 0) and go on, with no crash restart."""
    cfg = small_config(work, QUICK)
    env = base_env(work)
    key = None
    pg_args = ["-v", "run", "-c", "listen_addresses=", "-c", "log_min_messages=debug2"]
    if not pid1:
        p = bg.start(*pg_args, config=cfg, env=env)
        log = p.log
    else:
        need(IS_ROOT and USER_IDS is not None, "needs root (a PID namespace) and a user to drop to")
        need(shutil.which("unshare") and shutil.which("setpriv"), "needs unshare and setpriv (util-linux)")
        probe = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "true"], capture_output=True)
        need(probe.returncode == 0, f"cannot make a PID namespace here: {probe.stderr.decode(errors='replace')}")
        uid, gid = USER_IDS
        log = os.path.join(work.path, "pid1.log")
        argv = ["unshare", "--pid", "--fork", "--kill-child", "--", "setpriv", f"--reuid={uid}", f"--regid={gid}",
                "--clear-groups", "--", work.binary, f"--config={cfg}"] + pg_args
        with open(log, "w") as out:
            p = subprocess.Popen(argv, env=work.env(env), cwd=work.path, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        p.log = log
        bg.procs.append(p)
    key = work.key(config=cfg, env=env)
    wait_healthy(work, bg, p, env)
    assert final_marker(work.pgdata) == key, bg.output(p)
    assert pgdata_unlocked(work.pgdata)
    out = bg.output(p)
    m = re.search(r"debug: background sync \(pid (\d+)\) of PGDATA done in \d+ ms: its marker is final", out)
    assert m, out
    if pid1:
        assert first_line(os.path.join(work.pgdata, "postmaster.pid")) == "1", out
        # postgres reaped it, and took it for what it is
        deadline = time.monotonic() + 10
        while not re.search(rf"server process \(PID {m.group(1)}\) exited with exit code 0", bg.output(p)):
            assert time.monotonic() < deadline, bg.output(p)
            time.sleep(0.05)
    # the server keeps going: queries work a while later, and nothing restarted it
    time.sleep(0.5)
    sock = env["PGSTASH_SOCKET_DIR"]
    assert psql_socket(work, sock, "SELECT count(*) FROM made_by_step", db="app") == "0"
    out = bg.output(p)
    for bad in ("terminating any other active server processes", "was terminated by signal",
                "all server processes terminated; reinitializing", "database system was interrupted"):
        assert bad not in out, out
    # exit code 1 is a backend's FATAL (a healthcheck ping while it starts up): no crash to postgres either
    assert not re.search(r"exited with exit code (?:[2-9]|\d\d+)", out), out
    assert p.poll() is None, out

    # a clean stop: SIGINT to the postmaster (the namespace's PID 1 is unshare's child)
    if pid1:
        kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout.split()
        assert len(kids) == 1, kids
        os.kill(int(kids[0]), signal.SIGINT)
        rc = p.wait(timeout=60)
    else:
        rc = stop(bg, p, signal.SIGINT)
    out = bg.output(p)
    assert rc == 0, out
    assert "database system is shut down" in out, out
