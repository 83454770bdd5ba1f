#!/usr/bin/env bash
# bench/run.sh — what `make bench` runs (`make bench QUICK=1` passes --quick).
#   bench/run.sh [--quick] [bench.py options…]    (bench/run.sh --help lists them)
#   bench/run.sh --curve [--quick] [--big] [curve.py options…]   the size curve (bench/curve.py --help)
#   bench/run.sh --incremental [--quick] [--sizes dj-50] [--reps N]   issue 18's benches (bench.py --help)
# Checks what the benchmark needs, then runs bench/bench.py with Debian's python3
# (where python3-django lives) and PATH=/usr/bin:/bin.  As root, the servers and
# pgstash run as the `postgres` user in a scratch directory under /tmp.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
export PATH=/usr/bin:/bin
export PGSTASH_PG_BINDIR=${PGSTASH_PG_BINDIR:-/usr/lib/postgresql/15/bin}

missing=()
[[ -x $PGSTASH_PG_BINDIR/postgres && -x $PGSTASH_PG_BINDIR/pg_restore ]] || missing+=(postgresql-15 postgresql-client-15)
/usr/bin/python3 -c 'import django, psycopg2' 2>/dev/null || missing+=(python3-django python3-psycopg2)
command -v zstd >/dev/null || missing+=(zstd)
command -v strace >/dev/null || echo "bench: no strace: the syscall part of the analysis is skipped (apt-get install strace)" >&2
if ((${#missing[@]})); then
	echo "bench: missing Debian packages: ${missing[*]}" >&2
	echo "bench: install them with: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
if ((EUID == 0)) && ! id postgres >/dev/null 2>&1; then
	echo "bench: running as root needs the postgres user (the postgresql package creates it)" >&2
	exit 1
fi
[[ -x $repo/pgstash ]] || make -C "$repo" pgstash

if [[ ${1-} == --curve ]]; then
	shift
	/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || echo "bench: no python3-matplotlib: the curve's plot is skipped (apt-get install python3-matplotlib)" >&2
	exec /usr/bin/python3 "$here/curve.py" --pgstash "$repo/pgstash" --pg-bindir "$PGSTASH_PG_BINDIR" "$@"
fi
exec /usr/bin/python3 "$here/bench.py" --pgstash "$repo/pgstash" --pg-bindir "$PGSTASH_PG_BINDIR" "$@"
