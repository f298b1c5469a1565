/*
 * files.h - a fetched model directory's record of what it should hold.
 *
 * `tome-model fetch` writes the repository's file list (path, size, and
 * the hub's hashes: SHA-256 for LFS files, the git blob id for the others)
 * to DIR/.tome-fetch.json before it downloads anything, and keeps the
 * marker DIR/.tome-incomplete until every file is in place and checked.
 * So a directory is either complete or says it is not, whatever stopped a
 * fetch, and `tome-model verify` can re-check it later against the list.
 */
#ifndef TOME_TOOLS_MODEL_FILES_H
#define TOME_TOOLS_MODEL_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#define MODEL_LIST_NAME       ".tome-fetch.json"
#define MODEL_INCOMPLETE_NAME ".tome-incomplete"

typedef struct model_file {
    char *path;       /* relative to the directory, '/'-separated */
    int64_t size;     /* bytes */
    char sha256[65];  /* LFS files: lowercase hex; else empty */
    char git_oid[41]; /* the git blob id (SHA-1 of "blob SIZE\0" + bytes); may be empty */
} model_file;

typedef struct model_list {
    char *repo, *revision;
    model_file *files;
    size_t n, cap;
} model_list;

void model_list_free(model_list *l);
/* Add a file; refuses a path that could leave the directory (absolute,
 * "..", empty segments), that is not UTF-8 or holds a control character,
 * or a hash that is not hex of the right length. */
int model_list_add(model_list *l, const char *path, int64_t size, const char *sha256,
                   const char *git_oid, tome_error *err);
/* Check the whole list: no path twice, none that is tome-model's own
 * record, none that is another's partial download (X and X.part), none
 * that is a file and a directory (X and X/Y). */
int model_list_check(const model_list *l, tome_error *err);
/* DIR/.tome-fetch.json, written atomically / read back. */
int model_list_save(const char *dir, const model_list *l, tome_error *err);
int model_list_load(const char *dir, model_list *l, tome_error *err);
/* Check the file at `path` against `f`: its size, then its SHA-256 or git
 * blob id; TOME_EMISMATCH names what differs. */
int model_file_check(const char *path, const model_file *f, tome_error *err);

#endif
