/*
 * engine_internal.h - what the engine executor's files share (private to
 * daemon/engine_*.c; the rest of the daemon sees tomed_engine only through
 * daemon/jobs.h).
 *
 * The executor is split by job: engine_exec.c (the thread, its queues and
 * the model), engine_asks.c (questions), engine_answer.c (answer text),
 * engine_prefill.c (prefill jobs), engine_cache.c (the in-memory state
 * cache), engine_persist.c (states on disk).  Everything here except the
 * cache and the queues is touched by the engine thread alone.
 */
#ifndef TOMED_ENGINE_INTERNAL_H
#define TOMED_ENGINE_INTERNAL_H

#include "daemon/conf.h"
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/sampling.h"
#include "daemon/server.h"
#include "daemon/workers.h"
#include "engine/v4.h"
#include "kvstate/kvstate.h"
#include "store/store.h"
#include "tokenizer/tokenizer.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct cached_state {
    char id[48]; /* the store's state id, or "mem-VERSION-SERIAL" if unsaved */
    char corpus[TOMED_NAME_MAX + 1];
    int64_t version_id;
    v4_state *state;
    int64_t tokens;
    int64_t serial;
} cached_state;

/* A question the engine is working on. */
typedef struct active_ask {
    tomed_ask *ask;
    v4_state *state;
    v4_detok *detok;
    int32_t next_id; /* sampled, not yet fed */
    uint64_t rng;
    char *held; /* decoded text not yet sent (could begin a stop string) */
    size_t held_len;
    size_t answer_cap;
    size_t forced; /* answer ids taken from the test hook's list */
} active_ask;

typedef struct ask_node {
    tomed_ask *ask;
    struct ask_node *next;
} ask_node;

struct tomed_engine {
    tomed_server *server;
    char model_dir[TOMED_PATH_MAX];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stopping;
    /* model, written once by the thread before `ready` */
    v4_model *model;
    v4_tokenizer *tokenizer;
    char tokenizer_fingerprint[65]; /* SHA-256 of tokenizer.json */
    char model_fingerprint[65];
    atomic_int ready;
    char why[TOME_ERROR_MAX];
    int32_t eos_id;
    int vocab;        /* logits per position */
    int sample_vocab; /* ids the tokenizer can decode */
    int64_t context;
    /* TOMED_TEST_ANSWER_IDS (tests only): every answer is these ids */
    int32_t *answer_ids;
    size_t n_answer_ids;
    /* queues, under lock */
    tomed_job *jobs_head, *jobs_tail;
    ask_node *asks_head, *asks_tail;
    int asks_waiting;
    /* engine thread only, except `cache` lookups under lock */
    cached_state cache[64];
    int n_cache;
    int64_t serial;
    active_ask active[TOMED_MAX_ACTIVE_ASKS];
    int n_active;
    tomed_job *job; /* the prefill in progress */
    v4_state *job_state;
    v4_state **points; /* forks of job_state at its restart points, ascending */
    size_t n_points, cap_points;
    double job_started, job_last_report;
    int64_t job_done_at_start;
    /* After failed restart points (a full disk): no new try before this
     * token, and how many failed in a row. */
    int64_t point_retry_at;
    int point_failures;
    float *logits;
    tomed_sampler *sampler; /* the sampling workspace (engine thread) */
};

/* ---- the state cache (engine_cache.c); callers hold e->lock ---------------- */

/* The cached state of a corpus version, or NULL. */
cached_state *engine_cache_find(tomed_engine *e, const char *corpus, int64_t version_id);
/* The id clients see for a cached state. */
void engine_state_id(const cached_state *c, char *out, size_t cap);
/* Take `state` as the version's (replacing an older one); `saved_id` is its
 * file's id, NULL while it is in memory only.  Takes the lock itself. */
void engine_cache_put(tomed_engine *e, const char *corpus, int64_t version_id, v4_state *state,
                      const char *saved_id);

/* ---- states on disk (engine_persist.c) ------------------------------------ */

/* STATE_DIR/kv/KIND-ID.kv */
void engine_kv_path(const tomed_engine *e, const char *kind, int64_t id, char *out, size_t cap);
/* Restore the state a file holds (its longest point). */
int engine_restore_file(tomed_engine *e, const char *path, v4_state **out, tome_error *err);
/* Forget the running job's restart points. */
void engine_drop_points(tomed_engine *e);
/* Save the running job's state at `done` tokens as its restart point;
 * after a failure the next try waits (see engine_persist.c). */
void engine_save_restart_point(tomed_engine *e, tomed_job *job, int64_t done, int64_t interval);
/* A state to resume `job` from, with *done its tokens; NULL: none fits. */
v4_state *engine_resume_from_restart_point(tomed_engine *e, tomed_job *job, int64_t *done);
v4_state *engine_start_from_saved_prefix(tomed_engine *e, tomed_job *job, int64_t *done);
/* Save the finished job's state; its store id into `id`. */
int engine_save_final_state(tomed_engine *e, tomed_job *job, char id[48]);

/* ---- answers (engine_answer.c) -------------------------------------------- */

/* Take decoded text; 1 when a stop string ended the answer. */
int engine_take_text(tomed_engine *e, active_ask *a, const char *text, size_t len);
/* The answer is over: send what is still held back. */
void engine_flush_answer(tomed_engine *e, active_ask *a);

/* ---- questions and prefills (engine_asks.c, engine_prefill.c) -------------- */

/* One step of every active question. */
void engine_run_asks(tomed_engine *e);
/* End active question `index` with `rc` and hand it back to the loop. */
void engine_finish_ask(tomed_engine *e, int index, int rc, const tome_error *err);
/* One chunk of the current prefill job. */
void engine_run_prefill_chunk(tomed_engine *e);
/* End the current job with `rc`; post a job's progress or its end. */
void engine_finish_job(tomed_engine *e, int rc, const tome_error *err);
void engine_report_job(tomed_engine *e, tomed_job *job, int final);

#endif
