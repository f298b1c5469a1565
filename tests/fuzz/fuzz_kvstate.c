/*
 * fuzz_kvstate.c - the KV state file loader (kvstate/read.c): open,
 * verify, match and restore every point of a file made from the input,
 * for the golden model v4-tiny-a.
 *
 * Random bytes rarely get past the checksums, and a state file is half a
 * megabyte, so the input usually describes a file rather than being one.
 * Its first byte is a mode:
 *
 *   bit 0 clear: the rest of the input is the file;
 *   bit 0 set:   the file is a good one (16 tokens and a restart point at
 *                8, saved at start-up), truncated to the little-endian
 *                32-bit length that follows when that is shorter and not
 *                0, then patched by records {offset: 32 bits LE, modulo
 *                the file's size; n: 8 bits; n bytes};
 *   bit 1 set:   the checksums of the sections, table, ids and header are
 *                then recomputed, as a hostile writer would, so that the
 *                checks behind them are reached;
 *   bit 2 set:   so is the header's file size.
 */
#include "engine/v4.h"
#include "kvstate/kvstate.h"
#include "kvstate/layout.h"
#include "tests/fuzz/fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define GOOD_TOKENS 16
#define GOOD_POINT  8

static v4_model *model;
static uint8_t *good;
static size_t good_len;
static char path[128];
static const int32_t ids[GOOD_TOKENS] = {5,  77,   300, 12,  901, 44,  2,  650,
                                         19, 1000, 3,   512, 87,  240, 66, 9};

static void *read_file(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    if (!f || fseek(f, 0, SEEK_END) != 0) fuzz_die("cannot read %s", p);
    long len = ftell(f);
    uint8_t *buf = len > 0 ? malloc((size_t)len) : NULL;
    rewind(f);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) fuzz_die("cannot read %s", p);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

/* The good file: a prefill of `ids`, forked at GOOD_POINT. */
static void save_good(void)
{
    tome_error err = {0};
    v4_state *st, *point;
    if (v4_state_new(model, &st, &err) != 0) fuzz_die("state: %s", err.msg);
    v4_eval ev = {0};
    if (v4_eval_tokens(st, ids, GOOD_POINT, &ev, &err) != 0 ||
        v4_state_fork(st, &point, &err) != 0 ||
        v4_eval_tokens(st, ids + GOOD_POINT, GOOD_TOKENS - GOOD_POINT, &ev, &err) != 0)
        fuzz_die("prefill: %s", err.msg);
    const v4_state *points[1] = {point};
    if (kvstate_save(path, st, points, 1, ids, GOOD_TOKENS, &err) != 0)
        fuzz_die("save: %s", err.msg);
    v4_state_free(point);
    v4_state_free(st);
    good = read_file(path, &good_len);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/golden/v4-tiny-a", fuzz_shared());
    snprintf(path, sizeof path, "%s/state.kv", fuzz_tmpdir());
    tome_error err = {0};
    v4_open_options o = {.numerics = V4_NUMERICS_QAT, .n_threads = 1};
    if (v4_model_open(dir, &o, &model, &err) != 0) fuzz_die("%s: %s", dir, err.msg);
    save_good();
    return 0;
}

static int inside(size_t size, uint64_t off, uint64_t len)
{
    return off <= size && len <= size - off;
}

/* Recompute every checksum the layout has, where its range is inside. */
static void seal(uint8_t *f, size_t size, int set_size)
{
    if (size < KV_HEADER_BYTES) return;
    if (set_size) kv_put64(f + H_FILE_BYTES, size);
    uint64_t n = kv_get32(f + H_N_SECTIONS), points = kv_get32(f + H_N_POINTS);
    uint64_t table = kv_get64(f + H_TABLE_OFFSET), table_bytes = n * KV_ENTRY_BYTES + 8 * points;
    if (n <= KV_MAX_SECTIONS && points <= KV_MAX_POINTS && inside(size, table, table_bytes)) {
        for (uint64_t i = 0; i < n; i++) {
            uint8_t *e = f + table + i * KV_ENTRY_BYTES;
            uint64_t off = kv_get64(e + E_OFFSET), len = kv_get64(e + E_LENGTH);
            if (inside(size, off, len)) kv_put64(e + E_SUM, XXH3_64bits(f + off, len));
        }
        kv_put64(f + H_TABLE_SUM, XXH3_64bits(f + table, table_bytes));
    }
    uint64_t tokens = kv_get64(f + H_TOKENS), at = kv_get64(f + H_IDS_OFFSET);
    if (tokens <= size / 4 && inside(size, at, tokens * 4))
        kv_put64(f + H_IDS_SUM, XXH3_64bits(f + at, tokens * 4));
    kv_put64(f + H_HEADER_SUM, XXH3_64bits(f, H_HEADER_SUM));
}

/* The good file, cut and patched as the input says (malloc'd). */
static uint8_t *patched(const uint8_t *in, size_t n, size_t *size)
{
    *size = good_len;
    if (n >= 4) {
        uint32_t cut = kv_get32(in);
        if (cut && cut < good_len) *size = cut;
        in += 4, n -= 4;
    }
    uint8_t *f = malloc(*size);
    if (!f) return NULL;
    memcpy(f, good, *size);
    while (n >= 5 && *size) {
        uint32_t off = kv_get32(in) % *size;
        size_t len = in[4];
        in += 5, n -= 5;
        if (len > n) len = n;
        if (len > *size - off) len = *size - off;
        memcpy(f + off, in, len);
        in += len, n -= len;
    }
    return f;
}

static void use(kvstate_file *f)
{
    tome_error err = {0};
    size_t point;
    kvstate_verify(f, &err);
    kvstate_match(f, ids, GOOD_TOKENS, &err);
    kvstate_longest(f, ids, GOOD_TOKENS, &point, &err);
    for (size_t k = 0; k <= kvstate_points(f); k++) {
        v4_state *st;
        if (kvstate_restore(f, k, &st, &err) == 0) v4_state_free(st);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int mode = data[0];
    size_t len = size - 1;
    uint8_t *file = (mode & 1) ? patched(data + 1, size - 1, &len) : malloc(len ? len : 1);
    if (!file) return 0;
    if (!(mode & 1)) memcpy(file, data + 1, len);
    if (mode & 2) seal(file, len, mode & 4);
    fuzz_write_file(path, file, len);
    free(file);
    kvstate_file *f;
    tome_error err = {0};
    if (kvstate_open(path, model, &f, &err) != 0) return 0;
    use(f);
    kvstate_close(f);
    return 0;
}
