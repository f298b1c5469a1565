/*
 * jobs.c - prefill jobs: the registry, their rows in the store, their
 * followers, and picking them up again after a restart.
 *
 * A job is born on the loop thread when a client asks for a prefill: a
 * worker renders the corpus's current version into the V4 document-QA
 * prefix and tokenises it (ingest_render; the slow part, off the loop),
 * the store records a
 * queued job, and the engine executor gets it.  The engine reports progress
 * and the end through tomed_post(); both land here, update the store (on a
 * worker, fire and forget) and are sent to every client following the job
 * as Server-Sent Events, with keepalive comments in between so that
 * proxies do not cut a long prefill's stream.
 *
 * One prefill per corpus at a time: a request for a corpus whose prefill
 * is still being rendered (it has no job yet; rendering takes a while)
 * waits for that job and is answered 200 with it, like one that comes once
 * the job is queued or running.  Only the request that started it gets 202.
 *
 * A job interrupted by a shutdown is put back to `queued` in the store;
 * when the next daemon has its model loaded it lists the unfinished jobs
 * and runs them again, under the same ids.  The finished ones of earlier
 * runs (the newest HISTORY_JOBS) are read back at start, so that a restart
 * does not empty GET /v1/jobs.
 */
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/http.h"
#include "daemon/jobs_internal.h"
#include "daemon/log.h"
#include "daemon/server.h"
#include "daemon/storecall.h"
#include "daemon/types.h"
#include "daemon/workers.h"

#include "ingest/ingest.h"
#include "store/store.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const status_names[] = {"queued", "running", "done", "failed", "canceled"};

static tomed_jobs *registry; /* the engine's reports carry only the job */

/* ------------------------------------------------------------------------
 * JSON
 * ------------------------------------------------------------------------ */

static json_t *time_or_null(int64_t t)
{
    if (!t) return json_null();
    char text[32];
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(text);
}

json_t *tomed_job_json(const tomed_job *job)
{
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)job->id);
    int64_t done = atomic_load(&job->tokens_done);
    double rate = atomic_load(&job->tokens_per_s);
    int64_t total = (int64_t)job->n_ids;
    json_t *eta = job->status == STORE_JOB_RUNNING && rate > 0
                      ? json_real((double)(total - done) / rate)
                      : json_null();
    /* A job of an earlier run read back from the store has no version. */
    json_t *version = job->version_number ? json_integer(job->version_number) : json_null();
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:o, s:s, s:I, s:I, s:f, s:o, s:I, s:o, s:o, s:o}", "id", id, "kind",
        "prefill", "corpus", job->corpus, "version", version, "status", status_names[job->status],
        "tokens_done", (json_int_t)done, "tokens_total", (json_int_t)total, "tokens_per_s", rate,
        "eta_s", eta, "restart_point", (json_int_t)atomic_load(&job->restart_point), "created_at",
        time_or_null(job->created_at), "started_at", time_or_null(job->started_at), "finished_at",
        time_or_null(job->finished_at));
    if (job->status == STORE_JOB_DONE)
        json_object_set_new(o, "state", json_pack("{s:I}", "tokens", (json_int_t)total));
    else
        json_object_set_new(o, "state", json_null());
    if (job->status == STORE_JOB_FAILED || job->status == STORE_JOB_CANCELED)
        json_object_set_new(
            o, "error",
            json_pack("{s:s, s:s}", "code", tome_error_name(job->rc), "message", job->err.msg));
    else
        json_object_set_new(o, "error", json_null());
    return o;
}

typedef struct row_update {
    tomed_server *server;
    int64_t id;
    int state; /* -1: progress only */
    int64_t done, total;
    char error[TOME_ERROR_MAX];
} row_update;

static void write_row(void *arg)
{
    row_update *u = arg;
    store *db;
    tome_error err = {0};
    int rc = tomed_thread_store(u->server->cfg.state_dir, &db, &err);
    if (rc == 0) rc = store_job_progress(db, u->id, u->done, u->total, &err);
    if (rc == 0 && u->state >= 0)
        rc = store_job_set_state(db, u->id, (store_job_state)u->state,
                                 u->error[0] ? u->error : NULL, &err);
    if (rc != 0) tomed_log(TOMED_LOG_WARN, "job %lld: %s", (long long)u->id, err.msg);
    free(u);
}

static void update_row(tomed_job *job, int state)
{
    row_update *u = calloc(1, sizeof *u);
    if (!u) return;
    u->server = registry->server;
    u->id = job->id;
    u->state = state;
    u->done = atomic_load(&job->tokens_done);
    u->total = (int64_t)job->n_ids;
    if (state == STORE_JOB_FAILED || state == STORE_JOB_CANCELED)
        snprintf(u->error, sizeof u->error, "%s", job->err.msg);
    if (tomed_pool_submit(registry->server->pool, write_row, NULL, u) != 0) free(u);
}

static void follower_aborted(tomed_request *r, void *arg)
{
    tomed_job_follower *f = arg;
    tomed_job_follower **p = &f->job->followers;
    while (*p && *p != f) p = &(*p)->next;
    if (*p) *p = f->next;
    free(f);
}

static void notify(tomed_job *job, const char *event, int last)
{
    tomed_job_follower *f = job->followers;
    if (last) job->followers = NULL;
    while (f) {
        tomed_job_follower *next = f->next;
        tomed_stream_event(f->r, event, tomed_job_json(job));
        if (last) {
            f->r->on_abort = NULL;
            tomed_stream_end(f->r);
            free(f);
        }
        f = next;
    }
}

static void send_keepalives(evutil_socket_t fd, short what, void *arg)
{
    tomed_jobs *j = arg;
    for (tomed_job *job = j->list; job; job = job->next_in_registry)
        for (tomed_job_follower *f = job->followers; f; f = f->next)
            tomed_stream_comment(f->r, "keepalive");
}

void tomed_jobs_follow(tomed_jobs *j, tomed_job *job, tomed_request *r)
{
    tomed_stream_begin(r, 200, "text/event-stream");
    int finished = job->status >= STORE_JOB_DONE;
    const char *event = job->status == STORE_JOB_DONE       ? "done"
                        : job->status == STORE_JOB_FAILED   ? "error"
                        : job->status == STORE_JOB_CANCELED ? "canceled"
                                                            : "progress";
    tomed_stream_event(r, event, tomed_job_json(job));
    if (finished) {
        tomed_stream_end(r);
        return;
    }
    tomed_job_follower *f = calloc(1, sizeof *f);
    if (!f) {
        tomed_stream_end(r);
        return;
    }
    f->r = r;
    f->job = job;
    f->next = job->followers;
    job->followers = f;
    r->on_abort = follower_aborted;
    r->abort_arg = f;
}

void tomed_job_progress(void *arg)
{
    tomed_job *job = arg;
    if (job->status == STORE_JOB_QUEUED) {
        job->status = STORE_JOB_RUNNING;
        job->started_at = time(NULL);
        update_row(job, STORE_JOB_RUNNING);
    } else {
        update_row(job, -1);
    }
    notify(job, "progress", 0);
}

void tomed_job_finished(void *arg)
{
    tomed_job *job = arg;
    int interrupted = job->rc == TOME_ECANCELED && atomic_load(&job->cancel) == 2;
    if (!job->started_at) job->started_at = time(NULL);
    job->finished_at = time(NULL);
    if (interrupted) {
        /* Not the job's end: the next daemon runs it again. */
        job->status = STORE_JOB_CANCELED;
        update_row(job, STORE_JOB_QUEUED);
        tomed_log(TOMED_LOG_INFO, "job %lld interrupted at token %lld; it resumes at next start",
                  (long long)job->id, (long long)atomic_load(&job->tokens_done));
    } else {
        job->status = job->rc == 0                ? STORE_JOB_DONE
                      : job->rc == TOME_ECANCELED ? STORE_JOB_CANCELED
                                                  : STORE_JOB_FAILED;
        update_row(job, job->status);
        tomed_log(job->rc == 0 ? TOMED_LOG_INFO : TOMED_LOG_WARN, "job %lld %s: %s",
                  (long long)job->id, status_names[job->status],
                  job->rc == 0 ? "prefill complete" : job->err.msg);
    }
    notify(job,
           job->status == STORE_JOB_DONE     ? "done"
           : job->status == STORE_JOB_FAILED ? "error"
                                             : "canceled",
           1);
    free(job->ids);
    job->ids = NULL;
    free(job->prefixes);
    job->prefixes = NULL;
    job->n_prefixes = 0;
    job->running_in_engine = 0;
}

int tomed_jobs_new(tomed_server *s, tomed_jobs **out, tome_error *err)
{
    tomed_jobs *j = calloc(1, sizeof *j);
    if (!j) return tome_errorf(err, TOME_ENOMEM, "jobs");
    j->server = s;
    registry = j;
    j->keepalive = event_new(s->base, -1, EV_PERSIST, send_keepalives, j);
    struct timeval tv = {s->cfg.keepalive_interval_s, 0};
    if (!j->keepalive || event_add(j->keepalive, &tv) != 0) {
        tomed_jobs_free(j);
        return tome_errorf(err, TOME_ENOMEM, "keepalive timer");
    }
    int rc = tomed_engine_start(s, &j->engine, err);
    if (rc != 0) {
        tomed_jobs_free(j);
        return rc;
    }
    jobs_load_history(j);
    *out = j;
    return 0;
}

void tomed_jobs_free(tomed_jobs *j)
{
    if (!j) return;
    /* The engine's last reports (interrupted jobs) are posted to the pool
     * and run when main frees it; the jobs must outlive that. */
    tomed_engine_stop(j->engine);
    j->engine = NULL;
    if (j->keepalive) event_free(j->keepalive);
    j->keepalive = NULL;
}

void tomed_jobs_release(tomed_jobs *j)
{
    if (!j) return;
    while (j->list) {
        tomed_job *next = j->list->next_in_registry;
        free(j->list->ids);
        free(j->list->prefixes);
        free(j->list);
        j->list = next;
    }
    free(j);
    registry = NULL;
}

void tomed_jobs_drain(tomed_jobs *j)
{
    for (tomed_job *job = j->list; job; job = job->next_in_registry)
        if (job->status <= STORE_JOB_RUNNING) atomic_store(&job->cancel, 2);
}

int tomed_jobs_busy(const tomed_jobs *j)
{
    for (const tomed_job *job = j->list; job; job = job->next_in_registry)
        if (job->running_in_engine) return 1;
    return 0;
}

void tomed_jobs_count(const tomed_jobs *j, int by_state[5])
{
    memset(by_state, 0, 5 * sizeof *by_state);
    for (const tomed_job *job = j->list; job; job = job->next_in_registry) by_state[job->status]++;
}

int tomed_jobs_model_ready(const tomed_jobs *j, const char **model, const char **why)
{
    *model = j->server->cfg.model;
    return tomed_engine_ready(j->engine, why);
}

int tomed_jobs_corpus_busy(const tomed_jobs *j, const char *corpus)
{
    return jobs_active(j, corpus) != NULL;
}

tomed_engine *tomed_jobs_engine(const tomed_jobs *j)
{
    return j->engine;
}

tomed_job *tomed_jobs_find(const tomed_jobs *j, const char *id)
{
    char *end;
    long long n = strtoll(id, &end, 10);
    if (*end || end == id) return NULL;
    for (tomed_job *job = j->list; job; job = job->next_in_registry)
        if (job->id == n) return job;
    return NULL;
}

json_t *tomed_jobs_list(const tomed_jobs *j, const tomed_principal *p)
{
    json_t *list = json_array();
    for (const tomed_job *job = j->list; job; job = job->next_in_registry)
        if (tomed_principal_can(p, job->corpus, TOMED_RIGHT_READ))
            json_array_append_new(list, tomed_job_json(job));
    return list;
}

int tomed_jobs_cancel(tomed_jobs *j, tomed_job *job, tome_error *err)
{
    if (job->status > STORE_JOB_RUNNING)
        return tome_errorf(err, TOME_EMISMATCH, "job %lld has finished (%s)", (long long)job->id,
                           status_names[job->status]);
    atomic_store(&job->cancel, 1);
    return 0;
}
