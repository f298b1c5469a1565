/*
 * engine_asks.c - questions on the engine thread: each starts from a fork
 * of its corpus's prefilled state (or a fresh state for the bare model),
 * feeds its question turn, then advances one token per round of the
 * executor's loop, so that many questions share the thread fairly.
 */
#include "daemon/engine_internal.h"

#include <stdlib.h>
#include <string.h>

/* The next token of a question, from the logits just computed: its
 * logit_bias added first (ids were checked against the vocabulary when the
 * question started). */
static int32_t next_token(engine_local *e, active_ask *a)
{
    const tomed_ask *ask = a->ask;
    if (e->answer_ids) return a->forced < e->n_answer_ids ? e->answer_ids[a->forced++] : e->eos_id;
    for (int i = 0; i < ask->n_logit_bias; i++)
        e->logits[ask->logit_bias[i].id] += ask->logit_bias[i].bias;
    return tomed_sample(e->sampler, e->logits, e->sample_vocab, ask->temperature, ask->top_p,
                        &a->rng);
}

void engine_finish_ask(engine_local *e, int index, int rc, const tome_error *err)
{
    active_ask *a = &e->active[index];
    tomed_ask *ask = a->ask;
    if (rc == 0) engine_flush_answer(e, a);
    ask->rc = rc;
    if (rc != 0 && err) ask->err = *err;
    ask->t_end = tome_now();
    double decode_s = ask->t_end - ask->t_first_token;
    if (ask->completion_tokens > 1 && decode_s > 0)
        ask->decode_tokens_per_s = (double)(ask->completion_tokens - 1) / decode_s;
    if (ask->decode_tokens_per_s > 0)
        atomic_store(&tomed_stats.decode_tokens_per_s, ask->decode_tokens_per_s);
    if (a->state) v4_state_free(a->state);
    if (a->detok) v4_detok_free(a->detok);
    free(a->held);
    e->active[index] = e->active[--e->n_active];
    tomed_post(e->server->pool, tomed_ask_finished, ask);
}

/* A bare prompt's state: a fork of its longest cached prefix, whose
 * tokens (*skip) need no feeding, else a fresh one. */
static int start_bare(engine_local *e, active_ask *a, const int32_t *ids, size_t n, size_t *skip,
                      tome_error *err)
{
    tomed_ask *ask = a->ask;
    pthread_mutex_lock(&e->lock);
    cached_state *c = engine_cache_find_prefix(e, ids, n);
    int rc = c ? v4_state_fork(c->state, &a->state, err) : v4_state_new(e->model, &a->state, err);
    *skip = c && rc == 0 ? (size_t)c->tokens : 0;
    if (c && rc == 0) engine_state_id(c, ask->state_id, sizeof ask->state_id);
    pthread_mutex_unlock(&e->lock);
    ask->corpus_tokens = ask->cached_tokens = (int64_t)*skip;
    return rc;
}

/* The state a question on a corpus starts from: a fork of the corpus's. */
static int start_state(engine_local *e, active_ask *a, tome_error *err)
{
    tomed_ask *ask = a->ask;
    if (ask->saved_path[0] &&
        !engine_local_has_state(&e->base, ask->corpus, ask->version_id, NULL, NULL)) {
        v4_state *saved;
        int rc = engine_restore_file(e, ask->saved_path, &saved, err);
        if (rc != 0) return tome_error_wrap(err, "restoring cached state %s", ask->saved_id);
        engine_cache_put(e, ask->corpus, ask->version_id, saved, ask->saved_id);
    }
    pthread_mutex_lock(&e->lock);
    cached_state *c = engine_cache_find(e, ask->corpus, ask->version_id);
    int rc = c ? v4_state_fork(c->state, &a->state, err)
               : tome_errorf(err, TOME_EMISMATCH,
                             "corpus '%s' has no prefilled state of its current version; "
                             "start a prefill first",
                             ask->corpus);
    if (c) {
        ask->corpus_tokens = ask->cached_tokens = c->tokens;
        engine_state_id(c, ask->state_id, sizeof ask->state_id);
    }
    pthread_mutex_unlock(&e->lock);
    if (rc != 0) {
        atomic_fetch_add(&tomed_stats.cache_misses, 1);
        return rc;
    }
    atomic_fetch_add(&tomed_stats.cache_hits, 1);
    return 0;
}

static int check_bias(engine_local *e, const tomed_ask *ask, tome_error *err)
{
    for (int i = 0; i < ask->n_logit_bias; i++)
        if (ask->logit_bias[i].id >= e->sample_vocab)
            return tome_errorf(err, TOME_EINVAL,
                               "logit_bias names token id %d; the vocabulary has ids 0 to %d",
                               (int)ask->logit_bias[i].id, e->sample_vocab - 1);
    return 0;
}

/* Feed the question's `n` ids (after the `skip` its state holds). */
static int feed(engine_local *e, active_ask *a, const int32_t *ids, size_t n, tome_error *err)
{
    tomed_ask *ask = a->ask;
    ask->prompt_tokens = ask->corpus_tokens + (int64_t)n;
    ask->context_tokens = e->context;
    if (ask->prompt_tokens + ask->max_tokens > e->context)
        return tome_errorf(err, TOME_ELIMIT,
                           "the corpus (%lld tokens) and the question (%zu tokens) plus "
                           "max_tokens %d do not fit the model's context of %lld tokens",
                           (long long)ask->corpus_tokens, n, ask->max_tokens,
                           (long long)e->context);
    double t0 = tome_now();
    v4_eval ev = {.last_logits = e->logits};
    int rc = v4_eval_tokens(a->state, ids, n, &ev, err);
    if (rc != 0) return rc;
    ask->t_question_fed = tome_now();
    if (ask->t_question_fed > t0)
        ask->question_tokens_per_s = (double)n / (ask->t_question_fed - t0);
    atomic_fetch_add(&tomed_stats.prefill_tokens, n);
    return 0;
}

/* The first step of a question: its state, then feed the turn; a bare
 * prompt that found no cached prefix leaves its state as one. */
static int start_ask(engine_local *e, active_ask *a, tome_error *err)
{
    tomed_ask *ask = a->ask;
    int32_t *ids = NULL;
    size_t n = 0, skip = 0;
    int rc = tomed_ask_prompt_ids(e->tokenizer, ask, &ids, &n, err);
    if (rc == 0) rc = ask->bare ? start_bare(e, a, ids, n, &skip, err) : start_state(e, a, err);
    if (rc == 0) rc = check_bias(e, ask, err);
    if (rc == 0) rc = feed(e, a, ids + skip, n - skip, err);
    v4_state *prefix = NULL;
    if (rc == 0 && ask->bare && skip == 0 && v4_state_fork(a->state, &prefix, err) == 0)
        engine_cache_put_prefix(e, ids, n, prefix);
    free(ids);
    if (rc != 0) return rc;
    a->rng = ask->seed;
    a->next_id = next_token(e, a);
    return v4_detok_new(e->tokenizer, V4_DETOK_VALID_UTF8, &a->detok, err);
}

/* One token: account for the sampled id, then feed it for the next one.
 * Returns 1 when the question is finished. */
static int step_ask(engine_local *e, active_ask *a, tome_error *err)
{
    tomed_ask *ask = a->ask;
    if (!a->state) {
        int rc = start_ask(e, a, err);
        return rc != 0 ? rc : 0;
    }
    int32_t id = a->next_id;
    if (e->token_delay_ms) engine_pause_ms(e->token_delay_ms);
    if (ask->completion_tokens == 0) ask->t_first_token = tome_now();
    ask->completion_tokens++;
    atomic_fetch_add(&tomed_stats.decode_tokens, 1);
    if (id == e->eos_id) {
        ask->finish_reason = "stop";
        return 1;
    }
    const char *text;
    size_t len;
    int rc = v4_detok_feed(a->detok, id, &text, &len, err);
    if (rc != 0) return rc;
    if (engine_take_text(e, a, text, len)) return 1;
    if (ask->completion_tokens >= ask->max_tokens) {
        ask->finish_reason = "length";
        return 1;
    }
    v4_eval ev = {.last_logits = e->logits};
    rc = v4_eval_tokens(a->state, &id, 1, &ev, err);
    if (rc != 0) return rc;
    a->next_id = next_token(e, a);
    return 0;
}

void engine_run_asks(engine_local *e)
{
    for (int i = 0; i < e->n_active;) {
        active_ask *a = &e->active[i];
        tome_error err = {0};
        int rc;
        if (atomic_load(&a->ask->cancel))
            rc = tome_errorf(&err, TOME_ECANCELED, "question cancelled");
        else
            rc = step_ask(e, a, &err);
        if (rc != 0 || a->ask->finish_reason) {
            if (rc == 1) rc = 0;
            engine_finish_ask(e, i, rc, &err);
        } else {
            i++;
        }
    }
}
