/*
 * storecall.c - running store work off the loop thread.
 *
 * SQLite calls can wait (a writer holding the lock, a cold page cache, an
 * ingest reading a large archive), and the loop thread must not.  So every
 * route that touches the store packs what it needs into a tomed_call, and
 * the work runs on a worker thread with that thread's own store handle
 * (store.h: one handle per thread).  The reply goes out on the loop thread.
 * If the client disconnects meanwhile, the request's on_abort hook clears
 * the call's pointer and the finished work is simply discarded.
 */
#include "daemon/conf.h"
#include "daemon/http.h"
#include "daemon/server.h"
#include "daemon/storecall.h"
#include "daemon/workers.h"

#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_key_t store_key;
static pthread_once_t store_key_once = PTHREAD_ONCE_INIT;

static void close_thread_store(void *db)
{
    store_close(db);
}

static void make_store_key(void)
{
    pthread_key_create(&store_key, close_thread_store);
}

int tomed_thread_store(const char *state_dir, store **out, tome_error *err)
{
    pthread_once(&store_key_once, make_store_key);
    store *db = pthread_getspecific(store_key);
    if (!db) {
        char path[TOMED_PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/tome.db", state_dir);
        int rc = store_open(path, &db, err);
        if (rc != 0) return rc;
        pthread_setspecific(store_key, db);
    }
    *out = db;
    return 0;
}

static void call_aborted(tomed_request *r, void *arg)
{
    tomed_call *c = arg;
    c->r = NULL;
}

static void call_free(tomed_call *c)
{
    json_decref(c->input);
    json_decref(c->result);
    free(c->query);
    if (c->upload[0]) unlink(c->upload);
    free(c);
}

tomed_call *tomed_call_new(tomed_request *r, tomed_call_fn fn, int status)
{
    tomed_call *c = calloc(1, sizeof *c);
    if (!c) {
        tomed_reply_error(r, TOME_ENOMEM, "out of memory");
        return NULL;
    }
    c->r = r;
    c->server = r->server;
    c->fn = fn;
    c->status = status;
    c->principal = r->principal;
    c->peer = *r->peer;
    if (r->params[0]) snprintf(c->corpus, sizeof c->corpus, "%s", r->params[0]);
    return c;
}

static void call_work(void *arg)
{
    tomed_call *c = arg;
    store *db;
    c->rc = tomed_thread_store(c->server->cfg.state_dir, &db, &c->err);
    if (c->rc == 0) c->rc = c->fn(c, db, &c->err);
}

static void call_done(void *arg)
{
    tomed_call *c = arg;
    tomed_request *r = c->r;
    if (r) {
        r->on_abort = NULL;
        if (c->rc != 0) {
            tomed_reply_tome_error(r, &c->err);
        } else if (c->result) {
            tomed_reply_json(r, c->status, c->result);
            c->result = NULL;
        } else {
            tomed_reply_empty(r, c->status);
        }
    }
    call_free(c);
}

void tomed_call_start(tomed_call *c)
{
    tomed_request *r = c->r;
    r->on_abort = call_aborted;
    r->abort_arg = c;
    if (r->body_fd >= 0) {
        /* The upload now belongs to the call: it must outlive a client
         * that hangs up while the worker is still reading it. */
        close(r->body_fd);
        r->body_fd = -1;
        snprintf(c->upload, sizeof c->upload, "%s", r->body_path);
    }
    if (tomed_pool_submit(c->server->pool, call_work, call_done, c) != 0) {
        r->on_abort = NULL;
        tomed_reply_error(r, TOME_ENOMEM, "cannot queue the work");
        call_free(c);
    }
}

int tomed_saved_state(store *db, int64_t corpus_id, int64_t version_id, const char *fingerprint,
                      char *path, char *id, int64_t *tokens, tome_error *err)
{
    store_kv_state_list list = {0};
    int rc = store_state_list(db, corpus_id, &list, err);
    if (rc != 0) return rc;
    int found = 0;
    for (size_t i = 0; i < list.n; i++) {
        const store_kv_state *st = &list.states[i];
        if (st->version_id != version_id || st->status != STORE_STATE_READY || !st->path ||
            strcmp(st->model_fingerprint, fingerprint) != 0)
            continue;
        snprintf(path, TOMED_PATH_MAX, "%s", st->path);
        snprintf(id, 32, "%lld", (long long)st->id);
        *tokens = st->token_count;
        found = 1;
    }
    store_state_list_free(&list);
    return found;
}

int tomed_saved_states(store *db, int64_t corpus_id, const char *fingerprint,
                       char (*paths)[TOMED_PATH_MAX], int max, tome_error *err)
{
    store_kv_state_list list = {0};
    int rc = store_state_list(db, corpus_id, &list, err);
    if (rc != 0) return rc;
    int n = 0;
    /* The list is least recently used first; the newest are kept. */
    for (size_t i = list.n; i-- > 0 && n < max;) {
        const store_kv_state *st = &list.states[i];
        if (st->status == STORE_STATE_READY && st->path &&
            strcmp(st->model_fingerprint, fingerprint) == 0)
            snprintf(paths[n++], TOMED_PATH_MAX, "%s", st->path);
    }
    store_state_list_free(&list);
    return n;
}

int tomed_clean_tmp(const char *dir, tome_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return tome_errorf(err, TOME_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char path[TOMED_PATH_MAX + 256];
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "upload-", 7) != 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    return 0;
}
