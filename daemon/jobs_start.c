/*
 * jobs_start.c - starting a prefill: the corpus's current version rendered
 * into the document-QA prefix and tokenised on a worker (the slow part, off
 * the loop), requests for the same corpus waiting for that job, and the job
 * queued in the store and handed to the engine.
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

/* Prefixes of earlier versions whose saved states a new prefill may start
 * from, at most. */
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
    /* A state that lives in memory only (its file could not be written)
     * does not count: the job that runs adopts it and saves it. */
    char warm[48] = "";
    if (rc == 1 ||
        (!pc->rewarm && tomed_engine_has_state(e, pc->corpus, pc->version_id, &tokens, warm) &&
         strncmp(warm, "mem-", 4) != 0)) {
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
        /* A render that ends while tomed stops runs here after
         * tomed_jobs_free has let the engine go. */
        pc->rc = pc->jobs->engine ? tomed_engine_submit_prefill(pc->jobs->engine, job, &pc->err)
                                  : tome_errorf(&pc->err, TOME_EBUSY, "tomed is shutting down");
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

tomed_job *jobs_active(const tomed_jobs *j, const char *corpus)
{
    for (tomed_job *job = j->list; job; job = job->next_in_registry)
        if (strcmp(job->corpus, corpus) == 0 && job->status <= STORE_JOB_RUNNING) return job;
    return NULL;
}

int jobs_submit_prefill(tomed_jobs *j, tomed_request *r, const char *corpus, int64_t job_id,
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
    tomed_job *job = jobs_active(j, corpus);
    prefill_call *pending = job ? NULL : rendering_call(j, corpus);
    if (job) {
        tomed_reply_json(r, 200, json_pack("{s:o}", "job", tomed_job_json(job)));
    } else if (pending) {
        if (add_waiter(pending, r) != 0) tomed_reply_error(r, TOME_ENOMEM, "out of memory");
    } else if (!tomed_engine_ready(j->engine, &why)) {
        tomed_reply_error_ex(r, 503, TOME_EBUSY, NULL, "the model is not ready: %s", why);
    } else if (jobs_submit_prefill(j, r, corpus, 0, 0) != 0) {
        tomed_reply_error(r, TOME_ENOMEM, "cannot queue the prefill");
    }
}

void tomed_jobs_rewarm(tomed_jobs *j, const char *corpus)
{
    if (j->server->draining || jobs_active(j, corpus) || rendering_call(j, corpus)) return;
    tomed_log(TOMED_LOG_INFO, "re-warming '%s' on another replica", corpus);
    if (jobs_submit_prefill(j, NULL, corpus, 0, 1) != 0)
        tomed_log(TOMED_LOG_WARN, "cannot queue the re-warm of '%s'", corpus);
}
