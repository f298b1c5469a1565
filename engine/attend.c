/*
 * attend.c - the sparse attention step of a V4 attention call: each token
 * of the chunk attends, with the sink, to its window and its compressed
 * entries (all of them at ratio 128, the indexer's picks at ratio 4).
 *
 * Two sets of kernels share the gathering of a token's rows.  The exact
 * kernels read rows decoded ahead into floats and reproduce the
 * reference's blockwise online softmax, rounding for rounding.  The fast
 * kernels read the rows where they are stored (the chunk's new rows, the
 * ring, the state's compressed rows), decoded in registers: all scores at
 * once, one softmax per head, then P.V; every sum's order depends on the
 * rows alone, so chunking, threads and batching leave the bits unchanged.
 * Prefill runs tokens in parallel; a decode step splits its one token's
 * work between the threads (rows for the scores, heads for the softmax,
 * columns for P.V).
 */
#include "engine/attention.h"
#include "engine/kernels/fast.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The first window position token t sees. */
static int64_t window_first(const attn_ctx *a, int t)
{
    int64_t lo = a->p0 + t - a->m->cfg.window + 1;
    return lo < 0 ? 0 : lo;
}

/* How many compressed entries token t sees, and which is its i-th: all of
 * them for ratio 128, the indexer's picks for ratio 4. */
static int64_t comp_count(const attn_ctx *a, int t)
{
    if (a->bw->kind == V4_LAYER_HCA) return (a->p0 + t + 1) / a->bw->ratio;
    return a->bw->kind == V4_LAYER_CSA ? a->n_topk[t] : 0;
}

static int64_t comp_entry(const attn_ctx *a, int t, int64_t i)
{
    return a->bw->kind == V4_LAYER_HCA ? i : a->topk[(size_t)t * a->k + i];
}

/* The rows token t attends to, decoded (the exact kernels'): its window
 * from the chunk or the ring, then its compressed entries. */
static int64_t gather_entries(const attn_ctx *a, int t, const float **rows)
{
    int64_t n = 0, hd = a->hd, comp = comp_count(a, t);
    for (int64_t p = window_first(a, t); p <= a->p0 + t; p++)
        rows[n++] = p >= a->p0 ? a->kv + (size_t)(p - a->p0) * hd
                               : a->prev + (size_t)(p % a->m->cfg.window) * hd;
    for (int64_t i = 0; i < comp; i++)
        rows[n++] = a->bw->kind == V4_LAYER_HCA ? a->comp + (size_t)i * hd
                                                : a->topk_rows + ((size_t)t * a->k + i) * hd;
    return n;
}

/* The same rows where they are stored (the fast kernels'): the chunk's new
 * rows, the ring, the state's compressed rows. */
static int64_t gather_stored(const attn_ctx *a, int t, const uint8_t **rows)
{
    size_t rb = a->m->kv_row_bytes;
    int64_t n = 0, comp = comp_count(a, t);
    for (int64_t p = window_first(a, t); p <= a->p0 + t; p++)
        rows[n++] = p >= a->p0 ? a->new_rows + (size_t)(p - a->p0) * rb
                               : a->bs->window + (size_t)(p % a->m->cfg.window) * rb;
    for (int64_t i = 0; i < comp; i++) rows[n++] = v4_rows_at(&a->bs->kv, comp_entry(a, t, i));
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

/* One head's running softmax over a token's entries, and its block
 * scratch: `p` (ATTN_BLOCK slots) and `pv` (hd floats). */
typedef struct head_fold {
    const float *z; /* the head's scores, one per entry */
    float *o;       /* its output (hd floats), the running P.V */
    float mx, den, rescale;
    float *p, *pv;
    float e[ATTN_BLOCK];
} head_fold;

/* One block of the reference's blockwise online softmax for entries
 * s0..s1 of every head, all in the block of `width` slots from slot `base`
 * (ATTN_BLOCK, or what is left of the index list), rounded as the
 * reference does for each head: the block's exps against the new maximum,
 * their sum in cascade order over the block's slots, the block's P.V formed
 * apart and then added to the rescaled output.  The heads go through the
 * block together, so each entry's row is read once for all of them. */
static void attend_block(const attn_ctx *a, head_fold *f, int nh, const float **rows, int64_t s0,
                         int64_t s1, int64_t window, int64_t window_slots, int64_t base,
                         int64_t width, float scale)
{
    int64_t n = s1 - s0; /* at most ATTN_BLOCK: the entries sit in distinct slots */
    int hd = a->hd;
    for (int h = 0; h < nh; h++) {
        head_fold *g = &f[h];
        float m = g->mx;
        for (int64_t s = s0; s < s1; s++) {
            float v = g->z[s] * scale; /* fmaxf's result: m is never NaN */
            m = v > m ? v : m;
        }
        g->rescale = v4_exp_vector(g->mx - m);
        for (int64_t i = 0; i < n; i++) g->e[i] = g->z[s0 + i] * scale - m;
        v4_exp_vector_n(g->e, g->e, n);
        g->mx = m;
        memset(g->p, 0, ATTN_BLOCK * sizeof *g->p);
        memset(g->pv, 0, (size_t)hd * sizeof *g->pv);
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t slot = entry_slot(s0 + i, window, window_slots) - base;
        for (int h = 0; h < nh; h++) f[h].p[slot] = f[h].e[i];
    }
    /* The denominator sums the exps as they are; in official numerics P.V
     * reads them rounded to BF16. */
    for (int h = 0; h < nh; h++) v4_official_bf16(a->m, f[h].e, (size_t)n);
    for (int64_t i = 0; i < n; i++)
        for (int h = 0; h < nh; h++) v4_axpy(f[h].pv, f[h].e[i], rows[s0 + i], hd);
    for (int h = 0; h < nh; h++) {
        head_fold *g = &f[h];
        g->den = g->den * g->rescale + v4_sum(g->p, width);
        for (int k = 0; k < hd; k++) g->o[k] = g->o[k] * g->rescale + g->pv[k];
    }
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

/* Official numerics: token t's scaled scores p[0..n) (maximum m) become
 * the weights the reference's P.V gives its entries.  Its kernel rounds
 * each numerator to BF16 against the running maximum of the blocks of
 * ATTN_BLOCK list slots seen so far and rescales the sum as the maximum
 * grows: entry s weighs bf16(exp(p[s] - m_b)) * exp(m_b - m), m_b its
 * block's running maximum.  Returns the denominator's sum of exps. */
static float official_weights(const attn_ctx *a, int t, float *p, int64_t n, float m)
{
    /* The exps run a chunk at a time through the vector exp (the scalar
     * one's bits), the sums in increasing s as before. */
    enum { CHUNK = 256 };
    float less_m[CHUNK], less_run[CHUNK], rescale[CHUNK];
    int64_t pos = a->p0 + t, window = pos + 1 < a->m->cfg.window ? pos + 1 : a->m->cfg.window;
    float run = -INFINITY, block_rescale = 0, den = 0;
    int64_t block_end = 0;
    for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
        int64_t len = n - c0 < CHUNK ? n - c0 : CHUNK;
        for (int64_t i = 0; i < len; i++) {
            int64_t s = c0 + i;
            if (s == block_end) { /* a new block: its running maximum (p past s is unchanged) */
                int64_t block = entry_slot(s, window, a->window_slots) / ATTN_BLOCK;
                while (block_end < n &&
                       entry_slot(block_end, window, a->window_slots) / ATTN_BLOCK == block) {
                    run = p[block_end] > run ? p[block_end] : run;
                    block_end++;
                }
                block_rescale = v4_exp_vector(run - m);
            }
            less_m[i] = p[s] - m;
            less_run[i] = p[s] - run;
            rescale[i] = block_rescale;
        }
        v4_exp_vector_n(less_m, less_m, len);
        v4_exp_vector_n(less_run, less_run, len);
        v4_bf16_round(less_run, (size_t)len);
        for (int64_t i = 0; i < len; i++) {
            den += less_m[i];
            p[c0 + i] = less_run[i] * rescale[i];
        }
    }
    return den;
}

/* Token t's head h's scores p[0..n) turned into the fast path's softmax
 * numerators (scaled, less their maximum, exponentiated; in official
 * numerics official_weights'); returns the denominator, the sink
 * included. */
static float fast_softmax(const attn_ctx *a, int t, int h, float *p, int64_t n)
{
    float scale = (float)(1.0 / sqrt((double)a->hd)), m = -INFINITY;
    for (int64_t s = 0; s < n; s++) {
        p[s] *= scale;
        m = p[s] > m ? p[s] : m;
    }
    float sink = v4_exp_vector(a->bw->attn_sink[h] - m);
    if (v4_official(a->m)) return official_weights(a, t, p, n, m) + sink;
    for (int64_t s = 0; s < n; s++) p[s] -= m;
    v4_exp_vector_n(p, p, n);
    return v4_sum(p, n) + sink;
}

/* The fast kernels' attention for heads h0..h1 of token t over its n rows
 * where they are stored (decoded in registers, never copied): every score
 * at once (register tiles), one softmax per head over all of them with the
 * sink in the denominator (kept in fold[h].den), then P.V in one pass that
 * decodes each row once for several heads.  The order of every sum is
 * fixed by the rows alone, so chunking, threads and batching leave the
 * bits unchanged; the reference's blockwise online softmax is the exact
 * kernels' (below). */
static void attend_heads_fast(const attn_ctx *a, int t, int h0, int h1, const uint8_t **rows,
                              int64_t n, float *z, int64_t zstride, head_fold *fold)
{
    const v4_fast_kernels *k = v4_fast_kernels_active();
    int hd = a->hd, nh = h1 - h0;
    const float *q = a->q + ((size_t)t * a->H + h0) * hd;
    float *o = a->o + ((size_t)t * a->H + h0) * hd;
    v4_fast_scores(k, &a->kvf, rows, n, q, nh, z, zstride);
    for (int h = 0; h < nh; h++)
        fold[h].den = fast_softmax(a, t, h0 + h, z + (size_t)h * zstride, n);
    v4_fast_values(k, &a->kvf, rows, n, z, zstride, nh, 0, hd, o, hd);
    for (int h = 0; h < nh; h++)
        for (int i = 0; i < hd; i++) o[(size_t)h * hd + i] /= fold[h].den;
}

/* One token on all threads (a decode step): its scores split between them
 * by rows, the softmax by heads, P.V by columns, so that each row is
 * decoded once per pass however many heads there are.  Every sum is the
 * one attend_heads_fast makes. */
typedef struct split_job {
    const attn_ctx *a;
    const uint8_t **rows;
    int64_t n, zstride;
    float *z, *den;
} split_job;

#define SPLIT_COLUMNS 32 /* P.V's columns per task (kv_weighted_sum's step) */

static void split_scores(void *ctx, int64_t s0, int64_t s1)
{
    const split_job *j = ctx;
    v4_fast_scores(v4_fast_kernels_active(), &j->a->kvf, j->rows + s0, s1 - s0, j->a->q, j->a->H,
                   j->z + s0, j->zstride);
}

static void split_softmax(void *ctx, int64_t h0, int64_t h1)
{
    const split_job *j = ctx;
    for (int64_t h = h0; h < h1; h++)
        j->den[h] = fast_softmax(j->a, 0, (int)h, j->z + (size_t)h * j->zstride, j->n);
}

static void split_values(void *ctx, int64_t c0, int64_t c1)
{
    const split_job *j = ctx;
    const attn_ctx *a = j->a;
    int64_t k0 = c0 * SPLIT_COLUMNS, k1 = c1 * SPLIT_COLUMNS < a->hd ? c1 * SPLIT_COLUMNS : a->hd;
    v4_fast_values(v4_fast_kernels_active(), &a->kvf, j->rows, j->n, j->z, j->zstride, a->H, k0, k1,
                   a->o, a->hd);
    for (int h = 0; h < a->H; h++)
        for (int64_t i = k0; i < k1; i++) a->o[(size_t)h * a->hd + i] /= j->den[h];
}

static int attend_split(attn_ctx *a, const uint8_t **rows, int64_t n)
{
    split_job j = {a, rows, n, (n + 7) / 8 * 8, NULL, NULL};
    j.z = malloc((size_t)a->H * j.zstride * sizeof(float));
    j.den = malloc((size_t)a->H * sizeof(float));
    if (j.z && j.den) {
        v4_pool *pool = a->m->pool;
        v4_parallel_for(pool, n, 64, split_scores, &j);
        v4_parallel_for(pool, a->H, 1, split_softmax, &j);
        v4_parallel_for(pool, (a->hd + SPLIT_COLUMNS - 1) / SPLIT_COLUMNS, 1, split_values, &j);
    }
    free(j.z);
    free(j.den);
    return j.z && j.den ? 0 : -1;
}

/* A token's rows, as the kernels in use read them: decoded (`rows`, the
 * first own_entries of them packed in `tiles`) or stored (`stored`). */
typedef struct token_rows {
    const float **rows;
    const float *tiles;
    const uint8_t **stored;
    int64_t n;
} token_rows;

/* Heads h0..h1 of token t over its rows.  The exact kernels: scores
 * against the packed rows (the first own_entries in `tiles`, the rest in
 * a->comp_tiles), then the online softmax over blocks of ATTN_BLOCK slots
 * of the reference's index list (entry_slot), with the sink in the
 * denominator only.  `z` holds (h1 - h0) rows of `zstride` >= n scores,
 * `fold` (h1 - h0) heads' state with their p and pv scratch. */
static void attend_heads(const attn_ctx *a, int t, int h0, int h1, const token_rows *tr, float *z,
                         int64_t zstride, head_fold *fold)
{
    if (a->fast) {
        attend_heads_fast(a, t, h0, h1, tr->stored, tr->n, z, zstride, fold);
        return;
    }
    int64_t n = tr->n, own = own_entries(a, t, n);
    int hd = a->hd, nh = h1 - h0;
    float scale = (float)(1.0 / sqrt((double)hd));
    int64_t pos = a->p0 + t, window = pos + 1 < a->m->cfg.window ? pos + 1 : a->m->cfg.window;
    int64_t slots = a->window_slots + list_comp_slots(a, pos);
    const float *q = a->q + ((size_t)t * a->H + h0) * hd;
    v4_tiles_dot_many(tr->tiles, own, hd, q, nh, hd, z, zstride);
    if (own < n) v4_tiles_dot_many(a->comp_tiles, n - own, hd, q, nh, hd, z + own, zstride);
    for (int h = 0; h < nh; h++) {
        head_fold *g = &fold[h];
        g->z = z + (size_t)h * zstride;
        g->o = a->o + ((size_t)t * a->H + h0 + h) * hd;
        g->mx = -INFINITY;
        g->den = 0;
        memset(g->o, 0, (size_t)hd * sizeof(float));
    }
    for (int64_t s0 = 0; s0 < n;) {
        int64_t base = entry_slot(s0, window, a->window_slots) / ATTN_BLOCK * ATTN_BLOCK;
        int64_t s1 = s0 + 1;
        while (s1 < n && entry_slot(s1, window, a->window_slots) < base + ATTN_BLOCK) s1++;
        int64_t width = slots - base < ATTN_BLOCK ? slots - base : ATTN_BLOCK;
        int64_t used = entry_slot(s1 - 1, window, a->window_slots) - base + 1;
        if (width < used) width = used; /* never drop an entry from the sum */
        attend_block(a, fold, nh, tr->rows, s0, s1, window, a->window_slots, base, width, scale);
        s0 = s1;
    }
    for (int h = 0; h < nh; h++) {
        head_fold *g = &fold[h];
        float den = g->den + v4_exp_vector(a->bw->attn_sink[h0 + h] - g->mx);
        for (int k = 0; k < hd; k++) g->o[k] /= den;
    }
}

/* Scratch for attending with `nh` heads: sized for the most rows a token
 * of this chunk can see. */
typedef struct attend_scratch {
    const float **rows;
    const uint8_t **stored;
    float *tiles, *z, *blocks;
    head_fold *fold;
    int64_t zstride;
} attend_scratch;

static int64_t max_entries(const attn_ctx *a)
{
    int64_t last = a->p0 + a->n - 1;
    int64_t n = a->m->cfg.window;
    if (a->bw->kind == V4_LAYER_HCA) n += (last + 1) / a->bw->ratio;
    if (a->bw->kind == V4_LAYER_CSA) n += a->k;
    return n;
}

/* The entries' part (row pointers, and tiles for the exact kernels) when
 * `entries`, and nh heads' part. */
static int scratch_new(const attn_ctx *a, int entries, int nh, attend_scratch *sc)
{
    int64_t n = max_entries(a), padded = (n + 7) / 8 * 8;
    sc->zstride = padded;
    if (entries && a->fast && !(sc->stored = malloc((size_t)n * sizeof *sc->stored))) return -1;
    if (entries && a->decoded && !(sc->rows = malloc((size_t)n * sizeof *sc->rows))) return -1;
    if (entries && !a->fast && !(sc->tiles = malloc((size_t)padded * a->hd * sizeof(float))))
        return -1;
    if (nh == 0) return 0;
    sc->z = malloc((size_t)nh * padded * sizeof(float));
    sc->blocks = malloc((size_t)nh * (ATTN_BLOCK + a->hd) * sizeof(float));
    sc->fold = malloc((size_t)nh * sizeof *sc->fold);
    if (!sc->z || !sc->blocks || !sc->fold) return -1;
    for (int h = 0; h < nh; h++) {
        sc->fold[h].p = sc->blocks + (size_t)h * (ATTN_BLOCK + a->hd);
        sc->fold[h].pv = sc->fold[h].p + ATTN_BLOCK;
    }
    return 0;
}

static void scratch_free(attend_scratch *sc)
{
    free(sc->rows);
    free(sc->stored);
    free(sc->tiles);
    free(sc->z);
    free(sc->blocks);
    free(sc->fold);
}

/* Token t's rows into the scratch, as the kernels in use read them (the
 * fast kernels read decoded rows as stored rows of plain floats). */
static token_rows gather(const attn_ctx *a, int t, const attend_scratch *sc)
{
    token_rows tr = {sc->rows, sc->tiles, sc->stored, 0};
    if (!a->decoded) {
        tr.n = gather_stored(a, t, sc->stored);
        return tr;
    }
    tr.n = gather_entries(a, t, sc->rows);
    if (a->fast)
        for (int64_t i = 0; i < tr.n; i++) sc->stored[i] = (const uint8_t *)sc->rows[i];
    else
        v4_tiles_pack(sc->rows, own_entries(a, t, tr.n), a->hd, sc->tiles);
    return tr;
}

/* Prefill: tokens in parallel, each gathering its rows once for all heads. */
static void attend_tokens(void *ctx, int64_t t0, int64_t t1)
{
    attn_ctx *a = ctx;
    attend_scratch sc = {0};
    if (scratch_new(a, 1, a->H, &sc) != 0) {
        atomic_store(&a->failed, 1);
        scratch_free(&sc);
        return;
    }
    for (int64_t t = t0; t < t1; t++) {
        token_rows tr = gather(a, (int)t, &sc);
        attend_heads(a, (int)t, 0, a->H, &tr, sc.z, sc.zstride, sc.fold);
    }
    scratch_free(&sc);
}

/* Decode: one token's rows gathered once, heads in parallel. */
typedef struct heads_job {
    attn_ctx *a;
    token_rows tr;
} heads_job;

static void attend_head_range(void *ctx, int64_t h0, int64_t h1)
{
    heads_job *j = ctx;
    attend_scratch sc = {0};
    if (scratch_new(j->a, 0, (int)(h1 - h0), &sc) != 0)
        atomic_store(&j->a->failed, 1);
    else
        attend_heads(j->a, 0, (int)h0, (int)h1, &j->tr, sc.z, sc.zstride, sc.fold);
    scratch_free(&sc);
}

int v4_attn_attend(attn_ctx *a, tome_error *err)
{
    if (a->n > 1)
        v4_parallel_for(a->m->pool, a->n, 1, attend_tokens, a);
    else {
        attend_scratch sc = {0};
        if (scratch_new(a, 1, 0, &sc) == 0) {
            heads_job j = {a, gather(a, 0, &sc)};
            if (a->fast && !a->decoded) {
                if (attend_split(a, j.tr.stored, j.tr.n) != 0) atomic_store(&a->failed, 1);
            } else {
                v4_parallel_for(a->m->pool, a->H, 1, attend_head_range, &j);
            }
        } else {
            atomic_store(&a->failed, 1);
        }
        scratch_free(&sc);
    }
    if (atomic_load(&a->failed))
        return tome_errorf(err, TOME_ENOMEM, "out of memory in sparse attention");
    return 0;
}
