/*
 * threads.c - the kernel thread pool a model owns (v4_pool).
 *
 * Each model has its own pool, sized by its v4_open_options.n_threads and
 * stopped with it, so two models in one process (tests, a daemon that
 * reopens its model) never share threads or inherit each other's size.
 * v4_parallel_for() hands out chunks of an index range through an atomic
 * counter, each a share of what is left (long ones first, one grain at
 * the end); the calling thread works too and returns when every chunk is
 * done.  The pool serves one parallel region at a time: a second caller
 * waits for the first region to end (the pool's threads are all busy
 * anyway), and a call from inside a task runs inline on that task's thread.
 *
 * A decode step runs a few hundred short regions (an expert's product
 * takes a fifth of a millisecond), and a thread asleep on a condition
 * variable wakes tens of microseconds after the signal, more in a virtual
 * machine: long enough that the caller often finished a region alone.  So
 * a thread first spins for SPIN_NS on the field it waits for (a worker on
 * the region's generation, the caller on the busy count), and only then
 * sleeps; the lock still orders every change, the spin only reads.
 *
 * The pool also owns the kernels' per-thread scratch: one arena per
 * thread of the pool (the caller's slot 0 included), allocated when the
 * pool is made, so a kernel never fails for want of memory in the middle
 * of a product.  Inside a task or region, v4_pool_scratch() is the running
 * thread's arena; a region's owner takes slot 0 for its duration.
 */
#include "engine/internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
#define SPIN_NS     200000 /* how long a waiting thread spins before it sleeps */

struct v4_pool {
    pthread_mutex_t lock;
    pthread_cond_t work_ready;
    pthread_cond_t work_done;
    pthread_mutex_t region; /* held by the thread whose region runs */
    int n_threads;          /* including the caller */
    pthread_t workers[MAX_THREADS];
    void *scratch[MAX_THREADS]; /* slot i: worker i; slot 0: the region's owner */
    int stopping;
    /* the current parallel region */
    atomic_uint_fast64_t generation; /* written under lock; spun on without */
    v4_task_fn fn;
    void *ctx;
    int64_t n, grain;
    atomic_int_fast64_t next;
    atomic_int busy_workers; /* written under lock; spun on without */
};

/* The pool and slot of the task or region running on this thread. */
static _Thread_local const v4_pool *current_pool;
static _Thread_local int current_slot;

/* The size of the chunk that starts at `begin`: a share of what is left
 * (guided self-scheduling), a multiple of the grain and at least one.
 * Early chunks are long, so hand-offs stay few; the last ones are one
 * grain, so the threads finish within a grain of each other.  Equal
 * chunks of an eighth of a product's rows each (the split before this)
 * left one of two threads idle for about a tenth of a prefill: a chunk
 * of an FP8 4096 x 4096 product over 256 tokens is 9 ms of one core. */
static int64_t chunk_at(const v4_pool *p, int64_t begin)
{
    int64_t share = (p->n - begin) / (2 * p->n_threads) / p->grain * p->grain;
    return share > p->grain ? share : p->grain;
}

static void run_chunks(v4_pool *p)
{
    int64_t begin = atomic_load(&p->next);
    for (;;) {
        if (begin >= p->n) break;
        int64_t size = chunk_at(p, begin);
        if (!atomic_compare_exchange_weak(&p->next, &begin, begin + size)) continue;
        int64_t end = begin + size < p->n ? begin + size : p->n;
        p->fn(p->ctx, begin, end);
        begin = atomic_load(&p->next);
    }
}

static int64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins until the pool's generation differs from `seen` or SPIN_NS pass. */
static void spin_for_region(const v4_pool *p, uint64_t seen)
{
    int64_t deadline = monotonic_ns() + SPIN_NS;
    for (int i = 1; atomic_load_explicit(&p->generation, memory_order_relaxed) == seen; i++) {
        cpu_relax();
        if (i % 256 == 0 && monotonic_ns() > deadline) return;
    }
}

/* Spins until no worker is busy or SPIN_NS pass. */
static void spin_for_workers(const v4_pool *p)
{
    int64_t deadline = monotonic_ns() + SPIN_NS;
    for (int i = 1; atomic_load_explicit(&p->busy_workers, memory_order_relaxed) > 0; i++) {
        cpu_relax();
        if (i % 256 == 0 && monotonic_ns() > deadline) return;
    }
}

typedef struct worker_arg {
    v4_pool *pool;
    int slot;
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    v4_pool *p = wa.pool;
    current_pool = p;
    current_slot = wa.slot;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->generation == seen && !p->stopping) {
            pthread_mutex_unlock(&p->lock);
            spin_for_region(p, seen);
            pthread_mutex_lock(&p->lock);
        }
        while (p->generation == seen && !p->stopping) pthread_cond_wait(&p->work_ready, &p->lock);
        if (p->stopping) break;
        seen = p->generation;
        p->busy_workers++;
        pthread_mutex_unlock(&p->lock);
        run_chunks(p);
        pthread_mutex_lock(&p->lock);
        if (--p->busy_workers == 0) pthread_cond_broadcast(&p->work_done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static int start_worker(v4_pool *p, int slot)
{
    worker_arg *wa = malloc(sizeof *wa);
    if (!wa) return -1;
    *wa = (worker_arg){p, slot};
    if (pthread_create(&p->workers[slot], NULL, worker_main, wa) != 0) {
        free(wa);
        return -1;
    }
    return 0;
}

int v4_pool_new(int n_threads, size_t scratch_bytes, v4_pool **out, tome_error *err)
{
    *out = NULL;
    if (n_threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cpus > 0 ? (int)cpus : 1;
    }
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    v4_pool *p = calloc(1, sizeof *p);
    if (!p) return tome_errorf(err, TOME_ENOMEM, "out of memory for the thread pool");
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->region, NULL);
    pthread_cond_init(&p->work_ready, NULL);
    pthread_cond_init(&p->work_done, NULL);
    p->n_threads = 1;
    size_t bytes = (scratch_bytes + 63) / 64 * 64;
    for (int i = 0; i < n_threads; i++) {
        p->scratch[i] = bytes ? aligned_alloc(64, bytes) : NULL;
        if (bytes && !p->scratch[i]) {
            v4_pool_free(p);
            return tome_errorf(err, TOME_ENOMEM,
                               "out of memory for %d threads' scratch (%zu bytes each)", n_threads,
                               bytes);
        }
    }
    /* A pool with fewer threads than asked still computes the same bits. */
    for (int i = 1; i < n_threads && start_worker(p, i) == 0; i++) p->n_threads++;
    *out = p;
    return 0;
}

void v4_pool_free(v4_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work_ready);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->workers[i], NULL);
    for (int i = 0; i < MAX_THREADS; i++) free(p->scratch[i]);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->region);
    pthread_cond_destroy(&p->work_ready);
    pthread_cond_destroy(&p->work_done);
    free(p);
}

int v4_pool_threads(const v4_pool *p)
{
    return p->n_threads;
}

void *v4_pool_scratch(const v4_pool *p)
{
    return current_pool == p ? p->scratch[current_slot] : NULL;
}

/* Run the region's chunks on all threads; the caller holds p->region. */
static void run_region(v4_pool *p, int64_t n, int64_t grain, v4_task_fn fn, void *ctx)
{
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

    spin_for_workers(p);
    pthread_mutex_lock(&p->lock);
    /* Every chunk has been claimed; wait for the ones still running.  Workers
     * that have not woken yet will find no chunks left and never touch ctx. */
    while (p->busy_workers > 0) pthread_cond_wait(&p->work_done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

void v4_parallel_for(v4_pool *p, int64_t n, int64_t grain, v4_task_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (current_pool == p) { /* inside a task or region of this pool */
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->region);
    const v4_pool *outer_pool = current_pool;
    int outer_slot = current_slot;
    current_pool = p;
    current_slot = 0;
    if (p->n_threads == 1 || n <= grain)
        fn(ctx, 0, n);
    else
        run_region(p, n, grain, fn, ctx);
    current_pool = outer_pool;
    current_slot = outer_slot;
    pthread_mutex_unlock(&p->region);
}
