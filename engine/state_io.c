/*
 * state_io.c - a decode state as a list of sections, and back.
 *
 * Saving and restoring a state (the KV cache of a corpus) must give back the
 * SAME state: decoding after a restore has to produce bit-identical logits
 * to decoding in the process that did the prefill.  So nothing is
 * recomputed or converted here; every byte the decode path reads is handed
 * out as it is stored and put back as it was: per block, the position, the
 * window ring, the compressed KV rows, the indexer keys and the two
 * compressors' partial state (F32, including the -inf scores of empty
 * slots).
 *
 * One function decides which sections a block has and how big their rows
 * are (expected_section); listing, streaming and loading all go through it,
 * so they cannot disagree.  A loaded state is checked as a whole before it
 * is handed out: every section present once, row sizes as this model stores
 * them, row counts that follow from the positions.  The file format, its
 * checksums and the decision to trust a file belong to the store
 * (kvstate/read.c); this file only refuses what would make a state that the
 * forward pass could misread.
 *
 * The compressed rows are the only O(context) part, so they are streamed
 * chunk by chunk when saving and may be borrowed rather than copied when
 * loading: each restored chunk then points into the caller's data (a
 * read-only mapping of the file), and the copy-on-write of v4_rows_append
 * makes later appends safe.
 */
#include "engine/model.h"

#include <stdlib.h>
#include <string.h>

#define N_KINDS 8

static int n_blocks(const v4_model *m)
{
    return m->cfg.n_layers + m->cfg.n_mtp_layers;
}

const char *v4_section_kind_name(v4_section_kind kind)
{
    static const char *const names[N_KINDS + 1] = {
        "none", "pos", "window", "kv", "index", "comp_kv", "comp_score", "icomp_kv", "icomp_score"};
    return kind >= 1 && kind <= N_KINDS ? names[kind] : "unknown";
}

size_t v4_section_bytes(const v4_section *sec)
{
    return sec->row_bytes * (size_t)sec->n_rows;
}

v4_numerics v4_model_numerics(const v4_model *m)
{
    return m->opts.numerics;
}

const v4_model *v4_state_model(const v4_state *s)
{
    return s->m;
}

/* The shape of section `kind` of `block` in model `m`: 1 and *sec filled when
 * the block has it, 0 when not.  n_rows is -1 for the append-only row arrays,
 * whose length depends on the position. */
static int expected_section(const v4_model *m, int block, v4_section_kind kind, v4_section *sec)
{
    const v4_block_weights *bw = &m->blocks[block];
    const v4_compressor_weights *cw = kind == V4_SECTION_ICOMP_KV || kind == V4_SECTION_ICOMP_SCORE
                                          ? &bw->index_compressor
                                          : &bw->compressor;
    sec->kind = kind;
    sec->block = block;
    sec->dtype = V4_I8;
    switch (kind) {
    case V4_SECTION_POS:
        sec->dtype = V4_I64;
        sec->row_bytes = sizeof(int64_t);
        sec->n_rows = 1;
        return 1;
    case V4_SECTION_WINDOW:
        sec->row_bytes = m->kv_row_bytes;
        sec->n_rows = m->cfg.window;
        return 1;
    case V4_SECTION_KV:
        sec->row_bytes = m->kv_row_bytes;
        sec->n_rows = -1;
        return bw->kind != V4_LAYER_SWA;
    case V4_SECTION_INDEX:
        sec->row_bytes = m->index_row_bytes;
        sec->n_rows = -1;
        return bw->kind == V4_LAYER_CSA;
    case V4_SECTION_COMP_KV:
    case V4_SECTION_COMP_SCORE:
    case V4_SECTION_ICOMP_KV:
    case V4_SECTION_ICOMP_SCORE:
        sec->dtype = V4_F32;
        sec->row_bytes = (size_t)cw->width * sizeof(float);
        sec->n_rows = v4_compressor_rows(cw);
        return kind <= V4_SECTION_COMP_SCORE ? bw->kind != V4_LAYER_SWA : bw->kind == V4_LAYER_CSA;
    }
    return 0;
}

/* Where a fixed-size section lives in the block state (NULL for row arrays). */
static void *fixed_data(v4_block_state *bs, v4_section_kind kind)
{
    switch (kind) {
    case V4_SECTION_POS:
        return &bs->pos;
    case V4_SECTION_WINDOW:
        return bs->window;
    case V4_SECTION_COMP_KV:
        return bs->comp_kv;
    case V4_SECTION_COMP_SCORE:
        return bs->comp_score;
    case V4_SECTION_ICOMP_KV:
        return bs->icomp_kv;
    case V4_SECTION_ICOMP_SCORE:
        return bs->icomp_score;
    default:
        return NULL;
    }
}

static v4_rows *row_array(v4_block_state *bs, v4_section_kind kind)
{
    return kind == V4_SECTION_KV ? &bs->kv : kind == V4_SECTION_INDEX ? &bs->index_kv : NULL;
}

/* The section as it is in state `s` right now (row arrays with their counts). */
static int current_section(const v4_state *s, int block, v4_section_kind kind, v4_section *sec)
{
    if (!expected_section(s->m, block, kind, sec)) return 0;
    const v4_rows *rows = row_array(&s->blocks[block], kind);
    if (rows) sec->n_rows = rows->n;
    return 1;
}

/* ---- saving ------------------------------------------------------------------------ */

int v4_state_sections(const v4_state *s, v4_section **out, size_t *n, tome_error *err)
{
    *out = NULL;
    *n = 0;
    if (s->broken)
        return tome_errorf(err, TOME_EINVAL,
                           "this state was left inconsistent by a failed "
                           "evaluation; it cannot be saved");
    size_t max = (size_t)n_blocks(s->m) * N_KINDS, count = 0;
    v4_section *list = malloc(max * sizeof *list);
    if (!list) return tome_errorf(err, TOME_ENOMEM, "out of memory listing state sections");
    for (int l = 0; l < n_blocks(s->m); l++)
        for (int k = 1; k <= N_KINDS; k++)
            if (current_section(s, l, (v4_section_kind)k, &list[count])) count++;
    *out = list;
    *n = count;
    return 0;
}

int v4_state_section_write(const v4_state *s, const v4_section *sec, v4_section_write_fn write,
                           void *ctx, tome_error *err)
{
    v4_section cur;
    if (sec->block < 0 || sec->block >= n_blocks(s->m) ||
        !current_section(s, sec->block, sec->kind, &cur) || cur.row_bytes != sec->row_bytes ||
        sec->n_rows < 0 || sec->n_rows > cur.n_rows ||
        (sec->n_rows != cur.n_rows && !row_array(&s->blocks[sec->block], sec->kind)))
        return tome_errorf(err, TOME_EINVAL, "section %s of block %d does not describe this state",
                           v4_section_kind_name(sec->kind), sec->block);
    v4_block_state *bs = &s->blocks[sec->block];
    const v4_rows *rows = row_array(bs, sec->kind);
    if (!rows) return write(ctx, fixed_data(bs, sec->kind), v4_section_bytes(sec), err);
    for (int64_t first = 0; first < sec->n_rows; first += V4_ROWS_PER_CHUNK) {
        int64_t left = sec->n_rows - first, k = left < V4_ROWS_PER_CHUNK ? left : V4_ROWS_PER_CHUNK;
        int rc = write(ctx, v4_rows_at(rows, first), (size_t)k * rows->row_bytes, err);
        if (rc) return rc;
    }
    return 0;
}

/* ---- loading ------------------------------------------------------------------------- */

static int rows_copy(v4_rows *r, const uint8_t *data, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint8_t *slot = v4_rows_append(r);
        if (!slot) return -1;
        memcpy(slot, data + (size_t)i * r->row_bytes, r->row_bytes);
    }
    return 0;
}

/* Make r's chunks point into `data`.  On failure r holds the chunks made so
 * far, consistently, so that v4_rows_free releases exactly those. */
static int rows_borrow(v4_rows *r, const uint8_t *data, int64_t n, const v4_borrow *b)
{
    int64_t n_chunks = (n + V4_ROWS_PER_CHUNK - 1) / V4_ROWS_PER_CHUNK;
    size_t chunk_bytes = r->row_bytes * V4_ROWS_PER_CHUNK;
    if (n_chunks == 0) return 0;
    r->chunks = calloc((size_t)n_chunks, sizeof *r->chunks);
    if (!r->chunks) return -1;
    r->cap_chunks = n_chunks;
    for (int64_t i = 0; i < n_chunks; i++) {
        v4_chunk *c = calloc(1, sizeof *c);
        if (!c) return -1;
        atomic_init(&c->refs, 1);
        /* Never written through: v4_rows_append copies a chunk that has a
         * release function before it writes. */
        c->data = (uint8_t *)(uintptr_t)(data + (size_t)i * chunk_bytes);
        c->release = b->release;
        c->owner = b->owner;
        b->retain(b->owner);
        r->chunks[i] = c;
        r->n_chunks = i + 1;
        r->n = (i + 1) * V4_ROWS_PER_CHUNK < n ? (i + 1) * V4_ROWS_PER_CHUNK : n;
    }
    return 0;
}

/* Check one incoming section against the model and put it into `s`. */
static int load_section(v4_state *s, const v4_section_data *d, const v4_borrow *borrow,
                        uint8_t *seen, tome_error *err)
{
    const v4_section *sec = &d->sec;
    const char *name = v4_section_kind_name(sec->kind);
    v4_section want;
    if (sec->block < 0 || sec->block >= n_blocks(s->m) ||
        !expected_section(s->m, sec->block, sec->kind, &want))
        return tome_errorf(err, TOME_EFORMAT,
                           "section %s of block %d: this model has no such section", name,
                           sec->block);
    uint8_t *mark = &seen[(size_t)sec->block * N_KINDS + (size_t)(sec->kind - 1)];
    if (*mark)
        return tome_errorf(err, TOME_EFORMAT, "section %s of block %d appears twice", name,
                           sec->block);
    *mark = 1;
    if (sec->dtype != want.dtype || sec->row_bytes != want.row_bytes)
        return tome_errorf(err, TOME_EFORMAT,
                           "section %s of block %d: rows of %zu bytes (%s), "
                           "this model stores %zu (%s)",
                           name, sec->block, sec->row_bytes, v4_dtype_name(sec->dtype),
                           want.row_bytes, v4_dtype_name(want.dtype));
    if (sec->n_rows < 0 || (want.n_rows >= 0 && sec->n_rows != want.n_rows))
        return tome_errorf(err, TOME_EFORMAT, "section %s of block %d: %lld rows, expected %lld",
                           name, sec->block, (long long)sec->n_rows, (long long)want.n_rows);
    if (!d->data && sec->n_rows > 0)
        return tome_errorf(err, TOME_EINVAL, "section %s of block %d has no data", name,
                           sec->block);
    v4_block_state *bs = &s->blocks[sec->block];
    v4_rows *rows = row_array(bs, sec->kind);
    if (!rows) {
        memcpy(fixed_data(bs, sec->kind), d->data, v4_section_bytes(sec));
        return 0;
    }
    int rc = borrow ? rows_borrow(rows, d->data, sec->n_rows, borrow)
                    : rows_copy(rows, d->data, sec->n_rows);
    if (rc)
        return tome_errorf(err, TOME_ENOMEM, "out of memory restoring section %s of block %d", name,
                           sec->block);
    return 0;
}

/* After every section is in: all present, and positions and row counts that
 * agree with each other. */
static int check_loaded(const v4_state *s, const uint8_t *seen, tome_error *err)
{
    const v4_model *m = s->m;
    for (int l = 0; l < n_blocks(m); l++) {
        const v4_block_state *bs = &s->blocks[l];
        int ratio = m->blocks[l].ratio;
        v4_section want;
        for (int k = 1; k <= N_KINDS; k++)
            if (expected_section(m, l, (v4_section_kind)k, &want) && !seen[l * N_KINDS + k - 1])
                return tome_errorf(err, TOME_EFORMAT, "section %s of block %d is missing",
                                   v4_section_kind_name((v4_section_kind)k), l);
        if (bs->pos < 0 || bs->pos > m->cfg.max_position)
            return tome_errorf(err, TOME_EFORMAT, "block %d: position %lld is outside 0..%lld", l,
                               (long long)bs->pos, (long long)m->cfg.max_position);
        if (l < m->cfg.n_layers && bs->pos != s->blocks[0].pos)
            return tome_errorf(err, TOME_EFORMAT, "block %d is at position %lld, block 0 at %lld",
                               l, (long long)bs->pos, (long long)s->blocks[0].pos);
        if (ratio && bs->kv.n != bs->pos / ratio)
            return tome_errorf(
                err, TOME_EFORMAT, "section kv of block %d: %lld rows, position %lld implies %lld",
                l, (long long)bs->kv.n, (long long)bs->pos, (long long)(bs->pos / ratio));
        if (ratio == V4_LAYER_CSA && bs->index_kv.n != bs->pos / ratio)
            return tome_errorf(err, TOME_EFORMAT,
                               "section index of block %d: %lld rows, position %lld implies %lld",
                               l, (long long)bs->index_kv.n, (long long)bs->pos,
                               (long long)(bs->pos / 4));
    }
    return 0;
}

int v4_state_load(const v4_model *m, const v4_section_data *secs, size_t n, const v4_borrow *borrow,
                  v4_state **out, tome_error *err)
{
    *out = NULL;
    v4_state *s;
    int rc = v4_state_new(m, &s, err);
    if (rc) return rc;
    uint8_t *seen = calloc((size_t)n_blocks(m) * N_KINDS, 1);
    if (!seen) rc = tome_errorf(err, TOME_ENOMEM, "out of memory restoring a state");
    for (size_t i = 0; rc == 0 && i < n; i++) rc = load_section(s, &secs[i], borrow, seen, err);
    if (rc == 0) rc = check_loaded(s, seen, err);
    free(seen);
    if (rc) {
        v4_state_free(s);
        return rc;
    }
    *out = s;
    return 0;
}
