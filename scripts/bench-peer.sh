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
# runs, with the lowest and highest rates beside it.  The ratios to
# llama.cpp come two ways: the ratio of the two rows' medians, and the
# median of each round's own ratio (paired: the two engines ran minutes
# apart in one round, so a slow stretch of the machine tends to slow both,
# where two medians may come from different stretches).  The limits are
# measured at the start, after every round and after the depth runs, and
# the fractions use the highest of each limit's readings (a limit is what
# the machine can do, and a busy or throttled minute only lowers a
# reading: in one run on a virtual machine the read bandwidth was 28.7
# GB/s at the start and 46.0 after).
# Prints a table and writes a CSV to $BENCH_PEER_CSV (default BUILDDIR/bench-peer.csv):
#   prefill of FMA:  GFLOP/token (tome-run's cost line) x tok/s / FMA peak
#   decode of BW:    weight MB/token with the LM head x tok/s / bandwidth
#   vs llama.cpp:    tome's tokens/s / llama.cpp's, same file and threads
#                    (medians' ratio; paired: the median of the rounds' ratios)
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
# read_limits NAME: one reading of the limits, kept as $tmp/limits-NAME.csv.
read_limits() {
    "$build/bench/tome-limits" --threads 2 --csv >"$tmp/limits-$1.csv"
}
read_limits start
# limit NAME THREADS: the limit at 1 thread or at 2 (tome-limits' columns),
# the highest of its readings so far; 0 where tome-limits has none.
limit() {
    awk -F, -v n="$1" -v col=$((2 + $2)) '$1 == n && $col + 0 > best { best = $col + 0 }
        END { print best + 0 }' "$tmp"/limits-*.csv
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
# DECODE GFLOP MB ROUND (tokens/s; the costs per token come from tome-run on
# that file; ROUND as $round is, the depth runs' after the prompt's).
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
        awk -v e=tome -v f="$name" -v t="$threads" -v p="$length" -v r="$round" \
            '{ print e, f, t, p, $4, $5, $1, $2 + $3, r }' >>"$tmp/results"
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
    echo "llama.cpp $1 $3 $length $pf $df $(cat "$tmp/$1-cost") $round" >>"$tmp/results"
}
: >"$tmp/results"
run_at "$prompt" "$decode" "$warm"
for round in $(seq "$repeat"); do
    for t in 2 1; do
        tome safetensors "$flash" "$t"
        tome official "$flash" "$t" --numerics official
        tome exact "$flash" "$t" --kernels exact
        for q in gguf $quants; do
            tome "$q" "$(file_of "$q")" "$t"
            llama "$q" "$(file_of "$q")" "$t"
        done
    done
    read_limits "round$round"
done
for depth in $depths; do
    run_at "$depth" "$depth_decode" ""
    for round in $(seq "$depth_repeat"); do
        tome safetensors "$flash" 2
        tome official "$flash" 2 --numerics official
        tome exact "$flash" 2 --kernels exact
        tome gguf "$gguf" 2
        llama gguf "$gguf" 2
    done
done
# The limits once more, after every run (a machine whose memory changes
# speed, as a virtual machine's did from 35 GB/s one minute to 60 the
# next, shows it here); the fractions below use each limit's highest
# reading (limit).
read_limits end
echo "  read bandwidth after the rounds: $(cat "$tmp"/limits-start.csv "$tmp"/limits-round*.csv 2>/dev/null |
    awk -F, '$1 == "read_bandwidth" && n++ { printf "%s%s / %s", sep, $3, $4; sep = ", " }') GB/s at 1 / 2 threads; after the runs: $(awk -F, '$1 == "read_bandwidth" { print $3 " / " $4 }' "$tmp/limits-end.csv"); the fractions use each limit's highest reading: FP32 FMA $(fma 1) / $(fma 2) GFLOP/s, read bandwidth $(limit read_bandwidth 1) / $(limit read_bandwidth 2) GB/s"

# One line of table and of CSV per row, in first-run order: the medians of
# its runs' prefill and decode rates (each on its own) with their ranges,
# and its ratios to llama.cpp's row on the same file (the lossless GGUF for
# the safetensors rows), thread count and prompt: the ratio of the two
# rows' medians, and the median of the rounds' ratios (paired).
echo "engine,file,threads,prompt,decode,prefill_tok_s,decode_tok_s,gflop_per_token,mb_per_token,prefill_fraction_of_fma,decode_fraction_of_bandwidth,prefill_vs_llama,decode_vs_llama,runs,decode_min_tok_s,decode_max_tok_s,prefill_min_tok_s,prefill_max_tok_s,prefill_vs_llama_paired,decode_vs_llama_paired" >"$csv"
printf '%-9s %-11s %3s %6s | %9s %6s | %8s %6s | %-15s | %-15s | %s\n' engine file thr prompt "prefill/s" \
    "of FMA" "decode/s" "of BW" "vs llama.cpp" "paired" "runs: prefill, decode range"
awk -v peak1="$(fma 1)" -v peak2="$(fma 2)" -v bw1="$(limit read_bandwidth 1)" \
    -v bw2="$(limit read_bandwidth 2)" -v prompt="$prompt" -v decode="$decode" \
    -v depth_decode="$depth_decode" -v csv="$csv" '
    function median(list,    v, n, i, j, t) {
        n = split(list, v, " ")
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    # The llama.cpp row a row is compared with ("" for llama.cpp rows).
    function peer(k,    w) {
        split(k, w, " ")
        if (w[1] == "llama.cpp") return ""
        if (w[2] == "safetensors" || w[2] == "official" || w[2] == "exact") w[2] = "gguf"
        return "llama.cpp " w[2] " " w[3] " " w[4]
    }
    function range(k, c) { return sprintf("%.2f-%.2f", lo[k, c], hi[k, c]) }
    {
        key = $1 " " $2 " " $3 " " $4
        if (!(key in runs)) { order[++rows] = key; cost[key] = $7 " " $8 }
        runs[key]++
        rate[key, 5] = rate[key, 5] " " $5; rate[key, 6] = rate[key, 6] " " $6
        for (c = 5; c <= 6; c++) {
            if (runs[key] == 1 || $c + 0 < lo[key, c]) lo[key, c] = $c + 0
            if (runs[key] == 1 || $c + 0 > hi[key, c]) hi[key, c] = $c + 0
        }
        round[key] = round[key] " " $9
        at[key, $9, 5] = $5; at[key, $9, 6] = $6
    }
    END {
        for (i = 1; i <= rows; i++) {
            k = order[i]; split(k, w, " "); split(cost[k], g, " "); pk = peer(k)
            for (c = 5; c <= 6; c++) {
                med[c] = median(rate[k, c])
                ratio[c] = paired[c] = 0
                if (pk in runs && median(rate[pk, c]) > 0) ratio[c] = med[c] / median(rate[pk, c])
                list = ""
                nr = split(round[k], r, " ")
                for (j = 1; j <= nr; j++)
                    if ((pk, r[j], c) in at && at[pk, r[j], c] > 0)
                        list = list " " at[k, r[j], c] / at[pk, r[j], c]
                if (list != "") paired[c] = median(list)
            }
            peak = w[3] == 1 ? peak1 : peak2; bw = w[3] == 1 ? bw1 : bw2
            pfrac = peak > 0 ? g[1] * med[5] / peak : 0
            dfrac = bw > 0 ? g[2] / 1000 * med[6] / bw : 0
            shown = ratio[5] > 0 ? sprintf("%.2fx / %.2fx", ratio[5], ratio[6]) : "-"
            pshown = paired[5] > 0 ? sprintf("%.2fx / %.2fx", paired[5], paired[6]) : "-"
            printf "%-9s %-11s %3d %6d | %9.1f %5.1f%% | %8.2f %5.1f%% | %-15s | %-15s | %d: %s, %s\n", \
                w[1], w[2], w[3], w[4], med[5], 100 * pfrac, med[6], 100 * dfrac, shown, pshown, \
                runs[k], range(k, 5), range(k, 6)
            printf "%s,%s,%d,%d,%d,%.3f,%.3f,%.4f,%.1f,%.4f,%.4f,%.3f,%.3f,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f\n", \
                w[1], w[2], w[3], w[4], w[4] == prompt ? decode : depth_decode, med[5], med[6], \
                g[1], g[2], pfrac, dfrac, ratio[5], ratio[6], runs[k], lo[k, 6], hi[k, 6], \
                lo[k, 5], hi[k, 5], paired[5], paired[6] >> csv
        }
    }' "$tmp/results"
echo "(medians of each row's runs; vs llama.cpp: prefill / decode tokens/s ratio on the same file"
echo " and thread count, of the two rows' medians and, paired, the median of each round's ratio;"
echo " safetensors, in qat and in official numerics and with the exact kernels (row exact, qat),"
echo " against llama.cpp on the lossless gguf; rows with a longer prompt: decode at that depth,"
echo " prefill cold)"
echo "csv: $csv"
