/*
 * tls.h - the OpenSSL server context (tls.c).
 */
#ifndef TOMED_TLS_H
#define TOMED_TLS_H

#include <openssl/ssl.h>

#include "common/common.h"
#include "daemon/conf.h"

/* A server context from cfg's certificate, key, client CA and cipher
 * policy.  The caller owns it (SSL_CTX_free). */
int tomed_tls_context_new(const tomed_config *cfg, SSL_CTX **out, tome_error *err);
/* The subject common name of the verified peer certificate, if any. */
int tomed_tls_peer_cn(SSL *ssl, char *cn, size_t cap);

#endif
