/*
 * Damaged checkpoints must be refused with a message that names the
 * problem: a truncated shard, a wrong dtype, a mis-shaped tensor, a missing
 * or unexpected tensor, a malformed JSON header, a header length past the
 * end of the file, a config that does not parse.  Each case copies the
 * golden v4-tiny-a checkpoint, damages one thing, and opens it.
 */
#include "engine/v4.h"
#include "tests/check.h"

#include <unistd.h>

static const char *files[] = {"config.json", "model.safetensors.index.json",
                              "model-00001-of-00002.safetensors",
                              "model-00002-of-00002.safetensors"};
#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

static char *slurp(const char *path, size_t *len)
{
    char *buf;
    tome_error err = {0};
    REQUIRE(tome_read_file(path, 1u << 30, &buf, len, &err) == 0, "%s", err.msg);
    return buf;
}

static void spit(const char *path, const char *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(buf, 1, len, f) == len && fclose(f) == 0, "cannot write %s", path);
}

/* A fresh copy of the golden model in its own directory. */
static const char *fresh_copy(void)
{
    const char *dir = check_tmpdir();
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char rel[256], dst[4200];
        size_t len;
        snprintf(rel, sizeof rel, "golden/v4-tiny-a/%s", files[i]);
        char *buf = slurp(check_shared_path(rel), &len);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        spit(dst, buf, len);
        free(buf);
    }
    return dir;
}

/* Replace the first occurrence of `from` with `to` (same length) in a file. */
static void patch(const char *dir, const char *file, const char *from, const char *to)
{
    char path[4200];
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char *buf = slurp(path, &len);
    REQUIRE(strlen(from) == strlen(to), "patch must keep the length");
    char *at = memmem(buf, len, from, strlen(from));
    REQUIRE(at, "%s: \"%s\" not found", file, from);
    memcpy(at, to, strlen(to));
    spit(path, buf, len);
    free(buf);
}

static void expect_refusal(const char *dir, const char *what, const char *needle1,
                           const char *needle2)
{
    v4_model *m = NULL;
    tome_error err = {0};
    int rc = v4_model_open(dir, NULL, &m, &err);
    CHECKF(rc != 0 && m == NULL, "%s: the damaged checkpoint was accepted", what);
    CHECKF(strstr(err.msg, needle1) != NULL, "%s: message \"%s\" does not name \"%s\"", what,
           err.msg, needle1);
    if (needle2)
        CHECKF(strstr(err.msg, needle2) != NULL, "%s: message \"%s\" does not say \"%s\"", what,
               err.msg, needle2);
    fprintf(stderr, "  %-22s -> %s\n", what, err.msg);
    v4_model_free(m);
}

int main(void)
{
    const char *dir = fresh_copy();
    v4_model *m = NULL;
    tome_error err = {0};
    CHECK_OK(v4_model_open(dir, NULL, &m, &err), &err);
    v4_model_free(m);

    char path[4200];
    dir = fresh_copy();
    snprintf(path, sizeof path, "%s/%s", dir, SHARD2);
    REQUIRE(truncate(path, 5000000) == 0, "truncate failed");
    expect_refusal(dir, "truncated shard", SHARD2, "truncated");

    dir = fresh_copy();
    patch(dir, SHARD2, "\"hc_head_base\":{\"dtype\":\"F32\"",
          "\"hc_head_base\":{\"dtype\":\"I32\"");
    expect_refusal(dir, "wrong dtype", "hc_head_base", "dtype I32");

    dir = fresh_copy();
    patch(dir, SHARD1, "\"shape\":[1024,256]", "\"shape\":[256,1024]");
    expect_refusal(dir, "mis-shaped tensor", "embed.weight", "shape");

    dir = fresh_copy();
    patch(dir, SHARD2, "\"norm.weight\"", "\"norm.weighx\"");
    patch(dir, "model.safetensors.index.json", "\"norm.weight\"", "\"norm.weighx\"");
    expect_refusal(dir, "missing tensor", "norm.weight", "missing");

    dir = fresh_copy();
    patch(dir, SHARD1, "{\"__metadata__\"", "[\"__metadata__\"");
    expect_refusal(dir, "malformed JSON header", SHARD1, "JSON header");

    dir = fresh_copy();
    snprintf(path, sizeof path, "%s/%s", dir, SHARD1);
    size_t len;
    char *buf = slurp(path, &len);
    uint64_t past = (uint64_t)len + 100;
    for (int i = 0; i < 8; i++) buf[i] = (char)(past >> (8 * i));
    spit(path, buf, len);
    free(buf);
    expect_refusal(dir, "header length past EOF", SHARD1, "past the end");

    dir = fresh_copy();
    patch(dir, "config.json", "\"hidden_size\": 256", "\"hidden_size\": 384");
    expect_refusal(dir, "config/shape mismatch", "shape", NULL);

    dir = fresh_copy();
    patch(dir, "config.json", "\"vocab_size\": 1024", "\"vocab_size\": \"x24");
    expect_refusal(dir, "malformed config", "config.json", NULL);

    dir = fresh_copy();
    snprintf(path, sizeof path, "%s/%s", dir, SHARD2);
    REQUIRE(unlink(path) == 0, "unlink failed");
    expect_refusal(dir, "missing shard", SHARD2, NULL);
    return check_finish();
}
