/*
 * tok_detok.c - ids back to bytes, in one go or as a stream.
 *
 * Every id stands for a fixed byte string (loaded once, tok_load.c), so
 * decoding is concatenation.  The only subtlety is streaming: a byte-level
 * token can end in the middle of a UTF-8 character ("é" may be split over
 * two tokens), and a client that prints each piece as it comes would show
 * garbage.  The stream decoder therefore holds back a trailing sequence
 * that is a valid beginning of a character but not yet complete, and
 * releases it with the byte that completes it.  Bytes that can never start
 * or continue a valid character are not held (waiting would not help), so
 * output never lags by more than three bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/tok_internal.h"

struct v4_detok {
    const v4_tokenizer *t;
    char held[4];
    size_t n_held;
    char *out;
    size_t out_cap;
};

int v4_detok_new(const v4_tokenizer *t, v4_detok **out, tome_error *err)
{
    v4_detok *d = calloc(1, sizeof *d);
    if (!d) return tome_errorf(err, TOME_ENOMEM, "out of memory for a stream decoder");
    d->t = t;
    *out = d;
    return 0;
}

void v4_detok_free(v4_detok *d)
{
    if (!d) return;
    free(d->out);
    free(d);
}

/* Length of the character a lead byte starts, 0 if it cannot start one. */
static size_t utf8_length(uint8_t lead)
{
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

/* Whether `second` may follow `lead` (no overlongs, surrogates or > U+10FFFF). */
static int second_byte_ok(uint8_t lead, uint8_t second)
{
    uint8_t lo = 0x80, hi = 0xBF;
    if (lead == 0xE0)
        lo = 0xA0;
    else if (lead == 0xED)
        hi = 0x9F;
    else if (lead == 0xF0)
        lo = 0x90;
    else if (lead == 0xF4)
        hi = 0x8F;
    return second >= lo && second <= hi;
}

/* How many bytes at the end of s[0, n) begin a character that is still
 * incomplete (0 if none). */
static size_t incomplete_tail(const char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t b = (uint8_t)s[n - back];
        if ((b & 0xC0) == 0x80) continue; /* a continuation byte: look further back */
        size_t need = utf8_length(b);
        if (need <= back) return 0;
        if (back >= 2 && !second_byte_ok(b, (uint8_t)s[n - back + 1])) return 0;
        return back;
    }
    return 0;
}

int v4_detok_feed(v4_detok *d, int32_t id, const char **text, size_t *len, tome_error *err)
{
    const char *bytes;
    size_t n;
    if (v4_token_bytes(d->t, id, &bytes, &n) != 0)
        return tome_errorf(err, TOME_EINVAL, "token id %d is not in the vocabulary", (int)id);
    size_t total = d->n_held + n;
    if (total + 1 > d->out_cap) {
        char *p = realloc(d->out, total + 64);
        if (!p) return tome_errorf(err, TOME_ENOMEM, "out of memory decoding token %d", (int)id);
        d->out = p;
        d->out_cap = total + 64;
    }
    memcpy(d->out, d->held, d->n_held);
    memcpy(d->out + d->n_held, bytes, n);
    size_t keep = incomplete_tail(d->out, total);
    memcpy(d->held, d->out + total - keep, keep);
    d->n_held = keep;
    d->out[total - keep] = '\0';
    *text = d->out;
    *len = total - keep;
    return 0;
}

void v4_detok_flush(v4_detok *d, const char **text, size_t *len)
{
    /* out always has room for the held bytes: they were copied out of it. */
    if (d->out) memcpy(d->out, d->held, d->n_held);
    *text = d->out ? d->out : "";
    *len = d->n_held;
    d->n_held = 0;
}

int v4_detokenize(const v4_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len,
                  tome_error *err)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *bytes;
        size_t k;
        if (v4_token_bytes(t, ids[i], &bytes, &k) != 0)
            return tome_errorf(err, TOME_EINVAL,
                               "token id %d (position %zu) is not in the "
                               "vocabulary",
                               (int)ids[i], i);
        total += k;
    }
    char *out = malloc(total + 1);
    if (!out) return tome_errorf(err, TOME_ENOMEM, "out of memory decoding %zu ids", n);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const char *bytes;
        size_t k;
        v4_token_bytes(t, ids[i], &bytes, &k);
        memcpy(out + at, bytes, k);
        at += k;
    }
    out[at] = '\0';
    *text = out;
    *len = at;
    return 0;
}
