/*
 * main.c - tomed's life cycle: start, serve, reload, drain, exit.
 *
 * Start-up does everything that can fail before the first client is
 * accepted: configuration, the state directory (locked, so two daemons
 * never share it: statedir.c), the pidfile, the token registry, the worker
 * pool, the engine, the listeners.  Without --foreground the process
 * detaches, and the parent exits only when the child is ready (or reports
 * why it is not), so `tomed && tome ...` in a script never races.
 *
 * Signals arrive through libevent, on the loop thread, so they need no
 * async-signal-safe contortions:
 *   SIGHUP          re-read the config and the TLS certificate and key;
 *                   existing connections (Unix or TLS) are not touched;
 *   SIGTERM/SIGINT  drain: stop accepting, close idle connections, ask the
 *                   engine to stop prefills at a restart point, let
 *                   answers in progress finish (up to shutdown_grace
 *                   seconds), then exit 0.
 */
#include "config.h"

#include "daemon/auth.h"
#include "daemon/conf.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/server.h"
#include "daemon/statedir.h"
#include "daemon/workers.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct daemon_state {
    tomed_server server;
    struct event *signals[3];
    struct event *drain_timer;
    double drain_started;
    int pidfile_fd;
    int state_lock_fd; /* STATE_DIR/lock, held while the process runs */
    int ready_fd;      /* write end of the pipe the waiting parent reads, or -1 */
} daemon_state;

/* ------------------------------------------------------------------------
 * Start-up helpers
 * ------------------------------------------------------------------------ */

/* Locked for the life of the process, so that two daemons never write one
 * pidfile; the state directory has its own lock (statedir.c). */
static int write_pidfile(const char *path, int *fd_out, tome_error *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return tome_errorf(err, TOME_EIO, "pidfile %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return tome_errorf(err, TOME_EBUSY, "pidfile %s is locked: is tomed already running?",
                           path);
    }
    char text[32];
    int n = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n) {
        close(fd);
        return tome_errorf(err, TOME_EIO, "pidfile %s: %s", path, strerror(errno));
    }
    *fd_out = fd;
    return 0;
}

/* 1000 idle clients plus the busy ones need more than the usual 1024. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Detach.  The parent waits on a pipe for one byte of readiness (or a
 * message of failure) from the child, then exits with the right status. */
static int detach(int *ready_fd)
{
    int p[2];
    if (pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid > 0) {
        close(p[1]);
        char buf[TOME_ERROR_MAX + 1];
        ssize_t n = read(p[0], buf, sizeof buf - 1);
        if (n == 1 && buf[0] == '\n') _exit(0);
        if (n > 0) {
            buf[n] = '\0';
            fprintf(stderr, "tomed: %s\n", buf);
        } else {
            fprintf(stderr, "tomed: the daemon exited during start-up (see syslog)\n");
        }
        _exit(1);
    }
    close(p[0]);
    setsid();
    if (fork() > 0) _exit(0);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO) close(null);
    }
    *ready_fd = p[1];
    return 0;
}

static void report_start(daemon_state *d, const tome_error *err)
{
    if (d->ready_fd < 0) return;
    const char *msg = err ? err->msg : "\n";
    ssize_t ignored = write(d->ready_fd, msg, strlen(msg));
    (void)ignored;
    close(d->ready_fd);
    d->ready_fd = -1;
}

/* ------------------------------------------------------------------------
 * Signals
 * ------------------------------------------------------------------------ */

static void reload(daemon_state *d)
{
    tomed_server *s = &d->server;
    tomed_config *fresh = malloc(sizeof *fresh);
    tome_error err = {0};
    if (!fresh) return;
    int rc = tomed_config_build(s->argc, s->argv, fresh, NULL, &err);
    if (rc == 0) rc = tomed_config_check(fresh, &err);
    if (rc == 0) rc = tomed_listeners_reload_tls(s->listeners, fresh, &err);
    if (rc != 0) {
        tomed_log(TOMED_LOG_ERROR, "reload failed, keeping the running configuration: %s", err.msg);
        free(fresh);
        return;
    }
    /* Other threads read the settings that stay; only the loop thread
     * reads the ones that change, but for the engine's three, which the
     * engine thread reads atomically. */
    if (tomed_config_reload_into(&s->cfg, fresh))
        tomed_log(TOMED_LOG_WARN, "state_dir, socket, listen, model, pidfile, engine, kernels, "
                                  "weights and numerics change only on restart");
    free(fresh);
    tomed_log_setup(s->cfg.log_level, s->cfg.log_syslog || !s->cfg.foreground);
    tomed_log(TOMED_LOG_INFO, "configuration and TLS certificates reloaded");
}

static void drain_tick(evutil_socket_t fd, short what, void *arg)
{
    daemon_state *d = arg;
    tomed_server *s = &d->server;
    tomed_conns_close_idle(s);
    int busy = tomed_conns_busy(s);
    int jobs_busy = tomed_jobs_busy(s->jobs);
    double waited = tome_now() - d->drain_started;
    if ((busy == 0 && !jobs_busy) || waited > s->cfg.shutdown_grace_s) {
        if (busy || jobs_busy)
            tomed_log(TOMED_LOG_WARN, "shutdown grace over: %d requests still open", busy);
        event_base_loopexit(s->base, NULL);
        return;
    }
    struct timeval tv = {0, 100 * 1000};
    evtimer_add(d->drain_timer, &tv);
}

static void start_drain(daemon_state *d, const char *why)
{
    tomed_server *s = &d->server;
    if (s->draining) return;
    tomed_log(TOMED_LOG_INFO, "%s: draining", why);
    s->draining = 1;
    tomed_listeners_close(s->listeners);
    tomed_jobs_drain(s->jobs);
    d->drain_started = tome_now();
    d->drain_timer = evtimer_new(s->base, drain_tick, d);
    drain_tick(-1, 0, d);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    daemon_state *d = arg;
    if (sig == SIGHUP)
        reload(d);
    else
        start_drain(d, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------ */

static int start(daemon_state *d, tome_error *err)
{
    tomed_server *s = &d->server;
    /* The store, tokens and states are private: 0700 directories and 0600
     * files (tomed.conf(5)); the socket gets socket_mode explicitly. */
    umask(077);
    int rc = tomed_state_dir_prepare(&s->cfg, &d->state_lock_fd, err);
    if (rc == 0) rc = write_pidfile(s->cfg.pidfile, &d->pidfile_fd, err);
    if (rc == 0) rc = tomed_tokens_open(s->cfg.state_dir, &s->tokens, err);
    if (rc != 0) return rc;
    s->base = event_base_new();
    if (!s->base) return tome_errorf(err, TOME_ENOMEM, "event base");
    rc = tomed_pool_new(s->base, s->cfg.workers, &s->pool, err);
    if (rc == 0) rc = tomed_jobs_new(s, &s->jobs, err);
    if (rc == 0) rc = tomed_listeners_open(s, &s->listeners, err);
    if (rc != 0) return rc;
    const int sigs[3] = {SIGHUP, SIGTERM, SIGINT};
    for (int i = 0; i < 3; i++) {
        d->signals[i] = evsignal_new(s->base, sigs[i], on_signal, d);
        if (!d->signals[i] || evsignal_add(d->signals[i], NULL) != 0)
            return tome_errorf(err, TOME_EINTERNAL, "cannot handle signal %d", sigs[i]);
    }
    return 0;
}

static void stop(daemon_state *d)
{
    tomed_server *s = &d->server;
    for (int i = 0; i < 3; i++)
        if (d->signals[i]) event_free(d->signals[i]);
    if (d->drain_timer) event_free(d->drain_timer);
    if (s->listeners) tomed_listeners_free(s->listeners);
    tomed_conns_close_all(s);
    /* Jobs stop the engine first: its last reports go through the pool. */
    tomed_jobs_free(s->jobs);
    tomed_pool_free(s->pool);
    tomed_jobs_release(s->jobs);
    tomed_tokens_free(s->tokens);
    if (s->base) event_base_free(s->base);
    if (d->pidfile_fd >= 0) {
        unlink(s->cfg.pidfile);
        close(d->pidfile_fd);
    }
    /* The lock file stays: removing it would let a newcomer lock a fresh
     * file while another still holds the old one. */
    if (d->state_lock_fd >= 0) close(d->state_lock_fd);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            tome_options_help(&tomed_cli, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            puts("tomed " PACKAGE_VERSION);
            return 0;
        }
    }
    static daemon_state d;
    d.pidfile_fd = -1;
    d.state_lock_fd = -1;
    d.ready_fd = -1;
    tomed_server *s = &d.server;
    s->argc = argc;
    s->argv = argv;
    tome_error err = {0};
    int check_only = 0;
    int rc = tomed_config_build(argc, argv, &s->cfg, &check_only, &err);
    if (rc == 0) rc = tomed_config_check(&s->cfg, &err);
    if (rc != 0) {
        fprintf(stderr, "tomed: %s%s\n", err.msg, rc == TOME_EINVAL ? " (see tomed --help)" : "");
        return check_only ? 1 : 2;
    }
    if (check_only) {
        printf("tomed: configuration OK (%s)\n",
               s->cfg.config_path[0] ? s->cfg.config_path : "defaults and flags");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    if (!s->cfg.foreground && detach(&d.ready_fd) != 0) {
        fprintf(stderr, "tomed: cannot detach: %s\n", strerror(errno));
        return 1;
    }
    tomed_log_setup(s->cfg.log_level, s->cfg.log_syslog || !s->cfg.foreground);
    evthread_use_pthreads();
    s->started = tome_now();
    rc = start(&d, &err);
    if (rc != 0) {
        tomed_log(TOMED_LOG_ERROR, "%s", err.msg);
        report_start(&d, &err);
        stop(&d);
        return 1;
    }
    tomed_log(TOMED_LOG_INFO, "listening on %s%s%s (pid %ld)", s->cfg.socket_path,
              s->cfg.listen[0] ? " and " : "", s->cfg.listen, (long)getpid());
    report_start(&d, NULL);
    event_base_dispatch(s->base);
    tomed_log(TOMED_LOG_INFO, "stopped");
    stop(&d);
    libevent_global_shutdown();
    return 0;
}
