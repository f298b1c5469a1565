/*
 * gguf.c - parsing a GGUF file: header, metadata, tensor infos, data
 * ranges.
 *
 * Everything is read through a cursor that knows how many bytes remain, so
 * no count or length in the file can make the parser read past the end or
 * allocate more than the file could describe: every count is checked
 * against the bytes left before anything is allocated for it.  Tensor
 * infos are checked for their type (the engine's set, anything else
 * refused by name), dimensions (1 to 4, each positive, rows a whole number
 * of blocks, no overflow), alignment and data range.  The layout is the
 * GGUF specification's (version 2 and 3, little-endian).
 */
#include "engine/gguf.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIM       ((int64_t)1 << 40)
#define MAX_ELEMENTS  ((int64_t)1 << 42)
#define MAX_ALIGNMENT 65536
#define MAX_KV        65536 /* real files have a few dozen keys (the vocabulary is arrays) */

/* ---- types ------------------------------------------------------------------ */

/* ggml's type numbers: the ones the engine reads, and the names of the rest
 * (for the refusal). */
static const struct {
    uint32_t id;
    const char *name;
    int dtype; /* v4_dtype, or -1: not read */
} ggml_types[] = {
    {0, "F32", V4_F32},        {1, "F16", V4_F16},      {2, "Q4_0", -1},
    {3, "Q4_1", -1},           {6, "Q5_0", -1},         {7, "Q5_1", -1},
    {8, "Q8_0", V4_Q8_0},      {9, "Q8_1", -1},         {10, "Q2_K", V4_Q2_K},
    {11, "Q3_K", V4_Q3_K},     {12, "Q4_K", V4_Q4_K},   {13, "Q5_K", V4_Q5_K},
    {14, "Q6_K", V4_Q6_K},     {15, "Q8_K", -1},        {16, "IQ2_XXS", V4_IQ2_XXS},
    {17, "IQ2_XS", -1},        {18, "IQ3_XXS", -1},     {19, "IQ1_S", -1},
    {20, "IQ4_NL", -1},        {21, "IQ3_S", -1},       {22, "IQ2_S", -1},
    {23, "IQ4_XS", V4_IQ4_XS}, {24, "I8", -1},          {25, "I16", -1},
    {26, "I32", V4_I32},       {27, "I64", -1},         {28, "F64", -1},
    {29, "IQ1_M", -1},         {30, "BF16", V4_BF16},   {34, "TQ1_0", -1},
    {35, "TQ2_0", -1},         {39, "MXFP4", V4_MXFP4},
};

#define N_TYPES (sizeof ggml_types / sizeof ggml_types[0])

const char *v4_gguf_type_name(uint32_t ggml_type, char *buf, size_t cap)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (ggml_types[i].id == ggml_type) return ggml_types[i].name;
    snprintf(buf, cap, "type %u", ggml_type);
    return buf;
}

int v4_gguf_dtype(uint32_t ggml_type, v4_dtype *out)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (ggml_types[i].id == ggml_type && ggml_types[i].dtype >= 0) {
            *out = (v4_dtype)ggml_types[i].dtype;
            return 0;
        }
    return TOME_ENOTFOUND;
}

int v4_gguf_type_of(v4_dtype t)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (ggml_types[i].dtype == (int)t) return (int)ggml_types[i].id;
    return -1;
}

/* ---- the cursor --------------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *base;
    size_t pos, size;
    const char *path;
    tome_error *err;
    int rc;
} cursor;

static int fail(cursor *c, const char *what)
{
    if (c->rc == 0)
        c->rc = tome_errorf(c->err, TOME_EFORMAT, "%s: %s at byte %zu", c->path, what, c->pos);
    return c->rc;
}

/* The next n bytes, or NULL (and the error) if the file ends first. */
static const uint8_t *take(cursor *c, uint64_t n, const char *what)
{
    if (c->rc) return NULL;
    if (n > c->size - c->pos) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s runs past the end of the file (truncated?)", what);
        fail(c, msg);
        return NULL;
    }
    const uint8_t *p = c->base + c->pos;
    c->pos += (size_t)n;
    return p;
}

static uint64_t rd_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t take32(cursor *c, const char *what)
{
    const uint8_t *p = take(c, 4, what);
    return p ? (uint32_t)rd_le(p, 4) : 0;
}

static uint64_t take64(cursor *c, const char *what)
{
    const uint8_t *p = take(c, 8, what);
    return p ? rd_le(p, 8) : 0;
}

/* A GGUF string (u64 length, bytes) as a NUL-terminated copy; NULL on
 * error.  Names are UTF-8 (GGUF's strings are; tensor names key a JSON
 * object, which holds no other) without NUL bytes. */
static char *take_string(cursor *c, const char *what)
{
    uint64_t len = take64(c, what);
    const uint8_t *p = take(c, len, what);
    if (!p) return NULL;
    if (memchr(p, 0, (size_t)len)) {
        fail(c, "a name contains a NUL byte");
        return NULL;
    }
    if (!tome_utf8_valid(p, (size_t)len)) {
        fail(c, "a name is not UTF-8");
        return NULL;
    }
    char *s = malloc((size_t)len + 1);
    if (!s) {
        if (c->rc == 0) c->rc = tome_errorf(c->err, TOME_ENOMEM, "out of memory");
        return NULL;
    }
    memcpy(s, p, (size_t)len);
    s[len] = 0;
    return s;
}

/* ---- metadata ------------------------------------------------------------------ */

static int scalar_size(uint32_t type)
{
    static const int size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type <= V4_GGUF_F64 ? size[type] : -1;
}

/* Skip one value of `type` (not an array), checking it fits. */
static void skip_value(cursor *c, uint32_t type)
{
    if (type == V4_GGUF_STRING) {
        uint64_t len = take64(c, "a string length");
        take(c, len, "a string");
        return;
    }
    take(c, (uint64_t)scalar_size(type), "a metadata value");
}

static void read_value(cursor *c, v4_gguf_kv *kv)
{
    kv->type = take32(c, "a metadata type");
    if (c->rc) return;
    if (kv->type == V4_GGUF_ARRAY) {
        kv->elem_type = take32(c, "an array type");
        kv->count = take64(c, "an array length");
        if (c->rc) return;
        if (kv->elem_type == V4_GGUF_ARRAY || scalar_size(kv->elem_type) < 0) {
            fail(c, "metadata array of an unknown or nested type");
            return;
        }
        kv->data = c->base + c->pos;
        int size = scalar_size(kv->elem_type);
        if (size > 0) { /* fixed-size elements: one range check */
            if (kv->count > (c->size - c->pos) / (uint64_t)size)
                fail(c, "a metadata array runs past the end of the file (truncated?)");
            else
                c->pos += (size_t)(kv->count * (uint64_t)size);
            return;
        }
        for (uint64_t i = 0; i < kv->count && c->rc == 0; i++) skip_value(c, kv->elem_type);
        return;
    }
    if (scalar_size(kv->type) < 0) {
        fail(c, "metadata value of an unknown type");
        return;
    }
    if (kv->type == V4_GGUF_STRING) kv->count = take64(c, "a string length");
    kv->data = c->base + c->pos;
    if (kv->type == V4_GGUF_STRING)
        take(c, kv->count, "a string");
    else
        skip_value(c, kv->type);
}

static void read_metadata(cursor *c, v4_gguf *g, uint64_t n)
{
    /* A key/value takes at least 8 (key length) + 4 (type) + 1 bytes. */
    if (n > MAX_KV || n > (c->size - c->pos) / 13) {
        fail(c, "metadata count is larger than the file could hold");
        return;
    }
    g->kv = calloc(n ? n : 1, sizeof *g->kv);
    if (!g->kv) {
        c->rc = tome_errorf(c->err, TOME_ENOMEM, "out of memory");
        return;
    }
    for (uint64_t i = 0; i < n && c->rc == 0; i++) {
        v4_gguf_kv *kv = &g->kv[g->n_kv];
        kv->key = take_string(c, "a metadata key");
        if (!kv->key) return;
        g->n_kv++;
        if (v4_gguf_find(g, kv->key) != kv) {
            char msg[200];
            snprintf(msg, sizeof msg, "metadata key %.120s appears twice", kv->key);
            fail(c, msg);
            return;
        }
        read_value(c, kv);
    }
}

const v4_gguf_kv *v4_gguf_find(const v4_gguf *g, const char *key)
{
    for (size_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

static double scalar_number(uint32_t type, const uint8_t *p)
{
    uint64_t v = rd_le(p, scalar_size(type));
    switch (type) {
    case V4_GGUF_I8:
        return (int8_t)v;
    case V4_GGUF_I16:
        return (int16_t)v;
    case V4_GGUF_I32:
        return (int32_t)v;
    case V4_GGUF_I64:
        return (double)(int64_t)v;
    case V4_GGUF_F32: {
        uint32_t u = (uint32_t)v;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    case V4_GGUF_F64: {
        double d;
        memcpy(&d, &v, 8);
        return d;
    }
    default:
        return (double)v;
    }
}

int v4_gguf_number(const v4_gguf *g, const v4_gguf_kv *kv, uint64_t i, double *out, tome_error *err)
{
    int array = kv->type == V4_GGUF_ARRAY;
    uint32_t type = array ? kv->elem_type : kv->type;
    if (type == V4_GGUF_STRING || (array ? i >= kv->count : i > 0))
        return tome_errorf(err, TOME_EFORMAT, "%s: metadata %s must be a number%s", g->path,
                           kv->key, array ? " array of the right length" : "");
    *out = scalar_number(type, kv->data + (size_t)i * (size_t)scalar_size(type));
    return 0;
}

/* ---- tensor infos ------------------------------------------------------------------ */

static int tensor_error(cursor *c, const v4_gguf_tensor *t, const char *what)
{
    if (c->rc == 0)
        c->rc = tome_errorf(c->err, TOME_EFORMAT, "%s: tensor %s: %s", c->path, t->name, what);
    return c->rc;
}

/* Dims, type and byte count of one tensor info (offset checked later). */
static int check_tensor(cursor *c, v4_gguf_tensor *t)
{
    char buf[32], msg[160];
    if (v4_gguf_dtype(t->ggml_type, &t->dtype) != 0) {
        snprintf(msg, sizeof msg,
                 "type %s is not supported (tome reads F32, F16, BF16, I32, Q8_0, MXFP4, Q2_K, "
                 "Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, IQ2_XXS)",
                 v4_gguf_type_name(t->ggml_type, buf, sizeof buf));
        return tensor_error(c, t, msg);
    }
    int64_t count = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->ne[i] < 1 || t->ne[i] > MAX_DIM) return tensor_error(c, t, "bad dimension");
        if (t->ne[i] > MAX_ELEMENTS / count) return tensor_error(c, t, "too many elements");
        count *= t->ne[i];
    }
    int block = v4_dtype_block(t->dtype);
    if (t->ne[0] % block != 0) {
        snprintf(msg, sizeof msg, "rows of %lld values are not whole %s blocks of %d",
                 (long long)t->ne[0], v4_dtype_name(t->dtype), block);
        return tensor_error(c, t, msg);
    }
    t->nbytes = v4_dtype_row_bytes(t->dtype, t->ne[0]) * (size_t)(count / t->ne[0]);
    return 0;
}

static void read_tensor_infos(cursor *c, v4_gguf *g, uint64_t n)
{
    /* An info takes at least 8 + 4 + 8 + 4 + 8 bytes. */
    if (n > (c->size - c->pos) / 32) {
        fail(c, "tensor count is larger than the file could hold");
        return;
    }
    g->tensors = calloc(n ? n : 1, sizeof *g->tensors);
    if (!g->tensors) {
        c->rc = tome_errorf(c->err, TOME_ENOMEM, "out of memory");
        return;
    }
    for (uint64_t i = 0; i < n && c->rc == 0; i++) {
        v4_gguf_tensor *t = &g->tensors[g->n_tensors];
        t->name = take_string(c, "a tensor name");
        if (!t->name) return;
        g->n_tensors++;
        uint32_t ndim = take32(c, "a tensor's dimension count");
        if (c->rc == 0 && (ndim < 1 || ndim > 4)) {
            tensor_error(c, t, "must have 1 to 4 dimensions");
            return;
        }
        t->ndim = (int)ndim;
        for (int d = 0; d < t->ndim; d++) t->ne[d] = (int64_t)take64(c, "a tensor dimension");
        t->ggml_type = take32(c, "a tensor type");
        t->offset = take64(c, "a tensor offset");
        if (c->rc == 0) check_tensor(c, t);
    }
}

/* Offsets against the data section: aligned, inside the file, and no two
 * tensors sharing a byte (checked on the offsets sorted). */
static int cmp_offset(const void *a, const void *b)
{
    const v4_gguf_tensor *x = *(const v4_gguf_tensor *const *)a;
    const v4_gguf_tensor *y = *(const v4_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static void place_tensors(cursor *c, v4_gguf *g)
{
    size_t avail = g->size - g->data_start;
    for (size_t i = 0; i < g->n_tensors && c->rc == 0; i++) {
        v4_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0)
            tensor_error(c, t, "data offset is not a multiple of the file's alignment");
        else if (t->offset > avail || t->nbytes > avail - t->offset)
            tensor_error(c, t, "data lies outside the file (truncated?)");
        else
            t->data = g->map + g->data_start + t->offset;
    }
    if (c->rc || g->n_tensors < 2) return;
    const v4_gguf_tensor **order = malloc(g->n_tensors * sizeof *order);
    if (!order) {
        c->rc = tome_errorf(c->err, TOME_ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < g->n_tensors; i++) order[i] = &g->tensors[i];
    qsort(order, g->n_tensors, sizeof *order, cmp_offset);
    for (size_t i = 1; i < g->n_tensors && c->rc == 0; i++)
        if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset)
            tensor_error(c, order[i], "data overlaps another tensor's");
    free(order);
}

static void read_alignment(cursor *c, v4_gguf *g)
{
    g->alignment = 32;
    const v4_gguf_kv *kv = v4_gguf_find(g, "general.alignment");
    if (!kv) return;
    if (kv->type != V4_GGUF_U32) {
        fail(c, "general.alignment must be a u32");
        return;
    }
    g->alignment = (uint32_t)rd_le(kv->data, 4);
    if (g->alignment == 0 || g->alignment > MAX_ALIGNMENT ||
        (g->alignment & (g->alignment - 1)) != 0)
        fail(c, "general.alignment must be a power of two up to 65536");
}

static void check_names(cursor *c, v4_gguf *g)
{
    json_t *seen = g->by_name = json_object();
    if (!seen) {
        c->rc = tome_errorf(c->err, TOME_ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < g->n_tensors && c->rc == 0; i++) {
        if (json_object_get(seen, g->tensors[i].name))
            tensor_error(c, &g->tensors[i], "appears twice");
        else
            json_object_set_new(seen, g->tensors[i].name, json_integer((json_int_t)i));
    }
}

int v4_gguf_parse(const uint8_t *map, size_t size, const char *path, v4_gguf **out, tome_error *err)
{
    *out = NULL;
    v4_gguf *g = calloc(1, sizeof *g);
    if (!g) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    g->path = path;
    g->map = map;
    g->size = size;
    cursor c = {map, 0, size, path, err, 0};
    const uint8_t *magic = take(&c, 4, "the header");
    if (magic && memcmp(magic, "GGUF", 4) != 0) fail(&c, "not a GGUF file (bad magic)");
    g->version = take32(&c, "the header");
    if (c.rc == 0 && g->version != 2 && g->version != 3)
        fail(&c, "unsupported GGUF version (tome reads little-endian versions 2 and 3)");
    uint64_t n_tensors = take64(&c, "the header"), n_kv = take64(&c, "the header");
    if (c.rc == 0) read_metadata(&c, g, n_kv);
    if (c.rc == 0) read_alignment(&c, g);
    if (c.rc == 0) read_tensor_infos(&c, g, n_tensors);
    if (c.rc == 0) check_names(&c, g);
    if (c.rc == 0) {
        g->header_bytes = c.pos;
        size_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
        g->data_start = pad <= size - c.pos ? c.pos + pad : size;
        place_tensors(&c, g);
    }
    if (c.rc) {
        v4_gguf_free(g);
        return c.rc;
    }
    *out = g;
    return 0;
}

void v4_gguf_free(v4_gguf *g)
{
    if (!g) return;
    for (size_t i = 0; i < g->n_kv; i++) free(g->kv[i].key);
    for (size_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    json_decref(g->by_name);
    free(g);
}

const v4_gguf_tensor *v4_gguf_tensor_find(const v4_gguf *g, const char *name)
{
    json_t *v = json_object_get(g->by_name, name);
    return v ? &g->tensors[json_integer_value(v)] : NULL;
}
