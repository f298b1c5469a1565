/*
 * regex.c - the pre-tokenizer's regular expressions under PCRE2.
 *
 * tokenizer.json spells its Split patterns for Oniguruma, the engine that
 * Hugging Face's tokenizers use.  PCRE2 reads the same syntax, but a few
 * escapes mean different things there, and every difference changes where
 * words are cut, hence the ids.  So a pattern is translated before it is
 * compiled:
 *
 *   \s  Oniguruma's Unicode whitespace is an explicit list of 25 code
 *       points.  PCRE2's \s under UCP also takes U+180E (via \h), which
 *       Oniguruma does not; the golden vectors split differently there.
 *       \s becomes the explicit class, \S its negation.
 *   \h  is a hexadecimal digit in Oniguruma, horizontal space in PCRE2.
 *   \p{L}, \p{M}, \p{N}, \p{P}, \p{S}  follow each engine's Unicode
 *       tables, and the reference's are newer than Debian's PCRE2: the
 *       characters assigned since (unicode.c) are added to the class.
 *
 * Everything else (\p{..}, \x{..}, classes, lookahead) passes through.
 *
 * Compilation uses PCRE2_UTF | PCRE2_UCP for Unicode semantics, and
 * PCRE2_MATCH_INVALID_UTF so that input that is not valid UTF-8 can be
 * matched at all: an invalid byte never matches any pattern item, so it ends
 * up in an unmatched stretch, which the Split step emits as a piece of its
 * own and BPE encodes from its raw bytes.  (Hugging Face cannot take such
 * input; this is tome's documented extension, see tome-tokenize(1).)
 * The pattern is JIT-compiled when the platform supports it.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

/* Oniguruma's Unicode \s, without the brackets. */
static const char space_class[] = "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}"
                                  "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
static const char hex_class[] = "0-9A-Fa-f";

typedef struct out_text {
    char *s;
    size_t len, cap;
} out_text;

/* Append n bytes; 0 or TOME_ENOMEM. */
static int put(out_text *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->len + n + 1) * 2;
        char *p = realloc(o->s, cap);
        if (!p) return TOME_ENOMEM;
        o->s = p;
        o->cap = cap;
    }
    memcpy(o->s + o->len, s, n);
    o->len += n;
    o->s[o->len] = '\0';
    return 0;
}

static int put_str(out_text *o, const char *s)
{
    return put(o, s, strlen(s));
}

/* The members of Oniguruma's \s or \h, or NULL for any other escape. */
static const char *class_members(char letter)
{
    switch (letter) {
    case 's':
    case 'S':
        return space_class;
    case 'h':
    case 'H':
        return hex_class;
    default:
        return NULL;
    }
}

/* Write the translation of the escape `\c`; `in_class` says whether it sits
 * inside brackets, where only the positive forms can be spelled out. */
static int put_escape(out_text *o, char c, int in_class, tome_error *err)
{
    const char *members = class_members(c);
    if (!members) {
        char esc[2] = {'\\', c};
        return put(o, esc, 2);
    }
    int negated = c == 'S' || c == 'H';
    if (in_class && negated)
        return tome_errorf(err, TOME_EFORMAT,
                           "\\%c inside a character class has no PCRE2 equivalent", c);
    if (in_class) return put_str(o, members);
    int rc = put_str(o, negated ? "[^" : "[");
    if (rc == 0) rc = put_str(o, members);
    if (rc == 0) rc = put_str(o, "]");
    return rc;
}

/* Translate `\p{NAME}` or `\P{NAME}` starting at pattern[i] (the
 * backslash); returns the index of its last byte, or 0 if it is not one
 * whose class needs the newer characters (then it is copied as it is). */
static size_t put_property(out_text *o, const char *pattern, size_t len, size_t i, int in_class,
                           int *rc, tome_error *err)
{
    if (i + 3 >= len || (pattern[i + 1] != 'p' && pattern[i + 1] != 'P') || pattern[i + 2] != '{')
        return 0;
    const char *name = pattern + i + 3;
    const char *close = memchr(name, '}', len - (i + 3));
    const char *newer = close ? tok_unicode_newer(name, (size_t)(close - name)) : NULL;
    if (!newer) return 0;
    size_t end = (size_t)(close - pattern);
    int negated = pattern[i + 1] == 'P';
    if (in_class && negated) {
        int n = (int)(close - name);
        *rc = tome_errorf(err, TOME_EFORMAT, "\\P{%.*s} in a class has no PCRE2 form", n, name);
        return end;
    }
    *rc = in_class ? 0 : put_str(o, negated ? "[^\\p{" : "[\\p{");
    if (*rc == 0 && in_class) *rc = put_str(o, "\\p{");
    if (*rc == 0) *rc = put(o, name, (size_t)(close - name));
    if (*rc == 0) *rc = put_str(o, "}");
    if (*rc == 0) *rc = put_str(o, newer);
    if (*rc == 0 && !in_class) *rc = put_str(o, "]");
    return end;
}

/* Copy a "[" that opens a class, with a leading "^" and a leading "]"
 * (a literal member there); returns the index of the last byte consumed. */
static size_t put_class_open(out_text *o, const char *pattern, size_t len, size_t i, int *rc)
{
    size_t end = i + 1;
    if (end < len && pattern[end] == '^') end++;
    if (end < len && pattern[end] == ']') end++;
    *rc = put(o, pattern + i, end - i);
    return end - 1;
}

int tok_regex_translate(const char *pattern, size_t len, char **out, tome_error *err)
{
    out_text o = {0};
    int depth = 0; /* nesting of [...] */
    int rc = put(&o, "", 0);
    for (size_t i = 0; i < len && rc == 0; i++) {
        char c = pattern[i];
        size_t property_end =
            c == '\\' ? put_property(&o, pattern, len, i, depth > 0, &rc, err) : 0;
        if (property_end) {
            i = property_end;
        } else if (c == '\\' && i + 1 < len) {
            rc = put_escape(&o, pattern[++i], depth > 0, err);
        } else if (c == '[' && depth > 0 && i + 1 < len && pattern[i + 1] == ':') {
            /* "[:name:]" inside a class is a POSIX class, not a nested one. */
            const char *close = memchr(pattern + i, ']', len - i);
            size_t n = close ? (size_t)(close - (pattern + i)) + 1 : len - i;
            rc = put(&o, pattern + i, n);
            i += n - 1;
        } else if (c == '[') {
            depth++;
            i = put_class_open(&o, pattern, len, i, &rc);
        } else {
            if (c == ']' && depth > 0) depth--;
            rc = put(&o, &c, 1);
        }
    }
    if (rc != 0) {
        free(o.s);
        if (rc == TOME_ENOMEM)
            return tome_errorf(err, TOME_ENOMEM, "out of memory translating a regex");
        return rc;
    }
    *out = o.s;
    return 0;
}

int tok_regex_compile(tok_regex *re, const char *pattern, size_t len, int literal,
                      const char *origin, tome_error *err)
{
    char *translated = NULL;
    const char *src = pattern;
    size_t src_len = len;
    if (!literal) {
        int rc = tok_regex_translate(pattern, len, &translated, err);
        if (rc) {
            tome_error_wrap(err, "%s", origin);
            return rc;
        }
        src = translated;
        src_len = strlen(translated);
    }
    uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
    if (literal) options |= PCRE2_LITERAL;
    int code;
    PCRE2_SIZE offset;
    re->code = pcre2_compile((PCRE2_SPTR)src, src_len, options, &code, &offset, NULL);
    free(translated);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return tome_errorf(err, TOME_EFORMAT, "%s: regex does not compile at offset %zu: %s",
                           origin, (size_t)offset, (const char *)msg);
    }
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

void tok_regex_free(tok_regex *re)
{
    pcre2_code_free(re->code);
    re->code = NULL;
}
