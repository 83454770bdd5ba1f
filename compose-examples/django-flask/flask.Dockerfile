# The Flask repo's image (pgstash-example/flask): the app from
# examples/flask-app on Debian's Flask, Flask-SQLAlchemy, Flask-Migrate
# (Alembic), psycopg2 and pytest.  pgstash runs `flask db upgrade` in a
# container of this image (pgstash.ini, [step flask]); the flask-tests service
# runs pytest in another one.
#
# Built with the Flask repo itself as the context (docker-compose.yml:
# context ../../examples/flask-app), so examples/ stays the one copy of the
# app; in a real multi-repo setup this file would live in that repo.
FROM debian:bookworm-slim

RUN set -eu; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq; \
	apt-get install -y -qq --no-install-recommends python3 python3-flask python3-flask-sqlalchemy \
		python3-flask-migrate python3-alembic python3-psycopg2 python3-pytest >/dev/null; \
	rm -rf /var/lib/apt/lists/*; \
	useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app

ENV PYTHONDONTWRITEBYTECODE=1 \
	PYTHONUNBUFFERED=1 \
	FLASK_APP=app

WORKDIR /app
COPY . .
RUN find . -name __pycache__ -prune -exec rm -rf {} +

USER app
# DATABASE_URL names the database: pgstash sets it for the migration step,
# the compose file for the tests.  No .pytest_cache: the code is read-only.
CMD ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
