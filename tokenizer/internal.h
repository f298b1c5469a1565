/*
 * internal.h - the tokenizer's private data structures, shared by the C
 * files of tokenizer/ (nothing outside the tokenizer includes this).
 *
 * The pipeline reproduces Hugging Face's byte-level BPE exactly:
 *
 *   text --added tokens--> spans --Split regexes--> pieces --BPE--> ids
 *
 * load.c fills a v4_tokenizer from tokenizer.json; added.c holds
 * the added tokens in a trie; regex.c compiles the pre-tokenizer
 * patterns for PCRE2, with the newer Unicode classes of unicode.c;
 * bpe.c owns the merge table, the merge loop and the piece cache;
 * tokenizer.c runs the pipeline with a per-call workspace; detok.c turns
 * ids back into bytes.  Everything in v4_tokenizer is immutable after load, so
 * one tokenizer serves any number of threads; the mutable scratch state lives
 * in tok_workspace objects that threads borrow from a pool.
 */
#ifndef TOME_TOKENIZER_INTERNAL_H
#define TOME_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

/* ---- Merge table: (left id, right id) -> (rank, merged id) ------------- */

typedef struct tok_merge_slot {
    uint64_t key; /* left << 32 | right; TOK_EMPTY_KEY when free */
    int32_t rank;
    int32_t merged;
} tok_merge_slot;

#define TOK_EMPTY_KEY UINT64_MAX

typedef struct tok_merges {
    tok_merge_slot *slots;
    size_t mask; /* slot count - 1 (a power of two) */
    size_t count;
} tok_merges;

int tok_merges_init(tok_merges *m, size_t expected, tome_error *err);
void tok_merges_free(tok_merges *m);
/* Insert or overwrite (a later duplicate wins, as in Hugging Face). */
void tok_merges_put(tok_merges *m, int32_t left, int32_t right, int32_t rank, int32_t merged);

static inline const tok_merge_slot *tok_merges_get(const tok_merges *m, int32_t left, int32_t right)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & m->mask;
    for (;;) {
        const tok_merge_slot *s = &m->slots[i];
        if (s->key == key) return s;
        if (s->key == TOK_EMPTY_KEY) return NULL;
        i = (i + 1) & m->mask;
    }
}

/* ---- Added tokens: a byte trie for leftmost-longest exact matching ----- */

typedef struct tok_trie_node {
    int32_t first_child;  /* -1 if none */
    int32_t next_sibling; /* -1 if none */
    int32_t id;           /* added token ending here, or -1 */
    uint8_t byte;         /* the edge label from the parent */
    uint8_t pass;         /* matching pass of the token ending here */
} tok_trie_node;

/* Hugging Face matches added tokens in two passes: those with
 * "normalized": false on the raw text first, then the "normalized": true
 * ones in what is left. */
enum { TOK_PASS_RAW = 0, TOK_PASS_NORMALIZED = 1, TOK_PASSES = 2 };

/* ---- Pre-tokenizer ------------------------------------------------------ */

typedef struct tok_regex {
    pcre2_code *code;
    int jit; /* JIT-compiled: use pcre2_jit_match */
} tok_regex;

/* Translate an Oniguruma pattern from tokenizer.json to PCRE2 syntax with the
 * same meaning and compile it (UTF, UCP, invalid UTF-8 allowed, JIT when
 * available).  `literal` compiles the text as a plain string.  `origin`
 * names the pattern in errors. */
int tok_regex_compile(tok_regex *re, const char *pattern, size_t len, int literal,
                      const char *origin, tome_error *err);
void tok_regex_free(tok_regex *re);
/* PCRE2 class members for the code points that the reference's Unicode
 * puts in general category `name` (L, M, N, P or S) and PCRE2's does not
 * (unicode.c, generated); NULL for other names. */
const char *tok_unicode_newer(const char *name, size_t len);
/* The PCRE2 spelling of an Oniguruma pattern (malloc'd, NUL-terminated). */
int tok_regex_translate(const char *pattern, size_t len, char **out, tome_error *err);

/* ---- The tokenizer ------------------------------------------------------ */

#define TOK_MAX_SPLITS 8

typedef struct tok_workspace tok_workspace;

struct v4_tokenizer {
    char *path;

    /* Id -> the bytes the id decodes to.  bytes_of[id] .. bytes_of[id+1]
     * index `bytes`; has_id[id] is 0 for holes in the id space. */
    int n_ids;
    char *bytes;
    size_t *bytes_of;
    uint8_t *has_id;

    int32_t byte_id[256]; /* the BPE symbol of each single byte */
    tok_merges merges;

    tok_trie_node *trie; /* node 0 is the root */
    size_t trie_len, trie_cap;
    uint8_t first_byte[256]; /* bytes an added token can start with */
    int n_added;

    tok_regex splits[TOK_MAX_SPLITS];
    int n_splits;

    /* Borrowed workspaces (see tokenizer.c). */
    pthread_mutex_t pool_lock;
    tok_workspace *pool;
};

/* Fill `t` (zeroed by the caller) from tokenizer.json text. */
int tok_load_json(v4_tokenizer *t, const char *json, size_t len, tome_error *err);
/* Add an added token to the trie (load.c). */
int tok_trie_add(v4_tokenizer *t, const char *text, size_t len, int32_t id, int pass,
                 tome_error *err);
/* Length of the longest added token of `pass` that starts at text[0] and ends
 * within `len` bytes, with its id in *id; 0 if none. */
size_t tok_trie_match(const v4_tokenizer *t, const char *text, size_t len, int pass, int32_t *id);

/* ---- BPE and its cache (bpe.c) -------------------------------------- */

typedef struct tok_bpe_scratch tok_bpe_scratch;

int tok_bpe_scratch_new(tok_bpe_scratch **out);
void tok_bpe_scratch_free(tok_bpe_scratch *s);
/* Append the ids of one pre-token to `out` (cached for short pieces). */
int tok_bpe_piece(const v4_tokenizer *t, tok_bpe_scratch *s, const char *piece, size_t len,
                  v4_ids *out, tome_error *err);

/* Make room for `extra` more ids. */
int tok_ids_reserve(v4_ids *ids, size_t extra, tome_error *err);

#endif
