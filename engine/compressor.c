/*
 * compressor.c - V4's KV compressors: every `ratio` tokens of a CSA or HCA
 * block become one compressed entry, a softmax-gated pool of the tokens'
 * projections (with learned position biases), normalised, rotated and
 * stored in the block's compact rows.  CSA's windows overlap: each entry
 * pools 2 * ratio tokens, half of them shared with the previous entry.
 *
 * The state between calls (the rows of an unfinished block) lives in the
 * block state, so a prompt fed in any chunking compresses identically.
 */
#include "engine/attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Floats of scratch compressor_feed needs. */
static size_t feed_scratch_floats(const v4_compressor_weights *cw)
{
    size_t rows = 2 * (size_t)cw->ratio;
    return (size_t)cw->head_dim * (1 + rows) + rows;
}

/* Feed one token's projections (score already has ape added) into the
 * compressor state; when a block completes, pool it into `emit` (head_dim
 * wide) and return 1.  `scratch` holds feed_scratch_floats(cw) floats. */
static int compressor_feed(const v4_compressor_weights *cw, float *st_kv, float *st_sc,
                           const float *kvp, const float *sc, int64_t pos, float *emit,
                           float *scratch)
{
    int r = cw->ratio, hd = cw->head_dim, w = cw->width;
    int overlap = r == V4_LAYER_CSA;
    int row = overlap ? r + (int)(pos % r) : (int)(pos % r);
    memcpy(st_kv + (size_t)row * w, kvp, (size_t)w * sizeof(float));
    memcpy(st_sc + (size_t)row * w, sc, (size_t)w * sizeof(float));
    if ((pos + 1) % r != 0) return 0;
    int n_cand = overlap ? 2 * r : r;
    /* Per dimension j, a softmax over time: with overlap, the first half
     * of the previous block's rows and the second half of this block's.
     * The maxima first, then every exp (row by row, so they vectorise),
     * then per dimension the sum, one division each and the weighted sum:
     * the reference's rounding order. */
    float *mx = scratch, *ex = scratch + hd;
    for (int j = 0; j < hd; j++) mx[j] = -INFINITY;
    for (int c = 0; c < n_cand; c++) {
        const float *sc_c = st_sc + (size_t)c * w + (overlap && c >= r ? hd : 0);
        for (int j = 0; j < hd; j++) mx[j] = fmaxf(mx[j], sc_c[j]);
    }
    for (int c = 0; c < n_cand; c++) {
        const float *sc_c = st_sc + (size_t)c * w + (overlap && c >= r ? hd : 0);
        float *ex_c = ex + (size_t)c * hd;
        for (int j = 0; j < hd; j++) ex_c[j] = sc_c[j] - mx[j];
        v4_exp_vector_n(ex_c, ex_c, hd);
    }
    float *weight = ex + (size_t)n_cand * hd;
    for (int j = 0; j < hd; j++) {
        float den = 0;
        for (int c = 0; c < n_cand; c++) den += ex[(size_t)c * hd + j];
        for (int c = 0; c < n_cand; c++) {
            int col = overlap && c >= r ? hd + j : j;
            weight[c] = st_kv[(size_t)c * w + col] * (ex[(size_t)c * hd + j] / den);
        }
        emit[j] = v4_sum_outer(weight, n_cand);
    }
    if (overlap) {
        memcpy(st_kv, st_kv + (size_t)r * w, (size_t)r * w * sizeof(float));
        memcpy(st_sc, st_sc + (size_t)r * w, (size_t)r * w * sizeof(float));
    }
    return 1;
}

/* Run a compressor over the chunk's tokens and append what it emits. */
int v4_attn_compress(attn_ctx *a, const v4_compressor_weights *cw, float *st_kv, float *st_sc,
                     v4_rows *out, const float *x, tome_error *err)
{
    const v4_model *m = a->m;
    int n = a->n, w = cw->width, hd = cw->head_dim;
    int failed = 0;
    float *kvp = v4_attn_floats(a, (size_t)n * w, &failed);
    float *sc = v4_attn_floats(a, (size_t)n * w, &failed);
    float *e = v4_attn_floats(a, (size_t)hd, &failed);
    float *scratch = v4_attn_floats(a, feed_scratch_floats(cw), &failed);
    int rc = 0;
    if (failed) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in the compressor");
        goto done;
    }
    v4_matmul(&cw->wkv, x, n, kvp, w);
    v4_matmul(&cw->wgate, x, n, sc, w);
    for (int t = 0; t < n; t++) {
        int64_t pos = a->p0 + t;
        const float *ape = cw->ape + (size_t)(pos % cw->ratio) * w;
        for (int j = 0; j < w; j++) sc[(size_t)t * w + j] += ape[j];
        if (!compressor_feed(cw, st_kv, st_sc, kvp + (size_t)t * w, sc + (size_t)t * w, pos, e,
                             scratch))
            continue;
        v4_official_bf16(m, e, (size_t)hd);
        v4_rmsnorm(e, e, &cw->norm, hd, (float)m->cfg.norm_eps);
        v4_official_bf16(m, e, (size_t)hd);
        v4_rope_apply(v4_block_rope(m, a->bw), e + hd - a->rd, pos + 1 - cw->ratio, 0);
        v4_official_bf16(m, e, (size_t)hd);
        uint8_t *row = v4_rows_append(out);
        if (!row) {
            rc = tome_errorf(err, TOME_ENOMEM, "out of memory growing the compressed KV");
            goto done;
        }
        if (cw->rotate) {
            v4_hadamard(e, hd);
            v4_official_bf16(m, e, (size_t)hd);
            v4_index_store(m, e, row);
        } else {
            v4_kv_store(m, e, row);
        }
    }
done:
    v4_attn_put(a, kvp);
    v4_attn_put(a, sc);
    v4_attn_put(a, e);
    v4_attn_put(a, scratch);
    return rc;
}
