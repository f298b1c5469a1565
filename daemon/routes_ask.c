/*
 * routes_ask.c - POST /v1/corpora/NAME/ask: a question over a corpus.
 *
 * The request is checked here (fields, ranges, rights), a worker looks up
 * the corpus's current version in the store, and the question goes to the
 * engine executor, which forks the corpus's prefilled state for it.  With
 * "stream" the answer goes out as Server-Sent Events while it is decoded,
 * with keepalive comments while the question waits or is being fed; the
 * last event (or the single JSON answer without streaming) carries the
 * token counts, the timings and the state the answer came from, with the
 * answer's citations and the question's sources (ask_extras.c).  Every
 * answered question is recorded in the store's history.
 *
 * The extras are store lookups on workers: the sources start with the
 * question, the citations once the answer is complete.  The context is
 * freed when the last of its holders (the engine, each lookup) lets go.
 *
 * A client that disconnects cancels its question: on_abort sets the flag
 * the engine checks before each token.
 *
 * The OpenAI-compatible completions (routes_openai.c) are questions too:
 * they parse their own body (rendering their turns for the engine) and
 * format their own replies, and share everything else here
 * (tomed_ask_run).  The bare model's have no corpus: no version to look
 * up, no extras and no history row.
 */
#include "daemon/conf.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/router.h"
#include "daemon/server.h"
#include "daemon/storecall.h"
#include "daemon/workers.h"

#include "tokenizer/tokenizer.h"
#include "store/store.h"

#include <errno.h>
#include <event2/event.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_TOKENS 512
#define MAX_STOP_STRINGS   8
#define MAX_STOP_BYTES     256
#define MAX_LOGIT_BIAS     1024

/* What the loop thread keeps beside the engine's part of the question. */
typedef struct ask_ctx {
    tomed_ask ask; /* first: the engine's reports carry &ask */
    struct event *keepalive;
    double last_write;
    int64_t corpus_id;
    int holds;         /* the engine and the extras lookups still running */
    json_t *sources;   /* filled by a worker */
    json_t *citations; /* filled by a worker */
} ask_ctx;

void tomed_ask_clear(tomed_ask *ask)
{
    free(ask->question);
    free(ask->answer);
    for (int i = 0; i < ask->n_stop; i++) free(ask->stop[i]);
    free(ask->logit_bias);
    if (ask->turns) v4_prompt_free(ask->turns);
    free(ask->turns);
    free(ask->prompt_ids);
}

static void ask_free(ask_ctx *ctx)
{
    if (ctx->keepalive) event_free(ctx->keepalive);
    tomed_ask_clear(&ctx->ask);
    json_decref(ctx->sources);
    json_decref(ctx->citations);
    free(ctx);
}

static void ask_aborted(tomed_request *r, void *arg)
{
    ask_ctx *ctx = arg;
    ctx->ask.r = NULL;
    atomic_store(&ctx->ask.cancel, 1);
    if (ctx->keepalive) event_del(ctx->keepalive);
}

static void send_keepalive(evutil_socket_t fd, short what, void *arg)
{
    ask_ctx *ctx = arg;
    if (!ctx->ask.r) return;
    if (tome_now() - ctx->last_write < ctx->ask.server->cfg.keepalive_interval_s) return;
    tomed_stream_comment(ctx->ask.r, "keepalive");
    ctx->last_write = tome_now();
}

/* ------------------------------------------------------------------------
 * The answer
 * ------------------------------------------------------------------------ */

static json_t *usage_json(const tomed_ask *ask)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "corpus_tokens", (json_int_t)ask->corpus_tokens,
                     "prompt_tokens", (json_int_t)ask->prompt_tokens, "cached_tokens",
                     (json_int_t)ask->cached_tokens, "completion_tokens",
                     (json_int_t)ask->completion_tokens, "context_tokens",
                     (json_int_t)ask->context_tokens);
}

static json_t *answer_json(const ask_ctx *ctx)
{
    const tomed_ask *ask = &ctx->ask;
    double ms = 1000.0;
    double ttft = ask->t_first_token > 0 ? (ask->t_first_token - ask->t_request) * ms : 0;
    return json_pack("{s:s, s:s, s:o, s:{s:f, s:f, s:f, s:f, s:f}, s:{s:s, s:I, s:b}, s:O, s:O}",
                     "answer", ask->answer ? ask->answer : "", "finish_reason", ask->finish_reason,
                     "usage", usage_json(ask), "timings", "queue_ms",
                     (ask->t_queued - ask->t_request) * ms, "ttft_ms", ttft, "prefill_tokens_per_s",
                     ask->question_tokens_per_s, "decode_tokens_per_s", ask->decode_tokens_per_s,
                     "total_ms", (ask->t_end - ask->t_request) * ms, "state", "id", ask->state_id,
                     "tokens", (json_int_t)ask->corpus_tokens, "hit",
                     ask->cached_tokens >= ask->corpus_tokens, "citations", ctx->citations,
                     "sources", ctx->sources);
}

void tomed_ask_text(tomed_ask *ask, const char *text, size_t len)
{
    ask_ctx *ctx = (ask_ctx *)ask;
    if (!ask->r) return;
    if (ask->openai)
        tomed_openai_text(ask, text, len);
    else
        tomed_stream_event(ask->r, "token", json_pack("{s:s%}", "text", text, len));
    ctx->last_write = tome_now();
}

typedef struct history_row {
    tomed_server *server;
    store_question q;
} history_row;

static void write_history(void *arg)
{
    history_row *h = arg;
    store *db;
    tome_error err = {0};
    int64_t id;
    int rc = tomed_thread_store(h->server->cfg.state_dir, &db, &err);
    if (rc == 0) rc = store_question_add(db, &h->q, &id, &err);
    if (rc != 0) tomed_log(TOMED_LOG_WARN, "history: %s", err.msg);
    free(h->q.question);
    free(h->q.answer);
    free(h);
}

static void record(ask_ctx *ctx)
{
    tomed_ask *ask = &ctx->ask;
    history_row *h = calloc(1, sizeof *h);
    if (!h) return;
    h->server = ask->server;
    h->q.corpus_id = ctx->corpus_id;
    h->q.version_id = ask->version_id;
    h->q.question = strdup(ask->question);
    h->q.answer = strdup(ask->answer ? ask->answer : "");
    h->q.prompt_tokens = ask->prompt_tokens;
    h->q.answer_tokens = ask->completion_tokens;
    h->q.prefill_seconds = ask->t_question_fed - ask->t_queued;
    h->q.decode_seconds = ask->t_end - ask->t_question_fed;
    if (!h->q.question || !h->q.answer ||
        tomed_pool_submit(ask->server->pool, write_history, NULL, h) != 0) {
        free(h->q.question);
        free(h->q.answer);
        free(h);
    }
}

static void reply_failure(tomed_ask *ask)
{
    tomed_request *r = ask->r;
    json_t *extra = ask->rc == TOME_ELIMIT ? json_pack("{s:o}", "usage", usage_json(ask)) : NULL;
    if (r->streaming && ask->openai) {
        json_decref(extra);
        tomed_stream_data(
            r, tomed_openai_error_json(tomed_status_for(ask->rc), ask->rc, ask->err.msg));
        tomed_stream_end(r);
    } else if (r->streaming) {
        json_t *error =
            json_pack("{s:s, s:s}", "code", tome_error_name(ask->rc), "message", ask->err.msg);
        if (extra) json_object_update(error, extra);
        json_decref(extra);
        tomed_stream_event(r, "error", json_pack("{s:o}", "error", error));
        tomed_stream_end(r);
    } else {
        tomed_reply_error_ex(r, tomed_status_for(ask->rc), ask->rc, extra, "%s", ask->err.msg);
    }
}

/* One holder is done; the last one answers (when the answer is good and
 * its client still there) and frees the context. */
static void release(ask_ctx *ctx)
{
    if (--ctx->holds > 0) return;
    tomed_ask *ask = &ctx->ask;
    if (ask->r && ask->rc == 0) {
        ask->r->on_abort = NULL;
        if (!ctx->citations) ctx->citations = json_array();
        if (!ctx->sources) ctx->sources = json_array();
        if (ask->openai) {
            tomed_openai_answer(ask, ctx->citations, ctx->sources);
        } else if (ask->r->streaming) {
            tomed_stream_event(ask->r, "done", answer_json(ctx));
            tomed_stream_end(ask->r);
        } else {
            tomed_reply_json(ask->r, 200, answer_json(ctx));
        }
    }
    ask_free(ctx);
}

static void extras_done(void *arg)
{
    release(arg);
}

static void find_sources(void *arg)
{
    ask_ctx *ctx = arg;
    ctx->sources =
        tomed_sources_json(ctx->ask.server->cfg.state_dir, ctx->ask.version_id, ctx->ask.question);
}

static void find_citations(void *arg)
{
    ask_ctx *ctx = arg;
    ctx->citations = tomed_citations_json(ctx->ask.server->cfg.state_dir, ctx->ask.version_id,
                                          ctx->ask.answer ? ctx->ask.answer : "");
}

/* Run `work` on a worker as one more holder of the context. */
static void lookup(ask_ctx *ctx, tomed_fn work)
{
    ctx->holds++;
    if (tomed_pool_submit(ctx->ask.server->pool, work, extras_done, ctx) != 0) ctx->holds--;
}

void tomed_ask_finished(void *arg)
{
    ask_ctx *ctx = arg;
    tomed_ask *ask = &ctx->ask;
    if (ask->rc == 0 && !ask->bare) record(ctx);
    if (ask->r && ask->rc != 0) {
        ask->r->on_abort = NULL;
        reply_failure(ask);
        ask->r = NULL;
    }
    if (ask->r && !ask->bare) lookup(ctx, find_citations);
    release(ctx);
}

/* ------------------------------------------------------------------------
 * The question
 * ------------------------------------------------------------------------ */

typedef struct version_lookup {
    ask_ctx *ctx;
    int rc;
    tome_error err;
} version_lookup;

static void find_version(void *arg)
{
    version_lookup *v = arg;
    tomed_ask *ask = &v->ctx->ask;
    if (ask->bare) return; /* no corpus to look up */
    store *db;
    v->rc = tomed_thread_store(ask->server->cfg.state_dir, &db, &v->err);
    if (v->rc == 0) v->rc = store_corpus_find(db, ask->corpus, &v->ctx->corpus_id, &v->err);
    if (v->rc == TOME_ENOTFOUND) {
        tome_errorf(&v->err, TOME_ENOTFOUND, "corpus '%s' does not exist", ask->corpus);
        return;
    }
    if (v->rc == 0) v->rc = store_version_latest(db, v->ctx->corpus_id, &ask->version_id, &v->err);
    if (v->rc == TOME_ENOTFOUND)
        v->rc =
            tome_errorf(&v->err, TOME_EMISMATCH, "corpus '%s' has nothing ingested", ask->corpus);
    if (v->rc != 0) return;
    /* A state saved by an earlier daemon serves when none is in memory. */
    const char *fingerprint = tomed_engine_state_fingerprint(tomed_jobs_engine(ask->server->jobs));
    int64_t tokens;
    if (!fingerprint) return;
    int found = tomed_saved_state(db, v->ctx->corpus_id, ask->version_id, fingerprint,
                                  ask->saved_path, ask->saved_id, &tokens, &v->err);
    if (found < 0) v->rc = found;
    /* The cache's LRU clock: a question uses its version's saved state. */
    tome_error touch = {0};
    if (found == 1 && store_state_touch(db, strtoll(ask->saved_id, NULL, 10), &touch) != 0)
        tomed_log(TOMED_LOG_WARN, "state %s: %s", ask->saved_id, touch.msg);
}

/* Back on the loop: hand the question to the engine, or answer now. */
static void submit(void *arg)
{
    version_lookup *v = arg;
    ask_ctx *ctx = v->ctx;
    tomed_ask *ask = &ctx->ask;
    tomed_engine *engine = tomed_jobs_engine(ask->server->jobs);
    int rc = v->rc;
    tome_error err = v->err;
    free(v);
    if (!ask->r) {
        ask_free(ctx);
        return;
    }
    if (rc == 0 && !ask->bare && !ask->saved_path[0] &&
        !tomed_engine_has_state(engine, ask->corpus, ask->version_id, NULL, NULL)) {
        atomic_fetch_add(&tomed_stats.cache_misses, 1);
        rc = tome_errorf(&err, TOME_EMISMATCH,
                         "corpus '%s' has no prefilled state of its current version; "
                         "POST /v1/corpora/%s/prefill first",
                         ask->corpus, ask->corpus);
    }
    if (rc == 0) rc = tomed_engine_submit_ask(engine, ask, &err);
    if (rc != 0) {
        ask->r->on_abort = NULL;
        tomed_reply_tome_error(ask->r, &err);
        ask_free(ctx);
        return;
    }
    ctx->holds = 1; /* the engine's, until tomed_ask_finished */
    if (!ask->bare) lookup(ctx, find_sources);
    if (ask->stream) {
        tomed_stream_begin(ask->r, 200, "text/event-stream");
        ctx->last_write = tome_now();
        ctx->keepalive = event_new(ask->server->base, -1, EV_PERSIST, send_keepalive, ctx);
        struct timeval tv = {1, 0};
        if (ctx->keepalive) event_add(ctx->keepalive, &tv);
    }
}

static int number_field(tomed_request *r, json_t *body, const char *key, double lo, double hi,
                        double *out)
{
    json_t *v = json_object_get(body, key);
    if (!v) return 0;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi) {
        tomed_reply_error(r, TOME_EINVAL, "'%s' must be a number from %g to %g", key, lo, hi);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

static int out_of_memory(tomed_request *r)
{
    tomed_reply_error(r, TOME_ENOMEM, "out of memory");
    return -1;
}

/* The parsers below answer the request themselves when they fail. */
static int parse_stop(tomed_request *r, json_t *stop, tomed_ask *ask)
{
    if (!stop) return 0;
    if (json_is_string(stop)) { /* OpenAI's shorthand for one stop string */
        json_t *one = json_pack("[O]", stop);
        int rc = one ? parse_stop(r, one, ask) : out_of_memory(r);
        json_decref(one);
        return rc;
    }
    if (!json_is_array(stop) || json_array_size(stop) > MAX_STOP_STRINGS) {
        tomed_reply_error(r, TOME_EINVAL, "'stop' must be an array of at most %d strings",
                          MAX_STOP_STRINGS);
        return -1;
    }
    size_t i;
    json_t *s;
    json_array_foreach(stop, i, s) {
        const char *text = json_string_value(s);
        if (!text || !*text || strlen(text) > MAX_STOP_BYTES) {
            tomed_reply_error(r, TOME_EINVAL, "stop[%zu] must be a string of 1 to %d bytes", i,
                              MAX_STOP_BYTES);
            return -1;
        }
        if (!(ask->stop[ask->n_stop] = strdup(text))) return out_of_memory(r);
        ask->n_stop++;
    }
    return 0;
}

/* OpenAI's logit_bias: {"token id": bias from -100 to 100}.  Ids past the
 * model's vocabulary are refused by the engine, which knows its size. */
static int parse_logit_bias(tomed_request *r, json_t *bias, tomed_ask *ask)
{
    if (!bias) return 0;
    if (!json_is_object(bias) || json_object_size(bias) > MAX_LOGIT_BIAS) {
        tomed_reply_error(r, TOME_EINVAL,
                          "'logit_bias' must be an object of at most %d token ids and biases",
                          MAX_LOGIT_BIAS);
        return -1;
    }
    ask->logit_bias = calloc(json_object_size(bias) + 1, sizeof *ask->logit_bias);
    if (!ask->logit_bias) return out_of_memory(r);
    const char *key;
    json_t *v;
    json_object_foreach(bias, key, v) {
        char *end;
        errno = 0;
        long id = strtol(key, &end, 10);
        if (errno || end == key || *end || id < 0 || id > INT32_MAX || !json_is_number(v) ||
            json_number_value(v) < -100 || json_number_value(v) > 100) {
            tomed_reply_error(r, TOME_EINVAL,
                              "logit_bias: '%s' must be a token id mapped to a number from -100 "
                              "to 100",
                              key);
            return -1;
        }
        ask->logit_bias[ask->n_logit_bias].id = (int32_t)id;
        ask->logit_bias[ask->n_logit_bias].bias = (float)json_number_value(v);
        ask->n_logit_bias++;
    }
    return 0;
}

int tomed_ask_parse_sampling(tomed_request *r, json_t *body, const char *max_tokens_key,
                             tomed_ask *ask)
{
    double max_tokens = DEFAULT_MAX_TOKENS, seed = 0;
    ask->top_p = 1;
    if (number_field(r, body, max_tokens_key, 1, r->server->cfg.max_answer_tokens, &max_tokens) ||
        number_field(r, body, "temperature", 0, 100, &ask->temperature) ||
        number_field(r, body, "top_p", 1e-6, 1, &ask->top_p) ||
        number_field(r, body, "seed", 0, 9007199254740991.0, &seed))
        return -1;
    ask->max_tokens = (int)max_tokens;
    ask->seed = (uint64_t)seed;
    if (parse_logit_bias(r, json_object_get(body, "logit_bias"), ask) != 0) return -1;
    return parse_stop(r, json_object_get(body, "stop"), ask);
}

int tomed_ask_parse_stream(tomed_request *r, json_t *body, int by_default, tomed_ask *ask)
{
    json_t *stream = json_object_get(body, "stream");
    if (stream && !json_is_boolean(stream)) {
        tomed_reply_error(r, TOME_EINVAL, "'stream' must be true or false");
        return -1;
    }
    ask->stream = stream ? json_is_true(stream) : by_default;
    return 0;
}

int tomed_ask_parse_question(tomed_request *r, json_t *body, tomed_ask *ask)
{
    const char *question = json_string_value(json_object_get(body, "question"));
    if (!question || !*question) {
        tomed_reply_error(r, TOME_EINVAL, "'question' must be a non-empty string");
        return -1;
    }
    if (!(ask->question = strdup(question))) return out_of_memory(r);
    if (tomed_ask_parse_sampling(r, body, "max_tokens", ask) != 0) return -1;
    const char *thinking = json_string_value(json_object_get(body, "thinking"));
    if (json_object_get(body, "thinking") && !thinking) thinking = "";
    if (!thinking || strcmp(thinking, "none") == 0)
        ask->thinking = 0;
    else if (strcmp(thinking, "high") == 0)
        ask->thinking = 1;
    else if (strcmp(thinking, "max") == 0)
        ask->thinking = 2;
    else {
        tomed_reply_error(r, TOME_EINVAL, "'thinking' must be none, high or max");
        return -1;
    }
    return tomed_ask_parse_stream(r, body, 1, ask);
}

void tomed_route_ask(tomed_request *r)
{
    if (tomed_require_corpus(r, TOMED_RIGHT_READ) == 0) tomed_ask_run(r, tomed_ask_parse_question);
}

void tomed_ask_run(tomed_request *r, tomed_ask_parser parse)
{
    const char *why;
    if (!tomed_engine_ready(tomed_jobs_engine(r->server->jobs), &why)) {
        tomed_reply_error_ex(r, 503, TOME_EBUSY, NULL, "the model is not ready: %s", why);
        return;
    }
    json_t *body = tomed_request_json(r);
    if (!body) return;
    ask_ctx *ctx = calloc(1, sizeof *ctx);
    version_lookup *v = calloc(1, sizeof *v);
    int rc = ctx && v ? parse(r, body, &ctx->ask) : out_of_memory(r);
    json_decref(body);
    if (rc != 0) {
        if (ctx) ask_free(ctx);
        free(v);
        return;
    }
    tomed_ask *ask = &ctx->ask;
    ask->r = r;
    ask->server = r->server;
    ask->t_request = r->started;
    snprintf(ask->corpus, sizeof ask->corpus, "%s", r->params[0]);
    r->on_abort = ask_aborted;
    r->abort_arg = ctx;
    v->ctx = ctx;
    if (tomed_pool_submit(r->server->pool, find_version, submit, v) != 0) {
        r->on_abort = NULL;
        tomed_reply_error(r, TOME_ENOMEM, "cannot queue the question");
        ask_free(ctx);
        free(v);
    }
}
