#!/bin/sh
# A restart point that cannot be written (here: a directory stands where
# the job's state file goes, so the rename fails as it would on a full
# disk) is not retried at every chunk: the tries back off, the prefill
# still finishes, and its final state is saved.  Points that can be
# written come at every interval at first, then at gaps that grow with
# the tokens done.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model

mkdir -p "$tmp/corpus"
i=1
while [ "$i" -le 60 ]; do
    echo "Rule $i: the parser accepts token $i only after the lexer has seen its prefix."
    i=$((i + 1))
done >"$tmp/corpus/rules.txt"
printf 'prefill_chunk = 16\nrestart_interval = 16\n' >"$tmp/tomed.conf"
start_tomed --config "$tmp/tomed.conf" --model "$model" --log-level info
unix_http 201 /v1/corpora -d '{"name":"docs"}'
unix_http 200 /v1/corpora/docs/ingest -d "{\"path\":\"$tmp/corpus\"}"

# The first job of a fresh store is job 1.
mkdir -p "$tmp/state/kv/job-1.kv/blocker"
unix_http 202 /v1/corpora/docs/prefill -X POST && body_has '"id":"?1"?'
curl -sN --max-time 120 --unix-socket "$sock" http://tome/v1/jobs/1/events >"$tmp/events"
checks=$((checks + 1))
grep -q '^event: done' "$tmp/events" || fail "the prefill did not finish: $(tail -3 "$tmp/events")"

unix_http 200 /v1/jobs/1
tokens=$(json_field tokens_total)
chunks=$((tokens / 16))
tries=$(grep -c 'job 1: restart point at token' "$tmp/tomed.log")
checks=$((checks + 1))
# Backing off from every interval to 2, 4, 8... intervals: about log2 tries.
[ "$chunks" -ge 32 ] || fail "the corpus is too small to tell ($tokens tokens)"
[ "$tries" -ge 1 ] && [ "$tries" -le 7 ] ||
    fail "$tries tries at a restart point over $chunks chunks"
unix_http 200 /v1/corpora/docs && body_has "\"state\":\\{\"id\":\"[0-9]+\",\"tokens\":$tokens,"

# Points that succeed: one at every interval while fewer than eight are
# done, then gaps of an eighth of the tokens done (each point rewrites the
# whole state).  The expected tokens follow the rule as the manual states
# it, over the chunk ends.
unix_http 201 /v1/corpora -d '{"name":"docs2"}'
unix_http 200 /v1/corpora/docs2/ingest -d "{\"path\":\"$tmp/corpus\"}"
unix_http 202 /v1/corpora/docs2/prefill -X POST
job2=$(json_field id)
curl -sN --max-time 120 --unix-socket "$sock" "http://tome/v1/jobs/$job2/events" >"$tmp/events2"
checks=$((checks + 1))
grep -q '^event: done' "$tmp/events2" || fail "the second prefill did not finish"
unix_http 200 "/v1/jobs/$job2"
tokens2=$(json_field tokens_total)
got=$(sed -n "s/.*job $job2: restart point saved at token \([0-9]*\) .*/\1/p" "$tmp/tomed.log" |
    tr '\n' ' ')
want=$(awk -v n="$tokens2" 'BEGIN { last = 0
    for (done = 16; done < n; done += 16) {
        gap = int(last / 8) > 16 ? int(last / 8) : 16
        if (done >= int(last / 16) * 16 + gap) { printf "%d ", done; last = done } } }')
checks=$((checks + 1))
[ "$got" = "$want" ] || fail "restart points at tokens $got, want $want"
stop_tomed
finish
