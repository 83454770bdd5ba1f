"""Testcontainers' default Postgres waits, reproduced exactly as their sources state them, on the
host binary (`pgstash run`): a miss, a hit on a fresh PGDATA, and the reuse of a PGDATA after a
restart.  Each rule must be satisfied on every path, and not before the final server accepts
connections.  (test_docker_image.py runs the real testcontainers-python against the image.)

Java, modules/postgresql/.../PostgreSQLContainer.java:
    this.waitStrategy = new LogMessageWaitStrategy()
            .withRegEx(".*database system is ready to accept connections.*\\s")
            .withTimes(2)
Go, modules/postgres/wait_strategies.go (BasicWaitStrategies):
    wait.ForLog("database system is ready to accept connections").WithOccurrence(2),
.NET, src/Testcontainers.PostgreSql/PostgreSqlBuilder.cs (WaitUntil):
    _command = new List<string> { "pg_isready", "--host", "localhost", "--dbname", configuration.Database,
                                  "--username", configuration.Username };
Python, testcontainers/postgres.py (_connect):
    f"PGPASSWORD='{escaped_single_password}' psql --username {self.username} --dbname {self.dbname}
      --host 127.0.0.1 -c 'select version();'"

The official image logs the line twice: its temporary server's, then the final server's.  pgstash's
temporary server logs to a file, so pgstash says the line once itself, right before it execs the
final server, which says it again once it accepts connections.
"""
import os
import re
import signal
import subprocess
import time

import pytest

from helpers import PG_BINDIR, Background, free_port

pytestmark = pytest.mark.slow

LINE = "database system is ready to accept connections"
JAVA_RE = re.compile(".*database system is ready to accept connections.*\\s")


def java_count(log):
    # LogMessageWaitStrategy matches each frame (a line with its newline) against the regex, whole.
    return sum(1 for frame in log.splitlines(keepends=True) if JAVA_RE.fullmatch(frame))


def go_count(log):
    # wait.ForLog counts occurrences of the string in the log stream.
    return log.count(LINE)


def pg_isready_localhost(port, db, user):
    """The .NET rule, with the port of this host test (the container's is 5432)."""
    return subprocess.run([os.path.join(PG_BINDIR, "pg_isready"), "--host", "localhost", "--port", str(port),
                           "--dbname", db, "--username", user], capture_output=True, text=True,
                          timeout=30).returncode == 0


def psql_select_version(port, db, user, password):
    """The Python rule (the container's port is 5432)."""
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run([os.path.join(PG_BINDIR, "psql"), "--username", user, "--dbname", db, "--host",
                           "127.0.0.1", "--port", str(port), "-c", "select version();"], env=env,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL).returncode == 0


@pytest.fixture()
def bg(work):
    b = Background(work)
    yield b
    b.cleanup()


def start_and_watch(work, bg, cfg, env, port, gate=None):
    """Starts `pgstash run`; polls its log; returns it once both log rules are met, having checked that
    each rule is met only when the final server accepts connections."""
    p = bg.start("run", "-c", "listen_addresses=127.0.0.1", "-p", str(port), config=cfg, env=env)
    deadline = time.monotonic() + 120
    gated_seen = False
    while True:
        log = bg.output(p)
        if gate and os.path.exists(os.path.join(work.path, "started")) and not gated_seen:
            # The migration step is running on the temporary server: no rule may be met yet.
            assert go_count(log) == 0 and java_count(log) == 0, log
            assert not pg_isready_localhost(port, "app", "postgres"), "pg_isready --host localhost during the build"
            assert not psql_select_version(port, "app", "postgres", "secret"), "psql --host 127.0.0.1 during the build"
            gated_seen = True
            open(os.path.join(work.path, "go"), "w").close()
        if java_count(log) >= 2 or go_count(log) >= 2:
            break
        if java_count(log) == 1:
            # Between the two lines the final server is starting, not accepting yet, or just now.
            assert "pgstash: info:" in [ln for ln in log.splitlines() if LINE in ln][0], log
        assert p.poll() is None, f"pgstash exited ({p.returncode}):\n{log}"
        assert time.monotonic() < deadline, f"the log rules were not met in 120 s:\n{log}"
        time.sleep(0.02)
    assert not gate or gated_seen
    # Both rules met at once, and the final server accepts connections the moment they are met.
    assert java_count(log) == 2 and go_count(log) == 2, log
    assert pg_isready_localhost(port, "app", "postgres"), log
    assert psql_select_version(port, "app", "postgres", "secret"), log
    second = [ln for ln in log.splitlines() if LINE in ln][1]
    assert "pgstash" not in second and "LOG:" in second, f"the second line is not the final server's:\n{log}"
    return p


def stop(p):
    os.kill(p.pid, signal.SIGINT)
    p.wait(timeout=60)


def test_testcontainers_waits_on_miss_hit_and_reuse(work, bg):
    work.file("repo/migrations/0001_init.sql", "-- one\n")
    gated = ("/bin/sh -c 'touch ../started; while [ ! -e ../go ]; do sleep 0.05; done; "
             "psql -v ON_ERROR_STOP=1 -c \"CREATE TABLE made_by_step (id int)\"'")
    cfg = work.file("pgstash.ini", "[pgstash]\n\n[database]\nname = app\n\n[step only]\nroot = repo\n"
                                   f"migrations = migrations/*.sql\nrun = {gated}\n")
    sock = os.path.join(work.path, "ps")
    os.makedirs(sock)
    work.chown_up(sock)
    env = {"PGSTASH_SOCKET_DIR": sock, "POSTGRES_PASSWORD": "secret", "POSTGRES_HOST_AUTH_METHOD": None,
           "PGSTASH_INITDB_D": os.path.join(work.path, "initdb.d")}
    port = free_port()
    # A miss: initdb and the step on the temporary server (held until the test has looked).
    p = start_and_watch(work, bg, cfg, env, port, gate=True)
    stop(p)
    # A restart on the same PGDATA: reused as it is.
    p = start_and_watch(work, bg, cfg, env, port)
    assert "nothing to restore or migrate" in bg.output(p)
    stop(p)
    # A hit: a fresh PGDATA from the cache.
    fresh = os.path.join(work.path, "pgdata2")
    os.makedirs(fresh, mode=0o700)
    work.chown_up(fresh)
    p = start_and_watch(work, bg, cfg, dict(env, PGDATA=fresh), port)
    assert "restored" in bg.output(p).lower() or "hit" in bg.output(p).lower(), bg.output(p)
    stop(p)


def test_quiet_keeps_the_line(work, bg):
    """-q drops info messages, but not the line clients count."""
    work.file("repo/migrations/0001_init.sql", "-- one\n")
    cfg = work.file("pgstash.ini", "[pgstash]\n\n[database]\nname = app\n\n[step only]\nroot = repo\n"
                                   "migrations = migrations/*.sql\nrun = /bin/true\n")
    sock = os.path.join(work.path, "ps")
    os.makedirs(sock)
    work.chown_up(sock)
    env = {"PGSTASH_SOCKET_DIR": sock, "PGSTASH_INITDB_D": os.path.join(work.path, "initdb.d")}
    port = free_port()
    p = bg.start("-q", "run", "-c", "listen_addresses=127.0.0.1", "-p", str(port), config=cfg, env=env)
    deadline = time.monotonic() + 120
    while go_count(bg.output(p)) < 2:
        assert p.poll() is None and time.monotonic() < deadline, bg.output(p)
        time.sleep(0.05)
    assert "pgstash: info: starting" not in bg.output(p)
    stop(p)
