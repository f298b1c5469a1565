#!/bin/sh
# Engine benchmark (`make bench`): the machine's own limits first
# (tome-limits: FP32 FMA, BF16 and int8 dot peaks, read bandwidth), then
# prefill and decode tokens/s of tome-run, each as a fraction of the limit
# that bounds it, measured in the same run:
#   prefill: matrix-product FLOP per token x tokens/s / FP32 FMA peak
#   decode:  weight bytes per token (with the LM head) x tokens/s / read
#            bandwidth
# on the built-in tiny model and a flash-shape model (V4-Flash's real layer
# sizes, 4 layers, 16 experts), for every pair of numerics (qat, official)
# and kernels (fast, exact), with all threads and one.  Writes the table to
# standard output and a CSV to $BENCH_CSV (default
# BUILDDIR/bench-engine.csv).  BENCH_LONG=1 adds prompts of 2048 and 8192
# tokens on the flash-shape model (many minutes on a small machine);
# BENCH_EXPERTS=1 2048-token prompts on flash-shape models of 2 layers with
# 64 and 256 routed experts (V4-Flash's count; 13 GB, made once), at their
# default chunk and at 256.  Runs
# are warm (tome-run --warmup: the prompt prefilled once, untimed, first;
# bench-peer.sh says why); BENCH_WARM=0 times cold ones.  Reports figures
# only; it never fails on speed.
set -eu
build=${1:?usage: bench-engine.sh BUILDDIR}
run="$build/tools/tome-run"
mk="$build/tools/tome-mkmodel"
csv=${BENCH_CSV:-$build/bench-engine.csv}
warm=; [ "${BENCH_WARM:-1}" = 0 ] || warm=--warmup
make -C "$build" -s models/tiny/config.json bench/tome-limits
flash="$build/models/flash-shape-4x16"
[ -f "$flash/config.json" ] ||
    "$mk" --preset flash-shape --layers 4 --experts 16 --seed 7 -o "$flash" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
threads=$(nproc)
echo "machine: $threads cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
"$build/bench/tome-limits" --csv >"$tmp/limits.csv"
sed 's/,/ /g' "$tmp/limits.csv" | awk 'NR > 1 { printf "  limit %-16s %9.1f %-7s 1 thread, %9.1f all %d threads\n", $1, $3, $2, $4, $5 }'
limit() { # NAME COLUMN(3 = one thread, 4 = all)
    awk -F, -v n="$1" -v c="$2" '$1 == n { print $c }' "$tmp/limits.csv"
}
fma_one=$(limit fp32_fma_avx512 3)
[ "${fma_one%.*}" -gt 0 ] 2>/dev/null || fma_one=$(limit fp32_fma_avx2 3)
fma_all=$(limit fp32_fma_avx512 4)
[ "${fma_all%.*}" -gt 0 ] 2>/dev/null || fma_all=$(limit fp32_fma_avx2 4)
bw_one=$(limit read_bandwidth 3)
bw_all=$(limit read_bandwidth 4)

echo "model,numerics,kernels,isa,threads,chunk,prompt,decode,prefill_tok_s,decode_tok_s,gflop_per_token,decode_mb_per_token,prefill_fraction_of_fma,decode_fraction_of_bandwidth" >"$csv"
printf '%-17s %-8s %-6s %-7s %2s %5s %6s | %9s %6s | %8s %6s\n' model numerics kernels isa thr chunk \
    prompt "prefill/s" "of FMA" "decode/s" "of BW"
bench() { # MODEL PROMPT DECODE THREADS KERNELS NUMERICS [CHUNK: default the model's]
    seq 1000 $((999 + $2)) >"$tmp/ids"
    chunk=; [ -z "${7:-}" ] || chunk="--chunk $7"
    # shellcheck disable=SC2086 # $warm and $chunk are words or nothing
    "$run" --model "$1" --ids "$tmp/ids" --decode "$3" --threads "$4" --kernels "$5" \
        --numerics "$6" $warm $chunk >/dev/null 2>"$tmp/out" || { echo "tome-run failed: $(cat "$tmp/out")"; return 0; }
    if [ "$4" -eq 1 ]; then fma=$fma_one bw=$bw_one; else fma=$fma_all bw=$bw_all; fi
    awk -v model="$(basename "$1")" -v k="$5" -v nu="$6" -v t="$4" -v p="$2" -v d="$3" -v fma="$fma" \
        -v bw="$bw" -v csv="$csv" '
        /cost per token/ { gflop = $5; mb = $10; head_mb = $18 }
        /kernels/ && /numerics/ { isa = $4; gsub(/[(),]/, "", isa); c = $(NF - 1) }
        /prefill .* tok\/s/ {
            for (i = 1; i <= NF; i++)
                if ($i ~ /^tok\/s\)/) { if (!pf) pf = substr($(i - 1), 2); else df = substr($(i - 1), 2) }
        }
        END {
            pfrac = fma > 0 ? pf * gflop / fma : 0
            dfrac = bw > 0 ? df * (mb + head_mb) / 1000 / bw : 0
            printf "%-17s %-8s %-6s %-7s %2d %5d %6d | %9.1f %5.0f%% | %8.2f %5.0f%%\n", model, nu, k, isa, t, c, p, pf, 100 * pfrac, df, 100 * dfrac
            printf "%s,%s,%s,%s,%d,%d,%d,%d,%.3f,%.3f,%.4f,%.1f,%.4f,%.4f\n", model, nu, k, isa, t, c, p, d, pf, df, gflop, mb + head_mb, pfrac, dfrac >> csv
        }' "$tmp/out"
}
for numerics in qat official; do
    for kernels in fast exact; do
        for t in "$threads" 1; do
            bench "$build/models/tiny" 2048 32 "$t" "$kernels" "$numerics"
            bench "$flash" 512 8 "$t" "$kernels" "$numerics"
        done
    done
done
if [ "${BENCH_LONG:-0}" = 1 ]; then
    bench "$flash" 2048 8 "$threads" fast qat
    bench "$flash" 8192 8 "$threads" fast qat
fi
# Real expert counts: 2 layers with 64 and 256 routed experts, where a
# 256-token chunk leaves each expert about 24 or 6 tokens, at the model's
# default chunk and at 256.
if [ "${BENCH_EXPERTS:-0}" = 1 ]; then
    for experts in 64 256; do
        model="$build/models/flash-shape-2x$experts"
        [ -f "$model/config.json" ] ||
            "$mk" --preset flash-shape --layers 2 --experts "$experts" --seed 7 -o "$model" >/dev/null
        bench "$model" 2048 8 "$threads" fast qat
        bench "$model" 2048 8 "$threads" fast qat 256
    done
fi
echo "csv: $csv"
