#!/bin/sh
# Engine benchmark (`make bench`): load time, prefill and decode tokens/s on
# the built-in tiny model and on a flash-shape model (V4-Flash's real layer
# sizes, 2 layers, 16 experts), with all cores and with one.  Reports
# figures only; it never fails on speed.
set -eu
build=${1:?usage: bench-engine.sh BUILDDIR}
run="$build/engine/tome-run"
mk="$build/engine/tome-mkmodel"
make -C "$build" -s models/tiny/config.json
flash="$build/models/flash-shape-2x16"
[ -f "$flash/config.json" ] || "$mk" --preset flash-shape --layers 2 --experts 16 --seed 7 -o "$flash"
ids=$(mktemp)
trap 'rm -f "$ids"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
bench() { # model prompt-tokens decode-tokens threads
    seq 1000 $((999 + $2)) > "$ids"
    printf '%-18s prompt %5d decode %3d threads %d: ' "$(basename "$1")" "$2" "$3" "$4"
    "$run" --model "$1" --ids "$ids" --decode "$3" --threads "$4" 2>&1 | sed 's/^tome-run: //'
}
for t in "$(nproc)" 1; do
    bench "$build/models/tiny" 2048 32 "$t"
    bench "$flash" 256 4 "$t"
done
