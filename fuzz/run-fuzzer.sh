#!/bin/sh
# fuzz/run-fuzzer.sh NAME SECONDS [LIBFUZZER-ARGS...]
#
# Runs build/fuzz/fuzz_NAME for SECONDS on build/fuzz/corpus-NAME (the tree's
# seeds from fuzz/corpus/NAME are copied in first, so new units never land in
# the tree), with crash inputs in build/fuzz/artifacts/.  The whole libFuzzer
# output goes to build/fuzz/NAME.log; the last line printed is the summary:
#
#   fuzz NAME: ok|FAILED  RUNS runs in S s, C CPU s (E exec/s), cov C ft F, corpus N (+NEW); log FILE
#
# Exit status: non-zero when libFuzzer failed or left a crash, leak,
# timeout or OOM input in build/fuzz/artifacts/ (with -fork=N
# -ignore_crashes=1 it goes on after one and exits 0: the inputs tell).
# CPU seconds (user+sys of libFuzzer and its fork-mode children) are printed
# too, for the CPU-hour tally.
set -u
name=$1
seconds=$2
shift 2
dir=build/fuzz
bin=$dir/fuzz_$name
[ -x "$bin" ] || { echo "fuzz $name: $bin is not built (make fuzz-build)" >&2; exit 2; }

case $name in
config) max_len=16384 timeout=10 ;;
meta) max_len=16384 timeout=10 ;;
archive) max_len=65536 timeout=30 ;;
*) max_len=4096 timeout=10 ;;
esac

corpus=$dir/corpus-$name
log=$dir/$name.log
mkdir -p "$corpus" "$dir/artifacts"
cp fuzz/corpus/"$name"/* "$corpus"/
stamp=$dir/.start-$name
: >"$stamp"

: "${UBSAN_OPTIONS:=print_stacktrace=1}"
export UBSAN_OPTIONS
t0=$(date +%s)
# /usr/bin/time -f: %U and %S include the children waited for (fork mode's workers).
/usr/bin/time -f 'cpu-seconds %U %S' -o "$dir/.cpu-$name" \
	"$bin" -max_total_time="$seconds" -max_len="$max_len" -timeout="$timeout" -print_final_stats=1 \
	-artifact_prefix="$dir/artifacts/$name-" "$@" "$corpus" >"$log" 2>&1
rc=$?
elapsed=$(($(date +%s) - t0))
found=$(find "$dir/artifacts" -name "$name-*" -newer "$stamp" | wc -l)
[ "$found" -gt 0 ] && [ "$rc" -eq 0 ] && rc=1
cpu=$(awk '/^cpu-seconds/ { printf "%.0f", $2 + $3 }' "$dir/.cpu-$name" 2>/dev/null)

# The figures of the last status line and the final stats.
last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
cov=$(printf '%s\n' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
ft=$(printf '%s\n' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
corp=$(printf '%s\n' "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
new=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -n 1)
# Fork mode prints no stat:: lines: take the runs from "#RUNS: cov: ...".
if [ -z "$runs" ]; then
	runs=$(printf '%s\n' "$last" | sed -n 's/^#\([0-9]*\).*/\1/p')
	[ -n "$runs" ] && eps=$((runs / (elapsed > 0 ? elapsed : 1)))
fi
if [ "$rc" -eq 0 ]; then
	verdict=ok
else
	verdict=FAILED
	grep -E 'ERROR|SUMMARY|fuzz harness:|Test unit written|runtime error' "$log" | head -n 20 >&2
	find "$dir/artifacts" -name "$name-*" -newer "$stamp" | sed 's/^/  found: /' >&2
fi
echo "fuzz $name: $verdict  ${runs:-?} runs in $elapsed s, ${cpu:-?} CPU s (${eps:-?} exec/s), cov ${cov:-?} ft ${ft:-?}, corpus ${corp:-?} (+${new:-?}); log $log"
exit "$rc"
