/*
 * kvfile.c - the KV state file: one saved decode state on disk.
 *
 * A prefill of a large corpus is the expensive thing tome does once; this
 * file is what keeps its result.  The layout (tome-kvcache(5) documents it
 * field by field) is chosen for three things:
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
#define KV_ENTRY_BYTES  48
#define KV_ALIGN        4096
/* Far more than any model has (blocks x section kinds); a guard for
 * damaged counts. */
#define KV_MAX_SECTIONS 65536

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
    H_HEADER_SUM = 120
};

/* Section table entry field offsets. */
enum {
    E_KIND = 0,
    E_BLOCK = 4,
    E_DTYPE = 8,
    E_ROW_BYTES = 12,
    E_ROWS = 16,
    E_OFFSET = 24,
    E_LENGTH = 32,
    E_SUM = 40
};

struct store_kv_file {
    char *path;
    atomic_int refs; /* the handle, plus one per chunk a restored state borrows */
    const uint8_t *map;
    size_t size;
    const v4_model *m;
    int64_t n_tokens;
    const int32_t *ids; /* into the mapping */
    size_t n_secs;
    v4_section_data *secs; /* data points into the mapping */
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

typedef struct kv_writer {
    const char *tmp;
    int fd;
    uint64_t off;
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

/* v4_section_write_fn: append a piece of the current section and hash it. */
static int write_piece(void *ctx, const void *data, size_t len, tome_error *err)
{
    kv_writer *w = ctx;
    int rc = pwrite_all(w, data, len, w->off, err);
    if (rc) return rc;
    XXH3_64bits_update(w->hash, data, len);
    w->off += len;
    return 0;
}

/* Where everything goes: the table right after the header, the ids after
 * the table, then each section on the next 4096-byte boundary. */
static uint64_t layout(const v4_section *secs, size_t n, size_t n_ids, uint64_t *offsets)
{
    uint64_t off = align_up(KV_HEADER_BYTES + (uint64_t)n * KV_ENTRY_BYTES + 4 * (uint64_t)n_ids);
    uint64_t end = off;
    for (size_t i = 0; i < n; i++) {
        offsets[i] = off;
        end = off + v4_section_bytes(&secs[i]);
        off = align_up(end);
    }
    return end;
}

static int write_sections(kv_writer *w, const v4_state *st, const v4_section *secs, size_t n,
                          const uint64_t *offsets, uint8_t *table, tome_error *err)
{
    for (size_t i = 0; i < n; i++) {
        XXH3_64bits_reset(w->hash);
        w->off = offsets[i];
        int rc = v4_state_section_write(st, &secs[i], write_piece, w, err);
        if (rc) return rc;
        uint8_t *e = table + i * KV_ENTRY_BYTES;
        put32(e + E_KIND, (uint32_t)secs[i].kind);
        put32(e + E_BLOCK, (uint32_t)secs[i].block);
        put32(e + E_DTYPE, (uint32_t)secs[i].dtype);
        put32(e + E_ROW_BYTES, (uint32_t)secs[i].row_bytes);
        put64(e + E_ROWS, (uint64_t)secs[i].n_rows);
        put64(e + E_OFFSET, offsets[i]);
        put64(e + E_LENGTH, v4_section_bytes(&secs[i]));
        put64(e + E_SUM, XXH3_64bits_digest(w->hash));
    }
    return 0;
}

static void fill_header(uint8_t *h, const v4_state *st, size_t n_secs, size_t n_ids,
                        uint64_t file_bytes, const uint8_t *table, const int32_t *ids)
{
    const v4_model *m = v4_state_model(st);
    memset(h, 0, KV_HEADER_BYTES);
    memcpy(h + H_MAGIC, KV_MAGIC, 8);
    put32(h + H_VERSION, STORE_KV_FORMAT_VERSION);
    put32(h + H_HEADER_BYTES, KV_HEADER_BYTES);
    v4_model_fingerprint(m, h + H_FINGERPRINT);
    put64(h + H_TOKENS, n_ids);
    put32(h + H_NUMERICS, (uint32_t)v4_model_numerics(m));
    put32(h + H_N_SECTIONS, (uint32_t)n_secs);
    put64(h + H_TABLE_OFFSET, KV_HEADER_BYTES);
    put64(h + H_IDS_OFFSET, KV_HEADER_BYTES + (uint64_t)n_secs * KV_ENTRY_BYTES);
    put64(h + H_FILE_BYTES, file_bytes);
    put64(h + H_TABLE_SUM, XXH3_64bits(table, n_secs * KV_ENTRY_BYTES));
    put64(h + H_IDS_SUM, XXH3_64bits(ids, n_ids * sizeof *ids));
    put64(h + H_HEADER_SUM, XXH3_64bits(h, H_HEADER_SUM));
}

/* Everything but the rename: sections, ids, table, header, size, fsync. */
static int write_body(kv_writer *w, const v4_state *st, const v4_section *secs, size_t n,
                      const int32_t *ids, size_t n_ids, tome_error *err)
{
    uint64_t *offsets = malloc((n ? n : 1) * sizeof *offsets);
    uint8_t *table = calloc(n ? n : 1, KV_ENTRY_BYTES);
    w->hash = XXH3_createState();
    int rc = 0;
    if (!offsets || !table || !w->hash) {
        rc = tome_errorf(err, TOME_ENOMEM, "%s: out of memory", w->tmp);
        goto done;
    }
    uint64_t file_bytes = layout(secs, n, n_ids, offsets);
    uint8_t header[KV_HEADER_BYTES];
    rc = write_sections(w, st, secs, n, offsets, table, err);
    if (rc) goto done;
    fill_header(header, st, n, n_ids, file_bytes, table, ids);
    if ((rc = pwrite_all(w, ids, n_ids * sizeof *ids, get64(header + H_IDS_OFFSET), err)) ||
        (rc = pwrite_all(w, table, n * KV_ENTRY_BYTES, KV_HEADER_BYTES, err)) ||
        (rc = pwrite_all(w, header, KV_HEADER_BYTES, 0, err)))
        goto done;
    if (ftruncate(w->fd, (off_t)file_bytes) != 0 || fsync(w->fd) != 0)
        rc = tome_errorf(err, TOME_EIO, "%s: %s", w->tmp, strerror(errno));
done:
    XXH3_freeState(w->hash);
    free(offsets);
    free(table);
    return rc;
}

int store_kv_save(const char *path, const v4_state *st, const int32_t *ids, size_t n_ids,
                  tome_error *err)
{
    if (!host_little_endian())
        return tome_errorf(err, TOME_EINVAL, "%s: state files need a little-endian host", path);
    if ((int64_t)n_ids != v4_state_pos(st))
        return tome_errorf(err, TOME_EINVAL,
                           "%s: %zu token ids given for a state at position "
                           "%lld",
                           path, n_ids, (long long)v4_state_pos(st));
    v4_section *secs;
    size_t n;
    int rc = v4_state_sections(st, &secs, &n, err);
    if (rc) {
        tome_error_wrap(err, "%s", path);
        return rc;
    }
    size_t len = strlen(path) + 16;
    char *tmp = malloc(len);
    if (!tmp) {
        free(secs);
        return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, len, "%s.tmpXXXXXX", path);
    kv_writer w = {.tmp = tmp, .fd = mkostemp(tmp, O_CLOEXEC)};
    if (w.fd < 0) {
        rc = tome_errorf(err, TOME_EIO, "%s: cannot create a temporary file: %s", path,
                         strerror(errno));
    } else {
        mode_t mask = umask(0);
        umask(mask);
        if (fchmod(w.fd, 0644 & ~mask) != 0)
            rc = tome_errorf(err, TOME_EIO, "%s: %s", tmp, strerror(errno));
        if (rc == 0) rc = write_body(&w, st, secs, n, ids, n_ids, err);
        if (close(w.fd) != 0 && rc == 0)
            rc = tome_errorf(err, TOME_EIO, "%s: close failed: %s", tmp, strerror(errno));
        if (rc == 0 && rename(tmp, path) != 0)
            rc = tome_errorf(err, TOME_EIO, "%s: rename failed: %s", path, strerror(errno));
        if (rc)
            unlink(tmp);
        else
            rc = tome_fsync_parent_dir(path, err);
    }
    free(tmp);
    free(secs);
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
    free(f->secs);
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

static int check_table_and_ids(store_kv_file *f, tome_error *err)
{
    const uint8_t *h = f->map;
    uint64_t n = get32(h + H_N_SECTIONS), tokens = get64(h + H_TOKENS);
    uint64_t table = get64(h + H_TABLE_OFFSET), ids = get64(h + H_IDS_OFFSET);
    if (n == 0 || n > KV_MAX_SECTIONS || !in_file(f, table, n * KV_ENTRY_BYTES) ||
        tokens > f->size / 4 || !in_file(f, ids, tokens * 4) || ids % 4 != 0)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: the header's section table or token ids lie "
                           "outside the file",
                           f->path);
    if (get64(h + H_TABLE_SUM) != XXH3_64bits(f->map + table, n * KV_ENTRY_BYTES))
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: section table checksum mismatch (damaged "
                           "file)",
                           f->path);
    if (get64(h + H_IDS_SUM) != XXH3_64bits(f->map + ids, tokens * 4))
        return tome_errorf(err, TOME_EFORMAT, "%s: token id checksum mismatch (damaged file)",
                           f->path);
    f->n_secs = n;
    f->n_tokens = (int64_t)tokens;
    f->ids = (const int32_t *)(const void *)(f->map + ids);
    return 0;
}

static int read_entry(store_kv_file *f, size_t i, tome_error *err)
{
    const uint8_t *e = f->map + get64(f->map + H_TABLE_OFFSET) + i * KV_ENTRY_BYTES;
    v4_section_data *d = &f->secs[i];
    uint64_t rows = get64(e + E_ROWS), off = get64(e + E_OFFSET), len = get64(e + E_LENGTH);
    uint32_t row_bytes = get32(e + E_ROW_BYTES), dtype = get32(e + E_DTYPE);
    d->sec.kind = (v4_section_kind)get32(e + E_KIND);
    d->sec.block = (int)get32(e + E_BLOCK);
    if (dtype >= V4_DTYPE_COUNT || row_bytes == 0 || rows > len / row_bytes ||
        rows * row_bytes != len || off % KV_ALIGN != 0 || !in_file(f, off, len))
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: table entry %zu (section %s of block %d) is "
                           "inconsistent",
                           f->path, i, v4_section_kind_name(d->sec.kind), d->sec.block);
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
        f->sums = calloc(f->n_secs, sizeof *f->sums);
        f->verified = calloc(f->n_secs, 1);
        if (!f->secs || !f->sums || !f->verified)
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
    return f->n_tokens;
}

const int32_t *store_kv_ids(const store_kv_file *f)
{
    return f->ids;
}

int store_kv_match(const store_kv_file *f, const int32_t *ids, size_t n, tome_error *err)
{
    if ((int64_t)n < f->n_tokens)
        return tome_errorf(err, TOME_EMISMATCH,
                           "%s: the state holds %lld tokens, more than the "
                           "%zu given",
                           f->path, (long long)f->n_tokens, n);
    for (int64_t i = 0; i < f->n_tokens; i++)
        if (ids[i] != f->ids[i])
            return tome_errorf(err, TOME_EMISMATCH,
                               "%s: token %lld is %d in the state, %d in the "
                               "given ids",
                               f->path, (long long)i, f->ids[i], ids[i]);
    return 0;
}

/* ---- verifying and restoring ------------------------------------------------------------ */

static int verify_section(store_kv_file *f, size_t i, tome_error *err)
{
    if (f->verified[i]) return 0;
    const v4_section *sec = &f->secs[i].sec;
    if (XXH3_64bits(f->secs[i].data, v4_section_bytes(sec)) != f->sums[i])
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: section %s of block %d (offset %lld, %zu "
                           "bytes): checksum mismatch (damaged file)",
                           f->path, v4_section_kind_name(sec->kind), sec->block,
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

int store_kv_restore(store_kv_file *f, v4_state **out, tome_error *err)
{
    *out = NULL;
    int rc = store_kv_verify(f, err);
    if (rc) return rc;
    v4_borrow borrow = {.retain = kv_retain, .release = kv_release, .owner = f};
    rc = v4_state_load(f->m, f->secs, f->n_secs, &borrow, out, err);
    if (rc) {
        tome_error_wrap(err, "%s", f->path);
        return rc;
    }
    int64_t pos = v4_state_pos(*out);
    if (pos != f->n_tokens) {
        v4_state_free(*out);
        *out = NULL;
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: the header says %lld tokens, the state is at "
                           "position %lld",
                           f->path, (long long)f->n_tokens, (long long)pos);
    }
    return 0;
}
