/*
 * meta.h - tome-convert's GGUF header writer: a growing byte buffer and the
 * typed metadata key/values written into it (meta.c).
 *
 * Every writer appends little-endian bytes (GGUF's order, and that of every
 * machine tome builds for).  An allocation failure is remembered in the
 * buffer (`failed`) and later writes do nothing: the caller checks once,
 * after the last write.  Keys are written in full, except that a key not
 * under "general." or "tokenizer." gets the architecture prefix
 * "deepseek4.".
 */
#ifndef TOME_TOOLS_CONVERT_META_H
#define TOME_TOOLS_CONVERT_META_H

#include <stddef.h>
#include <stdint.h>

typedef struct cv_buf {
    uint8_t *p;
    size_t n, cap;
    int failed;
} cv_buf;

void cv_put(cv_buf *b, const void *data, size_t n);
void cv_put_u32(cv_buf *b, uint32_t v);
void cv_put_u64(cv_buf *b, uint64_t v);
/* A GGUF string: u64 length, then the bytes (no terminator). */
void cv_put_str(cv_buf *b, const char *s);

/* The metadata section being built, and how many key/values it holds. */
typedef struct cv_meta {
    cv_buf b;
    uint64_t n;
} cv_meta;

void cv_kv_u32(cv_meta *m, const char *key, uint32_t v);
void cv_kv_f32(cv_meta *m, const char *key, double v);
void cv_kv_bool(cv_meta *m, const char *key, int v);
void cv_kv_str(cv_meta *m, const char *key, const char *v);
/* An array's key and element type and count; the caller then writes the
 * `count` elements with cv_put_* (strings with cv_put_str). */
void cv_kv_array(cv_meta *m, const char *key, uint32_t elem_type, uint64_t count);

#endif
