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
#include "common/sse.h"
#include "daemon/conf.h"

/* Where and how to reach one endpoint (immutable once made). */
typedef struct remote_target {
    const tomed_remote *conf;
    const char *api_key; /* "" for none */
    int connect_timeout_s;
    int timeout_s; /* without a byte from the server */
} remote_target;

/* Called with each event of a streamed reply, parsed (a JSON object that
 * is not an error); a non-zero TOME_E* with `err` filled stops the
 * transfer and becomes the call's result. */
typedef int (*remote_event_fn)(void *ctx, json_t *event, tome_error *err);
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

/* The reading of one streamed reply's body, apart from the transport, so
 * that the unit tests and the fuzz target feed it bytes as curl does.
 * Events are Server-Sent Events (common/sse.h) whose data is a JSON
 * object, until `data: [DONE]`; what comes after [DONE] is ignored. */
typedef struct remote_reader {
    remote_stream *s;
    const char *source; /* the server's URL, for messages */
    tome_sse sse;
} remote_reader;

/* The longest event accepted: a chunk of a completion is a few hundred
 * bytes; a server that batches many tokens in one stays far below. */
#define REMOTE_EVENT_MAX ((size_t)4 << 20)

void remote_reader_init(remote_reader *r, remote_stream *s, const char *source);
/* Parse the next `n` bytes of the body: 0, or the TOME_E* that ends the
 * reply with `err` naming the source and the fault: an error event
 * (`{"error": ...}` as vLLM and SGLang send one mid-stream, older vLLM's
 * `{"object": "error", ...}`, or `event: error`), an event that is not a
 * JSON object, one over REMOTE_EVENT_MAX, or on_event's refusal. */
int remote_reader_feed(remote_reader *r, const char *bytes, size_t n, tome_error *err);
void remote_reader_free(remote_reader *r);

/* One chunk of a streamed completion, read and checked. */
typedef struct remote_chunk {
    const char *text; /* the first choice's text, borrowed from the event ("" for none) */
    size_t text_len;
    const char *finish_reason; /* "stop" or "length" once the answer ended, else NULL */
    int has_usage;
    int64_t prompt_tokens, completion_tokens, cached_tokens;
} remote_chunk;

/* Read a completion chunk: 0, or TOME_EIO naming what cannot be: choices
 * that are not an array of objects, a text that is not a string, a finish
 * reason other than "stop" and "length" (the server aborted the answer or
 * filtered it: either way it is not whole), usage counts that are not
 * whole numbers from 0 to 2^40, or more cached tokens than prompt ones. */
int remote_chunk_read(json_t *event, remote_chunk *c, tome_error *err);

/* POST `body` to URL/PATH with "stream": true and deliver each data event
 * to s->on_event.  0 once the stream ended with [DONE] (the transfer stops
 * there); else a TOME_E* with the server's, the reader's or the
 * transport's message in `err`: TOME_ECANCELED when on_tick stopped it. */
int remote_post_stream(const remote_target *t, const char *path, json_t *body, remote_stream *s,
                       tome_error *err);
/* GET URL/PATH: 0 when it answers 2xx (the health check). */
int remote_get_ok(const remote_target *t, const char *path, tome_error *err);
/* Read an API key file (its first line). */
int remote_read_key(const char *path, char *out, size_t cap, tome_error *err);

#endif
