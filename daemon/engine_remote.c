/*
 * engine_remote.c - the remote engine (`engine = remote`): the engine
 * object, its replicas and their health, which corpus is warm where, and
 * the interface's operations (remote_internal.h says how it works;
 * remote_work.c runs its jobs and questions).
 *
 * Placement is rendezvous hashing: every replica scores SHA-256(url,
 * corpus, version) and the best replica that is up holds the corpus, so a
 * corpus's prefix stays warm in one place, adding or losing a replica
 * moves only the corpora it wins or held, and no table has to be shared.
 * A health thread loads the tokenizer at start, then asks each replica's
 * GET /models every remote_health_interval seconds; a replica that stops
 * answering (or fails a request) is skipped, and each corpus warm on it is
 * re-warmed by a prefill job on the replica that now wins it.
 */
#include "daemon/log.h"
#include "daemon/remote_internal.h"
#include "daemon/server.h"
#include "daemon/workers.h"
#include "engine/v4.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------
 * Replicas
 * ------------------------------------------------------------------------ */

static uint64_t score(const replica *r, const char *corpus, int64_t version_id)
{
    char text[2048];
    int len =
        snprintf(text, sizeof text, "%s\n%s\n%lld", r->conf.url, corpus, (long long)version_id);
    uint8_t digest[32];
    tome_sha256(text, (size_t)len, digest);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | digest[i];
    return v;
}

int remote_pick(engine_remote *e, const char *corpus, int64_t version_id, unsigned skip)
{
    for (int need_up = 1; need_up >= 0; need_up--) {
        int best = -1;
        uint64_t best_score = 0;
        for (int i = 0; i < e->n_replicas; i++) {
            if ((skip >> i & 1) || (need_up && !atomic_load(&e->replicas[i].up))) continue;
            uint64_t s = score(&e->replicas[i], corpus, version_id);
            if (best < 0 || s > best_score) best = i, best_score = s;
        }
        if (best >= 0) return best;
    }
    return -1;
}

typedef struct rewarm {
    tomed_server *server;
    char corpus[TOMED_NAME_MAX + 1];
} rewarm;

static void start_rewarm(void *arg)
{
    rewarm *w = arg;
    if (w->server->jobs) tomed_jobs_rewarm(w->server->jobs, w->corpus);
    free(w);
}

/* Under the lock: a re-warm job for every corpus warm on replica `r`. */
static void move_corpora(engine_remote *e, int r)
{
    for (int i = 0; i < e->n_states; i++) {
        rewarm *w = e->states[i].replica == r ? calloc(1, sizeof *w) : NULL;
        if (!w) continue;
        w->server = e->server;
        snprintf(w->corpus, sizeof w->corpus, "%s", e->states[i].corpus);
        tomed_post(e->server->pool, start_rewarm, w);
    }
}

/* Replica `r` is up or down (with `why`); going down moves its corpora. */
static void set_health(engine_remote *e, int r, int up, const char *why)
{
    replica *rep = &e->replicas[r];
    int was = atomic_exchange(&rep->up, up);
    pthread_mutex_lock(&e->lock);
    snprintf(rep->error, sizeof rep->error, "%s", up ? "" : why);
    if (was && !up) {
        tomed_log(TOMED_LOG_WARN, "replica %s is down: %s", rep->conf.url, why);
        move_corpora(e, r);
    } else if (!was && up) {
        tomed_log(TOMED_LOG_INFO, "replica %s is up", rep->conf.url);
    }
    pthread_mutex_unlock(&e->lock);
}

void remote_mark_down(engine_remote *e, int r, const char *why)
{
    set_health(e, r, 0, why);
}

static void check_replicas(engine_remote *e)
{
    for (int i = 0; i < e->n_replicas && !remote_stopping(e); i++) {
        tome_error err = {0};
        int rc = remote_get_ok(&e->replicas[i].target, "/models", &err);
        set_health(e, i, rc == 0, err.msg);
    }
}

/* ------------------------------------------------------------------------
 * Start: the tokenizer, the context, then health checks until stopped
 * ------------------------------------------------------------------------ */

/* The bytes of the vocabulary's longest token. */
static size_t longest_token(const v4_tokenizer *t)
{
    size_t longest = 1;
    for (int32_t id = 0; id < v4_tokenizer_n_ids(t); id++) {
        const char *bytes;
        size_t len;
        if (v4_token_bytes(t, id, &bytes, &len) == 0 && len > longest) longest = len;
    }
    return longest;
}

/* The model directory's tokenizer.json (its SHA-256 is the fingerprint
 * ingest renders with) and config.json's context, when it has one. */
static int load_tokenizer(engine_remote *e, tome_error *err)
{
    char dir[TOMED_PATH_MAX], path[TOMED_PATH_MAX + 32];
    tomed_config_model_dir(&e->server->cfg, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *text;
    size_t len;
    int rc = tome_read_file(path, (size_t)1 << 30, &text, &len, err);
    if (rc != 0) return tome_error_wrap(err, "the remote engine counts tokens with %s", path);
    uint8_t digest[32];
    tome_sha256(text, len, digest);
    free(text);
    tome_hex(digest, sizeof digest, e->tokenizer_fingerprint);
    if ((rc = v4_tokenizer_load(path, &e->tokenizer, err)) != 0) return rc;
    e->longest_token = longest_token(e->tokenizer);
    e->context = e->server->cfg.max_context;
    snprintf(path, sizeof path, "%s/config.json", dir);
    v4_config cfg;
    tome_error ignored;
    if (!e->context && tome_read_file(path, 1 << 20, &text, &len, &ignored) == 0) {
        if (v4_config_parse(text, len, path, &cfg, &ignored) == 0) e->context = cfg.max_position;
        free(text);
    }
    return 0;
}

static void *health_main(void *arg)
{
    engine_remote *e = arg;
    tome_error err = {0};
    if (load_tokenizer(e, &err) != 0) {
        snprintf(e->why, sizeof e->why, "%s", err.msg);
        tomed_log(TOMED_LOG_ERROR, "remote engine: %s", err.msg);
    } else {
        check_replicas(e);
        atomic_store(&e->ready, 1);
        tomed_log(TOMED_LOG_INFO, "remote engine: %d replicas, model '%s', context %lld",
                  e->n_replicas, e->server->cfg.remote_model, (long long)e->context);
    }
    tomed_post(e->server->pool, tomed_jobs_model_settled, e->server);
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += e->server->cfg.remote_health_interval_s;
        pthread_cond_timedwait(&e->changed, &e->lock, &until);
        if (e->stopping || !atomic_load(&e->ready)) continue;
        pthread_mutex_unlock(&e->lock);
        check_replicas(e);
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

static const tomed_engine_ops remote_ops;

static int add_replicas(engine_remote *e, tome_error *err)
{
    const tomed_config *cfg = &e->server->cfg;
    for (int i = 0; i < cfg->n_remotes; i++) {
        replica *r = &e->replicas[e->n_replicas++];
        r->conf = cfg->remotes[i];
        if (r->conf.api_key_file[0]) {
            int rc = remote_read_key(r->conf.api_key_file, r->api_key, sizeof r->api_key, err);
            if (rc != 0) return rc;
        }
        r->target = (remote_target){&r->conf, r->api_key, cfg->remote_connect_timeout_s,
                                    cfg->remote_timeout_s};
        atomic_store(&r->up, 1); /* until the first check says otherwise */
    }
    return 0;
}

int tomed_engine_start_remote(tomed_server *s, tomed_engine **out, tome_error *err)
{
    engine_remote *e = calloc(1, sizeof *e);
    if (!e) return tome_errorf(err, TOME_ENOMEM, "engine");
    e->base.ops = &remote_ops;
    e->server = s;
    snprintf(e->why, sizeof e->why, "loading the tokenizer");
    int rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK
                 ? add_replicas(e, err)
                 : tome_errorf(err, TOME_EINTERNAL, "libcurl would not start");
    if (rc != 0) {
        free(e);
        return rc;
    }
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->changed, NULL);
    if (pthread_create(&e->health, NULL, health_main, e) != 0) {
        free(e);
        return tome_errorf(err, TOME_EINTERNAL, "cannot start the health thread");
    }
    *out = &e->base;
    return 0;
}

/* ------------------------------------------------------------------------
 * Threads
 * ------------------------------------------------------------------------ */

int remote_stopping(engine_remote *e)
{
    pthread_mutex_lock(&e->lock);
    int stopping = e->stopping;
    pthread_mutex_unlock(&e->lock);
    return stopping;
}

int remote_spawn(engine_remote *e, void *(*fn)(void *), void *arg, int is_ask, tome_error *err)
{
    const tomed_config *cfg = &e->server->cfg;
    pthread_mutex_lock(&e->lock);
    int rc = 0;
    if (e->stopping)
        rc = tome_errorf(err, TOME_EBUSY, "tomed is shutting down");
    else if (is_ask && e->asks >= cfg->max_active_asks + cfg->ask_queue_limit)
        rc = tome_errorf(err, TOME_EBUSY, "%d questions are running or waiting already", e->asks);
    if (rc == 0) {
        e->running++;
        e->asks += is_ask;
    }
    pthread_mutex_unlock(&e->lock);
    if (rc != 0) return rc;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, fn, arg) != 0) {
        remote_thread_done(e, is_ask);
        rc = tome_errorf(err, TOME_EINTERNAL, "cannot start a thread");
    }
    pthread_attr_destroy(&attr);
    return rc;
}

void remote_thread_done(engine_remote *e, int is_ask)
{
    pthread_mutex_lock(&e->lock);
    e->running--;
    e->asks -= is_ask;
    pthread_cond_broadcast(&e->changed);
    pthread_mutex_unlock(&e->lock);
}

/* ------------------------------------------------------------------------
 * Warm states
 * ------------------------------------------------------------------------ */

static remote_state *find_state(engine_remote *e, const char *corpus, int64_t version_id)
{
    for (int i = 0; i < e->n_states; i++)
        if (strcmp(e->states[i].corpus, corpus) == 0 && e->states[i].version_id == version_id)
            return &e->states[i];
    return NULL;
}

static void state_id(const remote_state *st, char id[48])
{
    snprintf(id, 48, "remote-%lld-%lld", (long long)st->version_id, (long long)st->serial);
}

/* One state per corpus (its newest version); the oldest goes when full. */
int remote_state_put(engine_remote *e, const char *corpus, int64_t version_id, const int32_t *ids,
                     size_t n, int r)
{
    int32_t *copy = malloc((n ? n : 1) * sizeof *copy);
    if (!copy) return TOME_ENOMEM;
    memcpy(copy, ids, n * sizeof *copy);
    pthread_mutex_lock(&e->lock);
    remote_state *slot = NULL;
    for (int i = 0; i < e->n_states && !slot; i++)
        if (strcmp(e->states[i].corpus, corpus) == 0) slot = &e->states[i];
    if (!slot && e->n_states < REMOTE_MAX_STATES) slot = &e->states[e->n_states++];
    if (!slot) {
        slot = &e->states[0];
        for (int i = 1; i < e->n_states; i++)
            if (e->states[i].serial < slot->serial) slot = &e->states[i];
    }
    free(slot->ids);
    snprintf(slot->corpus, sizeof slot->corpus, "%s", corpus);
    slot->version_id = version_id;
    slot->ids = copy;
    slot->n_ids = n;
    slot->replica = r;
    slot->serial = ++e->serial;
    pthread_mutex_unlock(&e->lock);
    return 0;
}

int remote_state_get(engine_remote *e, const char *corpus, int64_t version_id, int32_t **ids,
                     size_t *n, int *r, char id[48])
{
    pthread_mutex_lock(&e->lock);
    remote_state *st = find_state(e, corpus, version_id);
    int32_t *copy = st ? malloc((st->n_ids ? st->n_ids : 1) * sizeof *copy) : NULL;
    if (copy) {
        memcpy(copy, st->ids, st->n_ids * sizeof *copy);
        *n = st->n_ids;
        *r = st->replica;
        state_id(st, id);
    }
    pthread_mutex_unlock(&e->lock);
    *ids = copy;
    return copy != NULL;
}

/* ------------------------------------------------------------------------
 * The interface
 * ------------------------------------------------------------------------ */

static void remote_stop(tomed_engine *base)
{
    engine_remote *e = (engine_remote *)base;
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    pthread_cond_broadcast(&e->changed);
    while (e->running > 0) pthread_cond_wait(&e->changed, &e->lock);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->health, NULL);
    for (int i = 0; i < e->n_states; i++) free(e->states[i].ids);
    v4_tokenizer_free(e->tokenizer);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->changed);
    free(e);
    curl_global_cleanup();
}

static int remote_ready(tomed_engine *base, const char **why)
{
    engine_remote *e = (engine_remote *)base;
    int ready = atomic_load(&e->ready);
    if (!ready && why) *why = e->why;
    return ready;
}

static const struct v4_model *remote_model(tomed_engine *base, const char **fingerprint)
{
    return NULL;
}

static const struct v4_tokenizer *remote_tokenizer(tomed_engine *base, const char **fingerprint)
{
    engine_remote *e = (engine_remote *)base;
    if (!atomic_load(&e->ready)) return NULL;
    *fingerprint = e->tokenizer_fingerprint;
    return e->tokenizer;
}

/* No KV state file is ever made under this name. */
static const char *remote_state_fingerprint(tomed_engine *base)
{
    return remote_ready(base, NULL) ? "remote" : NULL;
}

static int submit(engine_remote *e, void *(*fn)(void *), void *item, int is_ask, tome_error *err)
{
    remote_work *w = malloc(sizeof *w);
    if (!w) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    *w = (remote_work){e, item};
    int rc = remote_spawn(e, fn, w, is_ask, err);
    if (rc != 0) free(w);
    return rc;
}

static int remote_submit_prefill(tomed_engine *base, tomed_job *job, tome_error *err)
{
    return submit((engine_remote *)base, remote_job_main, job, 0, err);
}

static int remote_submit_ask(tomed_engine *base, tomed_ask *ask, tome_error *err)
{
    return submit((engine_remote *)base, remote_ask_main, ask, 1, err);
}

static int remote_has_state(tomed_engine *base, const char *corpus, int64_t version_id,
                            int64_t *tokens, char id[48])
{
    engine_remote *e = (engine_remote *)base;
    pthread_mutex_lock(&e->lock);
    remote_state *st = find_state(e, corpus, version_id);
    if (st && tokens) *tokens = (int64_t)st->n_ids;
    if (st && id) state_id(st, id);
    pthread_mutex_unlock(&e->lock);
    return st != NULL;
}

/* Removes the states of `corpus`, or the one called `id`. */
static int remove_states(engine_remote *e, const char *corpus, const char *id)
{
    int n = 0;
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < e->n_states;) {
        char text[48];
        state_id(&e->states[i], text);
        if (strcmp(corpus ? e->states[i].corpus : text, corpus ? corpus : id) == 0) {
            free(e->states[i].ids);
            e->states[i] = e->states[--e->n_states];
            n++;
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&e->lock);
    return n;
}

static void remote_forget(tomed_engine *base, const char *corpus)
{
    remove_states((engine_remote *)base, corpus, NULL);
}

static int remote_drop_state(tomed_engine *base, const char *id)
{
    return remove_states((engine_remote *)base, NULL, id) ? 0 : TOME_ENOTFOUND;
}

static json_t *remote_states(tomed_engine *base)
{
    engine_remote *e = (engine_remote *)base;
    json_t *list = json_array();
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < e->n_states; i++) {
        const remote_state *st = &e->states[i];
        char id[48];
        state_id(st, id);
        json_array_append_new(list,
                              json_pack("{s:s, s:s, s:I, s:I, s:i, s:s, s:s}", "id", id, "corpus",
                                        st->corpus, "version", (json_int_t)st->version_id, "tokens",
                                        (json_int_t)st->n_ids, "bytes", 0, "status", "remote",
                                        "replica", e->replicas[st->replica].conf.url));
    }
    pthread_mutex_unlock(&e->lock);
    return list;
}

static json_t *remote_status(tomed_engine *base)
{
    engine_remote *e = (engine_remote *)base;
    json_t *replicas = json_array();
    int healthy = 0;
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < e->n_replicas; i++) {
        int up = atomic_load(&e->replicas[i].up), corpora = 0;
        for (int k = 0; k < e->n_states; k++) corpora += e->states[k].replica == i;
        healthy |= up;
        json_t *one = json_pack("{s:s, s:b, s:i}", "url", e->replicas[i].conf.url, "up", up,
                                "corpora", corpora);
        if (!up && e->replicas[i].error[0])
            json_object_set_new(one, "error", json_string(e->replicas[i].error));
        json_array_append_new(replicas, one);
    }
    pthread_mutex_unlock(&e->lock);
    return json_pack("{s:s, s:b, s:s, s:o}", "kind", "remote", "healthy", healthy, "model",
                     e->server->cfg.remote_model, "replicas", replicas);
}

static const tomed_engine_ops remote_ops = {
    .kind = "remote",
    .stop = remote_stop,
    .ready = remote_ready,
    .model = remote_model,
    .tokenizer = remote_tokenizer,
    .state_fingerprint = remote_state_fingerprint,
    .submit_prefill = remote_submit_prefill,
    .submit_ask = remote_submit_ask,
    .has_state = remote_has_state,
    .forget = remote_forget,
    .drop_state = remote_drop_state,
    .states = remote_states,
    .status = remote_status,
};
