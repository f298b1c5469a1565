/*
 * listen.c - the two ways in: a Unix domain socket and TCP with TLS.
 *
 * Both listeners hand accepted connections to http.c; what differs is what
 * they learn about the peer.  On the Unix socket that is the peer's uid, gid
 * and pid from SO_PEERCRED, read once at accept time (the kernel's word, not
 * the client's).  On TCP it is the address, and, after the TLS handshake,
 * the client certificate (see http.c's use of tomed_tls_peer_cn).
 *
 * The socket file is created with the configured mode (0660 by default) so
 * that file permissions are the first gate; a stale file from a crashed
 * daemon is replaced, but a live daemon on the same path is an error, not a
 * silent takeover.  The TLS context can be swapped on SIGHUP: connections
 * keep the context they started with (OpenSSL reference-counts it), new
 * ones get the new certificate.  The connection limit is applied here, at
 * accept, before any memory is spent on the peer.
 */
#include "daemon/tomed.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct tomed_listeners {
    tomed_server *server;
    struct evconnlistener *unix_listener;
    struct evconnlistener *tls_listener;
    SSL_CTX *tls_ctx;
    char socket_path[TOMED_PATH_MAX];
};

static const char busy_response[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    "Connection: close\r\nContent-Length: 72\r\n\r\n"
    "{\"error\":{\"code\":\"busy\",\"message\":\"too many connections; try later\"}}\n";

static int over_limit(tomed_server *s, evutil_socket_t fd, int can_answer)
{
    if (s->n_conns < s->cfg.max_connections) return 0;
    if (can_answer) {
        ssize_t ignored = send(fd, busy_response, sizeof busy_response - 1, MSG_NOSIGNAL);
        (void)ignored;
    }
    tomed_log(TOMED_LOG_WARN, "connection refused: max_connections (%d) reached",
              s->cfg.max_connections);
    evutil_closesocket(fd);
    return 1;
}

static void accept_unix(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *addr,
                        int len, void *arg)
{
    tomed_listeners *l = arg;
    tomed_server *s = l->server;
    if (over_limit(s, fd, 1)) return;
    tomed_peer peer = {.transport = TOMED_TRANSPORT_UNIX};
    struct ucred cred;
    socklen_t clen = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
        tomed_log(TOMED_LOG_WARN, "SO_PEERCRED: %s", strerror(errno));
        evutil_closesocket(fd);
        return;
    }
    peer.uid = cred.uid;
    peer.gid = cred.gid;
    peer.pid = cred.pid;
    snprintf(peer.address, sizeof peer.address, "unix:uid=%u,pid=%d", (unsigned)cred.uid,
             (int)cred.pid);
    struct bufferevent *bev =
        bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev) {
        evutil_closesocket(fd);
        return;
    }
    tomed_conn_start(s, bev, &peer);
}

static void accept_tls(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *addr,
                       int len, void *arg)
{
    tomed_listeners *l = arg;
    tomed_server *s = l->server;
    if (over_limit(s, fd, 0)) return;
    tomed_peer peer = {.transport = TOMED_TRANSPORT_TLS};
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (addr->sa_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (addr->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    }
    snprintf(peer.address, sizeof peer.address, "%s:%d", host, port);
    SSL *ssl = SSL_new(l->tls_ctx);
    struct bufferevent *bev =
        ssl ? bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)
            : NULL;
    if (!bev) {
        if (ssl) SSL_free(ssl);
        evutil_closesocket(fd);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    tomed_conn_start(s, bev, &peer);
}

static void accept_error(struct evconnlistener *lis, void *arg)
{
    int e = EVUTIL_SOCKET_ERROR();
    tomed_log(TOMED_LOG_ERROR, "accept: %s", evutil_socket_error_to_string(e));
}

/* Is a daemon answering on `path`?  Then it is not ours to replace. */
static int socket_in_use(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    int live = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
    close(fd);
    return live;
}

static int open_unix(tomed_listeners *l, const tomed_config *cfg, tome_error *err)
{
    char dir[TOMED_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", cfg->socket_path);
    /* Others must reach the socket through its directory, whatever the
     * daemon's private umask. */
    mode_t private_mask = umask(022);
    int rc = tome_mkdir_p(dirname(dir), 0755, err);
    umask(private_mask);
    if (rc != 0) return rc;
    if (socket_in_use(cfg->socket_path))
        return tome_errorf(err, TOME_EBUSY, "%s: another daemon is listening there",
                           cfg->socket_path);
    unlink(cfg->socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return tome_errorf(err, TOME_EIO, "socket: %s", strerror(errno));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", cfg->socket_path);
    /* Bind under a tight umask, then widen to the configured mode, so the
     * file is never briefly more open than configured. */
    mode_t old = umask(0177);
    int bound = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (bound != 0 || chmod(cfg->socket_path, cfg->socket_mode) != 0) {
        int e = errno;
        close(fd);
        return tome_errorf(err, TOME_EIO, "%s: %s", cfg->socket_path, strerror(e));
    }
    l->unix_listener =
        evconnlistener_new(l->server->base, accept_unix, l, LEV_OPT_CLOSE_ON_FREE, 1024, fd);
    if (!l->unix_listener) {
        close(fd);
        return tome_errorf(err, TOME_EIO, "%s: cannot listen", cfg->socket_path);
    }
    evconnlistener_set_error_cb(l->unix_listener, accept_error);
    snprintf(l->socket_path, sizeof l->socket_path, "%s", cfg->socket_path);
    return 0;
}

static int open_tls(tomed_listeners *l, const tomed_config *cfg, tome_error *err)
{
    int rc = tomed_tls_context_new(cfg, &l->tls_ctx, err);
    if (rc != 0) return rc;
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    if (evutil_parse_sockaddr_port(cfg->listen, (struct sockaddr *)&ss, &sslen) != 0)
        return tome_errorf(err, TOME_EINVAL, "listen '%s' is not ADDR:PORT", cfg->listen);
    l->tls_listener = evconnlistener_new_bind(l->server->base, accept_tls, l,
                                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
                                              (struct sockaddr *)&ss, sslen);
    if (!l->tls_listener)
        return tome_errorf(err, TOME_EIO, "listen %s: %s", cfg->listen, strerror(errno));
    evconnlistener_set_error_cb(l->tls_listener, accept_error);
    return 0;
}

int tomed_listeners_open(tomed_server *s, tomed_listeners **out, tome_error *err)
{
    tomed_listeners *l = calloc(1, sizeof *l);
    if (!l) return tome_errorf(err, TOME_ENOMEM, "listeners");
    l->server = s;
    int rc = open_unix(l, &s->cfg, err);
    if (rc == 0 && s->cfg.listen[0]) rc = open_tls(l, &s->cfg, err);
    if (rc != 0) {
        tomed_listeners_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

int tomed_listeners_reload_tls(tomed_listeners *l, const tomed_config *cfg, tome_error *err)
{
    if (!l->tls_listener) return 0;
    SSL_CTX *fresh;
    int rc = tomed_tls_context_new(cfg, &fresh, err);
    if (rc != 0) return rc;
    SSL_CTX_free(l->tls_ctx);
    l->tls_ctx = fresh;
    return 0;
}

void tomed_listeners_close(tomed_listeners *l)
{
    if (l->unix_listener) {
        evconnlistener_free(l->unix_listener);
        l->unix_listener = NULL;
        unlink(l->socket_path);
    }
    if (l->tls_listener) {
        evconnlistener_free(l->tls_listener);
        l->tls_listener = NULL;
    }
}

void tomed_listeners_free(tomed_listeners *l)
{
    if (!l) return;
    tomed_listeners_close(l);
    if (l->tls_ctx) SSL_CTX_free(l->tls_ctx);
    free(l);
}
