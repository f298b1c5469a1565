/*
 * threads.c - the engine's kernel thread pool.
 *
 * One process-wide pool, sized to the cores, runs the data-parallel parts of
 * the kernels (matmul rows, attention heads, experts).  v4_parallel_for()
 * hands out chunks of an index range through an atomic counter; the calling
 * thread works too and returns when every chunk is done.  Calls from inside
 * a task, or from several caller threads at once, run inline on the caller:
 * the pool serves one parallel region at a time, which is what a single
 * engine executor needs, and a second caller is never blocked waiting.
 */
#include "engine/internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 256

typedef struct pool {
    pthread_mutex_t lock;
    pthread_cond_t work_ready;
    pthread_cond_t work_done;
    int n_threads; /* including the caller */
    int started;
    /* the current parallel region */
    uint64_t generation;
    v4_task_fn fn;
    void *ctx;
    int64_t n, grain;
    atomic_int_fast64_t next;
    int busy_workers;
    atomic_int region_active;
} pool;

static pool the_pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .work_ready = PTHREAD_COND_INITIALIZER,
    .work_done = PTHREAD_COND_INITIALIZER,
};
static _Thread_local int inside_task;

static void run_chunks(pool *p)
{
    inside_task = 1;
    for (;;) {
        int64_t begin = atomic_fetch_add(&p->next, p->grain);
        if (begin >= p->n) break;
        int64_t end = begin + p->grain < p->n ? begin + p->grain : p->n;
        p->fn(p->ctx, begin, end);
    }
    inside_task = 0;
}

static void *worker_main(void *arg)
{
    pool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->generation == seen) pthread_cond_wait(&p->work_ready, &p->lock);
        seen = p->generation;
        p->busy_workers++;
        pthread_mutex_unlock(&p->lock);
        run_chunks(p);
        pthread_mutex_lock(&p->lock);
        if (--p->busy_workers == 0) pthread_cond_broadcast(&p->work_done);
    }
    return NULL;
}

int v4_threads_init(int n_threads)
{
    pool *p = &the_pool;
    pthread_mutex_lock(&p->lock);
    if (p->started) {
        pthread_mutex_unlock(&p->lock);
        return 0;
    }
    if (n_threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cpus > 0 ? (int)cpus : 1;
    }
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    p->n_threads = 1;
    for (int i = 1; i < n_threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker_main, p) != 0) break;
        pthread_detach(t);
        p->n_threads++;
    }
    p->started = 1;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

int v4_threads_count(void)
{
    return the_pool.started ? the_pool.n_threads : 1;
}

static void run_inline(int64_t n, v4_task_fn fn, void *ctx)
{
    if (n > 0) fn(ctx, 0, n);
}

void v4_parallel_for(int64_t n, int64_t grain, v4_task_fn fn, void *ctx)
{
    pool *p = &the_pool;
    if (grain < 1) grain = 1;
    if (inside_task || !p->started || p->n_threads == 1 || n <= grain) {
        run_inline(n, fn, ctx);
        return;
    }
    int expected = 0;
    if (!atomic_compare_exchange_strong(&p->region_active, &expected, 1)) {
        run_inline(n, fn, ctx); /* another caller holds the pool */
        return;
    }
    /* Enough chunks to balance the threads, but no smaller than `grain`. */
    int64_t per = n / (4 * p->n_threads);
    if (per > grain) grain = per;
    pthread_mutex_lock(&p->lock);
    /* A worker that woke late for the previous region may still be looking
     * at its (exhausted) counter; let it leave before the fields change. */
    while (p->busy_workers > 0) pthread_cond_wait(&p->work_done, &p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->grain = grain;
    atomic_store(&p->next, 0);
    p->generation++;
    pthread_cond_broadcast(&p->work_ready);
    pthread_mutex_unlock(&p->lock);

    run_chunks(p);

    pthread_mutex_lock(&p->lock);
    /* Every chunk has been claimed; wait for the ones still running.  Workers
     * that have not woken yet will find no chunks left and never touch ctx. */
    while (p->busy_workers > 0) pthread_cond_wait(&p->work_done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    atomic_store(&p->region_active, 0);
}
