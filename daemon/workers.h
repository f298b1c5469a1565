/*
 * workers.h - the worker pool and the way back to the loop thread (workers.c).
 */
#ifndef TOMED_WORKERS_H
#define TOMED_WORKERS_H

#include "common/common.h"
#include "daemon/types.h"

struct event_base;

typedef void (*tomed_fn)(void *arg);

/* Threads that run `work` off the loop, then `done` on the loop thread. */
int tomed_pool_new(struct event_base *base, int n_threads, tomed_pool **out, tome_error *err);
/* Stops taking work, finishes what is queued, joins the threads. */
void tomed_pool_free(tomed_pool *p);
int tomed_pool_submit(tomed_pool *p, tomed_fn work, tomed_fn done, void *arg);
/* Run fn(arg) on the loop thread soon; callable from any thread. */
void tomed_post(tomed_pool *p, tomed_fn fn, void *arg);

#endif
