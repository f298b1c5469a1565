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
#include "daemon/jobs.h"
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

typedef struct tomed_job_follower {
    tomed_request *r;
    tomed_job *job;
    struct tomed_job_follower *next;
} tomed_job_follower;

struct tomed_jobs {
    tomed_server *server;
    tomed_engine *engine;
    tomed_job *list;                /* newest first */
    struct prefill_call *rendering; /* prefills without a job yet */
    struct event *keepalive;
    int resumed;
};

#define HISTORY_JOBS 100

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

/* ------------------------------------------------------------------------
 * Store rows (on a worker; nobody waits for them)
 * ------------------------------------------------------------------------ */

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

/* ------------------------------------------------------------------------
 * Followers
 * ------------------------------------------------------------------------ */

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

/* ------------------------------------------------------------------------
 * Reports from the engine (loop thread)
 * ------------------------------------------------------------------------ */

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

/* ------------------------------------------------------------------------
 * Starting a prefill
 * ------------------------------------------------------------------------ */

#define MAX_PREFIX_STATES 8

/* A request for a prefill that was already being rendered. */
typedef struct prefill_waiter {
    tomed_request *r; /* NULL once the client is gone */
    struct prefill_waiter *next;
} prefill_waiter;

typedef struct prefill_call {
    tomed_jobs *jobs;
    struct prefill_call *next_rendering; /* tomed_jobs.rendering */
    prefill_waiter *waiters;
    char (*prefixes)[TOMED_PATH_MAX];
    int n_prefixes;
    tomed_request *r; /* NULL for a resumed job, or once the client is gone */
    char corpus[TOMED_NAME_MAX + 1];
    int64_t job_id; /* a resumed job's id, else filled by the worker */
    int64_t version_id, version_number;
    int32_t *ids;
    size_t n_ids;
    int already_cached;
    int rewarm; /* a remote engine's: prefill even when it has the state */
    int rc;
    tome_error err;
} prefill_call;

static int render_prefix(prefill_call *pc, store *db, tome_error *err)
{
    int64_t corpus_id;
    int rc = store_corpus_find(db, pc->corpus, &corpus_id, err);
    if (rc == TOME_ENOTFOUND)
        return tome_errorf(err, TOME_ENOTFOUND, "corpus '%s' does not exist", pc->corpus);
    if (rc == 0) rc = store_version_latest(db, corpus_id, &pc->version_id, err);
    if (rc == TOME_ENOTFOUND)
        return tome_errorf(err, TOME_EMISMATCH, "corpus '%s' has nothing ingested", pc->corpus);
    if (rc == 0) rc = store_version_number(db, pc->version_id, &pc->version_number, err);
    if (rc != 0) return rc;
    tomed_engine *e = pc->jobs->engine;
    const char *fingerprint = tomed_engine_state_fingerprint(e);
    char path[TOMED_PATH_MAX], id[32];
    int64_t tokens = 0;
    if (!fingerprint) return tome_errorf(err, TOME_EBUSY, "the model is not loaded");
    rc = tomed_saved_state(db, corpus_id, pc->version_id, fingerprint, path, id, &tokens, err);
    if (rc < 0) return rc;
    if (rc == 1 ||
        (!pc->rewarm && tomed_engine_has_state(e, pc->corpus, pc->version_id, &tokens, NULL))) {
        rc = 0;
        pc->already_cached = 1;
        pc->n_ids = (size_t)tokens;
    } else {
        ingest_render_options opts;
        ingest_render_options_default(&opts);
        opts.tokenizer = tomed_engine_tokenizer(e, &opts.tokenizer_fingerprint);
        if (!opts.tokenizer) return tome_errorf(err, TOME_EBUSY, "the model is not loaded");
        ingest_rendering *rendering;
        rc = ingest_render(db, pc->version_id, &opts, &rendering, err);
        if (rc != 0) return rc;
        pc->n_ids = (size_t)rendering->ctx.token_count;
        pc->ids = malloc((pc->n_ids ? pc->n_ids : 1) * sizeof *pc->ids);
        if (pc->ids && pc->n_ids)
            memcpy(pc->ids, rendering->ctx.token_ids, pc->n_ids * sizeof *pc->ids);
        ingest_rendering_free(rendering);
        if (!pc->ids)
            return tome_errorf(err, TOME_ENOMEM, "out of memory for %zu token ids", pc->n_ids);
        pc->prefixes = calloc(MAX_PREFIX_STATES, sizeof *pc->prefixes);
        if (!pc->prefixes) return tome_errorf(err, TOME_ENOMEM, "out of memory");
        rc = tomed_saved_states(db, corpus_id, fingerprint, pc->prefixes, MAX_PREFIX_STATES, err);
        if (rc < 0) return rc;
        pc->n_prefixes = rc;
        rc = 0;
    }
    if (pc->job_id == 0) rc = store_job_add(db, "prefill", corpus_id, &pc->job_id, err);
    if (rc == 0 && pc->already_cached)
        rc = store_job_set_state(db, pc->job_id, STORE_JOB_DONE, NULL, err);
    return rc;
}

static void prefill_work(void *arg)
{
    prefill_call *pc = arg;
    store *db;
    pc->rc = tomed_thread_store(pc->jobs->server->cfg.state_dir, &db, &pc->err);
    if (pc->rc == 0) pc->rc = render_prefix(pc, db, &pc->err);
}

static void prefill_aborted(tomed_request *r, void *arg)
{
    prefill_call *pc = arg;
    pc->r = NULL;
}

static void waiter_aborted(tomed_request *r, void *arg)
{
    prefill_waiter *w = arg;
    w->r = NULL;
}

/* The prefill of `corpus` being rendered, if any. */
static prefill_call *rendering_call(const tomed_jobs *j, const char *corpus)
{
    for (prefill_call *pc = j->rendering; pc; pc = pc->next_rendering)
        if (strcmp(pc->corpus, corpus) == 0) return pc;
    return NULL;
}

static void stop_rendering(prefill_call *pc)
{
    prefill_call **p = &pc->jobs->rendering;
    while (*p && *p != pc) p = &(*p)->next_rendering;
    if (*p) *p = pc->next_rendering;
}

/* Makes `r` wait for the job that `pc` will create; 0, or TOME_ENOMEM. */
static int add_waiter(prefill_call *pc, tomed_request *r)
{
    prefill_waiter *w = calloc(1, sizeof *w);
    if (!w) return TOME_ENOMEM;
    w->r = r;
    w->next = pc->waiters;
    pc->waiters = w;
    r->on_abort = waiter_aborted;
    r->abort_arg = w;
    return 0;
}

/* The waiters get what the first request got, but as 200: the job exists. */
static void answer_waiters(prefill_call *pc, const tomed_job *job)
{
    while (pc->waiters) {
        prefill_waiter *w = pc->waiters;
        pc->waiters = w->next;
        if (w->r) {
            w->r->on_abort = NULL;
            if (pc->rc != 0)
                tomed_reply_tome_error(w->r, &pc->err);
            else
                tomed_reply_json(w->r, 200, json_pack("{s:o}", "job", tomed_job_json(job)));
        }
        free(w);
    }
}

static tomed_job *job_new(tomed_jobs *j, prefill_call *pc)
{
    tomed_job *job = calloc(1, sizeof *job);
    if (!job) return NULL;
    job->id = pc->job_id;
    snprintf(job->corpus, sizeof job->corpus, "%s", pc->corpus);
    job->version_id = pc->version_id;
    job->version_number = pc->version_number;
    job->ids = pc->ids;
    job->n_ids = pc->n_ids;
    pc->ids = NULL;
    job->prefixes = pc->prefixes;
    job->n_prefixes = pc->n_prefixes;
    pc->prefixes = NULL;
    job->created_at = time(NULL);
    job->status = STORE_JOB_QUEUED;
    job->next_in_registry = j->list;
    j->list = job;
    return job;
}

static void prefill_done(void *arg)
{
    prefill_call *pc = arg;
    tomed_request *r = pc->r;
    if (r) r->on_abort = NULL;
    stop_rendering(pc);
    tomed_job *job = NULL;
    if (pc->rc == 0) job = job_new(pc->jobs, pc);
    if (pc->rc == 0 && !job) pc->rc = tome_errorf(&pc->err, TOME_ENOMEM, "out of memory");
    if (job && pc->already_cached) {
        job->status = STORE_JOB_DONE;
        job->started_at = job->finished_at = job->created_at;
        atomic_store(&job->tokens_done, (int64_t)job->n_ids);
    } else if (job) {
        job->running_in_engine = 1;
        pc->rc = tomed_engine_submit_prefill(pc->jobs->engine, job, &pc->err);
        if (pc->rc != 0) {
            job->running_in_engine = 0;
            job->status = STORE_JOB_FAILED;
            job->rc = pc->rc;
            job->err = pc->err;
        }
    }
    if (r) {
        if (pc->rc != 0)
            tomed_reply_tome_error(r, &pc->err);
        else
            tomed_reply_json(r, pc->already_cached ? 200 : 202,
                             json_pack("{s:o}", "job", tomed_job_json(job)));
    } else if (pc->rc != 0) {
        tomed_log(TOMED_LOG_WARN, "prefill of '%s': %s", pc->corpus, pc->err.msg);
    }
    answer_waiters(pc, job);
    free(pc->ids);
    free(pc->prefixes);
    free(pc);
}

static tomed_job *active_job(const tomed_jobs *j, const char *corpus)
{
    for (tomed_job *job = j->list; job; job = job->next_in_registry)
        if (strcmp(job->corpus, corpus) == 0 && job->status <= STORE_JOB_RUNNING) return job;
    return NULL;
}

static int submit_prefill(tomed_jobs *j, tomed_request *r, const char *corpus, int64_t job_id,
                          int rewarm)
{
    prefill_call *pc = calloc(1, sizeof *pc);
    if (!pc) return TOME_ENOMEM;
    pc->jobs = j;
    pc->r = r;
    pc->job_id = job_id;
    pc->rewarm = rewarm;
    snprintf(pc->corpus, sizeof pc->corpus, "%s", corpus);
    if (r) {
        r->on_abort = prefill_aborted;
        r->abort_arg = pc;
    }
    if (tomed_pool_submit(j->server->pool, prefill_work, prefill_done, pc) != 0) {
        if (r) r->on_abort = NULL;
        free(pc);
        return TOME_ENOMEM;
    }
    /* Registered on the loop thread before it can run prefill_done: no
     * second request slips in while the corpus has no job yet. */
    pc->next_rendering = j->rendering;
    j->rendering = pc;
    return 0;
}

void tomed_jobs_start_prefill(tomed_jobs *j, tomed_request *r, const char *corpus)
{
    const char *why = NULL;
    tomed_job *job = active_job(j, corpus);
    prefill_call *pending = job ? NULL : rendering_call(j, corpus);
    if (job) {
        tomed_reply_json(r, 200, json_pack("{s:o}", "job", tomed_job_json(job)));
    } else if (pending) {
        if (add_waiter(pending, r) != 0) tomed_reply_error(r, TOME_ENOMEM, "out of memory");
    } else if (!tomed_engine_ready(j->engine, &why)) {
        tomed_reply_error_ex(r, 503, TOME_EBUSY, NULL, "the model is not ready: %s", why);
    } else if (submit_prefill(j, r, corpus, 0, 0) != 0) {
        tomed_reply_error(r, TOME_ENOMEM, "cannot queue the prefill");
    }
}

void tomed_jobs_rewarm(tomed_jobs *j, const char *corpus)
{
    if (j->server->draining || active_job(j, corpus) || rendering_call(j, corpus)) return;
    tomed_log(TOMED_LOG_INFO, "re-warming '%s' on another replica", corpus);
    if (submit_prefill(j, NULL, corpus, 0, 1) != 0)
        tomed_log(TOMED_LOG_WARN, "cannot queue the re-warm of '%s'", corpus);
}

/* ------------------------------------------------------------------------
 * Resuming after a restart
 * ------------------------------------------------------------------------ */

typedef struct resume_call {
    tomed_jobs *jobs;
    int64_t *ids;
    size_t n;
    char (*corpora)[TOMED_NAME_MAX + 1];
    int rc;
    tome_error err;
} resume_call;

/* The corpus of each unfinished job; a job whose corpus is gone is left
 * with an empty name and failed by resume_done. */
static void resume_work(void *arg)
{
    resume_call *rc = arg;
    store *db;
    rc->rc = tomed_thread_store(rc->jobs->server->cfg.state_dir, &db, &rc->err);
    if (rc->rc == 0) rc->rc = store_job_list_unfinished(db, "prefill", &rc->ids, &rc->n, &rc->err);
    if (rc->rc != 0 || rc->n == 0) return;
    rc->corpora = calloc(rc->n, sizeof *rc->corpora);
    for (size_t i = 0; rc->corpora && i < rc->n; i++) {
        store_job job;
        char *name = NULL;
        if (store_job_get(db, rc->ids[i], &job, &rc->err) != 0) continue;
        if (job.corpus_id && store_corpus_name(db, job.corpus_id, &name, &rc->err) == 0)
            snprintf(rc->corpora[i], sizeof rc->corpora[i], "%s", name);
        else
            store_job_set_state(db, rc->ids[i], STORE_JOB_FAILED, "its corpus was deleted",
                                &rc->err);
        free(name);
        store_job_clear(&job);
    }
}

static void resume_done(void *arg)
{
    resume_call *rc = arg;
    if (rc->rc != 0) tomed_log(TOMED_LOG_ERROR, "cannot list unfinished jobs: %s", rc->err.msg);
    for (size_t i = 0; i < rc->n; i++) {
        if (!rc->corpora || !rc->corpora[i][0]) continue;
        tomed_log(TOMED_LOG_INFO, "resuming job %lld (prefill of '%s')", (long long)rc->ids[i],
                  rc->corpora[i]);
        submit_prefill(rc->jobs, NULL, rc->corpora[i], rc->ids[i], 0);
    }
    free(rc->ids);
    free(rc->corpora);
    free(rc);
}

void tomed_jobs_model_settled(void *server)
{
    tomed_jobs *j = ((tomed_server *)server)->jobs;
    if (!j) return;
    const char *model, *why = "";
    int ready = tomed_jobs_model_ready(j, &model, &why);
    if (j->server->cfg.foreground) {
        if (ready)
            fputs("tomed ready\n", stderr);
        else
            fprintf(stderr, "tomed not ready: %s\n", why);
    }
    if (!ready || j->resumed || j->server->draining) return;
    j->resumed = 1;
    resume_call *rc = calloc(1, sizeof *rc);
    if (!rc) return;
    rc->jobs = j;
    if (tomed_pool_submit(j->server->pool, resume_work, resume_done, rc) != 0) free(rc);
}

/* ------------------------------------------------------------------------
 * Finished jobs of earlier runs
 * ------------------------------------------------------------------------ */

typedef struct history_call {
    tomed_jobs *jobs;
    tomed_job **found; /* newest first */
    size_t n;
} history_call;

/* A registry entry for a finished job's row (its corpus's name is empty
 * when the corpus was deleted since). */
static tomed_job *job_from_row(store *db, const store_job *row)
{
    tomed_job *job = calloc(1, sizeof *job);
    if (!job) return NULL;
    char *name = NULL;
    tome_error ignored;
    if (row->corpus_id && store_corpus_name(db, row->corpus_id, &name, &ignored) == 0)
        snprintf(job->corpus, sizeof job->corpus, "%s", name);
    free(name);
    job->id = row->id;
    job->status = (int)row->state;
    job->n_ids = (size_t)row->total;
    atomic_store(&job->tokens_done, row->done);
    job->created_at = row->created_at;
    job->started_at = row->started_at;
    job->finished_at = row->finished_at;
    job->rc = row->state == STORE_JOB_CANCELED ? TOME_ECANCELED
              : row->state == STORE_JOB_FAILED ? TOME_EINTERNAL
                                               : 0;
    if (row->error) snprintf(job->err.msg, sizeof job->err.msg, "%s", row->error);
    return job;
}

static void history_work(void *arg)
{
    history_call *hc = arg;
    store *db;
    tome_error err = {0};
    int64_t *ids = NULL;
    size_t n = 0;
    int rc = tomed_thread_store(hc->jobs->server->cfg.state_dir, &db, &err);
    if (rc == 0) rc = store_job_list_finished(db, "prefill", HISTORY_JOBS, &ids, &n, &err);
    if (rc == 0 && n && !(hc->found = calloc(n, sizeof *hc->found)))
        rc = tome_errorf(&err, TOME_ENOMEM, "out of memory listing earlier jobs");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        store_job row;
        if (store_job_get(db, ids[i], &row, &err) != 0) continue;
        if ((hc->found[hc->n] = job_from_row(db, &row))) hc->n++;
        store_job_clear(&row);
    }
    if (rc != 0) tomed_log(TOMED_LOG_WARN, "cannot list earlier jobs: %s", err.msg);
    free(ids);
}

/* On the loop thread: the earlier jobs go after every job of this run. */
static void history_done(void *arg)
{
    history_call *hc = arg;
    tomed_job **tail = &hc->jobs->list;
    while (*tail) tail = &(*tail)->next_in_registry;
    for (size_t i = 0; i < hc->n; i++) {
        *tail = hc->found[i];
        tail = &hc->found[i]->next_in_registry;
    }
    free(hc->found);
    free(hc);
}

static void load_history(tomed_jobs *j)
{
    history_call *hc = calloc(1, sizeof *hc);
    if (!hc) return;
    hc->jobs = j;
    if (tomed_pool_submit(j->server->pool, history_work, history_done, hc) != 0) free(hc);
}

/* ------------------------------------------------------------------------
 * The registry
 * ------------------------------------------------------------------------ */

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
    load_history(j);
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
    return active_job(j, corpus) != NULL;
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
