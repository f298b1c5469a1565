/*
 * routes_openai.c - the OpenAI-compatible endpoints under /openai/v1/, so
 * that OpenAI's SDKs and the tools built on them can ask tome questions.
 *
 *   GET  /openai/v1/models            the corpora with a prefilled state
 *   POST /openai/v1/chat/completions  a question to one of them
 *
 * A "model" is a corpus: its prefilled state is the long shared prompt, and
 * the last user message is the question, asked exactly as
 * POST /v1/corpora/NAME/ask asks it (routes_ask.c does the work; this file
 * parses OpenAI's request and writes OpenAI's replies).  Earlier messages
 * would need a state per conversation, so they are refused for now rather
 * than silently dropped.  The same listeners, credentials and rights apply;
 * errors take OpenAI's shape {"error": {"message", "type", "param",
 * "code"}} (http.c asks tomed_openai_error_json for every error of these
 * routes, the router's 401 included).  tome's own extras (citations,
 * sources, the state) ride along under "tome".
 */
#include "daemon/tomed.h"

#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

json_t *tomed_openai_error_json(int status, int code, const char *message)
{
    const char *type = "invalid_request_error", *name = tome_error_name(code);
    if (status == 401) {
        type = "authentication_error";
        name = "invalid_api_key";
    } else if (status == 403) {
        type = "permission_error";
    } else if (status == 404) {
        name = "model_not_found";
    } else if (status == 429) {
        type = "rate_limit_error";
    } else if (status >= 500) {
        type = "server_error";
    }
    return json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", message, "type", type, "param",
                     "code", name);
}

/* ------------------------------------------------------------------------
 * GET /openai/v1/models
 * ------------------------------------------------------------------------ */

/* Can a question on corpus `name` start now: is its current version's
 * state in memory or saved? */
static int has_state(tomed_call *c, store *db, const char *name, tome_error *err)
{
    int64_t corpus_id, version_id, tokens;
    int rc = store_corpus_find(db, name, &corpus_id, err);
    if (rc == 0) rc = store_version_latest(db, corpus_id, &version_id, err);
    if (rc == TOME_ENOTFOUND) return 0;
    if (rc != 0) return rc;
    tomed_engine *engine = tomed_jobs_engine(c->server->jobs);
    if (tomed_engine_has_state(engine, name, version_id, NULL, NULL)) return 1;
    const char *fingerprint;
    char path[TOMED_PATH_MAX], id[32];
    if (!tomed_engine_model(engine, &fingerprint)) return 0;
    return tomed_saved_state(db, corpus_id, version_id, fingerprint, path, id, &tokens, err);
}

static int list_models(tomed_call *c, store *db, tome_error *err)
{
    char **names;
    size_t n;
    /* OpenAI's "created" is a Unix time; the daemon's start is ours. */
    json_int_t created = (json_int_t)(time(NULL) - (tome_now() - c->server->started));
    int rc = store_corpus_list(db, &names, &n, err);
    if (rc != 0) return rc;
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++) {
        int found = rc == 0 && tomed_principal_can(&c->principal, names[i], TOMED_RIGHT_READ)
                        ? has_state(c, db, names[i], err)
                        : 0;
        if (found < 0) rc = found;
        if (found == 1)
            json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s}", "id", names[i], "object",
                                                  "model", "created", created, "owned_by", "tome"));
        free(names[i]);
    }
    free(names);
    c->result = json_pack("{s:s, s:o}", "object", "list", "data", data);
    return rc;
}

void tomed_route_openai_models(tomed_request *r)
{
    tomed_call *c = tomed_call_new(r, list_models, 200);
    if (c) tomed_call_start(c);
}

/* ------------------------------------------------------------------------
 * POST /openai/v1/chat/completions
 * ------------------------------------------------------------------------ */

/* A message's text: a string, or an array of {"type": "text", "text"}
 * parts, joined (malloc'd); NULL when it is neither. */
static char *message_text(json_t *content)
{
    if (json_is_string(content)) return strdup(json_string_value(content));
    if (!json_is_array(content)) return NULL;
    size_t len = 0, i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        const char *text = json_string_value(json_object_get(part, "text"));
        if (!text || !json_is_string(json_object_get(part, "type")) ||
            strcmp(json_string_value(json_object_get(part, "type")), "text") != 0)
            return NULL;
        len += strlen(text);
    }
    char *out = calloc(1, len + 1);
    if (!out) return NULL;
    json_array_foreach(content, i, part)
        strcat(out, json_string_value(json_object_get(part, "text")));
    return out;
}

static int parse_question(tomed_request *r, json_t *messages, tomed_ask *ask)
{
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        tomed_reply_error(r, TOME_EINVAL, "'messages' must be a non-empty array");
        return -1;
    }
    if (json_array_size(messages) > 1) {
        tomed_reply_error(r, TOME_EINVAL,
                          "only one message is supported yet: the user's question (system "
                          "messages and earlier turns are not)");
        return -1;
    }
    json_t *last = json_array_get(messages, 0);
    const char *role = json_string_value(json_object_get(last, "role"));
    if (!role || strcmp(role, "user") != 0) {
        tomed_reply_error(r, TOME_EINVAL, "the last message must have the role 'user'");
        return -1;
    }
    ask->question = message_text(json_object_get(last, "content"));
    if (!ask->question || !*ask->question) {
        tomed_reply_error(r, TOME_EINVAL,
                          "the user message's content must be non-empty text (a string or "
                          "text parts)");
        return -1;
    }
    return 0;
}

static int parse_chat(tomed_request *r, json_t *body, tomed_ask *ask)
{
    const char *model = json_string_value(json_object_get(body, "model"));
    if (!model || !*model) {
        tomed_reply_error(r, TOME_EINVAL, "'model' must name a corpus (GET /openai/v1/models)");
        return -1;
    }
    if (!tomed_corpus_name_valid(model)) {
        tomed_reply_error(r, TOME_ENOTFOUND, "the model '%s' does not exist", model);
        return -1;
    }
    /* The rights check and the ask machinery read the corpus from the
     * path's parameter, which this route's path does not have. */
    if (!(r->params[0] = strdup(model))) {
        tomed_reply_error(r, TOME_ENOMEM, "out of memory");
        return -1;
    }
    json_t *n = json_object_get(body, "n");
    if (n && !(json_is_integer(n) && json_integer_value(n) == 1)) {
        tomed_reply_error(r, TOME_EINVAL, "'n' must be 1: one answer per request");
        return -1;
    }
    const char *max_key =
        json_object_get(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    /* As in OpenAI's API, a model the caller may not use does not exist
     * for it (the models list leaves it out, too). */
    if (!tomed_principal_can(&r->principal, model, TOMED_RIGHT_READ)) {
        tomed_reply_error(r, TOME_ENOTFOUND, "the model '%s' does not exist or %s may not read it",
                          model, r->principal.name);
        return -1;
    }
    if (parse_question(r, json_object_get(body, "messages"), ask) != 0 ||
        tomed_ask_parse_sampling(r, body, max_key, ask) != 0 ||
        tomed_ask_parse_stream(r, body, 0, ask) != 0)
        return -1;
    static unsigned long long serial;
    ask->openai = 1;
    ask->created = (int64_t)time(NULL);
    snprintf(ask->completion_id, sizeof ask->completion_id, "chatcmpl-%llx-%llu",
             (unsigned long long)ask->created, ++serial);
    return 0;
}

void tomed_route_openai_chat(tomed_request *r)
{
    tomed_ask_run(r, parse_chat);
}

/* ------------------------------------------------------------------------
 * Replies
 * ------------------------------------------------------------------------ */

json_t *tomed_openai_chunk(tomed_ask *ask, const char *text, size_t len, const char *finish_reason)
{
    json_t *delta = json_object();
    if (!ask->sent_role) json_object_set_new(delta, "role", json_string("assistant"));
    ask->sent_role = 1;
    if (text) json_object_set_new(delta, "content", json_stringn(text, len));
    return json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:s?}]}", "id", ask->completion_id,
                     "object", "chat.completion.chunk", "created", (json_int_t)ask->created,
                     "model", ask->corpus, "choices", "index", 0, "delta", delta, "finish_reason",
                     finish_reason);
}

/* OpenAI has two reasons: the end of the answer or of max_tokens. */
static const char *finish_reason(const tomed_ask *ask)
{
    return strcmp(ask->finish_reason, "length") == 0 ? "length" : "stop";
}

static json_t *usage_json(const tomed_ask *ask)
{
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)ask->prompt_tokens,
                     "completion_tokens", (json_int_t)ask->completion_tokens, "total_tokens",
                     (json_int_t)(ask->prompt_tokens + ask->completion_tokens),
                     "prompt_tokens_details", "cached_tokens", (json_int_t)ask->corpus_tokens);
}

static json_t *extras_json(const tomed_ask *ask, json_t *citations, json_t *sources)
{
    return json_pack("{s:O, s:O, s:s, s:{s:s, s:I}}", "citations", citations, "sources", sources,
                     "finish_reason", ask->finish_reason, "state", "id", ask->state_id, "tokens",
                     (json_int_t)ask->corpus_tokens);
}

void tomed_openai_answer(tomed_ask *ask, json_t *citations, json_t *sources)
{
    tomed_request *r = ask->r;
    if (r->streaming) {
        json_t *last = tomed_openai_chunk(ask, NULL, 0, finish_reason(ask));
        json_object_set_new(last, "usage", usage_json(ask));
        json_object_set_new(last, "tome", extras_json(ask, citations, sources));
        tomed_stream_data(r, last);
        tomed_stream_write(r, "data: [DONE]\n\n", 14);
        tomed_stream_end(r);
        return;
    }
    json_t *message =
        json_pack("{s:s, s:s}", "role", "assistant", "content", ask->answer ? ask->answer : "");
    tomed_reply_json(r, 200,
                     json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:s}], s:o, s:o}", "id",
                               ask->completion_id, "object", "chat.completion", "created",
                               (json_int_t)ask->created, "model", ask->corpus, "choices", "index",
                               0, "message", message, "finish_reason", finish_reason(ask), "usage",
                               usage_json(ask), "tome", extras_json(ask, citations, sources)));
}
