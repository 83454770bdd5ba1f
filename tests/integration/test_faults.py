"""Fault injection (issue 8): the real binary, a real PostgreSQL 15, no mocks,
proving that no fault loses or corrupts anything.

  1. crash consistency  kill -9 of pgstash at random points of a miss (weighted
                        to shutdown/snapshot/publish) and of a hit's restore;
                        after each: the leftovers are killed, `verify` finds
                        nothing bad, `ls` shows only complete entries, and the
                        next start on the same PGDATA hits or rebuilds and has
                        the migrated tables; plus the two cases where the next
                        start meets what a kill -9 leaves (an initdb cut short,
                        a temporary server still running)
  2. corruption         bytes flipped at random offsets (zstd and plain tar),
                        an empty archive, an empty meta, metas with bad fields,
                        an archive whose PG_VERSION says 14 (digest and size
                        fixed so that only the version check can catch it)
  3. hostile archives   with a correct digest: "..", absolute paths, symlinks
                        out and a file through them, hard links out, devices,
                        fifos, a 100 GB declared size (plain and GNU sparse)
  4. concurrency        8 cold starts on one cache volume; a waiter whose
                        builder is killed -9 takes over
  5. resource faults    cache on a full or read-only tmpfs, PGDATA on a full one
  6. signals            SIGTERM and SIGINT during initdb, the temporary
                        server's start, a step, the snapshot, a restore
  7. bad input          every config key with bad values, duplicates, long
                        lines, non-UTF-8; bad environment and secret files

Randomised tests print "NAME: N trials, K bad (seed S; ...)" on the terminal.
PGSTASH_FAULT_TRIALS=N (default 50) sets the number of kill -9 trials; the
other randomised tests scale with it (20 corruption trials at the default).
PGSTASH_FAULT_JOBS (default 2) runs that many trials at once, each worker with
its own cache and PGDATA.  PGSTASH_FAULT_SEED fixes the random choices (the
timing of a kill still varies with the machine's load).

Detection tests stop some of their runs with SIGTERM as soon as the damaged
entry has been reported and removed and the rebuild has begun (to spare an
initdb per trial); every family also has runs that go through to the rebuilt,
migrated database.
"""
import collections
import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import pytest

from helpers import (BASE_PATH, IS_ROOT, PG_BINDIR, USER_IDS, Result, Work, chown_tree, final_marker, need,
                     need_unprivileged, pgdata_unlocked)

TRIALS = int(os.environ.get("PGSTASH_FAULT_TRIALS") or 50)
JOBS = max(1, int(os.environ.get("PGSTASH_FAULT_JOBS") or 2))
SEED = int(os.environ.get("PGSTASH_FAULT_SEED") or random.SystemRandom().randrange(1 << 30))
# Rows of the "big" table of the crash trials: a larger PGDATA makes the
# snapshot long enough for random kills to land in it, while the step stays short.
CRASH_ROWS = 50000

ARCHIVE_RE = re.compile(r"^([0-9a-f]{64})\.tar(\.zst|\.gz)?$")
META_RE = re.compile(r"^([0-9a-f]{64})\.meta$")


def scaled(default):
    """A trial count: `default` at PGSTASH_FAULT_TRIALS=50, proportional otherwise."""
    return max(1, round(default * TRIALS / 50))


# ---- running things ------------------------------------------------------------------------

def as_user():
    if IS_ROOT and USER_IDS is not None:
        return dict(user=USER_IDS[0], group=USER_IDS[1], extra_groups=[])
    return {}


def give(path):
    """Hands `path` (and what is below it) to the run user."""
    if os.path.isdir(path) and not os.path.islink(path):
        chown_tree(path)
    elif USER_IDS is not None:
        os.lchown(path, *USER_IDS)


def user_dir(path, mode=0o755):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    if USER_IDS is not None:
        os.chown(path, *USER_IDS)
    return path


def rm_rf(path):
    if os.path.isdir(path) and not os.path.islink(path):
        for dirpath, dirnames, _ in os.walk(path):
            for n in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, n), 0o700)
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class Proc:
    """pgstash in the background (as the run user), its output read line by
    line with the time each line arrived; recorded in the work's call log."""

    def __init__(self, work, *args, env=None, config=None):
        self.work = work
        argv = [work.binary] + ([f"--config={config}"] if config else []) + list(args)
        self.args = argv[1:]
        self.lines = []
        self.eof = False
        self.rc = None
        self.cv = threading.Condition()
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(argv, env=work.env(env), cwd=work.path, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                  **as_user())
        self.pid = self.p.pid
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in iter(self.p.stdout.readline, b""):
            t = time.monotonic() - self.t0
            with self.cv:
                self.lines.append((t, raw.decode(errors="replace").rstrip("\n")))
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def elapsed(self):
        return time.monotonic() - self.t0

    def wait_line(self, pattern, timeout=120):
        """The first (time, line) matching `pattern`, waiting for it; None at exit or timeout."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = 0
        with self.cv:
            while True:
                while i < len(self.lines):
                    if rx.search(self.lines[i][1]):
                        return self.lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    return None
                self.cv.wait(min(left, 0.2))

    def last_line(self):
        with self.cv:
            return self.lines[-1][1] if self.lines else ""

    def line_time(self, pattern):
        rx = re.compile(pattern)
        with self.cv:
            for t, line in self.lines:
                if rx.search(line):
                    return t
        return None

    def poll(self):
        return self.p.poll()

    def signal(self, sig):
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def wait(self, timeout=180):
        try:
            self.rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.p.wait(timeout=30)
            self.finish()
            pytest.fail(f"pgstash {' '.join(self.args)} did not exit within {timeout} s:\n{self.output}",
                        pytrace=False)
        self.seconds = self.elapsed()
        return self.rc

    def finish(self, timeout=15):
        """Collects the output (after leftovers holding the pipe are gone) and logs the call."""
        self.reader.join(timeout=timeout)
        with contextlib.suppress(Exception):
            self.p.stdout.close()
        if not getattr(self, "_logged", False):
            self._logged = True
            rc = self.p.returncode
            self.work.calls.append(Result(self.args, rc, "", self.output + "\n", self.elapsed()))

    @property
    def output(self):
        with self.cv:
            return "\n".join(f"[{t:7.3f}] {line}" for t, line in self.lines)

    @property
    def text(self):
        with self.cv:
            return "\n".join(line for _, line in self.lines)


def run_to_end(work, *args, env=None, config=None, timeout=180):
    p = Proc(work, *args, env=env, config=config)
    p.wait(timeout)
    p.finish()
    return p


def wait_until(predicate, timeout=60.0, interval=0.005):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


# ---- processes left behind -------------------------------------------------------------------

def _proc_info(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        rest = stat.rsplit(")", 1)[1].split()
        state, ppid = rest[0], int(rest[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, IndexError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        environ = b""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd").encode()
    except OSError:
        cwd = b""
    return state, ppid, cmdline, environ, cwd


def process_table():
    table = {}
    me = os.getpid()
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me:
            info = _proc_info(int(d))
            if info and info[0] not in ("Z", "X"):
                table[int(d)] = info
    return table


def descendants(pid, table=None):
    table = table if table is not None else process_table()
    kids = collections.defaultdict(list)
    for p, info in table.items():
        kids[info[1]].append(p)
    out, todo = set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def related(needles, extra=()):
    """Live processes (with their descendants) whose command line, environment
    or working directory mentions one of `needles` (paths), plus `extra` pids."""
    table = process_table()
    bneedles = [n.encode() for n in needles]
    hits = {pid for pid, (_, _, cmd, env, cwd) in table.items()
            if any(n in cmd or n in env or cwd == n or cwd.startswith(n + b"/") for n in bneedles)}
    hits |= {p for p in extra if p in table}
    for pid in list(hits):
        hits |= descendants(pid, table)
    return {pid: table[pid][2].replace(b"\0", b" ").decode(errors="replace").strip() for pid in hits if pid in table}


def kind_of(cmd):
    if re.match(r"\S*/pgstash ", cmd):
        return "pgstash"  # after its own kill: only PGDATA's background syncer
    if "initdb" in cmd or "--boot" in cmd:
        return "initdb"
    if "pg_resetwal" in cmd:
        return "pg_resetwal"
    if "--single" in cmd:
        return "single-user postgres"
    if "postgres -D" in cmd or "/postgres -D" in cmd:
        return "temporary server"
    if cmd.startswith("postgres: "):
        return "server backend"
    return "step"


def kill_related(needles, extra=(), timeout=20):
    """SIGKILLs what `related` finds until nothing is left; returns {pid: cmdline} killed."""
    killed = {}
    deadline = time.monotonic() + timeout
    while True:
        found = related(needles, extra)
        if not found:
            gone(killed)
            return killed
        for pid, cmd in found.items():
            killed.setdefault(pid, cmd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise AssertionError(f"could not get rid of {found}")
        time.sleep(0.05)


def gone(pids, timeout=10):
    """Waits until the killed `pids` are reaped (not even zombies: a zombie
    still answers kill(pid, 0), so it would look like a live postmaster)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.02)


# ---- projects, caches, clusters ------------------------------------------------------------

def project(work, name="proj", rows=0, prelude=""):
    """A repo whose .sql migrations psql applies (fast, real): table a, and with
    `rows` a table big of that many rows.  `prelude` is shell run first in the
    step (its working directory is the repo, so ../x is work/x).  The run
    command holds no absolute path: the same project elsewhere has the same key."""
    root = os.path.join(work.path, name)
    work.file(f"{name}/migrations/0001_a.sql", "create table a (id int primary key, v text);\n")
    if rows:
        work.file(f"{name}/migrations/0002_big.sql",
                  f"create table big as select i, md5(i::text) || md5((i * 7)::text) as v "
                  f"from generate_series(1, {rows}) i;\n")
    body = 'for f in migrations/*.sql; do psql -X -q -v ON_ERROR_STOP=1 -f "$f" || exit 1; done'
    run = f"run = /bin/sh -c '{prelude}\n  {body}'\n" if prelude else f"run = /bin/sh -c '{body}'\n"
    return work.file(f"{name}.ini", "[database]\nname = app\n\n[step sql]\n"
                                    f"root = {root}\nmigrations = migrations/*.sql\n" + run)


def env_for(work, pgdata, cache=None, tmp=None, sock=None, **extra):
    e = {
        "PGDATA": pgdata,
        "PGSTASH_CACHE_DIR": cache or work.cache,
        "PGSTASH_SOCKET_DIR": sock or work.sock,
        "PGSTASH_INITDB_D": os.path.join(work.path, "no-initdb.d"),
    }
    if tmp:
        e["TMPDIR"] = tmp
    e.update({k: str(v) for k, v in extra.items()})
    return e


@pytest.fixture(scope="module")
def fastfs():
    """A tmpfs for this module's clusters and caches: hundreds of PGDATAs are
    written and removed, which a loaded disk makes slow.  None when no tmpfs
    can be mounted (not root): then the work directories are used."""
    d = tempfile.mkdtemp(prefix="pgstash-it-faults-fs-")
    os.chmod(d, 0o755)
    ok = IS_ROOT and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g,mode=0755", "tmpfs", d],
                                    capture_output=True).returncode == 0
    yield d if ok else None
    if ok:
        subprocess.run(["umount", "-l", d], capture_output=True)
    rm_rf(d)


class Place:
    """Where one test's clusters and cache live (on fastfs when there is one)."""

    def __init__(self, path):
        self.path = user_dir(path)
        self.pgdata = user_dir(os.path.join(path, "pgdata"), 0o700)
        self.cache = user_dir(os.path.join(path, "cache"))

    def dir(self, name, mode=0o755):
        return user_dir(os.path.join(self.path, name), mode)


@pytest.fixture()
def place(work, fastfs):
    path = tempfile.mkdtemp(prefix=work.name[:40] + "-", dir=fastfs) if fastfs else os.path.join(work.path, "place")
    pl = Place(path)
    yield pl
    kill_related([path])
    rm_rf(path)


@pytest.fixture()
def tmpdirs():
    """Short private TMPDIRs for pgstash (its pgstash-srv-*/pgstash-initdb-*
    dirs land there, so leftovers of one run are seen, and no one else's)."""
    made = []

    def make():
        d = tempfile.mkdtemp(prefix="pgf-", dir="/tmp")
        user_dir(d, 0o755)
        made.append(d)
        return d
    yield make
    for d in made:
        rm_rf(d)


def v1(cache):
    return os.path.join(cache, "pgstash-v1")


def cache_files(cache):
    """(archives {key: name}, metas {key}, temp files [...]) on disk."""
    d = v1(cache)
    names = os.listdir(d) if os.path.isdir(d) else []
    archives, metas = {}, set()
    for n in names:
        m = ARCHIVE_RE.match(n)
        if m:
            archives[m.group(1)] = n
        m = META_RE.match(n)
        if m:
            metas.add(m.group(1))
    tmpd = os.path.join(d, ".tmp")
    tmp = sorted(os.listdir(tmpd)) if os.path.isdir(tmpd) else []
    return archives, metas, tmp


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_problems(work, cfg, env):
    """What is wrong with the cache as users see it: `verify` must find nothing
    bad, and `ls --json` must list only entries whose archive and meta agree
    (archives without meta are not entries).  Returns (problems, listed keys)."""
    problems = []
    cache = env["PGSTASH_CACHE_DIR"]
    v = work.run("verify", config=cfg, env=env)
    if v.rc != 0 or "BAD" in v.stdout:
        problems.append(f"verify exit {v.rc}: {v.stdout.strip()} {v.stderr.strip()[-300:]}")
    ls = work.run("ls", "--json", config=cfg, env=env)
    listed = set()
    if ls.rc != 0:
        problems.append(f"ls --json exit {ls.rc}: {ls.stderr.strip()[-300:]}")
        return problems, listed
    archives, metas, _ = cache_files(cache)
    for e in json.loads(ls.stdout):
        listed.add(e["key"])
        a = e["archive"]
        if not os.path.isfile(a):
            problems.append(f"ls lists {e['key'][:12]} whose archive {a} is missing")
            continue
        if os.path.getsize(a) != e["archive_bytes"]:
            problems.append(f"ls lists {e['key'][:12]}: archive is {os.path.getsize(a)} bytes, meta says "
                            f"{e['archive_bytes']}")
        elif sha256_file(a) != e["archive_sha256"]:
            problems.append(f"ls lists {e['key'][:12]} whose archive digest differs from its meta")
        if e["key"] not in metas:
            problems.append(f"ls lists {e['key'][:12]} without a meta file")
    for k in set(archives) - metas:
        if k in listed:
            problems.append(f"archive without meta listed: {archives[k]}")
    return problems, listed


def tables(pgdata, db="app"):
    """The public tables of `db`, read through a single-user postgres (no
    socket, ~0.2 s); None when the cluster does not start."""
    p = subprocess.run([os.path.join(PG_BINDIR, "postgres"), "--single", "-F", "-D", pgdata, db],
                       input="select string_agg(tablename, ',' order by tablename) from pg_tables "
                             "where schemaname = 'public';\n",
                       capture_output=True, text=True, timeout=120, cwd="/",
                       env={"PATH": BASE_PATH, "LANG": "C.UTF-8"}, **as_user())
    m = re.search(r'string_agg = "([^"]*)"', p.stdout)
    if p.returncode != 0 or not m:
        return None
    return m.group(1).split(",")


def remove_entry(cache, key):
    d = v1(cache)
    for n in os.listdir(d) if os.path.isdir(d) else []:
        if n.startswith(key + "."):
            os.unlink(os.path.join(d, n))


def tree(path):
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_nlink)
    return out


@pytest.fixture()
def report(capsys):
    """Prints a summary line on the terminal even under -q and output capture."""
    def out(line):
        with capsys.disabled():
            sys.stdout.write(f"\n{line}\n")
            sys.stdout.flush()
    return out


# ---- a cache entry built once for the module -----------------------------------------------

class Golden:
    """The entry of project(work) (no rows, no prelude), built once; tests
    install copies of it (or damaged copies) into their own caches."""

    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="pgstash-it-faults-golden-")
        os.chmod(self.dir, 0o755)
        w = Work(self.dir, binary, "faults-golden")
        cfg = project(w)
        r = w.run("prepare", config=cfg, env=env_for(w, w.pgdata))
        if r.rc != 0:
            raise AssertionError(f"building the golden entry failed:\n{r!r}")
        self.key = w.key(config=cfg)
        d = v1(w.cache)
        with open(os.path.join(d, self.key + ".tar.zst"), "rb") as f:
            self.zst = f.read()
        with open(os.path.join(d, self.key + ".meta")) as f:
            self.meta = f.read()
        self.tar = subprocess.run(["zstd", "-q", "-d", "-c"], input=self.zst, capture_output=True,
                                  check=True).stdout
        w.stop_leftover_servers()

    def install(self, cache, archive=None, meta=None, suffix=".tar.zst", compression=None):
        """Writes an entry for self.key into `cache`: the golden archive unless
        `archive` (bytes) is given, and a meta agreeing with it (digest, size,
        compression) unless `meta` (text or bytes) is given.  Returns (archive path, meta path)."""
        d = v1(cache)
        for sub in ("", ".tmp", ".locks"):
            user_dir(os.path.join(d, sub))
        remove_entry(cache, self.key)
        data = self.zst if archive is None else archive
        if meta is None:
            meta = self.meta_for(data, compression or {".tar.zst": "zstd", ".tar.gz": "gzip", ".tar": "none"}[suffix])
        ap = os.path.join(d, self.key + suffix)
        mp = os.path.join(d, self.key + ".meta")
        with open(ap, "wb") as f:
            f.write(data)
        with open(mp, "wb" if isinstance(meta, bytes) else "w") as f:
            f.write(meta)
        give(ap)
        give(mp)
        return ap, mp

    def meta_for(self, data, compression="zstd"):
        text = re.sub(r"(?m)^archive_sha256 = .*$", f"archive_sha256 = {hashlib.sha256(data).hexdigest()}", self.meta)
        text = re.sub(r"(?m)^archive_bytes = .*$", f"archive_bytes = {len(data)}", text)
        return re.sub(r"(?m)^compression = .*$", f"compression = {compression}", text)

    def close(self):
        rm_rf(self.dir)


@pytest.fixture(scope="module")
def golden(pgstash_bin):
    need(PG_BINDIR is not None, "no PostgreSQL server binaries found (install postgresql-15)")
    need(shutil.which("zstd") is not None, "the zstd program is needed to rewrite archives")
    g = Golden(pgstash_bin)
    yield g
    g.close()


def zstd(data):
    return subprocess.run(["zstd", "-q", "-3", "-c"], input=data, capture_output=True, check=True).stdout


# ======================================================================================
# 1. crash consistency
# ======================================================================================

MISS_PHASES = [
    (r"cache miss \S+: building", "lock/lookup"),
    (r"initializing a cluster", "initdb"),
    (r"initdb done", "temporary server start"),
    (r"temporary server ready", "databases"),
    (r"step sql: running", "step"),
    (r"step sql finished", "shutdown/pg_resetwal"),
    (r"temporary server stopped", "pg_resetwal/snapshot/publish"),
    (r"snapshot \S+ written", "prune/per-start"),
    (r"cache miss \S+: migrated", "per-start"),
    (r"cache hit \S+: restored", "per-start"),
    (r"bootstrap done", "exit"),
]


def phase_of(lines, kind):
    phase = "start"
    for _, line in lines:
        for rx, name in MISS_PHASES:
            if re.search(rx, line):
                phase = name
        if kind == "restore" and phase == "start" and re.search(r"info: key ", line):
            phase = "restore"
    return phase


class CrashWorker:
    """One sequence of kill -9 trials with its own cache, TMPDIR and PGDATAs."""

    def __init__(self, work, cfg, n, tmpdirs, base):
        self.work, self.cfg, self.n, self.base = work, cfg, n, base
        self.cache = user_dir(os.path.join(base, f"cache-w{n}"))
        self.sock = user_dir(os.path.join(base, f"sock-w{n}"))
        self.tmp = tmpdirs()
        self.count = 0
        self.key = None

    def env(self, pgdata):
        return env_for(self.work, pgdata, cache=self.cache, tmp=self.tmp, sock=self.sock)

    def new_pgdata(self):
        self.count += 1
        return user_dir(os.path.join(self.base, f"pg-w{self.n}-t{self.count:03d}"), 0o700)

    def calibrate(self):
        """A timed miss and a timed hit: where the phases fall on this machine now."""
        pg = self.new_pgdata()
        p = run_to_end(self.work, "prepare", config=self.cfg, env=self.env(pg))
        assert p.rc == 0, p.output
        self.key = self.work.key(config=self.cfg, env=self.env(pg))
        self.t_step_end = p.line_time(r"step sql finished") or p.seconds * 0.7
        self.t_miss = p.seconds
        self.t_tail = max(0.05, self.t_miss - self.t_step_end)
        rm_rf(pg)
        pg = self.new_pgdata()
        p = run_to_end(self.work, "prepare", config=self.cfg, env=self.env(pg))
        assert p.rc == 0 and "cache hit" in p.text, p.output
        self.t_hit = p.seconds
        # The restore runs between the key line and the "cache hit ...: restored" line.
        self.t_restore = (p.line_time(r"info: key ") or 0.0, p.line_time(r"cache hit \S+: restored") or p.seconds)
        self.t_restore_len = max(0.02, self.t_restore[1] - self.t_restore[0])
        rm_rf(pg)

    def ensure_entry(self):
        if os.path.exists(os.path.join(v1(self.cache), self.key + ".meta")):
            return True
        pg = self.new_pgdata()
        r = self.work.run("prepare", config=self.cfg, env=self.env(pg), timeout=180)
        kill_related([pg, self.tmp])
        rm_rf(pg)
        return r.rc == 0

    def trial(self, kind, rng):
        t = {"kind": kind, "problems": [], "leftovers": [], "tmp_dirs": 0}
        # A random delay, from the start (anywhere in the run) or, mostly, from
        # the log line that opens the phase of interest; the estimates shrink
        # when a run turns out shorter than they said.
        if kind == "miss":
            remove_entry(self.cache, self.key)
            if rng.random() < 0.3:
                anchor, delay = None, rng.uniform(0, self.t_miss)
            else:
                anchor, delay = r"step sql finished", rng.uniform(0, self.t_tail)
        else:
            if not self.ensure_entry():
                t["problems"].append("could not build the entry to restore")
                return t
            if rng.random() < 0.2:
                anchor, delay = None, rng.uniform(0, self.t_hit)
            else:
                anchor, delay = r"info: key ", rng.uniform(0, self.t_restore_len)
        pg = self.new_pgdata()
        env = self.env(pg)
        t["delay"] = f"{'start' if anchor is None else anchor.split()[-1]}+{delay:.3f}"
        victim = Proc(self.work, "prepare", config=self.cfg, env=env)
        at = 0.0
        if anchor:
            seen = victim.wait_line(anchor, timeout=120)
            at = seen[0] if seen else victim.elapsed()
        while victim.poll() is None and victim.elapsed() < at + delay:
            time.sleep(min(0.002, max(0.0, at + delay - victim.elapsed())))
        tree_pids = descendants(victim.pid)
        t["killed"] = victim.poll() is None
        victim.signal(signal.SIGKILL)
        victim.wait(60)
        if not t["killed"]:
            # finished first: its background syncer is no leftover of a kill
            pgdata_unlocked(pg)
            took = victim.seconds
            if anchor is None:
                self.t_miss = min(self.t_miss, took) if kind == "miss" else self.t_miss
                self.t_hit = min(self.t_hit, took) if kind == "restore" else self.t_hit
            elif kind == "miss":
                self.t_tail = max(0.05, min(self.t_tail, (took - at) * 0.9))
            else:
                self.t_restore_len = max(0.02, min(self.t_restore_len, (took - at) * 0.9))
        # What the kill left: processes, temp dirs, temp files, half-published archives.
        killed = kill_related([pg, self.tmp], extra=tree_pids)
        victim.finish()
        t["phase"] = phase_of(victim.lines, kind) if t["killed"] else "after exit"
        t["leftovers"] = sorted({kind_of(c) for c in killed.values()})
        archives, metas, tmpfiles = cache_files(self.cache)
        if tmpfiles:
            t["phase"] += " (temp files in .tmp)"
        if set(archives) - metas:
            t["phase"] += " (archive without meta)"
        left_dirs = os.listdir(self.tmp)
        t["tmp_dirs"] = len(left_dirs)
        for n in left_dirs:
            rm_rf(os.path.join(self.tmp, n))

        problems, listed = cache_problems(self.work, self.cfg, env)
        t["problems"] += [f"after the kill: {p}" for p in problems]
        if kind == "restore" and listed != {self.key}:
            t["problems"].append(f"after a kill during a restore the entry is gone (listed: {sorted(listed)})")
        # The next start on the same PGDATA: a hit, a rebuild, or PGDATA reused as is.
        nxt = self.work.run("prepare", config=self.cfg, env=env, timeout=180)
        # a finished start leaves PGDATA's background syncer for a moment (src/marker.h)
        if not pgdata_unlocked(pg):
            t["problems"].append("PGDATA's background sync still held its lock 15 s after the next start")
        if nxt.rc != 0:
            t["problems"].append(f"next prepare exit {nxt.rc}: {nxt.stderr.strip()[-800:]}")
            t["next"] = "failed"
        else:
            t["next"] = ("rebuild" if "cache miss" in nxt.stderr else "hit" if "cache hit" in nxt.stderr
                         else "reused" if "already holds" in nxt.stderr else "?")
            archives, metas, tmpfiles = cache_files(self.cache)
            if tmpfiles and t["next"] != "reused":
                t["problems"].append(f"temp files left after the next start: {tmpfiles}")
            if set(archives) - metas:
                t["problems"].append(f"archive without meta after the next start: {sorted(set(archives) - metas)}")
            got = tables(pg)
            if not got or not {"a", "big"} <= set(got):
                t["problems"].append(f"next start's cluster lacks the migrated tables: {got}")
            problems, listed = cache_problems(self.work, self.cfg, env)
            t["problems"] += [f"after the next start: {p}" for p in problems]
            if listed != {self.key}:
                t["problems"].append(f"after the next start ls lists {sorted(listed)}, not the key")
        left = kill_related([pg, self.tmp])
        if left:
            t["problems"].append(f"processes left after the next start: {sorted(left.values())}")
        rm_rf(pg)
        return t

    def run(self, plan, log):
        """Runs each planned trial; one whose pgstash finished before the kill
        is run again (up to 3 more times), so that every slot is a real kill."""
        out = []
        for i, kind in plan:
            for attempt in range(4):
                t = self.trial(kind, random.Random(SEED * 1000 + i * 10 + attempt))
                t["n"] = i
                t["attempt"] = attempt
                log(t)
                out.append(t)
                if t.get("killed") or t["problems"]:
                    break
        return out


@pytest.mark.slow
def test_crash_consistency_kill9(work, place, report, tmpdirs):
    """kill -9 at random points of misses (weighted to shutdown/snapshot/publish)
    and of restores: nothing partial is ever visible, and the next start copes."""
    total = TRIALS
    n_restore = round(total * 0.3)
    kinds = ["miss"] * (total - n_restore) + ["restore"] * n_restore
    random.Random(SEED).shuffle(kinds)
    cfg = project(work, rows=CRASH_ROWS)
    workers = [CrashWorker(work, cfg, n, tmpdirs, place.path) for n in range(JOBS)]
    lock = threading.Lock()
    trial_log = os.path.join(work.path, "crash-trials.log")

    def log(t):
        with lock, open(trial_log, "a") as f:
            f.write(json.dumps(t, sort_keys=True) + "\n")
    with concurrent.futures.ThreadPoolExecutor(JOBS) as ex:
        list(ex.map(lambda w: w.calibrate(), workers))
        plans = [[(i, k) for i, k in enumerate(kinds) if i % JOBS == n] for n in range(JOBS)]
        results = [t for part in ex.map(lambda wp: wp[0].run(wp[1], log), zip(workers, plans)) for t in part]
    results.sort(key=lambda t: (t["n"], t["attempt"]))
    bad = [t for t in results if t["problems"]]
    kills = [t for t in results if t.get("killed")]
    phases = collections.Counter(f"{t['kind']}:{t.get('phase')}" for t in kills)
    nexts = collections.Counter(t.get("next") for t in results)
    leftovers = collections.Counter(k for t in results for k in t["leftovers"])
    w0 = workers[0]
    report(f"crash-consistency: {len(results)} trials, {len(bad)} bad (seed {SEED}; {len(kills)} kill -9 "
           f"({sum(t['kind'] == 'miss' for t in kills)} during a miss, {sum(t['kind'] == 'restore' for t in kills)} "
           f"during a restore), {len(results) - len(kills)} finished first; calibration: miss {w0.t_miss:.2f} s, "
           f"{w0.t_tail:.2f} s after the step, restore {w0.t_restore_len:.2f} s)")
    report(f"crash-consistency: killed in {dict(sorted(phases.items()))}")
    report(f"crash-consistency: next start {dict(nexts)}; processes left by kill -9 "
           f"(then killed) {dict(leftovers)}; trials leaving pgstash-* dirs in TMPDIR: "
           f"{sum(1 for t in results if t['tmp_dirs'])}")
    detail = "\n".join(f"trial {t['n']} ({t['kind']}, kill at {t.get('delay')} s, {t.get('phase')}, "
                       f"left {t['leftovers']}):\n    " + "\n    ".join(t["problems"]) for t in bad)
    assert not bad, f"{len(bad)} of {len(results)} trials went wrong:\n{detail}"


def _start_and_kill_at(work, cfg, env, pattern, settle=0.3, while_running=None):
    """Starts a prepare, waits for a log line, lets it run `settle` s, kills it -9.  `while_running`: a
    kind of child (kind_of) to see alive first, the `settle` counted from then: a fixed pause after the
    line outlasted initdb itself on a machine where it takes 0.3 s."""
    p = Proc(work, "prepare", config=cfg, env=env)
    hit = p.wait_line(pattern, timeout=120)
    assert hit, f"never reached /{pattern}/:\n{p.output}"
    deadline = time.monotonic() + 60
    while while_running and not any(kind_of(c) == while_running for c in related([], extra=[p.pid]).values()):
        assert p.poll() is None and time.monotonic() < deadline, f"never saw {while_running} running:\n{p.output}"
        time.sleep(0.002)
    time.sleep(settle)
    assert p.poll() is None, f"pgstash exited before the kill:\n{p.output}"
    tree_pids = descendants(p.pid)
    p.signal(signal.SIGKILL)
    p.wait(60)
    return p, tree_pids


@pytest.mark.slow
def test_kill9_during_initdb_then_next_start_recovers(work, place, tmpdirs):
    """A kill -9 while initdb runs (initdb and its children killed too): the
    next start on the same PGDATA must wipe what pgstash began and build."""
    cfg = project(work)
    tmp = tmpdirs()
    env = env_for(work, place.pgdata, cache=place.cache, tmp=tmp)
    p, tree_pids = _start_and_kill_at(work, cfg, env, r"initializing a cluster", settle=0.05,
                                      while_running="initdb")
    killed = kill_related([place.pgdata, tmp], extra=tree_pids)
    p.finish()
    assert any(kind_of(c) == "initdb" for c in killed.values()), (killed, p.output)
    marker = os.path.join(place.pgdata, "pgstash.key")
    state = sorted(os.listdir(place.pgdata))
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0, (f"PGDATA after kill -9 during initdb holds {state} "
                       f"(marker present: {os.path.exists(marker)}); the next start:\n{r!r}")
    assert {"a"} <= set(tables(place.pgdata) or []), r


@pytest.mark.slow
def test_kill9_leaves_temp_server_next_start_copes(work, place, report, tmpdirs):
    """A real kill -9 of pgstash (not of its process group) leaves the temporary
    server and the step running.  The next start on the same PGDATA must cope:
    build, or refuse clearly without touching the live cluster's files; once
    the orphans are gone, a start must build."""
    cfg = project(work, prelude="echo $$ > ../step.pid; if [ -e ../hold ]; then sleep 30; fi;")
    work.file("hold", "")
    tmp = tmpdirs()
    env = env_for(work, place.pgdata, cache=place.cache, tmp=tmp)
    p, tree_pids = _start_and_kill_at(work, cfg, env, r"step sql: running", settle=0.3)
    try:
        alive = related([place.pgdata, tmp], extra=tree_pids)
        kinds = sorted({kind_of(c) for c in alive.values()})
        assert "temporary server" in kinds, f"expected the temporary server to outlive pgstash: {alive}"
        with open(os.path.join(place.pgdata, "postmaster.pid")) as f:
            pm = int(f.readline())
        before = tree(place.pgdata)
        r = work.run("prepare", config=cfg, env=env, timeout=240)
        pm_alive = bool(_proc_info(pm)) and _proc_info(pm)[0] not in "ZX"
        if r.rc == 0:
            outcome = "built"
            assert {"a"} <= set(tables(place.pgdata) or []), r
        else:
            outcome = f"refused (exit {r.rc})"
            assert str(pm) in r.stderr and place.pgdata in r.stderr, \
                f"a refusal must name the running server and PGDATA:\n{r!r}"
            assert pm_alive, f"the refusing start disturbed the orphaned server:\n{r!r}"
            now = tree(place.pgdata)
            gone = sorted(set(before) - set(now))
            assert not gone, f"the refusing start removed files of a live cluster: {gone[:10]}\n{r!r}"
        kill_related([place.pgdata, tmp], extra=tree_pids)
        os.unlink(os.path.join(work.path, "hold"))
        r2 = work.run("prepare", config=cfg, env=env, timeout=240)
        assert r2.rc == 0, f"with the orphans gone the start still fails:\n{r2!r}"
        assert {"a"} <= set(tables(place.pgdata) or []), r2
        report(f"crash-consistency: kill -9 during a step left {kinds}; the next start with them running: "
               f"{outcome}; after killing them: built")
    finally:
        kill_related([place.pgdata, tmp], extra=tree_pids)
        p.finish()


@pytest.mark.slow
@pytest.mark.parametrize("state", ["archive-without-meta", "meta-without-archive", "stale-temp-files"])
def test_half_published_states_are_not_entries(work, place, golden, tmpdirs, state):
    """What a kill between the publish's renames (or during a write) leaves,
    set up directly because random kills rarely land in a window of a few
    microseconds: not listed, nothing bad to verify, and the next start
    rebuilds and leaves a complete entry and an empty .tmp."""
    cfg = project(work)
    tmp = tmpdirs()
    env = env_for(work, place.pgdata, cache=place.cache, tmp=tmp)
    ap, mp = golden.install(place.cache)
    if state == "archive-without-meta":
        os.unlink(mp)
    elif state == "meta-without-archive":
        os.unlink(ap)
    else:
        os.unlink(ap)
        os.unlink(mp)
        for name, data in ((f"{golden.key}-AbC123.tar.zst", golden.zst[:len(golden.zst) // 2]),
                           (f"{golden.key}-dEf456.meta", golden.meta.encode())):
            path = os.path.join(v1(place.cache), ".tmp", name)
            with open(path, "wb") as f:
                f.write(data)
            give(path)
    ls = work.run("ls", "--json", config=cfg, env=env)
    assert ls.rc == 0 and json.loads(ls.stdout) == [], ls
    v = work.run("verify", config=cfg, env=env)
    if state == "meta-without-archive":
        # not a state publishing can leave (the archive is renamed first): damage, and verify says so
        assert v.rc == 1 and "BAD" in v.stdout, v
    else:
        assert v.rc == 0 and "BAD" not in v.stdout, v
    r = work.run("prepare", config=cfg, env=env, timeout=180)
    assert r.rc == 0, r
    assert "cache hit" not in r.stderr and "cache miss" in r.stderr, r
    assert "a" in (tables(place.pgdata) or [])
    archives, metas, tmpfiles = cache_files(place.cache)
    assert tmpfiles == [], tmpfiles
    assert set(archives) == metas == {golden.key}, (archives, metas)
    prob, listed = cache_problems(work, cfg, env)
    assert not prob and listed == {golden.key}, prob


# ======================================================================================
# 2. corruption
# ======================================================================================

def detect_run(work, cfg, env, full):
    """A start meeting a damaged entry.  full: to the end; else SIGTERM as soon
    as the rebuild has begun (the entry was judged and removed by then)."""
    p = Proc(work, "prepare", config=cfg, env=env)
    if not full:
        if p.wait_line(r"cache miss \S+: building|cache hit", timeout=120):
            p.signal(signal.SIGTERM)
    p.wait(180)
    p.finish()
    return p


def judge_detection(p, key, full, pgdata, cache, expect_rc=None):
    """Problems with how a start handled a damaged entry of `key`."""
    problems = []
    text = p.text
    lines = text.splitlines()
    if "cache hit" in text:
        problems.append("the damaged entry was restored and used (cache hit)")
    warn = [i for i, line in enumerate(lines) if ": warning: " in line and (key[:12] in line or key in line)]
    build = [i for i, line in enumerate(lines) if re.search(r"cache miss \S+: building", line)]
    server = [i for i, line in enumerate(lines) if "temporary server ready" in line or "starting postgres" in line]
    if not warn:
        problems.append("no warning naming the entry")
    if not build:
        problems.append("no rebuild started")
    if warn and server and server[0] < warn[0]:
        problems.append("a server started before the damage was reported")
    if warn and build and build[0] < warn[0]:
        problems.append("the rebuild began before the damage was reported")
    if full:
        if p.rc != 0:
            problems.append(f"exit {p.rc}, expected 0")
        else:
            got = tables(pgdata)
            if "a" not in (got or []):
                problems.append(f"the rebuilt cluster lacks table a: {got}")
    else:
        if p.rc != (expect_rc or 128 + signal.SIGTERM):
            problems.append(f"exit {p.rc} after SIGTERM, expected {128 + signal.SIGTERM}")
        archives, metas, _ = cache_files(cache)
        if key in archives or key in metas:
            problems.append(f"the damaged entry is still in the cache: {archives.get(key)} meta={key in metas}")
        if os.path.isdir(pgdata) and os.listdir(pgdata):
            problems.append(f"PGDATA not empty after SIGTERM: {sorted(os.listdir(pgdata))[:8]}")
    return problems


def flip(data, offsets):
    b = bytearray(data)
    for o in offsets:
        b[o] ^= 0xFF
    return bytes(b)


@pytest.mark.slow
def test_flipped_bytes_detected_then_rebuilt(work, place, golden, report, tmpdirs):
    """Bytes flipped at several random offsets of a zstd or a plain-tar entry
    (meta untouched): detected before any server runs, removed, rebuilt."""
    n = scaled(20)
    cfg = project(work)
    assert work.key(config=cfg) == golden.key

    def one(i):
        rng = random.Random(SEED * 7 + i)
        plain = i % 2 == 1
        data = golden.tar if plain else golden.zst
        k = rng.randint(1, 6)
        offsets = sorted(rng.sample(range(len(data)), k))
        cache = place.dir(f"cache-f{i}")
        pg = place.dir(f"pg-f{i}", 0o700)
        tmp = tmpdirs()
        golden.install(cache, suffix=".tar" if plain else ".tar.zst")
        mp = os.path.join(v1(cache), golden.key + ".meta")
        with open(mp) as f:
            meta = f.read()
        ap = os.path.join(v1(cache), golden.key + (".tar" if plain else ".tar.zst"))
        with open(ap, "wb") as f:
            f.write(flip(data, offsets))
        full = i % 5 == 0
        p = detect_run(work, cfg, env_for(work, pg, cache=cache, tmp=tmp), full)
        problems = judge_detection(p, golden.key, full, pg, cache)
        if full:
            archives, metas, _ = cache_files(cache)
            if golden.key in metas:
                with open(mp) as f:
                    if f.read() == meta:
                        problems.append("the damaged entry's meta is still in place")
        if os.listdir(tmp):
            problems.append(f"left in TMPDIR: {os.listdir(tmp)}")
        kill_related([pg, tmp])
        rm_rf(pg)
        rm_rf(cache)
        why = [w for w in p.text.splitlines() if ": warning: " in w and "trust" not in w][:2]
        return dict(i=i, plain=plain, offsets=offsets, full=full, problems=problems, why=why, out=p.output)

    with concurrent.futures.ThreadPoolExecutor(JOBS) as ex:
        results = list(ex.map(one, range(n)))
    with open(os.path.join(work.path, "flip-trials.log"), "w") as f:
        for r in results:
            f.write(json.dumps({k: v for k, v in r.items() if k != "out"}, sort_keys=True) + "\n")
    bad = [r for r in results if r["problems"]]
    report(f"corruption (flipped bytes): {n} trials, {len(bad)} bad (seed {SEED}; "
           f"{sum(r['plain'] for r in results)} plain tar, {n - sum(r['plain'] for r in results)} zstd; "
           f"{sum(r['full'] for r in results)} run through the rebuild)")
    detail = "\n".join(f"trial {r['i']} ({'tar' if r['plain'] else 'zstd'}, offsets {r['offsets']}): "
                       f"{r['problems']}\n{r['out']}" for r in bad)
    assert not bad, detail


def _meta_set(meta, field, value):
    out, n = re.subn(rf"(?m)^{field} = .*$", f"{field} = {value}", meta)
    assert n == 1, field
    return out


def _meta_drop(meta, field):
    out, n = re.subn(rf"(?m)^{field} = .*\n", "", meta)
    assert n == 1, field
    return out


def _pg_version_14(golden):
    """The golden tar with PG_VERSION saying 14, recompressed: the meta is then
    made to agree with it, so that only the version check can refuse it."""
    with tarfile.open(fileobj=io.BytesIO(golden.tar)) as t:
        m = t.getmember("PG_VERSION")
    assert golden.tar[m.offset_data:m.offset_data + 3] == b"15\n", golden.tar[m.offset_data:m.offset_data + 8]
    tar = golden.tar[:m.offset_data] + b"14\n" + golden.tar[m.offset_data + 3:]
    return zstd(tar)


# name: (how the entry is damaged, full run?)
DAMAGE = {
    "empty-archive": "full",
    "empty-archive-meta-agrees": "stop",
    "empty-meta": "full",
    "meta-nonhex-digest": "stop",
    "meta-short-digest": "stop",
    "meta-negative-archive-bytes": "stop",
    "meta-negative-pgdata-bytes": "stop",
    "meta-huge-archive-bytes": "stop",
    "meta-unknown-layer": "stop",
    "meta-unknown-compression": "stop",
    "meta-wrong-compression": "stop",
    "meta-other-key": "stop",
    "meta-missing-field": "stop",
    "meta-duplicate-field": "stop",
    "meta-garbage-lines": "full",
    "meta-binary-garbage": "stop",
    "meta-nul-byte": "stop",
    "pg-major-14": "full",
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_detected_then_rebuilt(work, place, golden, tmpdirs, damage):
    cfg = project(work)
    tmp = tmpdirs()
    cache = place.cache
    meta = golden.meta_for(golden.zst)
    archive = golden.zst
    if damage == "empty-archive":
        archive = b""
    elif damage == "empty-archive-meta-agrees":
        archive = b""
        meta = golden.meta_for(b"")
    elif damage == "empty-meta":
        meta = ""
    elif damage == "meta-nonhex-digest":
        meta = _meta_set(meta, "archive_sha256", "zz" + "0" * 62)
    elif damage == "meta-short-digest":
        meta = _meta_set(meta, "archive_sha256", hashlib.sha256(archive).hexdigest()[:63])
    elif damage == "meta-negative-archive-bytes":
        meta = _meta_set(meta, "archive_bytes", "-5")
    elif damage == "meta-negative-pgdata-bytes":
        meta = _meta_set(meta, "pgdata_bytes", "-1")
    elif damage == "meta-huge-archive-bytes":
        meta = _meta_set(meta, "archive_bytes", "18446744073709551615")
    elif damage == "meta-unknown-layer":
        meta = _meta_set(meta, "layer", "data")
    elif damage == "meta-unknown-compression":
        meta = _meta_set(meta, "compression", "lz4")
    elif damage == "meta-wrong-compression":
        meta = _meta_set(meta, "compression", "gzip")
    elif damage == "meta-other-key":
        meta = _meta_set(meta, "key", "0" * 64)
    elif damage == "meta-missing-field":
        meta = _meta_drop(meta, "pg_version")
    elif damage == "meta-duplicate-field":
        meta = meta + "archive_bytes = 1\n"
    elif damage == "meta-garbage-lines":
        meta = meta + "this is not ini at all\n[section]\n= no name\n"
    elif damage == "meta-binary-garbage":
        meta = meta.encode() + b"\xff\xfe garbage \x01\n"
    elif damage == "meta-nul-byte":
        # everything after the NUL is lost to a C string: the fields after it are missing
        meta = meta.replace("layer = ", "layer\0 = ", 1).encode()
    elif damage == "pg-major-14":
        archive = _pg_version_14(golden)
        meta = golden.meta_for(archive)
    else:
        raise AssertionError(damage)
    golden.install(cache, archive=archive, meta=meta)
    full = DAMAGE[damage] == "full"
    pg = place.pgdata
    p = detect_run(work, cfg, env_for(work, pg, cache=cache, tmp=tmp), full)
    problems = judge_detection(p, golden.key, full, pg, cache)
    if damage == "pg-major-14" and not re.search(r"warning: .*PostgreSQL 14", p.text):
        problems.append("no warning naming the archive's PostgreSQL 14")
    archives, metas, tmpfiles = cache_files(cache)
    if tmpfiles:
        problems.append(f"temp files left: {tmpfiles}")
    if full:
        v = work.run("verify", config=cfg, env=env_for(work, pg, cache=cache))
        if v.rc != 0 or f"ok {golden.key}" not in v.stdout:
            problems.append(f"the rebuilt entry does not verify: {v.stdout}")
        if set(archives) - metas:
            problems.append(f"archives without meta left: {sorted(set(archives) - metas)}")
    if os.listdir(tmp):
        problems.append(f"left in TMPDIR: {os.listdir(tmp)}")
    assert not problems, f"{problems}\n{p.output}"


# ======================================================================================
# 3. hostile archives with a correct digest
# ======================================================================================

def _ti(name, type=tarfile.REGTYPE, size=0, linkname="", mode=0o600, **kw):
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.size = size
    ti.linkname = linkname
    ti.mode = mode
    ti.mtime = int(time.time())
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def _hostile(base, case):
    """(entries to put first: [(TarInfo, data bytes or None)], paths that must not appear, raw tail or None)."""
    out = os.path.join(base, "outside")
    victim = os.path.join(out, "victim.txt")
    if case == "dotdot":
        return [(_ti("../outside/dotdot.txt", size=5), b"pwned")], [os.path.join(out, "dotdot.txt")]
    if case == "dotdot-nested":
        return [(_ti("base/../../outside/nested.txt", size=5), b"pwned")], [os.path.join(out, "nested.txt")]
    if case == "absolute":
        return [(_ti(os.path.join(out, "abs.txt"), size=5), b"pwned")], [os.path.join(out, "abs.txt")]
    if case == "symlink-absolute-then-file":
        return [(_ti("evil", tarfile.SYMTYPE, linkname=out, mode=0o777), None),
                (_ti("evil/through.txt", size=5), b"pwned")], [os.path.join(out, "through.txt")]
    if case == "symlink-dotdot-then-file":
        return [(_ti("evil", tarfile.SYMTYPE, linkname="../outside", mode=0o777), None),
                (_ti("evil/through.txt", size=5), b"pwned")], [os.path.join(out, "through.txt")]
    if case == "symlink-inner-dotdot-then-file":
        return [(_ti("global/evil", tarfile.SYMTYPE, linkname="../../outside", mode=0o777), None),
                (_ti("global/evil/through.txt", size=5), b"pwned")], [os.path.join(out, "through.txt")]
    if case == "hardlink-absolute-then-file":
        return [(_ti("hl", tarfile.LNKTYPE, linkname=victim), None),
                (_ti("hl", size=5), b"pwned")], []
    if case == "hardlink-dotdot-then-file":
        return [(_ti("hl", tarfile.LNKTYPE, linkname="../outside/victim.txt"), None),
                (_ti("hl", size=5), b"pwned")], []
    if case == "char-device":
        return [(_ti("devnull", tarfile.CHRTYPE, devmajor=1, devminor=3), None)], []
    if case == "block-device":
        return [(_ti("blockdev", tarfile.BLKTYPE, devmajor=7, devminor=0), None)], []
    if case == "fifo":
        return [(_ti("fifo", tarfile.FIFOTYPE), None)], []
    raise AssertionError(case)


def _huge_tail(case):
    """A member declaring 100 GB with little data behind it, then the end of the archive."""
    if case == "huge-size":
        ti = _ti("base/huge.bin", size=100 << 30)
        hdr = ti.tobuf(format=tarfile.PAX_FORMAT)
        return hdr + b"x" * (1 << 20) + b"\0" * 1024
    # GNU sparse 1.0 (pax): real size 100 GB, one 512-byte data chunk at its end.
    real = 100 << 30
    smap = f"1\n{real - 512}\n512\n".encode().ljust(512, b"\0")
    ti = _ti("GNUSparseFile.0/huge.bin", size=1024)
    ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "base/huge.bin",
                      "GNU.sparse.realsize": str(real)}
    hdr = ti.tobuf(format=tarfile.PAX_FORMAT)
    return hdr + smap + b"y" * 512 + b"\0" * 1024


HOSTILE = ["dotdot", "dotdot-nested", "absolute", "symlink-absolute-then-file", "symlink-dotdot-then-file",
           "symlink-inner-dotdot-then-file", "hardlink-absolute-then-file", "hardlink-dotdot-then-file",
           "char-device", "block-device", "fifo", "huge-size", "huge-sparse"]


@pytest.mark.slow
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_refused_nothing_outside(work, place, golden, report, tmpdirs, case):
    """The real snapshot with a hostile member in front (or a huge one instead),
    recompressed, the meta's digest and size made to agree: refused, nothing
    written outside PGDATA, rebuilt."""
    cfg = project(work)
    tmp = tmpdirs()
    out = place.dir("outside")
    with open(os.path.join(out, "victim.txt"), "w") as f:
        f.write("canary\n")
    give(os.path.join(out, "victim.txt"))
    before_out = tree(out)
    before_top = set(os.listdir(place.path))
    buf = io.BytesIO()
    if case.startswith("huge"):
        raw = _huge_tail(case)
        must_not_exist = []
        name = "base/huge.bin"
    else:
        entries, must_not_exist = _hostile(place.path, case)
        name = entries[0][0].name
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for ti, data in entries:
                t.addfile(ti, io.BytesIO(data) if data is not None else None)
            with tarfile.open(fileobj=io.BytesIO(golden.tar)) as src:
                for m in src.getmembers():
                    t.addfile(m, src.extractfile(m) if m.isreg() else None)
        raw = buf.getvalue()
        # tarfile must have kept the hostile name as given
        with tarfile.open(fileobj=io.BytesIO(raw)) as chk:
            assert chk.getmembers()[0].name == name
    archive = zstd(raw)
    golden.install(place.cache, archive=archive)
    pg = place.pgdata
    env = env_for(work, pg, cache=place.cache, tmp=tmp)
    r = work.run("prepare", config=cfg, env=env, timeout=180)
    problems = []
    if r.rc != 0:
        problems.append(f"exit {r.rc}")
    if "cache hit" in r.stderr:
        problems.append("the hostile entry was used")
    if not re.search(r"warning: .*(refused|damaged)", r.stderr):
        problems.append("no warning that the archive was refused")
    if "cache miss" not in r.stderr:
        problems.append("no rebuild")
    if tree(out) != before_out:
        problems.append(f"the directory outside PGDATA changed: {before_out} -> {tree(out)}")
    with open(os.path.join(out, "victim.txt")) as f:
        if f.read() != "canary\n":
            problems.append("the file outside PGDATA was overwritten")
    for p in must_not_exist:
        if os.path.lexists(p):
            problems.append(f"{p} was written")
    new_top = set(os.listdir(place.path)) - before_top
    if new_top:
        problems.append(f"new entries next to PGDATA: {sorted(new_top)}")
    for n in ("evil", "hl", "devnull", "blockdev", "fifo", "base/huge.bin", "global/evil"):
        if os.path.lexists(os.path.join(pg, n)):
            problems.append(f"PGDATA holds the hostile {n}")
    if r.rc == 0 and "a" not in (tables(pg) or []):
        problems.append("the rebuilt cluster lacks table a")
    v = work.run("verify", config=cfg, env=env)
    if v.rc != 0 or f"ok {golden.key}" not in v.stdout:
        problems.append(f"the rebuilt entry does not verify: {v.stdout}")
    if os.listdir(tmp):
        problems.append(f"left in TMPDIR: {os.listdir(tmp)}")
    assert not problems, f"{problems}\n{r!r}"
    why = re.search(r"warning: (.*(refused|damaged).*)", r.stderr).group(1).replace(v1(place.cache) + "/", "")
    report(f"hostile archive {case}: {why}")


# ======================================================================================
# 4. concurrency
# ======================================================================================

def _runs(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len(f.read().splitlines())


@pytest.mark.slow
def test_eight_cold_starts_one_build(work, place, report, tmpdirs):
    """8 cold starts on one cache volume at once, each with its own PGDATA and
    socket dir: one migration run, 8 clusters of the same key with the table."""
    cfg = project(work, prelude="echo x >> ../count;")
    count = os.path.join(work.path, "count")
    starts = []
    for i in range(8):
        pg = place.dir(f"pg{i}", 0o700)
        sock = place.dir(f"sock{i}")
        starts.append((pg, env_for(work, pg, cache=place.cache, sock=sock, tmp=tmpdirs(), PGSTASH_LOCK_TIMEOUT=600)))
    t0 = time.monotonic()
    procs = [Proc(work, "prepare", config=cfg, env=e) for _, e in starts]
    for p in procs:
        p.wait(600)
        p.finish()
    wall = time.monotonic() - t0
    key = work.key(config=cfg, env=starts[0][1])
    problems = []
    for i, (p, (pg, _)) in enumerate(zip(procs, starts)):
        if p.rc != 0:
            problems.append(f"start {i}: exit {p.rc}\n{p.output}")
            continue
        if "gave up waiting" in p.text:
            problems.append(f"start {i} hit lock_timeout")
        if final_marker(pg) != key:
            problems.append(f"start {i} ended at another key")
        if "a" not in (tables(pg) or []):
            problems.append(f"start {i}: no table a")
    builders = [i for i, p in enumerate(procs) if re.search(r"cache miss \S+: building", p.text)]
    problems += [f"{len(builders)} builders: {builders}"] if len(builders) != 1 else []
    if _runs(count) != 1:
        problems.append(f"the migration ran {_runs(count)} times")
    prob, listed = cache_problems(work, cfg, starts[0][1])
    problems += prob
    if listed != {key}:
        problems.append(f"ls lists {sorted(listed)}")
    ends = sorted(p.seconds for p in procs)
    report(f"concurrency: 8 cold starts in {wall:.1f} s, {_runs(count)} migration run(s), "
           f"finish times {[round(s, 1) for s in ends]}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_waiter_takes_over_from_a_killed_builder(work, place, report, tmpdirs):
    """The builder is killed -9 while its step runs (then its temporary server
    and step too): a waiter gets the lock from the kernel and builds, well
    before lock_timeout; a later start hits."""
    cfg = project(work, prelude="echo x >> ../count; echo $$ > ../step.pid; if [ -e ../hold ]; then sleep 60; fi;")
    count = os.path.join(work.path, "count")
    work.file("hold", "")
    pgs = [place.dir(f"pg{i}", 0o700) for i in range(3)]
    tmps = [tmpdirs() for _ in range(3)]
    envs = [env_for(work, pg, cache=place.cache, sock=place.dir(f"sock{i}"), tmp=t, PGSTASH_LOCK_TIMEOUT=120)
            for i, (pg, t) in enumerate(zip(pgs, tmps))]
    builder = Proc(work, "prepare", config=cfg, env=envs[0])
    assert builder.wait_line(r"step sql: running", timeout=120), builder.output
    assert wait_until(lambda: os.path.exists(os.path.join(work.path, "step.pid")), timeout=30)
    waiter = Proc(work, "prepare", config=cfg, env=envs[1])
    assert waiter.wait_line(r"info: key ", timeout=60), waiter.output
    time.sleep(1.0)
    assert waiter.poll() is None, waiter.output
    assert "building" not in waiter.text.split("info: key ", 1)[1], waiter.output
    tree_pids = descendants(builder.pid)
    builder.signal(signal.SIGKILL)
    t_kill = time.monotonic()
    builder.wait(60)
    os.unlink(os.path.join(work.path, "hold"))
    killed = kill_related([pgs[0], tmps[0]], extra=tree_pids)
    builder.finish()
    rc = waiter.wait(300)
    took = time.monotonic() - t_kill
    waiter.finish()
    assert rc == 0, waiter.output
    assert "gave up waiting" not in waiter.text, waiter.output
    assert re.search(r"cache miss \S+: building", waiter.text), waiter.output
    assert took < 60, f"the waiter took {took:.1f} s after the builder died\n{waiter.output}"
    assert _runs(count) == 2, _runs(count)
    assert "a" in (tables(pgs[1]) or [])
    late = run_to_end(work, "prepare", config=cfg, env=envs[2])
    assert late.rc == 0 and "cache hit" in late.text, late.output
    assert _runs(count) == 2
    prob, listed = cache_problems(work, cfg, envs[2])
    assert not prob, prob
    report(f"concurrency: builder killed -9 (left {sorted({kind_of(c) for c in killed.values()})}), "
           f"the waiter built in {took:.1f} s after the kill")


# ======================================================================================
# 5. resource faults
# ======================================================================================

@pytest.fixture()
def tmpfs(work):
    mounted = []

    def mount(rel, size):
        need(IS_ROOT, "mounting a tmpfs needs root")
        path = os.path.join(work.path, rel)
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                           capture_output=True, text=True)
        need(r.returncode == 0, f"cannot mount a tmpfs here ({r.stderr.strip()}): resource-fault tests skipped")
        mounted.append(path)
        user_dir(path)
        return path
    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", path], capture_output=True)


def remount_ro(path):
    r = subprocess.run(["mount", "-o", "remount,ro", path], capture_output=True, text=True)
    need(r.returncode == 0, f"cannot remount {path} read-only: {r.stderr.strip()}")


@pytest.mark.slow
@pytest.mark.parametrize("size", ["2m", "archive-only"])
def test_cache_volume_full(work, golden, tmpfs, report, size):
    """The cache on a full tmpfs (2 MB; or 8 pages short of the golden archive's
    size, so that the archive or its meta runs out of space near the end): the
    database starts, a warning, no partial entry.  (Sized to the archive
    exactly, a build whose archive came out a page smaller stored both.)"""
    cfg = project(work)
    pages = -(-len(golden.zst) // 4096)
    cache = tmpfs("cachefs", "2m" if size == "2m" else str((pages - 8) * 4096))
    env = env_for(work, work.pgdata, cache=cache)
    r = work.run("prepare", config=cfg, env=env, timeout=180)
    assert r.rc == 0, r
    assert re.search(r"warning: .*(No space left|could not store)", r.stderr), r
    archives, metas, tmp = cache_files(cache)
    assert tmp == [], r
    assert set(archives) == set(metas), (archives, metas, r)
    assert "a" in (tables(work.pgdata) or [])
    prob, listed = cache_problems(work, cfg, env)
    assert not prob, prob
    report(f"resource faults: cache on a {size} tmpfs: exit 0, entries stored {sorted(listed) or 'none'}; "
           f"warnings: {[w for w in r.stderr.splitlines() if 'warning' in w and 'trust' not in w][:2]}")


@pytest.mark.slow
@pytest.mark.parametrize("content", ["empty", "with-entry"])
def test_cache_volume_read_only(work, golden, tmpfs, content):
    cfg = project(work)
    cache = tmpfs("cachefs", "64m")
    if content == "with-entry":
        golden.install(cache)
    before = tree(cache)
    remount_ro(cache)
    env = env_for(work, work.pgdata, cache=cache)
    r = work.run("prepare", config=cfg, env=env, timeout=180)
    assert r.rc == 0, r
    assert re.search(r"warning: .*(not usable|Read-only)", r.stderr), r
    assert "a" in (tables(work.pgdata) or [])
    assert tree(cache) == before


@pytest.mark.slow
@pytest.mark.parametrize("start", ["miss", "hit"])
def test_pgdata_volume_full(work, golden, tmpfs, start):
    """PGDATA on a 20 MB tmpfs: a clear error, a non-zero exit, nothing cached;
    and a good entry that does not fit is not the entry's fault: it stays."""
    cfg = project(work)
    fs = tmpfs("pgfs", "20m")
    pg = os.path.join(fs, "pgdata")
    if start == "hit":
        golden.install(work.cache)
    env = env_for(work, pg)
    r = work.run("prepare", config=cfg, env=env, timeout=180)
    assert r.rc not in (0, None), r
    assert re.search(r"No space left on device|could not extend file|Check free disk space", r.stderr), r
    assert not os.path.isdir(pg) or os.listdir(pg) == [], (os.listdir(pg), r)
    archives, metas, tmp = cache_files(work.cache)
    assert tmp == [], r
    if start == "miss":
        assert archives == {} and metas == set(), (archives, metas, r)
    else:
        assert golden.key in metas and golden.key in archives, f"the good entry was removed:\n{r!r}"
        v = work.run("verify", config=cfg, env=env)
        assert v.rc == 0 and f"ok {golden.key}" in v.stdout, v


# ======================================================================================
# 6. signals
# ======================================================================================

SIGNAL_PHASES = ["initdb", "temp-server-start", "step", "snapshot", "restore"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("phase", SIGNAL_PHASES)
def test_signal_at_each_phase(work, place, golden, tmpdirs, phase, sig):
    """docker stop's signal to pgstash alone, in each phase: exit 128+N, no
    server, no step, no temp file or dir, PGDATA empty, nothing partial cached."""
    tmp = tmpdirs()
    pg = place.pgdata
    cache = place.cache
    if phase == "step":
        cfg = project(work, prelude="echo $$ > ../step.pid; sleep 60;")
    elif phase == "snapshot":
        cfg = project(work, rows=CRASH_ROWS)
    else:
        cfg = project(work)
    if phase == "restore":
        golden.install(cache)
    env = env_for(work, pg, cache=cache, tmp=tmp)
    v1tmp = os.path.join(v1(cache), ".tmp")
    p = Proc(work, "prepare", config=cfg, env=env)
    bpg = pg.encode()

    def proc_with(*words):
        for pid, (_, _, cmd, _, _) in process_table().items():
            if bpg in cmd and all(w.encode() in cmd for w in words):
                return pid
        return None

    if phase == "initdb":
        reached = wait_until(lambda: p.poll() is not None or proc_with("initdb"), 120)
    elif phase == "temp-server-start":
        reached = wait_until(lambda: p.poll() is not None or proc_with("fsync=off"), 120, interval=0.001)
    elif phase == "step":
        pidfile = os.path.join(work.path, "step.pid")
        reached = wait_until(lambda: p.poll() is not None or os.path.exists(pidfile), 120)
    elif phase == "snapshot":
        reached = wait_until(lambda: p.poll() is not None or (os.path.isdir(v1tmp) and os.listdir(v1tmp)), 120,
                             interval=0.001)
    else:
        marker = os.path.join(pg, "pgstash.key")

        def restoring():
            with contextlib.suppress(OSError):
                with open(marker) as f:
                    return f.read().startswith("restoring")
            return False
        reached = wait_until(lambda: p.poll() is not None or restoring(), 120, interval=0.001)
    assert reached and p.poll() is None, f"pgstash finished before the {phase} phase was seen:\n{p.output}"
    at = p.last_line()
    step_pid = None
    if phase == "step":
        with open(pidfile) as f:
            step_pid = int(f.read().strip() or 0)
    p.signal(sig)
    rc = p.wait(120)
    problems = []
    if rc != 128 + sig:
        problems.append(f"exit {rc}, expected {128 + sig}")
    left = wait_until(lambda: not related([pg, tmp]), 15, interval=0.1)
    if not left:
        problems.append(f"processes left: {related([pg, tmp])}")
        kill_related([pg, tmp])
    p.finish()
    if step_pid and os.path.exists(f"/proc/{step_pid}") and (_proc_info(step_pid) or "Z")[0] not in "ZX":
        problems.append(f"the step (pid {step_pid}) is still running")
    if os.listdir(tmp):
        problems.append(f"left in TMPDIR: {os.listdir(tmp)}")
    archives, metas, tmpfiles = cache_files(cache)
    if tmpfiles:
        problems.append(f"temp files in the cache: {tmpfiles}")
    if set(archives) != set(metas):
        problems.append(f"partial entry: archives {sorted(archives)} metas {sorted(metas)}")
    if os.listdir(pg):
        problems.append(f"PGDATA not empty: {sorted(os.listdir(pg))[:10]}")
    prob, _ = cache_problems(work, cfg, env)
    problems += prob
    assert not problems, f"{signal.Signals(sig).name} during {phase} (last line before it: {at!r}): " \
                         f"{problems}\n{p.output}"


# ======================================================================================
# 7. bad input through the binary
# ======================================================================================

BASE_CONFIG = [
    ("pgstash", [
        ("cache_dir", "cache"), ("pgdata", "pgdata"), ("pg_bindir", "@BINDIR@"), ("compression", "zstd:3"),
        ("max_bytes", "1G"), ("max_entries", "5"), ("lock_timeout", "60"), ("step_timeout", "0"),
        ("initdb_d", "initdb.d"), ("socket_dir", "sock"), ("docker_socket", "/var/run/docker.sock"),
    ]),
    ("database", [("user", "postgres"), ("name", "app"), ("extra", "other"), ("initdb_args", "--data-checksums")]),
    ("clones", [("count", "1"), ("naming", "pattern"), ("pattern", "{db}_copy{n}"), ("template", "app")]),
    ("step one", [
        ("root", "repo"), ("migrations", "migrations/*.sql"), ("exclude", "*/skip/*"),
        ("run", "psql -X -c 'select 1'"), ("database", "app"), ("env", "FOO=bar"), ("image", ""),
        ("image_id", "no"), ("layer", "schema"), ("incremental", "no"), ("timeout", "0"),
    ]),
]
REPEATABLE = {("database", "extra"), ("step one", "env"), ("step one", "migrations"), ("step one", "exclude")}
N64 = "n" * 64
OVER = "99999999999999999999"
BAD_VALUES = {
    ("pgstash", "compression"): ["lz4", "zstd:0", "zstd:20", "gzip:0", "gzip:10", "none:1", "zstd:", "zstd:x",
                                 f"zstd:{OVER}", "zstd:-3"],
    ("pgstash", "max_bytes"): ["lots", "-1", "1.5G", "10X", "10 G", OVER, "16777216T", "0x10", "10GBB"],
    ("pgstash", "max_entries"): ["-1", "ten", "1000001", OVER, "1e3", "0x10", "5.0", ""],
    ("pgstash", "lock_timeout"): ["-5", "forever", "604801", OVER, "1.5", ""],
    ("pgstash", "step_timeout"): ["-5", "forever", "604801", OVER, "1.5", ""],
    ("database", "user"): [N64],
    ("database", "name"): [N64],
    ("database", "extra"): [N64, "app", "twice twice"],
    ("database", "initdb_args"): ["--foo | bar", "'unterminated", "--x=$HOME"],
    ("clones", "count"): ["-1", "65", "many", OVER, ""],
    ("clones", "naming"): ["random", ""],
    ("clones", "pattern"): ["clone", ""],
    ("clones", "template"): ["nosuchdb"],
    ("step one", "root"): ["no-such-dir", "repo/migrations/0001_init.sql"],
    ("step one", "migrations"): ["/etc/*.conf"],
    ("step one", "run"): ["psql | cat", "'unterminated", "echo $HOME", "sleep 1 &", "a > b"],
    ("step one", "database"): ["nosuchdb"],
    ("step one", "env"): ["1BAD=x", "noequals", "=x", "BAD-NAME=x"],
    ("step one", "image"): ["two words"],
    ("step one", "image_id"): ["maybe", "2", ""],
    ("step one", "layer"): ["data", "Schema", ""],
    ("step one", "incremental"): ["perhaps", "2", ""],
    ("step one", "timeout"): ["-1", "soon", "604801", OVER, ""],
}
# Errors that can only be seen once the whole file is read may name the section's line.
CROSS_KEY = {("clones", "template"), ("step one", "root"), ("step one", "migrations"), ("step one", "database"),
             ("step one", "image"), ("step one", "run")}


def _config_cases():
    cases = []
    for sec, keys in BASE_CONFIG:
        for key, _ in keys:
            sid = sec.replace("step one", "step")
            for i, v in enumerate(BAD_VALUES.get((sec, key), [])):
                cases.append(pytest.param(sec, key, "value", v.encode(), id=f"{sid}.{key}-bad{i}"))
            if (sec, key) not in REPEATABLE:
                cases.append(pytest.param(sec, key, "duplicate", None, id=f"{sid}.{key}-duplicate"))
            cases.append(pytest.param(sec, key, "long-line", b"x" * 230, id=f"{sid}.{key}-long-line"))
            cases.append(pytest.param(sec, key, "non-utf8", b"ok\xff\xfe", id=f"{sid}.{key}-non-utf8"))
    cases.append(pytest.param("step one", "run", "nul", b"psql\x00x", id="step.run-nul-byte"))
    return cases


def _render(work, target_sec, target_key, mode, bad):
    """The config with one line spoiled; returns (path, line of the bad line, line of its section)."""
    lines, bad_line, sec_line = [], None, None
    for sec, keys in BASE_CONFIG:
        lines.append(f"[{sec}]".encode())
        if sec == target_sec:
            sec_line = len(lines)
        for key, value in keys:
            value = value.replace("@BINDIR@", PG_BINDIR or "")
            good = f"{key} = {value}".encode()
            if sec == target_sec and key == target_key:
                if mode == "duplicate":
                    lines.append(good)
                    lines.append(good)
                else:
                    lines.append(f"{key} = ".encode() + bad)
                bad_line = len(lines)
            else:
                lines.append(good)
        lines.append(b"")
    return work.file("bad.ini", b"\n".join(lines) + b"\n"), bad_line, sec_line


@pytest.fixture()
def bad_input_setup(work):
    work.file("repo/migrations/0001_init.sql", "create table t (id int);\n")
    user_dir(os.path.join(work.path, "initdb.d"))


def test_base_config_is_valid(work, bad_input_setup):
    """The config the bad-input cases spoil is itself fine."""
    path, _, _ = _render(work, None, None, None, None)
    work.key(config=path)


@pytest.mark.parametrize("sec,key,mode,bad", _config_cases())
def test_bad_config_value_exit_2_file_line(work, bad_input_setup, sec, key, mode, bad):
    path, line, sec_line = _render(work, sec, key, mode, bad)
    r = work.run("prepare", config=path, timeout=60)
    lines = {line} | ({sec_line} if (sec, key) in CROSS_KEY and mode == "value" else set())
    where = [f"{path}:{n}:" for n in sorted(lines)]
    assert r.rc == 2, f"expected exit 2 for line {line} of:\n{open(path, 'rb').read().decode(errors='replace')}\n{r!r}"
    assert any(w in r.stderr for w in where), f"expected one of {where} in:\n{r.stderr}"
    assert os.listdir(work.pgdata) == [], "PGDATA was touched"
    assert not os.path.exists(os.path.join(work.path, "cache", "pgstash-v1")), "the cache was touched"


ENV_CASES = {
    "PGSTASH_COMPRESSION": "lz4",
    "PGSTASH_MAX_BYTES": OVER,
    "PGSTASH_MAX_ENTRIES": "-1",
    "PGSTASH_LOCK_TIMEOUT": "forever",
    "PGSTASH_STEP_TIMEOUT": OVER,
    "POSTGRES_USER": N64,
    "POSTGRES_DB": N64,
    "POSTGRES_HOST_AUTH_METHOD": "bogus",
    "POSTGRES_INITDB_ARGS": "--foo | bar",
}


@pytest.mark.parametrize("var", list(ENV_CASES))
def test_bad_environment_exit_2_names_variable(work, var):
    cfg = project(work)
    r = work.run("prepare", config=cfg, env={var: ENV_CASES[var], "PGSTASH_SOCKET_DIR": work.sock}, timeout=60)
    assert r.rc == 2, r
    assert var in r.stderr, f"{var} not named:\n{r.stderr}"
    assert os.listdir(work.pgdata) == []


@pytest.mark.parametrize("what", ["missing", "unreadable", "directory", "both-set", "user-file-missing"])
def test_bad_secret_file_exit_2_names_variable(work, what):
    cfg = project(work)
    env = {"PGSTASH_SOCKET_DIR": work.sock, "POSTGRES_HOST_AUTH_METHOD": None}
    var = "POSTGRES_PASSWORD_FILE"
    if what == "missing":
        env[var] = os.path.join(work.path, "no-such-secret")
    elif what == "unreadable":
        need_unprivileged()
        env[var] = work.file("secret", "s3cret\n", mode=0)
    elif what == "directory":
        env[var] = work.path
    elif what == "both-set":
        env[var] = work.file("secret", "s3cret\n")
        env["POSTGRES_PASSWORD"] = "other"
    else:
        var = "POSTGRES_USER_FILE"
        env[var] = os.path.join(work.path, "no-such-user")
        env["POSTGRES_PASSWORD"] = "pw"
    r = work.run("prepare", config=cfg, env=env, timeout=60)
    assert r.rc == 2, r
    assert var in r.stderr, r
    assert "s3cret" not in r.stderr
    assert os.listdir(work.pgdata) == []
