/*
 * fast_avx2.h - what the AVX2 fast kernels' files share (private to
 * engine/kernels/): fast_avx2.c (the kernel table: formats of the official
 * checkpoints, prefill tiles, attention over stored rows) and
 * fast_avx2_gguf.c (GGUF's block types decoded in registers for decode).
 * x86-64 only; everything here is compiled for AVX2, FMA and F16C and used
 * only once fast.c has checked the CPU.
 */
#ifndef TOME_ENGINE_KERNELS_FAST_AVX2_H
#define TOME_ENGINE_KERNELS_FAST_AVX2_H

#include "engine/kernels/fast.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET "avx2,fma,f16c"
#define KERNEL __attribute__((target(TARGET)))
#define INLINE __attribute__((target(TARGET), always_inline)) static inline

/* Sixteen weights or sums as two halves: lanes 0-7 and 8-15 of fast.h's
 * order. */
typedef struct half2 {
    __m256 lo, hi;
} half2;

/* Sixteen weights into a row's two accumulators. */
INLINE void fma16(half2 *acc, half2 w, __m256 xl, __m256 xh)
{
    acc->lo = _mm256_fmadd_ps(w.lo, xl, acc->lo);
    acc->hi = _mm256_fmadd_ps(w.hi, xh, acc->hi);
}

/* a * b, rounded once as a multiplication rounds it, by a fused
 * multiply-add of -0 (x + -0 is x for every x, zeros included): AMD's Zen 3
 * slows a multiplication with a subnormal operand down several times over,
 * a fused multiply-add not at all, and the tiny decoders below make
 * subnormals of small codes. */
INLINE __m256 mul_exact(__m256 a, __m256 b)
{
    return _mm256_fmadd_ps(a, b, _mm256_set1_ps(-0.0f));
}

/* e2m1 codes on bits 31..28 of each lane (anything below) as floats times
 * 2^-126, by integer operations alone: an arithmetic shift right by six
 * puts the sign on bit 31 (copies on 30..25), the exponent bits on 24..23
 * and the mantissa bit on 22, which the mask keeps.  Exponent field e
 * becomes the F32 exponent e, so 0.5 (e = 0) is the subnormal 2^-127 and
 * every code is its value times 2^-126, exactly. */
INLINE __m256 e2m1_top_tiny(__m256i v)
{
    return _mm256_castsi256_ps(
        _mm256_and_si256(_mm256_srai_epi32(v, 6), _mm256_set1_epi32((int)0x81C00000)));
}

/* 2^126 times the E8M0 scale 2^(e - 127), e <= 128 (2^(e - 1): normal,
 * and exact times e2m1_top_tiny's values, subnormal products included). */
INLINE __m256 fp4_factor(uint8_t e)
{
    return _mm256_castsi256_ps(_mm256_set1_epi32((int)(((uint32_t)e + 126) << 23)));
}

/* Thirty-two weights w[0..3] (columns in order, eight each) against
 * x[0, 32) into a row's two accumulators. */
INLINE void fma32(half2 *acc, const __m256 *w, const float *x)
{
    acc->lo = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(x), acc->lo);
    acc->hi = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + 8), acc->hi);
    acc->lo = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x + 16), acc->lo);
    acc->hi = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x + 24), acc->hi);
}

/* Whether v4_avx2_gguf_rows_dot reads GGUF type t in registers (Q8_0,
 * MXFP4, Q4_K, Q2_K, IQ2_XXS); the others are decoded into a buffer. */
int v4_avx2_gguf_in_registers(v4_dtype t);

/* acc[i] continues the dot product of weight row row[i] (i <
 * V4_FAST_ROWS) with x over all of w->cols, in fast.h's order, each value
 * made as the block decoder makes it (engine/kernels/blocks.c). */
void v4_avx2_gguf_rows_dot(const v4_weight *w, const int64_t *row, const float *x, half2 *acc);

#endif
#endif
