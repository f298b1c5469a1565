/*
 * engine_cache.c - the engine's in-memory state cache: one prefilled state
 * per corpus version, which every question on that version forks.
 *
 * The engine thread adds and replaces entries; the loop thread looks them
 * up (engine_local_has_state, engine_local_states) and drops them, so every
 * access is under the engine's lock.  An entry keeps the id of its state
 * file when the state was saved, or "mem-VERSION-SERIAL" while it lives in
 * memory only.
 *
 * Bare prompts (the bare model's, which is what a remote engine in front
 * of this tomed sends: the corpus's ids, then the question's) have a
 * prefix cache here too, as vLLM's and SGLang's: a prompt that found no
 * cached prefix leaves the state after it, keyed by its ids, and a later
 * prompt that begins with those ids forks it.  Caching only the misses
 * keeps questions from pushing out the corpus prefixes they start with.
 */
#include "daemon/engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cached_state *engine_cache_find(engine_local *e, const char *corpus, int64_t version_id)
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

int engine_local_has_state(tomed_engine *base, const char *corpus, int64_t version_id,
                           int64_t *tokens, char id[48])
{
    engine_local *e = (engine_local *)base;
    pthread_mutex_lock(&e->lock);
    cached_state *c = engine_cache_find(e, corpus, version_id);
    if (c && tokens) *tokens = c->tokens;
    if (c && id) engine_state_id(c, id, 48);
    pthread_mutex_unlock(&e->lock);
    return c != NULL;
}

#define ENGINE_MAX_PREFIXES 16

/* Under the lock: the slot for a new entry, `prefer` if given, else a free
 * one, else the least recently used (among prefixes only, when `prefixes`
 * is set). */
static cached_state *take_slot(engine_local *e, cached_state *prefer, int prefixes)
{
    if (prefer) return prefer;
    if (!prefixes && e->n_cache < (int)(sizeof e->cache / sizeof e->cache[0]))
        return &e->cache[e->n_cache++];
    cached_state *slot = NULL;
    for (int i = 0; i < e->n_cache; i++)
        if ((!prefixes || e->cache[i].ids) && (!slot || e->cache[i].serial < slot->serial))
            slot = &e->cache[i];
    return slot;
}

/* Under the lock: fill `slot`, handing back what it held. */
static void fill_slot(engine_local *e, cached_state *slot, const char *corpus, int64_t version_id,
                      v4_state *state, const char *id, int32_t *ids, v4_state **old,
                      int32_t **old_ids)
{
    *old = slot->state;
    *old_ids = slot->ids;
    snprintf(slot->corpus, sizeof slot->corpus, "%s", corpus);
    slot->version_id = version_id;
    slot->state = state;
    slot->ids = ids;
    slot->tokens = v4_state_pos(state);
    slot->serial = ++e->serial;
    if (id)
        snprintf(slot->id, sizeof slot->id, "%s", id);
    else
        snprintf(slot->id, sizeof slot->id, "mem-%lld-%lld", (long long)version_id,
                 (long long)slot->serial);
}

/* Forks share the parent's history read-only; a question still running
 * on a fork of `old` keeps its own references (v4_state_fork). */
static void free_old(v4_state *old, int32_t *old_ids)
{
    if (old) v4_state_free(old);
    free(old_ids);
}

/* Replaces the corpus's older state; the oldest goes when the table is full.
 * `id` names a saved state (NULL: in memory only).  Called on the engine
 * thread. */
void engine_cache_put(engine_local *e, const char *corpus, int64_t version_id, v4_state *state,
                      const char *id)
{
    v4_state *old;
    int32_t *old_ids;
    pthread_mutex_lock(&e->lock);
    cached_state *same = NULL;
    for (int i = 0; i < e->n_cache; i++)
        if (strcmp(e->cache[i].corpus, corpus) == 0) same = &e->cache[i];
    fill_slot(e, take_slot(e, same, 0), corpus, version_id, state, id, NULL, &old, &old_ids);
    pthread_mutex_unlock(&e->lock);
    free_old(old, old_ids);
}

cached_state *engine_cache_find_prefix(engine_local *e, const int32_t *ids, size_t n)
{
    cached_state *best = NULL;
    for (int i = 0; i < e->n_cache; i++) {
        cached_state *c = &e->cache[i];
        if (c->ids && (size_t)c->tokens < n && (!best || c->tokens > best->tokens) &&
            memcmp(c->ids, ids, (size_t)c->tokens * sizeof *ids) == 0)
            best = c;
    }
    if (best) best->serial = ++e->serial;
    return best;
}

void engine_cache_put_prefix(engine_local *e, const int32_t *ids, size_t n, v4_state *state)
{
    int32_t *copy = malloc(n * sizeof *copy), *old_ids;
    v4_state *old;
    if (!copy) {
        v4_state_free(state);
        return;
    }
    memcpy(copy, ids, n * sizeof *copy);
    pthread_mutex_lock(&e->lock);
    int prefixes = 0;
    cached_state *same = NULL; /* two warms of one prompt at once keep one */
    for (int i = 0; i < e->n_cache; i++) {
        cached_state *c = &e->cache[i];
        prefixes += c->ids != NULL;
        if (c->ids && (size_t)c->tokens == n && memcmp(c->ids, ids, n * sizeof *ids) == 0) same = c;
    }
    cached_state *slot = take_slot(e, same, prefixes >= ENGINE_MAX_PREFIXES);
    fill_slot(e, slot, TOMED_BARE_MODEL, 0, state, NULL, copy, &old, &old_ids);
    pthread_mutex_unlock(&e->lock);
    free_old(old, old_ids);
}

/* Takes the entries matching `corpus` (or, if NULL, the state `id`) out
 * of the cache under the lock and frees them after.  That is safe on any
 * thread: forks are taken under the lock, and a fork holds its own
 * references to the history it shares. */
static int cache_remove(engine_local *e, const char *corpus, const char *id)
{
    v4_state *gone[64];
    int32_t *gone_ids[64];
    int n = 0;
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < e->n_cache;) {
        char text[48];
        engine_state_id(&e->cache[i], text, sizeof text);
        const char *have = corpus ? e->cache[i].corpus : text;
        if (strcmp(have, corpus ? corpus : id) == 0) {
            gone_ids[n] = e->cache[i].ids;
            gone[n++] = e->cache[i].state;
            e->cache[i] = e->cache[--e->n_cache];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&e->lock);
    for (int i = 0; i < n; i++) free_old(gone[i], gone_ids[i]);
    return n;
}

void engine_local_forget(tomed_engine *base, const char *corpus)
{
    cache_remove((engine_local *)base, corpus, NULL);
}

int engine_local_drop_state(tomed_engine *base, const char *id)
{
    return cache_remove((engine_local *)base, NULL, id) ? 0 : TOME_ENOTFOUND;
}

json_t *engine_local_states(tomed_engine *base)
{
    engine_local *e = (engine_local *)base;
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
