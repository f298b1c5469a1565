/*
 * routes_jobs.c - POST /v1/corpora/NAME/prefill and the /v1/jobs endpoints.
 *
 * Thin: rights are checked here against the job's corpus, everything else
 * is jobs.c's.  A principal sees only the jobs of corpora it can read, and
 * cancelling needs the write right that starting needed.
 */
#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/router.h"
#include "daemon/server.h"

void tomed_route_prefill(tomed_request *r)
{
    if (tomed_require_corpus(r, TOMED_RIGHT_WRITE) != 0) return;
    tomed_jobs_start_prefill(r->server->jobs, r, r->params[0]);
}

void tomed_route_job_list(tomed_request *r)
{
    tomed_reply_json(r, 200,
                     json_pack("{s:o}", "jobs", tomed_jobs_list(r->server->jobs, &r->principal)));
}

/* The job named in the path, if the principal may see it with `rights`;
 * otherwise the request is answered and NULL returned.  A job the
 * principal cannot read is reported as missing, not as forbidden. */
static tomed_job *job_for(tomed_request *r, int rights)
{
    tomed_job *job = tomed_jobs_find(r->server->jobs, r->params[0]);
    if (!job || !tomed_principal_can(&r->principal, job->corpus, TOMED_RIGHT_READ)) {
        tomed_reply_error(r, TOME_ENOTFOUND, "job '%s' does not exist", r->params[0]);
        return NULL;
    }
    if (!tomed_principal_can(&r->principal, job->corpus, rights)) {
        tomed_reply_error(r, TOME_EPERM, "%s has no %s right on corpus '%s'", r->principal.name,
                          tomed_rights_name(rights), job->corpus);
        return NULL;
    }
    return job;
}

void tomed_route_job_show(tomed_request *r)
{
    tomed_job *job = job_for(r, TOMED_RIGHT_READ);
    if (job) tomed_reply_json(r, 200, json_pack("{s:o}", "job", tomed_job_json(job)));
}

void tomed_route_job_events(tomed_request *r)
{
    tomed_job *job = job_for(r, TOMED_RIGHT_READ);
    if (job) tomed_jobs_follow(r->server->jobs, job, r);
}

void tomed_route_job_cancel(tomed_request *r)
{
    tomed_job *job = job_for(r, TOMED_RIGHT_WRITE);
    if (!job) return;
    tome_error err = {0};
    if (tomed_jobs_cancel(r->server->jobs, job, &err) != 0) {
        tomed_reply_tome_error(r, &err);
        return;
    }
    tomed_log(TOMED_LOG_INFO, "%s cancelled job %lld", r->principal.name, (long long)job->id);
    tomed_reply_json(r, 202, json_pack("{s:o}", "job", tomed_job_json(job)));
}
