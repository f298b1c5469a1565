#!/bin/sh
# bench-peer.sh - tome against llama.cpp in one run (`make bench`).
#
# The flash-shape model (tome-mkmodel --preset flash-shape --layers 4
# --experts 16 --seed 7, cached in BUILDDIR/models) is converted once by
# tome-convert into llama.cpp's DeepSeek V4 GGUF layout, MTP left out, in
# three recipes (cached as BUILDDIR/models/flash-shape-4x16*.gguf):
#   gguf   FP8 -> Q8_0, FP4 experts -> MXFP4 losslessly, BF16 and F32 kept
#   q4_k   Q8_0, routed experts Q4_K, small tensors F16 (ds4's 256 GB recipe)
#   q2     Q8_0, routed experts IQ2_XXS (gate, up) and Q2_K (down), small
#          tensors F16 (ds4's 128 GB recipe)
# Then, in this one run: the machine's limits (tome-limits: FP32 FMA peak,
# read bandwidth, 1 and 2 threads), tome-run on the safetensors model and on
# each GGUF, and llama.cpp (node-llama-cpp 3.22.1's CPU build, scripts/peer)
# on the same GGUFs, each with the same 512 prompt ids (prefill, one batch)
# and 32 greedy decode steps, at 2 threads and 1; the safetensors model runs
# in qat numerics, in official ones (row "official") and with the exact
# kernels in qat (row "exact": the bit-exact mode against the peer).  Then
# decode at
# depth: for each length in BENCH_PEER_DEPTHS (default 8192; "" for none),
# the safetensors model (qat, official, and qat with the exact kernels)
# and the lossless GGUF in both engines, 2 threads, a prompt that long prefilled cold (its own prefill
# warms the weights) and BENCH_PEER_DEPTH_DECODE (default 128) decode steps
# after it: short decode runs are a second or two, too short to compare.  BENCH_PEER_QUANTS picks
# the quantised recipes (default "q4_k q2"; "" for none).  Speeds on shared
# or virtual machines move by 10-40% within minutes, so the prompt's runs
# are repeated BENCH_PEER_REPEAT times (default 3) in rounds, each round
# running every engine once, and the depth runs BENCH_PEER_DEPTH_REPEAT
# times (default 1: each takes minutes); each row is the median of its
# runs, with the lowest and highest decode rate beside it.  The limits
# are measured again after the runs, and the fractions use the higher of
# each limit's two readings (a limit is what the machine can do, and a
# busy or throttled minute only lowers a reading: in one run on a virtual
# machine the read bandwidth was 28.7 GB/s at the start and 46.0 after).
# Prints a table and writes a CSV to $BENCH_PEER_CSV (default BUILDDIR/bench-peer.csv):
#   prefill of FMA:  GFLOP/token (tome-run's cost line) x tok/s / FMA peak
#   decode of BW:    weight MB/token with the LM head x tok/s / bandwidth
#   vs llama.cpp:    tome's tokens/s / llama.cpp's, same file and threads
# Both engines read the same GGUF, so the same costs per token apply.
# Without npm/node (or when the install fails) the llama.cpp rows are left
# out and the table compares against the limits only.  Figures only: it
# never fails on speed.  BENCH_PEER_PROMPT / BENCH_PEER_DECODE change the
# 512 / 32.  Both engines run warm: each prefills the prompt once, untimed,
# before the timed prefill (tome-run --warmup, llama.mjs --warmup), as a
# running tomed or llama.cpp server would be; the first touch of a mapped
# weight is an operating system's cost, and in some virtual machines it
# costs more than the whole prefill's arithmetic.  BENCH_WARM=0 times cold
# runs instead.
set -eu
build=${1:?usage: bench-peer.sh BUILDDIR}
src=$(cd "$(dirname "$0")/.." && pwd)
csv=${BENCH_PEER_CSV:-$build/bench-peer.csv}
prompt=${BENCH_PEER_PROMPT:-512}
warm=; [ "${BENCH_WARM:-1}" = 0 ] || warm=--warmup
decode=${BENCH_PEER_DECODE:-32}
depths=${BENCH_PEER_DEPTHS-8192}
depth_decode=${BENCH_PEER_DEPTH_DECODE:-128}
repeat=${BENCH_PEER_REPEAT:-3}
depth_repeat=${BENCH_PEER_DEPTH_REPEAT:-1}
make -C "$build" -s bench/tome-limits tools/tome-run tools/tome-convert tools/tome-mkmodel
flash=$build/models/flash-shape-4x16
gguf=$flash.gguf
[ -f "$flash/config.json" ] ||
    "$build/tools/tome-mkmodel" --preset flash-shape --layers 4 --experts 16 --seed 7 \
        -o "$flash" >/dev/null
quants=${BENCH_PEER_QUANTS-q4_k q2}
# recipe NAME: tome-convert's options for that GGUF.
recipe() {
    case $1 in
    gguf) echo --keep-float --type Q8_0 --experts MXFP4 ;;
    q4_k) echo --type Q8_0 --experts Q4_K --small F16 ;;
    q2) echo --type Q8_0 --experts IQ2_XXS --down Q2_K --small F16 ;;
    *) echo "bench-peer.sh: unknown recipe $1 in BENCH_PEER_QUANTS" >&2; return 1 ;;
    esac
}
file_of() { # NAME
    if [ "$1" = gguf ]; then echo "$gguf"; else echo "$flash-$1.gguf"; fi
}
for q in gguf $quants; do
    opts=$(recipe "$q")
    # shellcheck disable=SC2086 # the options are words
    [ -f "$(file_of "$q")" ] ||
        "$build/tools/tome-convert" --no-mtp $opts "$flash" "$(file_of "$q")" 2>/dev/null
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

peer=$(sh "$src/scripts/peer/setup.sh" 2>"$tmp/setup.err") ||
    { echo "llama.cpp: not run ($(cat "$tmp/setup.err")); limits only"; peer=; }

echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); load: $(cut -d' ' -f1-3 /proc/loadavg); $(if [ -n "$warm" ]; then echo warm; else echo cold; fi) runs"
"$build/bench/tome-limits" --threads 2 --csv >"$tmp/limits.csv"
# limit NAME THREADS: the limit at 1 thread or at 2 (tome-limits' columns),
# the higher of its readings at the start and, once taken, after the runs;
# 0 where tome-limits has none.
limit() {
    # shellcheck disable=SC2046 # the second file is a word or nothing
    awk -F, -v n="$1" -v col=$((2 + $2)) '$1 == n && $col + 0 > best { best = $col + 0 }
        END { print best + 0 }' "$tmp/limits.csv" $([ -f "$tmp/limits-end.csv" ] && echo "$tmp/limits-end.csv")
}
fma() {
    v=$(limit fp32_fma_avx512 "$1")
    case $v in '' | 0 | 0.*) limit fp32_fma_avx2 "$1" ;; *) echo "$v" ;; esac
}
for t in 1 2; do
    echo "  limit at $t thread(s): FP32 FMA $(fma $t) GFLOP/s, read bandwidth $(limit read_bandwidth $t) GB/s"
done

# The runs below use a prompt of $length ids, $steps decode steps and $warm
# (--warmup or nothing), which run_at sets.
run_at() { # LENGTH STEPS WARM
    length=$1 steps=$2 warm=$3
    seq 1000 $((999 + length)) >"$tmp/ids"
}
# One result line per run in $tmp/results: ENGINE FILE THREADS PROMPT PREFILL
# DECODE GFLOP MB (tokens/s; the costs per token come from tome-run on that
# file).
tome() { # NAME MODEL THREADS [tome-run options]
    name=$1 model=$2 threads=$3
    shift 3
    # shellcheck disable=SC2086 # $warm is a word or nothing
    if ! "$build/tools/tome-run" --model "$model" --ids "$tmp/ids" --decode "$steps" \
        --threads "$threads" $warm "$@" >/dev/null 2>"$tmp/out"; then
        echo "tome-run failed on $name: $(tail -2 "$tmp/out")"
        return 0
    fi
    sed -n -e 's/.*cost per token: \([0-9.]*\) GFLOP in matrix products, \([0-9.]*\) MB of weights (LM head: [0-9.]* GFLOP, \([0-9.]*\) MB).*/\1 \2 \3/p' \
        -e 's/.*prefill [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s); decode [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1 \2/p' \
        "$tmp/out" | tr '\n' ' ' |
        awk -v e=tome -v f="$name" -v t="$threads" -v p="$length" \
            '{ print e, f, t, p, $4, $5, $1, $2 + $3 }' >>"$tmp/results"
    [ -e "$model/config.json" ] || awk '{ print $7, $8 }' "$tmp/results" | tail -1 >"$tmp/$name-cost"
    return 0
}
llama() { # NAME MODEL THREADS (after tome on the same file, whose costs apply)
    [ -n "$peer" ] || return 0
    # shellcheck disable=SC2086 # $warm is a word or nothing
    if ! node "$src/scripts/peer/llama.mjs" "$peer" --model "$2" --ids "$tmp/ids" \
        --decode "$steps" --threads "$3" $warm >"$tmp/llama.json" 2>"$tmp/llama.err"; then
        echo "llama.cpp failed on $1: $(tail -3 "$tmp/llama.err")"
        return 0
    fi
    node -e 'const r = JSON.parse(require("fs").readFileSync(0, "utf8"));
             console.log(r.prefill_tok_s, r.decode_tok_s, r.backend)' <"$tmp/llama.json" >"$tmp/llama.txt"
    read -r pf df backend <"$tmp/llama.txt"
    echo "llama.cpp $1 $3 thread(s): CPU backend $backend"
    echo "llama.cpp $1 $3 $length $pf $df $(cat "$tmp/$1-cost")" >>"$tmp/results"
}
: >"$tmp/results"
run_at "$prompt" "$decode" "$warm"
for _ in $(seq "$repeat"); do
    for t in 2 1; do
        tome safetensors "$flash" "$t"
        tome official "$flash" "$t" --numerics official
        tome exact "$flash" "$t" --kernels exact
        for q in gguf $quants; do
            tome "$q" "$(file_of "$q")" "$t"
            llama "$q" "$(file_of "$q")" "$t"
        done
    done
done
for depth in $depths; do
    run_at "$depth" "$depth_decode" ""
    for _ in $(seq "$depth_repeat"); do
        tome safetensors "$flash" 2
        tome official "$flash" 2 --numerics official
        tome exact "$flash" 2 --kernels exact
        tome gguf "$gguf" 2
        llama gguf "$gguf" 2
    done
done
# One line per row, in first-run order: the medians of its runs' prefill
# and decode rates (each on its own), the runs' count and decode range.
awk '
    function median(list,    v, n, i, j, t) {
        n = split(list, v, " ")
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    {
        key = $1 " " $2 " " $3 " " $4
        if (!(key in runs)) { order[++rows] = key; cost[key] = $7 " " $8 }
        runs[key]++
        pf[key] = pf[key] " " $5; df[key] = df[key] " " $6
        if (!(key in lo) || $6 + 0 < lo[key]) lo[key] = $6 + 0
        if (!(key in hi) || $6 + 0 > hi[key]) hi[key] = $6 + 0
    }
    END {
        for (i = 1; i <= rows; i++) {
            k = order[i]
            print k, median(pf[k]), median(df[k]), cost[k], runs[k], lo[k], hi[k]
        }
    }' "$tmp/results" >"$tmp/rows"

# The limits once more, after every run (a machine whose memory changes
# speed, as a virtual machine's did from 35 GB/s one minute to 60 the
# next, shows it here); the fractions below use each limit's higher
# reading (limit).
"$build/bench/tome-limits" --threads 2 --csv >"$tmp/limits-end.csv"
echo "  read bandwidth after the runs: $(awk -F, '$1 == "read_bandwidth" { print $3 " / " $4 }' "$tmp/limits-end.csv") GB/s at 1 / 2 threads; the fractions use each limit's higher reading: FP32 FMA $(fma 1) / $(fma 2) GFLOP/s, read bandwidth $(limit read_bandwidth 1) / $(limit read_bandwidth 2) GB/s"

echo "engine,file,threads,prompt,decode,prefill_tok_s,decode_tok_s,gflop_per_token,mb_per_token,prefill_fraction_of_fma,decode_fraction_of_bandwidth,prefill_vs_llama,decode_vs_llama,runs,decode_min_tok_s,decode_max_tok_s" >"$csv"
printf '%-9s %-11s %3s %6s | %9s %6s | %8s %6s | %-15s | %s\n' engine file thr prompt "prefill/s" \
    "of FMA" "decode/s" "of BW" "vs llama.cpp" "runs: decode range"
while read -r engine file t p pf df gflop mb n dlo dhi; do
    peak=$(fma "$t") bw=$(limit read_bandwidth "$t")
    awk -v e="$engine" -v f="$file" -v t="$t" -v pf="$pf" -v df="$df" -v g="$gflop" -v mb="$mb" \
        -v peak="$peak" -v bw="$bw" -v p="$p" -v d="$([ "$p" = "$prompt" ] && echo "$decode" || echo "$depth_decode")" \
        -v n="$n" -v dlo="$dlo" -v dhi="$dhi" -v csv="$csv" '
        $1 == "llama.cpp" && $3 == t && $4 == p && ($2 == f || (f == "safetensors" || f == "official" || f == "exact") && $2 == "gguf") {
            lpf = $5; ldf = $6
        }
        END {
            pfrac = peak > 0 ? g * pf / peak : 0
            dfrac = bw > 0 ? mb / 1000 * df / bw : 0
            rp = e != "llama.cpp" && lpf > 0 ? pf / lpf : 0
            rd = e != "llama.cpp" && ldf > 0 ? df / ldf : 0
            ratio = rp > 0 ? sprintf("%.2fx / %.2fx", rp, rd) : "-"
            printf "%-9s %-11s %3d %6d | %9.1f %5.1f%% | %8.2f %5.1f%% | %-15s | %d: %.2f-%.2f\n", e, f, t, p, pf, 100 * pfrac, df, 100 * dfrac, ratio, n, dlo, dhi
            printf "%s,%s,%d,%d,%d,%.3f,%.3f,%.4f,%.1f,%.4f,%.4f,%.3f,%.3f,%d,%.3f,%.3f\n", e, f, t, p, d, pf, df, g, mb, pfrac, dfrac, rp, rd, n, dlo, dhi >> csv
        }' "$tmp/rows"
done <"$tmp/rows"
echo "(medians of each row's runs; vs llama.cpp: prefill / decode tokens/s ratio on the same file"
echo " and thread count; safetensors, in qat and in official numerics and with the exact kernels"
echo " (row exact, qat), against llama.cpp on the lossless gguf; rows with a longer prompt: decode"
echo " at that depth, prefill cold)"
echo "csv: $csv"
