/* Unit tests for common/: error formatting, whole-file I/O, atomic replace. */
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

int main(void)
{
    test_errors();
    test_files();
    test_sha256();
    test_stream();
    return check_finish();
}
