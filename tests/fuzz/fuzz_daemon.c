/*
 * fuzz_daemon.c - the server of fuzz_daemon.h.
 */
#include "tests/fuzz/fuzz_daemon.h"

#include "daemon/log.h"
#include "tests/fuzz/fuzz.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static tomed_server server;

tomed_server *fuzz_server(void)
{
    if (server.base) return &server;
    char dir[128], tmp[160];
    snprintf(dir, sizeof dir, "%s/state", fuzz_tmpdir());
    snprintf(tmp, sizeof tmp, "%s/tmp", dir);
    if (mkdir(dir, 0700) != 0 || mkdir(tmp, 0700) != 0) fuzz_die("cannot make %s", tmp);
    char *argv[] = {"tomed", "--state-dir", dir, "--config", "/dev/null", NULL};
    tome_error err = {0};
    if (tomed_config_build(5, argv, &server.cfg, NULL, &err) != 0) fuzz_die("%s", err.msg);
    tomed_log_setup(TOMED_LOG_ERROR, 0);
    if (!(server.base = event_base_new())) fuzz_die("no event base");
    if (tomed_tokens_open(dir, &server.tokens, &err) != 0) fuzz_die("%s", err.msg);
    server.started = tome_now();
    return &server;
}

tomed_peer fuzz_peer(int uid)
{
    tomed_peer p;
    memset(&p, 0, sizeof p);
    p.transport = uid < 0 ? TOMED_TRANSPORT_TLS : TOMED_TRANSPORT_UNIX;
    p.uid = uid < 0 ? 0 : (uid_t)uid;
    p.gid = (gid_t)p.uid;
    snprintf(p.address, sizeof p.address, uid < 0 ? "203.0.113.7:4431" : "unix:uid %d", uid);
    return p;
}
