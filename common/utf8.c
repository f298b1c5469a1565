/*
 * utf8.c - UTF-8 as RFC 3629 defines it: checking, finding where an
 * unfinished character begins, and repairing ill-formed text.
 *
 * Several modules meet bytes that claim to be UTF-8 and may not be: the
 * ingester (file names, document text), the tokenizer's stream decoder (a
 * byte-level BPE model can emit any byte sequence at all) and the daemon
 * (request targets, and every string it puts into JSON, which must be
 * valid UTF-8).  They share this one definition so that "valid" means the
 * same everywhere.
 *
 * Repair follows the Unicode Standard's recommended practice (chapter 3,
 * "U+FFFD Substitution of Maximal Subparts"), which is also what Python's
 * errors="replace", Rust's from_utf8_lossy and the WHATWG decoder do: each
 * maximal subpart of an ill-formed sequence (the longest prefix of a
 * well-formed character that the bytes begin, or a single byte that
 * begins none) becomes one U+FFFD.
 */
#include "common/common.h"

#include <stdlib.h>
#include <string.h>

/* How many bytes the character begun by `lead` has, 0 if it cannot begin
 * one (a continuation byte, C0/C1 overlong leads, F5..FF). */
static size_t sequence_length(uint8_t lead)
{
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

/* Whether `b` may stand at index `i` (>= 1) of the sequence begun by `lead`:
 * the second byte's range excludes overlongs, surrogates and values past
 * U+10FFFF (RFC 3629, table 3-7 of the Unicode Standard). */
static int continuation_ok(uint8_t lead, size_t i, uint8_t b)
{
    uint8_t lo = 0x80, hi = 0xBF;
    if (i == 1) {
        if (lead == 0xE0)
            lo = 0xA0;
        else if (lead == 0xED)
            hi = 0x9F;
        else if (lead == 0xF0)
            lo = 0x90;
        else if (lead == 0xF4)
            hi = 0x8F;
    }
    return b >= lo && b <= hi;
}

/* Scan the sequence at p: returns how many bytes belong to it (a whole
 * character, or the maximal subpart of an ill-formed one, at least 1) and
 * sets *whole when they form a complete character. */
static size_t scan(const uint8_t *p, size_t left, int *whole)
{
    size_t need = sequence_length(p[0]);
    *whole = 0;
    if (need == 0) return 1;
    size_t i = 1;
    while (i < need && i < left && continuation_ok(p[0], i, p[i])) i++;
    *whole = i == need;
    return i;
}

size_t tome_utf8_char_length(const void *s, size_t left)
{
    if (left == 0) return 0;
    int whole;
    size_t n = scan(s, left, &whole);
    return whole ? n : 0;
}

size_t tome_utf8_valid_prefix(const void *s, size_t n)
{
    const uint8_t *p = s;
    size_t at = 0;
    while (at < n) {
        size_t k = tome_utf8_char_length(p + at, n - at);
        if (k == 0) break;
        at += k;
    }
    return at;
}

int tome_utf8_valid(const void *s, size_t n)
{
    return tome_utf8_valid_prefix(s, n) == n;
}

size_t tome_utf8_unfinished_tail(const void *s, size_t n)
{
    const uint8_t *p = s;
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t b = p[n - back];
        if ((b & 0xC0) == 0x80) continue; /* a continuation byte: look further back */
        int whole;
        size_t k = scan(p + n - back, back, &whole);
        return !whole && k == back && sequence_length(b) > back ? back : 0;
    }
    return 0;
}

/* The repair, where `nul_too` also replaces each U+0000. */
static size_t repair(const uint8_t *p, size_t n, char *out, int nul_too)
{
    size_t at = 0, len = 0;
    while (at < n) {
        int whole;
        size_t k = scan(p + at, n - at, &whole);
        if (whole && !(nul_too && p[at] == 0)) {
            memcpy(out + len, p + at, k);
            len += k;
        } else {
            memcpy(out + len, TOME_UTF8_REPLACEMENT, 3);
            len += 3;
        }
        at += k;
    }
    return len;
}

size_t tome_utf8_repair(const void *in, size_t n, char *out)
{
    return repair(in, n, out, 0);
}

size_t tome_text_repair(const void *in, size_t n, char *out)
{
    return repair(in, n, out, 1);
}

char *tome_utf8_repair_dup(const void *in, size_t n, size_t *out_len)
{
    char *out = malloc(3 * n + 1);
    if (!out) return NULL;
    size_t len = tome_utf8_repair(in, n, out);
    out[len] = '\0';
    if (out_len) *out_len = len;
    return out;
}
