#!/bin/sh
# The OpenAI-compatible endpoints under /openai/v1/ on a real tomed with
# the built-in tiny model: the models list (the bare model, and corpora with
# a prefilled state that the principal may read), chat completions
# non-streamed and streamed (OpenAI's chunks, then finish_reason, then
# [DONE]), conversations encoded after the corpus (their prompt tokens are
# the corpus's plus what tome-tokenize counts for the turns), completions,
# the bare model, thinking split into reasoning_content, the cached corpus
# tokens in usage, tome's extras, and errors in OpenAI's shape - over the
# Unix socket with curl, and through the official OpenAI Node SDK
# (tests/openai-client.mjs) over TLS with a bearer token and over the Unix
# socket with the peer's uid as the principal; the SDK comes from
# tests/npm's lock file (npm_clients).  Without npm the SDK part is skipped
# (the curl part still runs); an npm that cannot install it is a failure.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
make_pki
port=$(free_port 3)
T=https://127.0.0.1:$port

# count_ids FILE.json: the ids V4's chat encoding of those messages has
# (BOS included), counted by tome-tokenize, not by tomed.
count_ids() {
    "$build/tools/tome-tokenize" --model "$model" --chat "$1" --ids | tr ',' '\n' | grep -c '[0-9]'
}

make_rules "$tmp/corpus"
start_tomed --model "$model" --listen "127.0.0.1:$port" --tls-cert "$tmp/server.pem" \
    --tls-key "$tmp/server.key" --log-level info
wait_ready
for corpus in docs raw; do
    unix_http 201 /v1/corpora -d "{\"name\":\"$corpus\"}"
    unix_http 200 "/v1/corpora/$corpus/ingest" -d "{\"path\":\"$tmp/corpus\"}"
done
unix_http 202 /v1/corpora/docs/prefill -X POST
curl -sN --max-time 120 --unix-socket "$sock" \
    "http://tome/v1/jobs/$(json_field id)/events" >"$tmp/events"
check "the prefill finished" grep -q '^event: done' "$tmp/events"
unix_http 200 /v1/corpora/docs
tokens=$(sed -n 's/.*"state":{"id":"[0-9]*","tokens":\([0-9]*\).*/\1/p' "$tmp/body")
check "the corpus has a state of some tokens" [ "${tokens:-0}" -gt 100 ]

# ---- models: corpora with a prefilled state ----
unix_http 200 /openai/v1/models
body_has '^\{"object":"list","data":\[\{"id":"deepseek-v4/bare","object":"model","created":1[0-9]{9},"owned_by":"tome"\},\{"id":"docs","object":"model","created":1[0-9]{9},"owned_by":"tome"\}\]\}$'

# ---- a chat completion, then the same streamed ----
q='"model":"docs","messages":[{"role":"user","content":"Which rule mentions token 7?"}],"max_tokens":4,"temperature":0'
unix_http 200 /openai/v1/chat/completions -d "{$q}"
body_has '^\{"id":"chatcmpl-[0-9a-f]+-[0-9]+","object":"chat.completion","created":[0-9]+,"model":"docs","choices":\[\{"index":0,"message":\{"role":"assistant","content":".*"\},"finish_reason":"(stop|length)"\}\]'
body_has "\"usage\":\\{\"prompt_tokens\":[0-9]+,\"completion_tokens\":[1-4],\"total_tokens\":[0-9]+,\"prompt_tokens_details\":\\{\"cached_tokens\":$tokens\\}\\}"
body_has '"tome":\{"citations":\[.*\],"sources":\[\{"path":"rules.txt","line":7,'
answer=$(sed -n 's/.*"content":"\(.*\)"},"finish_reason".*/\1/p' "$tmp/body")
unix_http 200 /openai/v1/chat/completions -d "{$q,\"stream\":true,\"stop\":\"never said\"}"
body_has '^data: \{"id":"chatcmpl-[0-9a-f]+-[0-9]+","object":"chat.completion.chunk","created":[0-9]+,"model":"docs","choices":\[\{"index":0,"delta":\{"role":"assistant","content":'
body_has '"choices":\[\{"index":0,"delta":\{\},"finish_reason":"(stop|length)"\}\],"usage":\{"prompt_tokens"'
checks=$((checks + 1))
[ "$(tail -2 "$tmp/body" | head -1)" = 'data: [DONE]' ] || fail "the stream does not end with [DONE]: $(tail -3 "$tmp/body")"
grep -q '^event:' "$tmp/body" && fail "OpenAI's stream has no named events: $(head -3 "$tmp/body")"
pieces=$(sed -n 's/^data: {.*"delta":{[^}]*"content":"\(.*\)"},"finish_reason":null}]}$/\1/p' "$tmp/body" | tr -d '\n')
check "the streamed pieces make the answer ('$pieces' vs '$answer')" [ "$pieces" = "$answer" ]

# ---- a conversation after the corpus: only the turns are new tokens ----
turns='[{"role":"user","content":"Which rule mentions token 7?"},{"role":"assistant","content":"Rule 7."},{"role":"user","content":"And token 8?"}]'
echo "$turns" >"$tmp/turns.json"
turn_ids=$(($(count_ids "$tmp/turns.json") - 1)) # less the BOS the corpus's prefix has
unix_http 200 /openai/v1/chat/completions -d "{\"model\":\"docs\",\"messages\":$turns,\"max_tokens\":2,\"seed\":7,\"top_p\":0.9}"
body_has "\"usage\":\\{\"prompt_tokens\":$((tokens + turn_ids)),\"completion_tokens\":[12],\"total_tokens\":[0-9]+,\"prompt_tokens_details\":\\{\"cached_tokens\":$tokens\\}\\}"
unix_http 200 /openai/v1/chat/completions -d "{\"model\":\"docs\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1}"
body_has '"finish_reason":"length"'

# ---- the bare model: the whole prompt is new ----
echo '[{"role":"user","content":"Hello there"}]' >"$tmp/bare.json"
unix_http 200 /openai/v1/chat/completions -d "{\"model\":\"deepseek-v4/bare\",\"messages\":$(cat "$tmp/bare.json"),\"max_tokens\":2}"
body_has "\"model\":\"deepseek-v4/bare\".*\"prompt_tokens\":$(count_ids "$tmp/bare.json"),.*\"cached_tokens\":0\\}.*\"tome\":\\{\"citations\":\\[\\],\"sources\":\\[\\]"

# ---- completions: the prompt follows the corpus as plain text ----
unix_http 200 /openai/v1/completions -d '{"model":"docs","prompt":"Rule 41:","max_tokens":3,"temperature":0}'
body_has '^\{"id":"cmpl-[0-9a-f]+-[0-9]+","object":"text_completion","created":[0-9]+,"model":"docs","choices":\[\{"text":".*","index":0,"logprobs":null,"finish_reason":"(stop|length)"\}\]'
body_has "\"cached_tokens\":$tokens\\}"
completion=$(sed -n 's/.*"choices":\[{"text":"\(.*\)","index":0.*/\1/p' "$tmp/body")
unix_http 200 /openai/v1/completions -d '{"model":"docs","prompt":"Rule 41:","max_tokens":3,"temperature":0,"stream":true}'
pieces=$(sed -n 's/^data: {.*"choices":\[{"text":"\(.*\)","index":0,"logprobs":null,"finish_reason":null}\]}$/\1/p' "$tmp/body" | tr -d '\n')
check "the streamed completion is the completion ('$pieces' vs '$completion')" [ "$pieces" = "$completion" ]
checks=$((checks + 1))
[ "$(tail -2 "$tmp/body" | head -1)" = 'data: [DONE]' ] || fail "the completion stream does not end with [DONE]"

# ---- thinking: the text up to </think> is reasoning_content ----
think_end=$(printf '</think>' | "$build/tools/tome-tokenize" --model "$model" --special | tr -d '[] ')
think="\"model\":\"docs\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"thinking\":{\"type\":\"enabled\"},\"max_tokens\":3,\"logit_bias\":{\"$think_end\":100}"
unix_http 200 /openai/v1/chat/completions -d "{$think}"
body_has '"message":\{"role":"assistant","reasoning_content":"","content":"</think></think>"\}'
unix_http 200 /openai/v1/chat/completions -d "{$think,\"stream\":true}"
body_has '"delta":\{"role":"assistant","content":"</think>"\}'
checks=$((checks + 1))
grep -q reasoning_content "$tmp/body" && fail "an empty reasoning was streamed: $(head -3 "$tmp/body")"

# ---- errors, in OpenAI's shape ----
unix_http 404 /openai/v1/chat/completions -d '{"model":"nope","messages":[{"role":"user","content":"x"}]}'
body_has '^\{"error":\{"message":"corpus .nope. does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"\}\}$'
unix_http 409 /openai/v1/chat/completions -d '{"model":"raw","messages":[{"role":"user","content":"x"}]}'
body_has '"type":"invalid_request_error".*"code":"mismatch"'
unix_http 400 /openai/v1/chat/completions -d '{"model":"docs","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}'
body_has '"message":"the last message must have the role .user.","type":"invalid_request_error"'
unix_http 400 /openai/v1/chat/completions -d '{"model":"docs","messages":[{"role":"tool","content":"x"}]}'
body_has '"message":"messages\[0\]: .role. must be system, user or assistant'
unix_http 400 /openai/v1/chat/completions -d '{"model":"docs","messages":[{"role":"user","content":"x"}],"thinking":{"type":"sometimes"}}'
body_has '"message":".thinking. must be'
unix_http 400 /openai/v1/completions -d '{"model":"docs","prompt":42}'
body_has '"message":".prompt. must be a non-empty string'
unix_http 400 /openai/v1/chat/completions -d '{"model":"docs","messages":[{"role":"user","content":"x"}],"n":2}'
body_has '"code":"invalid"'
http 401 --cacert "$tmp/ca.pem" -H 'Authorization: Bearer wrong' "$T/openai/v1/models"
body_has '"type":"authentication_error","param":null,"code":"invalid_api_key"'
http 401 --cacert "$tmp/ca.pem" "$T/openai/v1/models"
body_has '"type":"authentication_error"'

# ---- the official SDK over TLS with a bearer token ----
unix_http 201 /v1/tokens -d '{"name":"sdk","scopes":[{"corpus":"docs","rights":"read"}]}'
secret=$(json_field secret)
if npm_clients; then
    checks=$((checks + 1))
    NODE_EXTRA_CA_CERTS="$tmp/ca.pem" node "$src/tests/openai-client.mjs" "$clients" \
        "$T/openai/v1" "$secret" docs "$tokens" "$sock" >"$tmp/sdk.log" 2>&1 ||
        fail "the OpenAI SDK client: $(cat "$tmp/sdk.log")"
    cat "$tmp/sdk.log"
fi

stop_tomed TERM
finish
