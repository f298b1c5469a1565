/*
 * tokenizer.h - the public interface of tome's DeepSeek V4 tokenizer
 * library: text to token ids and back, and the prompt encodings.
 *
 * It owns everything that turns text into what the engine reads: loading a
 * Hugging Face tokenizer.json (byte-level BPE with V4's pre-tokenizer and
 * added tokens), streaming detokenisation that never splits a character,
 * V4's chat encoding, and the document-QA prompt (corpus first, questions
 * after).  It knows nothing of weights or the forward pass, so ingest
 * (which counts tokens) links this library and not the engine.
 *
 * Ownership and errors as in engine/v4.h: v4_tokenizer_load and the *_new functions create, *_free
 * release; functions return 0 or a negative TOME_E* code with a message in
 * a caller-owned tome_error.  A v4_tokenizer is immutable after loading and
 * may be shared by threads (each call uses its own workspace); a v4_detok
 * belongs to one thread at a time.
 */
#ifndef TOME_TOKENIZER_H
#define TOME_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

typedef struct v4_tokenizer v4_tokenizer;

/* A growable array of token ids.  Zero-initialise it; functions append to
 * it; the owner frees `ids` with free(). */
typedef struct v4_ids {
    int32_t *ids;
    size_t n, cap;
} v4_ids;

/* Load a Hugging Face tokenizer.json (byte-level BPE). */
int v4_tokenizer_load(const char *path, v4_tokenizer **out, tome_error *err);
/* The same from the document's text in memory; `name` (where it came
 * from) is for messages. */
int v4_tokenizer_from_json(const char *name, const char *json, size_t len, v4_tokenizer **out,
                           tome_error *err);
void v4_tokenizer_free(v4_tokenizer *t);
/* Number of ids (base vocabulary plus added tokens; max id + 1). */
int v4_tokenizer_n_ids(const v4_tokenizer *t);
/* Encode `len` bytes of text (may contain NUL; invalid UTF-8 is encoded as
 * its raw bytes) and append the ids to `out`.  With `parse_special`, added
 * tokens written as text (e.g. "<｜User｜>") become their ids. */
int v4_tokenize(const v4_tokenizer *t, const char *text, size_t len, int parse_special, v4_ids *out,
                tome_error *err);
/* Id of an added/special token given its exact text, or -1. */
int32_t v4_token_lookup(const v4_tokenizer *t, const char *text);
/* The bytes a token id stands for (after the byte-level decoding). */
int v4_token_bytes(const v4_tokenizer *t, int32_t id, const char **bytes, size_t *len);

/* Decoding a stream of ids.  Feeding one id at a time gives back the bytes
 * that are complete so far: a UTF-8 character split across tokens is held
 * back until its last byte arrives (bytes that can never complete a
 * character are passed on at once).  *text stays valid until the next call
 * on `d`.  v4_detok_flush returns what is still held back at the end.
 *
 * With V4_DETOK_VALID_UTF8 everything handed back is valid UTF-8 without
 * U+0000: each maximal ill-formed piece (a stray continuation byte, a
 * character cut by the next token) becomes U+FFFD, and so do a NUL byte
 * and a character still unfinished when v4_detok_flush is called.
 * Without it the bytes are exactly the tokens' bytes. */
#define V4_DETOK_VALID_UTF8 1u
typedef struct v4_detok v4_detok;
int v4_detok_new(const v4_tokenizer *t, unsigned flags, v4_detok **out, tome_error *err);
void v4_detok_free(v4_detok *d);
int v4_detok_feed(v4_detok *d, int32_t id, const char **text, size_t *len, tome_error *err);
void v4_detok_flush(v4_detok *d, const char **text, size_t *len);
/* Decode `n` ids at once into a malloc'd buffer (NUL-terminated; the
 * caller frees it). */
int v4_detokenize(const v4_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len,
                  tome_error *err);

/* A rendered prompt: its UTF-8 text, and the byte ranges that the template
 * wrote.  Special-token text becomes a special token only inside those
 * ranges, so content (a document, a question, a message) that happens to
 * contain "<｜User｜>" stays plain text.  Zero-initialise it; renderers
 * append to it; v4_prompt_free releases what it holds. */
typedef struct v4_prompt_span {
    size_t start, end;
} v4_prompt_span;

typedef struct v4_prompt {
    char *text; /* NUL-terminated */
    size_t len, cap;
    v4_prompt_span *spans; /* sorted, disjoint */
    size_t n_spans, spans_cap;
} v4_prompt;

void v4_prompt_free(v4_prompt *p);
/* Append the ids of the whole prompt to `out`. */
int v4_prompt_tokenize(const v4_tokenizer *t, const v4_prompt *p, v4_ids *out, tome_error *err);

/* DeepSeek V4 chat encoding (the official encoding_dsv4.py, byte for byte).
 * Zero-initialised options mean: chat (non-thinking) mode, earlier reasoning
 * dropped, BOS written. */
typedef struct v4_chat_options {
    int thinking;       /* 1: thinking mode (opener "<think>"); 0: chat ("</think>") */
    int effort_max;     /* thinking only: the think-max instruction after BOS */
    int keep_reasoning; /* 1: keep every turn's reasoning (drop_thinking off) */
    int omit_bos;       /* 1: no BOS (continuing an encoded prefix) */
} v4_chat_options;

/* Render an OpenAI-style message list to the prompt text, appended to
 * `out`.  `json` is either an array of messages or an object with
 * "messages" and optionally "tools" (attached to the first message, as the
 * official tests do).  Roles: system, user, assistant, developer,
 * latest_reminder, tool; fields: content, reasoning_content, tools,
 * response_format, tool_calls, tool_call_id, task, wo_eos.  A null content
 * is rendered as empty text. */
int v4_chat_render_json(const char *json, size_t len, const v4_chat_options *opts, v4_prompt *out,
                        tome_error *err);

/* The same from C: messages with a role, a content and an optional
 * reasoning (assistant turns). */
typedef struct v4_chat_message {
    const char *role;
    const char *content;   /* NUL-terminated UTF-8 or NULL */
    const char *reasoning; /* NULL if none */
} v4_chat_message;

int v4_chat_render(const v4_chat_message *msgs, size_t n, const v4_chat_options *opts,
                   v4_prompt *out, tome_error *err);

/* Document QA: the corpus first, the questions after, so that one prefill
 * of the corpus serves every question.  The prefix is the chat encoding of
 * a system message "INSTRUCTIONS\n\nCORPUS"; a question is a user turn plus
 * the assistant opener.  So prefix + question renders exactly as
 * v4_chat_render of [system, user] would, and the boundary is a special
 * token, so ids(prefix) + ids(question) == ids(prefix + question).  The
 * prefix depends only on `instructions` (NULL = tome's default), the corpus
 * and opts->thinking && opts->effort_max (the think-max text precedes the
 * system text); the question part depends on opts->thinking. */
const char *v4_docqa_default_instructions(void);
int v4_docqa_prefix(const v4_chat_options *opts, const char *instructions, const char *corpus,
                    size_t corpus_len, v4_prompt *out, tome_error *err);
int v4_docqa_question(const v4_chat_options *opts, const char *question, size_t len, v4_prompt *out,
                      tome_error *err);

#endif
