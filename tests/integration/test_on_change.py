"""Issue 16: a changed key on a PGDATA that has run as a database.  Host mode:
`pgstash prepare` twice on one PGDATA, with a row inserted between and a
migration file added or edited, under each on_change policy.

The step applies every file each time, and the files are idempotent (IF NOT
EXISTS), as a migration tool applies only what is missing."""
import os

from helpers import PG_BINDIR


def sql_step_config(work, each_file=False):
    """A config whose one incremental step feeds mig/*.sql to psql: as one script, or (each_file) one
    psql per file, so that a file's session ends before the next begins."""
    psql = f"{os.path.join(PG_BINDIR, 'psql')} -X -q -v ON_ERROR_STOP=1"
    run = (f"for f in *.sql; do {psql} -f $f || exit 1; done" if each_file else f"cat *.sql | {psql}")
    return work.file("pgstash.ini",
                     "[database]\nname = app\n"
                     f"[step sql]\nroot = {work.path}/mig\nmigrations = *.sql\nincremental = yes\n"
                     f"run = /bin/sh -c '{run}'\n")


def make_config(work):
    work.file("mig/0001.sql", "create table if not exists t (i int);\n")
    return sql_step_config(work)


def prepare(work, cfg, policy=None):
    env = {"PGSTASH_SOCKET_DIR": work.sock}
    if policy:
        env["PGSTASH_ON_CHANGE"] = policy
    return work.run("prepare", config=cfg, env=env, timeout=300)


def rows(work):
    return work.sql("select count(*) from t", db="app")


def test_migrate_keeps_the_data_and_refuse_leaves_it(work):
    cfg = make_config(work)
    r = prepare(work, cfg)
    assert r.rc == 0, r
    work.sql("insert into t values (1), (2)", db="app")

    # A new migration: the old manifest is a prefix, migrated in place.
    work.file("mig/0002.sql", "alter table t add column if not exists j int;\n")
    new_key = work.key(config=cfg)
    r = prepare(work, cfg, "migrate")
    assert r.rc == 0, r
    assert "migrating it in place, its data kept (on_change = migrate)" in r.stderr, r
    assert "added: migration file sql 0002.sql" in r.stderr, r
    assert "migrated PGDATA in place" in r.stderr, r
    # Durable before the marker names the new key: never "unsynced KEY BOOT_ID", which a start after a
    # host crash would take for a cluster to rebuild (wiping the rows).
    with open(os.path.join(work.pgdata, "pgstash.key")) as f:
        assert f.read().strip() == new_key
    assert rows(work) == "2"
    assert work.sql("select count(*) from information_schema.columns where table_name = 't' and column_name = 'j'",
                    db="app") == "1"
    # Not cached: that cluster holds this database's rows.
    ls = work.run("ls", env={"PGSTASH_SOCKET_DIR": work.sock})
    assert new_key[:12] not in ls.stdout, ls
    # The next start with the same key reuses it.
    r = prepare(work, cfg, "migrate")
    assert r.rc == 0 and "already holds the cluster of" in r.stderr, r
    assert rows(work) == "2"

    # An edited migration: refuse leaves PGDATA as it is, exit 2, and says what changed.
    work.file("mig/0001.sql", "create table if not exists t (i int);\n-- edited\n")
    marker = open(os.path.join(work.pgdata, "pgstash.key")).read()
    r = prepare(work, cfg, "refuse")
    assert r.rc == 2, r
    assert "changed: migration file sql 0001.sql" in r.stderr, r
    assert "on_change = refuse: leaving it untouched" in r.stderr, r
    assert open(os.path.join(work.pgdata, "pgstash.key")).read() == marker
    assert rows(work) == "2"

    # migrate cannot apply to an edited file: replaced, with a warning saying why.
    r = prepare(work, cfg, "migrate")
    assert r.rc == 0, r
    assert "on_change = migrate cannot apply" in r.stderr, r
    assert "replacing it, its data is lost" in r.stderr, r
    assert rows(work) == "0"


def test_replace_is_the_default_and_warns(work):
    cfg = make_config(work)
    r = prepare(work, cfg)
    assert r.rc == 0, r
    work.sql("insert into t values (1)", db="app")
    work.file("mig/0002.sql", "create table if not exists u (i int);\n")
    r = prepare(work, cfg)
    assert r.rc == 0, r
    assert "warning: PGDATA holds the cluster of key" in r.stderr, r
    assert "added: migration file sql 0002.sql" in r.stderr, r
    assert "replacing it, its data is lost (on_change = replace" in r.stderr, r
    assert rows(work) == "0"
    # A bad value is a configuration error.
    r = prepare(work, cfg, "keep")
    assert r.rc == 2 and "expected replace, migrate or refuse" in r.stderr, r


def test_builds_write_no_wal_for_new_tables_a_migration_in_place_does(work):
    """A build's temporary server runs with wal_level = minimal: a table a step creates and fills in
    one transaction is written without WAL (here 200,000 rows, ~10 MB, write under 1 MB of WAL;
    with the default level they write ~14 MB). A migration in place of a user's cluster keeps the
    cluster's own level (replica by default) and writes them."""
    fill = ("begin;\n"
            "create table if not exists w (step text, lvl text, wal_bytes bigint);\n"
            "create temp table lsn as select pg_current_wal_lsn() as at;\n"
            "create table if not exists {t} as select i, repeat('x', 20) as pad from generate_series(1, 200000) i;\n"
            "commit;\n"
            "insert into w select '{t}', current_setting('wal_level'), "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), at) from lsn;\n")
    work.file("mig/0001.sql", fill.format(t="t1"))
    cfg = sql_step_config(work, each_file=True)
    r = prepare(work, cfg)
    assert r.rc == 0, r
    got = work.sql("select string_agg(step || ' ' || lvl || ' ' || (wal_bytes < 1000000)::text, ',') from w",
                   db="app")
    assert got == "t1 minimal true", got
    work.file("mig/0002.sql", fill.format(t="t2"))
    r = prepare(work, cfg, "migrate")
    assert r.rc == 0 and "migrated PGDATA in place" in r.stderr, r
    got = work.sql("select string_agg(step || ' ' || lvl || ' ' || (wal_bytes > 5000000)::text, ',' order by step)"
                   " from w where step = 't2'", db="app")
    assert got == "t2 replica true", got


def test_builds_run_without_autovacuum_a_migration_in_place_keeps_it(work):
    """A build's temporary server runs with autovacuum off, as pg_upgrade's (its workers would visit the
    databases a snapshot begun during the steps has written); a migration in place of a user's cluster
    keeps the cluster's own setting (on by default)."""
    work.file("mig/0001.sql", "create table if not exists av (v text);\n"
                              "insert into av select current_setting('autovacuum');\n")
    cfg = sql_step_config(work)
    r = prepare(work, cfg)
    assert r.rc == 0, r
    assert work.sql("select string_agg(v, ',') from av", db="app") == "off"
    work.file("mig/0002.sql", "create table if not exists t2 (i int);\n")
    r = prepare(work, cfg, "migrate")
    assert r.rc == 0 and "migrated PGDATA in place" in r.stderr, r
    assert work.sql("select string_agg(v, ',' order by ctid) from av", db="app") == "off,on"
