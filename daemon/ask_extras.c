/*
 * ask_extras.c - what an answer carries beside its text: the citations in
 * it, checked against the corpus version the state was made from, and the
 * corpus passages that match the question (its sources).
 *
 * Both read the store, so both run on a worker thread with that thread's
 * store handle (routes_ask.c submits them; sources start with the question
 * and are ready long before the answer).  A lookup that fails costs the
 * answer its extras, never the answer: the failure is logged and the list
 * is empty.
 */
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/storecall.h"

#include "ingest/ingest.h"

#define MAX_SOURCES 5

static json_t *citation_json(const ingest_citation *c)
{
    return json_pack("{s:s, s:I, s:I, s:b, s:s?}", "path", c->path, "line", (json_int_t)c->line,
                     "end_line", (json_int_t)c->end_line, "exists", c->exists, "text", c->text);
}

json_t *tomed_citations_json(const char *state_dir, int64_t version_id, const char *answer)
{
    json_t *out = json_array();
    store *db;
    ingest_citations c;
    tome_error err = {0};
    if (tomed_thread_store(state_dir, &db, &err) != 0 ||
        ingest_cite(db, version_id, answer, &c, &err) != 0) {
        tomed_log(TOMED_LOG_WARN, "citations: %s", err.msg);
        return out;
    }
    for (size_t i = 0; i < c.n; i++) json_array_append_new(out, citation_json(&c.items[i]));
    ingest_citations_free(&c);
    return out;
}

json_t *tomed_sources_json(const char *state_dir, int64_t version_id, const char *question)
{
    json_t *out = json_array();
    store *db;
    store_hits h;
    tome_error err = {0};
    if (tomed_thread_store(state_dir, &db, &err) != 0 ||
        ingest_sources(db, version_id, question, MAX_SOURCES, &h, &err) != 0) {
        tomed_log(TOMED_LOG_WARN, "sources: %s", err.msg);
        return out;
    }
    for (size_t i = 0; i < h.n; i++)
        json_array_append_new(out, json_pack("{s:s, s:I, s:s, s:f}", "path", h.hits[i].path, "line",
                                             (json_int_t)h.hits[i].line, "snippet", h.hits[i].text,
                                             "score", h.hits[i].score));
    store_hits_free(&h);
    return out;
}
