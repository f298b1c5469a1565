/*
 * cmd_status.c - `tome status`: is the daemon there, and is it ready?
 *
 * Health says the process answers; readiness says the store is open and
 * the model loaded.  A daemon that answers but is not ready (still loading
 * a large model, or draining for shutdown) exits with the "busy" status,
 * so `until tome status -q; do sleep 5; done` waits for a daemon to come
 * up, and a monitoring check can tell "down" (3) from "not yet" (7).
 */
#include "client/client.h"

static const char *text_of(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "?";
}

/* "engine: remote (model M), 1 of 2 replicas up" and one line each. */
static void print_engine(json_t *engine)
{
    json_t *replicas = json_object_get(engine, "replicas"), *r;
    size_t i, up = 0;
    if (!engine) return;
    json_array_foreach(replicas, i, r) up += json_is_true(json_object_get(r, "up"));
    printf("engine: %s%s", text_of(engine, "kind"),
           json_is_true(json_object_get(engine, "healthy")) ? "" : " (unhealthy)");
    if (!replicas) {
        printf("\n");
        return;
    }
    printf(", model %s, %zu of %zu replicas up\n", text_of(engine, "model"), up,
           json_array_size(replicas));
    json_array_foreach(replicas, i, r) {
        const char *error = json_string_value(json_object_get(r, "error"));
        printf("  %s %s, %lld corpora%s%s\n", text_of(r, "url"),
               json_is_true(json_object_get(r, "up")) ? "up" : "down",
               json_integer_value(json_object_get(r, "corpora")), error ? ": " : "",
               error ? error : "");
    }
}

static void print_status(const tome_client *c, json_t *health, json_t *ready, const tome_error *why)
{
    const char *where = c->endpoint.host ? c->endpoint.host : c->endpoint.socket_path;
    printf("tomed %s at %s, up %.0f s\n", text_of(health, "version"), where,
           json_number_value(json_object_get(health, "uptime_s")));
    if (ready)
        printf("ready: model %s, store %s%s\n", text_of(ready, "model"), text_of(ready, "store"),
               json_is_true(json_object_get(ready, "draining")) ? ", draining" : "");
    else
        printf("not ready: %s\n", why->msg);
    print_engine(ready ? json_object_get(ready, "engine") : NULL);
}

int tome_cmd_status(tome_client *c, const tome_options *opt, tome_error *err)
{
    json_t *health = NULL, *ready = NULL;
    if (tome_api_json(c, "GET", "/v1/health", NULL, &health, NULL, err)) return err->code;
    int rc = tome_api_json(c, "GET", "/v1/ready", NULL, &ready, NULL, err);
    if (rc == 0 || rc == TOME_EBUSY) {
        if (opt->json) {
            json_t *both = json_pack("{s:O, s:O?}", "health", health, "ready", ready);
            int print_rc = tome_print_json(both, err);
            json_decref(both);
            if (rc == 0) rc = print_rc;
        } else if (!tome_output_quiet()) {
            print_status(c, health, ready, err);
        }
    }
    json_decref(health);
    json_decref(ready);
    return rc;
}
