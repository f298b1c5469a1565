/*
 * tokenizer.c - the tokenizer's public face: loading, encoding text to ids,
 * and the id -> bytes table.
 *
 * Encoding follows Hugging Face's order of operations, which is what makes
 * the ids identical to the reference:
 *
 *   1. Added tokens are cut out of the text by exact match, leftmost-longest,
 *      in two passes (tokens with "normalized": false, then the others in
 *      the gaps).  They are matched only where special tokens are allowed:
 *      nowhere for plain text, everywhere with parse_special, and inside the
 *      template-written spans of a v4_prompt (so a document that quotes
 *      "<｜User｜>" stays text).
 *   2. Each stretch between them runs through the Split steps in order; a
 *      step sees only the pieces the previous step made, and emits both its
 *      matches and the stretches between them.  This is done depth first,
 *      so no list of pieces is ever built.
 *   3. Each final piece is merged by BPE (bpe.c).
 *
 * Threads.  A loaded tokenizer never changes, except for its pool of
 * workspaces (PCRE2 match data, a JIT stack, BPE scratch and the piece
 * cache), which a call borrows under a mutex and gives back when done.  Any
 * number of threads may therefore encode with one tokenizer, and the cache
 * survives from call to call.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

#define MAX_TOKENIZER_FILE (512u << 20)
#define JIT_STACK_MAX      (4u << 20)

struct tok_workspace {
    tok_workspace *next_free;
    pcre2_match_data *match;
    pcre2_match_context *context;
    pcre2_jit_stack *jit_stack;
    tok_bpe_scratch *bpe;
};

/* ---- Workspaces ---------------------------------------------------------- */

static void workspace_free(tok_workspace *w)
{
    if (!w) return;
    pcre2_match_data_free(w->match);
    pcre2_match_context_free(w->context);
    pcre2_jit_stack_free(w->jit_stack);
    tok_bpe_scratch_free(w->bpe);
    free(w);
}

static int workspace_new(const v4_tokenizer *t, tok_workspace **out, tome_error *err)
{
    tok_workspace *w = calloc(1, sizeof *w);
    if (!w) return tome_errorf(err, TOME_ENOMEM, "out of memory for a tokenizer workspace");
    uint32_t pairs = 1;
    for (int i = 0; i < t->n_splits; i++) {
        uint32_t groups = 0;
        pcre2_pattern_info(t->splits[i].code, PCRE2_INFO_CAPTURECOUNT, &groups);
        if (groups + 1 > pairs) pairs = groups + 1;
    }
    w->match = pcre2_match_data_create(pairs, NULL);
    w->context = pcre2_match_context_create(NULL);
    w->jit_stack = pcre2_jit_stack_create(32 * 1024, JIT_STACK_MAX, NULL);
    if (!w->match || !w->context || !w->jit_stack || tok_bpe_scratch_new(&w->bpe) != 0) {
        workspace_free(w);
        return tome_errorf(err, TOME_ENOMEM, "out of memory for a tokenizer workspace");
    }
    pcre2_jit_stack_assign(w->context, NULL, w->jit_stack);
    *out = w;
    return 0;
}

/* The pool is the one mutable part of a tokenizer (see the top comment). */
static int workspace_take(const v4_tokenizer *ct, tok_workspace **out, tome_error *err)
{
    v4_tokenizer *t = (v4_tokenizer *)ct;
    pthread_mutex_lock(&t->pool_lock);
    tok_workspace *w = t->pool;
    if (w) t->pool = w->next_free;
    pthread_mutex_unlock(&t->pool_lock);
    if (w) {
        *out = w;
        return 0;
    }
    return workspace_new(t, out, err);
}

static void workspace_give_back(const v4_tokenizer *ct, tok_workspace *w)
{
    v4_tokenizer *t = (v4_tokenizer *)ct;
    pthread_mutex_lock(&t->pool_lock);
    w->next_free = t->pool;
    t->pool = w;
    pthread_mutex_unlock(&t->pool_lock);
}

/* ---- Loading ------------------------------------------------------------- */

int v4_tokenizer_from_json(const char *name, const char *json, size_t len, v4_tokenizer **out,
                           tome_error *err)
{
    *out = NULL;
    v4_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(name))) {
        free(t);
        return tome_errorf(err, TOME_ENOMEM, "out of memory loading %s", name);
    }
    pthread_mutex_init(&t->pool_lock, NULL);
    int rc = tok_load_json(t, json, len, err);
    if (rc) {
        v4_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int v4_tokenizer_load(const char *path, v4_tokenizer **out, tome_error *err)
{
    *out = NULL;
    char *json = NULL;
    size_t len = 0;
    int rc = tome_read_file(path, MAX_TOKENIZER_FILE, &json, &len, err);
    if (rc == 0) rc = v4_tokenizer_from_json(path, json, len, out, err);
    free(json);
    return rc;
}

void v4_tokenizer_free(v4_tokenizer *t)
{
    if (!t) return;
    while (t->pool) {
        tok_workspace *w = t->pool;
        t->pool = w->next_free;
        workspace_free(w);
    }
    pthread_mutex_destroy(&t->pool_lock);
    for (int i = 0; i < t->n_splits; i++) tok_regex_free(&t->splits[i]);
    tok_merges_free(&t->merges);
    free(t->trie);
    free(t->bytes);
    free(t->bytes_of);
    free(t->has_id);
    free(t->path);
    free(t);
}

int v4_tokenizer_n_ids(const v4_tokenizer *t)
{
    return t->n_ids;
}

int v4_token_bytes(const v4_tokenizer *t, int32_t id, const char **bytes, size_t *len)
{
    if (id < 0 || id >= t->n_ids || !t->has_id[id]) return TOME_ENOTFOUND;
    *bytes = t->bytes + t->bytes_of[id];
    *len = t->bytes_of[id + 1] - t->bytes_of[id];
    return 0;
}

/* ---- Encoding ------------------------------------------------------------ */

typedef struct encoder {
    const v4_tokenizer *t;
    tok_workspace *w;
    const char *text;
    const v4_prompt_span *spans; /* where added tokens may match; sorted */
    size_t n_spans;
    v4_ids *out;
    tome_error *err;
} encoder;

/* Find the next match of Split step `step` in text[from, end); the text
 * beyond `end` is invisible to it, as each piece is its own string in the
 * reference.  Returns 1 with the match in [*ms, *me), 0 if none, or an error. */
static int next_split(encoder *e, int step, size_t from, size_t end, size_t *ms, size_t *me)
{
    const tok_regex *re = &e->t->splits[step];
    PCRE2_SPTR subject = (PCRE2_SPTR)e->text;
    int rc = re->jit ? pcre2_jit_match(re->code, subject, end, from, PCRE2_NOTEMPTY, e->w->match,
                                       e->w->context)
                     : pcre2_match(re->code, subject, end, from, PCRE2_NOTEMPTY, e->w->match,
                                   e->w->context);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return tome_errorf(e->err, TOME_ELIMIT, "%s: pre-tokenizer step %d at byte %zu: %s",
                           e->t->path, step + 1, from, (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->w->match);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

/* Run text[s, end) through Split steps `step`.. and BPE. */
static int split(encoder *e, int step, size_t s, size_t end)
{
    if (step == e->t->n_splits)
        return tok_bpe_piece(e->t, e->w->bpe, e->text + s, end - s, e->out, e->err);
    size_t at = s, ms, me;
    while (at < end) {
        int found = next_split(e, step, at, end, &ms, &me);
        if (found < 0) return found;
        if (!found) break;
        int rc = ms > at ? split(e, step + 1, at, ms) : 0;
        if (rc == 0) rc = split(e, step + 1, ms, me);
        if (rc) return rc;
        at = me;
    }
    return at < end ? split(e, step + 1, at, end) : 0;
}

/* The first span that ends after `at` (spans are sorted and disjoint). */
static size_t span_after(const encoder *e, size_t at)
{
    size_t lo = 0, hi = e->n_spans;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (e->spans[mid].end <= at)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Find the leftmost-longest added token of `pass` in text[from, end) that
 * lies inside one span.  Returns 1 with its place and id, or 0. */
static int next_added(const encoder *e, int pass, size_t from, size_t end, size_t *ms, size_t *mlen,
                      int32_t *id)
{
    const v4_tokenizer *t = e->t;
    for (size_t i = span_after(e, from); i < e->n_spans && e->spans[i].start < end; i++) {
        size_t limit = e->spans[i].end < end ? e->spans[i].end : end;
        size_t q = e->spans[i].start > from ? e->spans[i].start : from;
        for (; q < limit; q++) {
            if (!t->first_byte[(uint8_t)e->text[q]]) continue;
            size_t n = tok_trie_match(t, e->text + q, limit - q, pass, id);
            if (n) {
                *ms = q;
                *mlen = n;
                return 1;
            }
        }
    }
    return 0;
}

/* Encode text[s, end) from added-token pass `pass` on. */
static int encode_range(encoder *e, int pass, size_t s, size_t end)
{
    if (pass == TOK_PASSES || e->n_spans == 0 || e->t->n_added == 0)
        return s < end ? split(e, 0, s, end) : 0;
    size_t at = s, ms, mlen;
    int32_t id;
    while (next_added(e, pass, at, end, &ms, &mlen, &id)) {
        int rc = encode_range(e, pass + 1, at, ms);
        if (rc == 0) rc = tok_ids_reserve(e->out, 1, e->err);
        if (rc) return rc;
        e->out->ids[e->out->n++] = id;
        at = ms + mlen;
    }
    return encode_range(e, pass + 1, at, end);
}

static int encode(const v4_tokenizer *t, const char *text, size_t len, const v4_prompt_span *spans,
                  size_t n_spans, v4_ids *out, tome_error *err)
{
    size_t n_before = out->n;
    encoder e = {.t = t, .text = text, .spans = spans, .n_spans = n_spans, .out = out, .err = err};
    int rc = workspace_take(t, &e.w, err);
    if (rc) return rc;
    rc = encode_range(&e, 0, 0, len);
    workspace_give_back(t, e.w);
    if (rc) out->n = n_before;
    return rc;
}

int v4_tokenize(const v4_tokenizer *t, const char *text, size_t len, int parse_special, v4_ids *out,
                tome_error *err)
{
    v4_prompt_span all = {0, len};
    return encode(t, text, len, &all, parse_special ? 1 : 0, out, err);
}

int v4_prompt_tokenize(const v4_tokenizer *t, const v4_prompt *p, v4_ids *out, tome_error *err)
{
    return encode(t, p->text ? p->text : "", p->len, p->spans, p->n_spans, out, err);
}
