/*
 * raw_http.c - send exact bytes to tomed and show exactly what comes back.
 *
 *   raw_http [--half-close] [--timeout S] [--read-after S] SOCKET < request > response
 *
 * curl writes well-formed HTTP; the daemon must also cope with what a
 * hostile or careless client writes (bytes that are not ASCII, broken
 * framing, a half-closed connection).  This tool connects to the Unix
 * socket SOCKET, writes standard input as it is, optionally shuts down its
 * writing side (--half-close: what HTTP/1.0 and `shutdown(SHUT_WR)`
 * clients do), and copies whatever the daemon sends to standard output
 * until the daemon closes the connection or S seconds (default 10) pass.
 * With --read-after S the request is written by a child process while
 * this one waits S seconds and then reads, concurrently: a client that
 * pipelines many requests and reads its answers late (or never, if the
 * daemon stops reading before the request is all sent).
 *
 * Exit status: 0 when the daemon closed the connection in order, 2 when
 * it reset it (the answer may be lost), 3 on a time-out, 1 on other errors.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static int connect_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path) {
        close(fd);
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Standard input, all of it, to the socket. */
static int send_request(int fd)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) return 0;
        if (write_all(fd, buf, (size_t)n) != 0) return -1;
    }
}

/* The socket to standard output until EOF (0), a reset (2) or `seconds`
 * (3). */
static int copy_response(int fd, int seconds)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    char buf[65536];
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left_ms = seconds * 1000L - ((now.tv_sec - start.tv_sec) * 1000L +
                                          (now.tv_nsec - start.tv_nsec) / 1000000L);
        if (left_ms <= 0) return 3;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left_ms);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r == 0 ? 3 : 1;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno == ECONNRESET ? 2 : 1;
        if (n == 0) return 0;
        if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n) return 1;
        fflush(stdout);
    }
}

/* Standard input to the socket, then the optional half-close. */
static void send_side(int fd, int half_close)
{
    if (send_request(fd) != 0) fprintf(stderr, "raw_http: send: %s\n", strerror(errno));
    if (half_close) shutdown(fd, SHUT_WR);
}

/* --read-after: a child sends while this process waits, then reads. */
static int send_while_reading(int fd, int half_close, int read_after, int seconds)
{
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        send_side(fd, half_close);
        _exit(0);
    }
    sleep((unsigned)read_after);
    int rc = copy_response(fd, seconds);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return rc;
}

int main(int argc, char **argv)
{
    int half_close = 0, seconds = 10, read_after = -1, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--half-close") == 0) {
            half_close = 1;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            seconds = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--read-after") == 0 && i + 1 < argc) {
            read_after = atoi(argv[++i]);
        } else {
            break;
        }
    }
    if (i + 1 != argc || seconds <= 0) {
        fprintf(stderr, "usage: raw_http [--half-close] [--timeout S] [--read-after S] SOCKET\n");
        return 1;
    }
    int fd = connect_unix(argv[i]);
    if (fd < 0) {
        fprintf(stderr, "raw_http: %s: %s\n", argv[i], strerror(errno));
        return 1;
    }
    int rc;
    if (read_after >= 0) {
        rc = send_while_reading(fd, half_close, read_after, seconds);
    } else {
        send_side(fd, half_close);
        rc = copy_response(fd, seconds);
    }
    if (rc == 2) fprintf(stderr, "raw_http: connection reset\n");
    if (rc == 3) fprintf(stderr, "raw_http: no end after %d s\n", seconds);
    close(fd);
    return rc;
}
