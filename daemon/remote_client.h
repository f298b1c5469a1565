/*
 * remote_client.h - requests to an OpenAI-compatible server (remote_client.c),
 * for the remote engine (engine_remote.c).  Blocking calls: each runs on
 * the thread of the job or question it serves.
 */
#ifndef TOMED_REMOTE_CLIENT_H
#define TOMED_REMOTE_CLIENT_H

#include <jansson.h>
#include <stdatomic.h>

#include "common/common.h"
#include "daemon/conf.h"

/* Where and how to reach one endpoint (immutable once made). */
typedef struct remote_target {
    const tomed_remote *conf;
    const char *api_key; /* "" for none */
    int connect_timeout_s;
    int timeout_s; /* without a byte from the server */
} remote_target;

/* Called with each event of a streamed reply, parsed; nonzero stops the
 * transfer (the call then returns TOME_ECANCELED). */
typedef int (*remote_event_fn)(void *ctx, json_t *event);
/* Called about once a second while the call waits; nonzero stops it. */
typedef int (*remote_tick_fn)(void *ctx);

typedef struct remote_stream {
    remote_event_fn on_event;
    remote_tick_fn on_tick;
    void *ctx;
    /* results */
    long status;   /* the HTTP status, 0 when none came */
    int connected; /* a status line arrived: the server took the request */
    int done;      /* the stream ended with [DONE] */
} remote_stream;

/* POST `body` to URL/PATH with "stream": true and deliver each data event
 * to s->on_event.  0 once the stream ended with [DONE]; else a TOME_E*
 * with the server's or the transport's message in `err`. */
int remote_post_stream(const remote_target *t, const char *path, json_t *body, remote_stream *s,
                       tome_error *err);
/* GET URL/PATH: 0 when it answers 2xx (the health check). */
int remote_get_ok(const remote_target *t, const char *path, tome_error *err);
/* Read an API key file (its first line). */
int remote_read_key(const char *path, char *out, size_t cap, tome_error *err);

#endif
