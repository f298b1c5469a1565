/*
 * statedir.c - the state directory: created private, checked, laid out.
 *
 * The store (tome.db with its -wal and -shm files), the tokens, the saved
 * model states and the uploads in progress are nobody else's business:
 * tomed creates its files under umask 077 (main.c), so the directory is
 * 0700 and its files 0600.  A directory or database that already exists
 * and that other users may read or write is refused at start, with the
 * path and its mode, as PostgreSQL refuses such a data directory: fixing
 * the mode is the administrator's decision, not something to do silently.
 */
#include "daemon/tomed.h"
#include "store/store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Files of the store that hold corpora and questions. */
static const char *const private_files[] = {"tome.db", "tome.db-wal", "tome.db-shm", "tokens.json"};

/* Fails when `path` exists and other users may read or write it. */
static int check_private(const char *path, const char *what, const char *fix, tome_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        return tome_errorf(err, TOME_EIO, "%s %s: %s", what, path, strerror(errno));
    }
    if ((st.st_mode & (S_IROTH | S_IWOTH)) == 0) return 0;
    return tome_errorf(err, TOME_EPERM,
                       "%s %s has mode %04o: other users may read or write it; "
                       "run chmod %s %s",
                       what, path, (unsigned)(st.st_mode & 07777), fix, path);
}

/* The directory itself and the store's files in it. */
static int check_state_dir(const char *dir, tome_error *err)
{
    int rc = check_private(dir, "state directory", "700", err);
    for (size_t i = 0; rc == 0 && i < sizeof private_files / sizeof *private_files; i++) {
        char path[TOMED_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/%s", dir, private_files[i]);
        rc = check_private(path, "store file", "600", err);
    }
    return rc;
}

/* STATE_DIR/kv and STATE_DIR/tmp, emptied of what a crash left there. */
static int prepare_subdirs(const char *dir, tome_error *err)
{
    char path[TOMED_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/kv", dir);
    int rc = tome_mkdir_p(path, 0700, err);
    if (rc != 0) return rc;
    /* Temporary files of saves a crash interrupted (tome-kvcache(5)). */
    if ((rc = store_kv_remove_temps(path, NULL, err)) != 0) return rc;
    snprintf(path, sizeof path, "%s/tmp", dir);
    if ((rc = tome_mkdir_p(path, 0700, err)) != 0) return rc;
    return tomed_clean_tmp(path, err);
}

int tomed_state_dir_prepare(const tomed_config *cfg, tome_error *err)
{
    int rc = tome_mkdir_p(cfg->state_dir, 0700, err);
    if (rc == 0) rc = check_state_dir(cfg->state_dir, err);
    if (rc == 0) rc = prepare_subdirs(cfg->state_dir, err);
    return rc;
}
