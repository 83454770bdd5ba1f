#!/usr/bin/env bash
# make demo — pgstash in host mode on the two example repos (examples/): a
# cache miss (initdb + both repos' migrations + snapshot), then a hit into a
# fresh PGDATA, then a quick look at what the hit restored.
#
# On a fresh Debian machine it first checks for what it needs
# (scripts/install-deps --build); as root it installs what is missing,
# otherwise it prints the command and stops.  postgres refuses to run as root, so as root pgstash runs as the
# `postgres` user in a scratch directory under /tmp (KEEP=1 keeps it).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
PG_MAJOR=${PG_MAJOR:-15}
RUN_USER=${RUN_USER:-postgres}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f s", b - a }'; }

# ---- 1. what the demo needs --------------------------------------------------
# scripts/install-deps holds the one list: as root it installs what is missing,
# otherwise it prints the command to run and fails.  `make demo` has already
# run it (before compiling); SKIP_DEPS=1 skips it (a non-Debian host).
if [[ -z ${SKIP_DEPS:-} ]]; then
	"$repo/scripts/install-deps" --build || die "missing packages (see above)"
fi

# The Debian server binaries live outside PATH; pg_config (libpq-dev) points at them.
bindir=${PGSTASH_PG_BINDIR:-}
if [[ -z $bindir ]]; then
	if [[ -x /usr/lib/postgresql/$PG_MAJOR/bin/postgres ]]; then
		bindir=/usr/lib/postgresql/$PG_MAJOR/bin
	elif command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/postgres" ]]; then
		bindir=$(pg_config --bindir)
	else
		bindir=$(dirname "$(command -v postgres)")
	fi
fi

if [[ ! -x $repo/pgstash ]]; then
	say "building ./pgstash"
	make -C "$repo" pgstash
fi

# ---- 2. a scratch directory the unprivileged user owns ------------------------
# mkdir fails on anything already there (a file, a symlink someone planted).
work=/tmp/pgstash-demo.$$.$RANDOM
mkdir -m 0755 "$work" || die "could not create $work"
server_pgdata=
cleanup() {
	if [[ -n $server_pgdata && -f $server_pgdata/postmaster.pid ]]; then
		as_user "$bindir/pg_ctl" -D "$server_pgdata" -m fast -w stop >/dev/null 2>&1 || true
	fi
	if [[ ${KEEP:-0} == 1 ]]; then
		echo "demo: kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

if ((EUID == 0)); then
	id "$RUN_USER" >/dev/null 2>&1 || die "user \"$RUN_USER\" does not exist (the postgresql package creates it)"
	chown "$RUN_USER:" "$work"
fi

as_user() {
	if ((EUID == 0)); then
		runuser -u "$RUN_USER" -- "$@"
	else
		"$@"
	fi
}

# The repo may be root-owned: fine as long as the user can read it.  If it
# can't (a checkout under /root), run on a copy.
examples=$here
bin=$repo/pgstash
if ! as_user test -r "$examples/pgstash.ini" -a -r "$examples/django-app/manage.py" -a -x "$bin"; then
	echo "demo: $RUN_USER cannot read $repo; using a copy in $work"
	cp -a "$here" "$work/examples"
	install -m 0755 "$repo/pgstash" "$work/pgstash"
	((EUID == 0)) && chown -R "$RUN_USER:" "$work/examples" "$work/pgstash"
	examples=$work/examples
	bin=$work/pgstash
fi
mkdir -p "$work/cache" "$work/sock"
((EUID == 0)) && chown "$RUN_USER:" "$work/cache" "$work/sock"

# Every pgstash run gets a clean environment: Debian's python3 (where
# python3-django lives), the demo's cache, and trust auth on the socket.
pgstash_env=(
	env -i
	HOME="$work" LANG=C.UTF-8 PATH=/usr/bin:/bin TERM="${TERM:-dumb}"
	PGSTASH_CACHE_DIR="$work/cache" PGSTASH_PG_BINDIR="$bindir" PGSTASH_SOCKET_DIR="$work/sock"
	POSTGRES_HOST_AUTH_METHOD=trust
)

prepare() { # prepare PGDATA
	as_user install -d -m 0700 "$1"
	(cd "$work" && as_user "${pgstash_env[@]}" PGDATA="$1" "$bin" --config="$examples/pgstash.ini" prepare)
}

# ---- 3. miss, then hit ---------------------------------------------------------
say "pgstash key --explain (the manifest behind the cache key)"
(cd "$work" && as_user "${pgstash_env[@]}" PGDATA="$work/pgdata-1" "$bin" --config="$examples/pgstash.ini" key --explain)

say "run 1: empty cache → miss (initdb, migrate both repos, snapshot)"
t=$(now)
prepare "$work/pgdata-1" 2>&1 | tee "$work/run-1.log" || die "pgstash prepare (miss) failed"
miss_time=$(since "$t")
grep -q "cache miss" "$work/run-1.log" || die "run 1 was not a cache miss (see above)"

say "run 2: fresh PGDATA, same migrations → hit (restore the snapshot)"
t=$(now)
prepare "$work/pgdata-2" 2>&1 | tee "$work/run-2.log" || die "pgstash prepare (hit) failed"
hit_time=$(since "$t")
grep -q "cache hit" "$work/run-2.log" || die "run 2 was not a cache hit (see above)"

say "cache entries"
(cd "$work" && as_user "${pgstash_env[@]}" "$bin" --config="$examples/pgstash.ini" ls) || true

# ---- 4. what the hit restored ---------------------------------------------------
say "the restored cluster (started briefly from run 2's PGDATA)"
server_pgdata=$work/pgdata-2
as_user "$bindir/pg_ctl" -D "$server_pgdata" -l "$work/server.log" -w \
	-o "-k $work/sock -c listen_addresses=''" start >/dev/null
psql=(as_user env -i PATH=/usr/bin:/bin "$bindir/psql" -X -h "$work/sock" -U postgres -v ON_ERROR_STOP=1)
echo "-- database app (Django):"
"${psql[@]}" -d app -c "SELECT app, count(*) AS migrations FROM django_migrations GROUP BY app ORDER BY app" \
	-c "SELECT slug, title FROM shop_category ORDER BY slug"
echo "-- database flask_app (Flask-Migrate):"
"${psql[@]}" -d flask_app -c "SELECT version_num FROM alembic_version" -c '\dt'
as_user "$bindir/pg_ctl" -D "$server_pgdata" -m fast -w stop >/dev/null
server_pgdata=

say "summary"
printf '  miss (build + snapshot): %s\n  hit  (restore):          %s\n' "$miss_time" "$hit_time"
