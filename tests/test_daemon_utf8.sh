#!/bin/sh
# Answers are always valid UTF-8, whatever tokens the model emits, and
# every reply is JSON that names its problem.  A byte-level vocabulary has
# tokens that are pieces of characters; a question stopped by max_tokens in
# the middle of a character used to lose its end (no `done` event, an empty
# 503).  Here logit_bias forces such tokens: one unfinished character, a
# stray continuation byte, and random sequences of fragments and whole
# characters, through the real tokenizer into the real JSON and SSE paths
# and the `tome` client.  Also: request targets that do not decode to UTF-8
# are a 400 with a message, and an escaped "/" stays inside its segment.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
tome="$build/client/tome"
export TOME_SOCKET="$sock"

# id_of BYTES: the one token id the tokenizer gives for BYTES (printf form).
id_of() {
    ids=$(printf "$1" | "$build/tools/tome-tokenize" --model "$model" | tr -d '[]')
    case $ids in
    '' | *,*) echo "FAIL: '$1' is not one token ($ids)" >&2; exit 1 ;;
    esac
    echo "$ids"
}
lead3=$(id_of '\xe4\xb8')       # two of the three bytes of U+4E2D
lead4=$(id_of '\xf0\x9f\x98')   # three of the four bytes of an emoji
cont=$(id_of '\xad')            # a continuation byte on its own
cont80=$(id_of '\x80')
never=$(id_of '\xff')           # a byte that is never UTF-8
nul=$(id_of '\000')             # NUL: valid UTF-8, but no C string holds it
whole=$(id_of '\xe4\xb8\xad')   # U+4E2D itself
eacute=$(id_of '\xc3\xa9')
the=$(id_of ' the')
fffd=$(printf '\357\277\275')

mkdir -p "$tmp/corpus"
printf 'The indexer keeps one key per compressed entry.\n' >"$tmp/corpus/notes.txt"
start_tomed --model "$model" --log-level info
wait_ready
unix_http 201 /v1/corpora -d '{"name":"docs"}'
unix_http 200 /v1/corpora/docs/ingest -d "{\"path\":\"$tmp/corpus\"}"
unix_http 202 /v1/corpora/docs/prefill -X POST
curl -sN --max-time 120 --unix-socket "$sock" \
    "http://tome/v1/jobs/$(json_field id)/events" >"$tmp/events"
check "the prefill finished" grep -q '^event: done' "$tmp/events"

# valid_utf8 FILE: iconv accepts every byte.
valid_utf8() { iconv -f UTF-8 -t UTF-8 "$1" >/dev/null 2>&1; }

# ask BIAS MAX-TOKENS [EXTRA-JSON]: one question, not streamed; the body is
# in $tmp/body.
ask() {
    unix_http 200 /v1/corpora/docs/ask \
        -d "{\"question\":\"Which key?\",\"stream\":false,\"logit_bias\":{$1},\"max_tokens\":$2${3:-}}"
}

# ---- a character cut by max_tokens: the answer ends in U+FFFD ----
ask "\"$lead3\":100" 1 ',"temperature":0'
body_has "^\\{\"answer\":\"$fffd\",\"finish_reason\":\"length\""
ask "\"$lead4\":100" 1 ',"temperature":0'
body_has "^\\{\"answer\":\"$fffd\",\"finish_reason\":\"length\""
# ... the same streamed: the stream still ends with its done event.
unix_http 200 /v1/corpora/docs/ask -d "{\"question\":\"Which key?\",\"logit_bias\":{\"$lead3\":100},\"max_tokens\":1,\"temperature\":0}"
body_has '^event: done$'
body_has "^data: \\{\"answer\":\"$fffd\",\"finish_reason\":\"length\""
# ... and through the client, which exits 0 with the text it was given.
checks=$((checks + 1))
if "$tome" ask docs "Which key?" --max-tokens 1 >"$tmp/client.out" 2>"$tmp/client.err"; then
    valid_utf8 "$tmp/client.out" || fail "tome ask printed invalid UTF-8"
else
    fail "tome ask failed: $(cat "$tmp/client.err")"
fi

# ---- every answer has its citations and the question's sources ----
# (The citation parser and resolver are tested in test_ingest; here the
# answer is one forced character, which cites nothing.)
ask "\"$whole\":100" 1 ',"temperature":0'
body_has '"citations":\[\],"sources":\[\{"path":"notes.txt","line":1,"snippet":"The indexer keeps one key per compressed entry.","score":[0-9.e-]+\}\]\}$'
unix_http 200 /v1/corpora/docs/ask -d '{"question":"What about walnuts?","stream":false,"max_tokens":1}'
body_has '"citations":\[\],"sources":\[\]\}$'
unix_http 200 /v1/corpora/docs/ask -d "{\"question\":\"Which key?\",\"max_tokens\":1}"
body_has '^data: \{"answer":.*"sources":\[\{"path":"notes.txt","line":1,'

# ---- stray bytes are replaced one by one, whole characters kept ----
ask "\"$cont\":100" 3 ',"temperature":0'
body_has "^\\{\"answer\":\"$fffd$fffd$fffd\",\"finish_reason\":\"length\""
ask "\"$never\":100" 2 ',"temperature":0'
body_has "^\\{\"answer\":\"$fffd$fffd\",\"finish_reason\":\"length\""
ask "\"$whole\":100" 2 ',"temperature":0'
body_has "^\\{\"answer\":\"中中\",\"finish_reason\":\"length\""
# ---- NUL is U+FFFD too: the whole answer, not the text before it ----
ask "\"$nul\":100" 3 ',"temperature":0'
body_has "^\\{\"answer\":\"$fffd$fffd$fffd\",\"finish_reason\":\"length\""
unix_http 200 /v1/corpora/docs/ask \
    -d "{\"question\":\"Which key?\",\"logit_bias\":{\"$nul\":100},\"max_tokens\":2,\"temperature\":0}"
body_has "^data: \\{\"text\":\"$fffd\"\\}"
body_has "^data: \\{\"answer\":\"$fffd$fffd\",\"finish_reason\":\"length\""
unix_http 400 /v1/corpora/docs/ask \
    -d '{"question":"x","stream":false,"logit_bias":{"1000000":5}}' &&
    body_has 'logit_bias names token id 1000000'
unix_http 400 /v1/corpora/docs/ask -d '{"question":"x","logit_bias":{"7":101}}' &&
    body_has 'from -100 to 100'
unix_http 400 /v1/corpora/docs/ask -d '{"question":"x","logit_bias":{"x7":1}}'

# ---- random sequences of fragments and characters ----
# Each question favours a random handful of the ids above, sampled at
# temperature 1 with its own seed, so the answers are random sequences of
# them; each must be valid UTF-8 in both forms, and the streamed pieces
# must add up to the streamed answer.
pool="$lead3 $lead4 $cont $cont80 $never $nul $whole $eacute $the"
replaced=0
seed=1
while [ "$seed" -le 40 ]; do
    bias=$(echo "$pool" | awk -v s="$seed" '{ srand(s); out = "";
        for (i = 1; i <= NF; i++) if (rand() < 0.5) out = out sprintf("%s\"%s\":%d", out == "" ? "" : ",", $i, 90 + int(rand() * 10));
        if (out == "") out = "\"" $1 "\":100"; print out }')
    n=$((1 + seed % 9))
    opts=",\"temperature\":1,\"seed\":$seed"
    ask "$bias" "$n" "$opts" || { seed=$((seed + 1)); continue; }
    checks=$((checks + 1))
    valid_utf8 "$tmp/body" || fail "seed $seed: the JSON answer is not UTF-8"
    body_has '^\{"answer":".*","finish_reason":"(length|stop)"'
    grep -q "$fffd" "$tmp/body" && replaced=$((replaced + 1))
    answer=$(sed -n 's/^{"answer":"\(.*\)","finish_reason".*/\1/p' "$tmp/body")
    unix_http 200 /v1/corpora/docs/ask \
        -d "{\"question\":\"Which key?\",\"logit_bias\":{$bias},\"max_tokens\":$n$opts}"
    checks=$((checks + 1))
    valid_utf8 "$tmp/body" || fail "seed $seed: the stream is not UTF-8"
    body_has '^event: done$'
    pieces=$(sed -n 's/^data: {"text":"\(.*\)"}$/\1/p' "$tmp/body" | tr -d '\n')
    streamed=$(sed -n 's/^data: {"answer":"\(.*\)","finish_reason".*/\1/p' "$tmp/body")
    checks=$((checks + 1))
    [ "$pieces" = "$streamed" ] && [ "$streamed" = "$answer" ] ||
        fail "seed $seed: pieces '$pieces', streamed '$streamed', JSON '$answer'"
    seed=$((seed + 1))
done
check "random sequences needed replacements ($replaced of 40)" [ "$replaced" -ge 10 ]

# ---- request targets ----
unix_http 400 '/v1/corpora/%ff' && body_has 'not UTF-8 text after percent-decoding'
unix_http 400 '/v1/corpora/docs/search?regex=(%ff' && body_has 'not UTF-8 text'
unix_http 400 '/v1/corpora/docs/search?q=%00' && body_has 'not UTF-8 text'
unix_http 200 '/v1/corpora/docs/search?q=indexer' && body_has '"path":"notes.txt","line":1'
# %2F is part of the corpus name, not a way to reach another endpoint.
unix_http 400 '/v1/corpora/docs%2Fsearch?q=indexer' && body_has 'docs/search'
checks=$((checks + 1))
printf 'GET /v1/corpora/\377 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' |
    "$build/tests/raw_http" "$sock" >"$tmp/raw"
head -1 "$tmp/raw" | grep -q '^HTTP/1.1 400' || fail "a raw byte in the target: $(head -1 "$tmp/raw")"
grep -q 'visible ASCII' "$tmp/raw" || fail "the 400 does not say why: $(tail -1 "$tmp/raw")"

stop_tomed TERM
finish
