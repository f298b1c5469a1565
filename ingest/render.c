/*
 * render.c - a corpus version as the document block of the prompt, with
 * the map from documents and lines to bytes and tokens.
 *
 * Every document is wrapped in a header naming its path and line count,
 * and every line carries its number ("12: "), because the model can only
 * cite path:line reliably when it reads the numbers; the map then lets the
 * daemon check those citations and point at the tokens.  Rendering is a
 * pure function of the version's documents and the options, so equal
 * versions render to equal bytes and a version that only appends documents
 * renders to an extension of the previous text.
 *
 * The document block is then placed in the engine's document-QA prefix
 * (v4_docqa_prefix: BOS, instructions, the corpus), which is what a
 * prefill consumes, so the map's offsets and token positions are those of
 * the real prompt.
 *
 * Tokens are counted by tokenizing the whole prompt once, exactly as the
 * prefill will, and walking the token byte lengths alongside the line
 * offsets: counting per line would disagree wherever the tokenizer merges
 * across a line break.  A line (or document) maps to the token that holds
 * its first byte.  Documents are tokenized without special-token parsing,
 * so a file containing a chat control string cannot inject it.
 */
#include "ingest/ingest-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct text_buf {
    char *p;
    size_t len, cap;
} text_buf;

static int put(text_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 4096;
        while (ncap < b->len + n + 1) ncap *= 2;
        char *grown = realloc(b->p, ncap);
        if (!grown) return TOME_ENOMEM;
        b->p = grown;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int put_str(text_buf *b, const char *s)
{
    return put(b, s, strlen(s));
}

void ingest_render_options_default(ingest_render_options *o)
{
    memset(o, 0, sizeof *o);
    o->line_numbers = 1;
    o->token_budget = INGEST_DEFAULT_TOKEN_BUDGET;
    o->truncate = INGEST_TRUNCATE_NONE;
}

static int put_header(text_buf *b, const char *path, int64_t lines)
{
    int rc = put_str(b, "<document path=\"");
    for (const char *p = path; *p && !rc; p++) {
        switch (*p) {
        case '&':
            rc = put_str(b, "&amp;");
            break;
        case '<':
            rc = put_str(b, "&lt;");
            break;
        case '"':
            rc = put_str(b, "&quot;");
            break;
        default:
            rc = put(b, p, 1);
        }
    }
    char tail[48];
    snprintf(tail, sizeof tail, "\" lines=\"%lld\">\n", (long long)lines);
    return rc ? rc : put_str(b, tail);
}

/* Append one document and fill its map entry (bytes only). */
static int render_doc(text_buf *b, const store_document *d, int line_numbers, store_context_doc *m)
{
    m->document_id = d->id;
    m->token_start = m->token_end = -1;
    m->byte_start = (int64_t)b->len;
    m->n_lines = d->line_count;
    m->path = strdup(d->path);
    m->line_bytes = malloc((size_t)(d->line_count ? d->line_count : 1) * sizeof *m->line_bytes);
    if (!m->path || !m->line_bytes) return TOME_ENOMEM;
    int rc = put_header(b, d->path, d->line_count);
    const char *p = d->text, *end = d->text + d->text_len;
    for (int64_t line = 0; line < d->line_count && !rc; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        m->line_bytes[line] = (int64_t)b->len;
        if (line_numbers) {
            char num[32];
            int k = snprintf(num, sizeof num, "%lld: ", (long long)line + 1);
            rc = put(b, num, (size_t)k);
        }
        if (!rc) rc = put(b, p, n);
        if (!rc && !nl) rc = put(b, "\n", 1); /* the last line had no newline */
        p += n;
    }
    if (!rc) rc = put_str(b, "</document>\n");
    m->byte_end = (int64_t)b->len;
    return rc;
}

static void free_map(store_context *ctx)
{
    for (size_t i = 0; i < ctx->n_docs; i++) {
        free(ctx->docs[i].path);
        free(ctx->docs[i].line_bytes);
        free(ctx->docs[i].line_tokens);
    }
    free(ctx->docs);
    free(ctx->token_ids);
    ctx->docs = NULL;
    ctx->token_ids = NULL;
    ctx->n_docs = 0;
}

/* Move every map offset `by` bytes (the corpus's place in the prompt). */
static void shift_map(store_context *ctx, int64_t by)
{
    for (size_t i = 0; i < ctx->n_docs; i++) {
        store_context_doc *m = &ctx->docs[i];
        m->byte_start += by;
        m->byte_end += by;
        for (int64_t l = 0; l < m->n_lines; l++) m->line_bytes[l] += by;
    }
}

/* Put the document block into the document-QA prefix. */
static int wrap_in_prompt(ingest_rendering *r, const text_buf *corpus, tome_error *err)
{
    static const v4_chat_options chat = {0};
    int rc = v4_docqa_prefix(&chat, NULL, corpus->p, corpus->len, &r->prompt, err);
    if (rc) return rc;
    r->text = r->prompt.text;
    r->len = r->prompt.len;
    r->corpus_len = corpus->len;
    r->corpus_start = r->len - corpus->len;
    if (r->len < corpus->len || memcmp(r->text + r->corpus_start, corpus->p, corpus->len) != 0)
        return tome_errorf(err, TOME_EINTERNAL,
                           "the document-QA prompt does not end with the "
                           "corpus it was given");
    shift_map(&r->ctx, (int64_t)r->corpus_start);
    r->ctx.text_bytes = (int64_t)r->len;
    return 0;
}

/* Render the first `n` documents of `list` into r (replacing its text). */
static int render_docs(store *s, const store_document_list *list, size_t n, int line_numbers,
                       ingest_rendering *r, tome_error *err)
{
    v4_prompt_free(&r->prompt);
    memset(&r->prompt, 0, sizeof r->prompt);
    r->text = NULL;
    r->len = 0;
    free_map(&r->ctx);
    r->ctx.token_count = -1;
    text_buf b = {0};
    int rc = put(&b, "", 0);
    r->ctx.docs = calloc(n ? n : 1, sizeof *r->ctx.docs);
    if (rc || !r->ctx.docs) rc = tome_errorf(err, TOME_ENOMEM, "out of memory rendering");
    for (size_t i = 0; i < n && !rc; i++) {
        store_document d;
        rc = store_document_get(s, list->docs[i].id, &d, err);
        if (rc) break;
        r->ctx.n_docs = i + 1;
        rc = render_doc(&b, &d, line_numbers, &r->ctx.docs[i]);
        if (rc) tome_errorf(err, rc, "rendering %s: out of memory", d.path);
        store_document_clear(&d);
    }
    if (!rc) rc = wrap_in_prompt(r, &b, err);
    free(b.p);
    return rc;
}

/* Walks tokens in order, answering "which token holds byte b" for
 * non-decreasing b. */
typedef struct token_cursor {
    const v4_tokenizer *t;
    const int32_t *ids;
    size_t n, i;
    int64_t start, end; /* byte range of token i */
} token_cursor;

static int token_length(token_cursor *c, size_t i, int64_t *len, tome_error *err)
{
    const char *bytes;
    size_t n;
    if (v4_token_bytes(c->t, c->ids[i], &bytes, &n) != 0)
        return tome_errorf(err, TOME_EINTERNAL, "token id %d at position %zu has no bytes",
                           c->ids[i], i);
    *len = (int64_t)n;
    return 0;
}

static int token_at(token_cursor *c, int64_t byte, int64_t *index, tome_error *err)
{
    while (c->i < c->n && c->end <= byte) {
        c->i++;
        c->start = c->end;
        if (c->i < c->n) {
            int64_t len;
            int rc = token_length(c, c->i, &len, err);
            if (rc) return rc;
            c->end += len;
        }
    }
    *index = (int64_t)c->i;
    return 0;
}

static int map_tokens(ingest_rendering *r, const v4_tokenizer *t, tome_error *err)
{
    store_context *ctx = &r->ctx;
    token_cursor c = {.t = t, .ids = ctx->token_ids, .n = (size_t)ctx->token_count};
    int rc = c.n ? token_length(&c, 0, &c.end, err) : 0;
    for (size_t d = 0; d < ctx->n_docs && !rc; d++) {
        store_context_doc *m = &ctx->docs[d];
        m->line_tokens = malloc((size_t)(m->n_lines ? m->n_lines : 1) * sizeof *m->line_tokens);
        if (!m->line_tokens) return tome_errorf(err, TOME_ENOMEM, "out of memory mapping tokens");
        rc = token_at(&c, m->byte_start, &m->token_start, err);
        for (int64_t l = 0; l < m->n_lines && !rc; l++)
            rc = token_at(&c, m->line_bytes[l], &m->line_tokens[l], err);
        if (!rc) rc = token_at(&c, m->byte_end, &m->token_end, err);
    }
    int64_t last;
    if (!rc) rc = token_at(&c, (int64_t)r->len, &last, err);
    if (!rc && (c.start != (int64_t)r->len || last != ctx->token_count))
        rc = tome_errorf(err, TOME_EINTERNAL,
                         "the tokens of the rendered corpus cover %lld bytes, not its %zu",
                         (long long)c.start, r->len);
    return rc;
}

static int tokenize(ingest_rendering *r, const v4_tokenizer *t, tome_error *err)
{
    double t0 = tome_now();
    v4_ids ids = {0};
    int rc = v4_prompt_tokenize(t, &r->prompt, &ids, err);
    r->ctx.token_ids = ids.ids;
    r->ctx.token_count = (int64_t)ids.n;
    if (!rc) rc = map_tokens(r, t, err);
    r->t_tokenize += tome_now() - t0;
    return rc;
}

static int by_tokens_desc(const void *a, const void *b)
{
    const store_context_doc *x = a, *y = b;
    int64_t nx = x->token_end - x->token_start, ny = y->token_end - y->token_start;
    return nx < ny ? 1 : nx > ny ? -1 : strcmp(x->path, y->path);
}

static int over_budget(ingest_rendering *r, int64_t budget, tome_error *err)
{
    char largest[1024] = "";
    size_t k = 0;
    if (r->ctx.n_docs > 1) qsort(r->ctx.docs, r->ctx.n_docs, sizeof *r->ctx.docs, by_tokens_desc);
    for (size_t i = 0; i < r->ctx.n_docs && i < 5; i++) {
        const store_context_doc *d = &r->ctx.docs[i];
        k += (size_t)snprintf(largest + k, sizeof largest - k, "%s%s (%lld tokens)", i ? ", " : "",
                              d->path, (long long)(d->token_end - d->token_start));
        if (k >= sizeof largest) break;
    }
    return tome_errorf(err, TOME_ELIMIT,
                       "the corpus renders to %lld tokens, over the budget of %lld; largest "
                       "documents: %s; exclude some or choose a truncation policy",
                       (long long)r->ctx.token_count, (long long)budget, largest);
}

/* Keep the longest prefix of documents that fits the budget. */
static int truncate_tail(store *s, const store_document_list *list, const ingest_render_options *o,
                         ingest_rendering *r, tome_error *err)
{
    size_t keep = 0;
    while (keep < r->ctx.n_docs && r->ctx.docs[keep].token_end <= o->token_budget) keep++;
    for (;;) {
        double t0 = tome_now();
        int rc = render_docs(s, list, keep, o->line_numbers, r, err);
        r->t_render += tome_now() - t0;
        if (!rc) rc = tokenize(r, o->tokenizer, err);
        if (rc) return rc;
        /* A merge across the cut can add a token; then give up one more. */
        if (r->ctx.token_count <= o->token_budget || keep == 0) break;
        keep--;
    }
    r->n_dropped = list->n - keep;
    return 0;
}

int ingest_render(store *s, int64_t version_id, const ingest_render_options *o,
                  ingest_rendering **out, tome_error *err)
{
    *out = NULL;
    ingest_render_options defaults;
    if (!o) {
        ingest_render_options_default(&defaults);
        o = &defaults;
    }
    if (o->tokenizer && !o->tokenizer_fingerprint)
        return tome_errorf(err, TOME_EINVAL,
                           "rendering version #%lld: a tokenizer needs a "
                           "fingerprint to tell its contexts apart",
                           (long long)version_id);
    store_document_list list;
    int rc = store_version_documents(s, version_id, &list, err);
    if (rc) return rc;
    ingest_rendering *r = calloc(1, sizeof *r);
    if (!r) {
        store_document_list_free(&list);
        return tome_errorf(err, TOME_ENOMEM, "out of memory rendering version #%lld",
                           (long long)version_id);
    }
    r->ctx.version_id = version_id;
    r->ctx.line_numbers = o->line_numbers;
    snprintf(r->ctx.tokenizer, sizeof r->ctx.tokenizer, "%s",
             o->tokenizer && o->tokenizer_fingerprint ? o->tokenizer_fingerprint : "");
    double t0 = tome_now();
    rc = render_docs(s, &list, list.n, o->line_numbers, r, err);
    r->t_render = tome_now() - t0;
    if (!rc && o->tokenizer) rc = tokenize(r, o->tokenizer, err);
    if (!rc && o->tokenizer && r->ctx.token_count > o->token_budget)
        rc = o->truncate == INGEST_TRUNCATE_TAIL ? truncate_tail(s, &list, o, r, err)
                                                 : over_budget(r, o->token_budget, err);
    store_document_list_free(&list);
    if (rc) {
        ingest_rendering_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void ingest_rendering_free(ingest_rendering *r)
{
    if (!r) return;
    v4_prompt_free(&r->prompt);
    free_map(&r->ctx);
    free(r);
}
