/*
 * cmd_ingest.c - `tome ingest CORPUS PATH`: a new version of a corpus.
 *
 * By default the client sends the bytes (see upload.c for how a directory
 * or standard input becomes one archive).  --server-path instead names a
 * path on the daemon's machine, which the daemon reads itself; it allows
 * that only over the Unix socket and only for paths the caller could read,
 * and saves copying a large tree through the socket.
 *
 * The result is the daemon's ingest report: what was added, changed,
 * removed and skipped (with the reason), which tells the user whether the
 * next prefill can reuse the cached state.
 */
#include "client/client.h"

#include <stdlib.h>
#include <unistd.h>

/* A count the report may give as a number or as the list of what it
 * counts (tome-protocol(7) shows numbers; lists carry the paths too). */
static long long count_of(json_t *report, const char *key)
{
    json_t *v = json_object_get(report, key);
    return json_is_array(v) ? (long long)json_array_size(v) : json_integer_value(v);
}

static void print_ingest_report(json_t *report)
{
    json_t *bytes = json_object_get(report, "bytes");
    if (!bytes) bytes = json_object_get(report, "document_bytes");
    printf("%s version %lld: %lld documents, %lld bytes\n",
           json_string_value(json_object_get(report, "corpus")),
           json_integer_value(json_object_get(report, "version")),
           json_integer_value(json_object_get(report, "documents")), json_integer_value(bytes));
    printf("added %lld, changed %lld, removed %lld, unchanged %lld\n", count_of(report, "added"),
           count_of(report, "changed"), count_of(report, "removed"), count_of(report, "unchanged"));
    json_t *first = json_object_get(report, "first_changed_token");
    if (json_is_integer(first))
        printf("the cached state stays valid up to token %lld\n", json_integer_value(first));
    size_t i;
    json_t *skipped;
    json_array_foreach(json_object_get(report, "skipped"), i, skipped) {
        printf("skipped %s (%s)\n", json_string_value(json_object_get(skipped, "path")),
               json_string_value(json_object_get(skipped, "reason")));
    }
}

static int ingest_server_path(tome_client *c, const char *target, const char *path, json_t **reply,
                              tome_error *err)
{
    if (path[0] != '/')
        return tome_errorf(err, TOME_EINVAL, "--server-path needs an absolute path, not %s", path);
    json_t *body = json_pack("{s:s}", "path", path);
    int rc = tome_api_json(c, "POST", target, body, reply, NULL, err);
    json_decref(body);
    return rc;
}

static int ingest_upload(tome_client *c, const char *target, const char *path, json_t **reply,
                         tome_error *err)
{
    int fd;
    long long len;
    if (tome_upload_open(path, &fd, &len, err)) return err->code;
    tome_note("uploading %lld bytes from %s", len, path);
    int rc = tome_api_upload(c, target, fd, len, reply, err);
    close(fd);
    return rc;
}

int tome_cmd_ingest(tome_client *c, const tome_options *opt, tome_error *err)
{
    char *target = tome_api_target("/v1/corpora/", opt->args[0], "/ingest");
    if (!target) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    json_t *reply = NULL;
    int rc = opt->server_path ? ingest_server_path(c, target, opt->args[1], &reply, err)
                              : ingest_upload(c, target, opt->args[1], &reply, err);
    free(target);
    if (rc == 0 && opt->json)
        rc = tome_print_json(reply, err);
    else if (rc == 0)
        print_ingest_report(reply);
    json_decref(reply);
    return rc;
}
