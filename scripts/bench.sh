#!/bin/sh
# `make bench`: run every benchmark script (scripts/bench-*.sh) against the
# build directory given as $1.  Benchmarks report figures; they never fail
# on speed.
set -u
build=${1:?usage: bench.sh BUILDDIR}
top=$(cd "$(dirname "$0")/.." && pwd)
status=0
for b in "$top"/scripts/bench-*.sh; do
    [ -e "$b" ] || continue
    echo "== $(basename "$b" .sh)"
    sh "$b" "$build" || status=1
done
exit $status
