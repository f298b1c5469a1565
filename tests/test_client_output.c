/* Unit tests of the client's output conventions (client/output.c) and of
 * the progress display (client/progress.c) as a log sees it: no colour
 * off a terminal or with NO_COLOR, notes silenced by --quiet but errors
 * not, plain progress lines at most once a second, and durations. */
#include "client/client.h"
#include "tests/check.h"

#include <fcntl.h>
#include <unistd.h>

static char log_path[4200];
static int real_stderr;

/* Send stderr to a fresh file until read_log() restores it and returns
 * what was written, so failed checks still reach the real stderr. */
static void capture_stderr(void)
{
    fflush(stderr);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0 && dup2(fd, STDERR_FILENO) >= 0, "cannot redirect stderr");
    close(fd);
}

static char *read_log(void)
{
    fflush(stderr);
    dup2(real_stderr, STDERR_FILENO);
    char *text;
    tome_error err = {0};
    REQUIRE(tome_read_file(log_path, 1 << 20, &text, NULL, &err) == 0, "%s", err.msg);
    return text;
}

static void test_durations(void)
{
    char buf[32];
    tome_format_duration(0, buf, sizeof buf);
    CHECK(strcmp(buf, "0:00") == 0);
    tome_format_duration(71.4, buf, sizeof buf);
    CHECK(strcmp(buf, "1:11") == 0);
    tome_format_duration(3725, buf, sizeof buf);
    CHECK(strcmp(buf, "1:02:05") == 0);
    tome_format_duration(-1, buf, sizeof buf);
    CHECK(strcmp(buf, "--:--") == 0);
    tome_format_duration(1e12, buf, sizeof buf);
    CHECK(strcmp(buf, "--:--") == 0);
}

static void test_no_colour_off_a_terminal(void)
{
    unsetenv("NO_COLOR");
    tome_output_init(0, 0);
    /* The test's stdout and stderr are files or pipes under the harness. */
    if (!isatty(STDOUT_FILENO)) CHECK(strcmp(tome_style_on(stdout, TOME_STYLE_RED), "") == 0);
    CHECK(strcmp(tome_style_off(stderr), "") == 0);
    setenv("NO_COLOR", "1", 1);
    tome_output_init(0, 0);
    CHECK(strcmp(tome_style_on(stdout, TOME_STYLE_BOLD), "") == 0);
    unsetenv("NO_COLOR");
}

static void test_notes_and_errors(void)
{
    capture_stderr();
    tome_output_init(0, 1);
    tome_note("uploading %d bytes", 42);
    tome_output_init(1, 1);
    tome_note("this is silenced");
    tome_error err = {0};
    tome_errorf(&err, TOME_ENOTFOUND, "corpus 'x' does not exist");
    tome_report_error(&err);
    char *log = read_log();
    CHECKF(strcmp(log, "tome: uploading 42 bytes\n"
                       "tome: error: corpus 'x' does not exist\n") == 0,
           "%s", log);
    free(log);
}

static void test_plain_progress_lines(void)
{
    capture_stderr();
    tome_output_init(0, 1);
    tome_progress p;
    tome_progress_init(&p);
    CHECK(p.tty == 0);
    json_t *job = json_pack("{s:s, s:i, s:i, s:f, s:f}", "status", "running", "tokens_done", 2048,
                            "tokens_total", 8192, "tokens_per_s", 512.0, "eta_s", 12.0);
    tome_progress_update(&p, job);
    tome_progress_update(&p, job); /* within the second: not printed again */
    tome_progress_finish(&p);
    json_decref(job);
    char *log = read_log();
    CHECKF(strcmp(log, "tome: prefill running: 2048/8192 tokens (25.0%), 512.0 tokens/s, "
                       "ETA 0:12\n") == 0,
           "%s", log);
    CHECK(strchr(log, '\r') == NULL && strchr(log, '\033') == NULL);
    free(log);

    capture_stderr();
    tome_output_init(1, 1);
    tome_progress_init(&p);
    job = json_pack("{s:s, s:i, s:i}", "status", "queued", "tokens_done", 0, "tokens_total", 0);
    tome_progress_update(&p, job);
    json_decref(job);
    log = read_log();
    CHECKF(log[0] == '\0', "--quiet printed progress: %s", log);
    free(log);
}

int main(void)
{
    snprintf(log_path, sizeof log_path, "%s/stderr.log", check_tmpdir());
    real_stderr = dup(STDERR_FILENO);
    test_durations();
    test_no_colour_off_a_terminal();
    test_notes_and_errors();
    test_plain_progress_lines();
    unlink(log_path);
    return check_finish();
}
