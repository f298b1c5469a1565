/*
 * common.h - the few things every tome module shares.
 *
 * Errors.  Library code never prints, aborts or exits.  A function that can
 * fail returns an int: 0 on success, a negative TOME_E* code on failure, and
 * fills the caller's `tome_error` with a message that names the thing at
 * fault (the file, tensor, archive entry, field or limit).  The caller owns
 * the struct (usually on its stack); nothing in it needs freeing.  The daemon
 * maps the codes to HTTP statuses, the client to exit codes.
 *
 * Files.  Reading a whole small file, and the atomic-replace pattern (write a
 * temporary file in the same directory, fsync it, rename it over the target,
 * fsync the directory) that every file which matters is written with, so a
 * crash leaves either the old or the new content, never a torn mix.
 *
 * Hashing and time.  SHA-256 (OpenSSL) for content identity and a monotonic
 * clock for the timings tome reports.
 */
#ifndef TOME_COMMON_H
#define TOME_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum {
    TOME_OK = 0,
    TOME_EINVAL = -1,     /* bad argument or bad request */
    TOME_ENOMEM = -2,     /* allocation failed */
    TOME_EIO = -3,        /* read/write/open failed (errno text in the message) */
    TOME_EFORMAT = -4,    /* malformed file or data: header, JSON, checkpoint */
    TOME_ENOTFOUND = -5,  /* named thing does not exist */
    TOME_ELIMIT = -6,     /* a configured limit was exceeded */
    TOME_EMISMATCH = -7,  /* valid, but made for something else (model, version) */
    TOME_ECANCELED = -8,  /* stopped on request */
    TOME_EBUSY = -9,      /* resource in use or queue full */
    TOME_EPERM = -10,     /* not allowed */
    TOME_EEXIST = -11,    /* already exists */
    TOME_EINTERNAL = -12, /* a bug: an invariant did not hold */
    TOME_EUPSTREAM = -13  /* a server tome relies on failed or sent what cannot be */
};
/* The error codes are -1 .. -TOME_ERROR_CODES. */
#define TOME_ERROR_CODES 13

#define TOME_ERROR_MAX 512

/* Caller-owned error report; `code` is one of TOME_E* (0 when clear).
 * tome_errorf and tome_error_wrap leave `msg` valid UTF-8 (what it quotes
 * that is not becomes U+FFFD; a message cut at TOME_ERROR_MAX loses the
 * character the cut split), so it can go into JSON as it is. */
typedef struct tome_error {
    int code;
    char msg[TOME_ERROR_MAX];
} tome_error;

/* Fill `err` (if not NULL) and return `code`, so callers can write
 * `return tome_errorf(err, TOME_EFORMAT, "%s: bad header", path);`. */
int tome_errorf(tome_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int tome_verrorf(tome_error *err, int code, const char *fmt, va_list ap);
/* Prefix an existing message with context ("loading X: " + old message). */
int tome_error_wrap(tome_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tome_error_clear(tome_error *err);
/* Short stable name of a code ("format", "not_found", ...), for protocols. */
const char *tome_error_name(int code);

/* Read a whole file into a NUL-terminated malloc'd buffer (the caller frees
 * it); `*len` gets the byte count without the NUL.  Refuses files larger
 * than `max_bytes`. */
int tome_read_file(const char *path, size_t max_bytes, char **out, size_t *len, tome_error *err);

/* Read a stream (stdin, a pipe) to its end into a NUL-terminated malloc'd
 * buffer; `name` names it in errors.  Refuses more than `max_bytes`. */
int tome_read_stream(FILE *f, const char *name, size_t max_bytes, char **out, size_t *len,
                     tome_error *err);

/* Atomically replace `path` with `len` bytes of `data` (mode 0644 & ~umask). */
int tome_write_file_atomic(const char *path, const void *data, size_t len, tome_error *err);
/* fsync the directory that holds `path`, so a rename into it is durable. */
int tome_fsync_parent_dir(const char *path, tome_error *err);
/* mkdir -p with `mode` for the directories it creates. */
int tome_mkdir_p(const char *path, unsigned mode, tome_error *err);

/* SHA-256 of a buffer as 32 raw bytes, and raw bytes as lowercase hex
 * (`hex` must hold 2*n+1 bytes). */
void tome_sha256(const void *data, size_t len, uint8_t out[32]);
void tome_hex(const uint8_t *bytes, size_t n, char *hex);

/* UTF-8 (RFC 3629; common/utf8.c).  Overlongs, surrogates and values
 * past U+10FFFF are ill-formed.
 *
 * tome_utf8_char_length: bytes of the well-formed character at `s` (at
 *   most `left` bytes are read), 0 when the bytes there are ill-formed or
 *   the character is cut short.
 * tome_utf8_valid_prefix: length of the longest well-formed prefix.
 * tome_utf8_valid: whether all `n` bytes are well-formed.
 * tome_utf8_unfinished_tail: how many bytes at the end of `s` are the
 *   valid beginning of a character that is not finished yet (0 to 3): what
 *   a stream decoder holds back until the next bytes come.
 * tome_utf8_repair: copy `n` bytes to `out` (at least 3*n bytes, not
 *   overlapping `in`), each maximal subpart of an ill-formed sequence
 *   replaced by U+FFFD as the Unicode Standard recommends; returns the
 *   length written.  tome_utf8_repair_dup does the same into a malloc'd,
 *   NUL-terminated buffer (NULL when out of memory).
 * tome_text_repair: the same, and each U+0000 becomes U+FFFD too: what an
 *   answer may hold, text that is one C string as well as one JSON
 *   string (the client, the store and reports read answers as C strings,
 *   so a NUL would cut them short). */
#define TOME_UTF8_REPLACEMENT "\xEF\xBF\xBD"
size_t tome_utf8_char_length(const void *s, size_t left);
size_t tome_utf8_valid_prefix(const void *s, size_t n);
int tome_utf8_valid(const void *s, size_t n);
size_t tome_utf8_unfinished_tail(const void *s, size_t n);
size_t tome_utf8_repair(const void *in, size_t n, char *out);
size_t tome_text_repair(const void *in, size_t n, char *out);
char *tome_utf8_repair_dup(const void *in, size_t n, size_t *out_len);

/* Seconds from a monotonic clock (for durations only). */
double tome_now(void);

#endif
