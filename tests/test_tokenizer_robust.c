/*
 * test_tokenizer_robust.c - input the reference never sees: invalid UTF-8,
 * NUL bytes, a 100 MB text, 1 MB "words"; and tokenizer.json files that tome
 * must refuse with a message naming the problem.
 *
 * The property checked on odd input is the one that matters downstream:
 * encoding succeeds, every id is valid, and decoding gives back the exact
 * bytes.  An alarm turns a quadratic blow-up into a failure instead of a
 * hang.
 */
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "tests/tok_testutil.h"

#define MB (1024 * 1024)

/* Encode (with and without special tokens unless `plain_only`); check the
 * ids and the round trip. */
static void check_encoding(const v4_tokenizer *t, const char *text, size_t len, const char *what,
                           int plain_only)
{
    for (int special = 0; special < (plain_only ? 1 : 2); special++) {
        tome_error err = {0};
        v4_ids ids = {0};
        CHECK_OK(v4_tokenize(t, text, len, special, &ids, &err), &err);
        int valid = 1;
        for (size_t i = 0; i < ids.n; i++)
            valid &= ids.ids[i] >= 0 && ids.ids[i] < v4_tokenizer_n_ids(t);
        CHECKF(valid, "%s: an id is out of range", what);
        CHECKF(len == 0 || ids.n > 0, "%s: no ids", what);
        char *back = NULL;
        size_t back_len = 0;
        CHECK_OK(v4_detokenize(t, ids.ids, ids.n, &back, &back_len, &err), &err);
        CHECKF(back && back_len == len && memcmp(back, text, len) == 0,
               "%s (special=%d): decode(encode(x)) != x", what, special);
        free(back);
        free(ids.ids);
    }
}

static void roundtrip(const v4_tokenizer *t, const char *text, size_t len, const char *what)
{
    check_encoding(t, text, len, what, 0);
}

static v4_ids encode(const v4_tokenizer *t, const char *text, size_t len)
{
    tome_error err = {0};
    v4_ids ids = {0};
    CHECK_OK(v4_tokenize(t, text, len, 0, &ids, &err), &err);
    return ids;
}

/* Invalid bytes match no pattern, so they cut the text like an end of
 * input: encoding around them equals encoding the parts on their own. */
static void test_invalid_utf8(const v4_tokenizer *t)
{
    static const char *const bad[] = {
        "\x80",         "\xBF\xBF",         "\xC3",     "\xC0\x80", "\xE2\x82", "\xED\xA0\x80",
        "\xF0\x9F\x98", "\xF5\x80\x80\x80", "\xFE\xFF", "\xFF",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[64];
        int n =
            snprintf(text, sizeof text, "word %s 12%s34 中文%s日本 end", bad[i], bad[i], bad[i]);
        roundtrip(t, text, (size_t)n, "invalid UTF-8");

        char joined[64];
        size_t left = strlen("hello"), mid = strlen(bad[i]);
        snprintf(joined, sizeof joined, "hello%sworld", bad[i]);
        v4_ids all = encode(t, joined, left + mid + 5);
        v4_ids a = encode(t, "hello", left), b = encode(t, bad[i], mid), c = encode(t, "world", 5);
        int same = all.n == a.n + b.n + c.n && memcmp(all.ids, a.ids, a.n * 4) == 0 &&
                   memcmp(all.ids + a.n, b.ids, b.n * 4) == 0 &&
                   memcmp(all.ids + a.n + b.n, c.ids, c.n * 4) == 0;
        CHECKF(same, "invalid sequence %zu does not cut the text", i);
        free(all.ids);
        free(a.ids);
        free(b.ids);
        free(c.ids);
    }
    char every[256];
    for (int i = 0; i < 256; i++) every[i] = (char)(255 - i);
    roundtrip(t, every, sizeof every, "all bytes");
}

static void test_nul(const v4_tokenizer *t)
{
    roundtrip(t, "a\0b", 3, "NUL inside a word");
    roundtrip(t, "\0\0\0\0", 4, "NULs");
    roundtrip(t, "<｜User｜>\0<｜User｜>", 2 * strlen("<｜User｜>") + 1, "NUL between specials");
    v4_ids ids = encode(t, "x\0y", 3);
    CHECK(ids.n >= 3); /* the NUL is not an end of string */
    free(ids.ids);
}

static void fill_repeated(char *buf, size_t len, const char *unit)
{
    size_t n = strlen(unit);
    for (size_t i = 0; i < len; i += n) memcpy(buf + i, unit, len - i < n ? len - i : n);
}

/* One pre-token of a megabyte: BPE must stay near-linear. */
static void test_huge_words(const v4_tokenizer *t)
{
    static const char *const units[] = {"a", " ", "中", "\xFF"};
    char *buf = malloc(MB);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        size_t len = MB - MB % strlen(units[i]);
        fill_repeated(buf, len, units[i]);
        check_encoding(t, buf, len, units[i], 1);
    }
    free(buf);
}

/* 100 MB in one call: varied text repeated, so it is quick yet exercises
 * every stage (specials, digits, CJK, whitespace runs, long lines). */
static void test_100mb(const v4_tokenizer *t)
{
    static const char unit[] =
        "The quick brown fox (1234567) jumps over <｜User｜> the lazy dog.\r\n\t"
        "int main(void) { return 0; }  // 注释：中文 日本語 ﾊﾝｶｸ 한국어 "
        "😀👍🏽\n\n"
        "    x = [1.5e-3, 0x1F, \"str\\n\"];\u00a0\u3000 end\n";
    size_t len = 100 * (size_t)MB;
    char *text = malloc(len);
    REQUIRE(text, "cannot allocate 100 MB");
    fill_repeated(text, len, unit);
    tome_error err = {0};
    v4_ids ids = {0};
    CHECK_OK(v4_tokenize(t, text, len, 1, &ids, &err), &err);
    CHECKF(ids.n > len / 8, "100 MB gave only %zu ids", ids.n);
    char *back = NULL;
    size_t back_len = 0;
    CHECK_OK(v4_detokenize(t, ids.ids, ids.n, &back, &back_len, &err), &err);
    CHECK(back && back_len == len && memcmp(back, text, len) == 0);
    free(back);
    free(ids.ids);
    free(text);
}

/* A character split across ids is held back, and flushed if it never
 * completes. */
static void test_stream_holdback(const v4_tokenizer *t)
{
    static const char text[] = "\xE4\xB8"; /* the first two bytes of 中 */
    v4_ids ids = encode(t, text, 2);
    tome_error err = {0};
    v4_detok *d = NULL;
    CHECK_OK(v4_detok_new(t, 0, &d, &err), &err);
    size_t out = 0;
    for (size_t i = 0; i < ids.n; i++) {
        const char *piece;
        size_t n;
        CHECK_OK(v4_detok_feed(d, ids.ids[i], &piece, &n, &err), &err);
        out += n;
    }
    const char *rest;
    size_t n_rest;
    v4_detok_flush(d, &rest, &n_rest);
    CHECK(out == 0 && n_rest == 2 && memcmp(rest, text, 2) == 0);
    const char *piece;
    size_t n;
    CHECK(v4_detok_feed(d, -5, &piece, &n, &err) == TOME_EINVAL && strstr(err.msg, "-5"));
    v4_detok_free(d);
    free(ids.ids);
}

/* What a model may emit is any sequence of ids.  A stream decoder made
 * with V4_DETOK_VALID_UTF8 hands out only valid UTF-8 without NUL, piece
 * by piece, and the pieces add up to the repair of the whole decoded byte
 * string (the same U+FFFDs whether the ids came at once or one by one). */
static void test_stream_valid_utf8(const v4_tokenizer *t)
{
    /* Ids of fragments (leads, continuations, bytes never in UTF-8) mixed
     * with whole characters and words, as random weights produce them. */
    static const char *const pieces[] = {"\xE4\xB8", "\xF0\x9F\x98", "\xAD",     "\x80", "\xFF",
                                         "\xC3",     "\xE4\xB8\xAD", "\xC3\xA9", " the", "\n"};
    int32_t pool[64];
    size_t n_pool = 0;
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        v4_ids ids = encode(t, pieces[i], strlen(pieces[i]));
        for (size_t k = 0; k < ids.n && n_pool < 64; k++) pool[n_pool++] = ids.ids[k];
        free(ids.ids);
    }
    v4_ids nul = encode(t, "\0", 1); /* the byte 0's token */
    REQUIRE(nul.n == 1 && n_pool < 64, "NUL is %zu tokens", nul.n);
    pool[n_pool++] = nul.ids[0];
    free(nul.ids);
    uint64_t rng = 88172645463325252ull;
    int replaced = 0;
    for (int round = 0; round < 2000; round++) {
        int32_t ids[12];
        size_t n = 1 + round % 12;
        for (size_t i = 0; i < n; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            /* One id in four from the whole vocabulary, the rest fragments. */
            ids[i] = rng % 4 == 0 ? (int32_t)((rng >> 8) % (uint64_t)v4_tokenizer_n_ids(t))
                                  : pool[(rng >> 8) % n_pool];
        }
        tome_error err = {0};
        char *whole = NULL;
        size_t whole_len = 0;
        if (v4_detokenize(t, ids, n, &whole, &whole_len, &err) != 0) continue; /* a gap id */
        size_t want_len = 0;
        char *want = malloc(3 * whole_len + 1);
        if (want) want[want_len = tome_text_repair(whole, whole_len, want)] = '\0';
        v4_detok *d = NULL;
        CHECK_OK(v4_detok_new(t, V4_DETOK_VALID_UTF8, &d, &err), &err);
        char got[12 * 512 * 3];
        size_t at = 0;
        int pieces_valid = 1;
        for (size_t i = 0; i < n; i++) {
            const char *piece;
            size_t k;
            CHECK_OK(v4_detok_feed(d, ids[i], &piece, &k, &err), &err);
            pieces_valid &= tome_utf8_valid(piece, k) && !memchr(piece, 0, k);
            if (at + k <= sizeof got) memcpy(got + at, piece, k);
            at += k;
        }
        const char *rest;
        size_t k;
        v4_detok_flush(d, &rest, &k);
        pieces_valid &= tome_utf8_valid(rest, k) && !memchr(rest, 0, k);
        if (at + k <= sizeof got) memcpy(got + at, rest, k);
        at += k;
        CHECKF(pieces_valid, "round %d: a piece is not valid UTF-8 or holds a NUL", round);
        CHECKF(want && at == want_len && memcmp(got, want, at) == 0,
               "round %d: streamed text differs from the repaired whole", round);
        replaced += want && strstr(want, TOME_UTF8_REPLACEMENT) != NULL;
        v4_detok_free(d);
        free(want);
        free(whole);
    }
    CHECKF(replaced > 500, "only %d of 2000 rounds needed a replacement", replaced);
}

/* One tokenizer, several threads at once: each gets the single-thread ids. */
typedef struct job {
    const v4_tokenizer *t;
    const char *text;
    size_t len;
    const v4_ids *expected;
    int same;
} job;

static void *encode_job(void *arg)
{
    job *j = arg;
    j->same = 1;
    for (int round = 0; round < 3; round++) {
        v4_ids ids = encode(j->t, j->text, j->len);
        j->same &= ids.n == j->expected->n &&
                   memcmp(ids.ids, j->expected->ids, ids.n * sizeof(int32_t)) == 0;
        free(ids.ids);
    }
    return NULL;
}

static void test_threads(const v4_tokenizer *t)
{
    tome_error err = {0};
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(
        tome_read_file(check_shared_path("golden/tokenizer/long.txt"), 1 << 24, &text, &len, &err),
        &err);
    v4_ids expected = encode(t, text, len);
    job jobs[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){.t = t, .text = text, .len = len, .expected = &expected};
        REQUIRE(pthread_create(&threads[i], NULL, encode_job, &jobs[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        CHECKF(jobs[i].same, "thread %d got different ids", i);
    }
    free(expected.ids);
    free(text);
}

/* ---- tokenizer.json files that must be refused ------------------------- */

static const char *tmpdir;

/* A byte-level vocabulary (the 256 byte symbols) as JSON members. */
static char *byte_vocab(void)
{
    char *out = malloc(256 * 16), *o = out;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = printable ? b : next++;
        o += sprintf(o, "%s\"\\u%04x\": %d", b ? ", " : "", cp, b);
    }
    return out;
}

/* Write a tokenizer.json from parts and try to load it. */
static int load_variant(const char *normalizer, const char *pre, const char *vocab_extra,
                        const char *merges, const char *added, tome_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
    FILE *f = fopen(path, "w");
    REQUIRE(f, "cannot write %s", path);
    char *vocab = byte_vocab();
    fprintf(f,
            "{\"normalizer\": %s, \"pre_tokenizer\": %s, \"decoder\": {\"type\": \"ByteLevel\"},"
            " \"model\": {\"type\": \"BPE\", \"vocab\": {%s%s}, \"merges\": [%s]},"
            " \"added_tokens\": [%s]}",
            normalizer, pre, vocab, vocab_extra, merges, added);
    fclose(f);
    free(vocab);
    v4_tokenizer *t = NULL;
    int rc = v4_tokenizer_load(path, &t, err);
    v4_tokenizer_free(t);
    return rc;
}

#define BYTE_LEVEL "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}"

static void refused(const char *normalizer, const char *pre, const char *vocab_extra,
                    const char *merges, const char *added, const char *needle)
{
    tome_error err = {0};
    int rc = load_variant(normalizer, pre, vocab_extra, merges, added, &err);
    CHECKF(rc == TOME_EFORMAT && strstr(err.msg, needle) && strstr(err.msg, "tokenizer.json"),
           "expected a format error mentioning \"%s\", got %d: %s", needle, rc, err.msg);
}

static void test_refused_files(void)
{
    tmpdir = check_tmpdir();
    tome_error err = {0};
    CHECK_OK(load_variant("null", BYTE_LEVEL, ", \"ab\": 256", "\"a b\"",
                          "{\"id\": 257, \"content\": \"<x>\", \"special\": true}", &err),
             &err);
    refused("{\"type\": \"NFC\"}", BYTE_LEVEL, "", "", "", "normalizer");
    refused("null", "{\"type\": \"Whitespace\"}", "", "", "", "pre-tokenizer");
    refused("null",
            "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\":"
            " {\"Regex\": \"a\"}, \"behavior\": \"Removed\"}, " BYTE_LEVEL "]}",
            "", "", "", "Split behavior");
    refused("null",
            "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\":"
            " {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}, " BYTE_LEVEL "]}",
            "", "", "", "does not compile");
    refused("null", BYTE_LEVEL, "", "\"a zz\"", "", "outside the vocabulary");
    refused("null", BYTE_LEVEL, "", "\"abc\"", "", "is not \"a b\"");
    refused("null", BYTE_LEVEL, "", "", "{\"id\": 300, \"content\": \"<x>\", \"special\": true}",
            "Hugging Face numbers it 256");
    refused("null", BYTE_LEVEL, "", "", "{\"id\": 256, \"content\": \"<x>\", \"lstrip\": true}",
            "lstrip");
    refused("null",
            "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": "
            "\"Isolated\"}",
            "", "", "", "no ByteLevel step");

    char path[4200];
    snprintf(path, sizeof path, "%s/absent.json", tmpdir);
    v4_tokenizer *t = NULL;
    CHECK(v4_tokenizer_load(path, &t, &err) != 0 && t == NULL && strstr(err.msg, "absent.json"));
    snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
    FILE *f = fopen(path, "w");
    fputs("{\"model\": ", f);
    fclose(f);
    CHECK(v4_tokenizer_load(path, &t, &err) == TOME_EFORMAT && strstr(err.msg, path));
}

int main(void)
{
    alarm(240);
    v4_tokenizer *t = tok_test_load("v3");
    test_invalid_utf8(t);
    test_nul(t);
    test_stream_holdback(t);
    test_stream_valid_utf8(t);
    test_threads(t);
    test_huge_words(t);
    test_100mb(t);
    test_refused_files();
    v4_tokenizer_free(t);
    return check_finish();
}
