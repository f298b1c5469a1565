/*
 * moe.c - V4's DeepSeekMoE layer: router, routed experts, shared expert.
 *
 * The router scores every expert with sqrt(softplus(gate . x)) in F32.
 * Score-routed blocks pick the top-k of score + bias (the bias steers only
 * the choice), hash-routed blocks (the first num_hash_layers) take the k
 * experts that tid2eid lists for the token id.  Either way the weights are
 * the unbiased scores of the chosen experts, renormalised to sum to one and
 * multiplied by routed_scaling_factor.
 *
 * Each expert is a SwiGLU with an asymmetric clamp (up to [-limit, limit],
 * gate to at most limit) whose routing weight multiplies the activation
 * before the down projection, as the reference does.  Tokens are grouped
 * per expert so that a prefill chunk decodes each expert's weights once.
 */
#include "engine/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ACTIVE  64
#define MAX_EXPERTS 4096 /* config.c refuses more */

/* softplus (linear above the threshold 20, as torch's) of element `index`
 * of the call's [tokens][experts] logits: vector or C-library math by
 * position, like every element-wise op of the reference (refmath.c). */
static float softplus_at(float z, int64_t index, int64_t count)
{
    if (z > 20.0f) return z;
    if (v4_vector_lane(index, count)) return v4_log1p_vector(v4_exp_vector(z));
    return log1pf(expf(z));
}

/* Choose the experts and weights of the call's token `t` of `total`. */
static void route(const v4_model *m, const v4_block_weights *bw, const float *logits, int32_t tok,
                  int64_t t, int64_t total, int32_t *idx, float *wts)
{
    const v4_config *c = &m->cfg;
    int E = c->n_routed_experts, k = c->n_active_experts;
    float score[MAX_EXPERTS] = {0};
    for (int e = 0; e < E; e++) score[e] = sqrtf(softplus_at(logits[e], t * E + e, total * E));
    if (bw->hash) {
        for (int j = 0; j < k; j++) {
            int64_t v;
            memcpy(&v, bw->tid2eid + ((size_t)tok * k + j) * 8, 8);
            idx[j] = (int32_t)v;
        }
    } else {
        /* top-k of score + bias by insertion; k is small */
        float best[MAX_ACTIVE];
        int n = 0;
        for (int e = 0; e < E; e++) {
            float v = score[e] + bw->gate_bias[e];
            if (n == k && v <= best[n - 1]) continue;
            int at = n < k ? n++ : k - 1;
            while (at > 0 && best[at - 1] < v) {
                best[at] = best[at - 1];
                idx[at] = idx[at - 1];
                at--;
            }
            best[at] = v;
            idx[at] = e;
        }
    }
    float sum = 0;
    for (int j = 0; j < k; j++) sum += wts[j] = score[idx[j]];
    for (int j = 0; j < k; j++) wts[j] = wts[j] / sum * (float)c->route_scale;
}

/* The gated activation of an expert's rows: g[t] = silu(g[t]) * u[t]
 * (both clamped at swiglu_limit first), times weight[t] when weighted. */
typedef struct swiglu_job {
    const v4_model *m;
    float *g, *u;
    const float *weight;
    int I;
} swiglu_job;

/* fminf(v, hi) and fmaxf(v, lo) for a bound that is a nonzero number: a
 * NaN v gives the bound, as there (only zeros of opposite signs could tell
 * them apart); inline, where the libm calls cost a call per activation. */
static inline float at_most(float v, float hi)
{
    return v < hi ? v : hi;
}

static inline float at_least(float v, float lo)
{
    return v > lo ? v : lo;
}

static void swiglu_tokens(void *ctx, int64_t t0, int64_t t1)
{
    const swiglu_job *j = ctx;
    int I = j->I;
    float lim = (float)j->m->cfg.swiglu_limit;
    float *ex = v4_pool_scratch(j->m->pool); /* I floats: the exp arguments, then exps */
    for (int64_t t = t0; t < t1; t++) {
        float *gt = j->g + (size_t)t * I, *ut = j->u + (size_t)t * I;
        for (int i = 0; i < I; i++) {
            if (lim > 0) {
                ut[i] = at_most(at_least(ut[i], -lim), lim);
                gt[i] = at_most(gt[i], lim);
            }
            ex[i] = -gt[i];
        }
        /* silu runs over whole rows of moe_intermediate_size, a multiple of
         * 16: always the vector exp */
        v4_exp_vector_n(ex, ex, I);
        for (int i = 0; i < I; i++) {
            float act = gt[i] / (1.0f + ex[i]) * ut[i];
            gt[i] = j->weight ? act * j->weight[t] : act;
        }
    }
}

/* One SwiGLU expert over `n` gathered rows; adds weight[t] * expert(x[t])
 * into y rows (y row stride dim). */
static int run_expert(const v4_model *m, const v4_weight *w1, const v4_weight *w2,
                      const v4_weight *w3, const float *x, const float *weight, int n, float *y)
{
    const v4_config *c = &m->cfg;
    int I = (int)w1->rows, d = c->dim;
    float *g = v4_buffers_get(m->buffers, (size_t)n * I);
    float *u = v4_buffers_get(m->buffers, (size_t)n * I);
    float *o = v4_buffers_get(m->buffers, (size_t)n * d);
    int rc = (g && u && o) ? 0 : TOME_ENOMEM;
    if (rc == 0 && (rc = v4_linear(m, w1, x, n, g, I, NULL)) == 0 &&
        (rc = v4_linear(m, w3, x, n, u, I, NULL)) == 0) {
        swiglu_job j = {m, g, u, weight, I};
        v4_parallel_for(m->pool, n, 4, swiglu_tokens, &j);
        rc = v4_linear(m, w2, g, n, o, d, NULL); /* which rounds g to BF16 first */
    }
    if (rc == 0)
        for (size_t i = 0; i < (size_t)n * d; i++) y[i] += o[i];
    v4_buffers_put(m->buffers, g);
    v4_buffers_put(m->buffers, u);
    v4_buffers_put(m->buffers, o);
    return rc;
}

int v4_moe(const v4_model *m, int block, const float *x, const int32_t *ids, int n, int64_t first,
           int64_t total, float *out, tome_error *err)
{
    const v4_config *c = &m->cfg;
    const v4_block_weights *bw = &m->blocks[block];
    int E = c->n_routed_experts, k = c->n_active_experts, d = c->dim;
    if (k > MAX_ACTIVE)
        return tome_errorf(err, TOME_EINVAL, "num_experts_per_tok %d exceeds %d", k, MAX_ACTIVE);
    float *logits = v4_buffers_get(m->buffers, (size_t)n * E);
    int32_t *idx = malloc((size_t)n * k * sizeof *idx);
    float *wts = malloc((size_t)n * k * sizeof *wts);
    float *xs = v4_buffers_get(m->buffers, (size_t)n * d);
    float *ys = v4_buffers_get(m->buffers, (size_t)n * d);
    float *ws = malloc((size_t)n * sizeof *ws);
    int *rows = malloc((size_t)n * sizeof *rows);
    int rc = 0;
    if (!logits || !idx || !wts || !xs || !ys || !ws || !rows) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in the MoE");
        goto done;
    }
    v4_matmul(&bw->gate, x, n, logits, E);
    for (int t = 0; t < n; t++) {
        if (bw->hash && (ids[t] < 0 || ids[t] >= c->vocab_size)) {
            rc = tome_errorf(err, TOME_EINVAL, "token id %d is outside the vocabulary", ids[t]);
            goto done;
        }
        route(m, bw, logits + (size_t)t * E, ids[t], first + t, total, idx + (size_t)t * k,
              wts + (size_t)t * k);
        for (int j = 0; j < k; j++)
            if (idx[(size_t)t * k + j] < 0 || idx[(size_t)t * k + j] >= E) {
                rc = tome_errorf(err, TOME_EFORMAT,
                                 "block %d: tid2eid sends token %d to expert "
                                 "%d of %d",
                                 block, ids[t], idx[(size_t)t * k + j], E);
                goto done;
            }
    }
    memset(out, 0, (size_t)n * d * sizeof *out);
    for (int e = 0; e < E && rc == 0; e++) {
        int cnt = 0;
        for (int t = 0; t < n; t++)
            for (int j = 0; j < k; j++)
                if (idx[(size_t)t * k + j] == e) {
                    memcpy(xs + (size_t)cnt * d, x + (size_t)t * d, (size_t)d * sizeof *xs);
                    ws[cnt] = wts[(size_t)t * k + j];
                    rows[cnt++] = t;
                }
        if (cnt == 0) continue;
        memset(ys, 0, (size_t)cnt * d * sizeof *ys);
        const v4_weight *ew = &bw->experts[3 * e];
        if (run_expert(m, &ew[0], &ew[1], &ew[2], xs, ws, cnt, ys) != 0) {
            rc = tome_errorf(err, TOME_ENOMEM, "out of memory in expert %d", e);
            break;
        }
        for (int r = 0; r < cnt; r++)
            v4_axpy(out + (size_t)rows[r] * d, 1.0f, ys + (size_t)r * d, d);
    }
    if (rc == 0 && run_expert(m, &bw->shared_w1, &bw->shared_w2, &bw->shared_w3, x, NULL, n, out))
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in the shared expert");
    v4_official_bf16(m, out, (size_t)n * d);
done:
    v4_buffers_put(m->buffers, logits);
    free(idx);
    free(wts);
    v4_buffers_put(m->buffers, xs);
    v4_buffers_put(m->buffers, ys);
    free(ws);
    free(rows);
    return rc;
}
