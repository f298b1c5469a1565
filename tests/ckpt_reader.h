/*
 * ckpt_reader.h - an independent reader of safetensors checkpoints, for
 * the tests that check what tome-mkmodel writes.
 *
 * It shares no code with the writer or the engine's loader: it parses the
 * index and the shard headers with jansson, checks the layout rules as it
 * goes (8-byte aligned data, offsets that tile each shard, sizes that
 * match the shapes, the index's total_size) and decodes FP8/FP4/BF16/F32
 * from the formats' definitions.  A broken rule is a test failure
 * (tests/check.h); a file it cannot read at all stops the test.
 */
#ifndef TOME_TESTS_CKPT_READER_H
#define TOME_TESTS_CKPT_READER_H

#include "engine/v4.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_SHARDS 64

typedef struct ckpt_tensor {
    const char *name; /* points into the shard's parsed header */
    v4_dtype dtype;
    int ndim;
    int64_t shape[4];
    const uint8_t *data;
    size_t size;
    int shard;
    size_t begin;
} ckpt_tensor;

typedef struct ckpt_model {
    char dir[4096];
    int n_shards;
    char *shard[MAX_SHARDS];
    size_t shard_len[MAX_SHARDS];
    json_t *headers[MAX_SHARDS];
    ckpt_tensor *t;
    size_t n;
    v4_config cfg;
} ckpt_model;

/* dir/name in one of eight rotating static buffers (enough for the
 * arguments of one call). */
char *ckpt_path(const char *dir, const char *name);

/* The whole file at `path`, NUL-terminated (free it); *len its length. */
char *ckpt_slurp(const char *path, size_t *len);

/* The checkpoint in `dir` (config.json, the index, every shard), its
 * tensors in file order; release with ckpt_free. */
void ckpt_load(ckpt_model *m, const char *dir);
void ckpt_free(ckpt_model *m);

/* The tensor called `name`, or NULL. */
const ckpt_tensor *ckpt_find(const ckpt_model *m, const char *name);

/* One stored value, from its format's definition. */
double ckpt_e4m3(uint8_t b);
double ckpt_e2m1(uint8_t c);
double ckpt_bf16(const uint8_t *p);
double ckpt_f32(const uint8_t *p);

#endif
