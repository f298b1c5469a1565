/*
 * http.c - just enough HTTP/1.1 for the tome protocol, over a tome_conn.
 *
 * The client sends one request per connection, with "Connection: close", so
 * it never has to reason about pipelining or reusing a connection after an
 * error; the daemon's answers are few and large (a streamed answer, a
 * report's questions) and a Unix socket connect costs microseconds.
 *
 * Responses may be framed three ways and all three occur: Content-Length
 * (JSON answers), chunked (event streams through evhttp), and end of
 * connection.  tome_http_read_body hides the difference and hands out the
 * body in pieces as they arrive, which is what streaming needs.  The parser
 * is strict where sloppiness would hide a bug (a bad status line or chunk
 * size is an error, not a guess) and bounded everywhere: lines and header
 * counts have limits, so a confused peer cannot make the client allocate.
 */
#include "config.h"

#include "client/client.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LINE_MAX_BYTES   8192
#define HEADER_MAX_COUNT 100

int tome_http_write_head(tome_conn *c, const tome_request *req, tome_error *err)
{
    char head[LINE_MAX_BYTES];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n",
                     req->method, req->target, req->host);
    if (req->accept)
        n += snprintf(head + n, sizeof head - (size_t)n, "Accept: %s\r\n", req->accept);
    if (req->token)
        n +=
            snprintf(head + n, sizeof head - (size_t)n, "Authorization: Bearer %s\r\n", req->token);
    if (req->content_type)
        n += snprintf(head + n, sizeof head - (size_t)n,
                      "Content-Type: %s\r\nContent-Length: %lld\r\n", req->content_type,
                      req->content_length);
    else if (strcmp(req->method, "POST") == 0)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: 0\r\n");
    n +=
        snprintf(head + n, sizeof head - (size_t)n, "User-Agent: tome/%s\r\n\r\n", PACKAGE_VERSION);
    if (n >= (int)sizeof head)
        return tome_errorf(err, TOME_ELIMIT, "request head for %s is too long", req->target);
    return tome_conn_write(c, head, (size_t)n, err);
}

static int parse_status_line(const char *line, int *status, tome_error *err)
{
    int code = 0;
    if (strncmp(line, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)line[7]) || line[8] != ' ' ||
        sscanf(line + 9, "%3d", &code) != 1 || code < 100 || code > 599)
        return tome_errorf(err, TOME_EFORMAT, "not an HTTP/1.x status line: '%.80s'", line);
    *status = code;
    return 0;
}

static int parse_number(const char *text, int base, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, base);
    while (*end == ' ' || *end == '\t') end++;
    if (errno || end == text || *end || v < 0) return -1;
    *out = v;
    return 0;
}

/* Record the headers the client acts on; the rest are ignored. */
static int parse_header(const char *line, tome_response *resp, tome_error *err)
{
    const char *colon = strchr(line, ':');
    if (!colon || colon == line)
        return tome_errorf(err, TOME_EFORMAT, "malformed response header '%.80s'", line);
    size_t name_len = (size_t)(colon - line);
    const char *value = colon + 1;
    while (*value == ' ' || *value == '\t') value++;
#define IS(name) (name_len == strlen(name) && strncasecmp(line, name, name_len) == 0)
    if (IS("Content-Length")) {
        if (parse_number(value, 10, &resp->content_length))
            return tome_errorf(err, TOME_EFORMAT, "bad Content-Length '%.40s'", value);
    } else if (IS("Transfer-Encoding")) {
        resp->chunked = strcasestr(value, "chunked") != NULL;
    } else if (IS("Content-Type")) {
        snprintf(resp->content_type, sizeof resp->content_type, "%s", value);
    } else if (IS("Retry-After")) {
        if (parse_number(value, 10, &resp->retry_after)) resp->retry_after = -1;
    }
#undef IS
    return 0;
}

/* One response head; a 1xx head is read in full and reported as such. */
static int read_one_head(tome_conn *c, tome_response *resp, tome_error *err)
{
    char line[LINE_MAX_BYTES];
    memset(resp, 0, sizeof *resp);
    resp->content_length = -1;
    resp->retry_after = -1;
    if (tome_conn_read_line(c, line, sizeof line, err)) return err->code;
    if (parse_status_line(line, &resp->status, err)) return err->code;
    for (int count = 0;; count++) {
        if (count == HEADER_MAX_COUNT)
            return tome_errorf(err, TOME_ELIMIT, "more than %d response headers", HEADER_MAX_COUNT);
        if (tome_conn_read_line(c, line, sizeof line, err)) return err->code;
        if (line[0] == '\0') break;
        if (parse_header(line, resp, err)) return err->code;
    }
    return 0;
}

int tome_http_read_head(tome_conn *c, tome_response *resp, tome_error *err)
{
    do {
        if (read_one_head(c, resp, err)) return err->code;
    } while (resp->status < 200);
    int bodiless = resp->status == 204 || resp->status == 304;
    if (bodiless || (!resp->chunked && resp->content_length == 0)) resp->done = 1;
    resp->left = resp->chunked ? 0 : resp->content_length;
    return 0;
}

/* Read the next chunk-size line (after the CRLF that ends the previous
 * chunk); a zero size ends the body, after its trailer lines. */
static int next_chunk(tome_conn *c, tome_response *resp, int first, tome_error *err)
{
    char line[LINE_MAX_BYTES];
    if (!first) {
        if (tome_conn_read_line(c, line, sizeof line, err)) return err->code;
        if (line[0]) return tome_errorf(err, TOME_EFORMAT, "chunk not followed by CRLF");
    }
    if (tome_conn_read_line(c, line, sizeof line, err)) return err->code;
    char *ext = strchr(line, ';');
    if (ext) *ext = '\0';
    if (parse_number(line, 16, &resp->left))
        return tome_errorf(err, TOME_EFORMAT, "bad chunk size '%.40s'", line);
    if (resp->left > 0) return 0;
    do {
        if (tome_conn_read_line(c, line, sizeof line, err)) return err->code;
    } while (line[0]);
    resp->done = 1;
    return 0;
}

int tome_http_read_body(tome_conn *c, tome_response *resp, char *buf, size_t cap, size_t *got,
                        tome_error *err)
{
    *got = 0;
    if (resp->done) return 0;
    if (resp->chunked && resp->left == 0) {
        if (next_chunk(c, resp, !resp->chunks_seen, err)) return err->code;
        resp->chunks_seen = 1;
        if (resp->done) return 0;
    }
    size_t want = cap;
    if (resp->left >= 0 && (long long)want > resp->left) want = (size_t)resp->left;
    if (tome_conn_read(c, buf, want, got, err)) return err->code;
    if (*got == 0) {
        if (resp->left < 0) { /* delimited by the end of the connection */
            resp->done = 1;
            return 0;
        }
        return tome_errorf(err, TOME_EUNREACHABLE, "tomed closed the connection mid-answer");
    }
    if (resp->left >= 0) {
        resp->left -= (long long)*got;
        if (resp->left == 0 && !resp->chunked) resp->done = 1;
    }
    return 0;
}

int tome_http_read_all(tome_conn *c, tome_response *resp, size_t max, char **body, size_t *len,
                       tome_error *err)
{
    size_t n = 0, cap = 4096;
    char *buf = malloc(cap);
    if (!buf) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    for (;;) {
        if (cap - n < 1024) {
            char *bigger = cap * 2 > max + 1024 ? NULL : realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                return tome_errorf(err, TOME_ELIMIT, "response body over %zu bytes", max);
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got;
        if (tome_http_read_body(c, resp, buf + n, cap - n - 1, &got, err)) {
            free(buf);
            return err->code;
        }
        if (got == 0) break;
        n += got;
    }
    buf[n] = '\0';
    *body = buf;
    if (len) *len = n;
    return 0;
}

char *tome_url_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1), *p = out;
    if (!out) return NULL;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || strchr("-._~", ch)) {
            *p++ = (char)ch;
        } else {
            *p++ = '%';
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 15];
        }
    }
    *p = '\0';
    return out;
}
