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

#include "engine/kernels/avx2_formats.h"
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

/* The F32 values of the BF16 words of w: each 32-bit lane's bottom word
 * shifted up, and its top word masked. */
INLINE __m256 bf16_bottom(__m256i w)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

INLINE __m256 bf16_top(__m256i w)
{
    return _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32((int)0xFFFF0000)));
}

/* Thirty-two 4-bit codes as BF16 words, looked up in tab, the row of
 * v4_fast_e2m1_bf16 or v4_fast_mxfp4_bf16 for their block's scale (fast.h):
 * `order` places the sixteen code bytes at q within each 128-bit half,
 * eight of them twice; the low nibbles of the first eight and the high
 * ones of the second are picked out (a shift of 4 on the odd 64-bit
 * words), looked up as low and as high bytes, and the bytes interleaved.
 * *lo gets the words of the low nibbles and *hi those of the high ones,
 * each half in the order of its eight bytes.  Twelve vector operations
 * make 32 weights this way (bf16_bottom and bf16_top included), where
 * shifting each code into place and multiplying in the block's factor
 * took sixteen; on a Zen 3, FP4 rows went from 12.3 to 16.8 weights/ns
 * in L1 and from 12.1 to 15.9 from memory (one thread, two rows in turns,
 * in a microbenchmark). */
INLINE void nibbles_bf16(const uint8_t *q, const uint8_t *tab, __m256i order, __m256i *lo,
                         __m256i *hi)
{
    __m256i v = _mm256_shuffle_epi8(
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)q)), order);
    __m256i n = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 4, 0, 4)),
                                 _mm256_set1_epi8(15));
    __m256i low = _mm256_shuffle_epi8(
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)tab)), n);
    __m256i high = _mm256_shuffle_epi8(
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(tab + 16))), n);
    *lo = _mm256_unpacklo_epi8(low, high);
    *hi = _mm256_unpackhi_epi8(low, high);
}

/* Sixteen weights into a row's two accumulators. */
INLINE void fma16(half2 *acc, half2 w, __m256 xl, __m256 xh)
{
    acc->lo = _mm256_fmadd_ps(w.lo, xl, acc->lo);
    acc->hi = _mm256_fmadd_ps(w.hi, xh, acc->hi);
}

/* The odd columns of sixteen (a: columns 0-7, b: 8-15), in order: a shuffle
 * within 128-bit lanes gives 1 3 9 11 | 5 7 13 15, and the 64-bit pairs
 * are put in order. */
INLINE __m256 odd8(__m256 a, __m256 b)
{
    __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* The even columns of sixteen, likewise. */
INLINE __m256 even8(__m256 a, __m256 b)
{
    __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* Thirty-two weights of a row in the pair order: odd columns (o: 1..15,
 * 17..31, as halves of eight) against the first sixteen permuted inputs,
 * then the even ones (e) against the next sixteen. */
INLINE void pair_step(half2 *acc, half2 o, half2 e, const float *xp)
{
    acc->lo = _mm256_fmadd_ps(o.lo, _mm256_loadu_ps(xp), acc->lo);
    acc->hi = _mm256_fmadd_ps(o.hi, _mm256_loadu_ps(xp + 8), acc->hi);
    acc->lo = _mm256_fmadd_ps(e.lo, _mm256_loadu_ps(xp + 16), acc->lo);
    acc->hi = _mm256_fmadd_ps(e.hi, _mm256_loadu_ps(xp + 24), acc->hi);
}

/* Thirty-two weights in column order (a: columns 0-15, b: 16-31) split
 * into the pair order's odd and even columns by shuffles. */
INLINE void pair_split(half2 a, half2 b, half2 *o, half2 *e)
{
    *o = (half2){odd8(a.lo, a.hi), odd8(b.lo, b.hi)};
    *e = (half2){even8(a.lo, a.hi), even8(b.lo, b.hi)};
}

/* Thirty-two weights in column order (a: columns 0-15, b: 16-31) into a
 * row's accumulators in the pair order, against permuted inputs xp. */
INLINE void pair32(half2 *acc, half2 a, half2 b, const float *xp)
{
    half2 o, e;
    pair_split(a, b, &o, &e);
    pair_step(acc, o, e, xp);
}

/* Thirty-two weights in the pair order stored as a decoded panel holds
 * them (fast.h's decode_rows): the odd columns, then the even ones. */
INLINE void pair_store(float *out, half2 o, half2 e)
{
    _mm256_storeu_ps(out, o.lo);
    _mm256_storeu_ps(out + 8, o.hi);
    _mm256_storeu_ps(out + 16, e.lo);
    _mm256_storeu_ps(out + 24, e.hi);
}

/* For GGUF's types (F16 and the block types: v4_fast_gguf): acc[i]
 * continues the dot product of weight row row[i] (i < V4_FAST_ROWS) with
 * the inputs over all of w->cols, in fast.h's pair order (xp: the inputs
 * with each 32 columns permuted), each value made as the row decoder
 * makes it (engine/kernels/blocks.c), read in registers. */
void v4_avx2_gguf_rows_dot(const v4_weight *w, const int64_t *row, const float *xp, half2 *acc);

/* Rows [r, r + nr) of w (a GGUF type) into panel, row i at panel + i * w->cols, in the pair order's
 * layout (fast.h's decode_rows), each value made as the block decoder makes it. */
void v4_avx2_gguf_panel(const v4_weight *w, int64_t r, int nr, float *panel);

#endif
#endif
