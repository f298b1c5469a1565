#!/bin/sh
# Install what tome needs to build and test on Debian 12, skipping what is
# already there (idempotent; needs root or sudo for the missing packages).
# clang and its libFuzzer runtime are for ./configure --enable-fuzz;
# util-linux gives the fault tests unshare(1) and mount(8).
#
# Optional groups, named as arguments, add packages that only some targets
# use: `bench` adds gnuplot-nox, for the plot `make bench` ends with
# (scripts/plot-bench.sh).
set -eu
PACKAGES="build-essential autoconf automake pkg-config
libsqlite3-dev libevent-dev libpcre2-dev libarchive-dev libssl-dev libjansson-dev libxxhash-dev libcurl4-openssl-dev
mandoc man-db openssl curl ca-certificates zsh python3 python3-jsonschema
libarchive-tools zip unzip p7zip-full cpio xorriso zstd lz4 xz-utils bzip2 gzip
cppcheck clang-format
clang libclang-rt-14-dev util-linux"
for group in "$@"; do
    case $group in
        bench) PACKAGES="$PACKAGES gnuplot-nox" ;;
        *) echo "usage: install-deps.sh [bench]" >&2; exit 2 ;;
    esac
done
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm may come from nodejs itself (NodeSource builds) rather than a package.
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "install-deps: all packages present"
fi
