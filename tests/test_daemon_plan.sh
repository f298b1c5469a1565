#!/bin/sh
# test_daemon_plan.sh - tomed's fit check at start: the plan is logged, and
# a context budget (max_context) is refused when it exceeds the model's
# context or when one question's KV state at that budget cannot fit on the
# state directory's disk (a model whose config allows 2^40 tokens: about
# 180 bytes a token for the tiny shape, far beyond any test machine's disk).
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model

# wait_log PATTERN: until tomed's log has a line matching PATTERN.
wait_log() {
    i=0
    until grep -q -- "$1" "$tmp/tomed.log"; do
        i=$((i + 1))
        [ "$i" -le 300 ] || { fail "no log line \"$1\""; cat "$tmp/tomed.log"; return 1; }
        sleep 0.1
    done
}

start_tomed --model "$model"
wait_ready
check "the plan's weights are logged" grep -q "plan: weights" "$tmp/tomed.log"
check "the plan's KV state is logged" grep -q "plan: KV state .* bytes/token" "$tmp/tomed.log"
check "the plan's verdict is logged" grep -q "plan: verdict      fits in RAM" "$tmp/tomed.log"
check "the machine is logged" grep -q "plan: machine .* GiB RAM, .* GiB free disk" "$tmp/tomed.log"
stop_tomed

echo "max_context = 2000000" >"$tmp/over.conf"
start_tomed_unready --config "$tmp/over.conf" --model "$model"
wait_log "model: max_context 2000000 is more than the model's max_position_embeddings"
http 503 --unix-socket "$sock" http://tome/v1/ready
stop_tomed

# The tiny model again, its config allowing 2^40 tokens.
mkdir "$tmp/huge"
for f in "$model"/*; do ln -s "$f" "$tmp/huge/"; done
rm "$tmp/huge/config.json"
sed 's/"max_position_embeddings": *[0-9]*/"max_position_embeddings": 1099511627776/' \
    "$model/config.json" >"$tmp/huge/config.json"
check "the edited config allows 2^40 tokens" grep -q 1099511627776 "$tmp/huge/config.json"
echo "max_context = 1099511627776" >"$tmp/huge.conf"
start_tomed_unready --config "$tmp/huge.conf" --model "$tmp/huge"
wait_log "model: max_context 1099511627776: the KV state of one question"
check "the refusal names the state directory" grep -q "free on the disk of state_dir $tmp/state" \
    "$tmp/tomed.log"
check "the verdict says it does not fit" grep -q "plan: verdict      does not fit" "$tmp/tomed.log"
http 503 --unix-socket "$sock" http://tome/v1/ready
stop_tomed

# A budget that fits is the context asks are held to.
echo "max_context = 4K" >"$tmp/small.conf"
start_tomed --config "$tmp/small.conf" --model "$model"
wait_ready
check "the budget is the context" grep -q "loaded (context 4096 tokens)" "$tmp/tomed.log"
stop_tomed
finish
