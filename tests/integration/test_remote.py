"""The S3 remote behind the local cache (issue 9), through the real binary
against a real S3 API: moto's server on a free loopback port with SigV4
signatures checked (s3server.py).  SKIP (visible) when moto is not
installed.

Each test is a small fleet: runners are separate cache directories and
PGDATAs in one work dir, sharing one bucket prefix.  The migration step
prints MIGRATING, so a build shows in a runner's output and a hit does not.
"""
import glob
import json
import os
import re
import time

import pytest

import s3server
from helpers import IS_ROOT, Background, free_port, need

BUCKET = "pgstash-ci"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    py = s3server.find_python()
    need(py is not None, "no python with moto[server] for the S3 tests "
                         "(python3 -m venv /opt/pgstash-s3 && /opt/pgstash-s3/bin/pip install 'moto[server]')")
    log = str(tmp_path_factory.mktemp("s3server") / "s3server.log")
    try:
        srv = s3server.S3Server.start(py, free_port(), [BUCKET], log)
    except RuntimeError as e:
        need(False, f"the S3 test server did not start: {e}")
    yield srv
    srv.stop()


_prefix_counter = [0]


class Fleet:
    """One test's view: a fresh prefix in the bucket, and runners."""

    def __init__(self, work, srv):
        _prefix_counter[0] += 1
        self.work, self.srv = work, srv
        self.prefix = f"ci-{os.getpid()}-{_prefix_counter[0]}"
        self.url = f"s3://{BUCKET}/{self.prefix}"

    def config(self, name="proj", tables=("a",), endpoint=None, step_sleep=0, url=None):
        """A repo whose migrations are .sql files applied by psql, and its ini with [remote]."""
        w = self.work
        root = os.path.join(w.path, name)
        for i, t in enumerate(tables):
            w.file(f"{name}/migrations/{i:04d}_{t}.sql", f"create table {t} (id int primary key, v text);\n")
        nap = f"sleep {step_sleep}; " if step_sleep else ""
        run = ("/bin/sh -c '" + nap + "echo MIGRATING; for f in migrations/*.sql; do "
               "psql -X -q -v ON_ERROR_STOP=1 -f \"$f\" || exit 1; done'")
        return w.file(f"{name}.ini",
                      "[database]\nname = app\n"
                      f"[step sql]\nroot = {root}\nmigrations = migrations/*.sql\nrun = {run}\n"
                      "[remote]\n"
                      f"url = {url or self.url}\n"
                      f"endpoint = {endpoint or self.srv.endpoint}\n"
                      "path_style = yes\n")

    def runner_env(self, runner, extra=None):
        """A runner: its own cache dir and PGDATA (named after it), the bucket's keys."""
        w = self.work
        cache = os.path.join(w.path, f"cache-{runner}")
        if not os.path.isdir(cache):
            os.makedirs(cache)
            w.chown_up(cache)
        env = {"PGSTASH_CACHE_DIR": cache, "PGDATA": os.path.join(w.path, f"pg-{runner}"),
               "PGSTASH_SOCKET_DIR": w.sock}
        env.update(self.srv.env())
        env.update(extra or {})
        return env

    def prepare(self, cfg, runner, **kw):
        return self.work.run("prepare", config=cfg, env=self.runner_env(runner), timeout=180, **kw)

    def objects(self):
        return self.srv.list(BUCKET, f"{self.prefix}/pgstash-v1/")

    def obj(self, key, suffix):
        return f"{self.prefix}/pgstash-v1/{key}{suffix}"

    def local_entries(self, runner):
        d = os.path.join(self.work.path, f"cache-{runner}", "pgstash-v1")
        return sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(d, "*.meta")))

    def local_tmp(self, runner):
        return os.listdir(os.path.join(self.work.path, f"cache-{runner}", "pgstash-v1", ".tmp"))


@pytest.fixture()
def fleet(work, s3_server):
    return Fleet(work, s3_server)


def built(r):
    return "[step sql] MIGRATING" in r.stderr


def test_remote_hit_from_another_runners_build(work, fleet):
    cfg = fleet.config()
    key = work.key(config=cfg)

    a = fleet.prepare(cfg, "a")
    assert a.rc == 0, a
    assert built(a), a
    objs = fleet.objects()
    assert fleet.obj(key, ".tar.zst") in objs and fleet.obj(key, ".meta") in objs, (objs, a)
    assert objs[fleet.obj(key, ".tar.zst")] > 0
    assert fleet.obj(key, ".lease") not in objs, "the builder's lease was not released"
    # The remote meta is the store's own meta.
    meta = fleet.srv.get(BUCKET, fleet.obj(key, ".meta")).decode()
    assert f"key = {key}" in meta and "archive_sha256 = " in meta

    b = fleet.prepare(cfg, "b")
    assert b.rc == 0, b
    assert "remote hit" in b.stderr, b
    assert not built(b), b
    # Downloaded into b's local cache, published whole, nothing left in .tmp.
    assert fleet.local_entries("b") == [key]
    assert fleet.local_tmp("b") == []
    v = work.run("verify", config=cfg, env=fleet.runner_env("b"))
    assert v.rc == 0 and f"ok {key}" in v.stdout, v
    # The restored database is the migrated one.
    assert work.sql("select count(*) from a", db="app", pgdata=os.path.join(work.path, "pg-b")) == "0"

    # b's next start is a local hit: the remote is not needed any more.
    env = fleet.runner_env("b", {"PGDATA": os.path.join(work.path, "pg-b2")})
    c = work.run("prepare", config=cfg, env=env, timeout=180)
    assert c.rc == 0, c
    assert "remote hit" not in c.stderr and not built(c), c


def test_remote_unreachable_builds_locally(work, fleet):
    cfg = fleet.config(endpoint=f"http://127.0.0.1:{free_port()}")
    key = work.key(config=cfg)
    t0 = time.monotonic()
    r = fleet.prepare(cfg, "a")
    assert r.rc == 0, r
    assert built(r), r
    assert re.search(r"^pgstash: warning: .*remote", r.stderr, re.M), r
    assert fleet.local_entries("a") == [key]
    # A refused connection costs nothing noticeable (no retries, no waiting).
    assert time.monotonic() - t0 < 60
    # Secrets never reach the output.
    assert fleet.srv.secret_key not in r.stderr and fleet.srv.secret_key not in r.stdout


def test_remote_wrong_secret_builds_locally(work, fleet):
    cfg = fleet.config()
    env = fleet.runner_env("a", {"AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    r = work.run("prepare", config=cfg, env=env, timeout=180)
    assert r.rc == 0, r
    assert built(r), r
    assert re.search(r"^pgstash: warning: .*SignatureDoesNotMatch", r.stderr, re.M), r
    assert "not-the-secret" not in r.stderr
    assert fleet.objects() == {}


@pytest.mark.parametrize("damage", ["archive-junk", "archive-short", "meta-junk"])
def test_remote_garbage_falls_back_to_a_local_build(work, fleet, damage):
    cfg = fleet.config()
    key = work.key(config=cfg)
    a = fleet.prepare(cfg, "a")
    assert a.rc == 0 and built(a), a
    arch = fleet.obj(key, ".tar.zst")
    size = fleet.objects()[arch]
    if damage == "archive-junk":
        fleet.srv.put(BUCKET, arch, os.urandom(size))
    elif damage == "archive-short":
        fleet.srv.put(BUCKET, arch, fleet.srv.get(BUCKET, arch)[: size // 2])
    else:
        fleet.srv.put(BUCKET, fleet.obj(key, ".meta"), b"<html><body>502 Bad Gateway</body></html>\n")

    b = fleet.prepare(cfg, "b")
    assert b.rc == 0, b
    assert "remote hit" not in b.stderr, b
    assert re.search(r"^pgstash: warning: .*remote", b.stderr, re.M), b
    assert built(b), b
    # No partial local entry: exactly the locally built one, and it verifies.
    assert fleet.local_entries("b") == [key]
    assert fleet.local_tmp("b") == []
    v = work.run("verify", config=cfg, env=fleet.runner_env("b"))
    assert v.rc == 0 and f"ok {key}" in v.stdout, v

    # b's build repaired the remote: the next runner gets a hit.
    c = fleet.prepare(cfg, "c")
    assert c.rc == 0, c
    assert "remote hit" in c.stderr and not built(c), c


def test_ls_and_prune_remote(work, fleet):
    cfg1 = fleet.config("p1", tables=("a",))
    cfg2 = fleet.config("p2", tables=("a", "b"))
    k1, k2 = work.key(config=cfg1), work.key(config=cfg2)
    assert k1 != k2
    r = fleet.prepare(cfg1, "a")
    assert r.rc == 0, r
    time.sleep(1.2)  # LastModified has whole seconds: k1 is older
    r = fleet.prepare(cfg2, "a2")
    assert r.rc == 0, r

    env = fleet.runner_env("a")
    ls = work.run("ls", "--remote", config=cfg1, env=env)
    assert ls.rc == 0, ls
    lines = [l for l in ls.stdout.splitlines() if k1 in l or k2 in l]
    assert len(lines) == 2 and k2 in lines[0], ls  # most recent first
    assert all(re.search(r"\bok\b", l) for l in lines), ls
    lj = work.run("ls", "--remote", "--json", config=cfg1, env=env)
    assert lj.rc == 0, lj
    listed = {e["key"]: e for e in json.loads(lj.stdout)}
    assert set(listed) == {k1, k2}
    assert all(e["complete"] and e["archive_bytes"] > 0 for e in listed.values())

    dry = work.run("prune", "--remote", "--max-entries=1", "--dry-run", config=cfg1, env=env)
    assert dry.rc == 0, dry
    assert re.search(rf"would remove {k1}", dry.stdout), dry
    assert k2 not in dry.stdout
    assert fleet.obj(k1, ".meta") in fleet.objects()

    p = work.run("prune", "--remote", "--max-entries=1", config=cfg1, env=env)
    assert p.rc == 0, p
    assert re.search(rf"removed {k1}", p.stdout), p
    objs = fleet.objects()
    assert not any(k1 in o for o in objs), objs
    assert fleet.obj(k2, ".meta") in objs and fleet.obj(k2, ".tar.zst") in objs
    # The local cache is not the remote's business.
    assert fleet.local_entries("a") == [k1]


def test_fleet_builds_once(work, fleet):
    """Two runners with empty caches start together: one builds (holding the
    lease), the other waits for its upload and restores it."""
    cfg = fleet.config(step_sleep=4)
    key = work.key(config=cfg)
    b = Background(work)
    try:
        p1 = b.start("prepare", config=cfg, env=fleet.runner_env("a"))
        p2 = b.start("prepare", config=cfg, env=fleet.runner_env("b"))
        rc1, rc2 = p1.wait(timeout=180), p2.wait(timeout=180)
        out1, out2 = Background.output(p1), Background.output(p2)
    finally:
        b.cleanup()
    assert rc1 == 0 and rc2 == 0, (out1, out2)
    builds = ["[step sql] MIGRATING" in o for o in (out1, out2)]
    assert builds.count(True) == 1, (out1, out2)
    waiter = out2 if builds[0] else out1
    assert "remote hit" in waiter, waiter
    assert fleet.local_entries("a") == [key] and fleet.local_entries("b") == [key]
    assert fleet.obj(key, ".lease") not in fleet.objects()


class _Drip:
    """An S3 endpoint that serves `meta` for <key>.meta and then drips the archive at 20 bytes a second
    (a declared size, a 200, bytes that never stop coming); everything else is refused."""

    def __init__(self, meta, size):
        import http.server
        import threading
        drip = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, body=b""):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.split("?")[0].endswith(".meta"):
                    return self._send(200, meta)
                if ".tar" not in self.path:
                    return self._send(403)
                drip.archive_requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                try:
                    while not drip.stopping.is_set():
                        self.wfile.write(b"\0" * 20)
                        self.wfile.flush()
                        drip.stopping.wait(1)
                except OSError:
                    pass
                self.close_connection = True

            def do_HEAD(self):
                self._send(404)

            def do_PUT(self):
                n = int(self.headers.get("Content-Length") or 0)
                while n > 0:
                    n -= len(self.rfile.read(min(n, 1 << 20)) or b"x" * n)
                self._send(403)

            do_POST = do_DELETE = do_PUT

        self.archive_requests = 0
        self.stopping = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def test_dripping_remote_ends_in_bounded_time(work):
    """A remote that answers the archive with a trickle (20 B/s, as the issue's attacker did): the
    download ends after about `timeout` seconds with a clear warning, and the start builds."""
    w = work
    root = os.path.join(w.path, "proj")
    w.file("proj/migrations/0000_a.sql", "create table a (id int);\n")
    run = "/bin/sh -c 'echo MIGRATING; psql -X -q -v ON_ERROR_STOP=1 -f migrations/0000_a.sql'"
    base = f"[database]\nname = app\n[step sql]\nroot = {root}\nmigrations = migrations/*.sql\nrun = {run}\n"
    local = w.file("local.ini", base)
    r = w.run("prepare", config=local, env={"PGDATA": os.path.join(w.path, "pg-a"), "PGSTASH_SOCKET_DIR": w.sock})
    assert r.rc == 0, r
    key = w.key(config=local)
    with open(os.path.join(w.cache, "pgstash-v1", key + ".meta"), "rb") as f:
        meta = f.read()
    size = int(re.search(rb"^archive_bytes = (\d+)$", meta, re.M).group(1))
    drip = _Drip(meta, size)
    try:
        cfg = w.file("drip.ini", base + f"[remote]\nurl = s3://bucket/p\nendpoint = {drip.endpoint}\n"
                                        "path_style = yes\ntimeout = 3\n")
        cache = os.path.join(w.path, "cache-b")
        os.makedirs(cache)
        w.chown_up(cache)
        env = {"PGDATA": os.path.join(w.path, "pg-b"), "PGSTASH_SOCKET_DIR": w.sock, "PGSTASH_CACHE_DIR": cache}
        t0 = time.monotonic()
        r = w.run("prepare", config=cfg, env=env, timeout=180)
        took = time.monotonic() - t0
    finally:
        drip.stop()
    assert r.rc == 0, r
    assert drip.archive_requests == 1, r  # a timeout is not retried
    assert re.search(r"warning: .*could not download the archive of .*slower than 64 KiB/s", r.stderr), r
    assert built(r) and "remote hit" not in r.stderr, r
    # About `timeout` for the download (the drip was still downloading after 45 s); then the build.
    assert took < 3 + 60, (took, r)


class _Recorder:
    """A listener on 127.0.0.1 that keeps every byte it is sent (each connection answered 403)."""

    def __init__(self):
        import socket
        import threading
        self.received = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    while b"\r\n\r\n" not in self.received:
                        data = conn.recv(65536)
                        if not data:
                            break
                        self.received += data
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def stop(self):
        self.sock.close()
        self.thread.join(5)


def test_config_cannot_send_a_secret_file_to_its_endpoint(work):
    """The attack: a config file (a pull request changes it) sets its own endpoint and names a root-only
    file as the access key; its content would go out in the Authorization header (Credential=…).  The
    secret files come from the environment only: exit 2 naming the line and the variable to set, the
    listener gets nothing, the content is in no output."""
    marker = "PGSTASH-MARKER-7c41e9"
    secret = work.file("root-only/credential", marker + "\n", mode=0o600)
    other = work.file("root-only/other", "anything\n", mode=0o600)
    if IS_ROOT:
        os.chown(secret, 0, 0)
        os.chown(other, 0, 0)
    rec = _Recorder()
    try:
        cfg = work.file("pr.ini", "[remote]\nurl = s3://bucket/p\n"
                                  f"endpoint = {rec.endpoint}\npath_style = yes\n"
                                  f"access_key_file = {secret}\nsecret_key_file = {other}\n")
        r = work.run("ls", "--remote", config=cfg, as_root=True, timeout=60)
    finally:
        rec.stop()
    assert marker.encode() not in rec.received, rec.received.decode(errors="replace")
    assert rec.received == b"", rec.received
    assert r.rc == 2, r
    assert f"{cfg}:5: access_key_file: secret files are not read from a config file" in r.stderr, r
    assert "set AWS_ACCESS_KEY_ID_FILE in the environment instead" in r.stderr, r
    assert f"{cfg}:6: secret_key_file:" in r.stderr and "AWS_SECRET_ACCESS_KEY_FILE" in r.stderr, r
    assert marker not in r.stdout + r.stderr, r
