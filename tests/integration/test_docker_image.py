"""The image (Dockerfile) as users run it: the official image's conventions,
a plain start that turns healthy, a container step through the Docker Engine
API (a miss, then a hit from the same cache volume), and docker stop.

Needs a Docker Engine on /var/run/docker.sock and the base image
debian:bookworm-slim (docker/build-base.sh makes it when no registry is
reachable; it runs here when debootstrap is installed).  The image is built
once per session from this checkout as pgstash-it/image:<checkout> (named
and labelled per checkout by images.py, so two checkouts on one engine keep
apart and `make clean-images` finds them; the dangling image a rebuild
leaves is pruned; set PGSTASH_TEST_IMAGE to test a prebuilt one instead).  Skipped, visibly,
without an engine.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from helpers import REPO, need
from images import CHECKOUT, LABEL, SOCKET, docker, engine_answers, ensure_base, prune_dangling, tag as checkout_tag

pytestmark = [pytest.mark.docker, pytest.mark.slow]



@pytest.fixture(scope="session")
def image():
    need(engine_answers(), f"no Docker Engine answers at {SOCKET}")
    prebuilt = os.environ.get("PGSTASH_TEST_IMAGE")
    if prebuilt:
        return prebuilt
    why = ensure_base()
    need(why is None, why)
    tag = checkout_tag("image")
    t0 = time.monotonic()
    docker("build", "-q", "--label", LABEL, "--build-arg", f"PGSTASH_TEST_CHECKOUT={CHECKOUT}", "-t", tag, REPO,
           timeout=1800)
    prune_dangling()
    print(f"\nbuilt {tag} in {time.monotonic() - t0:.1f} s")
    return tag


@pytest.fixture(scope="session")
def step_image(image):
    """The pgstash image without its entrypoint: a step image that has psql."""
    tag = checkout_tag("psql")
    docker("build", "-q", "--label", LABEL, "-t", tag, "-", input=f"FROM {image}\nENTRYPOINT []\nCMD [\"psql\"]\n")
    return tag


class Containers:
    """Names of the containers a test starts; all force-removed at the end."""

    def __init__(self):
        self.names = []

    def run(self, image, *args, env=None, mounts=(), name=None, user=None):
        name = name or f"pgstash-it-{uuid.uuid4().hex[:10]}"
        cmd = ["run", "-d", "--name", name] + (["--user", user] if user else [])
        for k, v in (env or {}).items():
            cmd += ["-e", f"{k}={v}"]
        for m in mounts:
            cmd += ["-v", m]
        docker(*cmd, image, *args)
        self.names.append(name)
        return name

    def logs(self, name):
        r = docker("logs", name, check=False)
        return r.stdout + r.stderr

    def inspect(self, name):
        return json.loads(docker("inspect", name).stdout)[0]

    def wait_healthy(self, name, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.inspect(name)["State"]
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy":
                return time.monotonic()
            if state["Status"] == "exited":
                raise AssertionError(f"{name} exited ({state['ExitCode']}):\n{self.logs(name)}")
            time.sleep(0.2)
        raise AssertionError(f"{name} not healthy after {timeout} s:\n{self.logs(name)}")

    def psql(self, name, sql, db="postgres"):
        return docker("exec", name, "psql", "-U", "postgres", "-d", db, "-tAc", sql).stdout.strip()


@pytest.fixture()
def containers():
    c = Containers()
    yield c
    for n in c.names:
        docker("rm", "-f", "-v", n, check=False)


@pytest.fixture()
def tmp():
    d = tempfile.mkdtemp(prefix="pgstash-it-docker-")
    os.chmod(d, 0o755)
    yield d
    # The cache was written by the container's postgres user: remove it as root in a container if need be.
    shutil.rmtree(d, ignore_errors=True)


def test_image_follows_the_official_conventions(image):
    cfg = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert cfg["Entrypoint"] == ["pgstash"]
    assert cfg["Cmd"] == ["postgres"]
    assert cfg["StopSignal"] == "SIGINT"
    assert "5432/tcp" in cfg["ExposedPorts"]
    assert set(cfg["Volumes"]) == {"/var/lib/postgresql/data", "/var/cache/pgstash"}
    assert cfg["Healthcheck"]["Test"] == ["CMD", "pgstash", "healthcheck"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PGDATA"] == "/var/lib/postgresql/data"
    assert env["PATH"].startswith(f"/usr/lib/postgresql/{env['PG_MAJOR']}/bin:")
    out = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                 "id -u postgres; id -g postgres; stat -c %a /var/run/postgresql $PGDATA;"
                 " grep -c \"^listen_addresses = '\\*'\" /usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample;"
                 " ls /etc/postgresql/ | wc -l; test -d /docker-entrypoint-initdb.d && echo initdb.d;"
                 " test -f /etc/pgstash/pgstash.ini && echo config; pgstash --version").stdout.split()
    assert out[:7] == ["999", "999", "3777", "1777", "1", "0", "initdb.d"], out
    assert out[7] == "config" and out[8] == "pgstash", out


def test_plain_start_turns_healthy_and_stops_fast(image, containers):
    name = containers.run(image, env={"POSTGRES_PASSWORD": "secret"})
    t0 = time.monotonic()
    containers.wait_healthy(name)
    print(f"healthy in {time.monotonic() - t0:.1f} s")
    assert containers.psql(name, "select 1") == "1"
    t0 = time.monotonic()
    docker("stop", name)
    assert time.monotonic() - t0 < 8, "docker stop should not wait for the kill timeout"
    assert containers.inspect(name)["State"]["ExitCode"] == 0, containers.logs(name)


def test_container_step_miss_then_hit(image, step_image, containers, tmp):
    mig = os.path.join(tmp, "migrations")
    cache = os.path.join(tmp, "cache")
    os.makedirs(mig)
    os.makedirs(cache)
    os.chmod(cache, 0o777)
    with open(os.path.join(mig, "0001.sql"), "w") as f:
        f.write("-- its content is what the key hashes\n")
    ini = os.path.join(tmp, "pgstash.ini")
    with open(ini, "w") as f:
        f.write("[database]\nname = app\n\n"
                "[step ddl]\nroot = /migrations\nmigrations = *.sql\n"
                "run = psql -v ON_ERROR_STOP=1 -c \"create table t (i int); insert into t values (42)\"\n"
                f"image = {step_image}\n")
    mounts = [f"{SOCKET}:{SOCKET}", f"{mig}:/migrations:ro", f"{cache}:/var/cache/pgstash",
              f"{ini}:/etc/pgstash/pgstash.ini:ro"]
    env = {"POSTGRES_PASSWORD": "secret"}

    first = containers.run(image, env=env, mounts=mounts)
    containers.wait_healthy(first)
    logs = containers.logs(first)
    assert "[step ddl] INSERT 0 1" in logs, logs
    assert containers.psql(first, "select i from t", db="app") == "42"
    own_id = containers.inspect(first)["Id"]
    # The step container is gone, and it carried our labels.
    left = docker("ps", "-aq", "--filter", f"label=pgstash.owner={own_id}").stdout.split()
    assert left == []
    docker("rm", "-f", "-v", first)

    second = containers.run(image, env=env, mounts=mounts)
    containers.wait_healthy(second)
    logs = containers.logs(second)
    assert "cache hit" in logs, logs
    assert "[step ddl]" not in logs, logs
    assert containers.psql(second, "select i from t", db="app") == "42"
    # Clean up as root inside a container: the cache belongs to uid 999.
    docker("run", "--rm", "--entrypoint", "sh", "-v", f"{cache}:/c", image, "-c", "rm -rf /c/*")


def step_containers(owner, all_states=True):
    return docker("ps", *(["-a"] if all_states else []), "-q", "--filter", f"label=pgstash.owner={owner}"
                  ).stdout.split()


def test_step_container_dies_with_a_force_removed_sidecar(image, step_image, containers, tmp):
    """`docker rm -f` of the sidecar during a container step kills pgstash
    with no chance to clean up: the step, in the sidecar's pid namespace,
    is killed by the kernel with it, and the engine removes it (AutoRemove)."""
    mig = os.path.join(tmp, "migrations")
    os.makedirs(mig)
    with open(os.path.join(mig, "0001.sql"), "w") as f:
        f.write("-- a step that outlives its sidecar unless something ends it\n")
    ini = os.path.join(tmp, "pgstash.ini")
    with open(ini, "w") as f:
        f.write("[step slow]\nroot = /migrations\nmigrations = *.sql\nrun = sleep 600\n"
                f"image = {step_image}\n")
    mounts = [f"{SOCKET}:{SOCKET}", f"{mig}:/migrations:ro", f"{ini}:/etc/pgstash/pgstash.ini:ro"]
    side = containers.run(image, env={"POSTGRES_PASSWORD": "secret"}, mounts=mounts)
    owner = containers.inspect(side)["Id"]
    deadline = time.monotonic() + 120
    while not step_containers(owner, all_states=False):
        assert time.monotonic() < deadline, f"the step never started:\n{containers.logs(side)}"
        time.sleep(0.3)
    docker("rm", "-f", side)
    deadline = time.monotonic() + 30
    while step_containers(owner):
        assert time.monotonic() < deadline, docker("ps", "-a", "--filter", f"label=pgstash.owner={owner}").stdout
        time.sleep(0.3)


def test_arbitrary_user_without_passwd_entry_caches(image, containers, tmp):
    """`docker run --user 12345:12345`, a uid the image's /etc/passwd does not
    know, as the official image allows (nss_wrapper): initdb works, and with
    a cache volume that uid can write, a miss is cached and the next
    container (a fresh PGDATA) is a hit."""
    uid = 12345
    cache = os.path.join(tmp, "cache")
    os.makedirs(cache)
    os.chown(cache, uid, uid)
    env = {"POSTGRES_PASSWORD": "secret"}
    logs = []
    for run in ("miss", "hit"):
        pgdata = os.path.join(tmp, f"pgdata-{run}")
        os.makedirs(pgdata, mode=0o700)
        os.chown(pgdata, uid, uid)
        name = containers.run(image, env=env, user=f"{uid}:{uid}",
                              mounts=[f"{pgdata}:/var/lib/postgresql/data", f"{cache}:/var/cache/pgstash"])
        containers.wait_healthy(name)
        logs.append(containers.logs(name))
        assert containers.psql(name, "select current_user") == "postgres"
        docker("rm", "-f", "-v", name)
    assert "has no passwd entry: initdb and postgres see it as \"postgres\" through nss_wrapper" in logs[0], logs[0]
    assert "cache miss" in logs[0] and "not cached" not in logs[0], logs[0]
    assert "cache hit" in logs[1], logs[1]
    # Clean up as root inside a container: the files belong to the uid.
    docker("run", "--rm", "--entrypoint", "sh", "-v", f"{tmp}:/t", image, "-c", "rm -rf /t/cache /t/pgdata-*")


def test_missing_step_image_is_a_step_failure(image, containers, tmp):
    ini = os.path.join(tmp, "pgstash.ini")
    mig = os.path.join(tmp, "migrations")
    os.makedirs(mig)
    with open(os.path.join(mig, "0001.sql"), "w") as f:
        f.write("select 1;\n")
    with open(ini, "w") as f:
        f.write("[step ddl]\nroot = /migrations\nmigrations = *.sql\nrun = true\n"
                "image = pgstash-it/no-such-image:nope\n")
    name = containers.run(image, env={"POSTGRES_PASSWORD": "secret"},
                          mounts=[f"{SOCKET}:{SOCKET}", f"{mig}:/migrations:ro", f"{ini}:/etc/pgstash/pgstash.ini:ro"])
    code = int(docker("wait", name, timeout=120).stdout.strip())
    logs = containers.logs(name)
    assert code != 0, logs
    assert "no-such-image" in logs, logs


# ---- issue 16: the clients people already use --------------------------------------------

def test_other_commands_run_as_in_the_official_image(image):
    # docker-entrypoint.sh ends with `exec "$@"`: psql, bash, pg_isready are run, nothing is bootstrapped.
    r = docker("run", "--rm", image, "bash", "-c", "echo hello; ls -A \"$PGDATA\" | wc -l", check=False)
    assert r.returncode == 0 and r.stdout.split() == ["hello", "0"], r
    r = docker("run", "--rm", image, "psql", "--version", check=False)
    assert r.returncode == 0 and r.stdout.startswith("psql (PostgreSQL)"), r
    r = docker("run", "--rm", image, "pg_isready", check=False)
    assert r.returncode == 2, r
    r = docker("run", "--rm", image, "postgres", "--version", check=False, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("postgres (PostgreSQL)"), r
    assert "bootstrap" not in r.stderr, r


TC_PYTHON = "/opt/pgstash-tc/bin/python"
LINE = "database system is ready to accept connections"
# Java, testcontainers-java modules/postgresql/.../PostgreSQLContainer.java:
#     new LogMessageWaitStrategy().withRegEx(".*database system is ready to accept connections.*\\s").withTimes(2)
JAVA_RE = __import__("re").compile(".*database system is ready to accept connections.*\\s")


def java_count(log):
    return sum(1 for frame in log.splitlines(keepends=True) if JAVA_RE.fullmatch(frame))


def go_count(log):
    # testcontainers-go modules/postgres/wait_strategies.go, BasicWaitStrategies:
    #     wait.ForLog("database system is ready to accept connections").WithOccurrence(2),
    return log.count(LINE)


def dotnet_ready(name, db, user):
    # testcontainers-dotnet src/Testcontainers.PostgreSql/PostgreSqlBuilder.cs, WaitUntil:
    #     _command = new List<string> { "pg_isready", "--host", "localhost", "--dbname", configuration.Database,
    #                                   "--username", configuration.Username };
    return docker("exec", name, "pg_isready", "--host", "localhost", "--dbname", db, "--username", user,
                  check=False).returncode == 0


def python_ready(name, db, user, password):
    # testcontainers-python testcontainers/postgres.py, _connect:
    #     f"PGPASSWORD='{escaped_single_password}' psql --username {self.username} --dbname {self.dbname}
    #       --host 127.0.0.1 -c 'select version();'"
    return docker("exec", name, "sh", "-c", f"PGPASSWORD='{password}' psql --username {user} --dbname {db} "
                  "--host 127.0.0.1 -c 'select version();'", check=False).returncode == 0


def final_server_up(name):
    """The final server is PID 1 (pgstash execs it; the temporary one is its child) and answers on the
    socket; a second's grace for our own check racing the server's start."""
    for _ in range(10):
        r = docker("exec", name, "sh", "-c", 'test "$(head -1 "$PGDATA/postmaster.pid")" = 1 && '
                   "psql -U test -d test -Atc 'select 1'", check=False)
        if r.returncode == 0 and r.stdout.strip() == "1":
            return True
        time.sleep(0.1)
    return False


def watch_rules(containers, name, timeout=180):
    """Polls until all four rules are met; each may be met only when the final server is up.  Returns
    how many polls saw the container not yet ready (the test checks there were some on a miss)."""
    deadline = time.monotonic() + timeout
    early = 0
    while True:
        log = containers.logs(name)
        rules = {"java": java_count(log) >= 2, "go": go_count(log) >= 2,
                 "dotnet": dotnet_ready(name, "test", "test"), "python": python_ready(name, "test", "test", "test")}
        met = [k for k, v in rules.items() if v]
        if met:
            assert final_server_up(name), f"{met} met before the final server accepts connections:\n{log}"
            # The log was read before the in-container rules ran, which may have seen the server come up
            # since: what bootstrap wrote before the final server is in the log read now.
            log = containers.logs(name)
            assert "temporary server stopped" in log or "nothing to restore" in log or "cache hit" in log, log
        if len(met) == 4:
            assert java_count(log) % 2 == 0 and go_count(log) % 2 == 0, log
            return early
        early += 1
        assert containers.inspect(name)["State"]["Status"] == "running", log
        assert time.monotonic() < deadline, f"rules met after {timeout} s: {met}\n{log}"
        time.sleep(0.1)


def test_testcontainers_default_waits_on_miss_restart_and_hit(image, containers, tmp):
    cache = os.path.join(tmp, "cache")
    initdb = os.path.join(tmp, "initdb")
    os.makedirs(cache)
    os.makedirs(initdb)
    os.chmod(cache, 0o777)
    with open(os.path.join(initdb, "10-slow.sh"), "w") as f:
        f.write("sleep 3\npsql -v ON_ERROR_STOP=1 -c 'create table t (i int)'\n")
    env = {"POSTGRES_USER": "test", "POSTGRES_PASSWORD": "test", "POSTGRES_DB": "test"}
    mounts = [f"{cache}:/var/cache/pgstash", f"{initdb}:/docker-entrypoint-initdb.d:ro"]
    # Testcontainers' command: Java's setCommand("postgres", "-c", "fsync=off").
    miss = containers.run(image, "postgres", "-c", "fsync=off", env=env, mounts=mounts)
    assert watch_rules(containers, miss) > 0
    docker("restart", miss)
    watch_rules(containers, miss)
    assert java_count(containers.logs(miss)) == 4, containers.logs(miss)
    docker("rm", "-f", "-v", miss)
    hit = containers.run(image, "postgres", "-c", "fsync=off", env=env, mounts=mounts)
    watch_rules(containers, hit)
    assert "cache hit" in containers.logs(hit), containers.logs(hit)
    docker("rm", "-f", "-v", hit)
    docker("run", "--rm", "--entrypoint", "sh", "-v", f"{cache}:/c", image, "-c", "rm -rf /c/*")


def test_real_testcontainers_python(image, tmp):
    need(os.access(TC_PYTHON, os.X_OK), f"no testcontainers-python at {TC_PYTHON} (.ci/run installs it)")
    cache = os.path.join(tmp, "cache")
    os.makedirs(cache)
    os.chmod(cache, 0o777)
    script = (
        "import sys\n"
        "from testcontainers.postgres import PostgresContainer\n"
        "for attempt in ('miss', 'hit'):\n"
        "    c = PostgresContainer(sys.argv[1]).with_volume_mapping(sys.argv[2], '/var/cache/pgstash', 'rw')\n"
        "    with c:\n"
        "        code, out = c.exec(['psql', '-U', 'test', '-d', 'test', '-Atc', 'select 40 + 2'])\n"
        "        print(attempt, code, out.decode().strip(), flush=True)\n"
    )
    env = dict(os.environ, TESTCONTAINERS_RYUK_DISABLED="true", PYTHONWARNINGS="ignore")
    r = subprocess.run([TC_PYTHON, "-c", script, image, cache], capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r
    assert r.stdout.split("\n")[:2] == ["miss 0 42", "hit 0 42"], r
    docker("run", "--rm", "--entrypoint", "sh", "-v", f"{cache}:/c", image, "-c", "rm -rf /c/*")


def sorted_rows(containers, name):
    containers.psql(name, "create table s (v text); insert into s values ('a'), ('B'), ('_c'), ('b'), ('A')")
    return containers.psql(name, "select string_agg(v, ' ' order by v) from s")


@pytest.mark.parametrize("env,collate,order", [
    ({}, "en_US.utf8", "a A b B _c"),  # the official image's default (glibc 2.36: "_" is ignored at first level)
    ({"LANG": "C.UTF-8"}, "C.UTF-8", "A B _c a b"),                          # LANG honoured
    ({"POSTGRES_INITDB_ARGS": "--locale=en_US.UTF-8", "LANG": "C.UTF-8"}, "en_US.UTF-8", "a A b B _c"),
], ids=["default", "lang", "initdb-args"])
def test_locale_as_the_official_image(image, containers, env, collate, order):
    name = containers.run(image, env=dict(env, POSTGRES_PASSWORD="secret"))
    containers.wait_healthy(name)
    assert containers.psql(name, "select datcollate from pg_database where datname = current_database()") == collate
    assert sorted_rows(containers, name) == order


def test_localedef_in_a_derived_image(image, containers):
    # The official image's documented recipe for another locale.
    tag = "pgstash-it/de:test"
    docker("build", "-q", "-t", tag, "-", input=f"FROM {image}\n"
           "RUN localedef -i de_DE -c -f UTF-8 -A /usr/share/locale/locale.alias de_DE.UTF-8\n"
           "ENV LANG=de_DE.utf8\n", timeout=600)
    name = containers.run(tag, env={"POSTGRES_PASSWORD": "secret"})
    containers.wait_healthy(name)
    assert containers.psql(name, "select datcollate from pg_database where datname = current_database()") == "de_DE.utf8"
    assert containers.psql(name, "select to_char(1234.5, '9G999D9')") == "1.234,5"
    docker("rm", "-f", "-v", name)
    docker("rmi", tag, check=False)


def test_postgres_is_the_images_major(image):
    # One Dockerfile for every major (make image PG_MAJOR=15|17): PG_MAJOR and the server agree.
    # Run with PGSTASH_TEST_IMAGE=pgstash:17 to test the PostgreSQL 17 image.
    env = dict(e.split("=", 1) for e in json.loads(docker("image", "inspect", image).stdout)[0]["Config"]["Env"])
    r = docker("run", "--rm", image, "postgres", "--version", timeout=60)
    assert r.stdout.startswith(f"postgres (PostgreSQL) {env['PG_MAJOR']}."), r
    # Found on PATH beside its pg_config, which is not run (an exec less on every start).
    r = docker("run", "--rm", "--entrypoint", "pgstash", image, "-v", "key", check=False, timeout=60)
    assert f'in "/usr/lib/postgresql/{env["PG_MAJOR"]}/bin" (from the directory of pg_config)' in r.stderr, r


# ---- issue 15: least privilege in the sidecar ---------------------------------------------

def scram_matches(verifier, password):
    """Whether PostgreSQL's stored `SCRAM-SHA-256$iter:salt$StoredKey:ServerKey` is `password`'s."""
    import base64
    import hashlib
    import hmac
    head, keys = verifier.split("$", 1)[1].split("$")
    iterations, salt = head.split(":")
    stored = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest() == base64.b64decode(stored)


def sidecar_with_container_step(image, step_image, containers, tmp, run, password):
    """A sidecar whose one step runs `run` in a container of step_image; returns (name, cache dir)."""
    mig = os.path.join(tmp, "migrations")
    cache = os.path.join(tmp, "cache")
    os.makedirs(mig)
    os.makedirs(cache)
    os.chmod(cache, 0o777)
    with open(os.path.join(mig, "0001.sql"), "w") as f:
        f.write(f"-- {uuid.uuid4().hex}: a key of its own\n")
    ini = os.path.join(tmp, "pgstash.ini")
    with open(ini, "w") as f:
        # inih reads lines of at most 199 bytes: a long `run` goes on continuation lines (joined by a blank).
        run = "\n  ".join(run) if isinstance(run, list) else run
        f.write(f"[step probe]\nroot = /migrations\nmigrations = *.sql\nrun = {run}\nimage = {step_image}\n")
    mounts = [f"{SOCKET}:{SOCKET}", f"{mig}:/migrations:ro", f"{cache}:/var/cache/pgstash",
              f"{ini}:/etc/pgstash/pgstash.ini:ro"]
    return containers.run(image, env={"POSTGRES_PASSWORD": password}, mounts=mounts), cache


def isready(name, host):
    """pg_isready inside the sidecar, where a readiness probe runs: 0 accepting, 2 no response."""
    return docker("exec", name, "pg_isready", "-h", host, "-p", "5432", "-t", "2", check=False,
                  timeout=60).returncode


def test_container_step_reaches_a_private_temporary_server(image, step_image, containers, tmp):
    """The temporary server of a container step listened on 127.0.0.1:5432 with trust: every probe in the
    sidecar saw "ready" on a half-migrated database for the whole migration, and any password logged in.
    Now it is on a private port, with a one-time SCRAM password that the final server does not take and
    the snapshot does not hold; the step never sees POSTGRES_PASSWORD."""
    password = "final-Secret-7Kq"
    run = ["sh -c 'echo ONE_TIME $PGPASSWORD $PGHOST $PGPORT;",
           "echo VERIFIER $(psql -XAtc \"select rolpassword from pg_authid where rolname = current_user\");",
           "env | sed \"s/^/ENV /\"; psql -v ON_ERROR_STOP=1 -c \"create table t (i int)\";",
           "sleep 6; echo DONE'"]
    name, cache = sidecar_with_container_step(image, step_image, containers, tmp, run, password)
    deadline = time.monotonic() + 300
    probes = 0
    while True:
        # A readiness loop in the sidecar: the first server it finds must be the final one (PID 1, exec'd).
        if isready(name, "127.0.0.1") == 0:
            comm = docker("exec", name, "cat", "/proc/1/comm").stdout.strip()
            assert comm == "postgres", f"{comm} answered on 127.0.0.1:5432:\n{containers.logs(name)}"
            break
        logs = containers.logs(name)
        if "[step probe] ONE_TIME" in logs and "[step probe] DONE" not in logs:
            # The migration runs: nothing answers where clients and probes look for the server.
            for host in ("localhost", "/var/run/postgresql"):
                assert isready(name, host) == 2, (host, containers.logs(name))
            probes += 1
        assert containers.inspect(name)["State"]["Status"] == "running", logs
        assert time.monotonic() < deadline, logs
        time.sleep(0.05)
    assert probes >= 3, f"only {probes} probe rounds during the step:\n{containers.logs(name)}"
    containers.wait_healthy(name)
    assert "[step probe] DONE" in containers.logs(name)
    logs = containers.logs(name)
    one_time, host, port = next(ln.split()[3:6] for ln in logs.splitlines() if "[step probe] ONE_TIME " in ln)
    verifier = next(ln.split()[3] for ln in logs.splitlines() if "[step probe] VERIFIER " in ln)
    assert host == "127.0.0.1" and port != "5432", (host, port)
    assert len(one_time) >= 32 and one_time != password
    assert scram_matches(verifier, one_time)
    step_env = "\n".join(ln for ln in logs.splitlines() if "[step probe] ENV " in ln)
    assert f"PGPASSWORD={one_time}" in step_env and password not in step_env, step_env
    assert "POSTGRES_PASSWORD" not in step_env, step_env

    # The final server knows the configured password only.
    stored = containers.psql(name, "select rolpassword from pg_authid where rolname = 'postgres'")
    assert scram_matches(stored, password) and not scram_matches(stored, one_time), stored
    ip = containers.inspect(name)["NetworkSettings"]["IPAddress"]
    if ip:  # over the container's own address: `host all all all scram-sha-256`, not loopback's trust
        def login(pw):
            return docker("exec", "-e", f"PGPASSWORD={pw}", name, "psql", "-XAt", "-h", ip, "-U", "postgres",
                          "-c", "select 1", check=False, timeout=60)
        r = login(one_time)
        assert r.returncode != 0 and "password authentication failed" in r.stderr, r
        assert login(password).stdout.strip() == "1"

    # The snapshot holds neither the one-time password nor its verifier.
    archives = [os.path.join(d, n) for d, _, ns in os.walk(cache) for n in ns if n.endswith(".tar.zst")]
    assert archives, os.listdir(cache)
    for a in archives:
        data = subprocess.run(["zstd", "-dcq", a], capture_output=True, check=True, timeout=120).stdout
        assert one_time.encode() not in data, a
        assert verifier.split("$")[2].split(":")[0].encode() not in data, a
        assert password.encode() not in data, a
    docker("run", "--rm", "--entrypoint", "sh", "-v", f"{cache}:/c", image, "-c", "rm -rf /c/*")


def test_postmaster_holds_no_docker_socket_group(image, step_image, containers, tmp):
    """With an `image =` step the exec'd postgres kept the Docker socket's group (`Groups: 105 999` on
    PID 1), and `COPY ... FROM PROGRAM` drove the Engine API.  Read PID 1's status in a real sidecar."""
    name, cache = sidecar_with_container_step(image, step_image, containers, tmp, "true", "secret")
    containers.wait_healthy(name)
    assert "[step probe]" in containers.logs(name) or "step probe finished" in containers.logs(name)
    sock_gid = docker("exec", name, "stat", "-c", "%g", SOCKET).stdout.strip()
    status = docker("exec", name, "cat", "/proc/1/status").stdout
    fields = dict(ln.split(":", 1) for ln in status.splitlines() if ":" in ln)
    assert fields["Name"].strip() == "postgres", status
    assert fields["Uid"].split()[:2] == ["999", "999"], status
    assert fields["Gid"].split()[:2] == ["999", "999"], status
    groups = fields["Groups"].split()
    assert sock_gid not in groups and groups in ([], ["999"]), (sock_gid, fields["Groups"])
    # And the superuser's COPY ... FROM PROGRAM can't open the socket.
    out = containers.psql(name, "create temp table o (l text); "
                                f"copy o from program 'test -w {SOCKET} && echo writable || echo denied'; "
                                "select l from o")
    assert out.splitlines()[-1] == "denied", out
    docker("run", "--rm", "--entrypoint", "sh", "-v", f"{cache}:/c", image, "-c", "rm -rf /c/*")
