/*
 * cmd_token.c - `tome token create|ls|revoke`: bearer tokens for TLS clients.
 *
 * `create` prints the secret on stdout, alone on its line, because the
 * daemon shows it exactly once and the natural next step is
 * `tome token create ci > ci.token && chmod 600 ci.token`.  The scope is
 * one corpus (or '*') with read or write rights; read is the default,
 * the least a token can do.
 */
#include "client/client.h"

int tome_token_create(tome_client *c, const tome_options *opt, tome_error *err)
{
    const char *corpus = opt->scope_corpus ? opt->scope_corpus : "*";
    const char *rights = opt->rights ? opt->rights : "read";
    json_t *body = json_pack("{s:s, s:[{s:s, s:s}]}", "name", opt->args[0], "scopes", "corpus",
                             corpus, "rights", rights);
    json_t *reply = NULL;
    int rc = tome_api_json(c, "POST", "/v1/tokens", body, &reply, NULL, err);
    json_decref(body);
    if (rc) return rc;
    const char *secret = json_string_value(json_object_get(reply, "secret"));
    if (opt->json) {
        rc = tome_print_json(reply, err);
    } else if (!secret) {
        rc = tome_errorf(err, TOME_EFORMAT, "tomed's answer holds no secret");
    } else {
        const char *id = json_string_value(json_object_get(json_object_get(reply, "token"), "id"));
        printf("%s\n", secret);
        tome_note("token %s (id %s) may %s %s; the secret is shown only this once", opt->args[0],
                  id ? id : "?", rights, corpus);
    }
    json_decref(reply);
    return rc;
}

int tome_token_ls(tome_client *c, const tome_options *opt, tome_error *err)
{
    return tome_request_and_show(c, opt, "GET", "/v1/tokens", NULL, tome_view_tokens, err);
}

int tome_token_revoke(tome_client *c, const tome_options *opt, tome_error *err)
{
    int rc = tome_request_named(c, opt, "DELETE", "/v1/tokens/", opt->args[0], "", NULL, err);
    if (rc == 0) tome_note("revoked token %s", opt->args[0]);
    return rc;
}
