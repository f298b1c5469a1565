/*
 * limits.h - what this machine can do at most, measured.
 *
 * The FP32 fused multiply-add peak, the BF16 and int8 dot-product peaks and
 * the memory read bandwidth, each measured by a loop of independent
 * accumulators run for a fixed time on N threads, best of three.  Two
 * programs read them: tome-limits (bench/limits.c), against which the
 * benchmarks report, and the fit check of plan/plan.h, which turns them
 * into upper bounds on decode and prefill speed.
 */
#ifndef TOME_PLAN_LIMITS_H
#define TOME_PLAN_LIMITS_H

#include <stddef.h>

#include "common/common.h"

typedef enum tome_limit_id {
    TOME_LIMIT_FMA_AVX512, /* FP32 FMA, GFLOP (2 per multiply-add) */
    TOME_LIMIT_FMA_AVX2,
    TOME_LIMIT_BF16_DOT,      /* vdpbf16ps, GFLOP */
    TOME_LIMIT_INT8_DOT,      /* vpdpbusd, GOPS */
    TOME_LIMIT_INT8_DOT_AVX2, /* vpmaddubsw into 16-bit sums, GOPS */
    TOME_LIMIT_READ_BW,       /* summing a resident buffer, bytes */
    TOME_LIMIT_COUNT
} tome_limit_id;

/* Stable name ("fp32_fma_avx512", ..., "int8_dot_avx2", "read_bandwidth") and unit
 * ("GFLOP/s", "GOPS", "GB/s") of a limit. */
const char *tome_limit_name(tome_limit_id id);
const char *tome_limit_unit(tome_limit_id id);
/* Whether this CPU has the instructions the limit's loop needs. */
int tome_limit_supported(tome_limit_id id);

/* Operations (bytes, for the bandwidth) per second of `id` on `threads`
 * threads at once, best of three runs of 0.3 s; 0 when unsupported.  The
 * bandwidth reads a buffer of `buffer_bytes` (allocated, filled once so it
 * is resident, freed), each thread its own 1/threads of it; the others
 * ignore it.  Fails only for memory. */
int tome_limit_measure(tome_limit_id id, int threads, size_t buffer_bytes, double *per_second,
                       tome_error *err);

/* `bytes` (rounded up to 2 MB) on a 2 MB boundary, offered to the kernel
 * as huge pages (a hint), as the engine's resident weights are; NULL
 * without memory.  The caller frees it with free(). */
void *tome_huge_buffer(size_t bytes);

/* The FP32 FMA peak of the best instruction set this CPU has (FLOP/s). */
int tome_limit_fma_peak(int threads, double *flops, tome_error *err);

/* How many CPUs' worth of time other work took while this process slept
 * for `seconds` (at least 0.01): the busy share (user, nice, system, irq,
 * softirq and steal) of /proc/stat's time over that span, times the CPUs
 * it counts.  Every limit and speed a benchmark reads beside other work is
 * low (a compile under `nice` halved llama.cpp's decode and cut tome's by
 * a seventh on a 2-core machine), so the benchmarks warn when this is
 * above TOME_LIMIT_BUSY_WARN.  Fails where /proc/stat cannot be read or
 * parsed. */
#define TOME_LIMIT_BUSY_WARN 0.25
int tome_limit_busy_cpus(double seconds, double *cpus, tome_error *err);

/* The same from two /proc/stat texts, read `before` and `after` the span:
 * their aggregate "cpu " lines give the busy share, their "cpuN" lines the
 * CPUs.  Fails, naming the problem, when either text lacks a "cpu " line
 * of at least eight counters or the counters run backwards. */
int tome_limit_busy_between(const char *before, const char *after, double *cpus, tome_error *err);

/* The warning the benchmarks print (program: their name) when other work
 * kept more than TOME_LIMIT_BUSY_WARN CPUs busy over a short look at
 * /proc/stat; nothing otherwise, or where it cannot be read. */
void tome_limit_warn_if_busy(const char *program);

#endif
