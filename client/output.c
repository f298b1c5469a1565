/*
 * output.c - how `tome` talks: results on stdout, everything else on stderr.
 *
 * Results (an answer, a listing, a report, JSON) go to stdout so they can
 * be piped and redirected; notes, progress and errors go to stderr so they
 * never end up inside a report a cron job writes.  --quiet silences the
 * notes but never an error.  Colour is decided once per stream: only when
 * that stream is a terminal, never when NO_COLOR is set (no-color.org) or
 * --no-color was given, and never for TERM=dumb.
 */
#include "client/client.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
    int quiet;
    int color_stdout, color_stderr;
    int stderr_tty;
} output;

void tome_output_init(int quiet, int no_color)
{
    const char *term = getenv("TERM");
    const char *no_color_env = getenv("NO_COLOR");
    int allowed = !no_color && !(no_color_env && *no_color_env) && !(term && !strcmp(term, "dumb"));
    output.quiet = quiet;
    output.stderr_tty = isatty(STDERR_FILENO);
    output.color_stdout = allowed && isatty(STDOUT_FILENO);
    output.color_stderr = allowed && output.stderr_tty;
}

int tome_output_quiet(void)
{
    return output.quiet;
}

int tome_stderr_is_tty(void)
{
    return output.stderr_tty;
}

static int colored(FILE *f)
{
    return f == stdout ? output.color_stdout : f == stderr ? output.color_stderr : 0;
}

const char *tome_style_on(FILE *f, enum tome_style style)
{
    static const char *const codes[] = {
        [TOME_STYLE_BOLD] = "\033[1m",
        [TOME_STYLE_DIM] = "\033[2m",
        [TOME_STYLE_RED] = "\033[31m",
        [TOME_STYLE_GREEN] = "\033[32m",
    };
    return colored(f) ? codes[style] : "";
}

const char *tome_style_off(FILE *f)
{
    return colored(f) ? "\033[0m" : "";
}

void tome_note(const char *fmt, ...)
{
    if (output.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tome: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void tome_report_error(const tome_error *err)
{
    fprintf(stderr, "tome: %serror:%s %s\n", tome_style_on(stderr, TOME_STYLE_RED),
            tome_style_off(stderr), err->msg[0] ? err->msg : "unknown failure");
}

int tome_print_json(json_t *value, tome_error *err)
{
    if (json_dumpf(value, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 ||
        fputc('\n', stdout) == EOF)
        return tome_errorf(err, TOME_EIO, "cannot write to standard output");
    return 0;
}
