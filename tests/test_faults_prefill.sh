#!/bin/sh
# kill -9 of tomed at every pass through the kill points of a prefill: each
# chunk fed to the engine (prefill-chunk) and every 25th write of a state
# file, restart points and the final state (kv-write).  After each kill a
# restart must list the job, resume it from its last restart point and
# finish it, and the corpus must then answer exactly as after a prefill
# that was never interrupted (greedy decoding): no wrong state is served.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
. "$TOME_SRCDIR/tests/faults-lib.sh"
require_model

mkdir "$tmp/docs"
i=1
while [ "$i" -le 30 ]; do
    printf 'Rule %d: the parser accepts token %d after its prefix.\n' "$i" "$i" >"$tmp/docs/r$i.txt"
    i=$((i + 1))
done
question='{"question":"Which rule names token 7?","max_tokens":8,"temperature":0,"stream":false}'

start_normal
unix_http 200 /v1/corpora/docs/ingest -d "{\"path\":\"$tmp/docs\"}"
stop_tomed
save_state docs

# job_done JOB: the job is listed as done (tomed is up).
job_done() {
    curl -s --unix-socket "$sock" "http://tome/v1/jobs/$1" | grep -q '"status":"done"'
}

# The answer of an uninterrupted prefill.
reset_state docs
start_normal
unix_http 202 /v1/corpora/docs/prefill -X POST
job=$(json_field id)
wait_for "the reference prefill is done" job_done "$job"
unix_http 200 /v1/corpora/docs/ask -d "$question"
sed -n 's/.*"answer":\("[^"]*"\).*/\1/p' "$tmp/body" >"$tmp/reference"
stop_tomed
check "the reference answer was read" [ -s "$tmp/reference" ]

# after_kill POINT N JOB: the job resumes and the answer is the reference.
# An empty JOB is a kill that beat the prefill's 202: the job is the one
# tomed lists, or, when it was not stored yet, a new one (no answer
# promised it).
after_kill() {
    start_normal
    if [ -z "$3" ]; then
        unix_http 200 /v1/jobs
        set -- "$1" "$2" "$(json_field id)"
        if [ -z "$3" ]; then
            unix_http 202 /v1/corpora/docs/prefill -X POST
            set -- "$1" "$2" "$(json_field id)"
        fi
    fi
    wait_for "job $3 is resumed and done after a kill at $1:$2" job_done "$3"
    unix_http 200 /v1/corpora/docs/ask -d "$question"
    sed -n 's/.*"answer":\("[^"]*"\).*/\1/p' "$tmp/body" >"$tmp/answer"
    checks=$((checks + 1))
    cmp -s "$tmp/reference" "$tmp/answer" || {
        wrong=$((wrong + 1))
        fail "after a kill at $1:$2 the answer is $(cat "$tmp/answer"), not $(cat "$tmp/reference")"
    }
    stop_tomed
}

# kill_loop POINT STEP: for N = 1, 1 + STEP, ...: a daemon armed at
# POINT:N runs the prefill; until it finishes without dying.
kill_loop() {
    n=1
    while [ "$n" -le 2000 ]; do
        reset_state docs
        start_armed "$1" "$n" || { fail "tomed died at $1:$n while starting"; break; }
        # The kill may come before the 202 is written (the engine thread
        # starts the job at once): then there is no answer to read.
        code=$(curl -s -o "$tmp/body" -w '%{http_code}' --unix-socket "$sock" -X POST \
            http://tome/v1/corpora/docs/prefill)
        if [ "$code" = 202 ]; then
            job=$(json_field id)
        elif grep -q "killed at $1:$n " "$tmp/tomed.log"; then
            job=""
        else
            fail "the prefill armed at $1:$n answered $code: $(head -c 300 "$tmp/body")"
            break
        fi
        rm -f "$tmp/job"
        # Until the job is done or the daemon is gone.
        until ! curl -s -o "$tmp/job" --unix-socket "$sock" "http://tome/v1/jobs/$job" ||
            grep -q '"status":"done"' "$tmp/job" 2>/dev/null; do
            sleep 0.05
        done
        if grep -q '"status":"done"' "$tmp/job" 2>/dev/null && ! grep -q "killed at $1:$n " "$tmp/tomed.log"; then
            stop_tomed
            break
        fi
        expect_killed "$1" "$n"
        after_kill "$1" "$n" "$job"
        n=$((n + $2))
    done
    echo "$1: killed at $(((n - 1 + $2 - 1) / $2)) of its passes"
}

# A damaged section of the saved state: reported, and never used.
reset_state docs
start_normal
unix_http 202 /v1/corpora/docs/prefill -X POST
job=$(json_field id)
wait_for "the prefill to damage is done" job_done "$job"
stop_tomed
kv=$(ls "$tmp/state/kv/"state-*.kv | head -1)
check "a state file was saved" [ -f "$kv" ]
printf '\377\377\377\377' | dd of="$kv" bs=1 seek=200000 conv=notrunc 2>/dev/null
start_normal
code=$(curl -s -o "$tmp/body" -w '%{http_code}' --unix-socket "$sock" \
    http://tome/v1/corpora/docs/ask -d "$question")
sed -n 's/.*"answer":\("[^"]*"\).*/\1/p' "$tmp/body" >"$tmp/answer"
checks=$((checks + 1))
grep -Eq 'checksum|damaged' "$tmp/tomed.log" "$tmp/body" ||
    fail "the damaged state section was not reported: $code $(head -c 200 "$tmp/body")"
checks=$((checks + 1))
[ "$code" != 200 ] || cmp -s "$tmp/reference" "$tmp/answer" || {
    wrong=$((wrong + 1))
    fail "a damaged state was served: $(cat "$tmp/answer")"
}
stop_tomed

kill_loop prefill-chunk 1
kill_loop kv-write 25
report "prefill"
check "every resumed prefill answers as an uninterrupted one" [ "$wrong" -eq 0 ]
finish
