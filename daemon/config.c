/*
 * config.c - tomed.conf, the command line, and the defaults beneath both.
 *
 * A configuration is built in three layers: compiled-in defaults (which
 * follow the XDG variables for an unprivileged user and /var/lib, /run for
 * a system service), then the file, then the command-line flags, so an
 * operator can always override one setting for one run.  SIGHUP builds the
 * whole thing again from the same argv, which is why building is one
 * function with no side effects beyond the struct it fills.
 *
 * The file format is deliberately small: `key = value` lines, `#` comments,
 * repeatable keys for lists (client_cert).  Every key is documented in
 * man/tomed.conf.5; an unknown key is an error naming the file and line, so
 * a typo never silently falls back to a default.
 */
#include "common/options.h"
#include "daemon/conf.h"
#include "daemon/log.h"
#include "daemon/tls.h"
#include "engine/v4.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_CONFIG_PATH "/etc/tome/tomed.conf"

static void set_path(char *dst, size_t cap, const char *a, const char *b)
{
    snprintf(dst, cap, "%s%s", a, b);
}

static void apply_defaults(tomed_config *c)
{
    memset(c, 0, sizeof *c);
    const char *state = getenv("XDG_STATE_HOME");
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    if (state && *state)
        set_path(c->state_dir, sizeof c->state_dir, state, "/tome");
    else
        set_path(c->state_dir, sizeof c->state_dir, "/var/lib/tome", "");
    if (runtime && *runtime)
        set_path(c->socket_path, sizeof c->socket_path, runtime, "/tome/tomed.sock");
    else
        set_path(c->socket_path, sizeof c->socket_path, "/run/tome/tomed.sock", "");
    snprintf(c->model, sizeof c->model, "tiny");
    snprintf(c->tls_ciphers, sizeof c->tls_ciphers, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL");
    snprintf(c->tls_ciphersuites, sizeof c->tls_ciphersuites,
             "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256");
    c->socket_mode = 0660;
    c->log_level = TOMED_LOG_INFO;
    c->admin_uids[c->n_admin_uids++] = 0;
    if (geteuid() != 0) c->admin_uids[c->n_admin_uids++] = geteuid();
    c->allow_gids[c->n_allow_gids++] = getegid();
    c->max_request_bytes = 1 << 20;
    c->max_upload_bytes = (int64_t)4 << 30;
    c->header_timeout_s = 10;
    c->io_timeout_s = 60;
    c->idle_timeout_s = 120;
    c->keepalive_interval_s = 10;
    c->shutdown_grace_s = 20;
    c->max_connections = 4096;
    c->ask_queue_limit = 256;
    c->max_active_asks = 64;
    c->workers = 4;
    c->max_answer_tokens = 8192;
    c->prefill_chunk = 0;
    c->restart_interval = 4096;
    snprintf(c->remote_model, sizeof c->remote_model, "deepseek-v4/bare");
    c->remote_connect_timeout_s = 10;
    c->remote_timeout_s = 3600;
    c->remote_health_interval_s = 10;
}

void tomed_config_model_dir(const tomed_config *cfg, char *out, size_t cap)
{
    if (strcmp(cfg->model, "tiny") == 0)
        snprintf(out, cap, "%s/models/tiny", cfg->state_dir);
    else
        snprintf(out, cap, "%s", cfg->model);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
    return s;
}

static int parse_int(const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi) return TOME_EINVAL;
    *out = n;
    return 0;
}

/* "1048576", "512K", "1M", "4G" */
static int parse_size(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || n < 0) return TOME_EINVAL;
    int shift = 0;
    switch (toupper((unsigned char)*end)) {
    case '\0':
        break;
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    default:
        return TOME_EINVAL;
    }
    if (*end && end[1]) return TOME_EINVAL;
    if (n > (LLONG_MAX >> shift)) return TOME_EINVAL;
    *out = (int64_t)n << shift;
    return 0;
}

/* A list of numeric ids separated by spaces or commas. */
static int parse_ids(const char *v, unsigned *ids, int *n)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", v);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, " ,", &save); tok;
         tok = strtok_r(NULL, " ,", &save)) {
        long id;
        if (*n == TOMED_MAX_IDS || parse_int(tok, 0, UINT_MAX / 2, &id) != 0) return TOME_EINVAL;
        ids[(*n)++] = (unsigned)id;
    }
    return 0;
}

int tomed_rights_parse(const char *text, int *rights)
{
    if (strcmp(text, "read") == 0)
        *rights = TOMED_RIGHT_READ;
    else if (strcmp(text, "write") == 0)
        *rights = TOMED_RIGHT_READ | TOMED_RIGHT_WRITE;
    else
        return TOME_EINVAL;
    return 0;
}

const char *tomed_rights_name(int rights)
{
    return (rights & TOMED_RIGHT_WRITE) ? "write" : "read";
}

int tomed_corpus_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TOMED_NAME_MAX || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!isalnum(ch) && ch != '.' && ch != '_' && ch != '-') return 0;
    }
    return 1;
}

/* `remote = URL [ca=FILE] [api_key_file=FILE]` */
static int parse_remote(const char *v, tomed_config *c)
{
    if (c->n_remotes == TOMED_MAX_REMOTES) return TOME_ELIMIT;
    tomed_remote *r = &c->remotes[c->n_remotes];
    memset(r, 0, sizeof *r);
    char buf[3 * TOMED_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", v);
    char *save = NULL, *word = strtok_r(buf, " \t", &save);
    size_t scheme = word && strncmp(word, "http://", 7) == 0    ? 7
                    : word && strncmp(word, "https://", 8) == 0 ? 8
                                                                : 0;
    size_t len = word ? strlen(word) : 0;
    /* "/v1/" is "/v1": the paths appended start with '/' */
    while (len > scheme && word[len - 1] == '/') word[--len] = '\0';
    if (!scheme || len == scheme || len >= sizeof r->url) return TOME_EINVAL;
    snprintf(r->url, sizeof r->url, "%s", word);
    while ((word = strtok_r(NULL, " \t", &save))) {
        if (strncmp(word, "ca=", 3) == 0 && strlen(word + 3) < sizeof r->ca)
            snprintf(r->ca, sizeof r->ca, "%s", word + 3);
        else if (strncmp(word, "api_key_file=", 13) == 0 &&
                 strlen(word + 13) < sizeof r->api_key_file)
            snprintf(r->api_key_file, sizeof r->api_key_file, "%s", word + 13);
        else
            return TOME_EINVAL;
    }
    c->n_remotes++;
    return 0;
}

/* `client_cert = CN CORPUS RIGHTS` */
static int parse_cert_rule(const char *v, tomed_config *c)
{
    char cn[256], corpus[TOMED_NAME_MAX + 2], rights[16];
    if (c->n_cert_rules == TOMED_MAX_CERT_RULES) return TOME_ELIMIT;
    if (sscanf(v, "%255s %65s %15s", cn, corpus, rights) != 3) return TOME_EINVAL;
    tomed_cert_rule *rule = &c->cert_rules[c->n_cert_rules];
    if (strcmp(corpus, "*") != 0 && !tomed_corpus_name_valid(corpus)) return TOME_EINVAL;
    if (tomed_rights_parse(rights, &rule->scope.rights) != 0) return TOME_EINVAL;
    snprintf(rule->common_name, sizeof rule->common_name, "%s", cn);
    snprintf(rule->scope.corpus, sizeof rule->scope.corpus, "%s", corpus);
    c->n_cert_rules++;
    return 0;
}

#define STRING_KEY(key, field)                                                                     \
    {                                                                                              \
        key, offsetof(tomed_config, field), sizeof(((tomed_config *)0)->field)                     \
    }

static const struct string_key {
    const char *key;
    size_t offset, cap;
} string_keys[] = {
    STRING_KEY("state_dir", state_dir),
    STRING_KEY("socket", socket_path),
    STRING_KEY("pidfile", pidfile),
    STRING_KEY("model", model),
    STRING_KEY("mtp_model", mtp_model),
    STRING_KEY("listen", listen),
    STRING_KEY("tls_cert", tls_cert),
    STRING_KEY("tls_key", tls_key),
    STRING_KEY("tls_client_ca", tls_client_ca),
    STRING_KEY("tls_ciphers", tls_ciphers),
    STRING_KEY("tls_ciphersuites", tls_ciphersuites),
    STRING_KEY("remote_model", remote_model),
};

#define INT_KEY(key, field, lo, hi)                                                                \
    {                                                                                              \
        key, offsetof(tomed_config, field), lo, hi                                                 \
    }

static const struct int_key {
    const char *key;
    size_t offset;
    long lo, hi;
} int_keys[] = {
    INT_KEY("header_timeout", header_timeout_s, 1, 3600),
    INT_KEY("io_timeout", io_timeout_s, 1, 86400),
    INT_KEY("idle_timeout", idle_timeout_s, 1, 86400),
    INT_KEY("keepalive_interval", keepalive_interval_s, 1, 3600),
    INT_KEY("shutdown_grace", shutdown_grace_s, 0, 3600),
    INT_KEY("max_connections", max_connections, 1, 1000000),
    INT_KEY("ask_queue_limit", ask_queue_limit, 1, 1000000),
    INT_KEY("max_active_asks", max_active_asks, 1, TOMED_MAX_ACTIVE_ASKS),
    INT_KEY("workers", workers, 1, 256),
    INT_KEY("max_answer_tokens", max_answer_tokens, 1, 1 << 20),
    INT_KEY("prefill_chunk", prefill_chunk, 0, 1 << 20),
    INT_KEY("remote_connect_timeout", remote_connect_timeout_s, 1, 3600),
    INT_KEY("remote_timeout", remote_timeout_s, 1, 86400),
    INT_KEY("remote_health_interval", remote_health_interval_s, 1, 3600),
};

static int set_key(tomed_config *c, const char *key, const char *v)
{
    for (size_t i = 0; i < sizeof string_keys / sizeof string_keys[0]; i++) {
        if (strcmp(key, string_keys[i].key) == 0) {
            if (strlen(v) >= string_keys[i].cap) return TOME_ELIMIT;
            memcpy((char *)c + string_keys[i].offset, v, strlen(v) + 1);
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++) {
        if (strcmp(key, int_keys[i].key) == 0) {
            long n;
            if (parse_int(v, int_keys[i].lo, int_keys[i].hi, &n) != 0) return TOME_EINVAL;
            *(int *)((char *)c + int_keys[i].offset) = (int)n;
            return 0;
        }
    }
    if (strcmp(key, "socket_mode") == 0) {
        char *end;
        unsigned long mode = strtoul(v, &end, 8);
        if (*end || end == v || mode > 0777) return TOME_EINVAL;
        c->socket_mode = (unsigned)mode;
        return 0;
    }
    if (strcmp(key, "log_level") == 0) return tomed_log_level_parse(v, &c->log_level);
    if (strcmp(key, "kernels") == 0) {
        int k = v4_kernels_parse(v);
        if (k < 0) return TOME_EINVAL;
        c->kernels = k;
        return 0;
    }
    if (strcmp(key, "weights") == 0) {
        int w = v4_weights_parse(v);
        if (w < 0) return TOME_EINVAL;
        c->weights = w;
        return 0;
    }
    if (strcmp(key, "numerics") == 0) {
        int n = v4_numerics_parse(v);
        if (n < 0) return TOME_EINVAL;
        c->numerics = n;
        return 0;
    }
    if (strcmp(key, "engine") == 0) {
        if (strcmp(v, "local") != 0 && strcmp(v, "remote") != 0) return TOME_EINVAL;
        c->engine = strcmp(v, "remote") == 0 ? TOMED_ENGINE_REMOTE : TOMED_ENGINE_LOCAL;
        return 0;
    }
    if (strcmp(key, "remote") == 0) return parse_remote(v, c);
    if (strcmp(key, "log") == 0) {
        if (strcmp(v, "syslog") != 0 && strcmp(v, "stderr") != 0) return TOME_EINVAL;
        c->log_syslog = strcmp(v, "syslog") == 0;
        return 0;
    }
    if (strcmp(key, "max_request_bytes") == 0) return parse_size(v, &c->max_request_bytes);
    if (strcmp(key, "max_upload_bytes") == 0) return parse_size(v, &c->max_upload_bytes);
    if (strcmp(key, "restart_interval") == 0) return parse_size(v, &c->restart_interval);
    if (strcmp(key, "cache_budget") == 0) return parse_size(v, &c->cache_budget);
    if (strcmp(key, "max_context") == 0) return parse_size(v, &c->max_context);
    if (strcmp(key, "admin_uids") == 0) return parse_ids(v, c->admin_uids, &c->n_admin_uids);
    if (strcmp(key, "allow_uids") == 0) return parse_ids(v, c->allow_uids, &c->n_allow_uids);
    if (strcmp(key, "allow_gids") == 0) return parse_ids(v, c->allow_gids, &c->n_allow_gids);
    if (strcmp(key, "client_cert") == 0) return parse_cert_rule(v, c);
    return TOME_ENOTFOUND;
}

static int load_file(tomed_config *c, const char *path, tome_error *err)
{
    char *text;
    size_t len;
    int rc = tome_read_file(path, 1 << 20, &text, &len, err);
    if (rc != 0) return rc;
    int lineno = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = tome_errorf(err, TOME_EFORMAT, "%s:%d: expected `key = value`", path, lineno);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        rc = set_key(c, key, value);
        if (rc == TOME_ENOTFOUND) {
            rc = tome_errorf(err, TOME_EFORMAT, "%s:%d: unknown key '%s'", path, lineno, key);
            break;
        }
        if (rc != 0) {
            rc = tome_errorf(err, TOME_EFORMAT, "%s:%d: bad value for '%s': '%s'", path, lineno,
                             key, value);
            break;
        }
    }
    free(text);
    return rc;
}

/* The command line is read twice: pass 1 finds --config (and the flags),
 * pass 2 applies the settings over the file's. */
typedef struct flag_pass {
    tomed_config *c;
    int apply;
    int *check_only;
} flag_pass;

static int take_config_path(void *ctx, const void *data, const char *arg, tome_error *err)
{
    flag_pass *f = ctx;
    (void)data;
    (void)err;
    if (!f->apply) snprintf(f->c->config_path, sizeof f->c->config_path, "%s", arg);
    return 0;
}

static int take_foreground(void *ctx, const void *data, const char *arg, tome_error *err)
{
    (void)data, (void)arg, (void)err;
    ((flag_pass *)ctx)->c->foreground = 1;
    return 0;
}

static int take_check_config(void *ctx, const void *data, const char *arg, tome_error *err)
{
    flag_pass *f = ctx;
    (void)data, (void)arg, (void)err;
    if (f->check_only) *f->check_only = 1;
    return 0;
}

/* A flag that overrides the tomed.conf key `data` (pass 2). */
static int take_setting(void *ctx, const void *key, const char *arg, tome_error *err)
{
    flag_pass *f = ctx;
    if (f->apply && set_key(f->c, key, arg) != 0)
        return tome_errorf(err, TOME_EINVAL, "bad value '%s'", arg);
    return 0;
}

static const tome_option flag_table[] = {
    TOME_CALL("config", 0, "FILE", take_config_path, NULL,
              "read this tomed.conf (default " DEFAULT_CONFIG_PATH " if present)"),
    TOME_CALL("foreground", 0, NULL, take_foreground, NULL,
              "stay in the foreground, log to stderr"),
    TOME_CALL("state-dir", 0, "DIR", take_setting, "state_dir", "the state directory"),
    TOME_CALL("socket", 0, "PATH", take_setting, "socket", "the Unix socket"),
    TOME_CALL("listen", 0, "ADDR:PORT", take_setting, "listen", "the TLS listener"),
    TOME_CALL("tls-cert", 0, "FILE", take_setting, "tls_cert", "its certificate chain"),
    TOME_CALL("tls-key", 0, "FILE", take_setting, "tls_key", "its private key"),
    TOME_CALL("tls-client-ca", 0, "FILE", take_setting, "tls_client_ca",
              "CAs of client certificates (mutual TLS)"),
    TOME_CALL("model", 0, "DIR", take_setting, "model", "the model (\"tiny\": the built-in one)"),
    TOME_CALL("log-level", 0, "LEVEL", take_setting, "log_level", "error, warn, info or debug"),
    TOME_CALL("pidfile", 0, "FILE", take_setting, "pidfile", "the pidfile"),
    TOME_CALL("check-config", 0, NULL, take_check_config, NULL, "check the configuration and exit"),
};

const tome_cli tomed_cli = {
    .program = "tomed",
    .usage =
        "[--config FILE] [--foreground] [--state-dir DIR] [--socket PATH]\n"
        "             [--listen ADDR:PORT --tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]\n"
        "             [--model DIR] [--log-level LEVEL] [--pidfile FILE]\n"
        "       tomed --check-config [options]\n"
        "       tomed --version",
    .options = flag_table,
    .n_options = sizeof flag_table / sizeof flag_table[0]};

static int scan_flags(int argc, char **argv, tomed_config *c, int apply, int *check_only,
                      tome_error *err)
{
    flag_pass f = {c, apply, check_only};
    int n_operands = 0;
    int rc = tome_options_parse(&tomed_cli, argc, argv, &f, &n_operands, err);
    if (rc == TOME_OPTIONS_HELP) return tome_errorf(err, TOME_EINVAL, "--help is answered by main");
    if (rc == 0 && n_operands > 0)
        rc = tome_errorf(err, TOME_EINVAL, "unexpected argument '%s'", argv[1]);
    return rc;
}

int tomed_config_build(int argc, char **argv, tomed_config *cfg, int *check_only, tome_error *err)
{
    apply_defaults(cfg);
    if (check_only) *check_only = 0;
    int rc = scan_flags(argc, argv, cfg, 0, check_only, err);
    if (rc != 0) return rc;
    struct stat st;
    if (!cfg->config_path[0] && stat(DEFAULT_CONFIG_PATH, &st) == 0)
        snprintf(cfg->config_path, sizeof cfg->config_path, "%s", DEFAULT_CONFIG_PATH);
    if (cfg->config_path[0]) {
        rc = load_file(cfg, cfg->config_path, err);
        if (rc != 0) return rc;
    }
    rc = scan_flags(argc, argv, cfg, 1, NULL, err);
    if (rc != 0) return rc;
    if (!cfg->pidfile[0])
        snprintf(cfg->pidfile, sizeof cfg->pidfile, "%s/tomed.pid", cfg->state_dir);
    return 0;
}

int tomed_config_reload_into(tomed_config *live, const tomed_config *fresh)
{
    int fixed_changed = strcmp(fresh->state_dir, live->state_dir) ||
                        strcmp(fresh->socket_path, live->socket_path) ||
                        strcmp(fresh->listen, live->listen) || strcmp(fresh->model, live->model) ||
                        strcmp(fresh->mtp_model, live->mtp_model) ||
                        strcmp(fresh->pidfile, live->pidfile) ||
                        fresh->max_context != live->max_context || fresh->engine != live->engine ||
                        fresh->kernels != live->kernels || fresh->weights != live->weights ||
                        fresh->numerics != live->numerics || fresh->n_remotes != live->n_remotes ||
                        memcmp(fresh->remotes, live->remotes, sizeof live->remotes) ||
                        strcmp(fresh->remote_model, live->remote_model);
    memcpy(live->tls_cert, fresh->tls_cert, sizeof live->tls_cert);
    memcpy(live->tls_key, fresh->tls_key, sizeof live->tls_key);
    memcpy(live->tls_client_ca, fresh->tls_client_ca, sizeof live->tls_client_ca);
    memcpy(live->tls_ciphers, fresh->tls_ciphers, sizeof live->tls_ciphers);
    memcpy(live->tls_ciphersuites, fresh->tls_ciphersuites, sizeof live->tls_ciphersuites);
    live->log_level = fresh->log_level;
    live->log_syslog = fresh->log_syslog;
    memcpy(live->admin_uids, fresh->admin_uids, sizeof live->admin_uids);
    live->n_admin_uids = fresh->n_admin_uids;
    memcpy(live->allow_uids, fresh->allow_uids, sizeof live->allow_uids);
    live->n_allow_uids = fresh->n_allow_uids;
    memcpy(live->allow_gids, fresh->allow_gids, sizeof live->allow_gids);
    live->n_allow_gids = fresh->n_allow_gids;
    memcpy(live->cert_rules, fresh->cert_rules, sizeof live->cert_rules);
    live->n_cert_rules = fresh->n_cert_rules;
    live->max_request_bytes = fresh->max_request_bytes;
    live->max_upload_bytes = fresh->max_upload_bytes;
    live->header_timeout_s = fresh->header_timeout_s;
    live->io_timeout_s = fresh->io_timeout_s;
    live->idle_timeout_s = fresh->idle_timeout_s;
    live->shutdown_grace_s = fresh->shutdown_grace_s;
    live->max_connections = fresh->max_connections;
    live->ask_queue_limit = fresh->ask_queue_limit;
    live->max_answer_tokens = fresh->max_answer_tokens;
    /* the engine thread reads these at its next chunk or save */
    __atomic_store_n(&live->prefill_chunk, fresh->prefill_chunk, __ATOMIC_RELAXED);
    __atomic_store_n(&live->restart_interval, fresh->restart_interval, __ATOMIC_RELAXED);
    __atomic_store_n(&live->cache_budget, fresh->cache_budget, __ATOMIC_RELAXED);
    return fixed_changed;
}

static int check_readable(const char *what, const char *path, tome_error *err)
{
    if (access(path, R_OK) != 0)
        return tome_errorf(err, TOME_EIO, "%s %s: %s", what, path, strerror(errno));
    return 0;
}

int tomed_config_check(const tomed_config *c, tome_error *err)
{
    if (c->state_dir[0] != '/')
        return tome_errorf(err, TOME_EINVAL, "state_dir '%s' must be an absolute path",
                           c->state_dir);
    struct sockaddr_un sun;
    if (strlen(c->socket_path) >= sizeof sun.sun_path)
        return tome_errorf(err, TOME_ELIMIT, "socket path '%s' is longer than %zu bytes",
                           c->socket_path, sizeof sun.sun_path - 1);
    if (c->listen[0]) {
        if (!strrchr(c->listen, ':'))
            return tome_errorf(err, TOME_EINVAL, "listen '%s' is not ADDR:PORT", c->listen);
        if (!c->tls_cert[0] || !c->tls_key[0])
            return tome_errorf(err, TOME_EINVAL,
                               "listen '%s' needs tls_cert and tls_key (TCP is TLS only)",
                               c->listen);
        int rc = check_readable("tls_cert", c->tls_cert, err);
        if (rc == 0) rc = check_readable("tls_key", c->tls_key, err);
        if (rc == 0 && c->tls_client_ca[0])
            rc = check_readable("tls_client_ca", c->tls_client_ca, err);
        if (rc != 0) return rc;
        SSL_CTX *ctx;
        rc = tomed_tls_context_new(c, &ctx, err);
        if (rc != 0) return rc;
        SSL_CTX_free(ctx);
    }
    if (c->engine == TOMED_ENGINE_REMOTE && c->n_remotes == 0)
        return tome_errorf(err, TOME_EINVAL, "engine = remote needs at least one `remote = URL`");
    for (int i = 0; i < c->n_remotes; i++) {
        int rc = c->remotes[i].ca[0] ? check_readable("remote ca", c->remotes[i].ca, err) : 0;
        if (rc == 0 && c->remotes[i].api_key_file[0])
            rc = check_readable("remote api_key_file", c->remotes[i].api_key_file, err);
        if (rc != 0) return rc;
    }
    if (c->max_request_bytes < 1024)
        return tome_errorf(err, TOME_EINVAL, "max_request_bytes %lld is below 1K",
                           (long long)c->max_request_bytes);
    return 0;
}
