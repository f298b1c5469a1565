/*
 * listen.c - the two ways in: a Unix domain socket and TCP with TLS.
 *
 * Both listeners hand accepted connections to http.c; what differs is what
 * they learn about the peer.  On the Unix socket that is the peer's uid, gid
 * and pid from SO_PEERCRED and its supplementary groups from SO_PEERGROUPS,
 * read once at accept time (the kernel's word, not the client's).  On TCP
 * it is the address, and, after the TLS handshake, the client certificate
 * (see http.c's use of tomed_tls_peer_cn).
 *
 * The socket file is created with the configured mode (0660 by default) so
 * that file permissions are the first gate; a stale file from a crashed
 * daemon is replaced, but a live daemon on the same path is an error, not a
 * silent takeover.  The TLS context can be swapped on SIGHUP: connections
 * keep the context they started with (OpenSSL reference-counts it), new
 * ones get the new certificate.  The connection limit is applied here, at
 * accept, before any memory is spent on the peer.
 *
 * Running out of file descriptors (EMFILE, ENFILE) is not an error of one
 * connection: the pending connection stays in the kernel's queue and the
 * listener stays readable, so accepting again at once would spin at 100%
 * CPU and log each failure.  Accepting pauses instead, with one log line,
 * and resumes after ACCEPT_PAUSE_MS; at start a max_connections that the
 * open-file limit cannot hold is reported.
 */
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/http.h"
#include "daemon/log.h"
#include "daemon/server.h"
#include "daemon/tls.h"
#include "daemon/types.h"

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
#include <sys/resource.h>
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
    struct event *resume; /* re-enables accepting after a pause */
    int fds_exhausted;    /* accepting paused for lack of descriptors */
    int at_limit;         /* refusing connections for max_connections */
};

/* Descriptors the daemon needs besides its connections: the store's
 * handles per worker, model and state files, uploads, listeners, logs. */
#define RESERVED_FDS    64
#define ACCEPT_PAUSE_MS 250

static const char busy_body[] =
    "{\"error\":{\"code\":\"busy\",\"message\":\"too many connections; try later\"}}\n";

/* The 503 for a connection over max_connections, on the raw socket.  The
 * request the client may have sent already is read and dropped (without
 * waiting for more) before the caller closes: closing with unread input
 * would reset the connection and lose the answer. */
static void answer_busy(evutil_socket_t fd)
{
    char response[512];
    int n = snprintf(response, sizeof response,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Retry-After: 1\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof busy_body - 1, busy_body);
    ssize_t ignored = send(fd, response, (size_t)n, MSG_NOSIGNAL);
    (void)ignored;
    shutdown(fd, SHUT_WR);
    char scratch[4096];
    for (int i = 0; i < 16 && recv(fd, scratch, sizeof scratch, MSG_DONTWAIT) > 0; i++) continue;
}

/* Refuses (and closes) `fd` when max_connections are open.  One log line
 * per episode: a flood of refusals must not become a flood of lines. */
static int over_limit(tomed_listeners *l, evutil_socket_t fd, int can_answer)
{
    tomed_server *s = l->server;
    if (s->n_conns < s->cfg.max_connections) {
        l->at_limit = 0;
        return 0;
    }
    if (can_answer) answer_busy(fd);
    if (!l->at_limit)
        tomed_log(TOMED_LOG_WARN, "refusing connections: max_connections (%d) reached",
                  s->cfg.max_connections);
    l->at_limit = 1;
    evutil_closesocket(fd);
    return 1;
}

/* A connection was accepted: the end of a pause for lack of descriptors. */
static void accepted(tomed_listeners *l)
{
    if (!l->fds_exhausted) return;
    l->fds_exhausted = 0;
    tomed_log(TOMED_LOG_INFO, "accepting connections again");
}

static void accept_unix(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *addr,
                        int len, void *arg)
{
    tomed_listeners *l = arg;
    tomed_server *s = l->server;
    accepted(l);
    if (over_limit(l, fd, 1)) return;
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
    socklen_t glen = sizeof peer.groups;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, peer.groups, &glen) == 0)
        peer.n_groups = (int)(glen / sizeof peer.groups[0]);
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
    accepted(l);
    if (over_limit(l, fd, 0)) return;
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

static void set_accepting(tomed_listeners *l, int on)
{
    struct evconnlistener *both[2] = {l->unix_listener, l->tls_listener};
    for (int i = 0; i < 2; i++) {
        if (!both[i]) continue;
        if (on)
            evconnlistener_enable(both[i]);
        else
            evconnlistener_disable(both[i]);
    }
}

static void resume_accepting(evutil_socket_t fd, short what, void *arg)
{
    set_accepting(arg, 1);
}

/* Out of descriptors: stop accepting on both listeners for a moment (the
 * shortage is the process's, not one listener's), logging it once. */
static void pause_accepting(tomed_listeners *l, int e)
{
    if (!l->fds_exhausted)
        tomed_log(TOMED_LOG_WARN,
                  "accept: %s with %d connections open: pausing new connections until "
                  "descriptors are free (raise RLIMIT_NOFILE or lower max_connections)",
                  evutil_socket_error_to_string(e), l->server->n_conns);
    l->fds_exhausted = 1;
    set_accepting(l, 0);
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    evtimer_add(l->resume, &tv);
}

static void accept_error(struct evconnlistener *lis, void *arg)
{
    int e = EVUTIL_SOCKET_ERROR();
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        pause_accepting(arg, e);
        return;
    }
    tomed_log(TOMED_LOG_ERROR, "accept: %s", evutil_socket_error_to_string(e));
}

/* Says so at start when max_connections cannot all be open at once. */
static void check_fd_limit(const tomed_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
    if ((rlim_t)cfg->max_connections + RESERVED_FDS <= rl.rlim_cur) return;
    tomed_log(TOMED_LOG_WARN,
              "max_connections (%d) needs more descriptors than RLIMIT_NOFILE (%llu) allows; "
              "new connections will wait beyond about %lld (raise LimitNOFILE or lower "
              "max_connections)",
              cfg->max_connections, (unsigned long long)rl.rlim_cur,
              (long long)rl.rlim_cur > RESERVED_FDS ? (long long)rl.rlim_cur - RESERVED_FDS : 0);
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

/* The socket's directory, and the parents made for it, created and then
 * opened to 0755: others must reach the socket through them, whatever the
 * daemon's private umask.  (Loosening the umask around mkdir instead would
 * race with files other threads create meanwhile: a store file made then
 * would be readable by others.) */
static int make_socket_dir(const char *dir, tome_error *err)
{
    char path[TOMED_PATH_MAX];
    snprintf(path, sizeof path, "%s", dir);
    size_t have = strlen(path); /* the longest prefix that exists */
    struct stat st;
    while (have > 0 && (path[have] = '\0', stat(path, &st) != 0)) {
        while (have > 0 && path[have - 1] != '/') have--;
        while (have > 1 && path[have - 1] == '/') have--;
    }
    snprintf(path, sizeof path, "%s", dir);
    int rc = tome_mkdir_p(path, 0755, err);
    for (size_t i = have + 1; rc == 0 && i <= strlen(dir); i++) {
        if (dir[i] != '/' && dir[i] != '\0') continue;
        path[i] = '\0';
        if (chmod(path, 0755) != 0)
            rc = tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno));
        path[i] = dir[i];
    }
    return rc;
}

static int open_unix(tomed_listeners *l, const tomed_config *cfg, tome_error *err)
{
    char dir[TOMED_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", cfg->socket_path);
    int rc = make_socket_dir(dirname(dir), err);
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
    l->resume = evtimer_new(s->base, resume_accepting, l);
    if (!l->resume) {
        free(l);
        return tome_errorf(err, TOME_ENOMEM, "listeners");
    }
    check_fd_limit(&s->cfg);
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
    evtimer_del(l->resume);
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
    event_free(l->resume);
    if (l->tls_ctx) SSL_CTX_free(l->tls_ctx);
    free(l);
}
