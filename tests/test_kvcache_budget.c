/*
 * test_kvcache_budget.c - the state cache's disk budget
 * (store_kv_cache_evict, store/kvcache.c).
 *
 * Five state rows with files of 100 bytes each in a real store: four
 * ready, one still being written.  The LRU order is changed by a touch a
 * second later (the store's clock counts seconds).  Eviction must remove
 * the least recently used ready states, file first, then mark the row
 * evicted, until the ready ones fit; never the state it is told to keep,
 * never a row that is not ready; a row whose file is already gone is
 * evicted all the same; a budget they already fit leaves everything.
 */
#include "common/common.h"
#include "store/store.h"
#include "tests/check.h"

#include <unistd.h>

enum { A, B, C, D, W, N_STATES };

static char paths[N_STATES][4200];
static int64_t ids[N_STATES];

static void add_states(store *s, int64_t version, const char *dir)
{
    tome_error err = {0};
    for (int i = 0; i < N_STATES; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/state-%d.kv", dir, i);
        FILE *f = fopen(paths[i], "w");
        REQUIRE(f && fprintf(f, "%100s", "") == 100 && fclose(f) == 0, "cannot write %s", paths[i]);
        store_kv_state st = {.version_id = version,
                             .token_count = 1000 + i,
                             .path = paths[i],
                             .bytes = 100,
                             .status = i == W ? STORE_STATE_WRITING : STORE_STATE_READY};
        snprintf(st.model_fingerprint, sizeof st.model_fingerprint, "%064d", 0);
        REQUIRE(store_state_add(s, &st, &ids[i], &err) == 0, "%s", err.msg);
    }
}

/* The row's status, and whether its file exists. */
static store_state_status status_of(store *s, int which, int *has_file)
{
    store_kv_state_list l;
    tome_error err = {0};
    REQUIRE(store_state_list(s, 0, &l, &err) == 0, "%s", err.msg);
    store_state_status st = STORE_STATE_FAILED;
    for (size_t i = 0; i < l.n; i++)
        if (l.states[i].id == ids[which]) st = l.states[i].status;
    store_state_list_free(&l);
    *has_file = access(paths[which], F_OK) == 0;
    return st;
}

static void check_kept(store *s, int which)
{
    int file;
    CHECKF(status_of(s, which, &file) == STORE_STATE_READY && file, "state %d was evicted", which);
}

static void check_evicted(store *s, int which)
{
    int file;
    CHECKF(status_of(s, which, &file) == STORE_STATE_EVICTED && !file, "state %d was kept", which);
}

int main(void)
{
    const char *dir = check_tmpdir();
    char db[4200];
    snprintf(db, sizeof db, "%s/tome.db", dir);
    tome_error err = {0};
    store *s;
    REQUIRE(store_open(db, &s, &err) == 0, "%s", err.msg);
    int64_t corpus, doc, version;
    REQUIRE(store_corpus_ensure(s, "c", &corpus, &err) == 0, "%s", err.msg);
    store_document d = {.path = "a.txt",
                        .size = 2,
                        .media_type = "text/plain",
                        .encoding = "utf-8",
                        .line_count = 1,
                        .text = "a\n",
                        .text_len = 2};
    snprintf(d.sha256, sizeof d.sha256, "%064d", 1);
    REQUIRE(store_document_add(s, corpus, &d, &doc, &err) == 0, "%s", err.msg);
    store_version_info info = {.source = "t", .first_changed_position = -1};
    REQUIRE(store_version_create(s, corpus, &doc, 1, &info, &version, NULL, &err) == 0, "%s",
            err.msg);
    add_states(s, version, dir);
    sleep(1);
    CHECK_OK(store_state_touch(s, ids[A], &err), &err); /* LRU order: B C D A */

    size_t n = 99;
    CHECK_OK(store_kv_cache_evict(s, 400, 0, &n, &err), &err);
    CHECK(n == 0);
    for (int i = A; i <= D; i++) check_kept(s, i);

    /* 400 ready bytes, 250 allowed, B kept: C and D go. */
    CHECK_OK(store_kv_cache_evict(s, 250, ids[B], &n, &err), &err);
    CHECK(n == 2);
    check_kept(s, A);
    check_kept(s, B);
    check_evicted(s, C);
    check_evicted(s, D);
    int file;
    CHECK(status_of(s, W, &file) == STORE_STATE_WRITING && file);

    /* A's file already gone: still evicted; B kept above a zero budget. */
    unlink(paths[A]);
    CHECK_OK(store_kv_cache_evict(s, 0, ids[B], &n, &err), &err);
    CHECK(n == 1);
    check_evicted(s, A);
    check_kept(s, B);
    CHECK_OK(store_kv_cache_evict(s, 0, 0, &n, &err), &err);
    CHECK(n == 1);
    check_evicted(s, B);
    CHECK(status_of(s, W, &file) == STORE_STATE_WRITING && file);

    store_close(s);
    char path[4300];
    const char *names[] = {"tome.db", "tome.db-wal", "tome.db-shm", "state-4.kv"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    return check_finish();
}
