#!/bin/sh
# The OpenAI-compatible endpoints under /openai/v1/ on a real tomed with
# the built-in tiny model: the models list (corpora with a prefilled state,
# and only those the principal may read), chat completions non-streamed and
# streamed (OpenAI's chunks, then finish_reason, then [DONE]), the cached
# corpus tokens in usage, tome's extras, and errors in OpenAI's shape - over
# the Unix socket with curl, and through the official OpenAI Node SDK
# (tests/openai-client.mjs) over TLS with a bearer token and over the Unix
# socket with the peer's uid as the principal; npm installs the SDK
# once into ${TOME_NPM_CACHE:-$HOME/.cache/tome-npm}.  Without npm the SDK
# part is skipped (the curl part still runs); an npm that cannot install
# the SDK is a failure.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
make_pki
port=$(free_port 3)
T=https://127.0.0.1:$port
sdk_version=6.30.1 # 7.x needs Node 22; Debian 12 has Node 18/20

mkdir -p "$tmp/corpus"
i=1
while [ "$i" -le 40 ]; do
    echo "Rule $i: the parser accepts token $i only after the lexer has seen its prefix."
    i=$((i + 1))
done >"$tmp/corpus/rules.txt"
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
body_has '^\{"object":"list","data":\[\{"id":"docs","object":"model","created":1[0-9]{9},"owned_by":"tome"\}\]\}$'

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

# ---- errors, in OpenAI's shape ----
unix_http 404 /openai/v1/chat/completions -d '{"model":"nope","messages":[{"role":"user","content":"x"}]}'
body_has '^\{"error":\{"message":"corpus .nope. does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"\}\}$'
unix_http 409 /openai/v1/chat/completions -d '{"model":"raw","messages":[{"role":"user","content":"x"}]}'
body_has '"type":"invalid_request_error".*"code":"mismatch"'
unix_http 400 /openai/v1/chat/completions -d '{"model":"docs","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"x"}]}'
body_has 'only one message is supported yet'
unix_http 400 /openai/v1/chat/completions -d '{"model":"docs","messages":[{"role":"user","content":"x"}],"n":2}'
body_has '"code":"invalid"'
http 401 --cacert "$tmp/ca.pem" -H 'Authorization: Bearer wrong' "$T/openai/v1/models"
body_has '"type":"authentication_error","param":null,"code":"invalid_api_key"'
http 401 --cacert "$tmp/ca.pem" "$T/openai/v1/models"
body_has '"type":"authentication_error"'

# ---- the official SDK over TLS with a bearer token ----
unix_http 201 /v1/tokens -d '{"name":"sdk","scopes":[{"corpus":"docs","rights":"read"}]}'
secret=$(json_field secret)
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "SKIP: npm or node is missing; the OpenAI SDK part did not run"
else
    # Without HOME (cron), the SDK is installed into this test's directory.
    sdk=${TOME_NPM_CACHE:-${HOME:-$tmp}/.cache/tome-npm}/openai-$sdk_version
    if [ ! -f "$sdk/node_modules/openai/package.json" ]; then
        mkdir -p "$sdk" 2>"$tmp/npm.log" &&
            npm install --prefix "$sdk" --no-audit --no-fund --fetch-retries=1 \
                --fetch-timeout=60000 "openai@$sdk_version" \
                >>"$tmp/npm.log" 2>&1 ||
            { fail "npm could not install openai@$sdk_version into $sdk: $(tail -5 "$tmp/npm.log")"; finish; }
    fi
    checks=$((checks + 1))
    NODE_EXTRA_CA_CERTS="$tmp/ca.pem" node "$src/tests/openai-client.mjs" "$sdk" \
        "$T/openai/v1" "$secret" docs "$tokens" "$sock" >"$tmp/sdk.log" 2>&1 ||
        fail "the OpenAI SDK client: $(cat "$tmp/sdk.log")"
    cat "$tmp/sdk.log"
fi

stop_tomed TERM
finish
