/*
 * checkpoint.h - private to engine/: a mapped checkpoint directory.
 *
 * A v4_checkpoint is the raw view of the files (shards mapped, headers
 * parsed and bounds-checked, names indexed); model.c binds it to the
 * config's manifest.  Owned by the v4_model that opened it.
 */
#ifndef TOME_ENGINE_CHECKPOINT_H
#define TOME_ENGINE_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/internal.h"

typedef struct json_t json_t;

typedef struct v4_shard {
    char *file; /* name inside the directory */
    char *path; /* full path, for messages */
    int fd;
    uint8_t *map;
    size_t size;
    size_t data_start; /* 8 + header length */
} v4_shard;

typedef struct v4_ckpt_tensor {
    const char *name;
    v4_dtype dtype;
    int ndim;
    int64_t shape[4];
    const uint8_t *data;
    size_t nbytes;
    int shard;
} v4_ckpt_tensor;

typedef struct v4_checkpoint {
    char *dir;
    v4_shard *shards;
    int n_shards;
    v4_ckpt_tensor *tensors;
    size_t n_tensors;
    json_t *index;            /* weight_map of the index file, or NULL for a single file */
    json_t *by_name;          /* name -> position in tensors[] */
    struct v4_gguf *gguf;     /* a GGUF file (gguf_model.c): its parse; the file is shards[0] */
    struct v4_gguf *gguf_mtp; /* a separate GGUF with the MTP block (shards[1]), or NULL */
} v4_checkpoint;

int v4_checkpoint_open(const char *dir, v4_checkpoint **out, tome_error *err);
void v4_checkpoint_free(v4_checkpoint *ck);
const v4_ckpt_tensor *v4_checkpoint_find(const v4_checkpoint *ck, const char *name);

#endif
