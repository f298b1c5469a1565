/*
 * tls.c - the OpenSSL server context behind the TCP listener.
 *
 * One function builds a complete context from the configuration, so that
 * start-up, --check-config and a SIGHUP reload all go through the same
 * checks: TLS 1.2 as the floor (1.3 is negotiated whenever the client can),
 * the operator's cipher policy for 1.2 and suites for 1.3, the server's
 * preference order, no renegotiation, no compression, and the certificate
 * chain matched against its key.  With a client CA, a client certificate is
 * requested and, when one is sent, must verify: a wrong certificate ends the
 * handshake.  A client without one may still use a bearer token.
 */
#include "daemon/conf.h"
#include "daemon/tls.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>

static int openssl_error(tome_error *err, const char *what, const char *path)
{
    char text[256] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, text, sizeof text);
    ERR_clear_error();
    return tome_errorf(err, TOME_EFORMAT, "%s %s: %s", what, path, text);
}

int tomed_tls_context_new(const tomed_config *cfg, SSL_CTX **out, tome_error *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return tome_errorf(err, TOME_ENOMEM, "TLS context");
    int rc = 0;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1)
        rc = openssl_error(err, "tls_ciphers", cfg->tls_ciphers);
    else if (SSL_CTX_set_ciphersuites(ctx, cfg->tls_ciphersuites) != 1)
        rc = openssl_error(err, "tls_ciphersuites", cfg->tls_ciphersuites);
    else if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1)
        rc = openssl_error(err, "tls_cert", cfg->tls_cert);
    else if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1)
        rc = openssl_error(err, "tls_key", cfg->tls_key);
    else if (SSL_CTX_check_private_key(ctx) != 1)
        rc = openssl_error(err, "tls_key does not match tls_cert", cfg->tls_key);
    if (rc == 0 && cfg->tls_client_ca[0]) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_client_ca);
        if (!names || SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1) {
            if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
            rc = openssl_error(err, "tls_client_ca", cfg->tls_client_ca);
        } else {
            SSL_CTX_set_client_CA_list(ctx, names);
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
            SSL_CTX_set_verify_depth(ctx, 4);
        }
    }
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    /* A session cache keyed to this daemon; tickets would outlive a reload
     * of the client CA, so they are off. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"tomed", 5);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
    *out = ctx;
    return 0;
}

int tomed_tls_peer_cn(SSL *ssl, char *cn, size_t cap)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (!cert || SSL_get_verify_result(ssl) != X509_V_OK) return TOME_ENOTFOUND;
    X509_NAME *subject = X509_get_subject_name(cert);
    int n = X509_NAME_get_text_by_NID(subject, NID_commonName, cn, (int)cap);
    return n > 0 ? 0 : TOME_ENOTFOUND;
}
