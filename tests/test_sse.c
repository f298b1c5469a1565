/* Unit tests of the Server-Sent Events parser (common/sse.c): framing,
 * comments, multi-line data, the three line endings, input split at every
 * possible byte, and the size limit. */
#include "common/sse.h"
#include "tests/check.h"

typedef struct seen {
    int count;
    char log[4096];
} seen;

static int record(void *ctx, const char *event, const char *data, tome_error *err)
{
    seen *s = ctx;
    size_t used = strlen(s->log);
    snprintf(s->log + used, sizeof s->log - used, "[%s|%s]", event, data);
    s->count++;
    return 0;
}

/* Feed `text` in pieces of `step` bytes and return what was dispatched. */
static const char *run(const char *text, size_t step, seen *s)
{
    memset(s, 0, sizeof *s);
    tome_sse p;
    tome_error err = {0};
    tome_sse_init(&p, "test", 1 << 20, record, s);
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i += step) {
        size_t len = n - i < step ? n - i : step;
        CHECK_OK(tome_sse_feed(&p, text + i, len, &err), &err);
    }
    tome_sse_free(&p);
    return s->log;
}

static void test_framing(void)
{
    static const char stream[] = ": keepalive\n\n"
                                 "event: token\ndata: {\"text\":\"Hel\"}\n\n"
                                 "event:token\r\ndata:{\"text\":\"lo\"}\r\n\r\n"
                                 "data: one\ndata: two\n\n"
                                 "event: ignored-no-data\n\n"
                                 "id: 4\nretry: 10\nevent: done\rdata: {}\r\r"
                                 "event: progress\ndata: unfinished";
    static const char expected[] = "[token|{\"text\":\"Hel\"}][token|{\"text\":\"lo\"}]"
                                   "[message|one\ntwo][done|{}]";
    seen s;
    for (size_t step = 1; step <= sizeof stream; step++) {
        const char *got = run(stream, step, &s);
        CHECKF(strcmp(got, expected) == 0, "step %zu: %s", step, got);
        CHECK(s.count == 4);
    }
}

static void test_value_spacing(void)
{
    seen s;
    CHECK(strcmp(run("data:  two spaces\n\n", 3, &s), "[message| two spaces]") == 0);
    CHECK(strcmp(run("data\n\n", 1, &s), "[message|]") == 0);
    CHECK(strcmp(run("event: a:b\ndata: x:y\n\n", 2, &s), "[a:b|x:y]") == 0);
}

static int stop_at_second(void *ctx, const char *event, const char *data, tome_error *err)
{
    int *n = ctx;
    return ++*n == 2 ? tome_errorf(err, TOME_ECANCELED, "stop") : 0;
}

static void test_callback_stops_the_stream(void)
{
    int n = 0;
    tome_sse p;
    tome_error err = {0};
    tome_sse_init(&p, "test", 1 << 20, stop_at_second, &n);
    const char *text = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    CHECK(tome_sse_feed(&p, text, strlen(text), &err) == TOME_ECANCELED);
    CHECK(n == 2);
    tome_sse_free(&p);
}

static int ignore(void *ctx, const char *event, const char *data, tome_error *err)
{
    return 0;
}

/* Feed `text` to a parser limited to `max` bytes: its result. */
static int feed_limited(const char *text, size_t max, tome_error *err)
{
    tome_sse p;
    tome_sse_init(&p, "http://upstream", max, ignore, NULL);
    int rc = tome_sse_feed(&p, text, strlen(text), err);
    tome_sse_free(&p);
    return rc;
}

static void test_limit(void)
{
    tome_sse p;
    tome_error err = {0};
    tome_sse_init(&p, "test", 1 << 20, ignore, NULL);
    static char chunk[65536];
    memset(chunk, 'x', sizeof chunk);
    int rc = tome_sse_feed(&p, "data: ", 6, &err);
    for (int i = 0; i < 40 && rc == 0; i++) rc = tome_sse_feed(&p, chunk, sizeof chunk, &err);
    CHECK(rc == TOME_ELIMIT);
    tome_sse_free(&p);

    /* A line of 15 bytes fits 16 (its terminating NUL counts); 16 does not. */
    CHECK_OK(feed_limited("data: 012345678\n\n", 16, &err), &err);
    CHECK(feed_limited("data: 0123456789\n\n", 16, &err) == TOME_ELIMIT);
    CHECK(strcmp(err.msg, "an event from http://upstream is over 16 bytes") == 0);
    /* Lines that each fit, joined into data that does not. */
    CHECK(feed_limited("data: 01234\ndata: 56789\ndata: abcde\n\n", 16, &err) == TOME_ELIMIT);
    CHECK_OK(feed_limited("data: 01234\ndata: 56789\n\ndata: abcde\n\n", 16, &err), &err);
}

int main(void)
{
    test_framing();
    test_value_spacing();
    test_callback_stops_the_stream();
    test_limit();
    return check_finish();
}
