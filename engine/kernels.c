/*
 * kernels.c - the engine's compute kernels over v4_weight and F32 rows.
 *
 * Weights stay in the checkpoint's own formats (memory-mapped FP8, FP4,
 * BF16, F32) and are decoded row by row into F32 scratch right before use,
 * so a model is never expanded in memory and a 284B checkpoint costs only
 * its mapping.  A matmul decodes a tile of weight rows once and applies it
 * to every token row of the batch, so prefill amortises the decoding over
 * the chunk while decode (one token) pays it once per row as it must.
 *
 * Each inner loop has a plain C reference version and, where it pays, an
 * AVX2+FMA version selected at run time (the default build stays portable;
 * --enable-native lets the compiler tune the reference loops too).  The SIMD
 * versions sum in a different order than the scalar ones, which changes
 * results only at the level of float rounding.
 */
#include "engine/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define V4_HAVE_X86 1
#endif

/* ---- dot products ----------------------------------------------------------
 *
 * Every dot product in the engine accumulates in input order with one fused
 * multiply-add per element, which is the order the reference's GEMMs use
 * for these sizes.  That matters more than it seems: V4 rounds KV vectors
 * to FP8 and indexer vectors to FP4, so an input a few ulps away from the
 * reference's can land on the other side of a rounding midpoint and change
 * a stored entry.  SIMD kernels therefore vectorise across independent
 * outputs (lanes = rows), never within one sum, and give bit-identical
 * results to the scalar reference loops.
 */

float v4_dot(const float *a, const float *b, int n)
{
    float s = 0;
    for (int i = 0; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

void v4_axpy(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

#define LANES 8

/* out[j] = dot(rowsT[.][j], x) for the LANES rows of a transposed tile
 * (rowsT[k*LANES + j] = row j, element k). */
static void dot8_scalar(const float *rowsT, const float *x, int n, float *out)
{
    float acc[LANES] = {0};
    for (int k = 0; k < n; k++)
        for (int j = 0; j < LANES; j++) acc[j] = fmaf(rowsT[k * LANES + j], x[k], acc[j]);
    memcpy(out, acc, sizeof acc);
}

#ifdef V4_HAVE_X86
__attribute__((target("avx2,fma"))) static void dot8_avx2(const float *rowsT, const float *x, int n,
                                                          float *out)
{
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < n; k++)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(rowsT + k * LANES), _mm256_set1_ps(x[k]), acc);
    _mm256_storeu_ps(out, acc);
}
#endif

typedef void (*dot8_fn)(const float *, const float *, int, float *);

static dot8_fn pick_dot8(void)
{
#ifdef V4_HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return dot8_avx2;
#endif
    return dot8_scalar;
}

static void dot8(const float *rowsT, const float *x, int n, float *out)
{
    static dot8_fn fn;
    if (!fn) fn = pick_dot8(); /* benign race: every thread computes the same pointer */
    fn(rowsT, x, n, out);
}

/* ---- weight rows ----------------------------------------------------------- */

static void row_fp8(const v4_weight *w, int64_t r, float *out)
{
    const uint8_t *row = w->data + r * w->cols;
    const uint8_t *sc = w->scale + (r / 128) * w->scale_stride;
    for (int64_t c0 = 0; c0 < w->cols; c0 += 128) {
        float s = v4_e8m0_to_f32(sc[c0 / 128]);
        int64_t end = c0 + 128 < w->cols ? c0 + 128 : w->cols;
        for (int64_t c = c0; c < end; c++) out[c] = v4_e4m3_table[row[c]] * s;
    }
}

static void row_fp4(const v4_weight *w, int64_t r, float *out)
{
    const uint8_t *row = w->data + r * (w->cols / 2);
    const uint8_t *sc = w->scale + r * w->scale_stride;
    for (int64_t c0 = 0; c0 < w->cols; c0 += 32) {
        float s = v4_e8m0_to_f32(sc[c0 / 32]);
        for (int64_t c = c0; c < c0 + 32; c += 2) {
            uint8_t b = row[c / 2];
            out[c] = v4_e2m1_values[b & 15] * s;
            out[c + 1] = v4_e2m1_values[b >> 4] * s;
        }
    }
}

static void row_bf16(const v4_weight *w, int64_t r, float *out)
{
    const uint8_t *row = w->data + r * w->cols * 2;
    for (int64_t c = 0; c < w->cols; c++) {
        uint16_t b = (uint16_t)(row[2 * c] | (row[2 * c + 1] << 8));
        out[c] = v4_bf16_to_f32(b);
    }
}

void v4_weight_row(const v4_weight *w, int64_t r, float *out)
{
    switch (w->dtype) {
    case V4_F8_E4M3: row_fp8(w, r, out); break;
    case V4_I8: row_fp4(w, r, out); break;
    case V4_BF16: row_bf16(w, r, out); break;
    default: memcpy(out, w->data + r * w->cols * 4, (size_t)w->cols * 4); break;
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
} matmul_job;

/* Decoded weight rows, per thread, transposed into LANES-wide columns.  A
 * fixed buffer keeps the kernel free of allocation (and so of failure);
 * config.c refuses models whose matrices are wider than V4_MAX_COLS. */
static _Thread_local float tile_rows[LANES * V4_MAX_COLS];
static _Thread_local float tile_t[LANES * V4_MAX_COLS];

static void matmul_rows(void *ctx, int64_t r0, int64_t r1)
{
    const matmul_job *j = ctx;
    const v4_weight *w = j->w;
    int64_t cols = w->cols;
    for (int64_t r = r0; r < r1; r += LANES) {
        int rows = (int)(r + LANES <= r1 ? LANES : r1 - r);
        for (int k = 0; k < rows; k++) v4_weight_row(w, r + k, tile_rows + k * cols);
        for (int k = rows; k < LANES; k++) memset(tile_rows + k * cols, 0, (size_t)cols * 4);
        for (int64_t c = 0; c < cols; c++)
            for (int k = 0; k < LANES; k++) tile_t[c * LANES + k] = tile_rows[k * cols + c];
        for (int t = 0; t < j->n; t++) {
            float out[LANES];
            dot8(tile_t, j->x + (int64_t)t * j->xstride, (int)cols, out);
            memcpy(j->y + t * j->ystride + r, out, (size_t)rows * sizeof *out);
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
    matmul_job j = {w, x, xstride, n, y, ystride};
    /* Aim for tasks of a few hundred KiB of weights each. */
    int64_t row_bytes = w->cols * (int64_t)(w->dtype == V4_I8 ? 1 : v4_dtype_size(w->dtype));
    if (w->dtype == V4_I8) row_bytes /= 2;
    int64_t grain = (256 * 1024) / (row_bytes * (n > 4 ? 4 : n) + 1);
    grain = grain < LANES ? LANES : (grain / LANES) * LANES;
    v4_parallel_for(w->rows, grain, matmul_rows, &j);
}

void v4_rmsnorm(float *out, const float *x, const v4_weight *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / n + eps));
    if (!w) {
        for (int i = 0; i < n; i++) out[i] = x[i] * r;
        return;
    }
    const uint8_t *wb = w->data;
    for (int i = 0; i < n; i++) {
        float wi = w->dtype == V4_BF16 ? v4_bf16_to_f32((uint16_t)(wb[2 * i] | (wb[2 * i + 1] << 8)))
                                       : ((const float *)wb)[i];
        out[i] = wi * (x[i] * r);
    }
}
