/*
 * sse.c - the Server-Sent Events parser (sse.h) of the client's answers
 * and job progress and of the remote engine's completions.
 *
 * It follows the HTML standard's rules that matter to tome: lines end in
 * LF, CRLF or CR; a line starting with ':' is a comment (keepalives);
 * "field: value" loses one leading space; several data lines join with
 * LF; a blank line dispatches the event, and an event without data is
 * dropped; an event without a name is "message".  id and retry are
 * accepted and ignored: neither reader reconnects, both report.
 */
#include "common/sse.h"

#include <stdlib.h>
#include <string.h>

void tome_sse_init(tome_sse *p, const char *source, size_t max_bytes, tome_sse_fn on_event,
                   void *ctx)
{
    memset(p, 0, sizeof *p);
    p->source = source;
    p->max_bytes = max_bytes;
    p->on_event = on_event;
    p->ctx = ctx;
}

void tome_sse_free(tome_sse *p)
{
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
}

static int append(const tome_sse *p, char **buf, size_t *len, size_t *cap, const char *bytes,
                  size_t n, tome_error *err)
{
    if (n >= p->max_bytes - *len)
        return tome_errorf(err, TOME_ELIMIT, "an event from %s is over %zu bytes", p->source,
                           p->max_bytes);
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
        if (append(p, &p->data, &p->data_len, &p->data_cap, value, value_len, err))
            return err->code;
        if (append(p, &p->data, &p->data_len, &p->data_cap, "\n", 1, err)) return err->code;
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
        if (end > i && append(p, &p->line, &p->line_len, &p->line_cap, bytes + i, end - i, err))
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
