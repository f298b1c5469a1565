/*
 * server.h - the daemon object (main.c fills it; routes read it).
 *
 * tomed is one process with one libevent loop thread that does all network
 * I/O, a small pool of worker threads for blocking work (file and SQLite
 * I/O, archive reading), and one engine executor thread per model for
 * compute.  Everything that touches a connection runs on the loop thread;
 * other threads hand results back with tomed_post() (workers.h), which
 * queues a callback for the loop.
 *
 * Each file of daemon/ has its header (log.h, conf.h, workers.h,
 * metrics.h, auth.h for auth.c, tokens.c and peer_access.c, tls.h,
 * statedir.h, http.h, router.h for router.c and the routes_*.c handlers,
 * storecall.h, jobs.h for jobs.c and the engine executor's interface,
 * sampling.h) and includes what it uses; types.h declares the object types
 * once so headers can point at each other.  Nothing here is a public API:
 * the only contract with the outside world is tome-protocol(7).
 */
#ifndef TOMED_SERVER_H
#define TOMED_SERVER_H

#include <stdatomic.h>

#include "common/common.h"
#include "daemon/conf.h"
#include "daemon/types.h"

struct event_base;

struct tomed_server {
    struct event_base *base;
    tomed_config cfg;
    int argc;
    char **argv;
    tomed_pool *pool;
    tomed_tokens *tokens;
    struct tomed_listeners *listeners;
    tomed_jobs *jobs;
    struct tomed_conn *conns; /* every open connection */
    int n_conns;
    int draining;
    int ready;
    double started;
};

/* listen.c */
int tomed_listeners_open(tomed_server *s, tomed_listeners **out, tome_error *err);
/* Reload TLS material from s->cfg; the old context serves existing
 * connections until they close. */
int tomed_listeners_reload_tls(tomed_listeners *l, const tomed_config *cfg, tome_error *err);
/* Stop accepting (the socket file is removed). */
void tomed_listeners_close(tomed_listeners *l);
void tomed_listeners_free(tomed_listeners *l);

#endif
