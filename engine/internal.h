/*
 * internal.h - the engine's private vocabulary, shared by engine/ files only.
 *
 * Nothing outside engine/ includes this file; the public face of the engine
 * is v4.h.  It defines the one tensor/kernel vocabulary every engine file
 * uses: a `v4_weight` is a read-only matrix view into a memory-mapped shard
 * (FP8 with 128x128 block scales, FP4 with per-32 scales, BF16 or F32), and
 * the kernels take weights and plain F32 activation rows.  Activations are
 * always F32, row-major, one row per token.
 */
#ifndef TOME_ENGINE_INTERNAL_H
#define TOME_ENGINE_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/v4.h"

/* ---- number formats (quant.c) ------------------------------------------- */

/* Block sizes of V4's number formats (V4-ARCHITECTURE.md): one E8M0 scale
 * per 128x128 block of an FP8 weight, per 32 values of an FP4 weight row
 * or indexer vector, per 64 non-RoPE dims of a stored KV vector. */
#define V4_FP8_BLOCK    128
#define V4_FP4_BLOCK    32
#define V4_KV_FP8_BLOCK 64

/* Lookup tables: every e4m3 byte, every e2m1 nibble, as float. */
extern float v4_e4m3_table[256];
extern const float v4_e2m1_values[16];
void v4_quant_init(void); /* fills the tables; idempotent, thread-safe */

static inline float v4_bf16_to_f32(uint16_t b)
{
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)b << 16};
    return v.f;
}

/* 2^(e - 127) for an E8M0 scale byte. */
float v4_e8m0_to_f32(uint8_t e);
/* Round-to-nearest-even float -> bf16 bits, and float -> e4m3 byte (the
 * input must already be within +-448). */
uint16_t v4_f32_to_bf16(float f);
/* x[i] = the BF16 value nearest x[i] (ties to even; NaN stays NaN), in
 * place: a tensor the reference keeps in BF16. */
void v4_bf16_round(float *x, size_t n);
uint8_t v4_f32_to_e4m3(float f);
/* float in [-6, 6] -> e2m1 code (bit 3 sign), nearest, ties to even code. */
uint8_t v4_f32_to_e2m1(float f);

/* The power-of-two block scale the reference derives from a block's amax:
 * 2^ceil(log2(amax * inv_max)), taken from the float's bits. Returns the
 * exponent (scale = 2^exp). */
int v4_pow2_scale_exp(float amax, float inv_max);

/* In-place FP8 e4m3 round trip of `n` values in blocks of `block`
 * (the trained graph's KV quantisation).  If `codes`/`scales` are given,
 * the e4m3 bytes and E8M0 scale bytes are written there too. */
void v4_fp8_roundtrip(float *x, int n, int block, uint8_t *codes, uint8_t *scales);
/* In-place FP4 e2m1 round trip in blocks of 32 (the indexer's), optionally
 * emitting packed nibbles (low first) and E8M0 scales. */
void v4_fp4_roundtrip(float *x, int n, uint8_t *packed, uint8_t *scales);
/* Normalised Walsh-Hadamard transform of a power-of-two length vector. */
void v4_hadamard(float *x, int n);

/* ---- weights and kernels (exact.c) -------------------------------------- */

typedef struct v4_pool v4_pool;

typedef struct v4_weight {
    v4_dtype dtype;       /* V4_F8_E4M3, V4_I8 (FP4), V4_BF16 or V4_F32 */
    int64_t rows, cols;   /* logical shape [out, in] */
    const uint8_t *data;  /* points into a mapped shard */
    const uint8_t *scale; /* E8M0 scales (FP8: per 128x128 block, FP4: per 32) */
    int64_t scale_stride; /* scale bytes per scale row */
    int fast;             /* products with the fast kernels (v4_kernels) */
    v4_pool *pool;        /* the model's threads, which run its products */
    /* The model's work buffers (NULL: malloc), for the fast kernels'
     * copies of a product's inputs. */
    struct v4_buffers *buffers;
    /* FP8 weights of a model, or NULL: per 128x128 block (laid out as the
     * scales), whether the kernels found it free of NaN codes (1) or
     * not (2), or have not looked (0); written by v4_fast_fp8_clean. */
    uint8_t *fp8_clean;
    /* A copy of the rows in panels for the exact kernels' decode, or NULL:
     * eight rows interleaved by unit (v4_panels_attach), owned by the model;
     * and where what the panels' column blocks need besides the codes (NaN
     * marks, FP4 scales) begins, for these rows (a slice has its own). */
    const uint8_t *panels;
    const uint8_t *panel_extras;
} v4_weight;

/* Widest matrix row the kernels handle (floats); config.c enforces it. */
#define V4_MAX_COLS 32768

/* Decode row `r` of a weight into `out` (cols floats), exactly; the SIMD
 * decoders where the CPU has them, or the scalar reference. */
void v4_weight_row(const v4_weight *w, int64_t r, float *out);
void v4_weight_row_scalar(const v4_weight *w, int64_t r, float *out);
/* The bytes of panels of a matrix of this type and shape: FP8, FP4 and
 * BF16 rows of whole blocks of 32 columns, the rows rounded up to eight
 * (FP4 adds its scales); 0 for others. */
size_t v4_panels_size(v4_dtype dtype, int64_t rows, int64_t cols);
/* v4_panels_size of w where the CPU runs the panel kernels (AVX2), else 0. */
size_t v4_panels_bytes(const v4_weight *w);
/* Fill dst (v4_panels_bytes(w) bytes) with w's rows as panels, and point
 * w's panels into it: panel p holds rows 8p..8p+7 (zeros past the last),
 * unit t of each row in turn (FP8 and FP4: a byte; BF16: a column pair),
 * row by row; after all panels come their extras, panel by panel, block
 * by block (FP8: whether a 128-column block holds a NaN code; FP4: the
 * rows' scales for 32 columns).  On w's pool where it has one. */
void v4_panels_attach(v4_weight *w, uint8_t *dst);
/* Rows [first, first + rows) of w as a weight of their own: its data,
 * scales, NaN marks and panels.  `first` must start a block of the
 * scales (128 rows for FP8) and, where w has panels, a panel. */
v4_weight v4_weight_rows(const v4_weight *w, int64_t first, int64_t rows);
/* The CPU has AVX2 and FMA (asked once). */
int v4_cpu_has_avx2(void);

/* y[t][o] = sum_i W[o][i] * x[t][i] for t < n; x is [n][cols], y is
 * [n][rows] with row stride `ystride` (>= rows).  Parallel over output rows.
 * Exact kernels unless w->fast (then engine/kernels/fast.h's order, for
 * rows whose width is a multiple of its 16 lanes). */
void v4_matmul(const v4_weight *w, const float *x, int n, float *y, int64_t ystride);
/* The same with input rows `xstride` floats apart (a column slice of x). */
void v4_matmul_strided(const v4_weight *w, const float *x, int64_t xstride, int n, float *y,
                       int64_t ystride);

/* One product of a set for v4_matmul_set: y = W x for n input rows of
 * w->cols floats, outputs ystride apart. */
typedef struct v4_product {
    const v4_weight *w;
    const float *x;
    int n;
    float *y;
    int64_t ystride;
} v4_product;

/* Each product of set[0 .. count) as v4_matmul computes it, bit for bit.
 * Where all take the fast kernels and share a pool, they run as one
 * parallel region over their rows laid end to end: a decode step's small
 * products (an expert's takes a fifth of a millisecond) then share one
 * hand-off and one wait instead of paying each their own. */
void v4_matmul_set(const v4_product *set, int count);

/* Many dot products against one query: rows are packed into transposed
 * tiles of 8 (v4_tiles_pack; `tiles` holds ceil(n/8)*8*dim floats) and
 * v4_tiles_dot writes out[i] = v4_dot(rows[i], q) bit for bit. */
void v4_tiles_pack(const float *const *rows, int64_t n, int dim, float *tiles);
void v4_tiles_dot(const float *tiles, int64_t n, int dim, const float *q, float *out);
/* The same for `nq` queries (q + j * q_stride) into out + j * out_stride,
 * each tile read once for all of them. */
void v4_tiles_dot_many(const float *tiles, int64_t n, int dim, const float *q, int nq,
                       int64_t q_stride, float *out, int64_t out_stride);

/* `bytes` of malloc'd memory (free() it) on a 64-byte boundary, so the
 * SIMD kernels' 64-byte loads never split a cache line, and in huge pages
 * where it is large (exact.c); NULL when out of memory. */
void *v4_alloc(size_t bytes);

/* v4_alloc of `n` floats.  A forward pass's work buffers come from the
 * model's v4_buffers instead, which keeps the large ones. */
float *v4_floats(size_t n);

/* Plain F32 helpers (scalar reference beside the SIMD versions). */
float v4_dot(const float *a, const float *b, int n);
void v4_axpy(float *y, float a, const float *x, int n); /* y += a*x */
/* refmath.c: float operations shaped like the reference's (see there). */
float v4_exp_vector(float x);
/* out[i] = v4_exp_vector(d[i]) for i < n, bit for bit, with SIMD. */
void v4_exp_vector_n(const float *d, float *out, int64_t n);
/* The same on `lanes` lanes (16: AVX-512, 8: AVX2, 1: scalar), which the
 * CPU must have; for tests. */
void v4_exp_vector_lanes(const float *d, float *out, int64_t n, int lanes);
float v4_log1p_vector(float x);
int v4_vector_lane(int64_t index, int64_t count); /* element `index` of `count`: vector code? */
float v4_exp_at(float x, int64_t index, int64_t count);
float v4_sigmoid_at(float x, int64_t index, int64_t count);
float v4_sum(const float *x, int64_t n);         /* along a row */
float v4_sum_outer(const float *x, int64_t n);   /* along a leading dimension */
float v4_mean_square(const float *x, int64_t n); /* sum(x[i]^2) / n */

/* out = w * (x / rms(x)) (w NULL: no weight), rms as the reference rounds it. */
void v4_rmsnorm(float *out, const float *x, const v4_weight *w, int n, float eps);

/* Bytes of per-thread scratch the matrix kernels need for rows up to
 * `max_cols` wide (exact.c, fast.c). */
size_t v4_kernel_scratch_bytes(int64_t max_cols);

/* ---- work buffers (buffers.c) -------------------------------------------- */

/* The large work buffers a model's forward passes give back, kept for the
 * next layer or chunk (fresh ones cost page faults and zeroing). */
typedef struct v4_buffers v4_buffers;
int v4_buffers_new(v4_buffers **out, tome_error *err);
/* Frees every buffer, handed out or not. */
void v4_buffers_free(v4_buffers *b);
/* n floats, as v4_floats(n) gives (NULL without memory): a kept buffer of
 * n's size class where one is idle.  b NULL: v4_floats(n). */
float *v4_buffers_get(v4_buffers *b, size_t n);
/* Give back p (NULL, or from v4_buffers_get(b, ...)): kept for reuse, or
 * freed. */
void v4_buffers_put(v4_buffers *b, void *p);
/* Free the buffers kept idle (at the end of a call). */
void v4_buffers_trim(v4_buffers *b);
/* Bytes of the buffers kept idle (by size class), for tests. */
size_t v4_buffers_kept(v4_buffers *b);

/* ---- thread pool (threads.c) --------------------------------------------- */

/* A model's threads: n_threads (0 = the online CPUs, at most 256) including
 * the caller, each with `scratch_bytes` of 64-byte aligned scratch. */
int v4_pool_new(int n_threads, size_t scratch_bytes, v4_pool **out, tome_error *err);
void v4_pool_free(v4_pool *p);
int v4_pool_threads(const v4_pool *p);

typedef void (*v4_task_fn)(void *ctx, int64_t begin, int64_t end);
/* Run fn over [0, n) split into chunks of a multiple of `grain` items
 * (each starting at a multiple of it; the last may be cut short at n) on
 * the pool (the calling thread takes part).  A chunk is at most
 * 1/(2 x threads) of what is left when it starts, or one grain: `grain`
 * is the least work worth a hand-off, and bounds how far apart the
 * threads finish.  One region runs at a time: a second caller waits; a call
 * from inside a task runs inline. */
void v4_parallel_for(v4_pool *p, int64_t n, int64_t grain, v4_task_fn fn, void *ctx);
/* The running thread's scratch, inside a task or region of `p` (NULL
 * elsewhere). */
void *v4_pool_scratch(const v4_pool *p);

#endif
