/*
 * fuzz_daemon.h - a tomed_server for the daemon's fuzz targets
 * (fuzz_http.c, fuzz_request_json.c): an event loop, the default
 * configuration with a private state directory, an empty token list, and
 * no workers, jobs or engine (the targets stop before the handlers need
 * them).  Logging is errors only.
 */
#ifndef TOME_FUZZ_DAEMON_H
#define TOME_FUZZ_DAEMON_H

#include "daemon/auth.h"
#include "daemon/server.h"

/* The server, made on the first call. */
tomed_server *fuzz_server(void);
/* A peer: on the Unix socket as `uid` (0 is an administrator, others are
 * nobody to the default configuration), or over TLS without credentials
 * (uid < 0). */
tomed_peer fuzz_peer(int uid);

#endif
