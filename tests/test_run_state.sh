#!/bin/sh
# tome-run --save-state / --load-state: a prompt whose first 200 tokens come
# from a saved state decodes exactly what the whole prompt decodes without
# one (same chunking, so the same rounding), the state file holds a prefix
# only for prompts that start with its ids, and the wrong model is refused.
set -eu
build=${TOME_BUILDDIR:?}
model="$TOME_SHARED/golden/v4-tiny-a"
run="$build/tools/tome-run"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# 300 pseudo-random ids below the golden model's vocabulary of 1024.
awk 'BEGIN { x = 7; for (i = 0; i < 300; i++) { x = (x * 1103515245 + 12345) % 2147483648;
     print int(x / 65536) % 1024 } }' > "$dir/p300"
head -n 200 "$dir/p300" > "$dir/p200"

"$run" --model "$model" --ids "$dir/p300" --chunk 100 --decode 12 --print-tokens \
    > "$dir/full.out" 2>/dev/null
"$run" --model "$model" --ids "$dir/p200" --chunk 100 --save-state "$dir/s.kv" 2>/dev/null
"$run" --model "$model" --ids "$dir/p300" --chunk 100 --decode 12 --print-tokens \
    --load-state "$dir/s.kv" > "$dir/resumed.out" 2> "$dir/resumed.err"
grep -q "restored 200 of 300 prompt tokens" "$dir/resumed.err" || {
    echo "FAIL: the state was not used"; cat "$dir/resumed.err"; exit 1; }
cmp "$dir/full.out" "$dir/resumed.out" || {
    echo "FAIL: decoding after --load-state differs"; exit 1; }

# A prompt that differs inside the saved part cannot use the state.
sed '17s/.*/1000/' "$dir/p300" > "$dir/other"
if "$run" --model "$model" --ids "$dir/other" --load-state "$dir/s.kv" 2> "$dir/err"; then
    echo "FAIL: a state was used for a prompt that does not start with its ids"; exit 1
fi
grep -q "share only 16 tokens" "$dir/err" || { echo "FAIL: message"; cat "$dir/err"; exit 1; }

# Other numerics make other states.
if "$run" --model "$model" --numerics fp32 --ids "$dir/p300" --load-state "$dir/s.kv" \
    2> "$dir/err"; then
    echo "FAIL: a qat state was used with fp32 numerics"; exit 1
fi
grep -q "numerics" "$dir/err" || { echo "FAIL: message"; cat "$dir/err"; exit 1; }
echo "tome-run state files: ok"
