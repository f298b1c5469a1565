/*
 * golden.h - reading the golden reference files in tests.
 *
 * A deliberately separate, minimal safetensors reader (the engine has its
 * own): the tests must not trust the code they test to read the reference.
 * Reads a whole file, parses the header with Jansson, and hands out F32 or
 * I32 tensors by name.
 */
#ifndef TOME_TESTS_GOLDEN_H
#define TOME_TESTS_GOLDEN_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"

typedef struct golden_file {
    char *bytes;
    size_t size;
    json_t *header;
    size_t data_start;
} golden_file;

typedef struct golden_tensor {
    const void *data; /* F32 or I32, little-endian, aligned by the reader */
    int ndim;
    int64_t shape[4];
    int64_t count;
} golden_tensor;

static inline void golden_open(golden_file *g, const char *path)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    g->size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    /* 8 extra bytes let the data start be realigned below. */
    g->bytes = malloc(g->size + 8);
    REQUIRE(g->bytes && fread(g->bytes, 1, g->size, f) == g->size, "cannot read %s", path);
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (uint8_t)g->bytes[i];
    REQUIRE(hlen + 8 <= g->size, "%s: bad header length", path);
    json_error_t jerr;
    g->header = json_loadb(g->bytes + 8, hlen, 0, &jerr);
    REQUIRE(g->header, "%s: %s", path, jerr.text);
    g->data_start = 8 + hlen;
    if (g->data_start % 4) {
        size_t pad = 4 - g->data_start % 4;
        memmove(g->bytes + g->data_start + pad, g->bytes + g->data_start, g->size - g->data_start);
        g->data_start += pad;
    }
}

static inline int golden_has(const golden_file *g, const char *name)
{
    return json_object_get(g->header, name) != NULL;
}

static inline golden_tensor golden_get(const golden_file *g, const char *name)
{
    golden_tensor t = {0};
    json_t *info = json_object_get(g->header, name);
    REQUIRE(info, "golden tensor %s is missing", name);
    json_t *shape = json_object_get(info, "shape");
    t.ndim = (int)json_array_size(shape);
    t.count = 1;
    for (int i = 0; i < t.ndim; i++) {
        t.shape[i] = json_integer_value(json_array_get(shape, (size_t)i));
        t.count *= t.shape[i];
    }
    json_t *off = json_object_get(info, "data_offsets");
    size_t begin = (size_t)json_integer_value(json_array_get(off, 0));
    t.data = g->bytes + g->data_start + begin;
    return t;
}

static inline void golden_close(golden_file *g)
{
    json_decref(g->header);
    free(g->bytes);
}

#endif
