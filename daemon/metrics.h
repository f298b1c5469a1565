/*
 * metrics.h - counters and the Prometheus exposition (metrics.c).
 */
#ifndef TOMED_METRICS_H
#define TOMED_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/common.h"

struct evbuffer;

typedef struct tomed_metrics {
    atomic_uint_fast64_t requests[2][6];               /* [transport][status / 100] */
    atomic_uint_fast64_t errors[TOME_ERROR_CODES + 1]; /* by -TOME_E* code */
    atomic_int connections;
    atomic_uint_fast64_t prefill_tokens;
    atomic_uint_fast64_t decode_tokens;
    atomic_uint_fast64_t cache_hits;
    atomic_uint_fast64_t cache_misses;
    atomic_uint_fast64_t cached_tokens;  /* prompt tokens an engine's cache served */
    atomic_uint_fast64_t remote_rewarms; /* corpora warmed again on another replica */
    _Atomic double prefill_tokens_per_s;
    _Atomic double decode_tokens_per_s;
    atomic_int queue_depth;
} tomed_metrics;

extern tomed_metrics tomed_stats;

/* The Prometheus text exposition into `out`; disk use is measured under
 * `state_dir`, job counts by state come from `jobs_by_state` (5 entries:
 * queued, running, done, failed, canceled). */
void tomed_metrics_render(struct evbuffer *out, const char *state_dir, const int jobs_by_state[5]);

#endif
