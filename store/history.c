/*
 * history.c - the questions asked of each corpus and their answers.
 *
 * Kept so users can review what was asked and with which version and state
 * it was answered, and with the timings the daemon reports.
 */
#include "store/store-internal.h"

#include <stdlib.h>
#include <string.h>

int store_question_add(store *s, const store_question *q, int64_t *id, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "INSERT INTO questions(corpus_id, version_id, state_id, question,"
                           " answer, prompt_tokens, answer_tokens, prefill_seconds,"
                           " decode_seconds, created_at)"
                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, q->corpus_id);
    store_bind_id(st, 2, q->version_id);
    store_bind_id(st, 3, q->state_id);
    sqlite3_bind_text(st, 4, q->question, -1, SQLITE_STATIC);
    store_bind_text(st, 5, q->answer);
    sqlite3_bind_int64(st, 6, q->prompt_tokens);
    sqlite3_bind_int64(st, 7, q->answer_tokens);
    sqlite3_bind_double(st, 8, q->prefill_seconds);
    sqlite3_bind_double(st, 9, q->decode_seconds);
    sqlite3_bind_int64(st, 10, store_clock());
    rc = store_step_done(s, st, err, "recording a question");
    if (!rc) *id = sqlite3_last_insert_rowid(s->db);
    return rc;
}

static int read_question(sqlite3_stmt *st, store_question *q)
{
    int oom = 0;
    q->id = sqlite3_column_int64(st, 0);
    q->corpus_id = sqlite3_column_int64(st, 1);
    q->version_id = sqlite3_column_int64(st, 2);
    q->state_id = sqlite3_column_int64(st, 3);
    q->question = store_column_strdup(st, 4, &oom);
    q->answer = store_column_strdup(st, 5, &oom);
    q->prompt_tokens = sqlite3_column_int64(st, 6);
    q->answer_tokens = sqlite3_column_int64(st, 7);
    q->prefill_seconds = sqlite3_column_double(st, 8);
    q->decode_seconds = sqlite3_column_double(st, 9);
    q->created_at = sqlite3_column_int64(st, 10);
    return oom ? TOME_ENOMEM : 0;
}

int store_question_list(store *s, int64_t corpus_id, size_t max, store_question **out, size_t *n,
                        tome_error *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "SELECT id, corpus_id, coalesce(version_id, 0), coalesce(state_id, 0),"
                           " question, answer, prompt_tokens, answer_tokens, prefill_seconds,"
                           " decode_seconds, created_at FROM questions WHERE corpus_id = ?1"
                           " ORDER BY id DESC LIMIT ?2",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, corpus_id);
    sqlite3_bind_int64(st, 2, (int64_t)max);
    store_question *qs = calloc(max ? max : 1, sizeof *qs);
    int bad = !qs;
    while (!bad && (rc = sqlite3_step(st)) == SQLITE_ROW) bad = read_question(st, &qs[(*n)++]);
    sqlite3_finalize(st);
    if (!bad && rc == SQLITE_DONE) {
        *out = qs;
        return 0;
    }
    if (qs) store_question_list_free(qs, *n);
    *n = 0;
    if (bad) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory listing questions", s->path);
    return store_fail(s, rc, err, "listing questions");
}

void store_question_list_free(store_question *qs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(qs[i].question);
        free(qs[i].answer);
    }
    free(qs);
}
