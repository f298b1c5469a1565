/*
 * check.h - the assertion vocabulary of tome's C tests.
 *
 * Each test program is a main() that calls CHECK*() and ends with
 * `return check_finish();`.  A failed check prints file:line and the values,
 * counts, and the run continues so one run shows every failure; the exit
 * status is 1 if anything failed (automake's harness reads it).  There is no
 * skip: missing test data is a failure (check_shared_path()).
 */
#ifndef TOME_TESTS_CHECK_H
#define TOME_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* rc must be 0; on failure the tome_error message is printed. */
#define CHECK_OK(rc, err)                                                                          \
    do {                                                                                           \
        int check_rc_ = (rc);                                                                      \
        CHECKF(check_rc_ == 0, "rc=%d: %s", check_rc_, (err)->msg);                                \
    } while (0)

/* A failure after which the test cannot go on. */
#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s: ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static inline int check_finish(void)
{
    fprintf(stderr, "%d checks, %d failed\n", check_count, check_failures);
    return check_failures ? 1 : 0;
}

/* Path under the shared test-data directory ($TOME_SHARED); exits with a
 * failure if the directory or the file is missing. */
static inline const char *check_shared_path(const char *rel)
{
    static char buf[8][4096];
    static int next;
    const char *root = getenv("TOME_SHARED");
    REQUIRE(root && *root, "TOME_SHARED is not set (run through `make check`)");
    char *out = buf[next++ % 8];
    snprintf(out, sizeof buf[0], "%s/%s", root, rel);
    struct stat st;
    REQUIRE(stat(out, &st) == 0, "test data %s is missing", out);
    return out;
}

/* Run the built program `tool` (a path under $TOME_BUILDDIR, such as
 * "tools/tome-mkmodel") with the NULL-terminated arguments `args`; stdout
 * goes to `out_path` and stderr to `err_path` when given.  Returns the exit
 * status, 128 for a death by a signal. */
static inline int check_run_tool(const char *tool, const char *out_path, const char *err_path,
                                 const char *const *args)
{
    const char *argv[32];
    char path[4096];
    const char *builddir = getenv("TOME_BUILDDIR");
    REQUIRE(builddir && *builddir, "TOME_BUILDDIR is not set (run through `make check`)");
    snprintf(path, sizeof path, "%s/%s", builddir, tool);
    int n = 0;
    argv[n++] = path;
    while (n < 31 && *args) argv[n++] = *args++;
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    if (pid == 0) {
        if (out_path && !freopen(out_path, "w", stdout)) _exit(126);
        if (err_path && !freopen(err_path, "w", stderr)) _exit(126);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid failed");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* The directories check_tmpdir made, removed when the process that made
 * them exits (not a forked child that calls exit). */
typedef struct check_tmpdir_list {
    char dir[16][4096];
    int n;
    pid_t owner;
} check_tmpdir_list;

static inline check_tmpdir_list *check_tmpdirs(void)
{
    static check_tmpdir_list list;
    return &list;
}

static inline void check_remove_tmpdirs(void)
{
    check_tmpdir_list *l = check_tmpdirs();
    if (getpid() != l->owner) return;
    for (int i = 0; i < l->n; i++) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", l->dir[i]);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", l->dir[i]);
    }
}

/* A fresh private directory for a test's files (under $TMPDIR or /tmp),
 * removed with everything in it at exit. */
static inline const char *check_tmpdir(void)
{
    check_tmpdir_list *l = check_tmpdirs();
    REQUIRE(l->n < 16, "too many temporary directories");
    char *dir = l->dir[l->n];
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof l->dir[0], "%s/tome-test-XXXXXX", t && *t ? t : "/tmp");
    REQUIRE(mkdtemp(dir) != NULL, "cannot create a temporary directory");
    if (l->n++ == 0) {
        l->owner = getpid();
        atexit(check_remove_tmpdirs);
    }
    return dir;
}

#endif
