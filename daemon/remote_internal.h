/*
 * remote_internal.h - what the remote engine's files share (private to
 * engine_remote.c, the engine object, its replicas and states, and
 * remote_work.c, its prefill jobs and questions).
 *
 * The remote engine keeps no model: questions and prefills go to
 * OpenAI-compatible completions servers (vLLM, SGLang, other tomeds),
 * which hold the model and cache prompt prefixes.  What stays here is the
 * tokenizer (tokens are counted and sent as ids, so budgets and citations
 * are exact), which replica holds which corpus version warm, and their
 * health.  Every job and question runs on a thread of its own, blocked in
 * libcurl (remote_client.c); the lock guards the states and replica
 * errors, and counts those threads so that stopping can wait for them.
 */
#ifndef TOMED_REMOTE_INTERNAL_H
#define TOMED_REMOTE_INTERNAL_H

#include "daemon/conf.h"
#include "daemon/jobs.h"
#include "daemon/remote_client.h"
#include "tokenizer/tokenizer.h"

#include <pthread.h>
#include <stdatomic.h>

#define REMOTE_MAX_STATES 64

typedef struct replica {
    tomed_remote conf;
    char api_key[1024];
    remote_target target;
    atomic_int up;       /* its last health check or request went well */
    char error[256];     /* why it is down (under the lock) */
    _Atomic double rate; /* prefill tokens per second of its last warm */
} replica;

/* A corpus version warm on a replica: the ids of its prompt prefix. */
typedef struct remote_state {
    char corpus[TOMED_NAME_MAX + 1];
    int64_t version_id;
    int32_t *ids;
    size_t n_ids;
    int replica;
    int64_t serial;
} remote_state;

typedef struct engine_remote {
    tomed_engine base; /* first: the interface's ops */
    tomed_server *server;
    v4_tokenizer *tokenizer; /* written once before `ready` */
    char tokenizer_fingerprint[65];
    int64_t context;      /* tokens per question; 0: not known here */
    size_t longest_token; /* bytes of the vocabulary's longest token */
    atomic_int ready;
    char why[TOME_ERROR_MAX];
    replica replicas[TOMED_MAX_REMOTES];
    int n_replicas;
    pthread_t health;
    pthread_mutex_t lock;
    pthread_cond_t changed; /* stopping, or a thread ended */
    int stopping;
    int running; /* job and question threads */
    int asks;    /* questions among them */
    remote_state states[REMOTE_MAX_STATES];
    int n_states;
    int64_t serial;
} engine_remote;

/* ---- engine_remote.c ------------------------------------------------------ */

/* The replica for a corpus version by rendezvous hashing: the best score
 * among the replicas up, else among all; replicas in `skip` (a bit mask)
 * never; -1 when none is left. */
int remote_pick(engine_remote *e, const char *corpus, int64_t version_id, unsigned skip);
/* A request to replica `r` failed (`why`): it is down until a health check
 * says otherwise, and its corpora move (re-warm jobs). */
void remote_mark_down(engine_remote *e, int r, const char *why);
/* Record that the corpus version's prefix `ids` is warm on replica `r`
 * (ids copied). */
int remote_state_put(engine_remote *e, const char *corpus, int64_t version_id, const int32_t *ids,
                     size_t n, int r);
/* A copy of the corpus version's ids and where they are warm; 0 when
 * there is no such state.  `id` gets the state's id. */
int remote_state_get(engine_remote *e, const char *corpus, int64_t version_id, int32_t **ids,
                     size_t *n, int *r, char id[48]);
/* Run fn(arg) on a thread of its own, counted; TOME_EBUSY once stopping. */
int remote_spawn(engine_remote *e, void *(*fn)(void *), void *arg, int is_ask, tome_error *err);
/* The end of a counted thread. */
void remote_thread_done(engine_remote *e, int is_ask);
int remote_stopping(engine_remote *e);

/* ---- remote_work.c -------------------------------------------------------- */

/* A thread's argument (malloc'd; the thread frees it). */
typedef struct remote_work {
    engine_remote *e;
    void *item; /* the tomed_job or tomed_ask */
} remote_work;

/* The threads of a prefill job (warming its replica) and of a question. */
void *remote_job_main(void *work);
void *remote_ask_main(void *work);

#endif
