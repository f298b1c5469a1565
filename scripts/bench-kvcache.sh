#!/bin/sh
# KV cache benchmark (`make bench`): what a saved state costs and what it
# saves, on the flash-shape model (V4-Flash's layer sizes, 2 layers: layer 0
# CSA with ratio 4 and the indexer, layer 1 HCA with ratio 128; 16 experts).
# For F32 and BF16 RoPE dims: prefill N tokens with --save-state (state
# bytes per token against the spec's figure, file size, save rate), then
# restore it with --load-state for the same ids plus one token (restore
# time, re-prefill / restore, the time of a fork of the restored state).
# Reports figures only; it never fails on speed.  TOME_BENCH_KV_TOKENS sets
# N (default 1024).
set -eu
build=${1:?usage: bench-kvcache.sh BUILDDIR}
n=${TOME_BENCH_KV_TOKENS:-1024}
run="$build/tools/tome-run"
flash="$build/models/flash-shape-2x16"
[ -f "$flash/config.json" ] ||
    "$build/tools/tome-mkmodel" --preset flash-shape --layers 2 --experts 16 --seed 7 -o "$flash"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
seq 1000 $((999 + n)) > "$dir/ids"
seq 1000 $((1000 + n)) > "$dir/ids+1"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

# Spec bytes per token: a KV entry per 4 tokens in layer 0 and per 128 in
# layer 1, an indexer key (68 bytes) per 4 tokens in layer 0.
bench() { # kv-entry-bytes [--kv-rope-bf16]
    entry=$1
    shift
    "$run" --model "$flash" --ids "$dir/ids" --save-state "$dir/state.kv" "$@" 2> "$dir/save"
    "$run" --model "$flash" --ids "$dir/ids+1" --load-state "$dir/state.kv" "$@" 2> "$dir/load"
    prefill=$(sed -n 's/.*prefill [0-9]* tokens in \([0-9.]*\) s.*/\1/p' "$dir/save")
    bytes=$(sed -n 's/.*: \([0-9]*\) bytes in.*/\1/p' "$dir/save")
    save=$(sed -n 's/.* bytes in \([0-9.]*\) s (\([0-9.]*\) MB\/s).*/\1 s, \2 MB\/s/p' "$dir/save")
    kv=$(sed -n 's/.*state \([0-9]*\) bytes of compressed KV.*/\1/p' "$dir/save")
    restore=$(sed -n 's/.*prompt tokens from .* in \([0-9.]*\) s;.*/\1/p' "$dir/load")
    fork=$(sed -n 's/.*; fork \([0-9.]*\) s.*/\1/p' "$dir/load")
    awk -v n="$n" -v e="$entry" -v bytes="$bytes" -v kv="$kv" -v save="$save" \
        -v prefill="$prefill" -v restore="$restore" -v fork="$fork" 'BEGIN {
        spec = e / 4 + 68 / 4 + e / 128
        printf "  %d tokens, %d-byte KV entries: compressed KV %.1f B/token (spec %.1f: %d/4 + 68/4 + %d/128)\n", n, e, kv / n, spec, e, e
        printf "  state file %d bytes = %d compressed KV + %d fixed (windows, compressor state, MTP, header, ids, alignment); %.1f B/token; save %s\n", bytes, kv, bytes - kv, bytes / n, save
        printf "  prefill %.3f s; restore %.4f s; re-prefill / restore = %.0fx; fork of the restored state %.6f s\n", prefill, restore, prefill / restore, fork
    }'
}
echo "flash-shape-2x16, F32 RoPE dims:"
bench 711
echo "flash-shape-2x16, BF16 RoPE dims (--kv-rope-bf16):"
bench 583 --kv-rope-bf16
