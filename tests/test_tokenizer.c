/*
 * test_tokenizer.c - the tokenizer against the reference's golden vectors.
 *
 * shared/golden/tokenizer holds ids that Hugging Face's own tokenizers
 * (Rust, via its Node binding) produced for 482 texts and a 200 KB text,
 * with DeepSeek's tokenizer.json: every one must come out identical, with
 * and without special-token parsing, and decode back to the exact input,
 * in one go and one id at a time through the stream decoder.  The V4
 * variant must give V4's chat tokens their single ids.  Characters that
 * Unicode assigned after PCRE2's tables were made are checked separately
 * (tests/data/newer-unicode.jsonl, also from the reference).
 */
#include <jansson.h>

#include "tests/tok_testutil.h"

static int same_ids(const v4_ids *got, const json_t *want)
{
    if (got->n != json_array_size(want)) return 0;
    for (size_t i = 0; i < got->n; i++)
        if (got->ids[i] != json_integer_value(json_array_get(want, i))) return 0;
    return 1;
}

/* Whether s[0, n) is valid UTF-8 (a stream chunk must never end mid-character). */
static int valid_utf8(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80                 ? 1
                   : c >= 0xC2 && c <= 0xDF ? 2
                   : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4
                                            : 0;
        if (k == 0 || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

/* Decode in one go and id by id; both must give back `text`. */
static void check_roundtrip(const v4_tokenizer *t, const v4_ids *ids, const char *text, size_t len,
                            int line)
{
    tome_error err = {0};
    char *back = NULL;
    size_t back_len = 0;
    CHECK_OK(v4_detokenize(t, ids->ids, ids->n, &back, &back_len, &err), &err);
    CHECKF(back && back_len == len && memcmp(back, text, len) == 0, "line %d: decode differs",
           line);
    free(back);

    v4_detok *d = NULL;
    CHECK_OK(v4_detok_new(t, 0, &d, &err), &err);
    char *joined = malloc(len + 1);
    size_t at = 0;
    int chunks_ok = 1, fits = 1;
    for (size_t i = 0; i < ids->n; i++) {
        const char *piece;
        size_t n;
        CHECK_OK(v4_detok_feed(d, ids->ids[i], &piece, &n, &err), &err);
        chunks_ok &= valid_utf8(piece, n);
        fits &= at + n <= len;
        if (fits) memcpy(joined + at, piece, n);
        at += n;
    }
    const char *rest;
    size_t n_rest;
    v4_detok_flush(d, &rest, &n_rest);
    CHECKF(n_rest == 0, "line %d: %zu bytes held back at the end", line, n_rest);
    CHECKF(fits && at == len && memcmp(joined, text, len) == 0,
           "line %d: streamed decode "
           "differs",
           line);
    CHECKF(chunks_ok, "line %d: a streamed chunk ends inside a UTF-8 character", line);
    free(joined);
    v4_detok_free(d);
}

static void encode_and_compare(const v4_tokenizer *t, const char *text, size_t len, int special,
                               const json_t *want, int line)
{
    tome_error err = {0};
    v4_ids ids = {0};
    CHECK_OK(v4_tokenize(t, text, len, special, &ids, &err), &err);
    CHECKF(same_ids(&ids, want), "line %d (special=%d): %zu ids, expected %zu", line, special,
           ids.n, json_array_size(want));
    check_roundtrip(t, &ids, text, len, line);
    free(ids.ids);
}

static void test_vectors(const v4_tokenizer *t)
{
    const char *path = check_shared_path("golden/tokenizer/vectors.jsonl");
    FILE *f = fopen(path, "rb");
    REQUIRE(f, "cannot open %s", path);
    char *line = NULL;
    size_t cap = 0;
    int n = 0, with_special = 0;
    while (getline(&line, &cap, f) > 0) {
        n++;
        json_error_t jerr;
        json_t *v = json_loads(line, JSON_ALLOW_NUL, &jerr);
        REQUIRE(v, "%s:%d: %s", path, n, jerr.text);
        const json_t *text = json_object_get(v, "text");
        const json_t *ids = json_object_get(v, "ids");
        const json_t *plain = json_object_get(v, "ids_no_special");
        const char *s = json_string_value(text);
        size_t len = json_string_length(text);
        encode_and_compare(t, s, len, 1, ids, n);
        encode_and_compare(t, s, len, 0, plain ? plain : ids, n);
        with_special += plain != NULL;
        json_decref(v);
    }
    free(line);
    fclose(f);
    CHECKF(n == 482, "%d vectors read, expected 482", n);
    CHECKF(with_special == 30, "%d vectors with special tokens, expected 30", with_special);
}

/* Characters newer than PCRE2's Unicode tables: ids from the reference
 * (tests/data/make-newer-unicode-vectors.mjs). */
static void test_newer_unicode(const v4_tokenizer *t)
{
    const char *src = getenv("TOME_SRCDIR");
    REQUIRE(src && *src, "TOME_SRCDIR is not set (run through `make check`)");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/newer-unicode.jsonl", src);
    FILE *f = fopen(path, "rb");
    REQUIRE(f, "cannot open %s", path);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *v = json_loads(line, 0, NULL);
        REQUIRE(v, "%s:%d is not JSON", path, n + 1);
        const json_t *text = json_object_get(v, "text");
        encode_and_compare(t, json_string_value(text), json_string_length(text), 0,
                           json_object_get(v, "ids"), ++n);
        json_decref(v);
    }
    free(line);
    fclose(f);
    CHECKF(n == 60, "%d newer-Unicode vectors, expected 60", n);
}

static void sha256_of_ids(const v4_ids *ids, char hex[65])
{
    uint8_t *le = malloc(ids->n * 4 + 1), digest[32];
    for (size_t i = 0; i < ids->n; i++)
        for (int b = 0; b < 4; b++) le[4 * i + b] = (uint8_t)((uint32_t)ids->ids[i] >> (8 * b));
    tome_sha256(le, ids->n * 4, digest);
    tome_hex(digest, 32, hex);
    free(le);
}

static void check_long_mode(const v4_tokenizer *t, const char *text, size_t len, int special,
                            const json_t *expected)
{
    tome_error err = {0};
    v4_ids ids = {0};
    CHECK_OK(v4_tokenize(t, text, len, special, &ids, &err), &err);
    const char *n_key = special ? "n_ids" : "n_ids_no_special";
    const char *h_key = special ? "ids_sha256_u32le" : "ids_no_special_sha256_u32le";
    json_int_t want_n = json_integer_value(json_object_get(expected, n_key));
    CHECKF((json_int_t)ids.n == want_n, "long.txt (special=%d): %zu ids, expected %lld", special,
           ids.n, (long long)want_n);
    char hex[65];
    sha256_of_ids(&ids, hex);
    CHECKF(strcmp(hex, json_string_value(json_object_get(expected, h_key))) == 0,
           "long.txt (special=%d): ids hash %s differs", special, hex);
    if (special) {
        const json_t *first = json_object_get(expected, "first_ids");
        for (size_t i = 0; i < json_array_size(first) && i < ids.n; i++)
            CHECKF(ids.ids[i] == json_integer_value(json_array_get(first, i)),
                   "long.txt: id %zu is %d", i, (int)ids.ids[i]);
    }
    check_roundtrip(t, &ids, text, len, -1);
    free(ids.ids);
}

static void test_long(const v4_tokenizer *t)
{
    tome_error err = {0};
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(
        tome_read_file(check_shared_path("golden/tokenizer/long.txt"), 1 << 24, &text, &len, &err),
        &err);
    json_error_t jerr;
    json_t *expected =
        json_load_file(check_shared_path("golden/tokenizer/long.expected.json"), 0, &jerr);
    REQUIRE(text && expected, "long.txt or long.expected.json unreadable: %s", jerr.text);
    uint8_t digest[32];
    char hex[65];
    tome_sha256(text, len, digest);
    tome_hex(digest, 32, hex);
    REQUIRE(strcmp(hex, json_string_value(json_object_get(expected, "sha256_text"))) == 0,
            "long.txt has changed (SHA-256 %s)", hex);
    check_long_mode(t, text, len, 1, expected);
    check_long_mode(t, text, len, 0, expected);
    json_decref(expected);
    free(text);
}

/* V4's chat tokens are single ids in the V4 variant and plain text in V3. */
static void test_v4_tokens(const v4_tokenizer *v3, const v4_tokenizer *v4)
{
    static const struct {
        const char *text;
        int32_t id;
    } tokens[] = {
        {"<think>", 128821},
        {"</think>", 128822},
        {"｜DSML｜", 128825},
        {"<｜latest_reminder｜>", 128828},
        {"<｜action｜>", 128829},
        {"<｜query｜>", 128830},
        {"<｜authority｜>", 128831},
        {"<｜domain｜>", 128832},
        {"<｜title｜>", 128836},
        {"<｜read_url｜>", 128845},
        {"<｜extracted_url｜>", 128844},
        {"<｜User｜>", 128803},
        {"<｜Assistant｜>", 128804},
        {"<｜begin▁of▁sentence｜>", 0},
        {"<｜end▁of▁sentence｜>", 1},
    };
    tome_error err = {0};
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        CHECKF(v4_token_lookup(v4, tokens[i].text) == tokens[i].id, "%s", tokens[i].text);
        v4_ids ids = {0};
        CHECK_OK(v4_tokenize(v4, tokens[i].text, strlen(tokens[i].text), 1, &ids, &err), &err);
        CHECKF(ids.n == 1 && ids.ids[0] == tokens[i].id, "%s: %zu ids", tokens[i].text, ids.n);
        const char *bytes;
        size_t n;
        CHECK(v4_token_bytes(v4, tokens[i].id, &bytes, &n) == 0 && n == strlen(tokens[i].text) &&
              memcmp(bytes, tokens[i].text, n) == 0);
        free(ids.ids);
    }
    CHECK(v4_token_lookup(v3, "<think>") == -1);
    CHECK(v4_token_lookup(v3, "<｜User｜>") == 128803);
    CHECK(v4_token_lookup(v3, "<｜User") == -1);
    CHECK(v4_tokenizer_n_ids(v3) == 128815);
    CHECK(v4_tokenizer_n_ids(v4) == 128846);
    const char *bytes;
    size_t n;
    CHECK(v4_token_bytes(v4, -1, &bytes, &n) == TOME_ENOTFOUND);
    CHECK(v4_token_bytes(v4, 128846, &bytes, &n) == TOME_ENOTFOUND);
}

int main(void)
{
    v4_tokenizer *v3 = tok_test_load("v3");
    v4_tokenizer *v4 = tok_test_load("v4");
    test_vectors(v3);
    test_long(v3);
    test_newer_unicode(v3);
    test_v4_tokens(v3, v4);
    v4_tokenizer_free(v3);
    v4_tokenizer_free(v4);
    return check_finish();
}
