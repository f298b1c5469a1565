/*
 * router.h - the route table and the checks every request passes (router.c).
 */
#ifndef TOMED_ROUTER_H
#define TOMED_ROUTER_H

#include <jansson.h>

#include "common/common.h"
#include "daemon/conf.h"
#include "daemon/types.h"

enum {
    TOMED_ROUTE_PUBLIC = 1, /* no principal needed (health) */
    TOMED_ROUTE_ADMIN = 2,  /* administrators on the Unix socket only */
    TOMED_ROUTE_UPLOAD = 4, /* an octet-stream body is streamed to a file */
    TOMED_ROUTE_OPENAI = 8, /* errors in OpenAI's shape (routes_openai.c) */
};

typedef void (*tomed_handler)(tomed_request *r);

typedef struct tomed_route {
    const char *method;
    const char *pattern; /* '*' matches one path segment */
    tomed_handler handler;
    int flags;
} tomed_route;

/* Called by http.c once the request line and headers are in: finds the
 * route, authenticates; returns 0 to go on reading the body, or replies and
 * returns -1. */
int tomed_route_request(tomed_request *r);
/* Called by http.c when the body is complete. */
void tomed_dispatch(tomed_request *r);

/* routes_health.c */
void tomed_route_health(tomed_request *r);
void tomed_route_ready(tomed_request *r);
void tomed_route_metrics(tomed_request *r);
/* routes_corpora.c */
void tomed_route_corpus_create(tomed_request *r);
void tomed_route_corpus_list(tomed_request *r);
void tomed_route_corpus_show(tomed_request *r);
void tomed_route_corpus_delete(tomed_request *r);
void tomed_route_ingest(tomed_request *r);
void tomed_route_search(tomed_request *r);
/* routes_document.c */
void tomed_route_document(tomed_request *r);
/* routes_jobs.c */
void tomed_route_prefill(tomed_request *r);
void tomed_route_job_list(tomed_request *r);
void tomed_route_job_show(tomed_request *r);
void tomed_route_job_events(tomed_request *r);
void tomed_route_job_cancel(tomed_request *r);
/* routes_ask.c */
void tomed_route_ask(tomed_request *r);
/* routes_openai.c */
void tomed_route_openai_models(tomed_request *r);
void tomed_route_openai_chat(tomed_request *r);
void tomed_route_openai_completions(tomed_request *r);
/* routes_admin.c */
void tomed_route_cache_list(tomed_request *r);
void tomed_route_cache_verify(tomed_request *r);
void tomed_route_cache_delete(tomed_request *r);
void tomed_route_token_list(tomed_request *r);
void tomed_route_token_create(tomed_request *r);
void tomed_route_token_revoke(tomed_request *r);
/* A token's "scopes": 1 to TOMED_MAX_SCOPES objects {"corpus", "rights"}
 * into scopes[] and *n, or a 400 reply and -1. */
int tomed_scopes_parse(tomed_request *r, json_t *list, tomed_scope *scopes, int *n);

/* Checks the principal's right on the corpus named by the first path
 * parameter; replies 400/403 and returns -1 when it may not go on. */
int tomed_require_corpus(tomed_request *r, int rights);

#endif
