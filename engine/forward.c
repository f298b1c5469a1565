/*
 * forward.c - the V4 forward pass: embedding, hyper-connections, blocks,
 * the HC head and the LM head; and the MTP block.
 *
 * The residual stream of V4 is not one vector but hc_mult of them (the
 * hyper-connection "streams").  Each sublayer (attention, MoE) reads a
 * weighted mix of the streams (HCPre: weights from a small projection of
 * the RMS-scaled state, with a Sinkhorn-normalised combination matrix for
 * the way back) and writes back into all streams (HCPost).  There is no
 * plain residual add anywhere.
 *
 * v4_eval_tokens runs a chunk of tokens through all blocks, block by block,
 * so each block's weights are decoded once per chunk.  Chunks are cut from
 * the caller's tokens at ev->chunk; because attention and compressors
 * reproduce token-at-a-time semantics (attention.c), the chunk size changes
 * only float rounding.  The state stays consistent at every chunk boundary,
 * which is where progress is reported and cancellation takes effect.
 */
#include "engine/model.h"

#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HC 16

/* Tokens per chunk of an evaluation: the caller's, or the model's default. */
static size_t eval_chunk_size(const v4_model *m, const v4_eval *ev)
{
    return ev && ev->chunk > 0 ? (size_t)ev->chunk : (size_t)v4_config_prefill_chunk(&m->cfg);
}

/* Where a chunk's tokens sit in the evaluation call that contains them.
 * The reference evaluates a whole prompt (or one decode token) as one
 * tensor, and which math routine rounds an element of an element-wise op
 * depends on its index in that tensor (refmath.c); a chunk must round its
 * tokens as they would be rounded inside the whole call. */
typedef struct span {
    int64_t first; /* index of the chunk's first token in the call */
    int64_t total; /* tokens in the call */
} span;

/* The span of token `at` of a call of n tokens, within the evaluation the
 * caller says the call belongs to (v4_eval.part_first/part_total). */
static span call_span(const v4_eval *ev, size_t at, size_t n)
{
    if (ev && ev->part_total > 0) return (span){ev->part_first + (int64_t)at, ev->part_total};
    return (span){(int64_t)at, (int64_t)n};
}

/* sigmoid of element i of token t's `width` values, in a call-wide tensor */
static float sigmoid_in(const span *sp, int t, int i, int width, float z)
{
    return v4_sigmoid_at(z, (sp->first + t) * width + i, sp->total * width);
}

/* Sinkhorn normalisation of the hc x hc combination matrix, as the
 * reference orders it: a row softmax (vector exp, products with the
 * reciprocal of the row sum) + eps, a column normalisation, then
 * (iters - 1) rounds of row and column normalisation. */
static void sinkhorn(float *C, int hc, int iters, float eps)
{
    for (int j = 0; j < hc; j++) {
        float mx = -INFINITY, sum = 0;
        for (int k = 0; k < hc; k++) mx = fmaxf(mx, C[j * hc + k]);
        for (int k = 0; k < hc; k++) sum += C[j * hc + k] = v4_exp_vector(C[j * hc + k] - mx);
        float inv = 1.0f / sum;
        for (int k = 0; k < hc; k++) C[j * hc + k] = C[j * hc + k] * inv + eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it > 0)
            for (int j = 0; j < hc; j++) {
                float sum = 0;
                for (int k = 0; k < hc; k++) sum += C[j * hc + k];
                for (int k = 0; k < hc; k++) C[j * hc + k] /= sum + eps;
            }
        for (int k = 0; k < hc; k++) {
            float sum = 0;
            for (int j = 0; j < hc; j++) sum += C[j * hc + k];
            for (int j = 0; j < hc; j++) C[j * hc + k] /= sum + eps;
        }
    }
}

/* Working memory of one chunk, sized for n tokens. */
typedef struct chunk_buffers {
    float *x, *f, *post, *comb, *mixes;
} chunk_buffers;

/* HCPre and HCPost of a chunk run token by token on the model's threads;
 * each token's arithmetic is the same whichever thread does it. */
typedef struct hc_job {
    const v4_model *m;
    const v4_hc_weights *h;
    const span *sp;
    float *X;               /* [n][hc][dim] */
    float *x, *post, *comb; /* HCPre's outputs: [n][dim], [n][hc], [n][hc][hc] */
    const float *mixes, *f; /* HCPre's fn . X; HCPost's block output [n][dim] */
    const v4_weight *norm;  /* the RMSNorm applied to HCPre's x */
} hc_job;

/* 1 / rms of a token's hc * dim values (HCPre's and HCHead's mix scale). */
static float hc_inv_rms(const v4_model *m, const float *Xt)
{
    int width = m->cfg.hc_mult * m->cfg.dim;
    return 1.0f / sqrtf(v4_mean_square(Xt, width) + (float)m->cfg.norm_eps);
}

/* HCPre of one token: mixes = (fn . X[t]) / rms(X[t]), then pre, post and
 * the Sinkhorn-normalised comb; x[t] = sum_h pre[h] X[t][h], normalised. */
static void hc_pre_token(const hc_job *j, int t)
{
    const v4_model *m = j->m;
    const v4_hc_weights *h = j->h;
    int hc = m->cfg.hc_mult, d = m->cfg.dim, mix = (2 + hc) * hc, width = hc * d;
    float eps = (float)m->cfg.hc_eps;
    const float *Xt = j->X + (size_t)t * width;
    float r = hc_inv_rms(m, Xt);
    float mx[(2 + MAX_HC) * MAX_HC], pre[MAX_HC];
    for (int i = 0; i < mix; i++) mx[i] = j->mixes[(size_t)t * mix + i] * r;
    for (int i = 0; i < hc; i++) {
        /* mix >= 2 * hc, so mx[0 .. 2 * hc) is set above. */
        // cppcheck-suppress uninitvar
        pre[i] = sigmoid_in(j->sp, t, i, hc, mx[i] * h->scale[0] + h->base[i]) + eps;
        j->post[(size_t)t * hc + i] =
            2.0f * sigmoid_in(j->sp, t, i, hc, mx[hc + i] * h->scale[1] + h->base[hc + i]);
    }
    float *C = j->comb + (size_t)t * hc * hc;
    for (int i = 0; i < hc * hc; i++) C[i] = mx[2 * hc + i] * h->scale[2] + h->base[2 * hc + i];
    sinkhorn(C, hc, m->cfg.hc_sinkhorn_iters, eps);
    float *xt = j->x + (size_t)t * d;
    memset(xt, 0, (size_t)d * sizeof *xt);
    for (int s = 0; s < hc; s++) v4_axpy(xt, pre[s], Xt + (size_t)s * d, d);
    v4_official_bf16(m, xt, (size_t)d);
    v4_rmsnorm(xt, xt, j->norm, d, (float)m->cfg.norm_eps);
    v4_official_bf16(m, xt, (size_t)d);
}

static void hc_pre_tokens(void *ctx, int64_t t0, int64_t t1)
{
    for (int64_t t = t0; t < t1; t++) hc_pre_token(ctx, (int)t);
}

/* HCPre followed by the block's RMSNorm: x[t] = norm(sum_h pre[h] X[t][h]);
 * keeps post and comb for HCPost. */
static void hc_pre(const v4_model *m, const v4_hc_weights *h, const v4_weight *norm, float *X,
                   int n, const span *sp, chunk_buffers *b)
{
    v4_matmul(&h->fn, X, n, b->mixes, (int)h->fn.rows);
    hc_job j = {m, h, sp, X, b->x, b->post, b->comb, b->mixes, NULL, norm};
    v4_parallel_for(m->pool, n, 4, hc_pre_tokens, &j);
}

/* HCPost of tokens [t0, t1): X[t][k] = post[k] f[t] + sum_j comb[j][k]
 * X[t][j], the sum over j formed first, as the reference does; the new
 * rows are formed in the running thread's scratch (hc * dim floats, less
 * than the kernels' scratch for the hc * dim wide fn). */
static void hc_post_tokens(void *ctx, int64_t t0, int64_t t1)
{
    const hc_job *j = ctx;
    int hc = j->m->cfg.hc_mult, d = j->m->cfg.dim;
    float *tmp = v4_pool_scratch(j->m->pool);
    for (int64_t t = t0; t < t1; t++) {
        float *Xt = j->X + (size_t)t * hc * d;
        const float *C = j->comb + (size_t)t * hc * hc, *f = j->f + (size_t)t * d;
        for (int k = 0; k < hc; k++) {
            float *y = tmp + (size_t)k * d;
            memset(y, 0, (size_t)d * sizeof *y);
            for (int i = 0; i < hc; i++) v4_axpy(y, C[i * hc + k], Xt + (size_t)i * d, d);
            float p = j->post[(size_t)t * hc + k];
            for (int i = 0; i < d; i++) y[i] = p * f[i] + y[i];
        }
        v4_official_bf16(j->m, tmp, (size_t)hc * d);
        memcpy(Xt, tmp, (size_t)hc * d * sizeof *tmp);
    }
}

static void hc_post(const v4_model *m, float *X, int n, const chunk_buffers *b)
{
    hc_job j = {m, NULL, NULL, X, NULL, b->post, b->comb, NULL, b->f, NULL};
    v4_parallel_for(m->pool, n, 4, hc_post_tokens, &j);
}

static void buffers_free(const v4_model *m, chunk_buffers *b)
{
    v4_buffers_put(m->buffers, b->x);
    v4_buffers_put(m->buffers, b->f);
    free(b->post);
    free(b->comb);
    free(b->mixes);
}

static int buffers_alloc(const v4_model *m, int n, chunk_buffers *b, tome_error *err)
{
    int hc = m->cfg.hc_mult, d = m->cfg.dim;
    b->x = v4_buffers_get(m->buffers, (size_t)n * d);
    b->f = v4_buffers_get(m->buffers, (size_t)n * d);
    b->post = malloc((size_t)n * hc * sizeof(float));
    b->comb = malloc((size_t)n * hc * hc * sizeof(float));
    b->mixes = malloc((size_t)n * (2 + hc) * hc * sizeof(float));
    if (b->x && b->f && b->post && b->comb && b->mixes) return 0;
    buffers_free(m, b);
    return tome_errorf(err, TOME_ENOMEM, "out of memory for a chunk of %d tokens", n);
}

static int block_forward(v4_state *s, int l, float *X, const int32_t *ids, int n, const span *sp,
                         chunk_buffers *b, const v4_eval *ev, tome_error *err)
{
    const v4_model *m = s->m;
    const v4_block_weights *bw = &m->blocks[l];
    hc_pre(m, &bw->hc_attn, &bw->attn_norm, X, n, sp, b);
    int rc = v4_attention(s, l, b->x, n, sp->first, sp->total, b->f, ev, err);
    if (rc) return rc;
    hc_post(m, X, n, b);
    hc_pre(m, &bw->hc_ffn, &bw->ffn_norm, X, n, sp, b);
    rc = v4_moe(m, l, b->x, ids, n, sp->first, sp->total, b->f, err);
    if (rc) return rc;
    hc_post(m, X, n, b);
    return 0;
}

/* HCHead, final norm, LM head: logits of n tokens into out [n][vocab]. */
static int head_logits(const v4_model *m, const v4_hc_weights *h, const v4_weight *norm,
                       const float *X, int n, const span *sp, float *out, tome_error *err)
{
    int hc = m->cfg.hc_mult, d = m->cfg.dim;
    float *mixes = malloc((size_t)n * hc * sizeof *mixes);
    float *y = v4_buffers_get(m->buffers, (size_t)n * d);
    if (!mixes || !y) {
        free(mixes);
        v4_buffers_put(m->buffers, y);
        return tome_errorf(err, TOME_ENOMEM, "out of memory in the LM head");
    }
    v4_matmul(&h->fn, X, n, mixes, hc);
    for (int t = 0; t < n; t++) {
        float *yt = y + (size_t)t * d, r = hc_inv_rms(m, X + (size_t)t * hc * d);
        memset(yt, 0, (size_t)d * sizeof *yt);
        for (int i = 0; i < hc; i++) {
            float mix = mixes[(size_t)t * hc + i] * r;
            float w =
                sigmoid_in(sp, t, i, hc, mix * h->scale[0] + h->base[i]) + (float)m->cfg.hc_eps;
            v4_axpy(yt, w, X + ((size_t)t * hc + i) * d, d);
        }
        v4_official_bf16(m, yt, (size_t)d);
        v4_rmsnorm(yt, yt, norm, d, (float)m->cfg.norm_eps);
        v4_official_bf16(m, yt, (size_t)d);
    }
    v4_matmul(&m->head, y, n, out, m->cfg.vocab_size);
    free(mixes);
    v4_buffers_put(m->buffers, y);
    return 0;
}

static int check_ids(const v4_model *m, const int32_t *ids, size_t n, tome_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return tome_errorf(err, TOME_EINVAL,
                               "token id %d at index %zu is outside the "
                               "vocabulary of %d",
                               ids[i], i, m->cfg.vocab_size);
    return 0;
}

static int check_usable(const v4_state *s, size_t n, tome_error *err)
{
    if (s->broken)
        return tome_errorf(err, TOME_EINVAL,
                           "this state was left inconsistent by an earlier "
                           "failure; discard it");
    if ((int64_t)(v4_state_pos(s) + (int64_t)n) > s->m->cfg.max_position)
        return tome_errorf(err, TOME_ELIMIT,
                           "%lld + %zu tokens exceed the model's context of "
                           "%lld",
                           (long long)v4_state_pos(s), n, (long long)s->m->cfg.max_position);
    return 0;
}

static void tap_hidden(const v4_eval *ev, int layer, int64_t p0, const float *X, int n,
                       size_t width)
{
    if (!ev || !ev->on_hidden) return;
    for (int t = 0; t < n; t++) ev->on_hidden(ev->tap_ctx, layer, p0 + t, X + (size_t)t * width);
}

/* One chunk through every main block; X [n][hc][dim] comes back final. */
static int eval_chunk(v4_state *s, const int32_t *ids, int n, const span *sp, float *X,
                      const v4_eval *ev, tome_error *err)
{
    const v4_model *m = s->m;
    int hc = m->cfg.hc_mult, d = m->cfg.dim;
    size_t width = (size_t)hc * d;
    int64_t p0 = v4_state_pos(s);
    for (int t = 0; t < n; t++) {
        float *row = X + (size_t)t * width;
        v4_weight_row(&m->embed, ids[t], row);
        for (int k = 1; k < hc; k++) memcpy(row + (size_t)k * d, row, (size_t)d * sizeof *row);
    }
    tap_hidden(ev, -1, p0, X, n, width);
    chunk_buffers b;
    int rc = buffers_alloc(m, n, &b, err);
    if (rc) return rc;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if ((rc = block_forward(s, l, X, ids, n, sp, &b, ev, err)) != 0) break;
        tap_hidden(ev, l, p0, X, n, width);
    }
    buffers_free(m, &b);
    return rc;
}

/* A chunk this long frees buffers of many megabytes.  glibc keeps what
 * they freed resident (its dynamic mmap threshold moves such buffers into
 * the heap, and the heap shrinks only from its top), so it is handed back
 * after each: a 256K-token prefill of the tiny model peaked at 580 MB of
 * RSS for about 115 MB of live data without this, 117 MB with it. */
#define TRIM_AFTER_TOKENS 64

static void return_free_memory(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

int v4_eval_tokens(v4_state *s, const int32_t *ids, size_t n, const v4_eval *ev, tome_error *err)
{
    const v4_model *m = s->m;
    int rc = check_usable(s, n, err);
    if (rc == 0) rc = check_ids(m, ids, n, err);
    if (rc) return rc;
    size_t chunk = eval_chunk_size(m, ev);
    size_t width = (size_t)m->cfg.hc_mult * m->cfg.dim, vocab = (size_t)m->cfg.vocab_size;
    float *X = v4_buffers_get(m->buffers, (chunk < n ? chunk : n) * width);
    if (!X) return tome_errorf(err, TOME_ENOMEM, "out of memory for a chunk of %zu tokens", chunk);
    for (size_t done = 0; done < n && rc == 0; done += chunk) {
        int len = (int)(n - done < chunk ? n - done : chunk);
        span sp = call_span(ev, done, n);
        rc = eval_chunk(s, ids + done, len, &sp, X, ev, err);
        if (rc) {
            s->broken = 1;
            break;
        }
        if (len >= TRIM_AFTER_TOKENS) return_free_memory();
        if (ev && ev->hc_out) memcpy(ev->hc_out + done * width, X, len * width * sizeof *X);
        if (ev && ev->logits)
            rc = head_logits(m, &m->hc_head, &m->norm, X, len, &sp, ev->logits + done * vocab, err);
        if (rc == 0 && ev && ev->last_logits && done + (size_t)len == n) {
            span last = call_span(ev, n - 1, n);
            rc = head_logits(m, &m->hc_head, &m->norm, X + (size_t)(len - 1) * width, 1, &last,
                             ev->last_logits, err);
        }
        if (rc == 0 && ev && ev->progress &&
            ev->progress(ev->progress_ctx, (int64_t)(done + len), (int64_t)n) != 0)
            rc =
                tome_errorf(err, TOME_ECANCELED, "canceled after %zu of %zu tokens", done + len, n);
    }
    v4_buffers_put(m->buffers, X);
    /* A caller that feeds one evaluation a part per call (tomed's prefill,
     * v4_eval.part_first) has the same buffers to fill in its next call;
     * after the last part they go, so that a model at rest holds none. */
    if (rc != 0 || !ev || ev->part_first + (int64_t)n >= ev->part_total)
        v4_buffers_trim(m->buffers);
    return rc;
}

/* ---- MTP ------------------------------------------------------------------------------ */

/* The MTP block's inputs for n tokens: e [n][dim] the next tokens'
 * embeddings normed, hn [n][hc][dim] the main model's streams `hc` normed. */
static void mtp_inputs(const v4_model *m, const v4_block_weights *bw, const float *hc,
                       const int32_t *next_ids, int n, float *e, float *hn)
{
    const v4_config *c = &m->cfg;
    int hcm = c->hc_mult, d = c->dim;
    for (int t = 0; t < n; t++) {
        float *et = e + (size_t)t * d;
        v4_weight_row(&m->embed, next_ids[t], et);
        v4_rmsnorm(et, et, &bw->enorm, d, (float)c->norm_eps);
        for (int k = 0; k < hcm; k++)
            v4_rmsnorm(hn + ((size_t)t * hcm + k) * d, hc + ((size_t)t * hcm + k) * d, &bw->hnorm,
                       d, (float)c->norm_eps);
    }
    v4_official_bf16(m, e, (size_t)n * d);
    v4_official_bf16(m, hn, (size_t)n * hcm * d);
}

int v4_mtp_eval(v4_state *s, const float *hc, const int32_t *next_ids, size_t n, float *logits,
                const v4_eval *ev, tome_error *err)
{
    const v4_model *m = s->m;
    const v4_config *c = &m->cfg;
    if (c->n_mtp_layers < 1) return tome_errorf(err, TOME_EINVAL, "this model has no MTP block");
    if (n == 0) return 0;
    int rc = check_ids(m, next_ids, n, err);
    if (rc) return rc;
    if (s->broken) return check_usable(s, 0, err);
    int l = c->n_layers, hcm = c->hc_mult, d = c->dim;
    const v4_block_weights *bw = &m->blocks[l];
    size_t width = (size_t)hcm * d;
    size_t chunk = eval_chunk_size(m, ev);
    size_t cap = chunk < n ? chunk : n;
    float *X = v4_buffers_get(m->buffers, cap * width);
    float *e = v4_buffers_get(m->buffers, cap * d);
    float *ep = v4_buffers_get(m->buffers, cap * d);
    float *hn = v4_buffers_get(m->buffers, cap * width);
    chunk_buffers b = {0};
    if (!X || !e || !ep || !hn || buffers_alloc(m, (int)cap, &b, err) != 0) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in the MTP block");
        goto done;
    }
    for (size_t done = 0; done < n && rc == 0; done += chunk) {
        int len = (int)(n - done < chunk ? n - done : chunk);
        mtp_inputs(m, bw, hc + done * width, next_ids + done, len, e, hn);
        if ((rc = v4_linear(m, &bw->e_proj, e, len, ep, d, err)) != 0 ||
            (rc = v4_linear(m, &bw->h_proj, hn, len * hcm, X, d, err)) != 0)
            break;
        for (int t = 0; t < len; t++)
            for (int k = 0; k < hcm; k++)
                v4_axpy(X + ((size_t)t * hcm + k) * d, 1.0f, ep + (size_t)t * d, d);
        v4_official_bf16(m, X, (size_t)len * width);
        span sp = call_span(ev, done, n);
        rc = block_forward(s, l, X, next_ids + done, len, &sp, &b, ev, err);
        if (rc) {
            s->broken = 1;
            break;
        }
        rc = head_logits(m, &bw->hc_head, &bw->norm, X, len, &sp, logits + done * c->vocab_size,
                         err);
    }
done:
    buffers_free(m, &b);
    v4_buffers_put(m->buffers, X);
    v4_buffers_put(m->buffers, e);
    v4_buffers_put(m->buffers, ep);
    v4_buffers_put(m->buffers, hn);
    v4_buffers_trim(m->buffers);
    return rc;
}
