#!/bin/sh
# test_daemon_kvcache.sh - tomed's state cache on disk: a cache_budget that
# holds one state evicts the least recently used one when the next prefill
# is saved (its file removed, its row listed as evicted, the new one kept
# and answering), a budget lowered by SIGHUP applies to the next save, and
# the temporary files of a save interrupted by a crash are removed when the
# daemon starts.
. "$TOME_SRCDIR/tests/daemon-lib.sh"

require_model
# The state directory must be private (tomed.conf(5)).
mkdir -p "$tmp/corpus" && mkdir -m 700 "$tmp/state" && mkdir "$tmp/state/kv"
i=1
while [ "$i" -le 20 ]; do
    echo "Clause $i: the lessee keeps the premises in good repair."
    i=$((i + 1))
done >"$tmp/corpus/lease.txt"
tar -C "$tmp/corpus" -czf "$tmp/corpus.tar.gz" lease.txt
printf 'cache_budget = 0\nprefill_chunk = 64\n' >"$tmp/tomed.conf"
: >"$tmp/state/kv/state-9.kv.tmpAb12Cd"
: >"$tmp/state/kv/notes.txt"

start_tomed --config "$tmp/tomed.conf" --model "$model" --log-level info
wait_ready
check "a crashed save's temporary file is removed at start" \
    [ ! -e "$tmp/state/kv/state-9.kv.tmpAb12Cd" ]
check "other files are left alone" [ -e "$tmp/state/kv/notes.txt" ]

# prefill CORPUS: create, ingest and prefill it; $job and $state get the
# job's and the saved state's ids.
prefill() {
    unix_http 201 /v1/corpora -d "{\"name\":\"$1\"}"
    unix_http 200 "/v1/corpora/$1/ingest" -H 'Content-Type: application/octet-stream' \
        --data-binary "@$tmp/corpus.tar.gz"
    unix_http 202 "/v1/corpora/$1/prefill" -X POST
    job=$(json_field id)
    curl -sN --max-time 120 --unix-socket "$sock" "http://tome/v1/jobs/$job/events" >"$tmp/events"
    checks=$((checks + 1))
    tail -3 "$tmp/events" | grep -q '^event: done' || fail "the prefill of $1 did not finish"
    unix_http 200 "/v1/corpora/$1"
    state=$(sed -n 's/.*"state":{"id":"\([0-9]*\)".*/\1/p' "$tmp/body")
}

prefill first
job1=$job state1=$state
check "the first state is saved" [ -f "$tmp/state/kv/state-$job1.kv" ]
unix_http 200 /v1/cache && body_has '"budget_bytes":0[,}]'

# SIGHUP lowers the budget (and changes the chunk size) of the running daemon
printf 'cache_budget = 1\nprefill_chunk = 48\n' >"$tmp/tomed.conf"
kill -HUP "$daemon_pid"
i=0
until grep -q "configuration and TLS certificates reloaded" "$tmp/tomed.log" || [ $i -ge 50 ]; do
    sleep 0.1
    i=$((i + 1))
done
unix_http 200 /v1/cache && body_has '"budget_bytes":1[,}]'
check "the first state is kept until the next save" [ -f "$tmp/state/kv/state-$job1.kv" ]
prefill second
check "the second state is saved" [ -f "$tmp/state/kv/state-$job.kv" ]
check "the first state's file is evicted" [ ! -e "$tmp/state/kv/state-$job1.kv" ]
unix_http 200 /v1/cache
body_has "\"id\":\"$state1\",[^}]*\"status\":\"evicted\""
body_has "\"id\":\"$state\",[^}]*\"status\":\"ready\""
body_has '"budget_bytes":1[,}]'
grep -q "cache budget of 1 bytes: 1 saved states evicted" "$tmp/tomed.log" ||
    fail "no eviction in the log: $(tail -3 "$tmp/tomed.log")"
unix_http 200 "/v1/cache/$state/verify" -X POST && body_has '"ok":true'
unix_http 200 /v1/corpora/second/ask -d '{"question":"Who repairs?","max_tokens":2,"stream":false}'

stop_tomed
finish
