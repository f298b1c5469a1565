/*
 * layout.h - private to kvstate/: the layout of a KV state file.
 *
 * The offsets of the header and table fields and the little-endian
 * accessors, shared by the writer (write.c) and the reader
 * (read.c) so the two cannot drift apart.  tome-kvcache(5) is the
 * specification these constants implement.
 */
#ifndef TOME_KVSTATE_LAYOUT_H
#define TOME_KVSTATE_LAYOUT_H

#include <stdint.h>
#include <string.h>

#define KV_MAGIC        "TOMEKV\0\1"
#define KV_HEADER_BYTES 128
#define KV_ENTRY_BYTES  56
#define KV_ALIGN        4096
/* Far more than any model has (blocks x section kinds); a guard for
 * damaged counts. */
#define KV_MAX_SECTIONS 65536
#define KV_MAX_POINTS   4096

/* Header field offsets (tome-kvcache(5)). */
enum {
    H_MAGIC = 0,
    H_VERSION = 8,
    H_HEADER_BYTES = 12,
    H_FINGERPRINT = 16,
    H_TOKENS = 48,
    H_NUMERICS = 56,
    H_N_SECTIONS = 60,
    H_TABLE_OFFSET = 64,
    H_IDS_OFFSET = 72,
    H_FILE_BYTES = 80,
    H_TABLE_SUM = 88,
    H_IDS_SUM = 96,
    H_N_POINTS = 104,
    H_HEADER_SUM = 120
};

/* Section table entry field offsets. */
enum {
    E_KIND = 0,
    E_BLOCK = 4,
    E_DTYPE = 8,
    E_ROW_BYTES = 12,
    E_POINT = 16,
    E_ROWS = 24,
    E_OFFSET = 32,
    E_LENGTH = 40,
    E_SUM = 48
};

/* ---- little-endian fields ---------------------------------------------------------- */

static inline void kv_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline void kv_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t kv_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static inline uint64_t kv_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static inline int kv_host_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static inline uint64_t kv_align_up(uint64_t v)
{
    return (v + KV_ALIGN - 1) / KV_ALIGN * KV_ALIGN;
}

#endif
