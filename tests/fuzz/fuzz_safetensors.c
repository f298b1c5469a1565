/*
 * fuzz_safetensors.c - a checkpoint's safetensors headers and its index
 * (engine/safetensors.c), through v4_checkpoint_open on a directory made
 * from the input.  The first byte chooses the layout:
 *
 *   even: the rest is model.safetensors (no index);
 *   odd:  the rest is model.safetensors.index.json up to the first NUL
 *         byte, and what follows it is the shard a.safetensors.
 *
 * Every tensor of an opened checkpoint is looked up by name again and its
 * first and last bytes are read: a tensor reaching past its shard's
 * mapping would fault here.
 */
#include "engine/checkpoint.h"
#include "tests/fuzz/fuzz.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Where the tensors' bytes are read to. */
volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    const char *dir = fuzz_tmpdir();
    char index[128], single[128], shard[128];
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(shard, sizeof shard, "%s/a.safetensors", dir);
    unlink(index);
    unlink(single);
    unlink(shard);
    const uint8_t *rest = data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        const uint8_t *nul = memchr(rest, 0, n);
        size_t json_len = nul ? (size_t)(nul - rest) : n;
        fuzz_write_file(index, rest, json_len);
        if (nul) fuzz_write_file(shard, nul + 1, n - json_len - 1);
    } else {
        fuzz_write_file(single, rest, n);
    }
    v4_checkpoint *ck;
    tome_error err = {0};
    if (v4_checkpoint_open(dir, &ck, &err) != 0) return 0;
    for (size_t i = 0; i < ck->n_tensors; i++) {
        const v4_ckpt_tensor *t = &ck->tensors[i];
        if (v4_checkpoint_find(ck, t->name) != t)
            fuzz_die("tensor %s is not found by its own name", t->name);
        if (t->nbytes) sink ^= t->data[0] ^ t->data[t->nbytes - 1];
    }
    v4_checkpoint_free(ck);
    return 0;
}
