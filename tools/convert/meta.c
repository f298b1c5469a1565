/*
 * meta.c - tome-convert's GGUF header writer (contracts in meta.h).
 */
#include "tools/convert/meta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"

void cv_put(cv_buf *b, const void *data, size_t n)
{
    if (b->failed) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

void cv_put_u32(cv_buf *b, uint32_t v)
{
    cv_put(b, &v, 4);
}

void cv_put_u64(cv_buf *b, uint64_t v)
{
    cv_put(b, &v, 8);
}

void cv_put_str(cv_buf *b, const char *s)
{
    cv_put_u64(b, strlen(s));
    cv_put(b, s, strlen(s));
}

static void key(cv_meta *m, const char *k, uint32_t type)
{
    int global = strncmp(k, "general.", 8) == 0 || strncmp(k, "tokenizer.", 10) == 0;
    char full[128];
    snprintf(full, sizeof full, "%s%s", global ? "" : "deepseek4.", k);
    cv_put_str(&m->b, full);
    cv_put_u32(&m->b, type);
    m->n++;
}

void cv_kv_u32(cv_meta *m, const char *k, uint32_t v)
{
    key(m, k, V4_GGUF_U32);
    cv_put_u32(&m->b, v);
}

void cv_kv_f32(cv_meta *m, const char *k, double v)
{
    float f = (float)v;
    key(m, k, V4_GGUF_F32);
    cv_put(&m->b, &f, 4);
}

void cv_kv_bool(cv_meta *m, const char *k, int v)
{
    uint8_t byte = v != 0;
    key(m, k, V4_GGUF_BOOL);
    cv_put(&m->b, &byte, 1);
}

void cv_kv_str(cv_meta *m, const char *k, const char *v)
{
    key(m, k, V4_GGUF_STRING);
    cv_put_str(&m->b, v);
}

void cv_kv_array(cv_meta *m, const char *k, uint32_t elem_type, uint64_t count)
{
    key(m, k, V4_GGUF_ARRAY);
    cv_put_u32(&m->b, elem_type);
    cv_put_u64(&m->b, count);
}
