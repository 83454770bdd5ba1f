#!/usr/bin/env python3
"""pgstash side-by-side benchmark (issue 6).  Python 3 standard library only.

Usually run through bench/run.sh (`make bench`, `make bench QUICK=1`).

For each project size (a synthetic Django project from bench/gen_django.py) it measures, in one run,
interleaved (the order of the methods rotates from one repetition to the next):

  migrate     initdb + start + createdb + `manage.py migrate` (the fast stop after it separately)
  pg_restore  initdb + start + createdb + `pg_restore -d` of a `pg_dump -Fc` of the migrated database
  structure   initdb + start + createdb + `psql -f` of `pg_dump -s`
  hit         empty PGDATA -> `pgstash prepare` (cache pre-filled, POSTGRES_PASSWORD set) -> `pg_ctl start -w`
  hit_trust   the same with POSTGRES_HOST_AUTH_METHOD=trust and no password (no single-user step)
  hit_signed  as hit, with trusted_keys set (the entry is signed): the signature is verified (issue 14)
  limit       `tar -x` of the same snapshot, uncompressed and in the page cache -> `pg_ctl start -w`
  miss        `pgstash prepare` with an empty cache (compared with migrate + stop)
  hit_run     empty PGDATA -> `pgstash run` (it execs postgres), until a client's connection is accepted
  limit_run   `tar -x` as for limit, then postgres itself, until a client's connection is accepted

then the fingerprint of 10,000 files / 100 MB against sha256sum, and (unless --no-analysis) where the
hit path spends its time: the snapshot's contents, the components of a hit, strace, and variants of
the cache entry (uncompressed, trimmed) restored by the real binary.  bench/README.md explains each.

`--incremental` measures issue 18's cases instead (class Incremental): `discover = django` against the
glob key on a project whose apps mostly live in an installed package, a miss with two steps on two
databases against each step alone, a prefix build against a hit plus the changed step's migrate.

Every server and pgstash runs as an unprivileged user (`postgres` when started as root) in a scratch
directory under /tmp, with PATH=/usr/bin:/bin.  Results: bench/results/<date>-<time>[-quick].json;
a full run (default sizes and repetitions) also refreshes bench/last-results.json and the table in
bench/README.md.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import pwd
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# name -> (apps, migrations per app)
SIZES = {"dj-50": (5, 10), "dj-200": (10, 20), "dj-800": (20, 40)}
DEFAULT_SIZES = ["dj-200", "dj-800"]
DEFAULT_REPS = 5
METHODS = ["migrate", "pg_restore", "structure", "hit", "hit_trust", "hit_signed", "limit", "miss", "hit_run",
           "limit_run"]
LABELS = {
    "migrate": "1. full migrate (initdb+start+createdb+migrate)",
    "pg_restore": "2. pg_restore recipe",
    "structure": "3. structure load (psql -f of pg_dump -s)",
    "hit": "4. pgstash hit (prepare + pg_ctl start -w)",
    "hit_trust": "4b. pgstash hit, trust auth (no password step)",
    "hit_signed": "4c. pgstash hit, trusted_keys set (signature verified)",
    "limit": "5. physical limit (tar -x + pg_ctl start -w)",
    "miss": "6. pgstash miss (prepare, empty cache)",
    "hit_run": "7. pgstash hit in run mode, to the first accepted connection",
    "limit_run": "8. physical limit, to the first accepted connection (tar -x + postgres)",
}
TARGETS = {
    "hit_vs_limit": ("<=", 1.15, "hit / physical limit"),
    "restore_vs_hit": (">=", 6.0, "pg_restore recipe / hit"),
    "migrate_vs_hit": (">=", 40.0, "full migrate / hit"),
    "miss_overhead": ("<=", 0.05, "miss overhead over migrate + stop"),
    "snapshot_ratio": ("<=", 0.12, "snapshot bytes / PGDATA bytes"),
    "peak_rss_mb": ("<=", 32.0, "pgstash peak RSS, MB (own process, hit and miss)"),
    "verify_ms": ("<=", 5.0, "signature verify, ms per hit (pgstash -v log)"),
}
# Targets that do not depend on the project's size (the signature covers the meta, not the archive):
# judged on every size, quick runs included.
SIZE_FREE_TARGETS = {"verify_ms"}
# The size the targets are set on (issue 6: "ratios in one run, dj-800").
TARGET_SIZE = "dj-800"
PASSWORD = "bench-password"
FP_FILES = 10000
FP_FILE_BYTES = 10000
# Server options of the baselines: the same durability and WAL settings as pgstash's temporary server
# (src/server.c, add_durability_settings), so that the miss overhead compares like with like.
FAST_OPTS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c autovacuum=off"
             " -c wal_level=minimal -c max_wal_senders=0")
# pg_basebackup leaves the contents of these out: the server recreates or resets them at start.
RESET_DIRS = ["pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat_tmp",
              "pg_subtrans"]


class BenchError(Exception):
    pass


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def fmt_s(x):
    if x is None:
        return "-"
    return f"{x:.2f}" if x >= 10 else f"{x:.3f}"


def fmt_stat(s):
    if not s:
        return "-"
    return f"{fmt_s(s['median'])} ({fmt_s(s['min'])}–{fmt_s(s['max'])})"


def mib(b):
    return b / (1 << 20)


# ---------------------------------------------------------------- processes

class Hwm(threading.Thread):
    """Samples VmHWM (the process's own peak RSS, children excluded) of one pid."""

    def __init__(self, pid, interval):
        super().__init__(daemon=True)
        self.pid, self.interval, self.kb, self.samples = pid, interval, 0, 0
        self.halt = threading.Event()

    def run(self):
        path = f"/proc/{self.pid}/status"
        while not self.halt.is_set():
            try:
                with open(path) as f:
                    text = f.read()
            except OSError:
                return
            name = re.search(r"^Name:\s*(\S+)", text, re.M)
            m = re.search(r"^VmHWM:\s*(\d+) kB", text, re.M)
            if name and name.group(1) != "pgstash":
                if self.samples:
                    return  # the pid was reused
                self.halt.wait(self.interval / 4)  # forked, not yet executed
                continue
            if m:
                self.kb = max(self.kb, int(m.group(1)))
                self.samples += 1
            self.halt.wait(self.interval)


class Ctx:
    def __init__(self, args):
        self.args = args
        self.as_root = os.geteuid() == 0
        if self.as_root:
            pw = pwd.getpwnam(args.user)
            self.uid, self.gid, self.user = pw.pw_uid, pw.pw_gid, args.user
        else:
            self.uid, self.gid = os.geteuid(), os.getegid()
            self.user = pwd.getpwuid(self.uid).pw_name
        self.bindir = args.pg_bindir
        self.scratch = None
        self.trash, self.trash_n, self.trash_bytes, self.trash_budget, self.purges = None, 0, 0, 0, 0
        self.running = set()  # PGDATAs with a server we started
        self.base_env = {"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"}

    def bin(self, name):
        return os.path.join(self.bindir, name)

    # Deleting a PGDATA between measurements would slow the next ones down: on ext4 without a journal
    # (this benchmark's first machine) the inode allocator skips every inode freed in the last 60 s
    # (360 s while its inode-table block is dirty), and each skip is a lookup, so creating files right
    # after deleting thousands costs up to 20x more (perf: find_inode_bit -> recently_deleted).  So what
    # a measurement leaves is moved aside and deleted in bulk, followed by a pause, only when the trash
    # outgrows its budget (and at the end).
    def discard(self, path):
        if not os.path.lexists(path):
            return
        if not path.startswith(self.scratch + "/") or self.args.trash_gb <= 0:
            shutil.rmtree(path, ignore_errors=True)
            return
        os.makedirs(self.trash, exist_ok=True)
        self.trash_n += 1
        self.trash_bytes += sum(os.lstat(os.path.join(r, f)).st_size for r, _, fs in os.walk(path) for f in fs)
        os.rename(path, os.path.join(self.trash, str(self.trash_n)))
        if self.trash_bytes > self.trash_budget:
            self.purge()

    def purge(self, pause=True):
        if not os.path.exists(self.trash):
            return
        say(f"deleting {self.trash_bytes / (1 << 30):.1f} GiB of finished measurements"
            + (f", then pausing {self.args.purge_pause:.0f} s" if pause else ""))
        shutil.rmtree(self.trash, ignore_errors=True)
        self.trash_bytes = 0
        self.purges += 1
        os.sync()
        if pause:
            time.sleep(self.args.purge_pause)

    def own(self, path):
        if self.as_root:
            os.chown(path, self.uid, self.gid)

    def mkdir(self, path, mode=0o755):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        self.own(path)
        return path

    def env(self, **extra):
        e = dict(self.base_env)
        e["HOME"] = self.scratch
        e.update({k: str(v) for k, v in extra.items() if v is not None})
        return e

    def run(self, argv, logpath, env=None, cwd=None, stdin=None, stdout=None, hwm=None, check=True):
        """Runs argv as the bench user; returns seconds, rc, tree peak RSS (wait4) and own VmHWM."""
        kw = {}
        if self.as_root:
            kw = {"user": self.uid, "group": self.gid, "extra_groups": []}
        with open(logpath, "ab") as lf:
            lf.write(("$ " + " ".join(argv) + "\n").encode())
            lf.flush()
            fin = open(stdin, "rb") if stdin else subprocess.DEVNULL
            fout = open(stdout, "wb") if stdout else lf
            try:
                t0 = time.perf_counter()
                p = subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=lf, env=env or self.env(), cwd=cwd,
                                     umask=0o022, **kw)
                sampler = None
                if hwm:
                    sampler = Hwm(p.pid, hwm)
                    sampler.start()
                _, status, ru = os.wait4(p.pid, 0)
                t1 = time.perf_counter()
                p.returncode = os.waitstatus_to_exitcode(status)
                if sampler:
                    sampler.halt.set()
                    sampler.join()
            finally:
                if stdin:
                    fin.close()
                if stdout:
                    fout.close()
        rc = p.returncode
        if check and rc != 0:
            raise BenchError(f"{' '.join(argv)} exited with {rc}; see {logpath}")
        return {"s": t1 - t0, "rc": rc, "tree_maxrss_kb": ru.ru_maxrss,
                "hwm_kb": sampler.kb if sampler else None}

    def output(self, argv, env=None, cwd=None, check=True):
        kw = {}
        if self.as_root:
            kw = {"user": self.uid, "group": self.gid, "extra_groups": []}
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env or self.env(),
                           cwd=cwd, umask=0o022, **kw)
        if check and p.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited with {p.returncode}: {p.stderr.strip()[-2000:]}")
        return p.stdout

    # -- servers
    def start(self, pgdata, sock, logpath, fast=False, wait=True):
        opts = f"-k {sock} -c listen_addresses=''" + (f" {FAST_OPTS}" if fast else "")
        argv = [self.bin("pg_ctl"), "-D", pgdata, "-l", os.path.join(os.path.dirname(logpath), "server.log"),
                "-t", "300", "-o", opts, "-w" if wait else "-W", "start"]
        self.running.add(pgdata)
        return self.run(argv, logpath)

    def stop(self, pgdata, logpath, mode="fast"):
        r = self.run([self.bin("pg_ctl"), "-D", pgdata, "-m", mode, "-t", "300", "-w", "stop"], logpath)
        self.running.discard(pgdata)
        return r

    def stop_all(self):
        for d in list(self.running):
            if os.path.exists(os.path.join(d, "postmaster.pid")):
                subprocess.run([self.bin("pg_ctl"), "-D", d, "-m", "immediate", "-w", "stop"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               **({"user": self.uid, "group": self.gid, "extra_groups": []} if self.as_root else {}))
            self.running.discard(d)

    def psql(self, sock, db, sql):
        return self.output([self.bin("psql"), "-X", "-At", "-h", sock, "-U", "postgres", "-d", db,
                            "-v", "ON_ERROR_STOP=1", "-c", sql]).strip()

    def serve(self, argv, sock, logpath, env=None, cwd=None, timeout=300):
        """Starts a server process (postgres, or `pgstash run`, which execs it) as the bench user and
        returns seconds from just before its fork until a client's connection on `sock` is accepted,
        with the process (stop it with stop_served)."""
        kw = {"user": self.uid, "group": self.gid, "extra_groups": []} if self.as_root else {}
        with open(logpath, "ab") as lf:
            lf.write(("$ " + " ".join(argv) + "\n").encode())
            lf.flush()
            t0 = time.perf_counter()
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, env=env or self.env(),
                                 cwd=cwd, umask=0o022, **kw)
        try:
            wait_accepting(sock, p, t0 + timeout)
        except BaseException:
            p.kill()
            p.wait()
            raise
        return time.perf_counter() - t0, p

    def stop_served(self, p):
        """A fast shutdown (SIGINT) of a server serve() started; seconds until it has exited."""
        t0 = time.perf_counter()
        p.send_signal(signal.SIGINT)
        try:
            p.wait(300)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise BenchError(f"server pid {p.pid} did not stop within 300 s")
        return time.perf_counter() - t0


def accepts(path, user="postgres", db="postgres"):
    """One connection attempt on a unix socket, in the protocol's own terms: True when the server
    authenticates the startup packet and says ReadyForQuery (what a client waits for), False while
    the socket is missing, refuses, or the server answers "starting up"."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        body = struct.pack("!i", 196608) + f"user\0{user}\0database\0{db}\0\0".encode()
        s.sendall(struct.pack("!i", len(body) + 4) + body)
        buf = b""
        while True:
            while len(buf) < 5:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                buf += chunk
            kind, n = buf[:1], struct.unpack("!i", buf[1:5])[0]
            while len(buf) < 1 + n:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                buf += chunk
            if kind == b"Z":
                s.sendall(b"X" + struct.pack("!i", 4))  # Terminate
                return True
            if kind == b"E":
                return False
            if kind == b"R" and struct.unpack("!i", buf[5:9])[0] != 0:
                raise BenchError(f"{path}: the server asks for a password (local auth must be trust here)")
            buf = buf[1 + n:]
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return False
    finally:
        s.close()


def wait_accepting(sockdir, proc, deadline, port=5432):
    """Polls every millisecond until a connection is accepted; fails if proc exits first."""
    path = os.path.join(sockdir, f".s.PGSQL.{port}")
    while not accepts(path):
        if proc.poll() is not None:
            raise BenchError(f"the server (pid {proc.pid}) exited with {proc.returncode} before accepting")
        if time.perf_counter() > deadline:
            raise BenchError(f"no connection accepted on {path} in time")
        time.sleep(0.001)


def settle(ctx):
    """Starts every measurement from the same place: dirty pages written back, a short pause."""
    os.sync()
    if ctx.args.settle > 0:
        time.sleep(ctx.args.settle)


def pressure():
    out = {"load1": round(os.getloadavg()[0], 2)}
    for kind in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{kind}") as f:
                m = re.search(r"some avg10=([\d.]+)", f.read())
                out[f"psi_{kind}_some_avg10"] = float(m.group(1)) if m else None
        except OSError:
            pass
    return out


def tree_stats(path):
    """Regular files, their bytes, empty files, directories below path (like the snapshot's walk)."""
    files = bytes_ = empty = dirs = 0
    for root, ds, fs in os.walk(path):
        dirs += len(ds)
        for name in fs:
            st = os.lstat(os.path.join(root, name))
            if os.path.stat.S_ISREG(st.st_mode):
                files += 1
                bytes_ += st.st_size
                empty += st.st_size == 0
    return {"files": files, "bytes": bytes_, "empty_files": empty, "dirs": dirs}


def read_meta(cache):
    d = os.path.join(cache, "pgstash-v1")
    metas = [f for f in os.listdir(d) if f.endswith(".meta")]
    if len(metas) != 1:
        raise BenchError(f"expected one cache entry in {d}, found {len(metas)}")
    meta = {}
    with open(os.path.join(d, metas[0])) as f:
        for line in f:
            m = re.match(r"^(\w+)\s*=\s*(.*)$", line)
            if m and m.group(1) not in ("manifest",):
                meta[m.group(1)] = m.group(2).strip()
    key = meta["key"]
    archive = [f for f in os.listdir(d) if f.startswith(key) and not f.endswith(".meta")]
    meta["archive_path"] = os.path.join(d, archive[0])
    meta["meta_path"] = os.path.join(d, metas[0])
    return meta


def parse_pgstash_log(path):
    """Timings pgstash itself logs (info and debug lines)."""
    with open(path, errors="replace") as f:
        text = f.read()
    out = {}
    pats = {
        "key_s": r"info: key \w+ \((\d+) files, ([\d.]+) s\)",
        "restore_s": r"cache hit \w+: restored [\d.]+ \S+ in ([\d.]+) s",
        "password_ms": r"set in single-user mode in (\d+) ms",
        # the background syncer's line (src/marker.c), or mark_sync's when the sync was not deferred
        "syncfs_ms": r"debug: (?:background sync \(pid \d+\) of PGDATA done|synced \".*\") in (\d+) ms",
        "bootstrap_s": r"bootstrap done in ([\d.]+) s",
        "initdb_s": r"initdb done in ([\d.]+) s",
        "temp_start_s": r"temporary server ready in ([\d.]+) s",
        "temp_stop_s": r"temporary server stopped in ([\d.]+) s",
        "snapshot_write_s": r"snapshot (?:\w+ )?written in ([\d.]+) s",
        "build_s": r"cache miss \w+: migrated in ([\d.]+) s",
        # src/store.c, at debug level: only with trusted_keys set
        "verify_ms": r"debug: signature of \w+ by \w+ verified in ([\d.]+) ms",
    }
    for k, p in pats.items():
        m = re.search(p, text)
        if m:
            out[k] = float(m.group(2 if k == "key_s" else 1))
    if "password_ms" in out:
        out["password_s"] = out.pop("password_ms") / 1000
    if "syncfs_ms" in out:
        out["syncfs_s"] = out.pop("syncfs_ms") / 1000
    out["hit"] = "cache hit" in text
    out["miss"] = "cache miss" in text and "building" in text
    return out


# ---------------------------------------------------------------- per size

class Size:
    def __init__(self, ctx, name):
        self.ctx, self.name = ctx, name
        self.apps, self.migs = SIZES[name]
        self.dir = ctx.mkdir(os.path.join(ctx.scratch, name))
        self.proj = os.path.join(self.dir, "proj")
        self.ini = os.path.join(self.dir, "pgstash.ini")
        self.cache = ctx.mkdir(os.path.join(self.dir, "cache"))
        self.initdb_d = ctx.mkdir(os.path.join(self.dir, "initdb.d"))
        self.sock = ctx.mkdir(os.path.join(self.dir, "s"))
        self.state = ctx.mkdir(os.path.join(self.dir, "state"))
        self.logs = ctx.mkdir(os.path.join(self.dir, "logs"))
        self.runs = ctx.mkdir(os.path.join(self.dir, "runs"))
        self.seed = os.path.join(self.dir, "seed")
        self.dump = os.path.join(self.dir, "app.dump")
        self.schema = os.path.join(self.dir, "schema.sql")
        self.snap_tar = os.path.join(self.dir, "snap.tar")
        self.sign_key = os.path.join(self.dir, "sign")  # .key / .pub: `pgstash keygen`
        self.info = {}
        self.results = {m: [] for m in METHODS}

    def pgstash_env(self, pgdata, cache, trust=False, **extra):
        e = {"PGDATA": pgdata, "PGSTASH_CACHE_DIR": cache, "PGSTASH_PG_BINDIR": self.ctx.bindir,
             "PGSTASH_SOCKET_DIR": self.state, "PGSTASH_INITDB_D": self.initdb_d}
        if trust:
            e["POSTGRES_HOST_AUTH_METHOD"] = "trust"
        else:
            # As the image runs it (its Dockerfile sets local_auth = trust): the bench's
            # psql reaches the final server through the socket without a password.
            e["POSTGRES_PASSWORD"] = PASSWORD
            e["PGSTASH_LOCAL_AUTH"] = "trust"
        e.update(extra)
        return self.ctx.env(**e)

    def pgstash(self, pgdata, cache, logpath, trust=False, hwm=None, extra_env=None, wrap=None):
        argv = [self.ctx.pgstash, "-v", f"--config={self.ini}", "prepare"]
        return self.ctx.run((wrap or []) + argv, logpath, env=self.pgstash_env(pgdata, cache, trust, **(extra_env or {})),
                            cwd=self.dir, hwm=hwm)

    def fresh(self, label):
        path = os.path.join(self.runs, label)
        if os.path.exists(path):
            self.ctx.discard(path)
        return self.ctx.mkdir(path, 0o700)

    def log(self, label):
        return os.path.join(self.logs, f"{label}.log")

    def relcount(self):
        sql = ("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
               "WHERE n.nspname = 'public'")
        return int(self.ctx.psql(self.sock, "app", sql))

    def verify(self, label, migrations=True):
        n = self.relcount()
        if n != self.info["relations"]:
            raise BenchError(f"{self.name} {label}: {n} relations in public, expected {self.info['relations']}")
        if migrations:
            m = int(self.ctx.psql(self.sock, "app", "SELECT count(*) FROM django_migrations"))
            if m != self.info["django_migrations"]:
                raise BenchError(f"{self.name} {label}: {m} django_migrations rows, expected "
                                 f"{self.info['django_migrations']}")

    # -- setup
    def setup(self):
        ctx = self.ctx
        say(f"{self.name}: generating the project ({self.apps} apps x {self.migs} migrations)")
        ctx.run(["/usr/bin/python3", ctx.args.generator, self.proj, str(self.apps), str(self.migs)],
                self.log("setup"))
        with open(self.ini, "w") as f:
            f.write("; written by bench/bench.py\n[pgstash]\ncompression = zstd\n\n[database]\nuser = postgres\n"
                    "name = app\n\n[step django]\nroot = proj\nmigrations = */migrations/*.py\n"
                    "exclude = */__pycache__/*\nrun = python3 manage.py migrate --noinput\n"
                    "env = DJANGO_SETTINGS_MODULE=proj.settings\n")
        ctx.own(self.ini)
        migfiles = sum(1 for a in os.listdir(self.proj) if os.path.isdir(os.path.join(self.proj, a, "migrations"))
                       for f in os.listdir(os.path.join(self.proj, a, "migrations")) if f.endswith(".py"))
        self.info["migration_files"] = migfiles

        say(f"{self.name}: filling the cache (pgstash prepare, a miss; the entry signed)")
        ctx.run([ctx.pgstash, "keygen", self.sign_key], self.log("setup"), cwd=self.dir)
        ctx.mkdir(self.seed, 0o700)
        r = self.pgstash(self.seed, self.cache, self.log("seed"),
                         extra_env={"PGSTASH_SIGNING_KEY_FILE": self.sign_key + ".key"})
        self.info["seed_build"] = {"s": r["s"], **parse_pgstash_log(self.log("seed"))}
        meta = read_meta(self.cache)
        self.meta = meta
        self.info["meta"] = {k: meta[k] for k in ("key", "compression", "pg_version", "archive_bytes",
                                                  "pgdata_bytes", "build_seconds")}
        self.info["seed_pgdata"] = tree_stats(self.seed)

        say(f"{self.name}: pg_dump -Fc and pg_dump -s of the migrated database")
        ctx.start(self.seed, self.sock, self.log("seed"))
        self.info["relations"] = self.relcount()
        self.info["django_migrations"] = int(ctx.psql(self.sock, "app", "SELECT count(*) FROM django_migrations"))
        self.info["databases"] = dict(
            line.split("|", 1) for line in ctx.psql(self.sock, "postgres", "SELECT oid, datname FROM pg_database")
            .splitlines())
        ctx.run([self.ctx.bin("pg_dump"), "-h", self.sock, "-U", "postgres", "-Fc", "-f", self.dump, "app"],
                self.log("seed"))
        ctx.run([self.ctx.bin("pg_dump"), "-h", self.sock, "-U", "postgres", "-s", "-f", self.schema, "app"],
                self.log("seed"))
        ctx.stop(self.seed, self.log("seed"))
        self.info["dump_bytes"] = os.path.getsize(self.dump)
        self.info["schema_sql_bytes"] = os.path.getsize(self.schema)

        # The physical limit's input: this very snapshot, uncompressed, read once into the page cache.
        ctx.run(["zstd", "-q", "-d", "-c", meta["archive_path"]], self.log("setup"), stdout=self.snap_tar)
        self.info["snap_tar_bytes"] = os.path.getsize(self.snap_tar)
        for p in (self.snap_tar, meta["archive_path"], self.dump, self.schema):
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass
        say(f"{self.name}: {self.info['relations']} relations, snapshot {mib(int(meta['archive_bytes'])):.1f} MiB "
            f"of {mib(int(meta['pgdata_bytes'])):.1f} MiB PGDATA, dump {mib(self.info['dump_bytes']):.1f} MiB")

    # -- the measurements
    def m_migrate(self, label):
        ctx, d, lg = self.ctx, self.fresh(label), self.log(label)
        ph = {}
        ph["initdb"] = ctx.run(self.initdb_argv(d), lg)["s"]
        ph["start"] = ctx.start(d, self.sock, lg, fast=True)["s"]
        ph["createdb"] = ctx.run([ctx.bin("createdb"), "-h", self.sock, "-U", "postgres", "app"], lg)["s"]
        env = ctx.env(PGHOST=self.sock, PGPORT=5432, PGUSER="postgres", PGDATABASE="app",
                      DJANGO_SETTINGS_MODULE="proj.settings")
        ph["migrate"] = ctx.run(["python3", "manage.py", "migrate", "--noinput"], lg, env=env, cwd=self.proj)["s"]
        total = sum(ph.values())
        self.verify(label)
        ph["stop"] = ctx.stop(d, lg)["s"]
        return {"phases": ph, "total": total, "total_with_stop": total + ph["stop"]}

    def initdb_argv(self, d):
        # The same options pgstash gives initdb (src/server.c).
        return [self.ctx.bin("initdb"), "-D", d, "--username=postgres", "--encoding=UTF8", "--locale=C.UTF-8",
                "--auth-local=trust", "--auth-host=trust", "--no-sync"]

    def m_recipe(self, label, kind):
        ctx, d, lg = self.ctx, self.fresh(label), self.log(label)
        ph = {}
        ph["initdb"] = ctx.run(self.initdb_argv(d), lg)["s"]
        ph["start"] = ctx.start(d, self.sock, lg, fast=True)["s"]
        ph["createdb"] = ctx.run([ctx.bin("createdb"), "-h", self.sock, "-U", "postgres", "app"], lg)["s"]
        if kind == "pg_restore":
            ph["pg_restore"] = ctx.run([ctx.bin("pg_restore"), "-h", self.sock, "-U", "postgres", "-d", "app",
                                        self.dump], lg)["s"]
        else:
            ph["psql"] = ctx.run([ctx.bin("psql"), "-X", "-q", "-h", self.sock, "-U", "postgres", "-d", "app",
                                  "-v", "ON_ERROR_STOP=1", "-f", self.schema], lg, stdout=os.devnull)["s"]
        total = sum(ph.values())
        self.verify(label, migrations=kind == "pg_restore")
        ph["stop"] = ctx.stop(d, lg)["s"]
        return {"phases": ph, "total": total}

    def m_hit(self, label, trust=False, signed=False):
        ctx, d, lg = self.ctx, self.fresh(label), self.log(label)
        extra = {"PGSTASH_TRUSTED_KEYS": self.sign_key + ".pub"} if signed else None
        r = self.pgstash(d, self.cache, lg, trust=trust, hwm=self.ctx.args.rss_interval, extra_env=extra)
        inner = parse_pgstash_log(lg)
        if not inner["hit"]:
            raise BenchError(f"{self.name} {label}: not a cache hit; see {lg}")
        if signed and inner.get("verify_ms") is None:
            raise BenchError(f"{self.name} {label}: no \"signature ... verified\" line; see {lg}")
        ph = {"prepare": r["s"]}
        ph["start"] = ctx.start(d, self.sock, lg)["s"]
        total = ph["prepare"] + ph["start"]
        self.verify(label)
        ph["stop"] = ctx.stop(d, lg)["s"]
        return {"phases": ph, "total": total, "pgstash": inner, "hwm_kb": r["hwm_kb"],
                "tree_maxrss_kb": r["tree_maxrss_kb"]}

    def m_limit(self, label):
        ctx, d, lg = self.ctx, self.fresh(label), self.log(label)
        ph = {"tar_x": ctx.run(["tar", "-xf", self.snap_tar, "-C", d], lg)["s"]}
        ph["start"] = ctx.start(d, self.sock, lg)["s"]
        total = ph["tar_x"] + ph["start"]
        self.verify(label)
        ph["stop"] = ctx.stop(d, lg)["s"]
        return {"phases": ph, "total": total}

    def m_hit_run(self, label):
        """`pgstash run` into an empty PGDATA, timed until the final server accepts a connection."""
        ctx, d, lg = self.ctx, self.fresh(label), self.log(label)
        argv = [ctx.pgstash, "-v", f"--config={self.ini}", "run", "-k", self.sock, "-c", "listen_addresses="]
        secs, p = ctx.serve(argv, self.sock, lg, env=self.pgstash_env(d, self.cache), cwd=self.dir)
        inner = parse_pgstash_log(lg)
        if not inner["hit"]:
            ctx.stop_served(p)
            raise BenchError(f"{self.name} {label}: not a cache hit; see {lg}")
        try:
            self.verify(label)
        finally:
            stop = ctx.stop_served(p)
        return {"phases": {"to_accept": secs, "stop": stop}, "total": secs, "pgstash": inner}

    def m_limit_run(self, label):
        """`tar -x` of the uncompressed snapshot, then postgres itself, until it accepts a connection."""
        ctx, d, lg = self.ctx, self.fresh(label), self.log(label)
        ph = {"tar_x": ctx.run(["tar", "-xf", self.snap_tar, "-C", d], lg)["s"]}
        argv = [ctx.bin("postgres"), "-D", d, "-k", self.sock, "-c", "listen_addresses="]
        ph["to_accept"], p = ctx.serve(argv, self.sock, lg)
        try:
            self.verify(label)
        finally:
            ph["stop"] = ctx.stop_served(p)
        return {"phases": ph, "total": ph["tar_x"] + ph["to_accept"]}

    def m_miss(self, label):
        ctx, d, lg = self.ctx, self.fresh(label), self.log(label)
        cache = os.path.join(self.runs, label + "-cache")
        if os.path.exists(cache):
            self.ctx.discard(cache)
        ctx.mkdir(cache)
        r = self.pgstash(d, cache, lg, hwm=max(self.ctx.args.rss_interval, 0.01))
        inner = parse_pgstash_log(lg)
        if not inner["miss"]:
            raise BenchError(f"{self.name} {label}: not a cache miss; see {lg}")
        meta = read_meta(cache)
        self.ctx.discard(cache)
        return {"phases": {"prepare": r["s"]}, "total": r["s"], "pgstash": inner, "hwm_kb": r["hwm_kb"],
                "tree_maxrss_kb": r["tree_maxrss_kb"], "archive_bytes": int(meta["archive_bytes"]),
                "pgdata_bytes": int(meta["pgdata_bytes"])}

    def create_probe(self, label, n=200):
        """Microseconds per file creation right now, next to where the measurement will create its files."""
        probe = os.path.join(self.runs, f"probe-{label}")
        os.mkdir(probe)
        t0 = time.perf_counter()
        for i in range(n):
            os.close(os.open(os.path.join(probe, str(i)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        us = (time.perf_counter() - t0) / n * 1e6
        self.ctx.discard(probe)
        return round(us, 1)

    def measure(self, method, rep):
        label = f"{method}-{rep}"
        create_us = self.create_probe(label)
        settle(self.ctx)
        noise = pressure()
        noise["create_us"] = create_us
        if method == "migrate":
            r = self.m_migrate(label)
        elif method in ("pg_restore", "structure"):
            r = self.m_recipe(label, method)
        elif method == "hit":
            r = self.m_hit(label)
        elif method == "hit_trust":
            r = self.m_hit(label, trust=True)
        elif method == "hit_signed":
            r = self.m_hit(label, signed=True)
        elif method == "limit":
            r = self.m_limit(label)
        elif method == "hit_run":
            r = self.m_hit_run(label)
        elif method == "limit_run":
            r = self.m_limit_run(label)
        elif method == "miss":
            r = self.m_miss(label)
        else:
            r = getattr(self, "m_" + method)(label)  # a subclass's own method (curve.py: ztar)
        self.ctx.discard(os.path.join(self.runs, label))
        r.update({"rep": rep, "noise": noise})
        self.results[method].append(r)
        say(f"{self.name} rep {rep + 1} {method:<10} {r['total']:8.3f} s  "
            + " ".join(f"{k}={v:.3f}" for k, v in r["phases"].items()) + f"  load1={noise['load1']}")

    # -- summary
    def summary(self):
        out = {}
        for m, runs in self.results.items():
            if not runs:
                continue
            s = {"total": stats([r["total"] for r in runs])}
            for ph in runs[0]["phases"]:
                s[ph] = stats([r["phases"].get(ph) for r in runs])
            if m == "migrate":
                s["total_with_stop"] = stats([r["total_with_stop"] for r in runs])
            if "pgstash" in runs[0]:
                for k in ("key_s", "restore_s", "password_s", "syncfs_s", "bootstrap_s", "initdb_s", "build_s",
                          "snapshot_write_s", "temp_start_s", "temp_stop_s", "verify_ms"):
                    v = [r["pgstash"].get(k) for r in runs]
                    if any(x is not None for x in v):
                        s["pgstash_" + k] = stats(v)
                if "hwm_kb" in runs[0]:  # run mode's pgstash becomes postgres: not sampled
                    s["hwm_mb"] = stats([r["hwm_kb"] / 1024 for r in runs if r["hwm_kb"]])
                    s["tree_maxrss_mb"] = stats([r["tree_maxrss_kb"] / 1024 for r in runs])
            out[m] = s
        return out

    def ratios(self, summ):
        med = lambda m, k="total": summ[m][k]["median"] if m in summ and summ[m].get(k) else None
        r = {}
        if med("hit") and med("limit"):
            r["hit_vs_limit"] = med("hit") / med("limit")
        if med("hit") and med("pg_restore"):
            r["restore_vs_hit"] = med("pg_restore") / med("hit")
        if med("hit") and med("migrate"):
            r["migrate_vs_hit"] = med("migrate") / med("hit")
        if med("hit_run") and med("limit_run"):
            r["run_hit_vs_limit"] = med("hit_run") / med("limit_run")
        if med("hit_trust") and med("limit"):
            r["hit_trust_vs_limit"] = med("hit_trust") / med("limit")
        if med("hit") and med("structure"):
            r["structure_vs_hit"] = med("structure") / med("hit")
        if med("miss") and med("migrate", "total_with_stop"):
            r["miss_overhead"] = med("miss") / med("migrate", "total_with_stop") - 1
            # Paired: each repetition's miss against the same repetition's migrate + stop.
            pairs = [m["total"] / g["total_with_stop"] - 1
                     for m, g in zip(self.results["miss"], self.results["migrate"])]
            r["miss_overhead_paired_median"] = statistics.median(pairs) if pairs else None
            r["miss_overhead_s"] = med("miss") - med("migrate", "total_with_stop")
        r["snapshot_ratio"] = int(self.meta["archive_bytes"]) / int(self.meta["pgdata_bytes"])
        if med("hit_signed", "pgstash_verify_ms"):
            r["verify_ms"] = med("hit_signed", "pgstash_verify_ms")
            r["verify_ms_max"] = summ["hit_signed"]["pgstash_verify_ms"]["max"]
        if med("hit_signed") and med("hit"):
            # Paired: each repetition's signed hit against the same repetition's plain hit.
            pairs = [s["total"] - h["total"] for s, h in zip(self.results["hit_signed"], self.results["hit"])]
            r["signed_hit_extra_s"] = statistics.median(pairs) if pairs else None
        hw = [x["hwm_kb"] for m in ("hit", "hit_trust", "hit_signed", "miss") for x in self.results[m]
              if x.get("hwm_kb")]
        if hw:
            r["peak_rss_mb"] = max(hw) / 1024
        return r


def verdicts(ratios):
    out = {}
    for k, (op, target, _) in TARGETS.items():
        v = ratios.get(k)
        if v is None:
            continue
        ok = v <= target if op == "<=" else v >= target
        out[k] = {"value": v, "target": f"{op} {target}", "pass": ok}
    return out


# ---------------------------------------------------------------- fingerprint

def fingerprint_bench(ctx, reps):
    d = ctx.mkdir(os.path.join(ctx.scratch, "fp"))
    root = ctx.mkdir(os.path.join(d, "root"))
    say(f"fingerprint: writing {FP_FILES} files of {FP_FILE_BYTES} bytes")
    rnd = random.Random(6)
    per_dir = 100
    for i in range(FP_FILES // per_dir):
        mdir = os.path.join(root, f"app{i:03d}", "migrations")
        os.makedirs(mdir, exist_ok=True)
        for j in range(per_dir):
            with open(os.path.join(mdir, f"{j:04d}_auto.py"), "wb") as f:
                f.write(rnd.randbytes(FP_FILE_BYTES // 2).hex().encode())
    if ctx.as_root:
        subprocess.run(["chown", "-R", f"{ctx.uid}:{ctx.gid}", d], check=True)
    ini = os.path.join(d, "fp.ini")
    with open(ini, "w") as f:
        f.write("[database]\nuser = postgres\n\n[step fp]\nroot = root\nmigrations = */migrations/*.py\n"
                "run = true\n")
    ctx.own(ini)
    env = ctx.env(PGSTASH_PG_BINDIR=ctx.bindir, PGSTASH_CACHE_DIR=os.path.join(d, "cache"),
                  PGDATA=os.path.join(d, "pgdata"))
    lg = os.path.join(d, "fp.log")
    key_argv = [ctx.pgstash, "-v", f"--config={ini}", "key"]
    sum_argv = ["/bin/sh", "-c", "sha256sum */migrations/*.py >/dev/null"]
    ctx.run(key_argv, lg, env=env, cwd=d)  # warm the page cache
    ctx.run(sum_argv, lg, cwd=root)
    res = {"key": [], "key_internal": [], "sha256sum": [], "files": None, "bytes": None}
    for rep in range(reps):
        for which in (["key", "sha256sum"] if rep % 2 == 0 else ["sha256sum", "key"]):
            if which == "key":
                open(lg, "w").close()
                r = ctx.run(key_argv, lg, env=env, cwd=d)
                with open(lg) as f:
                    m = re.search(r"fingerprinted (\d+) files \((\d+) bytes\) in ([\d.]+) s", f.read())
                res["key"].append(r["s"])
                if m:
                    res["files"], res["bytes"] = int(m.group(1)), int(m.group(2))
                    res["key_internal"].append(float(m.group(3)))
            else:
                res["sha256sum"].append(ctx.run(sum_argv, lg, cwd=root)["s"])
    out = {"files": res["files"] or FP_FILES, "bytes": res["bytes"] or FP_FILES * FP_FILE_BYTES,
           "pgstash_key": stats(res["key"]), "pgstash_fingerprint_internal": stats(res["key_internal"]),
           "sha256sum": stats(res["sha256sum"])}
    out["key_vs_sha256sum"] = out["pgstash_key"]["median"] / out["sha256sum"]["median"]
    say(f"fingerprint: pgstash key {fmt_stat(out['pgstash_key'])} s, sha256sum {fmt_stat(out['sha256sum'])} s")
    ctx.discard(root)
    return out


# ---------------------------------------------------------------- analysis

def inventory(tar_path, controldata, databases):
    """What the snapshot holds, and what a cluster does not need after a clean shutdown."""
    inv = {"entries": 0, "dirs": 0, "files": 0, "symlinks": 0, "empty_files": 0, "bytes": 0,
           "by_top": {}, "by_database": {}, "wal": [], "relcache_init": {"files": 0, "bytes": 0},
           "reset_dirs": {"files": 0, "bytes": 0, "which": {}}, "fsm": {"files": 0, "bytes": 0},
           "vm": {"files": 0, "bytes": 0}, "zero_pages_8k": 0, "pages_8k": 0}
    seg_size = int(controldata.get("Bytes per WAL segment", 16 << 20))
    redo = controldata.get("Latest checkpoint's REDO WAL file", "")
    with tarfile.open(tar_path) as t:
        for m in t:
            inv["entries"] += 1
            top = m.name.split("/", 1)[0]
            bt = inv["by_top"].setdefault(top, {"files": 0, "bytes": 0, "empty_files": 0})
            if m.isdir():
                inv["dirs"] += 1
                continue
            if m.issym():
                inv["symlinks"] += 1
                continue
            inv["files"] += 1
            inv["bytes"] += m.size
            bt["files"] += 1
            bt["bytes"] += m.size
            if m.size == 0:
                inv["empty_files"] += 1
                bt["empty_files"] += 1
            parts = m.name.split("/")
            if top == "base" and len(parts) >= 3:
                db = databases.get(parts[1], parts[1])
                bd = inv["by_database"].setdefault(db, {"files": 0, "bytes": 0, "empty_files": 0})
                bd["files"] += 1
                bd["bytes"] += m.size
                bd["empty_files"] += m.size == 0
            if parts[-1] == "pg_internal.init":
                inv["relcache_init"]["files"] += 1
                inv["relcache_init"]["bytes"] += m.size
            if top in RESET_DIRS:
                inv["reset_dirs"]["files"] += 1
                inv["reset_dirs"]["bytes"] += m.size
                w = inv["reset_dirs"]["which"].setdefault(top, {"files": 0, "bytes": 0})
                w["files"] += 1
                w["bytes"] += m.size
            if parts[-1].endswith("_fsm"):
                inv["fsm"]["files"] += 1
                inv["fsm"]["bytes"] += m.size
            if parts[-1].endswith("_vm"):
                inv["vm"]["files"] += 1
                inv["vm"]["bytes"] += m.size
            data = t.extractfile(m).read() if m.size else b""
            zero = bytes(8192)
            for off in range(0, len(data), 8192):
                inv["pages_8k"] += 1
                if data[off:off + 8192] == zero[:len(data[off:off + 8192])]:
                    inv["zero_pages_8k"] += 1
            if top == "pg_wal" and len(parts) == 2 and re.fullmatch(r"[0-9A-F]{24}", parts[1]):
                last_nonzero = len(data.rstrip(b"\0"))
                inv["wal"].append({"name": parts[1], "bytes": m.size, "current": parts[1] == redo,
                                   "future": bool(redo) and parts[1] > redo,
                                   "past": bool(redo) and parts[1] < redo,
                                   "zero_pages": sum(1 for o in range(0, len(data), 8192)
                                                     if data[o:o + 8192] == zero),
                                   "bytes_after_last_nonzero": m.size - last_nonzero})
    inv["wal_segment_bytes"] = seg_size
    inv["redo_wal_file"] = redo
    fut = [w for w in inv["wal"] if w["future"] or w["past"]]
    inv["wal_not_needed"] = {"files": len(fut), "bytes": sum(w["bytes"] for w in fut)}
    inv["empty_fraction"] = inv["empty_files"] / inv["files"] if inv["files"] else 0
    inv["zero_page_fraction"] = inv["zero_pages_8k"] / inv["pages_8k"] if inv["pages_8k"] else 0
    return inv


def controldata(ctx, pgdata):
    out = {}
    for line in ctx.output([ctx.bin("pg_controldata"), pgdata]).splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def write_variant(ctx, sz, src_tar, name, drop, compression):
    """A cache entry of the same key with another archive: the real pgstash restores it."""
    cache = ctx.mkdir(os.path.join(sz.dir, f"cache-{name}"))
    d = ctx.mkdir(os.path.join(cache, "pgstash-v1"))
    key = sz.meta["key"]
    tar_path = os.path.join(sz.dir, f"variant-{name}.tar")
    dropped = {"files": 0, "bytes": 0}
    with tarfile.open(src_tar) as src, tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src:
            if drop(m):
                dropped["files"] += 1
                dropped["bytes"] += m.size
                continue
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    suffix = {"zstd": ".tar.zst", "none": ".tar"}[compression]
    archive = os.path.join(d, key + suffix)
    if compression == "zstd":
        subprocess.run(["zstd", "-q", "-3", "-f", tar_path, "-o", archive], check=True)
        os.unlink(tar_path)
    else:
        os.rename(tar_path, archive)
    h = hashlib.sha256()
    with open(archive, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    with open(sz.meta["meta_path"]) as f:
        text = f.read()
    text = re.sub(r"(?m)^compression = .*$", f"compression = {compression}", text)
    text = re.sub(r"(?m)^archive_bytes = .*$", f"archive_bytes = {os.path.getsize(archive)}", text)
    text = re.sub(r"(?m)^archive_sha256 = .*$", f"archive_sha256 = {h.hexdigest()}", text)
    with open(os.path.join(d, key + ".meta"), "w") as f:
        f.write(text)
    if ctx.as_root:
        subprocess.run(["chown", "-R", f"{ctx.uid}:{ctx.gid}", cache], check=True)
    return cache, {"archive_bytes": os.path.getsize(archive), "dropped": dropped, "compression": compression}


def parse_strace_c(path):
    rows = []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) >= 5 and re.fullmatch(r"[\d.]+", p[0]) and p[-1] != "total":
                calls = int(p[3])
                errors = int(p[4]) if len(p) == 6 else 0
                rows.append({"syscall": p[-1], "calls": calls, "errors": errors, "seconds": float(p[1])})
    rows.sort(key=lambda r: -r["calls"])
    return rows


def parse_strace_f_own(path):
    """`strace -f -o` output -> the same rows as parse_strace_c, for the first process and its threads
    only: the writer threads of a restore count, the children it runs (postgres --version, --single,
    the background syncer) do not, as with `strace -c` without -f on a single-threaded process."""
    pat = re.compile(r"^(\d+)\s+(?:<\.\.\. )?(\w+)(\(| resumed>)")
    with open(path) as f:
        lines = [(m, line) for line in f for m in [pat.match(line)] if m]
    # Pass 1: which clones made processes (no CLONE_THREAD), whatever line their result is on.
    pending, procs, threads = {}, {}, 0
    for m, line in lines:
        pid, name, kind = int(m.group(1)), m.group(2), m.group(3)
        if name not in ("clone", "clone3", "fork", "vfork"):
            continue
        if kind == "(":
            pending[pid] = "CLONE_THREAD" in line
        r = re.search(r"\) = (\d+)\s*$", line)
        if r and pid in pending:
            if pending.pop(pid):
                threads += 1
            else:
                procs[int(r.group(1))] = pid
    counts = {}
    for m, line in lines:
        pid, name, kind = int(m.group(1)), m.group(2), m.group(3)
        if kind != "(" or pid in procs:
            continue
        c = counts.setdefault(name, {"syscall": name, "calls": 0, "errors": 0, "seconds": 0.0})
        c["calls"] += 1
        if re.search(r"= -1 E", line):
            c["errors"] += 1
    return sorted(counts.values(), key=lambda r: -r["calls"]), threads


def parse_strace_t(path, pgdata):
    """Timeline of `strace -f -tt -T`: children, syncfs, file creation window."""
    def ts(s):
        h, m, sec = s.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    first = last = None
    children, execs, exits = {}, {}, {}
    syncfs, creates, create_t, pending = [], 0, [], {}
    for line in open(path, errors="replace"):
        m = re.match(r"^(\d+)\s+(\d\d:\d\d:\d\d\.\d+) (.*)$", line)
        if not m:
            continue
        pid, t, rest = int(m.group(1)), ts(m.group(2)), m.group(3)
        first = t if first is None else first
        last = t
        if re.match(r"^(clone3?|vfork|fork)\(", rest):
            pending[pid] = "CLONE_THREAD" in rest
        c = (re.match(r"^(clone3?|vfork|fork)\(.*\)\s+=\s+(\d+)", rest)
             or re.match(r"^<\.\.\. (clone3?|vfork|fork) resumed>.* = (\d+)", rest))
        if c and pid in pending:
            # Threads (the restore's writers) are not children: their calls are the process's own.
            if not pending.pop(pid):
                children[int(c.group(2))] = t
        e = re.match(r'^execve\("([^"]+)", \["[^"]*"(?:, "([^"]*)")?', rest)
        if e and pid in children:
            execs[pid] = " ".join(x for x in (os.path.basename(e.group(1)), e.group(2)) if x)
        if rest.startswith("+++ exited"):
            exits[pid] = t
        s = (re.match(r"^syncfs\(.*\)\s+=\s+\d+ <([\d.]+)>", rest)
             or re.match(r"^<\.\.\. syncfs resumed>.*=\s+\d+ <([\d.]+)>", rest))
        if s:
            syncfs.append(float(s.group(1)))
        # Files of PGDATA: GNU tar and libarchive open by name, pgstash's writers relative to PGDATA's fd.
        if "O_CREAT|O_EXCL" in rest and rest.startswith("openat(") and ".tmp" not in rest:
            creates += 1
            create_t.append(t)
    # A child that never executes anything is pgstash's background syncer (it syncs PGDATA after prepare).
    kids = [{"exec": execs.get(p, "pgstash syncer"), "s": exits[p] - t0} for p, t0 in children.items()
            if p in exits]
    return {"wall_s": (last - first) if first is not None else None, "children": kids, "syncfs_s": syncfs,
            "file_creates": creates,
            "create_window_s": (create_t[-1] - create_t[0]) if create_t else None}


def precise_start(ctx, pgdata, sock, logpath):
    """Server start until postmaster.pid says "ready", polled every millisecond (pg_ctl -w polls every 100 ms)."""
    t0 = time.perf_counter()
    ctx.start(pgdata, sock, logpath, wait=False)
    pidfile = os.path.join(pgdata, "postmaster.pid")
    while time.perf_counter() - t0 < 60:
        try:
            with open(pidfile) as f:
                lines = f.read().splitlines()
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.001)
    raise BenchError(f"server in {pgdata} not ready after 60 s")


def extraction_loop(ctx, sz, reps, caches, extractors, root, sync_after, start_after, tag):
    """Each variant once per repetition, rotating; pgstash variants are whole `pgstash prepare` runs."""
    names = list(caches) + list(extractors)
    res = {k: {"extract": [], "restore_s": [], "syncfs": [], "start": []} for k in names}
    for i in range(reps):
        k0 = i % len(names)
        for name in names[k0:] + names[:k0]:
            d = os.path.join(root, "x")
            if os.path.exists(d):
                ctx.discard(d)
            ctx.mkdir(d, 0o700)
            l2 = sz.log(f"an-{tag}-{name}-{i}")
            settle(ctx)
            if name in caches:
                r = sz.pgstash(d, caches[name][0], l2)
                inner = parse_pgstash_log(l2)
                if not inner["hit"]:
                    raise BenchError(f"variant {name} was not restored; see {l2}")
                res[name]["extract"].append(r["s"])
                res[name]["restore_s"].append(inner.get("restore_s"))
            elif callable(extractors[name]):
                res[name]["extract"].append(extractors[name](d, l2))
            else:
                res[name]["extract"].append(ctx.run(extractors[name] + ["-C", d], l2)["s"])
            if name in sync_after:
                res[name]["syncfs"].append(ctx.run(["sync", "-f", d], l2)["s"])
            if name in start_after:
                res[name]["start"].append(ctx.start(d, sz.sock, l2)["s"])
                sz.verify(name)
                ctx.stop(d, l2)
            ctx.discard(d)
    return {k: {"info": caches[k][1] if k in caches else None,
                **{p: stats(v) for p, v in res[k].items() if any(x is not None for x in v)}} for k in names}


def analyse(ctx, sz, reps, walseg, light=False):
    a = {}
    lg = sz.log("analysis")
    say(f"{sz.name}: analysis — what the snapshot holds")
    base = sz.fresh("an-base")
    ctx.run(["tar", "-xf", sz.snap_tar, "-C", base], lg)
    cd = controldata(ctx, base)
    a["controldata"] = {k: cd.get(k) for k in ("Database cluster state", "Latest checkpoint's REDO WAL file",
                                               "Bytes per WAL segment", "Latest checkpoint location")}
    inv = inventory(sz.snap_tar, cd, sz.info["databases"])
    a["inventory"] = inv
    for w in inv["wal"]:
        comp = subprocess.run(["zstd", "-q", "-3", "-c", os.path.join(base, "pg_wal", w["name"])],
                              capture_output=True, check=True).stdout
        w["zstd3_bytes"] = len(comp)
    ctx.discard(base)
    # The floor: a bare cluster (initdb, one clean start and stop).
    bare = sz.fresh("an-bare")
    ctx.run(sz.initdb_argv(bare), lg)
    ctx.start(bare, sz.sock, lg)
    ctx.stop(bare, lg)
    a["bare_cluster"] = tree_stats(bare)
    ctx.discard(bare)

    say(f"{sz.name}: analysis — fixed costs of a hit")
    comp = {k: [] for k in ("zstd_d", "sha256_archive", "postgres_version", "pg_ctl_start_w", "precise_start")}
    for i in range(reps):
        settle(ctx)
        comp["zstd_d"].append(ctx.run(["zstd", "-q", "-d", "-c", sz.meta["archive_path"]], lg,
                                      stdout=os.devnull)["s"])
        comp["sha256_archive"].append(ctx.run(["sha256sum", sz.meta["archive_path"]], lg, stdout=os.devnull)["s"])
        comp["postgres_version"].append(ctx.run([ctx.bin("postgres"), "--version"], lg, stdout=os.devnull)["s"])
        d = sz.fresh(f"an-start")
        ctx.run(["tar", "-xf", sz.snap_tar, "-C", d], lg)
        settle(ctx)
        comp["pg_ctl_start_w"].append(ctx.start(d, sz.sock, lg)["s"])
        ctx.stop(d, lg)
        settle(ctx)
        comp["precise_start"].append(precise_start(ctx, d, sz.sock, lg))
        ctx.stop(d, lg)
        ctx.discard(d)
    a["components"] = {k: stats(v) for k, v in comp.items()}

    if shutil.which("strace"):
        say(f"{sz.name}: analysis — strace of a hit and of tar -x")
        d = sz.fresh("an-strace")
        sc = os.path.join(sz.logs, "strace-c-hit.txt")
        settle(ctx)
        # -f: the restore's writer threads make most of its calls; only pgstash's own are counted.
        sz.pgstash(d, sz.cache, lg, wrap=["strace", "-f", "-o", sc])
        a["strace_c_hit"], a["strace_hit_threads"] = parse_strace_f_own(sc)
        ctx.discard(d)
        d = sz.fresh("an-strace")
        st = os.path.join(sz.logs, "strace-c-tar.txt")
        settle(ctx)
        ctx.run(["strace", "-c", "-o", st, "tar", "-xf", sz.snap_tar, "-C", d], lg)
        a["strace_c_tar"] = parse_strace_c(st)
        ctx.discard(d)
        entries = inv["entries"]
        a["syscalls_per_entry"] = {
            "pgstash_hit": sum(r["calls"] for r in a["strace_c_hit"]) / entries,
            "tar_x": sum(r["calls"] for r in a["strace_c_tar"]) / entries,
        }
        if not light:
            d = sz.fresh("an-strace")
            stt = os.path.join(sz.logs, "strace-tt-hit.txt")
            settle(ctx)
            sz.pgstash(d, sz.cache, lg, wrap=["strace", "-f", "-tt", "-T", "-s", "256", "-o", stt])
            a["strace_timeline_hit"] = parse_strace_t(stt, d)
            ctx.discard(d)
    # /usr/bin/time -v reports ru_maxrss of the process it waited for, which Linux makes the maximum of
    # that process and every descendant it reaped: pgstash's children (postgres --version, --single) count.
    if os.path.exists("/usr/bin/time"):
        d = sz.fresh("an-time")
        tl = os.path.join(sz.logs, "time-v-hit.txt")
        sz.pgstash(d, sz.cache, lg, wrap=["/usr/bin/time", "-v", "-o", tl])
        with open(tl) as f:
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
        a["time_v_hit_maxrss_kb"] = int(m.group(1)) if m else None
        ctx.discard(d)
    if light:
        return a

    say(f"{sz.name}: analysis — extraction variants, interleaved")
    removable = {w["name"] for w in inv["wal"] if w["future"] or w["past"]}

    def trim(m):
        parts = m.name.split("/")
        return parts[-1] == "pg_internal.init" or (parts[0] == "pg_wal" and len(parts) == 2 and parts[1] in removable)

    caches = {"pgstash_zstd": (sz.cache, {"archive_bytes": int(sz.meta["archive_bytes"]), "compression": "zstd"})}
    caches["pgstash_none"] = write_variant(ctx, sz, sz.snap_tar, "none", lambda m: False, "none")
    caches["pgstash_trim_zstd"] = write_variant(ctx, sz, sz.snap_tar, "trim", trim, "zstd")
    trim_tar = os.path.join(sz.dir, "snap-trim.tar")
    with tarfile.open(sz.snap_tar) as src, tarfile.open(trim_tar, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src:
            if not trim(m):
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    # Free space maps and visibility maps are optional forks: the server works without them (it rebuilds
    # them lazily); how much of the extraction do they cost?
    nofsm_tar = os.path.join(sz.dir, "snap-nofsmvm.tar")
    # Two workers creating the files: the directories first, then two halves of the files (alternating,
    # so both work in the same directories) extracted at the same time.
    dirs_tar, half_tars = os.path.join(sz.dir, "snap-dirs.tar"), [os.path.join(sz.dir, f"snap-half{i}.tar")
                                                                  for i in range(2)]
    with tarfile.open(sz.snap_tar) as src, tarfile.open(nofsm_tar, "w", format=tarfile.PAX_FORMAT) as nf, \
            tarfile.open(dirs_tar, "w", format=tarfile.PAX_FORMAT) as dt, \
            tarfile.open(half_tars[0], "w", format=tarfile.PAX_FORMAT) as h0, \
            tarfile.open(half_tars[1], "w", format=tarfile.PAX_FORMAT) as h1:
        n = 0
        for m in src:
            if not (m.name.endswith("_fsm") or m.name.endswith("_vm")):
                nf.addfile(m, src.extractfile(m) if m.isfile() else None)
            if m.isdir():
                dt.addfile(m)
            else:
                (h0, h1)[n % 2].addfile(m, src.extractfile(m) if m.isfile() else None)
                n += 1
    for p in (trim_tar, nofsm_tar, dirs_tar, *half_tars):
        ctx.own(p)

    def two_workers(d, logpath):
        kw = {"user": ctx.uid, "group": ctx.gid, "extra_groups": []} if ctx.as_root else {}
        t0 = time.perf_counter()
        ctx.run(["tar", "-xf", dirs_tar, "-C", d], logpath)
        with open(logpath, "ab") as lf:
            ps = [subprocess.Popen(["tar", "-xf", h, "-C", d], stdin=subprocess.DEVNULL, stdout=lf, stderr=lf,
                                   env=ctx.env(), umask=0o022, **kw) for h in half_tars]
            rcs = [p.wait() for p in ps]
        if any(rcs):
            raise BenchError(f"parallel tar -x failed; see {logpath}")
        return time.perf_counter() - t0

    extractors = {"gnu_tar": ["tar", "-xf", sz.snap_tar], "gnu_tar_trim": ["tar", "-xf", trim_tar],
                  "gnu_tar_no_fsm_vm": ["tar", "-xf", nofsm_tar], "gnu_tar_2_workers": two_workers}
    if shutil.which("bsdtar"):
        # bsdtar is libarchive's own tar: -P drops the SECURE_* checks, -S extracts sparse, -m skips mtimes
        # (pgstash sets none); the .tar.zst one is pgstash's restore without its digest and bookkeeping.
        extractors.update({
            "bsdtar": ["bsdtar", "-x", "-m", "-f", sz.snap_tar],
            "bsdtar_nosecure": ["bsdtar", "-x", "-m", "-P", "-f", sz.snap_tar],
            "bsdtar_sparse": ["bsdtar", "-x", "-m", "-S", "-f", sz.snap_tar],
            "bsdtar_sparse_zstd": ["bsdtar", "-x", "-m", "-S", "-f", sz.meta["archive_path"]],
        })
    a["extraction"] = extraction_loop(ctx, sz, reps, caches, extractors, sz.runs,
                                      sync_after={"gnu_tar", "bsdtar_sparse_zstd"},
                                      start_after=set(caches) | {"gnu_tar_trim", "gnu_tar_no_fsm_vm",
                                                                 "gnu_tar_2_workers"}, tag="disk")
    # The same on tmpfs: no disk, no journal, so what is left is CPU (decompression, digest, syscalls).
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        say(f"{sz.name}: analysis — extraction variants on tmpfs (/dev/shm)")
        shm = tempfile.mkdtemp(prefix="pgstash-bench.", dir="/dev/shm")
        os.chmod(shm, 0o755)
        ctx.own(shm)
        try:
            a["extraction_tmpfs"] = extraction_loop(ctx, sz, reps, caches, extractors, shm, set(), set(),
                                                        tag="tmpfs")
        finally:
            shutil.rmtree(shm, ignore_errors=True)
    for p in (trim_tar, nofsm_tar, dirs_tar, *half_tars):
        os.unlink(p)

    if walseg:
        say(f"{sz.name}: analysis — the same build with initdb --wal-segsize=1")
        cache = ctx.mkdir(os.path.join(sz.dir, "cache-walseg1"))
        d = sz.fresh("an-walseg1")
        l2 = sz.log("an-walseg1-build")
        r = sz.pgstash(d, cache, l2, extra_env={"POSTGRES_INITDB_ARGS": "--wal-segsize=1"})
        meta = read_meta(cache)
        wal = sorted(os.listdir(os.path.join(d, "pg_wal")))
        segs = [w for w in wal if re.fullmatch(r"[0-9A-F]{24}", w)]
        res = {"build_s": r["s"], "archive_bytes": int(meta["archive_bytes"]),
               "pgdata_bytes": int(meta["pgdata_bytes"]), "wal_segments": len(segs),
               "wal_bytes": sum(os.path.getsize(os.path.join(d, "pg_wal", w)) for w in segs),
               "prepare": [], "restore": [], "default_prepare": [], "default_restore": []}
        ctx.discard(d)
        for i in range(reps):
            for which in (("walseg1", "default") if i % 2 == 0 else ("default", "walseg1")):
                d = sz.fresh("an-walseg1")
                l3 = sz.log(f"an-walseg1-{which}-{i}")
                settle(ctx)
                if which == "walseg1":
                    r = sz.pgstash(d, cache, l3, extra_env={"POSTGRES_INITDB_ARGS": "--wal-segsize=1"})
                    res["prepare"].append(r["s"])
                    res["restore"].append(parse_pgstash_log(l3).get("restore_s"))
                else:
                    r = sz.pgstash(d, sz.cache, l3)
                    res["default_prepare"].append(r["s"])
                    res["default_restore"].append(parse_pgstash_log(l3).get("restore_s"))
                ctx.discard(d)
        for k in ("prepare", "restore", "default_prepare", "default_restore"):
            res[k] = stats(res[k])
        a["walseg1"] = res
        ctx.discard(cache)
    return a


# ---------------------------------------------------------------- report

def machine_info(ctx):
    def cmd(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            return None
    mem = None
    with open("/proc/meminfo") as f:
        m = re.search(r"MemTotal:\s+(\d+) kB", f.read())
        mem = int(m.group(1)) * 1024 if m else None
    cpu = None
    with open("/proc/cpuinfo") as f:
        m = re.search(r"model name\s*:\s*(.*)", f.read())
        cpu = m.group(1) if m else None
    fs = cmd(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "-T", "/tmp"])
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "ram_bytes": mem, "kernel": platform.release(),
        "tmp_fs": fs, "pg_version": cmd([ctx.bin("postgres"), "--version"]),
        "pgstash": cmd([ctx.pgstash, "--version"]),
        "django": cmd(["/usr/bin/python3", "-c", "import django; print(django.get_version())"]),
        "libarchive": cmd(["dpkg-query", "-W", "-f", "${Version}", "libarchive13"]),
        "zstd": cmd(["zstd", "--version"]), "tar": (cmd(["tar", "--version"]) or "").split("\n")[0],
        "python": platform.python_version(),
        "repo_head": cmd(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]),
        "src_changes_not_committed": cmd(["git", "-C", REPO, "status", "--short", "--", "src", "entrypoint"]),
        "pgstash_sha256": hashlib.sha256(open(ctx.pgstash, "rb").read()).hexdigest(),
    }


def results_table(data):
    sizes = list(data["sizes"])
    lines = ["| measurement | " + " | ".join(f"{s} median (min–max), s" for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]

    def row(label, getter):
        cells = []
        for s in sizes:
            summ = data["sizes"][s]["summary"]
            try:
                cells.append(fmt_stat(getter(summ)))
            except (KeyError, TypeError):
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("**1. full migrate** (ready)", lambda x: x["migrate"]["total"])
    for ph in ("initdb", "start", "createdb", "migrate"):
        row(f"  · {ph}", lambda x, ph=ph: x["migrate"][ph])
    row("  · clean stop (separate)", lambda x: x["migrate"]["stop"])
    row("  ready + stop", lambda x: x["migrate"]["total_with_stop"])
    row("**2. pg_restore recipe**", lambda x: x["pg_restore"]["total"])
    row("  · pg_restore -d", lambda x: x["pg_restore"]["pg_restore"])
    row("**3. structure load**", lambda x: x["structure"]["total"])
    row("  · psql -f", lambda x: x["structure"]["psql"])
    row("**4. pgstash hit** (password set)", lambda x: x["hit"]["total"])
    row("  · pgstash prepare", lambda x: x["hit"]["prepare"])
    row("  · of which restore (pgstash log)", lambda x: x["hit"]["pgstash_restore_s"])
    row("  · of which password, single-user", lambda x: x["hit"]["pgstash_password_s"])
    row("  · of which syncfs", lambda x: x["hit"]["pgstash_syncfs_s"])
    row("  · pg_ctl start -w", lambda x: x["hit"]["start"])
    row("4b. pgstash hit, trust (no password)", lambda x: x["hit_trust"]["total"])
    row("  · pgstash prepare", lambda x: x["hit_trust"]["prepare"])
    row("4c. pgstash hit, trusted_keys set", lambda x: x["hit_signed"]["total"])
    row("  · pgstash prepare", lambda x: x["hit_signed"]["prepare"])
    row("  · of which signature verify (pgstash log), ms", lambda x: x["hit_signed"]["pgstash_verify_ms"])
    row("**5. physical limit**", lambda x: x["limit"]["total"])
    row("  · tar -x", lambda x: x["limit"]["tar_x"])
    row("  · pg_ctl start -w", lambda x: x["limit"]["start"])
    row("**6. pgstash miss** (prepare)", lambda x: x["miss"]["total"])
    row("  · of which snapshot write", lambda x: x["miss"]["pgstash_snapshot_write_s"])
    row("**7. pgstash hit, run mode** (to the first accepted connection)", lambda x: x["hit_run"]["total"])
    row("  · of which restore (pgstash log)", lambda x: x["hit_run"]["pgstash_restore_s"])
    row("**8. physical limit, run mode** (tar -x + postgres, to the first connection)",
        lambda x: x["limit_run"]["total"])
    row("  · tar -x", lambda x: x["limit_run"]["tar_x"])
    row("  · postgres to the first connection", lambda x: x["limit_run"]["to_accept"])
    return "\n".join(lines)


def binding(sizes, size, target=None):
    """The targets are set on dj-800: only its verdicts count (PASS or FAIL).  Other sizes'
    values are for reference, also when dj-800 was not measured (--quick): no verdict then.
    A size-free target (the signature verify) is judged on every size."""
    return size == TARGET_SIZE or target in SIZE_FREE_TARGETS


def ratio_table(data):
    sizes = list(data["sizes"])
    lines = ["| target | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(sizes)]
    for k, (op, target, label) in TARGETS.items():
        if not any(data["sizes"][s]["verdicts"].get(k) for s in sizes):
            continue  # not measured (results of a run before it existed)
        cells = []
        for s in sizes:
            v = data["sizes"][s]["verdicts"].get(k)
            if not v:
                cells.append("-")
                continue
            val = f"{v['value'] * 100:+.1f} %" if k == "miss_overhead" else (
                f"{v['value']:.1f}" if k == "peak_rss_mb" else f"{v['value']:.3f}" if v["value"] < 1 else
                f"{v['value']:.2f}")
            if binding(sizes, s, k):
                cells.append(f"{val} {'PASS' if v['pass'] else '**FAIL**'}")
            else:
                cells.append(f"{val} ({'met' if v['pass'] else 'not met'}; reference)")
        lines.append(f"| {label} {op} {target:g} | " + " | ".join(cells) + " |")
    if TARGET_SIZE not in sizes:
        lines += ["", f"The targets are ratios on {TARGET_SIZE} (issue 6), which this run did not measure: "
                  "no verdict, every value is for reference, except the signature verify (issue 14), "
                  "which does not depend on the size."]
    elif any(not binding(sizes, s) for s in sizes):
        lines += ["", f"The targets are ratios on {TARGET_SIZE} (issue 6); the other sizes' are shown for reference "
                  "(the signature verify, issue 14, is judged on every size)."]
    return "\n".join(lines)


def other_table(data):
    sizes = list(data["sizes"])
    lines = ["| | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(sizes)]

    def row(label, f):
        cells = []
        for s in sizes:
            try:
                cells.append(f(data["sizes"][s]))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("migration files / relations in `public`",
        lambda d: f"{d['info']['migration_files']} / {d['info']['relations']}")
    row("snapshot (zstd) / PGDATA bytes",
        lambda d: f"{mib(int(d['info']['meta']['archive_bytes'])):.1f} MiB / "
                  f"{mib(int(d['info']['meta']['pgdata_bytes'])):.1f} MiB")
    row("pg_dump -Fc / pg_dump -s bytes",
        lambda d: f"{mib(d['info']['dump_bytes']):.2f} MiB / {mib(d['info']['schema_sql_bytes']):.2f} MiB")
    row("pgstash peak RSS, own (VmHWM): hit / miss",
        lambda d: f"{d['summary']['hit']['hwm_mb']['max']:.1f} / {d['summary']['miss']['hwm_mb']['max']:.1f} MB")
    row("peak RSS incl. reaped children (wait4, = /usr/bin/time): hit / miss",
        lambda d: f"{d['summary']['hit']['tree_maxrss_mb']['max']:.1f} / "
                  f"{d['summary']['miss']['tree_maxrss_mb']['max']:.1f} MB")
    row("hit with trusted_keys − plain hit (paired median)",
        lambda d: f"{d['ratios']['signed_hit_extra_s'] * 1000:+.1f} ms")
    fp = data.get("fingerprint")
    if fp:
        lines.append("")
        lines.append(f"Fingerprint of {fp['files']} files / {mib(fp['bytes']):.0f} MiB (page cache warm): "
                     f"`pgstash key` {fmt_stat(fp['pgstash_key'])} s (its own fingerprint timer "
                     f"{fmt_stat(fp['pgstash_fingerprint_internal'])} s), `sha256sum` over the same files "
                     f"{fmt_stat(fp['sha256sum'])} s: ratio {fp['key_vs_sha256sum']:.2f}.")
    return "\n".join(lines)


def analysis_text(data):
    out = []
    for s, d in data["sizes"].items():
        a = d.get("analysis")
        if not a:
            continue
        inv = a["inventory"]
        wal = inv["wal"]
        comp = a["components"]
        med = lambda st: fmt_s(st["median"]) if st else "-"
        out.append(f"#### {s}")
        out.append(f"- snapshot: {inv['entries']} entries ({inv['files']} files, {inv['dirs']} directories), "
                   f"{mib(inv['bytes']):.1f} MiB; {inv['empty_files']} empty files "
                   f"({inv['empty_fraction'] * 100:.0f} % of files); {inv['zero_page_fraction'] * 100:.0f} % of "
                   f"8 KiB pages all zero. A bare initdb cluster: {a['bare_cluster']['files']} files, "
                   f"{mib(a['bare_cluster']['bytes']):.1f} MiB.")
        out.append(f"- pg_wal: {len(wal)} segment(s) of {mib(inv['wal_segment_bytes']):.0f} MiB "
                   f"({sum(w['bytes'] for w in wal) / inv['bytes'] * 100:.0f} % of the bytes; "
                   f"{sum(w['zero_pages'] for w in wal) * 8192 / max(1, sum(w['bytes'] for w in wal)) * 100:.0f} % "
                   f"zero pages); REDO in {inv['redo_wal_file']}; segments other than the REDO one: "
                   f"{inv['wal_not_needed']['files']} ({mib(inv['wal_not_needed']['bytes']):.0f} MiB).")
        out.append(f"- not needed by a cleanly shut down cluster: relcache init files {inv['relcache_init']['files']} "
                   f"({inv['relcache_init']['bytes'] / 1024:.0f} KiB, deleted by the server at start); contents of "
                   f"the directories pg_basebackup skips: {inv['reset_dirs']['files']} files "
                   f"({inv['reset_dirs']['bytes'] / 1024:.0f} KiB). FSM forks {inv['fsm']['files']} "
                   f"({mib(inv['fsm']['bytes']):.1f} MiB), VM forks {inv['vm']['files']}.")
        out.append(f"- fixed costs (median of {comp['zstd_d']['n']}): zstd -d {med(comp['zstd_d'])} s, sha256sum of "
                   f"the archive {med(comp['sha256_archive'])} s, postgres --version {med(comp['postgres_version'])} "
                   f"s, pg_ctl start -w {med(comp['pg_ctl_start_w'])} s vs start until postmaster.pid says ready "
                   f"(polled every ms) {med(comp['precise_start'])} s.")
        if "syscalls_per_entry" in a:
            top = ", ".join(f"{r['syscall']} {r['calls']}" for r in a["strace_c_hit"][:9])
            out.append(f"- syscalls per archive entry: pgstash hit {a['syscalls_per_entry']['pgstash_hit']:.1f}, "
                       f"GNU tar -x {a['syscalls_per_entry']['tar_x']:.1f} (pgstash: {top}).")
        tl = a.get("strace_timeline_hit")
        if tl:
            kids = ", ".join(f"{k['exec']} {k['s'] * 1000:.0f} ms" for k in tl["children"])
            out.append(f"- strace -f -tt of a hit: {tl['wall_s']:.2f} s under strace, {tl['file_creates']} files "
                       f"created in {tl['create_window_s']:.2f} s; children: {kids}; syncfs "
                       + ", ".join(f"{x * 1000:.0f} ms" for x in tl["syncfs_s"]) + ".")
        for key, where in (("extraction", "on /tmp"), ("extraction_tmpfs", "on tmpfs")):
            x = a.get(key)
            if not x:
                continue
            cells = []
            for k, v in x.items():
                t = f"{k} {med(v.get('extract'))}"
                if v.get("restore_s"):
                    t += f" (restore {med(v['restore_s'])})"
                if v.get("syncfs"):
                    t += f" + syncfs {med(v['syncfs'])}"
                cells.append(t)
            out.append(f"- extraction {where}, interleaved, median s (pgstash_*: the whole prepare): "
                       + "; ".join(cells) + ".")
        if "walseg1" in a:
            w = a["walseg1"]
            out.append(f"- initdb --wal-segsize=1: {w['wal_segments']} WAL segment(s), {mib(w['wal_bytes']):.0f} MiB; "
                       f"snapshot {mib(w['archive_bytes']):.2f} MiB of {mib(w['pgdata_bytes']):.1f} MiB; prepare "
                       f"{med(w['prepare'])} s vs {med(w['default_prepare'])} s with 16 MiB segments (restore "
                       f"{med(w['restore'])} vs {med(w['default_restore'])} s).")
        out.append("")
    return "\n".join(out)


def noise_text(data):
    loads = [r["noise"]["load1"] for d in data["sizes"].values() for runs in d["runs"].values() for r in runs]
    io = [r["noise"].get("psi_io_some_avg10") for d in data["sizes"].values() for runs in d["runs"].values()
          for r in runs if r["noise"].get("psi_io_some_avg10") is not None]
    cr = [r["noise"].get("create_us") for d in data["sizes"].values() for runs in d["runs"].values()
          for r in runs if r["noise"].get("create_us") is not None]
    t = f"1-min load average before each measurement: median {statistics.median(loads):.2f}, max {max(loads):.2f}"
    if io:
        t += f"; I/O pressure (PSI some avg10): median {statistics.median(io):.1f} %, max {max(io):.1f} %"
    if cr:
        t += (f"; one file creation (a probe of 200 just before each measurement): median "
              f"{statistics.median(cr):.0f} µs, min {min(cr):.0f}, max {max(cr):.0f}")
    return t + f" ({data['machine']['nproc']} CPUs)."


def render(data):
    m = data["machine"]
    head = (f"Run {data['date']} ({data['mode']}, {data['config']['reps']} repetitions, sizes "
            f"{', '.join(data['sizes'])}; {data['elapsed_s'] / 60:.1f} min). Machine: {m['nproc']} CPUs "
            f"({m['cpu']}), {m['ram_bytes'] / (1 << 30):.1f} GiB RAM, kernel {m['kernel']}, /tmp on {m['tmp_fs']}, "
            f"{m['pg_version']}, {m['pgstash']}, libarchive {m['libarchive']}. {noise_text(data)}")
    parts = [head, "", results_table(data), "", ratio_table(data), "", other_table(data)]
    an = analysis_text(data)
    if an:
        parts += ["", "Where the hit spends its time (one run of each, see *Investigation*):", "", an]
    return "\n".join(parts)


def update_readme(text, section="results"):
    path = os.path.join(HERE, "README.md")
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    with open(path) as f:
        doc = f.read()
    if begin not in doc or end not in doc:
        say(f"{path} has no results markers: not updated")
        return
    pre, rest = doc.split(begin, 1)
    _, post = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(pre + begin + "\n" + text + "\n" + end + post)


# ---------------------------------------------------------------- issue 18: discovery, steps at once, prefix

INC_TARGETS = {
    "discover_over_glob_s": ("<=", 0.5, "`discover = django` key − glob key, s"),
    "parallel_vs_slower": ("<=", 1.15, "two-step miss (two databases) / slower step's miss alone"),
    "prefix_vs_budget": ("<=", 1.0, "prefix build / (hit + 1.3 × changed step's migrate)"),
}
STEP_INI = ("[step {name}]\nroot = {root}\nmigrations = */migrations/*.py\nexclude = */__pycache__/*\n"
            "run = python3 manage.py migrate --noinput\nenv = DJANGO_SETTINGS_MODULE=proj.settings\n"
            "database = {db}\n{more}")
NEW_MIGRATION = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [('{app}', '{prev}')]
    operations = [
        migrations.CreateModel(name='{model}', fields=[
            ('id', models.AutoField(primary_key=True, serialize=False)),
            ('title', models.CharField(max_length=200, db_index=True)),
        ]),
    ]
"""


class Incremental:
    """Issue 18's benchmarks (`--incremental`): the cost of `discover = django` over the glob key, a
    miss whose two steps migrate two databases at once against each step alone, and a prefix build
    where one of two steps gained a migration against a hit plus that step's own migrate."""

    def __init__(self, ctx, size):
        self.ctx, self.size = ctx, size
        self.apps, self.migs = SIZES[size]
        self.dir = ctx.mkdir(os.path.join(ctx.scratch, "incremental"))
        self.logs = ctx.mkdir(os.path.join(self.dir, "logs"))
        self.runs = ctx.mkdir(os.path.join(self.dir, "runs"))
        self.state = ctx.mkdir(os.path.join(self.dir, "state"))
        self.sock = ctx.mkdir(os.path.join(self.dir, "s"))
        self.initdb_d = ctx.mkdir(os.path.join(self.dir, "initdb.d"))
        self.n = 0
        self.out = {"size": size, "apps": self.apps, "migrations_per_app": self.migs}

    def log(self, label):
        return os.path.join(self.logs, f"{label}.log")

    def ini(self, name, steps, extra_dbs="app2"):
        path = os.path.join(self.dir, name + ".ini")
        with open(path, "w") as f:
            f.write("; written by bench/bench.py --incremental\n[pgstash]\ncompression = zstd\n\n[database]\n"
                    f"user = postgres\nname = app\n" + (f"extra = {extra_dbs}\n" if extra_dbs else "") + "\n"
                    + "\n".join(STEP_INI.format(**s) for s in steps))
        self.ctx.own(path)
        return path

    def gen(self, name, site=None):
        argv = ["/usr/bin/python3", self.ctx.args.generator, os.path.join(self.dir, name), str(self.apps),
                str(self.migs)] + (["--site", site] if site else [])
        self.ctx.run(argv, self.log("setup"))
        return os.path.join(self.dir, name)

    def add_migration(self, app_dir, model):
        mig = os.path.join(app_dir, "migrations")
        prev = sorted(f[:-3] for f in os.listdir(mig) if f[:4].isdigit() and f.endswith(".py"))[-1]
        path = os.path.join(mig, f"{int(prev[:4]) + 1:04d}_{model.lower()}.py")
        with open(path, "w") as f:
            f.write(NEW_MIGRATION.format(app=os.path.basename(app_dir), prev=prev, model=model))
        self.ctx.own(path)
        return path

    def fresh(self, label):
        self.n += 1
        return self.ctx.mkdir(os.path.join(self.runs, f"{label}-{self.n}"), 0o700)

    def env(self, pgdata, cache):
        return self.ctx.env(PGDATA=pgdata, PGSTASH_CACHE_DIR=cache, PGSTASH_PG_BINDIR=self.ctx.bindir,
                            PGSTASH_SOCKET_DIR=self.state, PGSTASH_INITDB_D=self.initdb_d,
                            POSTGRES_HOST_AUTH_METHOD="trust")

    def prepare(self, ini, label, cache=None, expect=None):
        """`pgstash -v prepare` into an empty PGDATA; returns seconds, its log's text and the PGDATA."""
        d = self.fresh(label)
        cache = cache or self.ctx.mkdir(self.fresh(label + "-cache"))
        lg = self.log(label)
        open(lg, "w").close()
        self.ctx.own(lg)
        noise = pressure()
        r = self.ctx.run([self.ctx.pgstash, "-v", f"--config={ini}", "prepare"], lg, env=self.env(d, cache),
                         cwd=self.dir)
        with open(lg, errors="replace") as f:
            text = f.read()
        for pat in expect or ():
            if not re.search(pat, text):
                raise BenchError(f"incremental {label}: no /{pat}/ in {lg}")
        steps = {m.group(1): float(m.group(2)) for m in re.finditer(r"info: step (\w+) finished in ([\d.]+) s", text)}
        return {"s": r["s"], "steps": steps, "noise": noise}, text, d, cache

    def key(self, ini, label):
        lg = self.log(label)
        noise = pressure()
        r = self.ctx.run([self.ctx.pgstash, "-v", f"--config={ini}", "key"], lg, env=self.env("/nonexistent", "/x"),
                         cwd=self.dir, stdout=lg + ".out")
        with open(lg + ".out") as f:
            return r["s"], f.read().strip(), noise

    # -- a. discover = django against the glob key
    def discover(self, reps):
        ctx = self.ctx
        say(f"incremental: a. discover = django on {self.size}, all apps but app00 in an installed package")
        site = ctx.mkdir(os.path.join(self.dir, "site"))
        root = self.gen("pkgproj", site=site)
        step = {"name": "django", "root": root, "db": "app", "more": ""}
        glob_ini = self.ini("glob", [step], extra_dbs=None)
        disc_ini = self.ini("discover", [dict(step, more="discover = django\n")], extra_dbs=None)
        n_local = sum(len([f for f in os.listdir(os.path.join(root, a, "migrations")) if f.endswith(".py")])
                      for a in os.listdir(root) if os.path.isdir(os.path.join(root, a, "migrations")))
        runs = {"glob": [], "discover": []}
        keys = {}
        for rep in range(reps):
            order = ["glob", "discover"] if rep % 2 == 0 else ["discover", "glob"]
            for m in order:
                settle(ctx)
                s, k, noise = self.key(glob_ini if m == "glob" else disc_ini, f"key-{m}-{rep}")
                runs[m].append({"s": s, "noise": noise})
                keys[m] = k
        diffs = [d["s"] - g["s"] for d, g in zip(runs["discover"], runs["glob"])]
        a = {"local_migration_files": n_local, "runs": runs,
             "glob": stats([r["s"] for r in runs["glob"]]), "discover": stats([r["s"] for r in runs["discover"]]),
             "paired_diff": stats(diffs)}
        # The upgrade: the cached entry, then a new migration in the installed package.
        say("incremental: a. an installed package gains a migration: a new key, a rebuild with its table")
        r1, _, _, cache = self.prepare(disc_ini, "discover-seed", expect=[r"cache miss \w+: building"])
        new = self.add_migration(os.path.join(site, "benchpkg", "app01"), "Upgrade")
        _, k_glob, _ = self.key(glob_ini, "key-glob-after")
        _, k_disc, _ = self.key(disc_ini, "key-discover-after")
        r2, _, d2, _ = self.prepare(disc_ini, "discover-upgrade", cache=cache, expect=[r"cache miss \w+: building"])
        ctx.start(d2, self.sock, self.log("discover-upgrade"))
        table = ctx.psql(self.sock, "app", "SELECT count(*) FROM pg_tables WHERE tablename = 'app01_upgrade'")
        ctx.stop(d2, self.log("discover-upgrade"))
        a["upgrade"] = {"changed_file": os.path.relpath(new, site), "glob_key_changed": k_glob != keys["glob"],
                        "discover_key_changed": k_disc != keys["discover"], "rebuilt": True,
                        "table_exists": table.strip() == "1", "seed_build_s": r1["s"], "rebuild_s": r2["s"]}
        if not (a["upgrade"]["discover_key_changed"] and a["upgrade"]["table_exists"]):
            raise BenchError(f"incremental: the upgrade was not rebuilt: {a['upgrade']}")
        self.out["discover"] = a

    # -- b. two steps on two databases at once
    def parallel(self, reps, proj_a, proj_b):
        say(f"incremental: b. a miss with two steps on two databases against each step alone ({self.size} each)")
        sa = {"name": "a", "root": proj_a, "db": "app", "more": ""}
        sb = {"name": "b", "root": proj_b, "db": "app2", "more": ""}
        inis = {"both": self.ini("both", [sa, sb]), "a_alone": self.ini("a", [sa]), "b_alone": self.ini("b", [sb])}
        runs = {k: [] for k in inis}
        for rep in range(reps):
            ks = list(inis)
            k0 = rep % len(ks)
            for m in ks[k0:] + ks[:k0]:
                settle(self.ctx)
                expect = [r"cache miss \w+: building"] + ([r"running steps a, b at once"] if m == "both" else [])
                r, _, d, cache = self.prepare(inis[m], f"miss-{m}-{rep}", expect=expect)
                self.ctx.discard(d)
                self.ctx.discard(cache)
                runs[m].append(r)
                say(f"incremental rep {rep + 1} miss {m:<8} {r['s']:8.3f} s  steps "
                    + " ".join(f"{k}={v:.1f}" for k, v in r["steps"].items()) + f"  load1={r['noise']['load1']}")
        summ = {k: stats([r["s"] for r in v]) for k, v in runs.items()}
        slower = max(summ["a_alone"]["median"], summ["b_alone"]["median"])
        self.out["parallel"] = {"runs": runs, "summary": summ, "slower_alone": slower,
                                "sum_alone": summ["a_alone"]["median"] + summ["b_alone"]["median"],
                                "ratio": summ["both"]["median"] / slower}

    # -- c. a prefix build where one of two steps changed
    def prefix(self, reps, proj_a, proj_b):
        ctx = self.ctx
        say("incremental: c. a prefix build where one of two steps gained a migration")
        sa = {"name": "a", "root": proj_a, "db": "app", "more": "incremental = yes\n"}
        sb = {"name": "b", "root": proj_b, "db": "app2", "more": "incremental = yes\n"}
        ini = self.ini("prefix", [sa, sb])
        _, _, _, base = self.prepare(ini, "prefix-seed", expect=[r"cache miss \w+: building"])
        meta = read_meta(base)
        base_tar = os.path.join(self.dir, "base.tar")
        ctx.run(["zstd", "-q", "-d", "-c", meta["archive_path"]], self.log("setup"), stdout=base_tar)
        self.add_migration(os.path.join(proj_b, "app00"), "Added")
        # The new key's entry for the hits (built on the prefix once, untimed).
        _, _, _, full = self.prepare(ini, "prefix-warm", cache=self.copy_cache(base),
                                     expect=[r"started from", r"step a: inputs unchanged"])
        runs = {"prefix": [], "hit": [], "step_alone": []}
        for rep in range(reps):
            ks = list(runs)
            k0 = rep % len(ks)
            for m in ks[k0:] + ks[:k0]:
                if m == "prefix":
                    cache = self.copy_cache(base)
                    settle(ctx)
                    r, _, d, _ = self.prepare(ini, f"prefix-{rep}", cache=cache,
                                              expect=[rf"cache miss \w+: started from {meta['key'][:12]}",
                                                      r"step a: inputs unchanged"])
                    ctx.discard(cache)
                elif m == "hit":
                    settle(ctx)
                    r, _, d, _ = self.prepare(ini, f"prefix-hit-{rep}", cache=full, expect=[r"cache hit"])
                else:
                    # `manage.py migrate` of the changed project on the base entry's cluster (tar -x, untimed).
                    d = self.fresh("step-alone")
                    lg = self.log(f"step-alone-{rep}")
                    ctx.run(["tar", "-xf", base_tar, "-C", d], lg)
                    ctx.start(d, self.sock, lg, fast=True)
                    env = ctx.env(PGHOST=self.sock, PGPORT=5432, PGUSER="postgres", PGDATABASE="app2",
                                  DJANGO_SETTINGS_MODULE="proj.settings")
                    settle(ctx)
                    noise = pressure()
                    r = {"s": ctx.run(["python3", "manage.py", "migrate", "--noinput"], lg, env=env, cwd=proj_b)["s"],
                         "noise": noise}
                    n = ctx.psql(self.sock, "app2", "SELECT count(*) FROM pg_tables WHERE tablename = 'app00_added'")
                    ctx.stop(d, lg)
                    if n.strip() != "1":
                        raise BenchError(f"incremental: the added migration did not run; see {lg}")
                ctx.discard(d)
                runs[m].append(r)
                say(f"incremental rep {rep + 1} {m:<10} {r['s']:8.3f} s" + (
                    "  steps " + " ".join(f"{k}={v:.1f}" for k, v in r["steps"].items()) if r.get("steps") else "")
                    + f"  load1={r['noise']['load1']}")
        summ = {k: stats([r["s"] for r in v]) for k, v in runs.items()}
        summ["step_b_in_prefix_log"] = stats([r["steps"].get("b") for r in runs["prefix"]])
        budget = summ["hit"]["median"] + 1.3 * summ["step_alone"]["median"]
        self.out["prefix"] = {"runs": runs, "summary": summ, "budget_s": budget,
                              "ratio": summ["prefix"]["median"] / budget}

    def copy_cache(self, src):
        dst = os.path.join(self.runs, f"cache-{self.n}")
        self.n += 1
        shutil.copytree(src, dst, symlinks=True)
        if self.ctx.as_root:
            for r, ds, fs in os.walk(dst):
                for x in [r] + [os.path.join(r, y) for y in ds + fs]:
                    os.lchown(x, self.ctx.uid, self.ctx.gid)
        return dst

    def run(self, reps):
        self.discover(max(reps, 5))
        proj_a, proj_b = self.gen("projA"), self.gen("projB")
        self.parallel(reps, proj_a, proj_b)
        self.prefix(reps, proj_a, proj_b)
        o = self.out
        o["ratios"] = {"discover_over_glob_s": o["discover"]["discover"]["median"] - o["discover"]["glob"]["median"],
                       "parallel_vs_slower": o["parallel"]["ratio"], "prefix_vs_budget": o["prefix"]["ratio"]}
        o["verdicts"] = inc_verdicts(o["ratios"])
        return o


def inc_verdicts(ratios):
    out = {}
    for k, (op, target, _) in INC_TARGETS.items():
        v = ratios.get(k)
        if v is not None:
            out[k] = {"value": v, "target": f"{op} {target}", "pass": v <= target if op == "<=" else v >= target}
    return out


def incremental_text(data):
    o = data["incremental"]
    m = data["machine"]
    loads = [r["noise"]["load1"] for part in ("discover", "parallel", "prefix") for runs in o[part]["runs"].values()
             for r in runs]
    lines = [f"Run {data['date']} (`--incremental`, {data['config']['reps']} repetitions, {o['size']} "
             f"projects: {o['apps']} apps × {o['migrations_per_app']} migrations; {data['elapsed_s'] / 60:.1f} min). "
             f"Machine: {m['nproc']} CPUs, {m['pg_version']}, {m['pgstash']}, Django {m['django']}. "
             f"1-min load average before each measurement: median {statistics.median(loads):.2f}, "
             f"max {max(loads):.2f}.", ""]
    d, p, x = o["discover"], o["parallel"], o["prefix"]
    lines += ["| measurement | median (min–max), s |", "|---|---|",
              f"| a. `pgstash key`, globs only ({d['local_migration_files']} local files) | {fmt_stat(d['glob'])} |",
              f"| a. `pgstash key`, `discover = django` (the installed package too) | {fmt_stat(d['discover'])} |",
              f"| · discover − glob, paired | {fmt_stat(d['paired_diff'])} |",
              f"| b. miss, steps a and b on two databases (at once) | {fmt_stat(p['summary']['both'])} |",
              f"| · miss, step a alone | {fmt_stat(p['summary']['a_alone'])} |",
              f"| · miss, step b alone | {fmt_stat(p['summary']['b_alone'])} |",
              f"| c. prefix build, step b gained a migration (a skipped) | {fmt_stat(x['summary']['prefix'])} |",
              f"| · of which step b (pgstash log) | {fmt_stat(x['summary']['step_b_in_prefix_log'])} |",
              f"| · hit on the new key | {fmt_stat(x['summary']['hit'])} |",
              f"| · step b's `manage.py migrate` alone on the base cluster | {fmt_stat(x['summary']['step_alone'])} |",
              ""]
    u = d["upgrade"]
    lines += ["| target (issue 18) | value | verdict |", "|---|---|---|"]
    for k, (op, target, label) in INC_TARGETS.items():
        v = o["verdicts"].get(k)
        if v:
            val = f"{v['value']:+.3f} s" if k == "discover_over_glob_s" else f"{v['value']:.2f}"
            lines.append(f"| {label} {op} {target:g} | {val} | {'PASS' if v['pass'] else '**FAIL**'} |")
    lines.append(f"| a change to an installed-package migration changes the key and rebuilds | "
                 f"`{u['changed_file']}` added: discover key {'changed' if u['discover_key_changed'] else 'SAME'}, "
                 f"glob key {'changed' if u['glob_key_changed'] else 'unchanged'}; rebuilt, table "
                 f"{'present' if u['table_exists'] else 'MISSING'} | "
                 f"{'PASS' if u['discover_key_changed'] and u['table_exists'] else '**FAIL**'} |")
    lines += ["", f"b: the sum of the steps alone would be {fmt_s(p['sum_alone'])} s, the slower one "
              f"{fmt_s(p['slower_alone'])} s. c: the budget is hit + 1.3 × step alone = {fmt_s(x['budget_s'])} s."]
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="dj-200 only, 2 repetitions (CI)")
    ap.add_argument("--sizes", help=f"comma-separated, of {', '.join(SIZES)} (default {','.join(DEFAULT_SIZES)})")
    ap.add_argument("--reps", type=int, help=f"repetitions (default {DEFAULT_REPS}, --quick 2)")
    ap.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--pgstash", default=os.path.join(REPO, "pgstash"))
    ap.add_argument("--pg-bindir", default=os.environ.get("PGSTASH_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
    ap.add_argument("--generator", default=os.path.join(HERE, "gen_django.py"))
    ap.add_argument("--user", default="postgres", help="who runs servers and pgstash when started as root")
    ap.add_argument("--settle", type=float, default=0.3, help="pause after sync before each measurement, s")
    ap.add_argument("--rss-interval", type=float, default=0.002, help="VmHWM sampling period, s")
    ap.add_argument("--no-analysis", action="store_true", help="skip the investigation of the hit path")
    ap.add_argument("--analysis-reps", type=int, default=3, help="repetitions of each investigation measurement")
    ap.add_argument("--no-fingerprint", action="store_true")
    ap.add_argument("--walseg", choices=["auto", "yes", "no"], default="auto",
                    help="rebuild with initdb --wal-segsize=1 for comparison (auto: not with --quick)")
    ap.add_argument("--trash-gb", type=float, default=20,
                    help="finished measurements are deleted in bulk past this many GiB (at most half the free "
                         "space); 0 deletes each at once")
    ap.add_argument("--purge-pause", type=float, default=360, help="pause after a bulk delete, s")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--publish", choices=["auto", "yes", "no"], default="auto",
                    help="refresh bench/last-results.json and bench/README.md (auto: full runs only)")
    ap.add_argument("--incremental", action="store_true",
                    help="issue 18's benchmarks instead of the table: discover = django vs the glob key, two "
                         "steps on two databases at once vs each alone, a prefix build vs hit + the changed step "
                         "(one size, default dj-200; --reps default 3, --quick 2)")
    ap.add_argument("--render", metavar="RESULTS.json",
                    help="measure nothing: print the tables of a results file (with --publish yes: into "
                         "bench/README.md)")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            data = json.load(f)
        if "incremental" in data:
            data["incremental"]["verdicts"] = inc_verdicts(data["incremental"]["ratios"])
            text = incremental_text(data)
            print(text)
            if args.publish == "yes":
                update_readme(text, "incremental")
                say("updated bench/README.md")
            return 0
        for d in data["sizes"].values():
            d["verdicts"] = verdicts(d.get("ratios", {})) if "ratios" in d else d.get("verdicts", {})
        text = render(data)
        print(text)
        if args.publish == "yes":
            update_readme(text)
            say("updated bench/README.md")
        return 0

    sizes = args.sizes.split(",") if args.sizes else (["dj-200"] if args.quick or args.incremental else DEFAULT_SIZES)
    for s in sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}")
    if args.incremental and len(sizes) != 1:
        ap.error("--incremental takes one size")
    reps = args.reps or (2 if args.quick else 3 if args.incremental else DEFAULT_REPS)
    methods = args.methods.split(",") if args.methods else METHODS
    full = not args.quick and sizes == DEFAULT_SIZES and reps >= DEFAULT_REPS and methods == METHODS
    mode = "quick" if args.quick else "full" if full else "custom"
    if args.incremental:
        mode, full = "incremental" + (" quick" if args.quick else ""), False
    publish = args.publish == "yes" or (args.publish == "auto" and full)
    walseg = args.walseg == "yes" or (args.walseg == "auto" and not args.quick)

    ctx = Ctx(args)
    for tool in (args.pgstash, ctx.bin("postgres"), ctx.bin("pg_ctl"), ctx.bin("pg_dump"), args.generator):
        if not os.path.exists(tool):
            sys.exit(f"bench: {tool} not found")
    t_start = time.perf_counter()
    date = datetime.datetime.now()
    ctx.scratch = tempfile.mkdtemp(prefix="pgstash-bench.", dir="/tmp")
    os.chmod(ctx.scratch, 0o755)
    ctx.own(ctx.scratch)
    ctx.trash = os.path.join(ctx.scratch, "trash")
    st = os.statvfs(ctx.scratch)
    ctx.trash_budget = min(args.trash_gb * (1 << 30), st.f_bavail * st.f_frsize // 2)
    ctx.pgstash = os.path.join(ctx.scratch, "pgstash")
    shutil.copy2(args.pgstash, ctx.pgstash)  # the binary measured stays the same while others rebuild
    gen = os.path.join(ctx.scratch, "gen_django.py")
    shutil.copy2(args.generator, gen)
    args.generator = gen
    say(f"scratch {ctx.scratch}; sizes {','.join(sizes)}; {reps} repetitions; running as {ctx.user}")

    data = {"schema": 1, "date": date.strftime("%Y-%m-%d %H:%M:%S"), "mode": mode,
            "machine": machine_info(ctx),
            "config": {"reps": reps, "sizes": sizes, "methods": methods, "settle_s": args.settle,
                       "trash_gb": args.trash_gb, "purge_pause_s": args.purge_pause,
                       "rss_interval_s": args.rss_interval, "server_opts_baselines": FAST_OPTS,
                       "password": "POSTGRES_PASSWORD set for hit and miss; hit_trust uses trust"},
            "sizes": {}}
    rc = 0
    if args.incremental:
        return incremental_main(ctx, args, data, sizes[0], reps, date, t_start, publish)
    try:
        szs = [Size(ctx, s) for s in sizes]
        for sz in szs:
            sz.setup()
        for rep in range(reps):
            for sz in szs:
                k = rep % len(methods)
                for m in methods[k:] + methods[:k]:
                    sz.measure(m, rep)
        for sz in szs:
            summ = sz.summary()
            ratios = sz.ratios(summ)
            data["sizes"][sz.name] = {"info": sz.info, "summary": summ, "ratios": ratios,
                                      "verdicts": verdicts(ratios), "runs": sz.results}
        if not args.no_fingerprint:
            data["fingerprint"] = fingerprint_bench(ctx, max(reps, 3))
        if not args.no_analysis:
            for sz in szs:
                try:
                    data["sizes"][sz.name]["analysis"] = (analyse(ctx, sz, 1, False, light=True) if args.quick
                                                          else analyse(ctx, sz, args.analysis_reps, walseg))
                except (BenchError, subprocess.CalledProcessError, OSError) as e:
                    # The timed results stand without it.
                    say(f"{sz.name}: analysis failed: {e}")
                    data["sizes"][sz.name]["analysis_error"] = str(e)
                    ctx.stop_all()
                    args.keep = True
    except (BenchError, subprocess.CalledProcessError) as e:
        say(f"FAILED: {e}")
        rc = 1
        args.keep = True
    except KeyboardInterrupt:
        say("interrupted")
        rc = 130
    finally:
        ctx.stop_all()
    data["elapsed_s"] = time.perf_counter() - t_start
    data["bulk_deletes_during_run"] = ctx.purges
    if rc == 0:
        text = render(data)
        print(text)
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        out = os.path.join(HERE, "results", date.strftime("%Y-%m-%d-%H%M%S") + ("-quick" if args.quick else "")
                           + ".json")
        with open(out, "w") as f:
            json.dump(data, f, indent=1)
        say(f"results: {out}")
        if publish:
            shutil.copy(out, os.path.join(HERE, "last-results.json"))
            update_readme(text)
            say("updated bench/last-results.json and bench/README.md")
        fails = [f"{s}:{k}" for s, d in data["sizes"].items() for k, v in d["verdicts"].items()
                 if not v["pass"] and binding(list(data["sizes"]), s, k)]
        if TARGET_SIZE not in data["sizes"]:
            say(f"targets: no verdict (they apply to {TARGET_SIZE}, not measured here); the values are for reference"
                + ("; size-free: " + ("met" if not fails else "missed " + ", ".join(fails))
                   if any(k in SIZE_FREE_TARGETS for d in data["sizes"].values() for k in d["verdicts"]) else ""))
        else:
            say("targets: " + ("all met" if not fails else "missed " + ", ".join(fails)))
    if args.keep:
        say(f"kept {ctx.scratch}")
    else:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    return rc


def incremental_main(ctx, args, data, size, reps, date, t_start, publish):
    rc = 0
    try:
        data["incremental"] = Incremental(ctx, size).run(reps)
    except (BenchError, subprocess.CalledProcessError) as e:
        say(f"FAILED: {e}")
        rc = 1
        args.keep = True
    except KeyboardInterrupt:
        say("interrupted")
        rc = 130
    finally:
        ctx.stop_all()
    data["elapsed_s"] = time.perf_counter() - t_start
    if rc == 0:
        text = incremental_text(data)
        print(text)
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        out = os.path.join(HERE, "results", date.strftime("%Y-%m-%d-%H%M%S") + "-incremental"
                           + ("-quick" if args.quick else "") + ".json")
        with open(out, "w") as f:
            json.dump(data, f, indent=1)
        say(f"results: {out}")
        if args.publish == "yes":
            shutil.copy(out, os.path.join(HERE, "last-incremental.json"))
            update_readme(text, "incremental")
            say("updated bench/last-incremental.json and bench/README.md")
        fails = [k for k, v in data["incremental"]["verdicts"].items() if not v["pass"]]
        say("issue 18 targets: " + ("all met" if not fails else "missed " + ", ".join(fails)))
    if args.keep:
        say(f"kept {ctx.scratch}")
    else:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
