/*
 * kvcache.c - the state cache's disk budget: least recently used states
 * are evicted until the ready ones fit.
 *
 * The kv_states rows (kvstate.c) are the cache's index: each ready row
 * names a state file and its size, and last_used_at is the LRU clock
 * (store_state_touch).  Eviction walks the rows least recently used first
 * and, while the ready states add up to more than the budget, removes a
 * state's file and then marks its row 'evicted' (kept as history, as
 * questions refer to it).  In that order a crash in between leaves a
 * 'ready' row without a file, which every reader already treats as a state
 * that cannot be opened, never a file that nothing accounts for.  A file
 * that is still mapped stays readable to those mapping it after its
 * removal, so evicting a state in use by a question is safe; the state
 * named by the caller (the one just saved) is never evicted.
 */
#include "store/store-internal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static int evict_one(store *s, const store_kv_state *st, tome_error *err)
{
    if (st->path && unlink(st->path) != 0 && errno != ENOENT)
        return tome_errorf(err, TOME_EIO, "state #%lld: cannot remove %s: %s", (long long)st->id,
                           st->path, strerror(errno));
    return store_state_set_status(s, st->id, STORE_STATE_EVICTED, st->bytes, err);
}

int store_kv_cache_evict(store *s, int64_t budget, int64_t keep_id, size_t *evicted,
                         tome_error *err)
{
    *evicted = 0;
    store_kv_state_list l;
    int rc = store_state_list(s, 0, &l, err);
    if (rc) return rc;
    int64_t total = 0;
    for (size_t i = 0; i < l.n; i++)
        if (l.states[i].status == STORE_STATE_READY) total += l.states[i].bytes;
    for (size_t i = 0; rc == 0 && total > budget && i < l.n; i++) {
        const store_kv_state *st = &l.states[i];
        if (st->status != STORE_STATE_READY || st->id == keep_id) continue;
        rc = evict_one(s, st, err);
        if (rc == 0) {
            total -= st->bytes;
            (*evicted)++;
        }
    }
    store_state_list_free(&l);
    return rc;
}
