/*
 * workers.c - the worker pool, and the way back to the loop thread.
 *
 * The loop thread must never block, so anything that may wait on a disk or
 * a lock for long (reading an archive, SQLite writes, hashing an upload)
 * runs here.  A task is two functions: `work` on a worker thread, then
 * `done` on the loop thread, where it may touch connections again.
 *
 * The way back is tomed_post(): a mutex-protected list drained by one
 * libevent event that other threads activate with event_active() (libevent
 * is set up for threads with evthread_use_pthreads(), so that is safe).
 * The engine executor uses the same path to publish progress and tokens.
 */
#include "daemon/types.h"
#include "daemon/workers.h"

#include <event2/event.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

typedef struct task {
    tomed_fn work, done;
    void *arg;
    struct task *next;
} task;

struct tomed_pool {
    struct event_base *base;
    struct event *wakeup;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    task *queue_head, *queue_tail;   /* waiting for a worker */
    task *posted_head, *posted_tail; /* waiting for the loop */
    int stopping;
    int n_threads;
    pthread_t *threads;
};

static void append(task **head, task **tail, task *t)
{
    t->next = NULL;
    if (*tail)
        (*tail)->next = t;
    else
        *head = t;
    *tail = t;
}

/* On the loop thread: run everything posted so far. */
static void run_posted(evutil_socket_t fd, short what, void *arg)
{
    tomed_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    task *list = p->posted_head;
    p->posted_head = p->posted_tail = NULL;
    pthread_mutex_unlock(&p->lock);
    while (list) {
        task *next = list->next;
        list->done(list->arg);
        free(list);
        list = next;
    }
}

void tomed_post(tomed_pool *p, tomed_fn fn, void *arg)
{
    task *t = malloc(sizeof *t);
    if (!t) {
        /* Out of memory here would lose a completion and leak whatever it
         * owns; retrying is the only choice that keeps the invariant. */
        while (!(t = malloc(sizeof *t))) sched_yield();
    }
    t->done = fn;
    t->arg = arg;
    pthread_mutex_lock(&p->lock);
    append(&p->posted_head, &p->posted_tail, t);
    pthread_mutex_unlock(&p->lock);
    event_active(p->wakeup, EV_READ, 0);
}

static void *worker_main(void *arg)
{
    tomed_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->queue_head && !p->stopping) pthread_cond_wait(&p->cond, &p->lock);
        task *t = p->queue_head;
        if (!t) break;
        p->queue_head = t->next;
        if (!p->queue_head) p->queue_tail = NULL;
        pthread_mutex_unlock(&p->lock);
        t->work(t->arg);
        pthread_mutex_lock(&p->lock);
        if (t->done) {
            append(&p->posted_head, &p->posted_tail, t);
            event_active(p->wakeup, EV_READ, 0);
        } else {
            free(t);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int tomed_pool_new(struct event_base *base, int n_threads, tomed_pool **out, tome_error *err)
{
    tomed_pool *p = calloc(1, sizeof *p);
    if (!p) return tome_errorf(err, TOME_ENOMEM, "worker pool");
    p->base = base;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->wakeup = event_new(base, -1, EV_PERSIST, run_posted, p);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->wakeup || !p->threads) {
        tomed_pool_free(p);
        return tome_errorf(err, TOME_ENOMEM, "worker pool");
    }
    for (int i = 0; i < n_threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
            tomed_pool_free(p);
            return tome_errorf(err, TOME_EINTERNAL, "cannot start worker thread %d", i);
        }
        p->n_threads++;
    }
    *out = p;
    return 0;
}

void tomed_pool_free(tomed_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    /* Completions that never reached the loop still own their arguments. */
    if (p->wakeup) run_posted(-1, 0, p);
    if (p->wakeup) event_free(p->wakeup);
    free(p->threads);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

int tomed_pool_submit(tomed_pool *p, tomed_fn work, tomed_fn done, void *arg)
{
    task *t = malloc(sizeof *t);
    if (!t) return TOME_ENOMEM;
    t->work = work;
    t->done = done;
    t->arg = arg;
    pthread_mutex_lock(&p->lock);
    append(&p->queue_head, &p->queue_tail, t);
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return 0;
}
