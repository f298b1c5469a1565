/*
 * http.c - HTTP/1.1 connections: requests in, responses and streams out
 * (requests are parsed in http_parse.c, answers written in http_reply.c).
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
#include "common/fault.h"
#include "daemon/http_internal.h"
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/router.h"
#include "daemon/tls.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* No new request is read while more answers than this wait to be sent. */
#define MAX_QUEUED_ANSWERS (1024 * 1024)
#define LINGER_SECONDS     2
#define LINGER_MAX_BYTES   (1024 * 1024)

static void conn_free(tomed_conn *c);
static void conn_process(tomed_conn *c);
static void close_when_sent(tomed_conn *c);

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
void http_finish_request(tomed_conn *c)
{
    tomed_request *r = c->req;
    count_response(r);
    /* A body the handler did not wait for would be misread as the next
     * request; closing is the only safe answer. */
    int body_unread = c->phase != PHASE_HANDLING && (r->content_length > 0 || r->chunked);
    if (body_unread) c->close_after = 1;
    c->req = NULL;
    http_request_free(r);
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
        tome_fault_point("upload");
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
    int status = http_parse_head(r, head, &why);
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

/* A CRLF-terminated line from the input, for chunk sizes and trailers. */
static char *read_line(struct evbuffer *in)
{
    return evbuffer_readln(in, NULL, EVBUFFER_EOL_CRLF);
}

/* What a step of the request state machine leaves to do. */
enum step {
    STEP_AGAIN, /* the phase changed or input remains: step again */
    STEP_WAIT,  /* more input is needed */
    STEP_GONE   /* the connection was freed */
};

/* PHASE_HEADERS: a whole request head starts a request. */
static enum step read_head(tomed_conn *c, struct evbuffer *in)
{
    if (answers_pile_up(c)) return STEP_WAIT;
    if (evbuffer_get_length(in) == 0) {
        arm_deadline(c, c->server->cfg.idle_timeout_s, 0);
        return STEP_WAIT;
    }
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    int too_large =
        end.pos < 0 ? evbuffer_get_length(in) > MAX_HEADER_BYTES : end.pos > MAX_HEADER_BYTES;
    if (too_large) return head_too_large(c) != 0 ? STEP_GONE : STEP_AGAIN;
    if (end.pos < 0) {
        if (!c->deadline_is_header) arm_deadline(c, c->server->cfg.header_timeout_s, 1);
        return STEP_WAIT;
    }
    size_t n = (size_t)end.pos + 4;
    char *head = malloc(n + 1);
    if (!head) return STEP_GONE;
    evbuffer_remove(in, head, n);
    head[n] = '\0';
    c->deadline_is_header = 0;
    int rc = start_request(c, head);
    free(head);
    return rc != 0 ? STEP_GONE : STEP_AGAIN;
}

/* PHASE_BODY: a Content-Length body. */
static enum step read_body(tomed_conn *c, struct evbuffer *in)
{
    tomed_request *r = c->req;
    if (take_body_bytes(c, in, r->content_length - r->body_bytes) != 0) return STEP_AGAIN;
    if (r->body_bytes != r->content_length) return STEP_WAIT;
    body_complete(c);
    return STEP_AGAIN;
}

/* PHASE_CHUNK_SIZE, PHASE_CHUNK_END, PHASE_TRAILER: one line of a chunked
 * body's framing. */
static enum step read_chunk_line(tomed_conn *c, struct evbuffer *in)
{
    char *line = read_line(in);
    if (!line) {
        if (evbuffer_get_length(in) > 1024) refuse(c, 400, TOME_EINVAL, "bad chunk");
        return STEP_WAIT;
    }
    if (c->phase == PHASE_CHUNK_SIZE) {
        int64_t size = http_parse_chunk_size(line);
        if (size < 0)
            refuse(c, 400, TOME_EINVAL, "malformed chunk size");
        else {
            c->chunk_left = size;
            c->phase = size == 0 ? PHASE_TRAILER : PHASE_CHUNK_DATA;
        }
    } else if (c->phase == PHASE_CHUNK_END) {
        if (line[0] != '\0')
            refuse(c, 400, TOME_EINVAL, "chunk data is longer than its size");
        else
            c->phase = PHASE_CHUNK_SIZE;
    } else if (line[0] == '\0') {
        body_complete(c); /* the empty line that ends the trailer */
    }
    free(line);
    return STEP_AGAIN;
}

/* PHASE_CHUNK_DATA: a chunk's bytes. */
static enum step read_chunk_data(tomed_conn *c, struct evbuffer *in)
{
    if (take_body_bytes(c, in, c->chunk_left) != 0) return STEP_AGAIN;
    if (c->chunk_left != 0) return STEP_WAIT;
    c->phase = PHASE_CHUNK_END;
    return STEP_AGAIN;
}

static enum step step_request(tomed_conn *c, struct evbuffer *in)
{
    switch (c->phase) {
    case PHASE_HEADERS:
        return read_head(c, in);
    case PHASE_BODY:
        return read_body(c, in);
    case PHASE_CHUNK_SIZE:
    case PHASE_CHUNK_END:
    case PHASE_TRAILER:
        return read_chunk_line(c, in);
    case PHASE_CHUNK_DATA:
        return read_chunk_data(c, in);
    case PHASE_HANDLING:
        break;
    }
    return STEP_WAIT;
}

/* Drives the request state machine with whatever input has arrived. */
static void conn_process(tomed_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->in_read = 1;
    while (!c->closing) {
        enum step next = step_request(c, in);
        if (next == STEP_GONE) {
            conn_free(c);
            return;
        }
        if (next == STEP_WAIT) break;
    }
    /* After the client's end of input no further request can complete:
     * close once the answers already given are out. */
    if (c->peer_eof && c->phase != PHASE_HANDLING && !c->read_paused) c->closing = 1;
    c->in_read = 0;
    if (c->closing) close_when_sent(c);
}

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
        http_request_free(r);
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
