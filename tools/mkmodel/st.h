/*
 * st.h - writing a sharded safetensors checkpoint (private to
 * tome-mkmodel).
 *
 * The writer lays the manifest's tensors out in manifest order over shards
 * named model-0000i-of-0000N.safetensors, each at most `shard_bytes` of
 * tensor data (a larger tensor gets a shard of its own), and writes
 * model.safetensors.index.json beside them.  The bytes themselves come from
 * a producer callback, tensor by tensor, so nothing is held in memory.
 */
#ifndef TOME_TOOLS_MKMODEL_ST_H
#define TOME_TOOLS_MKMODEL_ST_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "tools/mkmodel/fill.h"
#include "engine/v4.h"

/* Writes every byte of tensor `t`, in order, through `sink`. */
typedef int (*mk_producer)(void *ctx, const v4_tensor_spec *t, mk_sink sink, void *sink_ctx,
                           tome_error *err);

typedef struct mk_st_summary {
    size_t n_shards;
    uint64_t data_bytes; /* tensor data, the index's total_size */
    uint64_t file_bytes; /* the shard files, headers included */
} mk_st_summary;

/* Write the shards and the index into the existing directory `dir`. */
int mk_st_write(const char *dir, const v4_tensor_spec *specs, size_t n, uint64_t shard_bytes,
                mk_producer produce, void *produce_ctx, mk_st_summary *summary, tome_error *err);

#endif
