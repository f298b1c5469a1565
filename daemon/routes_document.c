/*
 * routes_document.c - GET /v1/corpora/NAME/document?path=P[&from=A][&to=B]
 * [&version=N]: lines of one document of the corpus's current version (or
 * of version N, the one a state or a citation was made from), so that a reader
 * (tome mcp's read_document, an agent checking a citation) can see what a
 * path:line points at without the whole corpus.
 *
 * Lines are numbered from 1 as in the document-QA prompt and in citations;
 * `to` past the end stops at the end, and one read gives at most
 * INGEST_READ_MAX_LINES lines (the reply says which lines it holds and how
 * many the document has, so a reader can page on).
 */
#include "daemon/conf.h"
#include "daemon/http.h"
#include "daemon/router.h"
#include "daemon/storecall.h"

#include "ingest/ingest.h"
#include "store/store.h"

#include <errno.h>
#include <stdlib.h>

static int read_document(tomed_call *c, store *db, tome_error *err)
{
    int64_t corpus_id, version_id, number;
    int rc = store_corpus_find(db, c->corpus, &corpus_id, err);
    if (rc == TOME_ENOTFOUND)
        return tome_errorf(err, TOME_ENOTFOUND, "corpus '%s' does not exist", c->corpus);
    json_int_t wanted = json_integer_value(json_object_get(c->input, "version"));
    if (rc == 0 && wanted > 0) {
        rc = store_version_by_number(db, corpus_id, wanted, &version_id, err);
        if (rc == TOME_ENOTFOUND)
            return tome_errorf(err, TOME_ENOTFOUND, "corpus '%s' has no version %lld", c->corpus,
                               (long long)wanted);
    } else if (rc == 0) {
        rc = store_version_latest(db, corpus_id, &version_id, err);
        if (rc == TOME_ENOTFOUND)
            return tome_errorf(err, TOME_EMISMATCH, "corpus '%s' has nothing ingested", c->corpus);
    }
    if (rc == 0) rc = store_version_number(db, version_id, &number, err);
    if (rc != 0) return rc;
    json_int_t first = json_integer_value(json_object_get(c->input, "from"));
    json_int_t last = json_integer_value(json_object_get(c->input, "to"));
    char *text;
    int64_t given, count;
    rc = ingest_read_lines(db, version_id, c->query, first, last, &text, &given, &count, err);
    if (rc != 0) return rc;
    c->result = json_pack("{s:s, s:I, s:s, s:I, s:I, s:I, s:s}", "corpus", c->corpus, "version",
                          (json_int_t)number, "path", c->query, "from", first, "to",
                          (json_int_t)given, "line_count", (json_int_t)count, "text", text);
    free(text);
    return c->result ? 0 : tome_errorf(err, TOME_ENOMEM, "out of memory");
}

/* A line or version number parameter: absent is `fallback`; else a whole
 * number >= 1. */
static int line_param(tomed_request *r, const char *key, json_int_t fallback, json_int_t *out)
{
    char *text = tomed_query_get(r, key), *end = NULL;
    errno = 0;
    long long v = text ? strtoll(text, &end, 10) : fallback;
    int bad = text && (errno || end == text || *end || v < 1);
    free(text);
    if (bad) tomed_reply_error(r, TOME_EINVAL, "'%s' must be a whole number, 1 or more", key);
    *out = (json_int_t)v;
    return bad ? -1 : 0;
}

void tomed_route_document(tomed_request *r)
{
    if (tomed_require_corpus(r, TOMED_RIGHT_READ) != 0) return;
    json_int_t first, last, version;
    if (line_param(r, "from", 1, &first) != 0 ||
        line_param(r, "to", first + INGEST_READ_MAX_LINES - 1, &last) != 0 ||
        line_param(r, "version", 0, &version) != 0)
        return;
    char *path = tomed_query_get(r, "path");
    if (!path || !*path) {
        free(path);
        tomed_reply_error(r, TOME_EINVAL, "give path=PATH, a document of the corpus");
        return;
    }
    tomed_call *c = tomed_call_new(r, read_document, 200);
    if (!c) {
        free(path);
        return;
    }
    c->query = path;
    c->input = json_pack("{s:I, s:I, s:I}", "from", first, "to", last, "version", version);
    tomed_call_start(c);
}
