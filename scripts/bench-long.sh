#!/bin/sh
# Long-context benchmark (`make bench`): how prefill cost grows with the
# context.  Prefills prompts of N tokens on the built-in tiny model (8K,
# 32K and 64K by default; BENCH_LONG=1 adds 128K and 256K), fits the cost
# per token as a + b * position by least squares on the totals
# (T(N) / N = a + b * N / 2), and projects a 1M-token prefill.  Also the
# decode rate after each prompt and the state's size.  Writes a CSV to
# $BENCH_CSV_LONG (default BUILDDIR/bench-long.csv).  Reports figures only.
set -eu
build=${1:?usage: bench-long.sh BUILDDIR}
run="$build/tools/tome-run"
csv=${BENCH_CSV_LONG:-$build/bench-long.csv}
make -C "$build" -s models/tiny/config.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sizes="8192 32768 65536"
[ "${BENCH_LONG:-0}" = 1 ] && sizes="$sizes 131072 262144"
echo "tokens,prefill_s,prefill_tok_s,decode_tok_s,state_bytes" >"$csv"
printf '%8s %10s %12s %11s %12s\n' tokens prefill_s "prefill/s" "decode/s" "state bytes"
for n in $sizes; do
    # varied ids below the vocabulary, so the text is not one repeated token
    awk -v n="$n" 'BEGIN { x = 12345; for (i = 0; i < n; i++) {
        x = (x * 1103515245 + 12345) % 2147483648; print 1000 + int(x / 65536) % 100000 } }' \
        >"$tmp/ids"
    "$run" --model "$build/models/tiny" --ids "$tmp/ids" --decode 16 --chunk 512 \
        2>"$tmp/out" >/dev/null
    awk -v n="$n" -v csv="$csv" '/prefill .* tok\/s/ {
        for (i = 1; i <= NF; i++) {
            if ($i == "in" && !t) t = $(i + 1)
            if ($i ~ /^tok\/s\)/) { if (!pf) pf = substr($(i - 1), 2); else df = substr($(i - 1), 2) }
            if ($i == "state") st = $(i + 1)
        }
        printf "%8d %10.2f %12.1f %11.2f %12d\n", n, t, pf, df, st
        printf "%d,%.3f,%.2f,%.2f,%d\n", n, t, pf, df, st >> csv
    }' "$tmp/out"
done
# Least squares of y = a + b*x with y = T/N (s per token), x = N/2.
awk -F, 'NR > 1 { x = $1 / 2; y = $2 / $1; n++; sx += x; sy += y; sxx += x * x; sxy += x * y }
    END {
        b = (n * sxy - sx * sy) / (n * sxx - sx * sx); a = (sy - b * sx) / n
        N = 1048576; T = a * N + b * N * N / 2
        printf "fit: a = %.3f ms per token, b = %.2f ns per earlier position\n", a * 1e3, b * 1e9
        printf "projected 1M-token prefill: %.1f minutes\n", T / 60
    }' "$csv"
echo "csv: $csv"
