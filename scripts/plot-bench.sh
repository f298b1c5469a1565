#!/bin/sh
# The benchmark plot (`make bench` ends with it): tokens/s against context
# length, drawn by gnuplot into a PNG from the CSVs the bench scripts wrote
# into BUILDDIR, so a run's figures can be seen at a glance and compared
# with the README's.
#
#   - bench-long.csv ($BENCH_CSV_LONG; scripts/bench-long.sh): the prefill
#     rate at each depth and the decode rate of a question asked there, two
#     lines;
#   - bench-engine.csv ($BENCH_CSV; scripts/bench-engine.sh), if there:
#     its prefill and decode rates against the prompt length, as points,
#     one pair per model, for the fast kernels on all threads (the setting
#     bench-long.sh measures).
#
# x is the context in tokens on a log scale; y is tokens/s, also on a log
# scale, since the built-in tiny model and the flash-shape one are two
# orders of magnitude apart.  The title names the CPU and thread count of
# the machine making the plot: make it where the bench ran.
#
# Needs gnuplot (Debian package gnuplot-nox).  As root, a missing gnuplot is
# installed with apt-get, as scripts/install-deps.sh does; otherwise the
# script stops and names the package (`sh scripts/install-deps.sh bench`
# installs it).
#
# Usage: plot-bench.sh BUILDDIR [OUT.png]   (default BUILDDIR/bench.png)
set -eu
build=${1:?usage: plot-bench.sh BUILDDIR [OUT.png]}
out=${2:-$build/bench.png}
long=${BENCH_CSV_LONG:-$build/bench-long.csv}
engine=${BENCH_CSV:-$build/bench-engine.csv}
[ -f "$long" ] || { echo "plot-bench: $long not found (run scripts/bench-long.sh $build)" >&2; exit 1; }

if ! command -v gnuplot >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "plot-bench: gnuplot not found: install the Debian package gnuplot-nox" \
            "(sudo sh scripts/install-deps.sh bench)" >&2
        exit 1
    fi
    echo "plot-bench: installing gnuplot-nox"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# bench-long.csv, by the names in its header (depth, depth_tok_s,
# decode_tok_s), to "depth prefill decode"; a rate that is missing or not
# positive (a run that failed) becomes NaN, which gnuplot leaves out.
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    function rate(v) { return v + 0 > 0 ? v + 0 : "NaN" }
    $(col["depth"]) + 0 > 0 {
        print $(col["depth"]), rate($(col["depth_tok_s"])), rate($(col["decode_tok_s"]))
    }' "$long" | sort -n >"$tmp/long.dat"
if ! awk '$2 != "NaN" || $3 != "NaN" { found = 1 } END { exit !found }' "$tmp/long.dat"; then
    echo "plot-bench: no rates in $long" >&2
    exit 1
fi

# bench-engine.csv: the rows of the fast kernels and qat numerics (the
# defaults, as bench-long runs them) at the most threads in the
# file, one file per model ("prompt prefill decode"), and the models' names
# in order in models.txt.
: >"$tmp/models.txt"
if [ -f "$engine" ]; then
    awk -F, -v dir="$tmp" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        { row[NR] = $0; t = $(col["threads"]) + 0; if (t > most) most = t }
        END {
            for (r = 2; r <= NR; r++) {
                split(row[r], f, ",")
                if (f[col["kernels"]] != "fast" || f[col["threads"]] + 0 != most) continue
                if (("numerics" in col) && f[col["numerics"]] != "qat") continue
                m = f[col["model"]]
                if ((m, f[col["prompt"]]) in seen) continue # another chunk size: the first row stands
                seen[m, f[col["prompt"]]] = 1
                if (!(m in id)) { id[m] = ++n; print m > (dir "/models.txt") }
                p = f[col["prefill_tok_s"]] + 0; d = f[col["decode_tok_s"]] + 0
                print f[col["prompt"]] + 0, (p > 0 ? p : "NaN"), (d > 0 ? d : "NaN") > (dir "/engine-" id[m] ".dat")
            }
        }' "$engine"
fi

# The title: the CPU's name and the threads tome-run uses by default (all
# online processors).
cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n 1)
[ -n "$cpu" ] || cpu=$(uname -m)
threads=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo "")
title="tome: tokens/s against context, $cpu"
[ -n "$threads" ] && title="$title, $threads threads"

# The x range, the lengths' span widened a little, and the x tics: every
# length that has a point, as 512, 8K, 1M.
cat "$tmp"/*.dat >"$tmp/points"
xrange=$(sort -n "$tmp/points" | awk 'NR == 1 { lo = $1 } { hi = $1 }
    END { printf "[%g:%g]", lo / 1.4, hi * 1.4 }')
tics=$(awk '{ print $1 }' "$tmp/points" | sort -n -u |
    awk '{ n = $1
        if (n >= 1048576 && n % 1048576 == 0) s = n / 1048576 "M"
        else if (n >= 1024 && n % 1024 == 0) s = n / 1024 "K"
        else s = n
        printf "%s\"%s\" %d", (NR > 1 ? ", " : ""), s, n }')

# The y range and tics: the rates' span widened (more at the top, for the
# values written over the points), with tics at 1, 2 and 5 times the powers
# of ten in it (a log axis spanning less than a decade would otherwise show
# one label or none).
yaxis=$(awk '{ for (i = 2; i <= 3; i++) if ($i != "NaN") {
        if (lo == "" || $i < lo) lo = $i; if (hi == "" || $i > hi) hi = $i } }
    END {
        lo /= 1.4; hi *= 1.8
        printf "set yrange [%g:%g]\nset ytics (", lo, hi
        sep = ""
        for (p = 1e-3; p <= hi; p *= 10)
            for (m = 1; m <= 5; m += m == 1 ? 1 : 3)
                if (m * p >= lo && m * p <= hi) { printf "%s%g", sep, m * p; sep = ", " }
        print ")"
    }' "$tmp/points")

# gnuplot takes strings in double quotes with backslash escapes.
quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }
{
    echo "set terminal png size 1000,700 noenhanced"
    echo "set output $(quote "$out")"
    echo "set title $(quote "$title")"
    echo "set xlabel 'context (tokens)'"
    echo "set ylabel 'tokens/s'"
    echo "set logscale xy"
    echo "set xtics ($tics)"
    echo "$yaxis"
    echo "set xrange $xrange"
    echo "set grid xtics ytics mytics lt 1 lc rgb '#c8c8c8', lt 1 lc rgb '#ececec'"
    echo "set key outside below center spacing 1.2"
    echo "shown(r) = r >= 100 ? sprintf('%.0f', r) : sprintf('%.3g', r)"
    printf "plot %s using 1:2 with linespoints lw 2 pt 7 ps 1.3 lc rgb '#1f77b4' title 'prefill rate at depth (bench-long)', \\\\\n" "$(quote "$tmp/long.dat")"
    printf "     '' using 1:2:(shown(\$2)) with labels offset 0,1 tc rgb '#1f77b4' notitle, \\\\\n"
    printf "     '' using 1:3 with linespoints lw 2 pt 5 ps 1.3 lc rgb '#d62728' title 'decode rate at depth (bench-long)', \\\\\n"
    printf "     '' using 1:3:(shown(\$3)) with labels offset 0,-1 tc rgb '#d62728' notitle"
    i=0
    while IFS= read -r model; do
        i=$((i + 1))
        f=$(quote "$tmp/engine-$i.dat")
        printf ", \\\\\n     %s using 1:2 with points pt %d ps 1.8 lc rgb '#2ca02c' title %s" \
            "$f" $((4 + 2 * (i - 1) % 8)) "$(quote "prefill of the prompt, $model (bench-engine)")"
        printf ", \\\\\n     %s using 1:3 with points pt %d ps 1.8 lc rgb '#ff7f0e' title %s" \
            "$f" $((4 + 2 * (i - 1) % 8)) "$(quote "decode after the prompt, $model (bench-engine)")"
    done <"$tmp/models.txt"
    echo
} >"$tmp/plot.gp"
gnuplot "$tmp/plot.gp"
echo "plot: $out"
