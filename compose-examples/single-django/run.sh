#!/bin/sh
# run.sh — the single-django stack in one command.
#
#   ./run.sh          build the pgstash image (../..) and its Django extension,
#                     start the sidecar, wait until it is healthy, show what
#                     pgstash did and how to connect.  It keeps running.
#   ./run.sh down     stop it (the cache and PGDATA volumes stay)
#   ./run.sh clean    remove it with its volumes, the cache included
#
# Environment: COMPOSE_PROJECT_NAME (default pgstash-single-django); NO_BUILD=1
# skips the builds (the images exist already); plus the variables
# docker-compose.yml reads (POSTGRES_PASSWORD, PGSTASH_IMAGE, PGSTASH_PORT,
# PGSTASH_CACHE); PG_MAJOR and DEBIAN_SUITE pick the base image's PostgreSQL:
# 15 on bookworm (the default) or 17 on trixie (PG_MAJOR=17
# DEBIAN_SUITE=trixie PGSTASH_IMAGE=pgstash:17 ./run.sh).
set -eu
cd "$(dirname "$0")"

COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-pgstash-single-django}
export COMPOSE_PROJECT_NAME
if command -v docker-compose >/dev/null 2>&1; then
	compose() { docker-compose "$@"; }
else
	compose() { docker compose "$@"; }
fi

case ${1:-up} in
up) ;;
down) compose down --remove-orphans; exit ;;
clean) compose down --volumes --remove-orphans; exit ;;
*) echo "usage: $0 [up|down|clean]" >&2; exit 2 ;;
esac

if [ "${NO_BUILD:-0}" != 1 ]; then
	# The base image first: the Dockerfile here starts FROM it.
	docker build --build-arg PG_MAJOR="${PG_MAJOR:-15}" --build-arg DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}" \
		-t "${PGSTASH_IMAGE:-pgstash:latest}" ../..
	compose build
fi
compose up -d --no-build

id=$(compose ps -q db)
echo "waiting for the sidecar to turn healthy..."
while :; do
	state=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$id")
	case $state in
	*" healthy") break ;;
	exited*|dead*)
		compose logs --no-color db
		echo "run.sh: the sidecar exited" >&2
		exit 1
		;;
	esac
	sleep 0.5
done
compose logs --no-color db | grep -E 'pgstash: |\[step ' || true
cat <<MSG

The migrated database is up:
  COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME docker-compose exec db psql -U postgres -d app -c '\\dt'
  psql "postgresql://postgres:${POSTGRES_PASSWORD:-example}@127.0.0.1:${PGSTASH_PORT:-5432}/app"
Stop it with ./run.sh down.
MSG
