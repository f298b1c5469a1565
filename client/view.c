/*
 * view.c - the daemon's objects as text for people, and the one request
 * shape most commands share.
 *
 * Listings print a header row and one row per object, aligned for a
 * terminal and still easy to cut(1) or awk(1); single objects print as
 * "key: value" lines.  With --json every command prints the daemon's own
 * object instead, unchanged, so scripts see exactly the documented
 * protocol objects of tome-protocol(7) and nothing the client invented.
 */
#include "client/client.h"

#include <stdlib.h>
#include <string.h>

static const char *text_of(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "-";
}

static long long number_of(json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

static void print_header(const char *format_line)
{
    printf("%s%s%s\n", tome_style_on(stdout, TOME_STYLE_BOLD), format_line, tome_style_off(stdout));
}

static void corpus_state_text(json_t *corpus, char *buf, size_t cap)
{
    json_t *state = json_object_get(corpus, "state");
    if (json_is_object(state))
        snprintf(buf, cap, "cached (%lld tokens)", number_of(state, "tokens"));
    else
        snprintf(buf, cap, "not prefilled");
}

void tome_view_corpora(json_t *reply)
{
    char header[128], state[64];
    snprintf(header, sizeof header, "%-24s %8s %10s %14s  %s", "NAME", "VERSION", "DOCUMENTS",
             "BYTES", "STATE");
    print_header(header);
    size_t i;
    json_t *corpus;
    json_array_foreach(json_object_get(reply, "corpora"), i, corpus) {
        corpus_state_text(corpus, state, sizeof state);
        printf("%-24s %8lld %10lld %14lld  %s\n", text_of(corpus, "name"),
               number_of(corpus, "version"), number_of(corpus, "documents"),
               number_of(corpus, "bytes"), state);
    }
}

void tome_view_corpus(json_t *corpus)
{
    char state[64];
    corpus_state_text(corpus, state, sizeof state);
    printf("name:       %s\ncreated:    %s\nversion:    %lld\ndocuments:  %lld\n"
           "bytes:      %lld\nstate:      %s\n",
           text_of(corpus, "name"), text_of(corpus, "created_at"), number_of(corpus, "version"),
           number_of(corpus, "documents"), number_of(corpus, "bytes"), state);
    json_t *cached = json_object_get(corpus, "state");
    if (json_is_object(cached)) printf("state id:   %s\n", text_of(cached, "id"));
}

void tome_view_job_row(json_t *job)
{
    long long total = number_of(job, "tokens_total");
    double percent = total > 0 ? 100.0 * (double)number_of(job, "tokens_done") / (double)total : 0;
    printf("%-8s %-8s %-24s %-9s %5.1f%%  %lld/%lld tokens\n", text_of(job, "id"),
           text_of(job, "kind"), text_of(job, "corpus"), text_of(job, "status"), percent,
           number_of(job, "tokens_done"), total);
}

void tome_view_jobs(json_t *reply)
{
    char header[128];
    snprintf(header, sizeof header, "%-8s %-8s %-24s %-9s %6s  %s", "ID", "KIND", "CORPUS",
             "STATUS", "DONE", "TOKENS");
    print_header(header);
    size_t i;
    json_t *job;
    json_array_foreach(json_object_get(reply, "jobs"), i, job) {
        tome_view_job_row(job);
    }
}

void tome_view_states(json_t *reply)
{
    char header[160];
    snprintf(header, sizeof header, "%-20s %-20s %7s %10s %14s %6s  %s", "ID", "CORPUS", "VERSION",
             "TOKENS", "BYTES", "HITS", "LAST USED");
    print_header(header);
    size_t i;
    json_t *state;
    json_array_foreach(json_object_get(reply, "states"), i, state) {
        printf("%-20s %-20s %7lld %10lld %14lld %6lld  %s\n", text_of(state, "id"),
               text_of(state, "corpus"), number_of(state, "version"), number_of(state, "tokens"),
               number_of(state, "bytes"), number_of(state, "hits"), text_of(state, "last_used_at"));
    }
    printf("used %lld of %lld bytes\n", number_of(reply, "used_bytes"),
           number_of(reply, "budget_bytes"));
}

static void scopes_text(json_t *token, char *buf, size_t cap)
{
    size_t i, used = 0;
    json_t *scope;
    buf[0] = '\0';
    json_array_foreach(json_object_get(token, "scopes"), i, scope) {
        int n = snprintf(buf + used, cap - used, "%s%s:%s", i ? "," : "", text_of(scope, "corpus"),
                         text_of(scope, "rights"));
        if (n < 0 || (size_t)n >= cap - used) break;
        used += (size_t)n;
    }
}

void tome_view_tokens(json_t *reply)
{
    char header[128], scopes[256];
    snprintf(header, sizeof header, "%-8s %-20s %-22s %s", "ID", "NAME", "CREATED", "SCOPES");
    print_header(header);
    size_t i;
    json_t *token;
    json_array_foreach(json_object_get(reply, "tokens"), i, token) {
        scopes_text(token, scopes, sizeof scopes);
        printf("%-8s %-20s %-22s %s\n", text_of(token, "id"), text_of(token, "name"),
               text_of(token, "created_at"), scopes);
    }
}

int tome_request_and_show(tome_client *c, const tome_options *opt, const char *method,
                          const char *target, json_t *body, tome_view_fn view, tome_error *err)
{
    json_t *reply = NULL;
    int rc = tome_api_json(c, method, target, body, &reply, NULL, err);
    if (rc == 0 && reply && opt->json)
        rc = tome_print_json(reply, err);
    else if (rc == 0 && reply && view)
        view(reply);
    json_decref(reply);
    return rc;
}

int tome_request_named(tome_client *c, const tome_options *opt, const char *method,
                       const char *before, const char *name, const char *after, tome_view_fn view,
                       tome_error *err)
{
    char *target = tome_api_target(before, name, after);
    if (!target) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    int rc = tome_request_and_show(c, opt, method, target, NULL, view, err);
    free(target);
    return rc;
}
