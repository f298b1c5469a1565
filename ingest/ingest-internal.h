/*
 * ingest-internal.h - what the files of ingest/ share and nobody else sees.
 *
 * The readers (archive.c for libarchive, source.c for directories) know how
 * to find entries and enforce the limits while reading them; ingest.c
 * knows what to do with a file once it has its bytes.  They meet in
 * `ingest_reader`: the readers call back into it for each regular file that
 * passed the path checks and the filter, and for each entry they skip.
 */
#ifndef TOME_INGEST_INTERNAL_H
#define TOME_INGEST_INTERNAL_H

#include "ingest/ingest.h"

typedef struct ingest_reader ingest_reader;

struct ingest_reader {
    const ingest_limits *limits;
    const ingest_filter *filter;
    const ingest_access *access; /* NULL: the process's own rights */
    uint64_t entries;            /* every entry seen, all levels */
    uint64_t total_bytes;        /* uncompressed bytes read, all levels */
    double t_read;               /* seconds spent reading and decompressing */
    char *last_skipped_dir;      /* so an excluded directory is reported once */
    /* A regular file's bytes (valid during the call only). */
    int (*file)(ingest_reader *r, const char *path, const unsigned char *data, size_t len,
                int64_t mtime, tome_error *err);
    /* An entry left out: `warn` for unsafe ones (also a report warning),
     * 0 for ordinary ones (filtered, binary). */
    int (*skip)(ingest_reader *r, const char *path, const char *reason, int warn, tome_error *err);
    /* A warning that concerns no single entry (a libarchive warning). */
    int (*warn)(ingest_reader *r, const char *message, tome_error *err);
    void *ctx;
};

/* Read a source: a directory, an archive or compressed file, or a plain
 * file (one document named by its base name). */
int ingest_read_source(ingest_reader *r, const char *source, tome_error *err);

/* archive.c: the archive file open on `fd` (top level, read from its
 * start; `path` names it in messages).  TOME_ENOTFOUND (nothing reported)
 * when libarchive recognises no archive in it.  The caller closes `fd`. */
int ingest_read_archive_fd(ingest_reader *r, const char *path, int fd, tome_error *err);
/* Hand over the bytes of a file found at `depth` levels of archives:
 * opened as an archive when it is one, otherwise passed to r->file. */
int ingest_take_file(ingest_reader *r, const char *path, const unsigned char *data, size_t len,
                     int64_t mtime, int depth, tome_error *err);

/* Count one entry against max_entries. */
int ingest_count_entry(ingest_reader *r, const char *path, tome_error *err);
/* Apply the filter to `path`, reporting a skip (an excluded directory
 * once); 1 when the path is filtered out. */
int ingest_filtered(ingest_reader *r, const char *path, tome_error *err);

/* Printable form of an untrusted name for messages: bytes outside
 * printable ASCII become \xNN (out must hold 4 * len + 1). */
void ingest_escape_name(const char *name, size_t len, char *out);

#endif
