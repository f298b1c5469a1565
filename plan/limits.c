/*
 * limits.c - the machine's peaks and read bandwidth, measured (limits.h).
 *
 * Each peak runs a loop of independent accumulators (enough to cover the
 * instruction's latency) for a fixed time, best of three, and counts
 * operations: FLOP for FMA and BF16 (2 per multiply-add), integer
 * multiply-adds x2 for int8 (OPS).  Bandwidth sums a buffer, written once
 * before timing so that it is resident, each thread its own part of it.
 * Instruction sets the CPU lacks are reported as 0.  The loops live here,
 * not in bench/, because the fit check (plan.c) needs them as much as the
 * benchmarks do.
 */
#include "plan/limits.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
    /* The sums wrap (vpdpbusd does), so fold them with XOR: adding them as
     * ints, as _mm512_reduce_add_epi32 does, overflows, which C leaves
     * undefined (UBSan stops the test there). */
    __m512i folded = a[0];
    for (int i = 1; i < CHAINS; i++) folded = _mm512_xor_si512(folded, a[i]);
    return _mm512_cvtsi512_si32(folded) == 12345 ? 0 : ops;
}

/* vpmaddubsw: 32 u8 x s8 products per instruction, added in pairs, each
 * pair's sum then added into a 16-bit accumulator (how the AVX2 indexer
 * uses it, engine/kernels/indexer.c); 2 OPS per product, as for VNNI. */
__attribute__((target("avx2"))) static double int8dot256(const tome_buffer *buf, double seconds)
{
    __m256i a[CHAINS], x = _mm256_set1_epi8(3), y = _mm256_set1_epi8(-2);
    for (int i = 0; i < CHAINS; i++) a[i] = _mm256_setzero_si256();
    double ops = 0, t0 = now();
    while (now() - t0 < seconds) {
        for (int r = 0; r < 4096; r++)
#pragma GCC unroll 16
            for (int i = 0; i < CHAINS; i++)
                a[i] = _mm256_add_epi16(a[i], _mm256_maddubs_epi16(x, y));
        ops += 4096.0 * CHAINS * 64;
    }
    /* the 16-bit sums wrap: folded with XOR, as int8dot's */
    __m256i folded = a[0];
    for (int i = 1; i < CHAINS; i++) folded = _mm256_xor_si256(folded, a[i]);
    return _mm256_cvtsi256_si32(folded) == 12345 ? 0 : ops;
}
#endif

/* One pass over the buffer's words (n a multiple of 8), 8 sums.  Each sum
 * is its own local, so that it lives in a register: with the sums in an
 * array GCC added them in memory, a store-to-load chain per line that held
 * this loop to about 60% of what the memory delivers. */
static uint64_t read_pass(const uint64_t *w, size_t n)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        s0 += w[i];
        s1 += w[i + 1];
        s2 += w[i + 2];
        s3 += w[i + 3];
        s4 += w[i + 4];
        s5 += w[i + 5];
        s6 += w[i + 6];
        s7 += w[i + 7];
    }
    return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

/* On 2 MB boundaries and offered as huge pages: in a virtual machine a 4 kB
 * page's TLB miss costs a two-level walk, which took about 10% off the
 * bandwidth loop's rate. */
void *tome_huge_buffer(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    bytes = (bytes + huge - 1) / huge * huge;
    void *p = aligned_alloc(huge, bytes);
#ifdef MADV_HUGEPAGE
    if (p) (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

/* Sum a buffer of 8-byte words, pass after pass; returns bytes read. */
static double read_bw(const tome_buffer *buf, double seconds)
{
    double bytes = 0, t0 = now();
    uint64_t sum = 0;
    while (now() - t0 < seconds) {
        sum += read_pass(buf->words, buf->n_words);
        bytes += (double)buf->n_words * 8;
    }
    return sum == 42 ? 0 : bytes;
}

typedef struct worker {
    pthread_t thread;
    peak_fn fn;
    tome_buffer slice;
    double ops, seconds;
} worker;

static void *run_worker(void *arg)
{
    worker *w = arg;
    double t0 = now();
    w->ops = w->fn(&w->slice, RUN_SECONDS);
    w->seconds = now() - t0;
    return NULL;
}

/* Worker i's part of the buffer: the i-th of `threads` runs of whole
 * 64-byte lines.  Each thread reads only its own lines, as decode's
 * threads read only their own weight rows.  With all threads summing the
 * whole buffer from its start they read the same lines at about the same
 * time, and every thread but the first to ask for a line found it in the
 * shared L3: on a 2-core Zen 4 that measured 36 to 63 GB/s from run to
 * run, depending on how closely the threads kept pace, where disjoint
 * parts read 34 to 37 every time in the same minutes.  A thread left without a line (more
 * threads than lines) reads nothing and adds nothing. */
static tome_buffer slice_of(const tome_buffer *buf, int i, int threads)
{
    size_t lines = buf->n_words / 8, first = lines * (size_t)i / (size_t)threads,
           end = lines * (size_t)(i + 1) / (size_t)threads;
    return (tome_buffer){buf->words ? buf->words + first * 8 : NULL, (end - first) * 8};
}

/* Operations per second of `fn` on `threads` threads at once, once. */
static double measure_once(peak_fn fn, const tome_buffer *buf, int threads)
{
    worker *w = calloc((size_t)threads, sizeof *w);
    if (!w) return 0;
    int started = 0;
    for (; started < threads; started++) {
        w[started].fn = fn;
        w[started].slice = slice_of(buf, started, threads);
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
    [TOME_LIMIT_INT8_DOT_AVX2] = {"int8_dot_avx2", "GOPS", int8dot256},
#else
    [TOME_LIMIT_FMA_AVX512] = {"fp32_fma_avx512", "GFLOP/s", NULL},
    [TOME_LIMIT_FMA_AVX2] = {"fp32_fma_avx2", "GFLOP/s", NULL},
    [TOME_LIMIT_BF16_DOT] = {"bf16_dot_avx512", "GFLOP/s", NULL},
    [TOME_LIMIT_INT8_DOT] = {"int8_dot_vnni", "GOPS", NULL},
    [TOME_LIMIT_INT8_DOT_AVX2] = {"int8_dot_avx2", "GOPS", NULL},
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
    case TOME_LIMIT_INT8_DOT_AVX2:
        return __builtin_cpu_supports("avx2");
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
        words = tome_huge_buffer(buf.n_words * 8);
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

/* The aggregate "cpu " line's busy and total counters of a /proc/stat
 * text, and its count of "cpuN" lines. */
static int parse_stat(const char *text, unsigned long long *busy, unsigned long long *total,
                      int *n_cpus, tome_error *err)
{
    /* user nice system idle iowait irq softirq steal: busy are all but idle and iowait */
    unsigned long long v[8];
    if (strncmp(text, "cpu ", 4) != 0 ||
        sscanf(text + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]) != 8)
        return tome_errorf(err, TOME_EINVAL,
                           "/proc/stat does not start with a \"cpu \" line of eight counters");
    *busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    *total = *busy + v[3] + v[4];
    *n_cpus = 0;
    for (const char *line = strchr(text, '\n'); line; line = strchr(line + 1, '\n'))
        if (strncmp(line + 1, "cpu", 3) == 0 && line[4] >= '0' && line[4] <= '9') ++*n_cpus;
    return 0;
}

int tome_limit_busy_between(const char *before, const char *after, double *cpus, tome_error *err)
{
    unsigned long long busy0, total0, busy1, total1;
    int n0, n1;
    *cpus = 0;
    if (parse_stat(before, &busy0, &total0, &n0, err) != 0 ||
        parse_stat(after, &busy1, &total1, &n1, err) != 0)
        return -1;
    if (busy1 < busy0 || total1 < total0)
        return tome_errorf(err, TOME_EINVAL, "/proc/stat's counters ran backwards");
    int n = n1 > 0 ? n1 : 1;
    if (total1 > total0) *cpus = (double)(busy1 - busy0) / (double)(total1 - total0) * n;
    return 0;
}

/* /proc/stat's text (read as a stream: its files report a size of 0). */
static int read_stat(char **text, tome_error *err)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return tome_errorf(err, TOME_EIO, "/proc/stat: %s", strerror(errno));
    size_t len;
    int rc = tome_read_stream(f, "/proc/stat", (size_t)1 << 20, text, &len, err);
    fclose(f);
    return rc;
}

int tome_limit_busy_cpus(double seconds, double *cpus, tome_error *err)
{
    char *before = NULL, *after = NULL;
    *cpus = 0;
    if (seconds < 0.01) seconds = 0.01;
    int rc = read_stat(&before, err);
    if (rc == 0) {
        struct timespec span = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
        nanosleep(&span, NULL);
        rc = read_stat(&after, err);
    }
    if (rc == 0) rc = tome_limit_busy_between(before, after, cpus, err);
    free(before);
    free(after);
    return rc;
}

void tome_limit_warn_if_busy(const char *program)
{
    tome_error err = {0};
    double busy = 0;
    if (tome_limit_busy_cpus(0.5, &busy, &err) == 0 && busy > TOME_LIMIT_BUSY_WARN)
        fprintf(stderr,
                "%s: warning: other work kept %.1f CPUs busy in the half second before measuring "
                "(/proc/stat): every limit and speed of this run will read low; benchmark an "
                "otherwise idle machine\n",
                program, busy);
}
