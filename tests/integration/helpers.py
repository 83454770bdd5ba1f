"""Helpers for the integration tests (the fixtures in conftest.py use them):
the real pgstash binary, a real PostgreSQL, the real example repos.

- The binary is $PGSTASH_BIN (default ./pgstash), copied once per session to a
  directory every user can read, because the checkout may live under /root.
- postgres refuses to run as root, so when the suite runs as root every
  pgstash call runs as the unprivileged `postgres` user (tests that need root
  say `as_root=True`).
- Each test gets its own work directory under /tmp (PGDATA, cache, sockets,
  copies of the example repos), owned by that user.  It is removed when the
  test passes; when it fails, its logs (every pgstash call with its output,
  server logs) are copied to $PGSTASH_TEST_LOGS (tests/logs/...) and the
  directory itself is kept and named in the report.
- Steps get PATH=/usr/bin:/bin so Debian's python3 (with python3-django and
  Flask-Migrate) runs them, not a pyenv or virtualenv python3.
"""
import contextlib
import fcntl
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")
IS_ROOT = os.geteuid() == 0
RUN_USER = os.environ.get("PGSTASH_TEST_USER", "postgres")
BASE_PATH = "/usr/bin:/bin"
SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: |SUMMARY: UndefinedBehaviorSanitizer")
LOG_ROOT = os.environ.get("PGSTASH_TEST_LOGS") or os.path.join(REPO, "tests", "logs", "integration")


def _find_pg_bindir():
    env = os.environ.get("PGSTASH_TEST_PG_BINDIR")
    if env:
        return env
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             env={"PATH": BASE_PATH}).stdout.strip()
        if out and os.access(os.path.join(out, "postgres"), os.X_OK):
            return out
    except FileNotFoundError:
        pass
    found = sorted(d for d in (f"/usr/lib/postgresql/{v}/bin" for v in range(30, 9, -1))
                   if os.access(os.path.join(d, "postgres"), os.X_OK))
    return found[-1] if found else None


PG_BINDIR = _find_pg_bindir()


def pg_major(bindir=PG_BINDIR):
    out = subprocess.run([os.path.join(bindir, "postgres"), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(m.group(1)) if m else None


def _user_ids():
    if not IS_ROOT:
        return None
    try:
        pw = pwd.getpwnam(RUN_USER)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


USER_IDS = _user_ids()


def need(condition, reason):
    """Skips the calling test unless `condition`, saying why where it can be
    seen: on stderr as it happens and in pytest's -rs summary."""
    if not condition:
        sys.stderr.write(f"\nSKIP: {reason}\n")
        pytest.skip(reason)


def need_unprivileged():
    """For tests whose point is a permission check (chmod 000): root reads anything."""
    need(not IS_ROOT or USER_IDS is not None,
         f"running as root and there is no \"{RUN_USER}\" user to drop to")


def chown_tree(path):
    if USER_IDS is None:
        return
    uid, gid = USER_IDS
    os.lchown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), uid, gid)


def free_port():
    """A TCP port nobody listens on right now (there is a race; it's a test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def final_marker(pgdata, timeout=15.0):
    """PGDATA's marker (pgstash.key, stripped) once it is final.  A finished
    start marks PGDATA "unsynced KEY BOOT_ID" and leaves a background process
    to syncfs it and then write KEY (src/marker.h): this waits up to `timeout`
    seconds for that.  None when there is no marker; an unfinished one (say
    "building KEY") is returned at once."""
    p = os.path.join(pgdata, "pgstash.key")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(p) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        if not text.startswith("unsynced ") or time.monotonic() > deadline:
            return text
        time.sleep(0.01)


def pgdata_unlocked(pgdata, timeout=15.0):
    """Waits up to `timeout` seconds until nothing holds PGDATA's lock (a flock
    on the directory that a start, then its background syncer, holds); true
    once it is free.  The syncer holds it until it exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(pgdata, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def read_proc(pid, name):
    """/proc/PID/NAME as bytes ("exe": the link's target).  Root inside a
    container has no CAP_SYS_PTRACE, which reading another user's environ or
    exe needs (EACCES: the fresh-machine test's container); then it is read as
    the test user, who owns the processes pgstash starts."""
    path = f"/proc/{pid}/{name}"
    try:
        if name == "exe":
            return os.fsencode(os.readlink(path))
        with open(path, "rb") as f:
            return f.read()
    except PermissionError:
        if not (IS_ROOT and USER_IDS):
            raise
        argv = ["readlink", path] if name == "exe" else ["cat", path]
        p = subprocess.run(argv, capture_output=True, check=True, user=USER_IDS[0], group=USER_IDS[1],
                           extra_groups=[])
        return p.stdout.rstrip(b"\n") if name == "exe" else p.stdout


def background_syncers(pgdata):
    """Live pgstash processes (the background syncer: comm "pgstash-sync") whose
    environment names PGDATA=pgdata; {pid: cmdline}."""
    want = b"PGDATA=" + os.fsencode(pgdata)
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm", "rb") as f:
                comm = f.read().strip()
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        if comm.startswith(b"pgstash") and want in env and state not in ("Z", "X"):
            found[int(d)] = cmd
    return found


class Result:
    def __init__(self, args, rc, stdout, stderr, seconds):
        self.args, self.rc, self.stdout, self.stderr, self.seconds = args, rc, stdout, stderr, seconds

    def __repr__(self):
        return (f"<pgstash {' '.join(map(shlex.quote, self.args))}: rc={self.rc}\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}>")


class Work:
    """One test's scratch directory and everything it runs there."""

    def __init__(self, path, binary, name):
        self.path = path
        self.binary = binary
        self.name = name
        self.pgdata = os.path.join(path, "pgdata")
        self.cache = os.path.join(path, "cache")
        self.sock = os.path.join(path, "sock")
        self.calls = []  # every pgstash Result, for the failure log
        for d in (self.cache, self.sock):
            os.makedirs(d)
        os.makedirs(self.pgdata, mode=0o700)
        chown_tree(path)

    # ---- files ----------------------------------------------------------

    def file(self, rel, content="", mode=None):
        """Writes path/rel (parents created, owned by the run user); returns its path."""
        p = os.path.join(self.path, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w" if isinstance(content, str) else "wb") as f:
            f.write(content)
        if mode is not None:
            os.chmod(p, mode)
        self.chown_up(p)
        return p

    def chown_up(self, p):
        """Gives `p` and its parents up to the work dir to the run user."""
        while USER_IDS is not None and p.startswith(self.path + "/"):
            os.lchown(p, *USER_IDS)
            p = os.path.dirname(p)

    def copy_examples(self, dest="examples"):
        """Copies examples/ (both repos and pgstash.ini) into the work dir, so a
        test may edit migrations; returns the copy's pgstash.ini path."""
        d = os.path.join(self.path, dest)
        shutil.copytree(EXAMPLES, d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "demo.sh"))
        chown_tree(d)
        return os.path.join(d, "pgstash.ini")

    def wrapped_bindir(self, prog, script, name):
        """A PG_BINDIR (work/name) whose `prog` is the shell script `script`
        (lines after #!/bin/sh), its other programs the real ones (symlinks)."""
        d = os.path.join(self.path, name)
        os.makedirs(d)
        for other in os.listdir(PG_BINDIR):
            if other != prog:
                os.symlink(os.path.join(PG_BINDIR, other), os.path.join(d, other))
        with open(os.path.join(d, prog), "w") as f:
            f.write(f"#!/bin/sh\n{script}\n")
        os.chmod(os.path.join(d, prog), 0o755)
        chown_tree(d)
        return d

    def fake_bindir(self, version_line="postgres (PostgreSQL) 16.1", name="fakebin"):
        """A directory whose `postgres --version` says `version_line`; the other
        programs are the real ones (symlinks), so only the version differs."""
        return self.wrapped_bindir("postgres", f"if [ \"$1\" = --version ] || [ \"$1\" = -V ]; then\n"
                                   f"  echo '{version_line}'\n  exit 0\nfi\nexec {PG_BINDIR}/postgres \"$@\"", name)

    # ---- running pgstash ------------------------------------------------

    def env(self, extra=None):
        e = {
            "PATH": BASE_PATH,
            "HOME": self.path,
            "LANG": "C.UTF-8",
            "PGDATA": self.pgdata,
            "PGSTASH_CACHE_DIR": self.cache,
            "POSTGRES_HOST_AUTH_METHOD": "trust",
        }
        if PG_BINDIR:
            e["PGSTASH_PG_BINDIR"] = PG_BINDIR
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TZ"):
            if k in os.environ:
                e[k] = os.environ[k]
        for k, v in (extra or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = str(v)
        return e

    def run(self, *args, env=None, timeout=120, as_root=False, cwd=None, input=None, config=None,
            sanitizer_ok=False):
        """Runs pgstash [--config=config] ARGS; returns a Result (rc, stdout,
        stderr).  A sanitizer report on stderr fails the test unless
        sanitizer_ok."""
        argv = [self.binary] + ([f"--config={config}"] if config else []) + list(args)
        kw = {}
        if IS_ROOT and not as_root and USER_IDS is not None:
            kw = dict(user=USER_IDS[0], group=USER_IDS[1], extra_groups=[])
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, env=self.env(env), cwd=cwd or self.path, input=input,
                               stdin=None if input is not None else subprocess.DEVNULL,
                               capture_output=True, text=True, errors="replace", timeout=timeout,
                               start_new_session=True, **kw)
            r = Result(argv[1:], p.returncode, p.stdout, p.stderr, time.monotonic() - t0)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            r = Result(argv[1:], None, out, err + f"\n*** timed out after {timeout} s\n", time.monotonic() - t0)
            self.calls.append(r)
            pytest.fail(f"pgstash {' '.join(args)} timed out after {timeout} s\n{r!r}", pytrace=False)
        self.calls.append(r)
        if not sanitizer_ok and SANITIZER_RE.search(r.stderr):
            pytest.fail(f"sanitizer report from pgstash {' '.join(args)}:\n{r.stderr}", pytrace=False)
        return r

    def key(self, config=None, env=None, **kw):
        """`pgstash key`, asserting it succeeds and prints one key; returns it."""
        r = self.run("key", config=config, env=env, **kw)
        assert r.rc == 0, r
        assert re.fullmatch(r"[0-9a-f]{64}\n", r.stdout), r
        return r.stdout.strip()

    # ---- a short-lived server on an existing PGDATA -----------------------

    def _as_user(self, argv, env=None, timeout=120, check=True):
        kw = {}
        if IS_ROOT and USER_IDS is not None:
            kw = dict(user=USER_IDS[0], group=USER_IDS[1], extra_groups=[])
        e = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": self.path}
        e.update(env or {})
        p = subprocess.run(argv, env=e, cwd=self.path, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
        return p

    @contextlib.contextmanager
    def server(self, pgdata=None, user="postgres", password=None):
        """Starts postgres on `pgdata` (default: this test's PGDATA) with a
        unix socket in the work dir and no TCP; yields sql(query, db=...)."""
        pgdata = pgdata or self.pgdata
        log = os.path.join(self.path, f"server-{os.path.basename(pgdata)}.log")
        pg_ctl = os.path.join(PG_BINDIR, "pg_ctl")
        self._as_user([pg_ctl, "-D", pgdata, "-l", log, "-w", "-t", "60", "-o",
                       f"-k {self.sock} -c listen_addresses='' -c port=5432", "start"])
        try:
            def sql(query, db="postgres"):
                env = {"PGPASSWORD": password} if password else {}
                p = self._as_user([os.path.join(PG_BINDIR, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                                   "-h", self.sock, "-p", "5432", "-U", user, "-d", db, "-c", query], env=env)
                return p.stdout.strip()
            yield sql
        finally:
            self._as_user([pg_ctl, "-D", pgdata, "-m", "fast", "-w", "-t", "60", "stop"], check=False)

    def sql(self, query, db="postgres", pgdata=None, **kw):
        """One query on a server started and stopped around it."""
        with self.server(pgdata, **kw) as sql:
            return sql(query, db)

    # ---- teardown -----------------------------------------------------------

    def stop_leftover_servers(self):
        for dirpath, dirnames, filenames in os.walk(self.path):
            if "postmaster.pid" in filenames and "PG_VERSION" in filenames:
                subprocess.run([os.path.join(PG_BINDIR, "pg_ctl"), "-D", dirpath, "-m", "immediate", "-w", "stop"],
                               capture_output=True, **(dict(user=USER_IDS[0], group=USER_IDS[1], extra_groups=[])
                                                       if IS_ROOT and USER_IDS else {}))
                dirnames[:] = []

    def save_logs(self, dest):
        os.makedirs(dest, exist_ok=True)
        with open(os.path.join(dest, "pgstash-calls.log"), "w") as f:
            f.write(f"work dir: {self.path}\n\n")
            for r in self.calls:
                f.write(f"$ pgstash {' '.join(map(shlex.quote, r.args))}\n"
                        f"exit status: {r.rc}  ({r.seconds:.2f} s)\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}\n\n")
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames[:] = [d for d in dirnames if d not in ("base", "global", "pg_wal", "cache")]
            for n in filenames:
                if n.endswith(".log") or dirpath.endswith("/log"):
                    src = os.path.join(dirpath, n)
                    relp = os.path.relpath(src, self.path).replace("/", "__")
                    with contextlib.suppress(OSError):
                        shutil.copyfile(src, os.path.join(dest, relp))


class Background:
    """pgstash started with Popen in its own session; cleanup kills only those."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, *args, env=None, config=None, as_root=False):
        argv = [self.work.binary] + ([f"--config={config}"] if config else []) + list(args)
        kw = {}
        if IS_ROOT and not as_root and USER_IDS is not None:
            kw = dict(user=USER_IDS[0], group=USER_IDS[1], extra_groups=[])
        log = os.path.join(self.work.path, f"background-{len(self.procs)}.log")
        with open(log, "w") as out:
            p = subprocess.Popen(argv, env=self.work.env(env), cwd=self.work.path, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        p.log = log
        self.procs.append(p)
        return p

    @staticmethod
    def output(p):
        with open(p.log, errors="replace") as f:
            return f.read()

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=30)
