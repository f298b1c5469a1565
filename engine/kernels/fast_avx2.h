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

/* Decode runs four rows at a time, each row a page or two that the
 * hardware prefetchers, which stop at page boundaries, meet cold: so while
 * it reads `len` bytes at p it asks for the bytes `ahead` further on, where
 * the next call's rows lie (past the weight's end a prefetch is only a
 * wasted hint, never a fault). */
INLINE void next_rows(const uint8_t *p, int64_t ahead, int64_t len)
{
    for (int64_t o = 0; o < len; o += 64) _mm_prefetch((const char *)(p + ahead + o), _MM_HINT_T0);
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
