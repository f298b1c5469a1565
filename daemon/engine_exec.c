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
 * Prefilled states live in memory, one per corpus version (engine_cache.c),
 * and on disk in KV state files (engine_persist.c), so that questions after
 * a restart restore them (mapped, not copied) instead of prefilling again.
 *
 * This file is the thread itself: loading the model, the queues of jobs
 * and questions, the loop, and the interface the rest of tomed calls.
 * engine_internal.h lists the other files of the executor.
 */
#include "daemon/engine_internal.h"
#include "plan/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* The test hook: TOMED_TEST_ANSWER_IDS names a file holding a JSON array of
 * token ids (as `tome-tokenize` writes them), and every answer is then
 * those ids and the end of sequence, whatever the model computes, so that
 * a test can check the citations of a known answer end to end with a model
 * whose own text is noise. */
static int load_answer_ids(engine_local *e, tome_error *err)
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
    json_array_foreach(ids, i, id) {
        e->answer_ids[e->n_answer_ids++] = (int32_t)json_integer_value(id);
    }
    json_decref(ids);
    tomed_log(TOMED_LOG_WARN, "test hook: every answer is the %zu ids of %s", e->n_answer_ids,
              path);
    return 0;
}

/* The other test hooks: TOMED_TEST_TOKEN_DELAY_MS before every answer
 * token, TOMED_TEST_CHUNK_DELAY_MS after every prefill chunk, so that a
 * test can act while an answer streams or a prefill runs, however fast the
 * engine is. */
static int load_delay(const char *name, const char *what)
{
    const char *ms = getenv(name);
    if (!ms || !*ms) return 0;
    int v = atoi(ms);
    tomed_log(TOMED_LOG_WARN, "test hook: %d ms %s", v, what);
    return v;
}

void engine_pause_ms(int ms)
{
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

static void log_plan_line(void *ctx, const char *line)
{
    tomed_log(TOMED_LOG_INFO, "plan: %s", line);
}

/* The fit check of `tome-model plan` for one question at the context
 * budget (max_context, else the model's whole context), logged; a budget
 * whose KV state cannot fit on the state directory's disk is refused. */
static int check_fit(engine_local *e, const v4_config *cfg, const v4_open_options *opts,
                     tome_error *err)
{
    int64_t budget = e->server->cfg.max_context;
    if (budget > cfg->max_position)
        return tome_errorf(err, TOME_EINVAL,
                           "max_context %lld is more than the model's max_position_embeddings "
                           "(%lld)",
                           (long long)budget, (long long)cfg->max_position);
    e->context = budget ? budget : cfg->max_position;
    tome_machine m = {0};
    tome_plan p;
    int rc = tome_machine_probe(e->server->cfg.state_dir, &m, err);
    if (rc == 0) rc = tome_plan_make(cfg, opts, e->context, 1, &m, &p, err);
    if (rc) return rc;
    tome_plan_report(&p, &m, log_plan_line, NULL);
    if (p.kv_at_context > m.free_disk)
        return tome_errorf(err, TOME_ELIMIT,
                           "max_context %lld: the KV state of one question at that context is "
                           "%.2f GiB, more than the %.2f GiB free on the disk of state_dir %s "
                           "(lower max_context in tomed.conf or free space)",
                           (long long)e->context, p.kv_at_context / (1024.0 * 1024 * 1024),
                           m.free_disk / (1024.0 * 1024 * 1024), e->server->cfg.state_dir);
    return 0;
}

static int load_model(engine_local *e, tome_error *err)
{
    struct stat st;
    if (stat(e->model_dir, &st) != 0)
        return tome_errorf(err, TOME_ENOTFOUND,
                           "model %s does not exist (make the built-in model with "
                           "`tome-mkmodel --preset tiny -o %s`)",
                           e->model_dir, e->model_dir);
    const tomed_config *conf = &e->server->cfg;
    v4_open_options opts = {.kernels = (v4_kernels)conf->kernels,
                            .weights = (v4_weights)conf->weights,
                            .numerics = (v4_numerics)conf->numerics,
                            .mtp_gguf = conf->mtp_model[0] ? conf->mtp_model : NULL};
    int rc = v4_model_open(e->model_dir, &opts, &e->model, err);
    if (rc != 0) return rc;
    size_t copied = v4_model_copied_bytes(e->model);
    tomed_log(TOMED_LOG_INFO, "%s kernels (%s), %s numerics, weights %s (%.1f MB copied)",
              v4_kernels_name(opts.kernels), v4_kernels_isa(), v4_numerics_name(opts.numerics),
              copied ? "copied into memory" : "read in place", 1e-6 * (double)copied);
    char name[TOMED_PATH_MAX + 32], *text;
    size_t len;
    rc = v4_model_tokenizer(e->model_dir, &text, &len, name, sizeof name, err);
    if (rc == 0) rc = v4_tokenizer_from_json(name, text, len, &e->tokenizer, err);
    if (rc != 0) {
        free(text);
        return rc;
    }
    uint8_t digest[32];
    tome_sha256(text, len, digest);
    free(text);
    tome_hex(digest, sizeof digest, e->tokenizer_fingerprint);
    v4_model_fingerprint(e->model, digest);
    tome_hex(digest, sizeof digest, e->model_fingerprint);
    const v4_config *cfg = v4_model_config(e->model);
    e->eos_id = cfg->eos_id;
    if ((rc = load_answer_ids(e, err)) != 0) return rc;
    e->token_delay_ms = load_delay("TOMED_TEST_TOKEN_DELAY_MS", "before each answer token");
    e->chunk_delay_ms = load_delay("TOMED_TEST_CHUNK_DELAY_MS", "after each prefill chunk");
    /* The model's embedding may be wider than the tokenizer's vocabulary
     * (padding rows); an id the tokenizer cannot decode is never sampled. */
    e->vocab = cfg->vocab_size;
    e->sample_vocab = v4_tokenizer_n_ids(e->tokenizer) < cfg->vocab_size
                          ? v4_tokenizer_n_ids(e->tokenizer)
                          : cfg->vocab_size;
    if ((rc = check_fit(e, cfg, &opts, err)) != 0) return rc;
    e->logits = malloc((size_t)e->vocab * sizeof *e->logits);
    if (!e->logits) return tome_errorf(err, TOME_ENOMEM, "logits");
    return tomed_sampler_new(e->sample_vocab, &e->sampler, err);
}

static int has_work(engine_local *e)
{
    return e->n_active > 0 || e->job || e->jobs_head ||
           (e->asks_head && e->n_active < e->server->cfg.max_active_asks);
}

/* Under the lock: move waiting questions in and pick the next job. */
static void take_work(engine_local *e)
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

static void cancel_everything(engine_local *e)
{
    tome_error err;
    tome_errorf(&err, TOME_ECANCELED, "tomed is shutting down");
    while (e->n_active) engine_finish_ask(e, 0, TOME_ECANCELED, &err);
    if (e->job) {
        atomic_store(&e->job->cancel, 2);
        engine_finish_job(e, TOME_ECANCELED, &err);
    }
    for (tomed_job *j = e->jobs_head; j;) {
        tomed_job *next = j->next;
        atomic_store(&j->cancel, 2);
        j->rc = TOME_ECANCELED;
        j->err = err;
        engine_report_job(e, j, 1);
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
    engine_local *e = arg;
    tome_error err = {0};
    if (load_model(e, &err) != 0) {
        snprintf(e->why, sizeof e->why, "%s", err.msg);
        tomed_log(TOMED_LOG_ERROR, "model: %s", err.msg);
    } else {
        atomic_store(&e->ready, 1);
        tomed_log(TOMED_LOG_INFO, "model %s loaded (context %lld tokens)", e->model_dir,
                  (long long)e->context);
    }
    tomed_post(e->server->pool, tomed_jobs_model_settled, e->server);
    pthread_mutex_lock(&e->lock);
    for (;;) {
        while (!e->stopping && !has_work(e)) pthread_cond_wait(&e->wake, &e->lock);
        if (e->stopping) break;
        take_work(e);
        pthread_mutex_unlock(&e->lock);
        engine_run_asks(e);
        if (e->job) engine_run_prefill_chunk(e);
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    cancel_everything(e);
    return NULL;
}

static const tomed_engine_ops local_ops;

int tomed_engine_start_local(tomed_server *s, tomed_engine **out, tome_error *err)
{
    engine_local *e = calloc(1, sizeof *e);
    if (!e) return tome_errorf(err, TOME_ENOMEM, "engine");
    e->base.ops = &local_ops;
    e->server = s;
    tomed_config_model_dir(&s->cfg, e->model_dir, sizeof e->model_dir);
    snprintf(e->why, sizeof e->why, "loading model %s", e->model_dir);
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        free(e);
        return tome_errorf(err, TOME_EINTERNAL, "cannot start the engine thread");
    }
    *out = &e->base;
    return 0;
}

static void local_stop(tomed_engine *base)
{
    engine_local *e = (engine_local *)base;
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    if (e->job) atomic_store(&e->job->cancel, 2);
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
    for (int i = 0; i < e->n_cache; i++) {
        v4_state_free(e->cache[i].state);
        free(e->cache[i].ids);
    }
    free(e->points);
    v4_tokenizer_free(e->tokenizer);
    v4_model_free(e->model);
    free(e->logits);
    tomed_sampler_free(e->sampler);
    free(e->answer_ids);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->wake);
    free(e);
}

static int local_ready(tomed_engine *base, const char **why)
{
    engine_local *e = (engine_local *)base;
    int ready = atomic_load(&e->ready);
    if (!ready && why) *why = e->why;
    return ready;
}

static const struct v4_model *local_model(tomed_engine *base, const char **fingerprint)
{
    engine_local *e = (engine_local *)base;
    if (!atomic_load(&e->ready)) return NULL;
    *fingerprint = e->model_fingerprint;
    return e->model;
}

static const struct v4_tokenizer *local_tokenizer(tomed_engine *base, const char **fingerprint)
{
    engine_local *e = (engine_local *)base;
    if (!atomic_load(&e->ready)) return NULL;
    *fingerprint = e->tokenizer_fingerprint;
    return e->tokenizer;
}

static const char *local_state_fingerprint(tomed_engine *base)
{
    engine_local *e = (engine_local *)base;
    return atomic_load(&e->ready) ? e->model_fingerprint : NULL;
}

static json_t *local_status(tomed_engine *base)
{
    return json_pack("{s:s, s:b}", "kind", "local", "healthy", local_ready(base, NULL));
}

static int local_submit_prefill(tomed_engine *base, tomed_job *job, tome_error *err)
{
    engine_local *e = (engine_local *)base;
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

static int local_submit_ask(tomed_engine *base, tomed_ask *ask, tome_error *err)
{
    engine_local *e = (engine_local *)base;
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

static const tomed_engine_ops local_ops = {
    .kind = "local",
    .stop = local_stop,
    .ready = local_ready,
    .model = local_model,
    .tokenizer = local_tokenizer,
    .state_fingerprint = local_state_fingerprint,
    .submit_prefill = local_submit_prefill,
    .submit_ask = local_submit_ask,
    .has_state = engine_local_has_state,
    .forget = engine_local_forget,
    .drop_state = engine_local_drop_state,
    .states = engine_local_states,
    .status = local_status,
};
