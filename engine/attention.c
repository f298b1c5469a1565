/*
 * attention.c - V4 attention for a chunk of tokens: queries, the raw KV of
 * the sliding window, the compressors, the lightning indexer, sparse
 * attention with a sink, and the grouped low-rank output projection.
 *
 * One code path serves prefill (many tokens) and decode (one token).  The
 * chunk's tokens are processed in the reference's order of state updates:
 * the indexer's compressor and the main compressor consume every token of
 * the chunk in position order (emitting an entry whenever a block of `ratio`
 * tokens completes), and then each token attends to exactly what it would
 * have seen had the tokens been fed one at a time: the window of the last
 * `window` raw entries up to and including itself, and the compressed
 * entries i < (pos + 1) / ratio - all of them for ratio 128, the indexer's
 * top-k of them for ratio 4.  Because visibility is a function of the
 * position alone, any chunking gives the same result.
 *
 * The raw window of a chunk spans the ring (entries written before the
 * chunk) and the chunk's own new entries; the ring is updated only after the
 * chunk has attended, so a long chunk never overwrites what its first
 * tokens still need.
 */
#include "engine/model.h"
#include "engine/kernels/indexer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Everything one attention call works on. */
typedef struct attn_ctx {
    const v4_model *m;
    const v4_block_weights *bw;
    v4_block_state *bs;
    const v4_eval *ev;
    int n, block;
    int64_t p0; /* position of the chunk's first token */
    /* Window slots in the reference's per-token index list: the window, or
     * the prompt's length when a prompt shorter than it is evaluated from
     * position 0 in one call (the list is cut to the prompt there). */
    int64_t window_slots;
    /* Compressed slots of those lists: fixed over a prompt evaluated from
     * position 0 (the reference sizes them by the prompt), or -1: each
     * token's own count (a decode step's lists). */
    int64_t comp_slots;
    int H, hd, rd;
    float *q;          /* [n][H][hd] */
    float *kv;         /* [n][hd] the chunk's raw entries, as stored */
    float *prev;       /* [window][hd] ring entries before the chunk, by slot */
    float *comp;       /* [n_comp][hd] decoded compressed entries (ratio 128) */
    float *comp_tiles; /* the same packed once for all tokens (v4_tiles_pack) */
    int64_t n_comp;
    int32_t *topk; /* [n][k] indexer selections (ratio 4) */
    int *n_topk;   /* [n] */
    int k;
    float *topk_rows;  /* [n][k][hd] decoded selected entries */
    float *o;          /* [n][H][hd] */
    atomic_int failed; /* a worker could not get scratch memory */
} attn_ctx;

static void *alloc_floats(size_t n, int *failed)
{
    void *p = v4_floats(n);
    if (!p) *failed = 1;
    return p;
}

/* ---- compressor ----------------------------------------------------------------- */

/* Feed one token's projections (score already has ape added) into the
 * compressor state; when a block completes, pool it into `emit` (head_dim
 * wide) and return 1.  `weight` is scratch for 2 * ratio floats. */
static int compressor_feed(const v4_compressor_weights *cw, float *st_kv, float *st_sc,
                           const float *kvp, const float *sc, int64_t pos, float *emit,
                           float *weight)
{
    int r = cw->ratio, hd = cw->head_dim, w = cw->width;
    int overlap = r == 4;
    int row = overlap ? r + (int)(pos % r) : (int)(pos % r);
    memcpy(st_kv + (size_t)row * w, kvp, (size_t)w * sizeof(float));
    memcpy(st_sc + (size_t)row * w, sc, (size_t)w * sizeof(float));
    if ((pos + 1) % r != 0) return 0;
    int n_cand = overlap ? 2 * r : r;
    for (int j = 0; j < hd; j++) {
        /* Per dimension, a softmax over time: with overlap, the first half
         * of the previous block's rows and the second half of this block's. */
        float mx = -INFINITY;
        for (int c = 0; c < n_cand; c++) {
            int col = overlap && c >= r ? hd + j : j;
            mx = fmaxf(mx, st_sc[(size_t)c * w + col]);
        }
        /* softmax weights first (vector exp, sum, one division each), then
         * the weighted sum: the reference's rounding order */
        float den = 0;
        for (int c = 0; c < n_cand; c++) {
            int col = overlap && c >= r ? hd + j : j;
            den += weight[c] = v4_exp_vector(st_sc[(size_t)c * w + col] - mx);
        }
        for (int c = 0; c < n_cand; c++) {
            int col = overlap && c >= r ? hd + j : j;
            weight[c] = st_kv[(size_t)c * w + col] * (weight[c] / den);
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
static int compress_chunk(attn_ctx *a, const v4_compressor_weights *cw, float *st_kv, float *st_sc,
                          v4_rows *out, const float *x, tome_error *err)
{
    const v4_model *m = a->m;
    int n = a->n, w = cw->width, hd = cw->head_dim;
    int failed = 0;
    float *kvp = alloc_floats((size_t)n * w, &failed);
    float *sc = alloc_floats((size_t)n * w, &failed);
    float *e = alloc_floats((size_t)hd, &failed);
    float *weight = alloc_floats((size_t)2 * cw->ratio, &failed);
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
                             weight))
            continue;
        v4_rmsnorm(e, e, &cw->norm, hd, (float)m->cfg.norm_eps);
        v4_rope_apply(v4_block_rope(m, a->bw), e + hd - a->rd, pos + 1 - cw->ratio, 0);
        uint8_t *row = v4_rows_append(out);
        if (!row) {
            rc = tome_errorf(err, TOME_ENOMEM, "out of memory growing the compressed KV");
            goto done;
        }
        if (cw->rotate) {
            v4_hadamard(e, hd);
            v4_index_store(m, e, row);
        } else {
            v4_kv_store(m, e, row);
        }
    }
done:
    free(kvp);
    free(sc);
    free(e);
    free(weight);
    return rc;
}

/* ---- indexer ---------------------------------------------------------------------- */

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
    for (int64_t i = 0; i < n; i++) topk_push(&h, scores[i], (int32_t)i);
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

/* ---- indexer scores from FP4 codes (qat numerics; engine/kernels/indexer.h) --- */

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
        for (int64_t i = j->kb; i < hi; i++) topk_push(&j->heaps[t], scores[i - j->kb], (int32_t)i);
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
    v4_index_query *q = calloc((size_t)n, sizeof *q);
    int8_t *c2 = malloc((size_t)n * ih * ihd);
    uint8_t *e = malloc((size_t)n * ih * nb);
    int32_t *off = malloc((size_t)n * ih * nb * sizeof *off);
    uint32_t *q4 = malloc((size_t)n * ih * ihd);
    topk_heap *heaps = calloc((size_t)n, sizeof *heaps);
    float *heap_sc = alloc_floats((size_t)n * a->k, &failed);
    float *scores = n <= 2 ? alloc_floats((size_t)visible_keys(a, n - 1) + 1, &failed) : NULL;
    if (failed || !q || !c2 || !e || !off || !q4 || !heaps) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in the indexer");
        goto done;
    }
    size_t row = (size_t)ihd / 2 + (size_t)nb;
    for (int t = 0; t < n; t++) {
        q[t] = (v4_index_query){ih,
                                ihd,
                                nb,
                                c2 + (size_t)t * ih * ihd,
                                e + (size_t)t * ih * nb,
                                off + (size_t)t * ih * nb,
                                q4 + (size_t)t * ih * ihd / 4,
                                wts + (size_t)t * ih};
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
            v4_parallel_for(a->m->pool, (visible + V4_INDEX_GROUP - 1) / V4_INDEX_GROUP, 64, score_groups,
                            &one);
            for (int64_t i = 0; i < visible; i++) topk_push(&heaps[t], scores[i], (int32_t)i);
        }
    } else {
        int64_t most = visible_keys(a, n - 1);
        for (j.kb = 0; j.kb < most; j.kb += KEY_BLOCK) v4_parallel_for(a->m->pool, n, 1, score_block, &j);
    }
    for (int t = 0; t < n; t++) a->n_topk[t] = topk_finish(&heaps[t]);
done:
    free(q);
    free(c2);
    free(e);
    free(off);
    free(q4);
    free(heaps);
    free(heap_sc);
    free(scores);
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
    float *keys = alloc_floats((size_t)padded * ihd, &failed);
    float *tiles = alloc_floats((size_t)padded * ihd, &failed);
    const float **key_rows = malloc((size_t)(n_keys ? n_keys : 1) * sizeof *key_rows);
    float *scores = alloc_floats((size_t)padded, &failed);
    float *heap = alloc_floats((size_t)a->k, &failed);
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
    free(keys);
    free(tiles);
    free(key_rows);
    free(scores);
    free(heap);
    return rc;
}

/* The lightning indexer: its compressor consumes the chunk, then each token
 * scores every visible indexer key and keeps the top-k. */
static int run_indexer(attn_ctx *a, const float *x, const float *qr, tome_error *err)
{
    const v4_model *m = a->m;
    const v4_config *c = &m->cfg;
    const v4_block_weights *bw = a->bw;
    v4_block_state *bs = a->bs;
    int n = a->n, ih = c->index_n_heads, ihd = c->index_head_dim;
    int qat = m->opts.numerics == V4_NUMERICS_QAT;
    int rc = compress_chunk(a, &bw->index_compressor, bs->icomp_kv, bs->icomp_score, &bs->index_kv,
                            x, err);
    if (rc) return rc;
    int failed = 0;
    float *qi = alloc_floats((size_t)n * ih * ihd, &failed);
    float *wts = alloc_floats((size_t)n * ih, &failed);
    size_t row = (size_t)ihd / 2 + (size_t)ihd / V4_FP4_BLOCK;
    uint8_t *qcodes = qat ? malloc((size_t)n * ih * row) : NULL;
    if (failed || (qat && !qcodes)) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in the indexer");
        goto done;
    }
    v4_matmul(&bw->index_wq_b, qr, n, qi, (int64_t)ih * ihd);
    v4_matmul(&bw->index_weights_proj, x, n, wts, ih);
    float wscale = (float)(1.0 / sqrt((double)ihd) * (1.0 / sqrt((double)ih)));
    for (int t = 0; t < n; t++) {
        for (int h = 0; h < ih; h++) {
            float *qh = qi + ((size_t)t * ih + h) * ihd;
            v4_rope_apply(v4_block_rope(m, bw), qh + ihd - a->rd, a->p0 + t, 0);
            v4_hadamard(qh, ihd);
            if (qat) {
                uint8_t *code = qcodes + ((size_t)t * ih + h) * row;
                v4_fp4_roundtrip(qh, ihd, code, code + ihd / 2);
            }
            wts[(size_t)t * ih + h] *= wscale;
        }
    }
    rc = qat ? select_by_codes(a, qi, wts, qcodes, err) : select_by_floats(a, qi, wts, err);
    for (int t = 0; rc == 0 && t < n; t++)
        if (a->ev && a->ev->on_topk)
            a->ev->on_topk(a->ev->tap_ctx, bw->is_mtp ? -1 : a->block, a->p0 + t,
                           a->topk + (size_t)t * a->k, a->n_topk[t]);
done:
    free(qi);
    free(wts);
    free(qcodes);
    return rc;
}

/* ---- sparse attention ---------------------------------------------------------------- */

/* The raw window entry at absolute position p, from the chunk or the ring. */
static const float *window_entry(const attn_ctx *a, int64_t p)
{
    if (p >= a->p0) return a->kv + (size_t)(p - a->p0) * a->hd;
    return a->prev + (size_t)(p % a->m->cfg.window) * a->hd;
}

/* The rows token t attends to: its window, then its compressed entries. */
static int64_t gather_entries(const attn_ctx *a, int t, const float **rows)
{
    int64_t pos = a->p0 + t, n = 0;
    int64_t lo = pos - a->m->cfg.window + 1;
    for (int64_t p = lo < 0 ? 0 : lo; p <= pos; p++) rows[n++] = window_entry(a, p);
    if (a->bw->kind == V4_LAYER_HCA)
        for (int64_t i = 0; i < (pos + 1) / a->bw->ratio; i++) rows[n++] = a->comp + (size_t)i * a->hd;
    if (a->bw->kind == V4_LAYER_CSA)
        for (int i = 0; i < a->n_topk[t]; i++)
            rows[n++] = a->topk_rows + ((size_t)t * a->k + i) * a->hd;
    return n;
}

/* Entries are attended in blocks of this many, each block's softmax
 * folded into the running one (the reference kernel's tile). */
#define ATTN_BLOCK 64

/* Where entry s of a token's rows sits in the reference's index list: its
 * `window` window entries at slots 0.., the compressed ones from slot
 * `window_slots` on. */
static int64_t entry_slot(int64_t s, int64_t window, int64_t window_slots)
{
    return s < window ? s : window_slots + (s - window);
}

/* Fold entries s0..s1 of one head, all in the block of `width` slots from
 * slot `base` (ATTN_BLOCK, or what is left of the index list), into the
 * running maximum `mx`, denominator `den` and output `o`, as the
 * reference's blockwise online softmax rounds it: the block's exps against
 * the new maximum, their sum in cascade order over the block's slots, the
 * block's P.V formed apart and then added to the rescaled output.  `p` and
 * `pv` are scratch (ATTN_BLOCK and hd floats). */
static void attend_block(const float *z, const float **rows, int64_t s0, int64_t s1, int64_t window,
                         int64_t window_slots, int64_t base, int64_t width, int hd, float scale,
                         float *mx, float *den, float *o, float *p, float *pv)
{
    float m = *mx;
    for (int64_t s = s0; s < s1; s++) m = fmaxf(m, z[s] * scale);
    float rescale = v4_exp_vector(*mx - m);
    memset(p, 0, ATTN_BLOCK * sizeof *p);
    memset(pv, 0, (size_t)hd * sizeof *pv);
    for (int64_t s = s0; s < s1; s++) {
        float e = v4_exp_vector(z[s] * scale - m);
        p[entry_slot(s, window, window_slots) - base] = e;
        v4_axpy(pv, e, rows[s], hd);
    }
    *den = *den * rescale + v4_sum(p, width);
    for (int i = 0; i < hd; i++) o[i] = o[i] * rescale + pv[i];
    *mx = m;
}

/* Compressed slots in the index list of the token at `pos`. */
static int64_t list_comp_slots(const attn_ctx *a, int64_t pos)
{
    if (a->comp_slots >= 0) return a->comp_slots;
    int64_t blocks = a->bw->ratio ? (pos + 1) / a->bw->ratio : 0;
    return a->bw->kind == V4_LAYER_CSA && blocks > a->k ? a->k : blocks;
}

/* How many of a token's n entries it packs itself: all of them, except at
 * ratio 128, where the compressed entries after its window come from the
 * chunk's shared tiles (packing them per token would copy O(context)). */
static int64_t own_entries(const attn_ctx *a, int t, int64_t n)
{
    return a->comp_tiles ? n - (a->p0 + t + 1) / a->bw->ratio : n;
}

/* Heads h0..h1 of token t: scores against the packed rows (the first
 * own_entries in `tiles`, the rest in a->comp_tiles), then the online
 * softmax over blocks of ATTN_BLOCK slots of the reference's index list
 * (entry_slot), with the sink in the denominator only.  `pv` is scratch for
 * ATTN_BLOCK + hd floats. */
static void attend_heads(const attn_ctx *a, int t, int h0, int h1, const float **rows, int64_t n,
                         const float *tiles, float *z, float *pv)
{
    int64_t own = own_entries(a, t, n);
    int hd = a->hd;
    float scale = (float)(1.0 / sqrt((double)hd));
    int64_t pos = a->p0 + t, window = pos + 1 < a->m->cfg.window ? pos + 1 : a->m->cfg.window;
    int64_t slots = a->window_slots + list_comp_slots(a, pos);
    for (int h = h0; h < h1; h++) {
        const float *q = a->q + ((size_t)t * a->H + h) * hd;
        float *o = a->o + ((size_t)t * a->H + h) * hd;
        v4_tiles_dot(tiles, own, hd, q, z);
        if (own < n) v4_tiles_dot(a->comp_tiles, n - own, hd, q, z + own);
        float mx = -INFINITY, den = 0;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int64_t s0 = 0; s0 < n;) {
            int64_t base = entry_slot(s0, window, a->window_slots) / ATTN_BLOCK * ATTN_BLOCK;
            int64_t s1 = s0 + 1;
            while (s1 < n && entry_slot(s1, window, a->window_slots) < base + ATTN_BLOCK) s1++;
            int64_t width = slots - base < ATTN_BLOCK ? slots - base : ATTN_BLOCK;
            int64_t used = entry_slot(s1 - 1, window, a->window_slots) - base + 1;
            if (width < used) width = used; /* never drop an entry from the sum */
            attend_block(z, rows, s0, s1, window, a->window_slots, base, width, hd, scale, &mx,
                         &den, o, pv + hd, pv);
            s0 = s1;
        }
        den += v4_exp_vector(a->bw->attn_sink[h] - mx);
        for (int i = 0; i < hd; i++) o[i] /= den;
    }
}

/* Scratch for one attending thread: sized for the most rows a token of
 * this chunk can see. */
typedef struct attend_scratch {
    const float **rows;
    float *tiles, *z, *pv;
} attend_scratch;

static int64_t max_entries(const attn_ctx *a)
{
    int64_t last = a->p0 + a->n - 1;
    int64_t n = a->m->cfg.window;
    if (a->bw->kind == V4_LAYER_HCA) n += (last + 1) / a->bw->ratio;
    if (a->bw->kind == V4_LAYER_CSA) n += a->k;
    return n;
}

static int scratch_new(const attn_ctx *a, attend_scratch *sc)
{
    int64_t n = max_entries(a), padded = (n + 7) / 8 * 8;
    sc->rows = malloc((size_t)n * sizeof *sc->rows);
    sc->tiles = malloc((size_t)padded * a->hd * sizeof(float));
    sc->z = malloc((size_t)padded * sizeof(float));
    sc->pv = malloc((size_t)(ATTN_BLOCK + a->hd) * sizeof(float));
    return sc->rows && sc->tiles && sc->z && sc->pv ? 0 : -1;
}

static void scratch_free(attend_scratch *sc)
{
    free(sc->rows);
    free(sc->tiles);
    free(sc->z);
    free(sc->pv);
}

/* Prefill: tokens in parallel, each packing its rows once for all heads. */
static void attend_tokens(void *ctx, int64_t t0, int64_t t1)
{
    attn_ctx *a = ctx;
    attend_scratch sc;
    if (scratch_new(a, &sc) != 0) {
        atomic_store(&a->failed, 1);
        scratch_free(&sc);
        return;
    }
    for (int64_t t = t0; t < t1; t++) {
        int64_t n = gather_entries(a, (int)t, sc.rows);
        v4_tiles_pack(sc.rows, own_entries(a, (int)t, n), a->hd, sc.tiles);
        attend_heads(a, (int)t, 0, a->H, sc.rows, n, sc.tiles, sc.z, sc.pv);
    }
    scratch_free(&sc);
}

/* Decode: one token's rows packed once, heads in parallel. */
typedef struct heads_job {
    attn_ctx *a;
    const float **rows;
    const float *tiles;
    int64_t n;
} heads_job;

static void attend_head_range(void *ctx, int64_t h0, int64_t h1)
{
    heads_job *j = ctx;
    size_t nz = (size_t)j->n + 8;
    float *z = malloc((nz + ATTN_BLOCK + (size_t)j->a->hd) * sizeof *z);
    if (!z) {
        atomic_store(&j->a->failed, 1);
        return;
    }
    attend_heads(j->a, 0, (int)h0, (int)h1, j->rows, j->n, j->tiles, z, z + nz);
    free(z);
}

static int attend_all(attn_ctx *a, tome_error *err)
{
    if (a->n > 1)
        v4_parallel_for(a->m->pool, a->n, 1, attend_tokens, a);
    else {
        attend_scratch sc;
        if (scratch_new(a, &sc) == 0) {
            heads_job j = {a, sc.rows, sc.tiles, gather_entries(a, 0, sc.rows)};
            v4_tiles_pack(sc.rows, own_entries(a, 0, j.n), a->hd, sc.tiles);
            v4_parallel_for(a->m->pool, a->H, 1, attend_head_range, &j);
        } else {
            atomic_store(&a->failed, 1);
        }
        scratch_free(&sc);
    }
    if (atomic_load(&a->failed))
        return tome_errorf(err, TOME_ENOMEM, "out of memory in sparse attention");
    return 0;
}

/* The compressed entries of a ratio-128 block packed once for the chunk:
 * each token attends to a prefix of them. */
static int pack_comp(attn_ctx *a, tome_error *err)
{
    int failed = 0;
    int64_t padded = (a->n_comp + 7) / 8 * 8;
    const float **ptr = malloc((size_t)(a->n_comp ? a->n_comp : 1) * sizeof *ptr);
    a->comp_tiles = alloc_floats((size_t)(padded ? padded : 8) * a->hd, &failed);
    if (failed || !ptr) {
        free(ptr);
        return tome_errorf(err, TOME_ENOMEM, "out of memory packing %lld compressed entries",
                           (long long)a->n_comp);
    }
    for (int64_t i = 0; i < a->n_comp; i++) ptr[i] = a->comp + (size_t)i * a->hd;
    v4_tiles_pack(ptr, a->n_comp, a->hd, a->comp_tiles);
    free(ptr);
    return 0;
}

/* ---- the whole attention ------------------------------------------------------------------ */

static void queries(attn_ctx *a, const float *qr)
{
    const v4_model *m = a->m;
    v4_matmul(&a->bw->wq_b, qr, a->n, a->q, (int64_t)a->H * a->hd);
    for (int t = 0; t < a->n; t++)
        for (int h = 0; h < a->H; h++) {
            float *qh = a->q + ((size_t)t * a->H + h) * a->hd;
            v4_rmsnorm(qh, qh, NULL, a->hd, (float)m->cfg.norm_eps);
            v4_rope_apply(v4_block_rope(m, a->bw), qh + a->hd - a->rd, a->p0 + t, 0);
        }
}

/* The chunk's raw KV entries, stored to row form and back so that the
 * chunk attends to exactly what later tokens will read from the ring. */
static int raw_kv(attn_ctx *a, const float *x, uint8_t *rows)
{
    const v4_model *m = a->m;
    v4_matmul(&a->bw->wkv, x, a->n, a->kv, a->hd);
    for (int t = 0; t < a->n; t++) {
        float *kv = a->kv + (size_t)t * a->hd;
        v4_rmsnorm(kv, kv, &a->bw->kv_norm, a->hd, (float)m->cfg.norm_eps);
        v4_rope_apply(v4_block_rope(m, a->bw), kv + a->hd - a->rd, a->p0 + t, 0);
        v4_kv_store(m, kv, rows + (size_t)t * m->kv_row_bytes);
    }
    return 0;
}

static void load_ring(attn_ctx *a)
{
    int W = a->m->cfg.window;
    int64_t lo = a->p0 - W + 1;
    for (int64_t p = lo < 0 ? 0 : lo; p < a->p0; p++)
        v4_kv_load(a->m, a->bs->window + (size_t)(p % W) * a->m->kv_row_bytes,
                   a->prev + (size_t)(p % W) * a->hd);
}

static void write_ring(attn_ctx *a, const uint8_t *rows)
{
    int W = a->m->cfg.window;
    size_t rb = a->m->kv_row_bytes;
    int first = a->n > W ? a->n - W : 0;
    for (int t = first; t < a->n; t++)
        memcpy(a->bs->window + (size_t)((a->p0 + t) % W) * rb, rows + (size_t)t * rb, rb);
}

static void load_selected(attn_ctx *a)
{
    for (int t = 0; t < a->n; t++)
        for (int j = 0; j < a->n_topk[t]; j++)
            v4_kv_load(a->m, v4_rows_at(&a->bs->kv, a->topk[(size_t)t * a->k + j]),
                       a->topk_rows + ((size_t)t * a->k + j) * a->hd);
}

static void output_projection(attn_ctx *a, float *out, float *u)
{
    const v4_model *m = a->m;
    const v4_config *c = &m->cfg;
    int G = c->o_groups, olr = c->o_lora_rank;
    int64_t group_in = (int64_t)a->H * a->hd / G;
    for (int t = 0; t < a->n; t++)
        for (int h = 0; h < a->H; h++)
            v4_rope_apply(v4_block_rope(m, a->bw),
                          a->o + ((size_t)t * a->H + h) * a->hd + a->hd - a->rd, a->p0 + t, 1);
    /* Group g's heads are consecutive in o; its rows of wo_a are a slice. */
    for (int g = 0; g < G; g++) {
        v4_weight wg = a->bw->wo_a;
        wg.rows = olr;
        wg.data += (size_t)g * olr * v4_dtype_row_bytes(wg.dtype, wg.cols);
        if (wg.scale) wg.scale += (size_t)(g * olr / V4_FP8_BLOCK) * wg.scale_stride;
        /* The token rows of o are H*hd apart; group g reads its slice of each. */
        v4_matmul_strided(&wg, a->o + (size_t)g * group_in, (int64_t)a->H * a->hd, a->n,
                          u + (size_t)g * olr, (int64_t)G * olr);
    }
    v4_matmul(&a->bw->wo_b, u, a->n, out, c->dim);
}

int v4_attention(v4_state *s, int block, const float *x, int n, int64_t call_first,
                 int64_t call_tokens, float *out, const v4_eval *ev, tome_error *err)
{
    const v4_model *m = s->m;
    const v4_config *c = &m->cfg;
    attn_ctx a = {
        .m = m, .bw = &m->blocks[block], .bs = &s->blocks[block], .ev = ev, .n = n, .block = block};
    a.p0 = a.bs->pos;
    a.window_slots = c->window;
    a.comp_slots = -1;
    if (a.p0 - call_first == 0 && call_tokens > 1) {
        if (call_tokens < c->window) a.window_slots = call_tokens;
        int64_t blocks = a.bw->ratio ? call_tokens / a.bw->ratio : 0;
        a.comp_slots = a.bw->kind == V4_LAYER_CSA && blocks > c->index_topk ? c->index_topk : blocks;
    }
    a.H = c->n_heads;
    a.hd = c->head_dim;
    a.rd = c->rope_dim;
    a.k = c->index_topk;
    int failed = 0, rc = 0;
    float *qr = alloc_floats((size_t)n * c->q_lora_rank, &failed);
    float *u = alloc_floats((size_t)n * c->o_groups * c->o_lora_rank, &failed);
    uint8_t *rows = malloc((size_t)n * m->kv_row_bytes);
    a.q = alloc_floats((size_t)n * a.H * a.hd, &failed);
    a.kv = alloc_floats((size_t)n * a.hd, &failed);
    a.prev = alloc_floats((size_t)c->window * a.hd, &failed);
    a.o = alloc_floats((size_t)n * a.H * a.hd, &failed);
    if (a.bw->kind == V4_LAYER_CSA) {
        a.topk = malloc((size_t)n * a.k * sizeof *a.topk);
        a.n_topk = calloc((size_t)n, sizeof *a.n_topk);
        a.topk_rows = alloc_floats((size_t)n * a.k * a.hd, &failed);
        if (!a.topk || !a.n_topk) failed = 1;
    }
    if (failed || !rows) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in attention (chunk of %d tokens)", n);
        goto done;
    }
    v4_matmul(&a.bw->wq_a, x, n, qr, c->q_lora_rank);
    for (int t = 0; t < n; t++)
        v4_rmsnorm(qr + (size_t)t * c->q_lora_rank, qr + (size_t)t * c->q_lora_rank, &a.bw->q_norm,
                   c->q_lora_rank, (float)c->norm_eps);
    queries(&a, qr);
    raw_kv(&a, x, rows);
    if (a.bw->kind == V4_LAYER_CSA && (rc = run_indexer(&a, x, qr, err)) != 0) goto done;
    if (a.bw->ratio && (rc = compress_chunk(&a, &a.bw->compressor, a.bs->comp_kv, a.bs->comp_score,
                                            &a.bs->kv, x, err)) != 0)
        goto done;
    load_ring(&a);
    if (a.bw->kind == V4_LAYER_CSA) load_selected(&a);
    if (a.bw->kind == V4_LAYER_HCA) {
        a.n_comp = (a.p0 + n) / a.bw->ratio;
        a.comp = alloc_floats((size_t)a.n_comp * a.hd, &failed);
        if (failed) {
            rc = tome_errorf(err, TOME_ENOMEM, "out of memory loading %lld compressed entries",
                             (long long)a.n_comp);
            goto done;
        }
        for (int64_t i = 0; i < a.n_comp; i++)
            v4_kv_load(m, v4_rows_at(&a.bs->kv, i), a.comp + (size_t)i * a.hd);
        if ((rc = pack_comp(&a, err)) != 0) goto done;
    }
    if ((rc = attend_all(&a, err)) != 0) goto done;
    write_ring(&a, rows);
    output_projection(&a, out, u);
    a.bs->pos += n;
done:
    free(qr);
    free(u);
    free(rows);
    free(a.q);
    free(a.kv);
    free(a.prev);
    free(a.o);
    free(a.comp);
    free(a.comp_tiles);
    free(a.topk);
    free(a.n_topk);
    free(a.topk_rows);
    return rc;
}
