#!/bin/sh
# `tomed ready` (--foreground) is printed exactly when GET /v1/ready turns
# 200, not when the socket is listening: a model whose config.json is a
# FIFO holds the load at its open for as long as the test likes, so the
# window between listening and loaded is observed, not raced.  Once the
# load fails, the line is `tomed not ready: WHY` instead.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model

mkdir -p "$tmp/held"
for f in "$model"/*; do ln -s "$f" "$tmp/held/"; done
rm "$tmp/held/config.json"
mkfifo "$tmp/held/config.json"

"$tomed" --foreground --state-dir "$tmp/state" --socket "$sock" --model "$tmp/held" \
    --log-level info 2>"$tmp/tomed.log" &
daemon_pid=$!
i=0
until grep -q 'listening on' "$tmp/tomed.log"; do
    i=$((i + 1))
    [ "$i" -le 200 ] && kill -0 "$daemon_pid" 2>/dev/null ||
        { echo "FAIL: tomed never listened: $(cat "$tmp/tomed.log")"; exit 1; }
    sleep 0.1
done
# The loader is blocked in open(2) on the FIFO until a writer comes.
unix_http 503 /v1/ready && body_has '"ready":false'
checks=$((checks + 1))
grep -q '^tomed ready$' "$tmp/tomed.log" &&
    fail "tomed printed 'tomed ready' while its model was still loading"

: >"$tmp/held/config.json"
i=0
until grep -q '^tomed not ready: ' "$tmp/tomed.log"; do
    i=$((i + 1))
    [ "$i" -le 200 ] && kill -0 "$daemon_pid" 2>/dev/null ||
        { fail "no 'tomed not ready' line after the load failed: $(cat "$tmp/tomed.log")"; break; }
    sleep 0.1
done
checks=$((checks + 1))
grep -q '^tomed ready$' "$tmp/tomed.log" && fail "tomed printed 'tomed ready' with no model"
unix_http 503 /v1/ready
unix_http 200 /v1/health
stop_tomed

# With a good model the line comes, and /v1/ready agrees at once.
start_tomed --model "$model"
unix_http 200 /v1/ready && body_has '"ready":true'
body_has '"weights":"auto"'
# and the log says where the fast kernels read the matrices from (a tiny
# model fits: auto copies it)
checks=$((checks + 1))
grep -q 'weights copied into memory' "$tmp/tomed.log" || fail "the log does not say the weights were copied"
stop_tomed
finish
