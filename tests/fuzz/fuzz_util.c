/*
 * fuzz_util.c - the helpers of fuzz.h: a private temporary directory,
 * files written from inputs, the golden data's location.
 */
#include "tests/fuzz/fuzz.h"

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];

void fuzz_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void remove_tmpdir(void)
{
    nftw(tmpdir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_tmpdir(void)
{
    if (tmpdir[0]) return tmpdir;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/tome-fuzz-XXXXXX",
             base && *base && strlen(base) < 40 ? base : "/tmp");
    if (!mkdtemp(tmpdir)) fuzz_die("cannot make a directory %s", tmpdir);
    atexit(remove_tmpdir);
    return tmpdir;
}

void fuzz_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) fuzz_die("cannot write %s", path);
}

const char *fuzz_shared(void)
{
    const char *shared = getenv("TOME_SHARED");
    if (!shared || !*shared)
        fuzz_die("TOME_SHARED is not set: it names the golden data (make check sets it)");
    return shared;
}
