#!/bin/sh
# `tome mcp` driven by the official MCP TypeScript SDK (tests/mcp-client.mjs)
# against a real tomed with the built-in tiny model, and the citations of a
# known answer end to end: tomed runs with the TOMED_TEST_ANSWER_IDS hook,
# so every answer is a fixed text (tokenized here by tome-tokenize) citing
# an existing line, a line past the end and a missing file.  `tome ask`
# must print the answer's sources and its citations, the wrong two flagged;
# the SDK checks the same through the ask tool.  The SDK comes from
# tests/npm's lock file (npm_clients); without npm that part is skipped.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
tome="$build/client/tome"
export TOME_SOCKET="$sock"

make_rules "$tmp/corpus"
printf '# Notes\n\nThe build runs on three machines.\nThe zanzibar cache holds parsed headers.\nNothing else.\n' \
    >"$tmp/corpus/notes.md"
past=$(($(wc -l <"$tmp/corpus/rules.txt") + 59))
answer="The parser rule is rules.txt:7; see also rules.txt:$past and gone.c:3."
printf '%s' "$answer" | "$build/tools/tome-tokenize" --model "$model" >"$tmp/answer.ids"
export TOMED_TEST_ANSWER_IDS="$tmp/answer.ids"
start_tomed --model "$model"
wait_ready
unix_http 201 /v1/corpora -d '{"name":"docs"}'
unix_http 200 /v1/corpora/docs/ingest -d "{\"path\":\"$tmp/corpus\"}"

# sdk PHASE: run mcp-client.mjs's phase (up or down) against tome mcp.
sdk() {
    checks=$((checks + 1))
    node "$src/tests/mcp-client.mjs" "$clients" "$tome" "$sock" "$tmp/corpus" "$1" \
        >"$tmp/sdk.log" 2>&1 || fail "the MCP SDK client ($1): $(cat "$tmp/sdk.log")"
    cat "$tmp/sdk.log"
}

# ---- the SDK, while the corpus has no state (its ask prefills it) ----
if npm_clients; then
    sdk up
else
    unix_http 202 /v1/corpora/docs/prefill -X POST
    curl -sN --max-time 120 --unix-socket "$sock" \
        "http://tome/v1/jobs/$(json_field id)/events" >/dev/null
fi

# ---- tome ask: the answer, its sources, its citations flagged ----
checks=$((checks + 1))
"$tome" ask docs "Where is zanzibar mentioned?" >"$tmp/out" 2>"$tmp/err" ||
    fail "tome ask: $(cat "$tmp/err")"
cat "$tmp/out"
zanzibar=$(grep -n zanzibar "$tmp/corpus/notes.md" | cut -d: -f1)
out_has() {
    checks=$((checks + 1))
    grep -Fq -- "$1" "$tmp/out" || fail "tome ask output lacks '$1': $(cat "$tmp/out")"
}
out_has "$answer"
out_has "notes.md:$zanzibar"
out_has "rules.txt:7"
out_has "$(sed -n 7p "$tmp/corpus/rules.txt")"
checks=$((checks + 1))
grep "rules.txt:$past" "$tmp/out" | grep -Fq '(not in the corpus)' ||
    fail "the citation past the end is not flagged: $(cat "$tmp/out")"
checks=$((checks + 1))
grep 'gone.c:3' "$tmp/out" | grep -Fq '(not in the corpus)' ||
    fail "the citation of a missing file is not flagged: $(cat "$tmp/out")"

stop_tomed TERM
daemon_pid=""

# ---- the SDK again, tomed down: tool errors, no crash ----
if npm_clients; then
    sdk down
fi
finish
