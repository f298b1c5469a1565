/*
 * routes_corpora.c - corpora, ingest and search.
 *
 * Every handler checks the principal's right on the corpus named in the
 * path, then sends the work to a worker thread (storecall.c): SQLite and
 * libarchive never run on the loop thread.  An uploaded archive has by
 * then been streamed to a file under STATE_DIR/tmp by http.c; ingest reads
 * it from there and the call removes it afterwards.  A server-side path is
 * accepted only from a Unix peer, and read with that peer's rights: every
 * directory and file of it is checked against the peer's credentials on
 * its open descriptor (peer_access.c), so the daemon's own privileges never
 * widen what a client can see.
 */
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/router.h"
#include "daemon/server.h"
#include "daemon/storecall.h"

#include "ingest/ingest.h"
#include "store/store.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEARCH_DEFAULT_LIMIT 100
#define SEARCH_MAX_LIMIT     1000

int tomed_require_corpus(tomed_request *r, int rights)
{
    const char *name = r->params[0];
    if (!name || !tomed_corpus_name_valid(name)) {
        tomed_reply_error(r, TOME_EINVAL, "'%s' is not a valid corpus name", name ? name : "");
        return -1;
    }
    if (!tomed_principal_can(&r->principal, name, rights)) {
        tomed_reply_error(r, TOME_EPERM, "%s has no %s right on corpus '%s'", r->principal.name,
                          tomed_rights_name(rights), name);
        return -1;
    }
    return 0;
}

/* The state answers of the corpus's current version come from: a saved
 * state in the store, else the engine's in-memory one, else none. */
static json_t *memory_state(tomed_server *s, const char *name, int64_t version_id)
{
    int64_t tokens;
    char id[48];
    if (!tomed_engine_has_state(tomed_jobs_engine(s->jobs), name, version_id, &tokens, id))
        return json_null();
    return json_pack("{s:s, s:I, s:n}", "id", id, "tokens", (json_int_t)tokens, "bytes");
}

/* The corpus object of tome-protocol(7), built on a worker. */
static int corpus_json(tomed_server *s, store *db, const char *name, json_t **out, tome_error *err)
{
    int64_t corpus_id, version_id = 0, number = 0;
    int rc = store_corpus_find(db, name, &corpus_id, err);
    if (rc != 0) return rc;
    json_int_t documents = 0, bytes = 0;
    json_t *state = json_null();
    rc = store_version_latest(db, corpus_id, &version_id, err);
    if (rc == TOME_ENOTFOUND) {
        version_id = 0;
        rc = 0;
    } else if (rc == 0) {
        store_document_list docs = {0};
        rc = store_version_number(db, version_id, &number, err);
        if (rc == 0) rc = store_version_documents(db, version_id, &docs, err);
        if (rc != 0) return rc;
        documents = (json_int_t)docs.n;
        for (size_t i = 0; i < docs.n; i++) bytes += docs.docs[i].size;
        store_document_list_free(&docs);
        store_kv_state_list states = {0};
        rc = store_state_list(db, corpus_id, &states, err);
        if (rc != 0) return rc;
        for (size_t i = 0; i < states.n; i++) {
            const store_kv_state *st = &states.states[i];
            if (st->version_id != version_id || st->status != STORE_STATE_READY) continue;
            char id[32];
            snprintf(id, sizeof id, "%lld", (long long)st->id);
            json_decref(state);
            state = json_pack("{s:s, s:I, s:I}", "id", id, "tokens", (json_int_t)st->token_count,
                              "bytes", (json_int_t)st->bytes);
        }
        store_state_list_free(&states);
        if (json_is_null(state)) state = memory_state(s, name, version_id);
    }
    if (rc != 0) {
        json_decref(state);
        return rc;
    }
    *out = json_pack("{s:s, s:I, s:I, s:I, s:o}", "name", name, "version", (json_int_t)number,
                     "documents", documents, "bytes", bytes, "state", state);
    return 0;
}

/* ------------------------------------------------------------------------
 * Create, list, show, delete
 * ------------------------------------------------------------------------ */

static int create_corpus(tomed_call *c, store *db, tome_error *err)
{
    int64_t id;
    int rc = store_corpus_find(db, c->corpus, &id, err);
    if (rc == 0) return tome_errorf(err, TOME_EEXIST, "corpus '%s' exists", c->corpus);
    if (rc != TOME_ENOTFOUND) return rc;
    rc = store_corpus_ensure(db, c->corpus, &id, err);
    if (rc == 0) rc = corpus_json(c->server, db, c->corpus, &c->result, err);
    return rc;
}

void tomed_route_corpus_create(tomed_request *r)
{
    json_t *body = tomed_request_json(r);
    if (!body) return;
    const char *name = json_string_value(json_object_get(body, "name"));
    if (!name || !tomed_corpus_name_valid(name)) {
        tomed_reply_error(
            r, TOME_EINVAL,
            "'name' must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'");
    } else if (!tomed_principal_can(&r->principal, name, TOMED_RIGHT_WRITE)) {
        tomed_reply_error(r, TOME_EPERM, "%s may not create corpus '%s'", r->principal.name, name);
    } else {
        tomed_call *c = tomed_call_new(r, create_corpus, 201);
        if (c) {
            snprintf(c->corpus, sizeof c->corpus, "%s", name);
            tomed_call_start(c);
        }
    }
    json_decref(body);
}

static int show_corpus(tomed_call *c, store *db, tome_error *err)
{
    int rc = corpus_json(c->server, db, c->corpus, &c->result, err);
    if (rc == TOME_ENOTFOUND)
        return tome_errorf(err, TOME_ENOTFOUND, "corpus '%s' does not exist", c->corpus);
    return rc;
}

void tomed_route_corpus_show(tomed_request *r)
{
    if (tomed_require_corpus(r, TOMED_RIGHT_READ) != 0) return;
    tomed_call *c = tomed_call_new(r, show_corpus, 200);
    if (c) tomed_call_start(c);
}

/* Only the corpora the principal may read are listed. */
static int list_corpora(tomed_call *c, store *db, tome_error *err)
{
    const tomed_principal *p = &c->principal;
    char **names;
    size_t n;
    int rc = store_corpus_list(db, &names, &n, err);
    if (rc != 0) return rc;
    json_t *list = json_array();
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *corpus;
        if (!tomed_principal_can(p, names[i], TOMED_RIGHT_READ)) continue;
        rc = corpus_json(c->server, db, names[i], &corpus, err);
        if (rc == 0) json_array_append_new(list, corpus);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (rc != 0) {
        json_decref(list);
        return rc;
    }
    c->result = json_pack("{s:o}", "corpora", list);
    return 0;
}

void tomed_route_corpus_list(tomed_request *r)
{
    tomed_call *c = tomed_call_new(r, list_corpora, 200);
    if (c) tomed_call_start(c);
}

/* The corpus's state files go with it (the store removes only the rows). */
static int delete_corpus(tomed_call *c, store *db, tome_error *err)
{
    int64_t id;
    int rc = store_corpus_find(db, c->corpus, &id, err);
    if (rc == TOME_ENOTFOUND)
        return tome_errorf(err, TOME_ENOTFOUND, "corpus '%s' does not exist", c->corpus);
    if (rc != 0) return rc;
    store_kv_state_list states = {0};
    rc = store_state_list(db, id, &states, err);
    if (rc != 0) return rc;
    rc = store_corpus_delete(db, c->corpus, err);
    for (size_t i = 0; rc == 0 && i < states.n; i++)
        if (states.states[i].path) unlink(states.states[i].path);
    store_state_list_free(&states);
    if (rc == 0) tomed_engine_forget(tomed_jobs_engine(c->server->jobs), c->corpus);
    return rc;
}

void tomed_route_corpus_delete(tomed_request *r)
{
    if (tomed_require_corpus(r, TOMED_RIGHT_WRITE) != 0) return;
    if (tomed_jobs_corpus_busy(r->server->jobs, r->params[0])) {
        tomed_reply_error_ex(r, 409, TOME_EBUSY, NULL, "corpus '%s' has a job in progress",
                             r->params[0]);
        return;
    }
    tomed_call *c = tomed_call_new(r, delete_corpus, 204);
    if (c) tomed_call_start(c);
}

/* ------------------------------------------------------------------------
 * Ingest
 * ------------------------------------------------------------------------ */

/* The server path with its symbolic links resolved (into `resolved`,
 * TOMED_PATH_MAX bytes), which is what gets ingested: the ingest then opens
 * it without following links, checking each step on its descriptor.  For
 * a peer other than root a failure has the same message as a refusal, so
 * the answer does not tell what exists where the peer may not look. */
static int resolve_server_path(const tomed_peer *peer, const char *path, char *resolved,
                               tome_error *err)
{
    if (realpath(path, resolved)) return 0;
    if (peer->uid == 0) return tome_errorf(err, TOME_ENOTFOUND, "%s: %s", path, strerror(errno));
    return tome_errorf(err, TOME_EPERM, "%s does not exist or uid %u may not read it", path,
                       (unsigned)peer->uid);
}

static json_t *report_json(const ingest_report *rep, tome_error *err)
{
    char *text;
    if (ingest_report_json(rep, &text, err) != 0) return NULL;
    json_t *obj = json_loads(text, 0, NULL);
    free(text);
    if (!obj) tome_errorf(err, TOME_EINTERNAL, "ingest report is not JSON");
    return obj;
}

static int run_ingest(tomed_call *c, store *db, tome_error *err)
{
    const char *source =
        c->upload[0] ? c->upload : json_string_value(json_object_get(c->input, "path"));
    ingest_options opts;
    ingest_options_default(&opts);
    /* A server path is read with the Unix peer's rights, file by file. */
    char who[32];
    snprintf(who, sizeof who, "uid %u", (unsigned)c->peer.uid);
    ingest_access as_peer = {.may = tomed_peer_may_open, .ctx = &c->peer, .who = who};
    if (!c->upload[0] && c->peer.uid != 0) opts.access = &as_peer;
    ingest_report *rep;
    int rc = ingest_run(db, c->corpus, source, &opts, &rep, err);
    if (rc != 0) return rc;
    c->result = report_json(rep, err);
    ingest_report_free(rep);
    /* The temporary file's name means nothing to the client. */
    if (c->result && c->upload[0]) json_object_set_new(c->result, "source", json_string("upload"));
    return c->result ? 0 : err->code;
}

void tomed_route_ingest(tomed_request *r)
{
    if (tomed_require_corpus(r, TOMED_RIGHT_WRITE) != 0) return;
    if (tomed_jobs_corpus_busy(r->server->jobs, r->params[0])) {
        tomed_reply_error_ex(r, 409, TOME_EBUSY, NULL, "corpus '%s' has a job in progress",
                             r->params[0]);
        return;
    }
    json_t *body = NULL;
    if (r->body_fd < 0) {
        if (!(body = tomed_request_json(r))) return;
        const char *path = json_string_value(json_object_get(body, "path"));
        tome_error err = {0};
        if (!path || path[0] != '/') {
            tomed_reply_error(r, TOME_EINVAL,
                              "send an archive as application/octet-stream, or "
                              "{\"path\": \"/absolute/server/path\"}");
            json_decref(body);
            return;
        }
        if (r->peer->transport != TOMED_TRANSPORT_UNIX) {
            tomed_reply_error(r, TOME_EPERM,
                              "server-side paths are accepted on the Unix socket only");
            json_decref(body);
            return;
        }
        char resolved[TOMED_PATH_MAX];
        if (resolve_server_path(r->peer, path, resolved, &err) != 0) {
            tomed_reply_tome_error(r, &err);
            json_decref(body);
            return;
        }
        json_object_set_new(body, "path", json_string(resolved));
    }
    tomed_call *c = tomed_call_new(r, run_ingest, 200);
    if (!c) {
        json_decref(body);
        return;
    }
    c->input = body;
    tomed_log(TOMED_LOG_INFO, "%s ingests into '%s' (%s)", r->principal.name, c->corpus,
              r->body_fd >= 0 ? "upload" : "server path");
    tomed_call_start(c);
}

/* ------------------------------------------------------------------------
 * Search
 * ------------------------------------------------------------------------ */

static int run_search(tomed_call *c, store *db, tome_error *err)
{
    int64_t corpus_id, version_id;
    int rc = store_corpus_find(db, c->corpus, &corpus_id, err);
    if (rc == TOME_ENOTFOUND)
        return tome_errorf(err, TOME_ENOTFOUND, "corpus '%s' does not exist", c->corpus);
    if (rc == 0) rc = store_version_latest(db, corpus_id, &version_id, err);
    if (rc == TOME_ENOTFOUND)
        return tome_errorf(err, TOME_EMISMATCH, "corpus '%s' has nothing ingested", c->corpus);
    if (rc != 0) return rc;
    size_t limit = (size_t)json_integer_value(json_object_get(c->input, "limit"));
    store_hits hits = {0};
    /* One more than asked tells whether the answer was cut short. */
    if (c->regex)
        rc = ingest_grep(db, version_id, c->query, limit + 1, &hits, err);
    else
        rc = store_search(db, version_id, c->query, limit + 1, &hits, err);
    if (rc != 0) {
        store_hits_free(&hits);
        return rc;
    }
    json_t *matches = json_array();
    for (size_t i = 0; i < hits.n && i < limit; i++)
        json_array_append_new(matches,
                              json_pack("{s:s, s:I, s:s}", "path", hits.hits[i].path, "line",
                                        (json_int_t)hits.hits[i].line, "text", hits.hits[i].text));
    c->result = json_pack("{s:o, s:b}", "matches", matches, "truncated", hits.n > limit);
    store_hits_free(&hits);
    return 0;
}

void tomed_route_search(tomed_request *r)
{
    if (tomed_require_corpus(r, TOMED_RIGHT_READ) != 0) return;
    char *q = tomed_query_get(r, "q");
    char *regex = tomed_query_get(r, "regex");
    char *limit_text = tomed_query_get(r, "limit");
    long limit = SEARCH_DEFAULT_LIMIT;
    char *end = NULL;
    if (limit_text) limit = strtol(limit_text, &end, 10);
    if ((!q) == (!regex) || (q && !*q) || (regex && !*regex)) {
        tomed_reply_error(r, TOME_EINVAL, "give exactly one of q=QUERY or regex=PATTERN");
    } else if (limit_text && (*end || limit < 1 || limit > SEARCH_MAX_LIMIT)) {
        tomed_reply_error(r, TOME_EINVAL, "limit must be 1 to %d", SEARCH_MAX_LIMIT);
    } else {
        tomed_call *c = tomed_call_new(r, run_search, 200);
        if (c) {
            c->regex = regex != NULL;
            c->query = regex ? regex : q;
            regex = q = NULL;
            c->input = json_pack("{s:i}", "limit", (int)limit);
            tomed_call_start(c);
        }
    }
    free(q);
    free(regex);
    free(limit_text);
}
