/*
 * progress.c - showing a prefill job's progress to a person or to a log.
 *
 * A prefill of a large corpus runs for minutes to hours, so `tome prefill`
 * shows what the daemon reports in each progress event: tokens done out of
 * the total, the rate, and the time left.  On a terminal that is one line
 * redrawn in place with a bar sized to the window; anywhere else (a cron
 * log, a pipe) it is plain lines, at most one a second so a log stays
 * readable, with nothing but text a grep can use.  Both go to stderr: the
 * progress is a diagnostic, not the command's result.
 */
#include "client/client.h"

#include <math.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define PLAIN_LINE_INTERVAL_S 1.0

void tome_progress_init(tome_progress *p)
{
    memset(p, 0, sizeof *p);
    p->tty = tome_stderr_is_tty() && !tome_output_quiet();
    p->last_print = -1e9;
}

void tome_format_duration(double seconds, char *buf, size_t cap)
{
    if (!(seconds >= 0) || seconds > 1e7) {
        snprintf(buf, cap, "--:--");
        return;
    }
    long s = lround(seconds);
    if (s >= 3600)
        snprintf(buf, cap, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, cap, "%ld:%02ld", s / 60, s % 60);
}

static int terminal_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) return ws.ws_col;
    return 80;
}

typedef struct job_numbers {
    const char *status;
    long long done, total;
    double rate, eta;
} job_numbers;

static job_numbers read_job(json_t *job)
{
    job_numbers n;
    n.status = json_string_value(json_object_get(job, "status"));
    if (!n.status) n.status = "?";
    n.done = json_integer_value(json_object_get(job, "tokens_done"));
    n.total = json_integer_value(json_object_get(job, "tokens_total"));
    json_t *eta = json_object_get(job, "eta_s");
    n.rate = json_number_value(json_object_get(job, "tokens_per_s"));
    n.eta = json_is_number(eta) ? json_number_value(eta) : -1;
    return n;
}

static void draw_bar(tome_progress *p, const job_numbers *n)
{
    char eta[32], tail[160];
    tome_format_duration(n->eta, eta, sizeof eta);
    double fraction = n->total > 0 ? (double)n->done / (double)n->total : 0;
    if (fraction > 1) fraction = 1;
    int len = snprintf(tail, sizeof tail, " %3d%%  %lld/%lld tokens  %.0f tok/s  ETA %s",
                       (int)(fraction * 100), n->done, n->total, n->rate, eta);
    int bar = terminal_width() - len - 3;
    if (bar > 50) bar = 50;
    if (bar < 10) bar = 10;
    int filled = (int)(fraction * bar);
    fprintf(stderr, "\r\033[K[%s", tome_style_on(stderr, TOME_STYLE_GREEN));
    for (int i = 0; i < bar; i++) fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "%s]%s", tome_style_off(stderr), tail);
    fflush(stderr);
    p->width_used = 1;
}

static void print_line(tome_progress *p, const job_numbers *n)
{
    double now = tome_now();
    if (now - p->last_print < PLAIN_LINE_INTERVAL_S) return;
    p->last_print = now;
    char eta[32];
    tome_format_duration(n->eta, eta, sizeof eta);
    double percent = n->total > 0 ? 100.0 * (double)n->done / (double)n->total : 0;
    fprintf(stderr, "tome: prefill %s: %lld/%lld tokens (%.1f%%), %.1f tokens/s, ETA %s\n",
            n->status, n->done, n->total, percent, n->rate, eta);
}

void tome_progress_update(tome_progress *p, json_t *job)
{
    if (tome_output_quiet()) return;
    job_numbers n = read_job(job);
    if (p->tty)
        draw_bar(p, &n);
    else
        print_line(p, &n);
}

void tome_progress_finish(tome_progress *p)
{
    if (p->width_used) fprintf(stderr, "\r\033[K");
    p->width_used = 0;
}
