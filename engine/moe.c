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
 * per expert so that a prefill chunk decodes each expert's weights once,
 * and experts with few tokens (all of a decode step's) run as a group
 * whose products share parallel regions (v4_linear_set); the outputs are
 * added in expert order, the shared expert last, however they ran.
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

/* Rows of a group of experts run together: a decode step's experts (and
 * a short chunk's) share each product's parallel region, while a prefill
 * chunk's experts, each with more rows than this, run one at a time.  It
 * also bounds a group's work buffers. */
#define GROUP_ROWS 64

/* One v4_moe call's tokens, grouped by expert: expert e's are the tokens
 * token[start[e] + i] for i < count[e], in increasing order, with routing
 * weights weight[start[e] + i].  Expert E (one past the routed ones)
 * stands for the shared expert: every token, unweighted. */
typedef struct moe_call {
    const v4_model *m;
    const v4_block_weights *bw;
    const float *x;
    int n;
    int *count, *start, *token;
    float *weight;
    float *out;
} moe_call;

/* An expert of a group: its cnt input rows, and where its rows sit in the
 * group's buffers (gate and up I wide, down d wide). */
typedef struct member {
    int e, cnt;
    const v4_weight *w1, *w2, *w3;
    const float *x;
    size_t at_i, at_d;
} member;

static int moe_rows(const moe_call *c, int e)
{
    return e < c->m->cfg.n_routed_experts ? c->count[e] : c->n;
}

/* The members of experts [e0, e1) that have tokens, their inputs gathered
 * into xs (the shared expert reads x itself); returns how many. */
static int group_members(const moe_call *c, int e0, int e1, float *xs, member *mem)
{
    int E = c->m->cfg.n_routed_experts, d = c->m->cfg.dim, nm = 0;
    size_t at_i = 0, at_d = 0;
    for (int e = e0; e < e1; e++) {
        member *p = &mem[nm];
        *p = (member){.e = e, .cnt = moe_rows(c, e), .at_i = at_i, .at_d = at_d};
        if (p->cnt == 0) continue;
        if (e < E) {
            const v4_weight *ew = &c->bw->experts[3 * e];
            p->w1 = &ew[0], p->w2 = &ew[1], p->w3 = &ew[2];
            p->x = xs + at_d;
            for (int r = 0; r < p->cnt; r++)
                memcpy(xs + at_d + (size_t)r * d, c->x + (size_t)c->token[c->start[e] + r] * d,
                       (size_t)d * sizeof *xs);
        } else {
            p->w1 = &c->bw->shared_w1, p->w2 = &c->bw->shared_w2, p->w3 = &c->bw->shared_w3;
            p->x = c->x;
        }
        at_i += (size_t)p->cnt * p->w1->rows;
        at_d += (size_t)p->cnt * d;
        nm++;
    }
    return nm;
}

/* Experts [e0, e1) (E: the shared one) as one group: every member's gate
 * and up products in one set, the SwiGLUs, the down products in another,
 * each member's output then added into the call's rows in expert order. */
static int run_group(const moe_call *c, int e0, int e1, int rows, tome_error *err)
{
    const v4_model *m = c->m;
    int E = m->cfg.n_routed_experts, d = m->cfg.dim;
    /* the widest intermediate a member may have */
    int64_t I = c->bw->experts[0].rows > c->bw->shared_w1.rows ? c->bw->experts[0].rows
                                                               : c->bw->shared_w1.rows;
    float *xs = v4_buffers_get(m->buffers, (size_t)rows * d);
    float *g = v4_buffers_get(m->buffers, (size_t)rows * I);
    float *u = v4_buffers_get(m->buffers, (size_t)rows * I);
    float *o = v4_buffers_get(m->buffers, (size_t)rows * d);
    member mem[GROUP_ROWS + 1];
    v4_product set[2 * (GROUP_ROWS + 1)];
    int rc = (xs && g && u && o) ? 0 : tome_errorf(err, TOME_ENOMEM, "out of memory in the MoE");
    int nm = rc == 0 ? group_members(c, e0, e1, xs, mem) : 0;
    for (int i = 0; i < nm; i++) {
        const member *p = &mem[i];
        int64_t pi = p->w1->rows;
        set[2 * i] = (v4_product){p->w1, p->x, p->cnt, g + p->at_i, pi};
        set[2 * i + 1] = (v4_product){p->w3, p->x, p->cnt, u + p->at_i, pi};
    }
    if (rc == 0) rc = v4_linear_set(m, set, 2 * nm, err);
    for (int i = 0; i < nm && rc == 0; i++) {
        const member *p = &mem[i];
        swiglu_job j = {m, g + p->at_i, u + p->at_i, p->e < E ? c->weight + c->start[p->e] : NULL,
                        (int)p->w1->rows};
        v4_parallel_for(m->pool, p->cnt, 4, swiglu_tokens, &j);
        /* v4_linear rounds the activation to BF16 first in official numerics */
        set[i] = (v4_product){p->w2, g + p->at_i, p->cnt, o + p->at_d, d};
    }
    if (rc == 0) rc = v4_linear_set(m, set, nm, err);
    for (int i = 0; i < nm && rc == 0; i++) {
        const member *p = &mem[i];
        for (int r = 0; r < p->cnt; r++) {
            int t = p->e < E ? c->token[c->start[p->e] + r] : r;
            v4_axpy(c->out + (size_t)t * d, 1.0f, o + p->at_d + (size_t)r * d, d);
        }
    }
    v4_buffers_put(m->buffers, xs);
    v4_buffers_put(m->buffers, g);
    v4_buffers_put(m->buffers, u);
    v4_buffers_put(m->buffers, o);
    return rc;
}

/* Sort the call's (token, expert) pairs by expert: counting, then placing
 * each in token order. */
static void group_by_expert(moe_call *c, const int32_t *idx, const float *wts, int k)
{
    int E = c->m->cfg.n_routed_experts;
    memset(c->count, 0, (size_t)E * sizeof *c->count);
    for (int i = 0; i < c->n * k; i++) c->count[idx[i]]++;
    for (int e = 0, at = 0; e < E; e++) {
        c->start[e] = at;
        at += c->count[e];
    }
    int *next = c->count + E; /* E more ints of scratch */
    memcpy(next, c->start, (size_t)E * sizeof *next);
    for (int i = 0; i < c->n * k; i++) {
        int at = next[idx[i]]++;
        c->token[at] = i / k;
        c->weight[at] = wts[i];
    }
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
    moe_call call = {m,
                     bw,
                     x,
                     n,
                     malloc(2 * (size_t)E * sizeof(int)),
                     malloc((size_t)E * sizeof(int)),
                     malloc((size_t)n * k * sizeof(int)),
                     malloc((size_t)n * k * sizeof(float)),
                     out};
    int rc = 0;
    if (!logits || !idx || !wts || !call.count || !call.start || !call.token || !call.weight) {
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
    }
    group_by_expert(&call, idx, wts, k);
    memset(out, 0, (size_t)n * d * sizeof *out);
    /* experts in order, the shared one (E) last, grouped while their rows
     * fit GROUP_ROWS (an expert with more runs alone) */
    for (int e = 0; e <= E && rc == 0;) {
        int e1 = e, rows = 0;
        while (e1 <= E && (rows == 0 || rows + moe_rows(&call, e1) <= GROUP_ROWS))
            rows += moe_rows(&call, e1++);
        if (rows > 0) rc = run_group(&call, e, e1, rows, err);
        e = e1;
    }
    if (rc == 0) v4_official_bf16(m, out, (size_t)n * d);
done:
    v4_buffers_put(m->buffers, logits);
    free(idx);
    free(wts);
    free(call.count);
    free(call.start);
    free(call.token);
    free(call.weight);
    return rc;
}
