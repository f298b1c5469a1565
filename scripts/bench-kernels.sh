#!/bin/sh
# bench-kernels.sh - the fast kernels' matrix products alone (`make bench`;
# bench/tome-kbench): flash-shape's decode products (FP8 attention rows
# 4096 and 1024 wide, FP4 expert rows, the BF16 LM head) as GB/s of
# weights, a fraction of the read bandwidth, and two prefill products (an
# FP8 matrix against 256 tokens, an FP4 expert against 96) as GFLOP/s, a
# fraction of the FP32 FMA peak, and the same for GGUF's block types as
# ds4's recipes and llama.cpp's mixes use them (Q8_0 attention rows, Q4_K,
# Q2_K, IQ2_XXS and Q6_K expert rows, a Q4_K expert against 96 tokens), at
# one thread and all; the limits are
# measured in the same run, before and after, and each fraction is of the
# higher reading.  Each kind runs over BENCH_KERNELS_MB megabytes of
# matrices (default 256), so that they rotate past the caches as a decode
# step's weights do, and is timed as its fastest pass of at least three
# and as many as fit in a second (virtual machines slow down for
# stretches of a few hundred milliseconds).  BENCH_KERNELS_ONLY=TEXT runs
# only the products whose name contains TEXT (e.g. "fp4"; one word).
# Prints a table and writes a CSV to $BENCH_KERNELS_CSV
# (default BUILDDIR/bench-kernels.csv).  Figures only: it never fails on
# speed.
set -eu
build=${1:?usage: bench-kernels.sh BUILDDIR}
make -C "$build" -s bench/tome-kbench
only=; [ -z "${BENCH_KERNELS_ONLY:-}" ] || only="--only $BENCH_KERNELS_ONLY"
# shellcheck disable=SC2086 # $only is two words or nothing
"$build/bench/tome-kbench" --mb "${BENCH_KERNELS_MB:-256}" $only \
    --csv "${BENCH_KERNELS_CSV:-$build/bench-kernels.csv}"
