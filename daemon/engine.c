/*
 * engine.c - the engine interface's dispatch: tomed_engine_* call the
 * operations of the engine that tomed.conf chose (jobs.h describes them).
 *
 * Kept apart from both implementations so that neither knows the other,
 * and so that the choice is made in one place; what both engines' threads
 * need of the loop (posting answer text) is here too.
 */
#include "daemon/jobs.h"
#include "daemon/server.h"
#include "daemon/workers.h"
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

typedef struct text_report {
    tomed_ask *ask;
    size_t len;
    char text[];
} text_report;

static void deliver_text(void *arg)
{
    text_report *t = arg;
    tomed_ask_text(t->ask, t->text, t->len);
    free(t);
}

void tomed_ask_post_text(tomed_ask *ask, const char *text, size_t len)
{
    text_report *t = malloc(sizeof *t + len);
    if (!t) return;
    t->ask = ask;
    t->len = len;
    memcpy(t->text, text, len);
    tomed_post(ask->server->pool, deliver_text, t);
}

static int prompt_ids(const v4_tokenizer *t, v4_prompt *p, int rc, int32_t **ids, size_t *n,
                      tome_error *err)
{
    v4_ids out = {0};
    if (rc == 0) rc = v4_prompt_tokenize(t, p, &out, err);
    v4_prompt_free(p);
    if (rc != 0) {
        free(out.ids);
        return rc;
    }
    *ids = out.ids;
    *n = out.n;
    return 0;
}

/* Thinking "max" uses the thinking opener alone, since V4 puts the
 * think-max instruction before the corpus, which would need a prefill of
 * its own. */
int tomed_ask_prompt_ids(const v4_tokenizer *t, tomed_ask *ask, int32_t **ids, size_t *n,
                         tome_error *err)
{
    if (ask->prompt_ids) { /* given as ids: the engine takes them */
        *ids = ask->prompt_ids;
        *n = ask->n_prompt_ids;
        ask->prompt_ids = NULL;
        return 0;
    }
    v4_chat_options opts = {.thinking = ask->thinking > 0};
    v4_prompt p = {0};
    int rc = 0;
    if (ask->turns) { /* rendered by routes_openai.c; the engine frees it */
        p = *ask->turns;
        free(ask->turns);
        ask->turns = NULL;
    } else {
        rc = v4_docqa_question(&opts, ask->question, strlen(ask->question), &p, err);
    }
    return prompt_ids(t, &p, rc, ids, n, err);
}

int tomed_engine_start(tomed_server *s, tomed_engine **out, tome_error *err)
{
    if (s->cfg.engine == TOMED_ENGINE_REMOTE) return tomed_engine_start_remote(s, out, err);
    return tomed_engine_start_local(s, out, err);
}

void tomed_engine_stop(tomed_engine *e)
{
    if (e) e->ops->stop(e);
}

int tomed_engine_ready(tomed_engine *e, const char **why)
{
    return e->ops->ready(e, why);
}

const struct v4_model *tomed_engine_model(tomed_engine *e, const char **fingerprint)
{
    return e->ops->model(e, fingerprint);
}

const struct v4_tokenizer *tomed_engine_tokenizer(tomed_engine *e, const char **fingerprint)
{
    return e->ops->tokenizer(e, fingerprint);
}

const char *tomed_engine_state_fingerprint(tomed_engine *e)
{
    return e->ops->state_fingerprint(e);
}

int tomed_engine_submit_prefill(tomed_engine *e, tomed_job *job, tome_error *err)
{
    return e->ops->submit_prefill(e, job, err);
}

int tomed_engine_submit_ask(tomed_engine *e, tomed_ask *ask, tome_error *err)
{
    return e->ops->submit_ask(e, ask, err);
}

int tomed_engine_has_state(tomed_engine *e, const char *corpus, int64_t version_id, int64_t *tokens,
                           char id[48])
{
    return e->ops->has_state(e, corpus, version_id, tokens, id);
}

void tomed_engine_forget(tomed_engine *e, const char *corpus)
{
    e->ops->forget(e, corpus);
}

int tomed_engine_drop_state(tomed_engine *e, const char *id)
{
    return e->ops->drop_state(e, id);
}

json_t *tomed_engine_states(tomed_engine *e)
{
    return e->ops->states(e);
}

json_t *tomed_engine_status(tomed_engine *e)
{
    return e->ops->status(e);
}
