/*
 * fast.c - choosing the fast kernels for this CPU, and the matrix product
 * that drives them.
 *
 * v4_fast_matmul splits the weight rows between the engine's threads.
 * With one or two tokens (decode) the weights are decoded in registers per
 * token and each weight byte is read once per token, at memory speed; with
 * more (prefill) a block of rows is decoded once into a per-thread buffer
 * and then serves all of the call's tokens from cache.  Both paths compute fast.h's order, so which
 * one runs, and how the rows are split, never shows in the results.
 */
#include "engine/kernels/fast.h"

#include "engine/kernels/blocks.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- which kernels -------------------------------------------------------- */

static int cpu_runs(const char *name)
{
    if (strcmp(name, "scalar") == 0) return 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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
    const float *x;
    int64_t xstride;
    int n;
    float *y;
    int64_t ystride;
} fast_job;

/* Prefill works on blocks: BLOCK_ROWS weight rows are decoded at once (8
 * register tiles), and their partial sums for up to BLOCK_TOKENS tokens are
 * kept while the columns go by BLOCK_COLS at a time, so that a block's
 * slice of the tokens (96 x 1024 floats) stays in the L2 cache while the
 * register tiles sweep it; longer column runs also save the tiles' sums a
 * trip through memory (measured: 256 -> 1024 columns cut flash-shape
 * prefill CPU time by about 12%, 4096 gained nothing more).  Each token's
 * input row is then read from memory once per BLOCK_ROWS rows.  Continuing
 * a lane's sum in the next block of columns is the same sum, in the same
 * order. */
#define BLOCK_ROWS   32
#define BLOCK_TOKENS 96
#define BLOCK_COLS   1024

/* A thread's scratch (the pool's, v4_pool_scratch): the partial sums of a
 * block of tokens, then BLOCK_ROWS decoded rows (64-byte aligned, so that
 * no 64-byte load of a decoded row splits a cache line). */
typedef struct workspace {
    v4_fast_acc sums[BLOCK_TOKENS / V4_FAST_TOKENS][BLOCK_ROWS / V4_FAST_ROWS];
    _Alignas(64) float decoded[];
} workspace;

size_t v4_fast_scratch_bytes(int64_t cols)
{
    return sizeof(workspace) + (size_t)BLOCK_ROWS * (size_t)cols * sizeof(float);
}

static int min_int(int64_t a, int64_t b)
{
    return (int)(a < b ? a : b);
}

/* The sums of tokens [t0, t0 + nb) against the decoded rows, column block
 * by column block. */
static void sum_tokens(const fast_job *j, const float *const *rows, int nr, int t0, int nb,
                       workspace *ws)
{
    int64_t cols = j->w->cols;
    int groups = (nb + V4_FAST_TOKENS - 1) / V4_FAST_TOKENS;
    int tiles = (nr + V4_FAST_ROWS - 1) / V4_FAST_ROWS;
    for (int g = 0; g < groups; g++) memset(ws->sums[g], 0, (size_t)tiles * sizeof(v4_fast_acc));
    for (int64_t kb = 0; kb < cols; kb += BLOCK_COLS) {
        int64_t klen = min_int(BLOCK_COLS, cols - kb);
        for (int g = 0; g * V4_FAST_TOKENS < nb; g++) {
            int nt = min_int(V4_FAST_TOKENS, nb - g * V4_FAST_TOKENS);
            const float *xs[V4_FAST_TOKENS];
            for (int t = 0; t < nt; t++)
                xs[t] = j->x + (int64_t)(t0 + g * V4_FAST_TOKENS + t) * j->xstride + kb;
            for (int p = 0; p * V4_FAST_ROWS < nr; p++) {
                const float *rp[V4_FAST_ROWS];
                for (int i = 0; i < V4_FAST_ROWS; i++) rp[i] = rows[p * V4_FAST_ROWS + i] + kb;
                j->k->tile_acc(rp, xs, nt, klen, ws->sums[g][p]);
            }
        }
    }
}

/* Rows [r, r + nr) (nr <= BLOCK_ROWS) for all of the call's tokens. */
static void prefill_block(const fast_job *j, int64_t r, int nr, workspace *ws)
{
    int64_t cols = j->w->cols;
    j->k->decode_rows(j->w, r, nr, ws->decoded);
    /* Rows past nr repeat the last one; their results are not stored. */
    const float *rows[BLOCK_ROWS];
    for (int i = 0; i < BLOCK_ROWS; i++)
        rows[i] = ws->decoded + (size_t)(i < nr ? i : nr - 1) * cols;
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

/* One or two tokens: each weight decoded in registers and used at once. */
static void decode_block(const fast_job *j, int64_t r, int nr)
{
    float y[V4_FAST_ROWS];
    for (int i0 = 0; i0 < nr; i0 += V4_FAST_ROWS) {
        int n = min_int(V4_FAST_ROWS, nr - i0);
        for (int t = 0; t < j->n; t++) {
            j->k->rows_dot(j->w, r + i0, n, j->x + (int64_t)t * j->xstride, y);
            memcpy(j->y + (int64_t)t * j->ystride + r + i0, y, (size_t)n * sizeof(float));
        }
    }
}

static void fast_rows(void *ctx, int64_t r0, int64_t r1)
{
    const fast_job *j = ctx;
    workspace *ws = j->n > 2 ? v4_pool_scratch(j->w->pool) : NULL;
    for (int64_t r = r0; r < r1; r += BLOCK_ROWS) {
        int nr = min_int(BLOCK_ROWS, r1 - r);
        if (ws)
            prefill_block(j, r, nr, ws);
        else
            decode_block(j, r, nr);
    }
}

void v4_fast_matmul(const v4_fast_kernels *k, const v4_weight *w, const float *x, int64_t xstride,
                    int n, float *y, int64_t ystride)
{
    fast_job j = {k, w, x, xstride, n, y, ystride};
    /* Tasks of about a million multiply-adds: enough to pay for a task
     * hand-off, small enough to balance two to a few dozen threads. */
    int64_t per_row = w->cols * (int64_t)n;
    int64_t grain = ((int64_t)1 << 20) / (per_row + 1);
    grain = grain < BLOCK_ROWS ? BLOCK_ROWS : grain / BLOCK_ROWS * BLOCK_ROWS;
    v4_parallel_for(w->pool, w->rows, grain, fast_rows, &j);
}
