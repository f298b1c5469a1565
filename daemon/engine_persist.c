/*
 * engine_persist.c - prefilled states on disk: restart points while a
 * prefill runs, the final state when it ends, and resuming from either.
 *
 * A prefill writes a restart point (kv/job-ID.kv, replaced each time)
 * every restart_interval tokens, with the earlier points kept in memory as
 * forks so that one file holds them all; a resumed job starts from the
 * longest point whose token ids still match its prompt, or from the saved
 * state of an earlier version that shares a prefix with it.  A finished
 * prefill is saved as kv/state-ID.kv and recorded in the store, after
 * which the cache budget may evict older states.  Files are the kvstate
 * library's (tome-kvcache(5)).
 */
#include "daemon/engine_internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void engine_kv_path(const engine_local *e, const char *kind, int64_t id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/kv/%s-%lld.kv", e->server->cfg.state_dir, kind, (long long)id);
}

/* The state saved at `path`. */
int engine_restore_file(engine_local *e, const char *path, v4_state **out, tome_error *err)
{
    kvstate_file *f;
    int rc = kvstate_open(path, e->model, &f, err);
    if (rc != 0) return rc;
    rc = kvstate_restore(f, 0, out, err);
    kvstate_close(f);
    return rc;
}

/* Restart points are kept as forks of the prefill's state (cheap: they
 * share its compressed rows) and written with every save, so a saved state
 * also serves any later prefill whose ids agree with it up to one of them,
 * such as a re-ingest that changed a document in the middle. */
static void keep_point(engine_local *e, v4_state *point)
{
    if (e->n_points == e->cap_points) {
        size_t cap = e->cap_points ? e->cap_points * 2 : 16;
        v4_state **grown = realloc(e->points, cap * sizeof *grown);
        if (!grown) {
            v4_state_free(point);
            return;
        }
        e->points = grown;
        e->cap_points = cap;
    }
    e->points[e->n_points++] = point;
}

void engine_drop_points(engine_local *e)
{
    for (size_t i = 0; i < e->n_points; i++) v4_state_free(e->points[i]);
    e->n_points = 0;
}

/* Restore the file's restart points below `below` tokens into the list. */
static void restore_points(engine_local *e, kvstate_file *f, int64_t below)
{
    for (size_t p = 1; p <= kvstate_points(f); p++) {
        v4_state *point;
        tome_error err = {0};
        if (kvstate_point_tokens(f, p) >= below) break;
        if (kvstate_restore(f, p, &point, &err) != 0) break;
        keep_point(e, point);
    }
}

/* Each restart point rewrites the whole state, which grows with the
 * tokens done: at a fixed interval the writes would grow as the square of
 * the context (about 45 GB over a 1M-token prefill of the tiny model).
 * Past RESTART_GROWTH intervals the gap is instead that fraction of the
 * tokens done, so all the points together write a few times the final
 * state, and a crash loses at most 1/RESTART_GROWTH of the work. */
#define RESTART_GROWTH 8

int64_t engine_next_restart_point(int64_t last, int64_t interval)
{
    int64_t gap = last / RESTART_GROWTH > interval ? last / RESTART_GROWTH : interval;
    return last / interval * interval + gap;
}

/* A job's restart point: its state after `done` tokens, replacing the
 * previous one atomically.  A disk that refused one will likely refuse the
 * next, so after a failure the next try waits 2, 4, 8... intervals (at most
 * 1024) instead of coming at every chunk. */
void engine_save_restart_point(engine_local *e, tomed_job *job, int64_t done, int64_t interval)
{
    char path[TOMED_PATH_MAX + 64];
    tome_error err = {0};
    engine_kv_path(e, "job", job->id, path, sizeof path);
    double t0 = tome_now();
    if (kvstate_save(path, e->job_state, (const v4_state *const *)e->points, e->n_points, job->ids,
                     (size_t)done, &err) != 0) {
        e->point_failures += e->point_failures < 10;
        e->point_retry_at = done + (interval << e->point_failures);
        tomed_log(TOMED_LOG_WARN,
                  "job %lld: restart point at token %lld: %s; next try at token %lld",
                  (long long)job->id, (long long)done, err.msg, (long long)e->point_retry_at);
        return;
    }
    e->point_failures = 0;
    atomic_store(&job->restart_point, done);
    tomed_log(TOMED_LOG_INFO, "job %lld: restart point saved at token %lld in %.3f s",
              (long long)job->id, (long long)done, tome_now() - t0);
    v4_state *point;
    if (v4_state_fork(e->job_state, &point, &err) == 0) keep_point(e, point);
}

/* A fork of the job's whole state when it lives in memory only (an earlier
 * job finished it but could not save it): the job then just saves it. */
v4_state *engine_adopt_unsaved_state(engine_local *e, tomed_job *job, int64_t *done)
{
    v4_state *state = NULL;
    tome_error err = {0};
    pthread_mutex_lock(&e->lock);
    cached_state *c = engine_cache_find(e, job->corpus, job->version_id);
    if (c && strncmp(c->id, "mem-", 4) == 0 && c->tokens == (int64_t)job->n_ids &&
        v4_state_fork(c->state, &state, &err) != 0)
        state = NULL;
    pthread_mutex_unlock(&e->lock);
    if (state) {
        *done = (int64_t)job->n_ids;
        tomed_log(TOMED_LOG_INFO, "job %lld saves the state tomed holds in memory",
                  (long long)job->id);
    }
    return state;
}

/* The job's latest restart point, if there is one and it still matches,
 * with the restart points before it. */
v4_state *engine_resume_from_restart_point(engine_local *e, tomed_job *job, int64_t *done)
{
    char path[TOMED_PATH_MAX + 64];
    struct stat st;
    engine_kv_path(e, "job", job->id, path, sizeof path);
    if (stat(path, &st) != 0) return NULL;
    v4_state *state = NULL;
    tome_error err = {0};
    kvstate_file *f;
    int rc = kvstate_open(path, e->model, &f, &err);
    if (rc == 0) {
        rc = kvstate_match(f, job->ids, job->n_ids, &err);
        if (rc == 0) rc = kvstate_restore(f, 0, &state, &err);
        if (rc == 0) {
            *done = kvstate_tokens(f);
            restore_points(e, f, *done);
        }
        kvstate_close(f);
    }
    if (rc != 0) {
        tomed_log(TOMED_LOG_WARN, "job %lld: restart point %s not used: %s", (long long)job->id,
                  path, err.msg);
        unlink(path);
        return NULL;
    }
    tomed_log(TOMED_LOG_INFO, "job %lld resumes from its restart point at token %lld",
              (long long)job->id, (long long)*done);
    return state;
}

/* The longest prefix of the job's ids held by a saved state of an earlier
 * version (or one of its restart points): after an ingest that appended
 * documents, only the new tail is prefilled. */
v4_state *engine_start_from_saved_prefix(engine_local *e, tomed_job *job, int64_t *done)
{
    int64_t best_tokens = 0;
    int best = -1;
    size_t best_point = 0;
    for (int i = 0; i < job->n_prefixes; i++) {
        kvstate_file *f;
        tome_error err = {0};
        size_t point;
        if (kvstate_open(job->prefixes[i], e->model, &f, &err) != 0) continue;
        if (kvstate_longest(f, job->ids, job->n_ids, &point, &err) == 0 &&
            kvstate_point_tokens(f, point) > best_tokens) {
            best_tokens = kvstate_point_tokens(f, point);
            best = i;
            best_point = point;
        }
        kvstate_close(f);
    }
    if (best < 0) return NULL;
    kvstate_file *f;
    v4_state *state = NULL;
    tome_error err = {0};
    int rc = kvstate_open(job->prefixes[best], e->model, &f, &err);
    if (rc == 0) {
        rc = kvstate_restore(f, best_point, &state, &err);
        if (rc == 0) restore_points(e, f, best_tokens);
        kvstate_close(f);
    }
    if (rc != 0) {
        tomed_log(TOMED_LOG_WARN, "job %lld: saved prefix %s not used: %s", (long long)job->id,
                  job->prefixes[best], err.msg);
        return NULL;
    }
    *done = best_tokens;
    tomed_log(TOMED_LOG_INFO, "job %lld starts from a saved state at token %lld of %zu",
              (long long)job->id, (long long)best_tokens, job->n_ids);
    return state;
}

/* cache_budget: least recently used states evicted, never the one just
 * saved.  A failure costs disk space, not the state, so it is logged. */
static void enforce_cache_budget(engine_local *e, store *db, int64_t saved)
{
    int64_t budget = tomed_config_cache_budget(&e->server->cfg);
    size_t evicted = 0;
    tome_error err = {0};
    if (budget <= 0) return;
    if (store_kv_cache_evict(db, budget, saved, &evicted, &err) != 0)
        tomed_log(TOMED_LOG_WARN, "cache budget: %s", err.msg);
    if (evicted)
        tomed_log(TOMED_LOG_INFO, "cache budget of %lld bytes: %zu saved states evicted",
                  (long long)budget, evicted);
}

/* A finished prefill, saved and recorded in the store; `id` gets the
 * store's id of it.  On failure nothing of it is left on disk or in the
 * store; the caller decides what the job reports. */
int engine_save_final_state(engine_local *e, tomed_job *job, char id[48], tome_error *err)
{
    char path[TOMED_PATH_MAX + 64];
    engine_kv_path(e, "state", job->id, path, sizeof path);
    struct stat st;
    store *db;
    int64_t row;
    int rc = kvstate_save(path, e->job_state, (const v4_state *const *)e->points, e->n_points,
                          job->ids, job->n_ids, err);
    if (rc == 0 && stat(path, &st) != 0) rc = tome_errorf(err, TOME_EIO, "%s vanished", path);
    if (rc == 0) rc = tomed_thread_store(e->server->cfg.state_dir, &db, err);
    if (rc == 0) {
        store_kv_state rec = {.version_id = job->version_id,
                              .token_count = (int64_t)job->n_ids,
                              .path = path,
                              .bytes = (int64_t)st.st_size,
                              .status = STORE_STATE_READY};
        snprintf(rec.model_fingerprint, sizeof rec.model_fingerprint, "%s", e->model_fingerprint);
        rc = store_state_add(db, &rec, &row, err);
    }
    if (rc == 0) enforce_cache_budget(e, db, row);
    if (rc != 0) {
        tomed_log(TOMED_LOG_WARN, "job %lld: the state stays in memory only: %s",
                  (long long)job->id, err->msg);
        unlink(path);
        return rc;
    }
    snprintf(id, 48, "%lld", (long long)row);
    return 0;
}
