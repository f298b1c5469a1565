/*
 * indexer.h - the lightning indexer's scores, computed from FP4 codes with
 * integer dot products.
 *
 * In qat numerics the indexer's queries and keys are FP4 e2m1 codes with an
 * E8M0 scale per 32 values (the trained round trip).  Twice an e2m1 value
 * is an integer in [-12, 12], so the dot product of a query head and a key
 * is, block by block, an exact integer times a power of two:
 *
 *   q . k = sum over blocks b of  B_b * 2^(Eq_b + Ek_b - 256),
 *   B_b   = sum over the block's 32 dims of (2 q_j) (2 k_j).
 *
 * Whenever every partial sum of the F32 in-order dot product is exact (the
 * blocks' exponents Eq_b + Ek_b lie within 9 of each other and in the
 * normal range), the F32 result is this exact value, so the integer path
 * gives the F32 path's bits: the golden selections and the exact kernels'
 * guarantees are kept.  A (key, head) pair outside those bounds is
 * computed the F32 way, through the caller's fallback.  Then, as in the F32
 * path, score = sum over heads in order of relu(q_h . k) * w_h; or, for a
 * query marked `official` (official numerics, whose reference holds these
 * tensors in BF16), each term is bf16(bf16(relu(q_h . k)) * w_h), the
 * terms are added in F32 in head order and the sum is rounded to BF16
 * (bf16() as v4_bf16_round rounds).
 *
 * Keys are kept in an interleaved byte layout built once per key (not per
 * chunk or token): groups of 16 keys, each group as dim/4 vectors of 64
 * bytes whose lane i holds four dims of key i, as 2k + 12 (0..24, unsigned),
 * which is what vpdpbusd multiplies; the query's constant 12 * sum(2q) is
 * subtracted afterwards.
 *
 * Checking those bounds per (key, head, block) costs more than the dot
 * products, so each key also keeps the least and greatest of its block
 * exponents and each block's scale as a float: a group of keys whose
 * bounds, widened by the query's, are surely inside the limits is scored
 * without any per-block check (the usual case), and only the other groups
 * take the exact per-lane test.  Either way every kernel gives the scalar
 * reference's bits.
 */
#ifndef TOME_ENGINE_KERNELS_INDEXER_H
#define TOME_ENGINE_KERNELS_INDEXER_H

#include "engine/internal.h"

#define V4_INDEX_GROUP   16   /* keys per interleaved group */
#define V4_MAX_INDEX_DIM 4096 /* index_head_dim's bound in config.c */

/* Keys in the interleaved layout; grown by v4_index_keys_add, freed by
 * v4_index_keys_free.  Zero-initialise. */
typedef struct v4_index_keys {
    int dim, blocks; /* index_head_dim, dim / 32 */
    int64_t n, cap;  /* keys held; capacity in keys (a multiple of 16) */
    uint8_t *codes;  /* [cap/16][dim/4][16][4] */
    uint8_t *exps;   /* [cap/16][blocks][16] E8M0 scale of each key's block */
    uint8_t *emin;   /* [cap/16][16] least block exponent of each key (0 if any is NaN) */
    uint8_t *emax;   /* [cap/16][16] greatest (255 if any is NaN) */
    float *scale;    /* [cap/16][blocks][16] 2^(exponent - 127): the block's scale */
} v4_index_keys;

/* Append keys from their stored rows (dim/2 packed code bytes, low nibble
 * first, then dim/32 scale bytes): row(ctx, i) for i in [ik->n, n). */
int v4_index_keys_add(v4_index_keys *ik, int dim, int64_t n,
                      const uint8_t *(*row)(const void *ctx, int64_t i), const void *ctx,
                      tome_error *err);
void v4_index_keys_free(v4_index_keys *ik);

/* One token's query heads as codes (from v4_fp4_roundtrip's packed codes
 * and scales) and head weights, in memory the caller owns (v4_index_query_bind). */
typedef struct v4_index_query {
    int heads, dim, blocks;
    int8_t *c2;     /* [heads][dim]: 2 * the e2m1 value */
    uint8_t *e;     /* [heads][blocks] */
    int32_t *off;   /* [heads][blocks]: 12 * sum of c2 over the block */
    uint32_t *q4;   /* [heads][dim/4]: c2 bytes four at a time */
    float *scale;   /* [heads][blocks]: 2^(e - 129), the block's scale over the 2 * 2 of c2 */
    const float *w; /* [heads] */
    int official;   /* combine the heads as official numerics round them (above) */
} v4_index_query;

/* The bytes a query of `heads` heads of `dim` dims needs (a multiple of 64). */
size_t v4_index_query_bytes(int heads, int dim);

/* Lay q out in mem (v4_index_query_bytes, 4-byte aligned) with head weights
 * w, not official (the caller may set q->official); the heads are then
 * filled with v4_index_query_set. */
void v4_index_query_bind(v4_index_query *q, int heads, int dim, void *mem, const float *w);

/* Fill head h of q from packed codes and scales as v4_fp4_roundtrip left
 * them. */
void v4_index_query_set(v4_index_query *q, int h, const uint8_t *packed, const uint8_t *scales);

/* Head h of q alone, with weight *w, not official: a one-head query
 * sharing q's memory (v4_index_score_by_heads scores the heads so).  A
 * kernel calls the fallback for it with head 0. */
v4_index_query v4_index_query_head(const v4_index_query *q, int h, const float *w);

/* The F32 way for one (key, head) pair, for pairs the integer path cannot
 * give exactly. */
typedef float (*v4_index_fallback)(const void *ctx, int64_t key, int head);

/* scores[i - k0] for keys [k0, k1) of ik (k0 a multiple of 16). */
typedef void (*v4_index_score_fn)(const v4_index_keys *ik, const v4_index_query *q, int64_t k0,
                                  int64_t k1, float *scores, v4_index_fallback fb,
                                  const void *fb_ctx);
void v4_index_score_scalar(const v4_index_keys *ik, const v4_index_query *q, int64_t k0, int64_t k1,
                           float *scores, v4_index_fallback fb, const void *fb_ctx);
#if defined(__x86_64__)
void v4_index_score_avx2(const v4_index_keys *ik, const v4_index_query *q, int64_t k0, int64_t k1,
                         float *scores, v4_index_fallback fb, const void *fb_ctx);
void v4_index_score_vnni(const v4_index_keys *ik, const v4_index_query *q, int64_t k0, int64_t k1,
                         float *scores, v4_index_fallback fb, const void *fb_ctx);
#endif
/* An official query's scores from fn run on each head alone (weight 1:
 * relu(q_h . k)), combined in BF16 steps as indexer.h says: what the VNNI
 * kernel does with official queries; the scalar and AVX2 kernels combine
 * the heads themselves. */
void v4_index_score_by_heads(v4_index_score_fn fn, const v4_index_keys *ik, const v4_index_query *q,
                             int64_t k0, int64_t k1, float *scores, v4_index_fallback fb,
                             const void *fb_ctx);
/* The best this CPU runs: VNNI, AVX2 (groups that fail the quick test go
 * to the scalar reference), or the scalar reference; TOME_ISA=avx2 or
 * scalar forces one. */
v4_index_score_fn v4_index_score_active(void);

#endif
