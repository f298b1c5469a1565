/*
 * fast.c - choosing the fast kernels for this CPU, and the matrix product
 * that drives them.
 *
 * v4_fast_matmul splits the weight rows between the engine's threads.
 * With one or two tokens (decode) the weights are decoded in registers per
 * token and each weight byte is read once per token, at memory speed; with
 * more (prefill) a block of rows is decoded once into a per-thread buffer
 * and then serves all of the call's tokens from cache, in the pair order's
 * layout, against a copy of the inputs permuted alike.  Both paths compute
 * fast.h's order, so which one runs, and how the rows are split, never
 * shows in the results.  v4_fast_matmul_pairs drives the same blocks for
 * official numerics: through vdpbf16ps tiles over BF16 copies of the rows
 * and inputs, or through the F32 ones with v4_pairs_dot where a sum could
 * flush.
 */
#include "engine/kernels/fast.h"

#include "engine/kernels/blocks.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- which kernels -------------------------------------------------------- */

static int cpu_runs(const char *name)
{
    if (strcmp(name, "scalar") == 0) return 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    /* the AVX2 kernels convert halves with F16C too (fast_avx2.h's TARGET) */
    int avx2 = v4_blocks_simd() && __builtin_cpu_supports("fma");
    if (strcmp(name, "avx2") == 0) return avx2;
    if (strcmp(name, "avx512") == 0)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
    return 0;
}

const v4_fast_kernels *v4_fast_kernels_named(const char *name)
{
    static const v4_fast_kernels *const all[] = {
#if defined(__x86_64__)
        &v4_fast_avx512,
        &v4_fast_avx2,
#endif
        &v4_fast_scalar,
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->name, name) == 0) return cpu_runs(name) ? all[i] : NULL;
    return NULL;
}

static const v4_fast_kernels *active;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    const char *forced = getenv("TOME_ISA");
    if (forced && (active = v4_fast_kernels_named(forced))) return;
    static const char *const best_first[] = {"avx512", "avx2", "scalar"};
    for (size_t i = 0; !active && i < 3; i++) active = v4_fast_kernels_named(best_first[i]);
}

const v4_fast_kernels *v4_fast_kernels_active(void)
{
    pthread_once(&active_once, choose);
    return active;
}

void v4_fast_gguf_rows(const v4_weight *w, int64_t r, int nr, float *panel)
{
    size_t row_bytes = v4_dtype_row_bytes(w->dtype, w->cols);
    for (int i = 0; i < nr; i++)
        v4_gguf_row(w->dtype, w->data + (size_t)(r + i) * row_bytes, w->cols,
                    panel + (size_t)i * w->cols);
}

/* Head sizes up to this decode a tile's rows into a stack buffer when the
 * heads need more than one tile (V4's is 512). */
#define MAX_BUFFERED_HD 1024

void v4_fast_scores(const v4_fast_kernels *k, const v4_kv_format *f, const uint8_t *const *rows,
                    int64_t n, const float *q, int nh, float *z, int64_t zstride)
{
    int64_t hd = f->fp8 + f->tail;
    const v4_kv_format plain = {0, (int)hd, 0};
    int buffer = nh > V4_FAST_TOKENS && hd <= MAX_BUFFERED_HD;
    float decoded[V4_FAST_ROWS * MAX_BUFFERED_HD];
    v4_fast_acc acc;
    for (int64_t s0 = 0; s0 < n; s0 += V4_FAST_ROWS) {
        int nr = n - s0 < V4_FAST_ROWS ? (int)(n - s0) : V4_FAST_ROWS;
        /* rows past nr repeat the last one; their results are not stored */
        const uint8_t *rp[V4_FAST_ROWS];
        for (int i = 0; i < V4_FAST_ROWS; i++) rp[i] = rows[s0 + (i < nr ? i : nr - 1)];
        if (buffer)
            for (int i = 0; i < V4_FAST_ROWS; i++) {
                k->kv_decode(f, rp[i], 0, hd, decoded + i * hd);
                rp[i] = (const uint8_t *)(decoded + i * hd);
            }
        for (int h0 = 0; h0 < nh; h0 += V4_FAST_TOKENS) {
            int nt = nh - h0 < V4_FAST_TOKENS ? nh - h0 : V4_FAST_TOKENS;
            const float *xs[V4_FAST_TOKENS];
            for (int t = 0; t < nt; t++) xs[t] = q + (size_t)(h0 + t) * hd;
            memset(acc, 0, (size_t)nt * sizeof acc[0]);
            k->kv_tile_acc(buffer ? &plain : f, rp, xs, nt, acc);
            k->reduce(acc, nt, nr, z + (size_t)h0 * zstride + s0, zstride);
        }
    }
}

/* P.V's blocks when the heads are many: VALUE_ROWS rows' VALUE_COLUMNS
 * columns decoded at a time (8 kB). */
#define VALUE_ROWS    64
#define VALUE_COLUMNS 32
#define FEW_HEADS     8 /* up to this many, the kernel decodes in registers */

void v4_fast_values(const v4_fast_kernels *k, const v4_kv_format *f, const uint8_t *const *rows,
                    int64_t n, const float *p, int64_t pstride, int nh, int64_t c0, int64_t c1,
                    float *o, int64_t ostride)
{
    for (int h = 0; h < nh; h++) memset(o + h * ostride + c0, 0, (size_t)(c1 - c0) * sizeof *o);
    if (nh <= FEW_HEADS) {
        k->kv_weighted_sum(f, rows, n, p, pstride, nh, c0, c1, o, ostride);
        return;
    }
    float block[VALUE_ROWS][VALUE_COLUMNS];
    const uint8_t *decoded[VALUE_ROWS];
    for (int64_t s0 = 0; s0 < n; s0 += VALUE_ROWS) {
        int64_t nb = n - s0 < VALUE_ROWS ? n - s0 : VALUE_ROWS;
        for (int64_t k0 = c0; k0 < c1; k0 += VALUE_COLUMNS) {
            int64_t w = c1 - k0 < VALUE_COLUMNS ? c1 - k0 : VALUE_COLUMNS;
            const v4_kv_format slice = {0, (int)w, 0};
            for (int64_t i = 0; i < nb; i++) {
                k->kv_decode(f, rows[s0 + i], k0, k0 + w, block[i]);
                decoded[i] = (const uint8_t *)block[i];
            }
            k->kv_weighted_sum(&slice, decoded, nb, p + s0, pstride, nh, 0, w, o + k0, ostride);
        }
    }
}

/* ---- the matrix product --------------------------------------------------- */

typedef struct fast_job {
    const v4_fast_kernels *k;
    const v4_weight *w;
    const float *in; /* the caller's inputs, instride apart */
    int64_t instride;
    int n;
    float *y;
    int64_t ystride;
    /* What the kernels read: the inputs, or for the pair order a copy
     * with each 32 columns permuted, made once per product, or (hw:
     * vdpbf16ps, official numerics' prefill on AVX512-BF16) a BF16 copy
     * xh; copies' rows are copy_stride apart, except prefill's F32 copy
     * (packed: tile_acc's layout, packed_token).  Both NULL where no copy
     * could be had: the rows then go by the definition. */
    const float *x;
    int64_t xstride;
    const v4_pairs_kernels *hw;
    const uint16_t *xh;
    /* Official numerics (v4_fast_matmul_pairs) without vdpbf16ps: sums
     * that could flush (x_flushes: some input is outside fast.h's bounds)
     * go through v4_pairs_dot. */
    int flushing, x_flushes;
} fast_job;

/* Prefill works on blocks: BLOCK_ROWS weight rows are decoded at once (8
 * register tiles), and their partial sums for up to BLOCK_TOKENS tokens are
 * kept while the columns go by the kernels' tile_columns at a time, so
 * that a block's slice of the tokens and of the decoded rows stays in the
 * cache while the register tiles sweep it; longer column runs also save
 * the tiles' sums a trip through memory.  Measured on flash-shape prefill
 * (Zen 4, 1 MB L2), with the tokens' rows copy_stride apart (they are
 * packed now: packed_token): AVX-512's
 * 4 x 6 tile runs best at 2048 columns (96 x 2048 floats of tokens and 256
 * kB of rows: about 4% over 1024, and 4096 no better); AVX2's 2 x 3
 * subtiles, which pass over the same columns four times, at 512 (L1's
 * reuse: 1024 and 2048 lost 5% and 20%).  Each token's input row is then
 * read from memory once per BLOCK_ROWS rows.  Continuing a lane's sum in
 * the next block of columns is the same sum, in the same order.
 *
 * A core whose L1 data cache holds 48 kB takes the kernels'
 * tile_columns_big_l1 instead: at 1024 columns a tile's six tokens' inputs
 * (24 kB) and its four rows (16 kB) stay in L1 while the tile passes over
 * the block's eight groups of rows, so only the rows come from L2.  A Zen
 * 5 (48 kB L1, full-width 512-bit FMA units, which a tile fed from L2
 * outruns) ran an FP8 4096 x 4096 product of 256 tokens at about 183
 * GFLOP/s at 1024 against 144 at 2048 (one thread, medians of six
 * interleaved rounds; 303 against 281 at two threads), flash-shape
 * prefill at 52.4 against 48.0 tokens/s (one thread, medians of three;
 * 89.3 against 87.3 at two). */
#define BLOCK_ROWS   V4_FAST_BLOCK_ROWS
#define BLOCK_TOKENS 96

/* The columns prefill's tiles sweep at a time on this core: the kernels'
 * tile_columns, or tile_columns_big_l1 where the L1 data cache holds 48 kB
 * or more (glibc reads its size from CPUID; where it cannot tell, the
 * former). */
static int big_l1;
static pthread_once_t l1_once = PTHREAD_ONCE_INIT;

static void probe_l1(void)
{
#ifdef _SC_LEVEL1_DCACHE_SIZE
    big_l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE) >= 48 * 1024;
#endif
}

static int tile_columns(const v4_fast_kernels *k)
{
    pthread_once(&l1_once, probe_l1);
    return big_l1 ? k->tile_columns_big_l1 : k->tile_columns;
}

/* A thread's scratch (the pool's, v4_pool_scratch): the partial sums of a
 * block of tokens, then BLOCK_ROWS decoded rows (64-byte aligned, so that
 * no 64-byte load of a decoded row splits a cache line), panel_stride
 * values apart. */
typedef struct workspace {
    v4_fast_acc sums[BLOCK_TOKENS / V4_FAST_TOKENS][BLOCK_ROWS / V4_FAST_ROWS];
    _Alignas(64) float decoded[];
} workspace;

/* The lane tile's sums for one group of tokens (v4_fast_kernels.lane_tile)
 * and for a block of them; in the lane path a workspace's `decoded` holds
 * the block's sums, then the lane panel (V4_FAST_LANE_ROWS rows), then
 * decode_lanes' scratch (16 rows). */
#define LANE_GROUP_SUMS (V4_FAST_LANES * V4_FAST_TOKENS * V4_FAST_LANE_ROWS)
#define LANE_SUMS       (BLOCK_TOKENS / V4_FAST_TOKENS * LANE_GROUP_SUMS)

/* Values of a lane panel for rows `cols` wide (fast.h). */
static size_t lane_panel_values(int64_t cols)
{
    return V4_FAST_LANES * (size_t)v4_fast_lane_stride(cols / V4_FAST_LANES);
}

/* Values from one decoded row to the next in a workspace, for rows of
 * `cols` values of `size` bytes.  Rows a multiple of 4 kB long would put
 * the same columns of a tile's rows in the same sets of the L1 cache, which
 * (with the tokens' rows beside them) holds fewer lines per set than the
 * tile reads: AVX2's register tile ran at 62-66% of the FMA peak on such
 * rows in a microbenchmark, and at 88-91% with rows 512 bytes further
 * apart (Zen 3, 32 kB L1, the tile's data all in it); flash-shape prefill
 * gained about 2%. */
static int64_t panel_stride(int64_t cols, size_t size)
{
    return (size_t)cols * size % 4096 == 0 ? cols + (int64_t)(512 / size) : cols;
}

size_t v4_fast_scratch_bytes(int64_t cols)
{
    size_t tiles = (size_t)BLOCK_ROWS * (size_t)panel_stride(cols, sizeof(float)),
           lanes = LANE_SUMS + lane_panel_values(cols) + V4_FAST_LANE_SCRATCH_ROWS * (size_t)cols;
    return sizeof(workspace) + (tiles > lanes ? tiles : lanes) * sizeof(float);
}

static int min_int(int64_t a, int64_t b)
{
    return (int)(a < b ? a : b);
}

/* Where token t's inputs begin in prefill's packed copy of inputs `cols`
 * wide (a multiple of V4_FAST_LANES): the tokens go in groups of
 * V4_FAST_TOKENS, a register tile's, and a group's sixteen-column steps
 * hold each of its tokens' sixteen side by side (tile_acc's layout), so
 * that a tile reads its tokens' inputs as one stream, not six.  In a
 * microbenchmark of AVX2's tile sweeping 32 rows for 96 tokens (one
 * thread, Zen 3) that took it from about 63% of the FMA peak to 72-78%;
 * with panel_stride, flash-shape prefill went from 24.5 to 27.9 tokens/s
 * (one thread, medians of three interleaved rounds). */
static float *packed_token(const float *copy, int64_t cols, int64_t t)
{
    return (float *)copy + t / V4_FAST_TOKENS * V4_FAST_TOKENS * cols +
           t % V4_FAST_TOKENS * V4_FAST_LANES;
}

/* Whether j's prefill takes the kernels' lane tile: products of more
 * than two tokens, F32 sums, and at least a lane tile's rows (fewer would
 * leave lanes idle: the hyper-connections' 24 rows keep tile_acc).  The
 * packed copy is then in the lane layout (fast.h): a group's tokens share
 * its 6 x cols values as packed_token's do, token t's value p = 16 j + l
 * at group + (l * steps + j) * V4_FAST_TOKENS + t % V4_FAST_TOKENS. */
static int lanes(const fast_job *j)
{
    return j->n > 2 && !j->hw && j->k->lane_tile && j->w->rows >= V4_FAST_LANE_ROWS;
}

/* The rows a prefill block of j takes. */
static int block_rows(const fast_job *j)
{
    return lanes(j) ? V4_FAST_LANE_ROWS : BLOCK_ROWS;
}

/* One register tile's step: F32 rows and inputs through the kernels'
 * tile, or BF16 ones (bf16: the row and input pointers are uint16_t)
 * through the pair kernels'. */
static void tile_step(const fast_job *j, const void *const *rows, const void *const *xs, int nt,
                      int64_t klen, int fresh, v4_fast_acc acc)
{
    if (j->hw)
        j->hw->tile_acc((const uint16_t *const *)rows, (const uint16_t *const *)xs, nt, klen, fresh,
                        acc);
    else
        j->k->tile_acc((const float *const *)rows, (const float *const *)xs, nt, klen, fresh, acc);
}

/* The sums of tokens [t0, t0 + nb) against the decoded rows (F32, or BF16
 * with the pair kernels), column block by column block. */
static void sum_tokens(const fast_job *j, const void *const *rows, int nr, int t0, int nb,
                       workspace *ws)
{
    int64_t cols = j->w->cols;
    size_t size = j->hw ? sizeof(uint16_t) : sizeof(float);
    int64_t run = tile_columns(j->k);
    for (int64_t kb = 0; kb < cols; kb += run) {
        int64_t klen = min_int(run, cols - kb);
        for (int g = 0; g * V4_FAST_TOKENS < nb; g++) {
            int nt = min_int(V4_FAST_TOKENS, nb - g * V4_FAST_TOKENS);
            const void *xs[V4_FAST_TOKENS];
            for (int t = 0; t < nt; t++) {
                int64_t token = t0 + g * V4_FAST_TOKENS + t;
                xs[t] = j->hw ? (const void *)(j->xh + token * j->xstride + kb)
                              : (const void *)v4_fast_x_at(packed_token(j->x, cols, token), kb);
            }
            for (int p = 0; p * V4_FAST_ROWS < nr; p++) {
                const void *rp[V4_FAST_ROWS];
                for (int i = 0; i < V4_FAST_ROWS; i++)
                    rp[i] = (const char *)rows[p * V4_FAST_ROWS + i] + kb * size;
                tile_step(j, rp, xs, nt, klen, kb == 0, ws->sums[g][p]);
            }
        }
    }
}

/* Rows [r, r + nr) (nr <= V4_FAST_LANE_ROWS) for all of the call's
 * tokens through the lane tile: decoded once into the lane panel, then
 * BLOCK_TOKENS tokens at a time, column run by column run, each group of
 * tokens' sums continued from run to run and its lane trees taken as its
 * last run ends, while the sums are in L1 (the output lines, which the
 * trees' stores would wait for, asked for before that run: the trees
 * after all runs were 2.5-3% of a flash-shape prefill's samples, 1.7-1.9%
 * so). */
static void lane_block(const fast_job *j, int64_t r, int nr, workspace *ws)
{
    int64_t cols = j->w->cols, steps = cols / V4_FAST_LANES;
    int64_t run = tile_columns(j->k) / V4_FAST_LANES;
    float *sums = ws->decoded, *panel = sums + LANE_SUMS;
    j->k->decode_lanes(j->w, r, nr, panel + lane_panel_values(cols), panel);
    for (int t0 = 0; t0 < j->n; t0 += BLOCK_TOKENS) {
        int nb = min_int(BLOCK_TOKENS, j->n - t0);
        for (int64_t j0 = 0; j0 < steps; j0 += run)
            for (int g = 0; g * V4_FAST_TOKENS < nb; g++) {
                int t = t0 + g * V4_FAST_TOKENS,
                    nt = min_int(V4_FAST_TOKENS, nb - g * V4_FAST_TOKENS);
                float *group = sums + g * LANE_GROUP_SUMS, *y = j->y + (int64_t)t * j->ystride + r;
                int last = j0 + run >= steps;
                if (last) /* the outputs' lines, cold, fetched while the tile runs */
                    for (int i = 0; i < nt; i++)
                        for (int c = 0; c < nr; c += 16)
                            __builtin_prefetch(y + i * j->ystride + c, 1, 3);
                j->k->lane_tile(panel, packed_token(j->x, cols, t), nt, steps, j0,
                                min_int(j0 + run, steps), j0 == 0, group);
                if (last) j->k->lane_reduce(group, nt, nr, y, j->ystride);
            }
    }
}

/* The call's tokens against the decoded rows (ws->decoded, row i at
 * rows[i]), BLOCK_TOKENS at a time, into y's rows [r, r + nr). */
static void sum_block(const fast_job *j, const void *const *rows, int64_t r, int nr, workspace *ws)
{
    for (int t0 = 0; t0 < j->n; t0 += BLOCK_TOKENS) {
        int nb = min_int(BLOCK_TOKENS, j->n - t0);
        sum_tokens(j, rows, nr, t0, nb, ws);
        for (int t = 0; t < nb; t += V4_FAST_TOKENS)
            for (int i = 0; i < nr; i += V4_FAST_ROWS)
                j->k->reduce(ws->sums[t / V4_FAST_TOKENS][i / V4_FAST_ROWS],
                             min_int(V4_FAST_TOKENS, nb - t), min_int(V4_FAST_ROWS, nr - i),
                             j->y + (int64_t)(t0 + t) * j->ystride + r + i, j->ystride);
    }
}

/* Rows [r, r + nr) (nr <= BLOCK_ROWS) for all of the call's tokens. */
static void prefill_block(const fast_job *j, int64_t r, int nr, workspace *ws)
{
    int64_t stride = panel_stride(j->w->cols, sizeof(float));
    for (int i = 0; i < nr; i++) j->k->decode_rows(j->w, r + i, 1, ws->decoded + i * stride);
    /* Rows past nr repeat the last one; their results are not stored. */
    const void *rows[BLOCK_ROWS];
    for (int i = 0; i < BLOCK_ROWS; i++)
        rows[i] = ws->decoded + (size_t)(i < nr ? i : nr - 1) * stride;
    sum_block(j, rows, r, nr, ws);
}

/* ---- FP8 blocks free of NaN codes ----------------------------------------- */

/* Eight bytes at a time: t = ~v & 0x7F.. is zero in exactly the NaN
 * bytes, and a zero byte of t (whose top bits are clear) is the only way
 * the borrow test sets a top bit. */
int v4_fp8_any_nan(const uint8_t *p, int64_t n)
{
    const uint64_t low7 = 0x7F7F7F7F7F7F7F7Fu, ones = 0x0101010101010101u,
                   top = 0x8080808080808080u;
    uint64_t found = 0;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        uint64_t v;
        memcpy(&v, p + j, sizeof v);
        uint64_t t = ~v & low7;
        found |= (t - ones) & ~t & top;
    }
    for (; j < n; j++) found |= (p[j] & 0x7F) == 0x7F;
    return found != 0;
}

int v4_fast_fp8_scan_block(const v4_weight *w, int64_t row, int64_t k0)
{
    int64_t r0 = row / V4_FP8_BLOCK * V4_FP8_BLOCK, c0 = k0 / V4_FP8_BLOCK * V4_FP8_BLOCK;
    int64_t r1 = min_int(r0 + V4_FP8_BLOCK, w->rows), c1 = min_int(c0 + V4_FP8_BLOCK, w->cols);
    int clean = 1;
    for (int64_t r = r0; r < r1 && clean; r++)
        clean = !v4_fp8_any_nan(w->data + r * w->cols + c0, c1 - c0);
    __atomic_store_n(&w->fp8_clean[(row / V4_FP8_BLOCK) * w->scale_stride + k0 / V4_FP8_BLOCK],
                     (uint8_t)(clean ? 1 : 2), __ATOMIC_RELAXED);
    return clean;
}

/* ---- the pair order -------------------------------------------------------- */

/* Whether any of the n values at v is nonzero and below `bound` in
 * magnitude (NaN is not). */
static int any_below(const float *v, int64_t n, float bound)
{
    int below = 0;
    for (int64_t i = 0; i < n; i++) below |= v[i] != 0 && fabsf(v[i]) < bound;
    return below;
}

void v4_fast_permute_pairs(float *v, int64_t n)
{
    float chunk[V4_PAIRS_COLUMNS];
    for (int64_t c = 0; c < n; c += V4_PAIRS_COLUMNS) {
        memcpy(chunk, v + c, sizeof chunk);
        for (int l = 0; l < V4_PAIRS_COLUMNS / 2; l++) {
            v[c + l] = chunk[2 * l + 1];
            v[c + V4_PAIRS_COLUMNS / 2 + l] = chunk[2 * l];
        }
    }
}

/* Whether one of the n bytes at e is below `least` (< 128), eight at a
 * time: with the top bit set, a byte minus `least` keeps that bit exactly
 * when the byte is at least `least` (no borrow crosses bytes), and bytes
 * with the top bit set are above it anyway. */
static int any_byte_below(const uint8_t *e, int64_t n, uint8_t least)
{
    const uint64_t top = 0x8080808080808080u, low = least * 0x0101010101010101u;
    uint64_t flags = 0;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        uint64_t v;
        memcpy(&v, e + j, sizeof v);
        flags |= ~v & ~((v | top) - low) & top;
    }
    for (; j < n; j++) flags |= e[j] < least;
    return flags != 0;
}

int v4_fast_pairs_scales_plain(const v4_weight *w, int64_t r, int nr)
{
    /* FP8 codes are at least 2^-9, FP4 ones 2^-1: scales of at least
     * 2^-51 (code 76) or 2^-59 (68) */
    int fp4 = w->dtype == V4_I8;
    int64_t n = fp4 ? w->cols / V4_FP4_BLOCK : (w->cols + V4_FP8_BLOCK - 1) / V4_FP8_BLOCK;
    int64_t first = fp4 ? r : r / V4_FP8_BLOCK,
            last = fp4 ? r + nr - 1 : (r + nr - 1) / V4_FP8_BLOCK;
    for (int64_t s = first; s <= last; s++)
        if (any_byte_below(w->scale + s * w->scale_stride, n, fp4 ? 68 : 76)) return 0;
    return 1;
}

/* Rows [r, r + nr) by the definitions, one decoded row at a time in the
 * thread's scratch: official numerics' sums that could flush, and any
 * product whose inputs' copy could not be had. */
static void definition_block(const fast_job *j, int64_t r, int nr)
{
    float *row = v4_pool_scratch(j->w->pool);
    for (int i = 0; i < nr; i++) {
        v4_weight_row(j->w, r + i, row);
        for (int t = 0; t < j->n; t++) {
            const float *x = j->in + (int64_t)t * j->instride;
            j->y[(int64_t)t * j->ystride + r + i] =
                j->flushing ? v4_pairs_dot(row, x, j->w->cols) : v4_fast_dot(row, x, j->w->cols);
        }
    }
}

/* Rows [r, r + nr) with vdpbf16ps: decoded straight to BF16 and run
 * through the pair kernels' tiles. */
static void pairs_block_bf16(const fast_job *j, int64_t r, int nr, workspace *ws)
{
    int64_t cols = j->w->cols;
    uint16_t *half = (uint16_t *)(void *)ws->decoded;
    j->hw->decode_rows(j->w, r, nr, half);
    const void *rows[BLOCK_ROWS];
    for (int i = 0; i < BLOCK_ROWS; i++) rows[i] = half + (size_t)(i < nr ? i : nr - 1) * cols;
    sum_block(j, rows, r, nr, ws);
}

/* Each token on its own: each weight decoded in registers and used at
 * once. */
static void decode_block(const fast_job *j, int64_t r, int nr)
{
    for (int t = 0; t < j->n; t++)
        j->k->rows_dot(j->w, r, nr, j->x + (int64_t)t * j->xstride,
                       j->y + (int64_t)t * j->ystride + r);
}

static void fast_rows(void *ctx, int64_t r0, int64_t r1)
{
    const fast_job *j = ctx;
    /* hw comes with more than two tokens (v4_fast_matmul_pairs) */
    workspace *ws = j->n > 2 ? v4_pool_scratch(j->w->pool) : NULL;
    int step = block_rows(j);
    for (int64_t r = r0; r < r1; r += step) {
        int nr = min_int(step, r1 - r);
        if ((!j->x && !j->xh) ||
            (j->flushing && (j->x_flushes || !v4_fast_pairs_scales_plain(j->w, r, nr))))
            definition_block(j, r, nr);
        else if (!ws)
            decode_block(j, r, nr);
        else if (j->hw)
            pairs_block_bf16(j, r, nr, ws);
        else if (lanes(j))
            lane_block(j, r, nr, ws);
        else
            prefill_block(j, r, nr, ws);
    }
}

/* Rows per task for a job: about a million multiply-adds, enough to pay
 * for a task hand-off, small enough to balance two to a few dozen
 * threads; a whole number of blocks. */
static int64_t job_grain(const fast_job *j)
{
    int64_t per_row = j->w->cols * (int64_t)j->n;
    int64_t grain = ((int64_t)1 << 20) / (per_row + 1), block = block_rows(j);
    return grain < block ? block : grain / block * block;
}

/* Products run as one region: job i's rows are tasks' indices
 * [first[i], first[i] + rows), each job's start a multiple of the
 * region's grain, so that every task starts its job's rows on a block
 * boundary as run_job's tasks do (the indices up to the next job's start
 * are no rows). */
typedef struct fast_set {
    fast_job jobs[V4_FAST_SET];
    int64_t first[V4_FAST_SET + 1];
    int count;
} fast_set;

static void set_rows(void *ctx, int64_t a, int64_t b)
{
    fast_set *s = ctx; /* fast_rows only reads its job */
    for (int i = 0; i < s->count; i++) {
        int64_t lo = a > s->first[i] ? a : s->first[i];
        int64_t end = s->first[i] + s->jobs[i].w->rows, hi = b < end ? b : end;
        if (lo < hi) fast_rows(&s->jobs[i], lo - s->first[i], hi - s->first[i]);
    }
}

/* The per-scale tables of fast.h, each filled once (pthread_once) and
 * read-only after. */
static float e2m1_scaled[256][16], mxfp4_scaled[256][16];
static uint8_t e2m1_bf16[256][32], mxfp4_bf16[256][32];
static pthread_once_t e2m1_scaled_once = PTHREAD_ONCE_INIT, mxfp4_scaled_once = PTHREAD_ONCE_INIT;

/* table[e][i] = values[i] * scale(e) for every code e. */
static void fill_scaled(float table[256][16], const float values[16], float (*scale)(uint8_t))
{
    for (int e = 0; e < 256; e++)
        for (int i = 0; i < 16; i++) table[e][i] = values[i] * scale((uint8_t)e);
}

/* bytes[e][i] and bytes[e][16 + i]: the low and high byte of the top
 * half of table[e][i]. */
static void fill_bf16(const float table[256][16], uint8_t bytes[256][32])
{
    for (int e = 0; e < 256; e++)
        for (int i = 0; i < 16; i++) {
            uint32_t u;
            memcpy(&u, &table[e][i], sizeof u);
            bytes[e][i] = (uint8_t)(u >> 16);
            bytes[e][16 + i] = (uint8_t)(u >> 24);
        }
}

static void build_e2m1_scaled(void)
{
    fill_scaled(e2m1_scaled, v4_e2m1_values, v4_fast_scale);
    fill_bf16((const float(*)[16])e2m1_scaled, e2m1_bf16);
}

static void build_mxfp4_scaled(void)
{
    static const float levels[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
    fill_scaled(mxfp4_scaled, levels, v4_mxfp4_scale);
    fill_bf16((const float(*)[16])mxfp4_scaled, mxfp4_bf16);
}

const float (*v4_fast_e2m1_scaled(void))[16]
{
    pthread_once(&e2m1_scaled_once, build_e2m1_scaled);
    return (const float(*)[16])e2m1_scaled;
}

const float (*v4_fast_mxfp4_scaled(void))[16]
{
    pthread_once(&mxfp4_scaled_once, build_mxfp4_scaled);
    return (const float(*)[16])mxfp4_scaled;
}

const uint8_t (*v4_fast_e2m1_bf16(void))[32]
{
    pthread_once(&e2m1_scaled_once, build_e2m1_scaled);
    return (const uint8_t(*)[32])e2m1_bf16;
}

const uint8_t (*v4_fast_mxfp4_bf16(void))[32]
{
    pthread_once(&mxfp4_scaled_once, build_mxfp4_scaled);
    return (const uint8_t(*)[32])mxfp4_bf16;
}

/* The pair kernels for the fast kernels k on this CPU, or NULL. */
static const v4_pairs_kernels *pairs_hardware(const v4_fast_kernels *k)
{
#if defined(__x86_64__)
    if (k == &v4_fast_avx512 && __builtin_cpu_supports("avx512bf16")) return &v4_pairs_avx512bf16;
#endif
    (void)k;
    return NULL;
}

/* A job over the caller's inputs: prefill tiles read them as they are. */
static fast_job job_over(const v4_fast_kernels *k, const v4_weight *w, const float *x,
                         int64_t xstride, int n, float *y, int64_t ystride)
{
    return (fast_job){.k = k,
                      .w = w,
                      .in = x,
                      .instride = xstride,
                      .n = n,
                      .y = y,
                      .ystride = ystride,
                      .x = x,
                      .xstride = xstride};
}

/* A job's inputs and the copy job_inputs makes of them. */
typedef struct inputs_copy {
    const fast_job *j;
    void *copy;
} inputs_copy;

/* Whether j's kernels read a packed copy of the inputs (packed_token):
 * prefill's F32 tiles do. */
static int packed(const fast_job *j)
{
    return j->n > 2 && !j->hw;
}

/* Token t's inputs `row` into its place in the packed copy, in the
 * order's layout (each 32 columns permuted, for rows a multiple of
 * V4_PAIRS_COLUMNS wide): packed_token's, or the lane layout (lanes).
 * The lane layout is written a chunk of columns at a time, lane by lane,
 * so that the stores go in order along each lane's run. */
#define PACK_COLUMNS 512
static void pack_token(const fast_job *j, const float *row, float *copy, int64_t t)
{
    int64_t cols = j->w->cols, steps = cols / V4_FAST_LANES;
    float chunk[PACK_COLUMNS];
    float *group = packed_token(copy, cols, t - t % V4_FAST_TOKENS) + t % V4_FAST_TOKENS;
    for (int64_t c0 = 0; c0 < cols; c0 += PACK_COLUMNS) {
        int64_t n = min_int(PACK_COLUMNS, cols - c0);
        if (v4_fast_pair_order(j->w))
            j->k->permute_pairs(row + c0, n, chunk);
        else
            memcpy(chunk, row + c0, (size_t)n * sizeof(float));
        if (!lanes(j)) {
            for (int64_t c = 0; c < n; c += V4_FAST_LANES)
                memcpy((float *)v4_fast_x_at(packed_token(copy, cols, t), c0 + c), chunk + c,
                       V4_FAST_LANES * sizeof(float));
            continue;
        }
        for (int l = 0; l < V4_FAST_LANES; l++) {
            float *lane = group + (l * steps + c0 / V4_FAST_LANES) * V4_FAST_TOKENS;
            for (int64_t s = 0; s < n / V4_FAST_LANES; s++)
                lane[s * V4_FAST_TOKENS] = chunk[s * V4_FAST_LANES + l];
        }
    }
}

/* Tokens [a, b) of the inputs into the copy. */
static void copy_inputs(void *ctx, int64_t a, int64_t b)
{
    const inputs_copy *c = ctx;
    const fast_job *j = c->j;
    int64_t cols = j->w->cols;
    for (int64_t t = a; t < b; t++) {
        const float *row = j->in + t * j->instride;
        if (j->hw)
            j->hw->to_bf16(row, cols, (uint16_t *)c->copy + t * j->xstride);
        else if (packed(j))
            pack_token(j, row, c->copy, t);
        else
            j->k->permute_pairs(row, cols, (float *)c->copy + t * j->xstride);
    }
}

/* Values per task of copy_inputs: a prefill chunk's copy was a few
 * percent of the samples on the caller's thread alone, while the others
 * waited for the product it precedes. */
#define COPY_GRAIN_VALUES 65536

/* The row stride, in values of `size` bytes, of a copy of inputs `cols`
 * wide: cols, or one 64-byte line more where the rows would start a whole
 * number of 4 kB apart.  A register tile reads six tokens' rows and four
 * weight rows at the same column, and an L1 cache (64 sets of 64-byte
 * lines, 8 or 12 ways) puts lines 4 kB apart in the same set: ten streams
 * in one set evict each other before their next use.  The line of padding
 * spreads the tokens over six sets (measured on Zen 4, one thread, 4096
 * columns: the tile's rate from 84% to 94% of the FMA peak).  Prefill's
 * F32 copy is packed instead (packed_token); the BF16 copy and decode's
 * are not. */
static int64_t copy_stride(int64_t cols, size_t size)
{
    return (size_t)cols * size % 4096 == 0 ? cols + (int64_t)(64 / size) : cols;
}

/* The copy of the inputs that j's kernels read, if they need one: BF16
 * for vdpbf16ps (j->hw), or each 32 columns permuted for the pair order;
 * rows copy_stride apart, from the work buffers b, or NULL (none needed,
 * or no memory for it: then j->x and j->xh are both NULL).  Give it back
 * with v4_buffers_put. */
static void *job_inputs(fast_job *j, v4_buffers *b)
{
    int64_t cols = j->w->cols;
    if (!j->hw && !packed(j) && !v4_fast_pair_order(j->w)) return NULL;
    j->xstride = copy_stride(cols, j->hw ? sizeof(uint16_t) : sizeof(float));
    size_t values = (size_t)j->n * (size_t)j->xstride;
    if (packed(j))
        values =
            (size_t)((j->n + V4_FAST_TOKENS - 1) / V4_FAST_TOKENS) * V4_FAST_TOKENS * (size_t)cols;
    void *copy = v4_buffers_get(b, j->hw ? (values + 1) / 2 : values);
    inputs_copy c = {j, copy};
    if (copy) v4_parallel_for(j->w->pool, j->n, 1 + COPY_GRAIN_VALUES / cols, copy_inputs, &c);
    j->x = j->hw ? NULL : copy;
    j->xh = j->hw ? copy : NULL;
    return copy;
}

/* Runs the jobs of s as one region, in tasks of `grain` rows. */
static void run_set(fast_set *s, int64_t grain)
{
    for (int i = 0; i < s->count; i++)
        s->first[i + 1] = s->first[i] + (s->jobs[i].w->rows + grain - 1) / grain * grain;
    v4_parallel_for(s->jobs[0].w->pool, s->first[s->count], grain, set_rows, s);
}

/* Tokens [t0, t0 + n) of job j as a job of their own, t0 a multiple of
 * V4_FAST_TOKENS (so that prefill's packed copy reads alike from there)
 * and n above two where j's is (so that the slice takes j's path). */
static fast_job token_slice(const fast_job *j, int t0, int n)
{
    fast_job s = *j;
    s.in = j->in + (int64_t)t0 * j->instride;
    s.y = j->y + (int64_t)t0 * j->ystride;
    s.n = n;
    if (j->x)
        s.x = packed(j) ? packed_token(j->x, j->w->cols, t0) : j->x + (int64_t)t0 * j->xstride;
    if (j->xh) s.xh = j->xh + (int64_t)t0 * j->xstride;
    return s;
}

/* A product of many tokens whose rows make fewer blocks than twice the
 * threads (the hyper-connections' 24 rows, a router's) would leave
 * threads idle if split by rows alone: its tokens are cut into slices of
 * whole register tiles too, run as one set.  Every output is the same sum
 * whichever slice computes it.  Flash-shape prefill spent 2% of its time
 * (two threads, 256-token chunks) in its 24-row products, on one thread;
 * a 24 x 16384 BF16 product of 256 tokens went from 69 to 104 GFLOP/s
 * (two threads, Zen 5, medians of five interleaved rounds). */
static void run_job(fast_job *j)
{
    int threads = v4_pool_threads(j->w->pool);
    int64_t blocks = (j->w->rows + block_rows(j) - 1) / block_rows(j);
    int groups = (j->n + V4_FAST_TOKENS - 1) / V4_FAST_TOKENS;
    if (j->n <= 2 || blocks >= 2 * (int64_t)threads || groups < 2) {
        v4_parallel_for(j->w->pool, j->w->rows, job_grain(j), fast_rows, j);
        return;
    }
    int slices = min_int(min_int((2 * threads + blocks - 1) / blocks, groups), V4_FAST_SET);
    int per = (groups + slices - 1) / slices * V4_FAST_TOKENS;
    fast_set s = {.count = 0};
    for (int t0 = 0; t0 < j->n;) {
        int n = min_int(per, j->n - t0);
        if (j->n - t0 - n <= 2) n = j->n - t0; /* no slice of one or two tokens */
        s.jobs[s.count++] = token_slice(j, t0, n);
        t0 += n;
    }
    run_set(&s, job_grain(&s.jobs[0]));
}

/* Whether jobs a and b read the same inputs the same way, so that one
 * copy of them serves both (an expert's gate and up products). */
static int same_inputs(const fast_job *a, const fast_job *b)
{
    return a->in == b->in && a->instride == b->instride && a->n == b->n &&
           a->w->cols == b->w->cols && a->hw == b->hw && lanes(a) == lanes(b);
}

void v4_fast_matmul_set(const v4_fast_kernels *k, const v4_product *set, int count)
{
    for (int done = 0; done < count; done += V4_FAST_SET) {
        fast_set s = {.count = min_int(V4_FAST_SET, count - done)};
        void *copies[V4_FAST_SET];
        int64_t grain = 0, widest = BLOCK_ROWS; /* every task whole blocks of every job */
        for (int i = 0; i < s.count; i++) {
            const v4_product *p = &set[done + i];
            s.jobs[i] = job_over(k, p->w, p->x, p->w->cols, p->n, p->y, p->ystride);
            copies[i] = NULL;
            if (i > 0 && same_inputs(&s.jobs[i], &s.jobs[i - 1])) {
                s.jobs[i].x = s.jobs[i - 1].x;
                s.jobs[i].xh = s.jobs[i - 1].xh;
                s.jobs[i].xstride = s.jobs[i - 1].xstride;
            } else {
                copies[i] = job_inputs(&s.jobs[i], p->w->buffers);
            }
            int64_t g = job_grain(&s.jobs[i]);
            if (grain == 0 || g < grain) grain = g;
            widest = block_rows(&s.jobs[i]) > widest ? block_rows(&s.jobs[i]) : widest;
        }
        run_set(&s, (grain + widest - 1) / widest * widest);
        for (int i = 0; i < s.count; i++) v4_buffers_put(s.jobs[i].w->buffers, copies[i]);
    }
}

void v4_fast_matmul(const v4_fast_kernels *k, const v4_weight *w, const float *x, int64_t xstride,
                    int n, float *y, int64_t ystride)
{
    fast_job j = job_over(k, w, x, xstride, n, y, ystride);
    void *copy = job_inputs(&j, w->buffers);
    run_job(&j);
    v4_buffers_put(w->buffers, copy);
}

int v4_fast_pairs_weight(const v4_weight *w)
{
    return (w->dtype == V4_F8_E4M3 || w->dtype == V4_I8) && v4_fast_pair_order(w);
}

void v4_fast_matmul_pairs(const v4_fast_kernels *k, const v4_weight *w, const float *x,
                          int64_t xstride, int n, float *y, int64_t ystride, v4_buffers *b)
{
    fast_job j = job_over(k, w, x, xstride, n, y, ystride);
    j.hw = n > 2 ? pairs_hardware(k) : NULL;
    void *copy = job_inputs(&j, b);
    if (j.hw && !copy) { /* no memory for the BF16 copy: the definition, row by row */
        j.hw = NULL;
        j.flushing = j.x_flushes = 1;
    } else if (!j.hw) {
        j.flushing = 1;
        for (int t = 0; t < n; t++)
            j.x_flushes |= any_below(x + (size_t)t * xstride, w->cols, 0x1p-52f);
    }
    run_job(&j);
    v4_buffers_put(b, copy);
}
