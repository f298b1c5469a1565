/*
 * statedir.c - the state directory: created private, checked, locked, laid
 * out.
 *
 * The store (tome.db with its -wal and -shm files), the tokens, the saved
 * model states and the uploads in progress are nobody else's business:
 * tomed creates its files under umask 077 (main.c), so the directory is
 * 0700 and its files 0600.  A directory or database that already exists
 * and that other users may read or write is refused at start, with the
 * path and its mode, as PostgreSQL refuses such a data directory: fixing
 * the mode is the administrator's decision, not something to do silently.
 *
 * One daemon per state directory: STATE_DIR/lock is flock'ed before
 * anything in the directory is touched (a second daemon would otherwise
 * remove the first one's uploads in progress as crash leftovers, and serve
 * the same store).  The pidfile cannot do this: it may live elsewhere
 * (--pidfile).  The lock file holds the holder's pid, for the message.
 */
#include "daemon/conf.h"
#include "daemon/statedir.h"
#include "daemon/storecall.h"
#include "kvstate/kvstate.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The refusal when another process holds the lock: who, if it says. */
static int locked_by_other(int fd, const char *dir, tome_error *err)
{
    char text[32] = "";
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    long pid = n > 0 ? strtol(text, NULL, 10) : 0;
    if (pid > 0)
        return tome_errorf(err, TOME_EBUSY, "state directory %s is in use by tomed (pid %ld)", dir,
                           pid);
    return tome_errorf(err, TOME_EBUSY, "state directory %s is in use by another tomed", dir);
}

/* Takes STATE_DIR/lock for the life of the process and writes our pid. */
static int lock_state_dir(const char *dir, int *lock_fd, tome_error *err)
{
    char path[TOMED_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int rc = errno == EWOULDBLOCK
                     ? locked_by_other(fd, dir, err)
                     : tome_errorf(err, TOME_EIO, "%s: lock: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    char text[32];
    int n = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n) {
        int rc = tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    *lock_fd = fd;
    return 0;
}

/* STATE_DIR/kv and STATE_DIR/tmp, emptied of what a crash left there. */
static int prepare_subdirs(const char *dir, tome_error *err)
{
    char path[TOMED_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/kv", dir);
    int rc = tome_mkdir_p(path, 0700, err);
    if (rc != 0) return rc;
    /* Temporary files of saves a crash interrupted (tome-kvcache(5)). */
    if ((rc = kvstate_remove_temps(path, NULL, err)) != 0) return rc;
    snprintf(path, sizeof path, "%s/tmp", dir);
    if ((rc = tome_mkdir_p(path, 0700, err)) != 0) return rc;
    return tomed_clean_tmp(path, err);
}

/* A damaged store is refused before anything is served from it. */
static int check_store(const char *dir, tome_error *err)
{
    char path[TOMED_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/tome.db", dir);
    store *db;
    int rc = store_open(path, &db, err);
    if (rc == 0) {
        rc = store_check(db, err);
        store_close(db);
    }
    return rc;
}

int tomed_state_dir_prepare(const tomed_config *cfg, int *lock_fd, tome_error *err)
{
    int rc = tome_mkdir_p(cfg->state_dir, 0700, err);
    if (rc == 0) rc = check_state_dir(cfg->state_dir, err);
    if (rc == 0) rc = lock_state_dir(cfg->state_dir, lock_fd, err);
    if (rc == 0) rc = prepare_subdirs(cfg->state_dir, err);
    if (rc == 0) rc = check_store(cfg->state_dir, err);
    return rc;
}
