/*
 * engine_internal.h - what the local engine executor's files share
 * (private to daemon/engine_*.c but engine_remote.c; the rest of the
 * daemon sees it only through the tomed_engine interface of
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
    int32_t *ids; /* a bare prompt's state (corpus TOMED_BARE_MODEL): its ids */
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

typedef struct engine_local {
    tomed_engine base; /* first: the interface's ops */
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
    /* TOMED_TEST_TOKEN_DELAY_MS (tests only): a pause before each answer
     * token, so a test can act while an answer streams */
    int token_delay_ms, chunk_delay_ms; /* test hooks (engine_exec.c) */
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
} engine_local;

/* ---- the state cache (engine_cache.c); callers hold e->lock ---------------- */

/* The interface's state operations (tomed_engine_has_state and so on). */
int engine_local_has_state(tomed_engine *base, const char *corpus, int64_t version_id,
                           int64_t *tokens, char id[48]);
void engine_local_forget(tomed_engine *base, const char *corpus);
int engine_local_drop_state(tomed_engine *base, const char *id);
json_t *engine_local_states(tomed_engine *base);
/* The cached state of a corpus version, or NULL. */
cached_state *engine_cache_find(engine_local *e, const char *corpus, int64_t version_id);
/* The prefix cache of bare prompts (an OpenAI-compatible server's, which
 * a remote engine in front warms): the cached prompt with the most ids
 * that begins ids[0..n) and is shorter, or NULL; a hit counts as its use. */
cached_state *engine_cache_find_prefix(engine_local *e, const int32_t *ids, size_t n);
/* Take `state`, the state after the bare prompt ids[0..n) (copied), as a
 * prefix; the least recently used prefix goes past ENGINE_MAX_PREFIXES.
 * Takes the lock itself. */
void engine_cache_put_prefix(engine_local *e, const int32_t *ids, size_t n, v4_state *state);
/* The id clients see for a cached state. */
void engine_state_id(const cached_state *c, char *out, size_t cap);
/* Take `state` as the version's (replacing an older one); `saved_id` is its
 * file's id, NULL while it is in memory only.  Takes the lock itself. */
void engine_cache_put(engine_local *e, const char *corpus, int64_t version_id, v4_state *state,
                      const char *saved_id);

/* ---- states on disk (engine_persist.c) ------------------------------------ */

/* STATE_DIR/kv/KIND-ID.kv */
void engine_kv_path(const engine_local *e, const char *kind, int64_t id, char *out, size_t cap);
/* Restore the state a file holds (its longest point). */
int engine_restore_file(engine_local *e, const char *path, v4_state **out, tome_error *err);
/* Forget the running job's restart points. */
void engine_drop_points(engine_local *e);
/* Save the running job's state at `done` tokens as its restart point;
 * after a failure the next try waits (see engine_persist.c). */
void engine_save_restart_point(engine_local *e, tomed_job *job, int64_t done, int64_t interval);
/* The token count from which the restart point after the one at `last`
 * is due, for restart_interval `interval` (> 0): the next multiple of it
 * early on, then a gap that grows with the state (engine_persist.c). */
int64_t engine_next_restart_point(int64_t last, int64_t interval);
/* A state to resume `job` from, with *done its tokens; NULL: none fits. */
v4_state *engine_resume_from_restart_point(engine_local *e, tomed_job *job, int64_t *done);
v4_state *engine_start_from_saved_prefix(engine_local *e, tomed_job *job, int64_t *done);
/* Save the finished job's state; its store id into `id`. */
int engine_save_final_state(engine_local *e, tomed_job *job, char id[48], tome_error *err);
v4_state *engine_adopt_unsaved_state(engine_local *e, tomed_job *job, int64_t *done);

/* ---- answers (engine_answer.c) -------------------------------------------- */

/* Take decoded text; 1 when a stop string ended the answer. */
int engine_take_text(engine_local *e, active_ask *a, const char *text, size_t len);
/* The answer is over: send what is still held back. */
void engine_flush_answer(engine_local *e, active_ask *a);

/* ---- questions and prefills (engine_asks.c, engine_prefill.c) -------------- */

/* One step of every active question. */
void engine_run_asks(engine_local *e);
/* End active question `index` with `rc` and hand it back to the loop. */
void engine_finish_ask(engine_local *e, int index, int rc, const tome_error *err);
/* One chunk of the current prefill job. */
void engine_run_prefill_chunk(engine_local *e);
/* End the current job with `rc`; post a job's progress or its end. */
void engine_finish_job(engine_local *e, int rc, const tome_error *err);
void engine_report_job(engine_local *e, tomed_job *job, int final);

/* Sleep `ms` milliseconds (the test hooks' delays). */
void engine_pause_ms(int ms);

#endif
