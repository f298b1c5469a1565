/*
 * routes_health.c - GET /v1/health, GET /v1/ready, GET /metrics.
 *
 * Health answers whenever the loop turns, for any peer, so that a process
 * supervisor can tell a live daemon from a hung one without credentials.
 * Readiness adds what clients need to get real work done: the model loaded
 * and the daemon not draining; it is 503 with Retry-After otherwise, so a
 * load balancer takes the node out of rotation during start-up and
 * shutdown.  /metrics needs a principal: it reveals corpus activity.
 */
#include "config.h"

#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/metrics.h"
#include "daemon/router.h"
#include "daemon/server.h"
#include "engine/v4.h"

#include <event2/buffer.h>

void tomed_route_health(tomed_request *r)
{
    tomed_reply_json(r, 200,
                     json_pack("{s:s, s:s, s:f}", "status", "ok", "version", PACKAGE_VERSION,
                               "uptime_s", tome_now() - r->server->started));
}

void tomed_route_ready(tomed_request *r)
{
    const char *model = "", *why = NULL;
    int loaded = tomed_jobs_model_ready(r->server->jobs, &model, &why);
    int draining = r->server->draining;
    json_t *body =
        json_pack("{s:b, s:s, s:s, s:b, s:s, s:s, s:s, s:s}", "ready", loaded && !draining, "model",
                  model, "store", "ok", "draining", draining, "kernels",
                  v4_kernels_name((v4_kernels)r->server->cfg.kernels), "isa", v4_kernels_isa(),
                  "numerics", v4_numerics_name((v4_numerics)r->server->cfg.numerics), "weights",
                  v4_weights_name((v4_weights)r->server->cfg.weights));
    if (why) json_object_set_new(body, "reason", json_string(why));
    json_object_set_new(body, "engine", tomed_engine_status(tomed_jobs_engine(r->server->jobs)));
    tomed_reply_json(r, loaded && !draining ? 200 : 503, body);
}

void tomed_route_metrics(tomed_request *r)
{
    struct evbuffer *out = evbuffer_new();
    if (!out) {
        tomed_reply_error(r, TOME_ENOMEM, "out of memory");
        return;
    }
    int jobs[5];
    tomed_jobs_count(r->server->jobs, jobs);
    tomed_metrics_render(out, r->server->cfg.state_dir, jobs);
    tomed_reply_text(r, 200, "text/plain; version=0.0.4", out);
    evbuffer_free(out);
}
