/*
 * common.c - errors, whole-file I/O, atomic replace, SHA-256, clocks.
 *
 * See common.h for the contracts.  The atomic writer is the one place that
 * knows the temp-fsync-rename-fsync sequence; store/ and everything else that
 * persists a file goes through it (or through SQLite transactions).
 */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Messages go into JSON as they are (answers, job records, stream
 * events), so each is kept valid UTF-8: bytes it quotes that are not (a
 * file name, a server's words) become U+FFFD, and a message cut at the
 * buffer's end loses the character the cut split. */
static void keep_utf8(char *msg, size_t cap)
{
    size_t n = strlen(msg);
    if (tome_utf8_valid(msg, n)) return;
    if (n == cap - 1) n -= tome_utf8_unfinished_tail(msg, n); /* perhaps cut: drop the rest */
    char fixed[3 * TOME_ERROR_MAX];
    size_t m = tome_utf8_repair(msg, n, fixed);
    if (m > cap - 1) m = cap - 1 - tome_utf8_unfinished_tail(fixed, cap - 1);
    memcpy(msg, fixed, m);
    msg[m] = '\0';
}

int tome_verrorf(tome_error *err, int code, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        keep_utf8(err->msg, sizeof err->msg);
    }
    return code;
}

int tome_errorf(tome_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tome_verrorf(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int tome_error_wrap(tome_error *err, const char *fmt, ...)
{
    if (!err) return TOME_EINTERNAL;
    char prefix[TOME_ERROR_MAX], old[TOME_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    keep_utf8(err->msg, sizeof err->msg);
    return err->code;
}

void tome_error_clear(tome_error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

const char *tome_error_name(int code)
{
    switch (code) {
    case TOME_OK:
        return "ok";
    case TOME_EINVAL:
        return "invalid";
    case TOME_ENOMEM:
        return "no_memory";
    case TOME_EIO:
        return "io";
    case TOME_EFORMAT:
        return "format";
    case TOME_ENOTFOUND:
        return "not_found";
    case TOME_ELIMIT:
        return "limit";
    case TOME_EMISMATCH:
        return "mismatch";
    case TOME_ECANCELED:
        return "canceled";
    case TOME_EBUSY:
        return "busy";
    case TOME_EPERM:
        return "forbidden";
    case TOME_EEXIST:
        return "exists";
    case TOME_EUPSTREAM:
        return "upstream";
    default:
        return "internal";
    }
}

int tome_read_file(const char *path, size_t max_bytes, char **out, size_t *len, tome_error *err)
{
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(e));
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return tome_errorf(err, TOME_ELIMIT, "%s: %lld bytes is over the limit of %zu", path,
                           (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return tome_errorf(err, TOME_ENOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return tome_errorf(err, TOME_EIO, "%s: read failed: %s", path,
                               r < 0 ? strerror(e) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return 0;
}

int tome_read_stream(FILE *f, const char *name, size_t max_bytes, char **out, size_t *len,
                     tome_error *err)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    *out = NULL;
    if (len) *len = 0;
    for (;;) {
        if (!buf) return tome_errorf(err, TOME_ENOMEM, "out of memory reading %s", name);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
        if (n + 1 < cap) continue;
        if (n >= max_bytes) {
            free(buf);
            return tome_errorf(err, TOME_ELIMIT, "%s is larger than %zu bytes", name, max_bytes);
        }
        cap *= 2;
        char *grown = realloc(buf, cap);
        if (!grown) free(buf);
        buf = grown;
    }
    if (ferror(f)) {
        free(buf);
        return tome_errorf(err, TOME_EIO, "reading %s failed", name);
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return 0;
}

int tome_fsync_parent_dir(const char *path, tome_error *err)
{
    char *copy = strdup(path);
    if (!copy) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || fsync(fd) != 0)
        rc = tome_errorf(err, TOME_EIO, "%s: fsync of directory failed: %s", dir, strerror(errno));
    if (fd >= 0) close(fd);
    free(copy);
    return rc;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int tome_write_file_atomic(const char *path, const void *data, size_t len, tome_error *err)
{
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmpXXXXXX", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int rc = tome_errorf(err, TOME_EIO, "%s: cannot create temporary file: %s", path,
                             strerror(errno));
        free(tmp);
        return rc;
    }
    mode_t mask = umask(0);
    umask(mask);
    int rc = 0;
    if (fchmod(fd, 0644 & ~mask) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0)
        rc = tome_errorf(err, TOME_EIO, "%s: write failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = tome_errorf(err, TOME_EIO, "%s: close failed: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = tome_errorf(err, TOME_EIO, "%s: rename failed: %s", path, strerror(errno));
    if (rc != 0) unlink(tmp);
    free(tmp);
    if (rc == 0) rc = tome_fsync_parent_dir(path, err);
    return rc;
}

int tome_mkdir_p(const char *path, unsigned mode, tome_error *err)
{
    char *p = strdup(path);
    if (!p) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST) {
            int rc = tome_errorf(err, TOME_EIO, "%s: mkdir failed: %s", p, strerror(errno));
            free(p);
            return rc;
        }
        *s = c;
        if (c == '\0') break;
    }
    free(p);
    return 0;
}

void tome_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned int n = 32;
    EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

void tome_hex(const uint8_t *bytes, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[bytes[i] >> 4];
        hex[2 * i + 1] = digits[bytes[i] & 15];
    }
    hex[2 * n] = '\0';
}

double tome_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
