/*
 * tokens.c - bearer tokens for TCP clients.
 *
 * An administrator creates a token over the Unix socket with a name and
 * scopes (corpus + read/write).  The secret is 32 random bytes, returned
 * once as "tome_" + hex; only its SHA-256 is kept, in STATE_DIR/tokens.json,
 * rewritten atomically on every change, so a stolen state directory does not
 * yield usable credentials.  Revoking deletes the record: the next request
 * that presents the secret finds nothing and is answered 401.
 *
 * The registry lives in memory as the JSON document it is saved as; it is
 * small (one entry per token) and only the loop thread touches it.
 */
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/types.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SECRET_PREFIX "tome_"

struct tomed_tokens {
    char path[TOMED_PATH_MAX];
    json_t *doc; /* {"next_id": N, "tokens": [{id, name, sha256, scopes, created_at}]} */
};

static void now_rfc3339(char *out, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Whether `s` is n lowercase hex digits. */
static int is_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", s[i])) return 0;
    return 1;
}

int tomed_scope_from_json(json_t *item, tomed_scope *out)
{
    const char *corpus = json_string_value(json_object_get(item, "corpus"));
    if (!corpus || (strcmp(corpus, "*") != 0 && !tomed_corpus_name_valid(corpus)))
        return TOMED_SCOPE_BAD_CORPUS;
    const char *rights = json_string_value(json_object_get(item, "rights"));
    if (!rights || tomed_rights_parse(rights, &out->rights) != 0) return TOMED_SCOPE_BAD_RIGHTS;
    snprintf(out->corpus, sizeof out->corpus, "%s", corpus);
    return 0;
}

/* What is wrong with record `rec` (as tomed_tokens_create writes them),
 * as a phrase in why[cap]: 0 when nothing is.  Authentication reads the
 * records as they are, so one without a hash, with a scope it cannot read,
 * or an id or name that is not its own would grant or name something other
 * than what was created. */
static int record_problem(json_t *rec, json_int_t next_id, char *why, size_t cap)
{
    const char *id = json_string_value(json_object_get(rec, "id"));
    const char *name = json_string_value(json_object_get(rec, "name"));
    json_t *scopes = json_object_get(rec, "scopes"), *scope;
    char *end = NULL;
    long long number = id ? strtoll(id, &end, 10) : 0;
    if (!json_is_object(rec)) return snprintf(why, cap, "is not an object");
    if (!id || end == id || *end || number < 1 || number >= next_id)
        return snprintf(why, cap, "has no id from 1 to below next_id");
    if (!name || !*name) return snprintf(why, cap, "has no name");
    if (!is_hex(json_string_value(json_object_get(rec, "sha256")), 64))
        return snprintf(why, cap, "has no SHA-256 hash");
    if (!json_is_string(json_object_get(rec, "created_at")))
        return snprintf(why, cap, "has no creation time");
    if (!json_is_array(scopes) || json_array_size(scopes) == 0 ||
        json_array_size(scopes) > TOMED_MAX_SCOPES)
        return snprintf(why, cap, "has no list of 1 to %d scopes", TOMED_MAX_SCOPES);
    size_t i;
    json_array_foreach(scopes, i, scope) {
        tomed_scope parsed;
        if (tomed_scope_from_json(scope, &parsed) != 0)
            return snprintf(why, cap, "has a scope without a corpus name and 'read' or 'write'");
    }
    return 0;
}

/* Refuse a tokens file that tomed did not write as it stands: every record
 * sound, ids and names unique, next_id past every id. */
static int check_tokens(const tomed_tokens *t, tome_error *err)
{
    json_t *next = json_object_get(t->doc, "next_id"), *list = json_object_get(t->doc, "tokens");
    if (!json_is_integer(next) || json_integer_value(next) < 1)
        return tome_errorf(err, TOME_EFORMAT, "%s: no next_id", t->path);
    if (!json_is_array(list)) return tome_errorf(err, TOME_EFORMAT, "%s: no tokens array", t->path);
    size_t i, j;
    json_t *rec, *other;
    json_array_foreach(list, i, rec) {
        char why[96];
        int bad = record_problem(rec, json_integer_value(next), why, sizeof why);
        for (j = 0; !bad && j < i; j++) {
            other = json_array_get(list, j);
            if (json_equal(json_object_get(rec, "id"), json_object_get(other, "id")) ||
                json_equal(json_object_get(rec, "name"), json_object_get(other, "name")))
                bad = snprintf(why, sizeof why, "has the id or name of an earlier one");
        }
        if (bad)
            return tome_errorf(err, TOME_EFORMAT,
                               "%s: token record %zu %s (the file is not as tomed wrote it: "
                               "restore it from a backup, or remove the record)",
                               t->path, i + 1, why);
    }
    return 0;
}

int tomed_tokens_open(const char *state_dir, tomed_tokens **out, tome_error *err)
{
    tomed_tokens *t = calloc(1, sizeof *t);
    if (!t) return tome_errorf(err, TOME_ENOMEM, "tokens");
    snprintf(t->path, sizeof t->path, "%s/tokens.json", state_dir);
    struct stat st;
    if (stat(t->path, &st) != 0) {
        t->doc = json_pack("{s:i, s:[]}", "next_id", 1, "tokens");
    } else {
        json_error_t jerr;
        t->doc = json_load_file(t->path, 0, &jerr);
        if (!t->doc) tome_errorf(err, TOME_EFORMAT, "%s: %s", t->path, jerr.text);
        if (!t->doc || check_tokens(t, err) != 0) {
            tomed_tokens_free(t);
            return TOME_EFORMAT;
        }
    }
    if (!t->doc) {
        free(t);
        return tome_errorf(err, TOME_ENOMEM, "tokens");
    }
    *out = t;
    return 0;
}

void tomed_tokens_free(tomed_tokens *t)
{
    if (!t) return;
    json_decref(t->doc);
    free(t);
}

static int save(tomed_tokens *t, tome_error *err)
{
    char *text = json_dumps(t->doc, JSON_INDENT(1) | JSON_SORT_KEYS);
    if (!text) return tome_errorf(err, TOME_ENOMEM, "%s", t->path);
    int rc = tome_write_file_atomic(t->path, text, strlen(text), err);
    free(text);
    if (rc == 0 && chmod(t->path, 0600) != 0)
        rc = tome_errorf(err, TOME_EIO, "%s: %s", t->path, strerror(errno));
    return rc;
}

/* The public view of a record: everything but the hash. */
static json_t *public_view(json_t *rec)
{
    return json_pack("{s:O, s:O, s:O, s:O}", "id", json_object_get(rec, "id"), "name",
                     json_object_get(rec, "name"), "created_at", json_object_get(rec, "created_at"),
                     "scopes", json_object_get(rec, "scopes"));
}

int tomed_tokens_create(tomed_tokens *t, const char *name, const tomed_scope *scopes, int n_scopes,
                        json_t **token_json, char **secret, tome_error *err)
{
    json_t *list = json_object_get(t->doc, "tokens");
    size_t i;
    json_t *rec;
    json_array_foreach(list, i, rec) {
        if (strcmp(json_string_value(json_object_get(rec, "name")), name) == 0)
            return tome_errorf(err, TOME_EEXIST, "a token named '%s' exists", name);
    }
    uint8_t raw[32], hash[32];
    if (RAND_bytes(raw, sizeof raw) != 1) return tome_errorf(err, TOME_EINTERNAL, "RAND_bytes");
    char *s = malloc(sizeof SECRET_PREFIX + 64);
    if (!s) return tome_errorf(err, TOME_ENOMEM, "token");
    memcpy(s, SECRET_PREFIX, sizeof SECRET_PREFIX - 1);
    tome_hex(raw, sizeof raw, s + sizeof SECRET_PREFIX - 1);
    char hash_hex[65], id[32], created[32];
    tome_sha256(s, strlen(s), hash);
    tome_hex(hash, sizeof hash, hash_hex);
    json_int_t next = json_integer_value(json_object_get(t->doc, "next_id"));
    snprintf(id, sizeof id, "%lld", (long long)next);
    now_rfc3339(created, sizeof created);
    json_t *scope_list = json_array();
    for (int k = 0; k < n_scopes; k++)
        json_array_append_new(scope_list, json_pack("{s:s, s:s}", "corpus", scopes[k].corpus,
                                                    "rights", tomed_rights_name(scopes[k].rights)));
    rec = json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", id, "name", name, "sha256", hash_hex,
                    "created_at", created, "scopes", scope_list);
    json_array_append_new(list, rec);
    json_object_set_new(t->doc, "next_id", json_integer(next + 1));
    int rc = save(t, err);
    if (rc != 0) {
        json_array_remove(list, json_array_size(list) - 1);
        free(s);
        return rc;
    }
    *token_json = public_view(rec);
    *secret = s;
    return 0;
}

int tomed_tokens_revoke(tomed_tokens *t, const char *id, tome_error *err)
{
    json_t *list = json_object_get(t->doc, "tokens");
    size_t i;
    json_t *rec;
    json_array_foreach(list, i, rec) {
        if (strcmp(json_string_value(json_object_get(rec, "id")), id) == 0) {
            json_incref(rec);
            json_array_remove(list, i);
            int rc = save(t, err);
            if (rc != 0) json_array_insert(list, i, rec);
            json_decref(rec);
            return rc;
        }
    }
    return tome_errorf(err, TOME_ENOTFOUND, "token '%s' does not exist", id);
}

json_t *tomed_tokens_list(const tomed_tokens *t)
{
    json_t *out = json_array();
    size_t i;
    json_t *rec;
    json_array_foreach(json_object_get(t->doc, "tokens"), i, rec) {
        json_array_append_new(out, public_view(rec));
    }
    return out;
}

int tomed_tokens_authenticate(const tomed_tokens *t, const char *secret, tomed_principal *p)
{
    uint8_t hash[32];
    char hash_hex[65];
    tome_sha256(secret, strlen(secret), hash);
    tome_hex(hash, sizeof hash, hash_hex);
    size_t i;
    json_t *rec;
    json_array_foreach(json_object_get(t->doc, "tokens"), i, rec) {
        const char *stored = json_string_value(json_object_get(rec, "sha256"));
        if (!stored || strlen(stored) != 64 || CRYPTO_memcmp(stored, hash_hex, 64) != 0) continue;
        memset(p, 0, sizeof *p);
        p->kind = TOMED_PRINCIPAL_TOKEN;
        snprintf(p->name, sizeof p->name, "token:%s",
                 json_string_value(json_object_get(rec, "name")));
        size_t k;
        json_t *scope;
        json_array_foreach(json_object_get(rec, "scopes"), k, scope) {
            if (p->n_scopes == TOMED_MAX_SCOPES) break;
            if (tomed_scope_from_json(scope, &p->scopes[p->n_scopes]) == 0) p->n_scopes++;
        }
        return 0;
    }
    return TOME_EPERM;
}
