/*
 * fill.h - the values of a random V4 checkpoint, tensor by tensor
 * (private to tome-mkmodel).
 *
 * mk_fill turns one entry of the tensor manifest into the exact bytes the
 * checkpoint stores for it, handing them to a sink in pieces so that no
 * tensor is ever held whole.  Every value is a pure function of (seed,
 * tensor name, element index), so the order tensors are produced in, and
 * the shard they land in, change nothing.
 */
#ifndef TOME_TOOLS_MKMODEL_FILL_H
#define TOME_TOOLS_MKMODEL_FILL_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "engine/v4.h"

/* Receives the next `n` bytes of the tensor being produced. */
typedef int (*mk_sink)(void *ctx, const void *bytes, size_t n, tome_error *err);

/* Created by mk_fill_new, released by mk_fill_free.  Borrows `cfg` and the
 * manifest `specs`, which must outlive it. */
typedef struct mk_fill mk_fill;

/* Most threads a fill may use. */
#define MK_MAX_THREADS 64

/* `threads` (1..MK_MAX_THREADS) share the work of each tensor; the bytes
 * are the same for any count. */
int mk_fill_new(uint64_t seed, int threads, const v4_config *cfg, const v4_tensor_spec *specs,
                size_t n_specs, mk_fill **out, tome_error *err);
void mk_fill_free(mk_fill *f);

/* Produce every byte of tensor `t` (one of the manifest's entries), in
 * order, through `sink`. */
int mk_fill_tensor(mk_fill *f, const v4_tensor_spec *t, mk_sink sink, void *ctx, tome_error *err);

#endif
