/*
 * api.c - one request to tomed, and what its answer means.
 *
 * This is where the client decides how to reach the daemon (--socket,
 * TOME_SOCKET, --host, TOME_HOST, the default socket path of
 * tome-protocol(7)), where the bearer token is loaded (TOME_TOKEN or a
 * --token-file that nobody else can read, never argv), and where HTTP
 * answers become tome_error codes.  The daemon's error object carries a
 * stable code name ("not_found", "busy", ...); that name decides the code,
 * and the HTTP status is only the fallback for answers without one (a proxy,
 * or a daemon too broken to say).  main.c maps the codes to exit statuses,
 * so every command gets the same, documented exit codes for free.
 */
#include "client/client.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JSON_REPLY_MAX (64u << 20)
/* tomed's events are JSON objects of a few kilobytes; a megabyte is far
 * beyond any real one and keeps a runaway stream from eating memory. */
#define EVENT_MAX_BYTES ((size_t)1 << 20)

static const char *default_socket(char *buf, size_t cap)
{
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    if (runtime && *runtime) {
        snprintf(buf, cap, "%s/tome/tomed.sock", runtime);
        return buf;
    }
    return "/run/tome/tomed.sock";
}

static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* A token file holds a secret, so like ssh keys it must not be readable by
 * anyone but its owner. */
static int load_token_file(const char *path, char **token, tome_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0) return tome_errorf(err, TOME_EIO, "--token-file %s: missing", path);
    if (st.st_mode & 077)
        return tome_errorf(err, TOME_EPERM,
                           "--token-file %s: mode %03o lets others read the secret; "
                           "chmod 600 it",
                           path, (unsigned)(st.st_mode & 0777));
    size_t len;
    if (tome_read_file(path, 4096, token, &len, err)) return err->code;
    while (len > 0 && strchr(" \t\r\n", (*token)[len - 1])) (*token)[--len] = '\0';
    if (len == 0) return tome_errorf(err, TOME_EINVAL, "--token-file %s is empty", path);
    return 0;
}

int tome_client_init(tome_client *c, const tome_options *opt, tome_error *err)
{
    static char socket_buf[4096];
    memset(c, 0, sizeof *c);
    if (opt->socket_path && opt->host)
        return tome_errorf(err, TOME_EINVAL, "--socket and --host exclude each other");
    c->endpoint.host = opt->socket_path ? NULL : opt->host ? opt->host : env_or_null("TOME_HOST");
    c->endpoint.socket_path = opt->socket_path ? opt->socket_path : env_or_null("TOME_SOCKET");
    if (!c->endpoint.socket_path)
        c->endpoint.socket_path = default_socket(socket_buf, sizeof socket_buf);
    c->endpoint.cacert = opt->cacert;
    c->endpoint.cert = opt->cert;
    c->endpoint.key = opt->key;
    const char *token_file = opt->token_file ? opt->token_file : env_or_null("TOME_TOKEN_FILE");
    if (token_file) return load_token_file(token_file, &c->token, err);
    const char *token = env_or_null("TOME_TOKEN");
    if (token && !(c->token = strdup(token))) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    return 0;
}

void tome_client_free(tome_client *c)
{
    free(c->token);
    c->token = NULL;
}

int tome_exit_status(int code)
{
    switch (code) {
    case TOME_OK:
        return TOME_EXIT_OK;
    case TOME_EINVAL:
        return TOME_EXIT_USAGE;
    case TOME_EUNREACHABLE:
        return TOME_EXIT_UNREACHABLE;
    case TOME_EQUESTIONS:
        return TOME_EXIT_QUESTIONS;
    case TOME_ENOTFOUND:
        return TOME_EXIT_NOT_FOUND;
    case TOME_EPERM:
        return TOME_EXIT_DENIED;
    case TOME_EBUSY:
        return TOME_EXIT_BUSY;
    case TOME_EMISMATCH:
        return TOME_EXIT_NOT_PREPARED;
    default:
        return TOME_EXIT_FAILURE;
    }
}

static int code_from_status(int status)
{
    switch (status) {
    case 400:
        return TOME_EINVAL;
    case 401:
    case 403:
        return TOME_EPERM;
    case 404:
        return TOME_ENOTFOUND;
    case 408:
    case 413:
        return TOME_ELIMIT;
    case 409:
        return TOME_EMISMATCH;
    case 422:
        return TOME_EFORMAT;
    case 429:
    case 503:
        return TOME_EBUSY;
    case 502:
        return TOME_EUPSTREAM;
    default:
        return TOME_EINTERNAL;
    }
}

static int code_from_name(const char *name, int fallback)
{
    static const int codes[] = {TOME_EINVAL,    TOME_ENOMEM, TOME_EIO,       TOME_EFORMAT,
                                TOME_ENOTFOUND, TOME_ELIMIT, TOME_EMISMATCH, TOME_ECANCELED,
                                TOME_EBUSY,     TOME_EPERM,  TOME_EEXIST,    TOME_EINTERNAL,
                                TOME_EUPSTREAM};
    for (size_t i = 0; name && i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(tome_error_name(codes[i]), name) == 0) return codes[i];
    return fallback;
}

int tome_api_error_from_json(json_t *error, int http_status, tome_error *err)
{
    const char *name = json_string_value(json_object_get(error, "code"));
    const char *message = json_string_value(json_object_get(error, "message"));
    int code = code_from_name(name, code_from_status(http_status));
    if (message) return tome_errorf(err, code, "%s", message);
    return tome_errorf(err, code, "tomed answered HTTP %d", http_status);
}

static int error_from_body(const char *body, int status, tome_error *err)
{
    json_t *root = json_loads(body, 0, NULL);
    int rc = tome_api_error_from_json(json_object_get(root, "error"), status, err);
    json_decref(root);
    return rc;
}

char *tome_api_target(const char *before, const char *name, const char *after)
{
    char *escaped = tome_url_escape(name);
    size_t n = strlen(before) + (escaped ? strlen(escaped) : 0) + strlen(after) + 1;
    char *target = escaped ? malloc(n) : NULL;
    if (target) snprintf(target, n, "%s%s%s", before, escaped, after);
    free(escaped);
    return target;
}

/* Connect and send the request head; the caller sends any body. */
static int start_request(tome_client *c, tome_request *req, tome_conn **conn, tome_error *err)
{
    req->host = c->endpoint.host ? c->endpoint.host : "tome";
    req->token = c->token;
    *conn = NULL;
    if (tome_conn_open(&c->endpoint, conn, err)) return err->code;
    if (tome_http_write_head(*conn, req, err)) {
        tome_conn_free(*conn);
        *conn = NULL;
        return err->code;
    }
    return 0;
}

/* Send `method target` with an optional JSON body and read the answer's head. */
static int send_json(tome_client *c, const char *method, const char *target, json_t *body,
                     const char *accept, tome_conn **conn, tome_response *resp, tome_error *err)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    tome_request req = {.method = method, .target = target, .accept = accept};
    if (text) {
        req.content_type = "application/json";
        req.content_length = (long long)strlen(text);
    }
    int rc = start_request(c, &req, conn, err);
    if (rc == 0 && text) rc = tome_conn_write(*conn, text, strlen(text), err);
    if (rc == 0) rc = tome_http_read_head(*conn, resp, err);
    free(text);
    if (rc && *conn) {
        tome_conn_free(*conn);
        *conn = NULL;
    }
    return rc;
}

/* A busy daemon says when to come back; a person or a cron log should see
 * it, since the exit status alone only says "later". */
static void append_retry_hint(tome_error *err, long long seconds)
{
    size_t used = strlen(err->msg);
    snprintf(err->msg + used, sizeof err->msg - used, " (retry after %lld s)", seconds);
}

/* Read a JSON answer (or an error answer) once its head is in. */
static int finish_json(tome_conn *conn, tome_response *resp, json_t **reply, tome_error *err)
{
    char *body;
    if (tome_http_read_all(conn, resp, JSON_REPLY_MAX, &body, NULL, err)) return err->code;
    int rc = 0;
    if (resp->status >= 300) {
        rc = error_from_body(body, resp->status, err);
        if (resp->retry_after >= 0) append_retry_hint(err, resp->retry_after);
    } else if (reply && resp->status != 204) {
        json_error_t jerr;
        *reply = json_loads(body, 0, &jerr);
        if (!*reply)
            rc = tome_errorf(err, TOME_EFORMAT, "tomed sent malformed JSON: %s", jerr.text);
    }
    free(body);
    return rc;
}

int tome_api_json(tome_client *c, const char *method, const char *target, json_t *body,
                  json_t **reply, int *status, tome_error *err)
{
    tome_conn *conn;
    tome_response resp;
    if (reply) *reply = NULL;
    if (send_json(c, method, target, body, "application/json", &conn, &resp, err)) return err->code;
    if (status) *status = resp.status;
    int rc = finish_json(conn, &resp, reply, err);
    tome_conn_free(conn);
    return rc;
}

int tome_api_events(tome_client *c, const char *method, const char *target, json_t *body,
                    tome_sse_fn on_event, void *ctx, tome_error *err)
{
    tome_conn *conn;
    tome_response resp;
    if (send_json(c, method, target, body, "text/event-stream", &conn, &resp, err))
        return err->code;
    int rc;
    if (resp.status >= 300 || strncmp(resp.content_type, "text/event-stream", 17) != 0) {
        rc = finish_json(conn, &resp, NULL, err);
        if (rc == 0)
            rc = tome_errorf(err, TOME_EFORMAT, "tomed answered %s with HTTP %d but no events",
                             target, resp.status);
        tome_conn_free(conn);
        return rc;
    }
    tome_sse parser;
    tome_sse_init(&parser, "tomed", EVENT_MAX_BYTES, on_event, ctx);
    char buf[4096];
    size_t got;
    while ((rc = tome_http_read_body(conn, &resp, buf, sizeof buf, &got, err)) == 0 && got > 0)
        if ((rc = tome_sse_feed(&parser, buf, got, err)) != 0) break;
    tome_sse_free(&parser);
    tome_conn_free(conn);
    return rc;
}

int tome_api_upload(tome_client *c, const char *target, int fd, long long len, json_t **reply,
                    tome_error *err)
{
    tome_request req = {.method = "POST",
                        .target = target,
                        .accept = "application/json",
                        .content_type = "application/octet-stream",
                        .content_length = len};
    tome_conn *conn;
    *reply = NULL;
    if (start_request(c, &req, &conn, err)) return err->code;
    char buf[65536];
    int rc = 0;
    for (long long sent = 0; rc == 0 && sent < len;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) {
            rc = tome_errorf(err, TOME_EIO, "reading the upload failed after %lld bytes", sent);
            break;
        }
        rc = tome_conn_write(conn, buf, (size_t)n, err);
        sent += n;
    }
    /* A daemon that refuses an upload (too big, no right) may answer and
     * close before taking it all; its answer says more than the failed
     * write does, so try to read it either way. */
    tome_error write_err = *err;
    tome_response resp;
    int head_rc = tome_http_read_head(conn, &resp, err);
    if (head_rc == 0)
        rc = finish_json(conn, &resp, reply, err);
    else if (rc)
        *err = write_err;
    else
        rc = head_rc;
    tome_conn_free(conn);
    return rc;
}
