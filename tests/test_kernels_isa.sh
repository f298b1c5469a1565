#!/bin/sh
# The kernel tests again with each lesser instruction set forced (TOME_ISA
# scalar and avx2; test_kernels, test_attn_kernels and test_hostile_weights
# themselves run the best this CPU has): the exact kernels' sums pick their SIMD width from
# the ISA the fast kernels run (AVX-512 machines take 512-bit panel sums),
# so on such a machine the AVX2 loops and the scalar ones would otherwise
# go untested.  A TOME_ISA this CPU cannot run falls back to its best,
# which only repeats a run.
set -eu
build=${TOME_BUILDDIR:?}
fail=0
for isa in scalar avx2; do
    for t in test_kernels test_attn_kernels test_hostile_weights; do
        if ! out=$(TOME_ISA=$isa "$build/tests/$t" 2>&1); then
            echo "FAIL: TOME_ISA=$isa $t:"
            echo "$out" | tail -5
            fail=1
        else
            echo "ok: TOME_ISA=$isa $t ($(echo "$out" | tail -1))"
        fi
    done
done
exit $fail
