/*
 * statedir.h - the state directory (statedir.c).
 */
#ifndef TOMED_STATEDIR_H
#define TOMED_STATEDIR_H

#include "common/common.h"
#include "daemon/conf.h"

/* Creates cfg->state_dir if missing (0700 under the daemon's umask), fails
 * with TOME_EPERM, naming the path and its mode, when the directory or a
 * store file in it (tome.db, -wal, -shm, tokens.json) may be read or
 * written by other users, locks STATE_DIR/lock (TOME_EBUSY, naming the
 * directory and the holder's pid, when another daemon holds it; nothing is
 * touched then), and only then makes kv/ and tmp/ and removes what a crash
 * left in them; then it opens the store (creating or migrating it) and
 * refuses a damaged one (store_check).  *lock_fd holds the lock until the
 * process closes it or exits.  Called once at start, before anything else
 * there. */
int tomed_state_dir_prepare(const tomed_config *cfg, int *lock_fd, tome_error *err);

#endif
