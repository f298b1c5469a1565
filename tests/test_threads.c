/* engine/threads.c: how v4_parallel_for splits a range.  Every index runs
 * exactly once; every chunk starts on a multiple of the grain and is a
 * whole number of grains (the range's end aside), which the fast kernels'
 * blocks rely on; and no chunk is longer than a share of what was left
 * when it was handed out (or one grain), so that threads finish within a
 * grain of each other rather than a fixed fraction of the range apart.
 * Pools of 1, 2, 3 and 8 threads, ranges below, at and far above the
 * grain, and a call from inside a task (which runs inline). */
#include "engine/internal.h"
#include "tests/check.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHUNKS 4096

typedef struct chunk {
    int64_t begin, end;
} chunk;

typedef struct recorder {
    int64_t n, grain;
    atomic_int *hits; /* per index */
    chunk chunks[MAX_CHUNKS];
    atomic_int count;
    v4_pool *pool;
    int nested; /* tasks call v4_parallel_for themselves */
    atomic_int inner_hits;
} recorder;

static void count_inner(void *ctx, int64_t begin, int64_t end)
{
    recorder *r = ctx;
    atomic_fetch_add(&r->inner_hits, (int)(end - begin));
}

static void record(void *ctx, int64_t begin, int64_t end)
{
    recorder *r = ctx;
    int at = atomic_fetch_add(&r->count, 1);
    if (at < MAX_CHUNKS) r->chunks[at] = (chunk){begin, end};
    for (int64_t i = begin; i < end; i++) atomic_fetch_add(&r->hits[i], 1);
    if (r->nested) v4_parallel_for(r->pool, 10, 1, count_inner, r);
}

static int by_begin(const void *a, const void *b)
{
    int64_t x = ((const chunk *)a)->begin, y = ((const chunk *)b)->begin;
    return (x > y) - (x < y);
}

static void split(v4_pool *pool, int64_t n, int64_t grain, int nested)
{
    recorder *r = calloc(1, sizeof *r);
    REQUIRE(r, "memory");
    r->n = n, r->grain = grain, r->pool = pool, r->nested = nested;
    r->hits = calloc((size_t)n + 1, sizeof *r->hits);
    REQUIRE(r->hits, "memory");
    v4_parallel_for(pool, n, grain, record, r);

    int twice = 0, never = 0;
    for (int64_t i = 0; i < n; i++) {
        int h = atomic_load(&r->hits[i]);
        twice += h > 1, never += h == 0;
    }
    CHECKF(twice == 0 && never == 0,
           "n %lld grain %lld, %d threads: %d indices run twice, %d never", (long long)n,
           (long long)grain, v4_pool_threads(pool), twice, never);
    int count = atomic_load(&r->count);
    REQUIRE(count <= MAX_CHUNKS, "%d chunks", count);
    qsort(r->chunks, (size_t)count, sizeof *r->chunks, by_begin);
    /* With one thread or one grain's worth the caller runs it all at once. */
    int64_t threads = v4_pool_threads(pool);
    int bad_start = 0, bad_size = 0, too_long = 0;
    for (int c = 0; c < count; c++) {
        int64_t begin = r->chunks[c].begin, size = r->chunks[c].end - begin;
        bad_start += begin % grain != 0;
        bad_size += size % grain != 0 && r->chunks[c].end != n;
        /* guided: at most 1/(2 threads) of what was left, or one grain */
        too_long += threads > 1 && n > grain && size > grain && size > (n - begin) / (2 * threads);
    }
    CHECKF(bad_start == 0 && bad_size == 0,
           "n %lld grain %lld: %d chunks off the grain, %d of a partial grain", (long long)n,
           (long long)grain, bad_start, bad_size);
    CHECKF(too_long == 0, "n %lld grain %lld, %d threads: %d chunks longer than their share",
           (long long)n, (long long)grain, (int)threads, too_long);
    if (threads > 1 && n >= 64 * grain)
        CHECKF(r->chunks[count - 1].end - r->chunks[count - 1].begin <= grain,
               "n %lld grain %lld: the last chunk is %lld long", (long long)n, (long long)grain,
               (long long)(r->chunks[count - 1].end - r->chunks[count - 1].begin));
    if (nested)
        CHECKF(atomic_load(&r->inner_hits) == 10 * count, "nested calls ran %d of %d indices",
               atomic_load(&r->inner_hits), 10 * count);
    free(r->hits);
    free(r);
}

int main(void)
{
    const int threads[] = {1, 2, 3, 8};
    const int64_t sizes[][2] = {{1, 1},    {5, 32},     {32, 32},    {33, 32},     {4096, 32},
                                {4095, 1}, {100000, 7}, {12288, 32}, {129280, 224}};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        v4_pool *pool;
        tome_error err = {0};
        REQUIRE(v4_pool_new(threads[t], 0, &pool, &err) == 0, "%s", err.msg);
        CHECK(v4_pool_threads(pool) == threads[t]);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            split(pool, sizes[s][0], sizes[s][1], 0);
        split(pool, 640, 8, 1);
        v4_pool_free(pool);
    }
    return check_finish();
}
