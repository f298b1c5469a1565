/*
 * http.h - HTTP/1.1 connections, requests and responses (http.c).
 */
#ifndef TOMED_HTTP_H
#define TOMED_HTTP_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/types.h"

struct evbuffer;

typedef struct tomed_header {
    char *name; /* lower case */
    char *value;
} tomed_header;

/* One HTTP request, owned by its connection.  It lives from its request
 * line until its response is complete, or until the connection dies: then
 * `on_abort` (if set) tells whoever still holds the pointer to drop it. */
struct tomed_request {
    tomed_conn *conn;
    tomed_server *server;
    const tomed_peer *peer;
    char method[16];
    char *path;  /* without the query; percent-escapes as sent (ASCII) */
    char *query; /* raw, or NULL */
    tomed_header *headers;
    int n_headers;
    int64_t content_length; /* -1 when absent */
    int chunked;
    struct evbuffer *body; /* the body, when buffered */
    int body_fd;           /* where the body goes instead, when streamed */
    int64_t body_bytes;
    char body_path[TOMED_PATH_MAX];
    tomed_principal principal;
    const struct tomed_route *route;
    char *params[2]; /* the path segments matched by '*', decoded (UTF-8) */
    double started;
    int responded; /* a response (or stream) has started */
    int streaming;
    int status;
    void (*on_abort)(tomed_request *r, void *arg);
    void *abort_arg;
};

const char *tomed_header_get(const tomed_request *r, const char *name);
/* The decoded value of query parameter `key` (malloc'd), or NULL.  The
 * query was checked when the head was read: every value is UTF-8. */
char *tomed_query_get(const tomed_request *r, const char *key);
/* Percent-decode `n` bytes (with '+' as space when asked): a malloc'd
 * string, or NULL when out of memory or when the result holds a NUL byte
 * or is not valid UTF-8. */
char *tomed_percent_decode(const char *s, size_t n, int plus_is_space);

/* Responses.  Each ends the request except the stream calls before _end. */
void tomed_reply_json(tomed_request *r, int status, json_t *body); /* steals body */
void tomed_reply_text(tomed_request *r, int status, const char *content_type,
                      struct evbuffer *body); /* drains body */
void tomed_reply_empty(tomed_request *r, int status);
/* An error from a TOME_E* code; the status follows tome-protocol(7). */
void tomed_reply_error(tomed_request *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As above, with an explicit status and extra members merged into the
 * error object (`extra` may be NULL; it is stolen). */
void tomed_reply_error_ex(tomed_request *r, int status, int code, json_t *extra, const char *fmt,
                          ...) __attribute__((format(printf, 5, 6)));
/* An error from a library call: the state directory's path, which store
 * messages carry, is taken out of what the client sees (and logged). */
void tomed_reply_tome_error(tomed_request *r, const tome_error *err);
int tomed_status_for(int code);

void tomed_stream_begin(tomed_request *r, int status, const char *content_type);
void tomed_stream_write(tomed_request *r, const void *data, size_t len);
/* One Server-Sent Event: `event:` NAME, `data:` the JSON (stolen). */
void tomed_stream_event(tomed_request *r, const char *event, json_t *data);
void tomed_stream_comment(tomed_request *r, const char *text);
/* One unnamed event, `data:` the JSON (stolen), as OpenAI's streams send. */
void tomed_stream_data(tomed_request *r, json_t *data);
void tomed_stream_end(tomed_request *r);

/* Parse the buffered body as a JSON object; replies 400 and returns NULL
 * when it is not one. */
json_t *tomed_request_json(tomed_request *r);

/* Connections: the listener hands over an accepted, configured
 * bufferevent; the server owns it from then on. */
struct bufferevent;
void tomed_conn_start(tomed_server *s, struct bufferevent *bev, const tomed_peer *peer);
/* Close connections that have no request in progress (used when draining). */
void tomed_conns_close_idle(tomed_server *s);
/* Close every connection (at exit); requests in progress are aborted. */
void tomed_conns_close_all(tomed_server *s);
int tomed_conns_busy(const tomed_server *s);

#endif
