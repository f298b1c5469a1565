/*
 * exact.c - the engine's compute kernels over v4_weight and F32 rows.
 *
 * Weights stay in the checkpoint's own formats and are decoded row by row
 * (rows.c) into F32 scratch right before use.  A matmul decodes a tile of weight rows once and
 * applies it to every token row of the batch, so prefill amortises the decoding over the chunk
 * while decode (one token) pays it once per row as it must.
 *
 * Each inner loop has a plain C reference version and, where it pays, an
 * AVX2 version selected at run time, and prefill's products an AVX-512
 * register tile where the fast kernels run AVX-512 (the default build
 * stays portable; --enable-native lets the compiler tune the reference
 * loops too).  All round every product and sum in the same order, so
 * their results are bit-identical.
 */
#include "engine/internal.h"
#include "engine/kernels/avx2_formats.h"
#include "engine/kernels/blocks.h"
#include "engine/kernels/fast.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ---- dot products ----------------------------------------------------------
 *
 * Every dot product in the engine accumulates in input order, rounding the
 * product and then the sum (never a fused multiply-add), which is exactly
 * what the reference's matrix products do (refmath.c says why that matters:
 * V4 rounds KV vectors to FP8, and an input a few ulps away from the
 * reference's can land on the other side of a rounding midpoint).  SIMD
 * kernels therefore vectorise across independent outputs (lanes = rows),
 * never within one sum, and give bit-identical results to the scalar loops.
 */

static float dot_scalar(const float *a, const float *b, int n)
{
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

float v4_dot(const float *a, const float *b, int n)
{
    return dot_scalar(a, b, n);
}

static void axpy_scalar(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

#ifdef V4_HAVE_X86
/* A multiply then an add, as the scalar loop rounds (never fused). */
__attribute__((target("avx2,fma"))) static void axpy_avx2(float *y, float a, const float *x, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i),
                                              _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    axpy_scalar(y + i, a, x + i, n - i);
}
#endif

void v4_axpy(float *y, float a, const float *x, int n)
{
#ifdef V4_HAVE_X86
    if (v4_cpu_has_avx2()) {
        axpy_avx2(y, a, x, n);
        return;
    }
#endif
    axpy_scalar(y, a, x, n);
}

#define LANES 8
#define GROUP 4
/* Prefill's register tile on AVX-512 (below): the lanes of a vector, the
 * rows (four vectors) and tokens it takes at once, and the columns of a
 * run. */
#define WIDE_LANES   16
#define WIDE_ROWS    64
#define WIDE_TOKENS  6
#define WIDE_COLUMNS 512

/* out[g][j] = sum_k tiles[g][k*LANES + j] * xs[g][k], for g < G <= GROUP:
 * G transposed tiles of LANES rows against G input vectors (the same tile
 * against G tokens in prefill, G tiles against one token in decode).  The
 * G independent accumulators keep the FMA pipeline busy. */
static void dot_tiles_scalar(const float *const *tiles, const float *const *xs, int G, int n,
                             float *out)
{
    float acc[GROUP][LANES] = {{0}};
    for (int k = 0; k < n; k++)
        for (int g = 0; g < G; g++)
            for (int j = 0; j < LANES; j++) acc[g][j] += tiles[g][k * LANES + j] * xs[g][k];
    memcpy(out, acc, (size_t)G * LANES * sizeof(float));
}

#ifdef V4_HAVE_X86
__attribute__((target("avx2,fma"))) static void
dot_tiles_avx2(const float *const *tiles, const float *const *xs, int G, int n, float *out)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *t0 = tiles[0], *t1 = tiles[G > 1], *t2 = tiles[G > 2 ? 2 : 0];
    const float *t3 = tiles[G > 3 ? 3 : 0];
    const float *x0 = xs[0], *x1 = xs[G > 1], *x2 = xs[G > 2 ? 2 : 0], *x3 = xs[G > 3 ? 3 : 0];
    for (int k = 0; k < n; k++) {
        a0 = _mm256_add_ps(a0,
                           _mm256_mul_ps(_mm256_loadu_ps(t0 + k * LANES), _mm256_set1_ps(x0[k])));
        a1 = _mm256_add_ps(a1,
                           _mm256_mul_ps(_mm256_loadu_ps(t1 + k * LANES), _mm256_set1_ps(x1[k])));
        a2 = _mm256_add_ps(a2,
                           _mm256_mul_ps(_mm256_loadu_ps(t2 + k * LANES), _mm256_set1_ps(x2[k])));
        a3 = _mm256_add_ps(a3,
                           _mm256_mul_ps(_mm256_loadu_ps(t3 + k * LANES), _mm256_set1_ps(x3[k])));
    }
    float all[GROUP][LANES];
    _mm256_storeu_ps(all[0], a0);
    _mm256_storeu_ps(all[1], a1);
    _mm256_storeu_ps(all[2], a2);
    _mm256_storeu_ps(all[3], a3);
    memcpy(out, all, (size_t)G * LANES * sizeof(float));
}
#endif

static void dot_tiles(const float *const *tiles, const float *const *xs, int G, int n, float *out)
{
#ifdef V4_HAVE_X86
    if (v4_cpu_has_avx2()) {
        dot_tiles_avx2(tiles, xs, G, n, out);
        return;
    }
#endif
    dot_tiles_scalar(tiles, xs, G, n, out);
}

/* Interleave 8 decoded rows (row j at rows + j*cols) into a tile with
 * tile[k*stride + j] = row j, column k (stride 8 for the 8-lane tiles, a
 * wider block's for AVX-512 prefill). */
static void transpose8_scalar(const float *rows, int64_t cols, float *tile, int64_t stride)
{
    for (int64_t k = 0; k < cols; k++)
        for (int j = 0; j < 8; j++) tile[k * stride + j] = rows[j * cols + k];
}

#ifdef V4_HAVE_X86
/* r[j] = row j of an 8x8 block in, column j out. */
__attribute__((target("avx2,fma"), always_inline)) static inline void transpose8x8(__m256 r[8])
{
    __m256 t[8];
    for (int j = 0; j < 8; j += 2) {
        t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
        t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
    }
    for (int j = 0; j < 8; j += 4) {
        r[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
        r[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xEE);
        r[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
        r[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xEE);
    }
    __m256 o[8];
    for (int j = 0; j < 4; j++) {
        o[j] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x20);
        o[j + 4] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x31);
    }
    for (int j = 0; j < 8; j++) r[j] = o[j];
}

__attribute__((target("avx2,fma"))) static void transpose8_avx2(const float *rows, int64_t cols,
                                                                float *tile, int64_t stride)
{
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8) {
        __m256 r[8];
        for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(rows + j * cols + k);
        transpose8x8(r);
        for (int j = 0; j < 8; j++) _mm256_storeu_ps(tile + (k + j) * stride, r[j]);
    }
    for (; k < cols; k++)
        for (int j = 0; j < 8; j++) tile[k * stride + j] = rows[j * cols + k];
}

/* Eight weights of one row from column k, decoded (FP8, FP4 or BF16);
 * `dtype` is w->dtype, a constant where this is inlined. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256
decode8(const v4_weight *w, v4_dtype dtype, int64_t row, int64_t k)
{
    switch (dtype) {
    case V4_F8_E4M3: {
        __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)(w->data + row * w->cols + k));
        float s =
            v4_fast_scale(w->scale[(row / V4_FP8_BLOCK) * w->scale_stride + k / V4_FP8_BLOCK]);
        return _mm256_mul_ps(e4m3x8(_mm256_cvtepu8_epi32(b)), _mm256_set1_ps(s));
    }
    case V4_I8: {
        float s = v4_fast_scale(w->scale[row * w->scale_stride + k / V4_FP4_BLOCK]);
        __m256 v = e2m1x8(nibbles8(w->data + row * (w->cols / 2) + k / 2));
        return _mm256_mul_ps(v, _mm256_set1_ps(s));
    }
    case V4_BF16: {
        __m128i h =
            _mm_loadu_si128((const __m128i *)(const void *)(w->data + (row * w->cols + k) * 2));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    default:
        return _mm256_loadu_ps((const float *)(const void *)(w->data + (row * w->cols + k) * 4));
    }
}

/* Decode's matrix-vector product for rows r..r+7 (fewer at the end): the
 * weights are decoded and transposed in registers, never stored, and each
 * row still sums in column order.  Inlined once per type (matvec8_avx2),
 * so that the loop does not choose the type's decoder for every eight
 * weights. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
matvec8_as(const v4_weight *w, v4_dtype dtype, int64_t r, int rows, const float *x, float *y)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t row[8];
    for (int j = 0; j < 8; j++) row[j] = r + (j < rows ? j : rows - 1);
    for (int64_t k = 0; k < w->cols; k += 8) {
        __m256 v[8];
        for (int j = 0; j < 8; j++) v[j] = decode8(w, dtype, row[j], k);
        transpose8x8(v);
        for (int j = 0; j < 8; j++)
            acc = _mm256_add_ps(acc, _mm256_mul_ps(v[j], _mm256_set1_ps(x[k + j])));
    }
    float out[8];
    _mm256_storeu_ps(out, acc);
    memcpy(y, out, (size_t)rows * sizeof(float));
}

__attribute__((target("avx2,fma"))) static void matvec8_avx2(const v4_weight *w, int64_t r,
                                                             int rows, const float *x, float *y)
{
    switch (w->dtype) {
    case V4_F8_E4M3:
        matvec8_as(w, V4_F8_E4M3, r, rows, x, y);
        break;
    case V4_I8:
        matvec8_as(w, V4_I8, r, rows, x, y);
        break;
    case V4_BF16:
        matvec8_as(w, V4_BF16, r, rows, x, y);
        break;
    default:
        matvec8_as(w, V4_F32, r, rows, x, y);
        break;
    }
}
#endif

static void transpose8(const float *rows, int64_t cols, float *tile)
{
#ifdef V4_HAVE_X86
    if (v4_cpu_has_avx2()) {
        transpose8_avx2(rows, cols, tile, LANES);
        return;
    }
#endif
    transpose8_scalar(rows, cols, tile, LANES);
}

/* ---- dot products against many rows ---------------------------------------
 *
 * Attention and the indexer score one query against many stored rows.
 * Packing the rows into transposed tiles of LANES lets the SIMD kernel run
 * LANES independent in-order sums at once (one per row), so the scores are
 * bit-identical to v4_dot row by row.
 */

void v4_tiles_pack(const float *const *rows, int64_t n, int dim, float *tiles)
{
    for (int64_t i = 0; i < n; i += LANES) {
        float *tile = tiles + (size_t)(i / LANES) * dim * LANES;
        for (int j = 0; j < LANES; j++) {
            const float *row = i + j < n ? rows[i + j] : NULL;
            for (int k = 0; k < dim; k++) tile[k * LANES + j] = row ? row[k] : 0.0f;
        }
    }
}

static void tiles_dot_scalar(const float *tiles, int64_t n, int dim, const float *q, float *out)
{
    for (int64_t i = 0; i < n; i += LANES) {
        const float *tile = tiles + (size_t)(i / LANES) * dim * LANES;
        float acc[LANES] = {0};
        for (int k = 0; k < dim; k++)
            for (int j = 0; j < LANES; j++) acc[j] += tile[k * LANES + j] * q[k];
        for (int j = 0; j < LANES && i + j < n; j++) out[i + j] = acc[j];
    }
}

#ifdef V4_HAVE_X86
__attribute__((target("avx2,fma"))) static void tiles_dot_avx2(const float *tiles, int64_t n,
                                                               int dim, const float *q, float *out)
{
    int64_t n_tiles = (n + LANES - 1) / LANES, i = 0;
    size_t stride = (size_t)dim * LANES;
    float buf[2 * LANES];
    for (; i + 2 <= n_tiles; i += 2) {
        const float *t0 = tiles + (size_t)i * stride, *t1 = t0 + stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int k = 0; k < dim; k++) {
            __m256 qk = _mm256_set1_ps(q[k]);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(t0 + k * LANES), qk));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(t1 + k * LANES), qk));
        }
        _mm256_storeu_ps(buf, a0);
        _mm256_storeu_ps(buf + LANES, a1);
        int64_t m = n - i * LANES < 2 * LANES ? n - i * LANES : 2 * LANES;
        memcpy(out + i * LANES, buf, (size_t)m * sizeof(float));
    }
    if (i < n_tiles) {
        const float *t0 = tiles + (size_t)i * stride;
        __m256 a0 = _mm256_setzero_ps();
        for (int k = 0; k < dim; k++)
            a0 = _mm256_add_ps(
                a0, _mm256_mul_ps(_mm256_loadu_ps(t0 + k * LANES), _mm256_set1_ps(q[k])));
        _mm256_storeu_ps(buf, a0);
        memcpy(out + i * LANES, buf, (size_t)(n - i * LANES) * sizeof(float));
    }
}
#endif

void v4_tiles_dot(const float *tiles, int64_t n, int dim, const float *q, float *out)
{
#ifdef V4_HAVE_X86
    if (v4_cpu_has_avx2()) {
        tiles_dot_avx2(tiles, n, dim, q, out);
        return;
    }
#endif
    tiles_dot_scalar(tiles, n, dim, q, out);
}

void v4_tiles_dot_many(const float *tiles, int64_t n, int dim, const float *q, int nq,
                       int64_t q_stride, float *out, int64_t out_stride)
{
    /* Tiles in groups of about 128 KiB, each scored by every query while it
     * is in the cache; rows a multiple of LANES so groups start on tiles. */
    int64_t group = (128 * 1024) / ((int64_t)dim * (int64_t)sizeof(float)) / LANES * LANES;
    if (group < LANES) group = LANES;
    for (int64_t i = 0; i < n; i += group) {
        int64_t m = n - i < group ? n - i : group;
        for (int j = 0; j < nq; j++)
            v4_tiles_dot(tiles + (size_t)i * dim, m, dim, q + (size_t)j * q_stride,
                         out + (size_t)j * out_stride + i);
    }
}

/* ---- matmul ------------------------------------------------------------------ */

typedef struct matmul_job {
    const v4_weight *w;
    const float *x;
    int64_t xstride;
    int n;
    float *y;
    int64_t ystride;
    int wide; /* prefill on AVX-512's register tile (matmul_rows_wide) */
} matmul_job;

/* Per-thread scratch (the pool's, v4_pool_scratch): LANES decoded rows,
 * then GROUP transposed tiles of LANES rows (tile[k*LANES + j] = row j,
 * column k); or, for prefill on AVX-512, WIDE_LANES decoded rows and a
 * block of WIDE_ROWS transposed rows. */
static size_t exact_scratch_floats(int64_t cols)
{
    size_t narrow = (size_t)(1 + GROUP) * LANES, wide = (size_t)WIDE_LANES + WIDE_ROWS;
    return (narrow > wide ? narrow : wide) * (size_t)cols;
}

size_t v4_kernel_scratch_bytes(int64_t max_cols)
{
    size_t exact = exact_scratch_floats(max_cols) * sizeof(float);
    size_t fast = v4_fast_scratch_bytes(max_cols);
    return exact > fast ? exact : fast;
}

/* Rows r .. r + n - 1 of w decoded into row_buf (row j at j * cols),
 * those at or past r_end as zeros. */
static void decode_rows_padded(const v4_weight *w, int64_t r, int n, int64_t r_end, float *row_buf)
{
    for (int j = 0; j < n; j++) {
        float *dst = row_buf + j * w->cols;
        if (r + j < r_end)
            v4_weight_row(w, r + j, dst);
        else
            memset(dst, 0, (size_t)w->cols * sizeof(float));
    }
}

static int decode_tiles(const v4_weight *w, int64_t r, int64_t r_end, float *row_buf, float *tiles,
                        int max_tiles)
{
    int64_t cols = w->cols;
    int n_tiles = 0;
    for (; n_tiles < max_tiles && r < r_end; n_tiles++, r += LANES) {
        decode_rows_padded(w, r, LANES, r_end, row_buf);
        transpose8(row_buf, cols, tiles + (size_t)n_tiles * LANES * cols);
    }
    return n_tiles;
}

static void store_rows(float *y, const float *vals, int64_t r, int64_t r_end)
{
    int64_t n = r_end - r < LANES ? r_end - r : LANES;
    memcpy(y + r, vals, (size_t)n * sizeof(float));
}

#ifdef V4_HAVE_X86
/* ---- prefill on AVX-512 ----------------------------------------------------
 *
 * The same in-order, unfused sums, WIDE_ROWS rows x WIDE_TOKENS tokens at
 * a time: 24 independent sums of sixteen lanes in registers, each updated
 * once per column, where the 8-lane tiles above keep four.  A multiply and
 * an add per weight cost two instructions where an FMA costs one, but on a
 * Zen 4 they issue to different pipes (multiplies with the FMAs, adds to
 * two pipes of their own): in a microbenchmark this order ran at 79-81% of
 * the FMA peak, and flash-shape prefill with exact kernels went from 32-37
 * to 51-52 tokens/s (2 threads).  Columns go in runs of WIDE_COLUMNS, the
 * sums stored in y between runs (a float kept is the float continued), so
 * that a run of the block stays in the L2 cache while every token passes
 * over it. */

/* Whether the fast kernels run AVX-512 (TOME_ISA can force less): then
 * prefill takes the tiles below.  Asked once. */
static int wide_prefill;
static pthread_once_t wide_once = PTHREAD_ONCE_INIT;

static void probe_wide(void)
{
    wide_prefill = strcmp(v4_kernels_isa(), "avx512") == 0;
}

/* Rows r.. (up to r_end) of w decoded and transposed into a block of
 * WIDE_ROWS lanes: block[k*WIDE_ROWS + j] = row r + j, column k (zero past
 * r_end), decoded WIDE_LANES rows at a time into row_buf. */
__attribute__((target("avx2,fma"))) static void
decode_wide_block(const v4_weight *w, int64_t r, int64_t r_end, float *row_buf, float *block)
{
    int64_t cols = w->cols;
    for (int j0 = 0; j0 < WIDE_ROWS; j0 += WIDE_LANES) {
        decode_rows_padded(w, r + j0, WIDE_LANES, r_end, row_buf);
        for (int j1 = 0; j1 < WIDE_LANES; j1 += 8)
            transpose8_avx2(row_buf + j1 * cols, cols, block + j0 + j1, WIDE_ROWS);
    }
}

/* Continue the sums y[t][i] (i < WIDE_ROWS, `rows` masking each sixteen
 * to those that exist) over columns [k0, k1) of the block and of xs[t];
 * from +0 when k0 is 0.  Every sum adds its products in column order. */
__attribute__((target("avx512f"))) static void wide_tile(const float *block, const float *const *xs,
                                                         float *const *y, const __mmask16 *rows,
                                                         int64_t k0, int64_t k1)
{
    __m512 a[WIDE_TOKENS][4];
    for (int t = 0; t < WIDE_TOKENS; t++)
        for (int v = 0; v < 4; v++)
            a[t][v] =
                k0 ? _mm512_maskz_loadu_ps(rows[v], y[t] + v * WIDE_LANES) : _mm512_setzero_ps();
    for (int64_t k = k0; k < k1; k++) {
        const float *b = block + k * WIDE_ROWS;
        __m512 w0 = _mm512_loadu_ps(b), w1 = _mm512_loadu_ps(b + 16), w2 = _mm512_loadu_ps(b + 32),
               w3 = _mm512_loadu_ps(b + 48);
#pragma GCC unroll 8
        for (int t = 0; t < WIDE_TOKENS; t++) {
            __m512 x = _mm512_set1_ps(xs[t][k]);
            a[t][0] = _mm512_add_ps(a[t][0], _mm512_mul_ps(w0, x));
            a[t][1] = _mm512_add_ps(a[t][1], _mm512_mul_ps(w1, x));
            a[t][2] = _mm512_add_ps(a[t][2], _mm512_mul_ps(w2, x));
            a[t][3] = _mm512_add_ps(a[t][3], _mm512_mul_ps(w3, x));
        }
    }
    for (int t = 0; t < WIDE_TOKENS; t++)
        for (int v = 0; v < 4; v++) _mm512_mask_storeu_ps(y[t] + v * WIDE_LANES, rows[v], a[t][v]);
}

/* matmul_rows for prefill on AVX-512: rows [r0, r1) in blocks of
 * WIDE_ROWS.  Tokens past the last are the last again (their sums are its
 * own, stored twice). */
static void matmul_rows_wide(const matmul_job *j, int64_t r0, int64_t r1)
{
    const v4_weight *w = j->w;
    int64_t cols = w->cols;
    float *row_buf = v4_pool_scratch(w->pool), *block = row_buf + (size_t)WIDE_LANES * cols;
    for (int64_t r = r0; r < r1; r += WIDE_ROWS) {
        decode_wide_block(w, r, r1, row_buf, block);
        __mmask16 rows[4];
        for (int v = 0; v < 4; v++) {
            int64_t left = r1 - r - v * WIDE_LANES;
            rows[v] = left >= WIDE_LANES ? 0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        }
        for (int64_t k0 = 0; k0 < cols; k0 += WIDE_COLUMNS)
            for (int t0 = 0; t0 < j->n; t0 += WIDE_TOKENS) {
                const float *xs[WIDE_TOKENS];
                float *y[WIDE_TOKENS];
                for (int t = 0; t < WIDE_TOKENS; t++) {
                    int64_t token = t0 + t < j->n ? t0 + t : j->n - 1;
                    xs[t] = j->x + token * j->xstride;
                    y[t] = j->y + token * j->ystride + r;
                }
                wide_tile(block, xs, y, rows, k0,
                          k0 + WIDE_COLUMNS < cols ? k0 + WIDE_COLUMNS : cols);
            }
    }
}

/* Whether a product of n tokens takes matmul_rows_wide. */
static int product_is_wide(int n)
{
    if (n < 2) return 0;
    pthread_once(&wide_once, probe_wide);
    return wide_prefill;
}
#endif

static void matmul_rows(void *ctx, int64_t r0, int64_t r1)
{
    const matmul_job *j = ctx;
    const v4_weight *w = j->w;
    int64_t cols = w->cols;
#ifdef V4_HAVE_X86
    if (j->n == 1 && v4_cpu_has_avx2() && cols % 32 == 0 && v4_dtype_block(w->dtype) == 1 &&
        w->dtype != V4_F16) {
        for (int64_t r = r0; r < r1; r += LANES)
            matvec8_avx2(w, r, (int)(r1 - r < LANES ? r1 - r : LANES), j->x, j->y + r);
        return;
    }
    if (j->wide) {
        matmul_rows_wide(j, r0, r1);
        return;
    }
#endif
    float *row_buf = v4_pool_scratch(w->pool), *tiles = row_buf + (size_t)LANES * cols;
    /* Decode (n == 1) is limited by decoding weights: take GROUP tiles per
     * pass so the FMAs of independent rows overlap.  Prefill reuses one
     * tile for GROUP tokens at a time. */
    int per_pass = j->n == 1 ? GROUP : 1;
    for (int64_t r = r0; r < r1; r += (int64_t)per_pass * LANES) {
        int nt = decode_tiles(w, r, r1, row_buf, tiles, per_pass);
        const float *tp[GROUP], *xp[GROUP];
        float out[GROUP * LANES];
        if (j->n == 1) {
            for (int g = 0; g < nt; g++) {
                tp[g] = tiles + (size_t)g * LANES * cols;
                xp[g] = j->x;
            }
            dot_tiles(tp, xp, nt, (int)cols, out);
            for (int g = 0; g < nt; g++) store_rows(j->y, out + g * LANES, r + g * LANES, r1);
            continue;
        }
        for (int t = 0; t < j->n; t += GROUP) {
            int G = j->n - t < GROUP ? j->n - t : GROUP;
            for (int g = 0; g < G; g++) {
                tp[g] = tiles;
                xp[g] = j->x + (int64_t)(t + g) * j->xstride;
            }
            dot_tiles(tp, xp, G, (int)cols, out);
            for (int g = 0; g < G; g++)
                store_rows(j->y + (int64_t)(t + g) * j->ystride, out + g * LANES, r, r1);
        }
    }
}

void v4_matmul(const v4_weight *w, const float *x, int n, float *y, int64_t ystride)
{
    v4_matmul_strided(w, x, w->cols, n, y, ystride);
}

void v4_matmul_strided(const v4_weight *w, const float *x, int64_t xstride, int n, float *y,
                       int64_t ystride)
{
    if (w->fast && w->cols % V4_FAST_LANES == 0) {
        v4_fast_matmul(v4_fast_kernels_active(), w, x, xstride, n, y, ystride);
        return;
    }
    matmul_job j = {w, x, xstride, n, y, ystride, 0};
    /* Aim for tasks of a few hundred KiB of weights each, whole blocks of
     * rows (a wide block for prefill on AVX-512). */
    int64_t row_bytes = (int64_t)v4_dtype_row_bytes(w->dtype, w->cols);
    int64_t grain = (256 * 1024) / (row_bytes * (n > 4 ? 4 : n) + 1), block = LANES;
#ifdef V4_HAVE_X86
    j.wide = product_is_wide(n);
    if (j.wide) block = WIDE_ROWS;
#endif
    grain = grain < block ? block : (grain / block) * block;
    v4_parallel_for(w->pool, w->rows, grain, matmul_rows, &j);
}

void v4_matmul_set(const v4_product *set, int count)
{
    int together = count > 1;
    for (int i = 0; i < count && together; i++)
        together = set[i].w->fast && set[i].w->cols % V4_FAST_LANES == 0 &&
                   set[i].w->pool == set[0].w->pool;
    if (together) {
        v4_fast_matmul_set(v4_fast_kernels_active(), set, count);
        return;
    }
    for (int i = 0; i < count; i++)
        v4_matmul(set[i].w, set[i].x, set[i].n, set[i].y, set[i].ystride);
}

void v4_rmsnorm(float *out, const float *x, const v4_weight *w, int n, float eps)
{
    float r = 1.0f / sqrtf(v4_mean_square(x, n) + eps);
    if (!w) {
        for (int i = 0; i < n; i++) out[i] = x[i] * r;
        return;
    }
    const uint8_t *wb = w->data;
    for (int i = 0; i < n; i++) {
        float wi;
        if (w->dtype == V4_BF16)
            wi = v4_bf16_to_f32((uint16_t)(wb[2 * i] | (wb[2 * i + 1] << 8)));
        else if (w->dtype == V4_F16)
            wi = v4_f16_to_f32((uint16_t)(wb[2 * i] | (wb[2 * i + 1] << 8)));
        else
            memcpy(&wi, wb + 4 * (size_t)i, 4);
        out[i] = wi * (x[i] * r);
    }
}

const char *v4_kernels_name(v4_kernels k)
{
    return k == V4_KERNELS_EXACT ? "exact" : "fast";
}

int v4_kernels_parse(const char *name)
{
    if (strcmp(name, "fast") == 0) return V4_KERNELS_FAST;
    if (strcmp(name, "exact") == 0) return V4_KERNELS_EXACT;
    return -1;
}

const char *v4_kernels_isa(void)
{
    return v4_fast_kernels_active()->name;
}

/* Buffers from this size up are placed on 2 MB boundaries and offered to
 * the kernel as huge pages: a prefill chunk's activations (tens of MB per
 * product) are fresh memory from mmap the first time an evaluation asks
 * for them (engine/buffers.c keeps them after that), and touching them
 * 4 kB at a time cost a page fault each, which in a virtual machine was 8%
 * of prefill. */
#define HUGE_BYTES ((size_t)4 << 20)
#define HUGE_PAGE  ((size_t)2 << 20)

float *v4_floats(size_t n)
{
    size_t bytes = (n ? n : 1) * sizeof(float);
    if (bytes < HUGE_BYTES) return aligned_alloc(64, (bytes + 63) / 64 * 64);
    bytes = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    float *p = aligned_alloc(HUGE_PAGE, bytes);
#ifdef MADV_HUGEPAGE
    if (p) (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint: without it, small pages */
#endif
    return p;
}
