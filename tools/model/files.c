/*
 * files.c - the file list of a fetched model directory and the checks of
 * each file against it (files.h).
 */
#include "tools/model/files.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void model_list_free(model_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->files[i].path);
    free(l->files);
    free(l->repo);
    free(l->revision);
    memset(l, 0, sizeof *l);
}

static int is_hex(const char *s, size_t len)
{
    if (strlen(s) != len) return 0;
    for (size_t i = 0; i < len; i++)
        if (!strchr("0123456789abcdef", s[i])) return 0;
    return 1;
}

/* A relative path of plain segments: nothing that escapes the directory,
 * and UTF-8 without control characters, which could rewrite the terminal
 * that shows it. */
static int safe_path(const char *p)
{
    if (!*p || *p == '/' || strlen(p) > 1024 || !tome_utf8_valid(p, strlen(p))) return 0;
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) return 0;
    for (const char *seg = p; seg;) {
        const char *slash = strchr(seg, '/');
        size_t len = slash ? (size_t)(slash - seg) : strlen(seg);
        if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && strncmp(seg, "..", 2) == 0))
            return 0;
        seg = slash ? slash + 1 : NULL;
    }
    return 1;
}

int model_list_add(model_list *l, const char *path, int64_t size, const char *sha256,
                   const char *git_oid, tome_error *err)
{
    if (!safe_path(path))
        return tome_errorf(err, TOME_EFORMAT, "refusing the file name \"%.200s\"", path);
    if (size < 0) return tome_errorf(err, TOME_EFORMAT, "%s: negative size", path);
    if (*sha256 && !is_hex(sha256, 64))
        return tome_errorf(err, TOME_EFORMAT, "%s: \"%.80s\" is not a SHA-256", path, sha256);
    if (*git_oid && !is_hex(git_oid, 40))
        return tome_errorf(err, TOME_EFORMAT, "%s: \"%.80s\" is not a git blob id", path, git_oid);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        model_file *g = realloc(l->files, cap * sizeof *g);
        if (!g) return tome_errorf(err, TOME_ENOMEM, "out of memory");
        l->files = g;
        l->cap = cap;
    }
    model_file *f = &l->files[l->n];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    f->size = size;
    snprintf(f->sha256, sizeof f->sha256, "%s", sha256);
    snprintf(f->git_oid, sizeof f->git_oid, "%s", git_oid);
    l->n++;
    return 0;
}

static int compare_paths(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether the sorted `paths` hold `key` (whole), or one that starts with it
 * (`prefix`). */
static int holds(const char **paths, size_t n, const char *key, int prefix)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(paths[mid], key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t len = strlen(key);
    return lo < n && (prefix ? strncmp(paths[lo], key, len) == 0 : strcmp(paths[lo], key) == 0);
}

/* The clashes one path can have with the sorted others. */
static int path_clash(const char **paths, size_t n, const char *p, tome_error *err)
{
    char probe[1100];
    if (strcmp(p, MODEL_LIST_NAME) == 0 || strcmp(p, MODEL_INCOMPLETE_NAME) == 0)
        return tome_errorf(err, TOME_EFORMAT, "%s is the name of tome-model's own record", p);
    snprintf(probe, sizeof probe, "%s.part", p);
    if (holds(paths, n, probe, 0))
        return tome_errorf(err, TOME_EFORMAT, "%s is where %s is downloaded to", probe, p);
    snprintf(probe, sizeof probe, "%s/", p);
    if (holds(paths, n, probe, 1))
        return tome_errorf(err, TOME_EFORMAT, "%s is listed as a file and as a directory", p);
    return 0;
}

int model_list_check(const model_list *l, tome_error *err)
{
    const char **paths = malloc((l->n ? l->n : 1) * sizeof *paths);
    if (!paths) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    for (size_t i = 0; i < l->n; i++) paths[i] = l->files[i].path;
    qsort(paths, l->n, sizeof *paths, compare_paths);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < l->n; i++) {
        if (i > 0 && strcmp(paths[i - 1], paths[i]) == 0)
            rc = tome_errorf(err, TOME_EFORMAT, "%s is listed twice", paths[i]);
        if (rc == 0) rc = path_clash(paths, l->n, paths[i], err);
    }
    free(paths);
    return rc;
}

int model_list_save(const char *dir, const model_list *l, tome_error *err)
{
    json_t *files = json_array();
    for (size_t i = 0; files && i < l->n; i++)
        json_array_append_new(files, json_pack("{s:s, s:I, s:s, s:s}", "path", l->files[i].path,
                                               "size", (json_int_t)l->files[i].size, "sha256",
                                               l->files[i].sha256, "git_oid", l->files[i].git_oid));
    json_t *root =
        json_pack("{s:s, s:s, s:o}", "repo", l->repo, "revision", l->revision, "files", files);
    char *text = root ? json_dumps(root, JSON_INDENT(1)) : NULL;
    json_decref(root);
    if (!text) return tome_errorf(err, TOME_ENOMEM, "cannot write the file list");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, MODEL_LIST_NAME);
    int rc = tome_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

static int load_files(json_t *files, const char *origin, model_list *l, tome_error *err)
{
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f) {
        json_t *path = json_object_get(f, "path"), *size = json_object_get(f, "size");
        json_t *sha = json_object_get(f, "sha256"), *oid = json_object_get(f, "git_oid");
        if (!json_is_string(path) || !json_is_integer(size) || !json_is_string(sha) ||
            !json_is_string(oid))
            return tome_errorf(err, TOME_EFORMAT, "%s: entry %zu is malformed", origin, i);
        int rc = model_list_add(l, json_string_value(path), json_integer_value(size),
                                json_string_value(sha), json_string_value(oid), err);
        if (rc) return tome_error_wrap(err, "%s", origin);
    }
    return 0;
}

int model_list_load(const char *dir, model_list *l, tome_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, MODEL_LIST_NAME);
    memset(l, 0, sizeof *l);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return tome_errorf(err, TOME_ENOTFOUND,
                           "%s: no file list (%s): was this directory made by tome-model fetch?",
                           path, jerr.text);
    json_t *repo = json_object_get(root, "repo"), *rev = json_object_get(root, "revision");
    json_t *files = json_object_get(root, "files");
    int rc = 0;
    if (!json_is_string(repo) || !json_is_string(rev) || !json_is_array(files))
        rc = tome_errorf(err, TOME_EFORMAT, "%s: repo, revision or files missing", path);
    if (rc == 0) {
        l->repo = strdup(json_string_value(repo));
        l->revision = strdup(json_string_value(rev));
        if (!l->repo || !l->revision) rc = tome_errorf(err, TOME_ENOMEM, "out of memory");
    }
    if (rc == 0) rc = load_files(files, path, l, err);
    if (rc == 0 && model_list_check(l, err) != 0) rc = tome_error_wrap(err, "%s", path);
    json_decref(root);
    if (rc) model_list_free(l);
    return rc;
}

/* Digest of the file's bytes, after `prefix` (NULL: none), in hex. */
static int digest_file(int fd, const EVP_MD *md, const char *prefix, size_t prefix_len, char *hex,
                       tome_error *err)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc((size_t)1 << 20);
    int rc = ctx && buf && EVP_DigestInit_ex(ctx, md, NULL) == 1
                 ? 0
                 : tome_errorf(err, TOME_ENOMEM, "cannot start a digest");
    if (rc == 0 && prefix) EVP_DigestUpdate(ctx, prefix, prefix_len);
    for (ssize_t got = 1; rc == 0 && got > 0;) {
        got = read(fd, buf, (size_t)1 << 20);
        if (got < 0 && errno != EINTR) rc = tome_errorf(err, TOME_EIO, "read: %s", strerror(errno));
        if (got > 0) EVP_DigestUpdate(ctx, buf, (size_t)got);
    }
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (rc == 0 && EVP_DigestFinal_ex(ctx, out, &n) == 1) tome_hex(out, n, hex);
    EVP_MD_CTX_free(ctx);
    free(buf);
    return rc;
}

int model_file_check(const char *path, const model_file *f, tome_error *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return tome_errorf(err, TOME_ENOTFOUND, "%s: %s", f->path, strerror(errno));
    struct stat st;
    int rc =
        fstat(fd, &st) == 0 ? 0 : tome_errorf(err, TOME_EIO, "%s: %s", f->path, strerror(errno));
    if (rc == 0 && st.st_size != f->size)
        rc = tome_errorf(err, TOME_EMISMATCH, "%s: %lld bytes, expected %lld", f->path,
                         (long long)st.st_size, (long long)f->size);
    char hex[2 * EVP_MAX_MD_SIZE + 1] = "", prefix[48];
    int n = snprintf(prefix, sizeof prefix, "blob %lld", (long long)f->size);
    const char *want = *f->sha256 ? f->sha256 : f->git_oid;
    if (rc == 0 && *f->sha256)
        rc = digest_file(fd, EVP_sha256(), NULL, 0, hex, err);
    else if (rc == 0 && *f->git_oid)
        rc = digest_file(fd, EVP_sha1(), prefix, (size_t)n + 1, hex, err);
    if (rc == 0 && *want && strcmp(hex, want) != 0)
        rc = tome_errorf(err, TOME_EMISMATCH, "%s: checksum mismatch: %s %s, expected %s", f->path,
                         *f->sha256 ? "SHA-256" : "git blob id", hex, want);
    close(fd);
    return rc;
}
