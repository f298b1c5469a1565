/*
 * test_gguf_vocab.c - a GGUF's own vocabulary tokenizes as the
 * tokenizer.json it was converted from.
 *
 * Usage: test_gguf_vocab FILE.gguf TOKENIZER.json (the GGUF made by
 * tome-convert from a model with that tokenizer.json, and no
 * tokenizer.json beside it).  Every id must spell the same bytes, and the
 * golden tokenizer texts (shared/golden/tokenizer: 482 vectors and the
 * 200 KB text) must give the same ids, with and without special-token
 * parsing; the ids of the tokenizer.json itself are checked against the
 * reference's by test_tokenizer.
 */
#include <jansson.h>

#include "common/common.h"
#include "engine/v4.h"
#include "tests/check.h"
#include "tokenizer/tokenizer.h"

static void same_tokens(const v4_tokenizer *a, const v4_tokenizer *b, const char *text, size_t len,
                        const char *what)
{
    tome_error err = {0};
    for (int special = 0; special < 2; special++) {
        v4_ids x = {0}, y = {0};
        CHECK_OK(v4_tokenize(a, text, len, special, &x, &err), &err);
        CHECK_OK(v4_tokenize(b, text, len, special, &y, &err), &err);
        CHECKF(x.n == y.n && (x.n == 0 || memcmp(x.ids, y.ids, x.n * sizeof *x.ids) == 0),
               "%s (special=%d): %zu ids from tokenizer.json, %zu from the GGUF", what, special,
               x.n, y.n);
        free(x.ids);
        free(y.ids);
    }
}

static void same_ids(const v4_tokenizer *a, const v4_tokenizer *b)
{
    CHECKF(v4_tokenizer_n_ids(a) == v4_tokenizer_n_ids(b),
           "%d ids from tokenizer.json, %d from "
           "the GGUF",
           v4_tokenizer_n_ids(a), v4_tokenizer_n_ids(b));
    int differ = 0;
    for (int32_t id = 0; id < v4_tokenizer_n_ids(a); id++) {
        const char *x, *y;
        size_t nx, ny;
        int rx = v4_token_bytes(a, id, &x, &nx), ry = v4_token_bytes(b, id, &y, &ny);
        differ += rx != ry || (rx == 0 && (nx != ny || memcmp(x, y, nx) != 0));
    }
    CHECKF(differ == 0, "%d ids spell different bytes", differ);
}

static void same_on_vectors(const v4_tokenizer *a, const v4_tokenizer *b)
{
    const char *path = check_shared_path("golden/tokenizer/vectors.jsonl");
    FILE *f = fopen(path, "rb");
    REQUIRE(f, "cannot open %s", path);
    char *line = NULL, what[64];
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t jerr;
        json_t *v = json_loads(line, JSON_ALLOW_NUL, &jerr);
        REQUIRE(v, "%s:%d: %s", path, n + 1, jerr.text);
        const json_t *text = json_object_get(v, "text");
        snprintf(what, sizeof what, "vector %d", ++n);
        same_tokens(a, b, json_string_value(text), json_string_length(text), what);
        json_decref(v);
    }
    free(line);
    fclose(f);
    CHECKF(n == 482, "%d vectors read, expected 482", n);
    char *text;
    size_t len;
    tome_error err = {0};
    REQUIRE(tome_read_file(check_shared_path("golden/tokenizer/long.txt"), 1 << 24, &text, &len,
                           &err) == 0,
            "%s", err.msg);
    same_tokens(a, b, text, len, "long.txt");
    free(text);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 3, "usage: test_gguf_vocab FILE.gguf TOKENIZER.json");
    tome_error err = {0};
    v4_tokenizer *a = NULL, *b = NULL;
    REQUIRE(v4_tokenizer_load(argv[2], &a, &err) == 0, "%s", err.msg);
    char name[4096], *json = NULL;
    size_t len;
    REQUIRE(v4_model_tokenizer(argv[1], &json, &len, name, sizeof name, &err) == 0, "%s", err.msg);
    CHECKF(strcmp(name, argv[1]) == 0, "the tokenizer came from %s, not the GGUF", name);
    REQUIRE(v4_tokenizer_from_json(name, json, len, &b, &err) == 0, "%s", err.msg);
    free(json);
    same_ids(a, b);
    same_on_vectors(a, b);
    v4_tokenizer_free(a);
    v4_tokenizer_free(b);
    return check_finish();
}
