/*
 * avx2_formats.h - V4's number formats decoded eight at a time with AVX2,
 * exactly (private to engine/kernels/: the exact row decoders, the exact
 * decode GEMV and the AVX2 fast kernels share them).  V4_HAVE_X86 says
 * whether they exist.
 */
#ifndef TOME_ENGINE_KERNELS_AVX2_FORMATS_H
#define TOME_ENGINE_KERNELS_AVX2_FORMATS_H

#include "engine/internal.h"
#include "engine/kernels/fast.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define V4_HAVE_X86 1

/* Eight e4m3 bytes (as int32 lanes) to floats without a table: for normal
 * codes the exponent and mantissa bits move into a float's fields and the
 * bias moves from 7 to 127; subnormal codes (exponent 0) are m * 2^-9.
 * Exact for every code, NaN included. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 e4m3x8(__m256i b)
{
    __m256i mag = _mm256_and_si256(b, _mm256_set1_epi32(0x7F));
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x80)), 24);
    __m256 normal = _mm256_castsi256_ps(
        _mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23)));
    __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(mag, _mm256_set1_epi32(7))),
                               _mm256_set1_ps(1.0f / 512.0f));
    __m256i is_sub =
        _mm256_cmpeq_epi32(_mm256_and_si256(mag, _mm256_set1_epi32(0x78)), _mm256_setzero_si256());
    __m256 v = _mm256_blendv_ps(normal, sub, _mm256_castsi256_ps(is_sub));
    /* S.1111.111 is the format's NaN. */
    __m256i is_nan = _mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7F));
    v = _mm256_blendv_ps(v, _mm256_set1_ps(NAN), _mm256_castsi256_ps(is_nan));
    return _mm256_or_ps(v, _mm256_castsi256_ps(sign));
}

/* Eight floats rounded to BF16 values, as v4_bf16_round does: add half an
 * ulp of BF16 (less one, plus the kept lowest bit: ties to even) and cut;
 * a NaN stays a NaN, made quiet. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 bf16_round8(__m256 x)
{
    __m256i u = _mm256_castps_si256(x);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r =
        _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), odd),
                         _mm256_set1_epi32((int)0xFFFF0000u));
    /* NaN: |u| > inf's bits, a signed compare as both are below 2^31 */
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)),
                                     _mm256_set1_epi32(0x7F800000));
    __m256i quiet = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));
    return _mm256_castsi256_ps(_mm256_blendv_epi8(r, quiet, nan));
}

/* Eight e2m1 codes (int32 lanes, bit 3 the sign) to floats. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 e2m1x8(__m256i codes)
{
    __m256 mag = _mm256_permutevar8x32_ps(_mm256_loadu_ps(v4_e2m1_values), codes);
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(codes, _mm256_set1_epi32(8)), 28);
    return _mm256_or_ps(mag, _mm256_castsi256_ps(sign));
}

/* Eight e2m1 codes from four packed bytes (low nibble first). */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256i nibbles8(const uint8_t *p)
{
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0);
    uint32_t four;
    memcpy(&four, p, 4);
    __m128i b = _mm_shuffle_epi8(_mm_cvtsi32_si128((int)four), dup);
    return _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_cvtepu8_epi32(b), _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4)),
        _mm256_set1_epi32(15));
}

/* a * b, rounded once as a multiplication rounds it, by a fused
 * multiply-add of -0 (x + -0 is x for every x, zeros included): AMD's Zen 3
 * slows a multiplication with a subnormal operand down several times over,
 * a fused multiply-add not at all, and the tiny decoders below make
 * subnormals of small codes. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 mul_exact(__m256 a,
                                                                                  __m256 b)
{
    return _mm256_fmadd_ps(a, b, _mm256_set1_ps(-0.0f));
}

/* Sixteen e4m3 codes sign-extended to 16-bit words, two to a 32-bit lane
 * (the even column's in the low word), as floats times 2^-120 by integer
 * operations alone (no conversion instruction, the slow part of decoding
 * them as f16): the odd columns (the top words) into *odd, the even ones
 * into *even.  Shifted left by 4, a word has, under the mask, the sign on
 * bit 15 and exponent and mantissa on 10..4, the top half of an F32
 * pattern.  An exponent field of e makes the F32 exponent e, so every
 * code, subnormals included, is its value times 2^-120, exactly; NaN
 * codes are not (callers look for them first). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
e4m3_words_tiny(__m256i words, __m256 *odd, __m256 *even)
{
    __m256i a = _mm256_and_si256(_mm256_slli_epi16(words, 4), _mm256_set1_epi16((short)0x87F0));
    *odd = _mm256_castsi256_ps(_mm256_and_si256(a, _mm256_set1_epi32((int)0xFFFF0000)));
    *even = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
}

/* 2^120 times the scale of E8M0 code e, for e <= 134 (finite) or NaN's
 * 0xFF: an e4m3_words_tiny value times it is the same real number as the
 * weight times its scale, so one multiplication rounds it as the general
 * decoder's does (exact, but for products that leave the F32 range in
 * both). */
static inline float fp8_factor(uint8_t e)
{
    return v4_fast_scale(e) * 0x1p120f;
}

/* e2m1 codes on bits 31..28 of each lane (anything below) as floats times
 * 2^-126, by integer operations alone: an arithmetic shift right by six
 * puts the sign on bit 31 (copies on 30..25), the exponent bits on 24..23
 * and the mantissa bit on 22, which the mask keeps.  Exponent field e
 * becomes the F32 exponent e, so 0.5 (e = 0) is the subnormal 2^-127 and
 * every code is its value times 2^-126, exactly. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 e2m1_top_tiny(__m256i v)
{
    return _mm256_castsi256_ps(
        _mm256_and_si256(_mm256_srai_epi32(v, 6), _mm256_set1_epi32((int)0x81C00000)));
}

/* 2^126 times the E8M0 scales 2^(e - 127) of each lane, e <= 128 (2^(e -
 * 1): normal, and exact times e2m1_top_tiny's values, subnormal products
 * included). */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 fp4_factors(__m256i e)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(126)), 23));
}

#endif

#endif
