/*
 * kernels.c - tome-kbench: the fast kernels' matrix products alone, each as
 * a fraction of a machine limit measured in the same run.
 *
 * A flash-shape decode step spends nine tenths of its time in one-token
 * products that stream weights (FP8 attention and shared-expert matrices,
 * FP4 routed experts, the BF16 LM head), and prefill most of its time in
 * products of a chunk's tokens; the whole-model benchmarks (bench-engine.sh,
 * bench-peer.sh) cannot say which of these falls short.  This runs each
 * kind alone at flash-shape's shapes, and GGUF's block types as ds4's
 * recipes and llama.cpp's own mixes use them (Q8_0 attention rows; Q4_K,
 * Q2_K, IQ2_XXS, Q6_K routed experts, decoded and in a prefill product):
 *
 *   - over enough matrices to rotate past the caches, as a decode step's
 *     weights do: one matrix that fits in L3 reads far faster than the same
 *     kernel over a token's weights;
 *   - in 2 MB-aligned buffers offered as huge pages, as the engine's
 *     resident copies are;
 *   - decode as GB/s of weight bytes, a fraction of the read bandwidth;
 *   - prefill as GFLOP/s, a fraction of the FP32 FMA peak;
 *   - at one thread and at all of them.
 *
 * The limits are measured before and after the products, and each fraction
 * is of the higher reading (bench-peer.sh's rule: a busy or throttled
 * minute only lowers a reading).
 *
 *   tome-kbench [--threads N] [--mb N] [--csv FILE]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/options.h"
#include "engine/internal.h"
#include "engine/kernels/blocks.h"
#include "plan/limits.h"

#define BANDWIDTH_BUFFER ((size_t)1 << 30)
/* Each product kind is timed as the fastest of its passes over its
 * matrices, at least MIN_PASSES of them and as many more as fit in
 * MIN_SECONDS: on a virtual machine a kernel's speed drops by a third or
 * more for stretches of a few hundred milliseconds, and three passes of a
 * decode kind (about 50 ms in all) often fell in one; a one-thread FP8
 * decode read 9.7 GB/s as the best of three and 15.9 as the best of
 * forty, on a Zen 3 whose read bandwidth measured 18.5. */
#define MIN_PASSES  3
#define MIN_SECONDS 1.0

/* One product kind: a weight type and shape, and the tokens per product
 * (1: decode). */
typedef struct kernel_case {
    const char *name;
    v4_dtype dtype;
    int64_t rows, cols;
    int tokens;
} kernel_case;

static const kernel_case cases[] = {
    {"fp8 wo_a", V4_F8_E4M3, 8192, 4096, 1},       {"fp8 wq_b", V4_F8_E4M3, 32768, 1024, 1},
    {"fp4 expert w1", V4_I8, 2048, 4096, 1},       {"fp4 expert w2", V4_I8, 4096, 2048, 1},
    {"bf16 lm head", V4_BF16, 129280, 4096, 1},    {"fp8 wo_a", V4_F8_E4M3, 8192, 4096, 256},
    {"fp4 expert w1", V4_I8, 2048, 4096, 96},      {"q8_0 wo_a", V4_Q8_0, 8192, 4096, 1},
    {"q4_k expert w1", V4_Q4_K, 2048, 4096, 1},    {"q2_k expert w2", V4_Q2_K, 4096, 2048, 1},
    {"iq2_xxs exp w1", V4_IQ2_XXS, 2048, 4096, 1}, {"q6_k expert w2", V4_Q6_K, 4096, 2048, 1},
    {"q4_k expert w1", V4_Q4_K, 2048, 4096, 96},
};
#define N_CASES (sizeof cases / sizeof cases[0])

/* The machine's limits at 1 and `threads` threads: FMA peak (FLOP/s) and
 * read bandwidth (bytes/s). */
typedef struct limits {
    double fma[2], bandwidth[2];
} limits;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Raise each of l's limits to this reading where it is higher. */
static void read_limits(limits *l, int threads)
{
    for (int i = 0; i < 2; i++) {
        int t = i ? threads : 1;
        double fma = 0, bandwidth = 0;
        tome_error err = {0};
        if (tome_limit_fma_peak(t, &fma, &err) != 0 ||
            tome_limit_measure(TOME_LIMIT_READ_BW, t, BANDWIDTH_BUFFER, &bandwidth, &err) != 0)
            fprintf(stderr, "tome-kbench: %s\n", err.msg);
        if (fma > l->fma[i]) l->fma[i] = fma;
        if (bandwidth > l->bandwidth[i]) l->bandwidth[i] = bandwidth;
    }
}

/* xorshift64: weights need only be plausible, not good random numbers, and
 * rand() took most of the time of building a gigabyte of them. */
static uint8_t next_byte(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint8_t)(*s >> 24);
}

/* Random codes of w's type: FP8 without NaN codes (which would send the
 * kernels down their general path), BF16 of magnitudes near 1, scales near
 * 2^0. */
static void fill_weight(uint8_t *data, size_t bytes, uint8_t *scale, size_t scale_bytes,
                        v4_dtype dtype, uint64_t *seed)
{
    for (size_t i = 0; i < bytes; i++) {
        uint8_t b = next_byte(seed);
        if (dtype == V4_F8_E4M3 && (b & 0x7F) == 0x7F) b ^= 1;
        if (dtype == V4_BF16 && i % 2 == 1) b = (uint8_t)((b & 0x80) | 0x3C | (b & 3));
        data[i] = b;
    }
    for (size_t i = 0; i < scale_bytes; i++) scale[i] = (uint8_t)(120 + next_byte(seed) % 8);
}

/* GGUF rows of a block type: GGUF_DISTINCT_ROWS quantised from random
 * values by tome's own quantiser (random bytes would make NaN and
 * infinite block scales), repeated: the kernels' work does not depend on
 * the values, and quantising a gigabyte of IQ2_XXS would take minutes. */
#define GGUF_DISTINCT_ROWS 64

static int fill_gguf(uint8_t *data, const kernel_case *c, uint64_t *seed, tome_error *err)
{
    size_t row_bytes = v4_dtype_row_bytes(c->dtype, c->cols);
    float *values = malloc((size_t)c->cols * sizeof *values);
    if (!values) return tome_errorf(err, TOME_ENOMEM, "no memory for a %s row", c->name);
    for (int64_t r = 0; r < c->rows; r++) {
        uint8_t *row = data + (size_t)r * row_bytes;
        if (r >= GGUF_DISTINCT_ROWS) {
            memcpy(row, data + (size_t)(r % GGUF_DISTINCT_ROWS) * row_bytes, row_bytes);
            continue;
        }
        for (int64_t k = 0; k < c->cols; k++) values[k] = (float)next_byte(seed) / 128.0f - 1.0f;
        v4_gguf_quantize(c->dtype, values, c->cols, row);
    }
    free(values);
    return 0;
}

/* The matrices of one case, `count` of them, for products on `pool`. */
typedef struct matrix_set {
    v4_weight *w;
    int count;
    size_t bytes; /* weight and scale bytes of all of them */
} matrix_set;

static void set_free(matrix_set *s)
{
    for (int i = 0; s->w && i < s->count; i++) {
        free((void *)s->w[i].data);
        free((void *)s->w[i].scale);
        free(s->w[i].fp8_clean);
    }
    free(s->w);
    memset(s, 0, sizeof *s);
}

/* Enough matrices of c's shape to fill `mb` megabytes (at least one). */
static int set_new(const kernel_case *c, size_t mb, matrix_set *s, tome_error *err)
{
    size_t row_bytes = v4_dtype_row_bytes(c->dtype, c->cols);
    int64_t scale_rows = c->dtype == V4_I8 ? c->rows : c->dtype == V4_F8_E4M3 ? c->rows / 128 : 0;
    int64_t scale_stride = c->dtype == V4_I8 ? c->cols / 32 : c->cols / 128;
    size_t data_bytes = (size_t)c->rows * row_bytes,
           scale_bytes = (size_t)(scale_rows * scale_stride);
    size_t one = data_bytes + scale_bytes, want = mb << 20;
    memset(s, 0, sizeof *s);
    s->count = (int)((want + one - 1) / one);
    if (s->count < 1) s->count = 1;
    s->w = calloc((size_t)s->count, sizeof *s->w);
    if (!s->w) return tome_errorf(err, TOME_ENOMEM, "no memory for %d matrices", s->count);
    uint64_t seed = 0x9E3779B97F4A7C15u;
    for (int i = 0; i < s->count; i++) {
        v4_weight *w = &s->w[i];
        uint8_t *data = tome_huge_buffer(data_bytes),
                *scale = scale_bytes ? malloc(scale_bytes) : NULL;
        w->data = data, w->scale = scale;
        if (!data || (scale_bytes && !scale)) {
            set_free(s);
            return tome_errorf(err, TOME_ENOMEM, "no memory for a %zu-byte %s matrix", one,
                               c->name);
        }
        int rc = 0;
        if (!v4_block_format_of(c->dtype))
            fill_weight(data, data_bytes, scale, scale_bytes, c->dtype, &seed);
        else if (i == 0)
            rc = fill_gguf(data, c, &seed, err);
        else /* the first one's rows again: quantising is slow */
            memcpy(data, s->w[0].data, data_bytes);
        if (rc != 0) {
            set_free(s);
            return rc;
        }
        w->dtype = c->dtype, w->rows = c->rows, w->cols = c->cols;
        w->scale_stride = scale_bytes ? scale_stride : 0;
        w->fast = 1;
        if (c->dtype == V4_F8_E4M3 && !(w->fp8_clean = calloc(scale_bytes, 1))) {
            set_free(s);
            return tome_errorf(err, TOME_ENOMEM, "no memory for NaN marks");
        }
        s->bytes += one;
    }
    return 0;
}

/* Seconds of the fastest pass of c's products over the set (MIN_PASSES
 * and MIN_SECONDS), after one untimed pass (page faults, the kernels' NaN
 * scans). */
static double time_products(const kernel_case *c, matrix_set *s, v4_pool *pool, v4_buffers *bufs,
                            const float *x, float *y)
{
    for (int i = 0; i < s->count; i++) s->w[i].pool = pool, s->w[i].buffers = bufs;
    double best = 0, start = 0;
    for (int pass = 0; pass <= MIN_PASSES || now() - start < MIN_SECONDS; pass++) {
        double t0 = now();
        for (int i = 0; i < s->count; i++) v4_matmul(&s->w[i], x, c->tokens, y, c->rows);
        double t = now() - t0;
        if (pass == 0) start = now();
        if (pass > 0 && (best == 0 || t < best)) best = t;
    }
    return best;
}

/* A case's rate at one thread and all: GB/s of weights (decode) or
 * GFLOP/s (prefill), in rate[]. */
static int run_case(const kernel_case *c, size_t mb, v4_pool *const pools[2], v4_buffers *bufs,
                    double rate[2], int *count, tome_error *err)
{
    matrix_set s;
    int rc = set_new(c, mb, &s, err);
    if (rc != 0) return rc;
    float *x = malloc((size_t)c->tokens * (size_t)c->cols * sizeof *x),
          *y = malloc((size_t)c->tokens * (size_t)c->rows * sizeof *y);
    if (!x || !y) {
        free(x), free(y), set_free(&s);
        return tome_errorf(err, TOME_ENOMEM, "no memory for %s's inputs", c->name);
    }
    uint64_t seed = 42;
    for (size_t i = 0; i < (size_t)c->tokens * (size_t)c->cols; i++)
        x[i] = (float)next_byte(&seed) / 128.0f - 1.0f;
    double work = c->tokens == 1 ? (double)s.bytes
                                 : 2.0 * (double)c->rows * (double)c->cols * c->tokens * s.count;
    for (int i = 0; i < 2; i++) rate[i] = work / time_products(c, &s, pools[i], bufs, x, y) / 1e9;
    *count = s.count;
    free(x), free(y), set_free(&s);
    return 0;
}

/* c's row of the table, and its two lines of the CSV where `csv`. */
static void print_case(const kernel_case *c, int count, const double rate[2], const limits *l,
                       int threads, FILE *csv)
{
    int decode = c->tokens == 1;
    const char *unit = decode ? "GB/s" : "GFLOP/s";
    double frac[2];
    for (int i = 0; i < 2; i++) {
        double limit = (decode ? l->bandwidth[i] : l->fma[i]) / 1e9;
        frac[i] = limit > 0 ? rate[i] / limit : 0;
    }
    for (int i = 0; csv && i < 2; i++)
        fprintf(csv, "%s,%s,%lld,%lld,%d,%d,%d,%.2f,%s,%.4f\n", c->name,
                decode ? "decode" : "prefill", (long long)c->rows, (long long)c->cols, c->tokens,
                count, i ? threads : 1, rate[i], unit, frac[i]);
    printf("%-14s %6lld x %-5lld %4d %4d | %7.1f %-7s %4.0f%% | %7.1f %-7s %4.0f%%\n", c->name,
           (long long)c->rows, (long long)c->cols, c->tokens, count, rate[0], unit, 100 * frac[0],
           rate[1], unit, 100 * frac[1]);
}

/* Whether --only lets the case run. */
static int chosen(const kernel_case *c, const char *only)
{
    return !only || strstr(c->name, only) != NULL;
}

static void print_limits(const limits *l, int threads)
{
    printf("kernels: fast (%s); limits, the higher of two readings: FP32 FMA %.1f / %.1f GFLOP/s, "
           "read bandwidth %.1f / %.1f GB/s at 1 / %d threads\n",
           v4_kernels_isa(), l->fma[0] / 1e9, l->fma[1] / 1e9, l->bandwidth[0] / 1e9,
           l->bandwidth[1] / 1e9, threads);
}

int main(int argc, char **argv)
{
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), mb = 256, n_operands = 0;
    const char *csv_path = NULL, *only = NULL;
    const tome_option options[] = {
        TOME_INT("threads", 't', "N", threads, 1, 256, "threads for the all-threads column"),
        TOME_INT("mb", 0, "N", mb, 1, 1 << 16,
                 "megabytes of matrices per product kind (default 256: past the caches)"),
        TOME_STRING("csv", 0, "FILE", csv_path, "also write the figures to FILE as CSV"),
        TOME_STRING("only", 0, "TEXT", only, "run only the products whose name contains TEXT"),
    };
    const tome_cli cli = {.program = "tome-kbench",
                          .usage = "[--threads N] [--mb N] [--csv FILE] [--only TEXT]",
                          .options = options,
                          .n_options = sizeof options / sizeof options[0]};
    int status;
    if (tome_options_start(&cli, argc, argv, NULL, tome_options_no_operands, 2, &n_operands,
                           &status))
        return status;
    tome_error err = {0};
    FILE *csv = csv_path ? fopen(csv_path, "w") : NULL;
    if (csv_path && !csv) {
        fprintf(stderr, "tome-kbench: cannot write %s: %s\n", csv_path, strerror(errno));
        return 1;
    }
    tome_limit_warn_if_busy("tome-kbench");
    limits l = {{0, 0}, {0, 0}};
    read_limits(&l, threads);
    v4_pool *pools[2] = {NULL, NULL};
    v4_buffers *bufs = NULL;
    size_t scratch = v4_kernel_scratch_bytes(V4_MAX_COLS);
    if (v4_pool_new(1, scratch, &pools[0], &err) != 0 ||
        v4_pool_new(threads, scratch, &pools[1], &err) != 0 || v4_buffers_new(&bufs, &err) != 0) {
        fprintf(stderr, "tome-kbench: %s\n", err.msg);
        return 1;
    }
    double rates[N_CASES][2];
    int counts[N_CASES];
    for (size_t i = 0; i < N_CASES; i++)
        if (chosen(&cases[i], only) &&
            run_case(&cases[i], (size_t)mb, pools, bufs, rates[i], &counts[i], &err) != 0) {
            fprintf(stderr, "tome-kbench: %s\n", err.msg);
            return 1;
        }
    read_limits(&l, threads);
    print_limits(&l, threads);
    if (csv) fprintf(csv, "product,kind,rows,cols,tokens,matrices,threads,rate,unit,fraction\n");
    printf("%-14s %-14s %4s %4s | %-20s | %-20s\n", "product", "shape", "tok", "mats", "1 thread",
           "all threads");
    for (size_t i = 0; i < N_CASES; i++)
        if (chosen(&cases[i], only)) print_case(&cases[i], counts[i], rates[i], &l, threads, csv);
    if (csv && fclose(csv) != 0) {
        fprintf(stderr, "tome-kbench: writing %s: %s\n", csv_path, strerror(errno));
        return 1;
    }
    v4_buffers_free(bufs);
    v4_pool_free(pools[0]);
    v4_pool_free(pools[1]);
    return 0;
}
