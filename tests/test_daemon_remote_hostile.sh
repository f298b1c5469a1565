#!/bin/sh
# engine = remote against a broken or hostile OpenAI-compatible upstream
# (tests/upstream-server.mjs, one replica over plain HTTP).  A valid stream
# in any framing the standard allows gives the whole answer; every stream
# that goes wrong (an error event, an event that is not JSON, a finish
# reason that is not an end, impossible usage, no [DONE], text past
# max_tokens, an event past the size limit, a reply that is not a stream)
# gives the question an error that names the upstream and the fault, never
# an answer cut short and reported as finished; and tomed keeps serving.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
command -v node >/dev/null 2>&1 || { echo "FAIL: node is missing"; exit 1; }

upstream_pid=""
stop_upstream() {
    [ -n "$upstream_pid" ] && kill "$upstream_pid" 2>/dev/null
    cleanup
}
trap stop_upstream EXIT

echo ok >"$tmp/mode"
node "$src/tests/upstream-server.mjs" "$tmp/mode" >"$tmp/port" 2>"$tmp/upstream.log" &
upstream_pid=$!
wait_for "the upstream listens" test -s "$tmp/port" || exit 1
url=http://127.0.0.1:$(cat "$tmp/port")/v1

# remote_timeout: a transfer that waited after [DONE] would fail after it.
cat >"$tmp/front.conf" <<CONF
engine = remote
remote = $url
remote_timeout = 3
remote_health_interval = 1
CONF
start_tomed --config "$tmp/front.conf" --model "$model"
make_rules "$tmp/c"
unix_http 201 /v1/corpora -d '{"name":"c"}'
unix_http 200 /v1/corpora/c/ingest -d "{\"path\":\"$tmp/c\"}"
unix_http 202 /v1/corpora/c/prefill -X POST
curl -sN --max-time 60 --unix-socket "$sock" "http://tome/v1/jobs/$(json_field id)/events" >"$tmp/events"
check "the prefill finished" grep -q '^event: done' "$tmp/events"

# ask MODE STATUS: a question (8 tokens at most) while the upstream
# behaves as MODE; the body in $tmp/body.
ask() {
    echo "$1" >"$tmp/mode"
    unix_http "$2" /v1/corpora/c/ask --max-time 60 \
        -d '{"question":"Which rule names token 7?","max_tokens":8,"stream":false}'
}
# refused MODE MESSAGE-REGEX: the question fails with that message, after
# the 3 bytes of text the upstream streamed first.
refused() {
    ask "$1" 502
    body_has "^\\{\"error\":\\{\"code\":\"upstream\",\"message\":\"replica $url failed after 3 bytes of the answer were streamed \\(not retried\\): $url$2\"\\}\\}"
}

# ---- valid streams: the whole answer ----
ask ok 200
body_has '"answer":"Hello, world\.","finish_reason":"stop","usage":\{"corpus_tokens":[0-9]+,"prompt_tokens":[0-9]+,"cached_tokens":[0-9]+,"completion_tokens":3,'
# JSON over several data lines, CR and CRLF line ends, a comment and an id,
# written a byte or two at a time.
ask split 200
body_has '"answer":"Hello, world\.","finish_reason":"stop","usage":\{[^}]*"completion_tokens":3,'
# JSON escapes and a surrogate pair arrive as the text they stand for;
# U+0000 as U+FFFD, as the local engine's answers hold it.
ask escapes 200
body_has "\"answer\":\"\\\\\"a\\\\\" \\\\\\\\ b\\\\n$(printf '\357\277\275\360\237\230\200')\",\"finish_reason\":\"stop\""

# The transfer ends at [DONE], not when the upstream closes.
ask done-open 200
body_has '"answer":"Hello, world\.","finish_reason":"stop"'

# ---- broken streams: an error that says what ----
refused error ' sent an error: the server ran out of KV cache blocks'
refused named-error ' sent an error: worker 3 lost its GPU'
refused old-error ' sent an error: CUDA out of memory'
refused not-json ' sent an event that is not a JSON object \(.*\): <html><body>502 Bad Gateway</body></html>'
refused abort ': the answer ended with finish_reason abort, not stop or length'
ask no-done 502
body_has "failed after 13 bytes of the answer were streamed \\(not retried\\): $url: the stream ended without \\[DONE\\]\""
ask bad-usage 502
body_has "failed after 6 bytes of the answer were streamed \\(not retried\\): $url: usage's prompt_tokens is not a count of tokens\""
ask endless 502
body_has "failed after [0-9]+ bytes of the answer were streamed \\(not retried\\): $url: the answer runs past max_tokens \\(8\\)\""
# Before any text, a failure is tried on the next replica (there is none).
ask error-first 502
body_has "\"message\":\"no replica could answer: $url sent an error: the request was preempted\""
ask huge 502
body_has "\"message\":\"no replica could answer: an event from $url is over 4194304 bytes\""
ask json 502
body_has "\"message\":\"no replica could answer: $url answered a stream with Content-Type application/json, not text/event-stream\""

# ---- streamed to the client: the text so far, then an error event ----
echo error >"$tmp/mode"
curl -sN --max-time 60 --unix-socket "$sock" http://tome/v1/corpora/c/ask \
    -d '{"question":"Which rule names token 7?","max_tokens":8}' >"$tmp/stream"
check "the streamed answer had its text: $(head -c 300 "$tmp/stream")" \
    grep -q '^data: {"text":"Hel"}' "$tmp/stream"
check "then an error naming the upstream's: $(tail -c 300 "$tmp/stream")" \
    grep -q '^data: .*sent an error: the server ran out of KV cache blocks' "$tmp/stream"
check "and no done event" sh -c "! grep -q '^event: done' '$tmp/stream'"

# ---- the OpenAI-compatible API: a 502 server_error, code upstream ----
echo error >"$tmp/mode"
unix_http 502 /openai/v1/completions -d '{"model":"c","prompt":"Hi","max_tokens":8}'
body_has '^\{"error":\{"message":"replica [^"]* sent an error: the server ran out of KV cache blocks","type":"server_error","param":null,"code":"upstream"\}\}$'
unix_http 200 /metrics
body_has '^tome_errors_total\{code="upstream"\} [1-9][0-9]*$'

# ---- tomed kept serving ----
ask ok 200
body_has '"answer":"Hello, world\.","finish_reason":"stop"'
check "tomed is alive" kill -0 "$daemon_pid"
stop_tomed
finish
