#!/bin/sh
# engine = remote: a tomed (the front) whose engine is two other real
# tomeds (the replicas, local engine, the built-in tiny model) reached
# over TLS with an API key at their /openai/v1/, as it would drive vLLM or
# SGLang.  Ingest and prefill through the front; each corpus warms the
# replica rendezvous hashing gives it (checked against the hash computed
# here) and that replica's prefix cache then holds it; questions come back
# with cached_tokens equal to the corpus's tokens; a replica killed before
# a question: the other one answers after re-warming; a replica killed
# while an answer streams: a clear error, no retry.  Every request the
# front sent is checked against OpenAI's completions request schema
# (tests/data/openai-completions-request.schema.json).
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
make_pki
# The Python with jsonschema: the one on PATH, or Debian's (where
# scripts/install-deps.sh puts python3-jsonschema) when PATH has another.
py=""
for candidate in python3 /usr/bin/python3; do
    if "$candidate" -c 'import jsonschema' 2>/dev/null; then py=$candidate; break; fi
done
[ -n "$py" ] || { echo "FAIL: no python3 with jsonschema (apt-get install python3-jsonschema)"; exit 1; }

# The answers: 30 fixed ids, 60 ms apart, so a test can act mid-answer.
echo '[3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,
3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,3742,3742]' >"$tmp/ids.json"

replica_pids=""
stop_replicas() {
    for p in $replica_pids; do kill -9 "$p" 2>/dev/null; done
    cleanup
}
trap stop_replicas EXIT

# start_replica NAME PORT: a tomed on 127.0.0.1:PORT (TLS), its own state
# and socket; waits for `tomed ready`; NAME_key gets an API key for it.
start_replica() {
    : >"$tmp/$1.log"
    TOMED_TEST_ANSWER_IDS=$tmp/ids.json TOMED_TEST_TOKEN_DELAY_MS=60 \
        "$tomed" --foreground --state-dir "$tmp/$1" --socket "$tmp/$1.sock" --model "$model" \
        --listen "127.0.0.1:$2" --tls-cert "$tmp/server.pem" --tls-key "$tmp/server.key" \
        2>>"$tmp/$1.log" &
    eval "${1}_pid=$!"
    replica_pids="$replica_pids $!"
    wait_for "replica $1 is ready" grep -q '^tomed ready$' "$tmp/$1.log" || exit 1
    http 201 --unix-socket "$tmp/$1.sock" http://tome/v1/tokens \
        -d '{"name":"front","scopes":[{"corpus":"*","rights":"read"}]}'
    json_field secret >"$tmp/$1.key"
}

pa=$(free_port 21)
pb=$(free_port 22)
[ "$pb" = "$pa" ] && pb=$(free_port 23)
start_replica a "$pa"
start_replica b "$pb"
ua=https://127.0.0.1:$pa/openai/v1
ub=https://127.0.0.1:$pb/openai/v1

# ---- TLS with an API key: the replicas want the key ----
http 401 --cacert "$tmp/ca.pem" "$ua/models"
http 200 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $(cat "$tmp/a.key")" "$ua/models"

cat >"$tmp/front.conf" <<EOF
engine = remote
remote = $ua ca=$tmp/ca.pem api_key_file=$tmp/a.key
remote = $ub ca=$tmp/ca.pem api_key_file=$tmp/b.key
remote_health_interval = 1
EOF
TOMED_TEST_REMOTE_REQUESTS=$tmp/requests.jsonl start_tomed --config "$tmp/front.conf" \
    --model "$model" --log-level info
unix_http 200 /v1/ready
body_has '"engine":\{"kind":"remote","healthy":true,"model":"deepseek-v4/bare","replicas":\[\{"url":"https://127\.0\.0\.1:[0-9]+/openai/v1","up":true,"corpora":0\},\{"url":"[^"]*","up":true,"corpora":0\}\]\}'

# score URL CORPUS VERSION: the replica's rendezvous score (hex).
score() { printf '%s\n%s\n%s' "$1" "$2" "$3" | sha256sum | cut -c1-16; }
# where CORPUS: the replica the front says the corpus is warm on.
where() {
    unix_http 200 /v1/cache >/dev/null
    tr '{' '\n' <"$tmp/body" | sed -n "s/.*\"corpus\":\"$1\",\"version\":\([0-9]*\),.*\"replica\":\"\([^\"]*\)\".*/\1 \2/p"
}
# prefill CORPUS: through the front, until the job is done.
prefill() {
    unix_http 202 "/v1/corpora/$1/prefill" -X POST
    curl -sN --max-time 60 --unix-socket "$sock" "http://tome/v1/jobs/$(json_field id)/events" \
        >"$tmp/events"
    check "the prefill of $1 finished" grep -q '^event: done' "$tmp/events"
}
# replica_has NAME TOKENS: the replica's prefix cache holds a prompt of TOKENS.
replica_has() {
    curl -s --unix-socket "$tmp/$1.sock" http://tome/v1/cache |
        grep -q "\"corpus\":\"deepseek-v4/bare\",\"version\":0,\"tokens\":$2,"
}

# ---- ingest and prefill corpora until both replicas hold one (at least 3) ----
n=0 on_a=0 on_b=0
while [ "$n" -lt 3 ] || [ "$on_a" -eq 0 ] || [ "$on_b" -eq 0 ]; do
    n=$((n + 1))
    [ "$n" -le 16 ] || { fail "16 corpora and one replica holds them all"; break; }
    make_rules "$tmp/c$n"
    echo "This is corpus c$n." >"$tmp/c$n/name.txt"
    unix_http 201 /v1/corpora -d "{\"name\":\"c$n\"}"
    unix_http 200 "/v1/corpora/c$n/ingest" -d "{\"path\":\"$tmp/c$n\"}"
    prefill "c$n"
    set -- $(where "c$n")
    version=$1 url=$2
    sa=$(score "$ua" "c$n" "$version") sb=$(score "$ub" "c$n" "$version")
    want=$ua
    [ "$(printf '%s\n%s\n' "$sa" "$sb" | LC_ALL=C sort | tail -1)" = "$sb" ] && want=$ub
    check "c$n is warm where rendezvous hashing puts it ($url, not $want)" [ "$url" = "$want" ]
    unix_http 200 "/v1/corpora/c$n"
    tokens=$(sed -n 's/.*"state":{"id":"[^"]*","tokens":\([0-9]*\).*/\1/p' "$tmp/body")
    eval "tokens_c$n=$tokens"
    if [ "$url" = "$ua" ]; then
        on_a=$((on_a + 1)) here=a
    else
        on_b=$((on_b + 1)) here=b
    fi
    eval "home_c$n=$here"
    check "replica $here caches c$n's $tokens tokens" replica_has "$here" "$tokens"
done
# bare_states NAME: how many prompts the replica's prefix cache holds.
bare_states() {
    curl -s --unix-socket "$tmp/$1.sock" http://tome/v1/cache | tr '{' '\n' |
        grep -c '"corpus":"deepseek-v4/bare"'
}
check "replica a caches its $on_a corpora and nothing else" [ "$(bare_states a)" -eq "$on_a" ]
check "replica b caches its $on_b corpora and nothing else" [ "$(bare_states b)" -eq "$on_b" ]

# ---- questions: the corpus comes from the replica's cache ----
tokens=$tokens_c1
unix_http 200 /v1/corpora/c1/ask -d '{"question":"Which rule names token 7?","max_tokens":4,"stream":false,"seed":3,"stop":["never"]}'
body_has "\"usage\":\\{\"corpus_tokens\":$tokens,\"prompt_tokens\":[0-9]+,\"cached_tokens\":$tokens,\"completion_tokens\":4,"
body_has '"state":\{"id":"remote-[0-9]+-[0-9]+","tokens":[0-9]+,"hit":true\}'
body_has '"sources":\[\{"path":"rules.txt","line":7,'
unix_http 200 /openai/v1/chat/completions -d '{"model":"c1","messages":[{"role":"user","content":"And token 8?"}],"max_tokens":2}'
body_has "\"prompt_tokens_details\":\\{\"cached_tokens\":$tokens\\}"
unix_http 200 /metrics
body_has '^tome_cache_hits_total [2-9]$'
body_has "^tome_cached_prompt_tokens_total $((2 * tokens))\$"
body_has '^tome_cache_misses_total 0$'

# ---- the requests the front sent are OpenAI completions requests ----
check "the front sent requests" [ -s "$tmp/requests.jsonl" ]
"$py" - "$TOME_SRCDIR/tests/data/openai-completions-request.schema.json" "$tmp/requests.jsonl" \
    >"$tmp/schema.out" 2>&1 <<'EOF'
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
for n, line in enumerate(open(sys.argv[2]), 1):
    request = json.loads(line)
    jsonschema.validate(request, schema, cls=jsonschema.Draft202012Validator)
    assert all(isinstance(i, int) for i in request["prompt"]), "prompt is token ids"
    assert request["stream"] and request["stream_options"] == {"include_usage": True}
print(n, "requests valid")
EOF
check "requests match OpenAI's schema: $(tail -3 "$tmp/schema.out")" grep -q 'requests valid' "$tmp/schema.out"

# ---- a replica killed before a question: the other answers after re-warming ----
eval "home=\$home_c1"
other=a
[ "$home" = a ] && other=b
eval "kill -9 \$${home}_pid"
eval "wait \$${home}_pid" 2>/dev/null
unix_http 200 /v1/corpora/c1/ask -d '{"question":"Which rule names token 9?","max_tokens":3,"stream":false}'
body_has "\"cached_tokens\":$tokens,"
check "replica $other now caches c1" replica_has "$other" "$tokens"
set -- $(where c1)
eval "want=\$u$other"
check "c1 is now on replica $other ($2)" [ "$2" = "$want" ]
down() { unix_http 200 /v1/ready >/dev/null && grep -q '"up":false,"corpora":0,"error":"' "$tmp/body"; }
wait_for "the front reports the replica down" down

# ---- a replica killed mid-answer: a clear error, not retried ----
curl -sN --max-time 30 --unix-socket "$sock" http://tome/v1/corpora/c1/ask \
    -d '{"question":"Say a lot.","max_tokens":30}' >"$tmp/stream" &
asker=$!
wait_for "the answer streams" grep -qs '^event: token' "$tmp/stream"
eval "kill -9 \$${other}_pid"
wait "$asker"
check "the stream ends with an error: $(tail -c 300 "$tmp/stream")" \
    grep -q '^event: error' "$tmp/stream"
check "which says tokens were streamed" grep -q 'failed after [0-9]* bytes of the answer were streamed (not retried)' "$tmp/stream"

stop_tomed
finish
