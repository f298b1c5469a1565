/*
 * write.c - writing a KV state file (tome-kvcache(5)).
 *
 * A state is written as a plan: one table entry per section of the state
 * and of each restart point, laid out first (so every offset is known),
 * then streamed from the engine straight into a temporary file, hashing as
 * it goes; the table and the header, which hold the checksums, are written
 * last.  Restart points' compressed rows are not written at all: their
 * entries name the first rows of the final state's sections, after two
 * checksums have shown that those rows are the same.  The temporary file
 * is fsynced, renamed over the target, and the directory fsynced, so a
 * crash leaves the old file or the new one.
 *
 * A writer killed before its rename leaves its temporary file behind (the
 * target is untouched).  The next save of the same target removes such
 * leftovers before it starts, and kvstate_remove_temps() clears a whole
 * directory (tomed does at start-up), so they never pile up.
 */
#include "kvstate/kvstate.h"

#include "common/fault.h"
#include "engine/v4.h"
#include "kvstate/layout.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- writing ------------------------------------------------------------------------- */

/* One table entry being written: what it describes, which state streams
 * it, and where it goes.  A restart point's kv and index entries are
 * `shared`: they name the first rows of the final state's section instead
 * of bytes of their own. */
typedef struct kv_entry {
    v4_section sec;
    const v4_state *src;
    uint32_t point;
    int shared;
    uint64_t offset, sum;
} kv_entry;

typedef struct kv_plan {
    kv_entry *e;
    size_t n;
    int64_t *point_tokens; /* [n_points] */
    size_t n_points;
    uint64_t file_bytes;
} kv_plan;

typedef struct kv_writer {
    const char *tmp;
    int fd;
    uint64_t off;
    int hash_only;
    XXH3_state_t *hash;
} kv_writer;

static int pwrite_all(kv_writer *w, const void *data, size_t len, uint64_t off, tome_error *err)
{
    const uint8_t *p = data;
    tome_fault_point("kv-write");
    while (len > 0) {
        ssize_t n = pwrite(w->fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            return tome_errorf(err, TOME_EIO, "%s: write failed: %s", w->tmp, strerror(errno));
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

/* v4_section_write_fn: hash a piece of the current section and, unless
 * only hashing, write it at the next offset. */
static int write_piece(void *ctx, const void *data, size_t len, tome_error *err)
{
    kv_writer *w = ctx;
    if (!w->hash_only) {
        int rc = pwrite_all(w, data, len, w->off, err);
        if (rc) return rc;
    }
    XXH3_64bits_update(w->hash, data, len);
    w->off += len;
    return 0;
}

static int is_row_array(v4_section_kind kind)
{
    return kind == V4_SECTION_KV || kind == V4_SECTION_INDEX;
}

static int plan_add_state(kv_plan *p, const v4_state *st, uint32_t point, tome_error *err)
{
    v4_section *secs;
    size_t n;
    int rc = v4_state_sections(st, &secs, &n, err);
    if (rc) return rc;
    kv_entry *grown = realloc(p->e, (p->n + n) * sizeof *grown);
    if (!grown) {
        free(secs);
        return tome_errorf(err, TOME_ENOMEM, "out of memory");
    }
    p->e = grown;
    for (size_t i = 0; i < n; i++)
        p->e[p->n++] = (kv_entry){.sec = secs[i],
                                  .src = st,
                                  .point = point,
                                  .shared = point && is_row_array(secs[i].kind)};
    free(secs);
    return 0;
}

/* The final state's entry for the section a restart point's entry shares. */
static const kv_entry *owner_entry(const kv_plan *p, const kv_entry *e)
{
    for (size_t i = 0; i < p->n && p->e[i].point == 0; i++)
        if (p->e[i].sec.kind == e->sec.kind && p->e[i].sec.block == e->sec.block) return &p->e[i];
    return NULL;
}

/* Where everything goes: the table (entries, then the restart points' token
 * counts) right after the header, the ids after it, then each section with
 * bytes of its own on the next 4096-byte boundary. */
static void plan_layout(kv_plan *p, size_t n_ids)
{
    uint64_t off = kv_align_up(KV_HEADER_BYTES + (uint64_t)p->n * KV_ENTRY_BYTES +
                               8 * (uint64_t)p->n_points + 4 * (uint64_t)n_ids);
    p->file_bytes = off;
    for (size_t i = 0; i < p->n; i++) {
        if (p->e[i].shared) continue;
        p->e[i].offset = off;
        p->file_bytes = off + v4_section_bytes(&p->e[i].sec);
        off = kv_align_up(p->file_bytes);
    }
    for (size_t i = 0; i < p->n; i++)
        if (p->e[i].shared) p->e[i].offset = owner_entry(p, &p->e[i])->offset;
}

static int plan_new(kv_plan *p, const v4_state *st, const v4_state *const *points, size_t n_points,
                    size_t n_ids, tome_error *err)
{
    memset(p, 0, sizeof *p);
    p->n_points = n_points;
    p->point_tokens = calloc(n_points ? n_points : 1, sizeof *p->point_tokens);
    if (!p->point_tokens) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    int rc = plan_add_state(p, st, 0, err);
    for (size_t k = 0; rc == 0 && k < n_points; k++) {
        int64_t pos = v4_state_pos(points[k]), prev = k ? p->point_tokens[k - 1] : -1;
        if (v4_state_model(points[k]) != v4_state_model(st) || pos <= prev ||
            pos >= v4_state_pos(st))
            return tome_errorf(err, TOME_EINVAL,
                               "restart point %zu (position %lld) is not a state of the same "
                               "model at a position between %lld and %lld",
                               k + 1, (long long)pos, (long long)prev, (long long)v4_state_pos(st));
        p->point_tokens[k] = pos;
        rc = plan_add_state(p, points[k], (uint32_t)(k + 1), err);
    }
    if (rc == 0) plan_layout(p, n_ids);
    return rc;
}

static void plan_free(kv_plan *p)
{
    free(p->e);
    free(p->point_tokens);
}

static int stream(kv_writer *w, const v4_state *src, const v4_section *sec, uint64_t off,
                  int hash_only, uint64_t *sum, tome_error *err)
{
    XXH3_64bits_reset(w->hash);
    w->off = off;
    w->hash_only = hash_only;
    int rc = v4_state_section_write(src, sec, write_piece, w, err);
    *sum = XXH3_64bits_digest(w->hash);
    return rc;
}

/* A shared entry holds no bytes of its own: its rows must be the first rows
 * of the final state's section, which the two checksums confirm. */
static int check_shared(kv_writer *w, const kv_plan *p, kv_entry *e, tome_error *err)
{
    const kv_entry *owner = owner_entry(p, e);
    uint64_t own;
    int rc = stream(w, e->src, &e->sec, 0, 1, &own, err);
    if (rc == 0) rc = stream(w, owner->src, &e->sec, 0, 1, &e->sum, err);
    if (rc == 0 && own != e->sum)
        rc = tome_errorf(err, TOME_EINVAL,
                         "restart point %u: section %s of block %d is not the start of the "
                         "state's (the point is not an earlier state of it)",
                         e->point, v4_section_kind_name(e->sec.kind), e->sec.block);
    return rc;
}

static void put_entry(uint8_t *t, const kv_entry *e)
{
    kv_put32(t + E_KIND, (uint32_t)e->sec.kind);
    kv_put32(t + E_BLOCK, (uint32_t)e->sec.block);
    kv_put32(t + E_DTYPE, (uint32_t)e->sec.dtype);
    kv_put32(t + E_ROW_BYTES, (uint32_t)e->sec.row_bytes);
    kv_put32(t + E_POINT, e->point);
    kv_put64(t + E_ROWS, (uint64_t)e->sec.n_rows);
    kv_put64(t + E_OFFSET, e->offset);
    kv_put64(t + E_LENGTH, v4_section_bytes(&e->sec));
    kv_put64(t + E_SUM, e->sum);
}

/* The sections, then the table (entries and point token counts) in memory. */
static int write_sections(kv_writer *w, kv_plan *p, uint8_t *table, tome_error *err)
{
    for (size_t i = 0; i < p->n; i++) {
        kv_entry *e = &p->e[i];
        int rc = e->shared ? check_shared(w, p, e, err)
                           : stream(w, e->src, &e->sec, e->offset, 0, &e->sum, err);
        if (rc) return rc;
        put_entry(table + i * KV_ENTRY_BYTES, e);
    }
    for (size_t k = 0; k < p->n_points; k++)
        kv_put64(table + p->n * KV_ENTRY_BYTES + 8 * k, (uint64_t)p->point_tokens[k]);
    return 0;
}

static void fill_header(uint8_t *h, const v4_state *st, const kv_plan *p, size_t table_bytes,
                        const uint8_t *table, const int32_t *ids, size_t n_ids)
{
    const v4_model *m = v4_state_model(st);
    memset(h, 0, KV_HEADER_BYTES);
    memcpy(h + H_MAGIC, KV_MAGIC, 8);
    kv_put32(h + H_VERSION, KVSTATE_FORMAT_VERSION);
    kv_put32(h + H_HEADER_BYTES, KV_HEADER_BYTES);
    v4_model_fingerprint(m, h + H_FINGERPRINT);
    kv_put64(h + H_TOKENS, n_ids);
    kv_put32(h + H_NUMERICS, (uint32_t)v4_model_numerics(m));
    kv_put32(h + H_N_SECTIONS, (uint32_t)p->n);
    kv_put64(h + H_TABLE_OFFSET, KV_HEADER_BYTES);
    kv_put64(h + H_IDS_OFFSET, KV_HEADER_BYTES + table_bytes);
    kv_put64(h + H_FILE_BYTES, p->file_bytes);
    kv_put64(h + H_TABLE_SUM, XXH3_64bits(table, table_bytes));
    kv_put64(h + H_IDS_SUM, XXH3_64bits(ids, n_ids * sizeof *ids));
    kv_put32(h + H_N_POINTS, (uint32_t)p->n_points);
    kv_put64(h + H_HEADER_SUM, XXH3_64bits(h, H_HEADER_SUM));
}

/* Everything but the rename: sections, ids, table, header, size, fsync. */
static int write_body(kv_writer *w, const v4_state *st, kv_plan *p, const int32_t *ids,
                      size_t n_ids, tome_error *err)
{
    size_t table_bytes = p->n * KV_ENTRY_BYTES + 8 * p->n_points;
    uint8_t *table = calloc(table_bytes, 1);
    w->hash = XXH3_createState();
    int rc = 0;
    if (!table || !w->hash) {
        rc = tome_errorf(err, TOME_ENOMEM, "%s: out of memory", w->tmp);
        goto done;
    }
    uint8_t header[KV_HEADER_BYTES];
    rc = write_sections(w, p, table, err);
    if (rc) goto done;
    fill_header(header, st, p, table_bytes, table, ids, n_ids);
    if ((rc = pwrite_all(w, ids, n_ids * sizeof *ids, kv_get64(header + H_IDS_OFFSET), err)) ||
        (rc = pwrite_all(w, table, table_bytes, KV_HEADER_BYTES, err)) ||
        (rc = pwrite_all(w, header, KV_HEADER_BYTES, 0, err)))
        goto done;
    if (ftruncate(w->fd, (off_t)p->file_bytes) != 0 || fsync(w->fd) != 0)
        rc = tome_errorf(err, TOME_EIO, "%s: %s", w->tmp, strerror(errno));
done:
    XXH3_freeState(w->hash);
    free(table);
    return rc;
}

/* ---- temporary files ------------------------------------------------------------------ */

#define TMP_SUFFIX "tmpXXXXXX"

/* Whether `entry` is a temporary file of a state file: "NAME.tmp" and six
 * of mkostemp's letters; of the target named `name` only, when not NULL. */
static int is_temp_name(const char *entry, const char *name)
{
    size_t len = strlen(entry), tail = strlen("." TMP_SUFFIX);
    if (len <= tail || (name && len != strlen(name) + tail)) return 0;
    if (name && strncmp(entry, name, len - tail) != 0) return 0;
    if (strncmp(entry + len - tail, ".tmp", 4) != 0) return 0;
    for (size_t i = len - 6; i < len; i++)
        if (!isalnum((unsigned char)entry[i])) return 0;
    return 1;
}

static int remove_temps(const char *dir, const char *name, size_t *removed, tome_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return tome_errorf(err, TOME_EIO, "%s: cannot list: %s", dir, strerror(errno));
    size_t n = 0, cap = strlen(dir) + 258;
    char *path = malloc(cap);
    int rc = path ? 0 : tome_errorf(err, TOME_ENOMEM, "%s: out of memory", dir);
    for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
        if (!is_temp_name(e->d_name, name)) continue;
        snprintf(path, cap, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0)
            n++;
        else if (errno != ENOENT)
            rc = tome_errorf(err, TOME_EIO, "%s: cannot remove: %s", path, strerror(errno));
    }
    closedir(d);
    free(path);
    if (removed) *removed = n;
    return rc;
}

int kvstate_remove_temps(const char *dir, size_t *removed, tome_error *err)
{
    return remove_temps(dir, NULL, removed, err);
}

/* The leftovers of earlier saves of `path` that were killed before their
 * rename. */
static int remove_own_temps(const char *path, tome_error *err)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return remove_temps(".", path, NULL, err);
    char *dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (!dir) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", path);
    int rc = remove_temps(dir, slash + 1, NULL, err);
    free(dir);
    return rc;
}

/* ---- the file ------------------------------------------------------------------------ */

/* Leftovers removed, then temporary file, body, rename, directory fsync. */
static int write_file(const char *path, const v4_state *st, kv_plan *p, const int32_t *ids,
                      size_t n_ids, tome_error *err)
{
    int rc = remove_own_temps(path, err);
    if (rc) return rc;
    size_t len = strlen(path) + 16;
    char *tmp = malloc(len);
    if (!tmp) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", path);
    snprintf(tmp, len, "%s." TMP_SUFFIX, path);
    kv_writer w = {.tmp = tmp, .fd = mkostemp(tmp, O_CLOEXEC)};
    if (w.fd < 0) {
        rc = tome_errorf(err, TOME_EIO, "%s: cannot create a temporary file: %s", path,
                         strerror(errno));
        free(tmp);
        return rc;
    }
    /* The file keeps mkostemp's mode 0600: a state is derived from the
     * corpus it read and is as private as the corpus. */
    rc = write_body(&w, st, p, ids, n_ids, err);
    if (close(w.fd) != 0 && rc == 0)
        rc = tome_errorf(err, TOME_EIO, "%s: close failed: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = tome_errorf(err, TOME_EIO, "%s: rename failed: %s", path, strerror(errno));
    if (rc)
        unlink(tmp);
    else
        rc = tome_fsync_parent_dir(path, err);
    free(tmp);
    return rc;
}

int kvstate_save(const char *path, const v4_state *st, const v4_state *const *points,
                 size_t n_points, const int32_t *ids, size_t n_ids, tome_error *err)
{
    if (!kv_host_little_endian())
        return tome_errorf(err, TOME_EINVAL, "%s: state files need a little-endian host", path);
    if ((int64_t)n_ids != v4_state_pos(st))
        return tome_errorf(err, TOME_EINVAL, "%s: %zu token ids given for a state at position %lld",
                           path, n_ids, (long long)v4_state_pos(st));
    if (n_points > KV_MAX_POINTS)
        return tome_errorf(err, TOME_ELIMIT, "%s: %zu restart points, at most %d", path, n_points,
                           KV_MAX_POINTS);
    kv_plan plan;
    int rc = plan_new(&plan, st, points, n_points, n_ids, err);
    if (rc == 0)
        rc = write_file(path, st, &plan, ids, n_ids, err);
    else
        tome_error_wrap(err, "%s", path);
    plan_free(&plan);
    return rc;
}
