/*
 * limits.c - tome-limits: what this machine can do at most, measured.
 *
 * Speed figures mean little on their own (machines differ from one run to
 * the next), so the benchmarks report each one as a fraction of a limit
 * measured in the same run: the FP32 fused multiply-add peak, the BF16 and
 * int8 dot-product peaks, and the memory read bandwidth, on one thread and
 * on all of them.
 *
 *   tome-limits [--threads N] [--csv]
 *
 * Each peak runs a loop of independent accumulators (enough to cover the
 * instruction's latency) for a fixed time, best of three, and counts operations: FLOP for
 * FMA and BF16 (2 per multiply-add), integer multiply-adds x2 for int8
 * (OPS).  Bandwidth sums a 1 GiB buffer, read once before timing so that
 * it is resident.  Instruction sets the CPU lacks are reported as 0.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define RUN_SECONDS 0.3

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef double (*peak_fn)(double seconds); /* returns operations done */

#if defined(__x86_64__)
/* 12 independent FMA chains: latency 4 x 2 ports needs at least 8. */
#define CHAINS 12

__attribute__((target("avx512f"))) static double fma512(double seconds)
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

__attribute__((target("avx2,fma"))) static double fma256(double seconds)
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
__attribute__((target("avx512f,avx512bf16"))) static double bf16dot(double seconds)
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
__attribute__((target("avx512f,avx512vnni"))) static double int8dot(double seconds)
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
static const uint64_t *bw_buf;
static size_t bw_words;

static double read_bw(double seconds)
{
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
    double ops, seconds;
} worker;

static void *run_worker(void *arg)
{
    worker *w = arg;
    double t0 = now();
    w->ops = w->fn(RUN_SECONDS);
    w->seconds = now() - t0;
    return NULL;
}

/* Operations per second of `fn` on `threads` threads at once, once. */
static double measure_once(peak_fn fn, int threads)
{
    worker *w = calloc((size_t)threads, sizeof *w);
    if (!w) return 0;
    for (int i = 0; i < threads; i++) {
        w[i].fn = fn;
        pthread_create(&w[i].thread, NULL, run_worker, &w[i]);
    }
    double rate = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].thread, NULL);
        rate += w[i].ops / w[i].seconds;
    }
    free(w);
    return rate;
}

/* The best of three: a limit is what the machine can do, and another
 * process taking a core for a moment only ever lowers a measurement. */
static double measure(peak_fn fn, int threads)
{
    double best = 0;
    for (int i = 0; i < 3; i++) {
        double r = measure_once(fn, threads);
        if (r > best) best = r;
    }
    return best;
}

int main(int argc, char **argv)
{
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), csv = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--csv") == 0)
            csv = 1;
        else {
            fprintf(stderr, "usage: tome-limits [--threads N] [--csv]\n");
            return 2;
        }
    }
    if (threads < 1) threads = 1;
    bw_words = ((size_t)1 << 30) / 8;
    uint64_t *buf = malloc(bw_words * 8);
    if (!buf) return 1;
    for (size_t i = 0; i < bw_words; i++) buf[i] = i;
    bw_buf = buf;
    struct {
        const char *name, *unit;
        peak_fn fn;
        int ok;
    } rows[] = {
#if defined(__x86_64__)
        {"fp32_fma_avx512", "GFLOP/s", fma512, __builtin_cpu_supports("avx512f")},
        {"fp32_fma_avx2", "GFLOP/s", fma256,
         __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")},
        {"bf16_dot_avx512", "GFLOP/s", bf16dot, __builtin_cpu_supports("avx512bf16")},
        {"int8_dot_vnni", "GOPS", int8dot, __builtin_cpu_supports("avx512vnni")},
#endif
        {"read_bandwidth", "GB/s", read_bw, 1},
    };
    if (csv) printf("limit,unit,one_thread,all_threads,threads\n");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        double one = rows[i].ok ? measure(rows[i].fn, 1) / 1e9 : 0;
        double all = rows[i].ok ? measure(rows[i].fn, threads) / 1e9 : 0;
        if (csv)
            printf("%s,%s,%.2f,%.2f,%d\n", rows[i].name, rows[i].unit, one, all, threads);
        else
            printf("%-16s %8.1f %-7s (1 thread) %8.1f %-7s (%d threads)\n", rows[i].name, one,
                   rows[i].unit, all, rows[i].unit, threads);
    }
    free(buf);
    return 0;
}
