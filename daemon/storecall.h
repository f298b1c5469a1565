/*
 * storecall.h - store work on a worker thread, answered on the loop (storecall.c).
 */
#ifndef TOMED_STORECALL_H
#define TOMED_STORECALL_H

#include <jansson.h>

#include "common/common.h"
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/types.h"

struct store;
typedef int (*tomed_call_fn)(tomed_call *call, struct store *db, tome_error *err);

/* One request's trip to a worker.  Created on the loop thread by a route;
 * `fn` runs on a worker with that thread's store handle and fills `result`
 * (or returns an error); the reply is sent on the loop thread, unless the
 * client has gone, and the call is freed there. */
struct tomed_call {
    tomed_request *r; /* NULL once the client is gone */
    tomed_server *server;
    tomed_call_fn fn;
    int status;     /* the success status (200, 201, 204) */
    json_t *input;  /* the request body, when it had one */
    json_t *result; /* what fn answers */
    char corpus[TOMED_NAME_MAX + 1];
    char id[32];
    char *query;                 /* search text (malloc'd) */
    int regex;                   /* the query is a PCRE2 pattern */
    char upload[TOMED_PATH_MAX]; /* a streamed body, now the call's to remove */
    tomed_principal principal;   /* copied: the request may be gone when fn runs */
    tomed_peer peer;             /* copied, likewise */
    int rc;
    tome_error err;
};

tomed_call *tomed_call_new(tomed_request *r, tomed_call_fn fn, int status);
/* Hand the call to the pool; on failure the request is answered here. */
void tomed_call_start(tomed_call *c);
/* This thread's store handle (opened on first use, closed at thread exit). */
int tomed_thread_store(const char *state_dir, struct store **out, tome_error *err);
/* The newest saved, ready state of a corpus version for the model with
 * this fingerprint: 1 with `path` (cap TOMED_PATH_MAX), `id` (cap 32) and
 * `tokens` filled, 0 if there is none, or a negative error. */
int tomed_saved_state(struct store *db, int64_t corpus_id, int64_t version_id,
                      const char *fingerprint, char *path, char *id, int64_t *tokens,
                      tome_error *err);
/* Paths of up to `max` saved, ready states of any version of a corpus for
 * the model with this fingerprint, newest use last; the count, or a
 * negative error. */
int tomed_saved_states(struct store *db, int64_t corpus_id, const char *fingerprint,
                       char (*paths)[TOMED_PATH_MAX], int max, tome_error *err);
/* Remove leftovers of interrupted uploads. */
int tomed_clean_tmp(const char *dir, tome_error *err);

typedef struct tomed_engine tomed_engine;

#endif
