/*
 * jobs.h - prefill jobs and questions on the engine (jobs.c, engine_exec.c).
 */
#ifndef TOMED_JOBS_H
#define TOMED_JOBS_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/common.h"
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/storecall.h"
#include "daemon/types.h"

struct v4_model;
struct v4_tokenizer;

int tomed_jobs_new(tomed_server *s, tomed_jobs **out, tome_error *err);
void tomed_jobs_free(tomed_jobs *j);
/* Shutdown: running prefills stop at their next restart point and are
 * left queued for the next start; followers' streams end. */
void tomed_jobs_drain(tomed_jobs *j);
int tomed_jobs_busy(const tomed_jobs *j);
void tomed_jobs_count(const tomed_jobs *j, int by_state[5]);
/* Is the model loaded (for /v1/ready), and its name. */
int tomed_jobs_model_ready(const tomed_jobs *j, const char **model, const char **why);
/* Does a job of the corpus wait or run? */
int tomed_jobs_corpus_busy(const tomed_jobs *j, const char *corpus);
tomed_engine *tomed_jobs_engine(const tomed_jobs *j);
/* A remote engine moved the corpus to another replica: warm it there with
 * a prefill job (loop thread; nothing when a job of the corpus runs). */
void tomed_jobs_rewarm(tomed_jobs *j, const char *corpus);

/* A prefill job.  Created and owned by jobs.c on the loop thread, which
 * keeps it until exit; the engine thread reads `ids` and writes the atomic
 * progress fields while the job runs, and hands it back with a final
 * report (tomed_job_finished) after which it no longer touches it. */
typedef struct tomed_job {
    int64_t id; /* the store's job id */
    char corpus[TOMED_NAME_MAX + 1];
    int64_t version_id;
    int64_t version_number; /* as clients see it (1, 2, ...) */
    int status;             /* a store_job_state; loop thread only */
    int32_t *ids;           /* the prompt prefix; freed when the job ends */
    size_t n_ids;
    _Atomic int64_t tokens_done;
    _Atomic double tokens_per_s;
    _Atomic int64_t restart_point;
    atomic_int cancel; /* 1: cancelled by a client, 2: interrupted by shutdown */
    int rc;            /* the engine's result, with err */
    tome_error err;
    int64_t created_at, started_at, finished_at; /* wall clock seconds */
    int running_in_engine; /* loop thread: the engine has it and will report */
    /* Saved states of earlier versions of the corpus: the engine starts
     * from the longest prefix of `ids` any of them holds. */
    char (*prefixes)[TOMED_PATH_MAX];
    int n_prefixes;
    struct tomed_job_follower *followers;
    struct tomed_job *next;             /* the engine's queue */
    struct tomed_job *next_in_registry; /* jobs.c's list */
} tomed_job;

json_t *tomed_job_json(const tomed_job *job);
tomed_job *tomed_jobs_find(const tomed_jobs *j, const char *id);
json_t *tomed_jobs_list(const tomed_jobs *j, const tomed_principal *p);
int tomed_jobs_cancel(tomed_jobs *j, tomed_job *job, tome_error *err);
/* Stream the job's events to `r` until it ends. */
void tomed_jobs_follow(tomed_jobs *j, tomed_job *job, tomed_request *r);
/* Answer `r` with the corpus's queued/running job, or start one. */
void tomed_jobs_start_prefill(tomed_jobs *j, tomed_request *r, const char *corpus);
/* Posted by the engine once the model has loaded or failed to: under
 * --foreground, says so on standard error ("tomed ready" exactly when
 * GET /v1/ready turns 200, else "tomed not ready: WHY"), and resumes the
 * unfinished jobs if it loaded. */
void tomed_jobs_model_settled(void *server);
/* Free the registry, after the pool has delivered the engine's last
 * reports (tomed_jobs_free stops the engine; this frees the jobs). */
void tomed_jobs_release(tomed_jobs *j);

/* jobs.c, called on the loop thread by the engine's reports */
void tomed_job_progress(void *job);
void tomed_job_finished(void *job);

/* One entry of a question's logit_bias: `bias` is added to token `id`'s
 * logit before every sampling step. */
typedef struct tomed_logit_bias {
    int32_t id;
    float bias;
} tomed_logit_bias;

/* A question on its way through the engine.  Created by routes_ask.c on
 * the loop thread; the engine thread owns the fields below `engine` until
 * it posts tomed_ask_finished, after which the loop frees the ask. */
typedef struct tomed_ask {
    tomed_request *r; /* NULL once the client is gone (loop thread only) */
    tomed_server *server;
    char corpus[TOMED_NAME_MAX + 1];
    int64_t version_id;
    char *question;
    int thinking; /* 0 none, 1 high, 2 max */
    int max_tokens;
    double temperature, top_p;
    uint64_t seed;
    char *stop[8];
    int n_stop;
    tomed_logit_bias *logit_bias; /* added to the logits before sampling (malloc'd) */
    int n_logit_bias;
    int stream;
    double t_request;
    char saved_path[TOMED_PATH_MAX]; /* the saved state to restore, if any */
    char saved_id[32];
    atomic_int cancel;
    /* engine results */
    char *answer;
    size_t answer_len;
    const char *finish_reason;
    int64_t corpus_tokens, prompt_tokens, completion_tokens, context_tokens;
    int64_t cached_tokens; /* of prompt_tokens, those the engine's cache served */
    double t_queued, t_first_token, t_question_fed, t_end;
    double question_tokens_per_s, decode_tokens_per_s;
    char state_id[48];
    int rc;
    tome_error err;
    /* set by routes_openai.c for a chat completion or a completion, which
     * reply in OpenAI's format (loop thread only, but for `turns` and
     * `bare`, which the engine reads) */
    int openai;              /* 0, TOMED_OPENAI_CHAT or TOMED_OPENAI_COMPLETION */
    int bare;                /* no corpus: `turns` starts a fresh context */
    struct v4_prompt *turns; /* what follows the corpus's prefix, rendered;
                                NULL: `question` as a document-QA turn */
    int32_t *prompt_ids;     /* a bare completion's prompt given as token ids
                                (malloc'd; the engine reads it): used, not `turns` */
    size_t n_prompt_ids;
    char completion_id[48];
    int64_t created;
    int sent_role;  /* the first chunk, which names the role, has gone */
    int in_content; /* thinking: the reasoning's end has been streamed */
    char held[8];   /* thinking: streamed text that may begin "</think>" */
    size_t held_len;
} tomed_ask;

enum { TOMED_OPENAI_CHAT = 1, TOMED_OPENAI_COMPLETION = 2 };
/* The models list's entry for prompts without a corpus.  Not a valid
 * corpus name (it has a '/'), so no corpus can shadow it. */
#define TOMED_BARE_MODEL "deepseek-v4/bare"

/* routes_ask.c: what the native and the OpenAI routes share.  A parser
 * fills the ask from the body (the corpus comes from r->params[0]) or
 * replies and returns -1; tomed_ask_run checks the engine, reads the body,
 * parses it, looks up the corpus version on a worker and hands the
 * question to the engine (or replies with the error). */
typedef int (*tomed_ask_parser)(tomed_request *r, json_t *body, tomed_ask *ask);
void tomed_ask_run(tomed_request *r, tomed_ask_parser parse);
/* The sampling fields: `max_tokens_key` (a number from 1 to
 * max_answer_tokens, default 512), temperature, top_p, seed, logit_bias,
 * stop (a string or an array of strings); replies 400 and returns -1 when
 * one is wrong. */
int tomed_ask_parse_sampling(tomed_request *r, json_t *body, const char *max_tokens_key,
                             tomed_ask *ask);
/* "stream": a boolean, `by_default` when absent. */
int tomed_ask_parse_stream(tomed_request *r, json_t *body, int by_default, tomed_ask *ask);
/* The parsers of the three asking routes: POST /v1/corpora/NAME/ask,
 * /openai/v1/chat/completions and /openai/v1/completions.  Exported for
 * the fuzz target of request bodies (tests/fuzz/fuzz_request_json.c). */
int tomed_ask_parse_question(tomed_request *r, json_t *body, tomed_ask *ask);
int tomed_openai_parse_chat(tomed_request *r, json_t *body, tomed_ask *ask);
int tomed_openai_parse_completion(tomed_request *r, json_t *body, tomed_ask *ask);
/* Free what a parser put in `ask` (its fields, not `ask` itself). */
void tomed_ask_clear(tomed_ask *ask);

/* routes_openai.c: OpenAI's shapes of an answer, on the loop thread.  A
 * piece of the answer's text streamed to ask->r as OpenAI chunks (a
 * thinking answer's reasoning as reasoning_content, the rest as content);
 * the whole answer sent to ask->r as one chat.completion or
 * text_completion, or as the stream's end; an error object for `status`
 * and TOME_E* `code`. */
void tomed_openai_text(tomed_ask *ask, const char *text, size_t len);
void tomed_openai_answer(tomed_ask *ask, json_t *citations, json_t *sources);
json_t *tomed_openai_error_json(int status, int code, const char *message);

/* ask_extras.c, called on a worker thread: JSON arrays (never NULL; empty
 * when the lookup fails, which is logged) of the citations in `answer`
 * checked against version `version_id` ({path, line, end_line, exists,
 * text}), and of the passages matching `question` ({path, line, snippet,
 * score}, at most 5). */
json_t *tomed_citations_json(const char *state_dir, int64_t version_id, const char *answer);
json_t *tomed_sources_json(const char *state_dir, int64_t version_id, const char *question);

/* engine.c, on an engine's thread: post a piece of a streaming answer to
 * the loop, where tomed_ask_text sends it. */
void tomed_ask_post_text(tomed_ask *ask, const char *text, size_t len);

/* engine.c, on an engine's thread: the ids that follow the corpus (or,
 * bare, start the context): `prompt_ids`, else `turns`, else `question` as
 * a document-QA turn; the ask's copy is taken (malloc'd ids). */
int tomed_ask_prompt_ids(const struct v4_tokenizer *t, tomed_ask *ask, int32_t **ids, size_t *n,
                         tome_error *err);

/* routes_ask.c, called on the loop thread by the engine's reports */
void tomed_ask_text(tomed_ask *ask, const char *text, size_t len);
void tomed_ask_finished(void *ask);

/* engine.c: the engine interface.  tomed runs questions and prefills on
 * one engine, chosen by `engine` in tomed.conf: the local executor
 * (engine_exec.c and the engine_*.c beside it: the model in this process)
 * or a remote one (engine_remote.c: OpenAI-compatible completions servers
 * such as vLLM, SGLang or other tomeds).  Both implement these operations;
 * the functions below dispatch to them, so the rest of tomed never knows
 * which one serves.  An implementation's struct starts with tomed_engine. */
typedef struct tomed_engine_ops {
    const char *kind; /* "local" or "remote" */
    void (*stop)(tomed_engine *e);
    int (*ready)(tomed_engine *e, const char **why);
    const struct v4_model *(*model)(tomed_engine *e, const char **fingerprint);
    const struct v4_tokenizer *(*tokenizer)(tomed_engine *e, const char **fingerprint);
    const char *(*state_fingerprint)(tomed_engine *e);
    int (*submit_prefill)(tomed_engine *e, tomed_job *job, tome_error *err);
    int (*submit_ask)(tomed_engine *e, tomed_ask *ask, tome_error *err);
    int (*has_state)(tomed_engine *e, const char *corpus, int64_t version_id, int64_t *tokens,
                     char id[48]);
    void (*forget)(tomed_engine *e, const char *corpus);
    int (*drop_state)(tomed_engine *e, const char *id);
    json_t *(*states)(tomed_engine *e);
    json_t *(*status)(tomed_engine *e);
} tomed_engine_ops;

struct tomed_engine {
    const tomed_engine_ops *ops;
};

/* Starts the engine that s->cfg names: the local one loads the model
 * `s->cfg.model` on its thread, the remote one its tokenizer (both
 * reported by tomed_engine_ready once done). */
int tomed_engine_start(tomed_server *s, tomed_engine **out, tome_error *err);
int tomed_engine_start_local(tomed_server *s, tomed_engine **out, tome_error *err);
int tomed_engine_start_remote(tomed_server *s, tomed_engine **out, tome_error *err);
/* Stops at the next chunk boundary (a running job is reported interrupted,
 * questions cancelled) and joins the engine's threads. */
void tomed_engine_stop(tomed_engine *e);
int tomed_engine_ready(tomed_engine *e, const char **why);
/* The model and its fingerprint (hex), once ready (immutable; any thread
 * may use them), else NULL; a remote engine has no model here. */
const struct v4_model *tomed_engine_model(tomed_engine *e, const char **fingerprint);
/* The tokenizer and its fingerprint, once ready (immutable; any thread
 * may use them), else NULL.  Every engine has one: tokens are counted here. */
const struct v4_tokenizer *tomed_engine_tokenizer(tomed_engine *e, const char **fingerprint);
/* The fingerprint saved states (KV state files) are kept under, or NULL
 * before the engine is ready; a remote engine's matches no file. */
const char *tomed_engine_state_fingerprint(tomed_engine *e);
int tomed_engine_submit_prefill(tomed_engine *e, tomed_job *job, tome_error *err);
/* TOME_EBUSY when ask_queue_limit questions are already waiting. */
int tomed_engine_submit_ask(tomed_engine *e, tomed_ask *ask, tome_error *err);
/* Can a question on this corpus version start without a prefill?  Its
 * tokens and id (both optional) are filled when it can. */
int tomed_engine_has_state(tomed_engine *e, const char *corpus, int64_t version_id, int64_t *tokens,
                           char id[48]);
/* Drop the corpus's states (the corpus is gone), or one state by id. */
void tomed_engine_forget(tomed_engine *e, const char *corpus);
int tomed_engine_drop_state(tomed_engine *e, const char *id);
/* The states in memory, as tome-protocol(7) state objects. */
json_t *tomed_engine_states(tomed_engine *e);
/* {"kind", "healthy"[, "replicas": [{"url", "up", "corpora", "error"}]]}
 * for GET /v1/ready. */
json_t *tomed_engine_status(tomed_engine *e);

#endif
