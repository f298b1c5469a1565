/*
 * cmd_cache.c - `tome cache ls|verify|rm`: the daemon's saved model states.
 *
 * These are administrator requests and the daemon serves them only on its
 * Unix socket; over TLS it answers 403, which exits with the "denied"
 * status like any other refusal.  `verify` exits non-zero when the daemon
 * finds the state file damaged, so a cron job can alert on it.
 */
#include "client/client.h"

#include <stdlib.h>

int tome_cache_ls(tome_client *c, const tome_options *opt, tome_error *err)
{
    return tome_request_and_show(c, opt, "GET", "/v1/cache", NULL, tome_view_states, err);
}

int tome_cache_verify(tome_client *c, const tome_options *opt, tome_error *err)
{
    char *target = tome_api_target("/v1/cache/", opt->args[0], "/verify");
    if (!target) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    json_t *reply = NULL;
    int rc = tome_api_json(c, "POST", target, NULL, &reply, NULL, err);
    free(target);
    if (rc) return rc;
    int ok = json_is_true(json_object_get(reply, "ok"));
    if (opt->json)
        rc = tome_print_json(reply, err);
    else
        printf("%s: %s\n", opt->args[0], ok ? "ok" : "damaged");
    if (rc == 0 && !ok) {
        json_t *problem = json_object_get(reply, "error");
        const char *why = json_string_value(json_object_get(problem, "message"));
        rc = tome_errorf(err, TOME_EFORMAT, "state %s is damaged: %s", opt->args[0],
                         why ? why : "tomed gave no reason");
    }
    json_decref(reply);
    return rc;
}

int tome_cache_rm(tome_client *c, const tome_options *opt, tome_error *err)
{
    int rc = tome_request_named(c, opt, "DELETE", "/v1/cache/", opt->args[0], "", NULL, err);
    if (rc == 0) tome_note("removed state %s", opt->args[0]);
    return rc;
}
