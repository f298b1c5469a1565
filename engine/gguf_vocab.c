/*
 * gguf_vocab.c - a GGUF file's own vocabulary as a Hugging Face
 * tokenizer.json document (contract in gguf.h).
 *
 * llama.cpp's converter keeps the tokenizer in tokenizer.ggml.* keys: the
 * kind ("gpt2": byte-level BPE), the pre-tokenizer's name, every token's
 * string and type by id, and the merges as "left right" strings.  The
 * pre-tokenizer's regexes are not in the file; readers know them by name.
 * tome knows the name DeepSeek's models use and rebuilds the document that
 * the tokenizer library reads, so one loader, with all its checks, serves
 * both kinds of model, and a GGUF tokenizes exactly as the tokenizer.json
 * it was made from.
 *
 * Hugging Face numbers added tokens itself: one that is also in the
 * vocabulary keeps its id, the others follow the vocabulary in order.  The
 * vocabulary is therefore every normal token plus the special ones below
 * the last normal id (DeepSeek's begin/end/pad at 0..2), and the added
 * tokens are the control and user-defined ones; unused ids (padding up to
 * the embedding's size) are left out.
 */
#include "engine/gguf.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* llama.cpp's token types (tokenizer.ggml.token_type). */
enum { TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_USER = 4, TOKEN_UNUSED = 5 };

/* The Split steps of DeepSeek V3's and V4's pre-tokenizer ("deepseek-v3"
 * in llama.cpp's naming): digits in runs of up to three, CJK runs, then
 * words, punctuation and whitespace; a ByteLevel step follows them. */
static const char *const deepseek_v3_splits[] = {
    "\\p{N}{1,3}",
    "[\xE4\xB8\x80-\xE9\xBE\xA5\xE3\x81\x80-\xE3\x82\x9F\xE3\x82\xA0-\xE3\x83\xBF]+",
    "[!\"#$%&'()*+,\\-./"
    ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};

typedef struct vocab_reader {
    const v4_gguf *g;
    tome_error *err;
    const v4_gguf_kv *tokens, *types, *merges;
} vocab_reader;

static int vocab_fail(const vocab_reader *r, const char *what)
{
    return tome_errorf(r->err, TOME_EFORMAT, "%s: its vocabulary cannot be read: %s", r->g->path,
                       what);
}

/* An array key of the given element type, or NULL after failing. */
static const v4_gguf_kv *array_key(const vocab_reader *r, const char *key, uint32_t elem)
{
    const v4_gguf_kv *kv = v4_gguf_find(r->g, key);
    if (kv && kv->type == V4_GGUF_ARRAY && kv->elem_type == elem) return kv;
    tome_errorf(r->err, TOME_EFORMAT, "%s: no %s array (no tokenizer.json beside it either)",
                r->g->path, key);
    return NULL;
}

/* The string value of `key`: "" when absent or not a string, "(not
 * UTF-8)" for bytes that are not (no name tome knows); NULL only when out
 * of memory. */
static json_t *string_key(const v4_gguf *g, const char *key)
{
    const v4_gguf_kv *kv = v4_gguf_find(g, key);
    if (!kv || kv->type != V4_GGUF_STRING) return json_string("");
    json_t *s = json_stringn((const char *)kv->data, (size_t)kv->count);
    return s ? s : json_string("(not UTF-8)");
}

/* Walks a string array in order: each element a 64-bit length and bytes
 * (the parser checked that they fit the file). */
typedef struct string_walk {
    const uint8_t *at;
} string_walk;

static json_t *next_string(string_walk *w)
{
    uint64_t len;
    memcpy(&len, w->at, sizeof len);
    json_t *s = json_stringn((const char *)w->at + 8, (size_t)len);
    w->at += 8 + len;
    return s;
}

static int32_t token_type(const vocab_reader *r, uint64_t id)
{
    int32_t t;
    memcpy(&t, r->types->data + id * 4, sizeof t);
    return t;
}

static json_t *added_token(json_int_t id, json_t *content, int special)
{
    return json_pack("{s:I, s:o, s:b, s:b, s:b, s:b}", "id", id, "content", content, "single_word",
                     0, "lstrip", 0, "rstrip", 0, "special", special);
}

/* Whether a token of this type is in the vocabulary, among the added
 * tokens, or neither (unused); anything else is refused. */
static int place_token(const vocab_reader *r, uint64_t id, uint64_t last_normal, int *in_vocab,
                       int *is_added)
{
    int32_t type = token_type(r, id);
    if (type != TOKEN_NORMAL && type != TOKEN_CONTROL && type != TOKEN_USER && type != TOKEN_UNUSED)
        return tome_errorf(r->err, TOME_EFORMAT,
                           "%s: token %llu has type %d; byte-level BPE has normal, control, "
                           "user-defined and unused tokens only",
                           r->g->path, (unsigned long long)id, (int)type);
    *is_added = type == TOKEN_CONTROL || type == TOKEN_USER;
    *in_vocab = type == TOKEN_NORMAL || (*is_added && id < last_normal);
    return 0;
}

/* model.vocab and added_tokens from the tokens and their types. */
static int read_tokens(const vocab_reader *r, json_t *vocab, json_t *added)
{
    uint64_t last_normal = 0;
    for (uint64_t id = 0; id < r->tokens->count; id++)
        if (token_type(r, id) == TOKEN_NORMAL) last_normal = id;
    string_walk w = {r->tokens->data};
    for (uint64_t id = 0; id < r->tokens->count; id++) {
        json_t *s = next_string(&w);
        int in_vocab = 0, is_added = 0, rc = place_token(r, id, last_normal, &in_vocab, &is_added);
        if (rc == 0 && !s)
            rc = tome_errorf(r->err, TOME_EFORMAT, "%s: token %llu is not valid UTF-8", r->g->path,
                             (unsigned long long)id);
        if (rc == 0 && ((in_vocab && json_object_set_new(vocab, json_string_value(s),
                                                         json_integer((json_int_t)id))) ||
                        (is_added && json_array_append_new(
                                         added, added_token((json_int_t)id, json_incref(s),
                                                            token_type(r, id) == TOKEN_CONTROL)))))
            rc = tome_errorf(r->err, TOME_ENOMEM, "out of memory");
        json_decref(s);
        if (rc) return rc;
    }
    return 0;
}

static json_t *read_merges(const vocab_reader *r)
{
    json_t *merges = json_array();
    string_walk w = {r->merges->data};
    for (uint64_t i = 0; merges && i < r->merges->count; i++) {
        json_t *m = next_string(&w);
        if (!m || json_array_append_new(merges, m)) {
            json_decref(merges);
            return NULL;
        }
    }
    return merges;
}

static json_t *pre_tokenizer(void)
{
    json_t *steps = json_array();
    for (size_t i = 0; i < sizeof deepseek_v3_splits / sizeof *deepseek_v3_splits; i++)
        json_array_append_new(steps, json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split",
                                               "pattern", "Regex", deepseek_v3_splits[i],
                                               "behavior", "Isolated", "invert", 0));
    json_array_append_new(steps,
                          json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                                    0, "trim_offsets", 1, "use_regex", 0));
    return json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", steps);
}

/* The kind and pre-tokenizer must be ones tome knows the rules of. */
static int check_kind(const vocab_reader *r)
{
    json_t *model = string_key(r->g, "tokenizer.ggml.model");
    json_t *pre = string_key(r->g, "tokenizer.ggml.pre");
    int rc = 0;
    if (!model || !pre)
        rc = tome_errorf(r->err, TOME_ENOMEM, "out of memory");
    else if (strcmp(json_string_value(model), "gpt2") != 0)
        rc = tome_errorf(r->err, TOME_EFORMAT,
                         "%s: tokenizer.ggml.model is \"%s\"; tome reads byte-level BPE (\"gpt2\") "
                         "vocabularies only",
                         r->g->path, json_string_value(model));
    else if (strcmp(json_string_value(pre), "deepseek-v3") != 0)
        rc =
            tome_errorf(r->err, TOME_EFORMAT,
                        "%s: tokenizer.ggml.pre is \"%s\"; tome knows the rules of \"deepseek-v3\" "
                        "only (put the model's tokenizer.json beside the file)",
                        r->g->path, json_string_value(pre));
    json_decref(model);
    json_decref(pre);
    return rc;
}

int v4_gguf_vocab_json(const v4_gguf *g, char **json, size_t *len, tome_error *err)
{
    *json = NULL;
    vocab_reader r = {g, err, NULL, NULL, NULL};
    int rc = check_kind(&r);
    if (rc) return rc;
    if (!(r.tokens = array_key(&r, "tokenizer.ggml.tokens", V4_GGUF_STRING)) ||
        !(r.types = array_key(&r, "tokenizer.ggml.token_type", V4_GGUF_I32)) ||
        !(r.merges = array_key(&r, "tokenizer.ggml.merges", V4_GGUF_STRING)))
        return TOME_EFORMAT;
    if (r.types->count != r.tokens->count)
        return vocab_fail(&r, "token_type and tokens differ in length");
    json_t *vocab = json_object(), *added = json_array(), *merges = read_merges(&r);
    json_t *root = NULL;
    rc = vocab && added && merges ? read_tokens(&r, vocab, added)
                                  : tome_errorf(err, TOME_ENOMEM, "out of memory");
    if (rc == 0)
        root = json_pack("{s:{s:s, s:[]}, s:o, s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:O, s:O}, "
                         "s:O, s:{s:s, s:b, s:b, s:b}}",
                         "normalizer", "type", "Sequence", "normalizers", "pre_tokenizer",
                         pre_tokenizer(), "model", "type", "BPE", "dropout", "unk_token",
                         "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                         "byte_fallback", 0, "vocab", vocab, "merges", merges, "added_tokens",
                         added, "decoder", "type", "ByteLevel", "add_prefix_space", 1,
                         "trim_offsets", 1, "use_regex", 1);
    if (rc == 0 && !(root && (*json = json_dumps(root, JSON_COMPACT))))
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory");
    if (rc == 0) *len = strlen(*json);
    json_decref(root);
    json_decref(vocab);
    json_decref(added);
    json_decref(merges);
    return rc;
}
