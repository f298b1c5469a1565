/*
 * http_internal.h - what the files of tomed's HTTP/1.1 share (private to
 * http.c, which owns connections and reading; http_parse.c, requests and
 * their heads; http_reply.c, responses and streams).
 */
#ifndef TOMED_HTTP_INTERNAL_H
#define TOMED_HTTP_INTERNAL_H

#include "daemon/auth.h"
#include "daemon/http.h"
#include "daemon/server.h"
#include "daemon/types.h"

#include <stdint.h>

#define MAX_HEADER_BYTES   (32 * 1024)
#define MAX_HEADERS        64
#define MAX_PENDING_OUTPUT (8 * 1024 * 1024)

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

/* Free a request and what it holds (its spooled body file too). */
void http_request_free(tomed_request *r);
/* Parse a request head (NUL-terminated, ending in CRLF CRLF) into `r`: 0,
 * or the status to refuse it with and *why. */
int http_parse_head(tomed_request *r, char *head, const char **why);
/* A chunk-size line's size, or -1 if it is malformed. */
int64_t http_parse_chunk_size(const char *line);
/* The status line and headers; a body of `len` bytes, or chunked (len < 0). */
void http_write_head(tomed_request *r, int status, const char *content_type, int64_t len);
/* The response is fully queued: on to the next request or to closing. */
void http_finish_request(tomed_conn *c);

#endif
