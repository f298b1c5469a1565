/*
 * auth.c - who is asking, and what they may do.
 *
 * Identity comes from the transport, never from the request alone:
 *   - on the Unix socket, the peer's uid and gid read with SO_PEERCRED when
 *     the connection was accepted (the kernel vouches for them);
 *   - on TLS, a bearer token (checked against the hashed registry) or, when
 *     no token is sent, the verified client certificate's common name mapped
 *     through `client_cert` rules.
 * The result is a principal: a name for logs and a list of scopes.  Routes
 * then ask tomed_principal_can() about the corpus they touch.  The rules are
 * read from the current configuration on every request, so a SIGHUP that
 * changes allow_uids takes effect at once.
 */
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/types.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

int tomed_principal_can(const tomed_principal *p, const char *corpus, int rights)
{
    if (p->admin) return 1;
    for (int i = 0; i < p->n_scopes; i++) {
        const tomed_scope *s = &p->scopes[i];
        int covers = strcmp(s->corpus, "*") == 0 || (corpus && strcmp(s->corpus, corpus) == 0);
        if (covers && (s->rights & rights) == rights) return 1;
    }
    return 0;
}

static int id_listed(unsigned id, const unsigned *ids, int n)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

static void grant_all(tomed_principal *p, int rights)
{
    p->n_scopes = 1;
    snprintf(p->scopes[0].corpus, sizeof p->scopes[0].corpus, "*");
    p->scopes[0].rights = rights;
}

static void unix_principal(const tomed_config *cfg, const tomed_peer *peer, tomed_principal *p)
{
    snprintf(p->name, sizeof p->name, "uid:%u", (unsigned)peer->uid);
    if (id_listed(peer->uid, cfg->admin_uids, cfg->n_admin_uids)) {
        p->kind = TOMED_PRINCIPAL_UNIX;
        p->admin = 1;
        grant_all(p, TOMED_RIGHT_READ | TOMED_RIGHT_WRITE);
    } else if (id_listed(peer->uid, cfg->allow_uids, cfg->n_allow_uids) ||
               id_listed(peer->gid, cfg->allow_gids, cfg->n_allow_gids)) {
        p->kind = TOMED_PRINCIPAL_UNIX;
        grant_all(p, TOMED_RIGHT_READ | TOMED_RIGHT_WRITE);
    }
}

static void cert_principal(const tomed_config *cfg, const tomed_peer *peer, tomed_principal *p)
{
    for (int i = 0; i < cfg->n_cert_rules; i++) {
        const tomed_cert_rule *rule = &cfg->cert_rules[i];
        if (strcmp(rule->common_name, peer->cert_cn) != 0) continue;
        if (p->kind == TOMED_PRINCIPAL_NONE) {
            p->kind = TOMED_PRINCIPAL_CERT;
            snprintf(p->name, sizeof p->name, "cert:%s", peer->cert_cn);
        }
        if (p->n_scopes < TOMED_MAX_SCOPES) p->scopes[p->n_scopes++] = rule->scope;
    }
}

int tomed_authenticate(const tomed_config *cfg, const tomed_tokens *tokens, const tomed_peer *peer,
                       const char *authorization, tomed_principal *p, tome_error *err)
{
    memset(p, 0, sizeof *p);
    if (peer->transport == TOMED_TRANSPORT_UNIX) {
        unix_principal(cfg, peer, p);
        return 0;
    }
    if (authorization) {
        if (strncasecmp(authorization, "Bearer ", 7) != 0)
            return tome_errorf(err, TOME_EPERM, "Authorization must be 'Bearer SECRET'");
        const char *secret = authorization + 7;
        while (*secret == ' ') secret++;
        if (tomed_tokens_authenticate(tokens, secret, p) != 0)
            return tome_errorf(err, TOME_EPERM, "the bearer token is not valid (revoked?)");
        return 0;
    }
    if (peer->has_cert) {
        cert_principal(cfg, peer, p);
        if (p->kind == TOMED_PRINCIPAL_NONE)
            snprintf(p->name, sizeof p->name, "cert:%s", peer->cert_cn);
    }
    return 0;
}
