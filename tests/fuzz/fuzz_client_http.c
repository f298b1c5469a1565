/*
 * fuzz_client_http.c - what a server, or something posing as tomed, sends
 * back to the `tome` client: the response head, the body in any of its
 * three framings, and for event streams the Server-Sent Events inside it,
 * read as client/api.c reads them (events parsed as JSON).  A hostile
 * server must get an error, never a crash, a leak or an unbounded buffer.
 *
 * The first byte picks the body's reader: even, the whole body at once
 * (tome_http_read_all, 1 MiB at most, as JSON answers are read); odd,
 * pieces of a size the byte also picks, fed to the event-stream parser.
 * The rest is the response, served from a memory file.
 */
#include "client/client.h"
#include "tests/fuzz/fuzz.h"

#include <jansson.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static int on_event(void *ctx, const char *event, const char *data, tome_error *err)
{
    json_t *parsed = json_loads(data, 0, NULL);
    int rc = parsed ? 0 : tome_errorf(err, TOME_EFORMAT, "event %s is not JSON", event);
    json_decref(parsed);
    return rc;
}

static int read_events(tome_conn *c, tome_response *resp, size_t piece, tome_error *err)
{
    tome_sse parser;
    tome_sse_init(&parser, "tomed", 1 << 20, on_event, NULL);
    char buf[256];
    size_t got;
    int rc;
    while ((rc = tome_http_read_body(c, resp, buf, piece, &got, err)) == 0 && got > 0)
        if ((rc = tome_sse_feed(&parser, buf, got, err)) != 0) break;
    tome_sse_free(&parser);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int fd = memfd_create("response", 0);
    if (fd < 0) fuzz_die("memfd_create failed");
    if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) fuzz_die("write failed");
    lseek(fd, 0, SEEK_SET);
    tome_conn *c;
    tome_error err = {0};
    if (tome_conn_from_fd(fd, &c, &err) != 0) fuzz_die("%s", err.msg);
    tome_response resp;
    int rc = tome_http_read_head(c, &resp, &err);
    if (rc == 0 && data[0] % 2 == 0) {
        char *body = NULL;
        rc = tome_http_read_all(c, &resp, 1 << 20, &body, NULL, &err);
        free(body);
    } else if (rc == 0) {
        rc = read_events(c, &resp, 1 + data[0] / 2, &err);
    }
    tome_conn_free(c); /* closes fd */
    if (rc != 0 && !err.msg[0]) fuzz_die("an error without a message");
    return 0;
}
