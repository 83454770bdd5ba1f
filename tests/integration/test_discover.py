"""Issue 18: `discover = django | alembic` asks the framework, with the step's own
Python, for the migration files it applies — installed packages included — so an
upgraded package's migration is a new key and a rebuild, not a stale hit.  Real
Django and Alembic (Debian's python3-django / python3-alembic); the installed
package lives outside the step root and reaches Python through the step's env
(PYTHONPATH), as a site-packages would."""
import os
import re
import subprocess

import pytest

from helpers import need

EXT_MODELS = """from django.db import models


class Widget(models.Model):
    name = models.TextField()
"""
EXT_0001 = """from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(name="Widget", fields=[
            ("id", models.BigAutoField(primary_key=True, serialize=False)),
            ("name", models.TextField()),
        ]),
    ]
"""
# What an upgrade of the installed package brings: one more model, one more migration.
EXT_0002 = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("extpkg", "0001_initial")]
    operations = [
        migrations.CreateModel(name="ApiToken", fields=[
            ("id", models.BigAutoField(primary_key=True, serialize=False)),
            ("token", models.TextField()),
        ]),
    ]
"""
SETTINGS = """import os
SECRET_KEY = "x"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "extpkg", "shop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": os.environ.get("PGDATABASE", "app"),
                         "HOST": os.environ.get("PGHOST", ""), "PORT": os.environ.get("PGPORT", "5432"),
                         "USER": os.environ.get("PGUSER", "postgres")}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
"""
SHOP_0001 = """from django.db import migrations


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [migrations.RunSQL("create table shop_thing (id int)", "drop table shop_thing")]
"""
MANAGE = """import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
"""


def have(module):
    return subprocess.run(["/usr/bin/python3", "-c", f"import {module}"], capture_output=True).returncode == 0


def django_project(work, settings="proj.settings"):
    need(have("django"), "/usr/bin/python3 has no django (python3-django)")
    work.file("proj/manage.py", MANAGE)
    work.file("proj/proj/__init__.py")
    work.file("proj/proj/settings.py", SETTINGS)
    work.file("proj/shop/__init__.py")
    work.file("proj/shop/migrations/__init__.py")
    work.file("proj/shop/migrations/0001_initial.py", SHOP_0001)
    # The installed package: outside the step root, found through PYTHONPATH.
    work.file("venv/lib/extpkg/__init__.py")
    work.file("venv/lib/extpkg/models.py", EXT_MODELS)
    work.file("venv/lib/extpkg/migrations/__init__.py")
    work.file("venv/lib/extpkg/migrations/0001_initial.py", EXT_0001)
    return work.file("dj.ini",
                     "[database]\nname = app\n"
                     f"[step django]\nroot = proj\nmigrations = shop/migrations/*.py\n"
                     "discover = django\n"
                     "run = python3 manage.py migrate --noinput\n"
                     f"env = DJANGO_SETTINGS_MODULE={settings}\n"
                     f"env = PYTHONPATH={work.path}/venv/lib\n")


def prepare(work, cfg, name):
    pgdata = os.path.join(work.path, name)
    r = work.run("prepare", config=cfg, env={"PGDATA": pgdata, "PGSTASH_SOCKET_DIR": work.sock}, timeout=600)
    return r, pgdata


def test_installed_package_upgrade_changes_the_key_and_rebuilds(work):
    cfg = django_project(work)
    explain = work.run("key", "--explain", config=cfg)
    assert explain.rc == 0, explain
    lines = explain.stdout.splitlines()
    assert "step django layer=schema run=\"python3 manage.py migrate --noinput\" discover=django" in explain.stdout
    # The installed package, Debian's django.contrib apps and the project's own app, each named by origin.
    assert any(re.fullmatch(r"file django extpkg/migrations/0001_initial\.py sha256=[0-9a-f]{64} origin=django:extpkg",
                            l) for l in lines), explain.stdout
    assert any(l.startswith("file django django/contrib/auth/migrations/0001_initial.py ")
               and l.endswith(" origin=django:auth") for l in lines), explain.stdout
    assert any(l.startswith("file django django/contrib/contenttypes/migrations/0001_initial.py ")
               and l.endswith(" origin=django:contenttypes") for l in lines), explain.stdout
    assert any(l.endswith(" origin=django:shop") for l in lines), explain.stdout
    key1 = work.key(config=cfg)

    r1, pg1 = prepare(work, cfg, "pg1")
    assert r1.rc == 0 and "cache miss" in r1.stderr, r1
    assert work.sql("select count(*) from extpkg_widget", db="app", pgdata=pg1) == "0"
    r2, _ = prepare(work, cfg, "pg2")
    assert r2.rc == 0 and "cache hit" in r2.stderr, r2

    # The package is upgraded in place: a new migration outside the step root.
    work.file("venv/lib/extpkg/migrations/0002_apitoken.py", EXT_0002)
    key2 = work.key(config=cfg)
    assert key2 != key1
    explain2 = work.run("key", "--explain", config=cfg).stdout
    new = set(explain2.splitlines()) - set(lines)
    assert len(new) == 1 and next(iter(new)).startswith("file django extpkg/migrations/0002_apitoken.py "), new
    r3, pg3 = prepare(work, cfg, "pg3")
    assert r3.rc == 0 and "cache miss" in r3.stderr and "cache hit" not in r3.stderr, r3
    assert "Applying extpkg.0002_apitoken" in r3.stderr, r3
    assert work.sql("select count(*) from extpkg_apitoken", db="app", pgdata=pg3) == "0"

    # An edit of an installed migration changes the key too.
    with open(os.path.join(work.path, "venv/lib/extpkg/migrations/0002_apitoken.py"), "a") as f:
        f.write("# edited\n")
    assert work.key(config=cfg) not in (key1, key2)


def test_key_same_in_two_checkouts(work):
    """Discovered paths are relative to their package root: another checkout, another key? No."""
    cfg = django_project(work)
    k1 = work.key(config=cfg)
    os.rename(os.path.join(work.path, "proj"), os.path.join(work.path, "moved"))
    with open(cfg) as f:
        text = f.read().replace("root = proj", "root = moved")
    work.file("dj.ini", text)
    assert work.key(config=cfg) == k1


def test_broken_settings_is_exit_2_with_djangos_message(work):
    cfg = django_project(work)
    work.file("proj/proj/settings.py", "import nosuch_module_of_settings\n")
    r = work.run("key", config=cfg)
    assert r.rc == 2, r
    assert r.stdout == "", r
    assert "ModuleNotFoundError: No module named 'nosuch_module_of_settings'" in r.stderr, r
    assert re.search(r"error: step \"django\": discover = django failed \(exit status 1\): ModuleNotFoundError", r.stderr), r
    # prepare stops there too: nothing is built under a key that misses files.
    r2, pg = prepare(work, cfg, "pg1")
    assert r2.rc == 2 and "cache miss" not in r2.stderr, r2

    # No settings at all: Django's own ImproperlyConfigured.
    cfg2 = django_project(work, settings="")
    with open(cfg2) as f:
        text = f.read().replace("env = DJANGO_SETTINGS_MODULE=\n", "")
    work.file("dj.ini", text)
    r3 = work.run("key", config=cfg2)
    assert r3.rc == 2 and "ImproperlyConfigured" in r3.stderr and "DJANGO_SETTINGS_MODULE" in r3.stderr, r3


def test_no_python_in_run_is_a_config_error(work):
    cfg = django_project(work)
    with open(cfg) as f:
        text = f.read().replace("run = python3 manage.py migrate --noinput", "run = /bin/sh -c 'exit 0'")
    work.file("dj.ini", text)
    r = work.run("key", config=cfg)
    assert r.rc == 2, r
    assert "dj.ini:6: step \"django\": discover = django: run starts neither with python" in r.stderr, r
    work.file("dj.ini", text + "python = /usr/bin/python3\n")
    assert work.run("key", config=cfg).rc == 0


def test_alembic_non_default_script_location(work):
    need(have("alembic"), "/usr/bin/python3 has no alembic (python3-alembic)")
    work.file("svc/conf/alembic.ini", "[alembic]\nscript_location = %(here)s/../db/schema\n")
    work.file("svc/db/schema/env.py", "# env\n")
    work.file("svc/db/schema/versions/a1_first.py",
              "revision = 'a1'\ndown_revision = None\nbranch_labels = None\ndepends_on = None\n")
    cfg = work.file("al.ini", "[step svc]\nroot = svc\ndiscover = alembic conf/alembic.ini\n"
                              "run = python3 -m alembic -c conf/alembic.ini upgrade head\n")
    r = work.run("key", "--explain", config=cfg)
    assert r.rc == 0, r
    assert re.search(r"^file svc env\.py sha256=[0-9a-f]{64} origin=alembic:db/schema$", r.stdout, re.M), r.stdout
    assert re.search(r"^file svc versions/a1_first\.py sha256=\S+ origin=alembic:db/schema$", r.stdout, re.M), r.stdout
    k1 = work.key(config=cfg)
    work.file("svc/db/schema/versions/b2_second.py",
              "revision = 'b2'\ndown_revision = 'a1'\nbranch_labels = None\ndepends_on = None\n")
    k2 = work.key(config=cfg)
    assert k2 != k1
    # A file in the directory that is no revision is not in the key.
    work.file("svc/db/schema/versions/README.txt", "notes\n")
    assert work.key(config=cfg) == k2
    # A broken revision graph is Alembic's error, exit 2.
    work.file("svc/db/schema/versions/c3_bad.py",
              "revision = 'c3'\ndown_revision = 'nosuch'\nbranch_labels = None\ndepends_on = None\n")
    r2 = work.run("key", config=cfg)
    assert r2.rc == 2 and "discover = alembic failed" in r2.stderr, r2


def test_examples_with_discover_build(work, examples):
    """The example repos (Django, Flask-Migrate) keyed by discovery alone, built for real."""
    need(have("django") and have("flask_migrate"), "python3-django / python3-flask-migrate missing")
    ex = os.path.dirname(examples)
    cfg = work.file("ex.ini",
                    "[database]\nname = app\nextra = flask_app\n"
                    f"[step django]\nroot = {ex}/django-app\ndiscover = django\n"
                    "run = python3 manage.py migrate --noinput\nenv = DJANGO_SETTINGS_MODULE=proj.settings\n"
                    f"[step flask]\nroot = {ex}/flask-app\ndiscover = alembic migrations/alembic.ini\n"
                    "run = python3 -m flask db upgrade\ndatabase = flask_app\nenv = FLASK_APP=app\n")
    r, pg = prepare(work, cfg, "pg1")
    assert r.rc == 0 and "cache miss" in r.stderr, r
    assert work.sql("select count(*) from shop_category", db="app", pgdata=pg) == "3"
    explain = work.run("key", "--explain", config=cfg).stdout
    assert "origin=alembic:migrations" in explain and "origin=django:shop" in explain, explain
