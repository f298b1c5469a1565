/*
 * upload.c - turning the PATH of `tome ingest` into bytes to send.
 *
 * The daemon takes one archive per ingest, streamed as the request body
 * with a Content-Length.  An archive file is sent as it is, read in pieces
 * and never loaded whole.  A directory is packed into a pax tar with
 * libarchive's write API, into an unlinked temporary file under $TMPDIR,
 * so memory stays bounded however large the tree, and the daemon still
 * gets an exact length up front.  Standard input ("-") is copied the same
 * way, since a pipe has no length.
 *
 * Packing follows no symbolic links (they are stored as links, which the
 * daemon's ingest skips), keeps paths relative to the directory, and
 * leaves out ".git" directories: version-control internals are never the
 * text a question is about, and are often larger than the tree itself.
 */
#include "client/client.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int temporary_file(int *fd, tome_error *err)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/tome-upload-XXXXXX", dir && *dir ? dir : "/tmp");
    *fd = mkostemp(path, O_CLOEXEC);
    if (*fd < 0) return tome_errorf(err, TOME_EIO, "%s: cannot create: %s", path, strerror(errno));
    unlink(path);
    return 0;
}

static int write_all(int fd, const char *p, size_t n, tome_error *err)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return tome_errorf(err, TOME_EIO, "writing the upload: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int copy_stdin(int out, tome_error *err)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return tome_errorf(err, TOME_EIO, "reading standard input: %s", strerror(errno));
        if (n == 0) return 0;
        if (write_all(out, buf, (size_t)n, err)) return err->code;
    }
}

static int add_file_data(struct archive *tar, const char *source, tome_error *err)
{
    int fd = open(source, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tome_errorf(err, TOME_EIO, "%s: %s", source, strerror(errno));
    char buf[65536];
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = read(fd, buf, sizeof buf)) != 0) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            rc = tome_errorf(err, TOME_EIO, "%s: %s", source, strerror(errno));
        else if (archive_write_data(tar, buf, (size_t)n) != n)
            rc = tome_errorf(err, TOME_EIO, "packing %s: %s", source, archive_error_string(tar));
    }
    close(fd);
    return rc;
}

/* Store one entry of the walk under its path relative to `root`. */
static int add_entry(struct archive *tar, struct archive_entry *entry, size_t root_len,
                     tome_error *err)
{
    const char *source = archive_entry_sourcepath(entry);
    mode_t type = archive_entry_filetype(entry);
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) return 0;
    archive_entry_set_pathname(entry, source + root_len + 1);
    if (archive_write_header(tar, entry) != ARCHIVE_OK)
        return tome_errorf(err, TOME_EIO, "packing %s: %s", source, archive_error_string(tar));
    if (type == AE_IFREG && archive_entry_size(entry) > 0) return add_file_data(tar, source, err);
    return 0;
}

static int is_git_dir(struct archive_entry *entry)
{
    const char *path = archive_entry_sourcepath(entry);
    const char *base = strrchr(path, '/');
    return archive_entry_filetype(entry) == AE_IFDIR && strcmp(base ? base + 1 : path, ".git") == 0;
}

static int walk_directory(struct archive *disk, struct archive *tar, const char *root,
                          tome_error *err)
{
    size_t root_len = strlen(root);
    while (root_len > 1 && root[root_len - 1] == '/') root_len--;
    int rc = 0;
    while (rc == 0) {
        struct archive_entry *entry = archive_entry_new();
        int r = archive_read_next_header2(disk, entry);
        if (r == ARCHIVE_EOF) {
            archive_entry_free(entry);
            break;
        }
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            rc = tome_errorf(err, TOME_EIO, "reading %s: %s", root, archive_error_string(disk));
        } else if (!is_git_dir(entry)) {
            archive_read_disk_descend(disk);
            if (strlen(archive_entry_sourcepath(entry)) > root_len) /* not the root itself */
                rc = add_entry(tar, entry, root_len, err);
        }
        archive_entry_free(entry);
    }
    return rc;
}

static int pack_directory(const char *dir, int out, tome_error *err)
{
    struct archive *disk = archive_read_disk_new();
    struct archive *tar = archive_write_new();
    int rc = 0;
    if (!disk || !tar) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory");
    } else if (archive_read_disk_set_standard_lookup(disk) != ARCHIVE_OK ||
               archive_read_disk_open(disk, dir) != ARCHIVE_OK) {
        rc = tome_errorf(err, TOME_EIO, "%s: %s", dir, archive_error_string(disk));
    } else if (archive_write_set_format_pax_restricted(tar) != ARCHIVE_OK ||
               archive_write_open_fd(tar, out) != ARCHIVE_OK) {
        rc = tome_errorf(err, TOME_EIO, "cannot start a tar stream: %s", archive_error_string(tar));
    } else {
        rc = walk_directory(disk, tar, dir, err);
        if (archive_write_close(tar) != ARCHIVE_OK && rc == 0)
            rc = tome_errorf(err, TOME_EIO, "finishing the tar stream: %s",
                             archive_error_string(tar));
    }
    if (disk) archive_read_free(disk);
    if (tar) archive_write_free(tar);
    return rc;
}

/* Rewind a finished temporary file and report its length. */
static int rewind_file(int fd, long long *len, tome_error *err)
{
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0 || lseek(fd, 0, SEEK_SET) != 0)
        return tome_errorf(err, TOME_EIO, "cannot rewind the upload: %s", strerror(errno));
    *len = (long long)end;
    return 0;
}

int tome_upload_open(const char *path, int *fd, long long *len, tome_error *err)
{
    struct stat st;
    int is_stdin = strcmp(path, "-") == 0;
    if (!is_stdin && stat(path, &st) != 0)
        return tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno));
    if (!is_stdin && S_ISREG(st.st_mode)) {
        *fd = open(path, O_RDONLY | O_CLOEXEC);
        if (*fd < 0) return tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno));
        *len = (long long)st.st_size;
        return 0;
    }
    if (!is_stdin && !S_ISDIR(st.st_mode))
        return tome_errorf(err, TOME_EINVAL, "%s is neither a file nor a directory", path);
    if (temporary_file(fd, err)) return err->code;
    int rc = is_stdin ? copy_stdin(*fd, err) : pack_directory(path, *fd, err);
    if (rc == 0) rc = rewind_file(*fd, len, err);
    if (rc) close(*fd);
    return rc;
}
