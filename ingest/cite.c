/*
 * cite.c - an answer's path:line citations checked against the corpus, the
 * corpus passages that match a question (its sources), and the cited lines
 * themselves for a reader (ingest_read_lines).
 *
 * The document-QA prompt (tokenizer/docqa.c) numbers every line and asks the
 * model to cite "path:line" or "path:first-last", so those are the forms
 * looked for.  A model can cite a file or a line that does not exist; such
 * a citation is kept and marked, never dropped, because a wrong citation is
 * exactly what a reader must be told about.  Sources are found by FTS5 over
 * the same version, with the question's words as an OR query (a question is
 * prose, not FTS5 syntax, so it is never passed through as a query).
 */
#include "ingest/ingest-internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Bytes that cannot be part of a cited path: spaces, quotes and brackets
 * around it in prose or Markdown, and ':' which ends it. */
static int path_byte(unsigned char c)
{
    return c > ' ' && !strchr("\"'`()[]{}<>,;:*|", c);
}

/* Does `path` (n bytes) look like a file name even when no document has
 * it?  A directory or an extension and a letter: "12:30" is a time. */
static int looks_like_path(const char *path, size_t n)
{
    int letter = 0, mark = 0;
    for (size_t i = 0; i < n; i++) {
        letter |= isalpha((unsigned char)path[i]) || (unsigned char)path[i] >= 0x80;
        mark |= path[i] == '.' || path[i] == '/';
    }
    return letter && mark;
}

static const store_document *find_doc(const store_document_list *docs, const char *path, size_t n)
{
    for (size_t i = 0; i < docs->n; i++)
        if (strlen(docs->docs[i].path) == n && memcmp(docs->docs[i].path, path, n) == 0)
            return &docs->docs[i];
    return NULL;
}

/* A line number of at most 12 digits at *p; 0 when there is none. */
static int64_t read_number(const char **p)
{
    int64_t v = 0;
    int digits = 0;
    while (isdigit((unsigned char)**p) && digits < 12) {
        v = v * 10 + (**p - '0');
        (*p)++;
        digits++;
    }
    return isdigit((unsigned char)**p) ? 0 : v;
}

static int seen(const ingest_citations *c, const char *path, size_t n, int64_t a, int64_t b)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->items[i].line == a && c->items[i].end_line == b && strlen(c->items[i].path) == n &&
            memcmp(c->items[i].path, path, n) == 0)
            return 1;
    return 0;
}

static int add(ingest_citations *c, const char *path, size_t n, int64_t a, int64_t b,
               tome_error *err)
{
    ingest_citation *grown = realloc(c->items, (c->n + 1) * sizeof *grown);
    if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory collecting citations");
    c->items = grown;
    ingest_citation *it = &c->items[c->n];
    memset(it, 0, sizeof *it);
    if (!(it->path = strndup(path, n)))
        return tome_errorf(err, TOME_ENOMEM, "out of memory collecting citations");
    it->line = a;
    it->end_line = b;
    c->n++;
    return 0;
}

/* The text of lines a..b of `d` (which exist), joined by newlines. */
static char *lines_text(const store_document *d, int64_t a, int64_t b)
{
    const char *p = d->text, *end = d->text + d->text_len;
    for (int64_t line = 1; line < a && p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    const char *q = p;
    for (int64_t line = a; line <= b && q < end; line++) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        q = nl ? nl + 1 : end;
    }
    if (q > p && q[-1] == '\n') q--;
    if (q > p && q[-1] == '\r') q--;
    return strndup(p, (size_t)(q - p));
}

/* Check one citation against the version's documents and fill its text. */
static int resolve(store *s, const store_document_list *docs, ingest_citation *it, tome_error *err)
{
    const store_document *listed = find_doc(docs, it->path, strlen(it->path));
    if (!listed || it->line < 1 || it->end_line < it->line || it->end_line > listed->line_count)
        return 0;
    it->exists = 1;
    if (it->end_line - it->line >= INGEST_CITE_MAX_LINES) return 0; /* too long to quote */
    store_document d;
    int rc = store_document_get(s, listed->id, &d, err);
    if (rc) return rc;
    it->text = lines_text(&d, it->line, it->end_line);
    store_document_clear(&d);
    return it->text ? 0 : tome_errorf(err, TOME_ENOMEM, "out of memory quoting a citation");
}

int ingest_read_lines(store *s, int64_t version_id, const char *path, int64_t first, int64_t last,
                      char **text, int64_t *last_out, int64_t *count, tome_error *err)
{
    store_document_list docs;
    int rc = store_version_documents(s, version_id, &docs, err);
    if (rc) return rc;
    const store_document *listed = find_doc(&docs, path, strlen(path));
    int64_t id = listed ? listed->id : 0;
    *count = listed ? listed->line_count : 0;
    store_document_list_free(&docs);
    if (!id) return tome_errorf(err, TOME_ENOTFOUND, "no document '%s' in this version", path);
    if (first < 1 || first > *count)
        return tome_errorf(err, TOME_EINVAL, "'%s' has lines 1 to %lld, not %lld", path,
                           (long long)*count, (long long)first);
    if (last < first)
        return tome_errorf(err, TOME_EINVAL, "line %lld is before line %lld", (long long)last,
                           (long long)first);
    if (last > *count) last = *count;
    if (last - first >= INGEST_READ_MAX_LINES) last = first + INGEST_READ_MAX_LINES - 1;
    store_document d;
    if ((rc = store_document_get(s, id, &d, err)) != 0) return rc;
    *text = lines_text(&d, first, last);
    *last_out = last;
    store_document_clear(&d);
    return *text ? 0 : tome_errorf(err, TOME_ENOMEM, "out of memory reading '%s'", path);
}

/* Scan `answer` for path:line and path:first-last. */
static int scan(const char *answer, const store_document_list *docs, ingest_citations *out,
                tome_error *err)
{
    for (const char *p = answer; *p && out->n < INGEST_CITE_MAX; p++) {
        if (*p != ':' || p == answer || !path_byte((unsigned char)p[-1])) continue;
        const char *start = p;
        while (start > answer && path_byte((unsigned char)start[-1])) start--;
        size_t n = (size_t)(p - start);
        const char *q = p + 1;
        int64_t a = read_number(&q), b = a;
        if (a == 0) continue;
        if (*q == '-' && isdigit((unsigned char)q[1])) {
            q++;
            b = read_number(&q);
            if (b == 0) continue;
        }
        if (!find_doc(docs, start, n) && !looks_like_path(start, n)) continue;
        if (!seen(out, start, n, a, b) && add(out, start, n, a, b, err) != 0) return TOME_ENOMEM;
        p = q - 1;
    }
    return 0;
}

int ingest_cite(store *s, int64_t version_id, const char *answer, ingest_citations *out,
                tome_error *err)
{
    memset(out, 0, sizeof *out);
    store_document_list docs;
    int rc = store_version_documents(s, version_id, &docs, err);
    if (rc) return rc;
    rc = scan(answer, &docs, out, err);
    for (size_t i = 0; i < out->n && rc == 0; i++) rc = resolve(s, &docs, &out->items[i], err);
    store_document_list_free(&docs);
    if (rc) ingest_citations_free(out);
    return rc;
}

void ingest_citations_free(ingest_citations *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->items[i].path);
        free(c->items[i].text);
    }
    free(c->items);
    memset(c, 0, sizeof *c);
}

/* A word of a question or a line: a run of letters, digits, '_' and
 * non-ASCII bytes, as FTS5's unicode61 tokenizer splits them.  Returns its
 * start and sets *len; NULL at the end of `p`. */
static const char *next_word(const char *p, size_t *len)
{
    for (;; p++) {
        if (!*p) return NULL;
        if (isalnum((unsigned char)*p) || *p == '_' || (unsigned char)*p >= 0x80) break;
    }
    const char *w = p;
    while (*p && (isalnum((unsigned char)*p) || *p == '_' || (unsigned char)*p >= 0x80)) p++;
    *len = (size_t)(p - w);
    return w;
}

/* Words worth searching for: two bytes or more, or a number ("token 7"). */
static int searchable(const char *w, size_t len)
{
    return len >= 2 || isdigit((unsigned char)*w);
}

/* How many of the question's searchable words the line has. */
static int words_on_line(const char *question, const char *line)
{
    int n = 0;
    size_t qlen, llen;
    for (const char *q = next_word(question, &qlen); q; q = next_word(q + qlen, &qlen)) {
        if (!searchable(q, qlen)) continue;
        for (const char *l = next_word(line, &llen); l; l = next_word(l + llen, &llen))
            if (llen == qlen && strncasecmp(l, q, qlen) == 0) {
                n++;
                break;
            }
    }
    return n;
}

/* The question's words, each quoted, joined by OR; NULL when it has none. */
static char *words_query(const char *question)
{
    /* A digit and its separator become "7" OR : 7 bytes for 2. */
    size_t len = 0;
    char *q = malloc(4 * strlen(question) + 16);
    if (!q) return NULL;
    int words = 0;
    size_t n;
    for (const char *w = next_word(question, &n); w && words < 32; w = next_word(w + n, &n)) {
        if (!searchable(w, n)) continue;
        len += (size_t)sprintf(q + len, "%s\"%.*s\"", words ? " OR " : "", (int)n, w);
        words++;
    }
    if (words == 0) {
        free(q);
        return NULL;
    }
    return q;
}

static int per_path(const store_hits *h, const char *path)
{
    int n = 0;
    for (size_t i = 0; i < h->n; i++) n += strcmp(h->hits[i].path, path) == 0;
    return n;
}

/* Lines with more of the question's words first; among equals, the
 * better document, then the search's order (the sort is stable). */
static void rank_lines(const char *question, store_hits *h)
{
    for (size_t i = 0; i < h->n; i++) h->hits[i].score += words_on_line(question, h->hits[i].text);
    for (size_t i = 1; i < h->n; i++) {
        store_hit x = h->hits[i];
        size_t j = i;
        for (; j > 0 && h->hits[j - 1].score < x.score; j--) h->hits[j] = h->hits[j - 1];
        h->hits[j] = x;
    }
}

int ingest_sources(store *s, int64_t version_id, const char *question, size_t max, store_hits *out,
                   tome_error *err)
{
    memset(out, 0, sizeof *out);
    char *query = words_query(question);
    if (!query) return 0;
    store_hits all = {0};
    int rc = store_search(s, version_id, query, INGEST_SOURCE_LINES, &all, err);
    free(query);
    if (rc == 0) rank_lines(question, &all);
    /* At most two lines of a document, so one long file cannot fill them. */
    for (size_t i = 0; i < all.n && out->n < max && rc == 0; i++) {
        store_hit *h = &all.hits[i];
        if (per_path(out, h->path) >= 2) continue;
        size_t len = strlen(h->text);
        if (len > INGEST_SNIPPET_BYTES) {
            len = INGEST_SNIPPET_BYTES;
            while (len > 0 && ((unsigned char)h->text[len] & 0xc0) == 0x80) len--;
        }
        rc = store_hits_add(out, h->path, h->line, h->text, len, err);
        if (rc == 0) out->hits[out->n - 1].score = h->score;
    }
    store_hits_free(&all);
    if (rc) store_hits_free(out);
    return rc;
}
