/*
 * test_daemon_auth.c - tomed's configuration layers and its authorisation
 * rules, without a running daemon: defaults from the XDG variables, the
 * file over the defaults and the flags over the file, errors that name the
 * file and line; principals for Unix peers (admin, allowed, refused), for
 * client certificates and for bearer tokens, and the token registry on disk
 * (hashed, reloaded, revoked); and the permission bits a Unix peer's
 * server-path ingest is held to (owner, else group, else other; primary
 * and supplementary groups; an access ACL refuses).
 */
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/log.h"
#include "daemon/types.h"
#include "engine/v4.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "tests/check.h"

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static int build(tomed_config *cfg, tome_error *err, int argc, char **argv)
{
    return tomed_config_build(argc, argv, cfg, NULL, err);
}

static void test_config(const char *dir)
{
    tomed_config *cfg = malloc(sizeof *cfg);
    REQUIRE(cfg != NULL, "out of memory");
    tome_error err = {0};
    char conf[4200], bad[4200];

    setenv("XDG_STATE_HOME", "/xdg/state", 1);
    setenv("XDG_RUNTIME_DIR", "/xdg/run", 1);
    char *plain[] = {"tomed", NULL};
    CHECK_OK(build(cfg, &err, 1, plain), &err);
    CHECK(strcmp(cfg->state_dir, "/xdg/state/tome") == 0);
    CHECK(strcmp(cfg->socket_path, "/xdg/run/tome/tomed.sock") == 0);
    CHECK(strcmp(cfg->pidfile, "/xdg/state/tome/tomed.pid") == 0);
    CHECK(strcmp(cfg->model, "tiny") == 0);
    CHECK(cfg->socket_mode == 0660);
    unsetenv("XDG_STATE_HOME");
    unsetenv("XDG_RUNTIME_DIR");
    CHECK_OK(build(cfg, &err, 1, plain), &err);
    CHECK(strcmp(cfg->state_dir, "/var/lib/tome") == 0);
    CHECK(strcmp(cfg->socket_path, "/run/tome/tomed.sock") == 0);

    snprintf(conf, sizeof conf, "%s/tomed.conf", dir);
    write_text(conf, "# comment\n"
                     "state_dir = /from/file   # trailing comment\n"
                     "model = /models/flash\n"
                     "max_upload_bytes = 2G\n"
                     "allow_uids = 1000, 1001 1002\n"
                     "client_cert = alice src read\n"
                     "client_cert = bob * write\n"
                     "log_level = debug\n");
    char *with_flags[] = {"tomed", "--config", conf, "--state-dir", "/from/flag", NULL};
    CHECK_OK(build(cfg, &err, 5, with_flags), &err);
    CHECK(strcmp(cfg->state_dir, "/from/flag") == 0);
    CHECK(strcmp(cfg->model, "/models/flash") == 0);
    CHECK(cfg->max_upload_bytes == (int64_t)2 << 30);
    CHECK(cfg->n_allow_uids == 3 && cfg->allow_uids[2] == 1002);
    CHECK(cfg->n_cert_rules == 2);
    CHECK(strcmp(cfg->cert_rules[1].scope.corpus, "*") == 0);
    CHECK(cfg->cert_rules[1].scope.rights == (TOMED_RIGHT_READ | TOMED_RIGHT_WRITE));
    CHECK(cfg->log_level == TOMED_LOG_DEBUG);

    snprintf(bad, sizeof bad, "%s/bad.conf", dir);
    write_text(bad, "model = x\nworkers = many\n");
    char *bad_file[] = {"tomed", "--config", bad, NULL};
    CHECK(build(cfg, &err, 3, bad_file) == TOME_EFORMAT);
    CHECKF(strstr(err.msg, "bad.conf:2: bad value for 'workers'") != NULL, "%s", err.msg);
    write_text(bad, "client_cert = alice ../x read\n");
    CHECK(build(cfg, &err, 3, bad_file) == TOME_EFORMAT);
    char *unknown_flag[] = {"tomed", "--no-such-flag", NULL};
    CHECK(build(cfg, &err, 2, unknown_flag) == TOME_EINVAL);
    char *stray[] = {"tomed", "extra", NULL};
    CHECK(build(cfg, &err, 2, stray) == TOME_EINVAL);

    char *no_cert[] = {"tomed", "--state-dir", "/s", "--listen", "127.0.0.1:7433", NULL};
    CHECK_OK(build(cfg, &err, 5, no_cert), &err);
    CHECK(tomed_config_check(cfg, &err) == TOME_EINVAL);
    CHECKF(strstr(err.msg, "needs tls_cert and tls_key") != NULL, "%s", err.msg);
    char *relative[] = {"tomed", "--state-dir", "relative", NULL};
    CHECK_OK(build(cfg, &err, 3, relative), &err);
    CHECK(tomed_config_check(cfg, &err) == TOME_EINVAL);

    /* A reload takes limits and rights, never where the daemon lives. */
    tomed_config *fresh = malloc(sizeof *fresh);
    REQUIRE(fresh != NULL, "out of memory");
    char *first[] = {"tomed", "--state-dir", "/a", NULL};
    char *second[] = {"tomed", "--config", conf, "--state-dir", "/b", NULL};
    CHECK_OK(build(cfg, &err, 3, first), &err);
    CHECK_OK(build(fresh, &err, 5, second), &err);
    CHECK(tomed_config_reload_into(cfg, fresh) == 1);
    CHECK(strcmp(cfg->state_dir, "/a") == 0);
    CHECK(strcmp(cfg->model, "tiny") == 0);
    CHECK(cfg->max_upload_bytes == (int64_t)2 << 30);
    CHECK(cfg->n_cert_rules == 2 && cfg->log_level == TOMED_LOG_DEBUG);
    CHECK_OK(build(fresh, &err, 3, first), &err);
    CHECK(tomed_config_reload_into(cfg, fresh) == 0);
    CHECK(cfg->max_upload_bytes == (int64_t)4 << 30);
    free(fresh);
    free(cfg);
}

/* kernels, numerics and mtp_model: the engine's settings, read at start
 * only. */
static void test_engine_keys(const char *dir)
{
    tomed_config *cfg = malloc(sizeof *cfg), *fresh = malloc(sizeof *fresh);
    REQUIRE(cfg && fresh, "out of memory");
    tome_error err = {0};
    char conf[4200];
    snprintf(conf, sizeof conf, "%s/engine.conf", dir);
    char *args[] = {"tomed", "--config", conf, "--state-dir", "/s", NULL};
    char *plain[] = {"tomed", "--state-dir", "/s", NULL};
    write_text(conf, "kernels = exact\nnumerics = official\nmtp_model = /m/mtp.gguf\n"
                     "weights = map\n");
    CHECK_OK(build(cfg, &err, 5, args), &err);
    CHECK(cfg->kernels == V4_KERNELS_EXACT && cfg->numerics == V4_NUMERICS_OFFICIAL);
    CHECK(cfg->weights == V4_WEIGHTS_MAP);
    CHECK(strcmp(cfg->mtp_model, "/m/mtp.gguf") == 0);
    CHECK_OK(build(fresh, &err, 3, plain), &err);
    CHECK(fresh->kernels == V4_KERNELS_FAST && fresh->numerics == V4_NUMERICS_QAT);
    CHECK(fresh->weights == V4_WEIGHTS_AUTO);
    /* a reload reports them changed and keeps what the engine runs */
    CHECK(tomed_config_reload_into(cfg, fresh) == 1);
    CHECK(cfg->numerics == V4_NUMERICS_OFFICIAL);
    write_text(conf, "numerics = bf16\n");
    CHECK(build(cfg, &err, 5, args) == TOME_EFORMAT);
    CHECKF(strstr(err.msg, "bad value for 'numerics'") != NULL, "%s", err.msg);
    write_text(conf, "weights = huge\n");
    CHECK(build(cfg, &err, 5, args) == TOME_EFORMAT);
    CHECKF(strstr(err.msg, "bad value for 'weights'") != NULL, "%s", err.msg);
    unlink(conf);
    free(fresh);
    free(cfg);
}

/* engine = remote: the endpoints with their options, and what is refused. */
static void test_remote_config(const char *dir)
{
    tomed_config *cfg = malloc(sizeof *cfg);
    REQUIRE(cfg != NULL, "out of memory");
    tome_error err = {0};
    char conf[4200], key[4200], text[9000];
    snprintf(conf, sizeof conf, "%s/remote.conf", dir);
    snprintf(key, sizeof key, "%s/api.key", dir);
    write_text(key, "secret\n");
    char *args[] = {"tomed", "--config", conf, "--state-dir", "/s", NULL};

    snprintf(text, sizeof text,
             "engine = remote\n"
             "remote = http://gpu1:8000/v1\n"
             "remote = https://tome2:7433/openai/v1// ca=%s api_key_file=%s\n"
             "remote_model = deepseek-ai/DeepSeek-V4-Flash\n"
             "remote_timeout = 60\n",
             key, key);
    write_text(conf, text);
    CHECK_OK(build(cfg, &err, 5, args), &err);
    CHECK_OK(tomed_config_check(cfg, &err), &err);
    CHECK(cfg->engine == TOMED_ENGINE_REMOTE && cfg->n_remotes == 2);
    CHECK(strcmp(cfg->remotes[0].url, "http://gpu1:8000/v1") == 0 && !cfg->remotes[0].ca[0]);
    CHECK(strcmp(cfg->remotes[1].ca, key) == 0 && strcmp(cfg->remotes[1].api_key_file, key) == 0);
    CHECK(strcmp(cfg->remotes[1].url, "https://tome2:7433/openai/v1") == 0); /* no trailing '/' */
    CHECK(strcmp(cfg->remote_model, "deepseek-ai/DeepSeek-V4-Flash") == 0);
    CHECK(cfg->remote_timeout_s == 60 && cfg->remote_connect_timeout_s == 10);

    write_text(conf, "remote = gpu1:8000\n"); /* no scheme */
    CHECK(build(cfg, &err, 5, args) == TOME_EFORMAT);
    write_text(conf, "remote = https:///\n"); /* no host */
    CHECK(build(cfg, &err, 5, args) == TOME_EFORMAT);
    write_text(conf, "remote = http://gpu1 tls=off\n");
    CHECK(build(cfg, &err, 5, args) == TOME_EFORMAT);
    write_text(conf, "engine = cluster\n");
    CHECK(build(cfg, &err, 5, args) == TOME_EFORMAT);
    write_text(conf, "engine = remote\n");
    CHECK_OK(build(cfg, &err, 5, args), &err);
    CHECK(tomed_config_check(cfg, &err) == TOME_EINVAL);
    write_text(conf, "engine = remote\nremote = http://x/v1 api_key_file=/no/such/key\n");
    CHECK_OK(build(cfg, &err, 5, args), &err);
    CHECK(tomed_config_check(cfg, &err) == TOME_EIO);
    unlink(conf);
    unlink(key);
    free(cfg);
}

static void test_names_and_rights(void)
{
    CHECK(tomed_corpus_name_valid("src"));
    CHECK(tomed_corpus_name_valid("a.b-c_D9"));
    CHECK(!tomed_corpus_name_valid(""));
    CHECK(!tomed_corpus_name_valid(".hidden"));
    CHECK(!tomed_corpus_name_valid("a/b"));
    CHECK(!tomed_corpus_name_valid("a b"));
    int rights;
    CHECK(tomed_rights_parse("read", &rights) == 0 && rights == TOMED_RIGHT_READ);
    CHECK(tomed_rights_parse("write", &rights) == 0 && (rights & TOMED_RIGHT_READ));
    CHECK(tomed_rights_parse("admin", &rights) != 0);
}

/* A configuration with an admin, an allowed uid and gid, and a certificate
 * rule for alice (read on src). */
static tomed_config *principals_config(void)
{
    tomed_config *cfg = malloc(sizeof *cfg);
    REQUIRE(cfg != NULL, "out of memory");
    tome_error err = {0};
    char *argv[] = {"tomed", NULL};
    CHECK_OK(build(cfg, &err, 1, argv), &err);
    cfg->n_admin_uids = 1;
    cfg->admin_uids[0] = 0;
    cfg->n_allow_uids = 1;
    cfg->allow_uids[0] = 1000;
    cfg->n_allow_gids = 1;
    cfg->allow_gids[0] = 50;
    cfg->n_cert_rules = 1;
    snprintf(cfg->cert_rules[0].common_name, sizeof cfg->cert_rules[0].common_name, "alice");
    snprintf(cfg->cert_rules[0].scope.corpus, sizeof cfg->cert_rules[0].scope.corpus, "src");
    cfg->cert_rules[0].scope.rights = TOMED_RIGHT_READ;
    return cfg;
}

/* Unix peers by uid and gid, TLS peers by certificate. */
static void check_peers(tomed_config *cfg, const char *dir)
{
    tome_error err = {0};
    tomed_principal p;
    tomed_tokens *tokens;
    CHECK_OK(tomed_tokens_open(dir, &tokens, &err), &err);
    tomed_peer root = {.transport = TOMED_TRANSPORT_UNIX, .uid = 0, .gid = 0};
    CHECK_OK(tomed_authenticate(cfg, tokens, &root, NULL, &p, &err), &err);
    CHECK(p.admin && tomed_principal_can(&p, "any", TOMED_RIGHT_WRITE));
    tomed_peer user = {.transport = TOMED_TRANSPORT_UNIX, .uid = 1000, .gid = 1000};
    CHECK_OK(tomed_authenticate(cfg, tokens, &user, NULL, &p, &err), &err);
    CHECK(!p.admin && tomed_principal_can(&p, "any", TOMED_RIGHT_WRITE));
    tomed_peer member = {.transport = TOMED_TRANSPORT_UNIX, .uid = 2000, .gid = 50};
    CHECK_OK(tomed_authenticate(cfg, tokens, &member, NULL, &p, &err), &err);
    CHECK(p.kind == TOMED_PRINCIPAL_UNIX);
    tomed_peer stranger = {.transport = TOMED_TRANSPORT_UNIX, .uid = 2001, .gid = 2001};
    CHECK_OK(tomed_authenticate(cfg, tokens, &stranger, NULL, &p, &err), &err);
    CHECK(p.kind == TOMED_PRINCIPAL_NONE && strcmp(p.name, "uid:2001") == 0);
    CHECK(!tomed_principal_can(&p, "src", TOMED_RIGHT_READ));
    /* A Unix peer's identity is the kernel's word: a header changes nothing. */
    CHECK_OK(tomed_authenticate(cfg, tokens, &stranger, "Bearer x", &p, &err), &err);
    CHECK(p.kind == TOMED_PRINCIPAL_NONE);

    tomed_peer alice = {.transport = TOMED_TRANSPORT_TLS, .has_cert = 1};
    snprintf(alice.cert_cn, sizeof alice.cert_cn, "alice");
    CHECK_OK(tomed_authenticate(cfg, tokens, &alice, NULL, &p, &err), &err);
    CHECK(p.kind == TOMED_PRINCIPAL_CERT && strcmp(p.name, "cert:alice") == 0);
    CHECK(tomed_principal_can(&p, "src", TOMED_RIGHT_READ));
    CHECK(!tomed_principal_can(&p, "src", TOMED_RIGHT_WRITE));
    CHECK(!tomed_principal_can(&p, "other", TOMED_RIGHT_READ));
    tomed_peer carol = {.transport = TOMED_TRANSPORT_TLS, .has_cert = 1};
    snprintf(carol.cert_cn, sizeof carol.cert_cn, "carol");
    CHECK_OK(tomed_authenticate(cfg, tokens, &carol, NULL, &p, &err), &err);
    CHECK(p.kind == TOMED_PRINCIPAL_NONE && strcmp(p.name, "cert:carol") == 0);
    tomed_tokens_free(tokens);
}

/* Bearer tokens: created with their secret shown once, kept on disk as a
 * hash, scoped, and refused once revoked. */
static void check_tokens(tomed_config *cfg, const char *dir)
{
    tome_error err = {0};
    tomed_principal p;
    tomed_tokens *tokens;
    CHECK_OK(tomed_tokens_open(dir, &tokens, &err), &err);
    tomed_scope scopes[2] = {{"src", TOMED_RIGHT_READ},
                             {"docs", TOMED_RIGHT_READ | TOMED_RIGHT_WRITE}};
    json_t *token;
    char *secret, header[128];
    CHECK_OK(tomed_tokens_create(tokens, "ci", scopes, 2, &token, &secret, &err), &err);
    CHECK(strncmp(secret, "tome_", 5) == 0 && strlen(secret) == 69);
    CHECK(json_object_get(token, "sha256") == NULL);
    CHECK(tomed_tokens_create(tokens, "ci", scopes, 1, &token, &secret, &err) == TOME_EEXIST);
    tomed_tokens_free(tokens);

    /* Reloaded from disk, where only the hash is. */
    char path[4200], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/tokens.json", dir);
    CHECK_OK(tome_read_file(path, 1 << 20, &text, &len, &err), &err);
    CHECK(strstr(text, secret) == NULL);
    free(text);
    CHECK_OK(tomed_tokens_open(dir, &tokens, &err), &err);
    tomed_peer remote = {.transport = TOMED_TRANSPORT_TLS};
    snprintf(header, sizeof header, "Bearer %s", secret);
    CHECK_OK(tomed_authenticate(cfg, tokens, &remote, header, &p, &err), &err);
    CHECK(p.kind == TOMED_PRINCIPAL_TOKEN && strcmp(p.name, "token:ci") == 0);
    CHECK(tomed_principal_can(&p, "src", TOMED_RIGHT_READ));
    CHECK(!tomed_principal_can(&p, "src", TOMED_RIGHT_WRITE));
    CHECK(tomed_principal_can(&p, "docs", TOMED_RIGHT_WRITE));
    CHECK(!tomed_principal_can(&p, "other", TOMED_RIGHT_READ));
    CHECK(tomed_authenticate(cfg, tokens, &remote, "Bearer tome_00", &p, &err) == TOME_EPERM);
    CHECK(tomed_authenticate(cfg, tokens, &remote, "Basic abc", &p, &err) == TOME_EPERM);
    CHECK_OK(tomed_tokens_revoke(tokens, json_string_value(json_object_get(token, "id")), &err),
             &err);
    CHECK(tomed_authenticate(cfg, tokens, &remote, header, &p, &err) == TOME_EPERM);
    CHECK(tomed_tokens_revoke(tokens, "1", &err) == TOME_ENOTFOUND);
    CHECK_OK(tomed_authenticate(cfg, tokens, &remote, NULL, &p, &err), &err);
    CHECK(p.kind == TOMED_PRINCIPAL_NONE && p.name[0] == '\0');
    json_decref(token);
    free(secret);
    tomed_tokens_free(tokens);
}

/* A tokens file that is not as tomed wrote it is refused, naming the
 * record and what is wrong, and left as it is. */
static void check_damaged_tokens(const char *dir)
{
    static const struct {
        const char *doc, *why;
    } cases[] = {
        {"{\"tokens\": []}", "no next_id"},
        {"{\"next_id\": 2, \"tokens\": {}}", "no tokens array"},
        {"{\"next_id\": 2, \"tokens\": [7]}", "record 1 is not an object"},
        {"{\"next_id\": 2, \"tokens\": [{\"id\": \"1\", \"sha256\": \"%s\", "
         "\"created_at\": \"t\", \"scopes\": [{\"corpus\": \"src\", \"rights\": \"read\"}]}]}",
         "record 1 has no name"},
        {"{\"next_id\": 2, \"tokens\": [{\"id\": \"2\", \"name\": \"a\", \"sha256\": \"%s\", "
         "\"created_at\": \"t\", \"scopes\": [{\"corpus\": \"src\", \"rights\": \"read\"}]}]}",
         "record 1 has no id from 1 to below next_id"},
        {"{\"next_id\": 2, \"tokens\": [{\"id\": \"1\", \"name\": \"a\", \"sha256\": \"ABC\", "
         "\"created_at\": \"t\", \"scopes\": [{\"corpus\": \"src\", \"rights\": \"read\"}]}]}",
         "record 1 has no SHA-256 hash"},
        {"{\"next_id\": 2, \"tokens\": [{\"id\": \"1\", \"name\": \"a\", \"sha256\": \"%s\", "
         "\"created_at\": \"t\", \"scopes\": [{\"rights\": \"read\"}]}]}",
         "record 1 has a scope without a corpus name and 'read' or 'write'"},
        {"{\"next_id\": 2, \"tokens\": [{\"id\": \"1\", \"name\": \"a\", \"sha256\": \"%s\", "
         "\"created_at\": \"t\", \"scopes\": [{\"corpus\": \"src\", \"rights\": \"all\"}]}]}",
         "record 1 has a scope without a corpus name and 'read' or 'write'"},
        {"{\"next_id\": 2, \"tokens\": [{\"id\": \"1\", \"name\": \"a\", \"sha256\": \"%s\", "
         "\"created_at\": \"t\", \"scopes\": [{\"corpus\": \"src\", \"rights\": 1}]}]}",
         "record 1 has a scope without a corpus name and 'read' or 'write'"},
        {"{\"next_id\": 2, \"tokens\": [{\"id\": \"1\", \"name\": \"a\", \"sha256\": \"%s\", "
         "\"created_at\": \"t\", \"scopes\": []}]}",
         "record 1 has no list of 1 to 16 scopes"},
        {"{\"next_id\": 3, \"tokens\": [{\"id\": \"1\", \"name\": \"a\", \"sha256\": \"%s\", "
         "\"created_at\": \"t\", \"scopes\": [{\"corpus\": \"*\", \"rights\": \"write\"}]}, "
         "{\"id\": \"2\", \"name\": \"a\", \"sha256\": \"%s\", \"created_at\": \"t\", "
         "\"scopes\": [{\"corpus\": \"src\", \"rights\": \"read\"}]}]}",
         "record 2 has the id or name of an earlier one"},
    };
    const char *hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char path[4200], doc[1024], *back;
    size_t len;
    snprintf(path, sizeof path, "%s/tokens.json", dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tome_error err = {0};
        tomed_tokens *tokens = NULL;
        snprintf(doc, sizeof doc, cases[i].doc, hash, hash);
        CHECK_OK(tome_write_file_atomic(path, doc, strlen(doc), &err), &err);
        CHECKF(tomed_tokens_open(dir, &tokens, &err) == TOME_EFORMAT && !tokens,
               "a damaged tokens file opened: %s", doc);
        CHECKF(strstr(err.msg, cases[i].why) != NULL, "'%s' does not say '%s'", err.msg,
               cases[i].why);
        CHECK_OK(tome_read_file(path, 1 << 20, &back, &len, &err), &err);
        CHECK(len == strlen(doc) && memcmp(back, doc, len) == 0);
        free(back);
    }
    remove(path);
}

static void test_principals(const char *dir)
{
    tomed_config *cfg = principals_config();
    check_peers(cfg, dir);
    check_tokens(cfg, dir);
    check_damaged_tokens(dir);
    free(cfg);
}

static void remove_dir(const char *dir)
{
    static const char *const files[] = {"tomed.conf", "bad.conf", "tokens.json"};
    char path[4200];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        remove(path);
    }
    CHECKF(remove(dir) == 0, "%s is not empty at the end", dir);
}

/* A POSIX access ACL, in the kernel's xattr form, denying uid `denied`
 * what the mode's other bits allow. */
static int deny_by_acl(const char *path, uint32_t denied)
{
    struct {
        uint16_t tag, perm;
        uint32_t id;
    } acl[] = {{0x01, 6, UINT32_MAX},
               {0x02, 0, denied},
               {0x04, 4, UINT32_MAX},
               {0x10, 4, UINT32_MAX},
               {0x20, 4, UINT32_MAX}};
    unsigned char xattr[4 + sizeof acl];
    uint32_t version = 2;
    memcpy(xattr, &version, 4);
    memcpy(xattr + 4, acl, sizeof acl);
    return setxattr(path, "system.posix_acl_access", xattr, sizeof xattr, 0);
}

static void test_peer_access(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/peer.txt", dir);
    write_text(path, "x\n");
    REQUIRE(chmod(path, 0604) == 0, "chmod %s", path);
    int fd = open(path, O_RDONLY);
    REQUIRE(fd >= 0, "open %s", path);
    /* Root reads everything, so as root the file goes to a plain uid. */
    REQUIRE(geteuid() != 0 || fchown(fd, 4321, 4322) == 0, "chown %s", path);
    struct stat st;
    REQUIRE(fstat(fd, &st) == 0, "fstat %s", path);
    uid_t me = st.st_uid, other = me + 1000;
    gid_t mine = st.st_gid, theirs = mine + 1000;
    tomed_peer owner = {.uid = me, .gid = theirs};
    tomed_peer group = {.uid = other, .gid = mine};
    tomed_peer supplementary = {
        .uid = other, .gid = theirs, .n_groups = 2, .groups = {theirs + 1, mine}};
    tomed_peer stranger = {.uid = other, .gid = theirs};
    tomed_peer root = {.uid = 0, .gid = 0};
    CHECK(tomed_peer_may_open(&owner, fd, R_OK));
    CHECK(!tomed_peer_may_open(&owner, fd, R_OK | X_OK));
    /* The group class has no bits: the other bits do not apply to it. */
    CHECK(!tomed_peer_may_open(&group, fd, R_OK));
    CHECK(!tomed_peer_may_open(&supplementary, fd, R_OK));
    CHECK(tomed_peer_may_open(&stranger, fd, R_OK));
    CHECK(!tomed_peer_may_open(&stranger, fd, X_OK));
    CHECK(tomed_peer_may_open(&root, fd, R_OK | X_OK));
    REQUIRE(chmod(path, 0640) == 0, "chmod %s", path);
    CHECK(tomed_peer_may_open(&group, fd, R_OK));
    CHECK(tomed_peer_may_open(&supplementary, fd, R_OK));
    CHECK(!tomed_peer_may_open(&stranger, fd, R_OK));
    /* The other bits allow, but an ACL may deny this very uid: refused. */
    REQUIRE(chmod(path, 0644) == 0, "chmod %s", path);
    CHECKF(deny_by_acl(path, (uint32_t)other) == 0, "cannot set an ACL on %s", path);
    CHECK(!tomed_peer_may_open(&stranger, fd, R_OK));
    CHECK(tomed_peer_may_open(&owner, fd, R_OK));
    close(fd);
    unlink(path);
}

int main(void)
{
    const char *dir = check_tmpdir();
    test_config(dir);
    test_engine_keys(dir);
    test_remote_config(dir);
    test_names_and_rights();
    test_principals(dir);
    test_peer_access(dir);
    remove_dir(dir);
    return check_finish();
}
