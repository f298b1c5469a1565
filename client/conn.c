/*
 * conn.c - the byte stream between `tome` and `tomed`.
 *
 * Two transports, one interface: a Unix domain socket (the default; the
 * daemon knows who we are from SO_PEERCRED, so nothing else is needed), or
 * TCP wrapped in TLS with OpenSSL for remote daemons.  For TLS the server
 * certificate is verified against --cacert, or the system store when none is
 * given, and its name must match the host we dialled (SSL_set1_host, or the
 * IP address for a literal); TLS 1.2 is the floor, as on the daemon's side.
 * --cert/--key present a client certificate for mTLS.
 *
 * Every failure to connect, to complete the handshake, or to read or write
 * once connected is TOME_EUNREACHABLE: for a cron job they all mean "the
 * daemon is not there for us", which has its own exit status.
 *
 * Reads go through a small buffer so the HTTP layer can take lines (status
 * line, headers, chunk sizes) without a system call per byte.
 */
#include "client/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CONN_BUFFER 16384

struct tome_conn {
    int fd;
    SSL_CTX *tls_ctx;
    SSL *tls;
    size_t pos, len;
    char buf[CONN_BUFFER];
};

static int unreachable(tome_error *err, const char *what, const char *where, const char *why)
{
    return tome_errorf(err, TOME_EUNREACHABLE, "%s %s: %s", what, where, why);
}

/* The most useful line of OpenSSL's error queue, which is then cleared. */
static const char *tls_reason(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();
    if (!e) return "connection closed during the TLS handshake";
    ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}

static int new_conn(int fd, tome_conn **out, tome_error *err)
{
    tome_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return tome_errorf(err, TOME_ENOMEM, "out of memory");
    }
    c->fd = fd;
    *out = c;
    return 0;
}

int tome_conn_from_fd(int fd, tome_conn **out, tome_error *err)
{
    return new_conn(fd, out, err);
}

static int connect_unix(const char *path, int *fd_out, tome_error *err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return tome_errorf(err, TOME_EINVAL, "socket path %s is too long", path);
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return unreachable(err, "cannot create a socket for", path, strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        return unreachable(err, "cannot connect to tomed at", path, strerror(e));
    }
    *fd_out = fd;
    return 0;
}

/* Split "name:port" or "[v6addr]:port" into its parts. */
static int split_host(const char *hostport, char *name, size_t cap, char *port, size_t pcap,
                      tome_error *err)
{
    const char *colon = strrchr(hostport, ':');
    const char *start = hostport, *end = colon;
    if (hostport[0] == '[') {
        const char *close_bracket = strchr(hostport, ']');
        if (!close_bracket || close_bracket[1] != ':') colon = NULL;
        start = hostport + 1;
        end = close_bracket;
    }
    if (!colon || !colon[1] || end == start || (size_t)(end - start) >= cap ||
        strlen(colon + 1) >= pcap)
        return tome_errorf(err, TOME_EINVAL, "--host %s: expected HOST:PORT", hostport);
    memcpy(name, start, (size_t)(end - start));
    name[end - start] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

static int connect_tcp(const char *name, const char *port, int *fd_out, tome_error *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *list;
    int gai = getaddrinfo(name, port, &hints, &list);
    if (gai != 0) return unreachable(err, "cannot resolve", name, gai_strerror(gai));
    int fd = -1, last_errno = 0;
    for (struct addrinfo *a = list; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            last_errno = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(list);
    if (fd < 0) return unreachable(err, "cannot connect to", name, strerror(last_errno));
    *fd_out = fd;
    return 0;
}

static int tls_context(const tome_endpoint *ep, SSL_CTX **out, tome_error *err)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return tome_errorf(err, TOME_ENOMEM, "cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Every answer is delimited by its length or its chunks, which catch a
     * truncated body; a peer that closes without close_notify after a
     * complete answer is then no error. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ep->cacert ? SSL_CTX_load_verify_locations(ctx, ep->cacert, NULL)
                        : SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        SSL_CTX_free(ctx);
        return tome_errorf(err, TOME_EIO, "cannot load CA certificates %s: %s",
                           ep->cacert ? ep->cacert : "(system store)", tls_reason(why, sizeof why));
    }
    if (ep->cert && (SSL_CTX_use_certificate_chain_file(ctx, ep->cert) != 1 ||
                     SSL_CTX_use_PrivateKey_file(ctx, ep->key, SSL_FILETYPE_PEM) != 1 ||
                     SSL_CTX_check_private_key(ctx) != 1)) {
        SSL_CTX_free(ctx);
        return tome_errorf(err, TOME_EIO, "cannot use client certificate %s with key %s: %s",
                           ep->cert, ep->key, tls_reason(why, sizeof why));
    }
    *out = ctx;
    return 0;
}

/* Require the certificate to name `name`: an IP address for a literal, a
 * DNS name otherwise (which is also sent as SNI). */
static int expect_peer_name(SSL *tls, const char *name)
{
    unsigned char addr[16];
    int literal = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
    if (literal) return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(tls), name) == 1;
    return SSL_set_tlsext_host_name(tls, name) == 1 && SSL_set1_host(tls, name) == 1;
}

static int start_tls(tome_conn *c, const tome_endpoint *ep, const char *name, tome_error *err)
{
    char why[256];
    if (tls_context(ep, &c->tls_ctx, err)) return err->code;
    c->tls = SSL_new(c->tls_ctx);
    if (!c->tls || !expect_peer_name(c->tls, name) || SSL_set_fd(c->tls, c->fd) != 1)
        return tome_errorf(err, TOME_ENOMEM, "cannot set up TLS for %s", name);
    if (SSL_connect(c->tls) != 1) {
        long verify = SSL_get_verify_result(c->tls);
        if (verify != X509_V_OK)
            return unreachable(err, "TLS handshake with", ep->host,
                               X509_verify_cert_error_string(verify));
        return unreachable(err, "TLS handshake with", ep->host, tls_reason(why, sizeof why));
    }
    return 0;
}

int tome_conn_open(const tome_endpoint *ep, tome_conn **out, tome_error *err)
{
    *out = NULL;
    int fd = -1;
    if (!ep->host) {
        if (connect_unix(ep->socket_path, &fd, err)) return err->code;
        return new_conn(fd, out, err);
    }
    char name[256], port[16];
    if (split_host(ep->host, name, sizeof name, port, sizeof port, err)) return err->code;
    if (connect_tcp(name, port, &fd, err)) return err->code;
    if (new_conn(fd, out, err)) return err->code;
    if (start_tls(*out, ep, name, err)) {
        tome_conn_free(*out);
        *out = NULL;
        return err->code;
    }
    return 0;
}

/* A daemon that hangs up must be an error code, while a closed stdout (as in
 * `tome ask ... | head`) should end tome quietly by SIGPIPE like any Unix
 * filter; so SIGPIPE keeps its default, plain sockets are written with
 * MSG_NOSIGNAL, and OpenSSL's writes run with SIGPIPE held and any raised
 * one discarded. */
static void hold_sigpipe(sigset_t *old)
{
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigprocmask(SIG_BLOCK, &pipe_only, old);
}

static void release_sigpipe(const sigset_t *old)
{
    sigset_t pending, pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    struct timespec no_wait = {0, 0};
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE))
        sigtimedwait(&pipe_only, NULL, &no_wait);
    sigprocmask(SIG_SETMASK, old, NULL);
}

void tome_conn_free(tome_conn *c)
{
    if (!c) return;
    if (c->tls) {
        sigset_t old;
        hold_sigpipe(&old);
        SSL_shutdown(c->tls);
        release_sigpipe(&old);
        SSL_free(c->tls);
    }
    SSL_CTX_free(c->tls_ctx);
    close(c->fd);
    free(c);
}

int tome_conn_write(tome_conn *c, const void *data, size_t len, tome_error *err)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n;
        if (c->tls) {
            size_t written = 0;
            sigset_t old;
            hold_sigpipe(&old);
            n = SSL_write_ex(c->tls, p, len, &written) == 1 ? (ssize_t)written : -1;
            release_sigpipe(&old);
        } else {
            n = send(c->fd, p, len, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
        }
        if (n <= 0)
            return unreachable(err, "sending to", "tomed",
                               n < 0 && !c->tls ? strerror(errno) : "connection closed");
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Refill the buffer from the socket; *eof is set at the end of the stream. */
static int fill(tome_conn *c, int *eof, tome_error *err)
{
    c->pos = c->len = 0;
    *eof = 0;
    for (;;) {
        ssize_t n;
        if (c->tls) {
            size_t got = 0;
            int ok = SSL_read_ex(c->tls, c->buf, sizeof c->buf, &got);
            int reason = ok ? SSL_ERROR_NONE : SSL_get_error(c->tls, 0);
            if (!ok && reason != SSL_ERROR_ZERO_RETURN) {
                char why[256];
                return unreachable(err, "reading from", "tomed", tls_reason(why, sizeof why));
            }
            n = (ssize_t)got;
        } else {
            n = read(c->fd, c->buf, sizeof c->buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return unreachable(err, "reading from", "tomed", strerror(errno));
        }
        c->len = (size_t)n;
        *eof = n == 0;
        return 0;
    }
}

int tome_conn_read(tome_conn *c, void *buf, size_t cap, size_t *got, tome_error *err)
{
    *got = 0;
    if (c->pos == c->len) {
        int eof;
        if (fill(c, &eof, err)) return err->code;
        if (eof) return 0;
    }
    size_t n = c->len - c->pos < cap ? c->len - c->pos : cap;
    memcpy(buf, c->buf + c->pos, n);
    c->pos += n;
    *got = n;
    return 0;
}

int tome_conn_read_line(tome_conn *c, char *line, size_t cap, tome_error *err)
{
    size_t n = 0;
    for (;;) {
        if (c->pos == c->len) {
            int eof;
            if (fill(c, &eof, err)) return err->code;
            if (eof) return unreachable(err, "reading from", "tomed", "connection closed early");
        }
        char ch = c->buf[c->pos++];
        if (ch == '\n') break;
        if (n + 1 >= cap) return tome_errorf(err, TOME_ELIMIT, "a response line is too long");
        line[n++] = ch;
    }
    if (n > 0 && line[n - 1] == '\r') n--;
    line[n] = '\0';
    return 0;
}
