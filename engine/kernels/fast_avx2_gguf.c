/*
 * fast_avx2_gguf.c - GGUF's types read in registers by the AVX2
 * kernels, for decode's products and prefill's panels (contract in
 * fast_avx2.h): every type tome reads (F16, Q8_0, MXFP4, the K-quants
 * Q2_K to Q6_K, IQ4_XS, IQ2_XXS), so a file from any converter runs at
 * the speed of ds4's recipes; AVX-512 takes all but Q8_0 and MXFP4 from
 * here too.  Each value is made with the block decoder's operations in its
 * order (engine/kernels/blocks.c) and each 32 put in the pair order
 * (fast.h's odd and even columns), so the products have the bits of the
 * path that decodes rows into a buffer first; test_gguf_kernels compares
 * them.  That path read these types at a tenth of the speed or less.
 */
#include "engine/kernels/fast_avx2.h"

#include "engine/kernels/blocks.h"

#if defined(__x86_64__)

/* The f16 at p (little-endian, as x86 is) in all eight lanes, by F16C:
 * exact, as the block decoder's v4_f16_to_f32 (a NaN keeps its payload,
 * where that gives the quiet NaN of its sign: a NaN either way), in three
 * instructions where the portable conversion took a dozen and two
 * branches, once per block and row (Q8_0 rows, one thread on a Zen 3:
 * 12.4 to 13.2-13.6 GB/s). */
INLINE __m256 half_splat(const uint8_t *p)
{
    uint16_t h;
    __builtin_memcpy(&h, p, sizeof h);
    return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

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
    __m256 d = half_splat(b);
    q8_pairs16(b + 2, d, &o->lo, &e->lo);
    q8_pairs16(b + 18, d, &o->hi, &e->hi);
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

/* Thirty-two F16 values (64 bytes) in the pair order, sixteen at a time:
 * in each 128-bit lane a byte shuffle puts the odd columns' halves in the
 * low eight bytes and the even ones' in the high, and the quarters are
 * permuted so that one 128-bit half holds the eight odd values and the
 * other the eight even ones, each converted exactly by F16C (as the row
 * decoder converts them). */
INLINE void f16_pairs16(const uint8_t *p, __m256 *o, __m256 *e)
{
    const __m256i split = _mm256_setr_epi8(2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2,
                                           3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13);
    __m256i v = _mm256_permute4x64_epi64(
        _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(const void *)p), split),
        0xD8 /* quarters 0 2 1 3 */);
    *o = _mm256_cvtph_ps(_mm256_castsi256_si128(v));
    *e = _mm256_cvtph_ps(_mm256_extracti128_si256(v, 1));
}

/* The bytes of 32 values of a type of 32-value steps (Q8_0, MXFP4, F16). */
INLINE size_t step_bytes_of(const v4_dtype t)
{
    return t == V4_Q8_0 ? 34 : t == V4_MXFP4 ? 17 : 64;
}

/* The 32 values of type t (Q8_0, MXFP4, F16) at b in the pair order
 * (tables: MXFP4's, v4_fast_mxfp4_bf16). */
INLINE void pairs_32(const v4_dtype t, const uint8_t *b, const uint8_t (*tables)[32], half2 *o,
                     half2 *e)
{
    if (t == V4_Q8_0) {
        q8_0_pairs(b, o, e);
    } else if (t == V4_MXFP4) {
        mxfp4_pairs(b, tables, o, e);
    } else {
        f16_pairs16(b, &o->lo, &e->lo);
        f16_pairs16(b + 32, &o->hi, &e->hi);
    }
}

/* Rows of Q8_0, MXFP4 or F16 (t), in turns, their sums in locals: through
 * acc, which the byte loads may alias as far as C knows, GCC stored every
 * sum back and loaded it again at each block (GGUF decode, one thread on
 * a Zen 3, medians of six interleaved rounds: 5.65 tokens/s that way,
 * 5.72 kept local). */
INLINE void rows_dot_32(const v4_weight *w, const int64_t *row, const float *xp, half2 *acc,
                        const v4_dtype t)
{
    size_t row_bytes = v4_dtype_row_bytes(t, w->cols), step = step_bytes_of(t);
    const uint8_t(*tables)[32] = t == V4_MXFP4 ? v4_fast_mxfp4_bf16() : NULL;
    const uint8_t *p[V4_FAST_ROWS];
    half2 a[V4_FAST_ROWS];
    for (int i = 0; i < V4_FAST_ROWS; i++) {
        p[i] = w->data + (size_t)row[i] * row_bytes;
        a[i] = acc[i];
    }
    for (int64_t k = 0; k < w->cols; k += 32) {
        size_t at = (size_t)(k / 32) * step;
#pragma GCC unroll 8
        for (int i = 0; i < V4_FAST_ROWS; i++) {
            const uint8_t *b = p[i] + at;
            v4_fast_next_rows(b, V4_FAST_ROWS * (int64_t)row_bytes, (int64_t)step);
            half2 o, e;
            pairs_32(t, b, tables, &o, &e);
            pair_step(&a[i], o, e, xp + k);
        }
    }
    for (int i = 0; i < V4_FAST_ROWS; i++) acc[i] = a[i];
}

/* Codes in the pair order.  Thirty-two codes, one a byte, whose 64-bit
 * quarters hold columns 0-7, 16-23 | 8-15, 24-31 (k_quarters of the
 * columns in order): byte `first`, first + 2, + 4 and + 6 of each 128-bit
 * lane, one to each 32-bit lane, are one of the pair order's four vectors
 * (first 1: the odd columns 1..15; 9: 17..31; 0 and 8: the even ones),
 * zero-extended, or with `top` as the top byte over zeros (for an
 * arithmetic shift to sign-extend).  A byte shuffle
 * per eight values, where splitting values made in column order took two
 * shuffles per eight after the conversions. */
INLINE __m256i pair_bytes(__m256i codes, const int first, const int top)
{
#define AT(m)                                                                                      \
    (top ? (int)((uint32_t)(first + 2 * (m)) << 24 | 0xFFFFFFu)                                    \
         : (int)(0xFFFFFF00u | (uint32_t)(first + 2 * (m))))
    const __m256i at = _mm256_setr_epi32(AT(0), AT(1), AT(2), AT(3), AT(0), AT(1), AT(2), AT(3));
#undef AT
    return _mm256_shuffle_epi8(codes, at);
}

/* Unsigned codes (pair_bytes') made mul * q - sub as the block decoder
 * makes each value.  One fused multiply-subtract has the decoder's bits:
 * mul (an f16 times a scale of at most 6 bits) times q (at most 5 bits)
 * needs at most 22 bits, so the decoder's product is exact and only its
 * subtraction rounds (with the multiply and the subtraction apart, 5.7
 * GB/s of Q4_K rows on one Zen 3 thread; fused, 6.5). */
INLINE __m256 k_lanes(__m256i codes, const int first, __m256 mul, __m256 sub)
{
    return _mm256_fmsub_ps(mul, _mm256_cvtepi32_ps(pair_bytes(codes, first, 0)), sub);
}

/* Signed codes (pair_bytes') made mul * q, the decoder's product (and its
 * value: it subtracts a zero). */
INLINE __m256 signed_lanes(__m256i codes, const int first, __m256 mul)
{
    return _mm256_mul_ps(mul,
                         _mm256_cvtepi32_ps(_mm256_srai_epi32(pair_bytes(codes, first, 1), 24)));
}

/* Thirty-two bytes of codes in column order, their quarters as pair_bytes
 * takes them (byte operations on the codes commute with this). */
INLINE __m256i k_quarters(const uint8_t *p)
{
    return _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(const void *)p),
                                    0xD8 /* quarters 0 2 1 3 */);
}

/* Bits [from, from + width) of every byte of v moved to [to, to + width),
 * the others cleared.  The shifts are 16-bit: what they carry across a
 * byte lands outside the bits kept. */
INLINE __m256i byte_bits(__m256i v, const int from, const int to, const int width)
{
    __m256i moved = from > to   ? _mm256_srli_epi16(v, from - to)
                    : from < to ? _mm256_slli_epi16(v, to - from)
                                : v;
    return _mm256_and_si256(moved, _mm256_set1_epi8((char)(((1 << width) - 1) << to)));
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
    __m256 d = half_splat(b);
    __m256 dmin = half_splat(b + 2);
    _mm256_storeu_ps(mul, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(pairs))));
    _mm256_storeu_ps(sub, _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(
                                                  _mm256_cvtepu8_epi32(_mm_srli_si128(pairs, 8)))));
}

/* A Q2_K block's sixteen group factors as its decoder makes them, d times
 * the scale in the low nibble of byte g and dmin times the min in the high
 * one, eight groups at a time. */
INLINE void q2_k_factors(const uint8_t *b, float mul[16], float sub[16])
{
    __m256 d = half_splat(b + 80);
    __m256 dmin = half_splat(b + 82);
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

/* A Q3_K block's sixteen group factors, d * (sc - 32) for its 6-bit
 * scales (low four bits: the nibbles of bytes 96-103, low ones first;
 * top two: bits 2(k / 4) of byte 104 + k % 4), eight at a time. */
INLINE void q3_k_factors(const uint8_t *b, float mul[16])
{
    uint8_t bytes[16] = {0}; /* the 12 bytes of scales, not read past the block */
    __builtin_memcpy(bytes, b + 96, 12);
    __m128i sc = _mm_loadu_si128((const __m128i *)(const void *)bytes), low4 = _mm_set1_epi8(15);
    __m128i low =
        _mm_unpacklo_epi64(_mm_and_si128(sc, low4), _mm_and_si128(_mm_srli_epi16(sc, 4), low4));
    __m128i top =
        _mm_shuffle_epi8(sc, _mm_setr_epi8(8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11));
    top = _mm_and_si128(_mm_srlv_epi32(top, _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
    __m128i scales = _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(top, 4)), _mm_set1_epi8(32));
    __m256 d = half_splat(b + 108);
    for (int h = 0; h < 16; h += 8, scales = _mm_srli_si128(scales, 8))
        _mm256_storeu_ps(mul + h,
                         _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(scales))));
}

/* A Q6_K block's sixteen group factors, d times its int8 scales (bytes
 * 192-207), eight at a time. */
INLINE void q6_k_factors(const uint8_t *b, float mul[16])
{
    __m128i scales = _mm_loadu_si128((const __m128i *)(const void *)(b + 192));
    __m256 d = half_splat(b + 208);
    for (int h = 0; h < 16; h += 8, scales = _mm_srli_si128(scales, 8))
        _mm256_storeu_ps(mul + h,
                         _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(scales))));
}

/* An IQ4_XS block's eight group factors, d * (ls - 32) for its 6-bit
 * scales (low four bits: nibble g of bytes 4-7; top two: bits 2g of the
 * u16 at 2). */
INLINE void iq4_xs_factors(const uint8_t *b, float mul[8])
{
    uint16_t high;
    uint32_t nibbles;
    __builtin_memcpy(&high, b + 2, sizeof high);
    __builtin_memcpy(&nibbles, b + 4, sizeof nibbles);
    __m128i n = _mm_cvtsi32_si128((int)nibbles), low4 = _mm_set1_epi8(15);
    __m128i low =
        _mm_unpacklo_epi8(_mm_and_si128(n, low4), _mm_and_si128(_mm_srli_epi16(n, 4), low4));
    __m256i top = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(high), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
        _mm256_set1_epi32(3));
    __m256i ls = _mm256_or_si256(_mm256_cvtepu8_epi32(low), _mm256_slli_epi32(top, 4));
    _mm256_storeu_ps(mul, _mm256_mul_ps(half_splat(b), _mm256_cvtepi32_ps(_mm256_sub_epi32(
                                                           ls, _mm256_set1_epi32(32)))));
}

/* The codes of columns 32j .. 32j + 31 of a block of type t, in
 * k_quarters' order: unsigned for the types with offsets (has_offsets),
 * signed for the others.  Byte l of a 32-byte run is column l of it.
 * - Q4_K (144 bytes: d, dmin, 12 bytes of factors, 128 of nibbles):
 *   groups 2p and 2p + 1 of 32 are the low and high nibbles of bytes
 *   16 + 32p ...
 * - Q5_K (176 bytes): as Q4_K with the nibbles at 48 and each group j's
 *   fifth bits as bit j of bytes 16-47.
 * - Q2_K (84 bytes: sixteen (scale, min) nibble pairs, then 64 bytes of
 *   codes, f16 d and dmin at 80 and 82): columns 32j.. are bits 2(j % 4)
 *   of bytes 16 + 32(j / 4) ...
 * - Q3_K (110 bytes: 32 bytes of high bits, 64 of codes, 12 of scales,
 *   f16 d at 108): as Q2_K from byte 32, plus 4 where bit j of the high
 *   bytes is set, minus 4.
 * - Q6_K (210 bytes: 128 bytes of low nibbles, 64 of high bit pairs, 16
 *   int8 scales, f16 d): half n = j / 4 of the block, r = j % 4: the low
 *   (r < 2) or high nibbles of bytes 64n + 32(r % 2) ..., bits 2r of
 *   bytes 128 + 32n ... above them, minus 32.
 * - IQ4_XS (136 bytes: f16 d, the scales' top bits, their nibbles, then
 *   16 bytes per group): the low nibbles of bytes 8 + 16j ... are columns
 *   0-15 and the high ones 16-31, each a level of v4_iq4_levels. */
INLINE __m256i codes_of(const v4_dtype t, const uint8_t *b, const int j)
{
    switch (t) {
    case V4_Q4_K:
        return byte_bits(k_quarters(b + 16 + 32 * (j / 2)), 4 * (j % 2), 0, 4);
    case V4_Q5_K:
        return _mm256_or_si256(byte_bits(k_quarters(b + 48 + 32 * (j / 2)), 4 * (j % 2), 0, 4),
                               byte_bits(k_quarters(b + 16), j, 4, 1));
    case V4_Q2_K:
        return byte_bits(k_quarters(b + 16 + 32 * (j / 4)), 2 * (j % 4), 0, 2);
    case V4_Q3_K:
        return _mm256_sub_epi8(
            _mm256_or_si256(byte_bits(k_quarters(b + 32 + 32 * (j / 4)), 2 * (j % 4), 0, 2),
                            byte_bits(k_quarters(b), j, 2, 1)),
            _mm256_set1_epi8(4));
    case V4_Q6_K:
        return _mm256_sub_epi8(
            _mm256_or_si256(
                byte_bits(k_quarters(b + 64 * (j / 4) + 32 * (j % 2)), 4 * ((j % 4) / 2), 0, 4),
                byte_bits(k_quarters(b + 128 + 32 * (j / 4)), 2 * (j % 4), 4, 2)),
            _mm256_set1_epi8(32));
    default: { /* IQ4_XS: the 16 bytes twice, the high half's nibbles shifted down */
        __m256i twice = _mm256_broadcastsi128_si256(
            _mm_loadu_si128((const __m128i *)(const void *)(b + 8 + 16 * j)));
        __m256i nibbles =
            _mm256_and_si256(_mm256_srlv_epi32(twice, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                             _mm256_set1_epi8(15));
        __m256i levels = _mm256_broadcastsi128_si256(
            _mm_loadu_si128((const __m128i *)(const void *)v4_iq4_levels));
        return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(levels, nibbles), 0xD8);
    }
    }
}

/* IQ2_XXS's sign sets as index steps: entry s holds, in byte j, 4 where
 * value j of a point is negative under the 7-bit set s (bit j, and for j
 * = 7 the parity of s, as v4_iq2xxs_signs makes it), else 0.  A load per
 * eight values, where folding the parities and spreading the bits took
 * two dozen instructions per 32. */
#define IQ2_SIGN(s, j) ((uint64_t)((s) >> (j)&1) << (8 * (j) + 2))
#define IQ2_PARITY(s)                                                                              \
    ((uint64_t)(((s) ^ (s) >> 1 ^ (s) >> 2 ^ (s) >> 3 ^ (s) >> 4 ^ (s) >> 5 ^ (s) >> 6) & 1) << 58)
#define IQ2_STEPS(s)                                                                               \
    (IQ2_SIGN(s, 0) | IQ2_SIGN(s, 1) | IQ2_SIGN(s, 2) | IQ2_SIGN(s, 3) | IQ2_SIGN(s, 4) |          \
     IQ2_SIGN(s, 5) | IQ2_SIGN(s, 6) | IQ2_PARITY(s))
#define IQ2_STEPS4(s)  IQ2_STEPS(s), IQ2_STEPS(s + 1), IQ2_STEPS(s + 2), IQ2_STEPS(s + 3)
#define IQ2_STEPS16(s) IQ2_STEPS4(s), IQ2_STEPS4(s + 4), IQ2_STEPS4(s + 8), IQ2_STEPS4(s + 12)
static const uint64_t iq2_sign_steps[128] = {
    IQ2_STEPS16(0),  IQ2_STEPS16(16), IQ2_STEPS16(32), IQ2_STEPS16(48),
    IQ2_STEPS16(64), IQ2_STEPS16(80), IQ2_STEPS16(96), IQ2_STEPS16(112),
};
#undef IQ2_STEPS16
#undef IQ2_STEPS4
#undef IQ2_STEPS
#undef IQ2_PARITY
#undef IQ2_SIGN

/* Four 8-byte entries, entry j from base + 8 * index[j], in k_quarters'
 * order (entries 0, 2 | 1, 3): built in registers, as a 32-byte load of
 * them stored on the stack waited on the four stores (half the rate). */
INLINE __m256i iq2_quarters(const uint8_t *base, const unsigned index[4])
{
#define ENTRY(j) _mm_loadl_epi64((const __m128i *)(const void *)(base + 8 * index[j]))
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi64(ENTRY(0), ENTRY(2))),
                                   _mm_unpacklo_epi64(ENTRY(1), ENTRY(3)), 1);
#undef ENTRY
}

/* Thirty-two IQ2_XXS values of a group (eight bytes at p: four codebook
 * indices, then a u32 of four 7-bit sign sets and the 4-bit scale) as
 * indices into iq2_values' eight, in k_quarters' order (the points of
 * columns 0-7, 16-23 | 8-15, 24-31): each point's level (8, 25 or 43:
 * bits 4-5 give 0, 1, 2), plus 4 where the value is negative. */
INLINE __m256i iq2_xxs_codes(const uint8_t *p, const uint8_t *grid, uint32_t aux)
{
    const unsigned points[4] = {p[0], p[1], p[2], p[3]},
                   sets[4] = {aux & 127, aux >> 7 & 127, aux >> 14 & 127, aux >> 21 & 127};
    __m256i level =
        _mm256_and_si256(_mm256_srli_epi16(iq2_quarters(grid, points), 4), _mm256_set1_epi8(3));
    return _mm256_or_si256(level, iq2_quarters((const uint8_t *)iq2_sign_steps, sets));
}

/* An IQ2_XXS block's eight group factors as its decoder makes them, d *
 * (0.5 + ls) * 0.25 with ls the top four bits of each group's sign word
 * (bits 60-63 of its eight bytes), eight at a time. */
INLINE void iq2_xxs_factors(const uint8_t *b, float mul[8])
{
    __m256i first = _mm256_loadu_si256((const __m256i *)(const void *)(b + 2)),
            last = _mm256_loadu_si256((const __m256i *)(const void *)(b + 34));
    /* groups 0, 4, 1, 5, 2, 6, 3, 7 in the 32-bit lanes, then in order */
    __m256i ls =
        _mm256_blend_epi32(_mm256_srli_epi64(first, 60), _mm256_srli_epi64(last, 28), 0xAA);
    ls = _mm256_permutevar8x32_epi32(ls, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    __m256 f = _mm256_add_ps(_mm256_set1_ps(0.5f), _mm256_cvtepi32_ps(ls));
    _mm256_storeu_ps(mul, _mm256_mul_ps(_mm256_mul_ps(half_splat(b), f), _mm256_set1_ps(0.25f)));
}

/* The eight values an IQ2_XXS group's indices pick, mul times 8, 25, 43,
 * (unused), -8, -25, -43, (unused): the block decoder's one operation,
 * mul * (+-point), whose products are exact (mul is an f16 times 0.5 +
 * a 4-bit scale times 0.25, 16 bits; a level, 6), so each value has its
 * bits however it is made. */
INLINE __m256 iq2_values(__m256 mul)
{
    return _mm256_mul_ps(mul, _mm256_setr_ps(8, 25, 43, 0, -8, -25, -43, 0));
}

/* Eight IQ2_XXS values in the pair order (pair_bytes' `first`), each
 * picked from the group's eight by its index: a shuffle and a permute
 * per eight, where a conversion from signed bytes took four operations. */
INLINE __m256 iq2_lanes(__m256i codes, const int first, __m256 values)
{
    return _mm256_permutevar8x32_ps(values, pair_bytes(codes, first, 0));
}

/* A block's group factors, made once per block, a vector at a time:
 * sixteen of 16 columns (Q2_K, Q3_K, Q6_K: group16) or eight of 32, with
 * offsets (sub) for the types that have them (has_offsets). */
typedef struct block_factors {
    float mul[16], sub[16];
} block_factors;

INLINE int group16(const v4_dtype t)
{
    return t == V4_Q2_K || t == V4_Q3_K || t == V4_Q6_K;
}

INLINE int has_offsets(const v4_dtype t)
{
    return t == V4_Q4_K || t == V4_Q5_K || t == V4_Q2_K;
}

INLINE void factors_of(const v4_dtype t, const uint8_t *b, block_factors *f)
{
    switch (t) {
    case V4_Q4_K:
    case V4_Q5_K:
        k_factors(b, f->mul, f->sub);
        break;
    case V4_Q2_K:
        q2_k_factors(b, f->mul, f->sub);
        break;
    case V4_Q3_K:
        q3_k_factors(b, f->mul);
        break;
    case V4_Q6_K:
        q6_k_factors(b, f->mul);
        break;
    case V4_IQ4_XS:
        iq4_xs_factors(b, f->mul);
        break;
    default:
        iq2_xxs_factors(b, f->mul);
        break;
    }
}

/* Columns 32j .. 32j + 31 of a 256-value block b of type t, its factors
 * f, in the pair order (o: the odd columns, e: the even ones).  IQ2_XXS
 * (66-byte blocks of 256: f16 d, then eight bytes per group of 32) picks
 * its values by index (grid: its 256 points, 8 bytes each). */
INLINE void block_pairs(const v4_dtype t, const uint8_t *b, const block_factors *f, const int j,
                        const uint8_t *grid, half2 *o, half2 *e)
{
    if (t == V4_IQ2_XXS) {
        const uint8_t *p = b + 2 + 8 * j;
        uint32_t aux;
        __builtin_memcpy(&aux, p + 4, sizeof aux); /* little-endian, as x86 is */
        __m256 values = iq2_values(_mm256_set1_ps(f->mul[j]));
        __m256i codes = iq2_xxs_codes(p, grid, aux);
        *o = (half2){iq2_lanes(codes, 1, values), iq2_lanes(codes, 9, values)};
        *e = (half2){iq2_lanes(codes, 0, values), iq2_lanes(codes, 8, values)};
        return;
    }
    /* the factors of columns 32j .. 32j + 15 (a) and 32j + 16 .. (z) */
    const int a = group16(t) ? 2 * j : j, z = group16(t) ? 2 * j + 1 : j;
    __m256i codes = codes_of(t, b, j);
    __m256 mul_a = _mm256_set1_ps(f->mul[a]), mul_b = _mm256_set1_ps(f->mul[z]);
    if (has_offsets(t)) {
        __m256 sub_a = _mm256_set1_ps(f->sub[a]), sub_b = _mm256_set1_ps(f->sub[z]);
        *o = (half2){k_lanes(codes, 1, mul_a, sub_a), k_lanes(codes, 9, mul_b, sub_b)};
        *e = (half2){k_lanes(codes, 0, mul_a, sub_a), k_lanes(codes, 8, mul_b, sub_b)};
    } else {
        *o = (half2){signed_lanes(codes, 1, mul_a), signed_lanes(codes, 9, mul_b)};
        *e = (half2){signed_lanes(codes, 0, mul_a), signed_lanes(codes, 8, mul_b)};
    }
}

/* Rows of a type of 256-value blocks (t), rows in twos taking turns: a row's sums
 * are chains of FMAs, which one row alone ran at their latency.  The
 * columns of a block are unrolled, so each code shift and factor is fixed
 * where it is used and Q4_K's two nibble groups share a load (4.5 to 5.7
 * GB/s of Q4_K rows on one Zen 3 thread).  IQ2_XXS, with its factors a
 * vector at a time, its signs from a table and its values picked by index
 * (not converted): 1.4 to 1.9 GB/s (the best of six rounds of 64 MB; that
 * machine was noisy). */
INLINE void rows_dot_256(const v4_weight *w, const int64_t *row, const float *xp, half2 *acc,
                         const v4_dtype t)
{
    size_t row_bytes = v4_dtype_row_bytes(t, w->cols), block = v4_dtype_row_bytes(t, 256);
    const uint8_t *grid = t == V4_IQ2_XXS ? v4_iq2xxs_point(0) : NULL;
    for (int i = 0; i < V4_FAST_ROWS; i += 2) {
        const uint8_t *b[2] = {w->data + (size_t)row[i] * row_bytes,
                               w->data + (size_t)row[i + 1] * row_bytes};
        half2 a[2] = {acc[i], acc[i + 1]};
        for (int64_t k = 0; k < w->cols; k += 256, b[0] += block, b[1] += block) {
            block_factors f[2];
            for (int r = 0; r < 2; r++) {
                v4_fast_next_rows(b[r], V4_FAST_ROWS * (int64_t)row_bytes, (int64_t)block);
                factors_of(t, b[r], &f[r]);
            }
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
#pragma GCC unroll 2
                for (int r = 0; r < 2; r++) {
                    half2 o, e;
                    block_pairs(t, b[r], &f[r], j, grid, &o, &e);
                    pair_step(&a[r], o, e, xp + k + 32 * j);
                }
        }
        acc[i] = a[0], acc[i + 1] = a[1];
    }
}

/* A row of a type of 256-value blocks (t) into out in the pair order's
 * layout. */
INLINE void panel_row_256(const uint8_t *b, int64_t cols, float *out, const v4_dtype t)
{
    const uint8_t *grid = t == V4_IQ2_XXS ? v4_iq2xxs_point(0) : NULL;
    size_t block = v4_dtype_row_bytes(t, 256);
    for (int64_t k = 0; k < cols; k += 256, b += block) {
        block_factors f;
        factors_of(t, b, &f);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            half2 o, e;
            block_pairs(t, b, &f, j, grid, &o, &e);
            pair_store(out + k + 32 * j, o, e);
        }
    }
}

/* The types of 256-value blocks, each a loop of its own (t a constant
 * where rows_dot_256 and panel_row_256 are inlined). */
#define EACH_256(X)                                                                                \
    X(V4_Q4_K) X(V4_Q5_K) X(V4_Q2_K) X(V4_Q3_K) X(V4_Q6_K) X(V4_IQ4_XS) X(V4_IQ2_XXS)

KERNEL void v4_avx2_gguf_rows_dot(const v4_weight *w, const int64_t *row, const float *xp,
                                  half2 *acc)
{
    switch (w->dtype) {
    case V4_Q8_0:
        rows_dot_32(w, row, xp, acc, V4_Q8_0);
        break;
    case V4_MXFP4:
        rows_dot_32(w, row, xp, acc, V4_MXFP4);
        break;
    case V4_F16:
        rows_dot_32(w, row, xp, acc, V4_F16);
        break;
#define ROWS(T)                                                                                    \
    case T:                                                                                        \
        rows_dot_256(w, row, xp, acc, T);                                                          \
        break;
        EACH_256(ROWS)
#undef ROWS
    default:
        break; /* not a GGUF type */
    }
}

/* A row of Q8_0, MXFP4 or F16 (t) into out in the pair order's layout. */
INLINE void panel_row_32(const uint8_t *p, int64_t cols, float *out, const v4_dtype t)
{
    const uint8_t(*tables)[32] = t == V4_MXFP4 ? v4_fast_mxfp4_bf16() : NULL;
    for (int64_t k = 0; k < cols; k += 32, p += step_bytes_of(t)) {
        half2 o, e;
        pairs_32(t, p, tables, &o, &e);
        pair_store(out + k, o, e);
    }
}

/* A panel of rows a block at a time, with the decode loops' block
 * decoders: the general decoder and a permutation after it had taken 10%
 * of GGUF prefill's samples (Q8_0 and MXFP4), 40% of those outside the
 * tiles. */
KERNEL void v4_avx2_gguf_panel(const v4_weight *w, int64_t r, int nr, float *panel)
{
    size_t row_bytes = v4_dtype_row_bytes(w->dtype, w->cols);
    for (int i = 0; i < nr; i++) {
        const uint8_t *p = w->data + (size_t)(r + i) * row_bytes;
        float *out = panel + (size_t)i * w->cols;
        switch (w->dtype) {
        case V4_Q8_0:
            panel_row_32(p, w->cols, out, V4_Q8_0);
            break;
        case V4_MXFP4:
            panel_row_32(p, w->cols, out, V4_MXFP4);
            break;
        case V4_F16:
            panel_row_32(p, w->cols, out, V4_F16);
            break;
#define PANEL(T)                                                                                   \
    case T:                                                                                        \
        panel_row_256(p, w->cols, out, T);                                                         \
        break;
            EACH_256(PANEL)
#undef PANEL
        default:
            break; /* not a GGUF type */
        }
    }
}

#undef EACH_256
#endif
