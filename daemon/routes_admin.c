/*
 * routes_admin.c - tokens and the state cache, for administrators.
 *
 * The router lets only administrators on the Unix socket in here: a token
 * can never mint another token, and a TLS client can never see the cache.
 * Token requests are answered on the loop thread (the registry is small and
 * in memory); cache requests go to the store on a worker.
 */
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/router.h"
#include "daemon/server.h"
#include "daemon/storecall.h"
#include "kvstate/kvstate.h"

#include "store/store.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Tokens
 * ------------------------------------------------------------------------ */

void tomed_route_token_list(tomed_request *r)
{
    tomed_reply_json(r, 200, json_pack("{s:o}", "tokens", tomed_tokens_list(r->server->tokens)));
}

int tomed_scopes_parse(tomed_request *r, json_t *list, tomed_scope *scopes, int *n)
{
    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > TOMED_MAX_SCOPES) {
        tomed_reply_error(r, TOME_EINVAL, "'scopes' must be an array of 1 to %d objects",
                          TOMED_MAX_SCOPES);
        return -1;
    }
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item) {
        int wrong = tomed_scope_from_json(item, &scopes[i]);
        if (wrong == TOMED_SCOPE_BAD_CORPUS) {
            tomed_reply_error(r, TOME_EINVAL, "scopes[%zu].corpus must be a corpus name or '*'", i);
            return -1;
        }
        if (wrong == TOMED_SCOPE_BAD_RIGHTS) {
            tomed_reply_error(r, TOME_EINVAL, "scopes[%zu].rights must be 'read' or 'write'", i);
            return -1;
        }
    }
    *n = (int)json_array_size(list);
    return 0;
}

void tomed_route_token_create(tomed_request *r)
{
    json_t *body = tomed_request_json(r);
    if (!body) return;
    const char *name = json_string_value(json_object_get(body, "name"));
    tomed_scope scopes[TOMED_MAX_SCOPES];
    int n = 0;
    if (!name || !tomed_corpus_name_valid(name)) {
        tomed_reply_error(r, TOME_EINVAL, "'name' must be 1-64 characters of [A-Za-z0-9._-]");
    } else if (tomed_scopes_parse(r, json_object_get(body, "scopes"), scopes, &n) == 0) {
        json_t *token;
        char *secret;
        tome_error err = {0};
        if (tomed_tokens_create(r->server->tokens, name, scopes, n, &token, &secret, &err) != 0) {
            tomed_reply_tome_error(r, &err);
        } else {
            tomed_log(TOMED_LOG_INFO, "%s created token '%s'", r->principal.name, name);
            tomed_reply_json(r, 201, json_pack("{s:o, s:s}", "token", token, "secret", secret));
            free(secret);
        }
    }
    json_decref(body);
}

void tomed_route_token_revoke(tomed_request *r)
{
    tome_error err = {0};
    if (tomed_tokens_revoke(r->server->tokens, r->params[0], &err) != 0) {
        tomed_reply_tome_error(r, &err);
        return;
    }
    tomed_log(TOMED_LOG_INFO, "%s revoked token %s", r->principal.name, r->params[0]);
    tomed_reply_empty(r, 204);
}

/* ------------------------------------------------------------------------
 * The state cache
 * ------------------------------------------------------------------------ */

static void rfc3339(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *state_json(const store_kv_state *st)
{
    char created[32], used[32], id[32];
    rfc3339(st->created_at, created, sizeof created);
    rfc3339(st->last_used_at, used, sizeof used);
    snprintf(id, sizeof id, "%lld", (long long)st->id);
    return json_pack("{s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:s}", "id", id, "version",
                     (json_int_t)st->version_id, "tokens", (json_int_t)st->token_count, "bytes",
                     (json_int_t)st->bytes, "status", store_state_status_name(st->status), "model",
                     st->model_fingerprint, "created_at", created, "last_used_at", used);
}

static int list_states(tomed_call *c, store *db, tome_error *err)
{
    store_kv_state_list list = {0};
    int rc = store_state_list(db, 0, &list, err);
    if (rc != 0) return rc;
    json_t *states = json_array();
    json_int_t used = 0;
    for (size_t i = 0; i < list.n; i++) {
        json_array_append_new(states, state_json(&list.states[i]));
        if (list.states[i].status == STORE_STATE_READY) used += list.states[i].bytes;
    }
    store_state_list_free(&list);
    json_t *memory = tomed_engine_states(tomed_jobs_engine(c->server->jobs));
    size_t k;
    json_t *st;
    json_array_foreach(memory, k, st) used += json_integer_value(json_object_get(st, "bytes"));
    json_array_extend(states, memory);
    json_decref(memory);
    c->result = json_pack("{s:o, s:I, s:I}", "states", states, "used_bytes", used, "budget_bytes",
                          (json_int_t)tomed_config_cache_budget(&c->server->cfg));
    return 0;
}

/* The row of state `id`, from the full list (the store has no single-row
 * lookup; the list is one row per cached state, so this stays small). */
static int find_state(store *db, const char *id, store_kv_state_list *list, size_t *index,
                      tome_error *err)
{
    int rc = store_state_list(db, 0, list, err);
    if (rc != 0) return rc;
    for (size_t i = 0; i < list->n; i++) {
        char text[32];
        snprintf(text, sizeof text, "%lld", (long long)list->states[i].id);
        if (strcmp(text, id) == 0) {
            *index = i;
            return 0;
        }
    }
    store_state_list_free(list);
    return tome_errorf(err, TOME_ENOTFOUND, "cached state '%s' does not exist", id);
}

static int delete_state(tomed_call *c, store *db, tome_error *err)
{
    store_kv_state_list list = {0};
    size_t i;
    int rc = find_state(db, c->id, &list, &i, err);
    if (rc != 0) return rc;
    rc = store_state_delete(db, list.states[i].id, err);
    if (rc == 0 && list.states[i].path) unlink(list.states[i].path);
    if (rc == 0) tomed_engine_drop_state(tomed_jobs_engine(c->server->jobs), c->id);
    store_state_list_free(&list);
    return rc;
}

/* A saved state is checked as a restore would: the file opens for this
 * model, and every section's checksum matches. */
static int verify_state(tomed_call *c, store *db, tome_error *err)
{
    store_kv_state_list list = {0};
    size_t i;
    int rc = find_state(db, c->id, &list, &i, err);
    if (rc != 0) return rc;
    const store_kv_state *st = &list.states[i];
    const char *fingerprint;
    const struct v4_model *model =
        tomed_engine_model(tomed_jobs_engine(c->server->jobs), &fingerprint);
    tome_error problem = {0};
    kvstate_file *f = NULL;
    if (st->status != STORE_STATE_READY)
        tome_errorf(&problem, TOME_EFORMAT, "state is %s", store_state_status_name(st->status));
    else if (!model)
        tome_errorf(&problem, TOME_EBUSY, "the model is not loaded");
    else if (kvstate_open(st->path, model, &f, &problem) == 0)
        kvstate_verify(f, &problem);
    if (f) kvstate_close(f);
    c->result = json_pack("{s:s, s:b}", "id", c->id, "ok", problem.code == 0);
    if (problem.code)
        json_object_set_new(
            c->result, "error",
            json_pack("{s:s, s:s}", "code", tome_error_name(problem.code), "message", problem.msg));
    store_state_list_free(&list);
    return 0;
}

static void cache_call(tomed_request *r, tomed_call_fn fn, int status)
{
    tomed_call *c = tomed_call_new(r, fn, status);
    if (!c) return;
    if (r->params[0]) snprintf(c->id, sizeof c->id, "%s", r->params[0]);
    tomed_call_start(c);
}

void tomed_route_cache_list(tomed_request *r)
{
    cache_call(r, list_states, 200);
}

/* States in memory ("mem-...") are the engine's; the rest the store's. */
static int in_memory(const char *id)
{
    return strncmp(id, "mem-", 4) == 0;
}

void tomed_route_cache_verify(tomed_request *r)
{
    if (!in_memory(r->params[0])) {
        cache_call(r, verify_state, 200);
        return;
    }
    json_t *states = tomed_engine_states(tomed_jobs_engine(r->server->jobs));
    size_t i;
    json_t *st;
    int found = 0;
    json_array_foreach(states, i, st) {
        found |= strcmp(json_string_value(json_object_get(st, "id")), r->params[0]) == 0;
    }
    json_decref(states);
    if (found)
        tomed_reply_json(r, 200, json_pack("{s:s, s:b}", "id", r->params[0], "ok", 1));
    else
        tomed_reply_error(r, TOME_ENOTFOUND, "cached state '%s' does not exist", r->params[0]);
}

void tomed_route_cache_delete(tomed_request *r)
{
    if (!in_memory(r->params[0])) {
        cache_call(r, delete_state, 204);
    } else if (tomed_engine_drop_state(tomed_jobs_engine(r->server->jobs), r->params[0]) != 0) {
        tomed_reply_error(r, TOME_ENOTFOUND, "cached state '%s' does not exist", r->params[0]);
    } else {
        tomed_log(TOMED_LOG_INFO, "%s removed state %s", r->principal.name, r->params[0]);
        tomed_reply_empty(r, 204);
    }
}
