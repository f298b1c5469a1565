/*
 * search.c - full-text search over a version with file:line results.
 *
 * FTS5 finds and ranks the documents; to turn a document hit into lines,
 * FTS5's own highlight() marks every matched token in the text, and the
 * lines holding a mark are the hits.  That keeps line attribution exactly
 * consistent with FTS5's tokenizer and query syntax (prefixes, phrases,
 * NEAR) without indexing each line as a row, which would multiply the
 * index by the line count.  The marks are \x01 and \x02; a document that
 * itself contains \x01 may report an extra line, never miss one.
 */
#include "store/store-internal.h"

#include <stdlib.h>
#include <string.h>

int store_hits_add(store_hits *h, const char *path, int64_t line, const char *text, size_t len,
                   tome_error *err)
{
    if (h->n == h->cap) {
        size_t ncap = h->cap ? 2 * h->cap : 16;
        store_hit *grown = realloc(h->hits, ncap * sizeof *grown);
        if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory collecting hits");
        h->hits = grown;
        h->cap = ncap;
    }
    store_hit *hit = &h->hits[h->n];
    hit->path = strdup(path);
    hit->text = malloc(len + 1);
    if (!hit->path || !hit->text) {
        free(hit->path);
        free(hit->text);
        return tome_errorf(err, TOME_ENOMEM, "out of memory collecting hits");
    }
    memcpy(hit->text, text, len);
    hit->text[len] = '\0';
    hit->line = line;
    hit->score = 0;
    h->n++;
    return 0;
}

void store_hits_free(store_hits *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->hits[i].path);
        free(h->hits[i].text);
    }
    free(h->hits);
    memset(h, 0, sizeof *h);
}

/* Append a hit for every marked line of `marked` (highlight() output),
 * the marks removed from the reported text. */
static int lines_with_marks(const char *path, const char *marked, size_t max, store_hits *out,
                            tome_error *err)
{
    int64_t line = 1;
    const char *p = marked;
    while (*p && out->n < max) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (memchr(p, '\x01', len)) {
            char *clean = malloc(len + 1);
            if (!clean) return tome_errorf(err, TOME_ENOMEM, "out of memory collecting hits");
            size_t k = 0;
            for (size_t i = 0; i < len; i++)
                if (p[i] != '\x01' && p[i] != '\x02') clean[k++] = p[i];
            if (k && clean[k - 1] == '\r') k--;
            int rc = store_hits_add(out, path, line, clean, k, err);
            free(clean);
            if (rc) return rc;
        }
        if (!end) break;
        p = end + 1;
        line++;
    }
    return 0;
}

int store_search(store *s, int64_t version_id, const char *query, size_t max, store_hits *out,
                 tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT d.path, highlight(document_fts, 0, char(1), char(2)),"
                           " document_fts.rank"
                           " FROM document_fts JOIN documents d ON d.id = document_fts.rowid"
                           " JOIN version_documents v ON v.document_id = d.id"
                           " WHERE document_fts MATCH ?2 AND v.version_id = ?1"
                           " ORDER BY document_fts.rank, v.position",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, version_id);
    sqlite3_bind_text(st, 2, query, -1, SQLITE_STATIC);
    while (out->n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *path = (const char *)sqlite3_column_text(st, 0);
        const char *marked = (const char *)sqlite3_column_text(st, 1);
        size_t first = out->n;
        int bad = lines_with_marks(path, marked ? marked : "", max, out, err);
        /* FTS5's rank is bm25(), negative and lower for better matches. */
        for (size_t i = first; i < out->n; i++) out->hits[i].score = -sqlite3_column_double(st, 2);
        if (bad) {
            sqlite3_finalize(st);
            return bad;
        }
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) return 0;
    if ((rc & 0xff) == SQLITE_ERROR)
        return tome_errorf(err, TOME_EINVAL, "%s: search \"%s\": %s", s->path, query,
                           sqlite3_errmsg(s->db));
    return store_fail(s, rc, err, "searching for \"%s\"", query);
}
