/* engine/buffers.c: a model's kept work buffers.  A buffer given back is
 * kept, and handed out again for a request of its size class, never to two
 * holders at once; trimming frees only idle ones; a table full of idle
 * buffers makes room for a new class; a table of busy ones and a NULL
 * table still serve every request.  Run under AddressSanitizer too, which
 * checks that nothing kept is freed twice or used after a trim. */
#include "engine/internal.h"
#include "tests/check.h"

#include <pthread.h>
#include <stdint.h>

#define MB (((size_t)1 << 20) / sizeof(float)) /* floats in a megabyte */

static int aligned(const void *p, size_t to)
{
    return (uintptr_t)p % to == 0;
}

static void reuse_by_class(v4_buffers *b)
{
    float *p = v4_buffers_get(b, 8 * MB);
    REQUIRE(p, "8 MB");
    CHECK(aligned(p, 64));
    p[8 * MB - 1] = 1.0f;
    CHECK(v4_buffers_kept(b) == 0);
    v4_buffers_put(b, p);
    CHECK(v4_buffers_kept(b) == 8 * MB * sizeof(float));
    /* 7.5 MB is in 8 MB's class (a quarter of 8 MB's power of two) */
    float *q = v4_buffers_get(b, 8 * MB - MB / 2);
    CHECK(q == p);
    float *r = v4_buffers_get(b, 8 * MB); /* q is busy: another buffer */
    CHECK(r && r != q);
    v4_buffers_put(b, q);
    v4_buffers_put(b, r);
    /* 6 MB is another class: it must not take an idle 8 MB buffer */
    float *s = v4_buffers_get(b, 6 * MB);
    REQUIRE(s, "6 MB");
    CHECK(s != p && s != r);
    s[6 * MB - 1] = 2.0f; /* all of it is there */
    v4_buffers_put(b, s);
    float *t = v4_buffers_get(b, 6 * MB);
    CHECK(t == s);
    v4_buffers_put(b, t);
    CHECK(v4_buffers_kept(b) == (8 + 8 + 6) * MB * sizeof(float));
    v4_buffers_trim(b);
    CHECK(v4_buffers_kept(b) == 0);
}

/* Small requests are malloc's: still aligned, still given back. */
static void small_requests(v4_buffers *b)
{
    float *p = v4_buffers_get(b, 1000);
    CHECK(p && aligned(p, 64));
    v4_buffers_put(b, p);
    v4_buffers_put(b, NULL);
    CHECK(v4_buffers_kept(b) == 0); /* malloc's, not kept */
    CHECK(v4_buffers_get(b, SIZE_MAX / 4) == NULL);
    float *q = v4_buffers_get(NULL, 2 * MB);
    CHECK(q && aligned(q, 64));
    v4_buffers_put(NULL, q);
}

/* A trim frees the idle buffers and leaves the busy ones whole. */
static void trim_keeps_busy(v4_buffers *b)
{
    float *busy = v4_buffers_get(b, 2 * MB), *idle = v4_buffers_get(b, 2 * MB);
    REQUIRE(busy && idle, "2 MB twice");
    v4_buffers_put(b, idle);
    v4_buffers_trim(b);
    for (size_t i = 0; i < 2 * MB; i += 1024) busy[i] = (float)i; /* ASan: not freed */
    float *again = v4_buffers_get(b, 2 * MB);
    CHECK(again && again != busy);
    v4_buffers_put(b, busy);
    v4_buffers_put(b, again);
    v4_buffers_trim(b);
}

/* More buffers than the table tracks: every one served, distinct. */
static void more_than_the_table(v4_buffers *b)
{
    enum { N = 100 };
    float *p[N];
    int distinct = 1;
    for (int i = 0; i < N; i++) {
        p[i] = v4_buffers_get(b, MB + (size_t)i);
        CHECK(p[i] != NULL);
        if (p[i]) p[i][0] = (float)i;
        for (int j = 0; j < i; j++) distinct &= p[i] != p[j];
    }
    CHECK(distinct);
    for (int i = 0; i < N; i++) CHECK(p[i] && p[i][0] == (float)i);
    for (int i = 0; i < N; i++) v4_buffers_put(b, p[i]);
    v4_buffers_trim(b);
}

/* A table full of idle buffers of other classes still keeps a new class:
 * an idle one makes room. */
static void full_table_makes_room(v4_buffers *b)
{
    enum { N = 100 };
    float *p[N];
    size_t each = 2 * MB; /* one class for all */
    for (int i = 0; i < N; i++) p[i] = v4_buffers_get(b, each);
    for (int i = 0; i < N; i++) v4_buffers_put(b, p[i]);
    size_t full = v4_buffers_kept(b);
    CHECKF(full > 0 && full % (each * sizeof(float)) == 0, "kept %zu", full);
    float *other = v4_buffers_get(b, 3 * MB);
    REQUIRE(other, "3 MB");
    v4_buffers_put(b, other);
    CHECKF(v4_buffers_kept(b) == full - each * sizeof(float) + 3 * MB * sizeof(float),
           "kept %zu after a new class, %zu before", v4_buffers_kept(b), full);
    v4_buffers_trim(b);
    CHECK(v4_buffers_kept(b) == 0);
}

/* Threads taking and giving back buffers of a few classes: each holder
 * finds its own mark when it gives its buffer back. */
typedef struct worker {
    v4_buffers *b;
    int id, clashes, failures;
} worker;

static void *churn(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < 300; i++) {
        size_t n = MB * (size_t)(1 + (i + w->id) % 3);
        float *p = v4_buffers_get(w->b, n);
        if (!p) {
            w->failures++;
            continue;
        }
        for (size_t k = 0; k < n; k += 4096) p[k] = (float)w->id;
        sched_yield();
        for (size_t k = 0; k < n; k += 4096) w->clashes += p[k] != (float)w->id;
        v4_buffers_put(w->b, p);
        if (i % 50 == 49) v4_buffers_trim(w->b);
    }
    return NULL;
}

static void threads_never_share(v4_buffers *b)
{
    enum { T = 4 };
    pthread_t th[T];
    worker w[T];
    for (int i = 0; i < T; i++) {
        w[i] = (worker){b, i + 1, 0, 0};
        REQUIRE(pthread_create(&th[i], NULL, churn, &w[i]) == 0, "thread");
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECKF(w[i].clashes == 0 && w[i].failures == 0, "thread %d: %d clashes, %d failures", i,
               w[i].clashes, w[i].failures);
    }
    v4_buffers_trim(b);
    CHECK(v4_buffers_kept(b) == 0);
}

int main(void)
{
    v4_buffers *b;
    tome_error err = {0};
    REQUIRE(v4_buffers_new(&b, &err) == 0, "%s", err.msg);
    reuse_by_class(b);
    small_requests(b);
    trim_keeps_busy(b);
    more_than_the_table(b);
    full_table_makes_room(b);
    threads_never_share(b);
    float *held = v4_buffers_get(b, 3 * MB); /* freed with the table */
    CHECK(held != NULL);
    v4_buffers_free(b);
    v4_buffers_free(NULL);
    return check_finish();
}
