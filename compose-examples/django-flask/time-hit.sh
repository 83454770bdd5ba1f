#!/bin/sh
# time-hit.sh — how long the hit path takes, from `docker run -d` to the first
# "healthy" that `docker inspect` reports, with a pre-filled cache volume.
#
#   ./time-hit.sh [RUNS]        (default 5 runs)
#
# Uses the django-flask stack's image, config, repos and cache volume, each run
# on a fresh anonymous PGDATA volume: what a CI job or a `docker-compose up`
# on a warm cache pays.  Fills the cache first (./run.sh) when the volume
# holds no entry for the current key.  Three series:
#   - with the image's healthcheck (every 1 s): what compose's
#     `condition: service_healthy` waits for; docker runs the first check one
#     interval after the start, so this is quantised to whole seconds;
#   - with --health-interval=100ms: close to when the server really answers;
#   - the same with PGDATA on a tmpfs (--tmpfs): no disk writes for the
#     restore, which is what the hit path is bound by on a slow disk.
# Each line also shows pgstash's own "restored … in" and "bootstrap done in".
# shellcheck disable=SC2086  # $mounts is a list of words, split on purpose
set -eu
cd "$(dirname "$0")"

runs=${1:-5}
COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-pgstash-django-flask}
project=$(printf '%s' "$COMPOSE_PROJECT_NAME" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9_-')
image=${PGSTASH_IMAGE:-pgstash:latest}
cache=${PGSTASH_CACHE:-${project}_pgstash-cache}
here=$(pwd)
repos=$(cd ../../examples && pwd)

mounts="-v $here/pgstash.ini:/etc/pgstash/pgstash.ini:ro -v $repos/django-app:/repos/django:ro
	-v $repos/flask-app:/repos/flask:ro -v $cache:/var/cache/pgstash -v /var/run/docker.sock:/var/run/docker.sock"

now() { date +%s.%N; }

key=$(docker run --rm $mounts "$image" key)
short=$(printf '%.12s' "$key")
if ! docker run --rm $mounts "$image" ls | grep -q "^$short"; then
	echo "time-hit: no cache entry for key ${key} in $cache: filling it with ./run.sh" >&2
	./run.sh >/dev/null 2>&1 || { echo "time-hit: ./run.sh failed" >&2; exit 1; }
fi

one() { # one [docker run options]: prints seconds to healthy and pgstash's own times
	name="pgstash-time-hit-$$-$(date +%s%N)"
	t0=$(now)
	docker run -d --name "$name" -e POSTGRES_PASSWORD=example $mounts "$@" "$image" >/dev/null
	while :; do
		s=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$name")
		case $s in
		*" healthy") break ;;
		exited*) docker logs "$name" >&2; docker rm -f -v "$name" >/dev/null; exit 1 ;;
		esac
	done
	t1=$(now)
	logs=$(docker logs "$name" 2>&1)
	docker rm -f -v "$name" >/dev/null
	restored=$(printf '%s\n' "$logs" | sed -n 's/.*cache hit [0-9a-f]*: restored \([^ ]* [^ ]*\) in \([0-9.]* s\).*/\1 in \2/p')
	boot=$(printf '%s\n' "$logs" | sed -n 's/.*bootstrap done in \([0-9.]* s\).*/\1/p')
	[ -n "$restored" ] || { echo "time-hit: not a cache hit:" >&2; printf '%s\n' "$logs" >&2; exit 1; }
	awk -v a="$t0" -v b="$t1" -v r="$restored" -v d="$boot" \
		'BEGIN { printf "  run -d -> healthy %5.2f s   (pgstash: restored %s, bootstrap done in %s)\n", b - a, r, d }'
}

echo "image $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')), key $short, cache $cache"
echo "image healthcheck (interval 1 s):"
i=0; while [ $i -lt "$runs" ]; do one; i=$((i + 1)); done
echo "--health-interval=100ms:"
i=0; while [ $i -lt "$runs" ]; do one --health-interval=100ms; i=$((i + 1)); done
echo "--health-interval=100ms, PGDATA on a tmpfs:"
i=0; while [ $i -lt "$runs" ]; do one --health-interval=100ms --tmpfs /var/lib/postgresql/data; i=$((i + 1)); done
