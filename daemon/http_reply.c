/*
 * http_reply.c - answers: the status line and headers, bodies with a
 * Content-Length, JSON replies and errors in tome-protocol(7)'s shape, and
 * chunked streams of Server-Sent Events.  Every JSON reply is checked for a
 * failed encode, so a client never waits on an answer that was lost.
 */
#include "config.h"

#include "daemon/conf.h"
#include "daemon/http_internal.h"
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/router.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

int tomed_status_for(int code)
{
    switch (code) {
    case TOME_EINVAL:
        return 400;
    case TOME_EFORMAT:
        return 400;
    case TOME_ENOTFOUND:
        return 404;
    case TOME_ELIMIT:
        return 413;
    case TOME_EMISMATCH:
        return 409;
    case TOME_EEXIST:
        return 409;
    case TOME_ECANCELED:
        return 409;
    case TOME_EPERM:
        return 403;
    case TOME_EBUSY:
        return 429;
    case TOME_ENOMEM:
        return 503;
    case TOME_EIO:
        return 500;
    case TOME_EUPSTREAM:
        return 502;
    default:
        return 500;
    }
}

/* The status line and headers.  A body is either `len` bytes (len >= 0) or
 * a chunked stream (len < 0). */
void http_write_head(tomed_request *r, int status, const char *content_type, int64_t len)
{
    tomed_conn *c = r->conn;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->server->draining) c->close_after = 1;
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nServer: tomed/" PACKAGE_VERSION "\r\n", status,
                        reason_phrase(status));
    if (content_type) evbuffer_add_printf(out, "Content-Type: %s\r\n", content_type);
    if (len >= 0)
        evbuffer_add_printf(out, "Content-Length: %lld\r\n", (long long)len);
    else
        evbuffer_add_printf(out, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n"
                                 "X-Accel-Buffering: no\r\n");
    if (status == 429 || status == 503) evbuffer_add_printf(out, "Retry-After: 1\r\n");
    if (status == 401) evbuffer_add_printf(out, "WWW-Authenticate: Bearer realm=\"tome\"\r\n");
    evbuffer_add_printf(out, "Connection: %s\r\n\r\n", c->close_after ? "close" : "keep-alive");
    r->responded = 1;
    r->status = status;
}

void tomed_reply_text(tomed_request *r, int status, const char *content_type, struct evbuffer *body)
{
    size_t len = body ? evbuffer_get_length(body) : 0;
    http_write_head(r, status, content_type, (int64_t)len);
    if (body && strcmp(r->method, "HEAD") != 0)
        evbuffer_add_buffer(bufferevent_get_output(r->conn->bev), body);
    http_finish_request(r->conn);
}

/* What a reply says when its own JSON could not be built (a value that is
 * not UTF-8, or no memory): a fixed text, so it can always be sent. */
static const char encode_failure[] =
    "{\"error\":{\"code\":\"internal\",\"message\":\"the reply could not be encoded as "
    "JSON\"}}";

/* `value` as compact JSON (malloc'd), or NULL when it is NULL (a json_pack
 * that failed) or cannot be encoded; the failure is logged, naming `what`. */
static char *encode_json(tomed_request *r, json_t *value, const char *what)
{
    char *text = value ? json_dumps(value, JSON_COMPACT) : NULL;
    json_decref(value);
    if (!text)
        tomed_log(TOMED_LOG_ERROR, "%s %s: the %s could not be encoded as JSON", r->method,
                  r->path ? r->path : "?", what);
    return text;
}

void tomed_reply_json(tomed_request *r, int status, json_t *body)
{
    char *text = encode_json(r, body, "reply");
    struct evbuffer *buf = evbuffer_new();
    if (!buf) {
        r->conn->close_after = 1;
        tomed_reply_text(r, 503, NULL, NULL);
    } else {
        if (!text) status = 500;
        const char *json = text ? text : encode_failure;
        evbuffer_add(buf, json, strlen(json));
        evbuffer_add(buf, "\n", 1);
        tomed_reply_text(r, status, "application/json", buf);
        evbuffer_free(buf);
    }
    free(text);
}

void tomed_reply_empty(tomed_request *r, int status)
{
    tomed_reply_text(r, status, NULL, NULL);
}

static void reply_error_v(tomed_request *r, int status, int code, json_t *extra, const char *fmt,
                          va_list ap)
{
    char raw[TOME_ERROR_MAX], msg[3 * TOME_ERROR_MAX];
    vsnprintf(raw, sizeof raw, fmt, ap);
    /* Messages quote what clients and files said, which may not be text. */
    msg[tome_utf8_repair(raw, strlen(raw), msg)] = '\0';
    json_t *error = json_pack("{s:s, s:s}", "code", tome_error_name(code), "message", msg);
    /* OpenAI's clients read their own error shape (routes_openai.c). */
    if (r->route && (r->route->flags & TOMED_ROUTE_OPENAI)) {
        json_t *shaped = tomed_openai_error_json(status, code, msg);
        json_decref(error);
        error = json_incref(json_object_get(shaped, "error"));
        json_decref(shaped);
    }
    if (extra) {
        json_object_update(error, extra);
        json_decref(extra);
    }
    int index = -code;
    if (index < 1 || index > TOME_ERROR_CODES) index = -TOME_EINTERNAL;
    atomic_fetch_add(&tomed_stats.errors[index], 1);
    tomed_log(status >= 500 ? TOMED_LOG_WARN : TOMED_LOG_DEBUG, "%s %s: %d %s: %s", r->method,
              r->path ? r->path : "?", status, tome_error_name(code), msg);
    tomed_reply_json(r, status, json_pack("{s:o}", "error", error));
}

void tomed_reply_error_ex(tomed_request *r, int status, int code, json_t *extra, const char *fmt,
                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(r, status, code, extra, fmt, ap);
    va_end(ap);
}

void tomed_reply_error(tomed_request *r, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(r, tomed_status_for(code), code, NULL, fmt, ap);
    va_end(ap);
}

/* `msg` as a client may see it: the store names its database in every
 * message, and where the state directory lies is no client's business, so
 * a leading "STATE_DIR/tome.db: " goes and any other mention of the state
 * directory reads STATE_DIR.  The full message is logged. */
static void redact_state_dir(const char *state_dir, const char *msg, char *out, size_t cap)
{
    size_t dir_len = strlen(state_dir), n = 0;
    if (!dir_len || !strstr(msg, state_dir)) {
        snprintf(out, cap, "%s", msg);
        return;
    }
    tomed_log(TOMED_LOG_INFO, "error answered without its paths: %s", msg);
    if (strncmp(msg, state_dir, dir_len) == 0 && strncmp(msg + dir_len, "/tome.db: ", 10) == 0)
        msg += dir_len + 10;
    out[0] = 0;
    for (const char *at; (at = strstr(msg, state_dir)) && n < cap; msg = at + dir_len)
        n += (size_t)snprintf(out + n, cap - n, "%.*sSTATE_DIR", (int)(at - msg), msg);
    if (n < cap) snprintf(out + n, cap - n, "%s", msg);
}

void tomed_reply_tome_error(tomed_request *r, const tome_error *err)
{
    char shown[sizeof err->msg + 64];
    redact_state_dir(r->server->cfg.state_dir, err->msg, shown, sizeof shown);
    tomed_reply_error(r, err->code ? err->code : TOME_EINTERNAL, "%s", shown);
}

json_t *tomed_request_json(tomed_request *r)
{
    size_t len = r->body ? evbuffer_get_length(r->body) : 0;
    if (len == 0) {
        tomed_reply_error(r, TOME_EINVAL, "this request needs a JSON object as its body");
        return NULL;
    }
    json_error_t jerr;
    json_t *obj = json_loadb((const char *)evbuffer_pullup(r->body, -1), len, 0, &jerr);
    if (!obj || !json_is_object(obj)) {
        json_decref(obj);
        tomed_reply_error(r, TOME_EFORMAT, "request body is not a JSON object: %s",
                          obj ? "another JSON value" : jerr.text);
        return NULL;
    }
    return obj;
}

/* ------------------------------------------------------------------------
 * Streams (chunked; used for Server-Sent Events)
 * ------------------------------------------------------------------------ */

void tomed_stream_begin(tomed_request *r, int status, const char *content_type)
{
    http_write_head(r, status, content_type, -1);
    r->streaming = 1;
}

void tomed_stream_write(tomed_request *r, const void *data, size_t len)
{
    tomed_conn *c = r->conn;
    if (len == 0 || c->doomed) return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    /* A client that reads nothing would make us hold its answer in memory
     * without bound.  The connection is closed from its deadline event, not
     * here, because the caller still holds `r`. */
    if (evbuffer_get_length(out) > MAX_PENDING_OUTPUT) {
        tomed_log(TOMED_LOG_WARN, "%s: client is not reading; closing", r->peer->address);
        c->doomed = 1;
        c->close_after = 1;
        event_active(c->deadline, EV_TIMEOUT, 1);
        return;
    }
    evbuffer_add_printf(out, "%zx\r\n", len);
    evbuffer_add(out, data, len);
    evbuffer_add(out, "\r\n", 2);
}

void tomed_stream_event(tomed_request *r, const char *event, json_t *data)
{
    char *text = encode_json(r, data, event);
    /* A lost event would leave the client waiting for its end: say so. */
    const char *json = text ? text : encode_failure;
    if (!text) event = "error";
    size_t cap = strlen(event) + strlen(json) + 32;
    char *frame = malloc(cap);
    if (frame) {
        int n = snprintf(frame, cap, "event: %s\ndata: %s\n\n", event, json);
        tomed_stream_write(r, frame, (size_t)n);
    }
    free(frame);
    free(text);
}

void tomed_stream_data(tomed_request *r, json_t *data)
{
    char *text = encode_json(r, data, "event");
    const char *json = text ? text : encode_failure;
    size_t cap = strlen(json) + 16;
    char *frame = malloc(cap);
    if (frame) {
        int n = snprintf(frame, cap, "data: %s\n\n", json);
        tomed_stream_write(r, frame, (size_t)n);
    }
    free(frame);
    free(text);
}

void tomed_stream_comment(tomed_request *r, const char *text)
{
    char frame[256];
    int n = snprintf(frame, sizeof frame, ": %s\n\n", text);
    tomed_stream_write(r, frame, (size_t)n);
}

void tomed_stream_end(tomed_request *r)
{
    if (!r->conn->doomed) evbuffer_add(bufferevent_get_output(r->conn->bev), "0\r\n\r\n", 5);
    http_finish_request(r->conn);
}
