/*
 * load.c - reading a Hugging Face tokenizer.json into a v4_tokenizer.
 *
 * The file describes a pipeline; tome implements the byte-level BPE kind
 * that DeepSeek (V3 and V4) ships, and refuses anything else by name rather
 * than tokenizing differently from the reference:
 *
 *   normalizer      none, or an empty Sequence
 *   pre_tokenizer   Split steps (Isolated, not inverted) and ByteLevel last
 *                   (no prefix space; with use_regex its GPT-2 pattern
 *                   becomes one more Split step)
 *   model           BPE: vocab, merges ("a b" strings or [a, b] pairs), no
 *                   dropout, no subword prefix/suffix, no byte fallback, no
 *                   ignore_merges
 *   added_tokens    exact-match tokens, without lstrip/rstrip/single_word
 *   decoder         ByteLevel
 *
 * Byte-level BPE spells every byte as one printable code point (the GPT-2
 * alphabet: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * for U+0100 upwards), so vocabulary entries are strings of those code
 * points.  Loading converts each id back to the raw bytes it stands for,
 * once, so decoding is a table lookup.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

#define MAX_IDS (1 << 24)

/* Hugging Face's ByteLevel split, used when use_regex is true. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- The byte-level alphabet ------------------------------------------- */

static int byte_is_printable(int b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* Code point of each byte, and the byte of each code point below 0x200. */
typedef struct alphabet {
    uint32_t cp_of[256];
    int16_t byte_of[0x200];
} alphabet;

static void alphabet_init(alphabet *a)
{
    int next = 0x100;
    for (int i = 0; i < 0x200; i++) a->byte_of[i] = -1;
    for (int b = 0; b < 256; b++) {
        a->cp_of[b] = byte_is_printable(b) ? (uint32_t)b : (uint32_t)next++;
        a->byte_of[a->cp_of[b]] = (int16_t)b;
    }
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | cp >> 12);
    out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* Decode one code point of valid UTF-8 (jansson guarantees validity);
 * returns the number of bytes used. */
static size_t utf8_get(const unsigned char *s, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] < 0xE0) {
        *cp = (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
        return 2;
    }
    if (s[0] < 0xF0) {
        *cp = (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        return 3;
    }
    *cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
          (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    return 4;
}

/* The bytes a token string decodes to, as Hugging Face's ByteLevel decoder
 * does it: through the alphabet if every code point belongs to it, else the
 * string's own UTF-8 (added tokens such as "<｜User｜>").  Writes at most
 * `len` bytes to `out` and returns the count. */
static size_t token_string_bytes(const alphabet *a, const char *s, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += utf8_get((const unsigned char *)s + i, &cp);
        if (cp >= 0x200 || a->byte_of[cp] < 0) {
            memcpy(out, s, len);
            return len;
        }
        out[n++] = (char)a->byte_of[cp];
    }
    return n;
}

/* ---- Reading the JSON --------------------------------------------------- */

typedef struct loader {
    v4_tokenizer *t;
    alphabet alpha;
    json_t *vocab;
    /* Id -> the token string (borrowed from the JSON document). */
    const char **text_of;
    size_t *len_of;
    tome_error *err;
} loader;

static int bad(loader *l, const char *what)
{
    return tome_errorf(l->err, TOME_EFORMAT, "%s: %s", l->t->path, what);
}

static int unsupported(loader *l, const char *what, const char *value)
{
    return tome_errorf(l->err, TOME_EFORMAT, "%s: unsupported %s \"%s\" (byte-level BPE only)",
                       l->t->path, what, value);
}

static const char *type_of(const json_t *obj)
{
    const char *s = json_string_value(json_object_get(obj, "type"));
    return s ? s : "";
}

static int is_true(const json_t *obj, const char *key)
{
    return json_is_true(json_object_get(obj, key));
}

/* A string field that must be absent, null or empty. */
static int is_unset(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

static int check_normalizer(loader *l, const json_t *n)
{
    if (!n || json_is_null(n)) return 0;
    const json_t *list = json_object_get(n, "normalizers");
    if (strcmp(type_of(n), "Sequence") == 0 && json_array_size(list) == 0) return 0;
    return unsupported(l, "normalizer", type_of(n));
}

static int add_split(loader *l, const char *pattern, size_t len, int literal)
{
    v4_tokenizer *t = l->t;
    if (t->n_splits == TOK_MAX_SPLITS) return bad(l, "too many pre-tokenizer Split steps");
    char origin[64];
    snprintf(origin, sizeof origin, "pre-tokenizer step %d", t->n_splits + 1);
    int rc = tok_regex_compile(&t->splits[t->n_splits], pattern, len, literal, origin, l->err);
    if (rc == 0)
        t->n_splits++;
    else
        tome_error_wrap(l->err, "%s", t->path);
    return rc;
}

static int read_split(loader *l, const json_t *step)
{
    const char *behavior = json_string_value(json_object_get(step, "behavior"));
    if (!behavior || strcmp(behavior, "Isolated") != 0)
        return unsupported(l, "Split behavior", behavior ? behavior : "(none)");
    if (is_true(step, "invert")) return unsupported(l, "Split option", "invert");
    const json_t *pattern = json_object_get(step, "pattern");
    const json_t *regex = json_object_get(pattern, "Regex");
    const json_t *literal = json_object_get(pattern, "String");
    if (json_is_string(regex))
        return add_split(l, json_string_value(regex), json_string_length(regex), 0);
    if (json_is_string(literal))
        return add_split(l, json_string_value(literal), json_string_length(literal), 1);
    return bad(l, "Split step without a Regex or String pattern");
}

static int read_pre_tokenizer(loader *l, const json_t *pre)
{
    const json_t *steps = json_object_get(pre, "pretokenizers");
    size_t n = strcmp(type_of(pre), "Sequence") == 0 ? json_array_size(steps) : 1;
    int byte_level = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *step = steps && json_is_array(steps) ? json_array_get(steps, i) : pre;
        const char *type = type_of(step);
        int rc;
        if (byte_level) return bad(l, "ByteLevel must be the last pre-tokenizer step");
        if (strcmp(type, "Split") == 0) {
            rc = read_split(l, step);
        } else if (strcmp(type, "ByteLevel") == 0) {
            if (is_true(step, "add_prefix_space"))
                return unsupported(l, "ByteLevel option", "add_prefix_space");
            rc = is_true(step, "use_regex") ? add_split(l, gpt2_pattern, strlen(gpt2_pattern), 0)
                                            : 0;
            byte_level = 1;
        } else {
            return unsupported(l, "pre-tokenizer", type);
        }
        if (rc) return rc;
    }
    return byte_level ? 0 : bad(l, "the pre-tokenizer has no ByteLevel step");
}

static int check_model(loader *l, const json_t *model)
{
    if (!json_is_object(model)) return bad(l, "no \"model\" object");
    if (strcmp(type_of(model), "BPE") != 0 && json_object_get(model, "type"))
        return unsupported(l, "model", type_of(model));
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout)) return unsupported(l, "BPE option", "dropout");
    if (is_true(model, "byte_fallback")) return unsupported(l, "BPE option", "byte_fallback");
    if (is_true(model, "ignore_merges")) return unsupported(l, "BPE option", "ignore_merges");
    if (!is_unset(model, "continuing_subword_prefix") || !is_unset(model, "end_of_word_suffix"))
        return unsupported(l, "BPE option", "continuing_subword_prefix/end_of_word_suffix");
    l->vocab = json_object_get(model, "vocab");
    if (!json_is_object(l->vocab) || json_object_size(l->vocab) == 0)
        return bad(l, "model.vocab is missing or empty");
    return 0;
}

static int check_decoder(loader *l, const json_t *decoder)
{
    if (strcmp(type_of(decoder), "ByteLevel") != 0)
        return unsupported(l, "decoder", decoder ? type_of(decoder) : "(none)");
    return 0;
}

static int read_id(loader *l, const json_t *v, const char *what, int32_t *id)
{
    json_int_t i = json_integer_value(v);
    if (!json_is_integer(v) || i < 0 || i >= MAX_IDS)
        return tome_errorf(l->err, TOME_EFORMAT, "%s: %s has a bad id", l->t->path, what);
    *id = (int32_t)i;
    return 0;
}

/* The id space: one past the largest vocabulary or added-token id. */
static int count_ids(loader *l, const json_t *added)
{
    int32_t max = -1, id = -1;
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)l->vocab, key, value) {
        if (read_id(l, value, key, &id)) return TOME_EFORMAT;
        if (id > max) max = id;
    }
    size_t i;
    json_array_foreach(added, i, value) {
        if (read_id(l, json_object_get(value, "id"), "an added token", &id)) return TOME_EFORMAT;
        if (id > max) max = id;
    }
    l->t->n_ids = max + 1;
    l->text_of = calloc((size_t)l->t->n_ids, sizeof *l->text_of);
    l->len_of = calloc((size_t)l->t->n_ids, sizeof *l->len_of);
    if (!l->text_of || !l->len_of)
        return tome_errorf(l->err, TOME_ENOMEM, "out of memory for %d token ids", l->t->n_ids);
    return 0;
}

static int read_vocab(loader *l)
{
    const char *key;
    json_t *value;
    json_object_foreach(l->vocab, key, value) {
        int32_t id = (int32_t)json_integer_value(value);
        l->text_of[id] = key;
        l->len_of[id] = strlen(key);
    }
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t n = utf8_put(l->alpha.cp_of[b], s);
        const json_t *v = json_object_getn(l->vocab, s, n);
        if (!json_is_integer(v))
            return tome_errorf(l->err, TOME_EFORMAT, "%s: the vocabulary lacks byte 0x%02X",
                               l->t->path, b);
        l->t->byte_id[b] = (int32_t)json_integer_value(v);
    }
    return 0;
}

/* The id Hugging Face gives an added token.  It ignores the "id" field:
 * a token that is in the vocabulary keeps its id, any other one takes the
 * next id after the vocabulary and the added tokens before it.  A file whose
 * ids disagree would tokenize differently in the reference, so it is
 * refused rather than guessed at. */
static int32_t reference_id(loader *l, const char *text, size_t len, int32_t *max_added)
{
    int32_t id;
    int32_t vocab_size = (int32_t)json_object_size(l->vocab);
    const json_t *in_vocab = json_object_getn(l->vocab, text, len);
    int32_t known = v4_token_lookup(l->t, text);
    if (known >= 0 && strlen(text) == len)
        id = known;
    else if (json_is_integer(in_vocab))
        id = (int32_t)json_integer_value(in_vocab);
    else
        id = *max_added >= vocab_size ? *max_added + 1 : vocab_size;
    if (id > *max_added) *max_added = id;
    return id;
}

static int read_added(loader *l, const json_t *added)
{
    size_t i;
    const json_t *tok;
    int32_t max_added = -1;
    json_array_foreach(added, i, tok) {
        const json_t *content = json_object_get(tok, "content");
        int32_t id = (int32_t)json_integer_value(json_object_get(tok, "id"));
        if (!json_is_string(content))
            return tome_errorf(l->err, TOME_EFORMAT, "%s: added token %d has no content",
                               l->t->path, (int)id);
        const char *text = json_string_value(content);
        size_t len = json_string_length(content);
        if (is_true(tok, "lstrip") || is_true(tok, "rstrip") || is_true(tok, "single_word"))
            return unsupported(l, "added-token option (lstrip/rstrip/single_word) on", text);
        int32_t expected = reference_id(l, text, len, &max_added);
        if (id != expected)
            return tome_errorf(l->err, TOME_EFORMAT,
                               "%s: added token \"%s\" has id %d, but "
                               "Hugging Face numbers it %d (added tokens must follow the "
                               "vocabulary in id order, without gaps)",
                               l->t->path, text, (int)id, (int)expected);
        /* Without the field, Hugging Face normalizes non-special tokens. */
        const json_t *normalized = json_object_get(tok, "normalized");
        int norm = normalized ? json_is_true(normalized) : !is_true(tok, "special");
        int rc =
            tok_trie_add(l->t, text, len, id, norm ? TOK_PASS_NORMALIZED : TOK_PASS_RAW, l->err);
        if (rc) return rc;
        l->text_of[id] = text;
        l->len_of[id] = len;
    }
    return 0;
}

/* Look up a vocabulary string given as (pointer, length). */
static int vocab_id(loader *l, const char *s, size_t n, int32_t *id)
{
    const json_t *v = json_object_getn(l->vocab, s, n);
    if (!json_is_integer(v)) return -1;
    *id = (int32_t)json_integer_value(v);
    return 0;
}

static int add_merge(loader *l, const char *a, size_t na, const char *b, size_t nb, int32_t rank,
                     char **joined, size_t *cap)
{
    int32_t left, right, merged;
    if (na + nb > *cap) {
        char *p = realloc(*joined, (na + nb) * 2);
        if (!p) return tome_errorf(l->err, TOME_ENOMEM, "out of memory reading merges");
        *joined = p;
        *cap = (na + nb) * 2;
    }
    memcpy(*joined, a, na);
    memcpy(*joined + na, b, nb);
    if (vocab_id(l, a, na, &left) || vocab_id(l, b, nb, &right) ||
        vocab_id(l, *joined, na + nb, &merged))
        return tome_errorf(l->err, TOME_EFORMAT, "%s: merge %d uses a token outside the vocabulary",
                           l->t->path, (int)rank);
    tok_merges_put(&l->t->merges, left, right, rank, merged);
    return 0;
}

static int read_merges(loader *l, const json_t *model)
{
    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) return bad(l, "model.merges is missing");
    int rc = tok_merges_init(&l->t->merges, json_array_size(merges), l->err);
    char *joined = NULL;
    size_t cap = 0, i;
    const json_t *m;
    json_array_foreach(merges, i, m) {
        if (rc) break;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            const char *space = strchr(s, ' ');
            if (!space || strchr(space + 1, ' '))
                rc = tome_errorf(l->err, TOME_EFORMAT, "%s: merge %zu is not \"a b\"", l->t->path,
                                 i);
            else
                rc = add_merge(l, s, (size_t)(space - s), space + 1, strlen(space + 1), (int32_t)i,
                               &joined, &cap);
        } else if (json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            const json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            rc = add_merge(l, json_string_value(a), json_string_length(a), json_string_value(b),
                           json_string_length(b), (int32_t)i, &joined, &cap);
        } else {
            rc = tome_errorf(l->err, TOME_EFORMAT, "%s: merge %zu is malformed", l->t->path, i);
        }
    }
    free(joined);
    return rc;
}

/* Convert every id's string to the bytes it decodes to. */
static int build_id_bytes(loader *l)
{
    v4_tokenizer *t = l->t;
    size_t n_ids = (size_t)t->n_ids, total = 0;
    for (size_t id = 0; id < n_ids; id++) total += l->len_of[id];
    t->bytes = malloc(total + 1);
    t->bytes_of = malloc((n_ids + 1) * sizeof *t->bytes_of);
    t->has_id = calloc(n_ids, 1);
    if (!t->bytes || !t->bytes_of || !t->has_id)
        return tome_errorf(l->err, TOME_ENOMEM, "out of memory for the token table");
    size_t at = 0;
    for (size_t id = 0; id < n_ids; id++) {
        t->bytes_of[id] = at;
        if (l->text_of[id]) {
            t->has_id[id] = 1;
            at += token_string_bytes(&l->alpha, l->text_of[id], l->len_of[id], t->bytes + at);
        }
    }
    t->bytes_of[n_ids] = at;
    return 0;
}

static int load_document(loader *l, const json_t *root)
{
    const json_t *model = json_object_get(root, "model");
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added)) return bad(l, "added_tokens is not an array");
    int rc = check_normalizer(l, json_object_get(root, "normalizer"));
    if (!rc) rc = check_model(l, model);
    if (!rc) rc = check_decoder(l, json_object_get(root, "decoder"));
    if (!rc) rc = read_pre_tokenizer(l, json_object_get(root, "pre_tokenizer"));
    if (!rc) rc = count_ids(l, added);
    if (!rc) rc = read_vocab(l);
    if (!rc) rc = read_added(l, added);
    if (!rc) rc = read_merges(l, model);
    if (!rc) rc = build_id_bytes(l);
    return rc;
}

int tok_load_json(v4_tokenizer *t, const char *json, size_t len, tome_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (!root)
        return tome_errorf(err, TOME_EFORMAT, "%s: line %d: %s", t->path, jerr.line, jerr.text);
    loader l = {.t = t, .err = err};
    alphabet_init(&l.alpha);
    int rc = json_is_object(root) ? load_document(&l, root) : bad(&l, "not a JSON object");
    free(l.text_of);
    free(l.len_of);
    json_decref(root);
    return rc;
}
