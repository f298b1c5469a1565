/*
 * router.c - the route table of tome-protocol(7), and the checks every
 * request passes before its handler runs.
 *
 * Routing happens as soon as the request head is in, before the body: an
 * unknown path, a missing credential or an oversized body is refused
 * without reading (let alone storing) a byte of what follows.  The order of
 * checks is fixed: route, then authentication (401 for bad credentials),
 * then the route's class (public, any principal, administrator on the Unix
 * socket), then the body's size and destination.  Per-corpus rights are
 * checked by the handlers, which know the corpus.
 */
#include "daemon/auth.h"
#include "daemon/http.h"
#include "daemon/router.h"
#include "daemon/server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const tomed_route routes[] = {
    {"GET", "/v1/health", tomed_route_health, TOMED_ROUTE_PUBLIC},
    {"GET", "/v1/ready", tomed_route_ready, TOMED_ROUTE_PUBLIC},
    {"GET", "/metrics", tomed_route_metrics, 0},
    {"POST", "/v1/corpora", tomed_route_corpus_create, 0},
    {"GET", "/v1/corpora", tomed_route_corpus_list, 0},
    {"GET", "/v1/corpora/*", tomed_route_corpus_show, 0},
    {"DELETE", "/v1/corpora/*", tomed_route_corpus_delete, 0},
    {"POST", "/v1/corpora/*/ingest", tomed_route_ingest, TOMED_ROUTE_UPLOAD},
    {"GET", "/v1/corpora/*/search", tomed_route_search, 0},
    {"GET", "/v1/corpora/*/document", tomed_route_document, 0},
    {"POST", "/v1/corpora/*/prefill", tomed_route_prefill, 0},
    {"POST", "/v1/corpora/*/ask", tomed_route_ask, 0},
    {"GET", "/v1/jobs", tomed_route_job_list, 0},
    {"GET", "/v1/jobs/*", tomed_route_job_show, 0},
    {"GET", "/v1/jobs/*/events", tomed_route_job_events, 0},
    {"DELETE", "/v1/jobs/*", tomed_route_job_cancel, 0},
    {"GET", "/v1/cache", tomed_route_cache_list, TOMED_ROUTE_ADMIN},
    {"POST", "/v1/cache/*/verify", tomed_route_cache_verify, TOMED_ROUTE_ADMIN},
    {"DELETE", "/v1/cache/*", tomed_route_cache_delete, TOMED_ROUTE_ADMIN},
    {"GET", "/v1/tokens", tomed_route_token_list, TOMED_ROUTE_ADMIN},
    {"POST", "/v1/tokens", tomed_route_token_create, TOMED_ROUTE_ADMIN},
    {"DELETE", "/v1/tokens/*", tomed_route_token_revoke, TOMED_ROUTE_ADMIN},
    {"GET", "/openai/v1/models", tomed_route_openai_models, TOMED_ROUTE_OPENAI},
    {"POST", "/openai/v1/chat/completions", tomed_route_openai_chat, TOMED_ROUTE_OPENAI},
    {"POST", "/openai/v1/completions", tomed_route_openai_completions, TOMED_ROUTE_OPENAI},
};

/* Does `path` match `pattern`?  Each '*' takes one non-empty segment of
 * the raw path; with `params`, each is percent-decoded into it (a segment
 * that does not decode to UTF-8 text leaves its slot NULL and sets *bad). */
static int match(const char *pattern, const char *path, char *params[2], int *bad)
{
    int n = 0;
    while (*pattern && *path) {
        if (*pattern == '*') {
            size_t len = strcspn(path, "/");
            if (len == 0 || n == 2) return 0;
            if (params) {
                params[n] = tomed_percent_decode(path, len, 0);
                if (!params[n]) *bad = 1;
            }
            n++;
            path += len;
            pattern++;
        } else if (*pattern++ != *path++) {
            return 0;
        }
    }
    return *pattern == '\0' && *path == '\0';
}

static const tomed_route *find_route(tomed_request *r, int *path_known, int *bad_segment)
{
    *path_known = 0;
    *bad_segment = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (!match(routes[i].pattern, r->path, NULL, NULL)) continue;
        *path_known = 1;
        int same = strcmp(routes[i].method, r->method) == 0 ||
                   (strcmp(routes[i].method, "GET") == 0 && strcmp(r->method, "HEAD") == 0);
        if (same && match(routes[i].pattern, r->path, r->params, bad_segment)) return &routes[i];
    }
    return NULL;
}

static int is_octet_stream(const tomed_request *r)
{
    const char *type = tomed_header_get(r, "content-type");
    return type && strncasecmp(type, "application/octet-stream", 24) == 0;
}

/* An upload goes straight to a private file under STATE_DIR/tmp. */
static int open_upload(tomed_request *r)
{
    snprintf(r->body_path, sizeof r->body_path, "%s/tmp/upload-XXXXXX", r->server->cfg.state_dir);
    r->body_fd = mkostemp(r->body_path, O_CLOEXEC);
    if (r->body_fd < 0) {
        tomed_reply_error(r, TOME_EIO, "cannot create an upload file in %s/tmp: %s",
                          r->server->cfg.state_dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int check_body_size(tomed_request *r, int upload)
{
    int64_t cap = upload ? r->server->cfg.max_upload_bytes : r->server->cfg.max_request_bytes;
    if (r->content_length > cap) {
        tomed_reply_error_ex(r, 413, TOME_ELIMIT, NULL,
                             "request body of %lld bytes is over %s (%lld)",
                             (long long)r->content_length,
                             upload ? "max_upload_bytes" : "max_request_bytes", (long long)cap);
        return -1;
    }
    return 0;
}

int tomed_route_request(tomed_request *r)
{
    int path_known, bad_segment;
    const tomed_route *route = find_route(r, &path_known, &bad_segment);
    if (bad_segment) {
        tomed_reply_error(r, TOME_EINVAL,
                          "a segment of the path %s is not UTF-8 text after percent-decoding",
                          r->path);
        return -1;
    }
    if (!route) {
        if (path_known)
            tomed_reply_error_ex(r, 405, TOME_EINVAL, NULL, "%s is not allowed on %s", r->method,
                                 r->path);
        else
            tomed_reply_error(r, TOME_ENOTFOUND, "no such endpoint: %s", r->path);
        return -1;
    }
    r->route = route;
    tome_error err = {0};
    tomed_server *s = r->server;
    if (tomed_authenticate(&s->cfg, s->tokens, r->peer, tomed_header_get(r, "authorization"),
                           &r->principal, &err) != 0) {
        tomed_reply_error_ex(r, 401, TOME_EPERM, NULL, "%s", err.msg);
        return -1;
    }
    if (!(route->flags & TOMED_ROUTE_PUBLIC) && r->principal.kind == TOMED_PRINCIPAL_NONE) {
        if (r->peer->transport == TOMED_TRANSPORT_TLS && r->principal.name[0])
            tomed_reply_error(r, TOME_EPERM, "%s is not mapped to a principal", r->principal.name);
        else if (r->peer->transport == TOMED_TRANSPORT_TLS)
            tomed_reply_error_ex(r, 401, TOME_EPERM, NULL,
                                 "credentials required: a bearer token or a client certificate");
        else
            tomed_reply_error(r, TOME_EPERM, "%s is not allowed to use tomed", r->principal.name);
        return -1;
    }
    if ((route->flags & TOMED_ROUTE_ADMIN) &&
        (r->peer->transport != TOMED_TRANSPORT_UNIX || !r->principal.admin)) {
        tomed_reply_error(r, TOME_EPERM, "%s needs an administrator on the Unix socket", r->path);
        return -1;
    }
    int upload = (route->flags & TOMED_ROUTE_UPLOAD) && is_octet_stream(r);
    if (check_body_size(r, upload) != 0) return -1;
    if (upload && open_upload(r) != 0) return -1;
    return 0;
}

void tomed_dispatch(tomed_request *r)
{
    r->route->handler(r);
}
