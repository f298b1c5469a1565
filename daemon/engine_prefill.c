/*
 * engine_prefill.c - prefill jobs on the engine thread, one chunk per
 * round of the executor's loop (so questions keep running during a long
 * prefill), with progress posted at most once a second and restart points
 * saved on the way.
 */
#include "daemon/engine_internal.h"

#include "common/fault.h"

#include <stdio.h>
#include <unistd.h>

#define PROGRESS_INTERVAL_S 1.0

void engine_report_job(engine_local *e, tomed_job *job, int final)
{
    tomed_post(e->server->pool, final ? tomed_job_finished : tomed_job_progress, job);
}

void engine_finish_job(engine_local *e, int rc, const tome_error *err)
{
    tomed_job *job = e->job;
    job->rc = rc;
    if (rc != 0 && err) job->err = *err;
    char id[48];
    if (rc == 0) {
        /* A state that cannot be saved still answers questions until tomed
         * stops, but the job fails, naming why: a prefill reported done
         * would be taken as saved, and never run again after a restart. */
        tome_error save_err = {0};
        int saved = engine_save_final_state(e, job, id, &save_err) == 0;
        if (!saved) {
            job->rc = save_err.code ? save_err.code : TOME_EIO;
            tome_errorf(&job->err, job->rc,
                        "the prefill finished but its state could not be saved (%s); it answers "
                        "from memory until tomed stops: make room and prefill again",
                        save_err.msg);
        }
        engine_cache_put(e, job->corpus, job->version_id, e->job_state, saved ? id : NULL);
        e->job_state = NULL;
    } else if (e->job_state) {
        v4_state_free(e->job_state);
        e->job_state = NULL;
    }
    /* A shutdown keeps the restart point for the next daemon; an end does
     * not need it any more. */
    if (!(rc == TOME_ECANCELED && atomic_load(&job->cancel) == 2)) {
        char path[TOMED_PATH_MAX + 64];
        engine_kv_path(e, "job", job->id, path, sizeof path);
        unlink(path);
    }
    engine_drop_points(e);
    e->job = NULL;
    engine_report_job(e, job, 1);
}

static int progress_hook(void *ctx, int64_t done, int64_t total)
{
    tomed_job *job = ctx;
    return atomic_load(&job->cancel) != 0;
}

/* One chunk of the current prefill. */
void engine_run_prefill_chunk(engine_local *e)
{
    tomed_job *job = e->job;
    tome_error err = {0};
    if (atomic_load(&job->cancel)) {
        int interrupted = atomic_load(&job->cancel) == 2;
        tome_errorf(&err, TOME_ECANCELED, "%s at token %lld",
                    interrupted ? "interrupted by shutdown" : "cancelled",
                    (long long)atomic_load(&job->tokens_done));
        engine_finish_job(e, TOME_ECANCELED, &err);
        return;
    }
    if (!e->job_state) {
        int64_t from = 0;
        e->job_state = engine_adopt_unsaved_state(e, job, &from);
        if (!e->job_state) e->job_state = engine_resume_from_restart_point(e, job, &from);
        if (!e->job_state) e->job_state = engine_start_from_saved_prefix(e, job, &from);
        int rc = e->job_state ? 0 : v4_state_new(e->model, &e->job_state, &err);
        if (rc != 0) {
            engine_finish_job(e, rc, &err);
            return;
        }
        e->job_started = e->job_last_report = tome_now();
        e->job_done_at_start = from;
        e->point_retry_at = e->point_failures = 0;
        atomic_store(&job->tokens_done, from);
        atomic_store(&job->restart_point, from);
    }
    int chunk = tomed_config_prefill_chunk(&e->server->cfg); /* one read: SIGHUP may change it */
    if (chunk <= 0) chunk = v4_config_prefill_chunk(v4_model_config(e->model));
    int64_t done = atomic_load(&job->tokens_done);
    if (done == (int64_t)job->n_ids) { /* an adopted state: nothing left to run */
        engine_finish_job(e, 0, NULL);
        return;
    }
    size_t n = (size_t)((int64_t)job->n_ids - done < chunk ? (int64_t)job->n_ids - done : chunk);
    /* The job's prompt is one evaluation fed a chunk per call, so that the
     * result does not depend on the chunk size (see v4_eval.part_first). */
    v4_eval ev = {.chunk = chunk,
                  .progress = progress_hook,
                  .progress_ctx = job,
                  .part_first = done,
                  .part_total = (int64_t)job->n_ids};
    tome_fault_point("prefill-chunk");
    int rc = v4_eval_tokens(e->job_state, job->ids + done, n, &ev, &err);
    if (rc == 0 && e->chunk_delay_ms) engine_pause_ms(e->chunk_delay_ms);
    if (rc != 0) {
        engine_finish_job(e, rc, &err);
        return;
    }
    done += (int64_t)n;
    atomic_store(&job->tokens_done, done);
    atomic_fetch_add(&tomed_stats.prefill_tokens, n);
    double now = tome_now();
    double rate = (double)(done - e->job_done_at_start) / (now - e->job_started + 1e-9);
    atomic_store(&job->tokens_per_s, rate);
    atomic_store(&tomed_stats.prefill_tokens_per_s, rate);
    int64_t interval = tomed_config_restart_interval(&e->server->cfg);
    if (interval > 0 && done < (int64_t)job->n_ids && done >= e->point_retry_at &&
        done >= engine_next_restart_point(atomic_load(&job->restart_point), interval))
        engine_save_restart_point(e, job, done, interval);
    if (done == (int64_t)job->n_ids) {
        engine_finish_job(e, 0, NULL);
    } else if (now - e->job_last_report >= PROGRESS_INTERVAL_S) {
        e->job_last_report = now;
        engine_report_job(e, job, 0);
    }
}
