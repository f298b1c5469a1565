/*
 * types.h - the daemon's object types, declared once, so that the headers
 * of daemon/ can point at each other's objects without including each
 * other.  Each type is defined (and its ownership stated) in its own
 * header: tomed_pool in workers.h, tomed_tokens in auth.h, tomed_server in
 * server.h, tomed_conn and tomed_request in http.h, tomed_call in
 * storecall.h, tomed_engine and tomed_jobs in jobs.h, tomed_listeners in
 * server.h.
 */
#ifndef TOMED_TYPES_H
#define TOMED_TYPES_H

typedef struct tomed_pool tomed_pool;
typedef struct tomed_tokens tomed_tokens;
typedef struct tomed_server tomed_server;
typedef struct tomed_conn tomed_conn;
typedef struct tomed_request tomed_request;
typedef struct tomed_call tomed_call;
typedef struct tomed_jobs tomed_jobs;
typedef struct tomed_listeners tomed_listeners;

#endif
