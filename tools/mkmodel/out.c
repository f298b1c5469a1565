/*
 * out.c - build a directory under a temporary name, then rename it.
 *
 * The temporary directory is "<final>.tmp-XXXXXX" (mkdtemp), in the same
 * parent so the final rename is atomic.  rename(2) replaces an empty
 * directory and refuses a non-empty one, which is the rule we want; the
 * up-front check only turns the second case into a clear message before
 * any work is done.  abort removes only what is inside the directory
 * mkdtemp made for us, so it can never touch anything else.
 */
#include "tools/mkmodel/out.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_empty_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return 0;
    const struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) empty = 0;
    closedir(d);
    return empty;
}

static int make_parent(const char *path, tome_error *err)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    return tome_mkdir_p(dirname(copy), 0755, err);
}

int mk_outdir_begin(mk_outdir *o, const char *final, tome_error *err)
{
    size_t n = strlen(final);
    while (n > 1 && final[n - 1] == '/') n--;
    if (n == 0 || n + 16 > sizeof o->tmp)
        return tome_errorf(err, TOME_EINVAL, "output directory \"%s\": bad path", final);
    snprintf(o->final, sizeof o->final, "%.*s", (int)n, final);
    struct stat st;
    if (stat(o->final, &st) == 0 && !(S_ISDIR(st.st_mode) && is_empty_dir(o->final)))
        return tome_errorf(err, TOME_EEXIST,
                           "%s already exists and is not an empty directory; remove it first",
                           o->final);
    int rc = make_parent(o->final, err);
    if (rc) return rc;
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp-XXXXXX", o->final);
    if (!mkdtemp(o->tmp))
        return tome_errorf(err, TOME_EIO, "%s: cannot create a temporary directory: %s", o->tmp,
                           strerror(errno));
    if (chmod(o->tmp, 0755) != 0)
        return tome_errorf(err, TOME_EIO, "%s: chmod: %s", o->tmp, strerror(errno));
    return 0;
}

int mk_outdir_file(const mk_outdir *o, const char *name, char *buf, size_t size, tome_error *err)
{
    if ((size_t)snprintf(buf, size, "%s/%s", o->tmp, name) >= size)
        return tome_errorf(err, TOME_EINVAL, "%s/%s: path too long", o->tmp, name);
    return 0;
}

int mk_outdir_commit(mk_outdir *o, tome_error *err)
{
    char probe[4096 + 4];
    snprintf(probe, sizeof probe, "%s/.", o->tmp);
    int rc = tome_fsync_parent_dir(probe, err); /* the directory's own entries */
    if (rc) return rc;
    if (rename(o->tmp, o->final) != 0)
        return tome_errorf(err, errno == ENOTEMPTY || errno == EEXIST ? TOME_EEXIST : TOME_EIO,
                           "%s: cannot move the new model into place: %s", o->final,
                           strerror(errno));
    return tome_fsync_parent_dir(o->final, err);
}

void mk_outdir_abort(mk_outdir *o)
{
    DIR *d = opendir(o->tmp);
    if (d) {
        const struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            char path[4096 + 256];
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            snprintf(path, sizeof path, "%s/%s", o->tmp, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(o->tmp);
}
