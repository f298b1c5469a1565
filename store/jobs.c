/*
 * jobs.c - the daemon's background jobs (ingest, prefill, ...) as rows.
 *
 * A job row lets a client follow work it started after its connection is
 * gone, and lets a restarted daemon say what happened to work that was
 * running when it died (store_job_fail_unfinished) instead of leaving it
 * "running" forever.  Progress is in the job's own unit (entries, tokens).
 */
#include "store/store-internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const job_names[] = {"queued", "running", "done", "failed", "canceled"};

const char *store_job_state_name(store_job_state st)
{
    return (unsigned)st < 5 ? job_names[st] : "unknown";
}

static store_job_state job_state_from_name(const char *name)
{
    for (int i = 0; i < 5; i++)
        if (name && strcmp(name, job_names[i]) == 0) return (store_job_state)i;
    return STORE_JOB_FAILED;
}

int store_job_add(store *s, const char *kind, int64_t corpus_id, int64_t *id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "INSERT INTO jobs(kind, corpus_id, state, created_at)"
                           " VALUES (?1, ?2, 'queued', ?3)",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    store_bind_id(st, 2, corpus_id);
    sqlite3_bind_int64(st, 3, store_clock());
    rc = store_step_done(s, st, err, "adding a job");
    if (rc) return tome_error_wrap(err, "%s job", kind);
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_job_set_state(store *s, int64_t id, store_job_state state, const char *error,
                        tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "UPDATE jobs SET state = ?2, error = coalesce(?3, error),"
                           " started_at = CASE WHEN ?2 = 'running' THEN ?4 ELSE started_at END,"
                           " finished_at = CASE WHEN ?2 IN ('done', 'failed', 'canceled')"
                           "   THEN ?4 ELSE finished_at END"
                           " WHERE id = ?1",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, store_job_state_name(state), -1, SQLITE_STATIC);
    store_bind_text(st, 3, error);
    sqlite3_bind_int64(st, 4, store_clock());
    return store_step_one(s, st, id, err, "changing a job's state");
}

int store_job_progress(store *s, int64_t id, int64_t done, int64_t total, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s, "UPDATE jobs SET done = ?2, total = ?3 WHERE id = ?1", &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, done);
    sqlite3_bind_int64(st, 3, total);
    return store_step_one(s, st, id, err, "recording a job's progress");
}

int store_job_get(store *s, int64_t id, store_job *job, tome_error *err)
{
    memset(job, 0, sizeof *job);
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT kind, coalesce(corpus_id, 0), state, done, total, error,"
                           " created_at, coalesce(started_at, 0), coalesce(finished_at, 0)"
                           " FROM jobs WHERE id = ?1",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    int oom = 0;
    if (rc == SQLITE_ROW) {
        job->id = id;
        job->kind = store_column_strdup(st, 0, &oom);
        job->corpus_id = sqlite3_column_int64(st, 1);
        job->state = job_state_from_name((const char *)sqlite3_column_text(st, 2));
        job->done = sqlite3_column_int64(st, 3);
        job->total = sqlite3_column_int64(st, 4);
        job->error = store_column_strdup(st, 5, &oom);
        job->created_at = sqlite3_column_int64(st, 6);
        job->started_at = sqlite3_column_int64(st, 7);
        job->finished_at = sqlite3_column_int64(st, 8);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: no job #%lld", s->path, (long long)id);
    if (rc != SQLITE_ROW) return store_fail(s, rc, err, "reading job #%lld", (long long)id);
    if (oom) {
        store_job_clear(job);
        return tome_errorf(err, TOME_ENOMEM, "%s: out of memory reading job #%lld", s->path,
                           (long long)id);
    }
    return 0;
}

void store_job_clear(store_job *job)
{
    free(job->kind);
    free(job->error);
    memset(job, 0, sizeof *job);
}

int store_job_fail_unfinished(store *s, const char *reason, int64_t *n, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "UPDATE jobs SET state = 'failed', error = ?1, finished_at = ?2"
                           " WHERE state IN ('queued', 'running')",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, store_clock());
    rc = store_step_done(s, st, err, "failing unfinished jobs");
    if (!rc && n) *n = sqlite3_changes(s->db);
    return rc;
}

/* The ids `sql` selects, given the kind as ?1 and a row limit as ?2. */
static int list_job_ids(store *s, const char *sql, const char *kind, int64_t limit, int64_t **ids,
                        size_t *n, tome_error *err)
{
    *ids = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = store_prepare(s, sql, &st, err);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, limit);
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *grown = realloc(*ids, cap * sizeof *grown);
            if (!grown) {
                sqlite3_finalize(st);
                free(*ids);
                *ids = NULL;
                *n = 0;
                return tome_errorf(err, TOME_ENOMEM, "%s: out of memory listing jobs", s->path);
            }
            *ids = grown;
        }
        (*ids)[(*n)++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) return 0;
    free(*ids);
    *ids = NULL;
    *n = 0;
    return store_fail(s, rc, err, "listing %s jobs", kind);
}

int store_job_list_unfinished(store *s, const char *kind, int64_t **ids, size_t *n, tome_error *err)
{
    return list_job_ids(s,
                        "SELECT id FROM jobs WHERE kind = ?1 AND state IN ('queued', 'running')"
                        " ORDER BY id LIMIT ?2",
                        kind, -1, ids, n, err);
}

int store_job_list_finished(store *s, const char *kind, int64_t max, int64_t **ids, size_t *n,
                            tome_error *err)
{
    return list_job_ids(s,
                        "SELECT id FROM jobs WHERE kind = ?1"
                        " AND state IN ('done', 'failed', 'canceled') ORDER BY id DESC LIMIT ?2",
                        kind, max, ids, n, err);
}
