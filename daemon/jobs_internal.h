/*
 * jobs_internal.h - what the files of the job registry share (private to
 * jobs.c, the registry, its rows and followers; jobs_start.c, starting a
 * prefill: rendering the corpus, waiters, submitting; jobs_resume.c, jobs
 * picked up again after a restart, and the history read back at start).
 */
#ifndef TOMED_JOBS_INTERNAL_H
#define TOMED_JOBS_INTERNAL_H

#include "daemon/jobs.h"
#include "daemon/types.h"

typedef struct tomed_job_follower {
    tomed_request *r;
    tomed_job *job;
    struct tomed_job_follower *next;
} tomed_job_follower;

struct tomed_jobs {
    tomed_server *server;
    tomed_engine *engine;
    tomed_job *list;                /* newest first */
    struct prefill_call *rendering; /* prefills without a job yet */
    struct event *keepalive;
    int resumed;
};

/* Newest finished jobs of earlier runs read back at start. */
#define HISTORY_JOBS 100

/* Start a prefill of `corpus`: render it on a worker, then queue its job
 * (`job_id` > 0: an existing job run again; `rewarm`: a remote replica's
 * re-warm).  `r` (may be NULL) is answered when the job exists
 * (jobs_start.c). */
int jobs_submit_prefill(tomed_jobs *j, tomed_request *r, const char *corpus, int64_t job_id,
                        int rewarm);
/* The queued or running job of a corpus, or NULL (jobs_start.c). */
tomed_job *jobs_active(const tomed_jobs *j, const char *corpus);
/* Read the newest finished jobs of earlier runs (jobs_resume.c). */
void jobs_load_history(tomed_jobs *j);

#endif
