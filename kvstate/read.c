/*
 * read.c - the KV state file: one saved decode state on disk; opening,
 * verifying and restoring it here, writing it in write.c, the shared
 * layout in layout.h.
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
#include "kvstate/kvstate.h"

#include "engine/v4.h"
#include "kvstate/layout.h"

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

struct kvstate_file {
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

/* ---- opening --------------------------------------------------------------------------- */

static void kv_retain(void *owner)
{
    kvstate_file *f = owner;
    atomic_fetch_add(&f->refs, 1);
}

static void kv_release(void *owner)
{
    kvstate_file *f = owner;
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

void kvstate_close(kvstate_file *f)
{
    if (f) kv_release(f);
}

static int map_file(kvstate_file *f, tome_error *err)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tome_errorf(err, TOME_EIO, "%s: %s", f->path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = tome_errorf(err, TOME_EIO, "%s: %s", f->path, strerror(errno));
    } else if (st.st_size < KV_HEADER_BYTES) {
        rc = tome_errorf(err, TOME_EFORMAT,
                         "%s: %lld bytes is too short for a KV state file (truncated?)", f->path,
                         (long long)st.st_size);
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
static int check_header(const kvstate_file *f, tome_error *err)
{
    const uint8_t *h = f->map;
    if (memcmp(h + H_MAGIC, KV_MAGIC, 8) != 0)
        return tome_errorf(err, TOME_EFORMAT, "%s: not a tome KV state file (bad magic)", f->path);
    if (kv_get32(h + H_VERSION) != KVSTATE_FORMAT_VERSION)
        return tome_errorf(err, TOME_EMISMATCH,
                           "%s: format version %u, this build reads version %d", f->path,
                           kv_get32(h + H_VERSION), KVSTATE_FORMAT_VERSION);
    if (kv_get64(h + H_HEADER_SUM) != XXH3_64bits(h, H_HEADER_SUM) ||
        kv_get32(h + H_HEADER_BYTES) != KV_HEADER_BYTES)
        return tome_errorf(err, TOME_EFORMAT, "%s: header checksum mismatch (damaged file)",
                           f->path);
    if (kv_get64(h + H_FILE_BYTES) != f->size)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: the header says %llu bytes, the file has %zu "
                           "(truncated or extended)",
                           f->path, (unsigned long long)kv_get64(h + H_FILE_BYTES), f->size);
    if (kv_get32(h + H_NUMERICS) != (uint32_t)v4_model_numerics(f->m))
        return tome_errorf(err, TOME_EMISMATCH,
                           "%s: saved with numerics %u, the model is open with numerics %d",
                           f->path, kv_get32(h + H_NUMERICS), (int)v4_model_numerics(f->m));
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
static int in_file(const kvstate_file *f, uint64_t off, uint64_t len)
{
    return off <= f->size && len <= f->size - off;
}

/* The restart points' token counts: ascending, below the state's. */
static int read_points(kvstate_file *f, const uint8_t *counts, tome_error *err)
{
    f->tokens = calloc(f->n_points + 1, sizeof *f->tokens);
    if (!f->tokens) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", f->path);
    f->tokens[0] = (int64_t)kv_get64(f->map + H_TOKENS);
    for (size_t k = 1; k <= f->n_points; k++) {
        uint64_t t = kv_get64(counts + 8 * (k - 1));
        if (t >= (uint64_t)f->tokens[0] || (k > 1 && t <= (uint64_t)f->tokens[k - 1]))
            return tome_errorf(err, TOME_EFORMAT,
                               "%s: restart point %zu at %llu tokens is out of order", f->path, k,
                               (unsigned long long)t);
        f->tokens[k] = (int64_t)t;
    }
    return 0;
}

static int check_table_and_ids(kvstate_file *f, tome_error *err)
{
    const uint8_t *h = f->map;
    uint64_t n = kv_get32(h + H_N_SECTIONS), n_points = kv_get32(h + H_N_POINTS);
    uint64_t tokens = kv_get64(h + H_TOKENS), table = kv_get64(h + H_TABLE_OFFSET);
    uint64_t ids = kv_get64(h + H_IDS_OFFSET), table_bytes = n * KV_ENTRY_BYTES + 8 * n_points;
    if (n == 0 || n > KV_MAX_SECTIONS || n_points > KV_MAX_POINTS ||
        !in_file(f, table, table_bytes) || tokens > f->size / 4 || !in_file(f, ids, tokens * 4) ||
        ids % 4 != 0)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: the header's section table or token ids lie outside the file",
                           f->path);
    if (kv_get64(h + H_TABLE_SUM) != XXH3_64bits(f->map + table, table_bytes))
        return tome_errorf(err, TOME_EFORMAT, "%s: section table checksum mismatch (damaged file)",
                           f->path);
    if (kv_get64(h + H_IDS_SUM) != XXH3_64bits(f->map + ids, tokens * 4))
        return tome_errorf(err, TOME_EFORMAT, "%s: token id checksum mismatch (damaged file)",
                           f->path);
    f->n_secs = n;
    f->n_points = n_points;
    f->ids = (const int32_t *)(const void *)(f->map + ids);
    return read_points(f, f->map + table + n * KV_ENTRY_BYTES, err);
}

static int read_entry(kvstate_file *f, size_t i, tome_error *err)
{
    const uint8_t *e = f->map + kv_get64(f->map + H_TABLE_OFFSET) + i * KV_ENTRY_BYTES;
    v4_section_data *d = &f->secs[i];
    uint64_t rows = kv_get64(e + E_ROWS), off = kv_get64(e + E_OFFSET),
             len = kv_get64(e + E_LENGTH);
    uint32_t row_bytes = kv_get32(e + E_ROW_BYTES), dtype = kv_get32(e + E_DTYPE);
    d->sec.kind = (v4_section_kind)kv_get32(e + E_KIND);
    d->sec.block = (int)kv_get32(e + E_BLOCK);
    f->point[i] = kv_get32(e + E_POINT);
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
    f->sums[i] = kv_get64(e + E_SUM);
    return 0;
}

int kvstate_open(const char *path, const v4_model *m, kvstate_file **out, tome_error *err)
{
    *out = NULL;
    if (!kv_host_little_endian())
        return tome_errorf(err, TOME_EINVAL, "%s: state files need a little-endian host", path);
    kvstate_file *f = calloc(1, sizeof *f);
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
        kvstate_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int64_t kvstate_tokens(const kvstate_file *f)
{
    return f->tokens[0];
}

const int32_t *kvstate_ids(const kvstate_file *f)
{
    return f->ids;
}

size_t kvstate_points(const kvstate_file *f)
{
    return f->n_points;
}

int64_t kvstate_point_tokens(const kvstate_file *f, size_t point)
{
    return point <= f->n_points ? f->tokens[point] : -1;
}

/* How many of the caller's first ids equal the state's. */
static int64_t common_prefix(const kvstate_file *f, const int32_t *ids, size_t n)
{
    int64_t i = 0;
    while (i < f->tokens[0] && i < (int64_t)n && ids[i] == f->ids[i]) i++;
    return i;
}

int kvstate_match(const kvstate_file *f, const int32_t *ids, size_t n, tome_error *err)
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

int kvstate_longest(const kvstate_file *f, const int32_t *ids, size_t n, size_t *point,
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

static int verify_section(kvstate_file *f, size_t i, tome_error *err)
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

int kvstate_verify(kvstate_file *f, tome_error *err)
{
    for (size_t i = 0; i < f->n_secs; i++) {
        int rc = verify_section(f, i, err);
        if (rc) return rc;
    }
    return 0;
}

/* The verified sections of one point, in table order. */
static int point_sections(kvstate_file *f, size_t point, v4_section_data **out, size_t *n,
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

int kvstate_restore(kvstate_file *f, size_t point, v4_state **out, tome_error *err)
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
