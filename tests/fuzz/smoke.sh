#!/bin/sh
# make fuzz-smoke: run each libFuzzer target for SECONDS on a scratch copy
# of its committed corpus, and report its executions.  A crash, leak,
# sanitizer report or time-out is a finding: its input is kept as
# BUILD/fuzz-findings/NAME-*, and the run fails.  Add the input to
# tests/fuzz/corpus/NAME/ once it is fixed.
#
#   smoke.sh BUILD SRCDIR SECONDS NAME...
set -u
build=$1 src=$2 seconds=$3
shift 3
findings="$build/fuzz-findings"
mkdir -p "$findings"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for name in "$@"; do
    mkdir -p "$work/$name"
    log="$build/fuzz-findings/$name.log"
    "$build/tests/fuzz/$name" -max_total_time="$seconds" -print_final_stats=1 \
        -timeout=25 -rss_limit_mb=4096 -artifact_prefix="$findings/$name-" \
        "$work/$name" "$src/tests/fuzz/corpus/$name" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ "$rc" -eq 0 ]; then
        echo "$name: ${execs:-?} executions in $seconds s (${rate:-?}/s), no finding"
    else
        failed=$((failed + 1))
        echo "$name: FINDING after ${execs:-?} executions (exit $rc); see $log"
        grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -5
    fi
done
[ "$failed" -eq 0 ]
