/*
 * context.c - rendered contexts: a version as prompt text, with its maps.
 *
 * A context row holds what prefill and citation checking need without
 * re-rendering: the token ids (so [kvcache] can compare a new rendering
 * with a cached state's ids) and, per document, its byte and token ranges
 * and the offset of every line.  The arrays are stored as little-endian
 * int32 (ids) and int64 (offsets) blobs, written and read byte by byte so
 * the file means the same on any host.
 */
#include "store/store-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *pack_i64(const int64_t *v, size_t n)
{
    unsigned char *out = malloc(n ? n * 8 : 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) out[8 * i + b] = (unsigned char)((uint64_t)v[i] >> (8 * b));
    return out;
}

static unsigned char *pack_i32(const int32_t *v, size_t n)
{
    unsigned char *out = malloc(n ? n * 4 : 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 4; b++) out[4 * i + b] = (unsigned char)((uint32_t)v[i] >> (8 * b));
    return out;
}

static int64_t *unpack_i64(const unsigned char *p, size_t n)
{
    int64_t *out = malloc(n ? n * sizeof *out : 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        uint64_t x = 0;
        for (int b = 0; b < 8; b++) x |= (uint64_t)p[8 * i + b] << (8 * b);
        out[i] = (int64_t)x;
    }
    return out;
}

static int32_t *unpack_i32(const unsigned char *p, size_t n)
{
    int32_t *out = malloc(n ? n * sizeof *out : 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t x = 0;
        for (int b = 0; b < 4; b++) x |= (uint32_t)p[4 * i + b] << (8 * b);
        out[i] = (int32_t)x;
    }
    return out;
}

static int insert_context(store *s, const store_context *ctx, int64_t *id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "INSERT INTO contexts(version_id, tokenizer, line_numbers, text_bytes,"
                           " token_count, token_ids, created_at)"
                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                           &st, err);
    if (rc) return rc;
    unsigned char *ids = NULL;
    sqlite3_bind_int64(st, 1, ctx->version_id);
    sqlite3_bind_text(st, 2, ctx->tokenizer, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, ctx->line_numbers != 0);
    sqlite3_bind_int64(st, 4, ctx->text_bytes);
    if (ctx->token_ids) {
        ids = pack_i32(ctx->token_ids, (size_t)ctx->token_count);
        if (!ids) {
            sqlite3_finalize(st);
            return tome_errorf(err, TOME_ENOMEM, "%s: out of memory saving a context", s->path);
        }
        sqlite3_bind_int64(st, 5, ctx->token_count);
        sqlite3_bind_blob64(st, 6, ids, 4 * (uint64_t)ctx->token_count, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 7, store_clock());
    rc = store_step_done(s, st, err, "saving a context");
    free(ids);
    if (!rc) *id = sqlite3_last_insert_rowid(s->db);
    return rc;
}

static int bind_offsets(sqlite3_stmt *st, int i, const int64_t *v, size_t n, unsigned char **buf)
{
    *buf = NULL;
    if (!v) return sqlite3_bind_null(st, i);
    *buf = pack_i64(v, n);
    if (!*buf) return SQLITE_NOMEM;
    return sqlite3_bind_blob64(st, i, *buf, 8 * (uint64_t)n, SQLITE_STATIC);
}

static int insert_doc(store *s, sqlite3_stmt *st, int64_t context_id, size_t position,
                      const store_context_doc *d, tome_error *err)
{
    unsigned char *bytes = NULL, *tokens = NULL;
    sqlite3_bind_int64(st, 1, context_id);
    sqlite3_bind_int64(st, 2, (int64_t)position);
    sqlite3_bind_int64(st, 3, d->document_id);
    sqlite3_bind_int64(st, 4, d->byte_start);
    sqlite3_bind_int64(st, 5, d->byte_end);
    if (d->line_tokens) {
        sqlite3_bind_int64(st, 6, d->token_start);
        sqlite3_bind_int64(st, 7, d->token_end);
    } else {
        sqlite3_bind_null(st, 6);
        sqlite3_bind_null(st, 7);
    }
    sqlite3_bind_int64(st, 8, d->n_lines);
    int rc = bind_offsets(st, 9, d->line_bytes, (size_t)d->n_lines, &bytes);
    if (rc == SQLITE_OK) rc = bind_offsets(st, 10, d->line_tokens, (size_t)d->n_lines, &tokens);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    free(bytes);
    free(tokens);
    if (rc != SQLITE_DONE) return store_fail(s, rc, err, "saving the map of %s", d->path);
    return 0;
}

int store_context_save(store *s, const store_context *ctx, int64_t *id, tome_error *err)
{
    int rc = store_savepoint(s, err);
    if (rc) return rc;
    rc = insert_context(s, ctx, id, err);
    sqlite3_stmt *st = NULL;
    if (!rc)
        rc = store_prepare(s,
                           "INSERT INTO context_documents(context_id, position, document_id,"
                           " byte_start, byte_end, token_start, token_end, n_lines, line_bytes,"
                           " line_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                           &st, err);
    for (size_t i = 0; i < ctx->n_docs && !rc; i++)
        rc = insert_doc(s, st, *id, i, &ctx->docs[i], err);
    sqlite3_finalize(st);
    if (rc) {
        store_undo(s);
        return rc;
    }
    return store_release(s, err);
}

int store_context_find(store *s, int64_t version_id, const char *tokenizer, int line_numbers,
                       int64_t *id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT id FROM contexts WHERE version_id = ?1 AND tokenizer = ?2"
                           " AND line_numbers = ?3 ORDER BY id DESC LIMIT 1",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, version_id);
    sqlite3_bind_text(st, 2, tokenizer, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, line_numbers != 0);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return 0;
    if (rc == SQLITE_DONE)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: version #%lld has no such rendered context",
                           s->path, (long long)version_id);
    return store_fail(s, rc, err, "finding a context of version #%lld", (long long)version_id);
}

int store_context_size(store *s, int64_t id, int64_t *token_count, int64_t *text_bytes,
                       tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(
        s, "SELECT coalesce(token_count, -1), text_bytes FROM contexts WHERE id = ?1", &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *token_count = sqlite3_column_int64(st, 0);
        *text_bytes = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return 0;
    if (rc == SQLITE_DONE)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: no context #%lld", s->path, (long long)id);
    return store_fail(s, rc, err, "reading the size of context #%lld", (long long)id);
}

static int load_header(store *s, int64_t id, store_context *ctx, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT version_id, tokenizer, line_numbers, text_bytes, token_count,"
                           " token_ids FROM contexts WHERE id = ?1",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        if (rc == SQLITE_DONE)
            return tome_errorf(err, TOME_ENOTFOUND, "%s: no context #%lld", s->path, (long long)id);
        return store_fail(s, rc, err, "loading context #%lld", (long long)id);
    }
    ctx->id = id;
    ctx->version_id = sqlite3_column_int64(st, 0);
    snprintf(ctx->tokenizer, sizeof ctx->tokenizer, "%s", sqlite3_column_text(st, 1));
    ctx->line_numbers = sqlite3_column_int(st, 2);
    ctx->text_bytes = sqlite3_column_int64(st, 3);
    ctx->token_count = -1;
    rc = 0;
    if (sqlite3_column_type(st, 4) != SQLITE_NULL) {
        ctx->token_count = sqlite3_column_int64(st, 4);
        const unsigned char *blob = sqlite3_column_blob(st, 5);
        if ((int64_t)sqlite3_column_bytes(st, 5) != 4 * ctx->token_count)
            rc = tome_errorf(err, TOME_EFORMAT,
                             "%s: context #%lld: token ids do not match its "
                             "token count",
                             s->path, (long long)id);
        else if (!(ctx->token_ids = unpack_i32(blob, (size_t)ctx->token_count)))
            rc = tome_errorf(err, TOME_ENOMEM, "%s: out of memory loading context #%lld", s->path,
                             (long long)id);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Unpack a blob column of `n` int64s; NULL column -> NULL array. */
static int column_offsets(sqlite3_stmt *st, int col, int64_t n, int64_t **out)
{
    *out = NULL;
    if (sqlite3_column_type(st, col) == SQLITE_NULL) return 0;
    if ((int64_t)sqlite3_column_bytes(st, col) != 8 * n) return TOME_EFORMAT;
    *out = unpack_i64(sqlite3_column_blob(st, col), (size_t)n);
    return *out ? 0 : TOME_ENOMEM;
}

static int read_doc(sqlite3_stmt *st, store_context_doc *d)
{
    int oom = 0;
    d->document_id = sqlite3_column_int64(st, 0);
    d->path = store_column_strdup(st, 1, &oom);
    d->byte_start = sqlite3_column_int64(st, 2);
    d->byte_end = sqlite3_column_int64(st, 3);
    int has_tokens = sqlite3_column_type(st, 4) != SQLITE_NULL;
    d->token_start = has_tokens ? sqlite3_column_int64(st, 4) : -1;
    d->token_end = has_tokens ? sqlite3_column_int64(st, 5) : -1;
    d->n_lines = sqlite3_column_int64(st, 6);
    if (oom) return TOME_ENOMEM;
    int rc = column_offsets(st, 7, d->n_lines, &d->line_bytes);
    if (!rc) rc = column_offsets(st, 8, d->n_lines, &d->line_tokens);
    return rc;
}

static int load_docs(store *s, store_context *ctx, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT c.document_id, d.path, c.byte_start, c.byte_end, c.token_start,"
                           " c.token_end, c.n_lines, c.line_bytes, c.line_tokens"
                           " FROM context_documents c JOIN documents d ON d.id = c.document_id"
                           " WHERE c.context_id = ?1 ORDER BY c.position",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, ctx->id);
    size_t cap = 0;
    int bad = 0;
    while (!bad && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (ctx->n_docs == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            store_context_doc *grown = realloc(ctx->docs, ncap * sizeof *grown);
            if (!grown) {
                bad = TOME_ENOMEM;
                break;
            }
            ctx->docs = grown;
            cap = ncap;
        }
        store_context_doc *d = &ctx->docs[ctx->n_docs++];
        memset(d, 0, sizeof *d);
        bad = read_doc(st, d);
    }
    sqlite3_finalize(st);
    if (bad)
        return tome_errorf(err, bad, "%s: context #%lld: %s", s->path, (long long)ctx->id,
                           bad == TOME_ENOMEM ? "out of memory" : "a line map has the wrong size");
    if (rc != SQLITE_DONE)
        return store_fail(s, rc, err, "loading the maps of context #%lld", (long long)ctx->id);
    return 0;
}

int store_context_load(store *s, int64_t id, store_context *ctx, tome_error *err)
{
    memset(ctx, 0, sizeof *ctx);
    int rc = load_header(s, id, ctx, err);
    if (!rc) rc = load_docs(s, ctx, err);
    if (rc) store_context_clear(ctx);
    return rc;
}

void store_context_clear(store_context *ctx)
{
    for (size_t i = 0; i < ctx->n_docs; i++) {
        free(ctx->docs[i].path);
        free(ctx->docs[i].line_bytes);
        free(ctx->docs[i].line_tokens);
    }
    free(ctx->docs);
    free(ctx->token_ids);
    memset(ctx, 0, sizeof *ctx);
}

int store_context_locate(const store_context *ctx, const char *path, int64_t line, int64_t *byte,
                         int64_t *token, tome_error *err)
{
    for (size_t i = 0; i < ctx->n_docs; i++) {
        const store_context_doc *d = &ctx->docs[i];
        if (strcmp(d->path, path) != 0) continue;
        if (line < 1 || line > d->n_lines)
            return tome_errorf(err, TOME_ENOTFOUND, "%s has %lld lines, not %lld", path,
                               (long long)d->n_lines, (long long)line);
        *byte = d->line_bytes[line - 1];
        *token = d->line_tokens ? d->line_tokens[line - 1] : -1;
        return 0;
    }
    return tome_errorf(err, TOME_ENOTFOUND, "%s is not in the rendered corpus", path);
}
