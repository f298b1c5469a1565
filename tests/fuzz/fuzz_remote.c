/*
 * fuzz_remote.c - what an OpenAI-compatible upstream streams to tomed's
 * remote engine (daemon/remote_client.c): the body of a completions reply
 * goes through the remote reader (Server-Sent Events, JSON, error events)
 * and each event through remote_chunk_read, as a question's thread reads
 * them, with the answer's text kept under a bound as remote_work.c keeps
 * it.  A hostile server must get an error, never a crash, a leak or an
 * unbounded answer.
 *
 * The first byte chooses how the body is cut into the pieces curl would
 * hand over (1 to 256 bytes each), the rest is the body.
 */
#include "daemon/remote_client.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

#define ANSWER_ROOM 4096 /* what max_tokens would leave, in bytes */

typedef struct answer {
    char text[ANSWER_ROOM];
    size_t len;
} answer;

static int on_event(void *ctx, json_t *event, tome_error *err)
{
    answer *a = ctx;
    remote_chunk c;
    int rc = remote_chunk_read(event, &c, err);
    if (rc != 0) return rc;
    if (c.text_len > sizeof a->text - a->len)
        return tome_errorf(err, TOME_EIO, "the answer runs past max_tokens");
    memcpy(a->text + a->len, c.text, c.text_len);
    a->len += c.text_len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t piece = (size_t)data[0] + 1;
    answer a = {.len = 0};
    remote_stream s = {.on_event = on_event, .ctx = &a};
    remote_reader r;
    tome_error err = {0};
    remote_reader_init(&r, &s, "http://upstream/v1");
    int rc = 0;
    for (size_t at = 1; at < size && rc == 0; at += piece) {
        size_t n = size - at < piece ? size - at : piece;
        rc = remote_reader_feed(&r, (const char *)data + at, n, &err);
    }
    remote_reader_free(&r);
    if (rc != 0 && !err.msg[0]) fuzz_die("an error without a message");
    return 0;
}
