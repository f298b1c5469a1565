/*
 * fast.h - the fast kernels' contract: one summation order, three ISAs.
 *
 * The exact kernels (exact.c) round like the reference: every dot product
 * is an in-order sum of rounded products, which keeps the engine
 * bit-identical to DeepSeek's code but leaves a SIMD unit nothing to do
 * within one sum.  The fast kernels fix another order, chosen for SIMD and
 * FMA, and hold every ISA to it:
 *
 *   the dot product of a weight row w and an input row x (cols a multiple
 *   of V4_FAST_LANES) keeps V4_FAST_LANES partial sums; lane l takes the
 *   columns k = l, l + 16, l + 32, ... in increasing order, each as one
 *   fused multiply-add acc = fma(w[k], x[k], acc) from acc = +0; the lanes
 *   are then added as a fixed tree: a[i] + a[i+8], then + [i+4], + [i+2],
 *   + [i+1].
 *
 *   Where cols is a multiple of V4_PAIRS_COLUMNS (32; every matrix of a
 *   real checkpoint), the columns of each 32 are first permuted, odd ones
 *   then even ones: lane l takes, for each 32 columns c = 0, 32, ... in
 *   increasing order, acc = fma(w[c + 2l + 1], x[c + 2l + 1], acc), then
 *   acc = fma(w[c + 2l], x[c + 2l], acc).  This is the pair order.  It
 *   lets a kernel split packed weights by shifts where the plain order
 *   needed shuffles: the two e2m1 codes of a byte, the two e4m3 or BF16
 *   values of a 16- or 32-bit lane go to the same lane of the sums (on a
 *   Zen 4 this cut the operations of an FP8 decode by a third).
 *
 * Weights are decoded exactly (an FP8/FP4/BF16 value times its power-of-two
 * block scale is exact in F32), so each output depends only on its weight
 * row and input row: not on the ISA (scalar, AVX2 and AVX-512 give the same
 * bits, which test_kernels checks), the number of tokens in the call (a
 * prompt prefilled in chunks of any size, or decoded one token at a time,
 * gives the same bits), nor how rows are split between threads.
 *
 * Each ISA provides the table below; fast.c picks one at run time and
 * drives it.
 *
 * Official numerics feed their FP8/FP4 linear layers activations quantised
 * to e4m3 (engine/official.c), so every weight and every input there is a
 * BF16 value and every product is exact in F32: AVX512-BF16's vdpbf16ps
 * computes the pair order over them at twice the FMA rate, but flushes
 * inputs and results below 2^-126 in magnitude to zero of the same sign.
 * Those products (v4_fast_matmul_pairs) keep the flushes, whatever the
 * CPU: v4_pairs_dot is their definition.  CPUs without AVX512-BF16
 * compute them with the kernels below, which give the same sum whenever
 * nothing is flushed: every input at least 2^-52 (activations) or 2^-60
 * (weights) in magnitude, or zero, makes every nonzero sum a multiple of
 * at least 2^-126 (a BF16 value at least 2^e is a multiple of 2^(e - 7)),
 * so never below it; rows and inputs outside those bounds (scales no
 * checkpoint has) go through v4_pairs_dot.
 */
#ifndef TOME_ENGINE_KERNELS_FAST_H
#define TOME_ENGINE_KERNELS_FAST_H

#include "engine/internal.h"

#define V4_FAST_LANES    16 /* partial sums per dot product */
#define V4_PAIRS_COLUMNS 32 /* columns per step of the pair order */
#define V4_FAST_ROWS     4  /* weight rows per register tile */
#define V4_FAST_TOKENS   6  /* input rows per register tile */
/* Weight rows per block: prefill decodes a block's rows at once, decode
 * hands a block's rows to one rows_dot call, and a thread's share of a
 * product is a whole number of blocks (the last one may be short). */
#define V4_FAST_BLOCK_ROWS 32

/* Weight rows of the lane tile (v4_fast_kernels.lane_tile): four vectors
 * of sixteen. */
#define V4_FAST_LANE_ROWS 64

/* Values from one lane's run to the next in a lane panel of `steps`
 * steps (v4_fast_kernels.decode_lanes): a line more than the run, because
 * runs a multiple of 4 kB long would put a step's sixteen lanes, which
 * decode_lanes stores together, in one set of the L1 cache. */
static inline int64_t v4_fast_lane_stride(int64_t steps)
{
    return steps * V4_FAST_LANE_ROWS + 16;
}

/* Decoded rows decode_lanes' scratch holds: one vector's worth, the rows
 * it transposes at a time. */
#define V4_FAST_LANE_SCRATCH_ROWS 16

/* The partial sums of a register tile between calls: acc[t][i][l] is lane
 * l of the dot product of row i with token t. */
typedef float v4_fast_acc[V4_FAST_TOKENS][V4_FAST_ROWS][V4_FAST_LANES];

/* Where tile_acc finds columns k .. k + 15 of a token whose packed inputs
 * begin at x (k a multiple of V4_FAST_LANES): see tile_acc. */
static inline const float *v4_fast_x_at(const float *x, int64_t k)
{
    return x + k * V4_FAST_TOKENS;
}

/* How attention's stored KV rows read (engine/state.c writes them): `fp8`
 * e4m3 codes, then one E8M0 scale per V4_KV_FP8_BLOCK codes, then `tail`
 * values in BF16 (tail_bf16) or F32.  Rows of plain floats are
 * {0, hd, 0}.  fp8 is a multiple of V4_KV_FP8_BLOCK, tail of
 * V4_FAST_LANES. */
typedef struct v4_kv_format {
    int fp8, tail, tail_bf16;
} v4_kv_format;

/* Where a stored row's tail values begin. */
static inline const uint8_t *v4_kv_tail(const v4_kv_format *f, const uint8_t *row)
{
    return row + f->fp8 + f->fp8 / V4_KV_FP8_BLOCK;
}

typedef struct v4_fast_kernels {
    const char *name; /* "scalar", "avx2", "avx512" */
    /* Columns a prefill tile_acc call sweeps (a multiple of
     * V4_PAIRS_COLUMNS; fast.c): as many as the tile's rows and tokens
     * can take while they stay in the L1 or L2 cache between its passes;
     * the second where the core's L1 data cache holds 48 kB or more. */
    int tile_columns, tile_columns_big_l1;
    /* Decode weight rows [r, r + nr) into `panel`, row i at
     * panel + i * w->cols, exactly, in the order's layout: for rows a
     * multiple of V4_PAIRS_COLUMNS wide each 32 columns permuted (odd,
     * then even; v4_fast_permute_pairs), so that tile_acc over them and
     * inputs permuted alike computes the pair order. */
    void (*decode_rows)(const v4_weight *w, int64_t r, int nr, float *panel);
    /* Continue the tile's sums over `klen` more columns (a multiple of
     * V4_FAST_LANES): rows[i] and xs[t] point at the first of them, for
     * i < V4_FAST_ROWS and t < nt (nt <= V4_FAST_TOKENS).  A row's
     * columns follow each other; the tokens' come packed (fast.c's copy
     * of the inputs): columns k .. k + 15 of token t, k a multiple of 16
     * counted from xs[t], are at xs[t] + k * V4_FAST_TOKENS (v4_fast_x_at),
     * each sixteen of a group of tokens side by side.  With `fresh`
     * the sums start at +0 instead (acc is only written).  Slots of acc
     * for tokens nt and beyond are scratch: the kernel may write them. */
    void (*tile_acc)(const float *const *rows, const float *const *xs, int nt, int64_t klen,
                     int fresh, v4_fast_acc acc);
    /* y[i] = dot(weight row r + i, x) for i < nr (<= V4_FAST_BLOCK_ROWS)
     * in the order above, x in the order's layout (for rows a multiple of
     * V4_PAIRS_COLUMNS wide, each 32 permuted as v4_fast_permute_pairs
     * does: fast.c makes that copy once per product),
     * decoding the weights in registers: one token's matrix-vector
     * product.  Runs as a task of w->pool and may use its per-thread
     * scratch (v4_fast_scratch_bytes). */
    void (*rows_dot)(const v4_weight *w, int64_t r, int nr, const float *x, float *y);
    /* Attention reads the KV state where it is stored: the rows below are
     * in format f (hd = f->fp8 + f->tail columns) and are decoded in
     * registers, exactly, so the results are those of decoding them first.
     *
     * acc[t][i] continues the dot product of rows[i] (i < V4_FAST_ROWS)
     * with xs[t] (t < nt <= V4_FAST_TOKENS) over all hd columns, in the
     * order above: the scores' register tile. */
    void (*kv_tile_acc)(const v4_kv_format *f, const uint8_t *const *rows, const float *const *xs,
                        int nt, v4_fast_acc acc);
    /* o[h * ostride + k] += the sum over s < n of p[h * pstride + s] times
     * column k of rows[s], for h < nh and c0 <= k < c1 (multiples of 32,
     * or c1 = hd): one fused multiply-add per s, in increasing s, continuing
     * from the value o holds (+0 for a fresh sum).  Attention's P.V. */
    void (*kv_weighted_sum)(const v4_kv_format *f, const uint8_t *const *rows, int64_t n,
                            const float *p, int64_t pstride, int nh, int64_t c0, int64_t c1,
                            float *o, int64_t ostride);
    /* Columns [c0, c1) (multiples of V4_FAST_LANES) of a stored row into
     * out[0 .. c1 - c0), exactly. */
    void (*kv_decode)(const v4_kv_format *f, const uint8_t *row, int64_t c0, int64_t c1,
                      float *out);
    /* y[t * ystride + i] = the lane tree of acc[t][i], for t < nt and
     * i < nr: a register tile's finished dot products. */
    void (*reduce)(const v4_fast_acc acc, int nt, int nr, float *y, int64_t ystride);
    /* out = the n values at in (n a multiple of 32) with each 32 permuted
     * as v4_fast_permute_pairs does (out may be in): the inputs of the
     * pair order's kernels. */
    void (*permute_pairs)(const float *in, int64_t n, float *out);
    /* The lane tile: prefill's sums with the weight rows in the vector
     * lanes and each token's input broadcast, where tile_acc puts sixteen
     * columns in the lanes.  It computes the same sums in the same order:
     * one pass per lane l of the order, each pass a chain of fused
     * multiply-adds over that lane's columns, for V4_FAST_LANE_ROWS rows
     * and up to V4_FAST_TOKENS tokens at once, then the lane tree across
     * the passes.  A step of a pass loads four vectors of weights and
     * broadcasts six inputs for 24 multiply-adds, where tile_acc loads ten
     * vectors: on a Zen 5 an FP8 product's sums ran 1.33x as fast.  NULL
     * in kernels without one (fast.c then runs tile_acc).
     *
     * The lane panel of a weight `cols` wide (steps = cols / 16): value p
     * = 16 j + l of decoded row i (decode_rows' layout) at
     * panel[l * v4_fast_lane_stride(steps) + j * V4_FAST_LANE_ROWS + i]. */
    /* Rows [r, r + nr) (nr <= V4_FAST_LANE_ROWS) of w into the lane panel,
     * exactly, rows nr and beyond zero; scratch holds
     * V4_FAST_LANE_SCRATCH_ROWS * w->cols
     * floats. */
    void (*decode_lanes)(const v4_weight *w, int64_t r, int nr, float *scratch, float *panel);
    /* For each lane l: continue sums[(l * V4_FAST_TOKENS + t) *
     * V4_FAST_LANE_ROWS + i], for every panel row i and tokens t < nt,
     * over steps [j0, j1) of lane l (from +0 with `fresh`).  xs is a group
     * of tokens in the lane layout: value p = 16 j + l of token t at
     * xs[(l * steps + j) * V4_FAST_TOKENS + t] (fast.c's packed copy). */
    void (*lane_tile)(const float *panel, const float *xs, int nt, int64_t steps, int64_t j0,
                      int64_t j1, int fresh, float *sums);
    /* y[t * ystride + i] = the lane tree of lane_tile's sums for token t
     * and row i, for t < nt and i < nr. */
    void (*lane_reduce)(const float *sums, int nt, int nr, float *y, int64_t ystride);
} v4_fast_kernels;

extern const v4_fast_kernels v4_fast_scalar;
#if defined(__x86_64__)
extern const v4_fast_kernels v4_fast_avx2;
extern const v4_fast_kernels v4_fast_avx512;
#endif

/* The kernels in use: the best this CPU runs, or the one named by the
 * environment variable TOME_ISA ("scalar", "avx2", "avx512"; one this CPU
 * cannot run is refused and the best is used).  Chosen once per process. */
const v4_fast_kernels *v4_fast_kernels_active(void);
/* z[h * zstride + s] = the dot product, in the order above, of stored row
 * rows[s] (format f) and query head h (q + h * hd, hd = f->fp8 + f->tail),
 * for s < n and h < nh.  Attention's scores, as register tiles of the
 * matrix product (the rows as weight rows, the heads as tokens); with
 * more heads than a tile holds, each tile's rows are decoded once into
 * cache for all of them. */
void v4_fast_scores(const v4_fast_kernels *k, const v4_kv_format *f, const uint8_t *const *rows,
                    int64_t n, const float *q, int nh, float *z, int64_t zstride);
/* o[h * ostride + k] = the sum over s < n of p[h * pstride + s] times
 * column k of stored row rows[s], for h < nh and c0 <= k < c1 (as
 * kv_weighted_sum's, from +0).  With many heads the rows are decoded a
 * block at a time into cache and the heads run over the block, so each
 * row is decoded once rather than once per group of heads; the sums are
 * the same. */
void v4_fast_values(const v4_fast_kernels *k, const v4_kv_format *f, const uint8_t *const *rows,
                    int64_t n, const float *p, int64_t pstride, int nh, int64_t c0, int64_t c1,
                    float *o, int64_t ostride);
/* The table for `name`, or NULL if this CPU (or build) cannot run it. */
const v4_fast_kernels *v4_fast_kernels_named(const char *name);

/* The fixed lane tree of the order above (shared by the scalar kernels and
 * the tests). */
static inline float v4_fast_reduce(const float a[V4_FAST_LANES])
{
    float s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++) s8[i] = a[i] + a[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    for (int i = 0; i < 2; i++) s2[i] = s4[i] + s4[i + 2];
    return s2[0] + s2[1];
}

/* An E8M0 block scale as a float (2^(e-127); NaN for 0xFF): the exponent
 * field, except the subnormal 2^-127 for e = 0 and the quiet NaN
 * v4_e8m0_to_f32 gives for 0xFF.  No call, even on the rare codes: a call
 * in a kernel's loop makes the compiler keep its accumulators in memory. */
static inline float v4_fast_scale(uint8_t e)
{
    union {
        uint32_t u;
        float f;
    } v = {.u = e == 0 ? 0x00400000u : e == 0xFF ? 0x7FC00000u : (uint32_t)e << 23};
    return v.f;
}

/* v4_e2m1_values[i] times v4_fast_scale(e), at [e][i]: an FP4 block's
 * sixteen values in one load, where multiplying the e2m1 table by the
 * block's scale cost a broadcast and a product per 32 weights (a quarter
 * of an AVX-512 FP4 decode's operations).  The products are the ones the
 * kernels made before, bit for bit.  Built on the first call, read-only
 * after, so every thread shares it. */
const float (*v4_fast_e2m1_scaled(void))[16];

/* The same for GGUF's MXFP4: its levels (twice the e2m1 values, +0 for
 * code 8) times v4_mxfp4_scale(e). */
const float (*v4_fast_mxfp4_scaled(void))[16];

/* The same two tables as BF16 bytes, for lookups by byte shuffles (AVX2's
 * vpshufb takes sixteen bytes): [e][i] is the low byte and [e][16 + i]
 * the high byte of the top half of value i at scale e.  Every value of
 * either table is a code of at most two significant bits times a power of
 * two, at least 2^-128 in magnitude or zero (or Inf or the quiet NaN of a
 * NaN scale), so its bottom sixteen bits are zero and the top half is the
 * value itself, exactly (test_kernels checks every entry). */
const uint8_t (*v4_fast_e2m1_bf16(void))[32];
const uint8_t (*v4_fast_mxfp4_bf16(void))[32];

/* Decode runs V4_FAST_ROWS rows at a time, each row a page or two that
 * the hardware prefetchers, which stop at page boundaries, meet cold: so
 * while a kernel reads `len` bytes at p it asks for the bytes `ahead`
 * further on, where the next call's rows lie (past the weight's end a
 * prefetch is only a wasted hint, never a fault).  Into L2, not L1: four
 * rows in flight plus four ahead are more than a 32 KB L1 holds, and on a
 * Zen 4 prefetches into L1 evicted lines before their use (a cold BF16
 * product read 15-16 GB/s on one thread with them, 20-22 into L2). */
static inline void v4_fast_next_rows(const uint8_t *p, int64_t ahead, int64_t len)
{
    for (int64_t o = 0; o < len; o += 64) __builtin_prefetch(p + ahead + o, 0, 2);
}

/* Whether the 128 x 128 FP8 block holding row `row`, columns k0.. of w is
 * free of NaN codes, as far as w->fp8_clean knows: the kernels' short
 * paths decode codes without looking for NaN (which must stay NaN), so
 * they check the rows they read first, unless the block is known clean.
 * The first call for a block scans all of it once and remembers the
 * answer; the marks are shared by every thread (a race only repeats a
 * scan).  0 without marks (weights that are not a model's). */
int v4_fast_fp8_scan_block(const v4_weight *w, int64_t row, int64_t k0);

/* Whether one of the n bytes at p is an e4m3 NaN code (S.1111.111). */
int v4_fp8_any_nan(const uint8_t *p, int64_t n);

static inline int v4_fast_fp8_clean(const v4_weight *w, int64_t row, int64_t k0)
{
    if (!w->fp8_clean) return 0;
    int64_t at = (row / V4_FP8_BLOCK) * w->scale_stride + k0 / V4_FP8_BLOCK;
    uint8_t known = __atomic_load_n(&w->fp8_clean[at], __ATOMIC_RELAXED);
    return known ? known == 1 : v4_fast_fp8_scan_block(w, row, k0);
}

/* Decode's FP8 inputs folded with the scales of one 128-row block (the
 * AVX2 and AVX-512 rows_dot): x times each 128-column block's factor 2^120
 * times its scale, and whether that product is exact in every column of
 * the block.  Where it is, fma(code value times 2^-120, x times factor,
 * acc) is fma(weight, x, acc) bit for bit (the two products are one real
 * number, rounded once), so a kernel skips a multiplication per weight
 * vector.  Made once per rows_dot call and row block, in the running
 * thread's scratch, for all the rows the call reads. */
typedef struct v4_fp8_folded {
    int64_t row_block; /* the block the inputs are for, -1 before any */
    float *x;          /* w->cols inputs, each times its block's factor */
    uint8_t *exact;    /* per 128-column block: every product exact */
    /* Every column block exact and known free of NaN codes (w->fp8_clean):
     * a kernel may then run the rows through without looking at blocks. */
    int whole;
} v4_fp8_folded;

/* Empty folded inputs in the running thread's scratch (which holds them:
 * v4_fast_scratch_bytes) for an FP8 weight; for others, none. */
static inline v4_fp8_folded v4_fp8_folded_none(const v4_weight *w)
{
    float *scratch = w->dtype == V4_F8_E4M3 ? v4_pool_scratch(w->pool) : NULL;
    return (v4_fp8_folded){-1, scratch, scratch ? (uint8_t *)(scratch + w->cols) : NULL, 0};
}

/* The order's dot product of w and x (cols a multiple of V4_FAST_LANES;
 * the pair order where cols is a multiple of V4_PAIRS_COLUMNS): its
 * definition, one lane at a time. */
float v4_fast_dot(const float *w, const float *x, int64_t cols);

/* Whether products with w take the pair order. */
static inline int v4_fast_pair_order(const v4_weight *w)
{
    return w->cols % V4_PAIRS_COLUMNS == 0;
}

/* ---- official numerics' products (the pair order, flushing) ------------- */

/* The pair order's dot product of w and x (cols a multiple of 32) with
 * vdpbf16ps's flushes: its definition, one lane at a time. */
float v4_pairs_dot(const float *w, const float *x, int64_t cols);

/* The pair order in hardware: vdpbf16ps over BF16 copies of the weights
 * and inputs. */
typedef struct v4_pairs_kernels {
    /* out[i] = the BF16 bits of in[i], for n (a multiple of 32) values
     * that BF16 holds (any rounding is then exact); out may be in. */
    void (*to_bf16)(const float *in, int64_t n, uint16_t *out);
    /* Rows [r, r + nr) of an FP8 or FP4 weight (cols a multiple of 32)
     * decoded straight to BF16, row i at panel + i * w->cols: the bits
     * the fast kernels' decode_rows then to_bf16 give. */
    void (*decode_rows)(const v4_weight *w, int64_t r, int nr, uint16_t *panel);
    /* tile_acc's contract with BF16 rows and inputs, klen a multiple of
     * 32: the pair order's steps. */
    void (*tile_acc)(const uint16_t *const *rows, const uint16_t *const *xs, int nt, int64_t klen,
                     int fresh, v4_fast_acc acc);
} v4_pairs_kernels;

#if defined(__x86_64__)
extern const v4_pairs_kernels v4_pairs_avx512bf16;
#endif

/* Each 32 of the n values at v (n a multiple of 32) as their odd columns,
 * then their even ones: the plain order over them is the pair order. */
void v4_fast_permute_pairs(float *v, int64_t n);
/* Whether the scales of rows [r, r + nr) of an FP8/FP4 weight keep every
 * nonzero weight at least 2^-60 (the permuted route's bound above). */
int v4_fast_pairs_scales_plain(const v4_weight *w, int64_t r, int nr);

/* Whether w's products with quantised inputs take the pair order: FP8 and
 * FP4 weights whose rows are a multiple of 32 wide. */
int v4_fast_pairs_weight(const v4_weight *w);
/* v4_fast_matmul in the pair order with vdpbf16ps's flushes, for such a
 * weight and inputs x ([n] rows of w->cols values BF16 holds, xstride
 * apart).  Prefill (more than two tokens) runs vdpbf16ps where kernels `k`
 * are AVX-512 and the CPU has AVX512-BF16; decode, and CPUs without it,
 * run the kernels' own pair order, which is the same sum wherever nothing
 * can flush (above), and v4_pairs_dot elsewhere: in decode the F32 loops
 * take fewer operations per weight than converting each 32 weights to
 * BF16 for vdpbf16ps did.  The inputs' copy comes from the work buffers b
 * (NULL: malloc). */
void v4_fast_matmul_pairs(const v4_fast_kernels *k, const v4_weight *w, const float *x,
                          int64_t xstride, int n, float *y, int64_t ystride, v4_buffers *b);

/* GGUF's types (F16 and the block formats) are decoded a row at a time by
 * engine/kernels/blocks.c, whose SIMD and scalar paths give the same bits;
 * the scalar kernels run their dot over the decoded rows, in the order
 * above, and the SIMD ones read the types in registers with the same
 * operations (fast_avx2_gguf.c; the plain order, rows 16 but not 32 wide,
 * still decodes rows first). */
static inline int v4_fast_gguf(v4_dtype t)
{
    return t == V4_F16 || v4_dtype_block(t) > 1;
}
/* Rows [r, r + nr) of such a weight into panel (row i at i * w->cols). */
void v4_fast_gguf_rows(const v4_weight *w, int64_t r, int nr, float *panel);

/* y[t][o] for `n` input rows with the kernels `k` (v4_matmul_strided's
 * contract); w->cols must be a multiple of V4_FAST_LANES.  The kernels run
 * as tasks of w->pool and use its per-thread scratch. */
void v4_fast_matmul(const v4_fast_kernels *k, const v4_weight *w, const float *x, int64_t xstride,
                    int n, float *y, int64_t ystride);
/* v4_matmul_set's products with the kernels `k`, in parallel regions of
 * up to V4_FAST_SET products each (every weight w->cols a multiple of
 * V4_FAST_LANES, all on one pool). */
#define V4_FAST_SET 32
void v4_fast_matmul_set(const v4_fast_kernels *k, const v4_product *set, int count);
/* The per-thread scratch the fast kernels need for rows `cols` wide. */
size_t v4_fast_scratch_bytes(int64_t cols);

#endif
