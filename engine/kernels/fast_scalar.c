/*
 * fast_scalar.c - the fast kernels' reference: the summation order of
 * fast.h written as plain C, one lane at a time.
 *
 * It is what the SIMD kernels are tested against (bit for bit) and what runs
 * on a CPU without AVX2.  fmaf is the fused multiply-add the order asks for
 * (a single rounding), whatever instruction the compiler turns it into.
 */
#include "engine/kernels/fast.h"

#include <math.h>
#include <string.h>

/* The plain order: lanes over every sixteenth column. */
static float plain_dot(const float *w, const float *x, int64_t cols)
{
    float acc[V4_FAST_LANES] = {0};
    for (int64_t k = 0; k < cols; k += V4_FAST_LANES)
        for (int l = 0; l < V4_FAST_LANES; l++) acc[l] = fmaf(w[k + l], x[k + l], acc[l]);
    return v4_fast_reduce(acc);
}

float v4_fast_dot(const float *w, const float *x, int64_t cols)
{
    if (cols % V4_PAIRS_COLUMNS) return plain_dot(w, x, cols);
    float acc[V4_FAST_LANES] = {0};
    for (int64_t c = 0; c < cols; c += V4_PAIRS_COLUMNS)
        for (int l = 0; l < V4_FAST_LANES; l++) {
            acc[l] = fmaf(w[c + 2 * l + 1], x[c + 2 * l + 1], acc[l]);
            acc[l] = fmaf(w[c + 2 * l], x[c + 2 * l], acc[l]);
        }
    return v4_fast_reduce(acc);
}

/* v to zero of its sign when below 2^-126 in magnitude (vdpbf16ps's
 * treatment of subnormal inputs and results). */
static float flush(float v)
{
    return fabsf(v) < 0x1p-126f ? copysignf(0.0f, v) : v;
}

float v4_pairs_dot(const float *w, const float *x, int64_t cols)
{
    float acc[V4_FAST_LANES] = {0};
    for (int64_t c = 0; c < cols; c += V4_PAIRS_COLUMNS)
        for (int l = 0; l < V4_FAST_LANES; l++) {
            const float *wl = w + c + 2 * l, *xl = x + c + 2 * l;
            acc[l] = flush(fmaf(flush(wl[1]), flush(xl[1]), acc[l]));
            acc[l] = flush(fmaf(flush(wl[0]), flush(xl[0]), acc[l]));
        }
    return v4_fast_reduce(acc);
}

static void decode_rows_scalar(const v4_weight *w, int64_t r, int nr, float *panel)
{
    for (int i = 0; i < nr; i++) v4_weight_row_scalar(w, r + i, panel + (size_t)i * w->cols);
    if (v4_fast_pair_order(w)) v4_fast_permute_pairs(panel, nr * w->cols);
}

static void tile_acc_scalar(const float *const *rows, const float *const *xs, int nt, int64_t klen,
                            int fresh, v4_fast_acc acc)
{
    if (fresh) memset(acc, 0, (size_t)nt * sizeof acc[0]);
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < V4_FAST_ROWS; i++)
            for (int64_t k = 0; k < klen; k += V4_FAST_LANES) {
                const float *x = v4_fast_x_at(xs[t], k);
                for (int l = 0; l < V4_FAST_LANES; l++)
                    acc[t][i][l] = fmaf(rows[i][k + l], x[l], acc[t][i][l]);
            }
}

/* One decoded row at a time, in the pool's scratch of the running thread
 * (which holds BLOCK_ROWS rows; rows_dot runs inside v4_fast_matmul's
 * tasks), in the order's layout as the inputs are: the plain order over
 * both is the order. */
static void rows_dot_scalar(const v4_weight *w, int64_t r, int nr, const float *x, float *y)
{
    float *row_scratch = v4_pool_scratch(w->pool);
    for (int i = 0; i < nr; i++) {
        decode_rows_scalar(w, r + i, 1, row_scratch);
        y[i] = plain_dot(row_scratch, x, w->cols);
    }
}

/* Column k of a stored KV row, decoded as state.c's v4_kv_load does. */
static float kv_value(const v4_kv_format *f, const uint8_t *row, int64_t k)
{
    if (k < f->fp8)
        return v4_e4m3_table[row[k]] * v4_e8m0_to_f32(row[f->fp8 + k / V4_KV_FP8_BLOCK]);
    const uint8_t *tail = v4_kv_tail(f, row);
    k -= f->fp8;
    if (f->tail_bf16) return v4_bf16_to_f32((uint16_t)(tail[2 * k] | tail[2 * k + 1] << 8));
    float v;
    memcpy(&v, tail + 4 * k, sizeof v);
    return v;
}

static void kv_tile_acc_scalar(const v4_kv_format *f, const uint8_t *const *rows,
                               const float *const *xs, int nt, v4_fast_acc acc)
{
    int64_t hd = f->fp8 + f->tail;
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < V4_FAST_ROWS; i++)
            for (int64_t k = 0; k < hd; k += V4_FAST_LANES)
                for (int l = 0; l < V4_FAST_LANES; l++)
                    acc[t][i][l] = fmaf(kv_value(f, rows[i], k + l), xs[t][k + l], acc[t][i][l]);
}

static void kv_weighted_sum_scalar(const v4_kv_format *f, const uint8_t *const *rows, int64_t n,
                                   const float *p, int64_t pstride, int nh, int64_t c0, int64_t c1,
                                   float *o, int64_t ostride)
{
    for (int h = 0; h < nh; h++)
        for (int64_t k = c0; k < c1; k++) {
            float acc = o[h * ostride + k];
            for (int64_t s = 0; s < n; s++)
                acc = fmaf(p[h * pstride + s], kv_value(f, rows[s], k), acc);
            o[h * ostride + k] = acc;
        }
}

static void kv_decode_scalar(const v4_kv_format *f, const uint8_t *row, int64_t c0, int64_t c1,
                             float *out)
{
    for (int64_t k = c0; k < c1; k++) out[k - c0] = kv_value(f, row, k);
}

static void permute_pairs_scalar(const float *in, int64_t n, float *out)
{
    if (out != in) memcpy(out, in, (size_t)n * sizeof *out);
    v4_fast_permute_pairs(out, n);
}

static void reduce_scalar(const v4_fast_acc acc, int nt, int nr, float *y, int64_t ystride)
{
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < nr; i++) y[t * ystride + i] = v4_fast_reduce(acc[t][i]);
}

const v4_fast_kernels v4_fast_scalar = {"scalar",
                                        1024,
                                        1024,
                                        decode_rows_scalar,
                                        tile_acc_scalar,
                                        rows_dot_scalar,
                                        kv_tile_acc_scalar,
                                        kv_weighted_sum_scalar,
                                        kv_decode_scalar,
                                        reduce_scalar,
                                        permute_pairs_scalar,
                                        NULL, /* no lane tile: prefill runs tile_acc */
                                        NULL,
                                        NULL};
