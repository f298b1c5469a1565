/*
 * remote_client.c - HTTP to OpenAI-compatible servers over libcurl: a
 * streamed POST whose Server-Sent Events are parsed into JSON, and a GET
 * for health checks.
 *
 * Why libcurl and not libevent's evhttp client: tomed already links
 * libcurl's sibling code in tome-model, and libcurl brings what a client
 * to vLLM or SGLang clusters needs and evhttp lacks or leaves to the
 * caller: TLS with a chosen CA file and host-name checks, proxies from the
 * environment, HTTP/1.1 chunked replies, connect and stall timeouts, and
 * an easy handle per call that a job's or question's own thread can block
 * on without touching the loop.
 *
 * The event parser is small on purpose: OpenAI-compatible servers send one
 * `data:` line per event, a blank line after it, `data: [DONE]` at the end,
 * and comments (lines starting with ':') as keepalives.
 *
 * Tests only: TOMED_TEST_REMOTE_REQUESTS names a file that gets every
 * request body sent, one JSON document per line, so a test can check the
 * requests against OpenAI's schema.
 */
#include "daemon/remote_client.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE  (64 << 20) /* one event's data: a 1M-token prompt's echo at most */
#define MAX_ERROR 4096

typedef struct transfer {
    remote_stream *s;
    CURL *curl;
    char *line; /* the bytes of the current line so far */
    size_t len, cap;
    char error[MAX_ERROR]; /* a failed reply's body */
    size_t error_len;
    int stopped; /* on_event asked to stop */
} transfer;

static void record_request(const char *json)
{
    const char *path = getenv("TOMED_TEST_REMOTE_REQUESTS");
    if (!path || !*path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s\n", json);
    fclose(f);
}

/* One complete line of the stream: a data event, a comment or a blank. */
static int take_line(transfer *t, char *line, size_t len)
{
    if (len && line[len - 1] == '\r') line[--len] = '\0';
    if (strncmp(line, "data:", 5) != 0) return 0;
    const char *data = line + 5 + (line[5] == ' ');
    if (strcmp(data, "[DONE]") == 0) {
        t->s->done = 1;
        return 0;
    }
    json_t *event = json_loads(data, 0, NULL);
    if (!event) return 0;
    int stop = t->s->on_event(t->s->ctx, event);
    json_decref(event);
    if (stop) t->stopped = 1;
    return stop;
}

static int grow_line(transfer *t, size_t need)
{
    if (need <= t->cap) return 0;
    if (need > MAX_LINE) return -1;
    size_t cap = need * 2;
    char *grown = realloc(t->line, cap);
    if (!grown) return -1;
    t->line = grown;
    t->cap = cap;
    return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    transfer *t = arg;
    size_t len = size * n;
    if (!t->s->status) curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &t->s->status);
    t->s->connected = 1;
    if (t->s->status / 100 != 2) { /* keep the error body for the message */
        size_t room = sizeof t->error - 1 - t->error_len;
        size_t take = len < room ? len : room;
        memcpy(t->error + t->error_len, data, take);
        t->error_len += take;
        return len;
    }
    for (size_t i = 0; i < len; i++) {
        if (grow_line(t, t->len + 1) != 0) return 0;
        if (data[i] != '\n') {
            t->line[t->len++] = data[i];
            continue;
        }
        t->line[t->len] = '\0';
        size_t line_len = t->len;
        t->len = 0;
        if (take_line(t, t->line, line_len)) return 0;
    }
    return len;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    transfer *t = arg;
    return t->s->on_tick && t->s->on_tick(t->s->ctx);
}

/* An easy handle for URL/PATH with the target's TLS, key and timeouts. */
static CURL *open_handle(const remote_target *target, const char *path, struct curl_slist **headers)
{
    CURL *curl = curl_easy_init();
    if (!curl) return NULL;
    char url[2048];
    snprintf(url, sizeof url, "%s%s", target->conf->url, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, (long)target->connect_timeout_s);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, (long)target->timeout_s);
    if (target->conf->ca[0]) curl_easy_setopt(curl, CURLOPT_CAINFO, target->conf->ca);
    if (target->api_key[0]) {
        char auth[1200];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", target->api_key);
        *headers = curl_slist_append(*headers, auth);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, *headers);
    return curl;
}

/* The message of a failed reply: OpenAI's error.message, else the body. */
static int reply_error(const remote_target *target, transfer *t, tome_error *err)
{
    json_t *body = json_loadb(t->error, t->error_len, 0, NULL);
    const char *message =
        json_string_value(json_object_get(json_object_get(body, "error"), "message"));
    int code = t->s->status == 429 || t->s->status == 503 ? TOME_EBUSY
               : t->s->status / 100 == 4                  ? TOME_EINVAL
                                                          : TOME_EIO;
    tome_errorf(err, code, "%s answered %ld: %.*s", target->conf->url, t->s->status,
                message ? (int)strlen(message) : (int)t->error_len, message ? message : t->error);
    json_decref(body);
    return code;
}

int remote_post_stream(const remote_target *target, const char *path, json_t *body,
                       remote_stream *s, tome_error *err)
{
    char *json = json_dumps(body, JSON_COMPACT);
    transfer t = {.s = s};
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Accept: text/event-stream");
    t.curl = json ? open_handle(target, path, &headers) : NULL;
    if (!t.curl) {
        free(json);
        curl_slist_free_all(headers);
        return tome_errorf(err, TOME_ENOMEM, "cannot make a request to %s", target->conf->url);
    }
    record_request(json);
    curl_easy_setopt(t.curl, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(t.curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(t.curl, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(t.curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(t.curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(t.curl, CURLOPT_XFERINFODATA, &t);
    CURLcode cc = curl_easy_perform(t.curl);
    if (!s->status) curl_easy_getinfo(t.curl, CURLINFO_RESPONSE_CODE, &s->status);
    int rc = 0;
    if (t.stopped || cc == CURLE_ABORTED_BY_CALLBACK)
        rc = tome_errorf(err, TOME_ECANCELED, "request to %s stopped", target->conf->url);
    else if (cc != CURLE_OK)
        rc = tome_errorf(err, TOME_EIO, "%s: %s", target->conf->url, curl_easy_strerror(cc));
    else if (s->status / 100 != 2)
        rc = reply_error(target, &t, err);
    else if (!s->done)
        rc = tome_errorf(err, TOME_EIO, "%s: the stream ended without [DONE]", target->conf->url);
    curl_easy_cleanup(t.curl);
    curl_slist_free_all(headers);
    free(t.line);
    free(json);
    return rc;
}

static size_t discard(char *data, size_t size, size_t n, void *arg)
{
    return size * n;
}

int remote_get_ok(const remote_target *target, const char *path, tome_error *err)
{
    struct curl_slist *headers = NULL;
    CURL *curl = open_handle(target, path, &headers);
    if (!curl) return tome_errorf(err, TOME_ENOMEM, "cannot make a request");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)target->connect_timeout_s);
    CURLcode cc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    if (cc != CURLE_OK) return tome_errorf(err, TOME_EIO, "%s", curl_easy_strerror(cc));
    if (status / 100 != 2) return tome_errorf(err, TOME_EIO, "GET %s answered %ld", path, status);
    return 0;
}

int remote_read_key(const char *path, char *out, size_t cap, tome_error *err)
{
    char *text;
    size_t len;
    int rc = tome_read_file(path, 64 << 10, &text, &len, err);
    if (rc != 0) return rc;
    size_t n = strcspn(text, "\r\n");
    if (n == 0 || n >= cap) rc = tome_errorf(err, TOME_EFORMAT, "%s holds no API key", path);
    if (rc == 0) snprintf(out, cap, "%.*s", (int)n, text);
    free(text);
    return rc;
}
