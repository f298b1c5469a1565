#!/bin/sh
# Long-context benchmark (`make bench`): what a prefill chunk costs deep in
# a context, and what a question asked from a saved state of that depth
# costs.  For each depth N (default 8K, 64K and 256K tokens; BENCH_LONG=1
# adds 1M; BENCH_LONG_DEPTHS overrides the list):
#
#   1. prefill N tokens and save the state: wall time, peak RSS, state size;
#   2. restore that state and prefill 2,048 more tokens: the prefill rate
#      at depth N, and the restore time;
#   3. restore it again and ask a 32-token question for 16 answer tokens:
#      the first-token time (restore + question) and the decode rate.
#
# The cost of a token at depth p is fitted as a + b * p over the depths'
# rates (least squares), which projects a 1M-token prefill at
# a * N + b * N^2 / 2.  The part that grows, b, is mostly the lightning
# indexer's integer scoring: per earlier position, index_n_heads *
# index_head_dim / 4 multiply-adds in every ratio-4 layer.  So b is also
# given as the rate of those operations against the int8 dot-product limit
# that tome-limits measures in the same run.
#
# The model is the built-in tiny one, or BENCH_LONG_MODEL (a directory; e.g.
# `tome-mkmodel --preset flash-shape --layers 4 --experts 16` with
# BENCH_LONG_DEPTHS="8192 32768 65536").  CSV in $BENCH_CSV_LONG (default
# BUILDDIR/bench-long.csv).  Reports figures only.
set -eu
build=${1:?usage: bench-long.sh BUILDDIR}
run="$build/tools/tome-run"
csv=${BENCH_CSV_LONG:-$build/bench-long.csv}
model=${BENCH_LONG_MODEL:-}
if [ -z "$model" ]; then
    make -C "$build" -s models/tiny/config.json
    model="$build/models/tiny"
fi
depths=${BENCH_LONG_DEPTHS:-"8192 65536 262144"}
[ "${BENCH_LONG:-0}" = 1 ] && [ -z "${BENCH_LONG_DEPTHS:-}" ] && depths="$depths 1048576"
chunk=512 more=2048 question=32
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The machine's int8 dot-product limit for the indexer's kernel, all
# threads (tome-run's default): vpdpbusd where the CPU has AVX512-VNNI,
# else AVX2's vpmaddubsw.
int8=$("$build/bench/tome-limits" --csv | awk -F, '
    $1 == "int8_dot_vnni" { vnni = $4 } $1 == "int8_dot_avx2" { avx2 = $4 }
    END { print (vnni > 0 ? vnni " int8_dot_vnni" : avx2 " int8_dot_avx2") }')
int8_limit=${int8#* }
int8=${int8%% *}

# Indexer multiply-adds per earlier position, from config.json (one line
# or many): ratio-4 layers among the first num_hidden_layers.
ops_per_position=$(tr -d ' \n\t' <"$model/config.json" | awk '{
    n = 0; if (match($0, /"num_hidden_layers":[0-9]+/)) n = substr($0, RSTART + 20, RLENGTH - 20)
    h = 0; if (match($0, /"index_n_heads":[0-9]+/)) h = substr($0, RSTART + 16, RLENGTH - 16)
    d = 0; if (match($0, /"index_head_dim":[0-9]+/)) d = substr($0, RSTART + 17, RLENGTH - 17)
    csa = 0
    if (match($0, /"compress_ratios":\[[0-9,]*\]/)) {
        k = split(substr($0, RSTART + 19, RLENGTH - 20), r, ",")
        for (i = 1; i <= k && i <= n; i++) if (r[i] == 4) csa++
    }
    print 2 * csa * h * d / 4 }')

# Ids below the vocabulary, varied so the text is not one repeated token:
# the prompt for the deepest depth plus what follows it, and a question.
ids() {
    awk -v n="$1" -v seed="$2" 'BEGIN { x = seed; for (i = 0; i < n; i++) {
        x = (x * 1103515245 + 12345) % 2147483648; print 1000 + int(x / 65536) % 100000 } }'
}
deepest=0
for n in $depths; do [ "$n" -gt "$deepest" ] && deepest=$n; done
ids $((deepest + more)) 12345 >"$tmp/all"
ids "$question" 777 >"$tmp/question"

# Pull "X" out of a tome-run report line: field after `word`.
after() { awk -v w="$1" '{ for (i = 1; i < NF; i++) if ($i == w) { print $(i + 1); exit } }'; }
# "(R tok/s)": the rate of the prefill (first) or decode (second).
rate() { awk -v k="$1" '{ c = 0; for (i = 2; i <= NF; i++) if ($i ~ /^tok\/s\)/ && ++c == k) {
    print substr($(i - 1), 2); exit } }'; }
peak_rss() { if [ -x /usr/bin/time ]; then /usr/bin/time -f "rss %M" "$@"; else "$@"; fi; }

echo "depth,prefill_s,peak_rss_kb,state_bytes,restore_s,depth_tok_s,first_token_s,decode_tok_s" >"$csv"
printf '%8s %10s %10s %12s %10s %10s %12s %9s\n' depth prefill_s "RSS MB" "state bytes" \
    restore_s "tok/s@N" "1st token s" "decode/s"
for n in $depths; do
    head -n "$n" "$tmp/all" >"$tmp/prompt"
    peak_rss "$run" --model "$model" --ids "$tmp/prompt" --chunk "$chunk" \
        --save-state "$tmp/state" 2>"$tmp/fill" >/dev/null
    fill_s=$(grep 'prefill ' "$tmp/fill" | after in)
    rss=$(grep '^rss ' "$tmp/fill" | after rss || true)
    state=$(wc -c <"$tmp/state")
    head -n $((n + more)) "$tmp/all" >"$tmp/deeper"
    "$run" --model "$model" --ids "$tmp/deeper" --chunk "$chunk" --load-state "$tmp/state" \
        2>"$tmp/deep" >/dev/null
    restore_s=$(grep 'restored ' "$tmp/deep" | after in)
    deep_rate=$(grep 'prefill ' "$tmp/deep" | rate 1)
    cat "$tmp/prompt" "$tmp/question" >"$tmp/ask"
    "$run" --model "$model" --ids "$tmp/ask" --chunk "$chunk" --load-state "$tmp/state" \
        --decode 16 2>"$tmp/asked" >/dev/null
    first=$(awk '/restored / { for (i = 1; i < NF; i++) if ($i == "in") r = $(i + 1) }
        /prefill / { for (i = 1; i < NF; i++) if ($i == "in") { print r + $(i + 1); exit } }' "$tmp/asked")
    decode_rate=$(grep 'prefill ' "$tmp/asked" | rate 2)
    rm -f "$tmp/state"
    awk -v n="$n" -v f="$fill_s" -v m="${rss:-0}" -v st="$state" -v r="$restore_s" \
        -v d="$deep_rate" -v ft="$first" -v dr="$decode_rate" -v csv="$csv" 'BEGIN {
        printf "%8d %10.2f %10.1f %12d %10.3f %10.1f %12.3f %9.1f\n", n, f, m / 1024, st, r, d, ft, dr
        printf "%d,%.3f,%d,%d,%.4f,%.2f,%.4f,%.2f\n", n, f, m, st, r, d, ft, dr >> csv }'
done
# Least squares of cost = a + b * p over the depths, p the middle of the
# chunk measured, cost = 1 / rate.
awk -F, -v more="$more" -v ops="$ops_per_position" -v int8="${int8:-0}" -v limit="$int8_limit" 'NR > 1 {
    x = $1 + more / 2; y = 1 / $6; n++; sx += x; sy += y; sxx += x * x; sxy += x * y }
    END {
        if (n < 2) exit
        b = (n * sxy - sx * sy) / (n * sxx - sx * sx); a = (sy - b * sx) / n
        N = 1048576; T = a * N + b * N * N / 2
        printf "fit: a = %.3f ms per token, b = %.3f ns per earlier position\n", a * 1e3, b * 1e9
        printf "projected 1M-token prefill: %.1f minutes\n", T / 60
        if (b > 0 && ops > 0 && int8 > 0)
            printf "b: %d indexer int8 ops per position, %.0f GOPS, %.0f%% of the int8 limit (%s, %.0f GOPS)\n",
                ops, ops / b / 1e9, 100 * ops / b / 1e9 / int8, limit, int8
    }' "$csv"
echo "csv: $csv"
