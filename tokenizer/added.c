/*
 * added.c - the added tokens ("<｜User｜>", "<think>", ...) as a byte trie.
 *
 * Hugging Face cuts added tokens out of the text before anything else, by
 * exact string match, leftmost first and longest among those that start at
 * the same place.  A trie gives both in one walk per candidate position:
 * walk as far as the text follows an edge and remember the deepest node
 * where a token ends.  There are a few hundred added tokens and they share
 * long prefixes ("<｜place▁holder▁no▁"), so children are kept as sibling
 * lists: the fan-out is small everywhere, and the whole trie stays a few
 * hundred kilobytes.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

static int32_t new_node(v4_tokenizer *t, uint8_t byte, tome_error *err)
{
    if (t->trie_len == t->trie_cap) {
        size_t cap = t->trie_cap ? t->trie_cap * 2 : 1024;
        tok_trie_node *p = realloc(t->trie, cap * sizeof *p);
        if (!p) return tome_errorf(err, TOME_ENOMEM, "out of memory for the added-token trie");
        t->trie = p;
        t->trie_cap = cap;
    }
    tok_trie_node *n = &t->trie[t->trie_len];
    n->first_child = -1;
    n->next_sibling = -1;
    n->id = -1;
    n->byte = byte;
    n->pass = 0;
    return (int32_t)t->trie_len++;
}

static int32_t find_child(const v4_tokenizer *t, int32_t node, uint8_t byte)
{
    for (int32_t c = t->trie[node].first_child; c >= 0; c = t->trie[c].next_sibling)
        if (t->trie[c].byte == byte) return c;
    return -1;
}

int tok_trie_add(v4_tokenizer *t, const char *text, size_t len, int32_t id, int pass,
                 tome_error *err)
{
    if (len == 0)
        return tome_errorf(err, TOME_EFORMAT, "added token %d has empty content", (int)id);
    if (t->trie_len == 0 && new_node(t, 0, err) < 0) return TOME_ENOMEM;
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)text[i];
        int32_t child = find_child(t, node, b);
        if (child < 0) {
            child = new_node(t, b, err);
            if (child < 0) return TOME_ENOMEM;
            t->trie[child].next_sibling = t->trie[node].first_child;
            t->trie[node].first_child = child;
        }
        node = child;
    }
    t->trie[node].id = id;
    t->trie[node].pass = (uint8_t)pass;
    t->first_byte[(uint8_t)text[0]] = 1;
    t->n_added++;
    return 0;
}

size_t tok_trie_match(const v4_tokenizer *t, const char *text, size_t len, int pass, int32_t *id)
{
    size_t best = 0;
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        node = find_child(t, node, (uint8_t)text[i]);
        if (node < 0) break;
        if (t->trie[node].id >= 0 && t->trie[node].pass == pass) {
            best = i + 1;
            *id = t->trie[node].id;
        }
    }
    return best;
}

int32_t v4_token_lookup(const v4_tokenizer *t, const char *text)
{
    if (t->trie_len == 0 || !text) return -1;
    int32_t node = 0;
    for (const char *p = text; *p && node >= 0; p++) node = find_child(t, node, (uint8_t)*p);
    return node > 0 ? t->trie[node].id : -1;
}
