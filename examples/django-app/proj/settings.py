"""Settings for the pgstash example project.

The database comes from the libpq environment pgstash gives every migration
step (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE); the defaults suit a
local server on Debian's default socket directory.
"""
import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "pgstash-example-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "accounts",
    "shop",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "app"),
        "HOST": os.environ.get("PGHOST", "/var/run/postgresql"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }
}

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
