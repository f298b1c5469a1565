/*
 * grep.c - regular-expression search over a corpus version, by line.
 *
 * PCRE2 runs over each document's whole text (multiline, so ^ and $ work
 * per line, and a pattern may span lines); a hit is the line where a match
 * starts, reported once however many matches it holds.  Line numbers are
 * counted incrementally between matches, so a document is scanned once.
 * JIT compilation is used when the platform has it, as it makes searching a
 * large corpus several times faster; without it the interpreter gives the
 * same results.
 */
#include "ingest/ingest-internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>

static int compile(const char *pattern, pcre2_code **re, tome_error *err)
{
    int code;
    PCRE2_SIZE offset;
    *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_MULTILINE,
                        &code, &offset, NULL);
    if (!*re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return tome_errorf(err, TOME_EINVAL, "regex \"%s\": %s at offset %zu", pattern,
                           (const char *)msg, (size_t)offset);
    }
    pcre2_jit_compile(*re, PCRE2_JIT_COMPLETE);
    return 0;
}

/* Hits in one document's text. */
static int grep_text(const pcre2_code *re, pcre2_match_data *md, const store_document *d,
                     size_t max, store_hits *out, tome_error *err)
{
    const char *text = d->text;
    size_t len = d->text_len, at = 0, counted = 0;
    int64_t line = 1, last_reported = 0;
    while (at <= len && out->n < max) {
        int rc = pcre2_match(re, (PCRE2_SPTR)text, len, at, 0, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return tome_errorf(err, TOME_EINVAL, "searching %s: %s", d->path, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t start = ov[0];
        for (const char *p = text + counted; (p = memchr(p, '\n', start - (size_t)(p - text))); p++)
            line++;
        counted = start;
        if (line != last_reported) {
            size_t bol = start, eol = start;
            while (bol > 0 && text[bol - 1] != '\n') bol--;
            while (eol < len && text[eol] != '\n') eol++;
            if (eol > bol && text[eol - 1] == '\r') eol--;
            rc = store_hits_add(out, d->path, line, text + bol, eol - bol, err);
            if (rc) return rc;
            last_reported = line;
        }
        /* Continue after the match; an empty match moves one byte on. */
        at = ov[1] > start ? ov[1] : start + 1;
        while (at < len && (text[at] & 0xc0) == 0x80) at++;
    }
    return 0;
}

int ingest_grep(store *s, int64_t version_id, const char *pattern, size_t max, store_hits *out,
                tome_error *err)
{
    pcre2_code *re;
    int rc = compile(pattern, &re, err);
    if (rc) return rc;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    store_document_list list = {0};
    rc = md ? store_version_documents(s, version_id, &list, err)
            : tome_errorf(err, TOME_ENOMEM, "out of memory searching");
    for (size_t i = 0; i < list.n && !rc && out->n < max; i++) {
        store_document d;
        rc = store_document_get(s, list.docs[i].id, &d, err);
        if (!rc) rc = grep_text(re, md, &d, max, out, err);
        store_document_clear(&d);
    }
    store_document_list_free(&list);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc;
}
