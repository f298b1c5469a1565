/*
 * cmd_corpus.c - `tome corpus add|ls|show|rm`: the corpora themselves.
 *
 * Creating and deleting change state, so they confirm on stderr (silenced
 * by --quiet) and print nothing on stdout unless --json asks for the
 * daemon's object; listing and showing print their result on stdout.
 */
#include "client/client.h"

int tome_corpus_add(tome_client *c, const tome_options *opt, tome_error *err)
{
    json_t *body = json_pack("{s:s}", "name", opt->args[0]);
    int rc = tome_request_and_show(c, opt, "POST", "/v1/corpora", body, NULL, err);
    json_decref(body);
    if (rc == 0) tome_note("created corpus %s", opt->args[0]);
    return rc;
}

int tome_corpus_ls(tome_client *c, const tome_options *opt, tome_error *err)
{
    return tome_request_and_show(c, opt, "GET", "/v1/corpora", NULL, tome_view_corpora, err);
}

int tome_corpus_show(tome_client *c, const tome_options *opt, tome_error *err)
{
    return tome_request_named(c, opt, "GET", "/v1/corpora/", opt->args[0], "", tome_view_corpus,
                              err);
}

int tome_corpus_rm(tome_client *c, const tome_options *opt, tome_error *err)
{
    int rc = tome_request_named(c, opt, "DELETE", "/v1/corpora/", opt->args[0], "", NULL, err);
    if (rc == 0) tome_note("deleted corpus %s", opt->args[0]);
    return rc;
}
