/*
 * buffers.c - the large work buffers a model's forward passes reuse
 * (v4_buffers).
 *
 * A prefill chunk's layers each need buffers of many megabytes (a
 * 512-token chunk's queries alone are 64 MB on flash shapes).  Fresh from
 * the system, every one of them is mapped, then faulted in and zeroed by
 * the kernel page by page as the kernels first write it: about 5% of a
 * warm prefill's time, spent again in every layer of every chunk.  So a
 * model keeps the large buffers its passes give back and hands them out
 * again, by size class, to the next layer or chunk; v4_buffers_trim
 * returns the idle ones when a call ends, so a model at rest holds none
 * and a long prefill holds about one chunk's worth.  Buffers under
 * TRACKED_BYTES are left to malloc, which reuses them well.
 *
 * One model can run forward passes on several threads at once (a daemon
 * answering questions side by side), so the table is behind a mutex; it is
 * taken a few dozen times per layer, never inside a kernel.
 *
 * A kept buffer comes back holding what its last user left, where a fresh
 * one read as zeros: under AddressSanitizer (make check --sanitize) each
 * buffer is filled with NaN bytes when handed out, so code that reads
 * before it writes shows in the results, and an idle buffer is poisoned,
 * so a use after v4_buffers_put is reported.
 */
#include "engine/internal.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* A buffer handed out: readable, and holding NaN (0xFF bytes) in every float. */
static void *handed_out(void *p, size_t bytes)
{
    ASAN_UNPOISON_MEMORY_REGION(p, bytes);
    return memset(p, 0xFF, bytes);
}
static void kept_idle(void *p, size_t bytes)
{
    ASAN_POISON_MEMORY_REGION(p, bytes);
}
static void freed(void *p, size_t bytes)
{
    ASAN_UNPOISON_MEMORY_REGION(p, bytes);
    free(p);
}
#else
static void *handed_out(void *p, size_t bytes)
{
    (void)bytes;
    return p;
}
static void kept_idle(void *p, size_t bytes)
{
    (void)p, (void)bytes;
}
static void freed(void *p, size_t bytes)
{
    (void)bytes;
    free(p);
}
#endif

#define SLOTS         64                /* buffers a model keeps track of */
#define TRACKED_BYTES ((size_t)1 << 20) /* smaller ones go to malloc */

typedef struct buffer_slot {
    void *p; /* NULL: the slot is free */
    size_t bytes;
    int busy; /* handed out, not yet given back */
} buffer_slot;

struct v4_buffers {
    pthread_mutex_t lock;
    buffer_slot slot[SLOTS];
};

int v4_buffers_new(v4_buffers **out, tome_error *err)
{
    v4_buffers *b = calloc(1, sizeof *b);
    if (!b) return tome_errorf(err, TOME_ENOMEM, "out of memory for the work buffers");
    pthread_mutex_init(&b->lock, NULL);
    *out = b;
    return 0;
}

void v4_buffers_free(v4_buffers *b)
{
    if (!b) return;
    for (int i = 0; i < SLOTS; i++) freed(b->slot[i].p, b->slot[i].bytes);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

/* The size class of a request: rounded up to a quarter of its power of
 * two, so a buffer serves requests up to a quarter smaller than it and a
 * model's varying sizes (an expert's rows per chunk) share a few classes. */
static size_t size_class(size_t bytes)
{
    size_t step = 1;
    while (step <= bytes / 8) step <<= 1;
    return (bytes + step - 1) / step * step;
}

float *v4_buffers_get(v4_buffers *b, size_t n)
{
    if (n > SIZE_MAX / (2 * sizeof(float))) return NULL; /* no size class holds it */
    size_t bytes = (n ? n : 1) * sizeof(float);
    if (!b || bytes < TRACKED_BYTES) return v4_floats(n);
    bytes = size_class(bytes);
    pthread_mutex_lock(&b->lock);
    buffer_slot *empty = NULL, *stale = NULL;
    for (int i = 0; i < SLOTS; i++) {
        buffer_slot *s = &b->slot[i];
        if (s->p && !s->busy && s->bytes == bytes) {
            s->busy = 1;
            pthread_mutex_unlock(&b->lock);
            return handed_out(s->p, bytes);
        }
        if (!s->p && !empty) empty = s;
        if (s->p && !s->busy && !stale) stale = s;
    }
    if (!empty && stale) { /* a full table: an idle buffer of another class makes room */
        freed(stale->p, stale->bytes);
        *stale = (buffer_slot){NULL, 0, 0};
        empty = stale;
    }
    float *p = v4_floats(bytes / sizeof(float));
    if (p && empty) *empty = (buffer_slot){p, bytes, 1};
    pthread_mutex_unlock(&b->lock);
    return p ? handed_out(p, bytes) : NULL; /* untracked when all are busy: free()d */
}

void v4_buffers_put(v4_buffers *b, void *p)
{
    if (!p) return;
    if (b) {
        pthread_mutex_lock(&b->lock);
        for (int i = 0; i < SLOTS; i++)
            if (b->slot[i].p == p) {
                b->slot[i].busy = 0;
                kept_idle(p, b->slot[i].bytes);
                pthread_mutex_unlock(&b->lock);
                return;
            }
        pthread_mutex_unlock(&b->lock);
    }
    free(p);
}

size_t v4_buffers_kept(v4_buffers *b)
{
    size_t kept = 0;
    pthread_mutex_lock(&b->lock);
    for (int i = 0; i < SLOTS; i++)
        if (b->slot[i].p && !b->slot[i].busy) kept += b->slot[i].bytes;
    pthread_mutex_unlock(&b->lock);
    return kept;
}

void v4_buffers_trim(v4_buffers *b)
{
    if (!b) return;
    pthread_mutex_lock(&b->lock);
    for (int i = 0; i < SLOTS; i++)
        if (b->slot[i].p && !b->slot[i].busy) {
            freed(b->slot[i].p, b->slot[i].bytes);
            b->slot[i] = (buffer_slot){NULL, 0, 0};
        }
    pthread_mutex_unlock(&b->lock);
}
