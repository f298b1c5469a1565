/*
 * resident.c - the fast kernels' matrices copied into memory (v4_weights).
 *
 * A checkpoint is mapped: its tensors lie in the page cache's 4 kB pages
 * wherever the file put them, and few start on a 64-byte line (the
 * safetensors header and the small tensors between the matrices shift
 * them; in the flash-shape file three in four are off).  Every 64-byte
 * load of such a row spans two cache lines, and a decode step that streams
 * 2 GB of weights walks half a million page-table entries.  On a Zen 5
 * (flash-shape, 2 threads, 64 decode steps) the BF16 LM head read 22 GB/s
 * mapped against 36 copied, the FP8 matrices 27 against 36, and decode ran
 * at 11.7 against 17.9 tokens/s.  So the model copies each matrix the
 * kernels read at open, by the pool's threads, into v4_alloc's memory
 * (64-byte aligned, 2 MB huge pages), and lets its mapped pages go.
 *
 * This file owns the choice (auto: copy when the matrices fit in the
 * memory available) and the copy; engine/model.c decides which tensors
 * are matrices and keeps the copies.
 */
#include "engine/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Auto copies when the matrices take at most this share of the memory
 * available: the rest is for the KV states, work buffers and the system. */
#define AUTO_SHARE 0.9
/* Bytes one task of the parallel copy moves: a huge page. */
#define COPY_CHUNK ((size_t)2 << 20)

const char *v4_weights_name(v4_weights w)
{
    return w == V4_WEIGHTS_COPY ? "copy" : w == V4_WEIGHTS_MAP ? "map" : "auto";
}

int v4_weights_parse(const char *name)
{
    if (strcmp(name, "auto") == 0) return V4_WEIGHTS_AUTO;
    if (strcmp(name, "copy") == 0) return V4_WEIGHTS_COPY;
    if (strcmp(name, "map") == 0) return V4_WEIGHTS_MAP;
    return -1;
}

/* The number after `key` on a line of `path` starting with it (the first
 * such line), or -1 where there is none. */
static double number_after(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    double value = -1;
    size_t len = strlen(key);
    while (value < 0 && fgets(line, sizeof line, f))
        if (strncmp(line, key, len) == 0) value = strtod(line + len, NULL);
    fclose(f);
    return value;
}

/* What the process's cgroup (v2) still lets it take beyond its anonymous
 * memory (page cache can be reclaimed), or -1 without a limit. */
static double cgroup_room(void)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1;
    char line[512], dir[600] = "";
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = 0;
            snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", line + 3);
        }
    fclose(f);
    if (!dir[0]) return -1;
    char path[640];
    snprintf(path, sizeof path, "%s/memory.max", dir);
    double max = number_after(path, ""); /* "max" reads as no number */
    if (max <= 0) return -1;
    snprintf(path, sizeof path, "%s/memory.stat", dir);
    double anon = number_after(path, "anon ");
    return max - (anon > 0 ? anon : 0);
}

/* Bytes of memory the process may still fill: /proc/meminfo's
 * MemAvailable (which counts reclaimable page cache, the mapped
 * checkpoint's included), within the cgroup's limit; -1 if unknown. */
static double memory_available(void)
{
    double kb = number_after("/proc/meminfo", "MemAvailable:");
    double room = cgroup_room(), avail = kb >= 0 ? kb * 1024 : -1;
    if (room >= 0 && (avail < 0 || room < avail)) avail = room;
    return avail;
}

int v4_weights_copying(v4_weights mode, v4_kernels kernels, double bytes)
{
    if (kernels != V4_KERNELS_FAST || mode == V4_WEIGHTS_MAP) return 0;
    if (mode == V4_WEIGHTS_COPY) return 1;
    double avail = memory_available();
    return avail >= 0 && bytes <= AUTO_SHARE * avail;
}

typedef struct copy_job {
    uint8_t *to;
    const uint8_t *from;
    size_t bytes;
} copy_job;

static void copy_chunks(void *ctx, int64_t a, int64_t b)
{
    const copy_job *j = ctx;
    size_t begin = (size_t)a * COPY_CHUNK, end = (size_t)b * COPY_CHUNK;
    if (end > j->bytes) end = j->bytes;
    memcpy(j->to + begin, j->from + begin, end - begin);
}

void v4_copy_parallel(v4_pool *pool, uint8_t *to, const uint8_t *from, size_t bytes)
{
    copy_job j = {to, from, bytes};
    v4_parallel_for(pool, (int64_t)((bytes + COPY_CHUNK - 1) / COPY_CHUNK), 1, copy_chunks, &j);
}
