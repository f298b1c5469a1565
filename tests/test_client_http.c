/* Unit tests of the client's HTTP/1.1 layer (client/http.c over
 * client/conn.c): response heads, the three body framings, 1xx answers,
 * malformed input, request heads and URL escaping.  Responses are written
 * into one end of a socketpair and parsed from the other. */
#include "client/client.h"
#include "tests/check.h"

#include <sys/socket.h>
#include <unistd.h>

/* A connection whose peer has sent `raw` and closed. */
static tome_conn *conn_with(const char *raw, size_t len)
{
    int sv[2];
    tome_conn *c;
    tome_error err = {0};
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    REQUIRE(write(sv[1], raw, len) == (ssize_t)len, "write");
    close(sv[1]);
    REQUIRE(tome_conn_from_fd(sv[0], &c, &err) == 0, "%s", err.msg);
    return c;
}

/* Parse a full response; returns the rc and the body in `body`. */
static int parse(const char *raw, tome_response *resp, char **body)
{
    tome_conn *c = conn_with(raw, strlen(raw));
    tome_error err = {0};
    *body = NULL;
    int rc = tome_http_read_head(c, resp, &err);
    if (rc == 0) rc = tome_http_read_all(c, resp, 1 << 20, body, NULL, &err);
    tome_conn_free(c);
    return rc;
}

static void test_content_length(void)
{
    tome_response resp;
    char *body;
    CHECK(parse("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                "content-length: 11\r\n\r\n{\"a\":true}\nEXTRA",
                &resp, &body) == 0);
    CHECK(resp.status == 201 && resp.content_length == 11 && !resp.chunked);
    CHECK(strcmp(resp.content_type, "application/json") == 0);
    CHECK(body && strcmp(body, "{\"a\":true}\n") == 0);
    free(body);
}

static void test_chunked(void)
{
    tome_response resp;
    char *body;
    CHECK(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n",
                &resp, &body) == 0);
    CHECK(resp.chunked && body && strcmp(body, "hello 0123456789") == 0);
    free(body);
    CHECK(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", &resp, &body) ==
          TOME_EFORMAT);
    CHECK(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n", &resp,
                &body) == TOME_EFORMAT);
    /* A stream cut inside a chunk is a broken connection, not a short body. */
    CHECK(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", &resp, &body) ==
          TOME_EUNREACHABLE);
}

static void test_close_delimited_and_bodiless(void)
{
    tome_response resp;
    char *body;
    CHECK(parse("HTTP/1.0 200 OK\r\n\r\nuntil the end", &resp, &body) == 0);
    CHECK(resp.content_length == -1 && body && strcmp(body, "until the end") == 0);
    free(body);
    CHECK(parse("HTTP/1.1 204 No Content\r\n\r\n", &resp, &body) == 0);
    CHECK(resp.status == 204 && body && body[0] == '\0');
    free(body);
    CHECK(parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Unavailable\r\nRetry-After: 5\r\n"
                "Content-Length: 2\r\n\r\n{}",
                &resp, &body) == 0);
    CHECK(resp.status == 503 && resp.retry_after == 5 && body && strcmp(body, "{}") == 0);
    free(body);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", &resp, &body) ==
          TOME_EUNREACHABLE);
}

static void test_malformed(void)
{
    tome_response resp;
    char *body;
    CHECK(parse("SSH-2.0-OpenSSH\r\n\r\n", &resp, &body) == TOME_EFORMAT);
    CHECK(parse("HTTP/1.1 99 Low\r\n\r\n", &resp, &body) == TOME_EFORMAT);
    CHECK(parse("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", &resp, &body) == TOME_EFORMAT);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n", &resp, &body) == TOME_EFORMAT);
    CHECK(parse("HTTP/1.1 200 OK\r\nContent-Len", &resp, &body) == TOME_EUNREACHABLE);
    char many[8192] = "HTTP/1.1 200 OK\r\n";
    for (int i = 0; i < 150; i++) strcat(many, "X-A: b\r\n");
    strcat(many, "\r\n");
    CHECK(parse(many, &resp, &body) == TOME_ELIMIT);
    static char long_line[20000];
    memset(long_line, 'a', sizeof long_line - 1);
    memcpy(long_line, "HTTP/1.1 200 OK\r\nX: ", 20);
    CHECK(parse(long_line, &resp, &body) == TOME_ELIMIT);
}

/* Bodies arrive piece by piece, the way streaming needs them. */
static void test_incremental_body(void)
{
    int sv[2];
    tome_conn *c;
    tome_error err = {0};
    tome_response resp;
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    REQUIRE(tome_conn_from_fd(sv[0], &c, &err) == 0, "%s", err.msg);
    const char *head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    REQUIRE(write(sv[1], head, strlen(head)) > 0, "write");
    CHECK_OK(tome_http_read_head(c, &resp, &err), &err);
    char buf[16];
    size_t got;
    CHECK_OK(tome_http_read_body(c, &resp, buf, sizeof buf, &got, &err), &err);
    CHECK(got == 3 && memcmp(buf, "abc", 3) == 0);
    REQUIRE(write(sv[1], "0\r\n\r\n", 5) == 5, "write");
    CHECK_OK(tome_http_read_body(c, &resp, buf, sizeof buf, &got, &err), &err);
    CHECK(got == 0 && resp.done);
    close(sv[1]);
    tome_conn_free(c);
}

static void test_request_head(void)
{
    int sv[2];
    tome_conn *c;
    tome_error err = {0};
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    REQUIRE(tome_conn_from_fd(sv[0], &c, &err) == 0, "%s", err.msg);
    tome_request req = {.method = "POST",
                        .target = "/v1/corpora/src/ask",
                        .host = "tome",
                        .token = "s3cret",
                        .content_type = "application/json",
                        .content_length = 42,
                        .accept = "text/event-stream"};
    CHECK_OK(tome_http_write_head(c, &req, &err), &err);
    char buf[1024] = {0};
    CHECK(read(sv[1], buf, sizeof buf - 1) > 0);
    CHECK(strncmp(buf, "POST /v1/corpora/src/ask HTTP/1.1\r\nHost: tome\r\n", 47) == 0);
    CHECK(strstr(buf, "\r\nAuthorization: Bearer s3cret\r\n") != NULL);
    CHECK(strstr(buf, "\r\nContent-Length: 42\r\n") != NULL);
    CHECK(strstr(buf, "\r\nAccept: text/event-stream\r\n") != NULL);
    CHECK(strstr(buf, "\r\nConnection: close\r\n") != NULL);
    CHECK(strlen(buf) > 4 && strcmp(buf + strlen(buf) - 4, "\r\n\r\n") == 0);
    close(sv[1]);
    tome_conn_free(c);
}

static void test_url_escape(void)
{
    char *s = tome_url_escape("a b&c=d/é~_.-");
    CHECK(s && strcmp(s, "a%20b%26c%3Dd%2F%C3%A9~_.-") == 0);
    free(s);
    char *t = tome_api_target("/v1/corpora/", "my src", "/ask");
    CHECK(t && strcmp(t, "/v1/corpora/my%20src/ask") == 0);
    free(t);
}

int main(void)
{
    test_content_length();
    test_chunked();
    test_close_delimited_and_bodiless();
    test_malformed();
    test_incremental_body();
    test_request_head();
    test_url_escape();
    return check_finish();
}
