#!/bin/sh
# The README's main job: install, build, make the built-in model, start
# tomed on a private state directory, ingest this repository, prefill, ask
# one question, print the answer and timings, and stop the daemon.  Steps
# whose parts are not built yet are reported as such.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh scripts/install-deps.sh
build="$top/_build"
if [ ! -f "$build/Makefile" ]; then
    autoreconf -fi >/dev/null
    mkdir -p "$build"
    (cd "$build" && "$top/configure" >/dev/null)
fi
make -C "$build" -j"$(nproc)" >/dev/null
echo "demo: build ok"
for prog in engine/tome-mkmodel daemon/tomed client/tome; do
    if [ ! -x "$build/$prog" ]; then
        echo "demo: $prog is not built yet; stopping here"
        exit 0
    fi
done
