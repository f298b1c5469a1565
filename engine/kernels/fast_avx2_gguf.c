/*
 * fast_avx2_gguf.c - GGUF's block types read in registers by the AVX2
 * decode kernel (contract in fast_avx2.h): the types of ds4's published
 * recipes and of tome-convert's lossless one (Q8_0, MXFP4, Q4_K, Q2_K,
 * IQ2_XXS).  Each value is made with the block decoder's operations in
 * its order (engine/kernels/blocks.c) and each 32 put in the pair order
 * (fast.h's odd and even columns), so the products have the bits of
 * the path that decodes rows into a buffer first; test_gguf_kernels
 * compares them.
 */
#include "engine/kernels/fast_avx2.h"

#include "engine/kernels/blocks.h"

#if defined(__x86_64__)

/* Sixteen Q8_0 codes (Q8_0 blocks hold an f16 scale d, then 32 int8
 * codes) times d, split for the pair order: sign-extended to 16 bits, the
 * odd ones are the top halves of the 32-bit lanes and the even ones the
 * bottom halves (a multiply-add of the halves by 1 and 0 takes these).
 * Each value d * q is exact in F32, as the block decoder makes it. */
INLINE void q8_pairs16(const uint8_t *q, __m256 d, __m256 *o, __m256 *e)
{
    __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)q));
    *o = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_srai_epi32(v, 16)));
    *e = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_madd_epi16(v, _mm256_set1_epi32(1))));
}

/* One Q8_0 block (34 bytes) in the pair order. */
INLINE void q8_0_pairs(const uint8_t *b, half2 *o, half2 *e)
{
    __m256 d = _mm256_set1_ps(v4_f16_to_f32((uint16_t)(b[0] | b[1] << 8)));
    q8_pairs16(b + 2, d, &o->lo, &e->lo);
    q8_pairs16(b + 18, d, &o->hi, &e->hi);
}

/* Q8_0 rows, their sums in locals: through acc, which the byte loads may
 * alias as far as C knows, GCC stored every sum back and loaded it again
 * at each block (GGUF decode, one thread on a Zen 3, medians of six
 * interleaved rounds: 5.65 tokens/s that way, 5.72 kept local). */
INLINE void rows_dot_q8_0(const v4_weight *w, const int64_t *row, const float *xp, half2 *acc)
{
    size_t row_bytes = v4_dtype_row_bytes(w->dtype, w->cols);
    const uint8_t *p[V4_FAST_ROWS];
    half2 a[V4_FAST_ROWS];
    for (int i = 0; i < V4_FAST_ROWS; i++) {
        p[i] = w->data + (size_t)row[i] * row_bytes;
        a[i] = acc[i];
    }
    for (int64_t k = 0; k < w->cols; k += 32) {
        size_t at = (size_t)(k / 32) * 34;
#pragma GCC unroll 8
        for (int i = 0; i < V4_FAST_ROWS; i++) {
            const uint8_t *b = p[i] + at;
            v4_fast_next_rows(b, V4_FAST_ROWS * (int64_t)row_bytes, 34);
            half2 o, e;
            q8_0_pairs(b, &o, &e);
            pair_step(&a[i], o, e, xp + k);
        }
    }
    for (int i = 0; i < V4_FAST_ROWS; i++) acc[i] = a[i];
}

/* One MXFP4 block (17 bytes: an E8M0 scale, 16 bytes of codes, value j in
 * byte j's low nibble and value j + 16 in its high one) in the pair order,
 * by tables (nibbles_bf16) that hold each level times the scale as the
 * block decoder multiplies them: lane l takes columns 2l + 1 and 2l, from
 * low nibbles for l < 8 and high ones beyond, so bytes 0-7 then 8-15 in
 * each half leave the even columns in the bottom words and the odd ones
 * in the top words.  Any scale. */
INLINE void mxfp4_pairs(const uint8_t *b, const uint8_t (*tables)[32], half2 *o, half2 *e)
{
    const __m256i order = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                           11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
    __m256i lo, hi;
    nibbles_bf16(b + 1, tables[b[0]], order, &lo, &hi);
    *e = (half2){bf16_bottom(lo), bf16_bottom(hi)};
    *o = (half2){bf16_top(lo), bf16_top(hi)};
}

/* MXFP4 rows, in turns. */
INLINE void rows_dot_mxfp4(const v4_weight *w, const int64_t *row, const float *xp, half2 *acc)
{
    size_t row_bytes = v4_dtype_row_bytes(w->dtype, w->cols);
    const uint8_t(*tables)[32] = v4_fast_mxfp4_bf16();
    const uint8_t *p[V4_FAST_ROWS];
    half2 a[V4_FAST_ROWS];
    for (int i = 0; i < V4_FAST_ROWS; i++) {
        p[i] = w->data + (size_t)row[i] * row_bytes;
        a[i] = acc[i];
    }
    for (int64_t k = 0; k < w->cols; k += 32) {
#pragma GCC unroll 8
        for (int i = 0; i < V4_FAST_ROWS; i++) {
            const uint8_t *b = p[i] + (size_t)(k / 32) * 17;
            v4_fast_next_rows(b, V4_FAST_ROWS * (int64_t)row_bytes, 17);
            half2 o, e;
            mxfp4_pairs(b, tables, &o, &e);
            pair_step(&a[i], o, e, xp + k);
        }
    }
    for (int i = 0; i < V4_FAST_ROWS; i++) acc[i] = a[i];
}

/* K-quant codes in the pair order.  Thirty-two codes, one a byte, whose
 * 64-bit quarters hold columns 0-7, 16-23 | 8-15, 24-31 (k_quarters of
 * the columns in order): byte `first`, first + 2, + 4 and + 6 of each
 * 128-bit lane, zero-extended into 32-bit lanes, are one of the pair
 * order's four vectors (first 1: the odd columns 1..15; 9: 17..31; 0 and
 * 8: the even ones), made mul * q - sub as the block decoder makes each
 * value.  A byte shuffle per eight values, where splitting values made in
 * column order took two shuffles per eight after the conversions. */
INLINE __m256 k_lanes(__m256i codes, const int first, __m256 mul, __m256 sub)
{
    const __m256i at = _mm256_setr_epi8(first, -1, -1, -1, first + 2, -1, -1, -1, first + 4, -1, -1,
                                        -1, first + 6, -1, -1, -1, first, -1, -1, -1, first + 2, -1,
                                        -1, -1, first + 4, -1, -1, -1, first + 6, -1, -1, -1);
    __m256 q = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(codes, at));
    return _mm256_sub_ps(_mm256_mul_ps(mul, q), sub);
}

/* Thirty-two bytes of codes in column order, their quarters as k_lanes
 * takes them (byte operations on the codes commute with this). */
INLINE __m256i k_quarters(const uint8_t *p)
{
    return _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(const void *)p),
                                    0xD8 /* quarters 0 2 1 3 */);
}

/* Thirty-two codes (k_quarters' order) into a row's accumulators, columns
 * 0-15 with the factors (mul_a, sub_a), 16-31 with (mul_b, sub_b). */
INLINE void k_step(half2 *acc, __m256i codes, __m256 mul_a, __m256 sub_a, __m256 mul_b,
                   __m256 sub_b, const float *xp)
{
    half2 o = {k_lanes(codes, 1, mul_a, sub_a), k_lanes(codes, 9, mul_b, sub_b)};
    half2 e = {k_lanes(codes, 0, mul_a, sub_a), k_lanes(codes, 8, mul_b, sub_b)};
    pair_step(acc, o, e, xp);
}

/* A Q4_K block's eight group factors: v4_k_pairs' values (the same
 * products d * scale and dmin * min), its 6-bit pairs unpacked four at a
 * time in 32-bit words and converted eight at a time: the scalar loop took
 * a third of a Q4_K product's time. */
INLINE void k_factors(const uint8_t *b, float mul[8], float sub[8])
{
    const uint32_t six = 0x3f3f3f3f, four = 0x0f0f0f0f, two = 0x03030303;
    uint32_t u[3]; /* the 12 bytes of pairs: scales 0-3, mins 0-3, low nibbles of 4-7 */
    __builtin_memcpy(u, b + 4, sizeof u);
    __m128i pairs =
        _mm_setr_epi32((int)(u[0] & six), (int)((u[2] & four) | ((u[0] >> 6) & two) << 4),
                       (int)(u[1] & six), (int)(((u[2] >> 4) & four) | ((u[1] >> 6) & two) << 4));
    __m256 d = _mm256_set1_ps(v4_f16_to_f32((uint16_t)(b[0] | b[1] << 8)));
    __m256 dmin = _mm256_set1_ps(v4_f16_to_f32((uint16_t)(b[2] | b[3] << 8)));
    _mm256_storeu_ps(mul, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(pairs))));
    _mm256_storeu_ps(sub, _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(
                                                  _mm256_cvtepu8_epi32(_mm_srli_si128(pairs, 8)))));
}

/* A Q2_K block's sixteen group factors as its decoder makes them, d times
 * the scale in the low nibble of byte g and dmin times the min in the high
 * one, eight groups at a time. */
INLINE void q2_k_factors(const uint8_t *b, float mul[16], float sub[16])
{
    __m256 d = _mm256_set1_ps(v4_f16_to_f32((uint16_t)(b[80] | b[81] << 8)));
    __m256 dmin = _mm256_set1_ps(v4_f16_to_f32((uint16_t)(b[82] | b[83] << 8)));
    __m128i pairs = _mm_loadu_si128((const __m128i *)(const void *)b), low4 = _mm_set1_epi8(15);
    __m128i scales = _mm_and_si128(pairs, low4),
            mins = _mm_and_si128(_mm_srli_epi16(pairs, 4), low4);
    for (int h = 0; h < 16; h += 8) {
        _mm256_storeu_ps(mul + h,
                         _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(scales))));
        _mm256_storeu_ps(sub + h,
                         _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(mins))));
        scales = _mm_srli_si128(scales, 8), mins = _mm_srli_si128(mins, 8);
    }
}

/* The codes of columns 16g .. 16g + 31 (g even) of a block of type t, in
 * k_quarters' order.  Q4_K (144-byte blocks of 256: the group factors, then
 * 128 bytes of nibbles, groups 2p and 2p + 1 of 32 in the low and high
 * nibbles of bytes 32p .. 32p + 31); Q2_K (84-byte blocks: sixteen (scale,
 * min) nibble pairs, 64 bytes of 2-bit codes, f16 d and dmin at 80 and
 * 82; groups 8n + 2j and 8n + 2j + 1 of 16 are bits 2j..2j+1 of bytes 32n
 * .. 32n + 31, so each shift of the 32 bytes gives the next 32 columns). */
INLINE __m256i k_codes(const v4_dtype t, const uint8_t *b, int g)
{
    if (t == V4_Q4_K) {
        __m256i bytes = k_quarters(b + 16 + 32 * (g / 4));
        return _mm256_and_si256(g % 4 ? _mm256_srli_epi16(bytes, 4) : bytes, _mm256_set1_epi8(15));
    }
    return _mm256_and_si256(_mm256_srli_epi16(k_quarters(b + 16 + 32 * (g / 8)), g % 8),
                            _mm256_set1_epi8(3));
}

/* Q4_K or Q2_K rows (t), rows in twos taking turns: a row's sums are
 * chains of FMAs, which one row alone ran at their latency.  Each block's
 * factors (eight of 32 columns or sixteen of 16) are made first, a vector
 * at a time. */
INLINE void rows_dot_k(const v4_weight *w, const int64_t *row, const float *xp, half2 *acc,
                       const v4_dtype t)
{
    size_t row_bytes = v4_dtype_row_bytes(t, w->cols), block = t == V4_Q4_K ? 144 : 84;
    const int per = t == V4_Q4_K ? 2 : 1; /* sixteen columns per factor index */
    for (int i = 0; i < V4_FAST_ROWS; i += 2) {
        const uint8_t *b[2] = {w->data + (size_t)row[i] * row_bytes,
                               w->data + (size_t)row[i + 1] * row_bytes};
        half2 a[2] = {acc[i], acc[i + 1]};
        for (int64_t k = 0; k < w->cols; k += 256, b[0] += block, b[1] += block) {
            float mul[2][16], sub[2][16];
            for (int r = 0; r < 2; r++) {
                v4_fast_next_rows(b[r], V4_FAST_ROWS * (int64_t)row_bytes, (int64_t)block);
                if (t == V4_Q4_K)
                    k_factors(b[r], mul[r], sub[r]);
                else
                    q2_k_factors(b[r], mul[r], sub[r]);
            }
            for (int g = 0; g < 16; g += 2)
#pragma GCC unroll 2
                for (int r = 0; r < 2; r++) {
                    int f = g / per, f2 = (g + 1) / per;
                    k_step(&a[r], k_codes(t, b[r], g), _mm256_set1_ps(mul[r][f]),
                           _mm256_set1_ps(sub[r][f]), _mm256_set1_ps(mul[r][f2]),
                           _mm256_set1_ps(sub[r][f2]), xp + k + 16 * g);
                }
        }
        acc[i] = a[0], acc[i + 1] = a[1];
    }
}

/* Thirty-two IQ2_XXS values of a group (eight bytes at p: four codebook
 * indices, then a u32 of four 7-bit sign sets and the 4-bit scale) as
 * signed bytes in k_quarters' order: the points of columns 0-7, 16-23 |
 * 8-15, 24-31, each value negated where its sign bit (the eighth of each
 * set makes the count of negatives even) is set. */
INLINE __m256i iq2_xxs_codes(const uint8_t *p, const uint8_t *grid, uint32_t aux)
{
    /* the four 7-bit sets a byte each, and each byte's parity as its top
     * bit (the folds reach bit 0 from bits 1-7 of the same byte only) */
    uint32_t sets =
        (aux & 127) | (aux << 1 & 127u << 8) | (aux << 2 & 127u << 16) | (aux << 3 & 127u << 24);
    uint32_t fold = sets ^ sets >> 4;
    fold ^= fold >> 2;
    fold ^= fold >> 1;
    uint32_t signs = sets | (fold & 0x01010101u) << 7;
    /* the points from registers: built on the stack, the 32-byte load
     * waited on four 8-byte stores (and ran at half the old loop's rate) */
#define POINT(j) _mm_loadl_epi64((const __m128i *)(const void *)(grid + 8 * p[j]))
    __m256i v =
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi64(POINT(0), POINT(2))),
                                _mm_unpacklo_epi64(POINT(1), POINT(3)), 1);
#undef POINT
    /* each byte's sign byte (columns c / 8), then its bit (c % 8) */
    const __m256i which = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1,
                                           1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit =
        _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16,
                         32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
    __m256i neg = _mm256_shuffle_epi8(_mm256_set1_epi32((int)signs), which);
    neg = _mm256_cmpeq_epi8(_mm256_and_si256(neg, bit), bit);
    return _mm256_sub_epi8(_mm256_xor_si256(v, neg), neg);
}

/* k_lanes for signed byte codes: byte first, first + 2, ... of each lane
 * into the top byte of a 32-bit lane and shifted back with its sign,
 * times mul (the block decoder's one operation: mul * (+-point)). */
INLINE __m256 iq2_lanes(__m256i codes, const int first, __m256 mul)
{
    const __m256i at = _mm256_setr_epi8(
        -1, -1, -1, first, -1, -1, -1, first + 2, -1, -1, -1, first + 4, -1, -1, -1, first + 6, -1,
        -1, -1, first, -1, -1, -1, first + 2, -1, -1, -1, first + 4, -1, -1, -1, first + 6);
    __m256i q = _mm256_srai_epi32(_mm256_shuffle_epi8(codes, at), 24);
    return _mm256_mul_ps(mul, _mm256_cvtepi32_ps(q));
}

/* IQ2_XXS rows (66-byte blocks of 256: f16 d, then eight bytes per group
 * of 32); the group's factor is d * (0.5 + ls) * 0.25; rows in twos
 * taking turns, as rows_dot_k's. */
INLINE void rows_dot_iq2_xxs(const v4_weight *w, const int64_t *row, const float *xp, half2 *acc)
{
    size_t row_bytes = v4_dtype_row_bytes(w->dtype, w->cols);
    const uint8_t *grid = v4_iq2xxs_point(0); /* the 256 points, 8 bytes each */
    for (int i = 0; i < V4_FAST_ROWS; i += 2) {
        const uint8_t *b[2] = {w->data + (size_t)row[i] * row_bytes,
                               w->data + (size_t)row[i + 1] * row_bytes};
        half2 a[2] = {acc[i], acc[i + 1]};
        for (int64_t k = 0; k < w->cols; k += 256, b[0] += 66, b[1] += 66) {
            float d[2];
            for (int r = 0; r < 2; r++) {
                v4_fast_next_rows(b[r], V4_FAST_ROWS * (int64_t)row_bytes, 66);
                d[r] = v4_f16_to_f32((uint16_t)(b[r][0] | b[r][1] << 8));
            }
            for (int g = 0; g < 8; g++)
#pragma GCC unroll 2
                for (int r = 0; r < 2; r++) {
                    const uint8_t *p = b[r] + 2 + 8 * g;
                    uint32_t aux;
                    __builtin_memcpy(&aux, p + 4, sizeof aux); /* little-endian, as x86 is */
                    __m256 m = _mm256_set1_ps(d[r] * (0.5f + (float)(aux >> 28)) * 0.25f);
                    __m256i codes = iq2_xxs_codes(p, grid, aux);
                    half2 o = {iq2_lanes(codes, 1, m), iq2_lanes(codes, 9, m)};
                    half2 e = {iq2_lanes(codes, 0, m), iq2_lanes(codes, 8, m)};
                    pair_step(&a[r], o, e, xp + k + 32 * g);
                }
        }
        acc[i] = a[0], acc[i + 1] = a[1];
    }
}

int v4_avx2_gguf_in_registers(v4_dtype t)
{
    return t == V4_Q8_0 || t == V4_MXFP4 || t == V4_Q4_K || t == V4_Q2_K || t == V4_IQ2_XXS;
}

KERNEL void v4_avx2_gguf_rows_dot(const v4_weight *w, const int64_t *row, const float *xp,
                                  half2 *acc)
{
    switch (w->dtype) {
    case V4_Q8_0:
        rows_dot_q8_0(w, row, xp, acc);
        break;
    case V4_MXFP4:
        rows_dot_mxfp4(w, row, xp, acc);
        break;
    case V4_Q4_K:
        rows_dot_k(w, row, xp, acc, V4_Q4_K);
        break;
    case V4_Q2_K:
        rows_dot_k(w, row, xp, acc, V4_Q2_K);
        break;
    default:
        rows_dot_iq2_xxs(w, row, xp, acc);
        break;
    }
}

/* A panel of Q8_0 or MXFP4 rows, a block at a time, with the decode
 * loops' block decoders:
 * the general decoder and a permutation after it had taken 10% of GGUF
 * prefill's samples, 40% of those outside the tiles. */
KERNEL void v4_avx2_gguf_panel(const v4_weight *w, int64_t r, int nr, float *panel)
{
    size_t row_bytes = v4_dtype_row_bytes(w->dtype, w->cols);
    size_t block = w->dtype == V4_MXFP4 ? 17 : 34;
    const uint8_t(*tables)[32] = v4_fast_mxfp4_bf16();
    for (int i = 0; i < nr; i++) {
        const uint8_t *p = w->data + (size_t)(r + i) * row_bytes;
        float *out = panel + (size_t)i * w->cols;
        for (int64_t k = 0; k < w->cols; k += 32) {
            half2 o, e;
            if (w->dtype == V4_MXFP4)
                mxfp4_pairs(p + (size_t)(k / 32) * block, tables, &o, &e);
            else
                q8_0_pairs(p + (size_t)(k / 32) * block, &o, &e);
            pair_store(out + k, o, e);
        }
    }
}

#endif
