/*
 * st.c - the safetensors container: shard plan, headers, index.
 *
 * A shard is an 8-byte little-endian header length, a JSON header
 * {"__metadata__": {"format": "pt"}, name: {dtype, shape, data_offsets}}
 * and the tensor data back to back, offsets counted from the end of the
 * header.  Tensors are contiguous (the format forbids holes), in manifest
 * order, as in the official checkpoints.  The header is padded with spaces
 * so the data starts on an 8-byte boundary, as Hugging Face's writer does.
 * Headers are computed before any data is written: a tensor's size follows
 * from its dtype and shape, so the writer never seeks back.
 *
 * Each shard file is fsynced before the next one starts; making the whole
 * directory appear at once is the caller's job (out.c).
 */
#include "tools/mkmodel/st.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WRITE_BUFFER (1 << 20)

typedef struct shard_file {
    FILE *fp;
    const char *path;
    uint64_t written;
} shard_file;

static void shard_name(char *buf, size_t size, size_t index, size_t count)
{
    snprintf(buf, size, "model-%05zu-of-%05zu.safetensors", index + 1, count);
}

/* Shard boundaries: shard i holds tensors first[i] .. first[i+1]-1.
 * `first` needs room for n + 1 entries; returns the shard count. */
static size_t plan_shards(const v4_tensor_spec *specs, size_t n, uint64_t shard_bytes,
                          size_t *first)
{
    size_t shards = 0;
    uint64_t used = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = v4_tensor_spec_bytes(&specs[i]);
        if (i == 0 || (used > 0 && used + b > shard_bytes)) {
            first[shards++] = i;
            used = 0;
        }
        used += b;
    }
    first[shards] = n;
    return shards;
}

static json_t *tensor_entry(const v4_tensor_spec *t, uint64_t offset)
{
    json_t *shape = json_array();
    for (int d = 0; shape && d < t->ndim; d++)
        json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
    return json_pack("{s:s, s:o, s:[I, I]}", "dtype", v4_dtype_name(t->dtype), "shape", shape,
                     "data_offsets", (json_int_t)offset,
                     (json_int_t)(offset + v4_tensor_spec_bytes(t)));
}

/* The header of a shard holding specs[begin..end), padded with spaces to
 * a multiple of 8 bytes past the length field.  The caller frees *out. */
static int shard_header(const v4_tensor_spec *specs, size_t begin, size_t end, char **out,
                        size_t *len, tome_error *err)
{
    json_t *root = json_pack("{s:{s:s}}", "__metadata__", "format", "pt");
    uint64_t offset = 0;
    for (size_t i = begin; root && i < end; i++) {
        json_t *entry = tensor_entry(&specs[i], offset);
        if (!entry || json_object_set_new(root, specs[i].name, entry) != 0) {
            json_decref(root);
            root = NULL;
        }
        offset += v4_tensor_spec_bytes(&specs[i]);
    }
    char *text = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text) return tome_errorf(err, TOME_ENOMEM, "out of memory building a shard header");
    size_t n = strlen(text), padded = (8 + n + 7) / 8 * 8 - 8;
    char *p = realloc(text, padded);
    if (!p) {
        free(text);
        return tome_errorf(err, TOME_ENOMEM, "out of memory building a shard header");
    }
    memset(p + n, ' ', padded - n);
    *out = p;
    *len = padded;
    return 0;
}

static int sink_to_file(void *ctx, const void *bytes, size_t n, tome_error *err)
{
    shard_file *s = ctx;
    if (fwrite(bytes, 1, n, s->fp) != n)
        return tome_errorf(err, TOME_EIO, "%s: write failed: %s", s->path, strerror(errno));
    s->written += n;
    return 0;
}

static int write_header(shard_file *s, const char *header, size_t len, tome_error *err)
{
    uint8_t prefix[8];
    for (int i = 0; i < 8; i++) prefix[i] = (uint8_t)((uint64_t)len >> (8 * i));
    int rc = sink_to_file(s, prefix, sizeof prefix, err);
    return rc ? rc : sink_to_file(s, header, len, err);
}

static int write_tensors(shard_file *s, const v4_tensor_spec *specs, size_t begin, size_t end,
                         mk_producer produce, void *produce_ctx, tome_error *err)
{
    for (size_t i = begin; i < end; i++) {
        uint64_t before = s->written, want = v4_tensor_spec_bytes(&specs[i]);
        int rc = produce(produce_ctx, &specs[i], sink_to_file, s, err);
        if (rc) return rc;
        if (s->written - before != want)
            return tome_errorf(err, TOME_EINTERNAL, "tensor %s: produced %llu bytes, expected %llu",
                               specs[i].name, (unsigned long long)(s->written - before),
                               (unsigned long long)want);
    }
    return 0;
}

static int close_durably(shard_file *s, int rc, tome_error *err)
{
    if (rc == 0 && (fflush(s->fp) != 0 || fsync(fileno(s->fp)) != 0))
        rc = tome_errorf(err, TOME_EIO, "%s: write failed: %s", s->path, strerror(errno));
    if (fclose(s->fp) != 0 && rc == 0)
        rc = tome_errorf(err, TOME_EIO, "%s: close failed: %s", s->path, strerror(errno));
    return rc;
}

static int write_shard(const char *path, const v4_tensor_spec *specs, size_t begin, size_t end,
                       mk_producer produce, void *produce_ctx, uint64_t *file_bytes,
                       tome_error *err)
{
    char *header = NULL;
    size_t header_len = 0;
    int rc = shard_header(specs, begin, end, &header, &header_len, err);
    if (rc) return rc;
    shard_file s = {fopen(path, "wbx"), path, 0};
    if (!s.fp) {
        free(header);
        return tome_errorf(err, TOME_EIO, "%s: cannot create: %s", path, strerror(errno));
    }
    setvbuf(s.fp, NULL, _IOFBF, WRITE_BUFFER);
    rc = write_header(&s, header, header_len, err);
    free(header);
    if (rc == 0) rc = write_tensors(&s, specs, begin, end, produce, produce_ctx, err);
    rc = close_durably(&s, rc, err);
    *file_bytes += s.written;
    return rc;
}

static int write_index(const char *dir, const v4_tensor_spec *specs, const size_t *first,
                       size_t shards, uint64_t total, tome_error *err)
{
    json_t *map = json_object();
    char name[64], path[4096];
    for (size_t s = 0; map && s < shards; s++) {
        shard_name(name, sizeof name, s, shards);
        for (size_t i = first[s]; i < first[s + 1]; i++)
            if (json_object_set_new(map, specs[i].name, json_string(name)) != 0) {
                json_decref(map);
                map = NULL;
                break;
            }
    }
    json_t *root = map ? json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total,
                                   "weight_map", map)
                       : NULL;
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    if (!text) return tome_errorf(err, TOME_ENOMEM, "out of memory building the shard index");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    int rc = tome_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

int mk_st_write(const char *dir, const v4_tensor_spec *specs, size_t n, uint64_t shard_bytes,
                mk_producer produce, void *produce_ctx, mk_st_summary *summary, tome_error *err)
{
    memset(summary, 0, sizeof *summary);
    if (n == 0) return tome_errorf(err, TOME_EINVAL, "the manifest is empty");
    size_t *first = malloc((n + 1) * sizeof *first);
    if (!first) return tome_errorf(err, TOME_ENOMEM, "out of memory planning shards");
    size_t shards = plan_shards(specs, n, shard_bytes, first);
    int rc = 0;
    for (size_t s = 0; rc == 0 && s < shards; s++) {
        char name[64], path[4096];
        shard_name(name, sizeof name, s, shards);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        rc = write_shard(path, specs, first[s], first[s + 1], produce, produce_ctx,
                         &summary->file_bytes, err);
    }
    for (size_t i = 0; i < n; i++) summary->data_bytes += v4_tensor_spec_bytes(&specs[i]);
    if (rc == 0) rc = write_index(dir, specs, first, shards, summary->data_bytes, err);
    summary->n_shards = shards;
    free(first);
    return rc;
}
