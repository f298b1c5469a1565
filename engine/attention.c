/*
 * attention.c - V4 attention for a chunk of tokens: queries, the raw KV of
 * the sliding window, the entries decoded ahead for the exact kernels, and
 * the grouped low-rank output projection, around the steps that live in
 * their own files: the compressors (compressor.c), the lightning indexer
 * (lightning.c) and sparse attention with a sink (attend.c).
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
#include "engine/attention.h"
#include "engine/kernels/fast.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

float *v4_attn_floats(const attn_ctx *a, size_t n, int *failed)
{
    float *p = v4_buffers_get(a->m->buffers, n);
    if (!p) *failed = 1;
    return p;
}

void v4_attn_put(const attn_ctx *a, void *p)
{
    v4_buffers_put(a->m->buffers, p);
}

typedef struct items_job {
    attn_ctx *a;
    attn_item_fn fn;
    void *arg;
} items_job;

static void items_range(void *ctx, int64_t i0, int64_t i1)
{
    const items_job *j = ctx;
    for (int64_t i = i0; i < i1; i++) j->fn(j->a, j->arg, i);
}

void v4_attn_for_each(attn_ctx *a, int64_t n, attn_item_fn fn, void *arg)
{
    items_job j = {a, fn, arg};
    v4_parallel_for(a->m->pool, n, 4, items_range, &j);
}

/* ---- entries decoded ahead --------------------------------------------------------------- */

/* The compressed entries of a ratio-128 block packed once for the chunk:
 * each token attends to a prefix of them. */
static int pack_comp(attn_ctx *a, tome_error *err)
{
    int failed = 0;
    int64_t padded = (a->n_comp + 7) / 8 * 8;
    const float **ptr = malloc((size_t)(a->n_comp ? a->n_comp : 1) * sizeof *ptr);
    a->comp_tiles = v4_attn_floats(a, (size_t)(padded ? padded : 8) * a->hd, &failed);
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

/* Token t's query heads: each head RMS-normalised, then rotated. */
static void query_token(attn_ctx *a, void *arg, int64_t t)
{
    (void)arg;
    float *qt = a->q + (size_t)t * a->H * a->hd;
    size_t width = (size_t)a->H * a->hd;
    float eps = (float)a->m->cfg.norm_eps;
    for (int h = 0; h < a->H; h++) {
        float *qh = qt + (size_t)h * a->hd;
        if (v4_official(a->m))
            v4_official_rms_scale(qh, a->hd, eps);
        else
            v4_rmsnorm(qh, qh, NULL, a->hd, eps);
    }
    v4_rope_apply_rows(v4_block_rope(a->m, a->bw), qt + a->hd - a->rd, a->hd, a->H, a->p0 + t, 0);
    v4_official_bf16(a->m, qt, width);
}

static int queries(attn_ctx *a, const float *qr, tome_error *err)
{
    int rc = v4_linear(a->m, &a->bw->wq_b, qr, a->n, a->q, (int64_t)a->H * a->hd, err);
    if (rc == 0) v4_attn_for_each(a, a->n, query_token, NULL);
    return rc;
}

/* Token t's raw entry: normalised, rotated, stored to row form and back. */
static void raw_kv_token(attn_ctx *a, void *rows, int64_t t)
{
    const v4_model *m = a->m;
    float *kv = a->kv + (size_t)t * a->hd;
    v4_rmsnorm(kv, kv, &a->bw->kv_norm, a->hd, (float)m->cfg.norm_eps);
    v4_official_bf16(m, kv, (size_t)a->hd); /* the RoPE dims: when stored */
    v4_rope_apply(v4_block_rope(m, a->bw), kv + a->hd - a->rd, a->p0 + t, 0);
    v4_kv_store(m, kv, (uint8_t *)rows + (size_t)t * m->kv_row_bytes);
}

/* The chunk's raw KV entries, stored to row form and back so that the
 * chunk attends to exactly what later tokens will read from the ring. */
static int raw_kv(attn_ctx *a, const float *x, uint8_t *rows, tome_error *err)
{
    int rc = v4_linear(a->m, &a->bw->wkv, x, a->n, a->kv, a->hd, err);
    if (rc == 0) v4_attn_for_each(a, a->n, raw_kv_token, rows);
    return rc;
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

/* Token t's selected compressed entries, decoded. */
static void load_selected(attn_ctx *a, void *arg, int64_t t)
{
    (void)arg;
    for (int j = 0; j < a->n_topk[t]; j++)
        v4_kv_load(a->m, v4_rows_at(&a->bs->kv, a->topk[(size_t)t * a->k + j]),
                   a->topk_rows + ((size_t)t * a->k + j) * a->hd);
}

/* Compressed entry i of a ratio-128 block, decoded. */
static void load_compressed(attn_ctx *a, void *arg, int64_t i)
{
    (void)arg;
    v4_kv_load(a->m, v4_rows_at(&a->bs->kv, i), a->comp + (size_t)i * a->hd);
}

/* The entries decoded ahead (a->decoded): the ring's, each token's
 * selected ones (ratio 4), or every compressed one, once for the chunk
 * (ratio 128; packed for the exact kernels). */
static int decode_entries(attn_ctx *a, tome_error *err)
{
    load_ring(a);
    if (a->bw->kind == V4_LAYER_CSA) v4_attn_for_each(a, a->n, load_selected, NULL);
    if (a->bw->kind != V4_LAYER_HCA) return 0;
    int failed = 0;
    a->n_comp = (a->p0 + a->n) / a->bw->ratio;
    a->comp = v4_attn_floats(a, (size_t)a->n_comp * a->hd, &failed);
    if (failed)
        return tome_errorf(err, TOME_ENOMEM, "out of memory loading %lld compressed entries",
                           (long long)a->n_comp);
    v4_attn_for_each(a, a->n_comp, load_compressed, NULL);
    return a->fast ? 0 : pack_comp(a, err);
}

/* Token t's heads rotated back (the output's inverse RoPE). */
static void unrotate_output(attn_ctx *a, void *arg, int64_t t)
{
    (void)arg;
    float *ot = a->o + (size_t)t * a->H * a->hd;
    size_t width = (size_t)a->H * a->hd;
    v4_official_bf16(a->m, ot, width);
    v4_rope_apply_rows(v4_block_rope(a->m, a->bw), ot + a->hd - a->rd, a->hd, a->H, a->p0 + t, 1);
    v4_official_bf16(a->m, ot, width);
}

/* Token t's low-rank query, normalised. */
static void norm_query_rank(attn_ctx *a, void *qr, int64_t t)
{
    const v4_config *c = &a->m->cfg;
    float *row = (float *)qr + (size_t)t * c->q_lora_rank;
    v4_rmsnorm(row, row, &a->bw->q_norm, c->q_lora_rank, (float)c->norm_eps);
    v4_official_bf16(a->m, row, (size_t)c->q_lora_rank);
}

static int output_projection(attn_ctx *a, float *out, float *u, tome_error *err)
{
    const v4_model *m = a->m;
    const v4_config *c = &m->cfg;
    int G = c->o_groups, olr = c->o_lora_rank;
    int64_t group_in = (int64_t)a->H * a->hd / G;
    v4_attn_for_each(a, a->n, unrotate_output, NULL);
    /* Group g's heads are consecutive in o; its rows of wo_a are a slice. */
    for (int g = 0; g < G; g++) {
        /* config.c keeps olr whole FP8 blocks */
        v4_weight wg = v4_weight_rows(&a->bw->wo_a, (int64_t)g * olr, olr);
        /* The token rows of o are H*hd apart; group g reads its slice of each. */
        v4_bf16_product(m, &wg, a->o + (size_t)g * group_in, (int64_t)a->H * a->hd, a->n,
                        u + (size_t)g * olr, (int64_t)G * olr);
    }
    v4_official_bf16(m, u, (size_t)a->n * G * olr); /* wo_a is a BF16 product there */
    return v4_linear(m, &a->bw->wo_b, u, a->n, out, c->dim, err);
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
        a.comp_slots =
            a.bw->kind == V4_LAYER_CSA && blocks > c->index_topk ? c->index_topk : blocks;
    }
    a.H = c->n_heads;
    a.hd = c->head_dim;
    a.rd = c->rope_dim;
    a.k = c->index_topk;
    a.fast = m->opts.kernels == V4_KERNELS_FAST && a.hd % V4_FAST_LANES == 0 &&
             a.rd % V4_FAST_LANES == 0;
    a.decoded = !a.fast || (a.bw->kind == V4_LAYER_HCA && n > 1);
    if (a.decoded || m->opts.numerics == V4_NUMERICS_FP32)
        a.kvf = (v4_kv_format){0, a.hd, 0};
    else
        a.kvf = (v4_kv_format){a.hd - a.rd, a.rd, m->rope_bf16};
    int failed = 0, rc = 0;
    float *qr = v4_attn_floats(&a, (size_t)n * c->q_lora_rank, &failed);
    float *u = v4_attn_floats(&a, (size_t)n * c->o_groups * c->o_lora_rank, &failed);
    uint8_t *rows = malloc((size_t)n * m->kv_row_bytes);
    a.q = v4_attn_floats(&a, (size_t)n * a.H * a.hd, &failed);
    a.kv = v4_attn_floats(&a, (size_t)n * a.hd, &failed);
    a.o = v4_attn_floats(&a, (size_t)n * a.H * a.hd, &failed);
    if (a.decoded) a.prev = v4_attn_floats(&a, (size_t)c->window * a.hd, &failed);
    if (a.bw->kind == V4_LAYER_CSA) {
        a.topk = malloc((size_t)n * a.k * sizeof *a.topk);
        a.n_topk = calloc((size_t)n, sizeof *a.n_topk);
        if (a.decoded) a.topk_rows = v4_attn_floats(&a, (size_t)n * a.k * a.hd, &failed);
        if (!a.topk || !a.n_topk) failed = 1;
    }
    if (failed || !rows) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory in attention (chunk of %d tokens)", n);
        goto done;
    }
    if ((rc = v4_linear(m, &a.bw->wq_a, x, n, qr, c->q_lora_rank, err)) != 0) goto done;
    v4_attn_for_each(&a, n, norm_query_rank, qr);
    if ((rc = queries(&a, qr, err)) != 0 || (rc = raw_kv(&a, x, rows, err)) != 0) goto done;
    if (a.bw->kind == V4_LAYER_CSA && (rc = v4_attn_index(&a, x, qr, err)) != 0) goto done;
    if (a.bw->kind != V4_LAYER_SWA &&
        (rc = v4_attn_compress(&a, &a.bw->compressor, a.bs->comp_kv, a.bs->comp_score, &a.bs->kv, x,
                               err)) != 0)
        goto done;
    a.new_rows = rows;
    if (a.decoded && (rc = decode_entries(&a, err)) != 0) goto done;
    if ((rc = v4_attn_attend(&a, err)) != 0) goto done;
    write_ring(&a, rows);
    a.bs->pos += n;
    rc = output_projection(&a, out, u, err);
done:
    v4_attn_put(&a, qr);
    v4_attn_put(&a, u);
    free(rows);
    v4_attn_put(&a, a.q);
    v4_attn_put(&a, a.kv);
    v4_attn_put(&a, a.prev);
    v4_attn_put(&a, a.o);
    v4_attn_put(&a, a.comp);
    v4_attn_put(&a, a.comp_tiles);
    free(a.topk);
    free(a.n_topk);
    v4_attn_put(&a, a.topk_rows);
    return rc;
}
