/*
 * detok.c - ids back to bytes, in one go or as a stream.
 *
 * Every id stands for a fixed byte string (loaded once, load.c), so
 * decoding is concatenation.  The only subtlety is streaming: a byte-level
 * token can end in the middle of a UTF-8 character ("é" may be split over
 * two tokens), and a client that prints each piece as it comes would show
 * garbage.  The stream decoder therefore holds back a trailing sequence
 * that is a valid beginning of a character but not yet complete, and
 * releases it with the byte that completes it.  Bytes that can never start
 * or continue a valid character are not held (waiting would not help), so
 * output never lags by more than three bytes.
 *
 * Such bytes are real: a model can emit any token after any other, and a
 * byte-level vocabulary has tokens that are fragments of characters.  A
 * byte-exact decoder passes them on (tome-tokenize, round trips); one made
 * with V4_DETOK_VALID_UTF8 replaces each ill-formed piece by U+FFFD, as
 * Hugging Face's decode does, and each NUL too, so that what it hands out
 * is always valid UTF-8 that can go into JSON and C strings alike: that is
 * the one answers are decoded with.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

struct v4_detok {
    const v4_tokenizer *t;
    unsigned flags;
    char held[4];
    size_t n_held;
    char *raw; /* the held bytes and the new token's, before any repair */
    size_t raw_cap;
    char *out; /* what feed and flush hand back */
    size_t out_cap;
};

int v4_detok_new(const v4_tokenizer *t, unsigned flags, v4_detok **out, tome_error *err)
{
    v4_detok *d = calloc(1, sizeof *d);
    if (!d) return tome_errorf(err, TOME_ENOMEM, "out of memory for a stream decoder");
    d->t = t;
    d->flags = flags;
    *out = d;
    return 0;
}

void v4_detok_free(v4_detok *d)
{
    if (!d) return;
    free(d->raw);
    free(d->out);
    free(d);
}

static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    char *p = realloc(*buf, need + 64);
    if (!p) return -1;
    *buf = p;
    *cap = need + 64;
    return 0;
}

int v4_detok_feed(v4_detok *d, int32_t id, const char **text, size_t *len, tome_error *err)
{
    const char *bytes;
    size_t n;
    if (v4_token_bytes(d->t, id, &bytes, &n) != 0)
        return tome_errorf(err, TOME_EINVAL, "token id %d is not in the vocabulary", (int)id);
    size_t total = d->n_held + n;
    /* Repair writes at most three bytes (U+FFFD) for each byte it reads. */
    if (reserve(&d->raw, &d->raw_cap, total) != 0 ||
        reserve(&d->out, &d->out_cap, 3 * total + 4) != 0)
        return tome_errorf(err, TOME_ENOMEM, "out of memory decoding token %d", (int)id);
    memcpy(d->raw, d->held, d->n_held);
    memcpy(d->raw + d->n_held, bytes, n);
    size_t keep = tome_utf8_unfinished_tail(d->raw, total);
    memcpy(d->held, d->raw + total - keep, keep);
    d->n_held = keep;
    size_t done = total - keep;
    if (d->flags & V4_DETOK_VALID_UTF8) {
        done = tome_text_repair(d->raw, done, d->out);
    } else {
        memcpy(d->out, d->raw, done);
    }
    d->out[done] = '\0';
    *text = d->out;
    *len = done;
    return 0;
}

void v4_detok_flush(v4_detok *d, const char **text, size_t *len)
{
    /* out has room for the held bytes: feed reserved 3 * total + 4. */
    *text = "";
    *len = 0;
    if (d->n_held && (d->flags & V4_DETOK_VALID_UTF8)) {
        /* The held bytes are one unfinished character: one U+FFFD. */
        *text = TOME_UTF8_REPLACEMENT;
        *len = 3;
    } else if (d->n_held) {
        memcpy(d->out, d->held, d->n_held);
        *text = d->out;
        *len = d->n_held;
    }
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
