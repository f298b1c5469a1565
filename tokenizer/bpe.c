/*
 * bpe.c - byte-pair merging of one pre-token, and the cache in front of it.
 *
 * A pre-token starts as one symbol per byte.  Merges are applied by rank,
 * lowest first, and among equal ranks leftmost first, until no adjacent pair
 * has a merge.  The order must be exactly Hugging Face's, including how it
 * treats stale candidates, because it decides the ids:
 *
 *   - every adjacent pair with a merge goes into a min-heap keyed by
 *     (rank, position of the left symbol);
 *   - a popped candidate is applied if its left symbol is still alive, has a
 *     right neighbour, and that pair's merge still produces the same id;
 *   - after a merge the new symbol's pairs with its neighbours are pushed.
 *
 * Symbols live in arrays linked as a doubly linked list, so a merge is O(1)
 * and the whole piece is O(n log n): a 1 MB "word" costs about as much as
 * 1 MB of ordinary words, with no quadratic rescans.
 *
 * Text repeats its words, so the ids of short pieces are cached by their
 * bytes: an open-addressing table over an arena, cleared wholesale when
 * full (cheaper and simpler than eviction; it refills in a few kilobytes of
 * text).  The cache is part of a workspace, so it needs no locking.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

#define CACHE_MAX_PIECE 64         /* longer pieces are rare and not cached */
#define CACHE_SLOTS     (1u << 16) /* a power of two */
#define CACHE_ARENA     (4u << 20) /* bytes of pieces and ids before a reset */

/* ---- The merge table ---------------------------------------------------- */

int tok_merges_init(tok_merges *m, size_t expected, tome_error *err)
{
    size_t n = 1024;
    while (n < expected * 2) n *= 2;
    m->slots = malloc(n * sizeof *m->slots);
    if (!m->slots) return tome_errorf(err, TOME_ENOMEM, "out of memory for %zu merges", expected);
    for (size_t i = 0; i < n; i++) m->slots[i].key = TOK_EMPTY_KEY;
    m->mask = n - 1;
    m->count = 0;
    return 0;
}

void tok_merges_free(tok_merges *m)
{
    free(m->slots);
    m->slots = NULL;
}

void tok_merges_put(tok_merges *m, int32_t left, int32_t right, int32_t rank, int32_t merged)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & m->mask;
    while (m->slots[i].key != TOK_EMPTY_KEY && m->slots[i].key != key) i = (i + 1) & m->mask;
    if (m->slots[i].key == TOK_EMPTY_KEY) m->count++;
    m->slots[i] = (tok_merge_slot){.key = key, .rank = rank, .merged = merged};
}

/* ---- Scratch space: symbol list, heap, cache ----------------------------- */

typedef struct candidate {
    int32_t rank, pos, merged;
} candidate;

typedef struct cache_slot {
    uint64_t hash; /* 0 = empty */
    uint32_t at;   /* offset of the piece bytes in the arena, ids follow */
    uint16_t len, n_ids;
} cache_slot;

struct tok_bpe_scratch {
    int32_t *id, *prev, *next, *len;
    size_t cap;
    candidate *heap;
    size_t heap_len, heap_cap;

    cache_slot *slots;
    size_t used;
    char *arena;
    size_t arena_len;
};

int tok_bpe_scratch_new(tok_bpe_scratch **out)
{
    tok_bpe_scratch *s = calloc(1, sizeof *s);
    if (!s) return TOME_ENOMEM;
    s->slots = calloc(CACHE_SLOTS, sizeof *s->slots);
    s->arena = malloc(CACHE_ARENA);
    if (!s->slots || !s->arena) {
        tok_bpe_scratch_free(s);
        return TOME_ENOMEM;
    }
    *out = s;
    return 0;
}

void tok_bpe_scratch_free(tok_bpe_scratch *s)
{
    if (!s) return;
    free(s->id);
    free(s->prev);
    free(s->next);
    free(s->len);
    free(s->heap);
    free(s->slots);
    free(s->arena);
    free(s);
}

static int grow_array(int32_t **array, size_t cap)
{
    int32_t *p = realloc(*array, cap * sizeof *p);
    if (!p) return -1;
    *array = p;
    return 0;
}

/* Room for n symbols.  On failure some arrays may be larger than s->cap,
 * which is harmless: cap only ever promises the smallest size. */
static int grow_symbols(tok_bpe_scratch *s, size_t n, tome_error *err)
{
    if (n <= s->cap) return 0;
    size_t cap = n < 256 ? 256 : n;
    if (grow_array(&s->id, cap) || grow_array(&s->prev, cap) || grow_array(&s->next, cap) ||
        grow_array(&s->len, cap))
        return tome_errorf(err, TOME_ENOMEM, "out of memory for a %zu-byte piece", n);
    s->cap = cap;
    return 0;
}

/* ---- The heap of merge candidates --------------------------------------- */

static int before(const candidate *a, const candidate *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(tok_bpe_scratch *s, candidate c, tome_error *err)
{
    if (s->heap_len == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 256;
        candidate *p = realloc(s->heap, cap * sizeof *p);
        if (!p) return tome_errorf(err, TOME_ENOMEM, "out of memory for BPE candidates");
        s->heap = p;
        s->heap_cap = cap;
    }
    size_t i = s->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&c, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = c;
    return 0;
}

static candidate heap_pop(tok_bpe_scratch *s)
{
    candidate top = s->heap[0];
    candidate last = s->heap[--s->heap_len];
    size_t i = 0, n = s->heap_len;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && before(&s->heap[child + 1], &s->heap[child])) child++;
        if (!before(&s->heap[child], &last)) break;
        s->heap[i] = s->heap[child];
        i = child;
    }
    if (n > 0) s->heap[i] = last;
    return top;
}

/* Push the merge of the symbol at `pos` with its right neighbour, if any. */
static int push_pair(const v4_tokenizer *t, tok_bpe_scratch *s, int32_t pos, tome_error *err)
{
    int32_t right = pos >= 0 ? s->next[pos] : -1;
    if (right < 0) return 0;
    const tok_merge_slot *m = tok_merges_get(&t->merges, s->id[pos], s->id[right]);
    if (!m) return 0;
    return heap_push(s, (candidate){.rank = m->rank, .pos = pos, .merged = m->merged}, err);
}

/* Merge the bytes of a piece; the surviving symbols are the ids. */
static int merge_piece(const v4_tokenizer *t, tok_bpe_scratch *s, const char *piece, size_t n,
                       tome_error *err)
{
    int rc = grow_symbols(s, n, err);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        s->id[i] = t->byte_id[(uint8_t)piece[i]];
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        s->len[i] = 1;
    }
    s->heap_len = 0;
    for (size_t i = 0; i + 1 < n && rc == 0; i++) rc = push_pair(t, s, (int32_t)i, err);
    while (rc == 0 && s->heap_len > 0) {
        candidate c = heap_pop(s);
        int32_t right = s->next[c.pos];
        if (s->len[c.pos] == 0 || right < 0) continue;
        const tok_merge_slot *m = tok_merges_get(&t->merges, s->id[c.pos], s->id[right]);
        if (!m || m->merged != c.merged) continue;
        s->id[c.pos] = c.merged;
        s->len[c.pos] += s->len[right];
        s->len[right] = 0;
        s->next[c.pos] = s->next[right];
        if (s->next[right] >= 0) s->prev[s->next[right]] = c.pos;
        rc = push_pair(t, s, s->prev[c.pos], err);
        if (rc == 0) rc = push_pair(t, s, c.pos, err);
    }
    return rc;
}

/* ---- The piece cache ---------------------------------------------------- */

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0x243F6A8885A308D3ull ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, n);
    h = (h ^ tail) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    return h | 1; /* never 0, which marks an empty slot */
}

static void cache_clear(tok_bpe_scratch *s)
{
    memset(s->slots, 0, CACHE_SLOTS * sizeof *s->slots);
    s->used = 0;
    s->arena_len = 0;
}

/* The slot for `piece`: the one holding it, or the empty one it would go to. */
static cache_slot *cache_find(tok_bpe_scratch *s, const char *piece, size_t n, uint64_t h)
{
    size_t i = (size_t)h & (CACHE_SLOTS - 1);
    for (;;) {
        cache_slot *c = &s->slots[i];
        if (c->hash == 0 ||
            (c->hash == h && c->len == n && memcmp(s->arena + c->at, piece, n) == 0))
            return c;
        i = (i + 1) & (CACHE_SLOTS - 1);
    }
}

static void cache_store(tok_bpe_scratch *s, const char *piece, size_t n, uint64_t h,
                        const int32_t *ids, size_t n_ids)
{
    size_t at = (s->arena_len + 3) & ~(size_t)3;
    size_t need = at + ((n + 3) & ~(size_t)3) + n_ids * sizeof *ids;
    if (s->used >= CACHE_SLOTS / 2 || need > CACHE_ARENA) {
        cache_clear(s);
        at = 0;
        need = ((n + 3) & ~(size_t)3) + n_ids * sizeof *ids;
    }
    cache_slot *c = cache_find(s, piece, n, h);
    memcpy(s->arena + at, piece, n);
    memcpy(s->arena + at + ((n + 3) & ~(size_t)3), ids, n_ids * sizeof *ids);
    *c = (cache_slot){.hash = h, .at = (uint32_t)at, .len = (uint16_t)n, .n_ids = (uint16_t)n_ids};
    s->arena_len = need;
    s->used++;
}

/* ---- One piece ---------------------------------------------------------- */

int tok_ids_reserve(v4_ids *ids, size_t extra, tome_error *err)
{
    if (ids->n + extra <= ids->cap) return 0;
    size_t cap = ids->cap ? ids->cap : 64;
    while (cap < ids->n + extra) cap *= 2;
    int32_t *p = realloc(ids->ids, cap * sizeof *p);
    if (!p) return tome_errorf(err, TOME_ENOMEM, "out of memory for %zu token ids", cap);
    ids->ids = p;
    ids->cap = cap;
    return 0;
}

int tok_bpe_piece(const v4_tokenizer *t, tok_bpe_scratch *s, const char *piece, size_t len,
                  v4_ids *out, tome_error *err)
{
    int rc = tok_ids_reserve(out, len, err);
    if (rc) return rc;
    if (len == 1) {
        out->ids[out->n++] = t->byte_id[(uint8_t)piece[0]];
        return 0;
    }
    uint64_t h = 0;
    if (len <= CACHE_MAX_PIECE) {
        h = hash_bytes(piece, len);
        const cache_slot *c = cache_find(s, piece, len, h);
        if (c->hash) {
            memcpy(out->ids + out->n, s->arena + c->at + ((len + 3) & ~(size_t)3),
                   c->n_ids * sizeof *out->ids);
            out->n += c->n_ids;
            return 0;
        }
    }
    rc = merge_piece(t, s, piece, len, err);
    if (rc) return rc;
    int32_t *first = out->ids + out->n;
    for (int32_t i = 0; i >= 0; i = s->next[i]) out->ids[out->n++] = s->id[i];
    if (len <= CACHE_MAX_PIECE)
        cache_store(s, piece, len, h, first, (size_t)(out->ids + out->n - first));
    return 0;
}
