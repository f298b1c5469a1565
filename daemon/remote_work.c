/*
 * remote_work.c - the remote engine's prefill jobs and questions, each on
 * a thread of its own (engine_remote.c starts them).
 *
 * A prefill warms the prefix cache of the replica that wins the corpus:
 * one completion of the corpus's prompt ids that generates one token.
 * Servers report nothing while they prefill, so progress is an estimate
 * from the time spent and the replica's rate at its last warm, held below
 * the total until the server answers.
 *
 * A question sends the same ids followed by its question turn, so the
 * server's prefix cache serves the corpus; the answer streams back piece
 * by piece, and its usage says how much of the prompt the cache served
 * (prompt_tokens_details.cached_tokens).  When the replica that wins the
 * corpus is not the one it is warm on (a replica went down), the question
 * re-warms the new one first.  A failed request is tried on the next
 * replica only while nothing of the answer has been streamed: after that,
 * the client has part of an answer, and gets an error that says so.
 */
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/remote_internal.h"
#include "daemon/server.h"
#include "daemon/workers.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_RATE      4096.0 /* tokens/s guessed for a replica's first warm */
#define PROGRESS_INTERVAL 1.0

/* The completion request: `n` prompt ids, sampling from `ask` (NULL: a
 * warm, greedy and one token long), always streamed with usage. */
static json_t *request_body(engine_remote *e, const int32_t *ids, size_t n, const tomed_ask *ask)
{
    json_t *prompt = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(prompt, json_integer(ids[i]));
    json_t *body =
        json_pack("{s:s, s:o, s:i, s:f, s:b, s:{s:b}}", "model", e->server->cfg.remote_model,
                  "prompt", prompt, "max_tokens", ask ? ask->max_tokens : 1, "temperature",
                  ask ? ask->temperature : 0.0, "stream", 1, "stream_options", "include_usage", 1);
    if (!ask || !body) return body;
    json_object_set_new(body, "top_p", json_real(ask->top_p));
    json_object_set_new(body, "seed", json_integer((json_int_t)ask->seed));
    if (ask->n_stop) {
        json_t *stop = json_array();
        for (int i = 0; i < ask->n_stop; i++)
            json_array_append_new(stop, json_string(ask->stop[i]));
        json_object_set_new(body, "stop", stop);
    }
    if (ask->n_logit_bias) {
        json_t *bias = json_object();
        for (int i = 0; i < ask->n_logit_bias; i++) {
            char key[16];
            snprintf(key, sizeof key, "%d", (int)ask->logit_bias[i].id);
            float b = ask->logit_bias[i].bias; /* OpenAI's are integers */
            json_object_set_new(bias, key, b == (int)b ? json_integer((int)b) : json_real(b));
        }
        json_object_set_new(body, "logit_bias", bias);
    }
    return body;
}

/* ------------------------------------------------------------------------
 * Warming a replica
 * ------------------------------------------------------------------------ */

typedef struct warm_ctx {
    engine_remote *e;
    tomed_job *job; /* NULL for a question's re-warm */
    size_t n;
    double rate, t0, last_report;
} warm_ctx;

/* The one token is not wanted, but a reply that is not a valid chunk
 * (an aborted one) did not leave the prefix warm; [DONE] ends the warm. */
static int warm_event(void *ctx, json_t *event, tome_error *err)
{
    remote_chunk c;
    return remote_chunk_read(event, &c, err);
}

static int warm_tick(void *arg)
{
    warm_ctx *w = arg;
    if (remote_stopping(w->e)) {
        if (w->job) atomic_store(&w->job->cancel, 2);
        return 1;
    }
    if (!w->job) return 0;
    if (atomic_load(&w->job->cancel)) return 1;
    double now = tome_now();
    if (now - w->last_report < PROGRESS_INTERVAL) return 0;
    w->last_report = now;
    double guess = (now - w->t0) * w->rate;
    int64_t most = w->n ? (int64_t)w->n - 1 : 0;
    atomic_store(&w->job->tokens_done, guess < (double)most ? (int64_t)guess : most);
    atomic_store(&w->job->tokens_per_s, w->rate);
    tomed_post(w->e->server->pool, tomed_job_progress, w->job);
    return 0;
}

/* Warm replica `r` with the prompt prefix `ids`; a failure other than a
 * refused request or a stop marks the replica down. */
static int warm(engine_remote *e, int r, const int32_t *ids, size_t n, tomed_job *job,
                tome_error *err)
{
    replica *rep = &e->replicas[r];
    double rate = atomic_load(&rep->rate);
    warm_ctx w = {e, job, n, rate > 0 ? rate : DEFAULT_RATE, tome_now(), tome_now()};
    remote_stream s = {.on_event = warm_event, .on_tick = warm_tick, .ctx = &w};
    json_t *body = request_body(e, ids, n, NULL);
    int rc = body ? remote_post_stream(&rep->target, "/completions", body, &s, err)
                  : tome_errorf(err, TOME_ENOMEM, "out of memory for %zu ids", n);
    json_decref(body);
    double took = tome_now() - w.t0;
    if (rc == 0 && took > 0) atomic_store(&rep->rate, (double)n / took);
    if (rc == 0) atomic_fetch_add(&tomed_stats.prefill_tokens, n);
    if (rc != 0 && rc != TOME_ECANCELED && s.status / 100 != 4) remote_mark_down(e, r, err->msg);
    return rc;
}

/* Warm the corpus version on the replica that wins it, then on the next
 * ones while they fail; *where gets the replica. */
static int warm_somewhere(engine_remote *e, const char *corpus, int64_t version_id,
                          const int32_t *ids, size_t n, tomed_job *job, int *where, tome_error *err)
{
    unsigned tried = 0;
    int rc = tome_errorf(err, TOME_EUPSTREAM, "no replica is configured");
    for (int r; (r = remote_pick(e, corpus, version_id, tried)) >= 0;) {
        tried |= 1u << r;
        rc = warm(e, r, ids, n, job, err);
        if (rc == 0) rc = remote_state_put(e, corpus, version_id, ids, n, r);
        if (rc == 0) *where = r;
        if (rc == 0 || rc == TOME_ECANCELED) break;
    }
    return rc;
}

void *remote_job_main(void *arg)
{
    remote_work *work = arg;
    engine_remote *e = work->e;
    tomed_job *job = work->item;
    free(work);
    tomed_post(e->server->pool, tomed_job_progress, job); /* running */
    tome_error err = {0};
    int where = -1;
    int rc =
        warm_somewhere(e, job->corpus, job->version_id, job->ids, job->n_ids, job, &where, &err);
    if (rc == TOME_ECANCELED)
        tome_errorf(&err, TOME_ECANCELED, "%s",
                    atomic_load(&job->cancel) == 2 ? "interrupted by shutdown" : "cancelled");
    if (rc == 0) {
        atomic_store(&job->tokens_done, (int64_t)job->n_ids);
        tomed_log(TOMED_LOG_INFO, "'%s' is warm on %s (%zu tokens)", job->corpus,
                  e->replicas[where].conf.url, job->n_ids);
    }
    job->rc = rc;
    if (rc != 0) job->err = err;
    tomed_post(e->server->pool, tomed_job_finished, job);
    remote_thread_done(e, 0);
    return NULL;
}

/* ------------------------------------------------------------------------
 * Questions
 * ------------------------------------------------------------------------ */

typedef struct ask_run {
    engine_remote *e;
    tomed_ask *ask;
    size_t streamed; /* bytes of the answer sent on */
    size_t room;     /* bytes max_tokens tokens can hold */
} ask_run;

static int append_answer(tomed_ask *ask, const char *text, size_t len)
{
    char *grown = realloc(ask->answer, ask->answer_len + len + 1);
    if (!grown) return TOME_ENOMEM;
    memcpy(grown + ask->answer_len, text, len);
    ask->answer = grown;
    ask->answer_len += len;
    grown[ask->answer_len] = '\0';
    return 0;
}

static void take_usage(tomed_ask *ask, const remote_chunk *c)
{
    ask->prompt_tokens = c->prompt_tokens;
    ask->completion_tokens = c->completion_tokens;
    ask->cached_tokens = c->cached_tokens;
}

static int past_max_tokens(const tomed_ask *ask, tome_error *err)
{
    return tome_errorf(err, TOME_EUPSTREAM, "the answer runs past max_tokens (%d)",
                       ask->max_tokens);
}

/* Text from the server as an answer holds it: a NUL (JSON allows
 * \u0000) becomes U+FFFD, as the local engine's decoder makes it. */
static int take_text(ask_run *run, const char *text, size_t len, tome_error *err)
{
    tomed_ask *ask = run->ask;
    int has_nul = memchr(text, 0, len) != NULL;
    char *clean = has_nul ? malloc(3 * len) : NULL;
    if (has_nul && !clean) return tome_errorf(err, TOME_ENOMEM, "out of memory for the answer");
    if (clean) len = tome_text_repair(text, len, clean);
    if (len > run->room) {
        free(clean);
        return past_max_tokens(ask, err);
    }
    if (!run->streamed) ask->t_first_token = tome_now();
    int rc = append_answer(ask, clean ? clean : text, len);
    if (rc == 0 && ask->stream) tomed_ask_post_text(ask, clean ? clean : text, len);
    free(clean);
    if (rc != 0) return tome_errorf(err, TOME_ENOMEM, "out of memory for the answer");
    run->streamed += len;
    run->room -= len;
    return 0;
}

/* One streamed chunk: text for the client, the finish reason, the usage.
 * A server that sends more text than max_tokens tokens can hold, or
 * counts more tokens than that, is refused: the answer is bounded. */
static int ask_event(void *arg, json_t *event, tome_error *err)
{
    ask_run *run = arg;
    tomed_ask *ask = run->ask;
    remote_chunk c;
    int rc = remote_chunk_read(event, &c, err);
    if (rc == 0 && c.has_usage && c.completion_tokens > ask->max_tokens)
        rc = past_max_tokens(ask, err);
    if (rc == 0 && c.text_len) rc = take_text(run, c.text, c.text_len, err);
    if (rc != 0) return rc;
    if (c.finish_reason)
        ask->finish_reason = strcmp(c.finish_reason, "length") == 0 ? "length" : "stop";
    if (c.has_usage) take_usage(ask, &c);
    return 0;
}

static int ask_tick(void *arg)
{
    ask_run *run = arg;
    return atomic_load(&run->ask->cancel) || remote_stopping(run->e);
}

/* The question once on replica `r`. */
static int ask_once(ask_run *run, int r, const int32_t *ids, size_t n, tome_error *err)
{
    engine_remote *e = run->e;
    json_t *body = request_body(e, ids, n, run->ask);
    remote_stream s = {.on_event = ask_event, .on_tick = ask_tick, .ctx = run};
    run->ask->t_question_fed = tome_now();
    int rc = body ? remote_post_stream(&e->replicas[r].target, "/completions", body, &s, err)
                  : tome_errorf(err, TOME_ENOMEM, "out of memory for %zu ids", n);
    json_decref(body);
    if (rc != 0 && rc != TOME_ECANCELED && s.status / 100 != 4) remote_mark_down(e, r, err->msg);
    if (rc != 0 && run->streamed && rc != TOME_ECANCELED) {
        tome_error_wrap(err,
                        "replica %s failed after %zu bytes of the answer were streamed (not "
                        "retried)",
                        e->replicas[r].conf.url, run->streamed);
        err->code = TOME_EUPSTREAM;
    }
    if (rc == 0 && !run->ask->finish_reason) run->ask->finish_reason = "stop";
    return rc;
}

/* The corpus's prefix and the question's ids, as one prompt. */
static int build_prompt(ask_run *run, int32_t **prompt, size_t *n, int *warm_on, tome_error *err)
{
    engine_remote *e = run->e;
    tomed_ask *ask = run->ask;
    int32_t *corpus = NULL, *question = NULL;
    size_t n_corpus = 0, n_question = 0;
    if (!ask->bare && !remote_state_get(e, ask->corpus, ask->version_id, &corpus, &n_corpus,
                                        warm_on, ask->state_id)) {
        atomic_fetch_add(&tomed_stats.cache_misses, 1);
        return tome_errorf(err, TOME_EMISMATCH,
                           "corpus '%s' has no prefilled state of its current version; start a "
                           "prefill first",
                           ask->corpus);
    }
    int rc = tomed_ask_prompt_ids(e->tokenizer, ask, &question, &n_question, err);
    int32_t *all = rc == 0 ? realloc(corpus, (n_corpus + n_question + 1) * sizeof *all) : NULL;
    if (rc == 0 && !all) rc = tome_errorf(err, TOME_ENOMEM, "out of memory");
    if (rc != 0) {
        free(corpus);
        free(question);
        return rc;
    }
    memcpy(all + n_corpus, question, n_question * sizeof *all);
    free(question);
    *prompt = all;
    *n = n_corpus + n_question;
    ask->corpus_tokens = (int64_t)n_corpus;
    ask->prompt_tokens = (int64_t)*n;
    ask->context_tokens = e->context;
    if (e->context && ask->prompt_tokens + ask->max_tokens > e->context)
        return tome_errorf(err, TOME_ELIMIT,
                           "the corpus (%zu tokens) and the question (%zu tokens) plus max_tokens "
                           "%d do not fit the model's context of %lld tokens",
                           n_corpus, n_question, ask->max_tokens, (long long)e->context);
    return 0;
}

static int run_ask(ask_run *run, tome_error *err)
{
    engine_remote *e = run->e;
    tomed_ask *ask = run->ask;
    int32_t *prompt = NULL;
    size_t n = 0;
    int warm_on = -1;
    int rc = build_prompt(run, &prompt, &n, &warm_on, err);
    unsigned tried = 0;
    const char *key = ask->bare ? TOMED_BARE_MODEL : ask->corpus;
    for (int r; rc == 0 && (r = remote_pick(e, key, ask->version_id, tried)) >= 0;) {
        tried |= 1u << r;
        if (!ask->bare && r != warm_on) { /* the corpus moved: warm it there first */
            tomed_log(TOMED_LOG_INFO, "re-warming '%s' on %s for a question", ask->corpus,
                      e->replicas[r].conf.url);
            atomic_fetch_add(&tomed_stats.remote_rewarms, 1);
            rc = warm(e, r, prompt, (size_t)ask->corpus_tokens, NULL, err);
            if (rc == 0)
                rc = remote_state_put(e, ask->corpus, ask->version_id, prompt,
                                      (size_t)ask->corpus_tokens, warm_on = r);
            if (rc != 0 && rc != TOME_ECANCELED) {
                rc = 0; /* try the next replica */
                continue;
            }
        }
        if (rc == 0) rc = ask_once(run, r, prompt, n, err);
        if (rc == 0 || run->streamed || rc == TOME_ECANCELED || rc == TOME_EINVAL) break;
        rc = 0;
    }
    if (rc == 0 && !ask->finish_reason) { /* err holds the last replica's failure */
        tome_error_wrap(err, "no replica could answer");
        rc = err->code = TOME_EUPSTREAM;
    }
    free(prompt);
    return rc;
}

void *remote_ask_main(void *arg)
{
    remote_work *work = arg;
    tomed_ask *ask = work->item;
    /* A token's text is at most its bytes, each as U+FFFD (3 bytes) where
     * they are not UTF-8. */
    ask_run run = {work->e, ask, 0, (size_t)ask->max_tokens * work->e->longest_token * 3};
    free(work);
    ask->t_queued = tome_now();
    tome_error err = {0};
    int rc = run_ask(&run, &err);
    if (rc == 0 && !ask->bare) {
        int hit = ask->cached_tokens >= ask->corpus_tokens;
        atomic_fetch_add(hit ? &tomed_stats.cache_hits : &tomed_stats.cache_misses, 1);
        atomic_fetch_add(&tomed_stats.cached_tokens, (uint64_t)ask->cached_tokens);
    }
    ask->rc = rc;
    if (rc != 0) ask->err = err;
    ask->t_end = tome_now();
    double decode_s = ask->t_end - ask->t_first_token;
    if (ask->completion_tokens > 1 && ask->t_first_token > 0 && decode_s > 0)
        ask->decode_tokens_per_s = (double)(ask->completion_tokens - 1) / decode_s;
    atomic_fetch_add(&tomed_stats.decode_tokens, (uint64_t)ask->completion_tokens);
    tomed_post(ask->server->pool, tomed_ask_finished, ask);
    remote_thread_done(run.e, 1);
    return NULL;
}
