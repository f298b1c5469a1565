/*
 * Tests of store/: schema and migrations, the connection's settings, and
 * every table's functions, including that an uncommitted transaction (a
 * rollback, or a process killed between two statements) leaves nothing.
 * Settings and row counts are read back through a separate plain sqlite3
 * connection, not through the store's own functions.
 */
#include "store/store.h"
#include "tests/check.h"

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

static char db_path[4200];

static int64_t raw_int(const char *sql)
{
    sqlite3 *db;
    REQUIRE(sqlite3_open(db_path, &db) == SQLITE_OK, "raw open %s", db_path);
    sqlite3_stmt *st;
    REQUIRE(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(db));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static store *open_store(void)
{
    tome_error err = {0};
    store *s = NULL;
    int rc = store_open(db_path, &s, &err);
    REQUIRE(rc == 0, "store_open: %s", err.msg);
    return s;
}

static int64_t add_doc(store *s, int64_t corpus, const char *path, const char *text)
{
    tome_error err = {0};
    store_document d = {0};
    d.path = (char *)path;
    d.size = (int64_t)strlen(text);
    uint8_t sha[32];
    tome_sha256(text, strlen(text), sha);
    tome_hex(sha, 32, d.sha256);
    d.media_type = "text/plain";
    d.encoding = "utf-8";
    d.line_count = 1;
    d.text = (char *)text;
    d.text_len = strlen(text);
    int64_t id = 0;
    CHECK_OK(store_document_add(s, corpus, &d, &id, &err), &err);
    return id;
}

static void test_open_and_migrate(void)
{
    tome_error err = {0};
    store *s = open_store();
    int version = 0;
    CHECK_OK(store_schema_version(s, &version, &err), &err);
    CHECK(version == STORE_SCHEMA_VERSION);
    CHECK(strcmp(store_path(s), db_path) == 0);
    store_close(s);
    CHECK(raw_int("PRAGMA user_version") == STORE_SCHEMA_VERSION);
    /* journal_mode is persistent in the file; foreign_keys is per
     * connection, so it is checked through the store's behaviour below. */
    sqlite3 *db;
    sqlite3_open(db_path, &db);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
    CHECK(sqlite3_step(st) == SQLITE_ROW &&
          strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0);
    sqlite3_finalize(st);
    sqlite3_close(db);

    s = open_store(); /* re-open: nothing to migrate, no error */
    store_close(s);
    CHECK(raw_int("SELECT count(*) FROM sqlite_master WHERE name = 'kv_states'") == 1);

    char newer[4300];
    snprintf(newer, sizeof newer, "%s.newer", db_path);
    sqlite3_open(newer, &db);
    sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK(store_open(newer, &s, &err) == TOME_EMISMATCH);
    CHECK(strstr(err.msg, "99") != NULL && strstr(err.msg, ".newer") != NULL);
    CHECK(s == NULL);
}

static void test_corpus_versions(void)
{
    tome_error err = {0};
    store *s = open_store();
    int64_t c1 = 0, c1b = 0, c2 = 0;
    CHECK_OK(store_corpus_ensure(s, "law", &c1, &err), &err);
    CHECK_OK(store_corpus_ensure(s, "law", &c1b, &err), &err);
    CHECK(c1 == c1b && c1 > 0);
    CHECK(store_corpus_find(s, "absent", &c2, &err) == TOME_ENOTFOUND);
    CHECK(strstr(err.msg, "absent") != NULL);
    CHECK(store_corpus_ensure(s, "", &c2, &err) == TOME_EINVAL);
    CHECK_OK(store_corpus_ensure(s, "code", &c2, &err), &err);
    char **names, *name;
    size_t n;
    CHECK_OK(store_corpus_list(s, &names, &n, &err), &err);
    CHECK(n == 2 && strcmp(names[0], "code") == 0 && strcmp(names[1], "law") == 0);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    CHECK_OK(store_corpus_name(s, c1, &name, &err), &err);
    CHECK(name && strcmp(name, "law") == 0);
    free(name);
    CHECK(store_corpus_name(s, 9999, &name, &err) == TOME_ENOTFOUND && name == NULL);

    int64_t v = 0;
    CHECK(store_version_latest(s, c1, &v, &err) == TOME_ENOTFOUND);
    int64_t a = add_doc(s, c1, "b.txt", "bravo\n");
    int64_t b = add_doc(s, c1, "a.txt", "alpha\n");
    int64_t found = 0;
    CHECK(store_document_find(s, c1, "b.txt", "", &found, &err) == TOME_ENOTFOUND);
    store_document d = {0};
    CHECK_OK(store_document_get(s, a, &d, &err), &err);
    CHECK_OK(store_document_find(s, c1, "b.txt", d.sha256, &found, &err), &err);
    CHECK(found == a);
    CHECK(d.text_len == 6 && strcmp(d.text, "bravo\n") == 0 && strcmp(d.path, "b.txt") == 0);
    /* The same path and content twice is refused: callers find, then add. */
    store_document dup = d;
    int64_t dup_id;
    CHECK(store_document_add(s, c1, &dup, &dup_id, &err) == TOME_EEXIST);
    CHECK(strstr(err.msg, "b.txt") != NULL);
    store_document_clear(&d);

    int64_t ids[2] = {a, b}, number = 0;
    store_version_info info = {.source = "x.tar", .added = 2, .first_changed_position = 0};
    CHECK_OK(store_version_create(s, c1, ids, 2, &info, &v, &number, &err), &err);
    CHECK(number == 1);
    int64_t latest = 0;
    CHECK_OK(store_version_latest(s, c1, &latest, &err), &err);
    CHECK(latest == v);
    store_document_list l;
    CHECK_OK(store_version_documents(s, v, &l, &err), &err);
    CHECK(l.n == 2 && l.docs[0].id == a && l.docs[1].id == b);
    CHECK(l.n == 2 && strcmp(l.docs[1].path, "a.txt") == 0 && l.docs[1].text == NULL);
    store_document_list_free(&l);

    /* A version may not list a document that does not exist (foreign keys
     * are on), and the failed create leaves no half version behind. */
    int64_t bogus[2] = {a, 987654};
    int64_t v_bad;
    CHECK(store_version_create(s, c1, bogus, 2, &info, &v_bad, NULL, &err) != 0);
    CHECK_OK(store_version_latest(s, c1, &latest, &err), &err);
    CHECK(latest == v);
    store_close(s);
}

/* Begin, write documents and a version, and then either roll back or die
 * without committing: the newest version must stay what it was. */
static void test_transactions(void)
{
    tome_error err = {0};
    store *s = open_store();
    int64_t c, before, after;
    CHECK_OK(store_corpus_ensure(s, "law", &c, &err), &err);
    CHECK_OK(store_version_latest(s, c, &before, &err), &err);
    int64_t docs_before = raw_int("SELECT count(*) FROM documents");

    CHECK_OK(store_begin(s, &err), &err);
    CHECK(store_begin(s, &err) == TOME_EINTERNAL);
    int64_t id = add_doc(s, c, "c.txt", "charlie\n"), v;
    store_version_info info = {.source = "y", .first_changed_position = -1};
    CHECK_OK(store_version_create(s, c, &id, 1, &info, &v, NULL, &err), &err);
    store_rollback(s);
    CHECK_OK(store_version_latest(s, c, &after, &err), &err);
    CHECK(after == before);
    CHECK(raw_int("SELECT count(*) FROM documents") == docs_before);
    store_close(s);

    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    if (pid == 0) {
        store *cs = open_store();
        store_begin(cs, &err);
        int64_t cid = add_doc(cs, c, "d.txt", "delta\n"), cv;
        store_version_create(cs, c, &cid, 1, &info, &cv, NULL, &err);
        _exit(cv > 0 ? 7 : 1); /* dies holding the transaction */
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7);
    s = open_store();
    CHECK_OK(store_version_latest(s, c, &after, &err), &err);
    CHECK(after == before);
    CHECK(raw_int("SELECT count(*) FROM documents") == docs_before);
    CHECK(raw_int("SELECT count(*) FROM documents WHERE path = 'd.txt'") == 0);

    /* A second handle (another thread's) reads the committed version while
     * the writer's transaction is open, and the new one after it commits. */
    store *reader = open_store();
    CHECK_OK(store_begin(s, &err), &err);
    int64_t eid = add_doc(s, c, "e.txt", "echo\n"), ev, seen;
    CHECK_OK(store_version_create(s, c, &eid, 1, &info, &ev, NULL, &err), &err);
    CHECK_OK(store_version_latest(reader, c, &seen, &err), &err);
    CHECK(seen == before);
    /* A second writer waits for the busy timeout, then gets TOME_EBUSY. */
    CHECK_OK(store_set_busy_timeout(reader, 50, &err), &err);
    double t0 = tome_now();
    CHECK(store_begin(reader, &err) == TOME_EBUSY);
    CHECK(tome_now() - t0 >= 0.04 && strstr(err.msg, "tome.db") != NULL);
    CHECK_OK(store_commit(s, &err), &err);
    CHECK_OK(store_version_latest(reader, c, &seen, &err), &err);
    CHECK(seen == ev);
    CHECK(raw_int("SELECT count(*) FROM documents") == docs_before + 1);
    store_close(reader);
    store_close(s);
}

static void test_contexts(void)
{
    tome_error err = {0};
    store *s = open_store();
    int64_t c, v, id;
    CHECK_OK(store_corpus_ensure(s, "law", &c, &err), &err);
    int64_t two[2] = {add_doc(s, c, "ctx/1.txt", "one\n"), add_doc(s, c, "ctx/2.txt", "two\n")};
    store_version_info info = {.source = "ctx", .first_changed_position = -1};
    CHECK_OK(store_version_create(s, c, two, 2, &info, &v, NULL, &err), &err);
    store_document_list l;
    CHECK_OK(store_version_documents(s, v, &l, &err), &err);
    REQUIRE(l.n == 2, "version has %zu documents", l.n);

    int64_t lb0[2] = {10, 4000000000LL}, lt0[2] = {3, -5};
    int64_t lb1[1] = {70};
    int32_t ids[4] = {1, -2, 2147483647, 100000};
    store_context_doc docs[2] = {
        {.document_id = l.docs[0].id,
         .byte_start = 0,
         .byte_end = 50,
         .token_start = 0,
         .token_end = 3,
         .n_lines = 2,
         .line_bytes = lb0,
         .line_tokens = lt0},
        {.document_id = l.docs[1].id,
         .byte_start = 50,
         .byte_end = 90,
         .token_start = 3,
         .token_end = 4,
         .n_lines = 1,
         .line_bytes = lb1,
         .line_tokens = NULL},
    };
    store_context ctx = {.version_id = v,
                         .line_numbers = 1,
                         .text_bytes = 90,
                         .token_count = 4,
                         .token_ids = ids,
                         .docs = docs,
                         .n_docs = 2};
    snprintf(ctx.tokenizer, sizeof ctx.tokenizer, "abc");
    CHECK_OK(store_context_save(s, &ctx, &id, &err), &err);
    int64_t found;
    CHECK_OK(store_context_find(s, v, "abc", 1, &found, &err), &err);
    CHECK(found == id);
    CHECK(store_context_find(s, v, "abc", 0, &found, &err) == TOME_ENOTFOUND);
    int64_t tokens = 0, bytes = 0;
    CHECK_OK(store_context_size(s, id, &tokens, &bytes, &err), &err);
    CHECK(tokens == 4 && bytes == 90);
    CHECK(store_context_size(s, id + 100, &tokens, &bytes, &err) == TOME_ENOTFOUND);

    store_context back;
    CHECK_OK(store_context_load(s, id, &back, &err), &err);
    CHECK(back.token_count == 4 && memcmp(back.token_ids, ids, sizeof ids) == 0);
    CHECK(back.n_docs == 2 && strcmp(back.tokenizer, "abc") == 0 && back.line_numbers == 1);
    if (back.n_docs == 2) {
        CHECK(strcmp(back.docs[0].path, l.docs[0].path) == 0);
        CHECK(back.docs[0].n_lines == 2 && memcmp(back.docs[0].line_bytes, lb0, 16) == 0);
        CHECK(memcmp(back.docs[0].line_tokens, lt0, 16) == 0);
        CHECK(back.docs[1].line_tokens == NULL && back.docs[1].token_start == -1);
        CHECK(back.docs[1].byte_end == 90 && back.docs[1].line_bytes[0] == 70);
    }
    int64_t byte, token;
    CHECK_OK(store_context_locate(&back, l.docs[0].path, 2, &byte, &token, &err), &err);
    CHECK(byte == lb0[1] && token == lt0[1]);
    CHECK_OK(store_context_locate(&back, l.docs[1].path, 1, &byte, &token, &err), &err);
    CHECK(byte == 70 && token == -1);
    CHECK(store_context_locate(&back, l.docs[1].path, 2, &byte, &token, &err) == TOME_ENOTFOUND);
    CHECK(strstr(err.msg, "1 lines") != NULL);
    CHECK(store_context_locate(&back, "nope.c", 1, &byte, &token, &err) == TOME_ENOTFOUND);
    CHECK(strstr(err.msg, "nope.c") != NULL);
    store_context_clear(&back);
    store_document_list_free(&l);
    store_close(s);
}

static void test_states(void)
{
    tome_error err = {0};
    store *s = open_store();
    int64_t c, v, a, b;
    CHECK_OK(store_corpus_ensure(s, "law", &c, &err), &err);
    CHECK_OK(store_version_latest(s, c, &v, &err), &err);
    store_kv_state kv = {
        .version_id = v, .token_count = 1000, .path = "kv/1.kv", .status = STORE_STATE_WRITING};
    snprintf(kv.model_fingerprint, sizeof kv.model_fingerprint, "%064d", 7);
    CHECK_OK(store_state_add(s, &kv, &a, &err), &err);
    kv.path = "kv/2.kv";
    CHECK_OK(store_state_add(s, &kv, &b, &err), &err);
    CHECK(store_state_add(s, &kv, &b, &err) == TOME_EEXIST); /* path is unique */
    CHECK_OK(store_state_set_status(s, a, STORE_STATE_READY, 12345, &err), &err);
    CHECK(store_state_set_status(s, 999, STORE_STATE_READY, 1, &err) == TOME_ENOTFOUND);
    /* Age both states (a more) so the one touched next is clearly newest. */
    sqlite3 *db;
    sqlite3_open(db_path, &db);
    sqlite3_exec(db, "UPDATE kv_states SET last_used_at = last_used_at - 100 - (path = 'kv/1.kv')",
                 NULL, NULL, NULL);
    sqlite3_close(db);
    store_kv_state_list list;
    CHECK_OK(store_state_list(s, c, &list, &err), &err);
    CHECK(list.n == 2 && list.states[0].id == a && list.states[0].status == STORE_STATE_READY);
    CHECK(list.n == 2 && list.states[0].bytes == 12345 && list.states[1].context_id == 0);
    CHECK(list.n == 2 && strcmp(list.states[0].model_fingerprint, kv.model_fingerprint) == 0);
    store_state_list_free(&list);
    CHECK_OK(store_state_touch(s, a, &err), &err);
    CHECK_OK(store_state_list(s, 0, &list, &err), &err);
    CHECK(list.n == 2 && list.states[0].id == b);
    store_state_list_free(&list);

    int64_t r1, r2;
    store_restart_point rp = {.state_id = a, .token_count = 512, .file_offset = 4096, .bytes = 100};
    CHECK_OK(store_restart_add(s, &rp, &r1, &err), &err);
    rp.token_count = 256;
    CHECK_OK(store_restart_add(s, &rp, &r2, &err), &err);
    CHECK(store_restart_add(s, &rp, &r2, &err) == TOME_EEXIST);
    store_restart_point *pts;
    size_t n;
    CHECK_OK(store_restart_list(s, a, &pts, &n, &err), &err);
    CHECK(n == 2 && pts[0].token_count == 256 && pts[1].token_count == 512);
    CHECK(n == 2 && pts[1].file_offset == 4096);
    free(pts);
    CHECK_OK(store_restart_delete(s, r2, &err), &err);
    CHECK_OK(store_state_delete(s, a, &err), &err);
    CHECK(raw_int("SELECT count(*) FROM restart_points") == 0); /* cascaded */
    CHECK(store_state_delete(s, a, &err) == TOME_ENOTFOUND);
    store_close(s);
}

/* A state file under the database's directory is recorded relative to it,
 * so the directory can move: here the whole store is renamed and reopened. */
static void test_state_paths_move(void)
{
    tome_error err = {0};
    char dir[4200], moved[4300], path[4400], db[4400];
    snprintf(dir, sizeof dir, "%s/before", check_tmpdir());
    snprintf(moved, sizeof moved, "%s/after", check_tmpdir());
    REQUIRE(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    snprintf(db, sizeof db, "%s/tome.db", dir);
    store *s;
    REQUIRE(store_open(db, &s, &err) == 0, "store_open: %s", err.msg);
    int64_t c, v, id;
    CHECK_OK(store_corpus_ensure(s, "moving", &c, &err), &err);
    store_version_info info = {.source = "test"};
    CHECK_OK(store_version_create(s, c, NULL, 0, &info, &v, NULL, &err), &err);
    snprintf(path, sizeof path, "%s/kv/state-1.kv", dir);
    store_kv_state kv = {.version_id = v, .token_count = 10, .path = path};
    CHECK_OK(store_state_add(s, &kv, &id, &err), &err);
    kv.path = "/elsewhere/state-2.kv";
    CHECK_OK(store_state_add(s, &kv, &id, &err), &err);
    store_close(s);
    REQUIRE(rename(dir, moved) == 0, "rename %s", dir);
    snprintf(db, sizeof db, "%s/tome.db", moved);
    REQUIRE(store_open(db, &s, &err) == 0, "store_open: %s", err.msg);
    store_kv_state_list list;
    CHECK_OK(store_state_list(s, c, &list, &err), &err);
    snprintf(path, sizeof path, "%s/kv/state-1.kv", moved);
    CHECKF(list.n == 2 && strcmp(list.states[0].path, path) == 0, "%s",
           list.n ? list.states[0].path : "no states");
    CHECK(list.n == 2 && strcmp(list.states[1].path, "/elsewhere/state-2.kv") == 0);
    store_state_list_free(&list);
    store_close(s);
}

static void test_jobs_and_history(void)
{
    tome_error err = {0};
    store *s = open_store();
    int64_t c, j1, j2, q;
    CHECK_OK(store_corpus_ensure(s, "law", &c, &err), &err);
    CHECK_OK(store_job_add(s, "ingest", c, &j1, &err), &err);
    CHECK_OK(store_job_add(s, "prefill", 0, &j2, &err), &err);
    CHECK_OK(store_job_set_state(s, j1, STORE_JOB_RUNNING, NULL, &err), &err);
    CHECK_OK(store_job_progress(s, j1, 5, 10, &err), &err);
    store_job job;
    CHECK_OK(store_job_get(s, j1, &job, &err), &err);
    CHECK(job.state == STORE_JOB_RUNNING && job.done == 5 && job.total == 10);
    CHECK(job.started_at > 0 && job.finished_at == 0 && job.corpus_id == c);
    CHECK(strcmp(job.kind, "ingest") == 0 && job.error == NULL);
    store_job_clear(&job);
    int64_t *ids;
    size_t nids;
    CHECK_OK(store_job_list_unfinished(s, "prefill", &ids, &nids, &err), &err);
    CHECK(nids == 1 && ids[0] == j2);
    free(ids);
    CHECK_OK(store_job_list_unfinished(s, "ingest", &ids, &nids, &err), &err);
    CHECK(nids == 1 && ids[0] == j1);
    free(ids);
    int64_t n = 0;
    CHECK_OK(store_job_fail_unfinished(s, "daemon restarted", &n, &err), &err);
    CHECK_OK(store_job_list_unfinished(s, "prefill", &ids, &nids, &err), &err);
    CHECK(nids == 0);
    free(ids);
    CHECK(n == 2);
    CHECK_OK(store_job_get(s, j2, &job, &err), &err);
    CHECK(job.state == STORE_JOB_FAILED && job.finished_at > 0 && job.corpus_id == 0);
    CHECK(job.error && strcmp(job.error, "daemon restarted") == 0);
    store_job_clear(&job);
    CHECK(store_job_get(s, 999, &job, &err) == TOME_ENOTFOUND);
    int64_t j3, j4;
    CHECK_OK(store_job_add(s, "prefill", c, &j3, &err), &err);
    CHECK_OK(store_job_set_state(s, j3, STORE_JOB_DONE, NULL, &err), &err);
    CHECK_OK(store_job_add(s, "prefill", c, &j4, &err), &err);
    CHECK_OK(store_job_list_finished(s, "prefill", 10, &ids, &nids, &err), &err);
    CHECK(nids == 2 && ids[0] == j3 && ids[1] == j2); /* newest first, j4 is queued */
    free(ids);
    CHECK_OK(store_job_list_finished(s, "prefill", 1, &ids, &nids, &err), &err);
    CHECK(nids == 1 && ids[0] == j3);
    free(ids);

    store_question qq = {.corpus_id = c,
                         .question = "why?",
                         .answer = "because",
                         .prompt_tokens = 10,
                         .answer_tokens = 3,
                         .prefill_seconds = 1.5};
    CHECK_OK(store_question_add(s, &qq, &q, &err), &err);
    qq.question = "how?";
    qq.answer = NULL;
    CHECK_OK(store_question_add(s, &qq, &q, &err), &err);
    store_question *qs;
    size_t nq;
    CHECK_OK(store_question_list(s, c, 10, &qs, &nq, &err), &err);
    CHECK(nq == 2 && strcmp(qs[0].question, "how?") == 0 && qs[0].answer == NULL);
    CHECK(nq == 2 && strcmp(qs[1].answer, "because") == 0 && qs[1].prefill_seconds == 1.5);
    store_question_list_free(qs, nq);
    store_close(s);
}

static void test_tokens(void)
{
    tome_error err = {0};
    store *s = open_store();
    int64_t id;
    const char *secret = "s3cret-s3cret-s3cret";
    CHECK_OK(store_token_add(s, "ci", secret, "law", STORE_SCOPE_READ, &id, &err), &err);
    CHECK_OK(store_token_add(s, "admin", "admin-secret-0123456789", NULL,
                             STORE_SCOPE_READ | STORE_SCOPE_WRITE, &id, &err),
             &err);
    CHECK(store_token_add(s, "short", "abc", NULL, 1, &id, &err) == TOME_EINVAL);
    CHECK(store_token_add(s, "ci", "another-long-secret", NULL, 1, &id, &err) == TOME_EEXIST);
    CHECK_OK(store_token_check(s, secret, "law", STORE_SCOPE_READ, &err), &err);
    CHECK(store_token_check(s, secret, "law", STORE_SCOPE_WRITE, &err) == TOME_EPERM);
    CHECK(strstr(err.msg, secret) == NULL && strstr(err.msg, "write") != NULL);
    CHECK(store_token_check(s, secret, "code", STORE_SCOPE_READ, &err) == TOME_EPERM);
    CHECK(store_token_check(s, secret, NULL, STORE_SCOPE_READ, &err) == TOME_EPERM);
    CHECK(store_token_check(s, "wrong-secret-000000", "law", STORE_SCOPE_READ, &err) == TOME_EPERM);
    CHECK_OK(store_token_check(s, "admin-secret-0123456789", "code", STORE_SCOPE_WRITE, &err),
             &err);
    CHECK_OK(store_token_check(s, "admin-secret-0123456789", NULL, STORE_SCOPE_READ, &err), &err);
    CHECK_OK(store_token_revoke(s, "ci", &err), &err);
    CHECK(store_token_check(s, secret, "law", STORE_SCOPE_READ, &err) == TOME_EPERM);
    CHECK(store_token_revoke(s, "nobody", &err) == TOME_ENOTFOUND);
    CHECK(raw_int("SELECT count(*) FROM access_tokens WHERE hash LIKE '%s3cret%'") == 0);
    CHECK(raw_int("SELECT count(*) FROM access_tokens WHERE length(hash) = 64") == 2);
    store_close(s);
}

static void test_search_and_delete(void)
{
    tome_error err = {0};
    store *s = open_store();
    int64_t c, v1, v2, ids[2];
    CHECK_OK(store_corpus_ensure(s, "code", &c, &err), &err);
    ids[0] = add_doc(s, c, "src/a.c", "int x;\nint needle = 1;\r\nreturn;\nneedles\n");
    ids[1] = add_doc(s, c, "src/b.c", "no match here\nthe needle\n");
    store_version_info info = {.source = "t", .first_changed_position = -1};
    CHECK_OK(store_version_create(s, c, ids, 1, &info, &v1, NULL, &err), &err);
    CHECK_OK(store_version_create(s, c, ids, 2, &info, &v2, NULL, &err), &err);

    store_hits h = {0};
    CHECK_OK(store_search(s, v1, "needle", 100, &h, &err), &err);
    /* "needles" is another token: only line 2, and only src/a.c (v1). */
    CHECK(h.n == 1 && strcmp(h.hits[0].path, "src/a.c") == 0 && h.hits[0].line == 2);
    CHECK(h.n == 1 && strcmp(h.hits[0].text, "int needle = 1;") == 0);
    store_hits_free(&h);
    CHECK_OK(store_search(s, v2, "needle*", 100, &h, &err), &err);
    CHECK(h.n == 3);
    store_hits_free(&h);
    CHECK_OK(store_search(s, v2, "needle*", 2, &h, &err), &err);
    CHECK(h.n == 2);
    store_hits_free(&h);
    CHECK(store_search(s, v2, "\"unbalanced", 10, &h, &err) == TOME_EINVAL);
    CHECK(strstr(err.msg, "unbalanced") != NULL);
    store_hits_free(&h);

    CHECK_OK(store_corpus_delete(s, "code", &err), &err);
    CHECK(raw_int("SELECT count(*) FROM documents WHERE path LIKE 'src/%'") == 0);
    CHECK(raw_int("SELECT count(*) FROM corpus_versions WHERE source = 't'") == 0);
    CHECK(store_corpus_delete(s, "code", &err) == TOME_ENOTFOUND);
    store_close(s);
}

int main(void)
{
    snprintf(db_path, sizeof db_path, "%s/tome.db", check_tmpdir());
    test_open_and_migrate();
    test_corpus_versions();
    test_transactions();
    test_contexts();
    test_states();
    test_state_paths_move();
    test_jobs_and_history();
    test_tokens();
    test_search_and_delete();
    return check_finish();
}
