/*
 * kvstate.c - rows describing cached KV state files and restart points.
 *
 * The state files (STATE_DIR/kv/) are written by the KV cache; these rows
 * are its index: which version and model a file belongs to, how many tokens
 * it holds, whether it is complete, and when it was last used (the cache
 * budget evicts least recently used first).  A state is recorded as
 * 'writing' before its file exists and set 'ready' only after the file is
 * durable, so a crash in between leaves a row that says not to trust it.
 *
 * A file under the database's directory is recorded by its path relative
 * to that directory and given back joined to wherever the database is
 * now, so a state directory moved or restored elsewhere keeps its states.
 */
#include "store/store-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {"writing", "ready", "failed", "evicted"};

const char *store_state_status_name(store_state_status st)
{
    return (unsigned)st < 4 ? state_names[st] : "unknown";
}

static store_state_status status_from_name(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, state_names[i]) == 0) return (store_state_status)i;
    return STORE_STATE_FAILED;
}

/* Length of the database's directory in s->path (0: the current one). */
static size_t db_dir_len(const store *s)
{
    const char *slash = strrchr(s->path, '/');
    return slash ? (size_t)(slash - s->path) : 0;
}

/* `path` as recorded: relative to the database's directory if under it. */
static const char *recorded_path(const store *s, const char *path)
{
    size_t n = db_dir_len(s);
    if (n && strncmp(path, s->path, n) == 0 && path[n] == '/') return path + n + 1;
    return path;
}

/* A recorded path as given back (malloc'd; NULL when out of memory). */
static char *resolved_path(const store *s, const char *recorded)
{
    size_t n = db_dir_len(s);
    if (recorded[0] == '/' || n == 0) return strdup(recorded);
    size_t len = n + 1 + strlen(recorded) + 1;
    char *path = malloc(len);
    if (path) snprintf(path, len, "%.*s/%s", (int)n, s->path, recorded);
    return path;
}

int store_state_add(store *s, const store_kv_state *kv, int64_t *id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "INSERT INTO kv_states(version_id, context_id, model_fingerprint,"
                           " token_count, path, bytes, status, created_at, last_used_at)"
                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, kv->version_id);
    store_bind_id(st, 2, kv->context_id);
    sqlite3_bind_text(st, 3, kv->model_fingerprint, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, kv->token_count);
    sqlite3_bind_text(st, 5, recorded_path(s, kv->path), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, kv->bytes);
    sqlite3_bind_text(st, 7, store_state_status_name(kv->status), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, store_clock());
    rc = store_step_done(s, st, err, "recording state file");
    if (rc) return tome_error_wrap(err, "state %s", kv->path);
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_state_set_status(store *s, int64_t id, store_state_status status, int64_t bytes,
                           tome_error *err)
{
    sqlite3_stmt *st;
    int rc =
        store_prepare(s, "UPDATE kv_states SET status = ?2, bytes = ?3 WHERE id = ?1", &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, store_state_status_name(status), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, bytes);
    return store_step_one(s, st, id, err, "setting a state's status");
}

int store_state_touch(store *s, int64_t id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s, "UPDATE kv_states SET last_used_at = ?2 WHERE id = ?1", &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, store_clock());
    return store_step_one(s, st, id, err, "marking a state used");
}

int store_state_delete(store *s, int64_t id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s, "DELETE FROM kv_states WHERE id = ?1", &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    return store_step_one(s, st, id, err, "deleting a state");
}

static int read_state(const store *s, sqlite3_stmt *st, store_kv_state *kv)
{
    int oom = 0;
    kv->id = sqlite3_column_int64(st, 0);
    kv->version_id = sqlite3_column_int64(st, 1);
    kv->context_id = sqlite3_column_int64(st, 2);
    snprintf(kv->model_fingerprint, sizeof kv->model_fingerprint, "%s", sqlite3_column_text(st, 3));
    kv->token_count = sqlite3_column_int64(st, 4);
    const char *recorded = (const char *)sqlite3_column_text(st, 5);
    if (recorded && !(kv->path = resolved_path(s, recorded))) oom = 1;
    kv->bytes = sqlite3_column_int64(st, 6);
    kv->status = status_from_name((const char *)sqlite3_column_text(st, 7));
    kv->created_at = sqlite3_column_int64(st, 8);
    kv->last_used_at = sqlite3_column_int64(st, 9);
    return oom ? TOME_ENOMEM : 0;
}

int store_state_list(store *s, int64_t corpus_id, store_kv_state_list *out, tome_error *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT k.id, k.version_id, k.context_id, k.model_fingerprint,"
                           " k.token_count, k.path, k.bytes, k.status, k.created_at,"
                           " k.last_used_at FROM kv_states k"
                           " JOIN corpus_versions v ON v.id = k.version_id"
                           " WHERE ?1 = 0 OR v.corpus_id = ?1"
                           " ORDER BY k.last_used_at, k.id",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, corpus_id);
    size_t cap = 0;
    int bad = 0;
    while (!bad && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            store_kv_state *grown = realloc(out->states, ncap * sizeof *grown);
            if (!grown) {
                bad = 1;
                break;
            }
            out->states = grown;
            cap = ncap;
        }
        memset(&out->states[out->n], 0, sizeof out->states[0]);
        bad = read_state(s, st, &out->states[out->n++]) != 0;
    }
    sqlite3_finalize(st);
    if (!bad && rc == SQLITE_DONE) return 0;
    store_state_list_free(out);
    if (bad) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory listing states", s->path);
    return store_fail(s, rc, err, "listing states");
}

void store_state_list_free(store_kv_state_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->states[i].path);
    free(l->states);
    memset(l, 0, sizeof *l);
}

int store_restart_add(store *s, const store_restart_point *rp, int64_t *id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "INSERT INTO restart_points(state_id, token_count, file_offset, bytes,"
                           " created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, rp->state_id);
    sqlite3_bind_int64(st, 2, rp->token_count);
    sqlite3_bind_int64(st, 3, rp->file_offset);
    sqlite3_bind_int64(st, 4, rp->bytes);
    sqlite3_bind_int64(st, 5, store_clock());
    rc = store_step_done(s, st, err, "recording a restart point");
    if (rc)
        return tome_error_wrap(err, "state #%lld at %lld tokens", (long long)rp->state_id,
                               (long long)rp->token_count);
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_restart_list(store *s, int64_t state_id, store_restart_point **out, size_t *n,
                       tome_error *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT id, state_id, token_count, file_offset, bytes, created_at"
                           " FROM restart_points WHERE state_id = ?1 ORDER BY token_count",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, state_id);
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            store_restart_point *grown = realloc(*out, ncap * sizeof *grown);
            if (!grown) break;
            *out = grown;
            cap = ncap;
        }
        store_restart_point *rp = &(*out)[(*n)++];
        rp->id = sqlite3_column_int64(st, 0);
        rp->state_id = sqlite3_column_int64(st, 1);
        rp->token_count = sqlite3_column_int64(st, 2);
        rp->file_offset = sqlite3_column_int64(st, 3);
        rp->bytes = sqlite3_column_int64(st, 4);
        rp->created_at = sqlite3_column_int64(st, 5);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) return 0;
    free(*out);
    *out = NULL;
    *n = 0;
    if (rc == SQLITE_ROW)
        return tome_errorf(err, TOME_ENOMEM, "%s: out of memory listing restart points", s->path);
    return store_fail(s, rc, err, "listing the restart points of state #%lld", (long long)state_id);
}

int store_restart_delete(store *s, int64_t id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s, "DELETE FROM restart_points WHERE id = ?1", &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    return store_step_one(s, st, id, err, "deleting a restart point");
}
