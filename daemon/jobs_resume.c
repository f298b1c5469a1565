/*
 * jobs_resume.c - jobs after a restart: the unfinished ones run again under
 * their ids once the model has settled, and the newest finished ones read
 * back so that GET /v1/jobs is not empty.
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
        jobs_submit_prefill(rc->jobs, NULL, rc->corpora[i], rc->ids[i], 0);
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

void jobs_load_history(tomed_jobs *j)
{
    history_call *hc = calloc(1, sizeof *hc);
    if (!hc) return;
    hc->jobs = j;
    if (tomed_pool_submit(j->server->pool, history_work, history_done, hc) != 0) free(hc);
}
