#!/usr/bin/python3
"""pgstash size curve: how a hit, the physical limit, a pg_restore -j2 recipe and a miss grow with PGDATA.

bench/run.sh --curve [options]   (bench/curve.py --help lists them)

Schema-heavy projects (bench/gen_django.py: dj-200, dj-800, optional dj-3200) and data-heavy ones
(a step running `pgbench -i -s N`: pgb-100m, pgb-1g, optional pgb-4g; a Django step running migrate and
loaddata of a generated fixture, bench/gen_fixture.py: djfix-100m), side by side in one run, on a
fresh journaled ext4 loop file system by default (root only: this machine's root file system has
no journal, a CI runner's disk has one).  The methods and their timing are bench.py's (Size.m_*),
except that the pg_restore recipe runs with -j2.  Results: bench/results/curve-*.json, the table
and the plot (bench/curve.png) in bench/README.md between the curve markers.
"""
import argparse
import datetime
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402

# name -> pgbench scale (one scale unit is about 15 MiB of PGDATA)
PGB = {"pgb-100m": 6, "pgb-1g": 64, "pgb-4g": 256}
# name -> orders in gen_fixture.py's fixture (45,000 orders + 5,625 customers: about 105 MiB of PGDATA;
# loaddata saves about 1,500 rows/s here, so a djfix-1g would take 6-10 min per build: none)
DJFIX = {"djfix-100m": 45000}
DJ = {"dj-3200": (40, 80)}
DEFAULT = ["dj-200", "dj-800", "djfix-100m", "pgb-100m", "pgb-1g"]
BIG = ["dj-3200", "pgb-4g"]
METHODS = ["migrate", "pg_restore", "hit", "limit", "miss", "hit_run", "limit_run", "ztar"]
# What a big size spends minutes on per repetition: --heavy-reps runs these in the first N repetitions only.
HEAVY = ["migrate", "pg_restore", "miss"]
B.SIZES.update(DJ)
B.SIZES.update({k: (0, 0) for k in list(PGB) + list(DJFIX)})


class CurveSize(B.Size):
    """A bench.py size whose pg_restore recipe runs with -j2 (a custom-format dump allows it)."""

    def m_recipe(self, label, kind):
        ctx, d, lg = self.ctx, self.fresh(label), self.log(label)
        ph = {"initdb": ctx.run(self.initdb_argv(d), lg)["s"]}
        ph["start"] = ctx.start(d, self.sock, lg, fast=True)["s"]
        ph["createdb"] = ctx.run([ctx.bin("createdb"), "-h", self.sock, "-U", "postgres", "app"], lg)["s"]
        ph["pg_restore"] = ctx.run([ctx.bin("pg_restore"), "-j", "2", "-h", self.sock, "-U", "postgres", "-d",
                                    "app", self.dump], lg)["s"]
        total = sum(ph.values())
        self.verify(label)  # a custom-format dump holds the rows too
        ph["stop"] = ctx.stop(d, lg)["s"]
        return {"phases": ph, "total": total}

    kind = "django"

    def wait_syncer(self, pgdata):
        """Waits (untimed) for PGDATA's background syncer to let go of its lock: with a data-heavy PGDATA it
        writes back after prepare has returned (after the start, on a hit), and the next measurement must
        not pay for it, nor the final umount find the file system busy (the last miss's syncer did)."""
        t0 = time.perf_counter()
        fd = os.open(pgdata, os.O_RDONLY | os.O_DIRECTORY)
        try:
            while time.perf_counter() - t0 < 600:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.05)
        finally:
            os.close(fd)
        return time.perf_counter() - t0

    def setup(self):
        super().setup()
        self.wait_syncer(self.seed)

    def m_ztar(self, label):
        """What the restore is measured against (issue 19): `zstd -dc SNAPSHOT | tar -x` of the same cache entry into
        an empty directory of the same file system: decompression and writes in two processes, no digest."""
        d, lg = self.fresh(label), self.log(label)
        sh = 'set -o pipefail; zstd -dc -- "$1" | tar -x -C "$2"'
        ph = {"ztar": self.ctx.run(["bash", "-c", sh, "ztar", self.meta["archive_path"], d], lg)["s"]}
        return {"phases": ph, "total": ph["ztar"]}

    def m_hit(self, label, trust=False):
        r = super().m_hit(label, trust)
        r["syncer_wait_s"] = self.wait_syncer(os.path.join(self.runs, label))
        return r

    def m_hit_run(self, label):
        r = super().m_hit_run(label)
        r["syncer_wait_s"] = self.wait_syncer(os.path.join(self.runs, label))
        return r

    def m_miss(self, label):
        r = super().m_miss(label)
        r["syncer_wait_s"] = self.wait_syncer(os.path.join(self.runs, label))
        return r


class DataSize(CurveSize):
    """Data-heavy: a project of one step whose PGDATA is mostly rows, the cache filled by a miss as bench.py's
    setup does.  The subclass writes the project (write_project) and its step (step_ini), runs that step
    for m_migrate (run_step) and says which tables hold how many rows (expected_rows)."""

    def verify(self, label, migrations=True):
        n = self.relcount()
        if n != self.info["relations"]:
            raise B.BenchError(f"{self.name} {label}: {n} relations in public, expected {self.info['relations']}")
        if migrations:
            for table, want in self.expected_rows().items():
                rows = int(self.ctx.psql(self.sock, "app", f"SELECT count(*) FROM {table}"))
                if rows != want:
                    raise B.BenchError(f"{self.name} {label}: {rows} {table} rows, expected {want}")

    def setup(self):
        ctx = self.ctx
        self.write_project()
        for root, ds, fs in os.walk(self.proj):
            for n in ds + fs:
                ctx.own(os.path.join(root, n))
        ctx.own(self.proj)
        with open(self.ini, "w") as f:
            f.write("; written by bench/curve.py\n[pgstash]\ncompression = zstd\n\n[database]\nuser = postgres\n"
                    "name = app\n\n" + self.step_ini())
        ctx.own(self.ini)
        B.say(f"{self.name}: filling the cache (pgstash prepare, a miss: {self.what})")
        ctx.mkdir(self.seed, 0o700)
        r = self.pgstash(self.seed, self.cache, self.log("seed"))
        self.info["seed_build"] = {"s": r["s"], **B.parse_pgstash_log(self.log("seed"))}
        meta = B.read_meta(self.cache)
        self.meta = meta
        self.info["meta"] = {k: meta[k] for k in ("key", "compression", "pg_version", "archive_bytes",
                                                  "pgdata_bytes", "build_seconds")}
        self.info["seed_pgdata"] = B.tree_stats(self.seed)
        ctx.start(self.seed, self.sock, self.log("seed"))
        self.info["relations"] = self.relcount()
        self.seeded()
        self.verify("seed")
        ctx.run([ctx.bin("pg_dump"), "-h", self.sock, "-U", "postgres", "-Fc", "-f", self.dump, "app"],
                self.log("seed"))
        ctx.stop(self.seed, self.log("seed"))
        self.wait_syncer(self.seed)
        self.info["dump_bytes"] = os.path.getsize(self.dump)
        ctx.run(["zstd", "-q", "-d", "-c", meta["archive_path"]], self.log("setup"), stdout=self.snap_tar)
        self.info["snap_tar_bytes"] = os.path.getsize(self.snap_tar)
        for p in (self.snap_tar, meta["archive_path"], self.dump):
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass
        B.say(f"{self.name}: snapshot {B.mib(int(meta['archive_bytes'])):.1f} MiB of "
              f"{B.mib(int(meta['pgdata_bytes'])):.1f} MiB PGDATA, dump {B.mib(self.info['dump_bytes']):.1f} MiB")

    def seeded(self):
        """What the seed's server tells about the project, before the seed is verified."""

    def m_migrate(self, label):
        ctx, d, lg = self.ctx, self.fresh(label), self.log(label)
        ph = {"initdb": ctx.run(self.initdb_argv(d), lg)["s"]}
        ph["start"] = ctx.start(d, self.sock, lg, fast=True)["s"]
        ph["createdb"] = ctx.run([ctx.bin("createdb"), "-h", self.sock, "-U", "postgres", "app"], lg)["s"]
        ph.update(self.run_step(lg))
        total = sum(ph.values())
        self.verify(label)
        ph["stop"] = ctx.stop(d, lg)["s"]
        return {"phases": ph, "total": total, "total_with_stop": total + ph["stop"]}


class PgbSize(DataSize):
    """Data-heavy, repetitive rows: one step, `pgbench -i -q -s SCALE app`."""

    kind = "pgbench"

    def __init__(self, ctx, name):
        super().__init__(ctx, name)
        self.scale = PGB[name]
        self.what = f"pgbench -i -s {self.scale}"

    def expected_rows(self):
        return {"pgbench_branches": self.scale}

    def write_project(self):
        os.makedirs(os.path.join(self.proj, "mig"), exist_ok=True)
        with open(os.path.join(self.proj, "mig", "001.sql"), "w") as f:
            f.write(f"-- pgbench -i -s {self.scale}\n")
        self.info["migration_files"] = 1

    def step_ini(self):
        return (f"[step pgbench]\nroot = proj\nmigrations = mig/*.sql\n"
                f"run = {self.ctx.bin('pgbench')} -i -q -s {self.scale} app\n")

    def run_step(self, lg):
        env = self.ctx.env(PGHOST=self.sock, PGPORT=5432, PGUSER="postgres")
        return {"migrate": self.ctx.run([self.ctx.bin("pgbench"), "-i", "-q", "-s", str(self.scale), "app"], lg,
                                        env=env)["s"]}


class DjfixSize(DataSize):
    """Data-heavy, varied rows: a Django project (bench/gen_fixture.py) whose one step runs
    `manage.py migrate` and `manage.py loaddata` of a generated fixture of ORDERS orders."""

    kind = "fixture"
    FIXTURE = "fixtures/shop.jsonl.gz"

    def __init__(self, ctx, name):
        super().__init__(ctx, name)
        self.orders = DJFIX[name]
        self.what = f"migrate + loaddata of {self.orders:,} orders"

    def expected_rows(self):
        return {"shop_customer": self.info["customers"], "shop_order": self.orders,
                "django_migrations": self.info["django_migrations"]}

    def write_project(self):
        B.say(f"{self.name}: generating the project and its fixture ({self.orders:,} orders)")
        gen = os.path.join(os.path.dirname(self.ctx.args.generator), "gen_fixture.py")
        self.ctx.run(["/usr/bin/python3", gen, self.proj, str(self.orders)], self.log("setup"))
        self.info["customers"] = max(self.orders // 8, 1)
        self.info["fixture_bytes"] = os.path.getsize(os.path.join(self.proj, self.FIXTURE))
        self.info["migration_files"] = 2

    def seeded(self):
        self.info["django_migrations"] = int(self.ctx.psql(self.sock, "app", "SELECT count(*) FROM django_migrations"))

    def step_ini(self):
        # The fixture is keyed with the migrations, as a project keeps its fixtures under version control.
        return ("[step django]\nroot = proj\nmigrations = */migrations/*.py fixtures/*.jsonl.gz\n"
                "exclude = */__pycache__/*\n"
                "run = /bin/sh -c 'python3 manage.py migrate --noinput && "
                f"python3 manage.py loaddata {self.FIXTURE}'\n"
                "env = DJANGO_SETTINGS_MODULE=proj.settings\n")

    def run_step(self, lg):
        env = self.ctx.env(PGHOST=self.sock, PGPORT=5432, PGUSER="postgres", PGDATABASE="app",
                           DJANGO_SETTINGS_MODULE="proj.settings")
        ph = {}
        for phase, argv in (("migrate", ["python3", "manage.py", "migrate", "--noinput"]),
                            ("loaddata", ["python3", "manage.py", "loaddata", self.FIXTURE])):
            ph[phase] = self.ctx.run(argv, lg, env=env, cwd=self.proj)["s"]
        return ph


# ---------------------------------------------------------------- the file system

def loop_fs(gb):
    """A fresh journaled ext4 on a sparse loop image; returns (mountpoint, image)."""
    img = tempfile.mktemp(prefix="pgstash-curve.", suffix=".img", dir="/var/tmp")
    mnt = tempfile.mkdtemp(prefix="pgstash-curve.", dir="/mnt" if os.path.isdir("/mnt") else "/tmp")
    subprocess.run(["truncate", "-s", f"{gb}G", img], check=True)
    subprocess.run(["/usr/sbin/mkfs.ext4" if os.path.exists("/usr/sbin/mkfs.ext4") else "/sbin/mkfs.ext4", "-q", "-F", img],
                   check=True)
    subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
    os.chmod(mnt, 0o755)
    return mnt, img


def loop_cleanup(mnt, img, timeout=120):
    """Unmounts and removes the loop file system; retries a busy umount for up to TIMEOUT seconds (a process
    of the run that still holds a file there, such as a background syncer), then leaves it mounted."""
    t0 = time.monotonic()
    while True:
        p = subprocess.run(["umount", mnt], stderr=subprocess.PIPE, text=True)
        if p.returncode == 0:
            os.rmdir(mnt)
            os.unlink(img)
            return True
        if time.monotonic() - t0 >= timeout:
            B.say(f"umount {mnt} failed for {timeout} s ({p.stderr.strip()}): left mounted; "
                  f"later: umount {mnt} && rmdir {mnt} && rm {img}")
            return False
        time.sleep(1)


# ---------------------------------------------------------------- the summary

def summarise(sz):
    summ = sz.summary()
    ratios = sz.ratios(summ)
    ztar, own = summ.get("ztar", {}).get("total"), summ.get("hit", {}).get("pgstash_restore_s")
    if ztar and own and own["median"]:
        # >= 1: pgstash's own restore (its log's "restored ... in N s") is as fast as zstd -dc | tar -x
        ratios["restore_throughput"] = ztar["median"] / own["median"]
        # Paired: each repetition's ztar against the same repetition's restore (the disk's writeback varies).
        pairs = [z["total"] / h["pgstash"]["restore_s"] for z, h in zip(sz.results["ztar"], sz.results["hit"])
                 if h["pgstash"].get("restore_s")]
        ratios["restore_throughput_paired_median"] = statistics.median(pairs) if pairs else None
    med = lambda m, k="total": summ[m][k]["median"] if m in summ and summ[m].get(k) else None
    return {"kind": sz.kind, "files": sz.info["seed_pgdata"]["files"], "pgdata_bytes": int(sz.meta["pgdata_bytes"]),
            "archive_bytes": int(sz.meta["archive_bytes"]), "summary": summ, "ratios": ratios,
            "hit_s": med("hit"), "limit_s": med("limit"), "pg_restore_s": med("pg_restore"), "info": sz.info,
            "runs": sz.results}


def growth(rows, kind, xkey, per):
    """Seconds per `per` units of xkey between the smallest and the largest size of one kind."""
    rs = sorted((r for r in rows.values() if r["kind"] == kind), key=lambda r: r[xkey])
    if len(rs) < 2:
        return {}
    a, b = rs[0], rs[-1]
    dx = (b[xkey] - a[xkey]) / per
    out = {}
    for m in ("hit_s", "limit_s", "pg_restore_s"):
        if a.get(m) is not None and b.get(m) is not None and dx > 0:
            out[m] = (b[m] - a[m]) / dx
    return out


def fmt_ratio(v, pct=False):
    if v is None:
        return "-"
    return f"{v * 100:+.1f} %" if pct else f"{v:.2f}"


def table(data):
    rows = data["sizes"]
    out = ["| size | files | PGDATA | hit | limit | hit / limit | pg_restore -j2 / hit | miss overhead | "
           "snapshot ratio | zstd -dc \\| tar -x / restore | own peak RSS |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        s, q = r["summary"], r["ratios"]
        out.append(f"| {name} | {r['files']:,} | {B.mib(r['pgdata_bytes']):,.0f} MiB | {B.fmt_stat(s.get('hit', {}).get('total'))} | "
                   f"{B.fmt_stat(s.get('limit', {}).get('total'))} | {fmt_ratio(q.get('hit_vs_limit'))} | "
                   f"{fmt_ratio(q.get('restore_vs_hit'))} | {fmt_ratio(q.get('miss_overhead'), True)} | "
                   f"{fmt_ratio(q.get('snapshot_ratio'))} | {fmt_ratio(q.get('restore_throughput'))} | "
                   + (f"{q['peak_rss_mb']:.1f} MB" if q.get("peak_rss_mb") else "-") + " |")
    if any("hit_run" in r["summary"] for r in rows.values()):
        out += ["", "Run mode (`pgstash run`, which execs postgres; the limit: `tar -x` and postgres itself), "
                "to the first accepted connection, polled every millisecond:", "",
                "| size | hit, run mode | of which pgstash (its log: bootstrap done) | of which restore | "
                "limit, run mode | of which tar -x | hit / limit |",
                "|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            s, q = r["summary"], r["ratios"]
            if "hit_run" not in s:
                continue
            out.append(f"| {name} | {B.fmt_stat(s['hit_run'].get('total'))} | "
                       f"{B.fmt_stat(s['hit_run'].get('pgstash_bootstrap_s'))} | "
                       f"{B.fmt_stat(s['hit_run'].get('pgstash_restore_s'))} | "
                       f"{B.fmt_stat(s.get('limit_run', {}).get('total'))} | "
                       f"{B.fmt_stat(s.get('limit_run', {}).get('tar_x'))} | {fmt_ratio(q.get('run_hit_vs_limit'))} |")
    g = data["growth"]
    out += ["", "| growth | hit | limit | pg_restore -j2 |", "|---|---|---|---|"]
    for label, key in (("per 1,000 files (schema-heavy)", "per_1000_files"), ("per GiB (data-heavy: pgbench)", "per_gib")):
        v = g.get(key, {})
        out.append(f"| {label} | " + " | ".join(f"{v[m]:.3f} s" if m in v else "-"
                                               for m in ("hit_s", "limit_s", "pg_restore_s")) + " |")
    return "\n".join(out)


def plot_kinds(ax, data, kinds, xkey, scale):
    """One series per method and kind on ax; False when no size is of these kinds."""
    any_size = False
    for (kind, suffix), marker in zip(kinds, ("o", "s")):
        rs = sorted((r for r in data["sizes"].values() if r["kind"] == kind), key=lambda r: r[xkey])
        any_size = any_size or bool(rs)
        xs = [r[xkey] / scale for r in rs]
        for (m, label), color in zip((("hit", "pgstash hit"), ("limit", "limit (tar -x + start)"),
                                      ("pg_restore", "pg_restore -j2 recipe")), ("C0", "C1", "C2")):
            st = [r["summary"].get(m, {}).get("total") for r in rs]
            if not rs or not all(st):
                continue
            med = [s["median"] for s in st]
            err = [[s["median"] - s["min"] for s in st], [s["max"] - s["median"] for s in st]]
            ax.errorbar(xs, med, yerr=err, marker=marker, color=color, capsize=3, label=label + suffix)
    return any_size


def plot(data, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        B.say("no matplotlib (apt-get install python3-matplotlib): no plot")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    # the Django fixture sizes share the data-heavy axis with pgbench's, as their own series (squares)
    for ax, kinds, xkey, scale, xlabel in ((axes[0], (("django", ""),), "files", 1, "files in PGDATA (schema-heavy)"),
                                           (axes[1], (("pgbench", ""), ("fixture", ", Django fixture")), "pgdata_bytes",
                                            1 << 30, "PGDATA, GiB (data-heavy)")):
        if not plot_kinds(ax, data, kinds, xkey, scale):
            ax.set_visible(False)
            continue
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds to first connection")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"pgstash size curve, {data['date']} ({data['mode']}; {data['fs']}); medians, min-max bars",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def update_readme(text):
    path = os.path.join(HERE, "README.md")
    begin, end = "<!-- curve:begin -->", "<!-- curve:end -->"
    with open(path) as f:
        doc = f.read()
    if begin not in doc or end not in doc:
        B.say(f"{path} has no curve markers: not updated")
        return
    pre, rest = doc.split(begin, 1)
    _, post = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(pre + begin + "\n" + text + "\n" + end + post)


def publish(data, readme):
    m = data["machine"]
    heavy = data.get("heavy_reps")
    heavy = (f", of which {heavy} with {', '.join(HEAVY)}" if heavy and heavy < data["reps"] else "")
    text = (f"Size curve of {data['date']} ({data['mode']}: {data['reps']} repetitions{heavy}; "
            f"{data['elapsed_s'] / 60:.0f} min) on a {data['fs']}; {m['nproc']} CPUs, {m['pg_version']}, "
            f"{m['pgstash']}. {B.noise_text(data)}\n\n" + table(data))
    print(text)
    if readme:
        if plot(data, os.path.join(HERE, "curve.png")):
            text += "\n\n![size curve](curve.png)"
        update_readme(text)
        B.say("updated bench/README.md")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 repetitions, no bulk-delete pause")
    ap.add_argument("--big", action="store_true", help="also dj-3200 and pgb-4g (about 10 GiB of disk more)")
    ap.add_argument("--sizes", help=f"comma-separated, of {', '.join(B.SIZES)}")
    ap.add_argument("--reps", type=int, help="repetitions (default 5, --quick 2)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--heavy-reps", type=int, metavar="N",
                    help=f"run {', '.join(HEAVY)} in the first N repetitions only (default: every one)")
    ap.add_argument("--fs", choices=["loop", "tmp"], default="loop",
                    help="loop: a fresh journaled ext4 loop image (root only; the default); tmp: /tmp as it is")
    ap.add_argument("--image-gb", type=int, default=40, help="size of the sparse loop image")
    ap.add_argument("--pgstash", default=os.path.join(B.REPO, "pgstash"))
    ap.add_argument("--pg-bindir", default=os.environ.get("PGSTASH_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
    ap.add_argument("--generator", default=os.path.join(HERE, "gen_django.py"))
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--settle", type=float, default=0.3)
    ap.add_argument("--rss-interval", type=float, default=0.002)
    ap.add_argument("--publish", choices=["yes", "no"], default="yes",
                    help="write the table and the plot into bench/README.md")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--render", metavar="CURVE.json", help="measure nothing: the table (and plot) of a results file")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            publish(json.load(f), args.publish == "yes")
        return 0
    sizes = args.sizes.split(",") if args.sizes else DEFAULT + (BIG if args.big else [])
    for s in sizes:
        if s not in B.SIZES:
            ap.error(f"unknown size {s!r}")
    reps = args.reps or (2 if args.quick else 5)
    methods = args.methods.split(",")
    args.trash_gb, args.purge_pause = 0, 0  # journaled ext4: deletes do not slow the next creations down

    ctx = B.Ctx(args)
    mnt = img = None
    if args.fs == "loop":
        if os.geteuid() != 0:
            sys.exit("bench: --fs loop needs root (mount); use --fs tmp, and know that /tmp may have no journal")
        mnt, img = loop_fs(args.image_gb)
        base, fs = mnt, "fresh journaled ext4 on a loop image"
    else:
        base, fs = "/tmp", "/tmp as it is"
    t0 = time.perf_counter()
    date = datetime.datetime.now()
    ctx.scratch = tempfile.mkdtemp(prefix="pgstash-curve.", dir=base)
    os.chmod(ctx.scratch, 0o755)
    ctx.own(ctx.scratch)
    ctx.trash = os.path.join(ctx.scratch, "trash")
    ctx.pgstash = os.path.join(ctx.scratch, "pgstash")
    shutil.copy2(args.pgstash, ctx.pgstash)
    gen = os.path.join(ctx.scratch, "gen_django.py")
    shutil.copy2(args.generator, gen)
    args.generator = gen
    shutil.copy2(os.path.join(HERE, "gen_fixture.py"), os.path.join(ctx.scratch, "gen_fixture.py"))  # imports gen_django
    B.say(f"scratch {ctx.scratch} ({fs}); sizes {','.join(sizes)}; {reps} repetitions")
    heavy_reps = min(args.heavy_reps, reps) if args.heavy_reps else reps
    data = {"schema": 1, "date": date.strftime("%Y-%m-%d %H:%M:%S"), "mode": "quick" if args.quick else "full",
            "fs": fs, "reps": reps, "heavy_reps": heavy_reps, "methods": methods, "machine": B.machine_info(ctx),
            "sizes": {}}
    rc = 0
    try:
        szs = [(PgbSize if s in PGB else DjfixSize if s in DJFIX else CurveSize)(ctx, s) for s in sizes]
        for sz in szs:
            sz.results.update({m: [] for m in methods})
            sz.setup()
        for rep in range(reps):
            for sz in szs:
                k = rep % len(methods)
                for m in methods[k:] + methods[:k]:
                    if rep < heavy_reps or m not in HEAVY:
                        sz.measure(m, rep)
            # every size's PGDATAs of this repetition are gone: disk stays flat
        for sz in szs:
            data["sizes"][sz.name] = summarise(sz)
        data["growth"] = {"per_1000_files": growth(data["sizes"], "django", "files", 1000),
                          "per_gib": growth(data["sizes"], "pgbench", "pgdata_bytes", 1 << 30)}
    except (B.BenchError, subprocess.CalledProcessError) as e:
        B.say(f"FAILED: {e}")
        rc = 1
        args.keep = True
    except KeyboardInterrupt:
        rc = 130
    finally:
        ctx.stop_all()
    data["elapsed_s"] = time.perf_counter() - t0
    if rc == 0:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        out = os.path.join(HERE, "results", "curve-" + date.strftime("%Y-%m-%d-%H%M%S") + ".json")
        with open(out, "w") as f:
            json.dump(data, f, indent=1)
        B.say(f"results: {out}")
        publish(data, args.publish == "yes")
    if args.keep:
        B.say(f"kept {ctx.scratch}")
    else:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
        if mnt:
            loop_cleanup(mnt, img)
    return rc


if __name__ == "__main__":
    sys.exit(main())
