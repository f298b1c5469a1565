/*
 * fast_avx2.c - the fast kernels (fast.h's order) with AVX2 and FMA.
 *
 * The sixteen partial sums of one dot product live in two ymm registers
 * (lanes 0-7 and 8-15), which keeps the order, and so the bits, of the
 * AVX-512 and scalar kernels.  With sixteen registers the prefill tile is
 * 2 rows x 3 tokens (12 accumulators), run over the 4 x 6 tile in up to
 * four passes.  Compiled for any x86-64 and chosen at run time (fast.c).
 */
#include "engine/kernels/fast_avx2.h"

#include "engine/kernels/blocks.h"

#if defined(__x86_64__)
#include <math.h>

/* Eight e4m3 bytes as floats, exactly (the f16 trick of fast_avx512.c). */
INLINE __m256 fp8x8(const uint8_t *p, __m256 scale)
{
    __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)p));
    __m128i mag = _mm_and_si128(b, _mm_set1_epi16(0x7F));
    __m128i sign = _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8);
    __m256 v = _mm256_mul_ps(_mm256_cvtph_ps(_mm_or_si128(_mm_slli_epi16(mag, 7), sign)),
                             _mm256_set1_ps(256.0f));
    __m256i nan = _mm256_cvtepi16_epi32(_mm_cmpeq_epi16(mag, _mm_set1_epi16(0x7F)));
    v = _mm256_blendv_ps(v, _mm256_set1_ps(NAN), _mm256_castsi256_ps(nan));
    return _mm256_mul_ps(v, scale);
}

/* Eight e2m1 codes from four bytes (low nibble first): the magnitude by
 * table, the sign from bit 3. */
INLINE __m256 fp4x8(const uint8_t *p, __m256 scale)
{
    uint32_t four;
    __builtin_memcpy(&four, p, 4);
    __m128i b = _mm_cvtsi32_si128((int)four);
    __m128i lo = _mm_and_si128(b, _mm_set1_epi8(15));
    __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
    __m256i codes = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
    __m256 mag = _mm256_permutevar8x32_ps(_mm256_loadu_ps(v4_e2m1_values), codes);
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(codes, _mm256_set1_epi32(8)), 28);
    return _mm256_mul_ps(_mm256_or_ps(mag, _mm256_castsi256_ps(sign)), scale);
}

INLINE __m256 bf16x8(const uint8_t *p)
{
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* Weights k .. k+15 of row `row`, decoded. */
INLINE half2 decode16(const v4_weight *w, int64_t row, int64_t k)
{
    half2 h;
    switch (w->dtype) {
    case V4_F8_E4M3: {
        const uint8_t *p = w->data + row * w->cols + k;
        __m256 s = _mm256_set1_ps(
            v4_fast_scale(w->scale[(row / V4_FP8_BLOCK) * w->scale_stride + k / V4_FP8_BLOCK]));
        h.lo = fp8x8(p, s);
        h.hi = fp8x8(p + 8, s);
        break;
    }
    case V4_I8: {
        const uint8_t *p = w->data + row * (w->cols / 2) + k / 2;
        __m256 s =
            _mm256_set1_ps(v4_fast_scale(w->scale[row * w->scale_stride + k / V4_FP4_BLOCK]));
        h.lo = fp4x8(p, s);
        h.hi = fp4x8(p + 4, s);
        break;
    }
    case V4_BF16: {
        const uint8_t *p = w->data + (row * w->cols + k) * 2;
        h.lo = bf16x8(p);
        h.hi = bf16x8(p + 16);
        break;
    }
    default: {
        const float *p = (const float *)(const void *)(w->data + (row * w->cols + k) * 4);
        h.lo = _mm256_loadu_ps(p);
        h.hi = _mm256_loadu_ps(p + 8);
        break;
    }
    }
    return h;
}

/* fast.h's lane tree over lanes lo[0..7], hi[0..7] = 8..15. */
INLINE float reduce16(__m256 lo, __m256 hi)
{
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* decode_rows in the plain order (rows not a multiple of 32 wide). */
KERNEL static void plain_decode_rows(const v4_weight *w, int64_t r, int nr, float *panel)
{
    if (v4_fast_gguf(w->dtype)) {
        v4_fast_gguf_rows(w, r, nr, panel);
        return;
    }
    int64_t row_bytes = (int64_t)v4_dtype_row_bytes(w->dtype, w->cols);
    for (int i = 0; i < nr; i++)
        for (int64_t k = 0; k < w->cols; k += 16) {
            if (k % V4_FP8_BLOCK == 0) /* fast.h: a panel's rows are cold too */
                v4_fast_next_rows(w->data + (r + i) * row_bytes + k * row_bytes / w->cols,
                                  V4_FAST_ROWS * row_bytes, V4_FP8_BLOCK * row_bytes / w->cols);
            half2 h = decode16(w, r + i, k);
            float *dst = panel + (size_t)i * w->cols + k;
            _mm256_storeu_ps(dst, h.lo);
            _mm256_storeu_ps(dst + 8, h.hi);
        }
}

/* Eight floats loaded into a register that the compiler may not fold into
 * the instructions using it: GCC would otherwise turn every use into an FMA
 * with a memory operand, loading the vector once per use. */
INLINE __m256 load_once(const float *p)
{
    __m256 v = _mm256_loadu_ps(p);
    __asm__("" : "+x"(v));
    return v;
}

/* Rows rows[i0], rows[i0 + 1] against tokens xs[t0 .. t0 + 2]: 12
 * accumulators of the 16 available, a[half][i][t] (half 0: lanes 0-7,
 * half 1: lanes 8-15).  A half at a time needs two weight registers and one
 * for x, each input vector loaded once for both rows: 10 loads per 12 FMAs
 * instead of 16, which two loads a cycle cannot feed at the FMA rate. */
INLINE void subtile(const float *const *rows, const float *const *xs, int i0, int t0, int64_t klen,
                    int fresh, v4_fast_acc acc)
{
    __m256 a[2][2][3];
#pragma GCC unroll 8
    for (int h = 0; h < 2; h++)
#pragma GCC unroll 8
        for (int i = 0; i < 2; i++)
#pragma GCC unroll 8
            for (int t = 0; t < 3; t++)
                a[h][i][t] =
                    fresh ? _mm256_setzero_ps() : _mm256_loadu_ps(acc[t0 + t][i0 + i] + 8 * h);
    const float *w0 = rows[i0], *w1 = rows[i0 + 1];
    const float *x[3] = {xs[t0], xs[t0 + 1], xs[t0 + 2]};
    for (int64_t k = 0; k < klen; k += 16) {
#pragma GCC unroll 8
        for (int h = 0; h < 2; h++) {
            __m256 wa = _mm256_loadu_ps(w0 + k + 8 * h), wb = _mm256_loadu_ps(w1 + k + 8 * h);
#pragma GCC unroll 8
            for (int t = 0; t < 3; t++) {
                __m256 xv = load_once(v4_fast_x_at(x[t], k) + 8 * h);
                a[h][0][t] = _mm256_fmadd_ps(wa, xv, a[h][0][t]);
                a[h][1][t] = _mm256_fmadd_ps(wb, xv, a[h][1][t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int h = 0; h < 2; h++)
#pragma GCC unroll 8
        for (int i = 0; i < 2; i++)
#pragma GCC unroll 8
            for (int t = 0; t < 3; t++) _mm256_storeu_ps(acc[t0 + t][i0 + i] + 8 * h, a[h][i][t]);
}

KERNEL static void tile_acc_avx2(const float *const *rows, const float *const *xs, int nt,
                                 int64_t klen, int fresh, v4_fast_acc acc)
{
    /* The tile is always 2 x 3: tokens past nt repeat the last one, into
     * slots of acc that the contract leaves to the kernel. */
    const float *x[V4_FAST_TOKENS];
    for (int t = 0; t < V4_FAST_TOKENS; t++) x[t] = xs[t < nt ? t : nt - 1];
    for (int t0 = 0; t0 < nt; t0 += 3)
        for (int i0 = 0; i0 < V4_FAST_ROWS; i0 += 2) subtile(rows, x, i0, t0, klen, fresh, acc);
}

/* One decoded row against x in fast.h's order. */
INLINE float dot16(const float *w, const float *x, int64_t cols)
{
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int64_t k = 0; k < cols; k += 16) {
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8), hi);
    }
    return reduce16(lo, hi);
}

/* GGUF's types: the rows decoded into the running thread's scratch (which
 * holds BLOCK_ROWS rows), then dotted. */
KERNEL static void rows_dot_gguf(const v4_weight *w, int64_t r, int nr, const float *x, float *y)
{
    float *panel = v4_pool_scratch(w->pool);
    v4_fast_gguf_rows(w, r, nr, panel);
    for (int i = 0; i < nr; i++) y[i] = dot16(panel + (size_t)i * w->cols, x, w->cols);
}

/* Whether the `n` bytes at p (a multiple of 32) hold an e4m3 NaN code
 * (S.1111.111). */
INLINE int has_fp8_nan(const uint8_t *p, int64_t n)
{
    const __m256i mag = _mm256_set1_epi8(0x7F);
    __m256i any = _mm256_setzero_si256();
    for (int64_t i = 0; i < n; i += 32) {
        __m256i b =
            _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(p + i)), mag);
        any = _mm256_or_si256(any, _mm256_cmpeq_epi8(b, mag));
    }
    return !_mm256_testz_si256(any, any);
}

/* The next V4_FAST_ROWS rows of a call, from row r with nr left: their
 * indices (past the call's rows, r again) and zeroed sums; returns how
 * many are the call's. */
INLINE int row_group(int64_t r, int nr, int64_t *row, half2 *acc)
{
    for (int i = 0; i < V4_FAST_ROWS; i++) {
        row[i] = r + (i < nr ? i : 0);
        acc[i].lo = acc[i].hi = _mm256_setzero_ps();
    }
    return nr < V4_FAST_ROWS ? nr : V4_FAST_ROWS;
}

/* Rows of any type the general decoder reads. */
INLINE void rows_dot_plain(const v4_weight *w, const int64_t *row, const float *x, half2 *acc)
{
    for (int64_t k = 0; k < w->cols; k += 16) {
        __m256 xl = _mm256_loadu_ps(x + k), xh = _mm256_loadu_ps(x + k + 8);
#pragma GCC unroll 8
        for (int i = 0; i < V4_FAST_ROWS; i++) fma16(&acc[i], decode16(w, row[i], k), xl, xh);
    }
}

/* rows_dot in the plain order (rows 16 but not 32 wide, which no
 * checkpoint has): each weight by the general decoder. */
KERNEL static void plain_rows_dot(const v4_weight *w, int64_t r, int nr, const float *x, float *y)
{
    if (v4_fast_gguf(w->dtype)) {
        rows_dot_gguf(w, r, nr, x, y);
        return;
    }
    for (int i0 = 0; i0 < nr; i0 += V4_FAST_ROWS) {
        int64_t row[V4_FAST_ROWS];
        half2 acc[V4_FAST_ROWS];
        int n = row_group(r + i0, nr - i0, row, acc);
        rows_dot_plain(w, row, x, acc);
        for (int i = 0; i < n; i++) y[i0 + i] = reduce16(acc[i].lo, acc[i].hi);
    }
}

/* ---- attention over stored KV rows ---------------------------------------- */

/* Columns [k, k + 16) of a stored row, decoded. */
INLINE half2 kv16(const v4_kv_format *f, const uint8_t *row, int64_t k)
{
    half2 h;
    if (k < f->fp8) {
        __m256 s = _mm256_set1_ps(v4_fast_scale(row[f->fp8 + k / V4_KV_FP8_BLOCK]));
        h.lo = fp8x8(row + k, s);
        h.hi = fp8x8(row + k + 8, s);
        return h;
    }
    const uint8_t *tail = v4_kv_tail(f, row);
    k -= f->fp8;
    if (f->tail_bf16) {
        h.lo = bf16x8(tail + 2 * k);
        h.hi = bf16x8(tail + 2 * k + 16);
    } else {
        h.lo = _mm256_loadu_ps((const float *)(const void *)(tail + 4 * k));
        h.hi = _mm256_loadu_ps((const float *)(const void *)(tail + 4 * k + 32));
    }
    return h;
}

/* subtile's 2 x 3 tile over stored rows: each sixteen columns of the two
 * rows decoded once for the three heads. */
INLINE void kv_subtile(const v4_kv_format *f, const uint8_t *const *rows, const float *const *xs,
                       int i0, int t0, v4_fast_acc acc)
{
    __m256 lo[2][3], hi[2][3];
#pragma GCC unroll 8
    for (int i = 0; i < 2; i++)
#pragma GCC unroll 8
        for (int t = 0; t < 3; t++) {
            lo[i][t] = _mm256_loadu_ps(acc[t0 + t][i0 + i]);
            hi[i][t] = _mm256_loadu_ps(acc[t0 + t][i0 + i] + 8);
        }
    for (int64_t k = 0; k < f->fp8 + f->tail; k += 16) {
        half2 w[2] = {kv16(f, rows[i0], k), kv16(f, rows[i0 + 1], k)};
#pragma GCC unroll 8
        for (int t = 0; t < 3; t++) {
            __m256 xl = _mm256_loadu_ps(xs[t0 + t] + k), xh = _mm256_loadu_ps(xs[t0 + t] + k + 8);
#pragma GCC unroll 8
            for (int i = 0; i < 2; i++) {
                lo[i][t] = _mm256_fmadd_ps(w[i].lo, xl, lo[i][t]);
                hi[i][t] = _mm256_fmadd_ps(w[i].hi, xh, hi[i][t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 2; i++)
#pragma GCC unroll 8
        for (int t = 0; t < 3; t++) {
            _mm256_storeu_ps(acc[t0 + t][i0 + i], lo[i][t]);
            _mm256_storeu_ps(acc[t0 + t][i0 + i] + 8, hi[i][t]);
        }
}

KERNEL static void kv_tile_acc_avx2(const v4_kv_format *f, const uint8_t *const *rows,
                                    const float *const *xs, int nt, v4_fast_acc acc)
{
    /* As tile_acc_avx2: tokens past nt repeat the last one. */
    const float *x[V4_FAST_TOKENS];
    for (int t = 0; t < V4_FAST_TOKENS; t++) x[t] = xs[t < nt ? t : nt - 1];
    for (int t0 = 0; t0 < nt; t0 += 3)
        for (int i0 = 0; i0 < V4_FAST_ROWS; i0 += 2) kv_subtile(f, rows, x, i0, t0, acc);
}

/* P.V for G heads (a constant where it is inlined) over sixteen columns
 * from k: each row's columns decoded once for the G heads. */
INLINE void kv_sum_heads(const v4_kv_format *f, const uint8_t *const *rows, int64_t n,
                         const float *p, int64_t pstride, const int G, int64_t k, float *o,
                         int64_t ostride)
{
    __m256 lo[4], hi[4];
#pragma GCC unroll 4
    for (int h = 0; h < G; h++) {
        lo[h] = _mm256_loadu_ps(o + h * ostride + k);
        hi[h] = _mm256_loadu_ps(o + h * ostride + k + 8);
    }
    for (int64_t s = 0; s < n; s++) {
        half2 v = kv16(f, rows[s], k);
#pragma GCC unroll 4
        for (int h = 0; h < G; h++) {
            __m256 w = _mm256_set1_ps(p[h * pstride + s]);
            lo[h] = _mm256_fmadd_ps(w, v.lo, lo[h]);
            hi[h] = _mm256_fmadd_ps(w, v.hi, hi[h]);
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < G; h++) {
        _mm256_storeu_ps(o + h * ostride + k, lo[h]);
        _mm256_storeu_ps(o + h * ostride + k + 8, hi[h]);
    }
}

/* kv_sum_heads for each group size, as a table. */
typedef void kv_sum_fn(const v4_kv_format *f, const uint8_t *const *rows, int64_t n, const float *p,
                       int64_t pstride, int64_t k, float *o, int64_t ostride);
#define KV_SUM(G)                                                                                  \
    KERNEL static void kv_sum_##G(const v4_kv_format *f, const uint8_t *const *rows, int64_t n,    \
                                  const float *p, int64_t pstride, int64_t k, float *o,            \
                                  int64_t ostride)                                                 \
    {                                                                                              \
        kv_sum_heads(f, rows, n, p, pstride, G, k, o, ostride);                                    \
    }
KV_SUM(1)
KV_SUM(2)
KV_SUM(3)
KV_SUM(4)
#undef KV_SUM
static kv_sum_fn *const kv_sums[4] = {kv_sum_1, kv_sum_2, kv_sum_3, kv_sum_4};

KERNEL static void kv_weighted_sum_avx2(const v4_kv_format *f, const uint8_t *const *rows,
                                        int64_t n, const float *p, int64_t pstride, int nh,
                                        int64_t c0, int64_t c1, float *o, int64_t ostride)
{
    for (int64_t k = c0; k < c1; k += 16)
        for (int h = 0; h < nh; h += 4)
            kv_sums[(nh - h < 4 ? nh - h : 4) - 1](f, rows, n, p + h * pstride, pstride, k,
                                                   o + h * ostride, ostride);
}

KERNEL static void kv_decode_avx2(const v4_kv_format *f, const uint8_t *row, int64_t c0, int64_t c1,
                                  float *out)
{
    for (int64_t k = c0; k < c1; k += 16) {
        half2 h = kv16(f, row, k);
        _mm256_storeu_ps(out + (k - c0), h.lo);
        _mm256_storeu_ps(out + (k - c0) + 8, h.hi);
    }
}

KERNEL static void reduce_avx2(const v4_fast_acc acc, int nt, int nr, float *y, int64_t ystride)
{
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < nr; i++)
            y[t * ystride + i] =
                reduce16(_mm256_loadu_ps(acc[t][i]), _mm256_loadu_ps(acc[t][i] + 8));
}

/* ---- the pair order (fast.h) ------------------------------------------------ */

/* Thirty-two e4m3 codes (no NaN codes) as floats times 2^-120
 * (e4m3_words_tiny), the odd columns into *o and the even ones into *e. */
INLINE void fp8_pairs_tiny(const uint8_t *p, half2 *o, half2 *e)
{
    e4m3_words_tiny(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)p)), &o->lo,
                    &e->lo);
    e4m3_words_tiny(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(p + 16))),
                    &o->hi, &e->hi);
}

/* The same times factor f (fp8_factor's): the weights. */
INLINE void fp8_pairs(const uint8_t *p, __m256 f, half2 *o, half2 *e)
{
    fp8_pairs_tiny(p, o, e);
    o->lo = mul_exact(o->lo, f), o->hi = mul_exact(o->hi, f);
    e->lo = mul_exact(e->lo, f), e->hi = mul_exact(e->hi, f);
}

/* Thirty-two e2m1 codes (sixteen bytes, column 2j in byte j's low
 * nibble and column 2j + 1 in its high one) at the scale whose table row
 * is tab, split for the pair order: the byte order 0 8 1 9 2 10 3 11
 * (and 4 12 ... in the upper half) puts bytes 0-7 in the bottom words of
 * the 32-bit lanes and bytes 8-15 in the top ones. */
INLINE void fp4_pairs(const uint8_t *p, const uint8_t *tab, half2 *o, half2 *e)
{
    const __m256i order = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 0, 8, 1, 9, 2, 10, 3, 11, 4,
                                           12, 5, 13, 6, 14, 7, 15, 4, 12, 5, 13, 6, 14, 7, 15);
    __m256i lo, hi;
    nibbles_bf16(p, tab, order, &lo, &hi);
    *e = (half2){bf16_bottom(lo), bf16_top(lo)};
    *o = (half2){bf16_bottom(hi), bf16_top(hi)};
}

/* Thirty-two BF16 weights: the odd ones are the top halves of the 32-bit
 * lanes, the even ones the bottom halves. */
INLINE void bf16_pairs(const uint8_t *p, half2 *o, half2 *e)
{
    __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)p),
            b = _mm256_loadu_si256((const __m256i *)(const void *)(p + 32));
    *o = (half2){bf16_top(a), bf16_top(b)};
    *e = (half2){bf16_bottom(a), bf16_bottom(b)};
}

/* The n values at in (a multiple of 32) with each 32 permuted, into out
 * (which may be in). */
INLINE void permute_pairs(const float *in, int64_t n, float *out)
{
    for (int64_t k = 0; k < n; k += V4_PAIRS_COLUMNS) {
        __m256 a = _mm256_loadu_ps(in + k), b = _mm256_loadu_ps(in + k + 8),
               c = _mm256_loadu_ps(in + k + 16), d = _mm256_loadu_ps(in + k + 24);
        _mm256_storeu_ps(out + k, odd8(a, b));
        _mm256_storeu_ps(out + k + 8, odd8(c, d));
        _mm256_storeu_ps(out + k + 16, even8(a, b));
        _mm256_storeu_ps(out + k + 24, even8(c, d));
    }
}

/* Thirty-two weights of a row by the general decoder, split by shuffles. */
INLINE void general_pairs(const v4_weight *w, int64_t row, int64_t k, half2 *o, half2 *e)
{
    half2 a = decode16(w, row, k), b = decode16(w, row, k + 16);
    *o = (half2){odd8(a.lo, a.hi), odd8(b.lo, b.hi)};
    *e = (half2){even8(a.lo, a.hi), even8(b.lo, b.hi)};
}

/* Where pair_rows puts each row's 32 weights: into the row's
 * accumulators against the permuted inputs (decode), or into a panel row in
 * permuted order (prefill). */
typedef struct pair_sink {
    half2 *acc;
    const float *xp;
    float *panel;
} pair_sink;

INLINE void pair_put(const pair_sink *s, half2 *a, int i, int64_t cols, int64_t k, half2 o, half2 e)
{
    if (s->acc) {
        pair_step(a, o, e, s->xp + k);
        return;
    }
    pair_store(s->panel + (size_t)i * cols + k, o, e);
}

/* v4_fp8_folded's inputs for the block of row_block, from the permuted
 * inputs xp (each times fp8_factor, checked by multiplying back as
 * fast_avx512.c's are), and whether the whole rows take the short path. */
INLINE void fp8_fold_inputs(const v4_weight *w, int64_t row_block, const float *xp,
                            v4_fp8_folded *f)
{
    const uint8_t *scale = w->scale + row_block * w->scale_stride;
    f->whole = w->fp8_clean != NULL;
    for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP8_BLOCK) {
        int64_t end = k0 + V4_FP8_BLOCK < w->cols ? k0 + V4_FP8_BLOCK : w->cols;
        uint8_t e = scale[k0 / V4_FP8_BLOCK];
        __m256 factor = _mm256_set1_ps(fp8_factor(e));
        __m256 inverse = _mm256_div_ps(_mm256_set1_ps(1.0f), factor);
        int inexact = 0;
        for (int64_t k = k0; k < end; k += 8) {
            __m256 xv = _mm256_loadu_ps(xp + k), v = _mm256_mul_ps(xv, factor);
            inexact |=
                _mm256_movemask_ps(_mm256_cmp_ps(_mm256_mul_ps(v, inverse), xv, _CMP_NEQ_UQ));
            _mm256_storeu_ps(f->x + k, v);
        }
        f->exact[k0 / V4_FP8_BLOCK] = e <= 134 && !inexact;
        f->whole = f->whole && f->exact[k0 / V4_FP8_BLOCK] &&
                   v4_fast_fp8_clean(w, row_block * V4_FP8_BLOCK, k0);
    }
    f->row_block = row_block;
}

/* Decode's rows in turns every 32 columns, V4_FAST_ROWS of them (rows
 * past a call's repeat its first: row_group), against inputs x: FP8 rows
 * of one row block whose every column block takes the short path with
 * folded inputs (v4_fp8_folded.whole), or BF16 rows.  A row's two sums are
 * chains of FMAs, and one row at a time ran at their latency (decode's
 * FP8 products, one thread on a Zen 3: 12.0 GB/s a row at a time, 13.6 in
 * turns).  Only these two decoders fit the loop in the 16 registers: with
 * the general decoder beside them (pairs_plain) GCC kept the BF16 rows'
 * sums on the stack, and decode ran 3-5% slower.  FP4 rows take turns in
 * twos, in a loop of their own (pairs_fp4). */
INLINE void pairs_turns(const v4_weight *w, const int64_t *row, const float *x, half2 *acc,
                        const int width /* bytes per weight: 1 FP8, 2 BF16 */)
{
    int64_t ahead = V4_FAST_ROWS * width * w->cols; /* the next call's rows (fast.h) */
    const uint8_t *p[V4_FAST_ROWS];
    half2 a[V4_FAST_ROWS];
    for (int i = 0; i < V4_FAST_ROWS; i++) {
        p[i] = w->data + row[i] * width * w->cols;
        a[i] = acc[i];
    }
    for (int64_t k = 0; k < w->cols; k += V4_PAIRS_COLUMNS)
#pragma GCC unroll 4
        for (int i = 0; i < V4_FAST_ROWS; i++) {
            half2 o, e;
            const uint8_t *at = p[i] + width * k;
            if (width * k % 64 == 0) v4_fast_next_rows(at, ahead, 64);
            if (width == 2)
                bf16_pairs(at, &o, &e);
            else
                fp8_pairs_tiny(at, &o, &e);
            pair_step(&a[i], o, e, x + k);
        }
    for (int i = 0; i < V4_FAST_ROWS; i++) acc[i] = a[i];
}

/* FP8 rows, 32 columns at a time split into odd and even: a 128-column
 * block of a row by shifts where its scale is at most 2^7 and it holds no
 * NaN code, else generally. */
INLINE void pairs_fp8(const v4_weight *w, const int64_t *row, int nr, const pair_sink *sink)
{
    for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP8_BLOCK) {
        int64_t len = k0 + V4_FP8_BLOCK < w->cols ? V4_FP8_BLOCK : w->cols - k0;
        for (int i = 0; i < nr; i++) {
            uint8_t s = w->scale[(row[i] / V4_FP8_BLOCK) * w->scale_stride + k0 / V4_FP8_BLOCK];
            const uint8_t *p = w->data + row[i] * w->cols + k0;
            v4_fast_next_rows(p, V4_FAST_ROWS * w->cols, len);
            int quick = (s <= 134 || s == 0xFF) &&
                        (v4_fast_fp8_clean(w, row[i], k0) || !has_fp8_nan(p, len));
            __m256 f = _mm256_set1_ps(fp8_factor(s));
            half2 a = sink->acc ? sink->acc[i] : (half2){_mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int64_t k = 0; k < len; k += V4_PAIRS_COLUMNS) {
                half2 o, e;
                if (quick)
                    fp8_pairs(p + k, f, &o, &e);
                else
                    general_pairs(w, row[i], k0 + k, &o, &e);
                pair_put(sink, &a, i, w->cols, k0 + k, o, e);
            }
            if (sink->acc) sink->acc[i] = a;
        }
    }
}

/* FP4 rows [i0, i0 + R) of row[], by fp4_pairs, in turns (R a constant
 * where inlined). */
INLINE void fp4_turns(const v4_weight *w, const int64_t *row, int i0, const int R,
                      const pair_sink *sink)
{
    const uint8_t(*tables)[32] = v4_fast_e2m1_bf16();
    int64_t ahead = V4_FAST_ROWS * w->cols / 2;
    const uint8_t *p[2], *e[2];
    half2 a[2];
    for (int t = 0; t < R; t++) {
        p[t] = w->data + row[i0 + t] * (w->cols / 2);
        e[t] = w->scale + row[i0 + t] * w->scale_stride;
        a[t] = sink->acc ? sink->acc[i0 + t] : (half2){_mm256_setzero_ps(), _mm256_setzero_ps()};
    }
    for (int64_t k = 0; k < w->cols; k += V4_PAIRS_COLUMNS)
#pragma GCC unroll 2
        for (int t = 0; t < R; t++) {
            half2 o, ev;
            if (k % 128 == 0) v4_fast_next_rows(p[t] + k / 2, ahead, 64); /* a line */
            fp4_pairs(p[t] + k / 2, tables[e[t][k / V4_FP4_BLOCK]], &o, &ev);
            pair_put(sink, &a[t], i0 + t, w->cols, k, o, ev);
        }
    for (int t = 0; t < R && sink->acc; t++) sink->acc[i0 + t] = a[t];
}

/* FP4 rows, by tables, which serve every scale.  Decode's rows take turns
 * in twos: a row's two sums are chains of two FMAs per 32 columns, and a
 * row alone ran at their latency (12.8 weights/ns against 16.8 in the
 * microbenchmark of nibbles_bf16; four in turns, 16.6).  Its rows past nr
 * repeat the first (row_group), so a pair is always there to take. */
INLINE void pairs_fp4(const v4_weight *w, const int64_t *row, int nr, const pair_sink *sink)
{
    for (int i = 0; i < nr; i += sink->acc ? 2 : 1)
        if (sink->acc)
            fp4_turns(w, row, i, 2, sink);
        else
            fp4_turns(w, row, i, 1, sink);
}

/* BF16 and F32 rows: BF16 by shifts, F32 by the general decoder; rows in
 * turns, as pairs_turns's (which decode's BF16 rows take). */
INLINE void pairs_plain(const v4_weight *w, const int64_t *row, int nr, const pair_sink *sink)
{
    int64_t row_bytes = (int64_t)v4_dtype_row_bytes(w->dtype, w->cols);
    int64_t len = V4_PAIRS_COLUMNS * row_bytes / w->cols;
    const uint8_t *p[V4_FAST_ROWS];
    half2 a[V4_FAST_ROWS];
    for (int i = 0; i < nr; i++) {
        p[i] = w->data + row[i] * row_bytes;
        a[i] = sink->acc ? sink->acc[i] : (half2){_mm256_setzero_ps(), _mm256_setzero_ps()};
    }
    for (int64_t k = 0; k < w->cols; k += V4_PAIRS_COLUMNS)
#pragma GCC unroll 4
        for (int i = 0; i < V4_FAST_ROWS; i++) {
            if (i >= nr) break;
            half2 o, e;
            int64_t at = k * row_bytes / w->cols;
            v4_fast_next_rows(p[i] + at, V4_FAST_ROWS * row_bytes, len);
            if (w->dtype == V4_BF16)
                bf16_pairs(p[i] + at, &o, &e);
            else
                general_pairs(w, row[i], k, &o, &e);
            pair_put(sink, &a[i], i, w->cols, k, o, e);
        }
    for (int i = 0; i < nr && sink->acc; i++) sink->acc[i] = a[i];
}

INLINE void pair_rows(const v4_weight *w, const int64_t *row, int nr, const pair_sink *sink)
{
    if (w->dtype == V4_F8_E4M3)
        pairs_fp8(w, row, nr, sink);
    else if (w->dtype == V4_I8)
        pairs_fp4(w, row, nr, sink);
    else
        pairs_plain(w, row, nr, sink);
}

KERNEL static void pairs_decode_rows(const v4_weight *w, int64_t r, int nr, float *panel)
{
    for (int i0 = 0; i0 < nr; i0 += V4_FAST_ROWS) {
        int64_t row[V4_FAST_ROWS];
        int n = nr - i0 < V4_FAST_ROWS ? nr - i0 : V4_FAST_ROWS;
        for (int i = 0; i < n; i++) row[i] = r + i0 + i;
        pair_sink sink = {NULL, NULL, panel + (size_t)i0 * w->cols};
        pair_rows(w, row, n, &sink);
    }
}

KERNEL static void decode_rows_avx2(const v4_weight *w, int64_t r, int nr, float *panel)
{
    if (!v4_fast_pair_order(w)) {
        plain_decode_rows(w, r, nr, panel);
    } else if (v4_fast_gguf(w->dtype)) {
        v4_avx2_gguf_panel(w, r, nr, panel);
    } else {
        pairs_decode_rows(w, r, nr, panel);
    }
}

/* Rows in the order's layout (fast.h): plain, or in the pair order against
 * the permuted inputs xp (GGUF's types by fast_avx2_gguf.c's loops). */
KERNEL static void rows_dot_avx2(const v4_weight *w, int64_t r, int nr, const float *xp, float *y)
{
    if (!v4_fast_pair_order(w)) {
        plain_rows_dot(w, r, nr, xp, y);
        return;
    }
    int gguf = v4_fast_gguf(w->dtype);
    v4_fp8_folded folded = v4_fp8_folded_none(w);
    for (int i0 = 0; i0 < nr; i0 += V4_FAST_ROWS) {
        int64_t row[V4_FAST_ROWS];
        half2 acc[V4_FAST_ROWS];
        int n = row_group(r + i0, nr - i0, row, acc);
        pair_sink sink = {acc, xp, NULL};
        if (w->dtype == V4_F8_E4M3 && folded.row_block != row[0] / V4_FP8_BLOCK)
            fp8_fold_inputs(w, row[0] / V4_FP8_BLOCK, xp, &folded);
        if (gguf)
            v4_avx2_gguf_rows_dot(w, row, xp, acc);
        else if (w->dtype == V4_F8_E4M3 && folded.whole)
            pairs_turns(w, row, folded.x, acc, 1);
        else if (w->dtype == V4_BF16)
            pairs_turns(w, row, xp, acc, 2);
        else
            pair_rows(w, row, n, &sink);
        for (int i = 0; i < n; i++) y[i0 + i] = reduce16(acc[i].lo, acc[i].hi);
    }
}

KERNEL static void permute_pairs_avx2(const float *in, int64_t n, float *out)
{
    permute_pairs(in, n, out);
}

const v4_fast_kernels v4_fast_avx2 = {"avx2",
                                      512,
                                      512,
                                      decode_rows_avx2,
                                      tile_acc_avx2,
                                      rows_dot_avx2,
                                      kv_tile_acc_avx2,
                                      kv_weighted_sum_avx2,
                                      kv_decode_avx2,
                                      reduce_avx2,
                                      permute_pairs_avx2,
                                      NULL, /* no lane tile: prefill runs tile_acc */
                                      NULL,
                                      NULL};
#endif
