/*
 * avx2_formats.h - V4's number formats decoded eight at a time with AVX2,
 * exactly (private to engine/kernels/: the exact row decoders and the
 * exact decode GEMV share them).  V4_HAVE_X86 says whether they exist.
 */
#ifndef TOME_ENGINE_KERNELS_AVX2_FORMATS_H
#define TOME_ENGINE_KERNELS_AVX2_FORMATS_H

#include "engine/internal.h"

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

#endif

#endif
