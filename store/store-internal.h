/*
 * store-internal.h - what the files of store/ share and nobody else sees.
 *
 * The handle's layout and a few helpers that turn SQLite results into
 * tome_errors.  Every helper reports the database path and what was being
 * done, so a message reads "tome.db: adding document src/a.c: UNIQUE
 * constraint failed" instead of a bare SQLite code.
 */
#ifndef TOME_STORE_INTERNAL_H
#define TOME_STORE_INTERNAL_H

#include <sqlite3.h>

#include "store/store.h"

struct store {
    sqlite3 *db;
    char *path;
    int in_transaction;
};

/* Map a SQLite result code to TOME_E*, fill `err` with
 * "PATH: WHAT: sqlite message" and return the code. */
int store_fail(store *s, int rc, tome_error *err, const char *what, ...)
    __attribute__((format(printf, 4, 5)));

/* Prepare `sql` (failure reported as "preparing: ..."). */
int store_prepare(store *s, const char *sql, sqlite3_stmt **st, tome_error *err);
/* Run statements that return no rows. */
int store_exec(store *s, const char *sql, tome_error *err);
/* Step a statement expected to finish without rows, then finalize it. */
int store_step_done(store *s, sqlite3_stmt *st, tome_error *err, const char *what);

/* The same for an UPDATE or DELETE of row `id`: TOME_ENOTFOUND when no
 * row changed. */
int store_step_one(store *s, sqlite3_stmt *st, int64_t id, tome_error *err, const char *what);

/* Group several writes into one unit whether or not the caller holds a
 * transaction (SQLite savepoints nest inside BEGIN and stand alone). */
int store_savepoint(store *s, tome_error *err);
int store_release(store *s, tome_error *err);
void store_undo(store *s);

/* Bind a text that may be NULL. */
int store_bind_text(sqlite3_stmt *st, int i, const char *text);
/* Bind an id that means "none" when 0. */
int store_bind_id(sqlite3_stmt *st, int i, int64_t id);
/* malloc'd copy of a column's text, NULL for SQL NULL (sets *oom on
 * allocation failure so callers can tell the two apart). */
char *store_column_strdup(sqlite3_stmt *st, int i, int *oom);

/* Seconds since the epoch, the unit of every timestamp column. */
int64_t store_clock(void);

/* The migrations, in order; migration i brings the schema to i + 1. */
extern const char *const store_migrations[];
extern const int store_n_migrations;

#endif
