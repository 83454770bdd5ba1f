"""Issue 7: layers, prefix reuse and parallel test databases, with real
Django (projects from shared/workloads/gen_django.py and examples/) and real
Alembic.  PGSTASH_IT_DJ="APPS MIGRATIONS" picks the generated project's size
(default 4 apps x 6 migrations: the same code paths as dj-200, in CI time)."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from helpers import PG_BINDIR, REPO, Background, chown_tree

GEN = os.path.join(REPO, "bench", "gen_django.py")  # a copy of shared/workloads/gen_django.py
SIZE = tuple(int(x) for x in os.environ.get("PGSTASH_IT_DJ", "4 6").split())


def gen(work, name, apps, migs):
    out = os.path.join(work.path, name)
    subprocess.run(["/usr/bin/python3", GEN, out, str(apps), str(migs)], check=True, capture_output=True)
    chown_tree(out)
    return out


def dj_config(work, root, incremental=True):
    return work.file("dj.ini",
                     "[database]\nname = app\n"
                     f"[step django]\nroot = {root}\nmigrations = */migrations/*.py\nexclude = */__pycache__/*\n"
                     "run = python3 manage.py migrate --noinput\n"
                     f"env = DJANGO_SETTINGS_MODULE=proj.settings\nincremental = {'yes' if incremental else 'no'}\n")


def prepare(work, cfg, name, cache=None, extra=()):
    pgdata = os.path.join(work.path, name)
    env = {"PGDATA": pgdata, "PGSTASH_SOCKET_DIR": work.sock}
    if cache:
        env["PGSTASH_CACHE_DIR"] = cache
    r = work.run("prepare", *extra, config=cfg, env=env, timeout=600)
    assert r.rc == 0, r
    return r, pgdata


def schema_dump(work, pgdata, db="app"):
    with work.server(pgdata) as sql:
        rows = sql("select app || '.' || name from django_migrations order by 1", db=db)
        p = subprocess.run([os.path.join(PG_BINDIR, "pg_dump"), "-s", "-h", work.sock, "-p", "5432", "-U", "postgres",
                            db], capture_output=True, text=True, check=True,
                           **({"user": "postgres"} if os.geteuid() == 0 else {}))
    # pg_dump 15.14+ brackets its output with \restrict/\unrestrict lines holding a random key.
    dump = "\n".join(l for l in p.stdout.splitlines() if not l.startswith(("\\restrict", "\\unrestrict")))
    return rows, dump


def test_prefix_reuse_applies_only_the_new_migration(work):
    if shutil.which("python3", path="/usr/bin") is None or not os.path.exists(GEN):
        pytest.skip(f"SKIP: {GEN} or /usr/bin/python3 missing")
    apps, migs = SIZE
    root = gen(work, "proj", apps, migs)
    cfg = dj_config(work, root)
    r1, _ = prepare(work, cfg, "pg1")
    assert "cache miss" in r1.stderr and "starting from cached entry" not in r1.stderr, r1
    key1 = work.key(config=cfg)

    # One more migration in one app: the next migration of app00, taken from a bigger project.
    bigger = gen(work, "bigger", apps, migs + 1)
    new = f"app00/migrations/{migs:04d}_auto.py"
    shutil.copy(os.path.join(bigger, new), os.path.join(root, new))
    chown_tree(root)
    r2, pg2 = prepare(work, cfg, "pg2")
    assert f"starting from cached entry {key1[:12]}" in r2.stderr, r2
    assert f"started from {key1[:12]}" in r2.stderr, r2
    applied = re.findall(r"\[step django\]\s+Applying (\S+)\.\.\.", r2.stderr)
    assert applied == [f"app00.{migs:04d}_auto"], applied

    # The same result as a build from scratch.
    fresh_cache = os.path.join(work.path, "fresh-cache")
    os.makedirs(fresh_cache)
    chown_tree(fresh_cache)
    r3, pg3 = prepare(work, cfg, "pg3", cache=fresh_cache)
    assert "starting from cached entry" not in r3.stderr and "building (initdb" in r3.stderr, r3
    rows2, dump2 = schema_dump(work, pg2)
    rows3, dump3 = schema_dump(work, pg3)
    assert rows2 == rows3
    assert dump2 == dump3

    # Editing an already cached migration is never served from a prefix.
    edited = os.path.join(root, "app01/migrations/0001_auto.py")
    with open(edited, "a") as f:
        f.write("# edited\n")
    r4, _ = prepare(work, cfg, "pg4")
    assert "starting from cached entry" not in r4.stderr and "building (initdb" in r4.stderr, r4
    assert len(re.findall(r"Applying app01\.", r4.stderr)) == migs


def test_prefix_reuse_skips_steps_whose_inputs_did_not_change(work):
    """Issue 18: when only one step gained migrations, the others are not re-run on the prefix.  The SQL
    step here is not idempotent (create table): re-running it would fail the build."""
    apps, migs = 2, 2
    root = gen(work, "proj", apps, migs)
    work.file("sql/01.sql", "create table plain (id int);\n")
    cfg = work.file("two.ini",
                    "[database]\nname = app\nextra = other\n"
                    f"[step django]\nroot = {root}\nmigrations = */migrations/*.py\nexclude = */__pycache__/*\n"
                    "run = python3 manage.py migrate --noinput\n"
                    "env = DJANGO_SETTINGS_MODULE=proj.settings\nincremental = yes\n"
                    f"[step sql]\nroot = {work.path}/sql\nmigrations = *.sql\ndatabase = other\n"
                    "run = psql -X -q -v ON_ERROR_STOP=1 -f 01.sql\n")
    r1, _ = prepare(work, cfg, "pg1")
    assert "step sql finished" in r1.stderr, r1
    key1 = work.key(config=cfg)
    bigger = gen(work, "bigger", apps, migs + 1)
    new = f"app01/migrations/{migs:04d}_auto.py"
    shutil.copy(os.path.join(bigger, new), os.path.join(root, new))
    chown_tree(root)
    r2, pg2 = prepare(work, cfg, "pg2")
    assert f"starting from cached entry {key1[:12]}" in r2.stderr, r2
    assert f"step sql: inputs unchanged since {key1[:12]}: skipped" in r2.stderr, r2
    assert "[step sql]" not in r2.stderr and "step sql finished" not in r2.stderr, r2
    applied = re.findall(r"\[step django\]\s+Applying (\S+)\.\.\.", r2.stderr)
    assert applied == [f"app01.{migs:04d}_auto"], applied
    assert work.sql("select count(*) from plain", db="other", pgdata=pg2) == "0"

    # Provenance: the entry says what it was built on, and what a full build takes.
    import json
    key2 = work.key(config=cfg)
    entries = {e["key"]: e for e in json.loads(work.run("ls", "--json", config=cfg).stdout)}
    assert entries[key1]["built_from"] is None
    assert entries[key2]["built_from"] == key1
    e1, e2 = entries[key1], entries[key2]
    assert e2["full_build_seconds"] == pytest.approx(e1["build_seconds"] + e2["build_seconds"], abs=0.01)
    assert e1["full_build_seconds"] == e1["build_seconds"]
    ls = work.run("ls", config=cfg).stdout
    assert "BUILT FROM" in ls and re.search(rf"^{key2} .* {key1[:12]} \(full build \d+\.\d s\)$", ls, re.M), ls
    r3, _ = prepare(work, cfg, "pg3")
    assert re.search(rf"cache hit {key2[:12]}: restored .* \(a full build takes about \d+\.\d s; this entry was "
                     rf"built on {key1[:12]} in \d+\.\d s\)", r3.stderr), r3

    # --full: the entry built on a prefix is rebuilt from scratch and replaced; the SQL step runs again.
    r4, pg4 = prepare(work, cfg, "pg4", extra=["--full"])
    assert r4.rc == 0, r4
    assert f"was built on {key1[:12]} and full_build is set: building it in full" in r4.stderr, r4
    assert "building (initdb" in r4.stderr and "starting from cached entry" not in r4.stderr, r4
    assert "step sql finished" in r4.stderr, r4
    entries = {e["key"]: e for e in json.loads(work.run("ls", "--json", config=cfg).stdout)}
    assert entries[key2]["built_from"] is None
    r5, _ = prepare(work, cfg, "pg5")
    assert "cache hit" in r5.stderr and "(building it took" in r5.stderr, r5


def test_prefix_reuse_off_without_incremental(work):
    apps, migs = 2, 3
    root = gen(work, "proj", apps, migs)
    cfg = dj_config(work, root, incremental=False)
    prepare(work, cfg, "pg1")
    bigger = gen(work, "bigger", apps, migs + 1)
    new = f"app01/migrations/{migs:04d}_auto.py"
    shutil.copy(os.path.join(bigger, new), os.path.join(root, new))
    chown_tree(root)
    r2, _ = prepare(work, cfg, "pg2")
    assert "starting from cached entry" not in r2.stderr and "building (initdb" in r2.stderr, r2


def test_fixtures_layer(work, examples):
    ex = os.path.dirname(examples)
    work.file("examples/fixtures/authors.sql", "insert into author (name) values ('Ada'), ('Grace');\n")
    cfg = work.file("layers.ini",
                    "[database]\nname = app\nextra = flask_app\n"
                    f"[step flask]\nroot = {ex}/flask-app\nmigrations = migrations/versions/*.py migrations/env.py\n"
                    "run = python3 -m flask db upgrade\ndatabase = flask_app\nenv = FLASK_APP=app\n"
                    f"[step fixtures]\nroot = {ex}\nmigrations = fixtures/*.sql\nlayer = fixtures\ndatabase = flask_app\n"
                    "run = psql -X -q -v ON_ERROR_STOP=1 -f fixtures/authors.sql\n")
    r1, pg1 = prepare(work, cfg, "pg1")
    assert "[step flask]" in r1.stderr and "fixtures loaded" in r1.stderr, r1
    ls = work.run("ls", "--json", config=cfg)
    import json
    entries = {e["layer"]: e for e in json.loads(ls.stdout)}
    assert set(entries) == {"schema", "fixtures"}, ls
    assert entries["fixtures"]["parent"] == entries["schema"]["key"]

    # Only the fixture file changes: the schema is restored, not re-migrated.
    work.file("examples/fixtures/authors.sql", "insert into author (name) values ('Barbara');\n")
    r2, pg2 = prepare(work, cfg, "pg2")
    assert f"schema layer {entries['schema']['key'][:12]}: restored" in r2.stderr, r2
    assert "[step flask]" not in r2.stderr, r2
    assert "step fixtures finished" in r2.stderr, r2
    assert work.sql("select string_agg(name, ',' order by name) from author", db="flask_app", pgdata=pg2) == "Barbara"

    # Unchanged: a plain hit on the fixtures key.
    r3, _ = prepare(work, cfg, "pg3")
    assert "cache hit" in r3.stderr and "[step" not in r3.stderr, r3


def clones_config(work, examples, naming, count):
    ex = os.path.dirname(examples)
    return work.file(f"clones-{naming}.ini",
                     "[database]\nname = app\n"
                     f"[step django]\nroot = {ex}/django-app\nmigrations = */migrations/*.py\n"
                     "run = python3 manage.py migrate --noinput\nenv = DJANGO_SETTINGS_MODULE=proj.settings\n"
                     f"[clones]\ncount = {count}\nnaming = {naming}\n")


def run_tests_against(work, pgdata, argv, cwd):
    """Runs a test command as the unprivileged user against a server on `pgdata`."""
    with work.server(pgdata):
        env = {"PATH": "/usr/bin:/bin", "HOME": work.path, "LANG": "C.UTF-8", "PGHOST": work.sock, "PGPORT": "5432",
               "PGUSER": "postgres", "PGDATABASE": "app", "DJANGO_SETTINGS_MODULE": "proj.settings"}
        kw = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kw)


def test_clones_for_django_parallel_tests(work, examples):
    cfg = clones_config(work, examples, "django", 2)
    r, pg = prepare(work, cfg, "pg1")
    assert "created 3 clones" in r.stderr, r
    names = work.sql("select string_agg(datname, ',' order by datname) from pg_database where datname like 'test_%'",
                     pgdata=pg)
    assert names == "test_app,test_app_1,test_app_2"
    assert work.sql("select count(*) from shop_category", db="test_app_2", pgdata=pg) == "3"
    # The key depends on the clones.
    k1 = work.key(config=cfg)
    k2 = work.key(config=clones_config(work, examples, "django", 3))
    assert k1 != k2
    p = run_tests_against(work, pg, ["/usr/bin/python3", "manage.py", "test", "--keepdb", "--parallel", "2", "-v", "2"],
                          os.path.join(os.path.dirname(examples), "django-app"))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "Using existing test database for alias 'default'" in out, out
    assert "No migrations to apply" in out, out


def test_clones_for_pytest_xdist(work, examples):
    try:
        import pytest_django  # noqa: F401
        import xdist  # noqa: F401
    except ImportError:
        pytest.skip("SKIP: python3-pytest-django / python3-pytest-xdist not installed")
    cfg = clones_config(work, examples, "xdist", 2)
    r, pg = prepare(work, cfg, "pg1")
    assert r.rc == 0, r
    names = work.sql("select string_agg(datname, ',' order by datname) from pg_database where datname like 'test_%'",
                     pgdata=pg)
    assert names == "test_app_gw0,test_app_gw1"
    p = run_tests_against(work, pg, ["/usr/bin/python3", "-m", "pytest", "-p", "no:cacheprovider", "-n", "2",
                                     "--reuse-db", "-q"],
                          os.path.join(os.path.dirname(examples), "django-app"))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "3 passed" in out, out


def two_sql_steps(work, b_sql):
    """Step a (database app, skipped on a prefix) and step b (database other, incremental): SQL files each."""
    work.file("sqla/01.sql", "create table a_rows (id int);\ninsert into a_rows select generate_series(1, 1000);\n")
    work.file("sqlb/01.sql", b_sql)
    run = "sh -c 'for f in *.sql; do psql -X -q -v ON_ERROR_STOP=1 -f $f || exit 1; done'"
    return work.file("early.ini",
                     "[database]\nname = app\nextra = other\n"
                     f"[step a]\nroot = {work.path}/sqla\nmigrations = *.sql\nrun = {run}\nincremental = yes\n"
                     f"[step b]\nroot = {work.path}/sqlb\nmigrations = *.sql\ndatabase = other\nrun = {run}\n"
                     "incremental = yes\n")


def test_prefix_build_snapshots_untouched_databases_during_the_steps(work):
    """Issue 18 c: on a prefix build, the databases no running step works on (app: step a is skipped; the
    templates) go into the entry while step b runs, and the entry is the same cluster."""
    cfg = two_sql_steps(work, "create table if not exists b_rows (id int);\n")
    prepare(work, cfg, "pg1")
    key1 = work.key(config=cfg)
    work.file("sqlb/02.sql", "insert into b_rows select generate_series(1, 50);\n")
    pgdata = os.path.join(work.path, "pg2")
    r2 = work.run("-v", "prepare", config=cfg, env={"PGDATA": pgdata, "PGSTASH_SOCKET_DIR": work.sock}, timeout=600)
    assert r2.rc == 0, r2
    assert f"step a: inputs unchanged since {key1[:12]}: skipped" in r2.stderr, r2
    assert re.search(r"database director(y|ies) \(\d+ MB\) written during the steps", r2.stderr), r2
    assert "written in full after the steps" not in r2.stderr, r2
    # A hit on the new entry: both databases as the steps left them.
    r3, pg3 = prepare(work, cfg, "pg3")
    assert "cache hit" in r3.stderr, r3
    with work.server(pg3) as sql:
        assert sql("select count(*) from a_rows", db="app") == "1000"
        assert sql("select count(*) from b_rows", db="other") == "50"


def test_prefix_build_writes_again_a_database_a_step_changed_behind_its_back(work):
    """A step may reach a database that is not its own: whatever was written of it during the steps is
    found changed (inode, size, times) and the whole snapshot is written again, with the change in it."""
    cfg = two_sql_steps(work, "create table if not exists b_rows (id int);\n")
    prepare(work, cfg, "pg1")
    # Step b's new file writes into app over a second connection once the early write has taken app: it waits
    # (at most 60 s) for the thread's line in pgstash's log.  A pause (3 s) was not always enough on a busy CI
    # machine: the connection to app came first, and app was left to the walk after the steps.
    b = Background(work)
    pgdata = os.path.join(work.path, "pg2")
    early_done = r"database director(y|ies) \([0-9]+ MB\) written during the steps"
    wait = work.file("wait-early.sh",
                     "for i in $(seq 600); do\n"
                     f"  grep -Eq '{early_done}' {work.path}/background-0.log && exit 0\n"
                     "  sleep 0.1\n"
                     "done\n")
    work.file("sqlb/02.sql", f"\\! sh {wait}\n\\c app\ninsert into a_rows values (-1);\n")
    try:
        p = b.start("-v", "prepare", config=cfg, env={"PGDATA": pgdata, "PGSTASH_SOCKET_DIR": work.sock})
        assert p.wait(timeout=600) == 0, b.output(p)
        out = b.output(p)
    finally:
        b.cleanup()
    assert re.search(early_done, out) and out.index("step b finished") > re.search(early_done, out).start(), out
    assert re.search(r'written in full after the steps \(("base/\d+[^"]*"|an entry) changed during the steps\)',
                     out), out
    r3, pg3 = prepare(work, cfg, "pg3")
    assert "cache hit" in r3.stderr, r3
    assert work.sql("select count(*) from a_rows where id = -1", db="app", pgdata=pg3) == "1"
