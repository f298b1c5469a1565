/*
 * archive.c - reading archives with libarchive, into memory, within limits.
 *
 * Every entry is read with archive_read_data into a buffer; nothing is
 * extracted, so no entry name, link or device can touch the filesystem.
 * The reader enables the formats tome promises (tar, zip, 7z, cpio, ar,
 * ISO 9660) and the compression filters it can decode in-process, rather
 * than libarchive's *_all: format_all includes mtree, whose entries name
 * files on the host that libarchive would then read, and filter_all falls
 * back to running external programs.  format_raw is used only for a
 * stream that decompresses but holds no archive (a single .gz file).
 *
 * Limits are enforced while streaming: an entry's declared size is checked
 * before reading it, and every block read is checked against the file,
 * total and compression-ratio limits, so a bomb is abandoned after at most
 * one block past the limit instead of being inflated.  The ratio compares
 * what an archive produced with the bytes read from its source, and is
 * checked only past `ratio_floor`, because a small file of repeated bytes
 * compresses a thousandfold innocently.
 *
 * An entry whose first bytes carry an archive or compression signature is
 * opened as a nested archive, one level deeper, up to `max_depth`.  If
 * libarchive then recognises no format the bytes are an ordinary file that
 * happened to start like one; if it recognises one and fails later, the
 * archive is damaged and the ingest fails.
 */
#include "ingest/ingest-internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_BLOCK (64 * 1024)

/* One archive being read: the top-level file or a nested one in memory. */
typedef struct level {
    ingest_reader *r;
    struct archive *a;
    const char *name;      /* the archive's path, for messages */
    const char *prefix;    /* prepended to entry names ("" at the top) */
    int depth;             /* levels of archives above its entries' files */
    uint64_t produced;     /* uncompressed bytes this archive produced */
    uint64_t source_bytes; /* compressed size when known up front (memory) */
} level;

static struct archive *new_reader(int raw)
{
    struct archive *a = archive_read_new();
    if (!a) return NULL;
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_bzip2(a);
    archive_read_support_filter_xz(a);
    archive_read_support_filter_lzma(a);
    archive_read_support_filter_lzip(a);
    archive_read_support_filter_zstd(a);
    archive_read_support_filter_lz4(a);
    archive_read_support_filter_compress(a);
    if (raw) {
        archive_read_support_format_raw(a);
        return a;
    }
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    /* Seekable only: it trusts the central directory, so a zip cut short
     * is refused rather than read as its surviving entries (every source
     * here, a file or a buffer, can seek). */
    archive_read_support_format_zip_seekable(a);
    archive_read_support_format_7zip(a);
    archive_read_support_format_cpio(a);
    archive_read_support_format_ar(a);
    archive_read_support_format_iso9660(a);
    return a;
}

/* Does the data start like something libarchive should open?  0: no;
 * 1: a two-byte magic that other binary data can start with too; 2: a
 * longer one, after which failing to open it means it is damaged. */
static int archive_signature(const unsigned char *p, size_t n)
{
    static const struct {
        size_t offset, len;
        const char *magic;
    } sigs[] = {
        {0, 3, "\x1f\x8b\x08"},
        {0, 3, "BZh"},
        {0, 6,
         "\xfd"
         "7zXZ\0"},
        {0, 4, "\x28\xb5\x2f\xfd"},
        {0, 4, "\x04\x22\x4d\x18"},
        {0, 4, "LZIP"},
        {0, 4, "PK\x03\x04"},
        {0, 4, "PK\x05\x06"},
        {0, 6, "7z\xbc\xaf\x27\x1c"},
        {0, 8, "!<arch>\n"},
        {0, 6, "070701"},
        {0, 6, "070702"},
        {0, 6, "070707"},
        {257, 5, "ustar"},
        {32769, 5, "CD001"},
        {0, 2, "\x1f\x9d"},
        {0, 2, "\xc7\x71"},
        {0, 2, "\x71\xc7"},
    };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (n >= sigs[i].offset + sigs[i].len &&
            memcmp(p + sigs[i].offset, sigs[i].magic, sigs[i].len) == 0)
            return sigs[i].len > 2 ? 2 : 1;
    return 0;
}

/* The first bytes of an open file, enough for every signature above. */
static int file_signature(int fd)
{
    unsigned char head[32774];
    ssize_t n = pread(fd, head, sizeof head, 0);
    return n > 0 ? archive_signature(head, (size_t)n) : 0;
}

static const char *error_text(struct archive *a)
{
    const char *text = archive_error_string(a);
    return text ? text : "unexpected end of data";
}

static int limit_error(tome_error *err, const char *path, const char *what, const char *limit)
{
    return tome_errorf(err, TOME_ELIMIT, "entry %s: %s (limit %s)", path, what, limit);
}

int ingest_count_entry(ingest_reader *r, const char *path, tome_error *err)
{
    if (++r->entries > r->limits->max_entries) {
        char what[96];
        snprintf(what, sizeof what, "more than %llu entries",
                 (unsigned long long)r->limits->max_entries);
        return limit_error(err, path, what, "max_entries");
    }
    return 0;
}

/* Account `n` more bytes of entry `path` (so far `len`) and check limits. */
static int check_growth(level *lv, const char *path, size_t len, size_t n, tome_error *err)
{
    const ingest_limits *l = lv->r->limits;
    char what[128];
    lv->r->total_bytes += n;
    lv->produced += n;
    if (len > l->max_file_bytes) {
        snprintf(what, sizeof what, "larger than %llu bytes",
                 (unsigned long long)l->max_file_bytes);
        return limit_error(err, path, what, "max_file_bytes");
    }
    if (lv->r->total_bytes > l->max_total_bytes) {
        snprintf(what, sizeof what, "the corpus passes %llu uncompressed bytes",
                 (unsigned long long)l->max_total_bytes);
        return limit_error(err, path, what, "max_total_bytes");
    }
    uint64_t consumed =
        lv->source_bytes ? lv->source_bytes : (uint64_t)archive_filter_bytes(lv->a, -1);
    if (lv->produced > l->ratio_floor && (double)lv->produced > l->max_ratio * (double)consumed) {
        snprintf(what, sizeof what,
                 "%s expands more than %.0f:1 (%llu bytes out of %llu); a compression bomb?",
                 lv->name, l->max_ratio, (unsigned long long)lv->produced,
                 (unsigned long long)consumed);
        return limit_error(err, path, what, "max_ratio");
    }
    return 0;
}

/* Read the current entry's data into a malloc'd buffer, within limits. */
static int read_entry_data(level *lv, const char *path, unsigned char **out, size_t *len,
                           tome_error *err)
{
    size_t cap = READ_BLOCK, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) return tome_errorf(err, TOME_ENOMEM, "entry %s: out of memory", path);
    for (;;) {
        if (cap - n < READ_BLOCK) {
            unsigned char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                return tome_errorf(err, TOME_ENOMEM, "entry %s: out of memory", path);
            }
            buf = grown;
            cap *= 2;
        }
        double t0 = tome_now();
        la_ssize_t got = archive_read_data(lv->a, buf + n, READ_BLOCK);
        lv->r->t_read += tome_now() - t0;
        if (got == 0) break;
        int rc = got < 0 ? tome_errorf(err, TOME_EFORMAT, "entry %s in %s: %s", path, lv->name,
                                       error_text(lv->a))
                         : check_growth(lv, path, n + (size_t)got, (size_t)got, err);
        if (rc) {
            free(buf);
            return rc;
        }
        n += (size_t)got;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* The entry's name as UTF-8 when libarchive can convert it, else raw. */
static const char *entry_name(struct archive_entry *e)
{
    const char *utf8 = archive_entry_pathname_utf8(e);
    return utf8 ? utf8 : archive_entry_pathname(e);
}

/* Why an entry that is not a plain regular file is skipped, or NULL. */
static const char *unsafe_kind(struct archive_entry *e, char *buf, size_t size)
{
    const char *target;
    if ((target = archive_entry_hardlink(e))) {
        snprintf(buf, size, "hard link to %.200s, not followed", target);
        return buf;
    }
    switch (archive_entry_filetype(e)) {
    case AE_IFREG:
        return NULL;
    case 0:
        return NULL; /* no type recorded (ar members): plain data */
    case AE_IFLNK:
        target = archive_entry_symlink(e);
        snprintf(buf, size, "symbolic link to %.200s, not followed", target ? target : "?");
        return buf;
    default:
        return "device, FIFO or socket, not a regular file";
    }
}

/* Build the entry's full path (prefix + normalised name); 1 = skipped. */
static int entry_path(level *lv, const char *name, char **path, tome_error *err)
{
    ingest_reader *r = lv->r;
    size_t len = strlen(name);
    char *norm;
    const char *why;
    int rc = ingest_path_normalise(name, len, r->limits->max_path_bytes, &norm, &why);
    if (rc == 0 && (*path = malloc(strlen(lv->prefix) + strlen(norm) + 1))) {
        strcpy(stpcpy(*path, lv->prefix), norm);
        free(norm);
        if (strlen(*path) <= r->limits->max_path_bytes) return 0;
        rc = TOME_ELIMIT;
    } else if (rc == 0) {
        free(norm);
        return tome_errorf(err, TOME_ENOMEM, "out of memory reading %s", lv->name);
    }
    char *shown = malloc(4 * len + 1);
    if (!shown) return tome_errorf(err, TOME_ENOMEM, "out of memory reading %s", lv->name);
    ingest_escape_name(name, len, shown);
    if (rc == TOME_ELIMIT) {
        char what[96];
        snprintf(what, sizeof what, "path longer than %zu bytes", r->limits->max_path_bytes);
        rc = limit_error(err, shown, what, "max_path_bytes");
    } else if (rc == TOME_EPERM) {
        char full[8192];
        snprintf(full, sizeof full, "%s%s", lv->prefix, shown);
        rc = r->skip(r, full, why, 1, err);
        if (rc == 0) rc = 1;
    }
    free(shown);
    return rc;
}

/* Read a regular file entry that passed every check and hand it over. */
static int read_file_entry(level *lv, struct archive_entry *e, const char *path, tome_error *err)
{
    ingest_reader *r = lv->r;
    if (archive_entry_size_is_set(e) &&
        (uint64_t)archive_entry_size(e) > r->limits->max_file_bytes) {
        char what[96];
        snprintf(what, sizeof what, "declares %lld bytes, more than %llu",
                 (long long)archive_entry_size(e), (unsigned long long)r->limits->max_file_bytes);
        return limit_error(err, path, what, "max_file_bytes");
    }
    unsigned char *data;
    size_t len;
    int rc = read_entry_data(lv, path, &data, &len, err);
    if (rc) return rc;
    rc = ingest_take_file(r, path, data, len, archive_entry_mtime(e), lv->depth, err);
    free(data);
    return rc;
}

static int take_entry(level *lv, struct archive_entry *e, tome_error *err)
{
    ingest_reader *r = lv->r;
    const char *name = entry_name(e);
    /* Every entry counts against the limit, whatever becomes of it. */
    int rc = ingest_count_entry(r, name ? name : lv->name, err);
    if (rc) return rc;
    if (!name) return r->skip(r, lv->prefix, "an entry has no name", 1, err);
    char *path = NULL;
    rc = entry_path(lv, name, &path, err);
    if (rc) return rc == 1 ? 0 : rc;
    char kind[256];
    const char *unsafe = unsafe_kind(e, kind, sizeof kind);
    if (!*path || archive_entry_filetype(e) == AE_IFDIR)
        rc = 0;
    else if (unsafe)
        rc = r->skip(r, path, unsafe, 1, err);
    else if ((rc = ingest_filtered(r, path, err)) != 0)
        rc = rc < 0 ? rc : 0;
    else
        rc = read_file_entry(lv, e, path, err);
    free(path);
    return rc;
}

/* Read every entry of an opened archive; any damage fails the whole read,
 * as does a header libarchive could only skip (ARCHIVE_RETRY). */
static int read_entries(level *lv, tome_error *err)
{
    int n = 0;
    for (;;) {
        struct archive_entry *e;
        double t0 = tome_now();
        int rc = archive_read_next_header(lv->a, &e);
        lv->r->t_read += tome_now() - t0;
        if (rc == ARCHIVE_EOF) return 0;
        if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN)
            return tome_errorf(err, TOME_EFORMAT, "%s: damaged archive%s: %s", lv->name,
                               n ? " (after its first entries)" : "", error_text(lv->a));
        if (rc == ARCHIVE_WARN) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s: %s", lv->name, error_text(lv->a));
            int wrc = lv->r->warn(lv->r, msg, err);
            if (wrc) return wrc;
        }
        n++;
        rc = take_entry(lv, e, err);
        if (rc) return rc;
    }
}

/* Path a single compressed file decompresses to: its name without the
 * compression suffix. */
static char *raw_name(const char *path)
{
    static const char *const suffixes[] = {".gz",  ".bz2", ".xz",  ".lzma", ".lz", ".zst",
                                           ".lz4", ".Z",   ".tgz", ".tbz2", ".txz"};
    size_t len = strlen(path);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t sl = strlen(suffixes[i]);
        if (len > sl && strcmp(path + len - sl, suffixes[i]) == 0 && path[len - sl - 1] != '/')
            return strndup(path, len - sl);
    }
    return strdup(path);
}

/* Open `lv->a` on the source (file `fd`, from its start, or memory `data`
 * when `fd` is -1).  libarchive
 * picks the format while opening; TOME_ENOTFOUND (nothing reported) when
 * it recognises none, with `*compressed` saying whether a compression
 * filter did recognise the stream. */
static int open_level(level *lv, int raw, int fd, const void *data, size_t len, int *compressed,
                      tome_error *err)
{
    if (fd >= 0 && lseek(fd, 0, SEEK_SET) != 0)
        return tome_errorf(err, TOME_EIO, "%s: %s", lv->name, strerror(errno));
    lv->a = new_reader(raw);
    if (!lv->a) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", lv->name);
    int rc = fd >= 0 ? archive_read_open_fd(lv->a, fd, READ_BLOCK)
                     : archive_read_open_memory(lv->a, data, len);
    if (rc == ARCHIVE_OK) return 0;
    /* No format chosen: not an archive (a file that cannot be read at
     * all fails again, with its errno, when read as a plain file). */
    if (!raw && archive_format(lv->a) == 0) {
        *compressed = archive_filter_count(lv->a) > 1;
        rc = TOME_ENOTFOUND;
    } else {
        rc = tome_errorf(err, TOME_EFORMAT, "%s: %s", lv->name, error_text(lv->a));
    }
    archive_read_free(lv->a);
    lv->a = NULL;
    return rc;
}

/* One compressed stream that holds no archive: its content is a file
 * named after it (without the compression suffix) at the same level, and
 * may itself be an archive (a .zip.gz, or a .tar libarchive did not see
 * through the compression). */
static int read_raw_stream(level *lv, int fd, const unsigned char *data, size_t len,
                           tome_error *err)
{
    int unused;
    lv->produced = 0;
    int rc = open_level(lv, 1, fd, data, len, &unused, err);
    if (rc) return rc;
    struct archive_entry *e;
    rc = archive_read_next_header(lv->a, &e);
    char *path = raw_name(lv->name);
    if (!path) {
        rc = tome_errorf(err, TOME_ENOMEM, "%s: out of memory", lv->name);
    } else if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
        rc = tome_errorf(err, TOME_EFORMAT, "%s: %s", lv->name, error_text(lv->a));
    } else if ((rc = ingest_count_entry(lv->r, path, err)) == 0) {
        unsigned char *buf;
        size_t n;
        rc = read_entry_data(lv, path, &buf, &n, err);
        if (!rc) {
            rc = ingest_take_file(lv->r, path, buf, n, archive_entry_mtime(e), lv->depth, err);
            free(buf);
        }
    }
    free(path);
    archive_read_free(lv->a);
    return rc;
}

/* Read an archive at `depth`, retrying as a raw compressed stream when it
 * decompresses but holds no archive.  `prefix` ends in '/' or is "". */
static int read_archive(ingest_reader *r, const char *name, const char *prefix, int depth, int fd,
                        const unsigned char *data, size_t len, tome_error *err)
{
    level lv = {.r = r, .name = name, .prefix = prefix, .depth = depth, .source_bytes = len};
    int compressed = 0;
    int rc = open_level(&lv, 0, fd, data, len, &compressed, err);
    if (!rc) {
        rc = read_entries(&lv, err);
        archive_read_free(lv.a);
    }
    if (rc == TOME_ENOTFOUND && !compressed &&
        (fd >= 0 ? file_signature(fd) : archive_signature(data, len)) == 2)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: starts like an archive or compressed file "
                           "but cannot be read: truncated or damaged",
                           name);
    if (rc != TOME_ENOTFOUND || !compressed) return rc;
    return read_raw_stream(&lv, fd, data, len, err);
}

int ingest_read_archive_fd(ingest_reader *r, const char *path, int fd, tome_error *err)
{
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    return read_archive(r, base, "", 0, fd, NULL, 0, err);
}

int ingest_take_file(ingest_reader *r, const char *path, const unsigned char *data, size_t len,
                     int64_t mtime, int depth, tome_error *err)
{
    if (!archive_signature(data, len)) return r->file(r, path, data, len, mtime, err);
    if (depth >= r->limits->max_depth) {
        char what[96];
        snprintf(what, sizeof what, "an archive nested more than %d levels deep",
                 r->limits->max_depth);
        return limit_error(err, path, what, "max_depth");
    }
    size_t plen = strlen(path);
    char *prefix = malloc(plen + 2);
    if (!prefix) return tome_errorf(err, TOME_ENOMEM, "entry %s: out of memory", path);
    memcpy(prefix, path, plen);
    memcpy(prefix + plen, "/", 2);
    int rc = read_archive(r, path, prefix, depth + 1, -1, data, len, err);
    free(prefix);
    /* Bytes that only looked like an archive are an ordinary file. */
    if (rc == TOME_ENOTFOUND) return r->file(r, path, data, len, mtime, err);
    return rc;
}
