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

#endif
