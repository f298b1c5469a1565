/*
 * db.c - opening the store: the connection, its pragmas, migrations, and
 * the transaction and error helpers the other store/ files build on.
 *
 * Opening sets the connection up the way every other file assumes: WAL
 * journal (readers never block the one writer, and a commit is one append
 * to the log), synchronous=NORMAL (in WAL mode a crash can lose the last
 * commits on power loss but never corrupts the database or tears a
 * transaction), foreign keys on (they are off by default in SQLite, and the
 * schema's cascades rely on them), and a busy timeout so concurrent writers
 * queue instead of failing at once.
 *
 * Migrations are numbered by PRAGMA user_version.  Each one runs in its own
 * BEGIN IMMEDIATE transaction together with the user_version update, so a
 * crash mid-migration leaves the previous schema, and two processes opening
 * a fresh file at once cannot both apply it: the second waits, re-reads
 * the version inside its transaction and finds nothing to do.
 */
#include "store/store-internal.h"

#include "common/fault.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int code_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return TOME_EBUSY;
    case SQLITE_NOMEM:
        return TOME_ENOMEM;
    case SQLITE_CONSTRAINT:
        return TOME_EEXIST;
    case SQLITE_NOTFOUND:
        return TOME_ENOTFOUND;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return TOME_EFORMAT;
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
        return TOME_EIO;
    default:
        return TOME_EINTERNAL;
    }
}

int store_fail(store *s, int rc, tome_error *err, const char *what, ...)
{
    char doing[256];
    va_list ap;
    va_start(ap, what);
    vsnprintf(doing, sizeof doing, what, ap);
    va_end(ap);
    const char *detail = s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    return tome_errorf(err, code_of(rc), "%s: %s: %s", s ? s->path : "store", doing, detail);
}

int store_prepare(store *s, const char *sql, sqlite3_stmt **st, tome_error *err)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    if (rc != SQLITE_OK) return store_fail(s, rc, err, "preparing \"%.60s\"", sql);
    return 0;
}

int store_exec(store *s, const char *sql, tome_error *err)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) return store_fail(s, rc, err, "running \"%.60s\"", sql);
    return 0;
}

int store_step_done(store *s, sqlite3_stmt *st, tome_error *err, const char *what)
{
    int rc = sqlite3_step(st);
    int ret = rc == SQLITE_DONE ? 0 : store_fail(s, rc, err, "%s", what);
    sqlite3_finalize(st);
    return ret;
}

int store_step_one(store *s, sqlite3_stmt *st, int64_t id, tome_error *err, const char *what)
{
    int rc = store_step_done(s, st, err, what);
    if (rc) return rc;
    if (sqlite3_changes(s->db) == 0)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: %s: no row #%lld", s->path, what,
                           (long long)id);
    return 0;
}

int store_savepoint(store *s, tome_error *err)
{
    return store_exec(s, "SAVEPOINT store_unit", err);
}

int store_release(store *s, tome_error *err)
{
    int rc = store_exec(s, "RELEASE store_unit", err);
    if (rc) store_undo(s);
    return rc;
}

void store_undo(store *s)
{
    sqlite3_exec(s->db, "ROLLBACK TO store_unit; RELEASE store_unit", NULL, NULL, NULL);
}

int store_bind_text(sqlite3_stmt *st, int i, const char *text)
{
    return text ? sqlite3_bind_text(st, i, text, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

int store_bind_id(sqlite3_stmt *st, int i, int64_t id)
{
    return id ? sqlite3_bind_int64(st, i, id) : sqlite3_bind_null(st, i);
}

char *store_column_strdup(sqlite3_stmt *st, int i, int *oom)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t) return NULL;
    char *copy = strdup((const char *)t);
    if (!copy) *oom = 1;
    return copy;
}

int64_t store_clock(void)
{
    return (int64_t)time(NULL);
}

static int read_user_version(store *s, int *version, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s, "PRAGMA user_version", &st, err);
    if (rc) return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return store_fail(s, rc, err, "reading the schema version");
    return 0;
}

int store_schema_version(store *s, int *version, tome_error *err)
{
    return read_user_version(s, version, err);
}

int store_check(store *s, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s, "PRAGMA quick_check(1)", &st, err);
    if (rc) return rc;
    rc = sqlite3_step(st);
    const char *verdict = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (!verdict)
        rc = store_fail(s, rc, err, "checking the database");
    else if (strcmp(verdict, "ok") != 0)
        rc = tome_errorf(err, TOME_EFORMAT, "%s: the database is damaged: %s", s->path, verdict);
    else
        rc = 0;
    sqlite3_finalize(st);
    return rc;
}

/* Apply migration `index` unless another process got there first. */
static int apply_migration(store *s, int index, tome_error *err)
{
    int rc = store_exec(s, "BEGIN IMMEDIATE", err);
    if (rc) return rc;
    int version;
    rc = read_user_version(s, &version, err);
    if (!rc && version <= index) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", index + 1);
        rc = store_exec(s, store_migrations[index], err);
        if (!rc) rc = store_exec(s, pragma, err);
    }
    if (!rc) rc = store_exec(s, "COMMIT", err);
    if (rc) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return tome_error_wrap(err, "migrating %s to schema %d", s->path, index + 1);
    }
    return 0;
}

static int migrate(store *s, tome_error *err)
{
    int version;
    int rc = read_user_version(s, &version, err);
    if (rc) return rc;
    if (version > store_n_migrations)
        return tome_errorf(err, TOME_EMISMATCH,
                           "%s: schema version %d is newer than this build's %d; "
                           "use a newer tome",
                           s->path, version, store_n_migrations);
    for (int i = version; i < store_n_migrations; i++) {
        rc = apply_migration(s, i, err);
        if (rc) return rc;
    }
    return 0;
}

int store_set_busy_timeout(store *s, int ms, tome_error *err)
{
    int rc = sqlite3_busy_timeout(s->db, ms);
    return rc == SQLITE_OK ? 0 : store_fail(s, rc, err, "setting the busy timeout");
}

static int configure(store *s, tome_error *err)
{
    int rc = store_set_busy_timeout(s, STORE_BUSY_TIMEOUT_MS, err);
    if (rc) return rc;
    /* journal_mode returns a row naming the mode it got; a file that cannot
     * do WAL (some network filesystems) answers something else. */
    sqlite3_stmt *st;
    rc = store_prepare(s, "PRAGMA journal_mode = WAL", &st, err);
    if (rc) return rc;
    rc = sqlite3_step(st);
    int wal =
        rc == SQLITE_ROW && sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return store_fail(s, rc, err, "switching to WAL mode");
    if (!wal) return tome_errorf(err, TOME_EIO, "%s: the file system refused WAL mode", s->path);
    return store_exec(s, "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL", err);
}

int store_open(const char *path, store **out, tome_error *err)
{
    *out = NULL;
    store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return tome_errorf(err, TOME_ENOMEM, "%s: out of memory opening the store", path);
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        rc = store_fail(s, rc, err, "opening");
    } else {
        sqlite3_extended_result_codes(s->db, 1);
        rc = configure(s, err);
        if (!rc) rc = migrate(s, err);
    }
    if (rc) {
        store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_close(store *s)
{
    if (!s) return;
    if (s->in_transaction) store_rollback(s);
    sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

const char *store_path(const store *s)
{
    return s->path;
}

int store_begin(store *s, tome_error *err)
{
    if (s->in_transaction)
        return tome_errorf(err, TOME_EINTERNAL, "%s: a transaction is already open", s->path);
    int rc = store_exec(s, "BEGIN IMMEDIATE", err);
    if (!rc) s->in_transaction = 1;
    return rc;
}

int store_commit(store *s, tome_error *err)
{
    if (!s->in_transaction)
        return tome_errorf(err, TOME_EINTERNAL, "%s: commit without a transaction", s->path);
    tome_fault_point("store-commit");
    int rc = store_exec(s, "COMMIT", err);
    if (rc) {
        store_rollback(s);
        return rc;
    }
    s->in_transaction = 0;
    tome_fault_point("store-committed");
    return 0;
}

void store_rollback(store *s)
{
    if (!s->in_transaction) return;
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->in_transaction = 0;
}
