"""What a start depends on besides the files (issue 16): initdb takes its locale from LANG and LC_*
and writes TZ into postgresql.conf, as in the official image, so those are in the key (in clear);
`[database] key_env = VAR …` keys variables the initdb.d scripts read, by digest, never in clear."""
import os
import glob

import pytest

CONFIG = """\
[pgstash]

[database]
name = app
{extra}
[step only]
root = repo
migrations = migrations/*.sql
run = psql -v ON_ERROR_STOP=1 -c "create table t (s text); insert into t values ('a'), ('B'), ('_c'), ('b'), ('A')"
"""


def config(work, extra=""):
    work.file("repo/migrations/0001.sql", "-- one\n")
    return work.file("pgstash.ini", CONFIG.format(extra=extra))


def env(work, **kw):
    e = {"PGSTASH_INITDB_D": os.path.join(work.path, "initdb.d")}
    e.update(kw)
    return e


@pytest.mark.parametrize("var,a,b", [("LANG", "C.UTF-8", "C"), ("LC_ALL", None, "C"), ("LC_COLLATE", None, "C"),
                                     ("LC_CTYPE", None, "C"), ("LC_MESSAGES", None, "C"),
                                     ("TZ", "UTC", "Europe/Berlin")])
def test_locale_and_tz_change_the_key_in_clear(work, var, a, b):
    cfg = config(work)
    k1 = work.key(cfg, env=env(work, **{var: a}))
    k2 = work.key(cfg, env=env(work, **{var: b}))
    assert k1 != k2
    r = work.run("key", "--explain", config=cfg, env=env(work, **{var: b}))
    assert f"\nenvironment {var}={b}\n" in r.stdout, r


@pytest.mark.slow
def test_lang_and_tz_are_honoured_by_initdb(work):
    cfg = config(work)
    r = work.run("prepare", config=cfg, env=env(work, LANG="C", TZ="Europe/Berlin"), timeout=180)
    assert r.rc == 0, r
    assert work.sql("select datcollate from pg_database where datname = current_database()", db="app") == "C"
    assert work.sql("show timezone", db="app") == "Europe/Berlin"
    # Bytewise collation under C: the same rows sort as the official image's C locale sorts them.
    assert work.sql("select string_agg(s, ' ' order by s) from t", db="app") == "A B _c a b"


@pytest.mark.slow
def test_another_tz_is_not_a_hit_of_the_old_one(work):
    # Before issue 16, a hit under TZ=Europe/Berlin gave the cached Etc/UTC.
    cfg = config(work)
    r = work.run("prepare", config=cfg, env=env(work, TZ="UTC"), timeout=180)
    assert r.rc == 0, r
    fresh = os.path.join(work.path, "pgdata2")
    os.makedirs(fresh, mode=0o700)
    work.chown_up(fresh)
    r = work.run("prepare", config=cfg, env=env(work, TZ="Europe/Berlin", PGDATA=fresh), timeout=180)
    assert r.rc == 0, r
    assert "cache hit" not in r.stderr, r
    assert work.sql("show timezone", db="app", pgdata=fresh) == "Europe/Berlin"


def test_key_env_values_change_the_key_and_are_never_in_clear(work):
    secret = "app-pw-5d1f0c"
    cfg = config(work, "key_env = APP_PASSWORD\n  APP_ROLE\n")
    k_unset = work.key(cfg, env=env(work))
    k1 = work.key(cfg, env=env(work, APP_PASSWORD=secret))
    k2 = work.key(cfg, env=env(work, APP_PASSWORD="other"))
    k3 = work.key(cfg, env=env(work, APP_PASSWORD=secret, APP_ROLE="app"))
    assert len({k_unset, k1, k2, k3}) == 4
    r = work.run("key", "--explain", config=cfg, env=env(work, APP_PASSWORD=secret))
    assert "\nkey_env APP_PASSWORD sha256=" in r.stdout and "\nkey_env APP_ROLE unset\n" in r.stdout, r
    assert secret not in r.stdout + r.stderr, r
    # Nor in the cache entry written by a build.
    r = work.run("prepare", config=cfg, env=env(work, APP_PASSWORD=secret), timeout=180)
    assert r.rc == 0, r
    for path in glob.glob(os.path.join(work.cache, "**"), recursive=True):
        if os.path.isfile(path) and not path.endswith((".tar.zst", ".tar.gz", ".tar")):
            with open(path, "rb") as f:
                assert secret.encode() not in f.read(), path


def test_key_secret_keys_the_env_digests(work):
    """A guessable value (SECRET_KEY=changeme) is found from its plain SHA-256 in the manifest; with
    PGSTASH_KEY_SECRET_FILE the manifest holds an HMAC under the secret
    instead, and the key changes with the secret."""
    import hashlib
    cfg = config(work, "key_env = SECRET_KEY\n")
    plain = hashlib.sha256(b"SECRET_KEY=changeme").hexdigest()
    r = work.run("key", "--explain", config=cfg, env=env(work, SECRET_KEY="changeme"))
    assert r.rc == 0 and f"\nkey_env SECRET_KEY sha256={plain}" in r.stdout, r
    k_plain = work.key(cfg, env=env(work, SECRET_KEY="changeme"))
    s1 = work.file("secret-1", "first secret\n", mode=0o600)
    s2 = work.file("secret-2", "second secret\n", mode=0o600)
    r = work.run("key", "--explain", config=cfg, env=env(work, SECRET_KEY="changeme", PGSTASH_KEY_SECRET_FILE=s1))
    assert r.rc == 0, r
    assert plain not in r.stdout and "changeme" not in r.stdout + r.stderr, r
    assert "\nkey_env SECRET_KEY hmac-sha256=" in r.stdout, r
    k1 = work.key(cfg, env=env(work, SECRET_KEY="changeme", PGSTASH_KEY_SECRET_FILE=s1))
    k2 = work.key(cfg, env=env(work, SECRET_KEY="changeme", PGSTASH_KEY_SECRET_FILE=s2))
    assert len({k_plain, k1, k2}) == 3
    # A build's entry holds no plain digest either.
    r = work.run("prepare", config=cfg, env=env(work, SECRET_KEY="changeme", PGSTASH_KEY_SECRET_FILE=s1), timeout=180)
    assert r.rc == 0, r
    metas = glob.glob(os.path.join(work.cache, "pgstash-v1", "*.meta"))
    assert [os.path.basename(m) for m in metas] == [k1 + ".meta"]
    assert plain.encode() not in open(metas[0], "rb").read()
    r = work.run("key", config=cfg, env=env(work, SECRET_KEY="changeme", PGSTASH_KEY_SECRET_FILE="/nonexistent"))
    assert r.rc == 2 and "PGSTASH_KEY_SECRET_FILE" in r.stderr, r


@pytest.mark.parametrize("planted", ["/dev/zero", "fifo", "big"])
def test_key_secret_file_is_read_bounded(work, planted):
    """PGSTASH_KEY_SECRET_FILE names /dev/zero (once: out of memory), a FIFO (once: a hang) or a huge file:
    a clear error, exit 2, at once.  A config file may not name it at all (a pull request could point it
    at another secret, whose HMACs `key --explain` would print): an error at its line, the file unread."""
    cfg = config(work, "key_env = SECRET_KEY\n")
    if planted == "fifo":
        path = os.path.join(work.path, "fifo")
        os.mkfifo(path)
    elif planted == "big":
        path = work.file("big", "x" * (64 * 1024 + 1))
    else:
        path = planted
    r = work.run("key", config=cfg, env=env(work, SECRET_KEY="changeme", PGSTASH_KEY_SECRET_FILE=path), timeout=30)
    assert r.rc == 2 and "PGSTASH_KEY_SECRET_FILE" in r.stderr, r
    assert ("not a regular file" if planted != "big" else "larger than") in r.stderr, r
    with open(cfg, "a") as f:
        f.write(f"[trust]\nkey_secret_file = {path}\n")
    line = len(open(cfg).read().splitlines())
    r = work.run("key", config=cfg, env=env(work, SECRET_KEY="changeme"), timeout=30)
    assert r.rc == 2 and f"{cfg}:{line}: key_secret_file: secret files are not read from a config file" in r.stderr, r
    assert "set PGSTASH_KEY_SECRET_FILE in the environment instead" in r.stderr, r
    assert "not a regular file" not in r.stderr and "larger than" not in r.stderr, r


def test_bad_key_env_name_names_file_and_line(work):
    cfg = config(work, "key_env = GOOD 9BAD\n")
    r = work.run("key", config=cfg, env=env(work))
    assert r.rc == 2, r
    line = open(cfg).read().splitlines().index("key_env = GOOD 9BAD") + 1
    assert f"{cfg}:{line}" in r.stderr and "9BAD" in r.stderr, r


# ---- initdb.d .sh files as the official image runs them (issue 16) ---------------------------
# Scripts written for the official image: a non-executable one is sourced into its bash, where
# docker_process_sql, file_env and "${psql[@]}" exist and `set -Eeo pipefail` holds; an executable one
# is executed on its own (no helpers).

SOURCED = """\
#!/usr/bin/env bash
file_env 'APP_PASSWORD'
docker_process_sql <<-EOSQL
	CREATE ROLE app_user LOGIN PASSWORD '$APP_PASSWORD';
	CREATE TABLE from_sourced (pw_len int);
	INSERT INTO from_sourced VALUES (length('$APP_PASSWORD'));
EOSQL
"${psql[@]}" --dbname "$POSTGRES_DB" -c 'CREATE TABLE from_psql_array (i int)'
"""

EXECUTED = """\
#!/bin/sh
set -e
if command -v docker_process_sql >/dev/null 2>&1; then echo "helpers leaked into an executed script"; exit 1; fi
psql -v ON_ERROR_STOP=1 -c 'CREATE TABLE from_executed (i int)'
"""


@pytest.mark.slow
def test_initdb_d_sh_sourced_with_helpers_or_executed(work):
    cfg = config(work)
    pw = work.file("app_pw", "s3cret-app\n")
    work.file("initdb.d/10-sourced.sh", SOURCED, mode=0o644)
    work.file("initdb.d/20-executed.sh", EXECUTED, mode=0o755)
    r = work.run("prepare", config=cfg, env=env(work, APP_PASSWORD_FILE=pw), timeout=180)
    assert r.rc == 0, r
    assert "sourcing" in r.stderr and "10-sourced.sh" in r.stderr, r
    assert work.sql("select pw_len from from_sourced", db="app") == str(len("s3cret-app"))
    assert work.sql("select count(*) from pg_roles where rolname = 'app_user'", db="app") == "1"
    assert work.sql("select count(*) from from_psql_array", db="app") == "0"
    assert work.sql("select count(*) from from_executed", db="app") == "0"


@pytest.mark.slow
def test_sourced_script_stops_at_the_first_failure(work):
    # `set -Eeo pipefail`, as the official entrypoint: a failing command ends the script, exit 3.
    cfg = config(work)
    work.file("initdb.d/10-fails.sh", "false | true\nfalse\ndocker_process_sql -c 'CREATE TABLE never (i int)'\n",
              mode=0o644)
    r = work.run("prepare", config=cfg, env=env(work), timeout=180)
    assert r.rc == 3, r
    assert "10-fails.sh" in r.stderr, r
