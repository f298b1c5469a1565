/*
 * exact.c - the engine's compute kernels over v4_weight and F32 rows.
 *
 * Weights stay in the checkpoint's own formats and are decoded into F32
 * scratch right before use: row by row (rows.c), or, where the model keeps
 * panels of a matrix (v4_panels_attach: its rows interleaved eight at a
 * time, made at open on CPUs with AVX2), a tile of eight rows at once.  A
 * matmul decodes a tile of weight rows once and applies it to every token
 * row of the batch, so prefill amortises the decoding over the chunk while
 * decode (one token) pays it once per row as it must.
 *
 * Each inner loop has a plain C reference version and, where it pays, an
 * AVX2 version selected at run time; where the fast kernels run AVX-512,
 * prefill's products take an AVX-512 register tile and decode's panel sums
 * 512-bit registers of two panels each (the default build
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
/* Prefill's register tiles (below): the rows decoded at a time, the most
 * rows a block holds (AVX-512's four vectors), the tokens a tile takes at
 * once, and the columns of a run. */
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

/* ---- decode's matrix-vector product on AVX2 --------------------------------
 *
 * Rows in groups of eight lanes, one row per lane, each row summing in
 * column order.  The order makes every row's sum one chain of dependent
 * adds, so a group alone runs at an add's latency per column; GROUPS
 * groups' chains interleave, column by column.  They walk the columns one
 * cache line's worth apart (the lag): sixteen rows at one offset would ask
 * for as many lines of one L1 set (rows 2^n bytes long all start in the
 * same one), twice its eight ways, and every step would miss; in a
 * microbenchmark on a Zen 3 that took BF16 rows from 10 to 19 GB/s (in
 * L2).  Four groups ran FP8 and FP4 rows 10-30% faster in isolation but
 * BF16 ones (the LM head, half of decode's bytes) slower, and decode as a
 * whole no faster.
 *
 * The general way decodes eight weights of each row and transposes the
 * floats in registers (span_general: about 37 instructions per sixteen
 * weights).  BF16, FP8 and FP4 rows transpose their packed 32-bit words
 * instead (two, four or eight weights each: a half to an eighth of the
 * data to move) and decode them in place with integer operations
 * (avx2_formats.h's tiny decoders for FP8 and FP4: each code's value times
 * a power of two, exactly, and one multiplication that rounds the product
 * as the weight times its scale is rounded).  An FP8 or FP4 block takes
 * that way where its scales allow it and, for FP8, it holds no NaN code
 * and its inputs fold its factor exactly; otherwise the general way.
 * Multiplications are fused multiply-adds of -0 (mul_exact), as fast as a
 * multiplication and, on a Zen 3, not slowed down by the subnormals the
 * tiny decoders make. */

#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline
#define GROUPS      2

/* acc continued by one weight vector (a column of eight rows) times input
 * *x: the product rounded, then the sum. */
AVX2_INLINE __m256 add_product(__m256 acc, __m256 weights, const float *x)
{
    return _mm256_add_ps(acc, mul_exact(weights, _mm256_broadcast_ss(x)));
}

/* acc continues the sums of rows row[0..7] (lane j: row[j]) over columns
 * [k0, k1) (multiples of 8), decoding eight weights of a row at a time. */
AVX2_INLINE __m256 span_general(const v4_weight *w, v4_dtype dtype, const int64_t *row,
                                const float *x, int64_t k0, int64_t k1, __m256 acc)
{
    for (int64_t k = k0; k < k1; k += 8) {
        __m256 v[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) v[j] = decode8(w, dtype, row[j], k);
        transpose8x8(v);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) acc = add_product(acc, v[j], x + k + j);
    }
    return acc;
}

/* Sixteen bytes from offset `at` of the eight rows p[0..7], transposed by
 * 32-bit words: t[q] holds word q of each row (lane j: row j).  Rows
 * (j, j + 4) load into the halves of one register, and two rounds of
 * unpacking within the halves finish it. */
AVX2_INLINE void transpose_words(const uint8_t *const *p, int64_t at, __m256i t[4])
{
    __m256i r[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
        r[j] = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(p[j] + at))),
            _mm_loadu_si128((const __m128i *)(const void *)(p[j + 4] + at)), 1);
    __m256i ab0 = _mm256_unpacklo_epi32(r[0], r[1]), ab1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i cd0 = _mm256_unpacklo_epi32(r[2], r[3]), cd1 = _mm256_unpackhi_epi32(r[2], r[3]);
    t[0] = _mm256_unpacklo_epi64(ab0, cd0);
    t[1] = _mm256_unpackhi_epi64(ab0, cd0);
    t[2] = _mm256_unpacklo_epi64(ab1, cd1);
    t[3] = _mm256_unpackhi_epi64(ab1, cd1);
}

/* The four e4m3 codes of each 32-bit lane of v (columns 4q..4q+3 of a
 * row) as floats times 2^-120, in column order: each code moved to the
 * top byte of a 16-bit word, shifted right by 4 with its sign copied
 * down, and masked, is the pattern e4m3_words_tiny makes (sign on bit 15,
 * exponent and mantissa on 10..4); the odd bytes are already on top. */
AVX2_INLINE void e4m3_lanes_tiny(__m256i v, __m256 c[4])
{
    const __m256i mask = _mm256_set1_epi16((short)0x87F0), top = _mm256_set1_epi32((int)0xFFFF0000);
    __m256i odd = _mm256_and_si256(_mm256_srai_epi16(v, 4), mask);
    __m256i even = _mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(v, 8), 4), mask);
    c[0] = _mm256_castsi256_ps(_mm256_slli_epi32(even, 16));
    c[1] = _mm256_castsi256_ps(_mm256_slli_epi32(odd, 16));
    c[2] = _mm256_castsi256_ps(_mm256_and_si256(even, top));
    c[3] = _mm256_castsi256_ps(_mm256_and_si256(odd, top));
}

/* Where a group is: its rows' indices and weights, and for the column
 * block it is in, whether it takes the packed way and that way's inputs
 * or factors. */
typedef struct group8 {
    const int64_t *row;
    const uint8_t *const *p;
    const uint8_t *scale[8]; /* FP4: each row's scales */
    int quick;
    __m256 f;        /* FP4: each row's factor (fp4_factors) */
    const float *xf; /* FP8: the block's inputs times its factor */
} group8;

/* FP8 inputs folded for one 128-row block of scales: for each column
 * block, the inputs times its factor (fp8_factor) and whether every one
 * is exact.  Made once per row block for every group that passes over it
 * (fold_row_block), where each group folding its own copy as it entered
 * a block had cost a fifth of exact FP8 decode. */
typedef struct fp8_folded_x {
    int64_t row_block; /* whose scales, -1 for none yet */
    float *x;          /* cols values */
    uint8_t exact[V4_MAX_COLS / V4_FP8_BLOCK];
} fp8_folded_x;

/* One step of G groups (1 or GROUPS, a constant where inlined), group i at
 * column k[i], interleaved by column: acc[i] continued over BF16 columns
 * k[i]..k[i] + 7. */
AVX2_INLINE void steps_bf16(const group8 *g, int G, const float *x, const int64_t *k, __m256 *acc)
{
    const __m256i top = _mm256_set1_epi32((int)0xFFFF0000);
    __m256i t[GROUPS][4];
#pragma GCC unroll 4
    for (int i = 0; i < G; i++) transpose_words(g[i].p, 2 * k[i], t[i]);
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
#pragma GCC unroll 4
        for (int i = 0; i < G; i++) {
            const float *in = x + k[i] + 2 * q;
            acc[i] = add_product(acc[i], _mm256_castsi256_ps(_mm256_slli_epi32(t[i][q], 16)), in);
            acc[i] =
                add_product(acc[i], _mm256_castsi256_ps(_mm256_and_si256(t[i][q], top)), in + 1);
        }
}

/* The same over FP8 columns k[i]..k[i] + 15, against the folded inputs:
 * each code value times 2^-120 times x times the factor is one real
 * number, the weight times x, rounded once. */
AVX2_INLINE void steps_fp8(const group8 *g, int G, const int64_t *k, __m256 *acc)
{
    __m256i t[GROUPS][4];
#pragma GCC unroll 4
    for (int i = 0; i < G; i++) transpose_words(g[i].p, k[i], t[i]);
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
#pragma GCC unroll 4
        for (int i = 0; i < G; i++) {
            __m256 c[4];
            e4m3_lanes_tiny(t[i][q], c);
            const float *in = g[i].xf + k[i] % V4_FP8_BLOCK + 4 * q;
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) acc[i] = add_product(acc[i], c[m], in + m);
        }
}

/* The same over the FP4 block of 32 columns from k[i]: nibble m of a
 * 32-bit word is column 8q + m, moved to the top of the lane for
 * e2m1_top_tiny. */
AVX2_INLINE void steps_fp4(const group8 *g, int G, const float *x, const int64_t *k, __m256 *acc)
{
    __m256i t[GROUPS][4];
#pragma GCC unroll 4
    for (int i = 0; i < G; i++) transpose_words(g[i].p, k[i] / 2, t[i]);
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
#pragma GCC unroll 8
        for (int m = 0; m < 8; m++)
#pragma GCC unroll 4
            for (int i = 0; i < G; i++) {
                __m256 v = e2m1_top_tiny(_mm256_slli_epi32(t[i][q], 28 - 4 * m));
                acc[i] = add_product(acc[i], mul_exact(v, g[i].f), x + k[i] + 8 * q + m);
            }
}

/* x[k0..k1) times f into xf, and whether every product is exact (f is a
 * power of two: checked by multiplying back). */
AVX2_INLINE int fold_inputs(const float *x, int64_t k0, int64_t k1, float f, float *xf)
{
    __m256 factor = _mm256_set1_ps(f), inverse = _mm256_set1_ps(1.0f / f);
    int inexact = 0;
    for (int64_t k = k0; k < k1; k += 8) {
        __m256 xv = _mm256_loadu_ps(x + k), v = _mm256_mul_ps(xv, factor);
        inexact |= _mm256_movemask_ps(_mm256_cmp_ps(_mm256_mul_ps(v, inverse), xv, _CMP_NEQ_UQ));
        _mm256_storeu_ps(xf + (k - k0), v);
    }
    return !inexact;
}

/* The inputs x folded for the scales of rows [128 * rb, 128 * rb + 128)
 * into fx. */
__attribute__((target("avx2,fma"))) static void fold_row_block(const v4_weight *w, const float *x,
                                                               int64_t rb, fp8_folded_x *fx)
{
    for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP8_BLOCK) {
        int64_t k1 = k0 + V4_FP8_BLOCK < w->cols ? k0 + V4_FP8_BLOCK : w->cols;
        uint8_t e = w->scale[rb * w->scale_stride + k0 / V4_FP8_BLOCK];
        fx->exact[k0 / V4_FP8_BLOCK] = (uint8_t)fold_inputs(x, k0, k1, fp8_factor(e), fx->x + k0);
    }
    fx->row_block = rb;
}

/* Entering FP8 column block [k0, k1): packed where one scale covers the
 * group's rows, at most 2^7 (or NaN's), the block holds no NaN code and
 * the inputs fold its factor exactly (fx, folded for the group's row
 * block). */
__attribute__((target("avx2,fma"))) static void
enter_fp8(const v4_weight *w, group8 *g, const fp8_folded_x *fx, int64_t k0, int64_t k1)
{
    const int64_t *row = g->row;
    uint8_t e = w->scale[(row[0] / V4_FP8_BLOCK) * w->scale_stride + k0 / V4_FP8_BLOCK];
    g->quick = row[0] / V4_FP8_BLOCK == row[7] / V4_FP8_BLOCK && (e <= 134 || e == 0xFF) &&
               row[0] / V4_FP8_BLOCK == fx->row_block && fx->exact[k0 / V4_FP8_BLOCK];
    if (g->quick && !v4_fast_fp8_clean(w, row[0], k0))
        for (int j = 0; j < 8 && g->quick; j++)
            g->quick = !v4_fp8_any_nan(w->data + row[j] * w->cols + k0, k1 - k0);
    g->xf = fx->x + k0;
}

/* Entering the FP4 block of 32 columns from k0: each row's factor, packed
 * where every scale is at most 2^1 (fp4_factors' limit).  The eight
 * scales are gathered in a general register: stored and read back as one
 * vector, the read would wait for the stores to retire. */
AVX2_INLINE void enter_fp4(group8 *g, int64_t k0)
{
    uint64_t e = 0;
    for (int j = 0; j < 8; j++) e |= (uint64_t)g->scale[j][k0 / V4_FP4_BLOCK] << (8 * j);
    __m256i v = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)e));
    g->f = fp4_factors(v);
    g->quick =
        _mm256_testz_si256(_mm256_cmpgt_epi32(v, _mm256_set1_epi32(128)), _mm256_set1_epi32(-1));
}

/* Group g at column k, about to take a step: entering a block where one
 * starts, and whether it takes the packed way. */
AVX2_INLINE int enter(const v4_weight *w, v4_dtype dtype, group8 *g, const fp8_folded_x *fx,
                      int64_t k)
{
    if (dtype == V4_F8_E4M3 && k % V4_FP8_BLOCK == 0)
        enter_fp8(w, g, fx, k, k + V4_FP8_BLOCK < w->cols ? k + V4_FP8_BLOCK : w->cols);
    else if (dtype == V4_I8)
        enter_fp4(g, k);
    else if (dtype == V4_BF16)
        g->quick = 1;
    else if (dtype != V4_F8_E4M3)
        g->quick = 0;
    return g->quick;
}

/* G groups' steps from k[i], every one packed. */
AVX2_INLINE void steps(v4_dtype dtype, const group8 *g, int G, const float *x, const int64_t *k,
                       __m256 *acc)
{
    if (dtype == V4_BF16)
        steps_bf16(g, G, x, k, acc);
    else if (dtype == V4_F8_E4M3)
        steps_fp8(g, G, k, acc);
    else
        steps_fp4(g, G, x, k, acc);
}

/* The sums of rows row[0 .. 8 * GROUPS) (weights at p[]) against x (FP8:
 * fx, x folded for their row block) into out, each group a lag behind the
 * one before.  A step takes eight BF16 columns, sixteen FP8 or a block of
 * 32 FP4 (eight otherwise). */
AVX2_INLINE void pass_as(const v4_weight *w, v4_dtype dtype, const int64_t *row,
                         const uint8_t *const *p, const float *x, const fp8_folded_x *fx,
                         float *out)
{
    int64_t row_bytes = (int64_t)v4_dtype_row_bytes(dtype, w->cols);
    int64_t step = dtype == V4_F8_E4M3 ? 16 : dtype == V4_I8 ? V4_FP4_BLOCK : 8;
    /* a line's columns, a multiple of step dividing the columns */
    int64_t lag = 64 * w->cols / row_bytes;
    lag = lag < step ? step : lag / step * step;
    while (w->cols % lag) lag -= step;
    group8 g[GROUPS];
    __m256 acc[GROUPS];
    /* Loops over the groups are unrolled, and a group's sums pass by
     * value, so that they stay in registers: kept in memory, every step
     * would add a store's forwarding delay to the chain. */
#pragma GCC unroll 4
    for (int i = 0; i < GROUPS; i++) {
        g[i] = (group8){.row = row + 8 * i, .p = p + 8 * i};
        for (int j = 0; j < 8 && dtype == V4_I8; j++)
            g[i].scale[j] = w->scale + row[8 * i + j] * w->scale_stride;
        acc[i] = _mm256_setzero_ps();
    }
    /* Blocks start (FP8), and groups start and end, only where k is a
     * multiple of lag: the groups step together from one to the next. */
    int64_t span = dtype == V4_I8 ? step : lag;
    for (int64_t k = 0; k < w->cols + (GROUPS - 1) * lag; k += span) {
        int64_t at[GROUPS];
        int packed = 0;
#pragma GCC unroll 4
        for (int i = 0; i < GROUPS; i++) {
            at[i] = k - i * lag;
            if (at[i] >= 0 && at[i] < w->cols) packed += enter(w, dtype, &g[i], fx, at[i]);
        }
        for (int64_t s = 0; s < span; s += step) {
            if (packed == GROUPS) {
                steps(dtype, g, GROUPS, x, at, acc);
            } else {
#pragma GCC unroll 4
                for (int i = 0; i < GROUPS; i++) {
                    if (at[i] < 0 || at[i] >= w->cols) continue;
                    __m256 one = acc[i];
                    if (g[i].quick)
                        steps(dtype, &g[i], 1, x, &at[i], &one);
                    else
                        one = span_general(w, dtype, g[i].row, x, at[i], at[i] + step, one);
                    acc[i] = one;
                }
            }
#pragma GCC unroll 4
            for (int i = 0; i < GROUPS; i++) at[i] += step;
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < GROUPS; i++) _mm256_storeu_ps(out + 8 * i, acc[i]);
}

/* Decode's product for rows r .. r + 8 * GROUPS - 1 (`rows` of them; the
 * last repeated past them), inlined once per type (matvec_avx2). */
AVX2_INLINE void matvec_as(const v4_weight *w, v4_dtype dtype, int64_t r, int rows, const float *x,
                           const fp8_folded_x *fx, float *y)
{
    int64_t row[8 * GROUPS];
    const uint8_t *p[8 * GROUPS];
    int64_t row_bytes = (int64_t)v4_dtype_row_bytes(dtype, w->cols);
    for (int j = 0; j < 8 * GROUPS; j++) {
        row[j] = r + (j < rows ? j : rows - 1);
        p[j] = w->data + row[j] * row_bytes;
    }
    float out[8 * GROUPS];
    pass_as(w, dtype, row, p, x, fx, out);
    memcpy(y, out, (size_t)rows * sizeof(float));
}

/* The call's rows start a group of 8 * GROUPS within one 128-row block
 * (v4_matmul_strided's grain), which fx is folded for first where it is
 * not already. */
__attribute__((target("avx2,fma"))) static void
matvec_avx2(const v4_weight *w, int64_t r, int rows, const float *x, fp8_folded_x *fx, float *y)
{
    switch (w->dtype) {
    case V4_F8_E4M3:
        if (fx->row_block != r / V4_FP8_BLOCK) fold_row_block(w, x, r / V4_FP8_BLOCK, fx);
        matvec_as(w, V4_F8_E4M3, r, rows, x, fx, y);
        break;
    case V4_I8:
        matvec_as(w, V4_I8, r, rows, x, fx, y);
        break;
    case V4_BF16:
        matvec_as(w, V4_BF16, r, rows, x, fx, y);
        break;
    default:
        matvec_as(w, V4_F32, r, rows, x, fx, y);
        break;
    }
}

/* ---- decode's matrix-vector product over panels ----------------------------
 *
 * The same sums where the model keeps a panel copy of the weight
 * (v4_weight.panels, made when it opens with exact kernels, in place of
 * the mapped rows, which prefill then decodes its tiles from too): eight
 * rows interleaved by column, so that a column of a panel is one load of
 * contiguous bytes, already one row per lane, and needs no transposition.
 * PANELS panels (32 rows) go together, four chains of adds in flight.  In
 * a microbenchmark on a Zen 3 (one thread, rows in memory) this read FP8
 * rows at 14.5 GB/s and BF16 at 23, where the transposing way above reads
 * 7.6 and 14 and the fast kernels 15 and 24; FP4, whose every weight also
 * takes its row's scale (a multiplication the fast kernels' per-block sums
 * avoid), at 8 G weights/s against 6.4 and 14.6.  On a Zen 5 with
 * AVX-512 (2026-12-06), the 512-bit sums below read FP8 at about 21 GB/s
 * and FP4 at 10 (the AVX2 loops: 15 and 7; the fast kernels: 22 and 17),
 * BF16 at about 25 either way.  The quick and general ways and their
 * conditions are the transposing way's. */

#define PANELS 4

/* ---- one column of a panel, decoded ----
 *
 * The quick decoders give values times a power of two (e4m3_words_tiny's
 * and e2m1_top_tiny's patterns, a lane at a time), for a factor that makes
 * them the weights in one rounding; the general ones give the weights, as
 * decode8 does (NaN codes and every scale included). */

/* Eight bytes of a panel (one per row) as int32 lanes. */
AVX2_INLINE __m256i panel_lanes(const uint8_t *p)
{
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
}

/* An FP8 column's eight codes as their values times 2^-120: sign-extended
 * to a lane, shifted so that exponent and mantissa land on bits 26..20,
 * the copies of the sign above bit 31 masked off.  Times fp8_factor, the
 * weights (but for NaN codes, which the panel's marks tell of). */
AVX2_INLINE __m256 panel_e4m3_tiny(const uint8_t *p)
{
    __m256i b = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
    return _mm256_castsi256_ps(
        _mm256_and_si256(_mm256_slli_epi32(b, 20), _mm256_set1_epi32((int)0x87F00000)));
}

/* An FP8 column's eight weights, their block's scale given. */
AVX2_INLINE __m256 panel_e4m3(const uint8_t *p, __m256 scale)
{
    return _mm256_mul_ps(e4m3x8(panel_lanes(p)), scale);
}

/* An FP4 column pair (k, k + 1: each byte's low and high nibble) as values
 * times 2^-126, into *lo and *hi; times fp4_factors of the rows' scales,
 * the weights.  Bytes are sign-extended, so that the high nibble needs no
 * shift right: shifted left by 18 its sign lands on bit 31 (copies on
 * 30..25, masked) and exponent and mantissa on 24..22; the low nibble goes
 * to the top of the lane first. */
AVX2_INLINE void panel_e2m1_tiny(const uint8_t *p, __m256 *lo, __m256 *hi)
{
    __m256i b = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
    *lo = e2m1_top_tiny(_mm256_slli_epi32(b, 28));
    *hi = _mm256_castsi256_ps(
        _mm256_and_si256(_mm256_slli_epi32(b, 18), _mm256_set1_epi32((int)0x81C00000)));
}

/* An FP4 column pair's weights, the rows' scales given (panel_scales). */
AVX2_INLINE void panel_e2m1(const uint8_t *p, __m256 scale, __m256 *lo, __m256 *hi)
{
    const __m256i nibble = _mm256_set1_epi32(15);
    __m256i b = panel_lanes(p);
    *lo = _mm256_mul_ps(e2m1x8(_mm256_and_si256(b, nibble)), scale);
    *hi = _mm256_mul_ps(e2m1x8(_mm256_and_si256(_mm256_srli_epi32(b, 4), nibble)), scale);
}

/* The scales of eight E8M0 codes (a panel block's rows), v4_fast_scale's
 * values. */
AVX2_INLINE __m256 panel_scales(const uint8_t *e)
{
    float s[8];
    for (int j = 0; j < 8; j++) s[j] = v4_fast_scale(e[j]);
    return _mm256_loadu_ps(s);
}

/* Whether fp4_factors takes every scale of e (each at most 2^1). */
AVX2_INLINE int panel_fp4_quick_scales(__m256i e)
{
    return _mm256_testz_si256(_mm256_cmpgt_epi32(e, _mm256_set1_epi32(128)), _mm256_set1_epi32(-1));
}

/* A BF16 column pair: each 32-bit lane holds columns (k, k + 1) of its row
 * in its low and high words. */
AVX2_INLINE void panel_bf16(const uint8_t *p, __m256 *lo, __m256 *hi)
{
    __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)p);
    *lo = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    *hi = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000)));
}

/* Column blocks of a panel, and the bytes each has among the extras (FP8:
 * whether its 128 columns hold a NaN code; FP4: its rows' E8M0 codes for
 * 32 columns, 1.0's past the last row, so that they come in one load). */
static int64_t panel_blocks(v4_dtype dtype, int64_t cols)
{
    return dtype == V4_F8_E4M3 ? (cols + V4_FP8_BLOCK - 1) / V4_FP8_BLOCK
           : dtype == V4_I8    ? cols / V4_FP4_BLOCK
                               : 0;
}

static size_t panel_extra_bytes(v4_dtype dtype)
{
    return dtype == V4_I8 ? 8 : 1;
}

/* ---- the sums ---- */

/* The quick sums below keep their G panels' sums in registers: copied in
 * and out of the caller's array (left there, they were stored back at
 * every column, since any load of codes might read them), and each input
 * broadcast once for all panels. */
AVX2_INLINE void sums_in(const __m256 *acc, int G, __m256 *sum)
{
#pragma GCC unroll 4
    for (int i = 0; i < PANELS; i++) sum[i] = i < G ? acc[i] : _mm256_setzero_ps();
}

AVX2_INLINE void sums_out(const __m256 *sum, int G, __m256 *acc)
{
#pragma GCC unroll 4
    for (int i = 0; i < PANELS; i++)
        if (i < G) acc[i] = sum[i];
}

/* sum continued by weights times x (a broadcast input): the product
 * rounded, then the sum. */
AVX2_INLINE __m256 add_weighted(__m256 sum, __m256 weights, __m256 x)
{
    return _mm256_add_ps(sum, mul_exact(weights, x));
}

/* ---- the quick sums, two panels to a 512-bit register ----
 *
 * Where the fast kernels run AVX-512, the quick sums of all PANELS panels
 * go in 512-bit registers of two panels each (lanes 0-7 the first panel's
 * rows, 8-15 the second's): lane for lane the products and sums of the
 * eight-lane loops, in half the instructions.  They are functions of their
 * own, called per column block with the sums in the caller's array: an
 * AVX2 function may not inline them. */

#define AVX512_INLINE                                                                              \
    __attribute__((target("avx512f,avx512bw,avx2,fma"), always_inline)) static inline
#define AVX512_SUMS __attribute__((target("avx512f,avx512bw,avx2,fma"), noinline)) static

/* Eight bytes from a and eight from b, sign-extended to sixteen lanes. */
AVX512_INLINE __m512i two_panels_bytes(const uint8_t *a, const uint8_t *b)
{
    return _mm512_cvtepi8_epi32(
        _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(const void *)a),
                           _mm_loadl_epi64((const __m128i *)(const void *)b)));
}

AVX512_INLINE void sums16_in(const __m256 *acc, __m512 *sum)
{
#pragma GCC unroll 2
    for (int i = 0; i < PANELS / 2; i++)
        sum[i] = _mm512_castpd_ps(
            _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(acc[2 * i])),
                               _mm256_castps_pd(acc[2 * i + 1]), 1));
}

AVX512_INLINE void sums16_out(const __m512 *sum, __m256 *acc)
{
#pragma GCC unroll 2
    for (int i = 0; i < PANELS / 2; i++) {
        acc[2 * i] = _mm512_castps512_ps256(sum[i]);
        acc[2 * i + 1] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sum[i]), 1));
    }
}

/* add_weighted on sixteen lanes (the product a fused multiply-add of -0,
 * as mul_exact's). */
AVX512_INLINE __m512 add_weighted16(__m512 sum, __m512 weights, __m512 x)
{
    return _mm512_add_ps(sum, _mm512_fmadd_ps(weights, x, _mm512_set1_ps(-0.0f)));
}

/* panel_fp8_quick of all PANELS panels. */
AVX512_SUMS void panel_fp8_quick16(const uint8_t *const *p, const float *xf, int64_t k0, int64_t k1,
                                   __m256 *acc)
{
    const __m512i mask = _mm512_set1_epi32((int)0x87F00000); /* panel_e4m3_tiny's */
    __m512 sum[PANELS / 2];
    sums16_in(acc, sum);
    for (int64_t k = k0; k < k1; k++) {
        __m512 x = _mm512_set1_ps(xf[k]);
#pragma GCC unroll 2
        for (int i = 0; i < PANELS / 2; i++) {
            __m512i b = two_panels_bytes(p[2 * i] + 8 * k, p[2 * i + 1] + 8 * k);
            __m512 weights = _mm512_castsi512_ps(_mm512_and_si512(_mm512_slli_epi32(b, 20), mask));
            sum[i] = add_weighted16(sum[i], weights, x);
        }
    }
    sums16_out(sum, acc);
}

/* A column pair of two panels of the format, as panel_bf16 and
 * panel_e2m1_tiny decode one panel's. */
AVX512_INLINE void two_panels_pair(int bf16, const uint8_t *a, const uint8_t *b, __m512 *lo,
                                   __m512 *hi)
{
    if (bf16) {
        __m512i v = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)a)),
            _mm256_loadu_si256((const __m256i *)(const void *)b), 1);
        *lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        *hi = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000)));
        return;
    }
    const __m512i mask = _mm512_set1_epi32((int)0x81C00000); /* e2m1_top_tiny's */
    __m512i v = two_panels_bytes(a, b);
    *lo =
        _mm512_castsi512_ps(_mm512_and_si512(_mm512_srai_epi32(_mm512_slli_epi32(v, 28), 6), mask));
    *hi = _mm512_castsi512_ps(_mm512_and_si512(_mm512_slli_epi32(v, 18), mask));
}

/* panel_pairs' steps over column pairs [k0, k1) of all PANELS panels,
 * BF16's (bf16) or FP4's, the sums in 512-bit registers. */
AVX512_INLINE void pairs16_steps(int bf16, const uint8_t *const *p, const float *x, int64_t k0,
                                 int64_t k1, __m512 *sum)
{
    size_t unit = bf16 ? 16 : 4; /* a panel's bytes per column */
    for (int64_t k = k0; k < k1; k += 2) {
        __m512 x0 = _mm512_set1_ps(x[k]), x1 = _mm512_set1_ps(x[k + 1]);
#pragma GCC unroll 2
        for (int i = 0; i < PANELS / 2; i++) {
            __m512 lo, hi;
            two_panels_pair(bf16, p[2 * i] + unit * k, p[2 * i + 1] + unit * k, &lo, &hi);
            sum[i] = add_weighted16(add_weighted16(sum[i], lo, x0), hi, x1);
        }
    }
}

/* panel_pairs of all PANELS BF16 panels. */
AVX512_SUMS void panel_pairs16_bf16(const uint8_t *const *p, const float *x, int64_t k0, int64_t k1,
                                    __m256 *acc)
{
    __m512 sum[PANELS / 2];
    sums16_in(acc, sum);
    pairs16_steps(1, p, x, k0, k1, sum);
    sums16_out(sum, acc);
}

/* G panels' sums continued over FP8 columns [k0, k1) of one block, against
 * xf (the inputs folded for the block: panel_e4m3_tiny's values times them
 * are the weights times the inputs). */
AVX2_INLINE void panel_fp8_quick(const uint8_t *const *p, int G, const float *xf, int64_t k0,
                                 int64_t k1, __m256 *acc)
{
    __m256 sum[PANELS];
    sums_in(acc, G, sum);
    for (int64_t k = k0; k < k1; k++) {
        __m256 x = _mm256_broadcast_ss(xf + k);
#pragma GCC unroll 4
        for (int i = 0; i < PANELS && i < G; i++)
            sum[i] = add_weighted(sum[i], panel_e4m3_tiny(p[i] + 8 * k), x);
    }
    sums_out(sum, G, acc);
}

/* One panel's sums over FP8 columns [k0, k1) decoded the general way
 * (NaN codes, scales past the quick way's, inputs that do not fold). */
AVX2_INLINE __m256 panel_fp8_general(const uint8_t *p, float scale, const float *x, int64_t k0,
                                     int64_t k1, __m256 acc)
{
    __m256 s = _mm256_set1_ps(scale);
    for (int64_t k = k0; k < k1; k++) acc = add_product(acc, panel_e4m3(p + 8 * k, s), x + k);
    return acc;
}

/* FP8 panels p[0..G) (rows from row[i]) against x, folded for their
 * 128-row block in fx: each column block takes the quick way for every
 * panel where it can (all PANELS of them in 512-bit registers if wide),
 * else panel by panel. */
AVX2_INLINE void panels_fp8(const v4_weight *w, const uint8_t *const *p, const int64_t *row, int G,
                            const float *x, const fp8_folded_x *fx, int wide, __m256 *acc)
{
    int64_t blocks = panel_blocks(V4_F8_E4M3, w->cols);
    const uint8_t *nan[PANELS];
    for (int i = 0; i < G; i++) nan[i] = w->panel_extras + (size_t)(row[i] / 8) * blocks;
    for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP8_BLOCK) {
        int64_t k1 = k0 + V4_FP8_BLOCK < w->cols ? k0 + V4_FP8_BLOCK : w->cols;
        uint8_t e = w->scale[(row[0] / V4_FP8_BLOCK) * w->scale_stride + k0 / V4_FP8_BLOCK];
        int quick = (e <= 134 || e == 0xFF) && fx->exact[k0 / V4_FP8_BLOCK], all = quick;
        int clean[PANELS];
        for (int i = 0; i < G; i++) {
            clean[i] = quick && !nan[i][k0 / V4_FP8_BLOCK];
            all &= clean[i];
        }
        if (all && G == PANELS) {
            if (wide)
                panel_fp8_quick16(p, fx->x, k0, k1, acc);
            else
                panel_fp8_quick(p, PANELS, fx->x, k0, k1, acc);
            continue;
        }
        for (int i = 0; i < G; i++)
            if (clean[i])
                panel_fp8_quick(&p[i], 1, fx->x, k0, k1, &acc[i]);
            else
                acc[i] = panel_fp8_general(p[i], v4_fast_scale(e), x, k0, k1, acc[i]);
    }
}

/* ---- FP4 sums in a frame ----------------------------------------------
 *
 * An FP4 weight is an e2m1 value v times its row's block scale 2^(e-127),
 * so the quick way multiplies each decoded value by its row's factor
 * before the product: two multiplications a weight.  Sums in a frame save
 * the first.  The inputs are scaled once by 2^A (x' = x 2^A) and the
 * decoded values 2^-126 v taken as they are, so the frame's product
 * x' (2^-126 v) is the reference's product x (v 2^(e-127)) times 2^D,
 * D = A + 1 - e; each row's sum is kept times its current block's 2^D,
 * and multiplied by 2^(e_old - e_new) where the block changes.  Rounding
 * to nearest commutes with a power of two while neither value leaves the
 * normal range, so every product, sum and change of frame rounds as the
 * reference's does when, with 2^Lx <= the least nonzero |x| and |x| <
 * 2^(Hx+1), cols <= 2^15:
 *   - products are normal in both frames: e >= 2 - Lx and A >= 1 - Lx
 *     (sums never round differently: a sum that falls under 2^-126 in
 *     either frame is a multiple of 2^-149 there, so exact in both);
 *   - nothing overflows: x' needs A <= 125 - Hx, the reference's sums
 *     e <= 233 - Hx, the frame's the spread of a row's codes
 *     e_max - e_min <= 232 - Hx - A;
 *   - a change of frame is exact: the sum is a multiple of 2^(Lx + e_min
 *     - 151) (its products' least ulp), so times 2^D_new it stays one of
 *     2^-149 while e_new - e_min <= Lx + A - 1.
 * A block whose codes would break one leaves the frame for the rest of
 * the row (the sum times 2^-D: the reference's own value), to the quick
 * or general way; so does every row where x is not finite. */

typedef struct fp4_framed_x {
    int usable;     /* x is finite and leaves the frame some room */
    int shift;      /* A */
    int e_lo, e_hi; /* the scale codes a block in the frame may have */
    int spread;     /* the largest e_max - e_min of a row in the frame */
    float *x;       /* x times 2^A */
} fp4_framed_x;

/* x (cols floats, a multiple of 8) prepared for sums in a frame into fr
 * (fr->x given). */
__attribute__((target("avx2,fma"))) static void frame_inputs(const float *x, int64_t cols,
                                                             fp4_framed_x *fr)
{
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 inf = _mm256_set1_ps(INFINITY);
    __m256 big = _mm256_setzero_ps(), small = inf;
    for (int64_t k = 0; k < cols; k += 8) {
        __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + k), magnitude);
        big = _mm256_max_ps(big, a); /* NaN lanes keep big: found below */
        small = _mm256_min_ps(
            small, _mm256_blendv_ps(a, inf, _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_EQ_OQ)));
        if (_mm256_movemask_ps(_mm256_cmp_ps(a, inf, _CMP_NLT_UQ))) { /* inf or NaN */
            fr->usable = 0;
            return;
        }
    }
    float b[8], s[8], xmax = 0, xmin = INFINITY;
    _mm256_storeu_ps(b, big);
    _mm256_storeu_ps(s, small);
    for (int j = 0; j < 8; j++) {
        xmax = fmaxf(xmax, b[j]);
        xmin = fminf(xmin, s[j]);
    }
    if (xmax == 0) { /* every product is a zero, in any frame */
        xmax = xmin = 1;
    }
    int hx = ilogbf(xmax), lx = ilogbf(xmin);
    int a = 125 - hx < 127 ? 125 - hx : 127; /* 2^A a float */
    fr->shift = a;
    fr->e_lo = 2 - lx > 0 ? 2 - lx : 0;
    fr->e_hi = 233 - hx < 254 ? 233 - hx : 254; /* 255 is NaN's */
    fr->spread = lx + a - 1 < 232 - hx - a ? lx + a - 1 : 232 - hx - a;
    fr->usable = fr->spread >= 0 && fr->e_lo <= fr->e_hi;
    __m256 scale = _mm256_set1_ps(ldexpf(1.0f, a));
    for (int64_t k = 0; k < cols && fr->usable; k += 8)
        _mm256_storeu_ps(fr->x + k, _mm256_mul_ps(_mm256_loadu_ps(x + k), scale));
}

/* 2^d of each lane, |d| <= 126. */
AVX2_INLINE __m256 pow2_lanes(__m256i d)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(d, _mm256_set1_epi32(127)), 23));
}

/* A panel's sums in the frame: on, and its rows' current codes and their
 * least and greatest so far. */
typedef struct panel_frame {
    int on;
    __m256i e, least, most;
} panel_frame;

/* The lanes where codes e, with the least and greatest of a row's codes
 * so far, break the frame's conditions (a mask). */
AVX2_INLINE __m256i frame_breaks(const fp4_framed_x *fr, __m256i e, __m256i least, __m256i most)
{
    __m256i bad = _mm256_or_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(fr->e_lo), e),
                                  _mm256_cmpgt_epi32(e, _mm256_set1_epi32(fr->e_hi)));
    return _mm256_or_si256(
        bad, _mm256_cmpgt_epi32(_mm256_sub_epi32(most, least), _mm256_set1_epi32(fr->spread)));
}

/* A panel's sums (zeros) entering the frame where its first block's codes
 * e allow. */
AVX2_INLINE void frame_start(const fp4_framed_x *fr, panel_frame *pf, __m256i e)
{
    __m256i bad = frame_breaks(fr, e, e, e);
    pf->on = fr->usable && _mm256_testz_si256(bad, bad);
    pf->e = pf->least = pf->most = e;
}

/* Whether the panel's sums *acc go on in the frame into a block with
 * codes e (moved to its frame), or are (or now go) out of it, in the
 * weights' own scale. */
AVX2_INLINE int frame_block(const fp4_framed_x *fr, panel_frame *pf, __m256i e, __m256 *acc)
{
    if (!pf->on) return 0;
    __m256i least = _mm256_min_epi32(pf->least, e), most = _mm256_max_epi32(pf->most, e);
    __m256i bad = frame_breaks(fr, e, least, most);
    if (!_mm256_testz_si256(bad, bad)) {
        *acc = _mm256_mul_ps(*acc,
                             pow2_lanes(_mm256_sub_epi32(pf->e, _mm256_set1_epi32(fr->shift + 1))));
        pf->on = 0;
        return 0;
    }
    *acc = _mm256_mul_ps(*acc, pow2_lanes(_mm256_sub_epi32(pf->e, e)));
    pf->e = e;
    pf->least = least;
    pf->most = most;
    return 1;
}

/* The panel's sums out of the frame at the end of its rows. */
AVX2_INLINE void frame_end(const fp4_framed_x *fr, panel_frame *pf, __m256 *acc)
{
    if (pf->on)
        *acc = _mm256_mul_ps(*acc,
                             pow2_lanes(_mm256_sub_epi32(pf->e, _mm256_set1_epi32(fr->shift + 1))));
}

/* ---- FP4 sums in the frame, two panels to a 512-bit register ----
 *
 * While all PANELS panels stay in the frame, a block costs frame_block's
 * checks and rescaling for each panel and the sums of its column pairs.
 * The loop below keeps the frames' codes and the sums in 512-bit
 * registers (two panels each, as panel_pairs16's) from block to block,
 * where calling the sums per block moved them between register widths
 * and checked the panels one by one: the same operations lane for lane.
 * It stops at the first block that would take a panel out of the frame
 * and leaves that block, and the panels' frames as they stand, to
 * panels_fp4's way. */

/* Eight scale codes from a and eight from b, zero-extended to sixteen
 * lanes (panel_lanes of two panels). */
AVX512_INLINE __m512i two_panels_codes(const uint8_t *a, const uint8_t *b)
{
    return _mm512_cvtepu8_epi32(
        _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(const void *)a),
                           _mm_loadl_epi64((const __m128i *)(const void *)b)));
}

/* Two panels' eight lanes as sixteen, and back. */
AVX512_INLINE __m512i join_lanes(__m256i a, __m256i b)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

AVX512_INLINE void split_lanes(__m512i v, __m256i *a, __m256i *b)
{
    *a = _mm512_castsi512_si256(v);
    *b = _mm512_extracti64x4_epi64(v, 1);
}

/* pow2_lanes on sixteen lanes. */
AVX512_INLINE __m512 pow2_lanes16(__m512i d)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(d, _mm512_set1_epi32(127)), 23));
}

/* The lanes where codes e, with a row's least and greatest codes, break
 * the frame's conditions (frame_breaks on sixteen lanes). */
AVX512_INLINE __mmask16 frame_breaks16(const fp4_framed_x *fr, __m512i e, __m512i least,
                                       __m512i most)
{
    return _mm512_cmpgt_epi32_mask(_mm512_set1_epi32(fr->e_lo), e) |
           _mm512_cmpgt_epi32_mask(e, _mm512_set1_epi32(fr->e_hi)) |
           _mm512_cmpgt_epi32_mask(_mm512_sub_epi32(most, least), _mm512_set1_epi32(fr->spread));
}

/* All PANELS panels' sums acc, each in the frame pf[i] (on), continued
 * over FP4 blocks from column k0 while each block keeps every panel in
 * the frame; returns the column where they stopped (a block that does
 * not, or cols). */
AVX512_SUMS int64_t panels_fp4_framed16(const fp4_framed_x *fr, const uint8_t *const *p,
                                        const uint8_t *const *scales, int64_t k0, int64_t cols,
                                        panel_frame *pf, __m256 *acc)
{
    __m512 sum[PANELS / 2];
    __m512i e[PANELS / 2], least[PANELS / 2], most[PANELS / 2];
    sums16_in(acc, sum);
    for (int i = 0; i < PANELS / 2; i++) {
        e[i] = join_lanes(pf[2 * i].e, pf[2 * i + 1].e);
        least[i] = join_lanes(pf[2 * i].least, pf[2 * i + 1].least);
        most[i] = join_lanes(pf[2 * i].most, pf[2 * i + 1].most);
    }
    for (; k0 < cols; k0 += V4_FP4_BLOCK) {
        __m512i next[PANELS / 2], lo[PANELS / 2], hi[PANELS / 2];
        __mmask16 bad = 0;
        size_t at = (size_t)(k0 / V4_FP4_BLOCK) * 8;
        for (int i = 0; i < PANELS / 2; i++) {
            next[i] = two_panels_codes(scales[2 * i] + at, scales[2 * i + 1] + at);
            lo[i] = _mm512_min_epi32(least[i], next[i]);
            hi[i] = _mm512_max_epi32(most[i], next[i]);
            bad |= frame_breaks16(fr, next[i], lo[i], hi[i]);
        }
        if (bad) break;
        for (int i = 0; i < PANELS / 2; i++) {
            sum[i] = _mm512_mul_ps(sum[i], pow2_lanes16(_mm512_sub_epi32(e[i], next[i])));
            e[i] = next[i];
            least[i] = lo[i];
            most[i] = hi[i];
        }
        pairs16_steps(0, p, fr->x, k0, k0 + V4_FP4_BLOCK, sum);
    }
    sums16_out(sum, acc);
    for (int i = 0; i < PANELS / 2; i++) {
        split_lanes(e[i], &pf[2 * i].e, &pf[2 * i + 1].e);
        split_lanes(least[i], &pf[2 * i].least, &pf[2 * i + 1].least);
        split_lanes(most[i], &pf[2 * i].most, &pf[2 * i + 1].most);
    }
    return k0;
}

/* Panels of column pairs: BF16's, or FP4's decoded as values times
 * 2^-126 (panel_e2m1_tiny), whose sums in the frame take them as they are. */
enum pair_format { PAIRS_BF16, PAIRS_E2M1_TINY };

/* G panels' sums continued over column pairs [k0, k1) of the format. */
AVX2_INLINE void panel_pairs(enum pair_format format, const uint8_t *const *p, int G,
                             const float *x, int64_t k0, int64_t k1, __m256 *acc)
{
    __m256 sum[PANELS];
    sums_in(acc, G, sum);
    for (int64_t k = k0; k < k1; k += 2) {
        __m256 x0 = _mm256_broadcast_ss(x + k), x1 = _mm256_broadcast_ss(x + k + 1);
#pragma GCC unroll 4
        for (int i = 0; i < PANELS && i < G; i++) {
            __m256 lo, hi;
            if (format == PAIRS_BF16)
                panel_bf16(p[i] + 16 * k, &lo, &hi);
            else
                panel_e2m1_tiny(p[i] + 4 * k, &lo, &hi);
            sum[i] = add_weighted(add_weighted(sum[i], lo, x0), hi, x1);
        }
    }
    sums_out(sum, G, acc);
}

/* G FP4 panels' sums continued over the block of 32 columns from k0, the
 * rows' factors (fp4_factors) in f. */
AVX2_INLINE void panel_fp4_quick(const uint8_t *const *p, int G, const __m256 *f, const float *x,
                                 int64_t k0, __m256 *acc)
{
    __m256 sum[PANELS];
    sums_in(acc, G, sum);
    for (int64_t k = k0; k < k0 + V4_FP4_BLOCK; k += 2) {
        __m256 x0 = _mm256_broadcast_ss(x + k), x1 = _mm256_broadcast_ss(x + k + 1);
#pragma GCC unroll 4
        for (int i = 0; i < PANELS && i < G; i++) {
            __m256 lo, hi;
            panel_e2m1_tiny(p[i] + 4 * k, &lo, &hi);
            sum[i] = add_weighted(add_weighted(sum[i], mul_exact(lo, f[i]), x0),
                                  mul_exact(hi, f[i]), x1);
        }
    }
    sums_out(sum, G, acc);
}

/* One FP4 panel's sums over that block the general way (a scale past
 * fp4_factors' limit): each weight decoded and multiplied by its row's
 * scale, as decode8 does. */
AVX2_INLINE __m256 panel_fp4_general(const uint8_t *p, __m256 scale, const float *x, int64_t k0,
                                     __m256 acc)
{
    for (int64_t k = k0; k < k0 + V4_FP4_BLOCK; k += 2) {
        __m256 lo, hi;
        panel_e2m1(p + 4 * k, scale, &lo, &hi);
        acc = add_product(acc, lo, x + k);
        acc = add_product(acc, hi, x + k + 1);
    }
    return acc;
}

/* The ways an FP4 panel takes a block. */
enum { FP4_FRAMED, FP4_QUICK, FP4_GENERAL };

/* FP4 panels p[0..G) (rows from row[i]) against x, prepared for the frame
 * in fr: each block in the frame, else the quick way, else the general
 * one; all panels together where they go the same quick way (in the
 * frame, in 512-bit registers if wide). */
AVX2_INLINE void panels_fp4(const v4_weight *w, const uint8_t *const *p, const int64_t *row, int G,
                            const float *x, const fp4_framed_x *fr, int wide, __m256 *acc)
{
    int64_t blocks = panel_blocks(V4_I8, w->cols);
    const uint8_t *scales[PANELS];
    panel_frame pf[PANELS];
    for (int i = 0; i < G; i++) {
        scales[i] = w->panel_extras + (size_t)(row[i] / 8) * blocks * 8;
        frame_start(fr, &pf[i], panel_lanes(scales[i]));
    }
    int64_t k0 = 0;
    int framed = G == PANELS;
    for (int i = 0; i < G; i++) framed &= pf[i].on;
    if (wide && framed) k0 = panels_fp4_framed16(fr, p, scales, 0, w->cols, pf, acc);
    for (; k0 < w->cols; k0 += V4_FP4_BLOCK) {
        const uint8_t *codes[PANELS];
        __m256 f[PANELS];
        int way[PANELS] = {0}, same = G == PANELS; /* (zeros: for the compiler) */
        for (int i = 0; i < G; i++) {
            codes[i] = scales[i] + k0 / V4_FP4_BLOCK * 8;
            __m256i e = panel_lanes(codes[i]);
            way[i] = frame_block(fr, &pf[i], e, &acc[i]) ? FP4_FRAMED
                     : panel_fp4_quick_scales(e)         ? FP4_QUICK
                                                         : FP4_GENERAL;
            f[i] = fp4_factors(e);
            same &= way[i] == way[0];
        }
        if (same && way[0] == FP4_FRAMED) { /* (not wide: panels_fp4_framed16 took those) */
            panel_pairs(PAIRS_E2M1_TINY, p, PANELS, fr->x, k0, k0 + V4_FP4_BLOCK, acc);
            continue;
        }
        if (same && way[0] == FP4_QUICK) {
            panel_fp4_quick(p, PANELS, f, x, k0, acc);
            continue;
        }
        for (int i = 0; i < G; i++)
            if (way[i] == FP4_FRAMED)
                panel_pairs(PAIRS_E2M1_TINY, &p[i], 1, fr->x, k0, k0 + V4_FP4_BLOCK, &acc[i]);
            else if (way[i] == FP4_QUICK)
                panel_fp4_quick(&p[i], 1, &f[i], x, k0, &acc[i]);
            else
                acc[i] = panel_fp4_general(p[i], panel_scales(codes[i]), x, k0, acc[i]);
    }
    for (int i = 0; i < G; i++) frame_end(fr, &pf[i], &acc[i]);
}

/* ---- prefill's tiles from panels ---- */

/* Column k's eight weights (or a pair's sixteen) stored at dst + k *
 * stride. */
AVX2_INLINE void store_column(float *dst, int64_t stride, int64_t k, __m256 v)
{
    _mm256_storeu_ps(dst + k * stride, v);
}

/* FP8 panel p's columns decoded into dst: per 128-column block the quick
 * way where the block holds no NaN code and its scale takes a factor. */
AVX2_INLINE void panel_decode_fp8(const v4_weight *w, int64_t pi, const uint8_t *p, float *dst,
                                  int64_t stride)
{
    int64_t blocks = panel_blocks(V4_F8_E4M3, w->cols);
    const uint8_t *nan = w->panel_extras + (size_t)pi * blocks;
    for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP8_BLOCK) {
        int64_t k1 = k0 + V4_FP8_BLOCK < w->cols ? k0 + V4_FP8_BLOCK : w->cols;
        uint8_t e = w->scale[(8 * pi / V4_FP8_BLOCK) * w->scale_stride + k0 / V4_FP8_BLOCK];
        if ((e <= 134 || e == 0xFF) && !nan[k0 / V4_FP8_BLOCK]) {
            __m256 f = _mm256_set1_ps(fp8_factor(e));
            for (int64_t k = k0; k < k1; k++)
                store_column(dst, stride, k, mul_exact(panel_e4m3_tiny(p + 8 * k), f));
        } else {
            __m256 s = _mm256_set1_ps(v4_fast_scale(e));
            for (int64_t k = k0; k < k1; k++)
                store_column(dst, stride, k, panel_e4m3(p + 8 * k, s));
        }
    }
}

/* FP4 panel p's columns decoded into dst, per 32-column block the quick
 * way where fp4_factors takes every row's scale. */
AVX2_INLINE void panel_decode_fp4(const v4_weight *w, int64_t pi, const uint8_t *p, float *dst,
                                  int64_t stride)
{
    const uint8_t *scales = w->panel_extras + (size_t)pi * panel_blocks(V4_I8, w->cols) * 8;
    for (int64_t k0 = 0; k0 < w->cols; k0 += V4_FP4_BLOCK) {
        const uint8_t *codes = scales + k0 / V4_FP4_BLOCK * 8;
        __m256i e = panel_lanes(codes);
        int quick = panel_fp4_quick_scales(e);
        __m256 f = quick ? fp4_factors(e) : panel_scales(codes);
        for (int64_t k = k0; k < k0 + V4_FP4_BLOCK; k += 2) {
            __m256 lo, hi;
            if (quick) {
                panel_e2m1_tiny(p + 4 * k, &lo, &hi);
                lo = mul_exact(lo, f);
                hi = mul_exact(hi, f);
            } else {
                panel_e2m1(p + 4 * k, f, &lo, &hi);
            }
            store_column(dst, stride, k, lo);
            store_column(dst, stride, k + 1, hi);
        }
    }
}

/* The weights of panel `pi` decoded: column k's eight values (rows
 * 8 pi..8 pi + 7, zeros past the last) at dst + k * stride, as decode8 and
 * v4_weight_row decode them (a code's value times its scale, NaN for NaN),
 * for prefill's tiles. */
__attribute__((target("avx2,fma"))) static void panel_decode(const v4_weight *w, int64_t pi,
                                                             float *dst, int64_t stride)
{
    const uint8_t *p = w->panels + (size_t)pi * 8 * v4_dtype_row_bytes(w->dtype, w->cols);
    if (w->dtype == V4_F8_E4M3) {
        panel_decode_fp8(w, pi, p, dst, stride);
    } else if (w->dtype == V4_I8) {
        panel_decode_fp4(w, pi, p, dst, stride);
    } else {
        for (int64_t k = 0; k < w->cols; k += 2) {
            __m256 lo, hi;
            panel_bf16(p + 16 * k, &lo, &hi);
            store_column(dst, stride, k, lo);
            store_column(dst, stride, k + 1, hi);
        }
    }
}

/* Rows [r, r1) of w (r a multiple of 8, at most 8 * PANELS rows, within
 * one 128-row block) against x into y, from the panels; the quick sums of
 * all PANELS panels in 512-bit registers if wide. */
__attribute__((target("avx2,fma"))) static void
panels_pass(const v4_weight *w, int64_t r, int64_t r1, const float *x, fp8_folded_x *fx,
            const fp4_framed_x *fr, int wide, float *y)
{
    size_t stride = 8 * v4_dtype_row_bytes(w->dtype, w->cols); /* a panel's bytes */
    const uint8_t *p[PANELS];
    int64_t row[PANELS];
    int G = (int)((r1 - r + 7) / 8);
    __m256 acc[PANELS];
    for (int i = 0; i < PANELS; i++) {
        int live = i < G ? i : 0;
        row[i] = r + 8 * live;
        p[i] = w->panels + (size_t)(row[i] / 8) * stride;
        acc[i] = _mm256_setzero_ps();
    }
    if (w->dtype == V4_F8_E4M3) {
        if (fx->row_block != r / V4_FP8_BLOCK) fold_row_block(w, x, r / V4_FP8_BLOCK, fx);
        panels_fp8(w, p, row, G, x, fx, wide, acc);
    } else if (w->dtype == V4_I8) {
        panels_fp4(w, p, row, G, x, fr, wide, acc);
    } else if (G == PANELS && wide) {
        panel_pairs16_bf16(p, x, 0, w->cols, acc);
    } else if (G == PANELS) {
        panel_pairs(PAIRS_BF16, p, PANELS, x, 0, w->cols, acc);
    } else {
        for (int i = 0; i < G; i++) panel_pairs(PAIRS_BF16, &p[i], 1, x, 0, w->cols, &acc[i]);
    }
    float out[8 * PANELS];
    for (int i = 0; i < PANELS; i++) _mm256_storeu_ps(out + 8 * i, acc[i]);
    memcpy(y + r, out, (size_t)(r1 - r) * sizeof(float));
}
#endif

/* ---- panels: the layout ------------------------------------------------- */

/* The unit of a row a panel interleaves: a byte of FP8 or FP4 codes (one
 * or two columns), a column pair of BF16; 0 for types without panels. */
static size_t panel_unit(v4_dtype dtype)
{
    return dtype == V4_F8_E4M3 || dtype == V4_I8 ? 1 : dtype == V4_BF16 ? 4 : 0;
}

size_t v4_panels_size(v4_dtype dtype, int64_t rows, int64_t cols)
{
    if (!panel_unit(dtype) || cols % 32 || rows < 1) return 0;
    size_t panel = 8 * v4_dtype_row_bytes(dtype, cols) +
                   (size_t)panel_blocks(dtype, cols) * panel_extra_bytes(dtype);
    return (size_t)((rows + 7) / 8) * panel;
}

size_t v4_panels_bytes(const v4_weight *w)
{
    return v4_cpu_has_avx2() ? v4_panels_size(w->dtype, w->rows, w->cols) : 0;
}

/* Units of `unit` bytes (1 or 4) of n source rows, each `units` long,
 * interleaved into dst (unit t of row j at t * 8 + j); rows n..7 zeros.
 * Row by row, so that the stores of a panel (at most 256 KiB) stay in
 * the cache while the loads stream. */
static void interleave_rows(const uint8_t *const *src, int n, size_t units, size_t unit,
                            uint8_t *dst)
{
    for (int j = 0; j < 8; j++) {
        if (j >= n) {
            for (size_t t = 0; t < units; t++) memset(dst + (t * 8 + j) * unit, 0, unit);
        } else if (unit == 1) {
            for (size_t t = 0; t < units; t++) dst[t * 8 + j] = src[j][t];
        } else {
            for (size_t t = 0; t < units; t++) memcpy(dst + (t * 8 + j) * 4, src[j] + t * 4, 4);
        }
    }
}

/* Panels [p0, p1) of w into the buffer at ctx's dst (v4_panels_attach's
 * task). */
typedef struct panel_fill {
    const v4_weight *w;
    uint8_t *dst;
} panel_fill;

static void fill_panels(void *ctx, int64_t p0, int64_t p1)
{
    const panel_fill *f = ctx;
    const v4_weight *w = f->w;
    size_t unit = panel_unit(w->dtype), row_bytes = v4_dtype_row_bytes(w->dtype, w->cols);
    int64_t blocks = panel_blocks(w->dtype, w->cols);
    size_t extra = panel_extra_bytes(w->dtype);
    uint8_t *extras = f->dst + (size_t)((w->rows + 7) / 8) * 8 * row_bytes;
    for (int64_t p = p0; p < p1; p++) {
        const uint8_t *src[8];
        uint8_t *panel = f->dst + (size_t)p * 8 * row_bytes;
        int n = w->rows - 8 * p < 8 ? (int)(w->rows - 8 * p) : 8;
        for (int j = 0; j < n; j++) src[j] = w->data + (size_t)(8 * p + j) * row_bytes;
        interleave_rows(src, n, row_bytes / unit, unit, panel);
        for (int64_t b = 0; b < blocks; b++) {
            uint8_t *to = extras + ((size_t)p * blocks + b) * extra;
            if (w->dtype == V4_F8_E4M3) {
                int64_t k0 = b * V4_FP8_BLOCK, k1 = k0 + V4_FP8_BLOCK;
                *to = (uint8_t)v4_fp8_any_nan(panel + 8 * k0,
                                              8 * ((k1 < w->cols ? k1 : w->cols) - k0));
            } else {
                for (int j = 0; j < 8; j++)
                    to[j] = j < n ? w->scale[(8 * p + j) * w->scale_stride + b] : 127;
            }
        }
    }
}

void v4_panels_attach(v4_weight *w, uint8_t *dst)
{
    panel_fill f = {w, dst};
    int64_t panels = (w->rows + 7) / 8;
    if (w->pool)
        v4_parallel_for(w->pool, panels, 16, fill_panels, &f);
    else
        fill_panels(&f, 0, panels);
    w->panels = dst;
    w->panel_extras = dst + (size_t)panels * 8 * v4_dtype_row_bytes(w->dtype, w->cols);
}

v4_weight v4_weight_rows(const v4_weight *w, int64_t first, int64_t rows)
{
    v4_weight s = *w;
    size_t row_bytes = v4_dtype_row_bytes(w->dtype, w->cols);
    /* scale rows: FP8 one per 128 rows, FP4 one per row */
    int64_t scale_rows = w->dtype == V4_F8_E4M3 ? first / V4_FP8_BLOCK : first;
    s.rows = rows;
    s.data += (size_t)first * row_bytes;
    if (s.scale) s.scale += (size_t)scale_rows * (size_t)w->scale_stride;
    if (s.fp8_clean) s.fp8_clean += (size_t)scale_rows * (size_t)w->scale_stride;
    if (s.panels) {
        s.panels += (size_t)first * row_bytes;
        s.panel_extras +=
            (size_t)(first / 8 * panel_blocks(w->dtype, w->cols)) * panel_extra_bytes(w->dtype);
    }
    return s;
}

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
#ifdef V4_HAVE_X86
    const struct wide_kind *wide; /* prefill's register tile (matmul_rows_wide), or NULL */
    int wide_sums;                /* decode's panel sums in 512-bit registers */
#endif
} matmul_job;

/* Per-thread scratch (the pool's, v4_pool_scratch): LANES decoded rows,
 * then GROUP transposed tiles of LANES rows (tile[k*LANES + j] = row j,
 * column k); or, for prefill on a register tile, WIDE_LANES decoded rows
 * and a block of up to WIDE_ROWS transposed rows. */
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

/* Tiles of LANES rows from r (up to max_tiles, before r_end): decoded
 * from the panels (a panel is a tile), or row by row and transposed. */
static int decode_tiles(const v4_weight *w, int64_t r, int64_t r_end, float *row_buf, float *tiles,
                        int max_tiles)
{
    int64_t cols = w->cols;
    int n_tiles = 0;
    for (; n_tiles < max_tiles && r < r_end; n_tiles++, r += LANES) {
        float *tile = tiles + (size_t)n_tiles * LANES * cols;
#ifdef V4_HAVE_X86
        if (w->panels) {
            panel_decode(w, r / LANES, tile, LANES);
            continue;
        }
#endif
        decode_rows_padded(w, r, LANES, r_end, row_buf);
        transpose8(row_buf, cols, tile);
    }
    return n_tiles;
}

static void store_rows(float *y, const float *vals, int64_t r, int64_t r_end)
{
    int64_t n = r_end - r < LANES ? r_end - r : LANES;
    memcpy(y + r, vals, (size_t)n * sizeof(float));
}

#ifdef V4_HAVE_X86
/* ---- prefill's register tiles ----------------------------------------------
 *
 * The same in-order, unfused sums, a block of rows x WIDE_TOKENS tokens at
 * a time: 64 rows on AVX-512 (24 independent sums of sixteen lanes in
 * registers), 16 on AVX2 (12 sums of eight lanes, with two registers for
 * the weights and one for a token's input: all sixteen), each updated once
 * per column, where the 8-lane tiles above keep four.  A multiply and an
 * add per weight cost two instructions where an FMA costs one, but on Zen
 * 3 and Zen 4 they issue to different pipes (multiplies with the FMAs,
 * adds to two pipes of their own): in a microbenchmark this order ran at
 * 79-81% of the FMA peak on a Zen 4, and flash-shape prefill with exact
 * kernels went from 32-37 to 51-52 tokens/s (2 threads); on a Zen 3 with
 * AVX2, from 29.5 to 41.7.  Columns go in runs of WIDE_COLUMNS, the sums
 * stored in y between runs (a float kept is the float continued), so that
 * a run of the block stays in the L1 or L2 cache while every token passes
 * over it.  Every loop over the sums is unrolled: GCC otherwise keeps the
 * array of sums in memory and stores each one back at every column (the
 * AVX2 tile ran at 29.4 tokens/s so). */

/* Continue the sums y[t][i] (i < live, at most the block's rows) over
 * columns [k0, k1) of the block and of xs[t]; from +0 when k0 is 0.  Every
 * sum adds its products in column order. */
typedef void wide_tile_fn(const float *block, const float *const *xs, float *const *y, int live,
                          int64_t k0, int64_t k1);

/* A register tile and the rows of the block it takes. */
typedef struct wide_kind {
    int rows;
    wide_tile_fn *tile;
} wide_kind;

__attribute__((target("avx512f"))) static void wide_tile_avx512(const float *block,
                                                                const float *const *xs,
                                                                float *const *y, int live,
                                                                int64_t k0, int64_t k1)
{
    __mmask16 rows[4];
    for (int v = 0; v < 4; v++) {
        int left = live - v * 16;
        rows[v] = left >= 16 ? 0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
    __m512 a[WIDE_TOKENS][4];
#pragma GCC unroll 8
    for (int t = 0; t < WIDE_TOKENS; t++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            a[t][v] = k0 ? _mm512_maskz_loadu_ps(rows[v], y[t] + v * 16) : _mm512_setzero_ps();
    for (int64_t k = k0; k < k1; k++) {
        const float *b = block + k * 64;
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
#pragma GCC unroll 8
    for (int t = 0; t < WIDE_TOKENS; t++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) _mm512_mask_storeu_ps(y[t] + v * 16, rows[v], a[t][v]);
}

__attribute__((target("avx2,fma"))) static void wide_tile_avx2(const float *block,
                                                               const float *const *xs,
                                                               float *const *y, int live,
                                                               int64_t k0, int64_t k1)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i rows[2] = {_mm256_cmpgt_epi32(_mm256_set1_epi32(live), lane),
                       _mm256_cmpgt_epi32(_mm256_set1_epi32(live - 8), lane)};
    __m256 a[WIDE_TOKENS][2];
#pragma GCC unroll 8
    for (int t = 0; t < WIDE_TOKENS; t++)
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++)
            a[t][v] = k0 ? _mm256_maskload_ps(y[t] + v * 8, rows[v]) : _mm256_setzero_ps();
    for (int64_t k = k0; k < k1; k++) {
        const float *b = block + k * 16;
        __m256 w0 = _mm256_loadu_ps(b), w1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 8
        for (int t = 0; t < WIDE_TOKENS; t++) {
            __m256 x = _mm256_broadcast_ss(xs[t] + k);
            a[t][0] = _mm256_add_ps(a[t][0], _mm256_mul_ps(w0, x));
            a[t][1] = _mm256_add_ps(a[t][1], _mm256_mul_ps(w1, x));
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < WIDE_TOKENS; t++)
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++) _mm256_maskstore_ps(y[t] + v * 8, rows[v], a[t][v]);
}

/* The tile for the ISA the fast kernels run (TOME_ISA can force less), or
 * none for the scalar kernels.  Chosen once. */
static const wide_kind *wide_prefill;
static int wide_sums; /* decode's panel sums take 512-bit registers */
static pthread_once_t wide_once = PTHREAD_ONCE_INIT;

static void probe_wide(void)
{
    static const wide_kind avx512 = {64, wide_tile_avx512}, avx2 = {16, wide_tile_avx2};
    const char *isa = v4_kernels_isa();
    wide_sums = strcmp(isa, "avx512") == 0;
    wide_prefill = wide_sums ? &avx512 : strcmp(isa, "avx2") == 0 ? &avx2 : NULL;
}

/* Rows r.. (up to r_end) of w decoded and transposed into a block of
 * `width` lanes (a multiple of WIDE_LANES): block[k*width + j] = row r + j,
 * column k (zero past r_end), from the panels or decoded WIDE_LANES rows
 * at a time into row_buf. */
__attribute__((target("avx2,fma"))) static void decode_wide_block(const v4_weight *w, int64_t r,
                                                                  int64_t r_end, int width,
                                                                  float *row_buf, float *block)
{
    int64_t cols = w->cols;
    for (int j0 = 0; j0 < width && w->panels; j0 += 8) {
        if (r + j0 < r_end)
            panel_decode(w, (r + j0) / 8, block + j0, width);
        else
            for (int64_t k = 0; k < cols; k++) memset(block + k * width + j0, 0, 8 * sizeof(float));
    }
    for (int j0 = 0; j0 < width && !w->panels; j0 += WIDE_LANES) {
        decode_rows_padded(w, r + j0, WIDE_LANES, r_end, row_buf);
        for (int j1 = 0; j1 < WIDE_LANES; j1 += 8)
            transpose8_avx2(row_buf + j1 * cols, cols, block + j0 + j1, width);
    }
}

/* matmul_rows for prefill on a register tile: rows [r0, r1) in blocks of
 * the tile's rows.  Tokens past the last are the last again (their sums
 * are its own, stored twice). */
static void matmul_rows_wide(const matmul_job *j, int64_t r0, int64_t r1)
{
    const v4_weight *w = j->w;
    const wide_kind *kind = j->wide;
    int64_t cols = w->cols;
    float *row_buf = v4_pool_scratch(w->pool), *block = row_buf + (size_t)WIDE_LANES * cols;
    for (int64_t r = r0; r < r1; r += kind->rows) {
        decode_wide_block(w, r, r1, kind->rows, row_buf, block);
        int live = r1 - r < kind->rows ? (int)(r1 - r) : kind->rows;
        for (int64_t k0 = 0; k0 < cols; k0 += WIDE_COLUMNS)
            for (int t0 = 0; t0 < j->n; t0 += WIDE_TOKENS) {
                const float *xs[WIDE_TOKENS];
                float *y[WIDE_TOKENS];
                for (int t = 0; t < WIDE_TOKENS; t++) {
                    int64_t token = t0 + t < j->n ? t0 + t : j->n - 1;
                    xs[t] = j->x + token * j->xstride;
                    y[t] = j->y + token * j->ystride + r;
                }
                kind->tile(block, xs, y, live, k0,
                           k0 + WIDE_COLUMNS < cols ? k0 + WIDE_COLUMNS : cols);
            }
    }
}

/* The register tile a product of n tokens takes, or NULL; and in
 * *sums16 whether its decode sums take 512-bit registers. */
static const wide_kind *product_tile(int n, int *sums16)
{
    pthread_once(&wide_once, probe_wide);
    *sums16 = n == 1 && wide_sums;
    return n < 2 ? NULL : wide_prefill;
}
#endif

static void matmul_rows(void *ctx, int64_t r0, int64_t r1)
{
    const matmul_job *j = ctx;
    const v4_weight *w = j->w;
    int64_t cols = w->cols;
#ifdef V4_HAVE_X86
    if (j->n == 1 && w->panels) {
        /* FP8 folds x, FP4 scales it: one scratch serves either */
        fp8_folded_x fx = {.row_block = -1, .x = v4_pool_scratch(w->pool)};
        fp4_framed_x fr = {.x = fx.x};
        if (w->dtype == V4_I8) frame_inputs(j->x, cols, &fr);
        for (int64_t r = r0; r < r1; r += 8 * PANELS)
            panels_pass(w, r, r1 - r < 8 * PANELS ? r1 : r + 8 * PANELS, j->x, &fx, &fr,
                        j->wide_sums, j->y);
        return;
    }
    if (j->n == 1 && v4_cpu_has_avx2() && cols % 32 == 0 && v4_dtype_block(w->dtype) == 1 &&
        w->dtype != V4_F16) {
        fp8_folded_x fx = {.row_block = -1, .x = v4_pool_scratch(w->pool)};
        for (int64_t r = r0; r < r1; r += 8 * GROUPS)
            matvec_avx2(w, r, (int)(r1 - r < 8 * GROUPS ? r1 - r : 8 * GROUPS), j->x, &fx,
                        j->y + r);
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
    matmul_job j = {.w = w, .x = x, .xstride = xstride, .n = n, .y = y, .ystride = ystride};
    /* Aim for tasks of a few hundred KiB of weights each, whole blocks of
     * rows (a register tile's block for prefill). */
    int64_t row_bytes = (int64_t)v4_dtype_row_bytes(w->dtype, w->cols);
    int64_t grain = (256 * 1024) / (row_bytes * (n > 4 ? 4 : n) + 1), block = LANES;
#ifdef V4_HAVE_X86
    if (n == 1) block = w->panels ? 8 * PANELS : 8 * GROUPS; /* within a 128-row FP8 block */
    j.wide = product_tile(n, &j.wide_sums);
    if (j.wide) block = j.wide->rows;
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
 * the kernel as huge pages.  A prefill chunk's activations (tens of MB per
 * product) are fresh memory from mmap the first time an evaluation asks
 * for them (engine/buffers.c keeps them after that), and the exact
 * kernels' panels are gigabytes of it, written once at load: touching
 * them 4 kB at a time cost a page fault each, which in a virtual machine
 * was 8% of prefill, and most of the exact kernels' load (a 1 GiB buffer's
 * first writes: 3.7 s in 4 kB pages, 1.6 s in huge ones; Zen 5 VM).  Only
 * whole huge pages are offered, so that a buffer's last one never holds
 * up to 2 MB of memory it does not use. */
#define HUGE_BYTES ((size_t)4 << 20)
#define HUGE_PAGE  ((size_t)2 << 20)

void *v4_alloc(size_t bytes)
{
    if (bytes > SIZE_MAX - HUGE_PAGE) return NULL; /* no rounding wraps around */
    bytes = (bytes ? bytes + 63 : 64) / 64 * 64;
    if (bytes < HUGE_BYTES) return aligned_alloc(64, bytes);
    void *p = NULL;
    if (posix_memalign(&p, HUGE_PAGE, bytes) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE); /* a hint */
#endif
    return p;
}

float *v4_floats(size_t n)
{
    return n > SIZE_MAX / sizeof(float) ? NULL : v4_alloc(n * sizeof(float));
}
