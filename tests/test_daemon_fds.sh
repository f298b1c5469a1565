#!/bin/sh
# tomed at its connection limits: the 503 for a connection over
# max_connections says its true Content-Length; a daemon out of file
# descriptors (a low `ulimit -n`, many clients) pauses accepting instead of
# spinning: little CPU, a few log lines, and it serves again once the
# clients are gone; a max_connections the limit cannot hold is reported.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
raw="$build/tests/raw_http"
mkfifo "$tmp/fifo"
holders=""

# hold N: N connections that stay open, sending nothing, until release.
# They read their standard input from a FIFO that this shell keeps open.
hold() {
    exec 4<>"$tmp/fifo"
    for i in $(seq "$1"); do
        "$raw" --timeout 60 "$sock" <"$tmp/fifo" >/dev/null 2>&1 4>&- &
        holders="$holders $!"
    done
}
release() {
    exec 4>&-
    kill $holders 2>/dev/null
    wait $holders 2>/dev/null
    holders=""
}

# ---- max_connections: a 503 whose Content-Length is its body's ----
printf 'max_connections = 2\nidle_timeout = 60\n' >"$tmp/tomed.conf"
start_tomed --config "$tmp/tomed.conf" --model "$model"
wait_ready
# Both held connections must be in before the probe, or the probe could
# take a place and a holder be refused: count the daemon's descriptors.
fds() { ls "/proc/$daemon_pid/fd" | wc -l; }
# The count at rest: wait_ready's own connection may still be open on the
# daemon's side when curl has returned (under load it was, and the count
# then never reached base + 2), so take it once it holds still.
base=$(fds)
sleep 0.2
i=0
while [ "$(fds)" != "$base" ] && [ "$i" -lt 50 ]; do
    base=$(fds)
    i=$((i + 1))
    sleep 0.2
done
hold 2
i=0
until [ "$(fds)" -ge $((base + 2)) ]; do
    i=$((i + 1))
    [ "$i" -le 100 ] || { fail "the held connections were not accepted"; break; }
    sleep 0.1
done
i=0
# (The 503 may come before the request is sent: raw_http's send can fail.)
until printf 'GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' |
    "$raw" --timeout 5 "$sock" >"$tmp/raw" 2>/dev/null
    head -1 "$tmp/raw" | grep -q '^HTTP/1.1 503 '; do
    i=$((i + 1))
    [ "$i" -le 100 ] || { fail "no 503 with max_connections open: $(head -1 "$tmp/raw")"; break; }
    sleep 0.1
done
length=$(sed -n 's/^Content-Length: \([0-9]*\)\r$/\1/p' "$tmp/raw")
body=$(sed '1,/^\r$/d' "$tmp/raw" | wc -c)
check "the 503 says Content-Length $length for its $body-byte body" [ "$length" = "$body" ]
grep -q '"code":"busy"' "$tmp/raw" || fail "the 503 body: $(tail -1 "$tmp/raw")"
release
unix_http 200 /v1/health
stop_tomed TERM

# ---- out of descriptors ----
# The hard limit too, or tomed would raise its soft limit back up.
ulimit -n 64
printf 'idle_timeout = 60\n' >"$tmp/tomed.conf"
start_tomed --config "$tmp/tomed.conf" --model "$model"
wait_ready
grep -q 'max_connections (4096) needs more descriptors than RLIMIT_NOFILE (64)' "$tmp/tomed.log" ||
    fail "no warning about max_connections and RLIMIT_NOFILE: $(cat "$tmp/tomed.log")"
checks=$((checks + 1))
hold 100
i=0
until grep -q 'Too many open files' "$tmp/tomed.log"; do
    i=$((i + 1))
    [ "$i" -le 200 ] || { fail "tomed never ran out of descriptors"; break; }
    sleep 0.1
done
# cpu_ticks: the daemon's user and system time, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$daemon_pid/stat"; }
before=$(cpu_ticks)
sleep 3 # the window over which the daemon's CPU time is measured
spent=$(($(cpu_ticks) - before))
ticks=$(getconf CLK_TCK)
check "out of descriptors, tomed used $spent ticks of CPU in 3 s (at most $((ticks / 2)))" \
    [ "$spent" -le $((ticks / 2)) ]
lines=$(grep -c 'accept' "$tmp/tomed.log")
check "out of descriptors, tomed logged $lines accept lines (at most 3)" [ "$lines" -le 3 ]
release
i=0
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --unix-socket "$sock" \
    http://tome/v1/health)" = 200 ]; do
    i=$((i + 1))
    [ "$i" -le 100 ] || { fail "tomed does not serve again once the clients are gone"; break; }
    sleep 0.1
done
grep -q 'accepting connections again' "$tmp/tomed.log" || fail "no line saying accepting resumed"
stop_tomed TERM
finish
