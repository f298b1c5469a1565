/*
 * official.c - the official numerics: where DeepSeek's inference code
 * rounds, and the two helpers every forward file calls to round there.
 *
 * The reference keeps hidden states, layer outputs and most intermediate
 * tensors in BF16 and feeds every FP8/FP4 linear layer an activation
 * quantised to e4m3 in 128-wide blocks with power-of-two scales (products
 * of e4m3 and e4m3/e2m1 values are exact in FP32, so only the order of the
 * FP32 sums differs from it).  The engine computes in F32 throughout; in
 * official numerics it rounds its F32 values where the reference would
 * hold BF16 (v4_official_bf16) and runs quantised linear layers through
 * v4_linear.  In qat and fp32 numerics both are plain: nothing is rounded
 * and v4_linear is v4_matmul.
 *
 * Where the reference rounds (read from its model.py and kernels):
 *  - the HC-mixed block input and the RMSNorm after it; HCPost's new
 *    streams; the HC head's mix and the final norm (logits stay F32);
 *  - every FP8/FP4 linear layer's output (v4_linear), and the BF16 ones'
 *    (the grouped wo_a, the indexer's weights_proj);
 *  - queries and KV after their norms and RoPE, compressed entries after
 *    pooling, norm and RoPE, the Hadamard rotation's output; the query
 *    heads' RMS scaling is BF16 arithmetic throughout (it is the one step
 *    the reference computes on a BF16 tensor rather than in F32: without
 *    it the first block's output was 2.7% from the official files, with
 *    it identical);
 *  - sparse attention's probabilities before P.V (the denominator stays
 *    F32), each against the running maximum of the kernel's blocks of 64
 *    entries (attend.c), and its output, before and after the inverse
 *    RoPE;
 *  - the indexer's per-head dot products, their weighted ReLUs and the
 *    sum over heads (so many more keys tie, and the tie rule decides);
 *  - each expert's gated activation before its down projection, and the
 *    MoE's sum of experts.
 * The router, the hyper-connection mixes, Sinkhorn, the compressors'
 * pooling and the logits are F32 there too.
 */
#include "engine/model.h"

#include "engine/kernels/fast.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *v4_numerics_name(v4_numerics n)
{
    switch (n) {
    case V4_NUMERICS_FP32:
        return "fp32";
    case V4_NUMERICS_OFFICIAL:
        return "official";
    default:
        return "qat";
    }
}

int v4_numerics_parse(const char *name)
{
    if (strcmp(name, "qat") == 0) return V4_NUMERICS_QAT;
    if (strcmp(name, "fp32") == 0) return V4_NUMERICS_FP32;
    if (strcmp(name, "official") == 0) return V4_NUMERICS_OFFICIAL;
    return -1;
}

void v4_official_bf16(const v4_model *m, float *x, size_t n)
{
    if (v4_official(m)) v4_bf16_round(x, n);
}

void v4_official_rms_scale(float *x, int n, float eps)
{
    /* q *= rsqrt(q.square().mean() + eps) on a BF16 tensor: each step's
     * result is BF16 (the mean and the reciprocal root are formed in F32
     * and rounded). */
    float sum = 0, sq[256]; /* the squares a block at a time, rounded together */
    for (int i0 = 0; i0 < n; i0 += 256) {
        int len = n - i0 < 256 ? n - i0 : 256;
        for (int i = 0; i < len; i++) sq[i] = x[i0 + i] * x[i0 + i];
        v4_bf16_round(sq, (size_t)len);
        for (int i = 0; i < len; i++) sum += sq[i];
    }
    float mean = sum / (float)n;
    v4_bf16_round(&mean, 1);
    float den = mean + eps;
    v4_bf16_round(&den, 1);
    float r = 1.0f / sqrtf(den);
    v4_bf16_round(&r, 1);
    for (int i = 0; i < n; i++) x[i] *= r;
    v4_bf16_round(x, (size_t)n);
}

/* Weights whose linear layer quantises its input in the reference: FP8
 * and FP4, and GGUF's block types, which stand for them. */
static int quantises_input(const v4_weight *w)
{
    return w->dtype != V4_BF16 && w->dtype != V4_F32 && w->dtype != V4_F16;
}

/* The reference's act_quant of one row: BF16 values to e4m3 in blocks of
 * 128 (a shorter last block has its own scale), kept as their values. */
static void act_quant_row(float *x, int n)
{
    int full = n / V4_FP8_BLOCK * V4_FP8_BLOCK;
    v4_bf16_round(x, (size_t)n);
    v4_fp8_roundtrip(x, full, V4_FP8_BLOCK, NULL, NULL);
    if (n > full) v4_fp8_roundtrip(x + full, n - full, n - full, NULL, NULL);
}

/* Rows of a linear layer's inputs (quantised) or outputs (rounded to
 * BF16), spread over the pool's threads. */
typedef struct rows_job {
    float *x;
    int64_t stride, cols;
} rows_job;

static void quant_rows(void *ctx, int64_t t0, int64_t t1)
{
    const rows_job *j = ctx;
    for (int64_t t = t0; t < t1; t++) act_quant_row(j->x + (size_t)t * j->stride, (int)j->cols);
}

static void round_rows(void *ctx, int64_t t0, int64_t t1)
{
    const rows_job *j = ctx;
    for (int64_t t = t0; t < t1; t++) v4_bf16_round(j->x + (size_t)t * j->stride, (size_t)j->cols);
}

void v4_bf16_product(const v4_model *m, const v4_weight *w, const float *x, int64_t xstride, int n,
                     float *y, int64_t ystride)
{
    if (v4_official(m) && w->fast && v4_fast_pairs_weight(w))
        v4_fast_matmul_pairs(v4_fast_kernels_active(), w, x, xstride, n, y, ystride, m->buffers);
    else
        v4_matmul_strided(w, x, xstride, n, y, ystride);
}

int v4_linear(const v4_model *m, const v4_weight *w, const float *x, int n, float *y,
              int64_t ystride, tome_error *err)
{
    if (!v4_official(m) || !quantises_input(w)) {
        v4_matmul(w, x, n, y, ystride);
        return 0;
    }
    int cols = (int)w->cols;
    float *xq = v4_buffers_get(m->buffers, (size_t)n * cols);
    if (!xq) return tome_errorf(err, TOME_ENOMEM, "out of memory quantising %d activation rows", n);
    memcpy(xq, x, (size_t)n * cols * sizeof *xq);
    rows_job in = {xq, cols, cols};
    v4_parallel_for(m->pool, n, 16, quant_rows, &in);
    if (w->fast && v4_fast_pairs_weight(w))
        v4_fast_matmul_pairs(v4_fast_kernels_active(), w, xq, cols, n, y, ystride, m->buffers);
    else
        v4_matmul(w, xq, n, y, ystride);
    v4_buffers_put(m->buffers, xq);
    rows_job out = {y, ystride, w->rows};
    v4_parallel_for(m->pool, n, 16, round_rows, &out);
    return 0;
}

int v4_linear_set(const v4_model *m, const v4_product *set, int count, tome_error *err)
{
    if (!v4_official(m)) {
        v4_matmul_set(set, count);
        return 0;
    }
    for (int i = 0; i < count; i++) {
        const v4_product *p = &set[i];
        int rc = v4_linear(m, p->w, p->x, p->n, p->y, p->ystride, err);
        if (rc != 0) return rc;
    }
    return 0;
}
