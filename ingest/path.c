/*
 * path.c - turning entry names from untrusted archives into stored paths.
 *
 * Nothing is ever extracted, so a hostile name cannot write anywhere; but
 * paths are shown to the model and to users, used in citations and
 * compared between versions, so they must be canonical and unambiguous:
 * one spelling per file ("./a//b" and "a/b" are the same document), no
 * way to pose as a file outside the corpus ("../../etc/passwd", "/etc"),
 * and no bytes that could forge a document header in the rendered prompt
 * (control characters, a NUL that would cut the name short).
 */
#include "ingest/ingest-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Check every byte: NUL, control characters, invalid UTF-8. */
static const char *unsafe_bytes(const char *name, size_t len)
{
    const unsigned char *p = (const unsigned char *)name;
    for (size_t i = 0; i < len;) {
        if (p[i] == 0) return "the name contains a NUL byte";
        if (p[i] < 0x20 || p[i] == 0x7f) return "the name contains control characters";
        size_t n = tome_utf8_char_length(p + i, len - i);
        if (!n) return "the name is not valid UTF-8";
        i += n;
    }
    return NULL;
}

/* Append component [c, c+n) to out (length *k), or pop one for "..". */
static int push_component(char *out, size_t *k, const char *c, size_t n)
{
    if (n == 0 || (n == 1 && c[0] == '.')) return 0;
    if (n == 2 && c[0] == '.' && c[1] == '.') {
        if (*k == 0) return -1;
        char *slash = memrchr(out, '/', *k);
        *k = slash ? (size_t)(slash - out) : 0;
        return 0;
    }
    if (*k) out[(*k)++] = '/';
    memcpy(out + *k, c, n);
    *k += n;
    return 0;
}

int ingest_path_normalise(const char *name, size_t len, size_t max_bytes, char **out,
                          const char **why)
{
    *out = NULL;
    *why = unsafe_bytes(name, len);
    if (*why) return TOME_EPERM;
    if (len > 0 && name[0] == '/') {
        *why = "the path is absolute";
        return TOME_EPERM;
    }
    char *norm = malloc(len + 1);
    if (!norm) return TOME_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i <= len;) {
        const char *slash = memchr(name + i, '/', len - i);
        size_t end = slash ? (size_t)(slash - name) : len;
        if (push_component(norm, &k, name + i, end - i) != 0) {
            free(norm);
            *why = "the path escapes the archive root";
            return TOME_EPERM;
        }
        i = end + 1;
    }
    norm[k] = '\0';
    if (k > max_bytes) {
        free(norm);
        *why = "the path is longer than the limit";
        return TOME_ELIMIT;
    }
    *out = norm;
    return 0;
}

void ingest_escape_name(const char *name, size_t len, char *out)
{
    const unsigned char *p = (const unsigned char *)name;
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        size_t n = p[i] >= 0x20 && p[i] != 0x7f ? tome_utf8_char_length(p + i, len - i) : 0;
        if (n) {
            memcpy(out + k, p + i, n);
            k += n;
            i += n;
        } else {
            k += (size_t)sprintf(out + k, "\\x%02x", p[i]);
            i++;
        }
    }
    out[k] = '\0';
}
