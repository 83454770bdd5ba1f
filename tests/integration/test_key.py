"""`pgstash key` and `key --explain`: the cache key is a function of the
migration files' relative paths and bytes, the run commands, the step env and
the server's major version, and of nothing else (issue 2, "Must hold")."""
import glob
import hashlib
import os
import platform
import re
import shutil
from fnmatch import fnmatchcase

import pytest

from helpers import BASE_PATH, EXAMPLES, PG_BINDIR, REPO, chown_tree, need_unprivileged, pg_major

FILE_RE = re.compile(r"^file (\S+) (\S+) sha256=([0-9a-f]{64})$")


def edit(path, old, new, count=1):
    with open(path) as f:
        text = f.read()
    assert text.count(old) == count, f"{old!r} appears {text.count(old)} times in {path}"
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def expected_files(root, globs, exclude=()):
    """What the contract says a step's file list is: the globs under root,
    minus the excludes, as relative paths sorted bytewise."""
    found = set()
    for g in globs:
        for p in glob.glob(g, root_dir=root):
            if os.path.isfile(os.path.join(root, p)):
                found.add(p)
    found = {p for p in found if not any(fnmatchcase(p, e) for e in exclude)}
    return sorted(found, key=lambda p: p.encode())


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def manifest_files(manifest):
    out = []
    for line in manifest.splitlines():
        m = FILE_RE.match(line)
        if m:
            out.append(m.groups())
    return out


# ---- format --------------------------------------------------------------------

def test_key_is_64_hex_and_stable(work, examples):
    k1 = work.key(examples)
    k2 = work.key(examples)
    assert k1 == k2


def test_key_from_pgstash_config_env(work, examples):
    assert work.key(env={"PGSTASH_CONFIG": examples}) == work.key(examples)


def test_explain_is_the_manifest(work, examples):
    r = work.run("key", "--explain", config=examples)
    assert r.rc == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "pgstash-manifest 1", r
    assert f"postgres {pg_major()} {platform.machine()}" in lines, r
    # key = SHA-256 of the manifest text
    assert hashlib.sha256(r.stdout.encode()).hexdigest() == work.key(examples), r


def test_explain_lists_every_migration_file_with_its_digest(work, examples):
    r = work.run("key", "--explain", config=examples)
    assert r.rc == 0, r
    base = os.path.dirname(examples)
    want = []
    for step, root, globs, exclude in (
        ("django", "django-app", ["*/migrations/*.py"], ["*/__pycache__/*"]),
        ("flask", "flask-app", ["migrations/versions/*.py", "migrations/env.py"], ["*/__pycache__/*"]),
    ):
        for rel in expected_files(os.path.join(base, root), globs, exclude):
            want.append((step, rel, sha256_file(os.path.join(base, root, rel))))
    assert manifest_files(r.stdout) == want, r
    # no absolute paths: the key must not depend on where the checkout lives
    assert base not in r.stdout, r


# ---- same inputs, same key -----------------------------------------------------------

def copy_reordered(src, dst, mtime):
    """Copies src to dst creating files in reverse order, all with `mtime`."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for n in filenames:
            paths.append(os.path.relpath(os.path.join(dirpath, n), src))
    for rel in sorted(paths, reverse=True):
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copyfile(os.path.join(src, rel), os.path.join(dst, rel))
        os.utime(os.path.join(dst, rel), (mtime, mtime))


def test_same_files_elsewhere_in_another_order_with_other_mtimes_same_key(work):
    a = os.path.join(work.path, "a", "examples")
    b = os.path.join(work.path, "some", "deeper", "place", "ex")
    shutil.copytree(EXAMPLES, a, ignore=shutil.ignore_patterns("__pycache__"))
    copy_reordered(EXAMPLES, b, mtime=1_000_000_000)
    chown_tree(work.path)
    ka = work.key(os.path.join(a, "pgstash.ini"))
    kb = work.key(os.path.join(b, "pgstash.ini"), env={"PGDATA": os.path.join(work.path, "elsewhere")})
    assert ka == kb


def test_absolute_roots_at_different_paths_same_key(work):
    keys = []
    for d in ("one", "two/nested"):
        root = os.path.join(work.path, d)
        shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns("__pycache__"))
        ini = os.path.join(root, "pgstash.ini")
        edit(ini, "root       = django-app", f"root       = {root}/django-app")
        edit(ini, "root       = flask-app", f"root       = {root}/flask-app")
        chown_tree(work.path)
        keys.append(work.key(ini))
    assert keys[0] == keys[1]


# ---- any real change, another key ----------------------------------------------------

def _byte_changed(base, ini):
    p = os.path.join(base, "django-app/shop/migrations/0003_order.py")
    with open(p, "rb") as f:
        data = bytearray(f.read())
    data[-2] = ord("#") if data[-2] != ord("#") else ord(" ")
    with open(p, "wb") as f:
        f.write(data)


def _file_added(base, ini):
    with open(os.path.join(base, "django-app/shop/migrations/0005_noop.py"), "w") as f:
        f.write("from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n"
                "    dependencies = [('shop', '0004_product_category_price_index')]\n    operations = []\n")


def _file_removed(base, ini):
    os.unlink(os.path.join(base, "flask-app/migrations/versions/0003_post_published_at.py"))


def _file_renamed(base, ini):
    d = os.path.join(base, "flask-app/migrations/versions")
    os.rename(os.path.join(d, "0002_tags.py"), os.path.join(d, "0002_tags_renamed.py"))


def _file_moved_to_another_dir(base, ini):
    # same bytes, same name, another directory inside the step
    d = os.path.join(base, "django-app")
    os.makedirs(os.path.join(d, "blog/migrations"))
    os.rename(os.path.join(d, "accounts/migrations/0002_customer_phone.py"),
              os.path.join(d, "blog/migrations/0002_customer_phone.py"))


def _run_changed(base, ini):
    edit(ini, "run        = python3 manage.py migrate --noinput",
         "run        = python3 manage.py migrate --noinput --verbosity 2")


def _step_env_changed(base, ini):
    edit(ini, "env        = FLASK_APP=app", "env        = FLASK_APP=app.py")


def _database_changed(base, ini):
    edit(ini, "database   = flask_app", "database   = app")


MUTATIONS = {
    "one-byte-changed": _byte_changed,
    "file-added": _file_added,
    "file-removed": _file_removed,
    "file-renamed": _file_renamed,
    "file-moved": _file_moved_to_another_dir,
    "run-command-changed": _run_changed,
    "step-env-changed": _step_env_changed,
    "step-database-changed": _database_changed,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_change_gives_another_key(work, examples, mutation):
    before = work.key(examples)
    MUTATIONS[mutation](os.path.dirname(examples), examples)
    chown_tree(os.path.dirname(examples))
    after = work.key(examples)
    assert before != after, f"{mutation}: key unchanged"


def test_pg_major_changes_the_key(work, examples):
    fake = work.fake_bindir("postgres (PostgreSQL) 16.1")
    real = work.key(examples)
    r = work.run("key", "--explain", config=examples, env={"PGSTASH_PG_BINDIR": fake})
    assert r.rc == 0, r
    assert f"postgres 16 {platform.machine()}" in r.stdout.splitlines(), r
    assert work.key(examples, env={"PGSTASH_PG_BINDIR": fake}) != real


def test_pg_minor_does_not_change_the_key(work, examples):
    major = pg_major()
    fake = work.fake_bindir(f"postgres (PostgreSQL) {major}.999 (Debian {major}.999-1)")
    assert work.key(examples, env={"PGSTASH_PG_BINDIR": fake}) == work.key(examples)


def test_pg_config_beside_postgres_is_not_run(work, examples):
    """Without pg_bindir: a pg_config on PATH with postgres beside it (the image's PATH) names its directory
    without being run; one elsewhere is run."""
    ran = os.path.join(work.path, "pg_config.ran")
    beside = work.wrapped_bindir("pg_config", f"touch {ran}\nexit 1", "with-pg-config")
    env = {"PGSTASH_PG_BINDIR": None, "PATH": f"{beside}:{BASE_PATH}"}
    r = work.run("-v", "key", config=examples, env=env)
    assert r.rc == 0, r
    assert f'in "{beside}" (from the directory of pg_config)' in r.stderr, r
    assert not os.path.exists(ran), r
    assert r.stdout.strip() == work.key(examples)

    alone = os.path.join(work.path, "pg-config-alone")
    os.makedirs(alone)
    work.file("pg-config-alone/pg_config", f"#!/bin/sh\ntouch {ran}\necho {PG_BINDIR}\n", mode=0o755)
    env["PATH"] = f"{alone}:{BASE_PATH}"
    r = work.run("-v", "key", config=examples, env=env)
    assert r.rc == 0, r
    assert f'in "{PG_BINDIR}" (from pg_config --bindir)' in r.stderr, r
    assert os.path.exists(ran), r


# ---- what must not matter ---------------------------------------------------------------

def _outside_globs(base):
    with open(os.path.join(base, "django-app/shop/models.py"), "a") as f:
        f.write("\n# edited\n")
    with open(os.path.join(base, "flask-app/app.py"), "a") as f:
        f.write("\n# edited\n")
    with open(os.path.join(base, "flask-app/migrations/README"), "a") as f:
        f.write("more words\n")
    with open(os.path.join(base, "django-app/shop/migrations/notes.txt"), "w") as f:
        f.write("not a .py file\n")


def _pycache(base):
    d = os.path.join(base, "django-app/shop/migrations/__pycache__")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "0001_initial.cpython-311.pyc"), "wb") as f:
        f.write(b"\x00compiled\x00")


def _mtime_only(base):
    for dirpath, _, filenames in os.walk(base):
        for n in filenames:
            os.utime(os.path.join(dirpath, n), (123456789, 123456789))


@pytest.mark.parametrize("change", [_outside_globs, _pycache, _mtime_only], ids=["outside-globs", "pycache", "mtime"])
def test_irrelevant_change_keeps_the_key(work, examples, change):
    before = work.key(examples)
    change(os.path.dirname(examples))
    chown_tree(os.path.dirname(examples))
    assert work.key(examples) == before


def test_excluded_file_has_no_effect(work, examples):
    edit(examples, "exclude    = */__pycache__/*\nrun        = python3 manage.py",
         "exclude    = */__pycache__/* */migrations/scratch_*\nrun        = python3 manage.py")
    before = work.key(examples)
    work.file("examples/django-app/shop/migrations/scratch_experiment.py", "print('hi')\n")
    assert work.key(examples) == before
    # the same file, not excluded, does count: the glob does see it
    work.file("examples/django-app/shop/migrations/experiment.py", "print('hi')\n")
    assert work.key(examples) != before


def test_database_password_is_not_part_of_the_key(work, examples):
    assert (work.key(examples, env={"POSTGRES_PASSWORD": "first-password"})
            == work.key(examples, env={"POSTGRES_PASSWORD": "second-password"})
            == work.key(examples))


# ---- secrets ------------------------------------------------------------------------------

def test_secrets_never_appear_in_explain(work, examples):
    step_secret = "s3cr3t-step-value-81c7"
    password = "pw-secret-5f2e9a"
    edit(examples, "env        = FLASK_APP=app", f"env        = FLASK_APP=app API_TOKEN={step_secret}")
    for extra in ({}, {"POSTGRES_PASSWORD": password}):
        r = work.run("-v", "key", "--explain", config=examples, env=extra)
        assert r.rc == 0, r
        for secret in (step_secret, password):
            assert secret not in r.stdout, r
            assert secret not in r.stderr, r
    pwfile = work.file("pw.txt", password + "\n")
    r = work.run("-v", "key", "--explain", config=examples, env={"POSTGRES_PASSWORD_FILE": pwfile})
    assert r.rc == 0, r
    assert password not in r.stdout + r.stderr, r


# ---- clear errors -----------------------------------------------------------------------

def test_missing_step_root(work, examples):
    edit(examples, "root       = flask-app", "root       = no-such-repo")
    r = work.run("key", config=examples)
    assert r.rc == 2, r
    assert "no-such-repo" in r.stderr, r
    assert r.stdout == "", r


def test_unreadable_migration_file(work, examples):
    need_unprivileged()
    p = os.path.join(os.path.dirname(examples), "django-app/shop/migrations/0003_order.py")
    os.chmod(p, 0)
    r = work.run("key", config=examples)
    assert r.rc != 0, r
    assert r.stdout == "", r
    assert "shop/migrations/0003_order.py" in r.stderr, r
    assert "ermission denied" in r.stderr, r


def test_glob_matching_nothing_is_an_error_unless_optional(work, examples):
    """Issue 18: a glob that stops matching (python3.11 -> python3.12 in a site-packages path) used to be a
    warning and `key` exited 0 with a key missing those files."""
    edit(examples, "migrations = migrations/versions/*.py migrations/env.py",
         "migrations = migrations/versions/*.py migrations/env.py sql/nothing-here/*.sql")
    r = work.run("key", config=examples)
    assert r.rc == 2, r
    assert r.stdout == "", r
    assert re.search(r"error: \S+/pgstash\.ini:\d+: step \"flask\": \"sql/nothing-here/\*\.sql\" matches no file", r.stderr), r
    assert "?sql/nothing-here/*.sql" in r.stderr, r
    edit(examples, "sql/nothing-here/*.sql", "?sql/nothing-here/*.sql")
    r = work.run("key", config=examples)
    assert r.rc == 0, r
    assert re.fullmatch(r"[0-9a-f]{64}\n", r.stdout), r


def test_recursive_glob(work, examples):
    """`**` spans directories: one pattern for every app's migrations, at any depth."""
    k = work.key(config=examples)
    edit(examples, "migrations = */migrations/*.py", "migrations = **/migrations/*.py")
    assert work.key(config=examples) == k
    work.file("examples/django-app/vendor/deep/app/migrations/0001_initial.py", "# deep\n")
    explain = work.run("key", "--explain", config=examples)
    assert "file django vendor/deep/app/migrations/0001_initial.py sha256=" in explain.stdout, explain


def test_step_matching_no_file_is_an_error(work, examples):
    edit(examples, "migrations = migrations/versions/*.py migrations/env.py",
         "migrations = db/*.sql")
    r = work.run("key", config=examples)
    assert r.rc == 2, r
    assert "flask" in r.stderr, r
    assert r.stdout == "", r


def test_no_postgres_binaries(work, examples):
    empty = os.path.join(work.path, "empty-bindir")
    os.makedirs(empty)
    chown_tree(empty)
    r = work.run("key", config=examples, env={"PGSTASH_PG_BINDIR": empty})
    assert r.rc != 0, r
    assert r.stdout == "", r
    assert "postgres" in r.stderr, r


def test_line_limit_in_readme_and_message_agree(work):
    """Issue 18: the README said 199 bytes, the message 198.  The README's number is the longest line read."""
    with open(os.path.join(REPO, "README.md")) as f:
        limit = int(re.search(r"inih's limit \((\d+) bytes", f.read()).group(1))
    for n, ok in ((limit, True), (limit + 1, False)):
        cfg = work.file(f"line{n}.ini", "[pgstash]\ncache_dir = " + "x" * (n - len("cache_dir = ")) + "\n")
        r = work.run("key", config=cfg)
        if ok:
            assert "line too long" not in r.stderr, r
        else:
            assert r.rc == 2 and f"line too long ({n} bytes; the limit is {limit})" in r.stderr, r
