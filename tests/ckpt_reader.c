/*
 * ckpt_reader.c - the independent checkpoint reader of ckpt_reader.h.
 */
#include "tests/ckpt_reader.h"

#include "common/common.h"
#include "tests/check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *ckpt_path(const char *dir, const char *name)
{
    static char buf[8][4096];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

char *ckpt_slurp(const char *path, size_t *len)
{
    char *text;
    size_t n;
    tome_error err;
    REQUIRE(tome_read_file(path, (size_t)1 << 31, &text, &n, &err) == 0, "%s", err.msg);
    if (len) *len = n;
    return text;
}

static int by_file_order(const void *a, const void *b)
{
    const ckpt_tensor *x = a, *y = b;
    if (x->shard != y->shard) return x->shard - y->shard;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Parse one shard's header; checks layout rules that need the header only. */
static void read_shard(ckpt_model *m, int s, const char *file)
{
    size_t len;
    char *bytes = ckpt_slurp(ckpt_path(m->dir, file), &len);
    m->shard[s] = bytes;
    m->shard_len[s] = len;
    REQUIRE(len >= 8, "%s: shorter than its length field", file);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (uint8_t)bytes[i];
    REQUIRE(8 + hlen <= len, "%s: header length %llu beyond the file", file,
            (unsigned long long)hlen);
    CHECKF((8 + hlen) % 8 == 0, "%s: data starts at %llu, not 8-byte aligned", file,
           (unsigned long long)(8 + hlen));
    json_error_t jerr;
    json_t *h = json_loadb(bytes + 8, hlen, 0, &jerr);
    REQUIRE(h && json_is_object(h), "%s: header is not a JSON object: %s", file, jerr.text);
    m->headers[s] = h;
    json_t *meta = json_object_get(h, "__metadata__");
    CHECKF(meta && json_is_string(json_object_get(meta, "format")) &&
               strcmp(json_string_value(json_object_get(meta, "format")), "pt") == 0,
           "%s: __metadata__.format is not \"pt\"", file);
    const uint8_t *data = (const uint8_t *)bytes + 8 + hlen;
    size_t data_len = len - 8 - hlen;
    const char *name;
    json_t *e;
    json_object_foreach(h, name, e) {
        if (strcmp(name, "__metadata__") == 0) continue;
        ckpt_tensor *t = &m->t[m->n++];
        memset(t, 0, sizeof *t);
        t->name = name;
        t->shard = s;
        json_t *shape = json_object_get(e, "shape"), *off = json_object_get(e, "data_offsets");
        const char *dtype = json_string_value(json_object_get(e, "dtype"));
        REQUIRE(dtype && v4_dtype_from_name(dtype, &t->dtype) == 0, "%s: %s: bad dtype", file,
                name);
        REQUIRE(json_is_array(shape) && json_array_size(shape) <= 4, "%s: %s: bad shape", file,
                name);
        t->ndim = (int)json_array_size(shape);
        uint64_t count = v4_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) {
            t->shape[d] = json_integer_value(json_array_get(shape, (size_t)d));
            count *= (uint64_t)t->shape[d];
        }
        REQUIRE(json_is_array(off) && json_array_size(off) == 2, "%s: %s: bad data_offsets", file,
                name);
        uint64_t b = (uint64_t)json_integer_value(json_array_get(off, 0));
        uint64_t en = (uint64_t)json_integer_value(json_array_get(off, 1));
        REQUIRE(b <= en && en <= data_len, "%s: %s: offsets [%llu, %llu] outside %zu data bytes",
                file, name, (unsigned long long)b, (unsigned long long)en, data_len);
        CHECKF(en - b == count, "%s: %s: %llu bytes for a shape of %llu", file, name,
               (unsigned long long)(en - b), (unsigned long long)count);
        t->begin = b;
        t->data = data + b;
        t->size = en - b;
    }
}

/* Offsets in a shard must tile its data exactly: no gap, no overlap. */
static void check_contiguous(const ckpt_model *m)
{
    size_t i = 0;
    for (int s = 0; s < m->n_shards; s++) {
        size_t expect = 0;
        for (; i < m->n && m->t[i].shard == s; i++) {
            CHECKF(m->t[i].begin == expect, "shard %d: %s starts at %zu, previous ended at %zu", s,
                   m->t[i].name, m->t[i].begin, expect);
            expect = m->t[i].begin + m->t[i].size;
        }
        size_t data_len = (size_t)((const char *)m->t[i - 1].data + m->t[i - 1].size - m->shard[s]);
        CHECKF(data_len == m->shard_len[s], "shard %d: %zu trailing bytes", s,
               m->shard_len[s] - data_len);
    }
}

void ckpt_load(ckpt_model *m, const char *dir)
{
    memset(m, 0, sizeof *m);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    size_t len;
    char *cfg = ckpt_slurp(ckpt_path(dir, "config.json"), &len);
    tome_error err;
    REQUIRE(v4_config_parse(cfg, len, dir, &m->cfg, &err) == 0, "%s", err.msg);
    free(cfg);
    char *index = ckpt_slurp(ckpt_path(dir, "model.safetensors.index.json"), &len);
    json_error_t jerr;
    json_t *root = json_loadb(index, len, 0, &jerr);
    free(index);
    REQUIRE(root, "%s: index: %s", dir, jerr.text);
    json_t *map = json_object_get(root, "weight_map");
    REQUIRE(json_is_object(map), "%s: index has no weight_map", dir);
    /* Shard names in sorted order are the shard order. */
    char names[MAX_SHARDS][64];
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v) {
        const char *file = json_string_value(v);
        REQUIRE(file && strlen(file) < 64, "%s: bad weight_map entry for %s", dir, key);
        int found = 0;
        for (int s = 0; s < m->n_shards && !found; s++) found = strcmp(names[s], file) == 0;
        if (!found) {
            REQUIRE(m->n_shards < MAX_SHARDS, "%s: too many shards", dir);
            snprintf(names[m->n_shards++], 64, "%s", file);
        }
    }
    qsort(names, (size_t)m->n_shards, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    m->t = calloc(json_object_size(map) + 1, sizeof *m->t);
    REQUIRE(m->t, "out of memory");
    uint64_t total = 0;
    for (int s = 0; s < m->n_shards; s++) {
        char want[64];
        snprintf(want, sizeof want, "model-%05d-of-%05d.safetensors", s + 1, m->n_shards);
        CHECKF(strcmp(names[s], want) == 0, "%s: shard %s, expected %s", dir, names[s], want);
        size_t before = m->n;
        read_shard(m, s, names[s]);
        for (size_t i = before; i < m->n; i++) {
            total += m->t[i].size;
            const char *listed = json_string_value(json_object_get(map, m->t[i].name));
            CHECKF(listed && strcmp(listed, names[s]) == 0, "%s: %s is in %s, index says %s", dir,
                   m->t[i].name, names[s], listed ? listed : "nothing");
        }
    }
    CHECKF(m->n == json_object_size(map), "%s: %zu tensors in shards, %zu in the index", dir, m->n,
           json_object_size(map));
    json_int_t stated =
        json_integer_value(json_object_get(json_object_get(root, "metadata"), "total_size"));
    CHECKF((uint64_t)stated == total, "%s: total_size %lld, tensors hold %llu", dir,
           (long long)stated, (unsigned long long)total);
    json_decref(root);
    qsort(m->t, m->n, sizeof *m->t, by_file_order);
    check_contiguous(m);
}

void ckpt_free(ckpt_model *m)
{
    for (int s = 0; s < m->n_shards; s++) {
        free(m->shard[s]);
        json_decref(m->headers[s]);
    }
    free(m->t);
}

const ckpt_tensor *ckpt_find(const ckpt_model *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->t[i].name, name) == 0) return &m->t[i];
    return NULL;
}

/* ---- decoding, from the format definitions --------------------------- */

double ckpt_e4m3(uint8_t b)
{
    int e = b >> 3 & 0xf, mant = b & 7;
    double v = e == 0 ? ldexp(mant, -9) : ldexp(8 + mant, e - 10);
    return b & 0x80 ? -v : v;
}

double ckpt_e2m1(uint8_t c)
{
    static const double grid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    return c & 8 ? -grid[c & 7] : grid[c & 7];
}

double ckpt_bf16(const uint8_t *p)
{
    uint32_t b = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 24;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

double ckpt_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, sizeof f);
    return f;
}
