#!/bin/sh
# fuzz/valgrind.sh PGSTASH UNIT-TEST...
#
# Memcheck over the release build: every unit-test binary, then the main path
# of the real binary on a tiny .sql project (as tests/integration's
# sql_project): key, prepare (a miss: initdb, migrate, snapshot, publish),
# prepare again into a fresh PGDATA (a hit: lookup, restore, touch), ls,
# ls --json, verify.  Only pgstash itself runs under Valgrind
# (--trace-children=no): initdb, postgres and psql are not ours.  pgstash
# runs as the postgres user (postgres refuses root) when started as root.
#
# Any memcheck error, definite leak, or failing command makes the exit status
# non-zero; logs are kept in build/valgrind/.  KEEP=1 keeps the scenario's
# work directory (its cache holds a real meta and archive).
#
# Every binary is copied first and the copy runs: a `make` in the same tree
# rewrites ./pgstash in place, and a process mapping the old file then dies
# of SIGBUS in the middle of the run.
set -u
pgstash=$1
shift
logdir=build/valgrind
rm -rf "$logdir"
mkdir -p "$logdir"
supp=$(readlink -f fuzz/valgrind.supp)
vg="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --trace-children=no --suppressions=$supp"
fail=0

mkdir -p "$logdir/bin"
for t in "$@"; do
	name=$(basename "$t")
	cp "$t" "$logdir/bin/$name"
	if $vg --log-file="$logdir/$name.vg.log" "$logdir/bin/$name" >"$logdir/$name.out" 2>&1; then
		echo "valgrind: ok      $t"
	else
		echo "valgrind: FAILED  $t (exit $?; see $logdir/$name.vg.log and $name.out)"
		fail=1
	fi
done

pg_bindir=${PGSTASH_PG_BINDIR:-$(pg_config --bindir 2>/dev/null)}
if [ -z "$pg_bindir" ] || [ ! -x "$pg_bindir/postgres" ]; then
	pg_bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
if [ -z "$pg_bindir" ] || [ ! -x "$pg_bindir/postgres" ]; then
	echo "valgrind: FAILED  no PostgreSQL server binaries found (set PGSTASH_PG_BINDIR)"
	exit 1
fi

work=$(mktemp -d)
cleanup() {
	if [ "${KEEP:-0}" = 1 ]; then
		echo "valgrind: work directory kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
mkdir -p "$work/proj/migrations" "$work/cache" "$work/sock"
printf 'create table a (id int primary key, v text);\n' >"$work/proj/migrations/0000_a.sql"
printf 'create table b (id int primary key, a int references a);\n' >"$work/proj/migrations/0001_b.sql"
cat >"$work/proj.ini" <<INI
[database]
name = app
[step sql]
root = $work/proj
migrations = migrations/*.sql
run = /bin/sh -c 'for f in migrations/*.sql; do psql -X -q -v ON_ERROR_STOP=1 -f "\$f" || exit 1; done'
INI

as_user=
if [ "$(id -u)" = 0 ]; then
	chown -R postgres:postgres "$work"
	chmod 0755 "$work"
	as_user="setpriv --reuid=postgres --regid=postgres --clear-groups"
fi
mkdir -p "$work/bin"
cp "$pgstash" "$work/bin/pgstash"
abs_pgstash=$work/bin/pgstash

# run NAME PGDATA ARGS...: pgstash under memcheck, as the test user.
run() {
	name=$1
	pgdata=$2
	shift 2
	if $as_user env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work" LANG=C.UTF-8 PGDATA="$pgdata" \
		PGSTASH_CACHE_DIR="$work/cache" PGSTASH_SOCKET_DIR="$work/sock" PGSTASH_PG_BINDIR="$pg_bindir" \
		POSTGRES_HOST_AUTH_METHOD=trust \
		$vg --log-file="$work/$name.vg.log" "$abs_pgstash" --config="$work/proj.ini" "$@" \
		>"$work/$name.out" 2>"$work/$name.err"; then
		echo "valgrind: ok      pgstash $* ($name)"
	else
		echo "valgrind: FAILED  pgstash $* ($name, exit $?; see $logdir/$name.*)"
		fail=1
	fi
	cp "$work/$name.vg.log" "$work/$name.out" "$work/$name.err" "$logdir/"
}

run key "$work/pg1" key
run prepare-miss "$work/pg1" prepare
grep -q "cache miss" "$work/prepare-miss.err" || { echo "valgrind: FAILED  the first prepare was no miss"; fail=1; }
run prepare-hit "$work/pg2" prepare
grep -q "cache hit" "$work/prepare-hit.err" || { echo "valgrind: FAILED  the second prepare was no hit"; fail=1; }
run ls "$work/pg2" ls
run ls-json "$work/pg2" ls --json
run verify "$work/pg2" verify

if [ "$fail" = 0 ]; then
	echo "valgrind: no memcheck errors, no definite leaks"
fi
exit "$fail"
