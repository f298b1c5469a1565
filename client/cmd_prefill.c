/*
 * cmd_prefill.c - `tome prefill CORPUS`: feed the corpus through the model
 * once and have the daemon cache the resulting state.
 *
 * The daemon runs the prefill as a job; the client starts it and then
 * either follows it or not.  A person at a terminal wants to watch it, so
 * on a TTY the client follows with a progress bar by default.  A script
 * wants a decision: --wait follows to the end (plain progress lines on a
 * non-TTY stderr) and exits 0 only once the state is cached; --detach, and
 * the default without a TTY, print the job id and return at once.
 * Interrupting the client never cancels the job (`tome jobs ID --cancel`
 * does); the daemon carries on either way.
 */
#include "client/client.h"

#include <stdlib.h>
#include <string.h>

typedef struct follow_ctx {
    tome_progress progress;
    json_t *final_job;
    const char *final_event;
} follow_ctx;

static int on_job_event(void *ctx, const char *event, const char *data, tome_error *err)
{
    follow_ctx *f = ctx;
    json_error_t jerr;
    json_t *job = json_loads(data, 0, &jerr);
    if (!job)
        return tome_errorf(err, TOME_EFORMAT, "bad %s event from tomed: %s", event, jerr.text);
    if (strcmp(event, "progress") == 0) {
        tome_progress_update(&f->progress, job);
        json_decref(job);
        return 0;
    }
    json_decref(f->final_job);
    f->final_job = job;
    f->final_event = strcmp(event, "done") == 0       ? "done"
                     : strcmp(event, "canceled") == 0 ? "canceled"
                                                      : "error";
    return 0;
}

/* The job's outcome as a return code: 0 once the state is cached. */
static int job_outcome(json_t *job, const char *status, tome_error *err)
{
    const char *id = json_string_value(json_object_get(job, "id"));
    if (strcmp(status, "done") == 0) return 0;
    if (strcmp(status, "canceled") == 0)
        return tome_errorf(err, TOME_ECANCELED, "prefill job %s was cancelled", id ? id : "?");
    tome_api_error_from_json(json_object_get(job, "error"), 500, err);
    return tome_error_wrap(err, "prefill job %s failed", id ? id : "?");
}

/* Follow job `id` from its first known state `job` to its end. */
static int follow_job(tome_client *c, const char *id, json_t *job, json_t **final_job,
                      tome_error *err)
{
    follow_ctx f = {0};
    tome_progress_init(&f.progress);
    tome_progress_update(&f.progress, job); /* a bar at once, before the first event */
    char *target = tome_api_target("/v1/jobs/", id, "/events");
    if (!target) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    int rc = tome_api_events(c, "GET", target, NULL, on_job_event, &f, err);
    free(target);
    tome_progress_finish(&f.progress);
    if (rc == 0 && !f.final_job)
        rc = tome_errorf(err, TOME_EUNREACHABLE, "the event stream of job %s ended early", id);
    if (rc == 0) rc = job_outcome(f.final_job, f.final_event, err);
    *final_job = f.final_job;
    return rc;
}

static void print_finished(json_t *job, const char *corpus)
{
    json_t *state = json_object_get(job, "state");
    const char *id = json_string_value(json_object_get(state, "id"));
    printf("corpus %s: state %s%scached, %lld tokens\n", corpus, id ? id : "", id ? " " : "",
           json_integer_value(json_object_get(state, "tokens")));
}

static int is_finished(const char *status)
{
    return !strcmp(status, "done") || !strcmp(status, "failed") || !strcmp(status, "canceled");
}

int tome_cmd_prefill(tome_client *c, const tome_options *opt, tome_error *err)
{
    const char *corpus = opt->args[0];
    char *target = tome_api_target("/v1/corpora/", corpus, "/prefill");
    if (!target) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    json_t *reply = NULL;
    int rc = tome_api_json(c, "POST", target, NULL, &reply, NULL, err);
    free(target);
    if (rc) return rc;
    json_t *job = json_incref(json_object_get(reply, "job"));
    json_decref(reply);
    const char *id = json_string_value(json_object_get(job, "id"));
    const char *status = json_string_value(json_object_get(job, "status"));
    if (!id || !status) {
        json_decref(job);
        return tome_errorf(err, TOME_EFORMAT, "tomed's prefill answer holds no job");
    }
    int follow = opt->wait || (!opt->detach && tome_stderr_is_tty());
    if (is_finished(status)) {
        rc = job_outcome(job, status, err);
    } else if (follow) {
        tome_note("prefill job %s for %s", id, corpus);
        json_t *final_job = NULL;
        rc = follow_job(c, id, job, &final_job, err);
        json_decref(job);
        job = final_job;
    } else if (!opt->json) {
        printf("%s\n", id);
        tome_note("prefill job %s started; follow it with: tome jobs %s", id, id);
        json_decref(job);
        return 0;
    }
    if (job && opt->json) {
        int print_rc = tome_print_json(job, err);
        if (rc == 0) rc = print_rc;
    } else if (rc == 0) {
        print_finished(job, corpus);
    }
    json_decref(job);
    return rc;
}
