#!/bin/sh
# setup.sh - install llama.cpp's peer (node-llama-cpp, pinned with
# scripts/peer/package-lock.json, and its prebuilt Linux x64 CPU libraries)
# and print the directory that holds its node_modules.
#
# Installed with `npm install --omit=optional --ignore-scripts` from the
# lock file (the GPU builds are optional packages and are left out; nothing
# is built or downloaded beyond the npm registry's tarballs) once per lock
# file into
# ${XDG_CACHE_HOME:-$HOME/.cache}/tome-peer/llama-CKSUM, or into
# $TOME_PEER_CACHE/llama-CKSUM when that is set.  Not `npm ci`: the lock
# cannot list node-llama-cpp's optional packages for other systems (some
# were never published at 3.22.1), and npm ci refuses a lock without them.  Two runs may install at
# once: each installs aside and renames; the second one's copy is dropped.
# Exit 2 (with a message) when npm or node is missing, 1 when npm fails.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "setup.sh: npm or node is missing: llama.cpp's peer cannot be installed" >&2
    exit 2
fi
lock=$here/package-lock.json
base=${TOME_PEER_CACHE:-${XDG_CACHE_HOME:-${HOME:?neither TOME_PEER_CACHE nor HOME is set}/.cache}/tome-peer}
dir=$base/llama-$(cksum <"$lock" | cut -d' ' -f1)
if [ ! -f "$dir/node_modules/.package-lock.json" ]; then
    aside=$dir.$$
    mkdir -p "$aside"
    cp "$here/package.json" "$lock" "$aside/"
    if ! npm install --prefix "$aside" --omit=optional --ignore-scripts --no-audit --no-fund \
        --fetch-retries=1 --fetch-timeout=60000 >"$aside/npm.log" 2>&1; then
        echo "setup.sh: npm install failed in $aside:" >&2
        tail -5 "$aside/npm.log" >&2
        exit 1
    fi
    mv -T "$aside" "$dir" 2>/dev/null || rm -rf "$aside"
fi
echo "$dir"
