/*
 * model.h - private to engine/: the bound model and the decode state.
 *
 * v4_model holds the parsed config, the mapped checkpoint and, per block, a
 * struct of v4_weight views named like the reference's modules, so the
 * forward pass reads like the architecture.  v4_state holds what the decode
 * path carries between tokens, per block: the window ring, the compressed KV
 * entries, the indexer keys and the compressors' partial state.
 *
 * KV storage ("rows").  Window and compressed entries are stored exactly as
 * the trained graph leaves them: in qat numerics the non-RoPE dims of a KV
 * vector are FP8 codes with one E8M0 scale per 64 (after the round trip they
 * are exactly that), the RoPE dims are BF16 or F32, and indexer keys are FP4
 * pairs with one scale per 32.  In fp32 numerics (debugging) rows are F32.
 * Compressed entries live in v4_rows: append-only arrays of fixed-size rows
 * in refcounted chunks, so a fork shares every chunk with its parent and
 * copies a chunk only when it appends to one that is shared.
 */
#ifndef TOME_ENGINE_MODEL_H
#define TOME_ENGINE_MODEL_H

#include "engine/checkpoint.h"
#include "engine/internal.h"
#include "engine/kernels/indexer.h"

/* ---- weights ------------------------------------------------------------- */

typedef struct v4_hc_weights {
    v4_weight fn;       /* F32 [mix][hc_mult*dim] */
    const float *base;  /* [mix] */
    const float *scale; /* [3], or [1] for the head */
} v4_hc_weights;

typedef struct v4_compressor_weights {
    int ratio;
    int head_dim; /* 512-class (attention) or index_head_dim (indexer) */
    int width;    /* head_dim, twice that for CSA (overlapping windows) */
    int rotate;   /* indexer: Hadamard + FP4 instead of FP8 */
    v4_weight wkv, wgate, norm;
    const float *ape; /* [ratio][width] */
} v4_compressor_weights;

typedef struct v4_block_weights {
    v4_layer_kind kind;
    int ratio; /* the kind's compression ratio (0 for SWA) */
    int hash;  /* routes by token id */
    int is_mtp;
    v4_hc_weights hc_attn, hc_ffn;
    v4_weight attn_norm, ffn_norm;
    v4_weight wq_a, q_norm, wq_b, wkv, kv_norm, wo_a, wo_b;
    const float *attn_sink;
    v4_compressor_weights compressor;         /* CSA and HCA */
    v4_compressor_weights index_compressor;   /* CSA */
    v4_weight index_wq_b, index_weights_proj; /* CSA */
    v4_weight gate;
    const float *gate_bias; /* score-routed blocks */
    const uint8_t *tid2eid; /* hash blocks: I64 [vocab][k], unaligned */
    v4_weight *experts;     /* [n_experts][3]: w1, w2, w3 */
    v4_weight shared_w1, shared_w2, shared_w3;
    /* MTP blocks only */
    v4_weight e_proj, h_proj, enorm, hnorm, norm;
    v4_hc_weights hc_head;
} v4_block_weights;

/* RoPE angles for one base/scaling choice, computed lazily per position as
 * the reference does (F32 frequency, F32 pos*freq, then cos/sin). */
typedef struct v4_rope {
    int pairs;
    float freq[256];
} v4_rope;

struct v4_model {
    v4_config cfg;
    v4_open_options opts;
    v4_checkpoint *ck;
    v4_pool *pool;       /* its threads and their scratch, made before the weights */
    v4_buffers *buffers; /* its forward passes' large work buffers, kept for reuse */
    v4_weight embed, head, norm;
    v4_hc_weights hc_head;
    v4_block_weights *blocks; /* n_layers main blocks, then the MTP blocks */
    v4_rope rope_plain;       /* rope_theta, no YaRN: ratio-0 blocks */
    v4_rope rope_compress;    /* compress_rope_theta with YaRN: compressed blocks */
    size_t kv_row_bytes;      /* one stored 512-class KV entry */
    size_t index_row_bytes;   /* one stored indexer key */
    int rope_bf16;            /* compact rows keep RoPE dims in BF16 */
    uint8_t fingerprint[32];
    void **owned; /* aligned copies: misaligned F32 tensors, copied matrices, panels */
    size_t n_owned;
    int copying;         /* the fast kernels read copies of the matrices (resident.c) */
    size_t copied_bytes; /* bytes of those copies */
};

static inline const v4_rope *v4_block_rope(const v4_model *m, const v4_block_weights *b)
{
    return b->ratio ? &m->rope_compress : &m->rope_plain;
}

/* Rotate the interleaved pairs of x[0..2*pairs) by the angles of `pos`
 * (inverse: by -pos). */
void v4_rope_apply(const v4_rope *r, float *x, int64_t pos, int inverse);
/* The same for `rows` vectors `stride` floats apart (a token's heads),
 * each angle's cosine and sine computed once. */
void v4_rope_apply_rows(const v4_rope *r, float *x, int64_t stride, int rows, int64_t pos,
                        int inverse);

/* ---- resident matrices (resident.c) ------------------------------------------ */

/* Whether a model opened with `mode` and `kernels` copies its matrices,
 * `bytes` in all, into memory (v4_weights): never with exact kernels or
 * V4_WEIGHTS_MAP, always with COPY, with AUTO where they fit. */
int v4_weights_copying(v4_weights mode, v4_kernels kernels, double bytes);
/* memcpy of `bytes` by the pool's threads, a huge page per task. */
void v4_copy_parallel(v4_pool *pool, uint8_t *to, const uint8_t *from, size_t bytes);

/* ---- state ---------------------------------------------------------------- */

#define V4_ROWS_PER_CHUNK 256

typedef struct v4_chunk {
    atomic_int refs;
    uint8_t *data; /* V4_ROWS_PER_CHUNK rows */
    void (*release)(void *owner);
    void *owner; /* when data is borrowed (e.g. a mapped file), else NULL */
} v4_chunk;

typedef struct v4_rows {
    size_t row_bytes;
    int64_t n; /* rows stored */
    v4_chunk **chunks;
    int64_t n_chunks, cap_chunks;
} v4_rows;

void v4_rows_init(v4_rows *r, size_t row_bytes);
void v4_rows_free(v4_rows *r);
/* A writable slot for row n (appended); NULL when out of memory. */
uint8_t *v4_rows_append(v4_rows *r);
static inline const uint8_t *v4_rows_at(const v4_rows *r, int64_t i)
{
    return r->chunks[i / V4_ROWS_PER_CHUNK]->data + (size_t)(i % V4_ROWS_PER_CHUNK) * r->row_bytes;
}
/* dst shares src's chunks (dst must be initialised and empty). */
int v4_rows_share(v4_rows *dst, const v4_rows *src);

typedef struct v4_block_state {
    uint8_t *window;               /* cfg.window rows of kv_row_bytes, slot = pos % window */
    v4_rows kv;                    /* compressed entries (CSA, HCA) */
    v4_rows index_kv;              /* indexer keys (CSA) */
    v4_index_keys index_codes;     /* the same keys laid out for scoring (a cache,
                                      built as needed, never shared by forks) */
    float *comp_kv, *comp_score;   /* [rows][width] compressor state */
    float *icomp_kv, *icomp_score; /* indexer compressor state */
    int64_t pos;                   /* tokens this block has consumed */
} v4_block_state;

struct v4_state {
    const v4_model *m;
    int broken;             /* an evaluation failed half-way: refuse further use */
    v4_block_state *blocks; /* as model->blocks */
};

/* Compressor state rows: 2*ratio with overlap (CSA), ratio without. */
static inline int v4_compressor_rows(const v4_compressor_weights *c)
{
    return c->ratio == V4_LAYER_CSA ? 2 * c->ratio : c->ratio;
}

/* Store a KV vector as a row, and load a row back to F32.  In qat numerics
 * storing performs the trained FP8 round trip of the non-RoPE dims (and the
 * indexer's FP4 round trip for index keys) in place, so `kv` afterwards
 * holds exactly what every later reader of the row will see. */
void v4_kv_store(const v4_model *m, float *kv, uint8_t *row);
void v4_kv_load(const v4_model *m, const uint8_t *row, float *kv);
void v4_index_store(const v4_model *m, float *key, uint8_t *row);
void v4_index_load(const v4_model *m, const uint8_t *row, float *key);

/* ---- official numerics (official.c) ---------------------------------------- */

static inline int v4_official(const v4_model *m)
{
    return m->opts.numerics == V4_NUMERICS_OFFICIAL;
}

/* In official numerics, round x[0..n) to BF16 in place (a tensor the
 * reference holds in BF16); in the others, nothing. */
void v4_official_bf16(const v4_model *m, float *x, size_t n);

/* The reference's per-head query scaling x *= rsqrt(mean(x^2) + eps) in
 * BF16 arithmetic, every step rounded (official numerics). */
void v4_official_rms_scale(float *x, int n, float eps);

/* A linear layer y = W x as the numerics compute it: v4_matmul, except
 * that in official numerics a quantised weight's (FP8, FP4, GGUF block
 * types) input rows are rounded to BF16 and quantised to e4m3 in blocks of
 * 128 first, and its outputs rounded to BF16.  0, or TOME_ENOMEM in err. */
int v4_linear(const v4_model *m, const v4_weight *w, const float *x, int n, float *y,
              int64_t ystride, tome_error *err);
/* v4_linear for each product of set[0 .. count): in qat and fp32
 * numerics as one v4_matmul_set, in official numerics one by one.  0, or
 * TOME_ENOMEM in err. */
int v4_linear_set(const v4_model *m, const v4_product *set, int count, tome_error *err);
/* A product the reference computes in BF16 (the weight dequantised to
 * BF16, inputs BF16 values, rows xstride apart), as v4_matmul_strided
 * would; in official numerics with fast kernels an FP8/FP4 weight's
 * products, exact, take the pair order as v4_linear's.  The caller rounds
 * the outputs. */
void v4_bf16_product(const v4_model *m, const v4_weight *w, const float *x, int64_t xstride, int n,
                     float *y, int64_t ystride);

/* ---- forward pieces -------------------------------------------------------- */

/* Attention of block `b` for n tokens at positions s->pos .. s->pos+n-1;
 * x is the attn-normed input [n][dim], out gets [n][dim].  Advances the
 * block's caches.  The n tokens are tokens call_first.. of an evaluation
 * call of `call_tokens` tokens (the reference's rounding depends on it). */
int v4_attention(v4_state *s, int block, const float *x, int n, int64_t call_first,
                 int64_t call_tokens, float *out, const v4_eval *ev, tome_error *err);
/* MoE of block `b`: x [n][dim] normed input, ids the tokens (hash routing). */
/* The chunk's n tokens are tokens first..first+n-1 of an evaluation call of
 * `total` tokens (the router's rounding depends on it, see refmath.c). */
int v4_moe(const v4_model *m, int block, const float *x, const int32_t *ids, int n, int64_t first,
           int64_t total, float *out, tome_error *err);

#endif
