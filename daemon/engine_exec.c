/*
 * engine_exec.c - the engine executor: one thread that owns the model's
 * compute, and the only file of the daemon that runs the forward pass.
 *
 * Why one thread: the engine's kernels already use every core (their own
 * pool), so two forward passes at once would only fight over them.  What
 * one thread must get right is fairness, so a long prefill does not starve
 * questions: the loop below runs every active question one step (its
 * question turn, then one token per step) and then one chunk of the current
 * prefill, round and round.  Questions on a corpus each get a fork of the
 * corpus's prefilled state (v4_state_fork shares the compressed history),
 * so any number of them run side by side on one base state.
 *
 * Results go back to the loop thread with tomed_post(): progress of jobs
 * (at most once a second), answer text as it is decoded (always valid
 * UTF-8: ill-formed bytes the model emits become U+FFFD; cut at character
 * boundaries and held back where it could be the start of a stop string),
 * and one final report per job or question.
 *
 * Prefilled states live in memory, one per corpus version, and on disk in
 * the store's KV state files (kvstate_*): a prefill writes a restart point
 * (kv/job-ID.kv, replaced each time) every restart_interval tokens, and a
 * resumed job starts from it when its token ids still match; a finished
 * prefill is saved as kv/state-ID.kv and recorded in the store, so that
 * questions after a restart restore it (mapped, not copied) instead of
 * prefilling again.
 */
#include "daemon/tomed.h"

#include "engine/v4.h"
#include "kvstate/kvstate.h"
#include "store/store.h"
#include "tokenizer/tokenizer.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_PREFILL_CHUNK 256
#define PROGRESS_INTERVAL_S   1.0

typedef struct cached_state {
    char id[48]; /* the store's state id, or "mem-VERSION-SERIAL" if unsaved */
    char corpus[TOMED_NAME_MAX + 1];
    int64_t version_id;
    v4_state *state;
    int64_t tokens;
    int64_t serial;
} cached_state;

/* A question the engine is working on. */
typedef struct active_ask {
    tomed_ask *ask;
    v4_state *state;
    v4_detok *detok;
    int32_t next_id; /* sampled, not yet fed */
    uint64_t rng;
    char *held; /* decoded text not yet sent (could begin a stop string) */
    size_t held_len;
    size_t answer_cap;
    size_t forced; /* answer ids taken from the test hook's list */
} active_ask;

typedef struct ask_node {
    tomed_ask *ask;
    struct ask_node *next;
} ask_node;

struct tomed_engine {
    tomed_server *server;
    char model_dir[TOMED_PATH_MAX];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stopping;
    /* model, written once by the thread before `ready` */
    v4_model *model;
    v4_tokenizer *tokenizer;
    char tokenizer_fingerprint[65]; /* SHA-256 of tokenizer.json */
    char model_fingerprint[65];
    atomic_int ready;
    char why[TOME_ERROR_MAX];
    int32_t eos_id;
    int vocab;        /* logits per position */
    int sample_vocab; /* ids the tokenizer can decode */
    int64_t context;
    /* TOMED_TEST_ANSWER_IDS (tests only): every answer is these ids */
    int32_t *answer_ids;
    size_t n_answer_ids;
    /* queues, under lock */
    tomed_job *jobs_head, *jobs_tail;
    ask_node *asks_head, *asks_tail;
    int asks_waiting;
    /* engine thread only, except `cache` lookups under lock */
    cached_state cache[64];
    int n_cache;
    int64_t serial;
    active_ask active[TOMED_MAX_ACTIVE_ASKS];
    int n_active;
    tomed_job *job; /* the prefill in progress */
    v4_state *job_state;
    v4_state **points; /* forks of job_state at its restart points, ascending */
    size_t n_points, cap_points;
    double job_started, job_last_report;
    int64_t job_done_at_start;
    float *logits;
};

/* ------------------------------------------------------------------------
 * Model loading and prompts
 * ------------------------------------------------------------------------ */

/* "tiny" is the built-in model, made once with tome-mkmodel into the state
 * directory; anything else is a checkpoint directory. */
static void resolve_model_dir(tomed_engine *e, const char *model)
{
    if (strcmp(model, "tiny") == 0)
        snprintf(e->model_dir, sizeof e->model_dir, "%s/models/tiny", e->server->cfg.state_dir);
    else
        snprintf(e->model_dir, sizeof e->model_dir, "%s", model);
}

/* The test hook: TOMED_TEST_ANSWER_IDS names a file holding a JSON array of
 * token ids (as `tome-tokenize` writes them), and every answer is then
 * those ids and the end of sequence, whatever the model computes, so that
 * a test can check the citations of a known answer end to end with a model
 * whose own text is noise. */
static int load_answer_ids(tomed_engine *e, tome_error *err)
{
    const char *path = getenv("TOMED_TEST_ANSWER_IDS");
    if (!path || !*path) return 0;
    json_error_t jerr;
    json_t *ids = json_load_file(path, 0, &jerr), *id;
    size_t i;
    if (!json_is_array(ids) ||
        !(e->answer_ids = calloc(json_array_size(ids) + 1, sizeof(int32_t)))) {
        json_decref(ids);
        return tome_errorf(err, TOME_EINVAL, "TOMED_TEST_ANSWER_IDS: %s is no JSON array of ids",
                           path);
    }
    json_array_foreach(ids, i, id) e->answer_ids[e->n_answer_ids++] =
        (int32_t)json_integer_value(id);
    json_decref(ids);
    tomed_log(TOMED_LOG_WARN, "test hook: every answer is the %zu ids of %s", e->n_answer_ids,
              path);
    return 0;
}

static int load_model(tomed_engine *e, tome_error *err)
{
    struct stat st;
    if (stat(e->model_dir, &st) != 0)
        return tome_errorf(err, TOME_ENOTFOUND,
                           "model %s does not exist (make the built-in model with "
                           "`tome-mkmodel --preset tiny -o %s`)",
                           e->model_dir, e->model_dir);
    v4_open_options opts = {.kernels = (v4_kernels)e->server->cfg.kernels};
    int rc = v4_model_open(e->model_dir, &opts, &e->model, err);
    if (rc != 0) return rc;
    tomed_log(TOMED_LOG_INFO, "%s kernels (%s)", v4_kernels_name(opts.kernels), v4_kernels_isa());
    char path[TOMED_PATH_MAX + 32];
    v4_model_tokenizer_path(e->model_dir, path, sizeof path);
    rc = v4_tokenizer_load(path, &e->tokenizer, err);
    if (rc != 0) return rc;
    char *text;
    size_t len;
    rc = tome_read_file(path, (size_t)1 << 30, &text, &len, err);
    if (rc != 0) return rc;
    uint8_t digest[32];
    tome_sha256(text, len, digest);
    free(text);
    tome_hex(digest, sizeof digest, e->tokenizer_fingerprint);
    v4_model_fingerprint(e->model, digest);
    tome_hex(digest, sizeof digest, e->model_fingerprint);
    const v4_config *cfg = v4_model_config(e->model);
    e->eos_id = cfg->eos_id;
    if ((rc = load_answer_ids(e, err)) != 0) return rc;
    /* The model's embedding may be wider than the tokenizer's vocabulary
     * (padding rows); an id the tokenizer cannot decode is never sampled. */
    e->vocab = cfg->vocab_size;
    e->sample_vocab = v4_tokenizer_n_ids(e->tokenizer) < cfg->vocab_size
                          ? v4_tokenizer_n_ids(e->tokenizer)
                          : cfg->vocab_size;
    e->context = cfg->max_position;
    e->logits = malloc((size_t)e->vocab * sizeof *e->logits);
    if (!e->logits) return tome_errorf(err, TOME_ENOMEM, "logits");
    return 0;
}

static int prompt_ids(const v4_tokenizer *t, v4_prompt *p, int rc, int32_t **ids, size_t *n,
                      tome_error *err)
{
    v4_ids out = {0};
    if (rc == 0) rc = v4_prompt_tokenize(t, p, &out, err);
    v4_prompt_free(p);
    if (rc != 0) {
        free(out.ids);
        return rc;
    }
    *ids = out.ids;
    *n = out.n;
    return 0;
}

/* The question turn; thinking "max" uses the thinking opener alone, since
 * V4 puts the think-max instruction before the corpus, which would need a
 * prefill of its own. */
static int question_ids(tomed_engine *e, tomed_ask *ask, int32_t **ids, size_t *n, tome_error *err)
{
    v4_chat_options opts = {.thinking = ask->thinking > 0};
    v4_prompt p = {0};
    int rc = 0;
    if (ask->turns) { /* rendered by routes_openai.c; the engine frees it */
        p = *ask->turns;
        free(ask->turns);
        ask->turns = NULL;
    } else {
        rc = v4_docqa_question(&opts, ask->question, strlen(ask->question), &p, err);
    }
    return prompt_ids(e->tokenizer, &p, rc, ids, n, err);
}

/* ------------------------------------------------------------------------
 * The state cache (one prefilled state per corpus version)
 * ------------------------------------------------------------------------ */

static cached_state *find_cached(tomed_engine *e, const char *corpus, int64_t version_id)
{
    for (int i = 0; i < e->n_cache; i++)
        if (strcmp(e->cache[i].corpus, corpus) == 0 && e->cache[i].version_id == version_id)
            return &e->cache[i];
    return NULL;
}

static void state_id(const cached_state *c, char *out, size_t cap)
{
    snprintf(out, cap, "%s", c->id);
}

int tomed_engine_has_state(tomed_engine *e, const char *corpus, int64_t version_id, int64_t *tokens,
                           char id[48])
{
    pthread_mutex_lock(&e->lock);
    cached_state *c = find_cached(e, corpus, version_id);
    if (c && tokens) *tokens = c->tokens;
    if (c && id) state_id(c, id, 48);
    pthread_mutex_unlock(&e->lock);
    return c != NULL;
}

/* Replaces the corpus's older state; the oldest goes when the table is full.
 * `id` names a saved state (NULL: in memory only).  Called on the engine
 * thread. */
static void cache_put(tomed_engine *e, const char *corpus, int64_t version_id, v4_state *state,
                      const char *id)
{
    pthread_mutex_lock(&e->lock);
    cached_state *slot = NULL;
    for (int i = 0; i < e->n_cache; i++)
        if (strcmp(e->cache[i].corpus, corpus) == 0) slot = &e->cache[i];
    if (!slot && e->n_cache < (int)(sizeof e->cache / sizeof e->cache[0]))
        slot = &e->cache[e->n_cache++];
    if (!slot) {
        slot = &e->cache[0];
        for (int i = 1; i < e->n_cache; i++)
            if (e->cache[i].serial < slot->serial) slot = &e->cache[i];
    }
    v4_state *old = slot->state;
    snprintf(slot->corpus, sizeof slot->corpus, "%s", corpus);
    slot->version_id = version_id;
    slot->state = state;
    slot->tokens = v4_state_pos(state);
    slot->serial = ++e->serial;
    if (id)
        snprintf(slot->id, sizeof slot->id, "%s", id);
    else
        snprintf(slot->id, sizeof slot->id, "mem-%lld-%lld", (long long)version_id,
                 (long long)slot->serial);
    pthread_mutex_unlock(&e->lock);
    /* Forks share the parent's history read-only; a question still running
     * on a fork of `old` keeps its own references (v4_state_fork). */
    if (old) v4_state_free(old);
}

/* Takes the entries matching `corpus` (or, if NULL, the state `id`) out
 * of the cache under the lock and frees them after.  That is safe on any
 * thread: forks are taken under the lock, and a fork holds its own
 * references to the history it shares. */
static int cache_remove(tomed_engine *e, const char *corpus, const char *id)
{
    v4_state *gone[64];
    int n = 0;
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < e->n_cache;) {
        char text[48];
        state_id(&e->cache[i], text, sizeof text);
        const char *have = corpus ? e->cache[i].corpus : text;
        if (strcmp(have, corpus ? corpus : id) == 0) {
            gone[n++] = e->cache[i].state;
            e->cache[i] = e->cache[--e->n_cache];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&e->lock);
    for (int i = 0; i < n; i++) v4_state_free(gone[i]);
    return n;
}

void tomed_engine_forget(tomed_engine *e, const char *corpus)
{
    cache_remove(e, corpus, NULL);
}

int tomed_engine_drop_state(tomed_engine *e, const char *id)
{
    return cache_remove(e, NULL, id) ? 0 : TOME_ENOTFOUND;
}

json_t *tomed_engine_states(tomed_engine *e)
{
    json_t *list = json_array();
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < e->n_cache; i++) {
        const cached_state *c = &e->cache[i];
        char id[48];
        state_id(c, id, sizeof id);
        if (strncmp(id, "mem-", 4) != 0) continue; /* the store lists saved ones */
        json_array_append_new(
            list, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "id", id, "corpus", c->corpus,
                            "version", (json_int_t)c->version_id, "tokens", (json_int_t)c->tokens,
                            "bytes", (json_int_t)v4_state_kv_bytes(c->state), "status", "memory"));
    }
    pthread_mutex_unlock(&e->lock);
    return list;
}

/* ------------------------------------------------------------------------
 * Sampling
 * ------------------------------------------------------------------------ */

static uint64_t next_random(uint64_t *x)
{
    /* splitmix64: small, fast, and the same answer for the same seed. */
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct candidate {
    float p;
    int32_t id;
} candidate;

static int by_probability(const void *a, const void *b)
{
    float pa = ((const candidate *)a)->p, pb = ((const candidate *)b)->p;
    return (pa < pb) - (pa > pb);
}

static int32_t sample(const float *logits, int vocab, double temperature, double top_p,
                      uint64_t *rng)
{
    int32_t best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    candidate *c = malloc((size_t)vocab * sizeof *c);
    if (!c) return best;
    double sum = 0;
    for (int i = 0; i < vocab; i++) {
        c[i].id = i;
        c[i].p = (float)exp((logits[i] - logits[best]) / temperature);
        sum += c[i].p;
    }
    qsort(c, (size_t)vocab, sizeof *c, by_probability);
    double kept = 0;
    int n = 0;
    while (n < vocab && (n == 0 || kept < top_p * sum)) kept += c[n++].p;
    double r = (double)(next_random(rng) >> 11) / 9007199254740992.0 * kept;
    int32_t id = c[n - 1].id;
    for (int i = 0; i < n; i++) {
        r -= c[i].p;
        if (r <= 0) {
            id = c[i].id;
            break;
        }
    }
    free(c);
    return id;
}

/* The next token of a question, from the logits just computed: its
 * logit_bias added first (ids were checked against the vocabulary when the
 * question started). */
static int32_t next_token(tomed_engine *e, active_ask *a)
{
    const tomed_ask *ask = a->ask;
    if (e->answer_ids) return a->forced < e->n_answer_ids ? e->answer_ids[a->forced++] : e->eos_id;
    for (int i = 0; i < ask->n_logit_bias; i++)
        e->logits[ask->logit_bias[i].id] += ask->logit_bias[i].bias;
    return sample(e->logits, e->sample_vocab, ask->temperature, ask->top_p, &a->rng);
}

/* ------------------------------------------------------------------------
 * State files
 * ------------------------------------------------------------------------ */

static void kv_path(const tomed_engine *e, const char *kind, int64_t id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/kv/%s-%lld.kv", e->server->cfg.state_dir, kind, (long long)id);
}

/* The state saved at `path`. */
static int restore_file(tomed_engine *e, const char *path, v4_state **out, tome_error *err)
{
    kvstate_file *f;
    int rc = kvstate_open(path, e->model, &f, err);
    if (rc != 0) return rc;
    rc = kvstate_restore(f, 0, out, err);
    kvstate_close(f);
    return rc;
}

/* Restart points are kept as forks of the prefill's state (cheap: they
 * share its compressed rows) and written with every save, so a saved state
 * also serves any later prefill whose ids agree with it up to one of them,
 * such as a re-ingest that changed a document in the middle. */
static void keep_point(tomed_engine *e, v4_state *point)
{
    if (e->n_points == e->cap_points) {
        size_t cap = e->cap_points ? e->cap_points * 2 : 16;
        v4_state **grown = realloc(e->points, cap * sizeof *grown);
        if (!grown) {
            v4_state_free(point);
            return;
        }
        e->points = grown;
        e->cap_points = cap;
    }
    e->points[e->n_points++] = point;
}

static void drop_points(tomed_engine *e)
{
    for (size_t i = 0; i < e->n_points; i++) v4_state_free(e->points[i]);
    e->n_points = 0;
}

/* Restore the file's restart points below `below` tokens into the list. */
static void restore_points(tomed_engine *e, kvstate_file *f, int64_t below)
{
    for (size_t p = 1; p <= kvstate_points(f); p++) {
        v4_state *point;
        tome_error err = {0};
        if (kvstate_point_tokens(f, p) >= below) break;
        if (kvstate_restore(f, p, &point, &err) != 0) break;
        keep_point(e, point);
    }
}

/* A job's restart point: its state after `done` tokens, replacing the
 * previous one atomically. */
static void save_restart_point(tomed_engine *e, tomed_job *job, int64_t done)
{
    char path[TOMED_PATH_MAX + 64];
    tome_error err = {0};
    kv_path(e, "job", job->id, path, sizeof path);
    if (kvstate_save(path, e->job_state, (const v4_state *const *)e->points, e->n_points, job->ids,
                      (size_t)done, &err) != 0) {
        tomed_log(TOMED_LOG_WARN, "job %lld: restart point at token %lld: %s", (long long)job->id,
                  (long long)done, err.msg);
        return;
    }
    atomic_store(&job->restart_point, done);
    v4_state *point;
    if (v4_state_fork(e->job_state, &point, &err) == 0) keep_point(e, point);
}

/* The job's latest restart point, if there is one and it still matches,
 * with the restart points before it. */
static v4_state *resume_from_restart_point(tomed_engine *e, tomed_job *job, int64_t *done)
{
    char path[TOMED_PATH_MAX + 64];
    struct stat st;
    kv_path(e, "job", job->id, path, sizeof path);
    if (stat(path, &st) != 0) return NULL;
    v4_state *state = NULL;
    tome_error err = {0};
    kvstate_file *f;
    int rc = kvstate_open(path, e->model, &f, &err);
    if (rc == 0) {
        rc = kvstate_match(f, job->ids, job->n_ids, &err);
        if (rc == 0) rc = kvstate_restore(f, 0, &state, &err);
        if (rc == 0) {
            *done = kvstate_tokens(f);
            restore_points(e, f, *done);
        }
        kvstate_close(f);
    }
    if (rc != 0) {
        tomed_log(TOMED_LOG_WARN, "job %lld: restart point %s not used: %s", (long long)job->id,
                  path, err.msg);
        unlink(path);
        return NULL;
    }
    tomed_log(TOMED_LOG_INFO, "job %lld resumes from its restart point at token %lld",
              (long long)job->id, (long long)*done);
    return state;
}

/* The longest prefix of the job's ids held by a saved state of an earlier
 * version (or one of its restart points): after an ingest that appended
 * documents, only the new tail is prefilled. */
static v4_state *start_from_saved_prefix(tomed_engine *e, tomed_job *job, int64_t *done)
{
    int64_t best_tokens = 0;
    int best = -1;
    size_t best_point = 0;
    for (int i = 0; i < job->n_prefixes; i++) {
        kvstate_file *f;
        tome_error err = {0};
        size_t point;
        if (kvstate_open(job->prefixes[i], e->model, &f, &err) != 0) continue;
        if (kvstate_longest(f, job->ids, job->n_ids, &point, &err) == 0 &&
            kvstate_point_tokens(f, point) > best_tokens) {
            best_tokens = kvstate_point_tokens(f, point);
            best = i;
            best_point = point;
        }
        kvstate_close(f);
    }
    if (best < 0) return NULL;
    kvstate_file *f;
    v4_state *state = NULL;
    tome_error err = {0};
    int rc = kvstate_open(job->prefixes[best], e->model, &f, &err);
    if (rc == 0) {
        rc = kvstate_restore(f, best_point, &state, &err);
        if (rc == 0) restore_points(e, f, best_tokens);
        kvstate_close(f);
    }
    if (rc != 0) {
        tomed_log(TOMED_LOG_WARN, "job %lld: saved prefix %s not used: %s", (long long)job->id,
                  job->prefixes[best], err.msg);
        return NULL;
    }
    *done = best_tokens;
    tomed_log(TOMED_LOG_INFO, "job %lld starts from a saved state at token %lld of %zu",
              (long long)job->id, (long long)best_tokens, job->n_ids);
    return state;
}

/* cache_budget: least recently used states evicted, never the one just
 * saved.  A failure costs disk space, not the state, so it is logged. */
static void enforce_cache_budget(tomed_engine *e, store *db, int64_t saved)
{
    int64_t budget = tomed_config_cache_budget(&e->server->cfg);
    size_t evicted = 0;
    tome_error err = {0};
    if (budget <= 0) return;
    if (store_kv_cache_evict(db, budget, saved, &evicted, &err) != 0)
        tomed_log(TOMED_LOG_WARN, "cache budget: %s", err.msg);
    if (evicted)
        tomed_log(TOMED_LOG_INFO, "cache budget of %lld bytes: %zu saved states evicted",
                  (long long)budget, evicted);
}

/* A finished prefill, saved and recorded in the store; `id` gets the
 * store's id of it.  Failing here costs a prefill after a restart, not the
 * answer, so it is logged, not fatal. */
static int save_final_state(tomed_engine *e, tomed_job *job, char id[48])
{
    char path[TOMED_PATH_MAX + 64];
    tome_error err = {0};
    kv_path(e, "state", job->id, path, sizeof path);
    struct stat st;
    store *db;
    int64_t row;
    int rc = kvstate_save(path, e->job_state, (const v4_state *const *)e->points, e->n_points,
                           job->ids, job->n_ids, &err);
    if (rc == 0 && stat(path, &st) != 0) rc = tome_errorf(&err, TOME_EIO, "%s vanished", path);
    if (rc == 0) rc = tomed_thread_store(e->server->cfg.state_dir, &db, &err);
    if (rc == 0) {
        store_kv_state rec = {.version_id = job->version_id,
                              .token_count = (int64_t)job->n_ids,
                              .path = path,
                              .bytes = (int64_t)st.st_size,
                              .status = STORE_STATE_READY};
        snprintf(rec.model_fingerprint, sizeof rec.model_fingerprint, "%s", e->model_fingerprint);
        rc = store_state_add(db, &rec, &row, &err);
    }
    if (rc == 0) enforce_cache_budget(e, db, row);
    if (rc != 0) {
        tomed_log(TOMED_LOG_WARN, "job %lld: the state stays in memory only: %s",
                  (long long)job->id, err.msg);
        unlink(path);
        return rc;
    }
    snprintf(id, 48, "%lld", (long long)row);
    return 0;
}

/* ------------------------------------------------------------------------
 * Questions
 * ------------------------------------------------------------------------ */

typedef struct text_report {
    tomed_ask *ask;
    size_t len;
    char text[];
} text_report;

static void deliver_text(void *arg)
{
    text_report *t = arg;
    tomed_ask_text(t->ask, t->text, t->len);
    free(t);
}

static int append_answer(active_ask *a, const char *text, size_t len)
{
    tomed_ask *ask = a->ask;
    if (ask->answer_len + len + 1 > a->answer_cap) {
        size_t cap = (a->answer_cap ? a->answer_cap * 2 : 4096) + len;
        char *grown = realloc(ask->answer, cap);
        if (!grown) return TOME_ENOMEM;
        ask->answer = grown;
        a->answer_cap = cap;
    }
    memcpy(ask->answer + ask->answer_len, text, len);
    ask->answer_len += len;
    ask->answer[ask->answer_len] = '\0';
    return 0;
}

static void emit(tomed_engine *e, active_ask *a, size_t len)
{
    if (len == 0) return;
    append_answer(a, a->held, len);
    if (a->ask->stream) {
        text_report *t = malloc(sizeof *t + len);
        if (t) {
            t->ask = a->ask;
            t->len = len;
            memcpy(t->text, a->held, len);
            tomed_post(e->server->pool, deliver_text, t);
        }
    }
    memmove(a->held, a->held + len, a->held_len - len);
    a->held_len -= len;
}

/* Length of the longest tail of `s` that is a proper prefix of `stop`. */
static size_t partial_stop(const char *s, size_t n, const char *stop)
{
    size_t m = strlen(stop);
    for (size_t k = m - 1 < n ? m - 1 : n; k > 0; k--)
        if (memcmp(s + n - k, stop, k) == 0) return k;
    return 0;
}

/* New text: finish at a stop string, else send what cannot begin one. */
static int take_text(tomed_engine *e, active_ask *a, const char *text, size_t len)
{
    char *grown = realloc(a->held, a->held_len + len + 1);
    if (!grown) return TOME_ENOMEM;
    a->held = grown;
    memcpy(a->held + a->held_len, text, len);
    a->held_len += len;
    tomed_ask *ask = a->ask;
    size_t keep = 0;
    for (int i = 0; i < ask->n_stop; i++) {
        char *hit = memmem(a->held, a->held_len, ask->stop[i], strlen(ask->stop[i]));
        if (hit) {
            a->held_len = (size_t)(hit - a->held);
            emit(e, a, a->held_len);
            ask->finish_reason = "stop_string";
            return 1;
        }
        size_t k = partial_stop(a->held, a->held_len, ask->stop[i]);
        if (k > keep) keep = k;
    }
    emit(e, a, a->held_len - keep);
    return 0;
}

/* The answer is over (end of sequence or max_tokens): a character the
 * last token left unfinished becomes U+FFFD, so the answer stays valid
 * UTF-8 and keeps its end; then whatever was held for stop strings. */
static void flush_answer(tomed_engine *e, active_ask *a)
{
    const char *text;
    size_t len;
    if (a->detok && !(a->ask->finish_reason && strcmp(a->ask->finish_reason, "stop_string") == 0)) {
        v4_detok_flush(a->detok, &text, &len);
        if (len) take_text(e, a, text, len);
    }
    emit(e, a, a->held_len);
}

static void finish_ask(tomed_engine *e, int index, int rc, const tome_error *err)
{
    active_ask *a = &e->active[index];
    tomed_ask *ask = a->ask;
    if (rc == 0) flush_answer(e, a);
    ask->rc = rc;
    if (rc != 0 && err) ask->err = *err;
    ask->t_end = tome_now();
    double decode_s = ask->t_end - ask->t_first_token;
    if (ask->completion_tokens > 1 && decode_s > 0)
        ask->decode_tokens_per_s = (double)(ask->completion_tokens - 1) / decode_s;
    if (ask->decode_tokens_per_s > 0)
        atomic_store(&tomed_stats.decode_tokens_per_s, ask->decode_tokens_per_s);
    if (a->state) v4_state_free(a->state);
    if (a->detok) v4_detok_free(a->detok);
    free(a->held);
    e->active[index] = e->active[--e->n_active];
    tomed_post(e->server->pool, tomed_ask_finished, ask);
}

/* The state a question starts from: a fork of its corpus's, or a fresh
 * one for the bare model. */
static int start_state(tomed_engine *e, active_ask *a, tome_error *err)
{
    tomed_ask *ask = a->ask;
    if (ask->bare) return v4_state_new(e->model, &a->state, err);
    if (ask->saved_path[0] &&
        !tomed_engine_has_state(e, ask->corpus, ask->version_id, NULL, NULL)) {
        v4_state *saved;
        int rc = restore_file(e, ask->saved_path, &saved, err);
        if (rc != 0) return tome_error_wrap(err, "restoring cached state %s", ask->saved_id);
        cache_put(e, ask->corpus, ask->version_id, saved, ask->saved_id);
    }
    pthread_mutex_lock(&e->lock);
    cached_state *c = find_cached(e, ask->corpus, ask->version_id);
    int rc = c ? v4_state_fork(c->state, &a->state, err)
               : tome_errorf(err, TOME_EMISMATCH,
                             "corpus '%s' has no prefilled state of its current version; "
                             "start a prefill first",
                             ask->corpus);
    if (c) {
        ask->corpus_tokens = c->tokens;
        state_id(c, ask->state_id, sizeof ask->state_id);
    }
    pthread_mutex_unlock(&e->lock);
    if (rc != 0) {
        atomic_fetch_add(&tomed_stats.cache_misses, 1);
        return rc;
    }
    atomic_fetch_add(&tomed_stats.cache_hits, 1);
    return 0;
}

/* The first step of a question: its state, then feed the turn. */
static int start_ask(tomed_engine *e, active_ask *a, tome_error *err)
{
    tomed_ask *ask = a->ask;
    int rc = start_state(e, a, err);
    if (rc != 0) return rc;
    for (int i = 0; i < ask->n_logit_bias; i++)
        if (ask->logit_bias[i].id >= e->sample_vocab)
            return tome_errorf(err, TOME_EINVAL,
                               "logit_bias names token id %d; the vocabulary has ids 0 to %d",
                               (int)ask->logit_bias[i].id, e->sample_vocab - 1);
    int32_t *ids;
    size_t n;
    rc = question_ids(e, ask, &ids, &n, err);
    if (rc != 0) return rc;
    ask->prompt_tokens = ask->corpus_tokens + (int64_t)n;
    ask->context_tokens = e->context;
    if (ask->prompt_tokens + ask->max_tokens > e->context) {
        free(ids);
        return tome_errorf(err, TOME_ELIMIT,
                           "the corpus (%lld tokens) and the question (%zu tokens) plus "
                           "max_tokens %d do not fit the model's context of %lld tokens",
                           (long long)ask->corpus_tokens, n, ask->max_tokens,
                           (long long)e->context);
    }
    double t0 = tome_now();
    v4_eval ev = {.last_logits = e->logits};
    rc = v4_eval_tokens(a->state, ids, n, &ev, err);
    free(ids);
    if (rc != 0) return rc;
    ask->t_question_fed = tome_now();
    if (ask->t_question_fed > t0)
        ask->question_tokens_per_s = (double)n / (ask->t_question_fed - t0);
    atomic_fetch_add(&tomed_stats.prefill_tokens, n);
    a->rng = ask->seed;
    a->next_id = next_token(e, a);
    return v4_detok_new(e->tokenizer, V4_DETOK_VALID_UTF8, &a->detok, err);
}

/* One token: account for the sampled id, then feed it for the next one.
 * Returns 1 when the question is finished. */
static int step_ask(tomed_engine *e, active_ask *a, tome_error *err)
{
    tomed_ask *ask = a->ask;
    if (!a->state) {
        int rc = start_ask(e, a, err);
        return rc != 0 ? rc : 0;
    }
    int32_t id = a->next_id;
    if (ask->completion_tokens == 0) ask->t_first_token = tome_now();
    ask->completion_tokens++;
    atomic_fetch_add(&tomed_stats.decode_tokens, 1);
    if (id == e->eos_id) {
        ask->finish_reason = "stop";
        return 1;
    }
    const char *text;
    size_t len;
    int rc = v4_detok_feed(a->detok, id, &text, &len, err);
    if (rc != 0) return rc;
    if (take_text(e, a, text, len)) return 1;
    if (ask->completion_tokens >= ask->max_tokens) {
        ask->finish_reason = "length";
        return 1;
    }
    v4_eval ev = {.last_logits = e->logits};
    rc = v4_eval_tokens(a->state, &id, 1, &ev, err);
    if (rc != 0) return rc;
    a->next_id = next_token(e, a);
    return 0;
}

static void run_asks(tomed_engine *e)
{
    for (int i = 0; i < e->n_active;) {
        active_ask *a = &e->active[i];
        tome_error err = {0};
        int rc;
        if (atomic_load(&a->ask->cancel))
            rc = tome_errorf(&err, TOME_ECANCELED, "question cancelled");
        else
            rc = step_ask(e, a, &err);
        if (rc != 0 || a->ask->finish_reason) {
            if (rc == 1) rc = 0;
            finish_ask(e, i, rc, &err);
        } else {
            i++;
        }
    }
}

/* ------------------------------------------------------------------------
 * Prefill jobs
 * ------------------------------------------------------------------------ */

static void report_job(tomed_engine *e, tomed_job *job, int final)
{
    tomed_post(e->server->pool, final ? tomed_job_finished : tomed_job_progress, job);
}

static void finish_job(tomed_engine *e, int rc, const tome_error *err)
{
    tomed_job *job = e->job;
    job->rc = rc;
    if (rc != 0 && err) job->err = *err;
    char id[48];
    if (rc == 0) {
        int saved = save_final_state(e, job, id) == 0;
        cache_put(e, job->corpus, job->version_id, e->job_state, saved ? id : NULL);
        e->job_state = NULL;
    } else if (e->job_state) {
        v4_state_free(e->job_state);
        e->job_state = NULL;
    }
    /* A shutdown keeps the restart point for the next daemon; an end does
     * not need it any more. */
    if (!(rc == TOME_ECANCELED && atomic_load(&job->cancel) == 2)) {
        char path[TOMED_PATH_MAX + 64];
        kv_path(e, "job", job->id, path, sizeof path);
        unlink(path);
    }
    drop_points(e);
    e->job = NULL;
    report_job(e, job, 1);
}

static int progress_hook(void *ctx, int64_t done, int64_t total)
{
    tomed_job *job = ctx;
    return atomic_load(&job->cancel) != 0;
}

/* One chunk of the current prefill. */
static void run_prefill_chunk(tomed_engine *e)
{
    tomed_job *job = e->job;
    tome_error err = {0};
    if (atomic_load(&job->cancel)) {
        int interrupted = atomic_load(&job->cancel) == 2;
        tome_errorf(&err, TOME_ECANCELED, "%s at token %lld",
                    interrupted ? "interrupted by shutdown" : "cancelled",
                    (long long)atomic_load(&job->tokens_done));
        finish_job(e, TOME_ECANCELED, &err);
        return;
    }
    if (!e->job_state) {
        int64_t from = 0;
        e->job_state = resume_from_restart_point(e, job, &from);
        if (!e->job_state) e->job_state = start_from_saved_prefix(e, job, &from);
        int rc = e->job_state ? 0 : v4_state_new(e->model, &e->job_state, &err);
        if (rc != 0) {
            finish_job(e, rc, &err);
            return;
        }
        e->job_started = e->job_last_report = tome_now();
        e->job_done_at_start = from;
        atomic_store(&job->tokens_done, from);
        atomic_store(&job->restart_point, from);
    }
    int chunk = tomed_config_prefill_chunk(&e->server->cfg); /* one read: SIGHUP may change it */
    if (chunk <= 0) chunk = DEFAULT_PREFILL_CHUNK;
    int64_t done = atomic_load(&job->tokens_done);
    size_t n = (size_t)((int64_t)job->n_ids - done < chunk ? (int64_t)job->n_ids - done : chunk);
    /* The job's prompt is one evaluation fed a chunk per call, so that the
     * result does not depend on the chunk size (see v4_eval.part_first). */
    v4_eval ev = {.chunk = chunk,
                  .progress = progress_hook,
                  .progress_ctx = job,
                  .part_first = done,
                  .part_total = (int64_t)job->n_ids};
    int rc = v4_eval_tokens(e->job_state, job->ids + done, n, &ev, &err);
    if (rc != 0) {
        finish_job(e, rc, &err);
        return;
    }
    done += (int64_t)n;
    atomic_store(&job->tokens_done, done);
    atomic_fetch_add(&tomed_stats.prefill_tokens, n);
    double now = tome_now();
    double rate = (double)(done - e->job_done_at_start) / (now - e->job_started + 1e-9);
    atomic_store(&job->tokens_per_s, rate);
    atomic_store(&tomed_stats.prefill_tokens_per_s, rate);
    int64_t interval = tomed_config_restart_interval(&e->server->cfg);
    if (interval > 0 && done < (int64_t)job->n_ids &&
        done / interval > atomic_load(&job->restart_point) / interval)
        save_restart_point(e, job, done);
    if (done == (int64_t)job->n_ids) {
        finish_job(e, 0, NULL);
    } else if (now - e->job_last_report >= PROGRESS_INTERVAL_S) {
        e->job_last_report = now;
        report_job(e, job, 0);
    }
}

/* ------------------------------------------------------------------------
 * The thread
 * ------------------------------------------------------------------------ */

static int has_work(tomed_engine *e)
{
    return e->n_active > 0 || e->job || e->jobs_head ||
           (e->asks_head && e->n_active < e->server->cfg.max_active_asks);
}

/* Under the lock: move waiting questions in and pick the next job. */
static void take_work(tomed_engine *e)
{
    while (e->asks_head && e->n_active < e->server->cfg.max_active_asks) {
        ask_node *node = e->asks_head;
        e->asks_head = node->next;
        if (!e->asks_head) e->asks_tail = NULL;
        e->asks_waiting--;
        atomic_fetch_sub(&tomed_stats.queue_depth, 1);
        active_ask *a = &e->active[e->n_active++];
        memset(a, 0, sizeof *a);
        a->ask = node->ask;
        a->ask->t_queued = tome_now();
        free(node);
    }
    if (!e->job && e->jobs_head) {
        e->job = e->jobs_head;
        e->jobs_head = e->job->next;
        if (!e->jobs_head) e->jobs_tail = NULL;
        e->job->next = NULL;
    }
}

static void cancel_everything(tomed_engine *e)
{
    tome_error err;
    tome_errorf(&err, TOME_ECANCELED, "tomed is shutting down");
    while (e->n_active) finish_ask(e, 0, TOME_ECANCELED, &err);
    if (e->job) {
        atomic_store(&e->job->cancel, 2);
        finish_job(e, TOME_ECANCELED, &err);
    }
    for (tomed_job *j = e->jobs_head; j;) {
        tomed_job *next = j->next;
        atomic_store(&j->cancel, 2);
        j->rc = TOME_ECANCELED;
        j->err = err;
        report_job(e, j, 1);
        j = next;
    }
    e->jobs_head = e->jobs_tail = NULL;
    while (e->asks_head) {
        ask_node *node = e->asks_head;
        e->asks_head = node->next;
        node->ask->rc = TOME_ECANCELED;
        node->ask->err = err;
        tomed_post(e->server->pool, tomed_ask_finished, node->ask);
        atomic_fetch_sub(&tomed_stats.queue_depth, 1);
        free(node);
    }
}

static void *engine_main(void *arg)
{
    tomed_engine *e = arg;
    tome_error err = {0};
    if (load_model(e, &err) != 0) {
        snprintf(e->why, sizeof e->why, "%s", err.msg);
        tomed_log(TOMED_LOG_ERROR, "model: %s", err.msg);
    } else {
        atomic_store(&e->ready, 1);
        tomed_post(e->server->pool, tomed_jobs_model_loaded, e->server);
        tomed_log(TOMED_LOG_INFO, "model %s loaded (context %lld tokens)", e->model_dir,
                  (long long)e->context);
    }
    pthread_mutex_lock(&e->lock);
    for (;;) {
        while (!e->stopping && !has_work(e)) pthread_cond_wait(&e->wake, &e->lock);
        if (e->stopping) break;
        take_work(e);
        pthread_mutex_unlock(&e->lock);
        run_asks(e);
        if (e->job) run_prefill_chunk(e);
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    cancel_everything(e);
    return NULL;
}

int tomed_engine_start(tomed_server *s, const char *model, tomed_engine **out, tome_error *err)
{
    tomed_engine *e = calloc(1, sizeof *e);
    if (!e) return tome_errorf(err, TOME_ENOMEM, "engine");
    e->server = s;
    resolve_model_dir(e, model);
    snprintf(e->why, sizeof e->why, "loading model %s", e->model_dir);
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        free(e);
        return tome_errorf(err, TOME_EINTERNAL, "cannot start the engine thread");
    }
    *out = e;
    return 0;
}

void tomed_engine_stop(tomed_engine *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    if (e->job) atomic_store(&e->job->cancel, 2);
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
    for (int i = 0; i < e->n_cache; i++) v4_state_free(e->cache[i].state);
    free(e->points);
    v4_tokenizer_free(e->tokenizer);
    v4_model_free(e->model);
    free(e->logits);
    free(e->answer_ids);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->wake);
    free(e);
}

int tomed_engine_ready(tomed_engine *e, const char **why)
{
    int ready = atomic_load(&e->ready);
    if (!ready && why) *why = e->why;
    return ready;
}

const struct v4_model *tomed_engine_model(tomed_engine *e, const char **fingerprint)
{
    if (!atomic_load(&e->ready)) return NULL;
    *fingerprint = e->model_fingerprint;
    return e->model;
}

const struct v4_tokenizer *tomed_engine_tokenizer(tomed_engine *e, const char **fingerprint)
{
    if (!atomic_load(&e->ready)) return NULL;
    *fingerprint = e->tokenizer_fingerprint;
    return e->tokenizer;
}

int tomed_engine_submit_prefill(tomed_engine *e, tomed_job *job, tome_error *err)
{
    pthread_mutex_lock(&e->lock);
    int stopping = e->stopping;
    if (!stopping) {
        job->next = NULL;
        if (e->jobs_tail)
            e->jobs_tail->next = job;
        else
            e->jobs_head = job;
        e->jobs_tail = job;
        pthread_cond_signal(&e->wake);
    }
    pthread_mutex_unlock(&e->lock);
    return stopping ? tome_errorf(err, TOME_EBUSY, "tomed is shutting down") : 0;
}

int tomed_engine_submit_ask(tomed_engine *e, tomed_ask *ask, tome_error *err)
{
    ask_node *node = malloc(sizeof *node);
    if (!node) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    node->ask = ask;
    node->next = NULL;
    pthread_mutex_lock(&e->lock);
    int rc = 0;
    if (e->stopping)
        rc = tome_errorf(err, TOME_EBUSY, "tomed is shutting down");
    else if (e->asks_waiting >= e->server->cfg.ask_queue_limit)
        rc = tome_errorf(err, TOME_EBUSY, "%d questions are waiting already (ask_queue_limit)",
                         e->asks_waiting);
    if (rc == 0) {
        if (e->asks_tail)
            e->asks_tail->next = node;
        else
            e->asks_head = node;
        e->asks_tail = node;
        e->asks_waiting++;
        atomic_fetch_add(&tomed_stats.queue_depth, 1);
        pthread_cond_signal(&e->wake);
    }
    pthread_mutex_unlock(&e->lock);
    if (rc != 0) free(node);
    return rc;
}
