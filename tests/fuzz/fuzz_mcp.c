/*
 * fuzz_mcp.c - `tome mcp` (client/cmd_mcp.c): the agent's JSON-RPC
 * messages, and tomed's answers to the requests a tool call makes.  The
 * agent may send anything, and whatever answers on the daemon's socket or
 * address may answer anything: a message gets its JSON-RPC answer or none,
 * never a crash, a leak or a hang.
 *
 * The input's first line is the message (as tome mcp reads it, without
 * its end).  The rest answers every request that message makes, from a
 * server on a Unix socket of this process: its first byte picks the
 * answer's status and type (bit 0: an event stream, else JSON; bit 1:
 * 404, else 200), the bytes after it are the body.  The answers go to
 * /dev/null.
 */
#include "client/client.h"
#include "tests/fuzz/fuzz.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* What the server answers with: a copy, set before each message and
 * held by the server thread while it writes (the client may stop reading
 * and return before the write ends, and the input is freed then). */
static pthread_mutex_t answer_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *answer_body;
static size_t answer_len;
static uint8_t answer_kind;

static tome_client client;

/* Read a request to its end: the head, then Content-Length bytes; 0, or
 * -1 when the client went away. */
static int read_request(int fd)
{
    char buf[8192];
    size_t n = 0;
    char *end = NULL;
    while (!end) {
        if (n == sizeof buf - 1) return -1;
        ssize_t got = read(fd, buf + n, sizeof buf - 1 - n);
        if (got <= 0) return -1;
        n += (size_t)got;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    long long body = 0;
    for (char *line = strstr(buf, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n"))
        if (strncasecmp(line + 2, "Content-Length:", 15) == 0) body = atoll(line + 17);
    long long left = body - (long long)(n - (size_t)(end + 4 - buf));
    while (left > 0) {
        ssize_t got = read(fd, buf, sizeof buf);
        if (got <= 0) return -1;
        left -= got;
    }
    return 0;
}

/* Without SIGPIPE: the client may have closed its end. */
static void write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t put = send(fd, p, len, MSG_NOSIGNAL);
        if (put <= 0) return;
        p += put;
        len -= (size_t)put;
    }
}

static void *serve(void *arg)
{
    int listener = *(int *)arg;
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) continue;
        if (read_request(fd) == 0) {
            pthread_mutex_lock(&answer_lock);
            char head[256];
            int n =
                snprintf(head, sizeof head,
                         "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n",
                         answer_kind & 2 ? "404 Not Found" : "200 OK",
                         answer_kind & 1 ? "text/event-stream" : "application/json", answer_len);
            write_all(fd, head, (size_t)n);
            write_all(fd, answer_body, answer_len);
            pthread_mutex_unlock(&answer_lock);
        }
        close(fd);
    }
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static int listener;
    static char path[sizeof((struct sockaddr_un *)0)->sun_path];
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (snprintf(path, sizeof path, "%s/tomed.sock", fuzz_tmpdir()) >= (int)sizeof path)
        fuzz_die("the socket's path is too long");
    memcpy(addr.sun_path, path, sizeof path);
    listener = socket(AF_UNIX, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 16) != 0)
        fuzz_die("cannot listen on %s", path);
    pthread_t thread;
    if (pthread_create(&thread, NULL, serve, &listener) != 0) fuzz_die("pthread_create failed");
    pthread_detach(thread);
    if (!freopen("/dev/null", "w", stdout)) fuzz_die("cannot send stdout to /dev/null");
    tome_options opt = {.socket_path = path};
    tome_error err = {0};
    unsetenv("TOME_TOKEN");
    unsetenv("TOME_TOKEN_FILE");
    if (tome_client_init(&client, &opt, &err) != 0) fuzz_die("%s", err.msg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t line = nl ? (size_t)(nl - data) : size;
    const uint8_t *rest = nl ? nl + 1 : data + size;
    size_t rest_len = size - (size_t)(rest - data);
    pthread_mutex_lock(&answer_lock);
    free(answer_body);
    answer_kind = rest_len ? rest[0] : 0;
    answer_len = rest_len ? rest_len - 1 : 0;
    answer_body = malloc(answer_len + 1);
    if (!answer_body) fuzz_die("out of memory");
    if (answer_len) memcpy(answer_body, rest + 1, answer_len);
    pthread_mutex_unlock(&answer_lock);
    tome_mcp_message(&client, (const char *)data, line);
    return 0;
}
