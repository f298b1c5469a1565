/*
 * limits.c - the machine's peaks and read bandwidth, measured (limits.h).
 *
 * Each peak runs a loop of independent accumulators (enough to cover the
 * instruction's latency) for a fixed time, best of three, and counts
 * operations: FLOP for FMA and BF16 (2 per multiply-add), integer
 * multiply-adds x2 for int8 (OPS).  Bandwidth sums a buffer read once
 * before timing so that it is resident.  Instruction sets the CPU lacks
 * are reported as 0.  The loops live here, not in bench/, because the fit
 * check (plan.c) needs them as much as the benchmarks do.
 */
#include "plan/limits.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* A resident buffer of 8-byte words for the bandwidth loop. */
typedef struct tome_buffer {
    const uint64_t *words;
    size_t n_words;
} tome_buffer;

#define RUN_SECONDS 0.3

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A peak loop: runs for `seconds`, returns the operations (bytes) done. */
typedef double (*peak_fn)(const tome_buffer *buf, double seconds);

#if defined(__x86_64__)
/* 12 independent FMA chains: latency 4 x 2 ports needs at least 8. */
#define CHAINS 12

__attribute__((target("avx512f"))) static double fma512(const tome_buffer *buf, double seconds)
{
    __m512 a[CHAINS], m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) a[i] = _mm512_set1_ps((float)i);
    double ops = 0, t0 = now();
    while (now() - t0 < seconds) {
        for (int r = 0; r < 4096; r++)
#pragma GCC unroll 16
            for (int i = 0; i < CHAINS; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
        ops += 4096.0 * CHAINS * 32;
    }
    float sink = 0;
    for (int i = 0; i < CHAINS; i++) sink += _mm512_reduce_add_ps(a[i]);
    return sink == 12345.0f ? 0 : ops;
}

__attribute__((target("avx2,fma"))) static double fma256(const tome_buffer *buf, double seconds)
{
    __m256 a[CHAINS], m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) a[i] = _mm256_set1_ps((float)i);
    double ops = 0, t0 = now();
    while (now() - t0 < seconds) {
        for (int r = 0; r < 4096; r++)
#pragma GCC unroll 16
            for (int i = 0; i < CHAINS; i++) a[i] = _mm256_fmadd_ps(a[i], m, c);
        ops += 4096.0 * CHAINS * 16;
    }
    float out[8], sink = 0;
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_ps(out, a[i]);
        sink += out[0];
    }
    return sink == 12345.0f ? 0 : ops;
}

/* vdpbf16ps: 32 BF16 products per instruction, each 2 FLOP. */
__attribute__((target("avx512f,avx512bf16"))) static double bf16dot(const tome_buffer *buf,
                                                                    double seconds)
{
    __m512 a[CHAINS];
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = x;
    for (int i = 0; i < CHAINS; i++) a[i] = _mm512_setzero_ps();
    double ops = 0, t0 = now();
    while (now() - t0 < seconds) {
        for (int r = 0; r < 4096; r++)
#pragma GCC unroll 16
            for (int i = 0; i < CHAINS; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
        ops += 4096.0 * CHAINS * 64;
    }
    float sink = 0;
    for (int i = 0; i < CHAINS; i++) sink += _mm512_reduce_add_ps(a[i]);
    return sink == 12345.0f ? 0 : ops;
}

/* vpdpbusd: 64 u8 x s8 products per instruction, each 2 OPS. */
__attribute__((target("avx512f,avx512vnni"))) static double int8dot(const tome_buffer *buf,
                                                                    double seconds)
{
    __m512i a[CHAINS], x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-2);
    for (int i = 0; i < CHAINS; i++) a[i] = _mm512_setzero_si512();
    double ops = 0, t0 = now();
    while (now() - t0 < seconds) {
        for (int r = 0; r < 4096; r++)
#pragma GCC unroll 16
            for (int i = 0; i < CHAINS; i++) a[i] = _mm512_dpbusd_epi32(a[i], x, y);
        ops += 4096.0 * CHAINS * 128;
    }
    int sink = 0;
    for (int i = 0; i < CHAINS; i++) sink += _mm512_reduce_add_epi32(a[i]);
    return sink == 12345 ? 0 : ops;
}
#endif

/* Sum a buffer of 8-byte words, 8 chains; returns bytes read. */
static double read_bw(const tome_buffer *buf, double seconds)
{
    const uint64_t *bw_buf = buf->words;
    size_t bw_words = buf->n_words;
    double bytes = 0, t0 = now();
    uint64_t s[8] = {0};
    while (now() - t0 < seconds) {
        for (size_t i = 0; i + 8 <= bw_words; i += 8)
            for (int j = 0; j < 8; j++) s[j] += bw_buf[i + j];
        bytes += (double)bw_words * 8;
    }
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7] == 42 ? 0 : bytes;
}

typedef struct worker {
    pthread_t thread;
    peak_fn fn;
    const tome_buffer *buf;
    double ops, seconds;
} worker;

static void *run_worker(void *arg)
{
    worker *w = arg;
    double t0 = now();
    w->ops = w->fn(w->buf, RUN_SECONDS);
    w->seconds = now() - t0;
    return NULL;
}

/* Operations per second of `fn` on `threads` threads at once, once. */
static double measure_once(peak_fn fn, const tome_buffer *buf, int threads)
{
    worker *w = calloc((size_t)threads, sizeof *w);
    if (!w) return 0;
    int started = 0;
    for (; started < threads; started++) {
        w[started].fn = fn;
        w[started].buf = buf;
        if (pthread_create(&w[started].thread, NULL, run_worker, &w[started]) != 0) break;
    }
    double rate = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        rate += w[i].ops / w[i].seconds;
    }
    free(w);
    return rate;
}

/* The best of three: a limit is what the machine can do, and another
 * process taking a core for a moment only ever lowers a measurement. */
static double measure(peak_fn fn, const tome_buffer *buf, int threads)
{
    double best = 0;
    for (int i = 0; i < 3; i++) {
        double r = measure_once(fn, buf, threads);
        if (r > best) best = r;
    }
    return best;
}

typedef struct limit_row {
    const char *name, *unit;
    peak_fn fn;
} limit_row;

static const limit_row rows[TOME_LIMIT_COUNT] = {
#if defined(__x86_64__)
    [TOME_LIMIT_FMA_AVX512] = {"fp32_fma_avx512", "GFLOP/s", fma512},
    [TOME_LIMIT_FMA_AVX2] = {"fp32_fma_avx2", "GFLOP/s", fma256},
    [TOME_LIMIT_BF16_DOT] = {"bf16_dot_avx512", "GFLOP/s", bf16dot},
    [TOME_LIMIT_INT8_DOT] = {"int8_dot_vnni", "GOPS", int8dot},
#else
    [TOME_LIMIT_FMA_AVX512] = {"fp32_fma_avx512", "GFLOP/s", NULL},
    [TOME_LIMIT_FMA_AVX2] = {"fp32_fma_avx2", "GFLOP/s", NULL},
    [TOME_LIMIT_BF16_DOT] = {"bf16_dot_avx512", "GFLOP/s", NULL},
    [TOME_LIMIT_INT8_DOT] = {"int8_dot_vnni", "GOPS", NULL},
#endif
    [TOME_LIMIT_READ_BW] = {"read_bandwidth", "GB/s", read_bw},
};

const char *tome_limit_name(tome_limit_id id)
{
    return rows[id].name;
}

const char *tome_limit_unit(tome_limit_id id)
{
    return rows[id].unit;
}

int tome_limit_supported(tome_limit_id id)
{
#if defined(__x86_64__)
    switch (id) {
    case TOME_LIMIT_FMA_AVX512:
        return __builtin_cpu_supports("avx512f");
    case TOME_LIMIT_FMA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case TOME_LIMIT_BF16_DOT:
        return __builtin_cpu_supports("avx512bf16");
    case TOME_LIMIT_INT8_DOT:
        return __builtin_cpu_supports("avx512vnni");
    default:
        break;
    }
#endif
    return id == TOME_LIMIT_READ_BW;
}

int tome_limit_measure(tome_limit_id id, int threads, size_t buffer_bytes, double *per_second,
                       tome_error *err)
{
    *per_second = 0;
    if (!tome_limit_supported(id)) return 0;
    if (threads < 1) threads = 1;
    tome_buffer buf = {NULL, 0};
    uint64_t *words = NULL;
    if (id == TOME_LIMIT_READ_BW) {
        buf.n_words = buffer_bytes / 8 < 8 ? 8 : buffer_bytes / 8;
        words = malloc(buf.n_words * 8);
        if (!words)
            return tome_errorf(err, TOME_ENOMEM, "no memory for a %zu-byte bandwidth buffer",
                               buf.n_words * 8);
        for (size_t i = 0; i < buf.n_words; i++) words[i] = i;
        buf.words = words;
    }
    *per_second = measure(rows[id].fn, &buf, threads);
    free(words);
    return 0;
}

int tome_limit_fma_peak(int threads, double *flops, tome_error *err)
{
    tome_limit_id id =
        tome_limit_supported(TOME_LIMIT_FMA_AVX512) ? TOME_LIMIT_FMA_AVX512 : TOME_LIMIT_FMA_AVX2;
    return tome_limit_measure(id, threads, 0, flops, err);
}
