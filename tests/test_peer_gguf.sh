#!/bin/sh
# test_peer_gguf.sh - the peer check of GGUF files: the golden models a and
# b converted by tome-convert (--no-mtp, llama.cpp's layout) to F32, BF16,
# Q8_0, MXFP4 experts (a: its FP4 experts, losslessly), Q4_K experts,
# ds4's 2-bit recipe (IQ2_XXS gate/up, Q2_K down), and the other types
# llama.cpp's own mixes bring (kmix: Q6_K matrices, Q5_K gate/up, Q3_K
# down; iq4_xs: IQ4_XS throughout; each model's 128-wide expert side falls
# back to Q8_0, so between them a and b cover all four); on each file
# tome-run and llama.cpp (node-llama-cpp 3.22.1, scripts/peer) run the
# golden short case (45-token prefill, 110 decode steps fed the case's ids)
# and their logits are compared position by position
# (scripts/peer/compare.mjs).
#
# The engines round differently (llama.cpp keeps the KV cache in F16 and
# quantises activations for Q8_0/K-quant products; tome follows the qat
# reference), so the bound is the golden README's statistical one for
# engines that round differently, its suggested "official" limits: median
# per-position max |dlogit| <= 0.5 (a) / 1.0 (b), mean |dlogit| <= 0.2 /
# 0.4, top-1 agreement >= 85% / 70%.  A file either engine reads wrongly
# (a nibble order, a transposed tensor, a lost scale) is far outside them.
# The figures are printed, with each engine's top-1 against the golden qat
# argmax.  Skips (77) only when npm or node is missing.
set -e
: "${TOME_SHARED:?TOME_SHARED is not set (run through make check)}"
top=$(pwd)
src=${TOME_SRCDIR:-$(dirname "$0")/..}
set +e
peer=$(sh "$src/scripts/peer/setup.sh")
status=$?
set -e
[ "$status" -eq 2 ] && { echo "SKIP: npm or node is missing: no llama.cpp to compare with"; exit 77; }
[ "$status" -eq 0 ] || { echo "FAIL: scripts/peer/setup.sh could not install node-llama-cpp"; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/test_peer_gguf.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The golden short case's prompt and decode ids, as JSON arrays.
case_ids() { # MODEL
    node -e '
        const b = require("fs").readFileSync(process.argv[1]);
        const n = Number(b.readBigUInt64LE(0)), h = JSON.parse(b.subarray(8, 8 + n));
        for (const [k, f] of [["input_ids", "p"], ["decode_input_ids", "d"]]) {
            const [s, e] = h[k].data_offsets;
            const ids = new Int32Array(new Uint8Array(b.subarray(8 + n + s, 8 + n + e)).buffer);
            require("fs").writeFileSync(`${process.argv[2]}.${f}.json`, JSON.stringify([...ids]));
        }' "$TOME_SHARED/golden/$1/expected/short.qat.safetensors" "$work/$1"
}

failed=0
check() { # MODEL NAME LIMITS CONVERT-OPTIONS...
    m=$1 name=$2 limits=$3
    shift 3
    f=$work/$m-$name
    "$top/tools/tome-convert" --no-mtp "$@" "$TOME_SHARED/golden/$m" "$f.gguf" 2>/dev/null
    "$top/tools/tome-run" --model "$f.gguf" --ids "$work/$m.p.json" --decode-ids "$work/$m.d.json" \
        --threads 1 --dump "$f.st" 2>"$f.log"
    node "$src/scripts/peer/llama.mjs" "$peer" --model "$f.gguf" --ids "$work/$m.p.json" \
        --decode-ids "$work/$m.d.json" --threads 1 --logits "$f.f32" >/dev/null 2>>"$f.log" ||
        { echo "FAIL: llama.cpp could not run $m $name: $(tail -3 "$f.log")"; failed=1; return 0; }
    if figures=$(node "$src/scripts/peer/compare.mjs" "$f.st" "$f.f32" \
        "$TOME_SHARED/golden/$m/expected/short.qat.safetensors" "$limits" 2>&1); then
        echo "ok   $m $name: $figures"
    else
        echo "FAIL $m $name: $figures"
        failed=1
    fi
}
for m in v4-tiny-a v4-tiny-b; do
    case_ids $m
    if [ $m = v4-tiny-a ]; then limits=0.5,0.2,0.85; else limits=1.0,0.4,0.70; fi
    check $m f32 $limits
    check $m bf16 $limits --type BF16
    check $m q8_0 $limits --type Q8_0
    check $m q4_k $limits --type Q8_0 --experts Q4_K --small F16
    check $m q2 $limits --type Q8_0 --experts IQ2_XXS --down Q2_K --small F16
    check $m kmix $limits --type Q6_K --experts Q5_K --down Q3_K --small F16
    check $m iq4_xs $limits --type IQ4_XS --small F16
done
check v4-tiny-a mxfp4 0.5,0.2,0.85 --experts MXFP4
exit $failed
