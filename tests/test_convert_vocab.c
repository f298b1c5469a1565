/*
 * test_convert_vocab.c - the vocabulary tome-convert writes into a GGUF
 * file (tools/convert/vocab.c), read back with the engine's GGUF parser and
 * checked against the tokenizer.json it came from, read here with jansson.
 *
 * Usage: test_convert_vocab FILE.gguf TOKENIZER.json
 *          every id the file names (model.vocab: normal; added_tokens:
 *          control if special, else user-defined) has its text and type,
 *          every other id is "[PADn]" of type unused, the merges are the
 *          file's in order, one token per id below vocab_size;
 *        test_convert_vocab FILE.gguf -
 *          the stand-in of a model without a tokenizer: BOS and EOS are
 *          control tokens, GPT-2's 256 byte tokens are there once each.
 */
#include <jansson.h>
#include <string.h>

#include "engine/gguf.h"
#include "tests/check.h"

typedef struct strings {
    const char **at; /* each string's bytes (not terminated) */
    size_t *len, n;
} strings;

/* The elements of a string array (a GGUF string is a u64 length and the
 * bytes; the parser has checked that they lie inside the file). */
static strings string_array(const v4_gguf *g, const char *key)
{
    const v4_gguf_kv *kv = v4_gguf_find(g, key);
    REQUIRE(kv && kv->type == V4_GGUF_ARRAY && kv->elem_type == V4_GGUF_STRING,
            "%s: no string array", key);
    strings s = {malloc(kv->count * sizeof(char *) + 1), malloc(kv->count * sizeof(size_t) + 1),
                 kv->count};
    const uint8_t *p = kv->data;
    for (size_t i = 0; i < s.n; i++) {
        uint64_t len;
        memcpy(&len, p, 8);
        s.at[i] = (const char *)p + 8;
        s.len[i] = len;
        p += 8 + len;
    }
    return s;
}

static int32_t token_type(const v4_gguf *g, size_t id)
{
    const v4_gguf_kv *kv = v4_gguf_find(g, "tokenizer.ggml.token_type");
    REQUIRE(kv && kv->elem_type == V4_GGUF_I32 && id < kv->count, "no token_type for id %zu", id);
    int32_t t;
    memcpy(&t, kv->data + 4 * id, 4);
    return t;
}

static int same(const strings *s, size_t i, const char *want)
{
    return s->len[i] == strlen(want) && memcmp(s->at[i], want, s->len[i]) == 0;
}

static double number(const v4_gguf *g, const char *key)
{
    double v = -1;
    tome_error err = {0};
    const v4_gguf_kv *kv = v4_gguf_find(g, key);
    REQUIRE(kv, "%s is missing", key);
    CHECK_OK(v4_gguf_number(g, kv, 0, &v, &err), &err);
    return v;
}

/* tokenizer.json's own view: the text and type of each id. */
static void check_tokens(const v4_gguf *g, const strings *tok, json_t *root)
{
    size_t n = tok->n;
    char **text = calloc(n, sizeof *text);
    int *type = calloc(n, sizeof *type);
    const char *word;
    json_t *id;
    json_object_foreach(json_object_get(json_object_get(root, "model"), "vocab"), word, id) {
        REQUIRE((size_t)json_integer_value(id) < n, "id %lld beyond the file's tokens",
                (long long)json_integer_value(id));
        text[json_integer_value(id)] = (char *)word;
        type[json_integer_value(id)] = 1;
    }
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(root, "added_tokens"), i, t) {
        size_t at = (size_t)json_integer_value(json_object_get(t, "id"));
        text[at] = (char *)json_string_value(json_object_get(t, "content"));
        type[at] = json_is_true(json_object_get(t, "special")) ? 3 : 4;
    }
    int bad = 0;
    for (size_t k = 0; k < n && bad < 5; k++) {
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%zu]", k);
        int ok =
            same(tok, k, text[k] ? text[k] : pad) && token_type(g, k) == (text[k] ? type[k] : 5);
        CHECKF(ok, "token %zu: \"%.*s\" type %d", k, (int)tok->len[k], tok->at[k],
               token_type(g, k));
        bad += !ok;
    }
    free(text);
    free(type);
}

static void check_merges(const v4_gguf *g, json_t *root)
{
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
    strings m = string_array(g, "tokenizer.ggml.merges");
    CHECKF(m.n == json_array_size(merges), "%zu merges, tokenizer.json has %zu", m.n,
           json_array_size(merges));
    for (size_t i = 0; i < m.n && i < json_array_size(merges); i++) {
        json_t *e = json_array_get(merges, i);
        char pair[1024];
        if (json_is_string(e))
            snprintf(pair, sizeof pair, "%s", json_string_value(e));
        else
            snprintf(pair, sizeof pair, "%s %s", json_string_value(json_array_get(e, 0)),
                     json_string_value(json_array_get(e, 1)));
        if (!same(&m, i, pair)) {
            CHECKF(0, "merge %zu: \"%.*s\", want \"%s\"", i, (int)m.len[i], m.at[i], pair);
            break;
        }
    }
    free(m.at);
    free(m.len);
}

/* The stand-in: BOS/EOS control, and the byte tokens once each (the
 * printable ASCII bytes are themselves; the space is U+0120 "Ġ"). */
static void check_standin(const v4_gguf *g, const strings *tok)
{
    size_t bos = (size_t)number(g, "tokenizer.ggml.bos_token_id");
    size_t eos = (size_t)number(g, "tokenizer.ggml.eos_token_id");
    CHECK(token_type(g, bos) == 3 && token_type(g, eos) == 3);
    size_t normal = 0, space = 0, bang = 0;
    for (size_t i = 0; i < tok->n; i++) {
        normal += token_type(g, i) == 1;
        space += same(tok, i, "\xc4\xa0");
        bang += same(tok, i, "!");
    }
    CHECKF(normal == (tok->n < 258 ? tok->n - 2 : 256), "%zu byte tokens", normal);
    CHECK(space == 1 && bang == 1);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 3, "usage: test_convert_vocab FILE.gguf TOKENIZER.json|-");
    size_t size = 0;
    char *bytes = NULL;
    tome_error err = {0};
    CHECK_OK(tome_read_file(argv[1], (size_t)1 << 34, &bytes, &size, &err), &err);
    v4_gguf *g = NULL;
    CHECK_OK(v4_gguf_parse((const uint8_t *)bytes, size, argv[1], &g, &err), &err);
    REQUIRE(g, "%s does not parse", argv[1]);
    strings tok = string_array(g, "tokenizer.ggml.tokens");
    CHECKF(tok.n == (size_t)number(g, "deepseek4.vocab_size"), "%zu tokens", tok.n);
    const v4_gguf_kv *model = v4_gguf_find(g, "tokenizer.ggml.model");
    CHECK(model && model->count == 4 && memcmp(model->data, "gpt2", 4) == 0);
    if (strcmp(argv[2], "-") == 0) {
        check_standin(g, &tok);
    } else {
        json_error_t jerr;
        json_t *root = json_load_file(argv[2], 0, &jerr);
        REQUIRE(root, "%s: %s", argv[2], jerr.text);
        check_tokens(g, &tok, root);
        check_merges(g, root);
        json_decref(root);
    }
    free(tok.at);
    free(tok.len);
    v4_gguf_free(g);
    free(bytes);
    return check_finish();
}
