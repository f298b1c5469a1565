/*
 * cmd_jobs.c - `tome jobs [ID] [--cancel]`: the daemon's prefill jobs.
 *
 * Without an ID it lists the jobs the caller may see, newest first; with
 * one it shows that job, and --cancel asks the daemon to stop it at the
 * next chunk boundary (its restart points are kept, so a later prefill
 * resumes rather than restarts).
 */
#include "client/client.h"

static void view_job_reply(json_t *reply)
{
    json_t *job = json_object_get(reply, "job");
    tome_view_job_row(job ? job : reply);
}

int tome_cmd_jobs(tome_client *c, const tome_options *opt, tome_error *err)
{
    if (opt->nargs == 0) {
        if (opt->cancel) return tome_errorf(err, TOME_EINVAL, "--cancel needs a job ID");
        return tome_request_and_show(c, opt, "GET", "/v1/jobs", NULL, tome_view_jobs, err);
    }
    const char *method = opt->cancel ? "DELETE" : "GET";
    int rc = tome_request_named(c, opt, method, "/v1/jobs/", opt->args[0], "", view_job_reply, err);
    if (rc == 0 && opt->cancel) tome_note("cancelling job %s", opt->args[0]);
    return rc;
}
