/*
 * pyjson.c - JSON text exactly as Python's json.dumps(v,
 * ensure_ascii=False) writes it.
 *
 * The official encoder puts tool schemas, response formats and non-string
 * tool arguments into the prompt with json.dumps, so its bytes are part of
 * the format: ", " and ": " as separators, keys in input order, non-ASCII
 * kept as UTF-8, control characters as \n-style or \u00XX escapes, and
 * floats in Python's repr (shortest round-trip digits, "1.0", "1e-05",
 * "1e+16").
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/chat_internal.h"

static int put_string(v4_prompt *p, const char *s, size_t n, tome_error *err)
{
    int rc = chat_content(p, "\"", err);
    size_t run = 0; /* bytes before s[i] not yet written */
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        char esc[8];
        switch (c) {
        case '"':
            strcpy(esc, "\\\"");
            break;
        case '\\':
            strcpy(esc, "\\\\");
            break;
        case '\n':
            strcpy(esc, "\\n");
            break;
        case '\r':
            strcpy(esc, "\\r");
            break;
        case '\t':
            strcpy(esc, "\\t");
            break;
        case '\b':
            strcpy(esc, "\\b");
            break;
        case '\f':
            strcpy(esc, "\\f");
            break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            break;
        }
        rc = chat_put_content(p, s + i - run, run, err);
        if (rc == 0) rc = chat_content(p, esc, err);
        run = 0;
    }
    if (rc == 0) rc = chat_put_content(p, s + n - run, run, err);
    return rc ? rc : chat_content(p, "\"", err);
}

/* Python's repr() of a finite double: the shortest digits that read back
 * as the same double, in positional notation for 1e-4 <= |x| < 1e16 and in
 * exponent notation ("1e-05", "1.5e+16") outside. */
static void python_float(double x, char *out, size_t size)
{
    char sci[40];
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(sci, sizeof sci, "%.*e", digits - 1, x);
        if (strtod(sci, NULL) == x) break;
    }
    /* sci is "[-]d[.ddd]e[+-]XX": collect the digits and the exponent. */
    char digits[24];
    int n = 0;
    const char *s = sci;
    const char *sign = *s == '-' ? "-" : "";
    s += *sign != '\0';
    for (; *s != 'e' && n < 20; s++)
        if (*s != '.') digits[n++] = *s;
    digits[n] = '\0';
    int point = atoi(s + 1) + 1; /* digits before the decimal point */
    static const char zeros[] = "0000000000000000";
    if (point > -4 && point <= 0)
        snprintf(out, size, "%s0.%.*s%s", sign, -point, zeros, digits);
    else if (point > 0 && point <= 16 && point >= n)
        snprintf(out, size, "%s%s%.*s.0", sign, digits, point - n, zeros);
    else if (point > 0 && point <= 16)
        snprintf(out, size, "%s%.*s.%s", sign, point, digits, digits + point);
    else
        snprintf(out, size, "%s%c%s%se%c%02d", sign, digits[0], n > 1 ? "." : "", digits + 1,
                 point - 1 < 0 ? '-' : '+', abs(point - 1));
}

static int put_scalar(v4_prompt *p, const json_t *v, tome_error *err)
{
    char buf[64];
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        python_float(json_real_value(v), buf, sizeof buf);
        break;
    case JSON_TRUE:
        strcpy(buf, "true");
        break;
    case JSON_FALSE:
        strcpy(buf, "false");
        break;
    default:
        strcpy(buf, "null");
        break;
    }
    return chat_content(p, buf, err);
}

int chat_put_pyjson(v4_prompt *p, const json_t *v, tome_error *err)
{
    int rc = 0;
    if (json_is_string(v)) return put_string(p, json_string_value(v), json_string_length(v), err);
    if (json_is_array(v)) {
        size_t i;
        const json_t *item;
        rc = chat_content(p, "[", err);
        json_array_foreach(v, i, item) {
            if (rc == 0 && i > 0) rc = chat_content(p, ", ", err);
            if (rc == 0) rc = chat_put_pyjson(p, item, err);
        }
        return rc ? rc : chat_content(p, "]", err);
    }
    if (json_is_object(v)) {
        const char *key;
        size_t key_len;
        const json_t *item;
        int first = 1;
        rc = chat_content(p, "{", err);
        json_object_keylen_foreach((json_t *)v, key, key_len, item)
        {
            if (rc == 0 && !first) rc = chat_content(p, ", ", err);
            if (rc == 0) rc = put_string(p, key, key_len, err);
            if (rc == 0) rc = chat_content(p, ": ", err);
            if (rc == 0) rc = chat_put_pyjson(p, item, err);
            first = 0;
        }
        return rc ? rc : chat_content(p, "}", err);
    }
    return put_scalar(p, v, err);
}
