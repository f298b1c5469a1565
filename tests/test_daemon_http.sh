#!/bin/sh
# tomed's HTTP connections under clients that misbehave or are merely
# unusual, byte for byte through tests/raw_http: an answer sent before the
# request body was read (it must arrive, not be lost to a reset).
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
raw="$build/tests/raw_http"

cat >"$tmp/tomed.conf" <<EOF2
max_request_bytes = 64K
max_upload_bytes = 1M
header_timeout = 5
idle_timeout = 5
EOF2
start_tomed --config "$tmp/tomed.conf" --model "$model"

# ---- an early answer survives the body it did not read ----
# The 413 goes out as soon as the head is in, while the client is still
# sending 600 KB; the daemon must not reset the connection under it.
head -c 600000 /dev/zero | tr '\0' 'a' >"$tmp/big.json"
{
    printf 'POST /v1/corpora HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
    printf 'Content-Length: 600000\r\n\r\n'
    cat "$tmp/big.json"
} >"$tmp/early.req"
good=0
for i in $(seq 50); do
    "$raw" "$sock" <"$tmp/early.req" >"$tmp/raw" 2>"$tmp/raw.err"
    rc=$?
    if [ "$rc" -eq 0 ] && head -1 "$tmp/raw" | grep -q '^HTTP/1.1 413 ' &&
        grep -q 'max_request_bytes' "$tmp/raw"; then
        good=$((good + 1))
    fi
done
check "the early 413 arrived intact $good times of 50" [ "$good" -eq 50 ]
good=0
for i in $(seq 20); do
    [ "$(curl -s -o "$tmp/body" -w '%{http_code}' --unix-socket "$sock" \
        -H 'Content-Type: application/json' --data-binary "@$tmp/big.json" \
        http://tome/v1/corpora)" = 413 ] && good=$((good + 1))
done
check "curl got the early 413 $good times of 20" [ "$good" -eq 20 ]
unix_http 200 /v1/health

stop_tomed TERM
finish
