/*
 * state.c - the decode state: its storage, its row formats, its forks.
 *
 * A v4_state holds, per block, exactly what V4's decode path reads: the
 * window ring of raw KV entries, the compressed KV entries and indexer keys
 * (append-only), and the compressors' partial block state.  Nothing is
 * O(context) except the two append-only arrays, which grow in chunks.
 *
 * The append-only arrays are what make forks cheap: a fork shares every
 * chunk of its parent (a reference count each) and copies only the small
 * mutable parts - the window ring and the compressor states.  When either
 * side appends into a chunk that is shared, that one chunk is copied first.
 */
#include "engine/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- rows ----------------------------------------------------------------------- */

void v4_rows_init(v4_rows *r, size_t row_bytes)
{
    memset(r, 0, sizeof *r);
    r->row_bytes = row_bytes;
}

static void chunk_release(v4_chunk *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1) return;
    if (c->release)
        c->release(c->owner);
    else
        free(c->data);
    free(c);
}

void v4_rows_free(v4_rows *r)
{
    for (int64_t i = 0; i < r->n_chunks; i++) chunk_release(r->chunks[i]);
    free(r->chunks);
    memset(r, 0, sizeof *r);
}

static v4_chunk *chunk_new(size_t bytes)
{
    v4_chunk *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->data = malloc(bytes);
    if (!c->data) {
        free(c);
        return NULL;
    }
    atomic_init(&c->refs, 1);
    return c;
}

static int reserve_chunks(v4_rows *r, int64_t n)
{
    if (n <= r->cap_chunks) return 0;
    int64_t cap = r->cap_chunks ? r->cap_chunks * 2 : 16;
    while (cap < n) cap *= 2;
    v4_chunk **grown = realloc(r->chunks, (size_t)cap * sizeof *grown);
    if (!grown) return -1;
    r->chunks = grown;
    r->cap_chunks = cap;
    return 0;
}

uint8_t *v4_rows_append(v4_rows *r)
{
    int64_t ci = r->n / V4_ROWS_PER_CHUNK, off = r->n % V4_ROWS_PER_CHUNK;
    size_t chunk_bytes = r->row_bytes * V4_ROWS_PER_CHUNK;
    if (ci == r->n_chunks) {
        if (reserve_chunks(r, ci + 1) != 0) return NULL;
        v4_chunk *c = chunk_new(chunk_bytes);
        if (!c) return NULL;
        r->chunks[r->n_chunks++] = c;
    } else if (atomic_load(&r->chunks[ci]->refs) > 1 || r->chunks[ci]->release) {
        /* Shared with a fork, or borrowed from a file: copy before writing. */
        v4_chunk *c = chunk_new(chunk_bytes);
        if (!c) return NULL;
        memcpy(c->data, r->chunks[ci]->data, (size_t)off * r->row_bytes);
        chunk_release(r->chunks[ci]);
        r->chunks[ci] = c;
    }
    uint8_t *slot = r->chunks[ci]->data + (size_t)off * r->row_bytes;
    r->n++;
    return slot;
}

int v4_rows_share(v4_rows *dst, const v4_rows *src)
{
    if (reserve_chunks(dst, src->n_chunks) != 0) return -1;
    for (int64_t i = 0; i < src->n_chunks; i++) {
        atomic_fetch_add(&src->chunks[i]->refs, 1);
        dst->chunks[i] = src->chunks[i];
    }
    dst->n_chunks = src->n_chunks;
    dst->n = src->n;
    dst->row_bytes = src->row_bytes;
    return 0;
}

/* ---- row formats ------------------------------------------------------------------ */

static void put_bf16(uint8_t *p, float f)
{
    uint16_t b = v4_f32_to_bf16(f);
    p[0] = (uint8_t)b;
    p[1] = (uint8_t)(b >> 8);
}

void v4_kv_store(const v4_model *m, float *kv, uint8_t *row)
{
    const v4_config *c = &m->cfg;
    int nope = c->head_dim - c->rope_dim;
    if (m->opts.numerics == V4_NUMERICS_FP32) {
        memcpy(row, kv, (size_t)c->head_dim * 4);
        return;
    }
    /* The caller has done the FP8 round trip; re-deriving codes from the
     * rounded values gives codes whose decoded values are identical. */
    v4_fp8_roundtrip(kv, nope, V4_KV_FP8_BLOCK, row, row + nope);
    uint8_t *rope = row + nope + nope / V4_KV_FP8_BLOCK;
    for (int i = 0; i < c->rope_dim; i++) {
        float *v = &kv[nope + i];
        if (m->rope_bf16) {
            put_bf16(rope + 2 * i, *v);
            *v = v4_bf16_to_f32(v4_f32_to_bf16(*v));
        } else {
            memcpy(rope + 4 * i, v, 4);
        }
    }
}

void v4_kv_load(const v4_model *m, const uint8_t *row, float *kv)
{
    const v4_config *c = &m->cfg;
    int nope = c->head_dim - c->rope_dim;
    if (m->opts.numerics == V4_NUMERICS_FP32) {
        memcpy(kv, row, (size_t)c->head_dim * 4);
        return;
    }
    const uint8_t *scales = row + nope;
    for (int b = 0; b < nope / V4_KV_FP8_BLOCK; b++) {
        float s = v4_e8m0_to_f32(scales[b]);
        for (int i = b * V4_KV_FP8_BLOCK; i < (b + 1) * V4_KV_FP8_BLOCK; i++)
            kv[i] = v4_e4m3_table[row[i]] * s;
    }
    const uint8_t *rope = row + nope + nope / V4_KV_FP8_BLOCK;
    for (int i = 0; i < c->rope_dim; i++) {
        if (m->rope_bf16)
            kv[nope + i] = v4_bf16_to_f32((uint16_t)(rope[2 * i] | rope[2 * i + 1] << 8));
        else
            memcpy(&kv[nope + i], rope + 4 * i, 4);
    }
}

void v4_index_store(const v4_model *m, float *key, uint8_t *row)
{
    int hd = m->cfg.index_head_dim;
    if (m->opts.numerics == V4_NUMERICS_FP32) {
        memcpy(row, key, (size_t)hd * 4);
        return;
    }
    v4_fp4_roundtrip(key, hd, row, row + hd / 2);
}

void v4_index_load(const v4_model *m, const uint8_t *row, float *key)
{
    int hd = m->cfg.index_head_dim;
    if (m->opts.numerics == V4_NUMERICS_FP32) {
        memcpy(key, row, (size_t)hd * 4);
        return;
    }
    const uint8_t *scales = row + hd / 2;
    for (int i = 0; i < hd; i += 2) {
        float s = v4_e8m0_to_f32(scales[i / V4_FP4_BLOCK]);
        key[i] = v4_e2m1_values[row[i / 2] & 15] * s;
        key[i + 1] = v4_e2m1_values[row[i / 2] >> 4] * s;
    }
}

/* ---- state ---------------------------------------------------------------------------- */

static int n_blocks(const v4_model *m)
{
    return m->cfg.n_layers + m->cfg.n_mtp_layers;
}

static void block_state_free(v4_block_state *bs)
{
    free(bs->window);
    v4_rows_free(&bs->kv);
    v4_rows_free(&bs->index_kv);
    v4_index_keys_free(&bs->index_codes);
    free(bs->comp_kv);
    free(bs->comp_score);
    free(bs->icomp_kv);
    free(bs->icomp_score);
}

static int compressor_state_new(const v4_compressor_weights *c, float **kv, float **score)
{
    size_t n = (size_t)v4_compressor_rows(c) * (size_t)c->width;
    *kv = calloc(n, sizeof **kv);
    *score = malloc(n * sizeof **score);
    if (!*kv || !*score) return -1;
    for (size_t i = 0; i < n; i++) (*score)[i] = -INFINITY;
    return 0;
}

static int block_state_init(const v4_model *m, int l, v4_block_state *bs)
{
    const v4_block_weights *bw = &m->blocks[l];
    memset(bs, 0, sizeof *bs);
    v4_rows_init(&bs->kv, m->kv_row_bytes);
    v4_rows_init(&bs->index_kv, m->index_row_bytes);
    bs->window = calloc((size_t)m->cfg.window, m->kv_row_bytes);
    if (!bs->window) return -1;
    if (bw->kind != V4_LAYER_SWA &&
        compressor_state_new(&bw->compressor, &bs->comp_kv, &bs->comp_score))
        return -1;
    if (bw->kind == V4_LAYER_CSA &&
        compressor_state_new(&bw->index_compressor, &bs->icomp_kv, &bs->icomp_score))
        return -1;
    return 0;
}

int v4_state_new(const v4_model *m, v4_state **out, tome_error *err)
{
    *out = NULL;
    v4_state *s = calloc(1, sizeof *s);
    if (s) s->blocks = calloc((size_t)n_blocks(m), sizeof *s->blocks);
    if (!s || !s->blocks) {
        free(s);
        return tome_errorf(err, TOME_ENOMEM, "out of memory for a decode state");
    }
    s->m = m;
    for (int l = 0; l < n_blocks(m); l++)
        if (block_state_init(m, l, &s->blocks[l]) != 0) {
            v4_state_free(s);
            return tome_errorf(err, TOME_ENOMEM, "out of memory for a decode state");
        }
    *out = s;
    return 0;
}

void v4_state_free(v4_state *s)
{
    if (!s) return;
    if (s->blocks)
        for (int l = 0; l < n_blocks(s->m); l++) block_state_free(&s->blocks[l]);
    free(s->blocks);
    free(s);
}

int64_t v4_state_pos(const v4_state *s)
{
    return s->blocks[0].pos;
}

static void copy_compressor(const v4_compressor_weights *c, const float *kv, const float *sc,
                            float *dkv, float *dsc)
{
    size_t n = (size_t)v4_compressor_rows(c) * (size_t)c->width * sizeof(float);
    memcpy(dkv, kv, n);
    memcpy(dsc, sc, n);
}

int v4_state_fork(const v4_state *parent, v4_state **out, tome_error *err)
{
    const v4_model *m = parent->m;
    v4_state *s;
    int rc = v4_state_new(m, &s, err);
    if (rc) return rc;
    for (int l = 0; l < n_blocks(m); l++) {
        const v4_block_weights *bw = &m->blocks[l];
        const v4_block_state *src = &parent->blocks[l];
        v4_block_state *dst = &s->blocks[l];
        dst->pos = src->pos;
        memcpy(dst->window, src->window, (size_t)m->cfg.window * m->kv_row_bytes);
        if (v4_rows_share(&dst->kv, &src->kv) != 0 ||
            v4_rows_share(&dst->index_kv, &src->index_kv) != 0) {
            v4_state_free(s);
            return tome_errorf(err, TOME_ENOMEM, "out of memory forking a state");
        }
        if (bw->kind != V4_LAYER_SWA)
            copy_compressor(&bw->compressor, src->comp_kv, src->comp_score, dst->comp_kv,
                            dst->comp_score);
        if (bw->kind == V4_LAYER_CSA)
            copy_compressor(&bw->index_compressor, src->icomp_kv, src->icomp_score, dst->icomp_kv,
                            dst->icomp_score);
    }
    *out = s;
    return 0;
}

size_t v4_state_kv_bytes(const v4_state *s)
{
    size_t total = 0;
    for (int l = 0; l < n_blocks(s->m); l++)
        total += (size_t)s->blocks[l].kv.n * s->blocks[l].kv.row_bytes +
                 (size_t)s->blocks[l].index_kv.n * s->blocks[l].index_kv.row_bytes;
    return total;
}
