/*
 * attention.h - what the attention files share (private to engine/):
 * attention.c (queries, raw KV, the window, the output projection, and
 * the driver v4_attention), attend.c (sparse attention with the sink),
 * compressor.c (the compressors that turn every `ratio` tokens into an
 * entry) and lightning.c (the lightning indexer that picks each CSA
 * token's top-k compressed entries).
 */
#ifndef TOME_ENGINE_ATTENTION_H
#define TOME_ENGINE_ATTENTION_H

#include "engine/kernels/fast.h"
#include "engine/kernels/indexer.h"
#include "engine/model.h"

#include <stdatomic.h>

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
    float *prev;       /* [window][hd] ring entries before the chunk, by slot (exact) */
    float *comp;       /* [n_comp][hd] decoded compressed entries (ratio 128, exact) */
    float *comp_tiles; /* the same packed once for all tokens (v4_tiles_pack) */
    int64_t n_comp;
    int32_t *topk; /* [n][k] indexer selections (ratio 4) */
    int *n_topk;   /* [n] */
    int k;
    /* The fast kernels: scores by register tiles over the entries where
     * they are stored (the ring, the chunk's new rows, the compressed
     * rows), decoded in registers; nothing is decoded or packed ahead. */
    int fast;
    /* Rows decoded ahead into the float arrays below: always for the exact
     * kernels, and for the fast ones at ratio 128 with many tokens, whose
     * compressed rows serve every token of the chunk (decoding them once
     * costs less than once per token). */
    int decoded;
    v4_kv_format kvf;        /* how the rows the fast kernels read are stored */
    const uint8_t *new_rows; /* [n] the chunk's raw entries, stored */
    float *topk_rows;        /* [n][k][hd] decoded selected entries (exact kernels) */
    float *o;                /* [n][H][hd] */
    atomic_int failed;       /* a worker could not get scratch memory */
} attn_ctx;

/* n floats from the model's work buffers (v4_buffers_get), setting
 * *failed when out of memory; v4_attn_put gives them back. */
float *v4_attn_floats(const attn_ctx *a, size_t n, int *failed);
void v4_attn_put(const attn_ctx *a, void *p);

/* fn(a, arg, i) for every i in [0, n), on the model's threads: for the
 * steps of one token or one entry that read nothing another's writes. */
typedef void (*attn_item_fn)(attn_ctx *a, void *arg, int64_t i);
void v4_attn_for_each(attn_ctx *a, int64_t n, attn_item_fn fn, void *arg);

/* Run a compressor over the chunk's tokens and append what it emits to
 * `out`; its state rows are st_kv/st_sc (compressor.c). */
int v4_attn_compress(attn_ctx *a, const v4_compressor_weights *cw, float *st_kv, float *st_sc,
                     v4_rows *out, const float *x, tome_error *err);

/* The lightning indexer: its compressor consumes the chunk, then each token
 * scores every visible indexer key and keeps the top-k in a->topk
 * (lightning.c).  `qr` is the chunk's query latent. */
int v4_attn_index(attn_ctx *a, const float *x, const float *qr, tome_error *err);

/* Sparse attention for every token of the chunk: a->o gets each head's
 * softmax-weighted sum of the token's window and compressed entries, the
 * sink in the denominator (attend.c).  Needs the queries, the chunk's
 * stored rows (a->new_rows), the indexer's picks at ratio 4 and, when
 * a->decoded, the entries decoded ahead. */
int v4_attn_attend(attn_ctx *a, tome_error *err);

#endif
