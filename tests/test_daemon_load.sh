#!/bin/sh
# A bounded load test over the Unix socket: 1000 idle keep-alive
# connections held open while 200 clients ask questions at once, two
# rounds; no errors, no dropped idle connection, the daemon's descriptors
# back to where they were, and no memory growth after the first round
# (tests/daemon_load.c checks all of it and prints latency percentiles).
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
load="$build/tests/daemon_load"
[ -x "$load" ] || { echo "FAIL: $load is not built"; exit 1; }
clients=${TOME_LOAD_CLIENTS:-200}
idle=${TOME_LOAD_IDLE:-1000}
rounds=${TOME_LOAD_ROUNDS:-2}

mkdir -p "$tmp/corpus"
printf 'int parse(const char *s)\n{\n    return s[0];\n}\n' >"$tmp/corpus/parse.c"
tar -C "$tmp/corpus" -czf "$tmp/corpus.tar.gz" parse.c
# The questions at work at once are capped well below the clients, so
# that every round fills the cap: what a round holds at its peak is then
# the same each time, and growth after the first round is a leak, not
# more questions at once than the first round happened to have.
echo "max_active_asks = ${TOME_LOAD_ACTIVE:-16}" >"$tmp/load.conf"
start_tomed --config "$tmp/load.conf" --model "$model" --log-level warn
wait_ready
unix_http 201 /v1/corpora -d '{"name":"load"}'
unix_http 200 /v1/corpora/load/ingest -H 'Content-Type: application/octet-stream' \
    --data-binary "@$tmp/corpus.tar.gz"
unix_http 202 /v1/corpora/load/prefill -X POST
job=$(json_field id)
checks=$((checks + 1))
curl -sN --max-time 120 --unix-socket "$sock" "http://tome/v1/jobs/$job/events" >"$tmp/events"
grep -q '^event: done' "$tmp/events" || fail "the prefill did not finish: $(tail -3 "$tmp/events")"

checks=$((checks + 1))
"$load" "$sock" "$daemon_pid" load "$clients" "$idle" "$rounds" 1 || fail "the load test failed"
grep -E 'error|warn' "$tmp/tomed.log" && fail "tomed logged problems under load"
stop_tomed TERM
finish
