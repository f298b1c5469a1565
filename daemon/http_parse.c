/*
 * http_parse.c - requests: the head parsed strictly (request line, header
 * fields, the framing of the body), the target's path and query decoded,
 * and chunk-size lines.  Whatever a proxy in front of tomed could read
 * another way is refused; see parse_framing.
 */
#include "daemon/http_internal.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void http_request_free(tomed_request *r)
{
    if (!r) return;
    if (r->body_fd >= 0) {
        close(r->body_fd);
        unlink(r->body_path);
    }
    if (r->body) evbuffer_free(r->body);
    for (int i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->path);
    free(r->query);
    free(r->params[0]);
    free(r->params[1]);
    free(r);
}

const char *tomed_header_get(const tomed_request *r, const char *name)
{
    for (int i = 0; i < r->n_headers; i++)
        if (strcmp(r->headers[i].name, name) == 0) return r->headers[i].value;
    return NULL;
}

static int hex_value(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

char *tomed_percent_decode(const char *s, size_t n, int plus_is_space)
{
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hex_value((unsigned char)s[i + 1]) >= 0 &&
            hex_value((unsigned char)s[i + 2]) >= 0) {
            int v = hex_value((unsigned char)s[i + 1]) * 16 + hex_value((unsigned char)s[i + 2]);
            out[j++] = (char)v;
            i += 2;
        } else if (s[i] == '+' && plus_is_space) {
            out[j++] = ' ';
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
    if (memchr(out, '\0', j) || !tome_utf8_valid(out, j)) {
        free(out);
        return NULL;
    }
    return out;
}

char *tomed_query_get(const tomed_request *r, const char *key)
{
    if (!r->query) return NULL;
    size_t klen = strlen(key);
    const char *p = r->query;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=')
            return tomed_percent_decode(p + klen + 1, n - klen - 1, 1);
        if (n == klen && strncmp(p, key, klen) == 0) return strdup("");
        p += n;
        if (*p == '&') p++;
    }
    return NULL;
}

/* Every parameter of the query must decode to UTF-8 without NUL bytes, so
 * that handlers (and the JSON they answer with) only ever see text. */
static const char *check_query(const char *query)
{
    const char *p = query;
    while (*p) {
        size_t n = strcspn(p, "&");
        char *decoded = tomed_percent_decode(p, n, 1);
        if (!decoded) return "a query parameter is not UTF-8 text after percent-decoding";
        free(decoded);
        p += n;
        if (*p == '&') p++;
    }
    return NULL;
}

static int add_header(tomed_request *r, const char *name, size_t nlen, const char *value)
{
    if (r->n_headers == MAX_HEADERS) return TOME_ELIMIT;
    if (!r->headers) r->headers = calloc(MAX_HEADERS, sizeof *r->headers);
    if (!r->headers) return TOME_ENOMEM;
    tomed_header *h = &r->headers[r->n_headers];
    h->name = strndup(name, nlen);
    h->value = strdup(value);
    if (!h->name || !h->value) {
        free(h->name);
        free(h->value);
        return TOME_ENOMEM;
    }
    for (char *q = h->name; *q; q++) *q = (char)tolower((unsigned char)*q);
    r->n_headers++;
    return 0;
}

/* Is every byte of the request target visible ASCII (RFC 9112 section 3.2)? */
static int target_is_ascii(const char *t)
{
    for (; *t; t++)
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f) return 0;
    return 1;
}

/* Is name[0..n) an HTTP token (RFC 9110 section 5.6.2)?  A field name with
 * anything else, such as "Content-Length :", is refused: a proxy in front
 * may read it differently, which is how requests are smuggled. */
static int is_token(const char *name, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!isalnum(ch) && !strchr("!#$%&'*+-.^_`|~", ch)) return 0;
    }
    return 1;
}

static int all_digits(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* How the body is framed: Content-Length or chunked, per RFC 9112 section
 * 6.  Whatever a proxy in front could read another way is refused with 400
 * (the connection then closes): a Content-Length that is not a plain
 * number, two that differ, both framings at once, a repeated
 * Transfer-Encoding.  Returns an HTTP status on failure, with *why. */
static int parse_framing(tomed_request *r, const char **why)
{
    const char *te = NULL, *cl = NULL;
    int n_te = 0;
    for (int i = 0; i < r->n_headers; i++) {
        const tomed_header *h = &r->headers[i];
        if (strcmp(h->name, "transfer-encoding") == 0) {
            te = h->value;
            n_te++;
        } else if (strcmp(h->name, "content-length") == 0) {
            *why = "Content-Length is not a decimal number";
            if (!all_digits(h->value)) return 400;
            *why = "conflicting Content-Length headers";
            if (cl && strcmp(cl, h->value) != 0) return 400;
            cl = h->value;
        }
    }
    r->content_length = -1;
    *why = "both Transfer-Encoding and Content-Length frame the body";
    if (te && cl) return 400;
    *why = "more than one Transfer-Encoding header";
    if (n_te > 1) return 400;
    if (te) {
        *why = "the only transfer coding supported is chunked";
        if (strcasecmp(te, "chunked") != 0) return 501;
        r->chunked = 1;
    } else if (cl) {
        errno = 0;
        long long n = strtoll(cl, NULL, 10);
        *why = "Content-Length is too large";
        if (errno) return 400;
        r->content_length = n;
    }
    return 0;
}

/* Parses the request head in `head` (NUL-terminated, CRLF lines, without
 * the final empty line) into `r`.  Returns an HTTP status on failure, with
 * *why saying what was wrong.
 *
 * r->path keeps the target's percent-escapes: the router matches the raw
 * path and decodes each segment it takes, so an escaped "/" (%2F) stays
 * inside its segment and cannot reach another route. */
int http_parse_head(tomed_request *r, char *head, const char **why)
{
    char *save = NULL;
    char *line = strtok_r(head, "\r\n", &save);
    *why = "malformed request line";
    if (!line) return 400;
    char target[8192], version[16];
    if (sscanf(line, "%15s %8191s %15s", r->method, target, version) != 3) return 400;
    *why = "unsupported HTTP version";
    if (strncmp(version, "HTTP/1.", 7) != 0) return 505;
    *why = "the request target must be an absolute path of visible ASCII characters";
    if (target[0] != '/' || !target_is_ascii(target)) return 400;
    char *q = strchr(target, '?');
    *why = "out of memory";
    if (q) {
        *q = '\0';
        r->query = strdup(q + 1);
        if (!r->query) return 503;
        if ((*why = check_query(r->query))) return 400;
    }
    *why = "out of memory";
    r->path = strdup(target);
    if (!r->path) return 503;
    *why = "malformed header line";
    while ((line = strtok_r(NULL, "\r\n", &save))) {
        char *colon = strchr(line, ':');
        *why = "malformed header field name";
        if (!colon || !is_token(line, (size_t)(colon - line))) return 400;
        char *value = colon + 1;
        while (*value == ' ' || *value == '\t') value++;
        size_t vlen = strlen(value);
        while (vlen && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t')) value[--vlen] = '\0';
        if (add_header(r, line, (size_t)(colon - line), value) != 0) {
            *why = "too many header lines";
            return 431;
        }
    }
    int status = parse_framing(r, why);
    if (status != 0) return status;
    if (strncmp(version, "HTTP/1.0", 8) == 0) r->conn->close_after = 1;
    const char *connection = tomed_header_get(r, "connection");
    if (connection && strcasecmp(connection, "close") == 0) r->conn->close_after = 1;
    return 0;
}

/* A chunk-size line (RFC 9112 section 7.1): hex digits, then optionally an
 * extension after ';', which is ignored.  Returns the size, or -1 for
 * anything else ("11zz", "0x11", a sign, more than 15 digits). */
int64_t http_parse_chunk_size(const char *line)
{
    int64_t size = 0;
    const char *p = line;
    for (; hex_value((unsigned char)*p) >= 0; p++) {
        if (p - line == 15) return -1;
        size = size * 16 + hex_value((unsigned char)*p);
    }
    if (p == line) return -1;
    while (*p == ' ' || *p == '\t') p++;
    return *p == '\0' || *p == ';' ? size : -1;
}
