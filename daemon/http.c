/*
 * http.c - HTTP/1.1 connections: requests in, responses and streams out.
 *
 * Why not libevent's evhttp: in libevent 2.1 it buffers a whole request
 * body in memory before the handler runs, which an archive upload must not
 * do, and it hides the accepted socket, so neither the peer's credentials
 * nor a connection limit can be applied where they belong.  This file is
 * the small subset of HTTP/1.1 that tome-protocol(7) needs, on plain or TLS
 * bufferevents alike:
 *
 *   - one request at a time per connection (keep-alive, no interleaving);
 *   - bodies by Content-Length or chunked transfer coding, either buffered
 *     (JSON, capped by max_request_bytes) or written to a file as they
 *     arrive (uploads, capped by max_upload_bytes), `Expect: 100-continue`;
 *   - responses with Content-Length, or chunked streams for Server-Sent
 *     Events that stay open as long as the handler wants;
 *   - time limits, so a slow or stalled client cannot hold a connection:
 *     idle_timeout between requests, header_timeout from the first byte of a
 *     request to the end of its headers (an absolute deadline, so trickling
 *     bytes does not extend it), io_timeout for each read of a body and for
 *     each write that makes no progress, and a cap on unsent output.
 *
 * A request belongs to its connection.  A handler that answers later (after
 * a worker or the engine is done) keeps the pointer and sets on_abort, which
 * is called if the connection dies first, so the pointer is never used after
 * it is freed.  Everything here runs on the loop thread.
 */
#include "config.h"

#include "daemon/auth.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/router.h"
#include "daemon/server.h"
#include "daemon/tls.h"
#include "daemon/types.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/err.h>
#include <poll.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEADER_BYTES   (32 * 1024)
#define MAX_HEADERS        64
#define MAX_PENDING_OUTPUT (8 * 1024 * 1024)
/* No new request is read while more answers than this wait to be sent. */
#define MAX_QUEUED_ANSWERS (1024 * 1024)
#define LINGER_SECONDS     2
#define LINGER_MAX_BYTES   (1024 * 1024)

enum phase {
    PHASE_HEADERS,    /* waiting for (the rest of) a request head */
    PHASE_BODY,       /* Content-Length body */
    PHASE_CHUNK_SIZE, /* chunked body: the size line */
    PHASE_CHUNK_DATA, /* chunked body: data */
    PHASE_CHUNK_END,  /* chunked body: CRLF after data */
    PHASE_TRAILER,    /* chunked body: trailer lines up to the empty one */
    PHASE_HANDLING,   /* the handler owns the request */
};

struct tomed_conn {
    tomed_server *server;
    struct bufferevent *bev;
    tomed_peer peer;
    struct event *deadline;
    tomed_request *req;
    enum phase phase;
    int64_t chunk_left;
    int deadline_is_header; /* the deadline is header_timeout, not idle */
    int close_after;        /* close once the response is out */
    int closing;            /* the response is out; waiting for it to drain */
    int in_read;
    int doomed;           /* being closed from the deadline event; write nothing more */
    int peer_eof;         /* the client shut its writing side */
    int read_paused;      /* its answers pile up: reading waits for them */
    int lingering;        /* answered and shut down; dropping late input */
    int64_t lingered;     /* bytes dropped while lingering */
    struct event *linger; /* readable while lingering */
    tomed_conn *prev, *next;
};

static void conn_free(tomed_conn *c);
static void conn_process(tomed_conn *c);
static void close_when_sent(tomed_conn *c);

/* ------------------------------------------------------------------------
 * Requests
 * ------------------------------------------------------------------------ */

static void request_free(tomed_request *r)
{
    if (!r) return;
    if (r->body_fd >= 0) {
        close(r->body_fd);
        unlink(r->body_path);
    }
    if (r->body) evbuffer_free(r->body);
    for (int i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->path);
    free(r->query);
    free(r->params[0]);
    free(r->params[1]);
    free(r);
}

const char *tomed_header_get(const tomed_request *r, const char *name)
{
    for (int i = 0; i < r->n_headers; i++)
        if (strcmp(r->headers[i].name, name) == 0) return r->headers[i].value;
    return NULL;
}

static int hex_value(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

char *tomed_percent_decode(const char *s, size_t n, int plus_is_space)
{
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hex_value((unsigned char)s[i + 1]) >= 0 &&
            hex_value((unsigned char)s[i + 2]) >= 0) {
            int v = hex_value((unsigned char)s[i + 1]) * 16 + hex_value((unsigned char)s[i + 2]);
            out[j++] = (char)v;
            i += 2;
        } else if (s[i] == '+' && plus_is_space) {
            out[j++] = ' ';
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
    if (memchr(out, '\0', j) || !tome_utf8_valid(out, j)) {
        free(out);
        return NULL;
    }
    return out;
}

char *tomed_query_get(const tomed_request *r, const char *key)
{
    if (!r->query) return NULL;
    size_t klen = strlen(key);
    const char *p = r->query;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=')
            return tomed_percent_decode(p + klen + 1, n - klen - 1, 1);
        if (n == klen && strncmp(p, key, klen) == 0) return strdup("");
        p += n;
        if (*p == '&') p++;
    }
    return NULL;
}

/* Every parameter of the query must decode to UTF-8 without NUL bytes, so
 * that handlers (and the JSON they answer with) only ever see text. */
static const char *check_query(const char *query)
{
    const char *p = query;
    while (*p) {
        size_t n = strcspn(p, "&");
        char *decoded = tomed_percent_decode(p, n, 1);
        if (!decoded) return "a query parameter is not UTF-8 text after percent-decoding";
        free(decoded);
        p += n;
        if (*p == '&') p++;
    }
    return NULL;
}

static int add_header(tomed_request *r, const char *name, size_t nlen, const char *value)
{
    if (r->n_headers == MAX_HEADERS) return TOME_ELIMIT;
    if (!r->headers) r->headers = calloc(MAX_HEADERS, sizeof *r->headers);
    if (!r->headers) return TOME_ENOMEM;
    tomed_header *h = &r->headers[r->n_headers];
    h->name = strndup(name, nlen);
    h->value = strdup(value);
    if (!h->name || !h->value) {
        free(h->name);
        free(h->value);
        return TOME_ENOMEM;
    }
    for (char *q = h->name; *q; q++) *q = (char)tolower((unsigned char)*q);
    r->n_headers++;
    return 0;
}

/* Is every byte of the request target visible ASCII (RFC 9112 section 3.2)? */
static int target_is_ascii(const char *t)
{
    for (; *t; t++)
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f) return 0;
    return 1;
}

/* Is name[0..n) an HTTP token (RFC 9110 section 5.6.2)?  A field name with
 * anything else, such as "Content-Length :", is refused: a proxy in front
 * may read it differently, which is how requests are smuggled. */
static int is_token(const char *name, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!isalnum(ch) && !strchr("!#$%&'*+-.^_`|~", ch)) return 0;
    }
    return 1;
}

static int all_digits(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* How the body is framed: Content-Length or chunked, per RFC 9112 section
 * 6.  Whatever a proxy in front could read another way is refused with 400
 * (the connection then closes): a Content-Length that is not a plain
 * number, two that differ, both framings at once, a repeated
 * Transfer-Encoding.  Returns an HTTP status on failure, with *why. */
static int parse_framing(tomed_request *r, const char **why)
{
    const char *te = NULL, *cl = NULL;
    int n_te = 0;
    for (int i = 0; i < r->n_headers; i++) {
        const tomed_header *h = &r->headers[i];
        if (strcmp(h->name, "transfer-encoding") == 0) {
            te = h->value;
            n_te++;
        } else if (strcmp(h->name, "content-length") == 0) {
            *why = "Content-Length is not a decimal number";
            if (!all_digits(h->value)) return 400;
            *why = "conflicting Content-Length headers";
            if (cl && strcmp(cl, h->value) != 0) return 400;
            cl = h->value;
        }
    }
    r->content_length = -1;
    *why = "both Transfer-Encoding and Content-Length frame the body";
    if (te && cl) return 400;
    *why = "more than one Transfer-Encoding header";
    if (n_te > 1) return 400;
    if (te) {
        *why = "the only transfer coding supported is chunked";
        if (strcasecmp(te, "chunked") != 0) return 501;
        r->chunked = 1;
    } else if (cl) {
        errno = 0;
        long long n = strtoll(cl, NULL, 10);
        *why = "Content-Length is too large";
        if (errno) return 400;
        r->content_length = n;
    }
    return 0;
}

/* Parses the request head in `head` (NUL-terminated, CRLF lines, without
 * the final empty line) into `r`.  Returns an HTTP status on failure, with
 * *why saying what was wrong.
 *
 * r->path keeps the target's percent-escapes: the router matches the raw
 * path and decodes each segment it takes, so an escaped "/" (%2F) stays
 * inside its segment and cannot reach another route. */
static int parse_head(tomed_request *r, char *head, const char **why)
{
    char *save = NULL;
    char *line = strtok_r(head, "\r\n", &save);
    *why = "malformed request line";
    if (!line) return 400;
    char target[8192], version[16];
    if (sscanf(line, "%15s %8191s %15s", r->method, target, version) != 3) return 400;
    *why = "unsupported HTTP version";
    if (strncmp(version, "HTTP/1.", 7) != 0) return 505;
    *why = "the request target must be an absolute path of visible ASCII characters";
    if (target[0] != '/' || !target_is_ascii(target)) return 400;
    char *q = strchr(target, '?');
    *why = "out of memory";
    if (q) {
        *q = '\0';
        r->query = strdup(q + 1);
        if (!r->query) return 503;
        if ((*why = check_query(r->query))) return 400;
    }
    *why = "out of memory";
    r->path = strdup(target);
    if (!r->path) return 503;
    *why = "malformed header line";
    while ((line = strtok_r(NULL, "\r\n", &save))) {
        char *colon = strchr(line, ':');
        *why = "malformed header field name";
        if (!colon || !is_token(line, (size_t)(colon - line))) return 400;
        char *value = colon + 1;
        while (*value == ' ' || *value == '\t') value++;
        size_t vlen = strlen(value);
        while (vlen && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t')) value[--vlen] = '\0';
        if (add_header(r, line, (size_t)(colon - line), value) != 0) {
            *why = "too many header lines";
            return 431;
        }
    }
    int status = parse_framing(r, why);
    if (status != 0) return status;
    if (strncmp(version, "HTTP/1.0", 8) == 0) r->conn->close_after = 1;
    const char *connection = tomed_header_get(r, "connection");
    if (connection && strcasecmp(connection, "close") == 0) r->conn->close_after = 1;
    return 0;
}

/* ------------------------------------------------------------------------
 * Responses
 * ------------------------------------------------------------------------ */

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
    default:
        return 500;
    }
}

/* The status line and headers.  A body is either `len` bytes (len >= 0) or
 * a chunked stream (len < 0). */
static void write_head(tomed_request *r, int status, const char *content_type, int64_t len)
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

static void count_response(tomed_request *r)
{
    int klass = r->status / 100;
    if (klass < 0 || klass > 5) klass = 0;
    atomic_fetch_add(&tomed_stats.requests[r->peer->transport][klass], 1);
    tomed_log(TOMED_LOG_DEBUG, "%s %s %s -> %d (%.1f ms)",
              r->principal.name[0] ? r->principal.name : "-", r->method, r->path ? r->path : "?",
              r->status, (tome_now() - r->started) * 1000);
}

/* The response is fully queued: on to the next request or to closing. */
static void finish_request(tomed_conn *c)
{
    tomed_request *r = c->req;
    count_response(r);
    /* A body the handler did not wait for would be misread as the next
     * request; closing is the only safe answer. */
    int body_unread = c->phase != PHASE_HANDLING && (r->content_length > 0 || r->chunked);
    if (body_unread) c->close_after = 1;
    c->req = NULL;
    request_free(r);
    if (c->close_after) {
        c->closing = 1;
        bufferevent_disable(c->bev, EV_READ);
        /* Inside conn_process the connection is closed when it returns. */
        if (!c->in_read) close_when_sent(c);
        return;
    }
    c->phase = PHASE_HEADERS;
    if (!c->in_read) conn_process(c);
}

void tomed_reply_text(tomed_request *r, int status, const char *content_type, struct evbuffer *body)
{
    size_t len = body ? evbuffer_get_length(body) : 0;
    write_head(r, status, content_type, (int64_t)len);
    if (body && strcmp(r->method, "HEAD") != 0)
        evbuffer_add_buffer(bufferevent_get_output(r->conn->bev), body);
    finish_request(r->conn);
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
    if (index < 0 || index > 12) index = 12;
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
    write_head(r, status, content_type, -1);
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
    finish_request(r->conn);
}

/* ------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------ */

static void arm_deadline(tomed_conn *c, int seconds, int is_header)
{
    struct timeval tv = {seconds, 0};
    evtimer_add(c->deadline, &tv);
    c->deadline_is_header = is_header;
}

/* Fails the request before its body was read: the connection must close. */
static void refuse(tomed_conn *c, int status, int code, const char *msg)
{
    c->close_after = 1;
    tomed_reply_error_ex(c->req, status, code, NULL, "%s", msg);
}

/* Moves up to the rest of the current body (or chunk) from the input. */
static int take_body_bytes(tomed_conn *c, struct evbuffer *in, int64_t want)
{
    tomed_request *r = c->req;
    size_t avail = evbuffer_get_length(in);
    size_t n = (size_t)(want < (int64_t)avail ? want : (int64_t)avail);
    if (n == 0) return 0;
    int is_upload = r->body_fd >= 0;
    int64_t cap = is_upload ? c->server->cfg.max_upload_bytes : c->server->cfg.max_request_bytes;
    if (r->body_bytes + (int64_t)n > cap) {
        refuse(c, 413, TOME_ELIMIT,
               is_upload ? "upload is larger than max_upload_bytes"
                         : "request body is larger than max_request_bytes");
        return -1;
    }
    if (is_upload) {
        while (n > 0) {
            int w = evbuffer_write_atmost(in, r->body_fd, (ev_ssize_t)n);
            if (w <= 0) {
                refuse(c, 500, TOME_EIO, "cannot write the upload to the state directory");
                return -1;
            }
            n -= (size_t)w;
            r->body_bytes += w;
            if (c->phase == PHASE_CHUNK_DATA) c->chunk_left -= w;
        }
        return 0;
    }
    evbuffer_remove_buffer(in, r->body, n);
    r->body_bytes += (int64_t)n;
    if (c->phase == PHASE_CHUNK_DATA) c->chunk_left -= (int64_t)n;
    return 0;
}

static void body_complete(tomed_conn *c)
{
    c->phase = PHASE_HANDLING;
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    struct timeval wt = {c->server->cfg.io_timeout_s, 0};
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    tomed_request *r = c->req;
    if (r->body_fd >= 0 && lseek(r->body_fd, 0, SEEK_SET) != 0) {
        tomed_reply_error(r, TOME_EIO, "cannot rewind the upload");
        return;
    }
    tomed_dispatch(r);
}

/* A new request on `c`, or NULL without memory (c->req may then be set and
 * is freed with the connection). */
static tomed_request *request_new(tomed_conn *c)
{
    tomed_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->conn = c;
    r->server = c->server;
    r->peer = &c->peer;
    r->body_fd = -1;
    r->started = tome_now();
    r->body = evbuffer_new();
    c->req = r;
    evtimer_del(c->deadline);
    return r->body ? r : NULL;
}

/* A request head over MAX_HEADER_BYTES is answered 431 unparsed; the
 * lingering close drops the rest of it. */
static int head_too_large(tomed_conn *c)
{
    tomed_request *r = request_new(c);
    if (!r || !(r->path = strdup("?"))) return -1;
    refuse(c, 431, TOME_ELIMIT, "the request head is larger than 32 KiB");
    return 0;
}

/* Request head complete: route, authenticate, then start on the body. */
static int start_request(tomed_conn *c, char *head)
{
    tomed_request *r = request_new(c);
    if (!r) return -1;
    if (c->peer.transport == TOMED_TRANSPORT_TLS && !c->peer.has_cert) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        c->peer.has_cert =
            ssl && tomed_tls_peer_cn(ssl, c->peer.cert_cn, sizeof c->peer.cert_cn) == 0;
    }
    const char *why;
    int status = parse_head(r, head, &why);
    if (status != 0) {
        if (!r->path) r->path = strdup("?");
        refuse(c, status, status == 431 ? TOME_ELIMIT : TOME_EINVAL, why);
        return 0;
    }
    if (c->server->draining) {
        refuse(c, 503, TOME_EBUSY, "tomed is shutting down");
        return 0;
    }
    if (tomed_route_request(r) != 0) {
        /* Answered already; an unread body forces the connection closed. */
        return 0;
    }
    const char *expect = tomed_header_get(r, "expect");
    if (expect && strcasecmp(expect, "100-continue") == 0)
        evbuffer_add_printf(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n");
    struct timeval rt = {c->server->cfg.io_timeout_s, 0};
    bufferevent_set_timeouts(c->bev, &rt, &rt);
    if (r->chunked)
        c->phase = PHASE_CHUNK_SIZE;
    else if (r->content_length > 0)
        c->phase = PHASE_BODY;
    else
        body_complete(c);
    return 0;
}

/* A client that pipelines requests without reading the answers would make
 * us hold every answer in memory.  As nginx does, stop reading its requests
 * while too much output waits; on_write resumes once it has gone out.  A
 * client that never reads is closed by the write time-out (io_timeout). */
static int answers_pile_up(tomed_conn *c)
{
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) <= MAX_QUEUED_ANSWERS) return 0;
    c->read_paused = 1;
    bufferevent_disable(c->bev, EV_READ);
    return 1;
}

/* A chunk-size line (RFC 9112 section 7.1): hex digits, then optionally an
 * extension after ';', which is ignored.  Returns the size, or -1 for
 * anything else ("11zz", "0x11", a sign, more than 15 digits). */
static int64_t parse_chunk_size(const char *line)
{
    int64_t size = 0;
    const char *p = line;
    for (; hex_value((unsigned char)*p) >= 0; p++) {
        if (p - line == 15) return -1;
        size = size * 16 + hex_value((unsigned char)*p);
    }
    if (p == line) return -1;
    while (*p == ' ' || *p == '\t') p++;
    return *p == '\0' || *p == ';' ? size : -1;
}

/* A CRLF-terminated line from the input, for chunk sizes and trailers. */
static char *read_line(struct evbuffer *in)
{
    return evbuffer_readln(in, NULL, EVBUFFER_EOL_CRLF);
}

/* Drives the request state machine with whatever input has arrived. */
static void conn_process(tomed_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->in_read = 1;
    while (!c->closing) {
        if (c->phase == PHASE_HANDLING) break;
        if (c->phase == PHASE_HEADERS) {
            if (answers_pile_up(c)) break;
            if (evbuffer_get_length(in) == 0) {
                arm_deadline(c, c->server->cfg.idle_timeout_s, 0);
                break;
            }
            struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
            int too_large = end.pos < 0 ? evbuffer_get_length(in) > MAX_HEADER_BYTES
                                        : end.pos > MAX_HEADER_BYTES;
            if (too_large) {
                if (head_too_large(c) != 0) {
                    conn_free(c);
                    return;
                }
                continue;
            }
            if (end.pos < 0) {
                if (!c->deadline_is_header) arm_deadline(c, c->server->cfg.header_timeout_s, 1);
                break;
            }
            size_t n = (size_t)end.pos + 4;
            char *head = malloc(n + 1);
            if (!head) {
                conn_free(c);
                return;
            }
            evbuffer_remove(in, head, n);
            head[n] = '\0';
            c->deadline_is_header = 0;
            int rc = start_request(c, head);
            free(head);
            if (rc != 0) {
                conn_free(c);
                return;
            }
            continue;
        }
        if (c->phase == PHASE_BODY) {
            tomed_request *r = c->req;
            if (take_body_bytes(c, in, r->content_length - r->body_bytes) != 0) continue;
            if (r->body_bytes == r->content_length)
                body_complete(c);
            else
                break;
            continue;
        }
        if (c->phase == PHASE_CHUNK_SIZE || c->phase == PHASE_CHUNK_END ||
            c->phase == PHASE_TRAILER) {
            char *line = read_line(in);
            if (!line) {
                if (evbuffer_get_length(in) > 1024) refuse(c, 400, TOME_EINVAL, "bad chunk");
                break;
            }
            enum phase was = c->phase;
            if (was == PHASE_CHUNK_SIZE) {
                int64_t size = parse_chunk_size(line);
                if (size < 0) {
                    free(line);
                    refuse(c, 400, TOME_EINVAL, "malformed chunk size");
                    continue;
                }
                c->chunk_left = size;
                c->phase = size == 0 ? PHASE_TRAILER : PHASE_CHUNK_DATA;
            } else if (was == PHASE_CHUNK_END) {
                if (line[0] != '\0') {
                    free(line);
                    refuse(c, 400, TOME_EINVAL, "chunk data is longer than its size");
                    continue;
                }
                c->phase = PHASE_CHUNK_SIZE;
            } else if (line[0] == '\0') {
                free(line);
                body_complete(c);
                continue;
            }
            free(line);
            continue;
        }
        if (c->phase == PHASE_CHUNK_DATA) {
            if (take_body_bytes(c, in, c->chunk_left) != 0) continue;
            if (c->chunk_left == 0)
                c->phase = PHASE_CHUNK_END;
            else
                break;
        }
    }
    /* After the client's end of input no further request can complete:
     * close once the answers already given are out. */
    if (c->peer_eof && c->phase != PHASE_HANDLING && !c->read_paused) c->closing = 1;
    c->in_read = 0;
    if (c->closing) close_when_sent(c);
}

/* ------------------------------------------------------------------------
 * Connection events
 * ------------------------------------------------------------------------ */

/* Late input of a lingering connection: dropped, up to LINGER_MAX_BYTES. */
static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    tomed_conn *c = arg;
    char scratch[16384];
    ssize_t n = recv(fd, scratch, sizeof scratch, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n > 0 && (c->lingered += n) < LINGER_MAX_BYTES) return;
    conn_free(c);
}

/* A lingering close.  close() on a socket with unread input makes the
 * kernel reset the connection, and a reset can destroy the answer still on
 * its way to the client (a 413 or 401 sent before the body was read).  So
 * the writing side is shut first, telling the client the answer is
 * complete, and what the client still sends is read and dropped until it
 * closes too, for LINGER_SECONDS and LINGER_MAX_BYTES at most.  Reading
 * the raw socket under a TLS connection is fine: nothing read is used. */
static void conn_linger(tomed_conn *c)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (c->peer_eof || fd < 0) {
        conn_free(c);
        return;
    }
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    c->linger = event_new(c->server->base, fd, EV_READ | EV_PERSIST, on_linger, c);
    if (shutdown(fd, SHUT_WR) != 0 || !c->linger || event_add(c->linger, NULL) != 0) {
        conn_free(c);
        return;
    }
    c->lingering = 1;
    arm_deadline(c, LINGER_SECONDS, 0);
}

/* The connection is closing: linger once its output is out. */
static void close_when_sent(tomed_conn *c)
{
    if (!c->lingering && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) conn_linger(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    tomed_conn *c = arg;
    if (c->in_read || c->lingering) return;
    conn_process(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    tomed_conn *c = arg;
    if (c->closing) {
        close_when_sent(c);
    } else if (c->read_paused) {
        /* Called once the output has drained: read requests again. */
        c->read_paused = 0;
        bufferevent_enable(c->bev, EV_READ);
        if (!c->in_read) conn_process(c);
    }
}

/* Has the peer closed the connection entirely, not only its writing side?
 * A Unix socket tells (POLLHUP); TCP does not, and there a client that is
 * gone is noticed when a write to it fails. */
static int peer_gone(tomed_conn *c)
{
    struct pollfd p = {.fd = bufferevent_getfd(c->bev), .events = POLLIN};
    return p.fd < 0 || (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)));
}

/* End of input.  A client that only shut its writing side (HTTP/1.0 style,
 * or shutdown(SHUT_WR)) still waits for its answers: the requests already
 * in are answered, then the connection closes (conn_process decides). */
static void on_eof(tomed_conn *c)
{
    c->peer_eof = 1;
    if (c->lingering || peer_gone(c)) {
        conn_free(c);
        return;
    }
    if (c->phase != PHASE_HANDLING && !c->in_read) conn_process(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    tomed_conn *c = arg;
    if (what == BEV_EVENT_CONNECTED) return; /* the TLS handshake is done */
    if (what == (BEV_EVENT_EOF | BEV_EVENT_READING)) {
        on_eof(c);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT)
        tomed_log(TOMED_LOG_DEBUG, "%s: %s timed out", c->peer.address,
                  (what & BEV_EVENT_READING) ? "read" : "write");
    if (what & BEV_EVENT_ERROR) {
        unsigned long ssl_err = bufferevent_get_openssl_error(bev);
        if (ssl_err) {
            char text[256];
            ERR_error_string_n(ssl_err, text, sizeof text);
            tomed_log(TOMED_LOG_INFO, "%s: TLS: %s", c->peer.address, text);
        }
    }
    conn_free(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    tomed_conn *c = arg;
    if (!c->doomed && !c->lingering)
        tomed_log(TOMED_LOG_DEBUG, "%s: %s", c->peer.address,
                  c->deadline_is_header ? "request head too slow" : "idle connection closed");
    conn_free(c);
}

static void conn_free(tomed_conn *c)
{
    tomed_request *r = c->req;
    if (r) {
        c->req = NULL;
        if (r->on_abort) r->on_abort(r, r->abort_arg);
        request_free(r);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        c->server->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->server->n_conns--;
    atomic_fetch_sub(&tomed_stats.connections, 1);
    event_free(c->deadline);
    if (c->linger) event_free(c->linger);
    bufferevent_free(c->bev);
    free(c);
}

void tomed_conn_start(tomed_server *s, struct bufferevent *bev, const tomed_peer *peer)
{
    tomed_conn *c = calloc(1, sizeof *c);
    if (c) c->deadline = evtimer_new(s->base, on_deadline, c);
    if (!c || !c->deadline) {
        free(c);
        bufferevent_free(bev);
        return;
    }
    c->server = s;
    c->bev = bev;
    c->peer = *peer;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    atomic_fetch_add(&tomed_stats.connections, 1);
    /* Past this much unread input we stop reading: a pipelining client
     * cannot make us buffer without bound. */
    bufferevent_setwatermark(bev, EV_READ, 0, MAX_HEADER_BYTES * 4);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    struct timeval wt = {s->cfg.io_timeout_s, 0};
    bufferevent_set_timeouts(bev, NULL, &wt);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    arm_deadline(c, s->cfg.idle_timeout_s, 0);
}

void tomed_conns_close_idle(tomed_server *s)
{
    tomed_conn *c = s->conns;
    while (c) {
        tomed_conn *next = c->next;
        if (!c->req && !c->closing) {
            /* The end of a last response may still be on its way out. */
            c->closing = 1;
            bufferevent_disable(c->bev, EV_READ);
            close_when_sent(c);
        }
        c = next;
    }
}

int tomed_conns_busy(const tomed_server *s)
{
    int n = 0;
    /* A lingering connection has nothing left to send. */
    for (const tomed_conn *c = s->conns; c; c = c->next)
        n += (c->req != NULL || c->closing) && !c->lingering;
    return n;
}

void tomed_conns_close_all(tomed_server *s)
{
    while (s->conns) conn_free(s->conns);
}
