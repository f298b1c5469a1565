/*
 * engine_cache.c - the engine's in-memory state cache: one prefilled state
 * per corpus version, which every question on that version forks.
 *
 * The engine thread adds and replaces entries; the loop thread looks them
 * up (tomed_engine_has_state, tomed_engine_states) and drops them, so every
 * access is under the engine's lock.  An entry keeps the id of its state
 * file when the state was saved, or "mem-VERSION-SERIAL" while it lives in
 * memory only.
 */
#include "daemon/engine_internal.h"

#include <stdio.h>
#include <string.h>

cached_state *engine_cache_find(tomed_engine *e, const char *corpus, int64_t version_id)
{
    for (int i = 0; i < e->n_cache; i++)
        if (strcmp(e->cache[i].corpus, corpus) == 0 && e->cache[i].version_id == version_id)
            return &e->cache[i];
    return NULL;
}

void engine_state_id(const cached_state *c, char *out, size_t cap)
{
    snprintf(out, cap, "%s", c->id);
}

int tomed_engine_has_state(tomed_engine *e, const char *corpus, int64_t version_id, int64_t *tokens,
                           char id[48])
{
    pthread_mutex_lock(&e->lock);
    cached_state *c = engine_cache_find(e, corpus, version_id);
    if (c && tokens) *tokens = c->tokens;
    if (c && id) engine_state_id(c, id, 48);
    pthread_mutex_unlock(&e->lock);
    return c != NULL;
}

/* Replaces the corpus's older state; the oldest goes when the table is full.
 * `id` names a saved state (NULL: in memory only).  Called on the engine
 * thread. */
void engine_cache_put(tomed_engine *e, const char *corpus, int64_t version_id, v4_state *state,
                      const char *id)
{
    pthread_mutex_lock(&e->lock);
    cached_state *slot = NULL;
    for (int i = 0; i < e->n_cache; i++)
        if (strcmp(e->cache[i].corpus, corpus) == 0) slot = &e->cache[i];
    if (!slot && e->n_cache < (int)(sizeof e->cache / sizeof e->cache[0]))
        slot = &e->cache[e->n_cache++];
    if (!slot) {
        slot = &e->cache[0];
        for (int i = 1; i < e->n_cache; i++)
            if (e->cache[i].serial < slot->serial) slot = &e->cache[i];
    }
    v4_state *old = slot->state;
    snprintf(slot->corpus, sizeof slot->corpus, "%s", corpus);
    slot->version_id = version_id;
    slot->state = state;
    slot->tokens = v4_state_pos(state);
    slot->serial = ++e->serial;
    if (id)
        snprintf(slot->id, sizeof slot->id, "%s", id);
    else
        snprintf(slot->id, sizeof slot->id, "mem-%lld-%lld", (long long)version_id,
                 (long long)slot->serial);
    pthread_mutex_unlock(&e->lock);
    /* Forks share the parent's history read-only; a question still running
     * on a fork of `old` keeps its own references (v4_state_fork). */
    if (old) v4_state_free(old);
}

/* Takes the entries matching `corpus` (or, if NULL, the state `id`) out
 * of the cache under the lock and frees them after.  That is safe on any
 * thread: forks are taken under the lock, and a fork holds its own
 * references to the history it shares. */
static int cache_remove(tomed_engine *e, const char *corpus, const char *id)
{
    v4_state *gone[64];
    int n = 0;
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < e->n_cache;) {
        char text[48];
        engine_state_id(&e->cache[i], text, sizeof text);
        const char *have = corpus ? e->cache[i].corpus : text;
        if (strcmp(have, corpus ? corpus : id) == 0) {
            gone[n++] = e->cache[i].state;
            e->cache[i] = e->cache[--e->n_cache];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&e->lock);
    for (int i = 0; i < n; i++) v4_state_free(gone[i]);
    return n;
}

void tomed_engine_forget(tomed_engine *e, const char *corpus)
{
    cache_remove(e, corpus, NULL);
}

int tomed_engine_drop_state(tomed_engine *e, const char *id)
{
    return cache_remove(e, NULL, id) ? 0 : TOME_ENOTFOUND;
}

json_t *tomed_engine_states(tomed_engine *e)
{
    json_t *list = json_array();
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < e->n_cache; i++) {
        const cached_state *c = &e->cache[i];
        char id[48];
        engine_state_id(c, id, sizeof id);
        if (strncmp(id, "mem-", 4) != 0) continue; /* the store lists saved ones */
        json_array_append_new(
            list, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "id", id, "corpus", c->corpus,
                            "version", (json_int_t)c->version_id, "tokens", (json_int_t)c->tokens,
                            "bytes", (json_int_t)v4_state_kv_bytes(c->state), "status", "memory"));
    }
    pthread_mutex_unlock(&e->lock);
    return list;
}
