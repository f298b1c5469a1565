#!/bin/sh
# Prefill jobs and questions on a real tomed with the built-in tiny model:
# job progress as Server-Sent Events with keepalive comments, the state
# saved and verified, asks streamed and not, stop strings, a context
# overflow reported with its counts, the queue limit (429 with Retry-After),
# six concurrent prefills of one corpus sharing one job, cancelling a job;
# then SIGTERM in the middle of a prefill, a restart, the
# job resumed under its id from its last restart point, and the resumed
# state answering exactly as the uninterrupted one (greedy decoding makes
# the answer a fingerprint of the state); the saved state of the first
# corpus answers after the restart without a new prefill; and after an
# ingest that appends a document, a prefill that starts from the earlier
# version's state and answers as a full prefill does.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
make_pki
port=$(free_port 2)
T=https://127.0.0.1:$port
tls_args="--listen 127.0.0.1:$port --tls-cert $tmp/server.pem --tls-key $tmp/server.key"

mkdir -p "$tmp/corpus"
i=1
while [ "$i" -le 120 ]; do
    echo "Rule $i: the parser accepts token $i only after the lexer has seen its prefix."
    i=$((i + 1))
done >"$tmp/corpus/rules.txt"
tar -C "$tmp/corpus" -czf "$tmp/corpus.tar.gz" rules.txt
# Each prefill chunk (64 tokens) takes at least 40 ms, so that a prefill
# of this corpus lasts seconds however fast the engine is: long enough to
# be followed, and to be interrupted mid-way.
export TOMED_TEST_CHUNK_DELAY_MS=40
cat >"$tmp/tomed.conf" <<EOF
prefill_chunk = 64
restart_interval = 256
keepalive_interval = 1
max_answer_tokens = 1048576
max_active_asks = 1
ask_queue_limit = 1
EOF

start_tomed --config "$tmp/tomed.conf" --model "$model" $tls_args --log-level info
wait_ready
unix_http 201 /v1/tokens -d '{"name":"remote","scopes":[{"corpus":"docs","rights":"write"}]}'
bearer="Authorization: Bearer $(json_field secret)"
for corpus in docs docs2 big; do
    unix_http 201 /v1/corpora -d "{\"name\":\"$corpus\"}"
    unix_http 200 "/v1/corpora/$corpus/ingest" -H 'Content-Type: application/octet-stream' \
        --data-binary "@$tmp/corpus.tar.gz"
done

# prefill CORPUS: start a prefill and wait for it to finish.
prefill() {
    unix_http 202 "/v1/corpora/$1/prefill" -X POST || return
    follow "$(json_field id)"
    checks=$((checks + 1))
    tail -3 "$tmp/events" | grep -q '^event: done' || fail "the prefill of $1 did not finish"
}

# follow JOB: the job's event stream, to $tmp/events, until it ends.
follow() {
    curl -sN --max-time 120 --unix-socket "$sock" "http://tome/v1/jobs/$1/events" >"$tmp/events"
}

# ---- an uninterrupted prefill, followed as it runs ----
unix_http 202 /v1/corpora/docs/prefill -X POST && body_has '"status":"queued"'
job=$(json_field id)
unix_http 200 /v1/corpora/docs/prefill -X POST && body_has "\"id\":\"$job\""
follow "$job"
checks=$((checks + 1))
grep -q '^event: progress' "$tmp/events" || fail "no progress events: $(head -3 "$tmp/events")"
grep -q '^: keepalive' "$tmp/events" || fail "no keepalive comments during the prefill"
grep '^data:' "$tmp/events" | grep -q '"status":"running","tokens_done":[1-9][0-9]*,"tokens_total":[1-9][0-9]*,"tokens_per_s":[1-9]' ||
    fail "progress lacks tokens done / total / rate"
grep -q '"eta_s":[0-9]' "$tmp/events" || fail "progress lacks an ETA"
tail -3 "$tmp/events" | grep -q '^event: done' || fail "the stream does not end with done"
total=$(grep '^data:' "$tmp/events" | tail -1 | sed -n 's/.*"tokens_total":\([0-9]*\).*/\1/p')
check "a prefill of the test corpus has thousands of tokens" [ "${total:-0}" -gt 2000 ]
unix_http 200 "/v1/jobs/$job" && body_has '"status":"done"' && body_has '"restart_point":[1-9]'
unix_http 200 /v1/jobs && body_has "\"id\":\"$job\""
unix_http 200 /v1/corpora/docs && body_has '"state":\{"id":"[0-9]+","tokens":[0-9]+,"bytes":[1-9]'
state=$(sed -n 's/.*"state":{"id":"\([0-9]*\)".*/\1/p' "$tmp/body")
check "the finished prefill was saved" [ -f "$tmp/state/kv/state-$job.kv" ]
check "its restart point file is gone" [ ! -e "$tmp/state/kv/job-$job.kv" ]
unix_http 200 /v1/cache && body_has "\"id\":\"$state\",\"version\":[0-9]+,\"tokens\":$total"
unix_http 200 "/v1/cache/$state/verify" -X POST && body_has '"ok":true'
unix_http 200 /v1/corpora/docs/prefill -X POST && body_has '"status":"done"'

# The same over TLS with a bearer token: the job, its events, a prefill.
http 200 --cacert "$tmp/ca.pem" -H "$bearer" "$T/v1/jobs/$job" && body_has '"status":"done"'
http 200 --cacert "$tmp/ca.pem" -H "$bearer" "$T/v1/jobs/$job/events" &&
    body_has '^event: done$'
http 200 --cacert "$tmp/ca.pem" -H "$bearer" -X POST "$T/v1/corpora/docs/prefill"
http 403 --cacert "$tmp/ca.pem" -H "$bearer" -X POST "$T/v1/corpora/docs2/prefill"
unix_http 409 "/v1/jobs/$job" -X DELETE && body_has 'has finished'

# ---- asking: one JSON answer, then a stream of the same answer ----
q='"question":"Which rule mentions token 7?","max_tokens":6,"temperature":0'
unix_http 200 /v1/corpora/docs/ask -d "{$q,\"stream\":false}"
body_has '"finish_reason":"(length|stop)"'
body_has "\"usage\":\\{\"corpus_tokens\":$total,\"prompt_tokens\":[0-9]+,\"cached_tokens\":$total,\"completion_tokens\":[1-6],\"context_tokens\":1048576\\}"
body_has '"timings":\{"queue_ms":[0-9.e-]+,"ttft_ms":[0-9.e-]+,"prefill_tokens_per_s":[0-9.e+-]+,"decode_tokens_per_s":[0-9.e+-]+,"total_ms":[0-9.e+-]+\}'
body_has "\"state\":\\{\"id\":\"$state\",\"tokens\":$total,\"hit\":true\\}"
answer=$(sed -n 's/^{"answer":"\(.*\)","finish_reason".*/\1/p' "$tmp/body")
check "the answer is not empty" [ -n "$answer" ]
unix_http 200 /v1/corpora/docs/ask -d "{$q}"
body_has '^event: token$'
checks=$((checks + 1))
grep -q "^data: {\"answer\":\"$(printf '%s' "$answer" | sed 's/[][\.*^$]/\\&/g')\"" "$tmp/body" ||
    fail "the streamed answer differs from the JSON one ($answer): $(tail -2 "$tmp/body")"
cp "$tmp/body" "$tmp/stream"

http 200 --cacert "$tmp/ca.pem" -H "$bearer" -d "{$q}" "$T/v1/corpora/docs/ask"
checks=$((checks + 1))
grep -q "^data: {\"answer\":\"$(printf '%s' "$answer" | sed 's/[][\.*^$]/\\&/g')\"" "$tmp/body" ||
    fail "the answer over TLS differs: $(tail -2 "$tmp/body")"
http 403 --cacert "$tmp/ca.pem" -H "$bearer" -d "{$q}" "$T/v1/corpora/big/ask"

# A stop string made of the answer's first piece (still JSON-encoded, as
# the stream sent it) ends the answer before anything is sent.
first=$(sed -n 's/^data: {"text":\(".*"\)}$/\1/p' "$tmp/stream" | head -1)
unix_http 200 /v1/corpora/docs/ask -d "{$q,\"stream\":false,\"stop\":[$first]}"
body_has '^\{"answer":"","finish_reason":"stop_string"'

# A question that cannot fit is refused with its counts, never truncated.
unix_http 413 /v1/corpora/docs/ask -d '{"question":"x","max_tokens":1048576,"stream":false}'
body_has '"code":"limit"' && body_has '"usage":\{"corpus_tokens":[0-9]+'

# ---- the queue limit: one active question, one waiting, the next refused ----
long='{"question":"Tell me everything.","max_tokens":100000,"stream":false}'
decoded() { curl -s --unix-socket "$sock" http://tome/metrics | sed -n 's/^tome_decode_tokens_total //p'; }
before=$(decoded)
curl -s -o /dev/null --max-time 60 --unix-socket "$sock" -d "$long" http://tome/v1/corpora/docs/ask &
a1=$!
first_decodes() { [ "$(decoded)" -gt "$before" ]; }
wait_for "the first question is decoding" first_decodes
curl -s -o /dev/null --max-time 60 --unix-socket "$sock" -d "$long" http://tome/v1/corpora/docs/ask &
a2=$!
i=0
until curl -s --unix-socket "$sock" http://tome/metrics | grep -q '^tome_queue_depth 1$'; do
    i=$((i + 1))
    [ "$i" -le 100 ] || { fail "the second question never waited in the queue"; break; }
    sleep 0.1
done
checks=$((checks + 1))
curl -s -D "$tmp/headers" -o "$tmp/body" --unix-socket "$sock" -d "$long" \
    http://tome/v1/corpora/docs/ask
grep -q '^HTTP/1.1 429' "$tmp/headers" || fail "a full queue did not answer 429: $(head -1 "$tmp/headers")"
grep -qi '^Retry-After: [0-9]' "$tmp/headers" || fail "429 without Retry-After"
kill "$a1" "$a2" 2>/dev/null
wait "$a1" "$a2" 2>/dev/null
unix_http 200 /metrics && body_has '^tome_cache_hits_total [1-9]' &&
    body_has '^tome_decode_tokens_total [1-9]' && body_has '^tome_jobs\{state="done"\} [1-9]'

# ---- six prefills of one corpus at once make one job; cancelling it ----
racers=""
for i in 1 2 3 4 5 6; do
    curl -s -o "$tmp/race$i" -w '%{http_code}\n' -X POST --unix-socket "$sock" \
        http://tome/v1/corpora/big/prefill >"$tmp/race$i.code" &
    racers="$racers $!"
done
wait $racers
codes=$(cat "$tmp"/race?.code | tr -d '\n')
check "one 202 and five 200s for six concurrent prefills: $codes" \
    [ "$(cat "$tmp"/race?.code | sort | tr -d '\n')" = 200200200200200202 ]
ids=$(sed -n 's/.*"id":"\([0-9]*\)".*/\1/p' "$tmp"/race? | sort -u)
check "six concurrent prefills share one job: $(echo $ids)" [ "$(echo "$ids" | wc -w)" -eq 1 ]
big=$(echo "$ids" | head -1)
unix_http 202 "/v1/jobs/$big" -X DELETE
follow "$big"
tail -3 "$tmp/events" | grep -q '^event: canceled' || fail "a cancelled job does not end with canceled"
unix_http 200 "/v1/jobs/$big" && body_has '"status":"canceled"'
unix_http 409 /v1/corpora/big/ask -d "{$q}" && body_has 'prefill first'

# ---- SIGTERM in the middle of a prefill, restart, resume ----
unix_http 202 /v1/corpora/docs2/prefill -X POST
job2=$(json_field id)
: >"$tmp/events2"
curl -sN --max-time 60 --unix-socket "$sock" "http://tome/v1/jobs/$job2/events" >"$tmp/events2" &
watcher=$!
i=0
until grep -q '"restart_point":[1-9]' "$tmp/events2"; do
    i=$((i + 1))
    [ "$i" -le 600 ] || break
    sleep 0.05
done
stop_tomed TERM
wait "$watcher"
checks=$((checks + 1))
grep -q "job $job2 interrupted at token [1-9]" "$tmp/tomed.log" ||
    fail "the prefill was not interrupted mid-way: $(tail -3 "$tmp/tomed.log")"
tail -3 "$tmp/events2" | grep -q '^event: canceled' || fail "followers were not told of the shutdown"
check "the restart point survived the shutdown" [ -f "$tmp/state/kv/job-$job2.kv" ]

start_tomed --config "$tmp/tomed.conf" --model "$model" $tls_args --log-level info
wait_ready
# The finished jobs of the first run are listed again.
listed() { curl -s --unix-socket "$sock" http://tome/v1/jobs | grep -q "$1"; }
wait_for "job $job is listed after the restart" \
    listed "{\"id\":\"$job\",\"kind\":\"prefill\",\"corpus\":\"docs\",\"version\":null,\"status\":\"done\""
unix_http 200 "/v1/jobs/$job" && body_has "\"tokens_done\":$total,\"tokens_total\":$total,"
checks=$((checks + 1))
i=0
until grep -q "resuming job $job2" "$tmp/tomed.log"; do
    i=$((i + 1))
    [ "$i" -le 100 ] || { fail "job $job2 was not resumed: $(tail -3 "$tmp/tomed.log")"; break; }
    sleep 0.1
done
i=0
until curl -s --unix-socket "$sock" "http://tome/v1/jobs/$job2" | grep -q '"status":"done"'; do
    i=$((i + 1))
    [ "$i" -le 600 ] || { fail "the resumed job did not finish"; break; }
    sleep 0.1
done
checks=$((checks + 1))
grep -q "job $job2 resumes from its restart point at token [1-9]" "$tmp/tomed.log" ||
    fail "job $job2 did not resume from its restart point: $(tail -3 "$tmp/tomed.log")"
unix_http 200 /v1/corpora/docs2/ask -d "{$q,\"stream\":false}"
checks=$((checks + 1))
grep -q "^{\"answer\":\"$(printf '%s' "$answer" | sed 's/[][\.*^$]/\\&/g')\"" "$tmp/body" ||
    fail "the resumed state answers differently: $(head -c 200 "$tmp/body") vs $answer"

# The first corpus's state was saved: it answers without a new prefill.
unix_http 200 /v1/corpora/docs/ask -d "{$q,\"stream\":false}" &&
    body_has "\"state\":\\{\"id\":\"$state\",\"tokens\":$total,\"hit\":true\\}"
checks=$((checks + 1))
grep -q "^{\"answer\":\"$(printf '%s' "$answer" | sed 's/[][\.*^$]/\\&/g')\"" "$tmp/body" ||
    fail "the restored state answers differently: $(head -c 200 "$tmp/body")"

# ---- after an ingest that appends a document, only the tail is prefilled ----
printf 'Appendix: the lexer never looks back.\n' >"$tmp/corpus/appendix.txt"
tar -C "$tmp/corpus" -czf "$tmp/corpus2.tar.gz" rules.txt appendix.txt
for corpus in inc ref; do
    unix_http 201 /v1/corpora -d "{\"name\":\"$corpus\"}"
    unix_http 200 "/v1/corpora/$corpus/ingest" -H 'Content-Type: application/octet-stream' \
        --data-binary "@$tmp/corpus.tar.gz"
done
prefill inc
for corpus in inc ref; do
    unix_http 200 "/v1/corpora/$corpus/ingest" -H 'Content-Type: application/octet-stream' \
        --data-binary "@$tmp/corpus2.tar.gz" && body_has '"added":\[\{"path":"appendix.txt"'
done
prefill inc
inc_job=$(grep '^data:' "$tmp/events" | tail -1 | sed -n 's/^data: {"id":"\([0-9]*\)".*/\1/p')
checks=$((checks + 1))
grep -q "job $inc_job starts from a saved state at token [1-9][0-9]* of " "$tmp/tomed.log" ||
    fail "the second prefill of inc did not start from the first one's state"
prefill ref
unix_http 200 /v1/corpora/ref/ask -d "{$q,\"stream\":false}"
reference=$(sed -n 's/^{"answer":"\(.*\)","finish_reason".*/\1/p' "$tmp/body")
unix_http 200 /v1/corpora/inc/ask -d "{$q,\"stream\":false}"
checks=$((checks + 1))
grep -q "^{\"answer\":\"$(printf '%s' "$reference" | sed 's/[][\.*^$]/\\&/g')\"" "$tmp/body" ||
    fail "the incremental state answers differently from a full prefill: $(head -c 200 "$tmp/body")"

# ---- a changed document: the prefill starts from a restart point before it ----
sed -i 's/^Rule 120: .*/Rule 120: the parser was rewritten./' "$tmp/corpus/rules.txt"
tar -C "$tmp/corpus" -czf "$tmp/corpus3.tar.gz" rules.txt appendix.txt
unix_http 201 /v1/corpora -d '{"name":"ref3"}'
for archive in corpus corpus2 corpus3; do
    unix_http 200 /v1/corpora/ref3/ingest -H 'Content-Type: application/octet-stream' \
        --data-binary "@$tmp/$archive.tar.gz"
done
unix_http 200 /v1/corpora/inc/ingest -H 'Content-Type: application/octet-stream' \
    --data-binary "@$tmp/corpus3.tar.gz" && body_has '"changed":\[\{"path":"rules.txt"'
prefill inc
inc_job=$(grep '^data:' "$tmp/events" | tail -1 | sed -n 's/^data: {"id":"\([0-9]*\)".*/\1/p')
checks=$((checks + 1))
grep -q "job $inc_job starts from a saved state at token [1-9][0-9]* of " "$tmp/tomed.log" ||
    fail "the prefill after a change did not start from a restart point"
prefill ref3
unix_http 200 /v1/corpora/ref3/ask -d "{$q,\"stream\":false}"
reference=$(sed -n 's/^{"answer":"\(.*\)","finish_reason".*/\1/p' "$tmp/body")
unix_http 200 /v1/corpora/inc/ask -d "{$q,\"stream\":false}"
checks=$((checks + 1))
grep -q "^{\"answer\":\"$(printf '%s' "$reference" | sed 's/[][\.*^$]/\\&/g')\"" "$tmp/body" ||
    fail "the state from a restart point answers differently: $(head -c 200 "$tmp/body")"
checks=$((checks + 1))
grep -E '^tomed: warn: .*(restart point at token|stays in memory only|not used)' "$tmp/tomed.log" &&
    fail "saving or restoring a state failed"

# ---- deleting a corpus drops its state ----
unix_http 204 /v1/corpora/docs2 -X DELETE
unix_http 404 /v1/corpora/docs2/ask -d "{$q}"
check "the deleted corpus's state file is gone" [ ! -e "$tmp/state/kv/state-$job2.kv" ]

stop_tomed TERM
finish
