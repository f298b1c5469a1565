/*
 * source.c - what an ingest reads: a directory tree, an archive, a
 * compressed file or one plain file, and the filter applied on the way.
 *
 * Directories are walked with lstat and opened with O_NOFOLLOW, so a
 * symbolic link is reported and skipped, never followed out of the tree
 * (the same policy as links inside archives).  Names are sorted in each
 * directory so "source order" is the same on every file system.  A
 * directory the filter excludes is not descended into at all: that is
 * what keeps a .git or node_modules directory from costing anything.
 *
 * With an ingest_access (a reader other than this process), every file
 * and directory is checked on its open descriptor before it is read, and
 * the source path is opened one component at a time from "/" with
 * O_NOFOLLOW: what was checked is what is read, whatever is renamed or
 * replaced meanwhile.
 */
#include "ingest/ingest-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ingest_filtered(ingest_reader *r, const char *path, tome_error *err)
{
    const char *reason;
    /* An excluded directory is reported once, not once per file. */
    const char *slash = path;
    while ((slash = strchr(slash, '/'))) {
        char *dir = strndup(path, (size_t)(slash - path));
        if (!dir) return tome_errorf(err, TOME_ENOMEM, "out of memory filtering %s", path);
        if (ingest_filter_excludes_dir(r->filter, dir, &reason)) {
            int rc = 0;
            if (!r->last_skipped_dir || strcmp(r->last_skipped_dir, dir) != 0) {
                char shown[4200];
                snprintf(shown, sizeof shown, "%s/", dir);
                rc = r->skip(r, shown, reason, 0, err);
                free(r->last_skipped_dir);
                r->last_skipped_dir = dir;
                dir = NULL;
            }
            free(dir);
            return rc ? rc : 1;
        }
        free(dir);
        slash++;
    }
    if (!ingest_filter_excludes(r->filter, path, &reason)) return 0;
    int rc = r->skip(r, path, reason, 0, err);
    return rc ? rc : 1;
}

static int read_fd(int fd, const char *shown, uint64_t max, unsigned char **out, size_t *len,
                   tome_error *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return tome_errorf(err, TOME_EIO, "%s: %s", shown, strerror(errno));
    if ((uint64_t)st.st_size > max)
        return tome_errorf(err, TOME_ELIMIT,
                           "entry %s: %lld bytes, more than %llu (limit "
                           "max_file_bytes)",
                           shown, (long long)st.st_size, (unsigned long long)max);
    size_t cap = (size_t)st.st_size + 1, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", shown);
    for (;;) {
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            free(buf);
            return tome_errorf(err, TOME_EIO, "%s: %s", shown, strerror(errno));
        }
        if (got == 0) break;
        n += (size_t)got;
        /* The file grew while being read: re-check, then keep reading. */
        if (n > max) {
            free(buf);
            return tome_errorf(err, TOME_ELIMIT,
                               "entry %s: more than %llu bytes (limit "
                               "max_file_bytes)",
                               shown, (unsigned long long)max);
        }
        if (n == cap) {
            unsigned char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                return tome_errorf(err, TOME_ENOMEM, "%s: out of memory", shown);
            }
            buf = grown;
            cap *= 2;
        }
    }
    *out = buf;
    *len = n;
    return 0;
}

/* May the reader open `fd` for `want` (R_OK, X_OK)?  Always, without an
 * ingest_access. */
static int allowed(const ingest_reader *r, int fd, int want)
{
    return !r->access || r->access->may(r->access->ctx, fd, want);
}

/* An entry of the tree the reader may not read: skipped with a warning.
 * `shown` is its path as reported (a directory's ends in '/'). */
static int refused(ingest_reader *r, int fd, const char *shown, tome_error *err)
{
    char why[160];
    close(fd);
    snprintf(why, sizeof why, "not readable by %s", r->access->who);
    return r->skip(r, shown, why, 1, err);
}

/* A regular file of the tree, `rel` its path relative to the root. */
static int read_tree_file(ingest_reader *r, int dirfd, const char *name, const char *rel,
                          tome_error *err)
{
    int filtered = ingest_filtered(r, rel, err);
    if (filtered) return filtered < 0 ? filtered : 0;
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return tome_errorf(err, TOME_EIO, "%s: %s", rel, strerror(errno));
    if (!allowed(r, fd, R_OK)) return refused(r, fd, rel, err);
    unsigned char *data = NULL;
    size_t len = 0;
    struct stat st;
    double t0 = tome_now();
    int rc = fstat(fd, &st) == 0 ? read_fd(fd, rel, r->limits->max_file_bytes, &data, &len, err)
                                 : tome_errorf(err, TOME_EIO, "%s: %s", rel, strerror(errno));
    r->t_read += tome_now() - t0;
    close(fd);
    if (!rc && (r->total_bytes += len) > r->limits->max_total_bytes)
        rc = tome_errorf(err, TOME_ELIMIT,
                         "entry %s: the corpus passes %llu bytes (limit "
                         "max_total_bytes)",
                         rel, (unsigned long long)r->limits->max_total_bytes);
    if (!rc) rc = ingest_take_file(r, rel, data, len, (int64_t)st.st_mtime, 0, err);
    free(data);
    return rc;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int walk(ingest_reader *r, int dirfd, const char *rel, tome_error *err);

/* One directory entry: count it, check it, recurse or read it. */
static int visit(ingest_reader *r, int dirfd, const char *name, const char *rel, tome_error *err)
{
    int rc = ingest_count_entry(r, rel, err);
    if (rc) return rc;
    char why[96];
    const char *bad;
    char *norm = NULL;
    rc = ingest_path_normalise(rel, strlen(rel), r->limits->max_path_bytes, &norm, &bad);
    free(norm);
    if (rc == TOME_ELIMIT)
        return tome_errorf(err, TOME_ELIMIT,
                           "entry %s: path longer than %zu bytes (limit "
                           "max_path_bytes)",
                           rel, r->limits->max_path_bytes);
    if (rc) {
        char shown[4 * 4096 + 1];
        ingest_escape_name(rel, strnlen(rel, 4096), shown);
        return r->skip(r, shown, bad, 1, err);
    }
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return tome_errorf(err, TOME_EIO, "%s: %s", rel, strerror(errno));
    if (S_ISLNK(st.st_mode)) return r->skip(r, rel, "symbolic link, not followed", 1, err);
    if (S_ISREG(st.st_mode)) return read_tree_file(r, dirfd, name, rel, err);
    if (!S_ISDIR(st.st_mode))
        return r->skip(r, rel, "device, FIFO or socket, not a regular file", 1, err);
    const char *reason;
    if (ingest_filter_excludes_dir(r->filter, rel, &reason)) {
        snprintf(why, sizeof why, "%s/", rel);
        return r->skip(r, why, reason, 0, err);
    }
    int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) return tome_errorf(err, TOME_EIO, "%s: %s", rel, strerror(errno));
    snprintf(why, sizeof why, "%s/", rel);
    if (!allowed(r, sub, R_OK | X_OK)) return refused(r, sub, why, err);
    rc = walk(r, sub, rel, err);
    close(sub);
    return rc;
}

/* The names in an open directory, sorted; free each and the array. */
static int list_directory(int dirfd, const char *rel, char ***out, size_t *count, tome_error *err)
{
    *out = NULL;
    *count = 0;
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return tome_errorf(err, TOME_EIO, "%s: %s", *rel ? rel : ".", strerror(errno));
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (n == cap) {
            char **grown = realloc(names, (cap = cap ? 2 * cap : 32) * sizeof *grown);
            if (!grown) break;
            names = grown;
        }
        if (!(names[n] = strdup(de->d_name))) break;
        n++;
    }
    if (de) rc = tome_errorf(err, TOME_ENOMEM, "%s: out of memory listing it", rel);
    closedir(d);
    if (n) qsort(names, n, sizeof *names, by_name);
    *out = names;
    *count = n;
    return rc;
}

static int walk(ingest_reader *r, int dirfd, const char *rel, tome_error *err)
{
    char **names;
    size_t n;
    int rc = list_directory(dirfd, rel, &names, &n, err);
    for (size_t i = 0; i < n && !rc; i++) {
        char child[8192];
        snprintf(child, sizeof child, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        rc = visit(r, dirfd, names[i], child, err);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

/* The source for a reader with an ingest_access: `path` (absolute, no
 * symbolic links) opened from "/" one component at a time, each directory
 * on the way checked for X_OK and the source itself for R_OK (and X_OK if a
 * directory).  Every failure has one message, so a refusal says nothing
 * about what exists where the reader may not look. */
static int open_as_reader(ingest_reader *r, const char *path, int *out, tome_error *err)
{
    char copy[4096];
    int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC), ok = fd >= 0 && path[0] == '/';
    if (snprintf(copy, sizeof copy, "%s", path) >= (int)sizeof copy) ok = 0;
    char *save = NULL, *name = ok ? strtok_r(copy, "/", &save) : NULL;
    while (ok && name) {
        char *next = strtok_r(NULL, "/", &save);
        struct stat st;
        ok = strcmp(name, ".") != 0 && strcmp(name, "..") != 0 && allowed(r, fd, X_OK) &&
             fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
             (next ? S_ISDIR(st.st_mode) : S_ISDIR(st.st_mode) || S_ISREG(st.st_mode));
        int sub = !ok    ? -1
                  : next ? openat(fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                         : openat(fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        close(fd);
        fd = sub;
        ok = fd >= 0;
        name = next;
    }
    struct stat st;
    if (ok && fstat(fd, &st) == 0 && allowed(r, fd, S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK)) {
        *out = fd;
        return 0;
    }
    if (fd >= 0) close(fd);
    return tome_errorf(err, TOME_EPERM, "%s does not exist or %s may not read it", path,
                       r->access->who);
}

/* The source opened for reading (not blocking on a FIFO: it is refused). */
static int open_source(ingest_reader *r, const char *source, int *out, tome_error *err)
{
    if (r->access) return open_as_reader(r, source, out, err);
    *out = open(source, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    return *out >= 0 ? 0 : tome_errorf(err, TOME_EIO, "%s: %s", source, strerror(errno));
}

/* One plain file given as the source: a document named by its base name. */
static int read_plain_file(ingest_reader *r, const char *path, int fd, const struct stat *st,
                           tome_error *err)
{
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    int rc = ingest_count_entry(r, base, err);
    if (rc) return rc;
    unsigned char *data = NULL;
    size_t len = 0;
    rc = read_fd(fd, base, r->limits->max_file_bytes, &data, &len, err);
    if (!rc) {
        r->total_bytes += len;
        rc = r->file(r, base, data, len, (int64_t)st->st_mtime, err);
    }
    free(data);
    return rc;
}

int ingest_read_source(ingest_reader *r, const char *source, tome_error *err)
{
    int fd, rc = open_source(r, source, &fd, err);
    if (rc) return rc;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = tome_errorf(err, TOME_EIO, "%s: %s", source, strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        rc = walk(r, fd, "", err);
    } else if (!S_ISREG(st.st_mode)) {
        rc = tome_errorf(err, TOME_EINVAL, "%s: neither a directory nor a regular file", source);
    } else {
        rc = ingest_read_archive_fd(r, source, fd, err);
        if (rc == TOME_ENOTFOUND)
            rc = lseek(fd, 0, SEEK_SET) == 0
                     ? read_plain_file(r, source, fd, &st, err)
                     : tome_errorf(err, TOME_EIO, "%s: %s", source, strerror(errno));
    }
    close(fd);
    return rc;
}
