/*
 * prompt.c - the v4_prompt buffer: text plus the ranges the template
 * wrote.
 *
 * Keeping the ranges is what lets tome put untrusted text into a prompt
 * safely: the tokenizer turns "<｜User｜>" into the special token only where
 * the template wrote it, never where a document or a user did.  Adjacent
 * template writes extend one range, so a prompt has about as many ranges as
 * it has turns.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/chat_internal.h"

static int reserve_text(v4_prompt *p, size_t n, tome_error *err)
{
    if (p->len + n + 1 <= p->cap) return 0;
    size_t cap = p->cap ? p->cap : 256;
    while (cap < p->len + n + 1) cap *= 2;
    char *text = realloc(p->text, cap);
    if (!text) return tome_errorf(err, TOME_ENOMEM, "out of memory for a %zu-byte prompt", cap);
    p->text = text;
    p->cap = cap;
    return 0;
}

int chat_put_content(v4_prompt *p, const char *s, size_t n, tome_error *err)
{
    int rc = reserve_text(p, n, err);
    if (rc) return rc;
    memcpy(p->text + p->len, s, n);
    p->len += n;
    p->text[p->len] = '\0';
    return 0;
}

int chat_put_template(v4_prompt *p, const char *s, size_t n, tome_error *err)
{
    size_t start = p->len;
    int rc = chat_put_content(p, s, n, err);
    if (rc || n == 0) return rc;
    if (p->n_spans > 0 && p->spans[p->n_spans - 1].end == start) {
        p->spans[p->n_spans - 1].end = p->len;
        return 0;
    }
    if (p->n_spans == p->spans_cap) {
        size_t cap = p->spans_cap ? p->spans_cap * 2 : 16;
        v4_prompt_span *spans = realloc(p->spans, cap * sizeof *spans);
        if (!spans) {
            p->len = start;
            p->text[start] = '\0';
            return tome_errorf(err, TOME_ENOMEM, "out of memory for prompt spans");
        }
        p->spans = spans;
        p->spans_cap = cap;
    }
    p->spans[p->n_spans++] = (v4_prompt_span){start, p->len};
    return 0;
}

void v4_prompt_free(v4_prompt *p)
{
    free(p->text);
    free(p->spans);
    memset(p, 0, sizeof *p);
}
