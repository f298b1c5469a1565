/*
 * routes_openai.c - the OpenAI-compatible endpoints under /openai/v1/, so
 * that OpenAI's SDKs and the tools built on them can ask tome questions.
 *
 *   GET  /openai/v1/models            the corpora with a prefilled state,
 *                                     and the bare model (TOMED_BARE_MODEL)
 *   POST /openai/v1/chat/completions  a conversation with one of them
 *   POST /openai/v1/completions       a raw prompt to one of them (text, or
 *                                     for the bare model token ids)
 *
 * A "model" is a corpus: its prefilled state is the long shared prompt.  The
 * request's messages are rendered with V4's chat encoding as what follows
 * that prefix (a system message extends the prefix's system text; the last
 * message is the user's), so the corpus is never prefilled again; a
 * completion's prompt follows it as plain text.  The bare model starts from
 * an empty context instead.  routes_ask.c runs the question exactly as
 * POST /v1/corpora/NAME/ask runs one; this file parses OpenAI's requests
 * and writes OpenAI's replies, splitting a thinking answer into
 * reasoning_content and content as DeepSeek's API does.  The same
 * listeners, credentials and rights apply;
 * errors take OpenAI's shape {"error": {"message", "type", "param",
 * "code"}} (http.c asks tomed_openai_error_json for every error of these
 * routes, the router's 401 included).  tome's own extras (citations,
 * sources, the state) ride along under "tome".
 */
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/router.h"
#include "daemon/server.h"
#include "daemon/storecall.h"

#include "tokenizer/tokenizer.h"
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
    const char *fingerprint = tomed_engine_state_fingerprint(engine);
    char path[TOMED_PATH_MAX], id[32];
    if (!fingerprint) return 0;
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
    /* The bare model reads no corpus: every principal may prompt it. */
    json_t *data = json_pack("[{s:s, s:s, s:I, s:s}]", "id", TOMED_BARE_MODEL, "object", "model",
                             "created", created, "owned_by", "tome");
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
 * Requests: POST /openai/v1/chat/completions and /openai/v1/completions
 * ------------------------------------------------------------------------ */

/* The parsers below answer the request themselves when they fail. */
static int invalid(tomed_request *r, const char *message)
{
    tomed_reply_error(r, TOME_EINVAL, "%s", message);
    return -1;
}

/* A message's text: a string, or an array of {"type": "text", "text"}
 * parts, joined (malloc'd); NULL when it is neither. */
static char *message_text(json_t *content)
{
    if (json_is_string(content)) return strdup(json_string_value(content));
    if (!json_is_array(content)) return NULL;
    size_t len = 0, i;
    json_t *part;
    json_array_foreach(content, i, part) {
        const char *text = json_string_value(json_object_get(part, "text"));
        if (!text || !json_is_string(json_object_get(part, "type")) ||
            strcmp(json_string_value(json_object_get(part, "type")), "text") != 0)
            return NULL;
        len += strlen(text);
    }
    char *out = calloc(1, len + 1);
    if (!out) return NULL;
    json_array_foreach(content, i, part) {
        strcat(out, json_string_value(json_object_get(part, "text")));
    }
    return out;
}

/* Message `i` as V4's encoder reads it: {role, content[,
 * reasoning_content]}, or NULL after replying.  After a corpus, a system
 * message continues the prefix's system text, so it starts a paragraph. */
static json_t *clean_message(tomed_request *r, json_t *m, size_t i, int bare)
{
    const char *role = json_string_value(json_object_get(m, "role"));
    json_t *content = json_object_get(m, "content");
    if (!role || (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))) {
        tomed_reply_error(r, TOME_EINVAL,
                          "messages[%zu]: 'role' must be system, user or assistant (tools are "
                          "not supported)",
                          i);
        return NULL;
    }
    char *text = json_is_null(content) && strcmp(role, "assistant") == 0 ? strdup("")
                                                                         : message_text(content);
    if (!text) {
        tomed_reply_error(r, TOME_EINVAL,
                          "messages[%zu]: 'content' must be text (a string or text parts)", i);
        return NULL;
    }
    json_t *out = json_pack("{s:s, s:s+}", "role", role, "content",
                            !bare && strcmp(role, "system") == 0 ? "\n\n" : "", text);
    free(text);
    json_t *reasoning = json_object_get(m, "reasoning_content");
    if (out && json_is_string(reasoning) && strcmp(role, "assistant") == 0)
        json_object_set(out, "reasoning_content", reasoning);
    if (!out) tomed_reply_error(r, TOME_ENOMEM, "out of memory");
    return out;
}

static int set_turns(tomed_request *r, v4_prompt *p, tomed_ask *ask)
{
    if (!(ask->turns = malloc(sizeof *ask->turns))) {
        v4_prompt_free(p);
        tomed_reply_error(r, TOME_ENOMEM, "out of memory");
        return -1;
    }
    *ask->turns = *p;
    return 0;
}

/* The messages rendered as what follows the corpus (or, bare, from BOS);
 * the question (for the sources and the history) is the last message. */
static int parse_messages(tomed_request *r, json_t *messages, tomed_ask *ask)
{
    if (!json_is_array(messages) || json_array_size(messages) == 0)
        return invalid(r, "'messages' must be a non-empty array");
    json_t *clean = json_array(), *m;
    size_t i;
    json_array_foreach(messages, i, m) {
        json_t *one = clean ? clean_message(r, m, i, ask->bare) : NULL;
        if (!one) {
            if (!clean) tomed_reply_error(r, TOME_ENOMEM, "out of memory");
            json_decref(clean);
            return -1;
        }
        json_array_append_new(clean, one);
    }
    json_t *last = json_array_get(clean, json_array_size(clean) - 1);
    if (strcmp(json_string_value(json_object_get(last, "role")), "user") != 0) {
        json_decref(clean);
        return invalid(r, "the last message must have the role 'user'");
    }
    ask->question = strdup(json_string_value(json_object_get(last, "content")));
    char *json = json_dumps(clean, JSON_COMPACT);
    json_decref(clean);
    v4_chat_options opts = {.thinking = ask->thinking > 0, .omit_bos = !ask->bare};
    v4_prompt p = {0};
    tome_error err = {0};
    int rc = ask->question && json ? v4_chat_render_json(json, strlen(json), &opts, &p, &err)
                                   : tome_errorf(&err, TOME_ENOMEM, "out of memory");
    free(json);
    if (rc != 0) {
        v4_prompt_free(&p);
        tomed_reply_error(r, rc, "messages: %s", err.msg);
        return -1;
    }
    return set_turns(r, &p, ask);
}

/* DeepSeek's switches: "thinking": {"type": "enabled" | "disabled"} and
 * "reasoning_effort", which turns thinking on unless it is disabled.  Off
 * by default: a corpus question is usually answered directly.  "max"
 * effort would need its own prefill of the corpus (V4 puts its text
 * first), so it thinks as "high" does. */
static int parse_thinking(tomed_request *r, json_t *body, tomed_ask *ask)
{
    json_t *thinking = json_object_get(body, "thinking");
    json_t *effort = json_object_get(body, "reasoning_effort");
    const char *type = json_string_value(json_object_get(thinking, "type"));
    if (thinking && !json_is_null(thinking) &&
        (!type || (strcmp(type, "enabled") && strcmp(type, "disabled"))))
        return invalid(r, "'thinking' must be {\"type\": \"enabled\"} or {\"type\": \"disabled\"}");
    if (effort && !json_is_null(effort) && !json_is_string(effort))
        return invalid(r, "'reasoning_effort' must be a string (low, medium, high or max)");
    ask->thinking = type ? strcmp(type, "enabled") == 0 : json_is_string(effort);
    return 0;
}

/* "model" names a corpus the caller may read, or the bare model. */
static int parse_model(tomed_request *r, json_t *body, tomed_ask *ask)
{
    const char *model = json_string_value(json_object_get(body, "model"));
    if (!model || !*model) return invalid(r, "'model' must name a corpus (GET /openai/v1/models)");
    ask->bare = strcmp(model, TOMED_BARE_MODEL) == 0;
    if (!ask->bare && !tomed_corpus_name_valid(model)) {
        tomed_reply_error(r, TOME_ENOTFOUND, "the model '%s' does not exist", model);
        return -1;
    }
    /* As in OpenAI's API, a model the caller may not use does not exist
     * for it (the models list leaves it out, too). */
    if (!ask->bare && !tomed_principal_can(&r->principal, model, TOMED_RIGHT_READ)) {
        tomed_reply_error(r, TOME_ENOTFOUND, "the model '%s' does not exist or %s may not read it",
                          model, r->principal.name);
        return -1;
    }
    /* The ask machinery reads the corpus from the path's parameter, which
     * these routes' paths do not have. */
    if (!(r->params[0] = strdup(model))) {
        tomed_reply_error(r, TOME_ENOMEM, "out of memory");
        return -1;
    }
    return 0;
}

/* What both endpoints share: the model, n, the sampling fields and
 * stream; `kind` names the reply and its id's prefix. */
static int parse_common(tomed_request *r, json_t *body, int kind, tomed_ask *ask)
{
    json_t *n = json_object_get(body, "n");
    if (parse_model(r, body, ask) != 0) return -1;
    if (n && !json_is_null(n) && !(json_is_integer(n) && json_integer_value(n) == 1))
        return invalid(r, "'n' must be 1: one answer per request");
    const char *max_key =
        json_object_get(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (tomed_ask_parse_sampling(r, body, max_key, ask) != 0 ||
        tomed_ask_parse_stream(r, body, 0, ask) != 0)
        return -1;
    static unsigned long long serial;
    ask->openai = kind;
    ask->created = (int64_t)time(NULL);
    snprintf(ask->completion_id, sizeof ask->completion_id, "%s-%llx-%llu",
             kind == TOMED_OPENAI_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)ask->created,
             ++serial);
    return 0;
}

int tomed_openai_parse_chat(tomed_request *r, json_t *body, tomed_ask *ask)
{
    json_t *tools = json_object_get(body, "tools");
    if (tools && !json_is_null(tools) && !(json_is_array(tools) && json_array_size(tools) == 0))
        return invalid(r, "'tools' is not supported: tome answers from the corpus itself");
    if (parse_common(r, body, TOMED_OPENAI_CHAT, ask) != 0 || parse_thinking(r, body, ask) != 0)
        return -1;
    return parse_messages(r, json_object_get(body, "messages"), ask);
}

/* A bare completion's prompt as token ids, as vLLM and SGLang take them:
 * the whole context (BOS included when wanted), each id one the tokenizer
 * knows.  What a remote engine in front of this tomed sends. */
static int parse_prompt_ids(tomed_request *r, json_t *prompt, tomed_ask *ask)
{
    const char *fingerprint;
    const v4_tokenizer *t =
        tomed_engine_tokenizer(tomed_jobs_engine(r->server->jobs), &fingerprint);
    size_t n = json_array_size(prompt), i;
    json_t *id;
    if (!ask->bare)
        return invalid(r, "a prompt of token ids is the whole context: the bare model's only");
    if (!t || !(ask->prompt_ids = malloc(n * sizeof *ask->prompt_ids)))
        return invalid(r, "out of memory");
    json_array_foreach(prompt, i, id) {
        json_int_t v = json_integer_value(id);
        if (!json_is_integer(id) || v < 0 || v >= (json_int_t)v4_tokenizer_n_ids(t)) {
            tomed_reply_error(r, TOME_EINVAL, "prompt[%zu] must be a token id from 0 to %d", i,
                              (int)v4_tokenizer_n_ids(t) - 1);
            return -1;
        }
        ask->prompt_ids[i] = (int32_t)v;
    }
    ask->n_prompt_ids = n;
    return (ask->question = strdup("")) ? 0 : invalid(r, "out of memory");
}

/* A completion's prompt is plain text (special-token text in it stays
 * text) after the corpus, or after BOS for the bare model; or token ids. */
static int parse_prompt(tomed_request *r, json_t *prompt, tomed_ask *ask)
{
    if (json_is_array(prompt) && json_array_size(prompt) == 1 &&
        json_is_array(json_array_get(prompt, 0)))
        prompt = json_array_get(prompt, 0); /* a batch of one prompt of ids */
    if (json_is_array(prompt) && json_array_size(prompt) > 0 &&
        json_is_integer(json_array_get(prompt, 0)))
        return parse_prompt_ids(r, prompt, ask);
    if (json_is_array(prompt) && json_array_size(prompt) == 1) prompt = json_array_get(prompt, 0);
    const char *text = json_string_value(prompt);
    if (!text || !*text)
        return invalid(r, "'prompt' must be a non-empty string (or an array of one)");
    if (!(ask->question = strdup(text))) return invalid(r, "out of memory");
    v4_chat_options opts = {.omit_bos = !ask->bare};
    v4_prompt p = {0};
    tome_error err = {0};
    size_t len = strlen(text);
    int rc = v4_chat_render(NULL, 0, &opts, &p, &err);
    char *grown = rc == 0 ? realloc(p.text, p.len + len + 1) : NULL;
    if (!grown) {
        v4_prompt_free(&p);
        tomed_reply_error(r, TOME_ENOMEM, "out of memory");
        return -1;
    }
    memcpy(grown + p.len, text, len + 1);
    p.text = grown;
    p.len += len;
    p.cap = p.len + 1;
    return set_turns(r, &p, ask);
}

int tomed_openai_parse_completion(tomed_request *r, json_t *body, tomed_ask *ask)
{
    json_t *echo = json_object_get(body, "echo"), *suffix = json_object_get(body, "suffix");
    if (json_is_true(echo)) return invalid(r, "'echo' is not supported");
    if (suffix && !json_is_null(suffix)) return invalid(r, "'suffix' is not supported");
    if (parse_common(r, body, TOMED_OPENAI_COMPLETION, ask) != 0) return -1;
    return parse_prompt(r, json_object_get(body, "prompt"), ask);
}

void tomed_route_openai_chat(tomed_request *r)
{
    tomed_ask_run(r, tomed_openai_parse_chat);
}

void tomed_route_openai_completions(tomed_request *r)
{
    tomed_ask_run(r, tomed_openai_parse_completion);
}

/* ------------------------------------------------------------------------
 * Replies
 * ------------------------------------------------------------------------ */

/* One streamed chunk: a chat delta with `field` set to the text (none when
 * `field` is NULL), or a completion's text; `finish_reason` NULL but on
 * the last. */
static json_t *chunk(tomed_ask *ask, const char *field, const char *text, size_t len,
                     const char *finish_reason)
{
    json_t *choice;
    if (ask->openai == TOMED_OPENAI_COMPLETION) {
        choice = json_pack("{s:s%, s:i, s:n, s:s?}", "text", text ? text : "", text ? len : 0,
                           "index", 0, "logprobs", "finish_reason", finish_reason);
    } else {
        json_t *delta = json_object();
        if (!ask->sent_role) json_object_set_new(delta, "role", json_string("assistant"));
        ask->sent_role = 1;
        if (field) json_object_set_new(delta, field, json_stringn(text, len));
        choice = json_pack("{s:i, s:o, s:s?}", "index", 0, "delta", delta, "finish_reason",
                           finish_reason);
    }
    return json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", ask->completion_id, "object",
                     ask->openai == TOMED_OPENAI_COMPLETION ? "text_completion"
                                                            : "chat.completion.chunk",
                     "created", (json_int_t)ask->created, "model", ask->corpus, "choices", choice);
}

static void send_piece(tomed_ask *ask, const char *field, const char *text, size_t len)
{
    if (len) tomed_stream_data(ask->r, chunk(ask, field, text, len, NULL));
}

static const char think_end[] = "</think>";

/* How many bytes at the end of `s` could begin "</think>". */
static size_t think_end_start(const char *s, size_t n)
{
    size_t k = n < sizeof think_end - 2 ? n : sizeof think_end - 2;
    while (k > 0 && memcmp(s + n - k, think_end, k) != 0) k--;
    return k;
}

/* Thinking: the text before "</think>" is reasoning_content, after it
 * content; a tail that may begin the marker waits for the next piece. */
static void send_thinking(tomed_ask *ask, const char *text, size_t len)
{
    char *all = malloc(ask->held_len + len);
    if (!all) return;
    memcpy(all, ask->held, ask->held_len);
    memcpy(all + ask->held_len, text, len);
    size_t n = ask->held_len + len;
    char *end = memmem(all, n, think_end, sizeof think_end - 1);
    ask->held_len = 0;
    if (end) {
        size_t after = (size_t)(end - all) + sizeof think_end - 1;
        send_piece(ask, "reasoning_content", all, (size_t)(end - all));
        ask->in_content = 1;
        send_piece(ask, "content", all + after, n - after);
    } else {
        ask->held_len = think_end_start(all, n);
        send_piece(ask, "reasoning_content", all, n - ask->held_len);
        memcpy(ask->held, all + n - ask->held_len, ask->held_len);
    }
    free(all);
}

void tomed_openai_text(tomed_ask *ask, const char *text, size_t len)
{
    if (ask->openai == TOMED_OPENAI_CHAT && ask->thinking && !ask->in_content)
        send_thinking(ask, text, len);
    else
        send_piece(ask, ask->openai == TOMED_OPENAI_CHAT ? "content" : NULL, text, len);
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
                     "prompt_tokens_details", "cached_tokens", (json_int_t)ask->cached_tokens);
}

static json_t *extras_json(const tomed_ask *ask, json_t *citations, json_t *sources)
{
    return json_pack("{s:O, s:O, s:s, s:{s:s, s:I}}", "citations", citations, "sources", sources,
                     "finish_reason", ask->finish_reason, "state", "id", ask->state_id, "tokens",
                     (json_int_t)ask->corpus_tokens);
}

/* The whole answer as one choice: a completion's text, or a chat message
 * (with thinking, the text up to "</think>" is its reasoning_content; an
 * answer cut before the marker is all reasoning). */
static json_t *answer_choice(const tomed_ask *ask)
{
    const char *answer = ask->answer ? ask->answer : "";
    if (ask->openai == TOMED_OPENAI_COMPLETION)
        return json_pack("{s:s, s:i, s:n, s:s}", "text", answer, "index", 0, "logprobs",
                         "finish_reason", finish_reason(ask));
    json_t *message = json_pack("{s:s}", "role", "assistant");
    const char *end = ask->thinking ? strstr(answer, think_end) : NULL;
    if (ask->thinking) {
        size_t reasoning = end ? (size_t)(end - answer) : strlen(answer);
        json_object_set_new(message, "reasoning_content", json_stringn(answer, reasoning));
        answer = end ? end + sizeof think_end - 1 : "";
    }
    json_object_set_new(message, "content", json_string(answer));
    return json_pack("{s:i, s:o, s:s}", "index", 0, "message", message, "finish_reason",
                     finish_reason(ask));
}

void tomed_openai_answer(tomed_ask *ask, json_t *citations, json_t *sources)
{
    tomed_request *r = ask->r;
    int chat = ask->openai == TOMED_OPENAI_CHAT;
    if (r->streaming) {
        if (ask->held_len) send_piece(ask, "reasoning_content", ask->held, ask->held_len);
        json_t *last = chunk(ask, NULL, NULL, 0, finish_reason(ask));
        json_object_set_new(last, "usage", usage_json(ask));
        json_object_set_new(last, "tome", extras_json(ask, citations, sources));
        tomed_stream_data(r, last);
        tomed_stream_write(r, "data: [DONE]\n\n", 14);
        tomed_stream_end(r);
        return;
    }
    tomed_reply_json(r, 200,
                     json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o, s:o}", "id", ask->completion_id,
                               "object", chat ? "chat.completion" : "text_completion", "created",
                               (json_int_t)ask->created, "model", ask->corpus, "choices",
                               answer_choice(ask), "usage", usage_json(ask), "tome",
                               extras_json(ask, citations, sources)));
}
