/*
 * fuzz_http.c - tomed's HTTP/1.1 connections (daemon/http.c and
 * http_parse.c): request heads, Content-Length and chunked bodies,
 * trailers, pipelined requests, Expect: 100-continue, uploads, early
 * refusals and the lingering close, all through the real connection state
 * machine on one end of a socketpair, as tomed_conn_start runs it.
 *
 * The first byte chooses the peer: an administrator on the Unix socket, a
 * uid the configuration does not know, or a TLS client without
 * credentials; the rest is what the client sends before it shuts down its
 * writing side.  The client reads every answer until the daemon closes.
 *
 * Routing and authentication are the real ones; the handlers are not
 * (they need a store, workers and a model): the link wraps tomed_dispatch
 * (-Wl,--wrap=tomed_dispatch) with one that answers with the body's size,
 * so every request whose body was read gets an answer.
 */
#include "daemon/http.h"
#include "daemon/router.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_daemon.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Rounds of the loop without progress before the connection is dropped
 * (it waits for more input than was sent, or on a time-out). */
#define IDLE_ROUNDS 4

void __wrap_tomed_dispatch(tomed_request *r);
void __wrap_tomed_dispatch(tomed_request *r)
{
    off_t n =
        r->body_fd >= 0 ? lseek(r->body_fd, 0, SEEK_END) : (off_t)evbuffer_get_length(r->body);
    tomed_reply_json(r, 200,
                     json_pack("{s:s, s:I}", "route", r->route->pattern, "bytes", (json_int_t)n));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_server();
    return 0;
}

/* Send what is left of the input, read what came back: did anything move? */
static int exchange(int *fd, const uint8_t *data, size_t size, size_t *sent)
{
    int moved = 0;
    if (*sent < size) {
        ssize_t n = send(*fd, data + *sent, size - *sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) *sent += (size_t)n, moved = 1;
        if (*sent == size) shutdown(*fd, SHUT_WR);
    }
    char buf[16384];
    ssize_t got;
    while ((got = recv(*fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) moved = 1;
    if (got == 0) {
        /* The daemon is done: closing lets a lingering connection go. */
        close(*fd);
        *fd = -1;
        moved = 1;
    }
    return moved;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    static const int uids[] = {0, 65534, -1};
    tomed_server *s = fuzz_server();
    tomed_peer peer = fuzz_peer(uids[data[0] % 3]);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        fuzz_die("socketpair: %s", strerror(errno));
    struct bufferevent *bev = bufferevent_socket_new(s->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    if (!bev) fuzz_die("no bufferevent");
    tomed_conn_start(s, bev, &peer);
    size_t sent = 1;
    if (sent == size) shutdown(sv[1], SHUT_WR);
    for (int idle = 0; s->n_conns > 0 && idle < IDLE_ROUNDS;) {
        event_base_loop(s->base, EVLOOP_NONBLOCK);
        idle = sv[1] >= 0 && exchange(&sv[1], data, size, &sent) ? 0 : idle + 1;
    }
    tomed_conns_close_all(s);
    if (sv[1] >= 0) close(sv[1]);
    return 0;
}
