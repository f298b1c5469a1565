/*
 * fuzz_request_json.c - the JSON bodies of tomed's endpoints: the body
 * goes through tomed_request_json and then the endpoint's own parser, as
 * its handler would run them, on a request routed and authenticated for
 * real (an administrator on the Unix socket).  A parser either fills its
 * result or answers 400 (404 for an unknown OpenAI model); either way the
 * answer must be built (http_reply.c checks every encode).
 *
 * The first byte chooses the endpoint:
 *   0  POST /v1/corpora/docs/ask            (tomed_ask_parse_question)
 *   1  POST /openai/v1/chat/completions     (tomed_openai_parse_chat)
 *   2  POST /openai/v1/completions          (tomed_openai_parse_completion)
 *   3  POST /v1/tokens                      ("name", tomed_scopes_parse)
 *   4  POST /v1/corpora                     ("name")
 *   5  POST /v1/corpora/docs/ingest         ("path")
 *   6  POST /v1/corpora/docs/prefill        (any object)
 * and the rest is the body.
 */
#include "daemon/conf.h"
#include "daemon/http_internal.h"
#include "daemon/jobs.h"
#include "daemon/router.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_daemon.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdlib.h>
#include <string.h>

static const char *const paths[] = {
    "/v1/corpora/docs/ask", "/openai/v1/chat/completions", "/openai/v1/completions",   "/v1/tokens",
    "/v1/corpora",          "/v1/corpora/docs/ingest",     "/v1/corpora/docs/prefill",
};
#define N_PATHS (sizeof paths / sizeof paths[0])

static const tomed_ask_parser ask_parsers[] = {tomed_ask_parse_question, tomed_openai_parse_chat,
                                               tomed_openai_parse_completion};

static tomed_conn conn;
static tomed_peer peer;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    conn.server = fuzz_server();
    peer = fuzz_peer(0);
    conn.peer = peer;
    /* No socket: what is answered piles up in the output buffer. */
    if (!(conn.bev = bufferevent_socket_new(conn.server->base, -1, 0))) fuzz_die("no bufferevent");
    return 0;
}

/* The simple bodies: one string field, checked as the handler does. */
static int string_field(json_t *body, const char *key, int (*valid)(const char *))
{
    const char *v = json_string_value(json_object_get(body, key));
    return v && valid(v) ? 0 : -1;
}

static int absolute(const char *path)
{
    return path[0] == '/';
}

static void parse(tomed_request *r, int endpoint, json_t *body)
{
    if (endpoint < 3) {
        tomed_ask ask;
        memset(&ask, 0, sizeof ask);
        ask_parsers[endpoint](r, body, &ask);
        tomed_ask_clear(&ask);
    } else if (endpoint == 3) {
        tomed_scope scopes[TOMED_MAX_SCOPES];
        int n;
        if (string_field(body, "name", tomed_corpus_name_valid) == 0)
            tomed_scopes_parse(r, json_object_get(body, "scopes"), scopes, &n);
    } else if (endpoint == 4) {
        string_field(body, "name", tomed_corpus_name_valid);
    } else if (endpoint == 5) {
        string_field(body, "path", absolute);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int endpoint = data[0] % N_PATHS;
    tomed_request *r = calloc(1, sizeof *r);
    if (!r) return 0;
    r->conn = &conn;
    r->server = conn.server;
    r->peer = &conn.peer;
    r->body_fd = -1;
    r->content_length = (int64_t)size - 1;
    snprintf(r->method, sizeof r->method, "POST");
    r->path = strdup(paths[endpoint]);
    r->body = evbuffer_new();
    evbuffer_add(r->body, data + 1, size - 1);
    conn.req = r;
    conn.phase = PHASE_HANDLING;
    conn.in_read = 1;
    conn.close_after = 0;
    conn.closing = 0;
    if (tomed_route_request(r) == 0) {
        json_t *body = tomed_request_json(r);
        if (body) parse(r, endpoint, body);
        json_decref(body);
    }
    /* Whatever the parser left unanswered is answered (and freed) here. */
    if (conn.req) tomed_reply_empty(conn.req, 204);
    struct evbuffer *out = bufferevent_get_output(conn.bev);
    evbuffer_drain(out, evbuffer_get_length(out));
    return 0;
}
