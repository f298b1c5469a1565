/*
 * replay.c - a main() for a fuzz target without libFuzzer: every file of
 * the target's corpus, in name order, goes once through
 * LLVMFuzzerTestOneInput.  `make check` runs one such program per target
 * (tests/fuzz/NAME_replay), so the committed corpora, findings included,
 * are replayed with the default compiler and, in a sanitized build, under
 * ASan and UBSan.
 *
 * The corpus is the directory given as the argument, or else
 * $TOME_SRCDIR/tests/fuzz/corpus/NAME, NAME being the program's name
 * without "_replay".  An empty or missing corpus fails the test.
 */
#include "tests/fuzz/fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Targets without set-up leave this undefined. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static void corpus_dir(const char *argv0, char *out, size_t cap)
{
    const char *src = getenv("TOME_SRCDIR");
    const char *name = strrchr(argv0, '/');
    name = name ? name + 1 : argv0;
    size_t len = strlen(name);
    if (len > 7 && strcmp(name + len - 7, "_replay") == 0) len -= 7;
    if (!src || !*src) fuzz_die("TOME_SRCDIR is not set and no corpus directory was given");
    snprintf(out, cap, "%s/tests/fuzz/corpus/%.*s", src, (int)len, name);
}

static void *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) fuzz_die("cannot open %s", path);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) fuzz_die("out of memory reading %s", path);
    *n = len;
    return buf;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int regular(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

int main(int argc, char **argv)
{
    char dir[4096];
    if (argc > 1)
        snprintf(dir, sizeof dir, "%s", argv[1]);
    else
        corpus_dir(argv[0], dir, sizeof dir);
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    struct dirent **names;
    int n = scandir(dir, &names, regular, by_name);
    if (n <= 0) fuzz_die("no inputs in the corpus %s", dir);
    for (int i = 0; i < n; i++) {
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        size_t len;
        void *data = read_all(path, &len);
        LLVMFuzzerTestOneInput(data, len);
        free(data);
        free(names[i]);
    }
    free(names);
    printf("%s: %d inputs of %s replayed\n", argv[0], n, dir);
    return 0;
}
