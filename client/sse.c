/*
 * sse.c - a Server-Sent Events parser that is fed bytes as they arrive.
 *
 * Streamed answers and job progress come as text/event-stream.  Network
 * reads split the stream anywhere (inside a line, between CR and LF, inside
 * a UTF-8 sequence), so the parser keeps the partial line and the event
 * being built between calls, and calls back once per complete event.
 *
 * It follows the HTML standard's rules that matter to tome: lines end in
 * LF, CRLF or CR; a line starting with ':' is a comment (the daemon's
 * keepalives); "field: value" loses one leading space; several data lines
 * join with LF; a blank line dispatches the event, and an event without
 * data is dropped; an event without a name is "message".  id and retry
 * are accepted and ignored: the client does not reconnect, it reports.
 */
#include "client/client.h"

#include <stdlib.h>
#include <string.h>

/* An event's data is a JSON object; a megabyte is far beyond any real one
 * and keeps a runaway stream from eating memory. */
#define SSE_MAX_BYTES (1u << 20)

void tome_sse_init(tome_sse *p, tome_sse_fn on_event, void *ctx)
{
    memset(p, 0, sizeof *p);
    p->on_event = on_event;
    p->ctx = ctx;
}

void tome_sse_free(tome_sse *p)
{
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
}

static int append(char **buf, size_t *len, size_t *cap, const char *bytes, size_t n,
                  tome_error *err)
{
    if (*len + n + 1 > SSE_MAX_BYTES)
        return tome_errorf(err, TOME_ELIMIT, "an event from tomed is over %u bytes", SSE_MAX_BYTES);
    if (*len + n + 1 > *cap) {
        size_t want = *cap ? *cap : 256;
        while (want < *len + n + 1) want *= 2;
        char *bigger = realloc(*buf, want);
        if (!bigger) return tome_errorf(err, TOME_ENOMEM, "out of memory");
        *buf = bigger;
        *cap = want;
    }
    memcpy(*buf + *len, bytes, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

static int dispatch(tome_sse *p, tome_error *err)
{
    int rc = 0;
    if (p->data_len > 0) {
        p->data[--p->data_len] = '\0'; /* the LF after the last data line */
        rc = p->on_event(p->ctx, p->event[0] ? p->event : "message", p->data, err);
    }
    p->data_len = 0;
    p->event[0] = '\0';
    return rc;
}

static int process_line(tome_sse *p, const char *line, size_t len, tome_error *err)
{
    if (len == 0) return dispatch(p, err);
    if (line[0] == ':') return 0;
    const char *colon = memchr(line, ':', len);
    size_t name_len = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    if (colon && value < line + len && *value == ' ') value++;
    size_t value_len = (size_t)(line + len - value);
    if (name_len == 5 && memcmp(line, "event", 5) == 0) {
        if (value_len >= sizeof p->event) value_len = sizeof p->event - 1;
        memcpy(p->event, value, value_len);
        p->event[value_len] = '\0';
    } else if (name_len == 4 && memcmp(line, "data", 4) == 0) {
        if (append(&p->data, &p->data_len, &p->data_cap, value, value_len, err)) return err->code;
        if (append(&p->data, &p->data_len, &p->data_cap, "\n", 1, err)) return err->code;
    }
    return 0;
}

int tome_sse_feed(tome_sse *p, const char *bytes, size_t n, tome_error *err)
{
    size_t i = 0;
    while (i < n) {
        if (p->saw_cr && bytes[i] == '\n') { /* the LF of a CRLF already handled */
            p->saw_cr = 0;
            i++;
            continue;
        }
        p->saw_cr = 0;
        size_t end = i;
        while (end < n && bytes[end] != '\n' && bytes[end] != '\r') end++;
        if (end > i && append(&p->line, &p->line_len, &p->line_cap, bytes + i, end - i, err))
            return err->code;
        if (end == n) break;
        p->saw_cr = bytes[end] == '\r';
        int rc = process_line(p, p->line ? p->line : "", p->line_len, err);
        p->line_len = 0;
        if (rc) return rc;
        i = end + 1;
    }
    return 0;
}
