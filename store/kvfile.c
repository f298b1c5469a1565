/*
 * kvfile.c - the KV state file: one saved decode state on disk.
 *
 * A prefill of a large corpus is the expensive thing tome does once; this
 * file is what keeps its result.  The layout (tome-kvcache(5) documents it
 * field by field) is chosen for these things:
 *
 *   Trust.  A state is used only if it is exactly the state the file was
 *   written from, for exactly this model and these tokens: the header
 *   carries the model fingerprint, the numerics and the token ids, and every
 *   part of the file (header, table, ids, each section) has an XXH3-64
 *   checksum.  Opening checks everything but the sections, so finding the
 *   longest cached prefix among many files is cheap; a section is checked
 *   before its first use.
 *
 *   No copies.  Sections start on 4096-byte boundaries and hold the rows
 *   exactly as the engine stores them, so the compressed rows (the only
 *   O(context) part) are used straight from a read-only mapping: restored
 *   states borrow its pages, and a reference count keeps the mapping until
 *   the last state lets go of them.
 *
 *   Restart points.  A file may also hold earlier states of the same
 *   prefill.  Compressed rows are only ever appended, so an earlier state's
 *   rows are the first rows of the final state's: a point stores only its
 *   small parts (positions, window rings, compressor states) and its table
 *   entries for the rows point into the final state's sections.  The
 *   writer checks that the rows really are a prefix.
 *
 *   Atomicity.  A file is written to a temporary name in its directory,
 *   section by section as the engine streams them, fsynced, renamed over
 *   the target and the directory fsynced.  A file is never changed after
 *   the rename, so a mapping of it never changes under a state.
 *
 * Integers in the header, table and ids are little-endian; the sections are
 * the engine's own little-endian rows, so a big-endian host is refused.
 */
#include "store/store.h"

#include "engine/v4.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

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

struct store_kv_file {
    char *path;
    atomic_int refs; /* the handle, plus one per chunk a restored state borrows */
    const uint8_t *map;
    size_t size;
    const v4_model *m;
    const int32_t *ids; /* into the mapping */
    size_t n_points;    /* restart points */
    int64_t *tokens;    /* [1 + n_points]: the state's token count, then each point's */
    size_t n_secs;
    v4_section_data *secs; /* data points into the mapping */
    uint32_t *point;       /* per section: 0 = the state, k = restart point k */
    uint64_t *sums;        /* expected checksum of each section */
    uint8_t *verified;     /* per section: checksum already matched */
};

/* ---- little-endian fields ---------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int host_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static uint64_t align_up(uint64_t v)
{
    return (v + KV_ALIGN - 1) / KV_ALIGN * KV_ALIGN;
}

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
    uint64_t off = align_up(KV_HEADER_BYTES + (uint64_t)p->n * KV_ENTRY_BYTES +
                            8 * (uint64_t)p->n_points + 4 * (uint64_t)n_ids);
    p->file_bytes = off;
    for (size_t i = 0; i < p->n; i++) {
        if (p->e[i].shared) continue;
        p->e[i].offset = off;
        p->file_bytes = off + v4_section_bytes(&p->e[i].sec);
        off = align_up(p->file_bytes);
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
    put32(t + E_KIND, (uint32_t)e->sec.kind);
    put32(t + E_BLOCK, (uint32_t)e->sec.block);
    put32(t + E_DTYPE, (uint32_t)e->sec.dtype);
    put32(t + E_ROW_BYTES, (uint32_t)e->sec.row_bytes);
    put32(t + E_POINT, e->point);
    put64(t + E_ROWS, (uint64_t)e->sec.n_rows);
    put64(t + E_OFFSET, e->offset);
    put64(t + E_LENGTH, v4_section_bytes(&e->sec));
    put64(t + E_SUM, e->sum);
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
        put64(table + p->n * KV_ENTRY_BYTES + 8 * k, (uint64_t)p->point_tokens[k]);
    return 0;
}

static void fill_header(uint8_t *h, const v4_state *st, const kv_plan *p, size_t table_bytes,
                        const uint8_t *table, const int32_t *ids, size_t n_ids)
{
    const v4_model *m = v4_state_model(st);
    memset(h, 0, KV_HEADER_BYTES);
    memcpy(h + H_MAGIC, KV_MAGIC, 8);
    put32(h + H_VERSION, STORE_KV_FORMAT_VERSION);
    put32(h + H_HEADER_BYTES, KV_HEADER_BYTES);
    v4_model_fingerprint(m, h + H_FINGERPRINT);
    put64(h + H_TOKENS, n_ids);
    put32(h + H_NUMERICS, (uint32_t)v4_model_numerics(m));
    put32(h + H_N_SECTIONS, (uint32_t)p->n);
    put64(h + H_TABLE_OFFSET, KV_HEADER_BYTES);
    put64(h + H_IDS_OFFSET, KV_HEADER_BYTES + table_bytes);
    put64(h + H_FILE_BYTES, p->file_bytes);
    put64(h + H_TABLE_SUM, XXH3_64bits(table, table_bytes));
    put64(h + H_IDS_SUM, XXH3_64bits(ids, n_ids * sizeof *ids));
    put32(h + H_N_POINTS, (uint32_t)p->n_points);
    put64(h + H_HEADER_SUM, XXH3_64bits(h, H_HEADER_SUM));
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
    if ((rc = pwrite_all(w, ids, n_ids * sizeof *ids, get64(header + H_IDS_OFFSET), err)) ||
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

/* Temporary file, body, rename, directory fsync. */
static int write_file(const char *path, const v4_state *st, kv_plan *p, const int32_t *ids,
                      size_t n_ids, tome_error *err)
{
    size_t len = strlen(path) + 16;
    char *tmp = malloc(len);
    if (!tmp) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", path);
    snprintf(tmp, len, "%s.tmpXXXXXX", path);
    kv_writer w = {.tmp = tmp, .fd = mkostemp(tmp, O_CLOEXEC)};
    int rc = 0;
    if (w.fd < 0) {
        rc = tome_errorf(err, TOME_EIO, "%s: cannot create a temporary file: %s", path,
                         strerror(errno));
        free(tmp);
        return rc;
    }
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(w.fd, 0644 & ~mask) != 0)
        rc = tome_errorf(err, TOME_EIO, "%s: %s", tmp, strerror(errno));
    if (rc == 0) rc = write_body(&w, st, p, ids, n_ids, err);
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

int store_kv_save(const char *path, const v4_state *st, const v4_state *const *points,
                  size_t n_points, const int32_t *ids, size_t n_ids, tome_error *err)
{
    if (!host_little_endian())
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

/* ---- opening --------------------------------------------------------------------------- */

static void kv_retain(void *owner)
{
    store_kv_file *f = owner;
    atomic_fetch_add(&f->refs, 1);
}

static void kv_release(void *owner)
{
    store_kv_file *f = owner;
    if (atomic_fetch_sub(&f->refs, 1) != 1) return;
    if (f->map) munmap((void *)(uintptr_t)f->map, f->size);
    free(f->path);
    free(f->tokens);
    free(f->secs);
    free(f->point);
    free(f->sums);
    free(f->verified);
    free(f);
}

void store_kv_close(store_kv_file *f)
{
    if (f) kv_release(f);
}

static int map_file(store_kv_file *f, tome_error *err)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tome_errorf(err, TOME_EIO, "%s: %s", f->path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = tome_errorf(err, TOME_EIO, "%s: %s", f->path, strerror(errno));
    } else if (st.st_size < KV_HEADER_BYTES) {
        rc = tome_errorf(err, TOME_EFORMAT,
                         "%s: %lld bytes is too short for a KV state file "
                         "(truncated?)",
                         f->path, (long long)st.st_size);
    } else {
        f->size = (size_t)st.st_size;
        void *p = mmap(NULL, f->size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
            rc = tome_errorf(err, TOME_EIO, "%s: mmap failed: %s", f->path, strerror(errno));
        else
            f->map = p;
    }
    close(fd);
    return rc;
}

static void fingerprint_hex(const uint8_t *fp, char *hex)
{
    tome_hex(fp, 8, hex); /* 16 hex digits name a model well enough in a message */
}

/* Magic, version, header checksum, size, model: in that order, so that each
 * refusal names the first thing that is wrong. */
static int check_header(const store_kv_file *f, tome_error *err)
{
    const uint8_t *h = f->map;
    if (memcmp(h + H_MAGIC, KV_MAGIC, 8) != 0)
        return tome_errorf(err, TOME_EFORMAT, "%s: not a tome KV state file (bad magic)", f->path);
    if (get32(h + H_VERSION) != STORE_KV_FORMAT_VERSION)
        return tome_errorf(err, TOME_EMISMATCH,
                           "%s: format version %u, this build reads version "
                           "%d",
                           f->path, get32(h + H_VERSION), STORE_KV_FORMAT_VERSION);
    if (get64(h + H_HEADER_SUM) != XXH3_64bits(h, H_HEADER_SUM) ||
        get32(h + H_HEADER_BYTES) != KV_HEADER_BYTES)
        return tome_errorf(err, TOME_EFORMAT, "%s: header checksum mismatch (damaged file)",
                           f->path);
    if (get64(h + H_FILE_BYTES) != f->size)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: the header says %llu bytes, the file has %zu "
                           "(truncated or extended)",
                           f->path, (unsigned long long)get64(h + H_FILE_BYTES), f->size);
    if (get32(h + H_NUMERICS) != (uint32_t)v4_model_numerics(f->m))
        return tome_errorf(err, TOME_EMISMATCH,
                           "%s: saved with numerics %u, the model is open "
                           "with numerics %d",
                           f->path, get32(h + H_NUMERICS), (int)v4_model_numerics(f->m));
    uint8_t fp[32];
    v4_model_fingerprint(f->m, fp);
    if (memcmp(fp, h + H_FINGERPRINT, 32) != 0) {
        char want[17], have[17];
        fingerprint_hex(h + H_FINGERPRINT, want);
        fingerprint_hex(fp, have);
        return tome_errorf(err, TOME_EMISMATCH, "%s: saved for model %s..., this model is %s...",
                           f->path, want, have);
    }
    return 0;
}

/* Is [off, off+len) inside the file? (no overflow) */
static int in_file(const store_kv_file *f, uint64_t off, uint64_t len)
{
    return off <= f->size && len <= f->size - off;
}

/* The restart points' token counts: ascending, below the state's. */
static int read_points(store_kv_file *f, const uint8_t *counts, tome_error *err)
{
    f->tokens = calloc(f->n_points + 1, sizeof *f->tokens);
    if (!f->tokens) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", f->path);
    f->tokens[0] = (int64_t)get64(f->map + H_TOKENS);
    for (size_t k = 1; k <= f->n_points; k++) {
        uint64_t t = get64(counts + 8 * (k - 1));
        if (t >= (uint64_t)f->tokens[0] || (k > 1 && t <= (uint64_t)f->tokens[k - 1]))
            return tome_errorf(err, TOME_EFORMAT,
                               "%s: restart point %zu at %llu tokens is out of order", f->path, k,
                               (unsigned long long)t);
        f->tokens[k] = (int64_t)t;
    }
    return 0;
}

static int check_table_and_ids(store_kv_file *f, tome_error *err)
{
    const uint8_t *h = f->map;
    uint64_t n = get32(h + H_N_SECTIONS), n_points = get32(h + H_N_POINTS);
    uint64_t tokens = get64(h + H_TOKENS), table = get64(h + H_TABLE_OFFSET);
    uint64_t ids = get64(h + H_IDS_OFFSET), table_bytes = n * KV_ENTRY_BYTES + 8 * n_points;
    if (n == 0 || n > KV_MAX_SECTIONS || n_points > KV_MAX_POINTS ||
        !in_file(f, table, table_bytes) || tokens > f->size / 4 || !in_file(f, ids, tokens * 4) ||
        ids % 4 != 0)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: the header's section table or token ids lie outside the file",
                           f->path);
    if (get64(h + H_TABLE_SUM) != XXH3_64bits(f->map + table, table_bytes))
        return tome_errorf(err, TOME_EFORMAT, "%s: section table checksum mismatch (damaged file)",
                           f->path);
    if (get64(h + H_IDS_SUM) != XXH3_64bits(f->map + ids, tokens * 4))
        return tome_errorf(err, TOME_EFORMAT, "%s: token id checksum mismatch (damaged file)",
                           f->path);
    f->n_secs = n;
    f->n_points = n_points;
    f->ids = (const int32_t *)(const void *)(f->map + ids);
    return read_points(f, f->map + table + n * KV_ENTRY_BYTES, err);
}

static int read_entry(store_kv_file *f, size_t i, tome_error *err)
{
    const uint8_t *e = f->map + get64(f->map + H_TABLE_OFFSET) + i * KV_ENTRY_BYTES;
    v4_section_data *d = &f->secs[i];
    uint64_t rows = get64(e + E_ROWS), off = get64(e + E_OFFSET), len = get64(e + E_LENGTH);
    uint32_t row_bytes = get32(e + E_ROW_BYTES), dtype = get32(e + E_DTYPE);
    d->sec.kind = (v4_section_kind)get32(e + E_KIND);
    d->sec.block = (int)get32(e + E_BLOCK);
    f->point[i] = get32(e + E_POINT);
    if (dtype >= V4_DTYPE_COUNT || row_bytes == 0 || rows > len / row_bytes ||
        rows * row_bytes != len || off % KV_ALIGN != 0 || !in_file(f, off, len) ||
        f->point[i] > f->n_points)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: table entry %zu (section %s of block %d) is inconsistent", f->path,
                           i, v4_section_kind_name(d->sec.kind), d->sec.block);
    d->sec.dtype = (v4_dtype)dtype;
    d->sec.row_bytes = row_bytes;
    d->sec.n_rows = (int64_t)rows;
    d->data = f->map + off;
    f->sums[i] = get64(e + E_SUM);
    return 0;
}

int store_kv_open(const char *path, const v4_model *m, store_kv_file **out, tome_error *err)
{
    *out = NULL;
    if (!host_little_endian())
        return tome_errorf(err, TOME_EINVAL, "%s: state files need a little-endian host", path);
    store_kv_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", path);
    }
    atomic_init(&f->refs, 1);
    f->m = m;
    int rc = map_file(f, err);
    if (rc == 0) rc = check_header(f, err);
    if (rc == 0) rc = check_table_and_ids(f, err);
    if (rc == 0) {
        f->secs = calloc(f->n_secs, sizeof *f->secs);
        f->point = calloc(f->n_secs, sizeof *f->point);
        f->sums = calloc(f->n_secs, sizeof *f->sums);
        f->verified = calloc(f->n_secs, 1);
        if (!f->secs || !f->point || !f->sums || !f->verified)
            rc = tome_errorf(err, TOME_ENOMEM, "%s: out of memory", path);
    }
    for (size_t i = 0; rc == 0 && i < f->n_secs; i++) rc = read_entry(f, i, err);
    if (rc) {
        store_kv_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int64_t store_kv_tokens(const store_kv_file *f)
{
    return f->tokens[0];
}

const int32_t *store_kv_ids(const store_kv_file *f)
{
    return f->ids;
}

size_t store_kv_points(const store_kv_file *f)
{
    return f->n_points;
}

int64_t store_kv_point_tokens(const store_kv_file *f, size_t point)
{
    return point <= f->n_points ? f->tokens[point] : -1;
}

/* How many of the caller's first ids equal the state's. */
static int64_t common_prefix(const store_kv_file *f, const int32_t *ids, size_t n)
{
    int64_t i = 0;
    while (i < f->tokens[0] && i < (int64_t)n && ids[i] == f->ids[i]) i++;
    return i;
}

int store_kv_match(const store_kv_file *f, const int32_t *ids, size_t n, tome_error *err)
{
    int64_t same = common_prefix(f, ids, n);
    if (same == f->tokens[0]) return 0;
    if (same == (int64_t)n)
        return tome_errorf(err, TOME_EMISMATCH,
                           "%s: the state holds %lld tokens, more than the %zu given", f->path,
                           (long long)f->tokens[0], n);
    return tome_errorf(err, TOME_EMISMATCH,
                       "%s: token %lld is %d in the state, %d in the given ids", f->path,
                       (long long)same, f->ids[same], ids[same]);
}

int store_kv_longest(const store_kv_file *f, const int32_t *ids, size_t n, size_t *point,
                     tome_error *err)
{
    int64_t same = common_prefix(f, ids, n);
    if (same == f->tokens[0]) {
        *point = 0;
        return 0;
    }
    for (size_t k = f->n_points; k >= 1; k--)
        if (f->tokens[k] <= same) {
            *point = k;
            return 0;
        }
    return tome_errorf(err, TOME_EMISMATCH,
                       "%s: the given ids share only %lld tokens with the state, fewer than "
                       "its first restart point",
                       f->path, (long long)same);
}

/* ---- verifying and restoring ------------------------------------------------------------ */

static int verify_section(store_kv_file *f, size_t i, tome_error *err)
{
    if (f->verified[i]) return 0;
    const v4_section *sec = &f->secs[i].sec;
    if (XXH3_64bits(f->secs[i].data, v4_section_bytes(sec)) != f->sums[i])
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: section %s of block %d, point %u (offset %lld, %zu bytes): "
                           "checksum mismatch (damaged file)",
                           f->path, v4_section_kind_name(sec->kind), sec->block, f->point[i],
                           (long long)((const uint8_t *)f->secs[i].data - f->map),
                           v4_section_bytes(sec));
    f->verified[i] = 1;
    return 0;
}

int store_kv_verify(store_kv_file *f, tome_error *err)
{
    for (size_t i = 0; i < f->n_secs; i++) {
        int rc = verify_section(f, i, err);
        if (rc) return rc;
    }
    return 0;
}

/* The verified sections of one point, in table order. */
static int point_sections(store_kv_file *f, size_t point, v4_section_data **out, size_t *n,
                          tome_error *err)
{
    *n = 0;
    *out = malloc(f->n_secs * sizeof **out);
    if (!*out) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < f->n_secs; i++) {
        if (f->point[i] != point) continue;
        int rc = verify_section(f, i, err);
        if (rc) {
            free(*out);
            *out = NULL;
            return rc;
        }
        (*out)[(*n)++] = f->secs[i];
    }
    return 0;
}

int store_kv_restore(store_kv_file *f, size_t point, v4_state **out, tome_error *err)
{
    *out = NULL;
    if (point > f->n_points)
        return tome_errorf(err, TOME_EINVAL, "%s: no restart point %zu (the file has %zu)", f->path,
                           point, f->n_points);
    v4_section_data *secs;
    size_t n;
    int rc = point_sections(f, point, &secs, &n, err);
    if (rc) return rc;
    v4_borrow borrow = {.retain = kv_retain, .release = kv_release, .owner = f};
    rc = v4_state_load(f->m, secs, n, &borrow, out, err);
    free(secs);
    if (rc) {
        tome_error_wrap(err, "%s: point %zu", f->path, point);
        return rc;
    }
    int64_t pos = v4_state_pos(*out);
    if (pos != f->tokens[point]) {
        v4_state_free(*out);
        *out = NULL;
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: point %zu should hold %lld tokens, its state is at position %lld",
                           f->path, point, (long long)f->tokens[point], (long long)pos);
    }
    return 0;
}
