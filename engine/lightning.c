/*
 * lightning.c - the lightning indexer of CSA blocks: for each token, a
 * score per visible compressed key (ReLU of per-head dot products,
 * weighted by the token's head weights), and the top index_topk keys.
 *
 * Scores come from the FP4 codes where that is exact (qat and official
 * numerics: engine/kernels/indexer.h, integer dot products; official ones
 * combine the heads in BF16 steps), from F32 otherwise (fp32); a
 * chunk's tokens score each L2-sized block of keys into running top-k
 * heaps, so the keys stream through memory once per chunk.  Ties go to the
 * lower index, as in the reference.
 */
#include "engine/attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Is (score a, index ia) ranked before (b, ib)?  Descending score, then the
 * lower index first: the deterministic tie rule of the golden data. */
static int ranks_before(float a, int32_t ia, float b, int32_t ib)
{
    return a > b || (a == b && ia < ib);
}

static void heap_sift_down(float *sc, int32_t *ix, int n, int i)
{
    /* A heap whose root is the entry ranked last. */
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && ranks_before(sc[w], ix[w], sc[l], ix[l])) w = l;
        if (r < n && ranks_before(sc[w], ix[w], sc[r], ix[r])) w = r;
        if (w == i) return;
        float ts = sc[i];
        sc[i] = sc[w];
        sc[w] = ts;
        int32_t ti = ix[i];
        ix[i] = ix[w];
        ix[w] = ti;
        i = w;
    }
}

/* A running selection of the k best (score, index) pairs by the tie rule:
 * pairs pushed in increasing index order, in one pass or in several (the
 * set and its order are the same either way). */
typedef struct topk_heap {
    float *sc;
    int32_t *ix;
    int k, size;
} topk_heap;

static void topk_push(topk_heap *h, float score, int32_t index)
{
    if (h->k == 0) return;
    if (h->size < h->k) {
        h->sc[h->size] = score;
        h->ix[h->size] = index;
        if (++h->size == h->k)
            for (int j = h->k / 2 - 1; j >= 0; j--) heap_sift_down(h->sc, h->ix, h->k, j);
        return;
    }
    if (!ranks_before(score, index, h->sc[0], h->ix[0])) return;
    h->sc[0] = score;
    h->ix[0] = index;
    heap_sift_down(h->sc, h->ix, h->k, 0);
}

/* Could any of s[0..16) enter a full heap whose last-ranked score is
 * `last` (a NaN could)?  No early exit, so the compiler can vectorise it. */
static int run_may_enter(const float *s, float last)
{
    int any = 0;
    for (int j = 0; j < 16; j++) any |= !(s[j] < last);
    return any;
}

/* Push scores[0..n), the keys first, first + 1, ...: once the heap is full,
 * a score below its last-ranked one cannot enter and is passed over
 * without a call, sixteen at a time (the common case, by far, over a long
 * context). */
static void topk_push_run(topk_heap *h, const float *scores, int64_t n, int32_t first)
{
    int64_t i = 0;
    if (h->k == 0) return;
    for (; i < n && h->size < h->k; i++) topk_push(h, scores[i], first + (int32_t)i);
    for (; i < n; i++) {
        if (i % 16 == 0 && i + 16 <= n && !run_may_enter(scores + i, h->sc[0])) {
            i += 15;
            continue;
        }
        if (!(scores[i] < h->sc[0])) topk_push(h, scores[i], first + (int32_t)i);
    }
}

/* Sort the selection best first (in place); returns its size. */
static int topk_finish(topk_heap *h)
{
    int size = h->size;
    if (size < h->k)
        for (int j = size / 2 - 1; j >= 0; j--) heap_sift_down(h->sc, h->ix, size, j);
    /* Heap-sort: repeatedly move the last-ranked to the end. */
    for (int end = size - 1; end > 0; end--) {
        float ts = h->sc[0];
        h->sc[0] = h->sc[end];
        h->sc[end] = ts;
        int32_t ti = h->ix[0];
        h->ix[0] = h->ix[end];
        h->ix[end] = ti;
        heap_sift_down(h->sc, h->ix, end, 0);
    }
    return size;
}

/* The k best of scores[0..n) by the tie rule, best first, into out. */
static int select_topk(const float *scores, int64_t n, int k, int32_t *out, float *heap_sc)
{
    topk_heap h = {heap_sc, out, k > n ? (int)n : k, 0};
    topk_push_run(&h, scores, n, 0);
    return topk_finish(&h);
}

typedef struct score_job {
    const float *q;     /* [ih][ihd] */
    const float *w;     /* [ih] */
    const float *tiles; /* the keys packed with v4_tiles_pack */
    float *scores;
    int ih, ihd;
} score_job;

/* score[i] = sum over heads of relu(q_h . key_i) * w_h, heads in order, for
 * the entries of tiles [t0, t1). */
static void score_tiles(void *ctx, int64_t t0, int64_t t1)
{
    const score_job *j = ctx;
    int64_t i0 = t0 * 8, n = (t1 - t0) * 8;
    float d[256];
    for (int64_t c = 0; c < n; c += 256) {
        int64_t m = n - c < 256 ? n - c : 256;
        float *out = j->scores + i0 + c;
        const float *tiles = j->tiles + (size_t)(i0 + c) * j->ihd;
        for (int64_t i = 0; i < m; i++) out[i] = 0;
        for (int h = 0; h < j->ih; h++) {
            v4_tiles_dot(tiles, m, j->ihd, j->q + (size_t)h * j->ihd, d);
            for (int64_t i = 0; i < m; i++) out[i] += (d[i] > 0 ? d[i] : 0) * j->w[h];
        }
    }
}

/* ---- indexer scores from FP4 codes (qat, official; engine/kernels/indexer.h) - */

/* Keys per block: a block's codes (128 bytes a key at index_head_dim 128)
 * stay in the L2 cache while every token of the chunk scores them. */
#define KEY_BLOCK 2048

/* The F32 way for one (key, head) pair, for pairs the codes cannot give
 * exactly: what score_tiles computes. */
typedef struct fallback_ctx {
    const v4_model *m;
    const v4_rows *rows;
    const float *q; /* the token's query heads [ih][ihd], after the round trip */
    int ihd;
} fallback_ctx;

static float float_pair_dot(const void *ctx, int64_t key, int head)
{
    const fallback_ctx *f = ctx;
    float k[V4_MAX_INDEX_DIM];
    v4_index_load(f->m, v4_rows_at(f->rows, key), k);
    return v4_dot(k, f->q + (size_t)head * f->ihd, f->ihd);
}

typedef struct code_job {
    attn_ctx *a;
    const v4_index_keys *keys;
    const v4_index_query *queries; /* [n] */
    const float *qi;               /* [n][ih][ihd] */
    topk_heap *heaps;              /* [n] */
    float *scores;                 /* n <= 2: [visible of the last token] */
    int64_t kb;                    /* the key block */
    v4_index_score_fn score;
} code_job;

static int64_t visible_keys(const attn_ctx *a, int t)
{
    return (a->p0 + t + 1) / 4;
}

/* Tokens [t0, t1) against key block j->kb, into their selections. */
static void score_block(void *ctx, int64_t t0, int64_t t1)
{
    const code_job *j = ctx;
    float scores[KEY_BLOCK];
    for (int64_t t = t0; t < t1; t++) {
        int64_t hi = visible_keys(j->a, (int)t);
        if (hi > j->kb + KEY_BLOCK) hi = j->kb + KEY_BLOCK;
        if (hi <= j->kb) continue;
        fallback_ctx fb = {j->a->m, &j->a->bs->index_kv,
                           j->qi + (size_t)t * j->queries[t].heads * j->queries[t].dim,
                           j->queries[t].dim};
        j->score(j->keys, &j->queries[t], j->kb, hi, scores, float_pair_dot, &fb);
        topk_push_run(&j->heaps[t], scores, hi - j->kb, (int32_t)j->kb);
    }
}

/* One token: key groups [g0, g1) scored by all threads. */
static void score_groups(void *ctx, int64_t g0, int64_t g1)
{
    const code_job *j = ctx;
    int64_t hi = visible_keys(j->a, 0), k0 = g0 * V4_INDEX_GROUP, k1 = g1 * V4_INDEX_GROUP;
    if (k1 > hi) k1 = hi;
    fallback_ctx fb = {j->a->m, &j->a->bs->index_kv, j->qi, j->queries[0].dim};
    if (k1 > k0) j->score(j->keys, &j->queries[0], k0, k1, j->scores + k0, float_pair_dot, &fb);
}

static const uint8_t *index_row(const void *rows, int64_t i)
{
    return v4_rows_at(rows, i);
}

/* Each token's top-k from scores computed on the FP4 codes: the keys join
 * the interleaved layout once (kept in the block state), the chunk's
 * tokens score each block of keys while it is in cache. */
static int select_by_codes(attn_ctx *a, const float *qi, const float *wts, const uint8_t *qcodes,
                           tome_error *err)
{
    const v4_config *c = &a->m->cfg;
    v4_block_state *bs = a->bs;
    int n = a->n, ih = c->index_n_heads, ihd = c->index_head_dim, nb = ihd / V4_FP4_BLOCK;
    int rc =
        v4_index_keys_add(&bs->index_codes, ihd, bs->index_kv.n, index_row, &bs->index_kv, err);
    if (rc) return rc;
    int failed = 0;
    size_t qbytes = v4_index_query_bytes(ih, ihd);
    v4_index_query *q = calloc((size_t)n, sizeof *q);
    uint8_t *qmem = malloc((size_t)n * qbytes);
    topk_heap *heaps = calloc((size_t)n, sizeof *heaps);
    float *heap_sc = v4_attn_floats(a, (size_t)n * a->k, &failed);
    float *scores = n <= 2 ? v4_attn_floats(a, (size_t)visible_keys(a, n - 1) + 1, &failed) : NULL;
    if (failed || !q || !qmem || !heaps) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in the indexer");
        goto done;
    }
    size_t row = (size_t)ihd / 2 + (size_t)nb;
    for (int t = 0; t < n; t++) {
        v4_index_query_bind(&q[t], ih, ihd, qmem + (size_t)t * qbytes, wts + (size_t)t * ih);
        q[t].official = v4_official(a->m);
        for (int h = 0; h < ih; h++) {
            const uint8_t *code = qcodes + ((size_t)t * ih + h) * row;
            v4_index_query_set(&q[t], h, code, code + ihd / 2);
        }
        int64_t visible = visible_keys(a, t);
        heaps[t] = (topk_heap){heap_sc + (size_t)t * a->k, a->topk + (size_t)t * a->k,
                               visible < a->k ? (int)visible : a->k, 0};
    }
    code_job j = {a, &bs->index_codes, q, qi, heaps, scores, 0, v4_index_score_active()};
    if (n <= 2) {
        /* Decode: too few tokens to share out; the keys are shared instead. */
        for (int t = 0; t < n; t++) {
            /* score_groups sees token t as token 0 of a shifted context */
            attn_ctx shifted = *a;
            shifted.p0 = a->p0 + t;
            code_job one = j;
            one.a = &shifted;
            one.queries = &q[t];
            one.qi = qi + (size_t)t * ih * ihd;
            int64_t visible = visible_keys(a, t);
            v4_parallel_for(a->m->pool, (visible + V4_INDEX_GROUP - 1) / V4_INDEX_GROUP, 64,
                            score_groups, &one);
            topk_push_run(&heaps[t], scores, visible, 0);
        }
    } else {
        int64_t most = visible_keys(a, n - 1);
        for (j.kb = 0; j.kb < most; j.kb += KEY_BLOCK)
            v4_parallel_for(a->m->pool, n, 1, score_block, &j);
    }
    for (int t = 0; t < n; t++) a->n_topk[t] = topk_finish(&heaps[t]);
done:
    free(q);
    free(qmem);
    free(heaps);
    v4_attn_put(a, heap_sc);
    v4_attn_put(a, scores);
    return rc;
}

/* Each token's top-k from F32 scores over every visible key (fp32
 * numerics, where keys are not codes). */
static int select_by_floats(attn_ctx *a, const float *qi, const float *wts, tome_error *err)
{
    const v4_model *m = a->m;
    const v4_config *c = &m->cfg;
    v4_block_state *bs = a->bs;
    int n = a->n, ih = c->index_n_heads, ihd = c->index_head_dim;
    int64_t n_keys = bs->index_kv.n;
    int failed = 0, rc = 0;
    int64_t padded = (n_keys + 7) / 8 * 8;
    float *keys = v4_attn_floats(a, (size_t)padded * ihd, &failed);
    float *tiles = v4_attn_floats(a, (size_t)padded * ihd, &failed);
    const float **key_rows = malloc((size_t)(n_keys ? n_keys : 1) * sizeof *key_rows);
    float *scores = v4_attn_floats(a, (size_t)padded, &failed);
    float *heap = v4_attn_floats(a, (size_t)a->k, &failed);
    if (failed || !key_rows) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in the indexer (%lld keys)",
                         (long long)n_keys);
        goto done;
    }
    for (int64_t i = 0; i < n_keys; i++) {
        v4_index_load(m, v4_rows_at(&bs->index_kv, i), keys + (size_t)i * ihd);
        key_rows[i] = keys + (size_t)i * ihd;
    }
    v4_tiles_pack(key_rows, n_keys, ihd, tiles);
    for (int t = 0; t < n; t++) {
        int64_t visible = visible_keys(a, t);
        score_job j = {qi + (size_t)t * ih * ihd, wts + (size_t)t * ih, tiles, scores, ih, ihd};
        v4_parallel_for(a->m->pool, (visible + 7) / 8, 32, score_tiles, &j);
        a->n_topk[t] = select_topk(scores, visible, a->k, a->topk + (size_t)t * a->k, heap);
    }
done:
    v4_attn_put(a, keys);
    v4_attn_put(a, tiles);
    free(key_rows);
    v4_attn_put(a, scores);
    v4_attn_put(a, heap);
    return rc;
}

/* The chunk's indexer queries: heads [n][ih][ihd], head weights [n][ih],
 * and, but in fp32 numerics, the heads' FP4 codes. */
typedef struct index_queries {
    float *qi, *wts;
    uint8_t *qcodes;
} index_queries;

/* Token t's query heads rotated and Hadamard-transformed (and, but in fp32
 * numerics, rounded to FP4 codes); its head weights scaled. */
static void index_query_token(attn_ctx *a, void *arg, int64_t t)
{
    const index_queries *iq = arg;
    const v4_config *c = &a->m->cfg;
    int ih = c->index_n_heads, ihd = c->index_head_dim;
    size_t row = (size_t)ihd / 2 + (size_t)ihd / V4_FP4_BLOCK;
    float wscale = (float)(1.0 / sqrt((double)ihd) * (1.0 / sqrt((double)ih)));
    float *qt = iq->qi + (size_t)t * ih * ihd, *wt = iq->wts + (size_t)t * ih;
    v4_rope_apply_rows(v4_block_rope(a->m, a->bw), qt + ihd - a->rd, ihd, ih, a->p0 + t, 0);
    v4_official_bf16(a->m, qt, (size_t)ih * ihd);
    for (int h = 0; h < ih; h++) {
        float *qh = qt + (size_t)h * ihd;
        v4_hadamard(qh, ihd);
        v4_official_bf16(a->m, qh, (size_t)ihd);
        if (iq->qcodes) {
            uint8_t *code = iq->qcodes + ((size_t)t * ih + h) * row;
            v4_fp4_roundtrip(qh, ihd, code, code + ihd / 2);
        }
        wt[h] *= wscale;
    }
    v4_official_bf16(a->m, wt, (size_t)ih);
}

/* The lightning indexer: its compressor consumes the chunk, then each token
 * scores every visible indexer key and keeps the top-k. */
int v4_attn_index(attn_ctx *a, const float *x, const float *qr, tome_error *err)
{
    const v4_model *m = a->m;
    const v4_config *c = &m->cfg;
    const v4_block_weights *bw = a->bw;
    v4_block_state *bs = a->bs;
    int n = a->n, ih = c->index_n_heads, ihd = c->index_head_dim;
    int codes = m->opts.numerics != V4_NUMERICS_FP32; /* FP4 keys and queries */
    int rc = v4_attn_compress(a, &bw->index_compressor, bs->icomp_kv, bs->icomp_score,
                              &bs->index_kv, x, err);
    if (rc) return rc;
    int failed = 0;
    float *qi = v4_attn_floats(a, (size_t)n * ih * ihd, &failed);
    float *wts = v4_attn_floats(a, (size_t)n * ih, &failed);
    size_t row = (size_t)ihd / 2 + (size_t)ihd / V4_FP4_BLOCK;
    uint8_t *qcodes = codes ? malloc((size_t)n * ih * row) : NULL;
    if (failed || (codes && !qcodes)) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in the indexer");
        goto done;
    }
    if ((rc = v4_linear(m, &bw->index_wq_b, qr, n, qi, (int64_t)ih * ihd, err)) != 0) goto done;
    v4_matmul(&bw->index_weights_proj, x, n, wts, ih);
    v4_official_bf16(m, wts, (size_t)n * ih); /* a BF16 product there */
    index_queries iq = {qi, wts, qcodes};
    v4_attn_for_each(a, n, index_query_token, &iq);
    rc = codes ? select_by_codes(a, qi, wts, qcodes, err) : select_by_floats(a, qi, wts, err);
    for (int t = 0; rc == 0 && t < n; t++)
        if (a->ev && a->ev->on_topk)
            a->ev->on_topk(a->ev->tap_ctx, bw->is_mtp ? -1 : a->block, a->p0 + t,
                           a->topk + (size_t)t * a->k, a->n_topk[t]);
done:
    v4_attn_put(a, qi);
    v4_attn_put(a, wts);
    free(qcodes);
    return rc;
}
