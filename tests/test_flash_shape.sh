#!/bin/sh
# A model with V4-Flash's real layer shapes (2 layers: one CSA, one HCA; 16
# experts) loads, prefills and decodes, and its compressed state grows by
# exactly the bytes the spec's layout gives for those layers:
#   KV entry   = (head_dim - rope) FP8 codes + one E8M0 scale per 64 + rope dims
#                (F32 in qat numerics, BF16 with --kv-rope-bf16)
#   index key  = index_head_dim / 2 FP4 bytes + one scale per 32
# The expected figures are computed here from those rules, not by the engine.
set -eu
build=${TOME_BUILDDIR:?}
model="$build/models/flash-shape-2x16"
if [ ! -f "$model/config.json" ]; then
    rm -rf "$model"
    "$build/tools/tome-mkmodel" --preset flash-shape --layers 2 --experts 16 --seed 7 -o "$model"
fi
ids=$(mktemp)
trap 'rm -f "$ids"' EXIT
seq 1000 1127 > "$ids"   # 128 prompt tokens; one decode step makes 129

state_bytes() {
    "$build/tools/tome-run" --model "$model" --ids "$ids" --decode 1 "$@" 2>&1 >/dev/null |
        tee /dev/stderr | sed -n 's/.*state \([0-9]*\) bytes.*/\1/p'
}

nope=448 rope=64 ihd=128
kv_f32=$((nope + nope / 64 + rope * 4))
kv_bf16=$((nope + nope / 64 + rope * 2))
idx=$((ihd / 2 + ihd / 32))
tokens=129
# layer 0 is CSA (ratio 4): floor(129/4) entries and as many index keys;
# layer 1 is HCA (ratio 128): floor(129/128) entries.
want_f32=$(( (tokens / 4) * (kv_f32 + idx) + (tokens / 128) * kv_f32 ))
want_bf16=$(( (tokens / 4) * (kv_bf16 + idx) + (tokens / 128) * kv_bf16 ))

got=$(state_bytes)
echo "qat state: $got bytes (want $want_f32; $kv_f32 B per KV entry)"
[ "$got" = "$want_f32" ] || { echo "FAIL: qat state bytes"; exit 1; }
got=$(state_bytes --kv-rope-bf16)
echo "bf16-rope state: $got bytes (want $want_bf16; $kv_bf16 B per KV entry, the spec's 583)"
[ "$got" = "$want_bf16" ] || { echo "FAIL: bf16-rope state bytes"; exit 1; }
[ "$kv_bf16" = 583 ] && [ "$idx" = 68 ] || { echo "FAIL: layout arithmetic"; exit 1; }
# Per token at a multiple of 128, as the spec states it for Flash's layer kinds.
echo "per token: CSA $(( (kv_bf16 + idx) * 100 / 4 ))e-2 B + HCA $(( kv_bf16 * 100 / 128 ))e-2 B (bf16 rope)"
