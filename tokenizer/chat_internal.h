/*
 * chat_internal.h - what the chat and document-QA renderers share (private
 * to tokenizer/chat.c, chat_messages.c, prompt.c, pyjson.c and docqa.c).
 *
 * A renderer appends to a v4_prompt in two voices: template text (role
 * tokens, the tools block, DSML markup), whose special-token strings are
 * meant as special tokens, and content (what users, tools and documents
 * wrote), which is always plain text.  The prompt records the template's
 * byte ranges; v4_prompt_tokenize honours them.
 */
#ifndef TOME_TOKENIZER_CHAT_INTERNAL_H
#define TOME_TOKENIZER_CHAT_INTERNAL_H

#include <jansson.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

#define V4_BOS       "<｜begin▁of▁sentence｜>"
#define V4_EOS       "<｜end▁of▁sentence｜>"
#define V4_USER      "<｜User｜>"
#define V4_ASSISTANT "<｜Assistant｜>"
#define V4_THINK     "<think>"
#define V4_THINK_END "</think>"

/* The think-max instruction that follows BOS (encoding_dsv4.py). */
extern const char v4_effort_max_text[];

int chat_put_template(v4_prompt *p, const char *s, size_t n, tome_error *err);
int chat_put_content(v4_prompt *p, const char *s, size_t n, tome_error *err);

static inline int chat_template(v4_prompt *p, const char *s, tome_error *err)
{
    return chat_put_template(p, s, strlen(s), err);
}

static inline int chat_content(v4_prompt *p, const char *s, tome_error *err)
{
    return chat_put_content(p, s, strlen(s), err);
}

/* Append `v` as Python's json.dumps(v, ensure_ascii=False) writes it, as
 * content. */
int chat_put_pyjson(v4_prompt *p, const json_t *v, tome_error *err);

/* Messages read as the Python reference reads them (chat_messages.c).
 * chat_truthy: Python's truth of a JSON value (NULL is false);
 * chat_role_of: the role, "" when absent; chat_is_set: `key` is present
 * and not null; chat_last_user: the index of the last user or developer
 * message, or -1. */
int chat_truthy(const json_t *v);
const char *chat_role_of(const json_t *m);
int chat_has_role(const json_t *m, const char *role);
int chat_is_set(const json_t *m, const char *key);
long chat_last_user(const json_t *msgs);

/* Stages 1 to 3 of the encoding (merge, sort, drop) over `messages`, which
 * stay as they are: *out is a new list to render (the caller's reference),
 * *drop whether earlier reasoning was dropped (thinking mode with no tools
 * and without keep_reasoning).  0, or TOME_EINVAL naming the message. */
int chat_prepare(const json_t *messages, const v4_chat_options *o, json_t **out, int *drop,
                 tome_error *err);

#endif
