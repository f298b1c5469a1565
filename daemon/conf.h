/*
 * conf.h - tomed.conf, the command line and the defaults (config.c).
 */
#ifndef TOMED_CONF_H
#define TOMED_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/common.h"
#include "common/options.h"

#define TOMED_PATH_MAX        4096
#define TOMED_MAX_IDS         32
#define TOMED_MAX_CERT_RULES  32
#define TOMED_NAME_MAX        64
#define TOMED_MAX_ACTIVE_ASKS 256
#define TOMED_MAX_REMOTES     8

enum { TOMED_ENGINE_LOCAL = 0, TOMED_ENGINE_REMOTE = 1 };

/* `remote = URL [ca=FILE] [api_key_file=FILE]`: one endpoint of a remote
 * engine, the base URL of an OpenAI-compatible API (its /completions and
 * /models); `ca` verifies its TLS certificate (else the system's CAs),
 * `api_key_file` holds the bearer key it wants. */
typedef struct tomed_remote {
    char url[1024];
    char ca[TOMED_PATH_MAX];
    char api_key_file[TOMED_PATH_MAX];
} tomed_remote;

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
    char mtp_model[TOMED_PATH_MAX]; /* a GGUF model's separate MTP file, or "" */
    char listen[256];               /* ADDR:PORT, [V6ADDR]:PORT, or empty for no TCP */
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
    int kernels;  /* v4_kernels: fast or exact (at start only) */
    int weights;  /* v4_weights: auto, copy or map (at start only) */
    int numerics; /* v4_numerics: qat, fp32 or official (at start only) */
    /* The engine (at start only): local, or remote endpoints */
    int engine;
    tomed_remote remotes[TOMED_MAX_REMOTES];
    int n_remotes;
    char remote_model[256];       /* "model" in the requests */
    int remote_connect_timeout_s; /* to connect and finish TLS */
    int remote_timeout_s;         /* without a byte from a response */
    int remote_health_interval_s; /* between health checks */
    int64_t max_context;          /* tokens per question; 0: the model's max_position_embeddings
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
/* tomed's command line, for --help (its flags are read by
 * tomed_config_build). */
extern const tome_cli tomed_cli;
/* SIGHUP: copy what may change while running (TLS files and policy, log
 * settings, rights, limits, timeouts, and the engine's prefill_chunk,
 * restart_interval and cache_budget) from `fresh` into the running
 * configuration.  Where the daemon lives, the model, the thread counts and
 * the concurrency settings stay; returns 1 if `fresh` wanted one of those
 * changed. */
int tomed_config_reload_into(tomed_config *live, const tomed_config *fresh);
/* Validate what the file and flags cannot check alone (paths, TLS pairs). */
int tomed_config_check(const tomed_config *cfg, tome_error *err);
/* The model's directory: `tiny` is STATE_DIR/models/tiny, the built-in
 * model; anything else is a path. */
void tomed_config_model_dir(const tomed_config *cfg, char *out, size_t cap);
int tomed_rights_parse(const char *text, int *rights);
const char *tomed_rights_name(int rights);
int tomed_corpus_name_valid(const char *name);

#endif
