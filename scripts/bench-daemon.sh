#!/bin/sh
# bench-daemon.sh [BUILDDIR] - tomed's load figures: the bounded load test
# (tests/test_daemon_load.sh: 1000 idle connections held, 200 clients
# asking at once over the Unix socket, two rounds, the built-in tiny model)
# with its latency percentiles, throughput, descriptor and memory checks.
# TOME_LOAD_CLIENTS, TOME_LOAD_IDLE and TOME_LOAD_ROUNDS change the shape.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/_build}" && pwd)
make -C "$build" daemon/tomed tests/daemon_load models/tiny/config.json >/dev/null
echo "bench-daemon: $(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
TOME_BUILDDIR=$build TOME_SRCDIR=$top sh "$top/tests/test_daemon_load.sh"
