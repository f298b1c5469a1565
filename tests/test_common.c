/* Unit tests for common/: error formatting, whole-file I/O, atomic replace,
 * UTF-8 checking and repair. */
#include "common/common.h"
#include "tests/check.h"

#include <unistd.h>

static void test_errors(void)
{
    tome_error err = {0};
    CHECK(tome_errorf(&err, TOME_EFORMAT, "%s: bad %d", "x.json", 7) == TOME_EFORMAT);
    CHECK(err.code == TOME_EFORMAT && strcmp(err.msg, "x.json: bad 7") == 0);
    tome_error_wrap(&err, "loading %s", "model");
    CHECK(strcmp(err.msg, "loading model: x.json: bad 7") == 0);
    CHECK(strcmp(tome_error_name(TOME_ENOTFOUND), "not_found") == 0);
    CHECK(tome_errorf(NULL, TOME_EIO, "ignored") == TOME_EIO);
}

/* Messages stay valid UTF-8 (they go into JSON as they are): bytes that
 * are not become U+FFFD, and a cut splits no character. */
static void test_error_utf8(void)
{
    tome_error err = {0};
    tome_errorf(&err, TOME_EIO, "cannot open %s", "caf\xE9.txt"); /* Latin-1 name */
    CHECK(strcmp(err.msg, "cannot open caf\xEF\xBF\xBD.txt") == 0);
    char name[TOME_ERROR_MAX];
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    /* U+670D (three bytes) at 509: the cut at 511 bytes splits it, so it goes */
    tome_errorf(&err, TOME_EUPSTREAM, "%.509s\xE6\x9C\x8D", name);
    CHECK(strlen(err.msg) == 509 && tome_utf8_valid(err.msg, strlen(err.msg)));
    tome_errorf(&err, TOME_EIO, "%.508s", name);
    tome_error_wrap(&err, "\xE6\x9C\x8D"); /* the old message, 3 + 2 + 508 bytes, is cut */
    CHECK(strncmp(err.msg, "\xE6\x9C\x8D: aaa", 8) == 0 && strlen(err.msg) == 511);
    tome_errorf(&err, TOME_EIO, "%.507s\xE6\x9C\x8D", name); /* fits exactly: kept */
    CHECK(strlen(err.msg) == 510 && strcmp(err.msg + 507, "\xE6\x9C\x8D") == 0);
}

static void test_files(void)
{
    tome_error err = {0};
    const char *dir = check_tmpdir();
    char path[4200], sub[4200];
    snprintf(path, sizeof path, "%s/a.txt", dir);
    CHECK_OK(tome_write_file_atomic(path, "hello", 5, &err), &err);
    CHECK_OK(tome_write_file_atomic(path, "bye", 3, &err), &err);
    char *buf;
    size_t len;
    CHECK_OK(tome_read_file(path, 100, &buf, &len, &err), &err);
    CHECK(len == 3 && strcmp(buf, "bye") == 0);
    free(buf);
    CHECK(tome_read_file(path, 2, &buf, &len, &err) == TOME_ELIMIT);
    CHECK(strstr(err.msg, "a.txt") != NULL);
    snprintf(sub, sizeof sub, "%s/missing", dir);
    CHECK(tome_read_file(sub, 100, &buf, &len, &err) == TOME_EIO);
    CHECK(strstr(err.msg, "missing") != NULL);
    snprintf(sub, sizeof sub, "%s/x/y/z", dir);
    CHECK_OK(tome_mkdir_p(sub, 0755, &err), &err);
    struct stat st;
    CHECK(stat(sub, &st) == 0 && S_ISDIR(st.st_mode));
    unlink(path);
}

static void test_stream(void)
{
    tome_error err = {0};
    char *buf;
    size_t len;
    FILE *f = tmpfile();
    REQUIRE(f, "tmpfile failed");
    for (int i = 0; i < 100000; i++) fputc('a' + i % 26, f);
    fputc('\0', f); /* streams may hold NUL bytes */
    rewind(f);
    CHECK_OK(tome_read_stream(f, "the pipe", 1 << 20, &buf, &len, &err), &err);
    CHECK(len == 100001 && buf[0] == 'a' && buf[99999] == 'a' + 99999 % 26 && buf[100000] == 0);
    free(buf);
    rewind(f);
    CHECK(tome_read_stream(f, "the pipe", 1000, &buf, &len, &err) == TOME_ELIMIT);
    CHECK(strstr(err.msg, "the pipe") != NULL);
    fclose(f);
}

static void test_sha256(void)
{
    uint8_t d[32];
    char hex[65];
    tome_sha256("abc", 3, d);
    tome_hex(d, 32, hex);
    /* FIPS 180-2 test vector for "abc". */
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
}

static size_t unhex(const char *hex, char *out)
{
    size_t n = 0;
    if (strcmp(hex, "-") == 0) return 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        sscanf(hex, "%2x", &v);
        out[n++] = (char)v;
    }
    return n;
}

/* Repair against the Unicode Standard's own example (chapter 3, "U+FFFD
 * Substitution of Maximal Subparts") and against CPython's decoder on
 * tests/data/utf8-repair.txt. */
static void test_utf8_repair(void)
{
    static const char in[] = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
    static const char want[] =
        "a" TOME_UTF8_REPLACEMENT TOME_UTF8_REPLACEMENT TOME_UTF8_REPLACEMENT
        "b" TOME_UTF8_REPLACEMENT "c" TOME_UTF8_REPLACEMENT TOME_UTF8_REPLACEMENT "d";
    size_t len;
    char *out = tome_utf8_repair_dup(in, sizeof in - 1, &len);
    CHECK(out && len == sizeof want - 1 && memcmp(out, want, len) == 0);
    CHECK(out && tome_utf8_valid(out, len));
    free(out);
    /* Answers' repair: U+0000 too, whether alone or beside a bad byte. */
    static const char text_in[] = "a\0b\xFF\0";
    static const char text_want[] =
        "a" TOME_UTF8_REPLACEMENT "b" TOME_UTF8_REPLACEMENT TOME_UTF8_REPLACEMENT;
    char text_out[3 * sizeof text_in];
    size_t text_len = tome_text_repair(text_in, sizeof text_in - 1, text_out);
    CHECK(text_len == sizeof text_want - 1 && memcmp(text_out, text_want, text_len) == 0);
    CHECK(tome_utf8_repair(text_in, sizeof text_in - 1, text_out) == 7 && text_out[1] == 0);

    const char *src = getenv("TOME_SRCDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/utf8-repair.txt", src ? src : ".");
    FILE *f = fopen(path, "r");
    REQUIRE(f, "cannot open %s", path);
    char a[64], b[128], bytes[32], expect[64], got[96];
    int cases = 0;
    while (fscanf(f, "%63s %127s", a, b) == 2) {
        size_t n = unhex(a, bytes), m = unhex(b, expect);
        size_t k = tome_utf8_repair(bytes, n, got);
        CHECKF(k == m && memcmp(got, expect, m) == 0, "repair of %s", a);
        CHECKF(tome_utf8_valid(bytes, n) == (n == m && memcmp(bytes, expect, n) == 0),
               "validity of %s", a);
        cases++;
    }
    fclose(f);
    CHECKF(cases == 600, "%d cases read", cases);
}

static void test_utf8_pieces(void)
{
    CHECK(tome_utf8_char_length("\xE4\xB8\xAD", 3) == 3);
    CHECK(tome_utf8_char_length("\xE4\xB8\xAD", 2) == 0);     /* cut short */
    CHECK(tome_utf8_char_length("\xED\xA0\x80", 3) == 0);     /* a surrogate */
    CHECK(tome_utf8_char_length("\xC0\xAF", 2) == 0);         /* overlong */
    CHECK(tome_utf8_char_length("\xF4\x90\x80\x80", 4) == 0); /* past U+10FFFF */
    CHECK(tome_utf8_char_length("\xF0\x9F\x98\x80", 4) == 4);
    CHECK(tome_utf8_valid_prefix("ab\xC3\xA9\xFFz", 6) == 4);
    CHECK(tome_utf8_unfinished_tail("a\xE4\xB8", 3) == 2);
    CHECK(tome_utf8_unfinished_tail("a\xF0\x9F\x98", 4) == 3);
    CHECK(tome_utf8_unfinished_tail("a\xE4", 2) == 1);
    CHECK(tome_utf8_unfinished_tail("a\xE4\xB8\xAD", 4) == 0); /* finished */
    CHECK(tome_utf8_unfinished_tail("a\xE0\x80", 3) == 0);     /* can never finish */
    CHECK(tome_utf8_unfinished_tail("a\x80\x80", 3) == 0);     /* no lead */
    CHECK(tome_utf8_unfinished_tail("\xFF", 1) == 0);
    CHECK(tome_utf8_unfinished_tail("", 0) == 0);
}

int main(void)
{
    test_errors();
    test_error_utf8();
    test_files();
    test_sha256();
    test_stream();
    test_utf8_repair();
    test_utf8_pieces();
    return check_finish();
}
