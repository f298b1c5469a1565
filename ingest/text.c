/*
 * text.c - is it text, and what does it say in UTF-8.
 *
 * The store and the prompt hold UTF-8 only, so every document is decoded
 * once at ingest.  The order of the tests matters: a byte-order mark is
 * decisive (UTF-16 text is full of NUL bytes, so the NUL test must come
 * after it); then a NUL anywhere means binary (no text encoding tome reads
 * produces one); then valid UTF-8 is taken as UTF-8 (ASCII included), and
 * anything else as Latin-1 (every byte is a character).  Either way, if
 * odd control characters (C0 other than whitespace and ESC, DEL, and C1,
 * which Latin-1 text does not use) make up more than a tenth of the bytes,
 * it is binary: random or compressed data has about a quarter.
 *
 * Line endings are kept exactly (CRLF stays CRLF): line numbers count '\n'
 * only, which is what editors and `grep -n` show for such files too.
 */
#include "ingest/ingest-internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A control character that text does not contain: C0 other than
 * whitespace and ESC, DEL, and (for single-byte text) C1. */
static int is_odd_control(unsigned c)
{
    return (c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != 0x1b) ||
           (c >= 0x7f && c < 0xa0);
}

/* Valid UTF-8?  `*controls` counts the odd ASCII control characters. */
static int valid_utf8(const unsigned char *p, size_t len, size_t *controls)
{
    *controls = 0;
    for (size_t i = 0; i < len;) {
        /* ASCII is most of any source tree; keep its path short. */
        if (p[i] < 0x80) {
            *controls += is_odd_control(p[i]);
            i++;
            continue;
        }
        size_t n = tome_utf8_char_length(p + i, len - i);
        if (!n) return 0;
        i += n;
    }
    return 1;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* UTF-16 (after its BOM) to UTF-8; 1 if the units do not pair up. */
static int decode_utf16(const unsigned char *p, size_t len, int big_endian, ingest_text *out)
{
    if (len % 2) return 1;
    /* Each unit yields at most 3 bytes (a surrogate pair: 4 bytes for 2). */
    char *text = malloc(len / 2 * 3 + 1);
    if (!text) return TOME_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < len; i += 2) {
        unsigned u =
            big_endian ? (unsigned)(p[i] << 8 | p[i + 1]) : (unsigned)(p[i + 1] << 8 | p[i]);
        if (u >= 0xdc00 && u <= 0xdfff) goto invalid;
        if (u >= 0xd800 && u <= 0xdbff) {
            if (i + 3 >= len) goto invalid;
            unsigned lo = big_endian ? (unsigned)(p[i + 2] << 8 | p[i + 3])
                                     : (unsigned)(p[i + 3] << 8 | p[i + 2]);
            if (lo < 0xdc00 || lo > 0xdfff) goto invalid;
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            i += 2;
        }
        if (u == 0) goto invalid; /* NUL is binary in any encoding */
        k += put_utf8(text + k, u);
    }
    text[k] = '\0';
    out->text = text;
    out->len = k;
    out->encoding = big_endian ? "utf-16be" : "utf-16le";
    return 0;
invalid:
    free(text);
    return 1;
}

static int copy_text(const unsigned char *p, size_t len, const char *encoding, ingest_text *out)
{
    out->text = malloc(len + 1);
    if (!out->text) return TOME_ENOMEM;
    memcpy(out->text, p, len);
    out->text[len] = '\0';
    out->len = len;
    out->encoding = encoding;
    return 0;
}

static size_t count_controls(const unsigned char *p, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += is_odd_control(p[i]);
    return n;
}

static int decode_latin1(const unsigned char *p, size_t len, ingest_text *out)
{
    char *text = malloc(2 * len + 1);
    if (!text) return TOME_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) k += put_utf8(text + k, p[i]);
    text[k] = '\0';
    out->text = text;
    out->len = k;
    out->encoding = "latin-1";
    return 0;
}

static int64_t count_lines(const char *text, size_t len)
{
    int64_t n = 0;
    for (const char *p = text; (p = memchr(p, '\n', len - (size_t)(p - text))); p++) n++;
    return n + (len > 0 && text[len - 1] != '\n');
}

int ingest_text_decode(const unsigned char *data, size_t len, ingest_text *out, const char **why)
{
    memset(out, 0, sizeof *out);
    *why = NULL;
    int rc;
    size_t controls;
    if (len >= 2 && (data[0] == 0xff || data[0] == 0xfe) && (data[0] ^ data[1]) == 0x01) {
        rc = decode_utf16(data + 2, len - 2, data[0] == 0xfe, out);
        if (rc == 1) *why = "invalid UTF-16 after a byte-order mark";
    } else if (memchr(data, 0, len)) {
        *why = "binary: contains NUL bytes";
        rc = 1;
    } else if (valid_utf8(data, len, &controls)) {
        int bom = len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0;
        rc = controls * 10 > len ? 1
             : bom               ? copy_text(data + 3, len - 3, "utf-8-bom", out)
                                 : copy_text(data, len, "utf-8", out);
    } else {
        rc = count_controls(data, len) * 10 > len ? 1 : decode_latin1(data, len, out);
    }
    if (rc == 1 && !*why) *why = "binary: mostly control characters";
    if (rc == 0) out->lines = count_lines(out->text, out->len);
    return rc;
}

static const struct {
    const char *ext, *type;
} media_types[] = {
    {"c", "text/x-c"},
    {"h", "text/x-c"},
    {"cc", "text/x-c++"},
    {"cpp", "text/x-c++"},
    {"cxx", "text/x-c++"},
    {"hpp", "text/x-c++"},
    {"py", "text/x-python"},
    {"go", "text/x-go"},
    {"rs", "text/x-rust"},
    {"java", "text/x-java"},
    {"rb", "text/x-ruby"},
    {"sh", "text/x-shellscript"},
    {"js", "text/javascript"},
    {"mjs", "text/javascript"},
    {"ts", "text/x-typescript"},
    {"md", "text/markdown"},
    {"html", "text/html"},
    {"htm", "text/html"},
    {"css", "text/css"},
    {"csv", "text/csv"},
    {"tex", "text/x-tex"},
    {"json", "application/json"},
    {"xml", "application/xml"},
    {"yaml", "application/yaml"},
    {"yml", "application/yaml"},
    {"sql", "application/sql"},
    {"toml", "application/toml"},
};

const char *ingest_media_type(const char *path)
{
    const char *base = strrchr(path, '/');
    const char *dot = strrchr(base ? base + 1 : path, '.');
    if (dot && dot[1])
        for (size_t i = 0; i < sizeof media_types / sizeof media_types[0]; i++)
            if (strcasecmp(dot + 1, media_types[i].ext) == 0) return media_types[i].type;
    return "text/plain";
}
