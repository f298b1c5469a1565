#!/bin/sh
# The README's test command: install what is missing, build from a clean
# tree, run `make check`, `make distcheck` and the demo (scripts/demo.sh),
# and end with the line "N passed, N failed".
#
# With --sanitize first, the build (in _build-sanitize) has AddressSanitizer
# and UBSan, and only `make check` runs: every unit and daemon test, and the
# fuzz corpora, under the sanitizers.  With --fuzz first, the whole tree is
# built by clang (in _build-fuzz, ./configure --enable-fuzz, warnings as
# errors) and `make fuzz-smoke` runs each libFuzzer target for
# FUZZ_SECONDS (default 20), one test per target.  CI (.ci/run) runs all
# three.  Other arguments go to configure.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
sh scripts/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }

jobs=$(nproc 2>/dev/null || echo 2)
build="$top/_build"
sanitize=0
fuzz=0
if [ "${1:-}" = "--fuzz" ]; then
    shift
    set -- --enable-fuzz "$@"
    fuzz=1
    build="$top/_build-fuzz"
elif [ "${1:-}" = "--sanitize" ]; then
    shift
    set -- --enable-sanitizers "$@"
    sanitize=1
    build="$top/_build-sanitize"
    # ASan keeps freed memory in a quarantine (256 MB by default) to catch
    # uses after free; the daemon tests that bound memory growth need it
    # small and returned to the system.  A UBSan report stops the program.
    ASAN_OPTIONS=quarantine_size_mb=4:allocator_release_to_os_interval_ms=100:detect_leaks=1
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    export ASAN_OPTIONS UBSAN_OPTIONS
fi
rm -rf "$build"
status=0
{ autoreconf -fi >/dev/null && mkdir -p "$build" && cd "$build" &&
  "$top/configure" --enable-werror "$@" >configure.out &&
  make -j"$jobs" >make.out 2>&1; } || status=$?
if [ "$status" -ne 0 ]; then
    [ -f "$build/make.out" ] && tail -50 "$build/make.out"
    [ -f "$build/config.log" ] && grep -A3 'error:' "$build/config.log" | tail -20
    echo "build failed"
    echo "0 passed, 1 failed"
    exit 1
fi
if [ "$fuzz" -eq 1 ]; then
    make fuzz-smoke FUZZ_SECONDS="${FUZZ_SECONDS:-20}" | tee fuzz-smoke.out
    passed=$(grep -c 'no finding$' fuzz-smoke.out)
    failed=$(grep -c FINDING fuzz-smoke.out)
    [ "$passed" -gt 0 ] || failed=$((failed + 1))
    echo "$passed passed, $failed failed, 0 skipped"
    [ "$failed" -eq 0 ]
    exit
fi
make -j"$jobs" check
check_status=$?
passed=0; failed=0; skipped=0
for trs in $(find "$build/tests" -name '*.trs' 2>/dev/null); do
    r=$(sed -n 's/^:test-result: //p' "$trs")
    case "$r" in
        PASS|XFAIL) passed=$((passed + 1)) ;;
        SKIP) skipped=$((skipped + 1)) ;;
        *) failed=$((failed + 1))
           log="${trs%.trs}.log"
           # The failures first (a long log's tail may not hold them).
           echo "--- $(basename "$trs" .trs): its failures ---"
           grep -E '^(FAIL|ERROR|not ok)|runtime error|Sanitizer' "$log" | head -20
           echo "--- $(basename "$trs" .trs): the end of its log ---"
           tail -30 "$log" ;;
    esac
done
if [ "$check_status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
# make distcheck: the release tarball builds out of tree from a read-only
# source and passes the same tests.  It counts as one more test.
if [ "$failed" -eq 0 ] && [ "$sanitize" -eq 0 ]; then
    shared=${TOME_SHARED:-$top/../shared}
    if TOME_SHARED=$(cd "$shared" && pwd) make -j"$jobs" distcheck >distcheck.out 2>&1; then
        passed=$((passed + 1))
        echo "PASS: make distcheck"
    else
        failed=$((failed + 1))
        echo "FAIL: make distcheck"; tail -40 distcheck.out
    fi
fi
# The README's main command, the first thing a user runs, on the same
# build: it must exit 0.  It counts as one more test.
if [ "$failed" -eq 0 ] && [ "$sanitize" -eq 0 ]; then
    if sh "$top/scripts/demo.sh" >"$build/demo.out" 2>&1; then
        passed=$((passed + 1))
        echo "PASS: scripts/demo.sh"
    else
        failed=$((failed + 1))
        echo "FAIL: scripts/demo.sh"; tail -40 "$build/demo.out"
    fi
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
