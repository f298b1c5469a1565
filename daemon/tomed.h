/*
 * tomed.h - the daemon's internal interfaces, shared by the files of daemon/.
 *
 * tomed is one process with one libevent loop thread that does all network
 * I/O, a small pool of worker threads for blocking work (file and SQLite I/O,
 * archive reading), and one engine executor thread per model for compute.
 * Everything that touches a connection runs on the loop thread; other threads
 * hand results back with tomed_post(), which queues a callback for the loop.
 *
 * The pieces and their files:
 *   log.c        levelled logging to stderr or syslog
 *   config.c     tomed.conf, command-line overrides, defaults, validation
 *   statedir.c   the state directory: private modes, checked, laid out
 *   http.c       HTTP/1.1 connections: parsing, bodies (buffered or streamed
 *                to a file), responses, chunked streams, timeouts
 *   listen.c     the Unix socket and TLS listeners, peer credentials, limits
 *   tls.c        the OpenSSL context (protocol floor, ciphers, client CA)
 *   auth.c       principals and rights: peer uids, tokens, certificates
 *   tokens.c     bearer tokens, stored hashed in STATE_DIR/tokens.json
 *   workers.c    the worker pool and the hand-off back to the loop
 *   storecall.c  store work on a worker, answered on the loop
 *   metrics.c    counters and the Prometheus exposition
 *   router.c     the route table and request dispatch
 *   routes_*.c   the endpoints of tome-protocol(7)
 *   ask_extras.c an answer's citations and sources (on a worker)
 *   routes_openai.c the OpenAI-compatible endpoints under /openai/v1/
 *   jobs.c       prefill jobs: registry, store rows, followers, resuming
 *   engine_exec.c the engine executor thread: prefill chunks, questions,
 *                sampling, saved states and restart points
 *   main.c       command line, pidfile, signals, start-up and shutdown
 *
 * Ownership is stated at each type.  Nothing here is a public API: the only
 * contract with the outside world is the protocol in man/tome-protocol.7.
 */
#ifndef TOME_DAEMON_TOMED_H
#define TOME_DAEMON_TOMED_H

#include <jansson.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/common.h"

struct event_base;
struct evbuffer;

/* ------------------------------------------------------------------------
 * log.c
 * ------------------------------------------------------------------------ */

enum { TOMED_LOG_ERROR, TOMED_LOG_WARN, TOMED_LOG_INFO, TOMED_LOG_DEBUG };

int tomed_log_level_parse(const char *name, int *level);
/* Where messages go from now on; safe to call again on reload. */
void tomed_log_setup(int level, int use_syslog);
void tomed_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------------
 * config.c
 * ------------------------------------------------------------------------ */

#define TOMED_PATH_MAX        4096
#define TOMED_MAX_IDS         32
#define TOMED_MAX_CERT_RULES  32
#define TOMED_NAME_MAX        64
#define TOMED_MAX_ACTIVE_ASKS 256

enum { TOMED_RIGHT_READ = 1, TOMED_RIGHT_WRITE = 2 };

/* A corpus (or "*") and the right a holder has on it. */
typedef struct tomed_scope {
    char corpus[TOMED_NAME_MAX + 1];
    int rights;
} tomed_scope;

/* `client_cert = CN CORPUS RIGHTS`: a certificate subject's principal. */
typedef struct tomed_cert_rule {
    char common_name[256];
    tomed_scope scope;
} tomed_cert_rule;

/* The whole configuration, by value (no pointers), so a reload can build a
 * new one beside the old and swap.  Whoever declares it owns it. */
typedef struct tomed_config {
    char config_path[TOMED_PATH_MAX];
    char state_dir[TOMED_PATH_MAX];
    char socket_path[TOMED_PATH_MAX];
    char pidfile[TOMED_PATH_MAX];
    char model[TOMED_PATH_MAX];
    char listen[256]; /* ADDR:PORT, [V6ADDR]:PORT, or empty for no TCP */
    char tls_cert[TOMED_PATH_MAX];
    char tls_key[TOMED_PATH_MAX];
    char tls_client_ca[TOMED_PATH_MAX];
    char tls_ciphers[512];      /* TLS 1.2 cipher list */
    char tls_ciphersuites[512]; /* TLS 1.3 suites */
    unsigned socket_mode;
    int log_level;
    int log_syslog;
    int foreground;
    uid_t admin_uids[TOMED_MAX_IDS];
    int n_admin_uids;
    uid_t allow_uids[TOMED_MAX_IDS];
    int n_allow_uids;
    gid_t allow_gids[TOMED_MAX_IDS];
    int n_allow_gids;
    tomed_cert_rule cert_rules[TOMED_MAX_CERT_RULES];
    int n_cert_rules;
    int64_t max_request_bytes;
    int64_t max_upload_bytes;
    int header_timeout_s;
    int io_timeout_s;
    int idle_timeout_s;
    int keepalive_interval_s;
    int shutdown_grace_s;
    int max_connections;
    int ask_queue_limit;
    int max_active_asks;
    int workers;
    int max_answer_tokens;
    int kernels; /* v4_kernels: fast or exact (at start only) */
    int64_t max_context; /* tokens per question; 0: the model's max_position_embeddings
                            (at start only; refused when its KV state cannot fit the disk) */
    /* The engine thread reads these three while SIGHUP may replace them:
     * access them with __atomic builtins only (the readers below). */
    int prefill_chunk;
    int64_t restart_interval;
    int64_t cache_budget; /* bytes of saved states; 0: no limit */
} tomed_config;

/* The reloadable engine settings, read safely from the engine thread. */
static inline int tomed_config_prefill_chunk(const tomed_config *c)
{
    return __atomic_load_n(&c->prefill_chunk, __ATOMIC_RELAXED);
}
static inline int64_t tomed_config_restart_interval(const tomed_config *c)
{
    return __atomic_load_n(&c->restart_interval, __ATOMIC_RELAXED);
}
static inline int64_t tomed_config_cache_budget(const tomed_config *c)
{
    return __atomic_load_n(&c->cache_budget, __ATOMIC_RELAXED);
}

/* Defaults, then the config file (the --config one, else the default path
 * if it exists), then the command-line flags in argv.  `check_only` is set
 * when --check-config was given. */
int tomed_config_build(int argc, char **argv, tomed_config *cfg, int *check_only, tome_error *err);
/* SIGHUP: copy what may change while running (TLS files and policy, log
 * settings, rights, limits, timeouts, and the engine's prefill_chunk,
 * restart_interval and cache_budget) from `fresh` into the running
 * configuration.  Where the daemon lives, the model, the thread counts and
 * the concurrency settings stay; returns 1 if `fresh` wanted one of those
 * changed. */
int tomed_config_reload_into(tomed_config *live, const tomed_config *fresh);
/* Validate what the file and flags cannot check alone (paths, TLS pairs). */
int tomed_config_check(const tomed_config *cfg, tome_error *err);
int tomed_rights_parse(const char *text, int *rights);
const char *tomed_rights_name(int rights);
int tomed_corpus_name_valid(const char *name);

/* ------------------------------------------------------------------------
 * workers.c
 * ------------------------------------------------------------------------ */

typedef void (*tomed_fn)(void *arg);
typedef struct tomed_pool tomed_pool;

/* Threads that run `work` off the loop, then `done` on the loop thread. */
int tomed_pool_new(struct event_base *base, int n_threads, tomed_pool **out, tome_error *err);
/* Stops taking work, finishes what is queued, joins the threads. */
void tomed_pool_free(tomed_pool *p);
int tomed_pool_submit(tomed_pool *p, tomed_fn work, tomed_fn done, void *arg);
/* Run fn(arg) on the loop thread soon; callable from any thread. */
void tomed_post(tomed_pool *p, tomed_fn fn, void *arg);

/* ------------------------------------------------------------------------
 * metrics.c
 * ------------------------------------------------------------------------ */

typedef struct tomed_metrics {
    atomic_uint_fast64_t requests[2][6]; /* [transport][status / 100] */
    atomic_uint_fast64_t errors[13];     /* by -TOME_E* code */
    atomic_int connections;
    atomic_uint_fast64_t prefill_tokens;
    atomic_uint_fast64_t decode_tokens;
    atomic_uint_fast64_t cache_hits;
    atomic_uint_fast64_t cache_misses;
    _Atomic double prefill_tokens_per_s;
    _Atomic double decode_tokens_per_s;
    atomic_int queue_depth;
} tomed_metrics;

extern tomed_metrics tomed_stats;

/* The Prometheus text exposition into `out`; disk use is measured under
 * `state_dir`, job counts by state come from `jobs_by_state` (5 entries:
 * queued, running, done, failed, canceled). */
void tomed_metrics_render(struct evbuffer *out, const char *state_dir, const int jobs_by_state[5]);

/* ------------------------------------------------------------------------
 * auth.c and tokens.c
 * ------------------------------------------------------------------------ */

typedef enum { TOMED_TRANSPORT_UNIX = 0, TOMED_TRANSPORT_TLS = 1 } tomed_transport;

enum { TOMED_PRINCIPAL_NONE, TOMED_PRINCIPAL_UNIX, TOMED_PRINCIPAL_TOKEN, TOMED_PRINCIPAL_CERT };

#define TOMED_MAX_SCOPES 16

typedef struct tomed_principal {
    int kind;
    char name[160]; /* "uid:1000", "token:ci", "cert:alice"; empty if anonymous */
    int admin;
    int n_scopes;
    tomed_scope scopes[TOMED_MAX_SCOPES];
} tomed_principal;

int tomed_principal_can(const tomed_principal *p, const char *corpus, int rights);

typedef struct tomed_tokens tomed_tokens;

/* Loads STATE_DIR/tokens.json (absent = no tokens).  Owned by the caller. */
int tomed_tokens_open(const char *state_dir, tomed_tokens **out, tome_error *err);
void tomed_tokens_free(tomed_tokens *t);
/* Creates a token; `*secret` (malloc'd, caller frees) is its only copy. */
int tomed_tokens_create(tomed_tokens *t, const char *name, const tomed_scope *scopes, int n_scopes,
                        json_t **token_json, char **secret, tome_error *err);
int tomed_tokens_revoke(tomed_tokens *t, const char *id, tome_error *err);
json_t *tomed_tokens_list(const tomed_tokens *t);
/* Fills `p` if `secret` is a live token; TOME_EPERM if not. */
int tomed_tokens_authenticate(const tomed_tokens *t, const char *secret, tomed_principal *p);

/* What the listener learned about the peer when it connected. */
typedef struct tomed_peer {
    tomed_transport transport;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    int has_cert;
    char cert_cn[256]; /* the verified client certificate's subject CN */
    char address[64];
} tomed_peer;

/* The principal of a request from `peer` with the given Authorization
 * header (or NULL).  TOME_EPERM with a message when credentials were
 * presented and are not valid (a 401). */
int tomed_authenticate(const tomed_config *cfg, const tomed_tokens *tokens, const tomed_peer *peer,
                       const char *authorization, tomed_principal *p, tome_error *err);

/* ------------------------------------------------------------------------
 * tls.c
 * ------------------------------------------------------------------------ */

/* A server context from cfg's certificate, key, client CA and cipher
 * policy.  The caller owns it (SSL_CTX_free). */
int tomed_tls_context_new(const tomed_config *cfg, SSL_CTX **out, tome_error *err);
/* The subject common name of the verified peer certificate, if any. */
int tomed_tls_peer_cn(SSL *ssl, char *cn, size_t cap);

/* ------------------------------------------------------------------------
 * statedir.c
 * ------------------------------------------------------------------------ */

/* Creates cfg->state_dir if missing (0700 under the daemon's umask), fails
 * with TOME_EPERM, naming the path and its mode, when the directory or a
 * store file in it (tome.db, -wal, -shm, tokens.json) may be read or
 * written by other users, locks STATE_DIR/lock (TOME_EBUSY, naming the
 * directory and the holder's pid, when another daemon holds it; nothing is
 * touched then), and only then makes kv/ and tmp/ and removes what a crash
 * left in them.  *lock_fd holds the lock until the process closes it or
 * exits.  Called once at start, before anything else there. */
int tomed_state_dir_prepare(const tomed_config *cfg, int *lock_fd, tome_error *err);

/* ------------------------------------------------------------------------
 * http.c
 * ------------------------------------------------------------------------ */

typedef struct tomed_server tomed_server;
typedef struct tomed_conn tomed_conn;
typedef struct tomed_request tomed_request;

typedef struct tomed_header {
    char *name; /* lower case */
    char *value;
} tomed_header;

/* One HTTP request, owned by its connection.  It lives from its request
 * line until its response is complete, or until the connection dies: then
 * `on_abort` (if set) tells whoever still holds the pointer to drop it. */
struct tomed_request {
    tomed_conn *conn;
    tomed_server *server;
    const tomed_peer *peer;
    char method[16];
    char *path;  /* without the query; percent-escapes as sent (ASCII) */
    char *query; /* raw, or NULL */
    tomed_header *headers;
    int n_headers;
    int64_t content_length; /* -1 when absent */
    int chunked;
    struct evbuffer *body; /* the body, when buffered */
    int body_fd;           /* where the body goes instead, when streamed */
    int64_t body_bytes;
    char body_path[TOMED_PATH_MAX];
    tomed_principal principal;
    const struct tomed_route *route;
    char *params[2]; /* the path segments matched by '*', decoded (UTF-8) */
    double started;
    int responded; /* a response (or stream) has started */
    int streaming;
    int status;
    void (*on_abort)(tomed_request *r, void *arg);
    void *abort_arg;
};

const char *tomed_header_get(const tomed_request *r, const char *name);
/* The decoded value of query parameter `key` (malloc'd), or NULL.  The
 * query was checked when the head was read: every value is UTF-8. */
char *tomed_query_get(const tomed_request *r, const char *key);
/* Percent-decode `n` bytes (with '+' as space when asked): a malloc'd
 * string, or NULL when out of memory or when the result holds a NUL byte
 * or is not valid UTF-8. */
char *tomed_percent_decode(const char *s, size_t n, int plus_is_space);

/* Responses.  Each ends the request except the stream calls before _end. */
void tomed_reply_json(tomed_request *r, int status, json_t *body); /* steals body */
void tomed_reply_text(tomed_request *r, int status, const char *content_type,
                      struct evbuffer *body); /* drains body */
void tomed_reply_empty(tomed_request *r, int status);
/* An error from a TOME_E* code; the status follows tome-protocol(7). */
void tomed_reply_error(tomed_request *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As above, with an explicit status and extra members merged into the
 * error object (`extra` may be NULL; it is stolen). */
void tomed_reply_error_ex(tomed_request *r, int status, int code, json_t *extra, const char *fmt,
                          ...) __attribute__((format(printf, 5, 6)));
void tomed_reply_tome_error(tomed_request *r, const tome_error *err);
int tomed_status_for(int code);

void tomed_stream_begin(tomed_request *r, int status, const char *content_type);
void tomed_stream_write(tomed_request *r, const void *data, size_t len);
/* One Server-Sent Event: `event:` NAME, `data:` the JSON (stolen). */
void tomed_stream_event(tomed_request *r, const char *event, json_t *data);
void tomed_stream_comment(tomed_request *r, const char *text);
/* One unnamed event, `data:` the JSON (stolen), as OpenAI's streams send. */
void tomed_stream_data(tomed_request *r, json_t *data);
void tomed_stream_end(tomed_request *r);

/* Parse the buffered body as a JSON object; replies 400 and returns NULL
 * when it is not one. */
json_t *tomed_request_json(tomed_request *r);

/* Connections: the listener hands over an accepted, configured
 * bufferevent; the server owns it from then on. */
struct bufferevent;
void tomed_conn_start(tomed_server *s, struct bufferevent *bev, const tomed_peer *peer);
/* Close connections that have no request in progress (used when draining). */
void tomed_conns_close_idle(tomed_server *s);
/* Close every connection (at exit); requests in progress are aborted. */
void tomed_conns_close_all(tomed_server *s);
int tomed_conns_busy(const tomed_server *s);

/* ------------------------------------------------------------------------
 * router.c: the route table
 * ------------------------------------------------------------------------ */

enum {
    TOMED_ROUTE_PUBLIC = 1, /* no principal needed (health) */
    TOMED_ROUTE_ADMIN = 2,  /* administrators on the Unix socket only */
    TOMED_ROUTE_UPLOAD = 4, /* an octet-stream body is streamed to a file */
    TOMED_ROUTE_OPENAI = 8, /* errors in OpenAI's shape (routes_openai.c) */
};

typedef void (*tomed_handler)(tomed_request *r);

typedef struct tomed_route {
    const char *method;
    const char *pattern; /* '*' matches one path segment */
    tomed_handler handler;
    int flags;
} tomed_route;

/* Called by http.c once the request line and headers are in: finds the
 * route, authenticates; returns 0 to go on reading the body, or replies and
 * returns -1. */
int tomed_route_request(tomed_request *r);
/* Called by http.c when the body is complete. */
void tomed_dispatch(tomed_request *r);

/* routes_health.c */
void tomed_route_health(tomed_request *r);
void tomed_route_ready(tomed_request *r);
void tomed_route_metrics(tomed_request *r);
/* routes_corpora.c */
void tomed_route_corpus_create(tomed_request *r);
void tomed_route_corpus_list(tomed_request *r);
void tomed_route_corpus_show(tomed_request *r);
void tomed_route_corpus_delete(tomed_request *r);
void tomed_route_ingest(tomed_request *r);
void tomed_route_search(tomed_request *r);
/* routes_document.c */
void tomed_route_document(tomed_request *r);
/* routes_jobs.c */
void tomed_route_prefill(tomed_request *r);
void tomed_route_job_list(tomed_request *r);
void tomed_route_job_show(tomed_request *r);
void tomed_route_job_events(tomed_request *r);
void tomed_route_job_cancel(tomed_request *r);
/* routes_ask.c */
void tomed_route_ask(tomed_request *r);
/* routes_openai.c */
void tomed_route_openai_models(tomed_request *r);
void tomed_route_openai_chat(tomed_request *r);
void tomed_route_openai_completions(tomed_request *r);
/* routes_admin.c */
void tomed_route_cache_list(tomed_request *r);
void tomed_route_cache_verify(tomed_request *r);
void tomed_route_cache_delete(tomed_request *r);
void tomed_route_token_list(tomed_request *r);
void tomed_route_token_create(tomed_request *r);
void tomed_route_token_revoke(tomed_request *r);

/* Checks the principal's right on the corpus named by the first path
 * parameter; replies 400/403 and returns -1 when it may not go on. */
int tomed_require_corpus(tomed_request *r, int rights);

/* ------------------------------------------------------------------------
 * storecall.c: store work on a worker thread, answered on the loop
 * ------------------------------------------------------------------------ */

struct store;
typedef struct tomed_call tomed_call;
typedef int (*tomed_call_fn)(tomed_call *call, struct store *db, tome_error *err);

/* One request's trip to a worker.  Created on the loop thread by a route;
 * `fn` runs on a worker with that thread's store handle and fills `result`
 * (or returns an error); the reply is sent on the loop thread, unless the
 * client has gone, and the call is freed there. */
struct tomed_call {
    tomed_request *r; /* NULL once the client is gone */
    tomed_server *server;
    tomed_call_fn fn;
    int status;     /* the success status (200, 201, 204) */
    json_t *input;  /* the request body, when it had one */
    json_t *result; /* what fn answers */
    char corpus[TOMED_NAME_MAX + 1];
    char id[32];
    char *query;                 /* search text (malloc'd) */
    int regex;                   /* the query is a PCRE2 pattern */
    char upload[TOMED_PATH_MAX]; /* a streamed body, now the call's to remove */
    tomed_principal principal;   /* copied: the request may be gone when fn runs */
    int rc;
    tome_error err;
};

tomed_call *tomed_call_new(tomed_request *r, tomed_call_fn fn, int status);
/* Hand the call to the pool; on failure the request is answered here. */
void tomed_call_start(tomed_call *c);
/* This thread's store handle (opened on first use, closed at thread exit). */
int tomed_thread_store(const char *state_dir, struct store **out, tome_error *err);
/* The newest saved, ready state of a corpus version for the model with
 * this fingerprint: 1 with `path` (cap TOMED_PATH_MAX), `id` (cap 32) and
 * `tokens` filled, 0 if there is none, or a negative error. */
int tomed_saved_state(struct store *db, int64_t corpus_id, int64_t version_id,
                      const char *fingerprint, char *path, char *id, int64_t *tokens,
                      tome_error *err);
/* Paths of up to `max` saved, ready states of any version of a corpus for
 * the model with this fingerprint, newest use last; the count, or a
 * negative error. */
int tomed_saved_states(struct store *db, int64_t corpus_id, const char *fingerprint,
                       char (*paths)[TOMED_PATH_MAX], int max, tome_error *err);
/* Remove leftovers of interrupted uploads. */
int tomed_clean_tmp(const char *dir, tome_error *err);

typedef struct tomed_engine tomed_engine;

/* ------------------------------------------------------------------------
 * jobs.c and engine_exec.c: prefill jobs and questions on the engine
 * ------------------------------------------------------------------------ */

typedef struct tomed_jobs tomed_jobs;

int tomed_jobs_new(tomed_server *s, tomed_jobs **out, tome_error *err);
void tomed_jobs_free(tomed_jobs *j);
/* Shutdown: running prefills stop at their next restart point and are
 * left queued for the next start; followers' streams end. */
void tomed_jobs_drain(tomed_jobs *j);
int tomed_jobs_busy(const tomed_jobs *j);
void tomed_jobs_count(const tomed_jobs *j, int by_state[5]);
/* Is the model loaded (for /v1/ready), and its name. */
int tomed_jobs_model_ready(const tomed_jobs *j, const char **model, const char **why);
/* Does a job of the corpus wait or run? */
int tomed_jobs_corpus_busy(const tomed_jobs *j, const char *corpus);
tomed_engine *tomed_jobs_engine(const tomed_jobs *j);

/* A prefill job.  Created and owned by jobs.c on the loop thread, which
 * keeps it until exit; the engine thread reads `ids` and writes the atomic
 * progress fields while the job runs, and hands it back with a final
 * report (tomed_job_finished) after which it no longer touches it. */
typedef struct tomed_job {
    int64_t id; /* the store's job id */
    char corpus[TOMED_NAME_MAX + 1];
    int64_t version_id;
    int64_t version_number; /* as clients see it (1, 2, ...) */
    int status;             /* a store_job_state; loop thread only */
    int32_t *ids;           /* the prompt prefix; freed when the job ends */
    size_t n_ids;
    _Atomic int64_t tokens_done;
    _Atomic double tokens_per_s;
    _Atomic int64_t restart_point;
    atomic_int cancel; /* 1: cancelled by a client, 2: interrupted by shutdown */
    int rc;            /* the engine's result, with err */
    tome_error err;
    int64_t created_at, started_at, finished_at; /* wall clock seconds */
    int running_in_engine; /* loop thread: the engine has it and will report */
    /* Saved states of earlier versions of the corpus: the engine starts
     * from the longest prefix of `ids` any of them holds. */
    char (*prefixes)[TOMED_PATH_MAX];
    int n_prefixes;
    struct tomed_job_follower *followers;
    struct tomed_job *next;             /* the engine's queue */
    struct tomed_job *next_in_registry; /* jobs.c's list */
} tomed_job;

json_t *tomed_job_json(const tomed_job *job);
tomed_job *tomed_jobs_find(const tomed_jobs *j, const char *id);
json_t *tomed_jobs_list(const tomed_jobs *j, const tomed_principal *p);
int tomed_jobs_cancel(tomed_jobs *j, tomed_job *job, tome_error *err);
/* Stream the job's events to `r` until it ends. */
void tomed_jobs_follow(tomed_jobs *j, tomed_job *job, tomed_request *r);
/* Answer `r` with the corpus's queued/running job, or start one. */
void tomed_jobs_start_prefill(tomed_jobs *j, tomed_request *r, const char *corpus);
/* Posted by the engine once the model is loaded: resume unfinished jobs. */
void tomed_jobs_model_loaded(void *server);
/* Free the registry, after the pool has delivered the engine's last
 * reports (tomed_jobs_free stops the engine; this frees the jobs). */
void tomed_jobs_release(tomed_jobs *j);

/* jobs.c, called on the loop thread by the engine's reports */
void tomed_job_progress(void *job);
void tomed_job_finished(void *job);

/* One entry of a question's logit_bias: `bias` is added to token `id`'s
 * logit before every sampling step. */
typedef struct tomed_logit_bias {
    int32_t id;
    float bias;
} tomed_logit_bias;

/* A question on its way through the engine.  Created by routes_ask.c on
 * the loop thread; the engine thread owns the fields below `engine` until
 * it posts tomed_ask_finished, after which the loop frees the ask. */
typedef struct tomed_ask {
    tomed_request *r; /* NULL once the client is gone (loop thread only) */
    tomed_server *server;
    char corpus[TOMED_NAME_MAX + 1];
    int64_t version_id;
    char *question;
    int thinking; /* 0 none, 1 high, 2 max */
    int max_tokens;
    double temperature, top_p;
    uint64_t seed;
    char *stop[8];
    int n_stop;
    tomed_logit_bias *logit_bias; /* added to the logits before sampling (malloc'd) */
    int n_logit_bias;
    int stream;
    double t_request;
    char saved_path[TOMED_PATH_MAX]; /* the saved state to restore, if any */
    char saved_id[32];
    atomic_int cancel;
    /* engine results */
    char *answer;
    size_t answer_len;
    const char *finish_reason;
    int64_t corpus_tokens, prompt_tokens, completion_tokens, context_tokens;
    double t_queued, t_first_token, t_question_fed, t_end;
    double question_tokens_per_s, decode_tokens_per_s;
    char state_id[48];
    int rc;
    tome_error err;
    /* set by routes_openai.c for a chat completion or a completion, which
     * reply in OpenAI's format (loop thread only, but for `turns` and
     * `bare`, which the engine reads) */
    int openai; /* 0, TOMED_OPENAI_CHAT or TOMED_OPENAI_COMPLETION */
    int bare;   /* no corpus: `turns` starts a fresh context */
    struct v4_prompt *turns; /* what follows the corpus's prefix, rendered;
                                NULL: `question` as a document-QA turn */
    char completion_id[48];
    int64_t created;
    int sent_role;   /* the first chunk, which names the role, has gone */
    int in_content;  /* thinking: the reasoning's end has been streamed */
    char held[8];    /* thinking: streamed text that may begin "</think>" */
    size_t held_len;
} tomed_ask;

enum { TOMED_OPENAI_CHAT = 1, TOMED_OPENAI_COMPLETION = 2 };
/* The models list's entry for prompts without a corpus.  Not a valid
 * corpus name (it has a '/'), so no corpus can shadow it. */
#define TOMED_BARE_MODEL "deepseek-v4/bare"

/* routes_ask.c: what the native and the OpenAI routes share.  A parser
 * fills the ask from the body (the corpus comes from r->params[0]) or
 * replies and returns -1; tomed_ask_run checks the engine, reads the body,
 * parses it, looks up the corpus version on a worker and hands the
 * question to the engine (or replies with the error). */
typedef int (*tomed_ask_parser)(tomed_request *r, json_t *body, tomed_ask *ask);
void tomed_ask_run(tomed_request *r, tomed_ask_parser parse);
/* The sampling fields: `max_tokens_key` (a number from 1 to
 * max_answer_tokens, default 512), temperature, top_p, seed, logit_bias,
 * stop (a string or an array of strings); replies 400 and returns -1 when
 * one is wrong. */
int tomed_ask_parse_sampling(tomed_request *r, json_t *body, const char *max_tokens_key,
                             tomed_ask *ask);
/* "stream": a boolean, `by_default` when absent. */
int tomed_ask_parse_stream(tomed_request *r, json_t *body, int by_default, tomed_ask *ask);

/* routes_openai.c: OpenAI's shapes of an answer, on the loop thread.  A
 * piece of the answer's text streamed to ask->r as OpenAI chunks (a
 * thinking answer's reasoning as reasoning_content, the rest as content);
 * the whole answer sent to ask->r as one chat.completion or
 * text_completion, or as the stream's end; an error object for `status`
 * and TOME_E* `code`. */
void tomed_openai_text(tomed_ask *ask, const char *text, size_t len);
void tomed_openai_answer(tomed_ask *ask, json_t *citations, json_t *sources);
json_t *tomed_openai_error_json(int status, int code, const char *message);

/* ask_extras.c, called on a worker thread: JSON arrays (never NULL; empty
 * when the lookup fails, which is logged) of the citations in `answer`
 * checked against version `version_id` ({path, line, end_line, exists,
 * text}), and of the passages matching `question` ({path, line, snippet,
 * score}, at most 5). */
json_t *tomed_citations_json(const char *state_dir, int64_t version_id, const char *answer);
json_t *tomed_sources_json(const char *state_dir, int64_t version_id, const char *question);

/* routes_ask.c, called on the loop thread by the engine's reports */
void tomed_ask_text(tomed_ask *ask, const char *text, size_t len);
void tomed_ask_finished(void *ask);

/* engine_exec.c: the engine executor, one thread per model */

/* Starts the thread, which loads the model from `model_dir` (reported by
 * tomed_engine_ready once done). */
int tomed_engine_start(tomed_server *s, const char *model_dir, tomed_engine **out, tome_error *err);
/* Stops at the next chunk boundary (a running job is reported interrupted,
 * questions cancelled) and joins the thread. */
void tomed_engine_stop(tomed_engine *e);
int tomed_engine_ready(tomed_engine *e, const char **why);
/* The model and its fingerprint (hex), once ready (immutable; any thread
 * may use them), else NULL. */
const struct v4_model *tomed_engine_model(tomed_engine *e, const char **fingerprint);
/* The tokenizer and its fingerprint, once ready (immutable; any thread
 * may use them), else NULL. */
const struct v4_tokenizer *tomed_engine_tokenizer(tomed_engine *e, const char **fingerprint);
int tomed_engine_submit_prefill(tomed_engine *e, tomed_job *job, tome_error *err);
/* TOME_EBUSY when ask_queue_limit questions are already waiting. */
int tomed_engine_submit_ask(tomed_engine *e, tomed_ask *ask, tome_error *err);
/* Is a state of this corpus version in memory?  Its tokens and id (both
 * optional) are filled when it is. */
int tomed_engine_has_state(tomed_engine *e, const char *corpus, int64_t version_id, int64_t *tokens,
                           char id[48]);
/* Drop the corpus's states (the corpus is gone), or one state by id. */
void tomed_engine_forget(tomed_engine *e, const char *corpus);
int tomed_engine_drop_state(tomed_engine *e, const char *id);
/* The states in memory, as tome-protocol(7) state objects. */
json_t *tomed_engine_states(tomed_engine *e);

/* ------------------------------------------------------------------------
 * The daemon object (main.c fills it; routes read it)
 * ------------------------------------------------------------------------ */

struct tomed_server {
    struct event_base *base;
    tomed_config cfg;
    int argc;
    char **argv;
    tomed_pool *pool;
    tomed_tokens *tokens;
    struct tomed_listeners *listeners;
    tomed_jobs *jobs;
    struct tomed_conn *conns; /* every open connection */
    int n_conns;
    int draining;
    int ready;
    double started;
};

/* listen.c */
typedef struct tomed_listeners tomed_listeners;
int tomed_listeners_open(tomed_server *s, tomed_listeners **out, tome_error *err);
/* Reload TLS material from s->cfg; the old context serves existing
 * connections until they close. */
int tomed_listeners_reload_tls(tomed_listeners *l, const tomed_config *cfg, tome_error *err);
/* Stop accepting (the socket file is removed). */
void tomed_listeners_close(tomed_listeners *l);
void tomed_listeners_free(tomed_listeners *l);

#endif
