/*
 * safetensors.c - reading a Hugging Face checkpoint directory.
 *
 * A checkpoint is config.json, model.safetensors.index.json (name -> shard)
 * and the shards, or a single model.safetensors.  Each shard is an 8-byte
 * little-endian header length, a JSON header {name: {dtype, shape,
 * data_offsets}}, and the raw data.  Shards are memory-mapped read-only and
 * never copied: a 160 GB checkpoint costs address space, and the pages the
 * forward pass touches.
 *
 * Everything a hostile or damaged file could get wrong is checked before a
 * single byte of tensor data is used: the header length against the file
 * size, the JSON, every dtype and shape, every data range against the file
 * (a truncated shard is caught here), the byte count against dtype x shape,
 * and the index against the shards (a tensor the index names must be in its
 * shard; a tensor in a shard must be in the index).  Errors name the file
 * and the tensor.
 */
#include "engine/checkpoint.h"

#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEADER_BYTES (256u << 20)

static int path_join(char *out, size_t cap, const char *dir, const char *name, tome_error *err)
{
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap)
        return tome_errorf(err, TOME_EINVAL, "%s/%s: path too long", dir, name);
    return 0;
}

static int map_shard(v4_shard *s, tome_error *err)
{
    s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) return tome_errorf(err, TOME_EIO, "%s: %s", s->path, strerror(errno));
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        return tome_errorf(err, TOME_EIO, "%s: %s", s->path, strerror(errno));
    s->size = (size_t)st.st_size;
    if (s->size < 8)
        return tome_errorf(err, TOME_EFORMAT, "%s: %zu bytes is too short for a safetensors file",
                           s->path, s->size);
    s->map = mmap(NULL, s->size, PROT_READ, MAP_SHARED, s->fd, 0);
    if (s->map == MAP_FAILED) {
        s->map = NULL;
        return tome_errorf(err, TOME_EIO, "%s: mmap failed: %s", s->path, strerror(errno));
    }
    return 0;
}

static int parse_shape(json_t *info, v4_ckpt_tensor *t, const char *file, tome_error *err)
{
    json_t *shape = json_object_get(info, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > 4)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: tensor %s: \"shape\" must be an array of <= 4 "
                           "integers",
                           file, t->name);
    t->ndim = (int)json_array_size(shape);
    int64_t count = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 ||
            json_integer_value(d) > ((int64_t)1 << 40))
            return tome_errorf(err, TOME_EFORMAT, "%s: tensor %s: bad dimension %d", file, t->name,
                               i);
        t->shape[i] = json_integer_value(d);
        count *= t->shape[i];
        if (count > ((int64_t)1 << 42))
            return tome_errorf(err, TOME_EFORMAT, "%s: tensor %s: too many elements", file,
                               t->name);
    }
    t->nbytes = (size_t)count * v4_dtype_size(t->dtype);
    return 0;
}

static int parse_entry(v4_checkpoint *ck, int shard, const char *name, json_t *info,
                       tome_error *err)
{
    const v4_shard *s = &ck->shards[shard];
    v4_ckpt_tensor *t = &ck->tensors[ck->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    ck->n_tensors++;
    t->shard = shard;
    json_t *dt = json_object_get(info, "dtype");
    if (!json_is_object(info) || !json_is_string(dt))
        return tome_errorf(err, TOME_EFORMAT, "%s: tensor %s: missing \"dtype\"", s->path, name);
    if (v4_dtype_from_name(json_string_value(dt), &t->dtype) != 0)
        return tome_errorf(err, TOME_EFORMAT, "%s: tensor %s: unsupported dtype %s", s->path, name,
                           json_string_value(dt));
    int rc = parse_shape(info, t, s->path, err);
    if (rc) return rc;
    json_t *off = json_object_get(info, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1)))
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: tensor %s: \"data_offsets\" must be two integers", s->path, name);
    json_int_t begin = json_integer_value(json_array_get(off, 0));
    json_int_t end = json_integer_value(json_array_get(off, 1));
    size_t avail = s->size - s->data_start;
    if (begin < 0 || end < begin || (uint64_t)end > avail)
        return tome_errorf(
            err, TOME_EFORMAT,
            "%s: tensor %s: data [%lld, %lld) lies outside the %zu data bytes of the "
            "file (truncated shard?)",
            s->path, name, (long long)begin, (long long)end, avail);
    if ((size_t)(end - begin) != t->nbytes)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: tensor %s: %lld data bytes, but dtype and shape need %zu", s->path,
                           name, (long long)(end - begin), t->nbytes);
    t->data = s->map + s->data_start + begin;
    return 0;
}

static int parse_header(v4_checkpoint *ck, int shard, tome_error *err)
{
    v4_shard *s = &ck->shards[shard];
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | s->map[i];
    if (hlen > s->size - 8 || hlen > MAX_HEADER_BYTES)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: header length %llu runs past the end of the %zu-byte file", s->path,
                           (unsigned long long)hlen, s->size);
    s->data_start = 8 + (size_t)hlen;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)s->map + 8, (size_t)hlen, 0, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return tome_errorf(err, TOME_EFORMAT, "%s: malformed JSON header: %s", s->path,
                           root ? "not an object" : jerr.text);
    }
    size_t n = json_object_size(root);
    v4_ckpt_tensor *grown = realloc(ck->tensors, (ck->n_tensors + n) * sizeof *grown);
    if (!grown) {
        json_decref(root);
        return tome_errorf(err, TOME_ENOMEM, "out of memory");
    }
    ck->tensors = grown;
    const char *name;
    json_t *info;
    int rc = 0;
    json_object_foreach(root, name, info) {
        if (strcmp(name, "__metadata__") == 0) continue;
        if ((rc = parse_entry(ck, shard, name, info, err)) != 0) break;
    }
    json_decref(root);
    return rc;
}

static int add_shard(v4_checkpoint *ck, const char *file, tome_error *err)
{
    for (int i = 0; i < ck->n_shards; i++)
        if (strcmp(ck->shards[i].file, file) == 0) return i;
    if (strchr(file, '/') || strcmp(file, "..") == 0)
        return tome_errorf(err, TOME_EFORMAT,
                           "index names shard \"%s\", which is not a plain file "
                           "name",
                           file);
    v4_shard *grown = realloc(ck->shards, (size_t)(ck->n_shards + 1) * sizeof *grown);
    if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    ck->shards = grown;
    v4_shard *s = &ck->shards[ck->n_shards];
    memset(s, 0, sizeof *s);
    s->fd = -1;
    ck->n_shards++;
    s->file = strdup(file);
    if (!s->file) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    char path[4096];
    int rc = path_join(path, sizeof path, ck->dir, file, err);
    if (rc) return rc;
    if (!(s->path = strdup(path))) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    if ((rc = map_shard(s, err)) != 0) return rc;
    if ((rc = parse_header(ck, ck->n_shards - 1, err)) != 0) return rc;
    return ck->n_shards - 1;
}

/* Read the index (or fall back to a single model.safetensors) and map every
 * shard it names; then check that index and shards agree. */
static int load_shards(v4_checkpoint *ck, tome_error *err)
{
    char path[4096];
    int rc = path_join(path, sizeof path, ck->dir, "model.safetensors.index.json", err);
    if (rc) return rc;
    if (access(path, F_OK) != 0) {
        rc = add_shard(ck, "model.safetensors", err);
        return rc < 0 ? rc : 0;
    }
    json_error_t jerr;
    json_t *idx = json_load_file(path, 0, &jerr);
    json_t *map = idx ? json_object_get(idx, "weight_map") : NULL;
    if (!json_is_object(map)) {
        json_decref(idx);
        return tome_errorf(err, TOME_EFORMAT, "%s: %s", path,
                           idx ? "missing \"weight_map\" object" : jerr.text);
    }
    const char *name;
    json_t *file;
    json_object_foreach(map, name, file) {
        if (!json_is_string(file)) {
            rc =
                tome_errorf(err, TOME_EFORMAT, "%s: weight_map[%s] is not a file name", path, name);
            break;
        }
        if ((rc = add_shard(ck, json_string_value(file), err)) < 0) break;
        rc = 0;
    }
    if (rc == 0) {
        ck->index = map;
        json_incref(map);
    }
    json_decref(idx);
    return rc;
}

const v4_ckpt_tensor *v4_checkpoint_find(const v4_checkpoint *ck, const char *name)
{
    json_t *v = json_object_get(ck->by_name, name);
    return v ? &ck->tensors[json_integer_value(v)] : NULL;
}

static int build_name_table(v4_checkpoint *ck, tome_error *err)
{
    ck->by_name = json_object();
    if (!ck->by_name) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    for (size_t i = 0; i < ck->n_tensors; i++) {
        const v4_ckpt_tensor *t = &ck->tensors[i];
        if (json_object_get(ck->by_name, t->name))
            return tome_errorf(err, TOME_EFORMAT, "tensor %s appears in both %s and %s", t->name,
                               ck->shards[t->shard].path,
                               ck->shards[v4_checkpoint_find(ck, t->name)->shard].path);
        json_object_set_new(ck->by_name, t->name, json_integer((json_int_t)i));
        if (!ck->index) continue;
        json_t *want = json_object_get(ck->index, t->name);
        if (!want)
            return tome_errorf(err, TOME_EFORMAT, "%s: tensor %s is not in the index",
                               ck->shards[t->shard].path, t->name);
        if (strcmp(json_string_value(want), ck->shards[t->shard].file) != 0)
            return tome_errorf(err, TOME_EFORMAT, "tensor %s: index says %s, found in %s", t->name,
                               json_string_value(want), ck->shards[t->shard].path);
    }
    if (ck->index) {
        const char *name;
        json_t *file;
        json_object_foreach(ck->index, name, file) {
            if (!json_object_get(ck->by_name, name))
                return tome_errorf(err, TOME_EFORMAT,
                                   "tensor %s: the index places it in %s, "
                                   "which does not contain it",
                                   name, json_string_value(file));
        }
    }
    return 0;
}

int v4_checkpoint_open(const char *dir, v4_checkpoint **out, tome_error *err)
{
    *out = NULL;
    v4_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->dir = strdup(dir))) {
        free(ck);
        return tome_errorf(err, TOME_ENOMEM, "out of memory");
    }
    int rc = load_shards(ck, err);
    if (rc == 0) rc = build_name_table(ck, err);
    if (rc) {
        v4_checkpoint_free(ck);
        return rc;
    }
    *out = ck;
    return 0;
}

void v4_checkpoint_free(v4_checkpoint *ck)
{
    if (!ck) return;
    for (int i = 0; i < ck->n_shards; i++) {
        v4_shard *s = &ck->shards[i];
        if (s->map) munmap(s->map, s->size);
        if (s->fd >= 0) close(s->fd);
        free(s->path);
        free(s->file);
    }
    for (size_t i = 0; i < ck->n_tensors; i++) free((char *)ck->tensors[i].name);
    free(ck->shards);
    free(ck->tensors);
    json_decref(ck->index);
    json_decref(ck->by_name);
    v4_gguf_free(ck->gguf);
    v4_gguf_free(ck->gguf_mtp);
    free(ck->dir);
    free(ck);
}
