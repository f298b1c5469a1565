/*
 * fast_avx512.c - the fast kernels (fast.h's order) with AVX-512.
 *
 * One zmm register holds the sixteen partial sums of one dot product, so a
 * step of the order is one vfmadd231ps.  The prefill kernel keeps a tile of
 * V4_FAST_ROWS x V4_FAST_TOKENS such registers (24 of 32) over decoded
 * weight rows, loading each weight vector once for six tokens; the decode
 * kernel decodes FP8/FP4/BF16 weights in registers and streams each weight
 * byte once.  Compiled for any x86-64 and chosen at run time (fast.c).
 */
#include "engine/kernels/fast.h"

#include "engine/kernels/blocks.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#define TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"
#define KERNEL __attribute__((target(TARGET)))
#define INLINE __attribute__((target(TARGET), always_inline)) static inline

/* Sixteen e4m3 bytes as floats, exactly.  Moved into f16 bit fields the
 * e4m3 exponent and mantissa keep their meaning with f16's bias of 15
 * instead of 7, subnormals included, so the f16 value times 2^8 is the
 * e4m3 value; the two NaN codes (S.1111.111) are set apart. */
INLINE __m512 fp8x16(const uint8_t *p, float scale)
{
    __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)p));
    __m256i mag = _mm256_and_si256(b, _mm256_set1_epi16(0x7F));
    __m256i sign = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8);
    __m256i h = _mm256_or_si256(_mm256_slli_epi16(mag, 7), sign);
    __m512 v = _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(256.0f));
    v = _mm512_mask_mov_ps(v, _mm256_cmpeq_epi16_mask(mag, _mm256_set1_epi16(0x7F)),
                           _mm512_set1_ps(NAN));
    return _mm512_mul_ps(v, _mm512_set1_ps(scale));
}

/* Sixteen e2m1 codes from eight bytes (low nibble first), by table. */
INLINE __m512 fp4x16(const uint8_t *p, float scale)
{
    __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)p);
    __m128i lo = _mm_and_si128(b, _mm_set1_epi8(15));
    __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
    __m512i codes = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
    __m512 v = _mm512_permutexvar_ps(codes, _mm512_loadu_ps(v4_e2m1_values));
    return _mm512_mul_ps(v, _mm512_set1_ps(scale));
}

INLINE __m512 bf16x16(const uint8_t *p)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Weights k .. k+15 of row `row`, decoded. */
INLINE __m512 decode16(const v4_weight *w, int64_t row, int64_t k)
{
    switch (w->dtype) {
    case V4_F8_E4M3:
        return fp8x16(
            w->data + row * w->cols + k,
            v4_fast_scale(w->scale[(row / V4_FP8_BLOCK) * w->scale_stride + k / V4_FP8_BLOCK]));
    case V4_I8:
        return fp4x16(w->data + row * (w->cols / 2) + k / 2,
                      v4_fast_scale(w->scale[row * w->scale_stride + k / V4_FP4_BLOCK]));
    case V4_BF16:
        return bf16x16(w->data + (row * w->cols + k) * 2);
    default:
        return _mm512_loadu_ps((const float *)(const void *)(w->data + (row * w->cols + k) * 4));
    }
}

/* fast.h's lane tree. */
INLINE float reduce16(__m512 v)
{
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* CALL with NT the constant nt (1 to V4_FAST_TOKENS), so that each count
 * inlines a tile of its own and keeps its accumulators in registers. */
#define FOR_TOKEN_COUNT(nt, CALL)                                                                  \
    do {                                                                                           \
        switch (nt) {                                                                              \
        case 1: {                                                                                  \
            const int NT = 1;                                                                      \
            CALL;                                                                                  \
            break;                                                                                 \
        }                                                                                          \
        case 2: {                                                                                  \
            const int NT = 2;                                                                      \
            CALL;                                                                                  \
            break;                                                                                 \
        }                                                                                          \
        case 3: {                                                                                  \
            const int NT = 3;                                                                      \
            CALL;                                                                                  \
            break;                                                                                 \
        }                                                                                          \
        case 4: {                                                                                  \
            const int NT = 4;                                                                      \
            CALL;                                                                                  \
            break;                                                                                 \
        }                                                                                          \
        case 5: {                                                                                  \
            const int NT = 5;                                                                      \
            CALL;                                                                                  \
            break;                                                                                 \
        }                                                                                          \
        default: {                                                                                 \
            const int NT = 6;                                                                      \
            CALL;                                                                                  \
            break;                                                                                 \
        }                                                                                          \
        }                                                                                          \
    } while (0)

/* The register tile for NT tokens (a constant where it is inlined, so the
 * accumulators stay in registers). */
INLINE void tile(const float *const *rows, const float *const *xs, const int NT, int64_t klen,
                 int fresh, v4_fast_acc acc)
{
    __m512 a[V4_FAST_ROWS][V4_FAST_TOKENS];
#pragma GCC unroll 8
    for (int i = 0; i < V4_FAST_ROWS; i++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++)
            a[i][t] = fresh ? _mm512_setzero_ps() : _mm512_loadu_ps(acc[t][i]);
    for (int64_t k = 0; k < klen; k += 16) {
        __m512 wv[V4_FAST_ROWS];
#pragma GCC unroll 8
        for (int i = 0; i < V4_FAST_ROWS; i++) wv[i] = _mm512_loadu_ps(rows[i] + k);
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            __m512 xv = _mm512_loadu_ps(v4_fast_x_at(xs[t], k));
#pragma GCC unroll 8
            for (int i = 0; i < V4_FAST_ROWS; i++) a[i][t] = _mm512_fmadd_ps(wv[i], xv, a[i][t]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < V4_FAST_ROWS; i++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) _mm512_storeu_ps(acc[t][i], a[i][t]);
}

KERNEL static void tile_acc_avx512(const float *const *rows, const float *const *xs, int nt,
                                   int64_t klen, int fresh, v4_fast_acc acc)
{
    FOR_TOKEN_COUNT(nt, tile(rows, xs, NT, klen, fresh, acc));
}

/* Whether the `n` bytes at p hold an e4m3 NaN code (S.1111.111). */
INLINE int has_fp8_nan(const uint8_t *p, int64_t n)
{
    const __m512i mag = _mm512_set1_epi8(0x7F);
    __mmask64 any = 0;
    for (int64_t i = 0; i < n; i += 64) {
        __mmask64 in = n - i >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (n - i)) - 1;
        __m512i b = _mm512_and_si512(_mm512_maskz_loadu_epi8(in, p + i), mag);
        any |= _mm512_mask_cmpeq_epi8_mask(in, b, mag);
    }
    return any != 0;
}

/* a * b, rounded once as a multiplication rounds it, by a fused
 * multiply-add of -0 (x + -0 is x for every x, zeros included): AMD's
 * cores slow a multiplication with a subnormal operand down several times
 * over, a fused multiply-add not at all, and fp8x16_tiny makes
 * subnormals of small codes. */
INLINE __m512 mul_exact(__m512 a, __m512 b)
{
    return _mm512_fmadd_ps(a, b, _mm512_set1_ps(-0.0f));
}

/* Whether columns [k0, k0 + len) (len a multiple of 64) of the four rows
 * at p hold an e4m3 NaN code (S.1111.111): with the sign bit set, a NaN
 * code is 0xFF, the largest byte, so one comparison of the lanes' maximum
 * over all rows and columns finds any. */
INLINE int rows_have_fp8_nan(const uint8_t *const *p, int64_t k0, int64_t len)
{
    const __m512i sign = _mm512_set1_epi8((char)0x80);
    __m512i top = sign;
    for (int64_t k = k0; k < k0 + len; k += 64)
#pragma GCC unroll 8
        for (int i = 0; i < V4_FAST_ROWS; i++)
            top = _mm512_max_epu8(
                top, _mm512_or_si512(_mm512_loadu_si512((const void *)(p[i] + k)), sign));
    return _mm512_cmpeq_epi8_mask(top, _mm512_set1_epi8((char)0xFF)) != 0;
}

/* 2^120 times the E8M0 scale 2^(e - 127), e <= 134 or 0xFF (2^(e - 7), a
 * normal float; NaN for 0xFF, as the decoder's). */
INLINE __m512 fp8_factor(uint8_t e)
{
    uint32_t bits = e == 0xFF ? 0x7FC00000u : ((uint32_t)e + 120) << 23;
    return _mm512_castsi512_ps(_mm512_set1_epi32((int)bits));
}

/* Sixteen e4m3 bytes as floats times 2^-120, by integer operations: each
 * byte sign-extended to its lane and shifted left by 20 puts the sign on
 * bit 31 (copies on 30..27) and the exponent and mantissa on 26..20, which
 * the mask keeps.  Exponent field e becomes the F32 exponent e, so every
 * code, subnormals included, is its value times 2^-120, exactly (the NaN
 * codes become 480 * 2^-120: callers exclude them). */
INLINE __m512 fp8x16_tiny(const uint8_t *p)
{
    __m512i b = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
    b = _mm512_slli_epi32(b, 20);
    return _mm512_castsi512_ps(_mm512_and_si512(b, _mm512_set1_epi32((int)0x87F00000)));
}

/* The indices of sixteen e2m1 codes from eight bytes (code j in bits
 * 4j..4j+3): lanes 0-7 take the first four bytes, lanes 8-15 the next
 * four, and a variable shift brings code j to the low bits of lane j (a
 * lookup reads only those four).  One shuffle per sixteen codes, where
 * unpacking the nibbles and widening them took three. */
INLINE __m512i fp4x16_codes(const uint8_t *p)
{
    const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i shifts =
        _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    __m512i v = _mm512_permutexvar_epi32(
        halves, _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i *)(const void *)p)));
    return _mm512_srlv_epi32(v, shifts);
}

/* v4_fp8_folded's inputs for the block of row_block. */
INLINE void fp8_fold_inputs(const v4_weight *w, int64_t row_block, const float *x, v4_fp8_folded *f)
{
    const uint8_t *scale = w->scale + row_block * w->scale_stride;
    for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP8_BLOCK) {
        int64_t end = k0 + V4_FP8_BLOCK < w->cols ? k0 + V4_FP8_BLOCK : w->cols;
        uint8_t e = scale[k0 / V4_FP8_BLOCK];
        __m512 factor = fp8_factor(e);
        /* Powers of two: x * factor * inverse is x again exactly when the
         * first product is exact, and never otherwise (an overflow stays
         * infinite, an underflow's lost bits stay lost, NaN stays NaN). */
        __m512 inverse = _mm512_div_ps(_mm512_set1_ps(1.0f), factor);
        __mmask16 inexact = 0;
        for (int64_t k = k0; k < end; k += 16) {
            __m512 xv = _mm512_loadu_ps(x + k), v = _mm512_mul_ps(xv, factor);
            inexact |= _mm512_cmp_ps_mask(_mm512_mul_ps(v, inverse), xv, _CMP_NEQ_UQ);
            _mm512_storeu_ps(f->x + k, v);
        }
        f->exact[k0 / V4_FP8_BLOCK] = e <= 134 && !inexact;
    }
    f->row_block = row_block;
    f->whole = 1;
    for (int64_t k0 = 0; k0 < w->cols && f->whole; k0 += V4_FP8_BLOCK)
        f->whole = f->exact[k0 / V4_FP8_BLOCK] &&
                   (w->fp8_clean && v4_fast_fp8_clean(w, row_block * V4_FP8_BLOCK, k0));
}

/* The four rows' codes p[i] and whether columns [k0, end) of them (one
 * 128-column block) take the short path: one scale for the four rows with
 * 2^120 times it a normal float (*factor), no NaN codes, whole steps of 64
 * columns.  Prefetches the next call's rows (fast.h) as it goes. */
INLINE int fp8_block_short(const v4_weight *w, const int64_t *row, int64_t k0, int64_t end,
                           const uint8_t **p, __m512 *factor)
{
    uint8_t e = w->scale[(row[0] / V4_FP8_BLOCK) * w->scale_stride + k0 / V4_FP8_BLOCK];
    int general = (end - k0) % 64 != 0 || (e > 134 && e != 0xFF);
    for (int i = 0; i < V4_FAST_ROWS; i++) {
        p[i] = w->data + row[i] * w->cols;
        general |= row[i] / V4_FP8_BLOCK != row[0] / V4_FP8_BLOCK;
    }
    general |= !general && !v4_fast_fp8_clean(w, row[0], k0) && rows_have_fp8_nan(p, k0, end - k0);
    for (int i = 0; i < V4_FAST_ROWS; i++)
        v4_fast_next_rows(p[i] + k0, V4_FAST_ROWS * w->cols, end - k0);
    *factor = fp8_factor(e);
    return !general;
}

/* A 128-column block of an FP8 row, ready to decode: its codes, whether
 * the short path's decoding serves it (a scale it covers, no NaN code) and
 * that path's factor. */
typedef struct fp8_block {
    const uint8_t *p;
    int short_path;
    __m512 f;
} fp8_block;

INLINE fp8_block fp8_block_at(const v4_weight *w, int64_t row, int64_t k0, int64_t end)
{
    fp8_block b = {w->data + row * w->cols, 0, _mm512_setzero_ps()};
    uint8_t e = w->scale[(row / V4_FP8_BLOCK) * w->scale_stride + k0 / V4_FP8_BLOCK];
    b.short_path = (e <= 134 || e == 0xFF) &&
                   (v4_fast_fp8_clean(w, row, k0) || !has_fp8_nan(b.p + k0, end - k0));
    b.f = fp8_factor(e);
    return b;
}

/* Columns k .. k + 15 of the block's row, exactly. */
INLINE __m512 fp8_block16(const fp8_block *b, const v4_weight *w, int64_t row, int64_t k)
{
    return b->short_path ? mul_exact(fp8x16_tiny(b->p + k), b->f) : decode16(w, row, k);
}

/* An FP4 row: its codes and scales, read once (a store to a panel could
 * alias the weight's fields, so the compiler would reload them). */
typedef struct fp4_row {
    const uint8_t *q, *e;
    const float (*scaled)[16]; /* v4_fast_e2m1_scaled() */
} fp4_row;

INLINE fp4_row fp4_row_at(const v4_weight *w, int64_t row, const float (*scaled)[16])
{
    return (fp4_row){w->data + row * (w->cols / 2), w->scale + row * w->scale_stride, scaled};
}

/* The e2m1 table times the scale of the row's columns k .. k + 31. */
INLINE __m512 fp4_scaled_table(fp4_row r, int64_t k)
{
    return _mm512_loadu_ps(r.scaled[r.e[k / V4_FP4_BLOCK]]);
}

/* Columns k .. k + 15 of the row through its scaled table. */
INLINE __m512 fp4_16(fp4_row r, int64_t k, __m512 scaled)
{
    return _mm512_permutexvar_ps(fp4x16_codes(r.q + k / 2), scaled);
}

/* Prefetch columns [k0, end) of the row `ahead` rows past `row` (fast.h:
 * a panel's rows are cold too). */
INLINE void panel_next_rows(const v4_weight *w, int64_t row, int64_t ahead, int64_t k0, int64_t end)
{
    /* bytes per column, in halves: FP4 1, FP8 2, BF16 4, F32 8 */
    int64_t halves = w->dtype == V4_I8        ? 1
                     : w->dtype == V4_F8_E4M3 ? 2
                     : w->dtype == V4_BF16    ? 4
                                              : 8;
    v4_fast_next_rows(w->data + (row * w->cols + k0) * halves / 2, ahead * w->cols * halves / 2,
                      (end - k0) * halves / 2);
}

/* decode_rows in the plain order (rows 16 but not 32 wide, which no
 * checkpoint has): each weight by the general decoder. */
KERNEL static void plain_decode_rows(const v4_weight *w, int64_t r, int nr, float *panel)
{
    if (v4_fast_gguf(w->dtype)) {
        v4_fast_gguf_rows(w, r, nr, panel);
        return;
    }
    for (int i = 0; i < nr; i++)
        for (int64_t k = 0; k < w->cols; k += 16)
            _mm512_storeu_ps(panel + (size_t)i * w->cols + k, decode16(w, r + i, k));
}

/* FP4 blocks a decode prefetches for at once: one cache line a row, so a
 * burst is four prefetches.  Sixteen blocks (four lines a row, sixteen
 * prefetches at once) read FP4 matrices that rotate past the caches at
 * 20-23 GB/s on two threads of a Zen 5 where four read 27-34 (the FP8 rows,
 * a line a row at a time, 42-49), and flash-shape decode went from 14.7
 * to 16.4 tokens/s (2 threads, medians of five interleaved rounds): the
 * bursts seem to fill the core's queue of misses, stalling the loads. */
#define FP4_SPAN 4

/* The code and scale rows of rows row[0 .. V4_FAST_ROWS) of an FP4 weight. */
INLINE void fp4_rows(const v4_weight *w, const int64_t *row, const uint8_t **p, const uint8_t **e)
{
    for (int i = 0; i < V4_FAST_ROWS; i++) {
        p[i] = w->data + row[i] * (w->cols / 2);
        e[i] = w->scale + row[i] * w->scale_stride;
    }
}

/* The span of FP4_SPAN blocks from column k0 of those rows: a later call's
 * bytes at the same place prefetched; returns the span's blocks (fewer at
 * the rows' end). */
INLINE int fp4_span(const v4_weight *w, const uint8_t *const *p, int64_t k0)
{
    int64_t left = (w->cols - k0) / V4_FP4_BLOCK;
    int nb = left < FP4_SPAN ? (int)left : FP4_SPAN;
    for (int i = 0; i < V4_FAST_ROWS; i++)
        v4_fast_next_rows(p[i] + k0 / 2, V4_FAST_ROWS * w->cols / 2, nb * V4_FP4_BLOCK / 2);
    return nb;
}

/* The next V4_FAST_ROWS rows of a call, from row r with nr left: their
 * indices (past the call's rows, r again) and zeroed sums; returns how
 * many are the call's. */
INLINE int row_group(int64_t r, int nr, int64_t *row, __m512 *acc)
{
    for (int i = 0; i < V4_FAST_ROWS; i++) {
        row[i] = r + (i < nr ? i : 0);
        acc[i] = _mm512_setzero_ps();
    }
    return nr < V4_FAST_ROWS ? nr : V4_FAST_ROWS;
}

/* Rows of any type the general decoder reads. */
INLINE void rows_dot_plain(const v4_weight *w, const int64_t *row, const float *x, __m512 *acc)
{
    for (int64_t k = 0; k < w->cols; k += 16) {
        __m512 xv = _mm512_loadu_ps(x + k);
#pragma GCC unroll 8
        for (int i = 0; i < V4_FAST_ROWS; i++)
            acc[i] = _mm512_fmadd_ps(decode16(w, row[i], k), xv, acc[i]);
    }
}

/* y[i] = the plain order's dot product of panel row i and x, i < nr. */
INLINE void panel_dots(const float *panel, int nr, int64_t cols, const float *x, float *y)
{
    for (int i = 0; i < nr; i++) {
        const float *row = panel + (size_t)i * cols;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t k = 0; k < cols; k += 16)
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(row + k), _mm512_loadu_ps(x + k), acc);
        y[i] = reduce16(acc);
    }
}

/* GGUF's types: the rows decoded into the running thread's scratch (which
 * holds BLOCK_ROWS rows), then dotted in fast.h's order. */
KERNEL static void rows_dot_gguf(const v4_weight *w, int64_t r, int nr, const float *x, float *y)
{
    float *panel = v4_pool_scratch(w->pool);
    v4_fast_gguf_rows(w, r, nr, panel);
    panel_dots(panel, nr, w->cols, x, y);
}

/* rows_dot in the plain order, likewise. */
KERNEL static void plain_rows_dot(const v4_weight *w, int64_t r, int nr, const float *x, float *y)
{
    if (v4_fast_gguf(w->dtype)) {
        rows_dot_gguf(w, r, nr, x, y);
        return;
    }
    for (int i0 = 0; i0 < nr; i0 += V4_FAST_ROWS) {
        int64_t row[V4_FAST_ROWS];
        __m512 acc[V4_FAST_ROWS];
        int n = row_group(r + i0, nr - i0, row, acc);
        rows_dot_plain(w, row, x, acc);
        for (int i = 0; i < n; i++) y[i0 + i] = reduce16(acc[i]);
    }
}

/* ---- the pair order (fast.h) ---------------------------------------------- */

/* The odd columns (*o) and the even ones (*e) of thirty-two values, a
 * holding columns 0-15 and b 16-31: two vpermt2ps. */
INLINE void split_pairs(__m512 a, __m512 b, __m512 *o, __m512 *e)
{
    const __m512i odd =
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    *o = _mm512_permutex2var_ps(a, odd, b);
    *e = _mm512_permutex2var_ps(a, even, b);
}

/* The n values at in (a multiple of 32) with each 32 permuted, into out
 * (which may be in). */
INLINE void permute_pairs(const float *in, int64_t n, float *out)
{
    for (int64_t k = 0; k < n; k += V4_PAIRS_COLUMNS) {
        __m512 o, e;
        split_pairs(_mm512_loadu_ps(in + k), _mm512_loadu_ps(in + k + 16), &o, &e);
        _mm512_storeu_ps(out + k, o);
        _mm512_storeu_ps(out + k + 16, e);
    }
}

/* Thirty-two e4m3 codes (no NaN code) as fp8x16_tiny's values, the odd
 * columns into *o and the even ones into *e, by shifts alone: a byte
 * sign-extended to 16 bits and shifted left by 4 has, under the mask,
 * fp8x16_tiny's top 16 bits, and the odd byte of each pair is the top
 * half of its 32-bit lane, the even one the bottom half.  Three operations
 * and one widening per 32 weights, where fp8x16_tiny took two widenings
 * and four operations. */
INLINE void fp8_pairs_tiny(const uint8_t *p, __m512 *o, __m512 *e)
{
    __m512i h = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)p));
    h = _mm512_and_si512(_mm512_slli_epi16(h, 4), _mm512_set1_epi16((short)0x87F0));
    *o = _mm512_castsi512_ps(_mm512_and_si512(h, _mm512_set1_epi32((int)0xFFFF0000)));
    *e = _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
}

/* Thirty-two e2m1 codes (sixteen bytes) by the scaled table t: the odd
 * columns are the high nibbles, the even ones the low (vpermps reads an
 * index's low four bits), so one widening serves both. */
INLINE void fp4_pairs(const uint8_t *p, __m512 t, __m512 *o, __m512 *e)
{
    __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
    *o = _mm512_permutexvar_ps(_mm512_srli_epi32(c, 4), t);
    *e = _mm512_permutexvar_ps(c, t);
}

/* Thirty-two BF16 weights: the odd ones are the top halves of the 32-bit
 * lanes, the even ones the bottom halves. */
INLINE void bf16_pairs(const uint8_t *p, __m512 *o, __m512 *e)
{
    __m512i v = _mm512_loadu_si512((const void *)p);
    *o = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000)));
    *e = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/* Thirty-two weights of a row by the general decoder, split by shuffles. */
INLINE void general_pairs(const v4_weight *w, int64_t row, int64_t k, __m512 *o, __m512 *e)
{
    split_pairs(decode16(w, row, k), decode16(w, row, k + 16), o, e);
}

/* One pair-order step of a row: odd weights against the first sixteen
 * permuted inputs, then even ones against the next sixteen. */
INLINE __m512 pair_step(__m512 acc, __m512 o, __m512 e, __m512 xo, __m512 xe)
{
    return _mm512_fmadd_ps(e, xe, _mm512_fmadd_ps(o, xo, acc));
}

/* block_fp8 in the pair order, over permuted inputs xp. */
INLINE void pairs_block_fp8(const uint8_t *const *p, int64_t k0, const float *xp, int64_t len,
                            __m512 f, const int folded, __m512 *acc)
{
    __m512 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int64_t k = 0; k < len; k += V4_PAIRS_COLUMNS) {
        __m512 xo = _mm512_loadu_ps(xp + k), xe = _mm512_loadu_ps(xp + k + 16);
#define ROW(a, i)                                                                                  \
    do {                                                                                           \
        __m512 o, e;                                                                               \
        fp8_pairs_tiny(p[i] + k0 + k, &o, &e);                                                     \
        if (!folded) o = mul_exact(o, f), e = mul_exact(e, f);                                     \
        a = pair_step(a, o, e, xo, xe);                                                            \
    } while (0)
        ROW(a0, 0);
        ROW(a1, 1);
        ROW(a2, 2);
        ROW(a3, 3);
#undef ROW
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* Rows of one row block whose every column block takes the short path with
 * folded inputs xf (v4_fp8_folded.whole): one pass, no block bounds. */
INLINE void pairs_whole_fp8(const v4_weight *w, const int64_t *row, const float *xf, __m512 *acc)
{
    const uint8_t *p[V4_FAST_ROWS];
    for (int i = 0; i < V4_FAST_ROWS; i++) p[i] = w->data + row[i] * w->cols;
    int64_t ahead = V4_FAST_ROWS * w->cols; /* the next call's rows (fast.h) */
    __m512 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int64_t k = 0; k < w->cols; k += V4_PAIRS_COLUMNS) {
        __m512 xo = _mm512_loadu_ps(xf + k), xe = _mm512_loadu_ps(xf + k + 16);
#define ROW(a, i)                                                                                  \
    do {                                                                                           \
        __m512 o, e;                                                                               \
        if (k % 64 == 0) v4_fast_next_rows(p[i] + k, ahead, 64);                                   \
        fp8_pairs_tiny(p[i] + k, &o, &e);                                                          \
        a = pair_step(a, o, e, xo, xe);                                                            \
    } while (0)
        ROW(a0, 0);
        ROW(a1, 1);
        ROW(a2, 2);
        ROW(a3, 3);
#undef ROW
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* rows_dot_fp8 in the pair order; `folded` holds the permuted inputs for
 * row[0]'s row block. */
INLINE void pairs_rows_fp8(const v4_weight *w, const int64_t *row, const float *xp,
                           const v4_fp8_folded *folded, __m512 *acc)
{
    if (folded->whole) {
        pairs_whole_fp8(w, row, folded->x, acc);
        return;
    }
    for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP8_BLOCK) {
        int64_t end = k0 + V4_FP8_BLOCK < w->cols ? k0 + V4_FP8_BLOCK : w->cols;
        const uint8_t *p[V4_FAST_ROWS];
        __m512 f;
        if (fp8_block_short(w, row, k0, end, p, &f)) {
            if (folded->exact[k0 / V4_FP8_BLOCK])
                pairs_block_fp8(p, k0, folded->x + k0, end - k0, f, 1, acc);
            else
                pairs_block_fp8(p, k0, xp + k0, end - k0, f, 0, acc);
            continue;
        }
        for (int64_t k = k0; k < end; k += V4_PAIRS_COLUMNS) {
            __m512 xo = _mm512_loadu_ps(xp + k), xe = _mm512_loadu_ps(xp + k + 16);
            for (int i = 0; i < V4_FAST_ROWS; i++) {
                __m512 o, e;
                general_pairs(w, row[i], k, &o, &e);
                acc[i] = pair_step(acc[i], o, e, xo, xe);
            }
        }
    }
}

/* rows_dot_fp4 in the pair order. */
INLINE void pairs_rows_fp4(const v4_weight *w, const int64_t *row, const float *xp, __m512 *acc)
{
    const float(*scaled)[16] = v4_fast_e2m1_scaled();
    const uint8_t *p[V4_FAST_ROWS], *e[V4_FAST_ROWS];
    fp4_rows(w, row, p, e);
    __m512 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int64_t k0 = 0; k0 < w->cols; k0 += FP4_SPAN * V4_FP4_BLOCK) {
        int nb = fp4_span(w, p, k0);
        for (int b = 0; b < nb; b++) {
            int64_t k = k0 + b * V4_FP4_BLOCK;
            __m512 xo = _mm512_loadu_ps(xp + k), xe = _mm512_loadu_ps(xp + k + 16);
#define ROW(a, i)                                                                                  \
    do {                                                                                           \
        __m512 o, ev;                                                                              \
        fp4_pairs(p[i] + k / 2, _mm512_loadu_ps(scaled[e[i][k / V4_FP4_BLOCK]]), &o, &ev);         \
        a = pair_step(a, o, ev, xo, xe);                                                           \
    } while (0)
            ROW(a0, 0);
            ROW(a1, 1);
            ROW(a2, 2);
            ROW(a3, 3);
#undef ROW
        }
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* BF16 rows (the LM head's) in the pair order: four named accumulators,
 * so they stay in registers. */
INLINE void pairs_rows_bf16(const v4_weight *w, const int64_t *row, const float *xp, __m512 *acc)
{
    const uint8_t *p[V4_FAST_ROWS];
    for (int i = 0; i < V4_FAST_ROWS; i++) p[i] = w->data + row[i] * w->cols * 2;
    int64_t ahead = V4_FAST_ROWS * w->cols * 2; /* the next call's rows (fast.h) */
    __m512 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int64_t k = 0; k < w->cols; k += V4_PAIRS_COLUMNS) {
        __m512 xo = _mm512_loadu_ps(xp + k), xe = _mm512_loadu_ps(xp + k + 16);
#define ROW(a, i)                                                                                  \
    do {                                                                                           \
        __m512 o, e;                                                                               \
        v4_fast_next_rows(p[i] + k * 2, ahead, 64);                                                \
        bf16_pairs(p[i] + k * 2, &o, &e);                                                          \
        a = pair_step(a, o, e, xo, xe);                                                            \
    } while (0)
        ROW(a0, 0);
        ROW(a1, 1);
        ROW(a2, 2);
        ROW(a3, 3);
#undef ROW
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* Any other rows (F32) by the general decoder. */
INLINE void pairs_rows_general(const v4_weight *w, const int64_t *row, const float *xp, __m512 *acc)
{
    for (int64_t k = 0; k < w->cols; k += V4_PAIRS_COLUMNS) {
        __m512 xo = _mm512_loadu_ps(xp + k), xe = _mm512_loadu_ps(xp + k + 16);
        for (int i = 0; i < V4_FAST_ROWS; i++) {
            __m512 o, e;
            general_pairs(w, row[i], k, &o, &e);
            acc[i] = pair_step(acc[i], o, e, xo, xe);
        }
    }
}

/* One Q8_0 block (34 bytes: an f16 scale, 32 int8 codes) in the pair
 * order: each value d * q is exact in F32, as the decoder makes it; the
 * codes sign-extended to 16 bits give the odd ones as the top halves of
 * the 32-bit lanes and the even ones as the bottom halves (taken by a
 * multiply-add of the halves by 1 and 0: one operation, off the shift
 * ports, where a shift pair took two). */
INLINE void q8_0_pairs(const uint8_t *b, __m512 *o, __m512 *e)
{
    uint16_t h; /* the scale by F16C, exactly: as AVX2's half_splat, 7% faster there */
    __builtin_memcpy(&h, b, sizeof h);
    __m512 d = _mm512_cvtph_ps(_mm256_set1_epi16((short)h));
    __m512i q = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(b + 2)));
    *o = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_srai_epi32(q, 16)));
    *e = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_madd_epi16(q, _mm512_set1_epi32(1))));
}

/* One MXFP4 block (17 bytes: an E8M0 scale, 16 bytes of codes, value j in
 * byte j's low nibble and value j + 16 in its high one) in the pair order:
 * each value 2^(e - 128) * level, from the block's scaled table, as the
 * decoder makes it.  Lane l takes columns 2l and 2l + 1, the low nibbles
 * of bytes 2l and 2l + 1 for l < 8 and the high nibbles of bytes 2l - 16
 * and 2l - 15 beyond: so lane l holds 16-bit pair l mod 8, shifted right by
 * 4 from lane 8 on. */
INLINE void mxfp4_pairs(const uint8_t *b, const float (*scaled)[16], __m512 *o, __m512 *e)
{
    const __m512i shifts = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
    __m512 table = _mm512_loadu_ps(scaled[b[0]]);
    __m256i twice =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(b + 1)));
    __m512i c = _mm512_srlv_epi32(_mm512_cvtepu16_epi32(twice), shifts);
    *o = _mm512_permutexvar_ps(_mm512_srli_epi32(c, 8), table); /* low 4 bits */
    *e = _mm512_permutexvar_ps(c, table);
}

/* Q8_0 or MXFP4 rows (the GGUF types with 32-value blocks decoded in the
 * pair order above; `mxfp4` a constant where it is inlined, so that each
 * type gets a loop of its own) against the permuted inputs xp. */
INLINE void pairs_rows_gguf32(const v4_weight *w, const int64_t *row, const float *xp, __m512 *acc,
                              const int mxfp4)
{
    const float(*scaled)[16] = mxfp4 ? v4_fast_mxfp4_scaled() : NULL;
    size_t row_bytes = v4_dtype_row_bytes(w->dtype, w->cols), block = scaled ? 17 : 34;
    const uint8_t *p[V4_FAST_ROWS];
    for (int i = 0; i < V4_FAST_ROWS; i++) p[i] = w->data + (size_t)row[i] * row_bytes;
    for (int64_t k = 0; k < w->cols; k += 32) {
        __m512 xo = _mm512_loadu_ps(xp + k), xe = _mm512_loadu_ps(xp + k + 16);
        size_t at = (size_t)(k / 32) * block;
#pragma GCC unroll 8
        for (int i = 0; i < V4_FAST_ROWS; i++) {
            const uint8_t *b = p[i] + at;
            __m512 o, e;
            v4_fast_next_rows(b, V4_FAST_ROWS * (int64_t)row_bytes, (int64_t)block);
            if (mxfp4)
                mxfp4_pairs(b, scaled, &o, &e);
            else
                q8_0_pairs(b, &o, &e);
            acc[i] = pair_step(acc[i], o, e, xo, xe);
        }
    }
}

/* rows_dot4 in the pair order, over permuted inputs xp. */
INLINE void pairs_rows4(const v4_weight *w, int64_t r, int nr, const float *xp,
                        v4_fp8_folded *folded, float *y)
{
    int64_t row[V4_FAST_ROWS];
    __m512 acc[V4_FAST_ROWS];
    row_group(r, nr, row, acc);
    if (w->dtype == V4_F8_E4M3) {
        if (folded->row_block != r / V4_FP8_BLOCK) fp8_fold_inputs(w, r / V4_FP8_BLOCK, xp, folded);
        pairs_rows_fp8(w, row, xp, folded, acc);
    } else if (w->dtype == V4_I8) {
        pairs_rows_fp4(w, row, xp, acc);
    } else if (w->dtype == V4_BF16) {
        pairs_rows_bf16(w, row, xp, acc);
    } else if (w->dtype == V4_Q8_0) {
        pairs_rows_gguf32(w, row, xp, acc, 0);
    } else if (w->dtype == V4_MXFP4) {
        pairs_rows_gguf32(w, row, xp, acc, 1);
    } else {
        pairs_rows_general(w, row, xp, acc);
    }
    for (int i = 0; i < nr; i++) y[i] = reduce16(acc[i]);
}

/* Whether w is a GGUF type other than Q8_0 and MXFP4 (F16, the K-quants,
 * IQ4_XS, IQ2_XXS), which the AVX2 kernels read in registers: AVX-512
 * takes their loops as they are (no wider form yet), the same bits as any
 * ISA's.  Its own way for them, decoding rows into a buffer and permuting
 * them, read a tenth as fast as those loops or less (on a Zen 3, with
 * AVX2's dot over the buffer). */
static int avx2_reads(const v4_weight *w)
{
    return v4_fast_gguf(w->dtype) && w->dtype != V4_Q8_0 && w->dtype != V4_MXFP4;
}

/* Rows in the order's layout (fast.h): plain, or in the pair order against
 * the permuted inputs xp; the GGUF types other than Q8_0 and MXFP4 by the
 * AVX2 loops (avx2_reads). */
KERNEL static void rows_dot_avx512(const v4_weight *w, int64_t r, int nr, const float *xp, float *y)
{
    if (!v4_fast_pair_order(w)) {
        plain_rows_dot(w, r, nr, xp, y);
        return;
    }
    if (avx2_reads(w)) {
        v4_fast_avx2.rows_dot(w, r, nr, xp, y);
        return;
    }
    v4_fp8_folded folded = v4_fp8_folded_none(w);
    for (int i = 0; i < nr; i += V4_FAST_ROWS)
        pairs_rows4(w, r + i, nr - i < V4_FAST_ROWS ? nr - i : V4_FAST_ROWS, xp, &folded, y + i);
}

/* Columns [k0, end) (one 128-column block) of row `row` into out in the
 * pair order's layout, exactly: block_f32's values, each 32 permuted. */
INLINE void pairs_block_f32(const v4_weight *w, int64_t row, int64_t k0, int64_t end,
                            const float (*scaled)[16], float *out)
{
    fp8_block b8 = {0};
    if (w->dtype == V4_F8_E4M3) b8 = fp8_block_at(w, row, k0, end);
    fp4_row r4 = {0}; /* only FP4 has codes and scales: F32 and BF16 have no scale */
    if (w->dtype == V4_I8) r4 = fp4_row_at(w, row, scaled);
    for (int64_t k = k0; k < end; k += V4_PAIRS_COLUMNS) {
        __m512 o, e;
        if (w->dtype == V4_F8_E4M3 && b8.short_path) {
            fp8_pairs_tiny(b8.p + k, &o, &e);
            o = mul_exact(o, b8.f), e = mul_exact(e, b8.f);
        } else if (w->dtype == V4_I8) {
            fp4_pairs(r4.q + k / 2, fp4_scaled_table(r4, k), &o, &e);
        } else if (w->dtype == V4_BF16) {
            bf16_pairs(w->data + (row * w->cols + k) * 2, &o, &e);
        } else {
            general_pairs(w, row, k, &o, &e);
        }
        _mm512_storeu_ps(out + (k - k0), o);
        _mm512_storeu_ps(out + (k - k0) + 16, e);
    }
}

/* Q8_0 or MXFP4 rows [r, r + nr) into the panel in the pair order's
 * layout, a block at a time: what the general decoder and
 * permute_pairs make, without the round trip through memory between
 * them (14% of GGUF prefill's samples, nearly half of those outside the
 * tiles). */
INLINE void gguf32_panel(const v4_weight *w, int64_t r, int nr, float *panel)
{
    const float(*scaled)[16] = w->dtype == V4_MXFP4 ? v4_fast_mxfp4_scaled() : NULL;
    size_t row_bytes = v4_dtype_row_bytes(w->dtype, w->cols), block = scaled ? 17 : 34;
    for (int i = 0; i < nr; i++) {
        const uint8_t *p = w->data + (size_t)(r + i) * row_bytes;
        float *out = panel + (size_t)i * w->cols;
        for (int64_t k = 0; k < w->cols; k += 32) {
            __m512 o, e;
            if (scaled)
                mxfp4_pairs(p + (size_t)(k / 32) * block, scaled, &o, &e);
            else
                q8_0_pairs(p + (size_t)(k / 32) * block, &o, &e);
            _mm512_storeu_ps(out + k, o);
            _mm512_storeu_ps(out + k + 16, e);
        }
    }
}

KERNEL static void decode_rows_avx512(const v4_weight *w, int64_t r, int nr, float *panel)
{
    if (!v4_fast_pair_order(w)) {
        plain_decode_rows(w, r, nr, panel);
        return;
    }
    if (w->dtype == V4_Q8_0 || w->dtype == V4_MXFP4) {
        gguf32_panel(w, r, nr, panel);
        return;
    }
    if (avx2_reads(w)) {
        v4_fast_avx2.decode_rows(w, r, nr, panel);
        return;
    }
    const float(*scaled)[16] = w->dtype == V4_I8 ? v4_fast_e2m1_scaled() : NULL;
    for (int i = 0; i < nr; i++)
        for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP8_BLOCK) {
            int64_t end = k0 + V4_FP8_BLOCK < w->cols ? k0 + V4_FP8_BLOCK : w->cols;
            panel_next_rows(w, r + i, V4_FAST_ROWS, k0, end);
            pairs_block_f32(w, r + i, k0, end, scaled, panel + (size_t)i * w->cols + k0);
        }
}

/* ---- the lane tile (fast.h) ---------------------------------------------- */

/* v[i] = element i of each of the sixteen vectors, in place: a 16 x 16
 * transpose in four rounds of shuffles (pairs of elements, of pairs, of
 * 128-bit quarters, of halves). */
INLINE void transpose16(__m512 v[16])
{
    __m512 a[16], b[16];
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {
        a[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
        a[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 16; i += 4)
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m512d x = _mm512_castps_pd(a[i + h]), y = _mm512_castps_pd(a[i + 2 + h]);
            b[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(x, y));
            b[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(x, y));
        }
        /* b[4q + m] holds, in each 128-bit quarter c, column 4c + m of rows
         * 4q .. 4q + 3 */
#pragma GCC unroll 4
    for (int m = 0; m < 4; m++) {
        __m512 lo0 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x88),
               hi0 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xDD),
               lo1 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x88),
               hi1 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xDD);
        v[m] = _mm512_shuffle_f32x4(lo0, lo1, 0x88);
        v[8 + m] = _mm512_shuffle_f32x4(lo0, lo1, 0xDD);
        v[4 + m] = _mm512_shuffle_f32x4(hi0, hi1, 0x88);
        v[12 + m] = _mm512_shuffle_f32x4(hi0, hi1, 0xDD);
    }
}

/* Sixteen decoded rows (`stride` values apart, zero rows past `live`) into
 * the lane panel's sixteen rows at `lanes`, their steps j0 .. j0 + nj:
 * each step's sixteen values of the rows transposed to one vector per
 * lane. */
INLINE void rows_to_lanes(const float *rows, int64_t stride, int live, int64_t j0, int64_t nj,
                          int64_t steps, float *lanes)
{
    for (int64_t j = 0; j < nj; j++) {
        __m512 v[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            v[i] = i < live ? _mm512_loadu_ps(rows + i * stride + j * 16) : _mm512_setzero_ps();
        transpose16(v);
#pragma GCC unroll 16
        for (int l = 0; l < 16; l++)
            _mm512_store_ps(lanes + l * v4_fast_lane_stride(steps) + (j0 + j) * V4_FAST_LANE_ROWS,
                            v[l]);
    }
}

/* Rows [r, r + nr) into the lane panel (fast.h).  The pair order's own
 * types are decoded a 128-column block of sixteen rows at a time, in L1;
 * the others (GGUF's, the plain order) a whole row at a time into
 * scratch. */
KERNEL static void decode_lanes_avx512(const v4_weight *w, int64_t r, int nr, float *scratch,
                                       float *panel)
{
    int64_t steps = w->cols / V4_FAST_LANES;
    int whole_rows = !v4_fast_pair_order(w) || v4_fast_gguf(w->dtype);
    const float(*scaled)[16] = w->dtype == V4_I8 ? v4_fast_e2m1_scaled() : NULL;
    for (int i0 = 0; i0 < V4_FAST_LANE_ROWS; i0 += 16) {
        int live = nr - i0 < 0 ? 0 : nr - i0 < 16 ? nr - i0 : 16;
        float *lanes = panel + i0;
        if (whole_rows) {
            if (live) decode_rows_avx512(w, r + i0, live, scratch);
            rows_to_lanes(scratch, w->cols, live, 0, steps, steps, lanes);
            continue;
        }
        float block[16][V4_FP8_BLOCK];
        for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP8_BLOCK) {
            int64_t end = k0 + V4_FP8_BLOCK < w->cols ? k0 + V4_FP8_BLOCK : w->cols;
            for (int i = 0; i < live; i++) {
                /* the next sixteen rows': four rows ahead (decode_rows'
                 * distance) would be only a few blocks ahead here */
                panel_next_rows(w, r + i0 + i, 16, k0, end);
                pairs_block_f32(w, r + i0 + i, k0, end, scaled, block[i]);
            }
            rows_to_lanes(block[0], V4_FP8_BLOCK, live, k0 / V4_FAST_LANES,
                          (end - k0) / V4_FAST_LANES, steps, lanes);
        }
    }
}

/* The lane tile for NT tokens (a constant where it is inlined): for one
 * lane, the panel's 64 rows in four vectors, each token's input broadcast
 * from the packed copy, steps [j0, j1). */
INLINE void lane_chain(const float *w, const float *x, const int NT, int64_t j0, int64_t j1,
                       int fresh, float *sums)
{
    __m512 a[V4_FAST_TOKENS][4];
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            a[t][v] =
                fresh ? _mm512_setzero_ps() : _mm512_load_ps(sums + t * V4_FAST_LANE_ROWS + v * 16);
    for (int64_t j = j0; j < j1; j++) {
        const float *b = w + j * V4_FAST_LANE_ROWS;
        __m512 w0 = _mm512_load_ps(b), w1 = _mm512_load_ps(b + 16), w2 = _mm512_load_ps(b + 32),
               w3 = _mm512_load_ps(b + 48);
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            __m512 xv = _mm512_set1_ps(x[j * V4_FAST_TOKENS + t]);
            a[t][0] = _mm512_fmadd_ps(w0, xv, a[t][0]);
            a[t][1] = _mm512_fmadd_ps(w1, xv, a[t][1]);
            a[t][2] = _mm512_fmadd_ps(w2, xv, a[t][2]);
            a[t][3] = _mm512_fmadd_ps(w3, xv, a[t][3]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) _mm512_store_ps(sums + t * V4_FAST_LANE_ROWS + v * 16, a[t][v]);
}

KERNEL static void lane_tile_avx512(const float *panel, const float *xs, int nt, int64_t steps,
                                    int64_t j0, int64_t j1, int fresh, float *sums)
{
    for (int l = 0; l < V4_FAST_LANES; l++) {
        const float *w = panel + l * v4_fast_lane_stride(steps),
                    *x = xs + l * steps * V4_FAST_TOKENS;
        float *s = sums + l * V4_FAST_TOKENS * V4_FAST_LANE_ROWS;
        FOR_TOKEN_COUNT(nt, lane_chain(w, x, NT, j0, j1, fresh, s));
    }
}

/* The lane tree (fast.h's, a[i] + a[i + 8], then + [i + 4], + [i + 2],
 * + [i + 1]) of sixteen rows at once: one vector add per node. */
KERNEL static void lane_reduce_avx512(const float *sums, int nt, int nr, float *y, int64_t ystride)
{
    const int64_t lane = V4_FAST_TOKENS * V4_FAST_LANE_ROWS;
    for (int t = 0; t < nt; t++)
        for (int v = 0; v * 16 < nr; v++) {
            const float *s = sums + t * V4_FAST_LANE_ROWS + v * 16;
            __m512 s8[8], s4[4];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                s8[i] =
                    _mm512_add_ps(_mm512_load_ps(s + i * lane), _mm512_load_ps(s + (i + 8) * lane));
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) s4[i] = _mm512_add_ps(s8[i], s8[i + 4]);
            __m512 sum = _mm512_add_ps(_mm512_add_ps(s4[0], s4[2]), _mm512_add_ps(s4[1], s4[3]));
            int left = nr - v * 16;
            __mmask16 rows = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            _mm512_mask_storeu_ps(y + t * ystride + v * 16, rows, sum);
        }
}

/* ---- attention over stored KV rows ---------------------------------------- */

/* Sixteen e4m3 bytes with no NaN code, as floats times `sc` (2^8 times
 * their scale, finite): fp8x32_f16's f16 patterns, half the width. */
INLINE __m512 fp8x16_quick(const uint8_t *p, __m512 sc)
{
    __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)p));
    __m256i h = _mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(b, 8), 1),
                                 _mm256_set1_epi16((short)0xBF80));
    return _mm512_mul_ps(_mm512_cvtph_ps(h), sc);
}

/* Columns [k, k + 16) of a stored row, decoded whatever its codes. */
INLINE __m512 kv16(const v4_kv_format *f, const uint8_t *row, int64_t k)
{
    if (k < f->fp8) return fp8x16(row + k, v4_fast_scale(row[f->fp8 + k / V4_KV_FP8_BLOCK]));
    const uint8_t *tail = v4_kv_tail(f, row);
    k -= f->fp8;
    if (f->tail_bf16) return bf16x16(tail + 2 * k);
    return _mm512_loadu_ps((const float *)(const void *)(tail + 4 * k));
}

/* 2^8 times the scale of the FP8 codes [k, k + n) of a row (one scale
 * block) when fp8x16_quick decodes them exactly (no NaN code, a finite
 * product), else 0. */
INLINE float kv_quick_scale(const v4_kv_format *f, const uint8_t *row, int64_t k, int64_t n)
{
    uint8_t e = row[f->fp8 + k / V4_KV_FP8_BLOCK];
    if ((e >= 247 && e != 0xFF) || has_fp8_nan(row + k, n)) return 0;
    return v4_fast_scale(e) * 256.0f;
}

/* The scores' tile for NT heads (a constant where it is inlined): each
 * sixteen columns of the four rows decoded once for all NT heads; an FP8
 * block's scales and NaN test once per block. */
INLINE void kv_tile(const v4_kv_format *f, const uint8_t *const *rows, const float *const *xs,
                    const int NT, v4_fast_acc acc)
{
    __m512 a[V4_FAST_ROWS][V4_FAST_TOKENS], wv[V4_FAST_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < V4_FAST_ROWS; i++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) a[i][t] = _mm512_loadu_ps(acc[t][i]);
#define KV_STEP(k)                                                                                 \
    do {                                                                                           \
        _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++)                                       \
        {                                                                                          \
            __m512 xv = _mm512_loadu_ps(xs[t] + (k));                                              \
            _Pragma("GCC unroll 8") for (int i = 0; i < V4_FAST_ROWS; i++) a[i][t] =               \
                _mm512_fmadd_ps(wv[i], xv, a[i][t]);                                               \
        }                                                                                          \
    } while (0)
    for (int64_t k0 = 0; k0 < f->fp8; k0 += V4_KV_FP8_BLOCK) {
        float sc[V4_FAST_ROWS];
        int quick = 1;
        for (int i = 0; i < V4_FAST_ROWS; i++) {
            sc[i] = kv_quick_scale(f, rows[i], k0, V4_KV_FP8_BLOCK);
            quick &= sc[i] != 0;
        }
        for (int64_t k = k0; k < k0 + V4_KV_FP8_BLOCK; k += 16) {
#pragma GCC unroll 8
            for (int i = 0; i < V4_FAST_ROWS; i++)
                wv[i] =
                    quick ? fp8x16_quick(rows[i] + k, _mm512_set1_ps(sc[i])) : kv16(f, rows[i], k);
            KV_STEP(k);
        }
    }
    for (int64_t k = f->fp8; k < f->fp8 + f->tail; k += 16) {
#pragma GCC unroll 8
        for (int i = 0; i < V4_FAST_ROWS; i++) wv[i] = kv16(f, rows[i], k);
        KV_STEP(k);
    }
#undef KV_STEP
#pragma GCC unroll 8
    for (int i = 0; i < V4_FAST_ROWS; i++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) _mm512_storeu_ps(acc[t][i], a[i][t]);
}

/* kv_tile for each head count, as a table. */
typedef void kv_tile_fn(const v4_kv_format *f, const uint8_t *const *rows, const float *const *xs,
                        v4_fast_acc acc);
#define KV_TILE(NT)                                                                                \
    KERNEL static void kv_tile_##NT(const v4_kv_format *f, const uint8_t *const *rows,             \
                                    const float *const *xs, v4_fast_acc acc)                       \
    {                                                                                              \
        kv_tile(f, rows, xs, NT, acc);                                                             \
    }
KV_TILE(1)
KV_TILE(2)
KV_TILE(3)
KV_TILE(4)
KV_TILE(5)
KV_TILE(6)
#undef KV_TILE
static kv_tile_fn *const kv_tiles[V4_FAST_TOKENS] = {kv_tile_1, kv_tile_2, kv_tile_3,
                                                     kv_tile_4, kv_tile_5, kv_tile_6};

KERNEL static void kv_tile_acc_avx512(const v4_kv_format *f, const uint8_t *const *rows,
                                      const float *const *xs, int nt, v4_fast_acc acc)
{
    kv_tiles[nt - 1](f, rows, xs, acc);
}

/* Columns [k, k + 32) of a stored row (an FP8 slice lies in one scale
 * block: k is a multiple of 32), decoded. */
INLINE void kv32(const v4_kv_format *f, const uint8_t *row, int64_t k, __m512 *v0, __m512 *v1)
{
    float sc = k < f->fp8 ? kv_quick_scale(f, row, k, 32) : 0;
    if (sc != 0) {
        *v0 = fp8x16_quick(row + k, _mm512_set1_ps(sc));
        *v1 = fp8x16_quick(row + k + 16, _mm512_set1_ps(sc));
    } else {
        *v0 = kv16(f, row, k);
        *v1 = kv16(f, row, k + 16);
    }
}

/* P.V for G heads (a constant where it is inlined) over 32 columns from
 * k: each row's slice decoded once for the G heads, 2 G chains of fused
 * multiply-adds, the weights broadcast from p. */
INLINE void kv_sum_heads(const v4_kv_format *f, const uint8_t *const *rows, int64_t n,
                         const float *p, int64_t pstride, const int G, int64_t k, float *o,
                         int64_t ostride)
{
    __m512 lo[8], hi[8];
#pragma GCC unroll 8
    for (int h = 0; h < G; h++) {
        lo[h] = _mm512_loadu_ps(o + h * ostride + k);
        hi[h] = _mm512_loadu_ps(o + h * ostride + k + 16);
    }
    for (int64_t s = 0; s < n; s++) {
        __m512 v0, v1;
        kv32(f, rows[s], k, &v0, &v1);
#pragma GCC unroll 8
        for (int h = 0; h < G; h++) {
            __m512 w = _mm512_set1_ps(p[h * pstride + s]);
            lo[h] = _mm512_fmadd_ps(w, v0, lo[h]);
            hi[h] = _mm512_fmadd_ps(w, v1, hi[h]);
        }
    }
#pragma GCC unroll 8
    for (int h = 0; h < G; h++) {
        _mm512_storeu_ps(o + h * ostride + k, lo[h]);
        _mm512_storeu_ps(o + h * ostride + k + 16, hi[h]);
    }
}

/* The same over 16 columns (a head size off 32), head by head. */
INLINE void kv_sum_tail16(const v4_kv_format *f, const uint8_t *const *rows, int64_t n,
                          const float *p, int64_t pstride, int nh, int64_t k, float *o,
                          int64_t ostride)
{
    for (int h = 0; h < nh; h++) {
        __m512 acc = _mm512_loadu_ps(o + h * ostride + k);
        for (int64_t s = 0; s < n; s++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(p[h * pstride + s]), kv16(f, rows[s], k), acc);
        _mm512_storeu_ps(o + h * ostride + k, acc);
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
KV_SUM(5)
KV_SUM(6)
KV_SUM(7)
KV_SUM(8)
#undef KV_SUM
static kv_sum_fn *const kv_sums[8] = {kv_sum_1, kv_sum_2, kv_sum_3, kv_sum_4,
                                      kv_sum_5, kv_sum_6, kv_sum_7, kv_sum_8};

KERNEL static void kv_weighted_sum_avx512(const v4_kv_format *f, const uint8_t *const *rows,
                                          int64_t n, const float *p, int64_t pstride, int nh,
                                          int64_t c0, int64_t c1, float *o, int64_t ostride)
{
    int64_t k = c0;
    for (; k + 32 <= c1; k += 32)
        for (int h = 0; h < nh; h += 8)
            kv_sums[(nh - h < 8 ? nh - h : 8) - 1](f, rows, n, p + h * pstride, pstride, k,
                                                   o + h * ostride, ostride);
    if (k < c1) kv_sum_tail16(f, rows, n, p, pstride, nh, k, o, ostride);
}

KERNEL static void kv_decode_avx512(const v4_kv_format *f, const uint8_t *row, int64_t c0,
                                    int64_t c1, float *out)
{
    for (int64_t k = c0; k < c1; k += 16) _mm512_storeu_ps(out + (k - c0), kv16(f, row, k));
}

/* The lane trees of sixteen vectors at once, with the very additions
 * reduce16 makes (so the same bits), two vectors' halves per add: level by
 * level, a[i] + a[i+8] for pairs of vectors, + [i+4] for fours, + [i+2] and
 * + [i+1] within 128-bit lanes.  Element 4 j + m of the result is the sum
 * of v[4 m + j]. */
INLINE __m512 reduce16x16(const __m512 v[16])
{
    __m512 l1[8], l2[4], l3[2];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        l1[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0x44),
                              _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0xEE));
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        l2[k] = _mm512_add_ps(_mm512_shuffle_f32x4(l1[2 * k], l1[2 * k + 1], 0x88),
                              _mm512_shuffle_f32x4(l1[2 * k], l1[2 * k + 1], 0xDD));
#pragma GCC unroll 2
    for (int k = 0; k < 2; k++)
        l3[k] = _mm512_add_ps(_mm512_shuffle_ps(l2[2 * k], l2[2 * k + 1], 0x44),
                              _mm512_shuffle_ps(l2[2 * k], l2[2 * k + 1], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_ps(l3[0], l3[1], 0x88),
                         _mm512_shuffle_ps(l3[0], l3[1], 0xDD));
}
/* Four tokens' tiles at a time: sixteen sums in one reduce16x16, put back
 * as token t's four rows in 128-bit lane t. */
KERNEL static void reduce_avx512(const v4_fast_acc acc, int nt, int nr, float *y, int64_t ystride)
{
    const __m512i by_token =
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (int t0 = 0; t0 < nt; t0 += 4) {
        __m512 v[16];
#pragma GCC unroll 16
        for (int k = 0; k < 16; k++)
            v[k] = t0 + k / 4 < nt ? _mm512_loadu_ps(acc[t0 + k / 4][k % 4]) : _mm512_setzero_ps();
        __m512 sums = _mm512_permutexvar_ps(by_token, reduce16x16(v));
        /* Masked stores (a loop over nr floats became a call to memmove) of
         * the 128-bit lanes, taken from the register: stored to the stack
         * and loaded back a lane at a time instead, they waited on the
         * store (reduce_avx512 was 2.4% of a flash-shape prefill's samples,
         * two thirds of them on that wait). */
        const __mmask8 rows = (__mmask8)((1u << nr) - 1);
        _mm_mask_storeu_ps(y + t0 * ystride, rows, _mm512_castps512_ps128(sums));
        if (t0 + 1 < nt)
            _mm_mask_storeu_ps(y + (t0 + 1) * ystride, rows, _mm512_extractf32x4_ps(sums, 1));
        if (t0 + 2 < nt)
            _mm_mask_storeu_ps(y + (t0 + 2) * ystride, rows, _mm512_extractf32x4_ps(sums, 2));
        if (t0 + 3 < nt)
            _mm_mask_storeu_ps(y + (t0 + 3) * ystride, rows, _mm512_extractf32x4_ps(sums, 3));
    }
}

/* ---- the pair order with vdpbf16ps (fast.h) ------------------------------- */

#define KERNEL_BF16 __attribute__((target(TARGET ",avx512bf16")))
#define INLINE_BF16 __attribute__((target(TARGET ",avx512bf16"), always_inline)) static inline

/* Thirty-two floats that BF16 holds as BF16, columns in order. */
INLINE_BF16 __m512bh bf16x32(__m512 lo, __m512 hi)
{
    return _mm512_cvtne2ps_pbh(hi, lo);
}

INLINE_BF16 __m512bh load_bf16x32(const uint16_t *p)
{
    return (__m512bh)_mm512_loadu_si512((const void *)p);
}

/* The input is read in full before any output is written, and the output
 * lies no further on than the input: so out may be in. */
KERNEL_BF16 static void to_bf16_avx512(const float *in, int64_t n, uint16_t *out)
{
    for (int64_t i = 0; i < n; i += 32) {
        __m512bh v = bf16x32(_mm512_loadu_ps(in + i), _mm512_loadu_ps(in + i + 16));
        _mm512_storeu_si512((void *)(out + i), (__m512i)v);
    }
}

/* The register tile of the pair order for NT tokens (a constant where it is
 * inlined): one vdpbf16ps per row, token and 32 columns. */
INLINE_BF16 void pairs_tile(const uint16_t *const *rows, const uint16_t *const *xs, const int NT,
                            int64_t klen, int fresh, v4_fast_acc acc)
{
    __m512 a[V4_FAST_ROWS][V4_FAST_TOKENS];
#pragma GCC unroll 8
    for (int i = 0; i < V4_FAST_ROWS; i++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++)
            a[i][t] = fresh ? _mm512_setzero_ps() : _mm512_loadu_ps(acc[t][i]);
    for (int64_t k = 0; k < klen; k += V4_PAIRS_COLUMNS) {
        __m512bh wv[V4_FAST_ROWS];
#pragma GCC unroll 8
        for (int i = 0; i < V4_FAST_ROWS; i++) wv[i] = load_bf16x32(rows[i] + k);
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            __m512bh xv = load_bf16x32(xs[t] + k);
#pragma GCC unroll 8
            for (int i = 0; i < V4_FAST_ROWS; i++) a[i][t] = _mm512_dpbf16_ps(a[i][t], wv[i], xv);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < V4_FAST_ROWS; i++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) _mm512_storeu_ps(acc[t][i], a[i][t]);
}

KERNEL_BF16 static void pairs_tile_avx512(const uint16_t *const *rows, const uint16_t *const *xs,
                                          int nt, int64_t klen, int fresh, v4_fast_acc acc)
{
    FOR_TOKEN_COUNT(nt, pairs_tile(rows, xs, NT, klen, fresh, acc));
}

/* FP8/FP4 rows as BF16, by the plain order's decoders, 32 columns a store. */
KERNEL_BF16 static void pairs_decode_rows_avx512(const v4_weight *w, int64_t r, int nr,
                                                 uint16_t *panel)
{
    int fp8 = w->dtype == V4_F8_E4M3;
    const float(*scaled)[16] = fp8 ? NULL : v4_fast_e2m1_scaled();
    for (int i = 0; i < nr; i++) {
        int64_t row = r + i;
        uint16_t *out = panel + (size_t)i * w->cols;
        fp4_row r4 = fp4_row_at(w, row, scaled);
        for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP8_BLOCK) {
            int64_t end = k0 + V4_FP8_BLOCK < w->cols ? k0 + V4_FP8_BLOCK : w->cols;
            panel_next_rows(w, row, V4_FAST_ROWS, k0, end);
            fp8_block b = fp8 ? fp8_block_at(w, row, k0, end) : (fp8_block){0};
            for (int64_t k = k0; k < end; k += V4_PAIRS_COLUMNS) {
                __m512 lo, hi;
                if (fp8) {
                    lo = fp8_block16(&b, w, row, k);
                    hi = fp8_block16(&b, w, row, k + 16);
                } else {
                    __m512 table = fp4_scaled_table(r4, k);
                    lo = fp4_16(r4, k, table);
                    hi = fp4_16(r4, k + 16, table);
                }
                _mm512_storeu_si512((void *)(out + k), (__m512i)bf16x32(lo, hi));
            }
        }
    }
}

const v4_pairs_kernels v4_pairs_avx512bf16 = {to_bf16_avx512, pairs_decode_rows_avx512,
                                              pairs_tile_avx512};

KERNEL static void permute_pairs_avx512(const float *in, int64_t n, float *out)
{
    permute_pairs(in, n, out);
}

const v4_fast_kernels v4_fast_avx512 = {"avx512",
                                        2048,
                                        1024,
                                        decode_rows_avx512,
                                        tile_acc_avx512,
                                        rows_dot_avx512,
                                        kv_tile_acc_avx512,
                                        kv_weighted_sum_avx512,
                                        kv_decode_avx512,
                                        reduce_avx512,
                                        permute_pairs_avx512,
                                        decode_lanes_avx512,
                                        lane_tile_avx512,
                                        lane_reduce_avx512};
#endif
