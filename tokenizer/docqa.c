/*
 * docqa.c - the document-QA prompt: a corpus, then questions about it.
 *
 * tome prefills a corpus once and answers many questions from the saved
 * state, so everything that depends on the corpus must come before
 * everything that depends on the question, and the boundary between the two
 * must not move when the question changes.  The layout is plain V4 chat
 * encoding of two messages:
 *
 *   BOS [think-max text] INSTRUCTIONS "\n\n" CORPUS      (system message)
 *   <｜User｜> QUESTION <｜Assistant｜> <think> | </think>   (user turn)
 *
 * The system text has no role token in V4, so the corpus sits right after
 * the instructions.  The question part starts with a special token, which
 * the tokenizer always cuts on, so the prefix's ids never depend on the
 * question.  The corpus and the question are content: special-token text
 * inside them stays text.
 */
#include "tokenizer/chat_internal.h"

static const char default_instructions[] =
    "You answer questions about the documents below, which are given in full. Base every "
    "answer on them, and say so when they do not contain the answer. Cite the lines you rely "
    "on as path:line or path:first-last.";

const char *v4_docqa_default_instructions(void)
{
    return default_instructions;
}

int v4_docqa_prefix(const v4_chat_options *opts, const char *instructions, const char *corpus,
                    size_t corpus_len, v4_prompt *out, tome_error *err)
{
    static const v4_chat_options defaults = {0};
    const v4_chat_options *o = opts ? opts : &defaults;
    int rc = o->omit_bos ? 0 : chat_template(out, V4_BOS, err);
    if (rc == 0 && o->thinking && o->effort_max) rc = chat_template(out, v4_effort_max_text, err);
    if (rc == 0) rc = chat_content(out, instructions ? instructions : default_instructions, err);
    if (rc == 0) rc = chat_content(out, "\n\n", err);
    return rc ? rc : chat_put_content(out, corpus, corpus_len, err);
}

int v4_docqa_question(const v4_chat_options *opts, const char *question, size_t len, v4_prompt *out,
                      tome_error *err)
{
    int thinking = opts && opts->thinking;
    int rc = chat_template(out, V4_USER, err);
    if (rc == 0) rc = chat_put_content(out, question, len, err);
    if (rc == 0) rc = chat_template(out, V4_ASSISTANT, err);
    return rc ? rc : chat_template(out, thinking ? V4_THINK : V4_THINK_END, err);
}
