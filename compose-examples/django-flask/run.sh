#!/bin/sh
# run.sh — the django-flask stack in one command.
#
#   ./run.sh          build the three images, start the pgstash sidecar on a
#                     fresh PGDATA volume, run the Django and the Flask test
#                     suites against it, print the sidecar's cache lines, and
#                     take the stack down again.  The cache volume stays: the
#                     first run is a cache miss (both repos' migrations run in
#                     containers), every later run with the same migration
#                     files is a hit.  Exit status 0 only if both suites pass.
#   ./run.sh key      print the cache key the sidecar computes (same image,
#                     config, mounts and environment: `pgstash key` in a
#                     one-off container of the db service)
#   ./run.sh clean    remove the stack with its volumes, the cache included
#
# Environment: COMPOSE_PROJECT_NAME (default pgstash-django-flask); KEEP=1
# leaves the stack running after the tests; NO_BUILD=1 skips the build (the
# images exist already: a CI job that built or loaded them); plus the
# variables docker-compose.yml reads (POSTGRES_PASSWORD, PGSTASH_IMAGE,
# PGSTASH_CACHE).
set -eu
cd "$(dirname "$0")"

COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-pgstash-django-flask}
export COMPOSE_PROJECT_NAME
if command -v docker-compose >/dev/null 2>&1; then
	compose() { docker-compose "$@"; }
else
	compose() { docker compose "$@"; }
fi
# Compose's own normalisation of the project name, for the volume's name.
project=$(printf '%s' "$COMPOSE_PROJECT_NAME" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9_-')
say() { printf '\n== %s\n' "$*"; }

fresh_pgdata() {
	compose down --remove-orphans >/dev/null 2>&1 || true
	docker volume rm -f "${project}_pgdata" >/dev/null
}

case ${1:-test} in
test) ;;
key)
	compose run --rm --no-deps -T db key
	exit
	;;
clean)
	compose down --volumes --remove-orphans
	exit
	;;
*)
	echo "usage: $0 [test|key|clean]" >&2
	exit 2
	;;
esac

if [ "${NO_BUILD:-0}" != 1 ]; then
	say "building the images"
	# The migration containers run the images' copies of the repos while the
	# key hashes the mounted checkouts: building first keeps the two the same.
	compose build
fi

say "starting the pgstash sidecar on a fresh PGDATA (the cache volume is kept)"
fresh_pgdata
if [ "${KEEP:-0}" != 1 ]; then
	trap fresh_pgdata EXIT
fi
compose up -d --no-build db

status=0
say "Django tests (waits for the sidecar to turn healthy)"
compose run --rm django-tests || status=1
say "Flask tests"
compose run --rm flask-tests || status=1

say "what the sidecar did"
compose logs --no-color db | grep -E 'pgstash: (info: (key|cache|snapshot|step|bootstrap)|warning|error)' || true

if [ $status -ne 0 ]; then
	say "a test suite failed; the sidecar's whole log:"
	compose logs --no-color db || true
	exit 1
fi
say "both test suites passed"
