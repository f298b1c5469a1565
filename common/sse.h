/*
 * sse.h - a Server-Sent Events parser fed bytes as they arrive (sse.c).
 *
 * Two programs read event streams: the `tome` client (streamed answers and
 * job progress from tomed) and tomed's remote engine (streamed completions
 * from vLLM, SGLang or another tomed).  Both get the same parser, which
 * follows the HTML standard's framing, so a stream that is valid for one
 * reader is valid for the other.  Network reads split a stream anywhere
 * (inside a line, between CR and LF, inside a UTF-8 sequence); the parser
 * keeps the partial line and the event being built between calls and
 * calls back once per complete event.
 */
#ifndef TOME_COMMON_SSE_H
#define TOME_COMMON_SSE_H

#include <stddef.h>

#include "common/common.h"

/* Called once per complete event with its name ("message" when it has
 * none) and its data (several data lines joined with LF); a non-zero
 * return stops the stream and is passed back by tome_sse_feed. */
typedef int (*tome_sse_fn)(void *ctx, const char *event, const char *data, tome_error *err);

typedef struct tome_sse {
    tome_sse_fn on_event;
    void *ctx;
    const char *source; /* who sends the stream, for messages */
    size_t max_bytes;   /* the longest line or event data accepted */
    char *line, *data;
    size_t line_len, line_cap, data_len, data_cap;
    char event[64];
    int saw_cr;
} tome_sse;

/* Start a parser for the stream `source` sends ("tomed", a URL), whose
 * lines and events may hold up to `max_bytes`; longer is TOME_ELIMIT, so a
 * runaway stream cannot eat memory.  `source` must outlive the parser. */
void tome_sse_init(tome_sse *p, const char *source, size_t max_bytes, tome_sse_fn on_event,
                   void *ctx);
/* Parse the next `n` bytes: 0, or the first non-zero return of on_event,
 * or TOME_ELIMIT / TOME_ENOMEM with `err` filled. */
int tome_sse_feed(tome_sse *p, const char *bytes, size_t n, tome_error *err);
/* Release the buffers (the parser may be initialised again after). */
void tome_sse_free(tome_sse *p);

#endif
