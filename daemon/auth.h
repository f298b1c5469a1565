/*
 * auth.h - principals, rights, peers and bearer tokens (auth.c, tokens.c, peer_access.c).
 */
#ifndef TOMED_AUTH_H
#define TOMED_AUTH_H

#include <jansson.h>
#include <sys/types.h>

#include "common/common.h"
#include "daemon/conf.h"
#include "daemon/types.h"

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

/* Scope `item` as the token API and the token records hold it, an object
 * {"corpus": a corpus name or "*", "rights": "read" or "write"}, into
 * *out: 0, or which field is wrong (the corpus is checked first). */
enum { TOMED_SCOPE_BAD_CORPUS = 1, TOMED_SCOPE_BAD_RIGHTS = 2 };
int tomed_scope_from_json(json_t *item, tomed_scope *out);

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

#define TOMED_PEER_GROUPS 256

/* What the listener learned about the peer when it connected. */
typedef struct tomed_peer {
    tomed_transport transport;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    /* Supplementary groups (SO_PEERGROUPS); a peer in more than
     * TOMED_PEER_GROUPS keeps none here, which only ever means fewer
     * rights on the files of a server-path ingest. */
    int n_groups;
    gid_t groups[TOMED_PEER_GROUPS];
    int has_cert;
    char cert_cn[256]; /* the verified client certificate's subject CN */
    char address[64];
} tomed_peer;

/* Could the Unix peer (a tomed_peer *, as a void * so that it serves as
 * ingest_access's `may`) open the file open on `fd` for `want` (access(2)'s
 * R_OK and X_OK) with its own credentials?  Checked on the descriptor, by
 * the permission bits; non-zero allows.  See peer_access.c for the design. */
int tomed_peer_may_open(void *peer, int fd, int want);

/* The principal of a request from `peer` with the given Authorization
 * header (or NULL).  TOME_EPERM with a message when credentials were
 * presented and are not valid (a 401). */
int tomed_authenticate(const tomed_config *cfg, const tomed_tokens *tokens, const tomed_peer *peer,
                       const char *authorization, tomed_principal *p, tome_error *err);

#endif
