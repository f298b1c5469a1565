#!/bin/sh
# The fast kernels' promise, end to end through tome-run on a golden model:
# the logits and decoded tokens do not depend on the instruction set
# (TOME_ISA scalar, avx2, avx512: every one this CPU runs), the thread
# count (1, 2), the prefill chunk size (1, 3, 128, 129, 512), a warm-up
# prefill before it (tome-run --warmup) or the prompt being resumed from a
# saved state; and a state saved with one kind of
# kernels is refused by the other.  The same in official numerics (threads,
# chunks, resuming), whose states qat numerics refuse.  And GGUF files of
# every block type tome reads (converted by tome-convert): ISA, threads
# and chunk sizes, where prefill's panels and decode's rows of each type
# must agree bit for bit.
set -eu
build=${TOME_BUILDDIR:?}
model="$TOME_SHARED/golden/v4-tiny-a"
run="$build/tools/tome-run"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
awk 'BEGIN { x = 11; for (i = 0; i < 300; i++) { x = (x * 1103515245 + 12345) % 2147483648;
     print int(x / 65536) % 1024 } }' >"$dir/p300"
head -n 200 "$dir/p300" >"$dir/p200"
fail=0
checks=0

# dump NAME ARGS...: logits of the prompt and 8 decode steps, MTP included.
dump() {
    name=$1
    shift
    "$run" --model "$model" --ids "$dir/p300" --decode 8 --mtp --dump "$dir/$name.st" "$@" \
        2>"$dir/$name.err" || { echo "FAIL: tome-run $*: $(cat "$dir/$name.err")"; exit 1; }
}
same() {
    checks=$((checks + 1))
    cmp -s "$dir/base.st" "$dir/$1.st" || { echo "FAIL: $2 changes the results"; fail=1; }
}

dump base --threads 2
grep -q 'kernels fast' "$dir/base.err" || { echo "FAIL: fast is not the default"; exit 1; }
for isa in scalar avx2 avx512; do
    TOME_ISA=$isa dump "isa-$isa" --threads 2
    if grep -q "kernels fast ($isa)" "$dir/isa-$isa.err"; then
        same "isa-$isa" "TOME_ISA=$isa"
    else
        echo "  ($isa: not on this CPU, $(sed -n 's/.*kernels fast (\([a-z0-9]*\)).*/\1/p' "$dir/isa-$isa.err") ran)"
    fi
done
dump threads1 --threads 1
same threads1 "one thread instead of two"
# --warmup's prefill is thrown away: the timed run is a run from scratch
dump warm --threads 2 --warmup
grep -q 'warm-up prefill' "$dir/warm.err" || { echo "FAIL: --warmup did not prefill"; fail=1; }
same warm "--warmup"
for chunk in 1 3 128 129 512; do
    dump "chunk$chunk" --chunk "$chunk"
    same "chunk$chunk" "prefill chunk $chunk"
done
# Where the kernels read the matrices from changes no bit: copied into
# aligned memory at open (what auto does with a model this small) or read
# in place from the mapped checkpoint.
checks=$((checks + 1))
grep -q 'weights copied' "$dir/base.err" || { echo "FAIL: auto did not copy a tiny model's weights"; fail=1; }
dump weights-map --weights map
checks=$((checks + 1))
grep -q 'weights mapped' "$dir/weights-map.err" || { echo "FAIL: --weights map not reported"; fail=1; }
same weights-map "--weights map"
dump weights-copy --weights copy
same weights-copy "--weights copy"
checks=$((checks + 1))
if "$run" --model "$model" --weights huge --ids "$dir/p300" 2>"$dir/err"; then
    echo "FAIL: --weights huge accepted"
    fail=1
fi

# Resuming from a saved state decodes what a straight run decodes.
"$run" --model "$model" --ids "$dir/p300" --decode 12 --print-tokens >"$dir/full.out" 2>/dev/null
"$run" --model "$model" --ids "$dir/p200" --save-state "$dir/fast.kv" 2>/dev/null
"$run" --model "$model" --ids "$dir/p300" --decode 12 --print-tokens \
    --load-state "$dir/fast.kv" >"$dir/resumed.out" 2>/dev/null
checks=$((checks + 1))
cmp -s "$dir/full.out" "$dir/resumed.out" || { echo "FAIL: resumed decode differs"; fail=1; }

# Exact and fast kernels round differently: their states do not mix.
checks=$((checks + 1))
if "$run" --model "$model" --kernels exact --ids "$dir/p300" --load-state "$dir/fast.kv" \
    2>"$dir/err"; then
    echo "FAIL: a fast-kernel state was used with exact kernels"
    fail=1
fi
checks=$((checks + 1))
"$run" --model "$model" --kernels exact --ids "$dir/p300" --decode 8 --mtp \
    --dump "$dir/exact.st" 2>"$dir/exact.err"
grep -q 'kernels exact' "$dir/exact.err" || { echo "FAIL: --kernels exact not reported"; fail=1; }
if cmp -s "$dir/base.st" "$dir/exact.st"; then
    echo "FAIL: exact and fast kernels gave the same bits (is the fast path used?)"
    fail=1
fi
checks=$((checks + 1))
if "$run" --model "$model" --kernels quick --ids "$dir/p300" 2>"$dir/err"; then
    echo "FAIL: --kernels quick accepted"
    fail=1
fi
grep -q -- '--kernels: "quick" is not one of fast|exact' "$dir/err" || { echo "FAIL: bad --kernels message"; fail=1; }
# Official numerics: as deterministic, and their states are their own.
dump official --numerics official --threads 2
grep -q 'numerics official' "$dir/official.err" || { echo "FAIL: --numerics official not reported"; fail=1; }
checks=$((checks + 1))
if cmp -s "$dir/base.st" "$dir/official.st"; then
    echo "FAIL: official and qat numerics gave the same bits"
    fail=1
fi
mv "$dir/base.st" "$dir/qat.st"
mv "$dir/official.st" "$dir/base.st"
dump official-t1 --numerics official --threads 1
same official-t1 "official numerics: one thread instead of two"
for chunk in 3 129; do
    dump "official-chunk$chunk" --numerics official --chunk "$chunk"
    same "official-chunk$chunk" "official numerics: prefill chunk $chunk"
done
"$run" --model "$model" --numerics official --ids "$dir/p300" --decode 12 --print-tokens \
    >"$dir/ofull.out" 2>/dev/null
"$run" --model "$model" --numerics official --ids "$dir/p200" --save-state "$dir/official.kv" \
    2>/dev/null
"$run" --model "$model" --numerics official --ids "$dir/p300" --decode 12 --print-tokens \
    --load-state "$dir/official.kv" >"$dir/oresumed.out" 2>/dev/null
checks=$((checks + 1))
cmp -s "$dir/ofull.out" "$dir/oresumed.out" || { echo "FAIL: official numerics: resumed decode differs"; fail=1; }
checks=$((checks + 1))
if "$run" --model "$model" --ids "$dir/p300" --load-state "$dir/official.kv" 2>"$dir/err"; then
    echo "FAIL: an official-numerics state was used with qat numerics"
    fail=1
fi
checks=$((checks + 1))
grep -q numerics "$dir/err" || { echo "FAIL: the refusal does not name the numerics: $(cat "$dir/err")"; fail=1; }

# GGUF files, four mixes that between them hold every block type tome
# reads (v4-tiny-a's down projections are 128 wide: Q8_0 there).
mix() { # NAME tome-convert options...
    file=$1
    shift
    "$build/tools/tome-convert" "$@" "$TOME_SHARED/golden/v4-tiny-a" "$dir/$file.gguf" \
        2>"$dir/$file.convert" || { echo "FAIL: tome-convert $*: $(cat "$dir/$file.convert")"; exit 1; }
    model=$dir/$file.gguf
    dump base --threads 2
    for isa in scalar avx2 avx512; do
        TOME_ISA=$isa dump "isa-$isa" --threads 2
        if grep -q "kernels fast ($isa)" "$dir/isa-$isa.err"; then
            same "isa-$isa" "$file: TOME_ISA=$isa"
        fi
    done
    dump threads1 --threads 1
    same threads1 "$file: one thread instead of two"
    for chunk in 1 3 129; do
        dump "chunk$chunk" --chunk "$chunk"
        same "chunk$chunk" "$file: prefill chunk $chunk"
    done
}
mix k-quants --type Q6_K --experts Q5_K --small F16
mix four-bit --type IQ4_XS --experts Q4_K --small Q8_0
mix low-bit --type Q3_K --experts IQ2_XXS --small Q2_K
mix floats --type F16 --experts MXFP4 --small BF16

echo "$checks checks, fast kernels deterministic: $([ $fail -eq 0 ] && echo yes || echo NO)"
exit $fail
