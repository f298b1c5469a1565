#!/bin/sh
# `make bench`: run every benchmark script (scripts/bench-*.sh) against the
# build directory given as $1 (bench-million.sh, an hour long, only with
# BENCH_MILLION=1).  Benchmarks report figures; they never fail
# on speed.  Then, if bench-long.sh left its CSV, scripts/plot-bench.sh draws
# tokens/s against context into BUILDDIR/bench.png.
set -u
build=${1:?usage: bench.sh BUILDDIR}
top=$(cd "$(dirname "$0")/.." && pwd)
status=0
for b in "$top"/scripts/bench-*.sh; do
    [ -e "$b" ] || continue
    # The full-size run takes about an hour: only when asked for.
    case $b in *bench-million.sh) [ "${BENCH_MILLION:-0}" = 1 ] || continue ;; esac
    echo "== $(basename "$b" .sh)"
    sh "$b" "$build" || status=1
done
if [ -f "${BENCH_CSV_LONG:-$build/bench-long.csv}" ]; then
    echo "== plot-bench"
    sh "$top/scripts/plot-bench.sh" "$build" "$build/bench.png" || status=1
fi
exit $status
