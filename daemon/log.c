/*
 * log.c - levelled logging to stderr or syslog.
 *
 * tomed is the one program of tome that runs unattended, so it is the one
 * place that logs.  Under systemd or with --foreground, stderr is right (the
 * journal adds timestamps); a classic daemon logs to syslog.  Several threads
 * log, so each message is formatted into one buffer and written with one
 * call, which keeps lines whole.
 */
#include "daemon/log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int syslog_priorities[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

static _Atomic int current_level = TOMED_LOG_INFO;
static _Atomic int to_syslog;

int tomed_log_level_parse(const char *name, int *level)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *level = i;
            return 0;
        }
    }
    return TOME_EINVAL;
}

void tomed_log_setup(int level, int use_syslog)
{
    if (use_syslog && !to_syslog) openlog("tomed", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    current_level = level;
    to_syslog = use_syslog;
}

void tomed_log(int level, const char *fmt, ...)
{
    if (level > current_level) return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (to_syslog) {
        syslog(syslog_priorities[level], "%s", line);
        return;
    }
    char out[2100];
    int n = snprintf(out, sizeof out, "tomed: %s: %s\n", level_names[level], line);
    if (n > (int)sizeof out - 1) n = (int)sizeof out - 1;
    ssize_t ignored = write(STDERR_FILENO, out, (size_t)n);
    (void)ignored;
}
