/*
 * corpus.c - corpora, their documents and their versions.
 *
 * A corpus is a name.  Its documents are (path, content) rows that are
 * only ever added; a version is an ordered list of document ids.  That
 * split is what makes re-ingest cheap and safe: an unchanged file is found
 * by (path, sha256) and referenced again, and a new version becomes visible
 * only when the row that lists its documents commits, so a failed ingest
 * leaves the previous version exactly as it was.
 */
#include "store/store-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int find_id(store *s, const char *sql, const char *key, int64_t *id, tome_error *err,
                   const char *what)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s, sql, &st, err);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return 0;
    if (rc == SQLITE_DONE)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: no %s \"%s\"", s->path, what, key);
    return store_fail(s, rc, err, "looking up %s \"%s\"", what, key);
}

int store_corpus_find(store *s, const char *name, int64_t *id, tome_error *err)
{
    return find_id(s, "SELECT id FROM corpora WHERE name = ?1", name, id, err, "corpus");
}

int store_corpus_ensure(store *s, const char *name, int64_t *id, tome_error *err)
{
    if (!*name) return tome_errorf(err, TOME_EINVAL, "%s: a corpus name is empty", s->path);
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "INSERT INTO corpora(name, created_at) VALUES (?1, ?2)"
                           " ON CONFLICT(name) DO NOTHING",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, store_clock());
    rc = store_step_done(s, st, err, "creating corpus");
    if (rc) return tome_error_wrap(err, "corpus \"%s\"", name);
    return store_corpus_find(s, name, id, err);
}

int store_corpus_delete(store *s, const char *name, tome_error *err)
{
    int64_t id;
    int rc = store_corpus_find(s, name, &id, err);
    if (rc) return rc;
    sqlite3_stmt *st;
    rc = store_prepare(s, "DELETE FROM corpora WHERE id = ?1", &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    return store_step_done(s, st, err, "deleting corpus");
}

void store_document_clear(store_document *d)
{
    free(d->path);
    free(d->media_type);
    free(d->encoding);
    free(d->text);
    memset(d, 0, sizeof *d);
}

int store_document_add(store *s, int64_t corpus_id, const store_document *d, int64_t *id,
                       tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "INSERT INTO documents(corpus_id, path, size, sha256, media_type,"
                           " encoding, mtime, line_count, text)"
                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, corpus_id);
    sqlite3_bind_text(st, 2, d->path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, d->size);
    sqlite3_bind_text(st, 4, d->sha256, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, d->media_type, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, d->encoding, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, d->mtime);
    sqlite3_bind_int64(st, 8, d->line_count);
    sqlite3_bind_text64(st, 9, d->text ? d->text : "", d->text ? d->text_len : 0, SQLITE_STATIC,
                        SQLITE_UTF8);
    rc = store_step_done(s, st, err, "adding document");
    if (rc) return tome_error_wrap(err, "document %s", d->path);
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_document_find(store *s, int64_t corpus_id, const char *path, const char *sha256,
                        int64_t *id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT id FROM documents"
                           " WHERE corpus_id = ?1 AND path = ?2 AND sha256 = ?3",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, corpus_id);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, sha256, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return 0;
    if (rc == SQLITE_DONE)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: no document %s with content %.12s", s->path,
                           path, sha256);
    return store_fail(s, rc, err, "looking up document %s", path);
}

/* Columns 0..7 of a documents row, in the order read_document expects. */
#define DOCUMENT_COLUMNS                                                                           \
    "d.id, d.path, d.size, d.sha256, d.media_type, d.encoding, d.mtime,"                           \
    " d.line_count"

static int read_document(sqlite3_stmt *st, store_document *d)
{
    int oom = 0;
    d->id = sqlite3_column_int64(st, 0);
    d->path = store_column_strdup(st, 1, &oom);
    d->size = sqlite3_column_int64(st, 2);
    const unsigned char *sha = sqlite3_column_text(st, 3);
    snprintf(d->sha256, sizeof d->sha256, "%s", sha ? (const char *)sha : "");
    d->media_type = store_column_strdup(st, 4, &oom);
    d->encoding = store_column_strdup(st, 5, &oom);
    d->mtime = sqlite3_column_int64(st, 6);
    d->line_count = sqlite3_column_int64(st, 7);
    return oom ? TOME_ENOMEM : 0;
}

int store_document_get(store *s, int64_t id, store_document *d, tome_error *err)
{
    memset(d, 0, sizeof *d);
    sqlite3_stmt *st;
    int rc = store_prepare(s, "SELECT " DOCUMENT_COLUMNS ", d.text FROM documents d WHERE id = ?1",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        if (rc == SQLITE_DONE)
            return tome_errorf(err, TOME_ENOTFOUND, "%s: no document #%lld", s->path,
                               (long long)id);
        return store_fail(s, rc, err, "reading document #%lld", (long long)id);
    }
    rc = read_document(st, d);
    size_t len = (size_t)sqlite3_column_bytes(st, 8);
    const void *text = sqlite3_column_text(st, 8);
    d->text = malloc(len + 1);
    if (!rc && d->text) {
        memcpy(d->text, text, len);
        d->text[len] = '\0';
        d->text_len = len;
    }
    sqlite3_finalize(st);
    if (rc || !d->text) {
        store_document_clear(d);
        return tome_errorf(err, TOME_ENOMEM, "%s: out of memory reading document #%lld", s->path,
                           (long long)id);
    }
    return 0;
}

static int insert_version(store *s, int64_t corpus_id, size_t n, const store_version_info *info,
                          int64_t *version_id, int64_t *number, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "INSERT INTO corpus_versions(corpus_id, number, source, created_at,"
                           " n_documents, added, changed, removed, first_changed_position)"
                           " SELECT ?1, coalesce(max(number), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8"
                           " FROM corpus_versions WHERE corpus_id = ?1"
                           " RETURNING id, number",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, corpus_id);
    sqlite3_bind_text(st, 2, info->source ? info->source : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, store_clock());
    sqlite3_bind_int64(st, 4, (int64_t)n);
    sqlite3_bind_int64(st, 5, info->added);
    sqlite3_bind_int64(st, 6, info->changed);
    sqlite3_bind_int64(st, 7, info->removed);
    if (info->first_changed_position >= 0) sqlite3_bind_int64(st, 8, info->first_changed_position);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *version_id = sqlite3_column_int64(st, 0);
        if (number) *number = sqlite3_column_int64(st, 1);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return store_fail(s, rc, err, "creating a version");
    return 0;
}

static int insert_positions(store *s, int64_t version_id, const int64_t *doc_ids, size_t n,
                            tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "INSERT INTO version_documents(version_id, position, document_id)"
                           " VALUES (?1, ?2, ?3)",
                           &st, err);
    if (rc) return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        sqlite3_bind_int64(st, 1, version_id);
        sqlite3_bind_int64(st, 2, (int64_t)i);
        sqlite3_bind_int64(st, 3, doc_ids[i]);
        int step = sqlite3_step(st);
        if (step != SQLITE_DONE)
            rc = store_fail(s, step, err, "listing document #%lld at position %zu",
                            (long long)doc_ids[i], i);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return rc;
}

int store_version_create(store *s, int64_t corpus_id, const int64_t *doc_ids, size_t n,
                         const store_version_info *info, int64_t *version_id, int64_t *number,
                         tome_error *err)
{
    int rc = store_savepoint(s, err);
    if (rc) return rc;
    rc = insert_version(s, corpus_id, n, info, version_id, number, err);
    if (!rc) rc = insert_positions(s, *version_id, doc_ids, n, err);
    if (rc) {
        store_undo(s);
        return rc;
    }
    return store_release(s, err);
}

int store_version_latest(store *s, int64_t corpus_id, int64_t *version_id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT id FROM corpus_versions WHERE corpus_id = ?1"
                           " ORDER BY number DESC LIMIT 1",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, corpus_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *version_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return 0;
    if (rc == SQLITE_DONE)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: corpus #%lld has no version yet", s->path,
                           (long long)corpus_id);
    return store_fail(s, rc, err, "finding the newest version");
}

int store_version_by_number(store *s, int64_t corpus_id, int64_t number, int64_t *version_id,
                            tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s, "SELECT id FROM corpus_versions WHERE corpus_id = ?1 AND number = ?2",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, corpus_id);
    sqlite3_bind_int64(st, 2, number);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *version_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return 0;
    if (rc == SQLITE_DONE)
        return tome_errorf(err, TOME_ENOTFOUND, "corpus #%lld has no version %lld",
                           (long long)corpus_id, (long long)number);
    return store_fail(s, rc, err, "finding a version by its number");
}

int store_version_number(store *s, int64_t version_id, int64_t *number, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s, "SELECT number FROM corpus_versions WHERE id = ?1", &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, version_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *number = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return 0;
    if (rc == SQLITE_DONE)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: no version #%lld", s->path,
                           (long long)version_id);
    return store_fail(s, rc, err, "reading version #%lld", (long long)version_id);
}

int store_version_documents(store *s, int64_t version_id, store_document_list *out, tome_error *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT " DOCUMENT_COLUMNS " FROM version_documents v"
                           " JOIN documents d ON d.id = v.document_id"
                           " WHERE v.version_id = ?1 ORDER BY v.position",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, version_id);
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            store_document *grown = realloc(out->docs, ncap * sizeof *grown);
            if (!grown) break;
            out->docs = grown;
            cap = ncap;
        }
        memset(&out->docs[out->n], 0, sizeof out->docs[0]);
        if (read_document(st, &out->docs[out->n++])) break;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) return 0;
    store_document_list_free(out);
    if (rc == SQLITE_ROW)
        return tome_errorf(err, TOME_ENOMEM, "%s: out of memory listing version #%lld", s->path,
                           (long long)version_id);
    return store_fail(s, rc, err, "listing version #%lld", (long long)version_id);
}

void store_document_list_free(store_document_list *l)
{
    for (size_t i = 0; i < l->n; i++) store_document_clear(&l->docs[i]);
    free(l->docs);
    memset(l, 0, sizeof *l);
}

int store_corpus_list(store *s, char ***names, size_t *n, tome_error *err)
{
    *names = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = store_prepare(s, "SELECT name FROM corpora ORDER BY name", &st, err);
    if (rc) return rc;
    size_t cap = 0;
    int oom = 0;
    while (!oom && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(*names, cap * sizeof *grown);
            if (!grown) {
                oom = 1;
                break;
            }
            *names = grown;
        }
        (*names)[*n] = store_column_strdup(st, 0, &oom);
        if (!oom) (*n)++;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE && !oom) return 0;
    for (size_t i = 0; i < *n; i++) free((*names)[i]);
    free(*names);
    *names = NULL;
    *n = 0;
    if (oom) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory listing corpora", s->path);
    return store_fail(s, rc, err, "listing corpora");
}

int store_corpus_name(store *s, int64_t id, char **name, tome_error *err)
{
    *name = NULL;
    sqlite3_stmt *st;
    int rc = store_prepare(s, "SELECT name FROM corpora WHERE id = ?1", &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    int oom = 0;
    if (rc == SQLITE_ROW) *name = store_column_strdup(st, 0, &oom);
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: no corpus #%lld", s->path, (long long)id);
    if (rc != SQLITE_ROW) return store_fail(s, rc, err, "reading corpus #%lld", (long long)id);
    if (oom) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", s->path);
    return 0;
}
