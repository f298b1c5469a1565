/*
 * tokens.c - access tokens for the daemon's TLS listener.
 *
 * Only the SHA-256 of a secret is stored, so a copy of tome.db does not
 * hand out working credentials.  A token grants read and/or write on one
 * corpus or on every corpus, until revoked.  Checks compare hashes inside
 * SQLite's index lookup; the error never repeats the secret.
 */
#include "store/store-internal.h"

#include <string.h>

static void hash_secret(const char *secret, char hex[65])
{
    uint8_t digest[32];
    tome_sha256(secret, strlen(secret), digest);
    tome_hex(digest, 32, hex);
}

int store_token_add(store *s, const char *name, const char *secret, const char *corpus,
                    unsigned scopes, int64_t *id, tome_error *err)
{
    if (strlen(secret) < 16)
        return tome_errorf(err, TOME_EINVAL, "token %s: the secret is shorter than 16 bytes", name);
    char hex[65];
    hash_secret(secret, hex);
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "INSERT INTO access_tokens(name, hash, corpus, can_read, can_write,"
                           " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, hex, -1, SQLITE_STATIC);
    store_bind_text(st, 3, corpus);
    sqlite3_bind_int(st, 4, (scopes & STORE_SCOPE_READ) != 0);
    sqlite3_bind_int(st, 5, (scopes & STORE_SCOPE_WRITE) != 0);
    sqlite3_bind_int64(st, 6, store_clock());
    rc = store_step_done(s, st, err, "adding a token");
    if (rc) return tome_error_wrap(err, "token %s", name);
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_token_revoke(store *s, const char *name, tome_error *err)
{
    sqlite3_stmt *st;
    int rc = store_prepare(s, "UPDATE access_tokens SET revoked = 1 WHERE name = ?1", &st, err);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = store_step_done(s, st, err, "revoking a token");
    if (!rc && sqlite3_changes(s->db) == 0)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: no token named %s", s->path, name);
    return rc;
}

int store_token_check(store *s, const char *secret, const char *corpus, unsigned scopes,
                      tome_error *err)
{
    char hex[65];
    hash_secret(secret, hex);
    sqlite3_stmt *st;
    int rc = store_prepare(s,
                           "UPDATE access_tokens SET last_used_at = ?5"
                           " WHERE hash = ?1 AND revoked = 0"
                           " AND (corpus IS NULL OR corpus = ?2)"
                           " AND (can_read OR NOT ?3) AND (can_write OR NOT ?4)",
                           &st, err);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, hex, -1, SQLITE_STATIC);
    /* A NULL corpus compares unequal to every scoped token, as intended. */
    store_bind_text(st, 2, corpus);
    sqlite3_bind_int(st, 3, (scopes & STORE_SCOPE_READ) != 0);
    sqlite3_bind_int(st, 4, (scopes & STORE_SCOPE_WRITE) != 0);
    sqlite3_bind_int64(st, 5, store_clock());
    rc = store_step_done(s, st, err, "checking a token");
    if (rc) return rc;
    if (sqlite3_changes(s->db) == 0)
        return tome_errorf(err, TOME_EPERM, "the token does not grant %s%s%s on %s%s",
                           scopes & STORE_SCOPE_READ ? "read" : "",
                           scopes == (STORE_SCOPE_READ | STORE_SCOPE_WRITE) ? "+" : "",
                           scopes & STORE_SCOPE_WRITE ? "write" : "",
                           corpus ? "corpus " : "every corpus", corpus ? corpus : "");
    return 0;
}
