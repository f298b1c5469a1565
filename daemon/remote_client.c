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
 * The reader trusts nothing the server sends: the stream is framed by the
 * same Server-Sent Events parser as the client's (common/sse.c: data over
 * several lines, the three line endings, comments), each event must be a
 * JSON object, an error event ends the reply with the server's message,
 * and a chunk's fields are checked (remote_chunk_read) before a question
 * believes them.  A stream that breaks any of this fails loudly: the
 * alternative, an answer cut short and reported as finished, is worse.
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
#include <strings.h>

#define MAX_ERROR 4096
#define MAX_COUNT ((json_int_t)1 << 40) /* tokens: far beyond any context */

typedef struct transfer {
    remote_reader reader;
    CURL *curl;
    char error[MAX_ERROR]; /* a failed reply's body */
    size_t error_len;
    int typed;  /* the reply's Content-Type was checked */
    int failed; /* the reader's TOME_E*, its message in `why` */
    tome_error why;
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

/* ------------------------------------------------------------------------
 * Reading a reply
 * ------------------------------------------------------------------------ */

/* The message of an error event's JSON: OpenAI's error.message, a bare
 * string, else the JSON itself. */
static int event_error(const remote_reader *r, json_t *error, tome_error *err)
{
    const char *message = json_string_value(json_object_get(error, "message"));
    if (!message) message = json_string_value(error);
    char *dumped = message ? NULL : json_dumps(error, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!message) message = dumped ? dumped : "(none)";
    tome_errorf(err, TOME_EUPSTREAM, "%s sent an error: %.512s", r->source, message);
    free(dumped);
    return TOME_EUPSTREAM;
}

/* The error an event carries: {"error": {...}} as vLLM and SGLang send
 * one, or older vLLM's {"object": "error", "message": ...}; else NULL. */
static json_t *carried_error(json_t *event)
{
    json_t *error = json_object_get(event, "error");
    if (error && !json_is_null(error)) return error;
    const char *object = json_string_value(json_object_get(event, "object"));
    return object && strcmp(object, "error") == 0 ? event : NULL;
}

static int on_sse(void *arg, const char *name, const char *data, tome_error *err)
{
    remote_reader *r = arg;
    if (r->s->done) return 0;
    if (strcmp(name, "error") == 0)
        return tome_errorf(err, TOME_EUPSTREAM, "%s sent an error: %.512s", r->source, data);
    if (strcmp(name, "message") != 0) return 0; /* no OpenAI server names others */
    if (strcmp(data, "[DONE]") == 0) {
        r->s->done = 1;
        return 0;
    }
    json_error_t jerr;
    json_t *event = json_loads(data, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(event)) {
        json_decref(event);
        return tome_errorf(err, TOME_EUPSTREAM,
                           "%s sent an event that is not a JSON object (%s): %.80s", r->source,
                           event ? "another JSON value" : jerr.text, data);
    }
    json_t *error = carried_error(event);
    int rc = error ? event_error(r, error, err) : r->s->on_event(r->s->ctx, event, err);
    if (rc != 0 && !error) tome_error_wrap(err, "%s", r->source);
    json_decref(event);
    return rc;
}

void remote_reader_init(remote_reader *r, remote_stream *s, const char *source)
{
    r->s = s;
    r->source = source;
    tome_sse_init(&r->sse, source, REMOTE_EVENT_MAX, on_sse, r);
}

int remote_reader_feed(remote_reader *r, const char *bytes, size_t n, tome_error *err)
{
    return tome_sse_feed(&r->sse, bytes, n, err);
}

void remote_reader_free(remote_reader *r)
{
    tome_sse_free(&r->sse);
}

/* A token count of `obj`: 0 when absent or null. */
static int read_count(json_t *obj, const char *key, int64_t *out, tome_error *err)
{
    json_t *v = json_object_get(obj, key);
    *out = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_COUNT)
        return tome_errorf(err, TOME_EUPSTREAM, "usage's %s is not a count of tokens", key);
    *out = json_integer_value(v);
    return 0;
}

static int read_usage(json_t *usage, remote_chunk *c, tome_error *err)
{
    json_t *details = json_object_get(usage, "prompt_tokens_details");
    if (!json_is_object(usage) || (details && !json_is_null(details) && !json_is_object(details)))
        return tome_errorf(err, TOME_EUPSTREAM, "usage is not an object of counts");
    int rc = read_count(usage, "prompt_tokens", &c->prompt_tokens, err);
    if (rc == 0) rc = read_count(usage, "completion_tokens", &c->completion_tokens, err);
    if (rc == 0) rc = read_count(details, "cached_tokens", &c->cached_tokens, err);
    if (rc == 0 && c->cached_tokens > c->prompt_tokens)
        rc = tome_errorf(err, TOME_EUPSTREAM,
                         "usage counts %lld cached tokens of a %lld-token prompt",
                         (long long)c->cached_tokens, (long long)c->prompt_tokens);
    c->has_usage = rc == 0;
    return rc;
}

static int read_choice(json_t *choice, remote_chunk *c, tome_error *err)
{
    if (!json_is_object(choice))
        return tome_errorf(err, TOME_EUPSTREAM, "a choice is not an object");
    json_t *text = json_object_get(choice, "text");
    if (text && !json_is_null(text)) {
        if (!json_is_string(text))
            return tome_errorf(err, TOME_EUPSTREAM, "a choice's text is not a string");
        c->text = json_string_value(text);
        c->text_len = json_string_length(text);
    }
    json_t *reason = json_object_get(choice, "finish_reason");
    if (!reason || json_is_null(reason)) return 0;
    const char *why = json_string_value(reason);
    if (why && (strcmp(why, "stop") == 0 || strcmp(why, "length") == 0)) {
        c->finish_reason = why;
        return 0;
    }
    return tome_errorf(err, TOME_EUPSTREAM,
                       "the answer ended with finish_reason %.64s, not stop or length",
                       why ? why : "(not a string)");
}

int remote_chunk_read(json_t *event, remote_chunk *c, tome_error *err)
{
    memset(c, 0, sizeof *c);
    c->text = "";
    json_t *choices = json_object_get(event, "choices");
    if (choices && !json_is_null(choices) && !json_is_array(choices))
        return tome_errorf(err, TOME_EUPSTREAM, "choices is not an array");
    json_t *choice = json_array_get(choices, 0);
    int rc = choice ? read_choice(choice, c, err) : 0;
    json_t *usage = json_object_get(event, "usage");
    if (rc == 0 && usage && !json_is_null(usage)) rc = read_usage(usage, c, err);
    return rc;
}

/* ------------------------------------------------------------------------
 * Transfers
 * ------------------------------------------------------------------------ */

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    transfer *t = arg;
    remote_stream *s = t->reader.s;
    size_t len = size * n;
    if (!s->status) curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &s->status);
    s->connected = 1;
    if (s->status / 100 != 2) { /* keep the error body for the message */
        size_t room = sizeof t->error - 1 - t->error_len;
        size_t take = len < room ? len : room;
        memcpy(t->error + t->error_len, data, take);
        t->error_len += take;
        return len;
    }
    if (!t->typed) {
        t->typed = 1;
        char *type = NULL;
        curl_easy_getinfo(t->curl, CURLINFO_CONTENT_TYPE, &type);
        if (!type || strncasecmp(type, "text/event-stream", 17) != 0)
            t->failed = tome_errorf(&t->why, TOME_EUPSTREAM,
                                    "%s answered a stream with Content-Type %.64s, not "
                                    "text/event-stream",
                                    t->reader.source, type ? type : "(none)");
    }
    if (!t->failed) t->failed = remote_reader_feed(&t->reader, data, len, &t->why);
    /* Stopping at [DONE] spares waiting for a server that keeps the
     * connection open after it. */
    return t->failed || s->done ? 0 : len;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    transfer *t = arg;
    remote_stream *s = t->reader.s;
    return s->on_tick && s->on_tick(s->ctx);
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
    long status = t->reader.s->status;
    int code = status == 429 || status == 503 ? TOME_EBUSY
               : status / 100 == 4            ? TOME_EINVAL
                                              : TOME_EUPSTREAM;
    tome_errorf(err, code, "%s answered %ld: %.*s", target->conf->url, status,
                message ? (int)strlen(message) : (int)t->error_len, message ? message : t->error);
    json_decref(body);
    return code;
}

/* Run the transfer `t` (its handle made) and say how it ended. */
static int perform(transfer *t, const remote_target *target, const char *json, tome_error *err)
{
    remote_stream *s = t->reader.s;
    record_request(json);
    curl_easy_setopt(t->curl, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(t->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(t->curl, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(t->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(t->curl, CURLOPT_XFERINFODATA, t);
    CURLcode cc = curl_easy_perform(t->curl);
    if (!s->status) curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &s->status);
    if (t->failed) {
        *err = t->why;
        return t->failed;
    }
    if (s->done) return 0; /* whatever curl says of the stop at [DONE] */
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return tome_errorf(err, TOME_ECANCELED, "request to %s stopped", target->conf->url);
    if (cc != CURLE_OK)
        return tome_errorf(err, TOME_EUPSTREAM, "%s: %s", target->conf->url,
                           curl_easy_strerror(cc));
    if (s->status / 100 != 2) return reply_error(target, t, err);
    return tome_errorf(err, TOME_EUPSTREAM, "%s: the stream ended without [DONE]",
                       target->conf->url);
}

int remote_post_stream(const remote_target *target, const char *path, json_t *body,
                       remote_stream *s, tome_error *err)
{
    char *json = json_dumps(body, JSON_COMPACT);
    transfer t = {0};
    remote_reader_init(&t.reader, s, target->conf->url);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Accept: text/event-stream");
    t.curl = json ? open_handle(target, path, &headers) : NULL;
    int rc = t.curl
                 ? perform(&t, target, json, err)
                 : tome_errorf(err, TOME_ENOMEM, "cannot make a request to %s", target->conf->url);
    if (t.curl) curl_easy_cleanup(t.curl);
    curl_slist_free_all(headers);
    remote_reader_free(&t.reader);
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
    if (cc != CURLE_OK) return tome_errorf(err, TOME_EUPSTREAM, "%s", curl_easy_strerror(cc));
    if (status / 100 != 2)
        return tome_errorf(err, TOME_EUPSTREAM, "GET %s answered %ld", path, status);
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
