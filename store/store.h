/*
 * store.h - the public interface of tome's SQLite store.
 *
 * The store is one SQLite database (tome.db, WAL mode) holding everything
 * tome must remember: corpora, their documents and versions, the rendered
 * contexts with their document/line -> token maps, the cached KV states and
 * their restart points, jobs, question/answer history and access tokens.
 * Every SQL statement of tome lives under store/; other modules call the
 * functions below and never see SQL.
 *
 * Handles and threads.  A `store` is one sqlite3 connection.  Use one handle
 * per thread: open it in the thread that uses it (store_open) and close it
 * there (store_close).  Any number of handles, in any number of processes,
 * may be open on one file; readers never block writers (WAL), and writers
 * wait up to the busy timeout for each other.
 *
 * Transactions.  Each function that writes several rows makes them one
 * atomic unit on its own (a savepoint).  A caller that needs several calls
 * to be one unit (ingest: documents plus the version that lists them) wraps
 * them in store_begin / store_commit, and calls store_rollback on any
 * failure; if the process dies before store_commit nothing of it remains.
 *
 * Ownership.  The caller owns every struct and array a function fills in
 * and releases it with the *_free function named beside it.  Strings passed
 * in are copied; nothing keeps a pointer to the caller's memory.
 *
 * Errors.  Functions return 0 or a negative TOME_E* code and fill the
 * caller's tome_error with a message naming the database file and the thing
 * at fault (corpus, version, state, token).  TOME_ENOTFOUND means the named
 * row does not exist; TOME_EBUSY that another writer held the database past
 * the busy timeout.
 */
#ifndef TOME_STORE_STORE_H
#define TOME_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

typedef struct store store;

/* The schema version this build creates and understands. */
#define STORE_SCHEMA_VERSION 1
/* Milliseconds a writer waits for another writer before TOME_EBUSY. */
#define STORE_BUSY_TIMEOUT_MS 10000

/* ------------------------------------------------------------------------
 * Opening, migrations, transactions
 * ------------------------------------------------------------------------ */

/* Open (creating if needed) the database at `path`, switch it to WAL mode
 * with foreign keys on, and apply any migrations it lacks, each in its own
 * transaction.  A database written by a newer tome is refused with
 * TOME_EMISMATCH.  Close the handle with store_close. */
int store_open(const char *path, store **out, tome_error *err);
void store_close(store *s);
/* How long this handle's writes wait for another writer before
 * TOME_EBUSY (default STORE_BUSY_TIMEOUT_MS).  An ingest holds the write
 * lock for its whole run, so a thread that must not fail while one runs
 * sets a longer wait. */
int store_set_busy_timeout(store *s, int ms, tome_error *err);
/* The file the handle was opened on. */
const char *store_path(const store *s);
/* PRAGMA user_version of the open database. */
int store_schema_version(store *s, int *version, tome_error *err);
/* SQLite's quick_check: 0, or TOME_EFORMAT naming the first damage found
 * (a page that is not a valid b-tree page, a broken free list, ...).  It
 * reads every page once; tomed runs it at start. */
int store_check(store *s, tome_error *err);

/* An explicit write transaction (BEGIN IMMEDIATE): nothing written between
 * store_begin and store_commit is visible to others or survives a crash
 * until store_commit returns 0.  Transactions do not nest. */
int store_begin(store *s, tome_error *err);
int store_commit(store *s, tome_error *err);
/* Undo everything since store_begin; safe to call when none is open. */
void store_rollback(store *s);

/* ------------------------------------------------------------------------
 * Corpora, documents, versions
 * ------------------------------------------------------------------------ */

/* Id of the corpus `name`, creating it when absent. */
int store_corpus_ensure(store *s, const char *name, int64_t *id, tome_error *err);
/* Id of the corpus `name`; TOME_ENOTFOUND when absent. */
int store_corpus_find(store *s, const char *name, int64_t *id, tome_error *err);
/* Delete a corpus with its documents, versions, contexts and states rows
 * (state files on disk are the caller's to remove). */
int store_corpus_delete(store *s, const char *name, tome_error *err);
/* Every corpus name, sorted; free each name and the array. */
int store_corpus_list(store *s, char ***names, size_t *n, tome_error *err);
/* The name of corpus `id` (malloc'd; the caller frees). */
int store_corpus_name(store *s, int64_t id, char **name, tome_error *err);

/* A document: one path with one content.  The text is UTF-8 (transcoded
 * from `encoding`); `size` and `sha256` describe the bytes as read. */
typedef struct store_document {
    int64_t id;
    char *path;
    int64_t size;
    char sha256[65]; /* lowercase hex */
    char *media_type;
    char *encoding;
    int64_t mtime; /* seconds since the epoch, 0 if unknown */
    int64_t line_count;
    char *text; /* NULL in listings, which do not load the text */
    size_t text_len;
} store_document;

void store_document_clear(store_document *d);

/* Add a document to a corpus; the (path, sha256) pair must be new (see
 * store_document_find).  `d->id` is ignored and `*id` gets the new id. */
int store_document_add(store *s, int64_t corpus_id, const store_document *d, int64_t *id,
                       tome_error *err);
/* Id of the corpus's document with this path and content, or
 * TOME_ENOTFOUND: how re-ingest recognises unchanged files. */
int store_document_find(store *s, int64_t corpus_id, const char *path, const char *sha256,
                        int64_t *id, tome_error *err);
/* The whole document, text included; store_document_clear frees it. */
int store_document_get(store *s, int64_t id, store_document *d, tome_error *err);

/* What a new version records about itself. */
typedef struct store_version_info {
    const char *source; /* what was ingested (a path or upload name) */
    int64_t added, changed, removed;
    int64_t first_changed_position; /* first position that differs, -1 = none */
} store_version_info;

/* Create the corpus's next version listing `doc_ids` in order (position 0
 * first).  `*version_id` gets its id, `*number` (may be NULL) its number. */
int store_version_create(store *s, int64_t corpus_id, const int64_t *doc_ids, size_t n,
                         const store_version_info *info, int64_t *version_id, int64_t *number,
                         tome_error *err);
/* The corpus's newest version; TOME_ENOTFOUND when it has none. */
int store_version_latest(store *s, int64_t corpus_id, int64_t *version_id, tome_error *err);

/* The number (1, 2, ...) of a version within its corpus. */
int store_version_number(store *s, int64_t version_id, int64_t *number, tome_error *err);
/* The id of version `number` (1, 2, ...) of a corpus; TOME_ENOTFOUND when
 * the corpus has no such version. */
int store_version_by_number(store *s, int64_t corpus_id, int64_t number, int64_t *version_id,
                            tome_error *err);

/* A version's documents in order, without their texts. */
typedef struct store_document_list {
    store_document *docs;
    size_t n;
} store_document_list;

int store_version_documents(store *s, int64_t version_id, store_document_list *out,
                            tome_error *err);
void store_document_list_free(store_document_list *l);

/* ------------------------------------------------------------------------
 * Rendered contexts: a version rendered into prompt text, with its maps
 * ------------------------------------------------------------------------ */

/* Where one document sits in a rendered context.  Offsets are absolute in
 * the context: bytes of its text, tokens of its token ids.  `line_bytes[i]`
 * is the byte offset of line i+1's first byte; `line_tokens[i]` the index
 * of the token holding that byte (NULL without a tokenizer, and the token
 * fields are then -1). */
typedef struct store_context_doc {
    int64_t document_id;
    char *path;
    int64_t byte_start, byte_end;
    int64_t token_start, token_end;
    int64_t n_lines;
    int64_t *line_bytes;
    int64_t *line_tokens;
} store_context_doc;

typedef struct store_context {
    int64_t id;
    int64_t version_id;
    char tokenizer[65]; /* fingerprint hex of the tokenizer, "" without one */
    int line_numbers;
    int64_t text_bytes;
    int64_t token_count; /* -1 without a tokenizer */
    int32_t *token_ids;  /* token_count ids, NULL without a tokenizer */
    store_context_doc *docs;
    size_t n_docs;
} store_context;

/* Record a rendered context (`ctx->id` is ignored; `*id` gets the new id).
 * A version may have several contexts (one per tokenizer and options). */
int store_context_save(store *s, const store_context *ctx, int64_t *id, tome_error *err);
/* The newest context of a version rendered with this tokenizer fingerprint
 * ("" = none) and line-number setting; TOME_ENOTFOUND if there is none. */
int store_context_find(store *s, int64_t version_id, const char *tokenizer, int line_numbers,
                       int64_t *id, tome_error *err);
/* A context's size without loading it: its token count (-1 without a
 * tokenizer) and text bytes. */
int store_context_size(store *s, int64_t id, int64_t *token_count, int64_t *text_bytes,
                       tome_error *err);
/* Load a context with its maps and token ids; store_context_clear frees. */
int store_context_load(store *s, int64_t id, store_context *ctx, tome_error *err);
void store_context_clear(store_context *ctx);
/* Where line `line` (1-based) of document `path` sits in a loaded context:
 * the byte offset of its first byte and the token holding it (-1 without
 * a tokenizer).  TOME_ENOTFOUND, naming the path and line, when the
 * context has no such document or line: how a citation "path:line" in an
 * answer is checked. */
int store_context_locate(const store_context *ctx, const char *path, int64_t line, int64_t *byte,
                         int64_t *token, tome_error *err);

/* ------------------------------------------------------------------------
 * Cached KV states and restart points (the state files are store/'s KV
 * file format; these rows say which exist and what they hold)
 * ------------------------------------------------------------------------ */

typedef enum store_state_status {
    STORE_STATE_WRITING, /* file being written; not to be trusted */
    STORE_STATE_READY,
    STORE_STATE_FAILED,
    STORE_STATE_EVICTED /* file removed by the cache budget; row kept as history */
} store_state_status;

const char *store_state_status_name(store_state_status st);

typedef struct store_kv_state {
    int64_t id;
    int64_t version_id;
    int64_t context_id; /* 0 if none */
    char model_fingerprint[65];
    int64_t token_count;
    /* The state file.  One under the database's directory is recorded
     * relative to it and listed joined to where the database is now. */
    char *path;
    int64_t bytes;
    store_state_status status;
    int64_t created_at, last_used_at; /* seconds since the epoch */
} store_kv_state;

/* Record a state (`st->id`, timestamps ignored; both set to now). */
int store_state_add(store *s, const store_kv_state *st, int64_t *id, tome_error *err);
int store_state_set_status(store *s, int64_t id, store_state_status status, int64_t bytes,
                           tome_error *err);
/* Set last_used_at to now (the cache's LRU clock). */
int store_state_touch(store *s, int64_t id, tome_error *err);
/* Delete the row and its restart points (the file is the caller's). */
int store_state_delete(store *s, int64_t id, tome_error *err);

typedef struct store_kv_state_list {
    store_kv_state *states;
    size_t n;
} store_kv_state_list;

/* States of a corpus (every version), or of every corpus when
 * `corpus_id` is 0; least recently used first. */
int store_state_list(store *s, int64_t corpus_id, store_kv_state_list *out, tome_error *err);
void store_state_list_free(store_kv_state_list *l);

/* The cache budget (store/kvcache.c): while the ready states (every corpus) add up to more
 * than `budget` bytes, remove the least recently used one's file and mark
 * its row STORE_STATE_EVICTED - never the state `keep_id` (0: none), so
 * the total may stay above a budget smaller than that state.  *evicted
 * gets the number of states evicted, also when an error stops it. */
int store_kv_cache_evict(store *s, int64_t budget, int64_t keep_id, size_t *evicted,
                         tome_error *err);

typedef struct store_restart_point {
    int64_t id;
    int64_t state_id;
    int64_t token_count; /* tokens consumed when the point was taken */
    int64_t file_offset; /* where its section starts in the state file */
    int64_t bytes;
    int64_t created_at;
} store_restart_point;

int store_restart_add(store *s, const store_restart_point *rp, int64_t *id, tome_error *err);
/* A state's restart points, ascending token_count; free() the array. */
int store_restart_list(store *s, int64_t state_id, store_restart_point **out, size_t *n,
                       tome_error *err);
int store_restart_delete(store *s, int64_t id, tome_error *err);

/* ------------------------------------------------------------------------
 * Jobs
 * ------------------------------------------------------------------------ */

typedef enum store_job_state {
    STORE_JOB_QUEUED,
    STORE_JOB_RUNNING,
    STORE_JOB_DONE,
    STORE_JOB_FAILED,
    STORE_JOB_CANCELED
} store_job_state;

const char *store_job_state_name(store_job_state st);

typedef struct store_job {
    int64_t id;
    char *kind;        /* "ingest", "prefill", ... */
    int64_t corpus_id; /* 0 if none */
    store_job_state state;
    int64_t done, total;                         /* progress in the job's own unit */
    char *error;                                 /* NULL unless failed */
    int64_t created_at, started_at, finished_at; /* 0 = not yet */
} store_job;

/* A new queued job. */
int store_job_add(store *s, const char *kind, int64_t corpus_id, int64_t *id, tome_error *err);
/* Move a job to `state` (RUNNING sets started_at, the final states
 * finished_at); `error` is recorded when not NULL. */
int store_job_set_state(store *s, int64_t id, store_job_state state, const char *error,
                        tome_error *err);
int store_job_progress(store *s, int64_t id, int64_t done, int64_t total, tome_error *err);
int store_job_get(store *s, int64_t id, store_job *job, tome_error *err);
void store_job_clear(store_job *job);
/* Mark every queued or running job failed with `reason` (a daemon that
 * starts after a crash calls this); `*n` (may be NULL) gets the count. */
int store_job_fail_unfinished(store *s, const char *reason, int64_t *n, tome_error *err);
/* Ids of the queued or running jobs of `kind`, oldest first (a restarted
 * daemon resumes them); free() the array. */
int store_job_list_unfinished(store *s, const char *kind, int64_t **ids, size_t *n,
                              tome_error *err);
/* Ids of the `max` newest finished (done, failed, canceled) jobs of `kind`,
 * newest first (a restarted daemon lists them); free() the array. */
int store_job_list_finished(store *s, const char *kind, int64_t max, int64_t **ids, size_t *n,
                            tome_error *err);

/* ------------------------------------------------------------------------
 * Question/answer history
 * ------------------------------------------------------------------------ */

typedef struct store_question {
    int64_t id;
    int64_t corpus_id;
    int64_t version_id; /* 0 if none */
    int64_t state_id;   /* 0 if none */
    char *question;
    char *answer;
    int64_t prompt_tokens, answer_tokens;
    double prefill_seconds, decode_seconds;
    int64_t created_at;
} store_question;

int store_question_add(store *s, const store_question *q, int64_t *id, tome_error *err);
/* The corpus's newest questions first, at most `max`; free with
 * store_question_list_free. */
int store_question_list(store *s, int64_t corpus_id, size_t max, store_question **out, size_t *n,
                        tome_error *err);
void store_question_list_free(store_question *qs, size_t n);

/* ------------------------------------------------------------------------
 * Access tokens (only a SHA-256 of the secret is stored)
 * ------------------------------------------------------------------------ */

enum { STORE_SCOPE_READ = 1, STORE_SCOPE_WRITE = 2 };

/* Record a token `name` for `secret`, valid for `corpus` (NULL = every
 * corpus) with `scopes` (STORE_SCOPE_* bits).  Names are unique. */
int store_token_add(store *s, const char *name, const char *secret, const char *corpus,
                    unsigned scopes, int64_t *id, tome_error *err);
int store_token_revoke(store *s, const char *name, tome_error *err);
/* 0 when `secret` is an unrevoked token that grants `scopes` on `corpus`
 * (NULL = an operation on no single corpus, which needs an every-corpus
 * token); TOME_EPERM otherwise, with a message that names no secret. */
int store_token_check(store *s, const char *secret, const char *corpus, unsigned scopes,
                      tome_error *err);

/* ------------------------------------------------------------------------
 * Search results (FTS5 here; ingest_grep gives regex search)
 * ------------------------------------------------------------------------ */

typedef struct store_hit {
    char *path;
    int64_t line; /* 1-based */
    char *text;   /* the line, without its newline */
    double score; /* store_search: its document's bm25 relevance, higher is better; else 0 */
} store_hit;

typedef struct store_hits {
    store_hit *hits;
    size_t n, cap;
} store_hits;

/* Append a hit (copies the strings). */
int store_hits_add(store_hits *h, const char *path, int64_t line, const char *text, size_t len,
                   tome_error *err);
void store_hits_free(store_hits *h);

/* Full-text search (FTS5 query syntax) over a version's documents; appends
 * one hit per matching line, documents by rank, at most `max` hits. */
int store_search(store *s, int64_t version_id, const char *query, size_t max, store_hits *out,
                 tome_error *err);

#endif
