"""The bootstrap pipeline end to end (issue 4, "Must hold"): the real binary,
a real PostgreSQL, the real Django and Flask-Migrate (Alembic) examples.

  - a miss builds and caches, a hit into an empty PGDATA restores without
    running a single migration, and both schemas are at head afterwards;
  - SIGTERM during a step leaves nothing behind (no server, no step, no
    temp file, no entry, an empty PGDATA) and exits 143;
  - a failing step, a missing interpreter and a bad initdb.d script fail
    clearly and cache nothing;
  - a restart on the same PGDATA reuses it; another key's PGDATA (made by
    pgstash) is replaced; a user's own cluster is never touched;
  - PGDATA is synced in the background: the marker says "unsynced KEY
    BOOT_ID" until it becomes KEY, a moment after prepare has returned; one
    never confirmed before a reboot (another boot id) is rebuilt, one of the
    running kernel is reused;
  - started as root, pgstash hands PGDATA to postgres and runs steps as it;
  - an unusable cache costs only the caching.

`prepare` runs in the foreground through the harness; the signal test starts
pgstash with Popen so it can signal it mid-step.
"""
import glob
import json
import os
import re
import signal
import subprocess
import time

import pytest

from helpers import (IS_ROOT, PG_BINDIR, USER_IDS, need, Background, background_syncers, final_marker,
                     pgdata_unlocked)

pytestmark = pytest.mark.slow

DJANGO_RUN = "python3 manage.py migrate --noinput"
FLASK_RUN = "python3 -m flask db upgrade"


# ---- helpers -------------------------------------------------------------------------------

def mkdir_user(work, rel, mode=0o755):
    """Creates work/rel (a directory owned by the run user); returns its path."""
    p = os.path.join(work.path, rel)
    os.makedirs(p, exist_ok=True)
    os.chmod(p, mode)
    work.chown_up(p)
    return p


def base_env(work, **extra):
    """The environment every pgstash call of this file gets on top of work.env():
    a socket dir (the healthcheck's state file) and an initdb.d of its own."""
    e = {
        "PGSTASH_SOCKET_DIR": os.path.join(work.path, "ps"),
        "PGSTASH_INITDB_D": os.path.join(work.path, "initdb.d"),
    }
    if not os.path.isdir(e["PGSTASH_SOCKET_DIR"]):
        mkdir_user(work, "ps")
    e.update(extra)
    return e


def edit(path, old, new):
    with open(path) as f:
        text = f.read()
    assert text.count(old) == 1, f"{old!r} appears {text.count(old)} times in {path}"
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def counted_examples(work, examples):
    """The examples' config with each step's command wrapped so that every run
    appends a line to count-<step>; returns (config, {step: count file})."""
    counts = {s: os.path.join(work.path, f"count-{s}") for s in ("django", "flask")}
    edit(examples, f"run        = {DJANGO_RUN}",
         f"run        = /bin/sh -c 'echo x >> {counts['django']}; exec {DJANGO_RUN}'")
    edit(examples, f"run        = {FLASK_RUN}",
         f"run        = /bin/sh -c 'echo x >> {counts['flask']}; exec {FLASK_RUN}'")
    return examples, counts


def runs(count_file):
    """How many times a counted step ran."""
    if not os.path.exists(count_file):
        return 0
    with open(count_file) as f:
        return len(f.read().splitlines())


def small_config(work, steps, database="app", extra="", name="small.ini"):
    """A config with command steps [(name, run)], each with a one-file repo
    work/repo-NAME, which is the step's working directory (so ../x is work/x)."""
    text = f"[pgstash]\n{extra}\n[database]\nname = {database}\n"
    for step, run in steps:
        work.file(f"repo-{step}/migrations/0001_init.sql", f"-- {step}\n")
        text += f"\n[step {step}]\nroot = repo-{step}\nmigrations = migrations/*.sql\nrun = {run}\n"
    return work.file(name, text)


def cache_v1(work, cache=None):
    return os.path.join(cache or work.cache, "pgstash-v1")


def entries(work, cache=None):
    """Published entries: the keys that have an archive or a meta file."""
    d = cache_v1(work, cache)
    if not os.path.isdir(d):
        return []
    return sorted({n.split(".", 1)[0] for n in os.listdir(d) if not n.startswith(".")})


def tmp_leftovers(work, cache=None):
    d = os.path.join(cache_v1(work, cache), ".tmp")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def marker(pgdata):
    """The marker once its background sync has made it final (KEY, not
    "unsynced KEY BOOT_ID"), or None."""
    return final_marker(pgdata)


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def tree(path):
    """Every entry under path with what a write would change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid)
    return out


def _zombie_or_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def processes_under(path):
    """Live processes (not zombies, not us) whose working directory or argv is in `path`."""
    real = os.path.realpath(path)
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{d}/cwd")
        except OSError:
            cwd = ""
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        inside = cwd == real or cwd.startswith(real + "/") or any(real in a for a in argv)
        if inside and not _zombie_or_gone(d):
            found.append((int(d), cwd, argv))
    return found


def wait_for(what, predicate, timeout=60.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def migration_files(root, app):
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(root, app, "migrations", "0*.py")))


def alembic_head(versions_dir):
    """The revision no other revision names as down_revision."""
    revs, downs = set(), set()
    for p in glob.glob(os.path.join(versions_dir, "*.py")):
        with open(p) as f:
            text = f.read()
        revs.add(re.search(r"^revision = '([^']+)'", text, re.M).group(1))
        m = re.search(r"^down_revision = '([^']+)'", text, re.M)
        if m:
            downs.add(m.group(1))
    heads = revs - downs
    assert len(heads) == 1, heads
    return heads.pop()


def schema_state(sql):
    """What the two example schemas look like: Django's applied migrations,
    the seeded categories, Alembic's version, the Flask tables."""
    return {
        "django": sql("SELECT app || '.' || name FROM django_migrations ORDER BY 1", db="app").splitlines(),
        "categories": sql("SELECT count(*) FROM shop_category", db="app"),
        "alembic": sql("SELECT version_num FROM alembic_version", db="flask_app"),
        "flask_tables": sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                            "ORDER BY 1", db="flask_app").splitlines(),
    }


@pytest.fixture()
def bg(work):
    b = Background(work)
    yield b
    b.cleanup()


# ---- 1. miss, then hit ---------------------------------------------------------------------

def test_miss_then_hit_on_django_and_alembic(work, examples):
    cfg, counts = counted_examples(work, examples)
    env = base_env(work)
    key = work.key(config=cfg, env=env)
    root = os.path.dirname(cfg)

    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0, r
    assert "cache miss" in r.stderr, r
    assert "cache hit" not in r.stderr, r
    assert re.search(r"^\[step django\] .*Applying shop\.0004_product_category_price_index", r.stderr, re.M), r
    assert re.search(r"^\[step flask\] .*Running upgrade 0002 -> 0003", r.stderr, re.M), r
    assert runs(counts["django"]) == 1 and runs(counts["flask"]) == 1
    applied = re.findall(r"^\[step django\]\s+Applying (\S+)\.\.\. OK$", r.stderr, re.M)
    assert marker(work.pgdata) == key

    # one entry, in both listings
    assert entries(work) == [key]
    assert tmp_leftovers(work) == []
    ls = work.run("ls", config=cfg, env=env)
    assert ls.rc == 0, ls
    rows = [line for line in ls.stdout.splitlines() if key in line]
    assert len(rows) == 1 and re.search(r"\bschema\b", rows[0]), ls
    lj = work.run("ls", "--json", config=cfg, env=env)
    assert lj.rc == 0, lj
    listed = json.loads(lj.stdout)
    assert [e["key"] for e in listed] == [key], lj
    assert listed[0]["layer"] == "schema", lj
    assert listed[0]["archive_bytes"] == os.path.getsize(listed[0]["archive"]) > 0, lj

    with work.server() as sql:
        built = schema_state(sql)
    # every migration Django applied (its own contrib apps included) is recorded
    assert len(built["django"]) == len(applied) > 0, (built, applied)
    assert set(built["django"]) == set(applied)
    for app in ("accounts", "shop"):
        mine = [n.split(".", 1)[1] for n in built["django"] if n.startswith(app + ".")]
        assert sorted(mine) == migration_files(os.path.join(root, "django-app"), app)
    assert any(n.startswith("auth.") for n in built["django"]) and any(n.startswith("contenttypes.") for n in built["django"])
    head = alembic_head(os.path.join(root, "flask-app", "migrations", "versions"))
    assert built["alembic"] == head
    assert {"author", "post", "tag", "post_tag", "alembic_version"} <= set(built["flask_tables"])
    assert int(built["categories"]) > 0

    # a fresh, empty PGDATA: restored from the cache, no migration runs
    fresh = mkdir_user(work, "pgdata2", 0o700)
    env2 = dict(env, PGDATA=fresh)
    r2 = work.run("prepare", config=cfg, env=env2)
    assert r2.rc == 0, r2
    assert "cache hit" in r2.stderr, r2
    assert "cache miss" not in r2.stderr, r2
    assert "[step" not in r2.stderr, r2
    assert runs(counts["django"]) == 1 and runs(counts["flask"]) == 1
    assert marker(fresh) == key
    assert entries(work) == [key]
    assert not os.path.exists(os.path.join(fresh, "postmaster.pid"))

    with work.server(pgdata=fresh) as sql:
        restored = schema_state(sql)
    assert restored == built


# ---- 3. SIGTERM during a step --------------------------------------------------------------

SLOW_STEPS = {
    "sh-sleep": "/bin/sh -c 'echo $$ > ../step.pid; exec sleep 60'",
    "python-sleep": "python3 -c 'import os, time; open(\"../step.pid\", \"w\").write(str(os.getpid())); time.sleep(60)'",
    "with-a-child": "/bin/sh -c 'sleep 61 & echo $! > ../child.pid; echo $$ > ../step.pid; wait'",
    # deaf to SIGTERM: pgstash must SIGKILL it after its grace period
    "ignores-term": "/bin/sh -c 'trap \"\" TERM; echo $$ > ../step.pid; while :; do sleep 1; done'",
}


@pytest.mark.parametrize("kind", list(SLOW_STEPS))
def test_sigterm_during_a_step_leaves_nothing(work, bg, kind):
    pidfile = os.path.join(work.path, "step.pid")
    childfile = os.path.join(work.path, "child.pid")
    cfg = small_config(work, [
        ("first", "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE before_the_slow_one (id int)'"),
        ("slow", SLOW_STEPS[kind]),
    ])
    env = base_env(work)
    p = bg.start("prepare", config=cfg, env=env)

    def read_pid(path):
        if p.poll() is not None:
            raise AssertionError(f"pgstash exited early ({p.returncode}):\n{bg.output(p)}")
        try:
            with open(path) as f:
                return int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0
    spid = wait_for("the slow step to start", lambda: read_pid(pidfile))
    cpid = wait_for("the step's child", lambda: read_pid(childfile)) if kind == "with-a-child" else None
    assert not _zombie_or_gone(spid)
    assert os.listdir(work.pgdata), "PGDATA should hold the cluster under construction"

    os.kill(p.pid, signal.SIGTERM)
    try:
        rc = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pgstash did not exit within 60 s of SIGTERM:\n{bg.output(p)}")
    out = bg.output(p)
    assert rc == 143, out

    wait_for("the step to be gone", lambda: _zombie_or_gone(spid), timeout=10)
    if cpid:
        wait_for("the step's child to be gone", lambda: _zombie_or_gone(cpid), timeout=10)
    left = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = processes_under(work.path)
        if not left:
            break
        time.sleep(0.1)
    assert left == [], f"still running: {left}\n{out}"
    assert os.listdir(work.pgdata) == [], out
    assert entries(work) == [], out
    assert tmp_leftovers(work) == [], out
    hc = work.run("healthcheck", env=env)
    assert hc.rc != 0, hc


# ---- 4. failures ---------------------------------------------------------------------------

def assert_nothing_built(work, r):
    assert entries(work) == [], r
    assert tmp_leftovers(work) == [], r
    assert os.listdir(work.pgdata) == [], r
    assert processes_under(work.pgdata) == []


def test_failing_step_exits_3_and_caches_nothing(work):
    after = os.path.join(work.path, "after-ran")
    cfg = small_config(work, [
        ("ok", "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (id int)'"),
        ("broken", "/bin/sh -c 'echo about to fail; exit 7'"),
        ("after", f"/bin/sh -c 'touch {after}'"),
    ])
    r = work.run("prepare", config=cfg, env=base_env(work))
    assert r.rc == 3, r
    assert "[step broken] about to fail" in r.stderr, r
    assert re.search(r"broken.*exit status 7|exit status 7.*broken", r.stderr), r
    assert not os.path.exists(after), "a step after the failed one ran"
    assert_nothing_built(work, r)


def test_failing_django_migration_exits_3(work, examples):
    work.file("examples/django-app/shop/migrations/0005_broken.py",
              "from django.db import migrations\n\n\n"
              "class Migration(migrations.Migration):\n"
              "    dependencies = [('shop', '0004_product_category_price_index')]\n"
              "    operations = [migrations.RunSQL('SELECT * FROM no_such_table')]\n")
    r = work.run("prepare", config=examples, env=base_env(work))
    assert r.rc == 3, r
    assert re.search(r"^\[step django\] .*no_such_table", r.stderr, re.M), r
    assert re.search(r"step django.*(exit status|failed)", r.stderr), r
    # The two steps migrate different databases, so they run at once (issue 18): django's failure stops
    # flask unless flask was done first; either way nothing is cached.
    assert "running steps django, flask at once" in r.stderr, r
    assert "step flask finished" in r.stderr or "stopping step flask: step django failed" in r.stderr, r
    assert_nothing_built(work, r)


def test_missing_interpreter_exits_3(work, examples):
    edit(examples, f"run        = {DJANGO_RUN}", "run        = no-such-python manage.py migrate")
    r = work.run("prepare", config=examples, env=base_env(work))
    assert r.rc == 3, r
    assert "No such file or directory" in r.stderr, r
    assert "no-such-python" in r.stderr, r
    assert "django" in r.stderr, r
    assert_nothing_built(work, r)


def test_bad_initdb_d_script_names_the_file(work):
    count = os.path.join(work.path, "count-step")
    cfg = small_config(work, [("only", f"/bin/sh -c 'echo x >> {count}'")])
    work.file("initdb.d/10-good.sql", "CREATE TABLE from_initdb_d (id int);\n")
    work.file("initdb.d/20-broken.sql", "CREATE TABLE broken (;\n")
    work.file("initdb.d/30-never.sql", "CREATE TABLE never (id int);\n")
    r = work.run("prepare", config=cfg, env=base_env(work))
    assert r.rc not in (0, None), r
    assert "20-broken.sql" in r.stderr, r
    assert "syntax error" in r.stderr, r
    assert runs(count) == 0, "the steps ran after a failed initdb.d script"
    assert_nothing_built(work, r)


def test_initdb_d_scripts_run_before_the_steps(work):
    seen = os.path.join(work.path, "seen")
    cfg = small_config(work, [("only", "/bin/sh -c 'psql -At -c \"SELECT count(*) FROM from_initdb_d\" > "
                                       + seen + "'")])
    work.file("initdb.d/10-table.sql", "CREATE TABLE from_initdb_d (id int);\n")
    work.file("initdb.d/20-rows.sh", "#!/bin/sh\nset -e\npsql -v ON_ERROR_STOP=1 -c 'INSERT INTO from_initdb_d VALUES (1), (2)'\n",
              mode=0o755)
    r = work.run("prepare", config=cfg, env=base_env(work))
    assert r.rc == 0, r
    with open(seen) as f:
        assert f.read().strip() == "2"


# ---- 5. restarts ---------------------------------------------------------------------------

def test_restart_with_the_same_key_reuses_pgdata(work, examples):
    cfg, counts = counted_examples(work, examples)
    env = base_env(work)
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0 and "cache miss" in r.stderr, r
    before = tree(work.pgdata)

    r2 = work.run("prepare", config=cfg, env=env)
    assert r2.rc == 0, r2
    assert "already holds" in r2.stderr, r2
    assert "cache hit" not in r2.stderr and "cache miss" not in r2.stderr, r2
    assert "[step" not in r2.stderr, r2
    assert runs(counts["django"]) == 1 and runs(counts["flask"]) == 1
    after = tree(work.pgdata)
    # no restore: the cluster's files are the very same files (a restore makes new inodes)
    data = [k for k in before if k.startswith("base/")]
    assert len(data) > 100
    assert [k for k in data if after.get(k, (None,))[0] != before[k][0]] == []
    assert before["PG_VERSION"] == after["PG_VERSION"]


def test_changed_migration_rebuilds_and_replaces_pgdata(work, examples):
    cfg, counts = counted_examples(work, examples)
    env = base_env(work)
    old_key = work.key(config=cfg, env=env)
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0 and "cache miss" in r.stderr, r

    mig = os.path.join(os.path.dirname(cfg), "flask-app", "migrations", "versions", "0003_post_published_at.py")
    edit(mig, "        batch_op.create_index(",
         "        batch_op.add_column(sa.Column('subtitle', sa.String(200), nullable=True))\n"
         "        batch_op.create_index(")
    new_key = work.key(config=cfg, env=env)
    assert new_key != old_key

    r2 = work.run("prepare", config=cfg, env=env)
    assert r2.rc == 0, r2
    assert "cache miss" in r2.stderr, r2
    assert old_key[:12] in r2.stderr, r2  # says which cluster it replaces
    assert runs(counts["django"]) == 2 and runs(counts["flask"]) == 2
    assert marker(work.pgdata) == new_key
    assert entries(work) == sorted([old_key, new_key])
    cols = work.sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'post' ORDER BY 1",
                    db="flask_app").splitlines()
    assert "subtitle" in cols and "published_at" in cols

    # back to the old files: the old key's entry replaces this PGDATA, by a hit
    edit(mig, "        batch_op.add_column(sa.Column('subtitle', sa.String(200), nullable=True))\n", "")
    assert work.key(config=cfg, env=env) == old_key
    r3 = work.run("prepare", config=cfg, env=env)
    assert r3.rc == 0, r3
    assert "cache hit" in r3.stderr, r3
    assert "[step" not in r3.stderr, r3
    assert runs(counts["flask"]) == 2
    assert marker(work.pgdata) == old_key
    cols = work.sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'post' ORDER BY 1",
                    db="flask_app").splitlines()
    assert "subtitle" not in cols and "published_at" in cols


def test_unfinished_bootstrap_is_started_over(work):
    count = os.path.join(work.path, "count-step")
    cfg = small_config(work, [("only", f"/bin/sh -c 'echo x >> {count}'")])
    env = base_env(work)
    # what a killed pgstash leaves: its marker of a build in progress, a partial tree
    work.file("pgdata/pgstash.key", "building " + "0" * 64 + "\n")
    work.file("pgdata/PG_VERSION", "15\n")
    work.file("pgdata/base/1/junk", "x")
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0, r
    assert runs(count) == 1
    assert not os.path.exists(os.path.join(work.pgdata, "base", "1", "junk"))
    assert marker(work.pgdata) == work.key(config=cfg, env=env)


def test_prepare_syncs_in_the_background(work):
    cfg = small_config(work, [("only", "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE made_by_step (id int)'")])
    env = base_env(work)
    key = work.key(config=cfg, env=env)
    for what, pgdata in (("miss", work.pgdata), ("hit", mkdir_user(work, "pgdata2", 0o700))):
        r = work.run("-v", "prepare", config=cfg, env=dict(env, PGDATA=pgdata))
        assert r.rc == 0 and f"cache {what}" in r.stderr, r
        assert "flushed to disk in the background" in r.stderr, r
        # stderr is a pipe here: the syncer does not hold it (run() returned), and logs nothing into it
        assert "background sync" not in r.stderr, r
        with open(os.path.join(pgdata, "pgstash.key")) as f:
            first = f.read()
        # right after prepare: the unsynced form, or already the final one
        assert first in (f"unsynced {key} {boot_id()}\n", f"{key}\n"), first
        deadline = time.monotonic() + 10
        while True:
            with open(os.path.join(pgdata, "pgstash.key")) as f:
                now = f.read()
            if now == key + "\n" or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert now == key + "\n", now
        # the syncer is gone once the marker is final, and nothing else of pgstash is left
        assert pgdata_unlocked(pgdata, timeout=5)
        wait_for("no pgstash process left", lambda: not background_syncers(pgdata), timeout=5)
        # the marker, and the manifest a start with a changed key compares with (on_change)
        assert sorted(n for n in os.listdir(pgdata) if n.startswith("pgstash")) == ["pgstash.key", "pgstash.manifest"]
    assert work.sql("SELECT count(*) FROM made_by_step", db="app", pgdata=pgdata) == "0"


def test_prepare_with_stderr_in_a_file_shows_the_sync(work):
    """A file (or a terminal) has no reader waiting for its end: the syncer logs there."""
    cfg = small_config(work, [("only", "/bin/true")])
    log = work.file("prepare.log", "")
    argv = [work.binary, f"--config={cfg}", "-v", "prepare"]
    kw = dict(user=USER_IDS[0], group=USER_IDS[1], extra_groups=[]) if IS_ROOT and USER_IDS else {}
    with open(log, "w") as out:
        rc = subprocess.run(argv, env=work.env(base_env(work)), cwd=work.path, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=out, timeout=120, **kw).returncode
    assert rc == 0
    assert marker(work.pgdata) == work.key(config=cfg, env=base_env(work))
    assert pgdata_unlocked(work.pgdata, timeout=5)
    with open(log) as f:
        text = f.read()
    assert re.search(r"debug: background sync \(pid \d+\) of PGDATA done in \d+ ms: its marker is final", text), text
    assert [line for line in text.splitlines() if "warning" in line and "trust" not in line] == [], text


@pytest.mark.parametrize("case", ["other-boot", "this-boot", "other-key"])
def test_unsynced_marker(work, case):
    count = os.path.join(work.path, "count-step")
    cfg = small_config(work, [("only", f"/bin/sh -c 'echo x >> {count}'")])
    env = base_env(work)
    key = work.key(config=cfg, env=env)
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0 and "cache miss" in r.stderr, r
    assert marker(work.pgdata) == key
    assert pgdata_unlocked(work.pgdata)
    # what a start leaves when its syncer never finished (killed with the container, the host crashed)
    other = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    line = {"other-boot": f"unsynced {key} {other}", "this-boot": f"unsynced {key} {boot_id()}",
            "other-key": f"unsynced {'e' * 64} {boot_id()}"}[case]
    work.file("pgdata/pgstash.key", line + "\n", mode=0o600)
    sentinel = work.file("pgdata/sentinel", "still here\n")

    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0, r
    assert runs(count) == 1, r  # never built again: the cache has the entry
    if case == "this-boot":
        assert "not confirmed on disk yet, but the host has not restarted" in r.stderr, r
        assert "already holds" in r.stderr, r
        assert "cache hit" not in r.stderr, r
        assert os.path.exists(sentinel), r
    else:
        if case == "other-boot":
            assert re.search(r"never confirmed on disk and the host has restarted since \(boot id 00000000, now "
                             + boot_id()[:8] + r"\): it may be incomplete, starting it over", r.stderr), r
        else:
            assert (f"warning: PGDATA holds the cluster of key {'e' * 12}, which has run as a database; this start's "
                    f"key is {key[:12]}") in r.stderr, r
            assert "replacing it, its data is lost (on_change = replace" in r.stderr, r
        assert "cache hit" in r.stderr, r
        assert not os.path.exists(sentinel), r
    assert marker(work.pgdata) == key
    assert work.sql("SELECT 1", db="app") == "1"


@pytest.mark.parametrize("what", ["cluster", "files"])
def test_pgdata_pgstash_did_not_create_is_untouched(work, what):
    count = os.path.join(work.path, "count-step")
    cfg = small_config(work, [("only", f"/bin/sh -c 'echo x >> {count}'")])
    if what == "cluster":
        work._as_user([os.path.join(PG_BINDIR, "initdb"), "-D", work.pgdata, "-U", "postgres", "--no-sync",
                       "--auth=trust"])
    else:
        work.file("pgdata/notes.txt", "mine\n")
    before = tree(work.pgdata)
    r = work.run("prepare", config=cfg, env=base_env(work))
    assert r.rc == 1, r
    assert work.pgdata in r.stderr, r
    if what == "cluster":
        assert "did not create" in r.stderr, r
    assert tree(work.pgdata) == before
    assert marker(work.pgdata) is None
    assert runs(count) == 0
    assert entries(work) == []


# ---- 6. privileges ----------------------------------------------------------------------

@pytest.mark.root
def test_root_start_hands_everything_to_postgres(work):
    need(IS_ROOT and USER_IDS is not None, "needs root and a postgres user")
    uid, gid = USER_IDS
    whoami = os.path.join(work.path, "whoami")
    cfg = small_config(work, [("who", "/bin/sh -c 'id -un > ../whoami; id -u >> ../whoami; "
                                      "psql -v ON_ERROR_STOP=1 -c \"CREATE TABLE made_by_step (id int)\"'")])
    top = os.path.join(work.path, "rootowned")
    os.makedirs(top)
    pgdata, cache, sock = (os.path.join(top, n) for n in ("pgdata", "cache", "sock"))
    for d in (pgdata, cache, sock):
        os.makedirs(d, mode=0o755)
        os.chown(d, 0, 0)
    env = base_env(work, PGDATA=pgdata, PGSTASH_CACHE_DIR=cache, PGSTASH_SOCKET_DIR=sock)
    assert os.stat(pgdata).st_uid == 0

    r = work.run("prepare", config=cfg, env=env, as_root=True)
    assert r.rc == 0, r
    with open(whoami) as f:
        assert f.read().split() == ["postgres", str(uid)]
    st = os.stat(pgdata)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, 0o700)
    not_theirs = [p for p, v in tree(pgdata).items() if v[4] != uid]
    assert not_theirs == []
    assert os.stat(sock).st_uid == uid
    key = work.key(config=cfg, env=env)
    assert entries(work, cache) == [key]
    for n in os.listdir(cache_v1(work, cache)):
        assert os.stat(os.path.join(cache_v1(work, cache), n)).st_uid == uid, n

    # a hit as root into a PGDATA that does not exist yet
    pgdata2 = os.path.join(top, "pgdata2")
    r2 = work.run("prepare", config=cfg, env=dict(env, PGDATA=pgdata2), as_root=True)
    assert r2.rc == 0, r2
    assert "cache hit" in r2.stderr, r2
    st = os.stat(pgdata2)
    assert (st.st_uid, st.st_mode & 0o7777) == (uid, 0o700)
    assert [p for p, v in tree(pgdata2).items() if v[4] != uid] == []
    assert work.sql("SELECT count(*) FROM made_by_step", db="app", pgdata=pgdata2) == "0"


def test_non_root_start_with_a_writable_pgdata(work):
    whoami = os.path.join(work.path, "whoami")
    cfg = small_config(work, [("who", f"/bin/sh -c 'id -u > {whoami}'")])
    r = work.run("prepare", config=cfg, env=base_env(work))
    assert r.rc == 0, r
    with open(whoami) as f:
        assert f.read().strip() == str(USER_IDS[0] if USER_IDS else os.getuid())
    assert marker(work.pgdata) == work.key(config=cfg, env=base_env(work))


def test_non_root_start_with_a_read_only_pgdata(work):
    need(not IS_ROOT or USER_IDS is not None, "needs a user to drop to")
    cfg = small_config(work, [("only", "/bin/true")])
    pgdata = os.path.join(work.path, "ro-pgdata")
    os.makedirs(pgdata)
    if IS_ROOT:
        os.chown(pgdata, 0, 0)
        os.chmod(pgdata, 0o755)
    else:
        os.chmod(pgdata, 0o500)
    r = work.run("prepare", config=cfg, env=base_env(work, PGDATA=pgdata))
    assert r.rc == 1, r
    assert pgdata in r.stderr, r
    assert os.listdir(pgdata) == []
    os.chmod(pgdata, 0o700)


# ---- 8. an unusable cache -----------------------------------------------------------------

@pytest.mark.parametrize("how", ["regular-file", "read-only-dir"])
def test_unusable_cache_still_prepares(work, how):
    cfg = small_config(work, [("only", "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE made_by_step (id int)'")])
    if how == "regular-file":
        cache = work.file("cache-is-a-file", "not a directory\n")
    else:
        cache = mkdir_user(work, "ro-cache", 0o555)
    before = tree(cache) if os.path.isdir(cache) else open(cache).read()
    env = base_env(work, PGSTASH_CACHE_DIR=cache)
    r = work.run("prepare", config=cfg, env=env)
    assert r.rc == 0, r
    assert "warning" in r.stderr.lower() and cache in r.stderr, r
    assert marker(work.pgdata) == work.key(config=cfg, env=env)
    assert (tree(cache) if os.path.isdir(cache) else open(cache).read()) == before
    assert work.sql("SELECT count(*) FROM made_by_step", db="app") == "0"
    os.chmod(cache, 0o755)


def test_small_pgdata_is_compressed_by_zstd_workers_too(work):
    """The workers take a quarter off a schema-heavy cluster's snapshot too (what a prefix build waits
    for): a small PGDATA gets them, and a configured level above 1 runs in one thread."""
    cfg = small_config(work, [("only", "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (id int)'")])
    r = work.run("-v", "prepare", config=cfg, env=base_env(work))
    assert r.rc == 0 and "cache miss" in r.stderr, r
    assert re.search(r"debug: snapshot of \".*\": \d+ MB into [\d.]+ MB in [\d.]+ s \(\d+ MB/s\), "
                     r"zstd level 1, 2 workers", r.stderr), r.stderr
    cfg3 = small_config(work, [("only", "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (id int)'")],
                        extra="compression = zstd:3", name="level3.ini")
    pgdata2, cache2 = mkdir_user(work, "pgdata2", 0o700), mkdir_user(work, "cache2")
    r = work.run("-v", "prepare", config=cfg3, env=dict(base_env(work), PGDATA=pgdata2, PGSTASH_CACHE_DIR=cache2))
    assert r.rc == 0, r
    assert re.search(r"zstd level 3, 0 workers", r.stderr), r.stderr


def test_a_hit_loads_neither_libpq_nor_libcurl(work):
    """libpq and libcurl are loaded by the first call that needs them (src/lazylib.c), not by the
    dynamic linker at every exec, and libarchive is linked in without the libxml2 and ICU it would
    load: together 5-10 ms of every start.  A miss loads libpq (its temporary server); a hit neither."""
    dyn = subprocess.run(["readelf", "-d", work.binary], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    assert needed, dyn
    for lib in ("libpq", "libcurl", "libarchive", "libxml2", "libicu"):
        assert not [n for n in needed if n.startswith(lib)], needed
    cfg = small_config(work, [("only", "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (id int)'")])
    r = work.run("-v", "prepare", config=cfg, env=base_env(work))
    assert r.rc == 0 and "cache miss" in r.stderr, r
    assert "debug: loaded libpq.so.5" in r.stderr, r.stderr
    pgdata2 = mkdir_user(work, "pgdata2", 0o700)
    r = work.run("-v", "prepare", config=cfg, env=dict(base_env(work), PGDATA=pgdata2))
    assert r.rc == 0 and "cache hit" in r.stderr, r
    assert "debug: loaded" not in r.stderr, r.stderr


def test_large_pgdata_is_compressed_by_zstd_workers(work):
    """A data-heavy PGDATA's snapshot is zstd level 1 in 2 worker threads (README "How a start goes",
    step 4), and a hit restores it whole."""
    # fillfactor 10: about 20 rows a page, 145 MB of table in half a second of inserts
    sql = ("CREATE TABLE big (i int) WITH (fillfactor = 10); "
           "INSERT INTO big SELECT generate_series(1, 400000)")
    cfg = small_config(work, [("only", f"psql -v ON_ERROR_STOP=1 -c '{sql}'")])
    env = base_env(work)
    r = work.run("-v", "prepare", config=cfg, env=env)
    assert r.rc == 0 and "cache miss" in r.stderr, r
    m = re.search(r"debug: snapshot of \".*\": (\d+) MB into [\d.]+ MB in [\d.]+ s \(\d+ MB/s\), "
                  r"zstd level (\d+), (\d+) workers", r.stderr)
    assert m, r.stderr
    assert int(m.group(1)) >= 134 and m.group(2) == "1" and m.group(3) == "2", m.group(0)
    pgdata2 = mkdir_user(work, "pgdata2", 0o700)
    r = work.run("-v", "prepare", config=cfg, env=dict(env, PGDATA=pgdata2))
    assert r.rc == 0 and "cache hit" in r.stderr, r
    assert work.sql("SELECT count(*) FROM big", db="app", pgdata=pgdata2) == "400000"


# ---- the WAL reset runs beside the snapshot ----------------------------------------------

def resetwal_bindir(work, before, after=""):
    """PG_BINDIR whose pg_resetwal (called as pg_resetwal -D PGDATA) runs the
    shell lines `before`, then the real one, then `after`."""
    return work.wrapped_bindir("pg_resetwal", f"{before}\n{PG_BINDIR}/pg_resetwal \"$@\" || exit $?\n{after}", "rwbin")


def test_snapshot_runs_beside_the_wal_reset(work):
    """pg_resetwal starts only once the snapshot has written bytes (it would wait in vain, 30 s, if the
    snapshot came after it), and the entry still holds the WAL and pg_control it left."""
    tmp = os.path.join(cache_v1(work), ".tmp")
    seen = os.path.join(work.path, "wal-after-reset")
    wait = (f"i=0; while [ $i -lt 300 ]; do for f in {tmp}/*; do [ -s \"$f\" ] && break 2; done; "
            f"sleep 0.1; i=$((i + 1)); done\n"
            f"[ $i -lt 300 ] || {{ echo 'no snapshot was written beside pg_resetwal' >&2; exit 1; }}")
    bindir = resetwal_bindir(work, wait, f"ls \"$2/pg_wal\" > {seen}")
    cfg = small_config(work, [("only", "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE t AS SELECT 42 AS v'")])
    env = base_env(work, PGSTASH_PG_BINDIR=bindir)
    r = work.run("-v", "prepare", config=cfg, env=env)
    assert r.rc == 0 and "cache miss" in r.stderr, r
    assert re.search(r"snapshot of \".*\": waited [\d.]+ s for its last files", r.stderr), r.stderr
    with open(seen) as f:
        after_reset = sorted(f.read().split())
    assert len([n for n in after_reset if re.fullmatch(r"[0-9A-F]{24}", n)]) == 1, after_reset
    pgdata2 = mkdir_user(work, "pgdata2", 0o700)
    r = work.run("prepare", config=cfg, env=dict(env, PGDATA=pgdata2))
    assert r.rc == 0 and "cache hit" in r.stderr, r
    assert sorted(os.listdir(os.path.join(pgdata2, "pg_wal"))) == after_reset
    assert work.sql("SELECT v FROM t", db="app", pgdata=pgdata2) == "42"


def test_failed_wal_reset_caches_nothing(work):
    bindir = resetwal_bindir(work, "echo 'pg_resetwal: simulated failure' >&2; exit 1")
    cfg = small_config(work, [("only", "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (id int)'")])
    r = work.run("prepare", config=cfg, env=base_env(work, PGSTASH_PG_BINDIR=bindir))
    assert r.rc == 1, r
    assert "pg_resetwal failed: exit status 1" in r.stderr and "simulated failure" in r.stderr, r
    # The start fails: nothing announces going on without the cache.
    assert "going on without caching" not in r.stderr, r
    assert_nothing_built(work, r)


def test_sigterm_lets_the_wal_reset_finish(work, bg):
    """pg_resetwal killed half-way leaves a cluster that does not start (with on_change = migrate, the
    user's own): a SIGTERM while pgstash waits for it is not passed on, and pgstash stops after it."""
    started, done = os.path.join(work.path, "reset-started"), os.path.join(work.path, "reset-done")
    bindir = resetwal_bindir(work, f"touch {started}; sleep 3", f"touch {done}")
    cfg = small_config(work, [("only", "psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (id int)'")])
    p = bg.start("prepare", config=cfg, env=base_env(work, PGSTASH_PG_BINDIR=bindir))
    wait_for("pg_resetwal to start", lambda: os.path.exists(started))
    time.sleep(1)  # the snapshot of the rest is written by then: pgstash waits for pg_resetwal
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(timeout=60) == 143, bg.output(p)
    assert os.path.exists(done), "pg_resetwal was killed: " + bg.output(p)
    assert "pg_resetwal interrupted by signal 15" in bg.output(p), bg.output(p)
    assert_nothing_built(work, bg.output(p))
