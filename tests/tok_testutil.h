/*
 * tok_testutil.h - what the tokenizer and chat tests share: finding the
 * fetched tokenizer.json (see tests/tokenizer.am) and small helpers.
 */
#ifndef TOME_TESTS_TOK_TESTUTIL_H
#define TOME_TESTS_TOK_TESTUTIL_H

#include "tokenizer/tokenizer.h"
#include "tests/check.h"

/* Path of tokenizer.json of `variant` ("v3": DeepSeek's file as shipped;
 * "v4": with V4's extra added tokens).  Fails the test when it is absent. */
static inline const char *tok_test_path(const char *variant)
{
    static char path[2][4096];
    static int next;
    const char *dir = getenv("TOME_TOKENIZER_DIR");
    const char *build = getenv("TOME_BUILDDIR");
    char *out = path[next++ % 2];
    if (dir && *dir)
        snprintf(out, sizeof path[0], "%s/%s/tokenizer.json", dir, variant);
    else if (build && *build)
        snprintf(out, sizeof path[0], "%s/vocab/%s/tokenizer.json", build, variant);
    else
        REQUIRE(0,
                "neither TOME_TOKENIZER_DIR nor TOME_BUILDDIR is set (run through `make "
                "check`, or set TOME_TOKENIZER_DIR to the output of scripts/fetch-tokenizer.sh)");
    struct stat st;
    REQUIRE(stat(out, &st) == 0,
            "%s is missing: run scripts/fetch-tokenizer.sh DIR and set "
            "TOME_TOKENIZER_DIR=DIR (make check does this itself)",
            out);
    return out;
}

static inline v4_tokenizer *tok_test_load(const char *variant)
{
    v4_tokenizer *t = NULL;
    tome_error err = {0};
    const char *path = tok_test_path(variant);
    int rc = v4_tokenizer_load(path, &t, &err);
    REQUIRE(rc == 0, "loading %s: %s", path, err.msg);
    return t;
}

#endif
