# The Django repo's image (pgstash-example/django): the app from
# examples/django-app on Debian's own Django and psycopg2.  pgstash runs its
# migrations in a container of this image (pgstash.ini, [step django]); the
# django-tests service runs its test suite in another one.
#
# Built with the Django repo itself as the context (docker-compose.yml:
# context ../../examples/django-app), so examples/ stays the one copy of the
# app; in a real multi-repo setup this file would live in that repo.
FROM debian:bookworm-slim

RUN set -eu; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq; \
	apt-get install -y -qq --no-install-recommends python3 python3-django python3-psycopg2 >/dev/null; \
	rm -rf /var/lib/apt/lists/*; \
	useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app

# Nothing is written next to the code: the image runs with a read-only view of it.
ENV PYTHONDONTWRITEBYTECODE=1 \
	PYTHONUNBUFFERED=1 \
	DJANGO_SETTINGS_MODULE=proj.settings

WORKDIR /app
COPY . .
# A checkout that has run its tests on the host carries __pycache__ directories.
RUN find . -name __pycache__ -prune -exec rm -rf {} +

USER app
# The database comes from PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE
# (proj/settings.py): pgstash sets them for the migration step, the compose
# file for the tests.
CMD ["python3", "manage.py", "test", "--keepdb", "--noinput"]
