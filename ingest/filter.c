/*
 * filter.c - which paths of a source become documents.
 *
 * Exclude rules follow .gitignore, because that is the syntax users
 * already write for "what is not source": a pattern without a slash
 * matches a name at any depth, one with a slash is anchored at the root,
 * a trailing slash matches directories only, "**" crosses directories,
 * "!" re-includes, and the last matching rule decides.  As in git, a file
 * below an excluded directory cannot be re-included; that rule is also
 * what lets the directory walker skip such a directory without opening
 * it.  PCRE2 rules match the whole normalised path and only exclude.
 * Include rules, when there are any, restrict the documents to paths that
 * match at least one of them (a glob include also matches a file below a
 * directory it names).
 *
 * The default excludes come first, so a user rule such as "!dist/" placed
 * after them overrides one.
 */
#include "ingest/ingest-internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const default_excludes[] = {
    /* version control */
    ".git/", ".hg/", ".svn/", ".bzr/", "CVS/", "_darcs/",
    /* dependency trees and tool caches */
    "node_modules/", "bower_components/", ".venv/", "__pycache__/", ".mypy_cache/",
    ".pytest_cache/", ".tox/", ".gradle/", ".idea/",
    /* build outputs */
    "build/", "dist/", "target/", "_build/", "*.o", "*.obj", "*.a", "*.so", "*.dylib", "*.dll",
    "*.exe", "*.class", "*.pyc", "*.pyo",
    /* lockfiles */
    "*.lock", "package-lock.json", "npm-shrinkwrap.json", "pnpm-lock.yaml", "go.sum",
    /* minified bundles and source maps */
    "*.min.js", "*.min.css", "*.map",
    /* desktop litter */
    ".DS_Store", NULL};

typedef struct rule {
    ingest_rule_kind kind;
    int negate, dir_only, anchored;
    char *glob;     /* the pattern proper (glob rules) */
    pcre2_code *re; /* regex rules */
    pcre2_match_data *md;
    char *reason; /* "excluded by ..." as shown in reports */
} rule;

struct ingest_filter {
    rule *rules; /* excludes, in order */
    size_t n_rules;
    rule *includes;
    size_t n_includes;
};

const char *const *ingest_default_excludes(void)
{
    return default_excludes;
}

/* Match a bracket expression at p ("[...]") against c; *end gets the
 * character after ']'.  Returns -1 for a malformed class (no ']'). */
static int match_class(const char *p, unsigned char c, const char **end)
{
    const char *q = p + 1;
    int negate = *q == '!' || *q == '^';
    if (negate) q++;
    int hit = 0;
    for (int first = 1; *q && (*q != ']' || first); first = 0) {
        unsigned char lo = (unsigned char)*q, hi = lo;
        if (q[1] == '-' && q[2] && q[2] != ']') {
            hi = (unsigned char)q[2];
            q += 3;
        } else {
            q++;
        }
        if (c >= lo && c <= hi) hit = 1;
    }
    if (*q != ']') return -1;
    *end = q + 1;
    return hit != negate;
}

/* fnmatch with FNM_PATHNAME semantics plus "**" matching across '/'. */
static int glob_match(const char *p, const char *s)
{
    for (; *p; p++) {
        if (p[0] == '*' && p[1] == '*') {
            p += 2;
            int slash = *p == '/';
            if (slash) p++;
            /* "**" then (optionally "/"): try every later start, where a
             * "**" followed by '/' must start at a directory boundary. */
            for (const char *t = s;; t++) {
                if ((!slash || t == s || t[-1] == '/') && glob_match(p, t)) return 1;
                if (!*t) return 0;
            }
        }
        switch (*p) {
        case '*':
            for (const char *t = s;; t++) {
                if (glob_match(p + 1, t)) return 1;
                if (!*t || *t == '/') return 0;
            }
        case '?':
            if (!*s || *s == '/') return 0;
            s++;
            break;
        case '[': {
            const char *end;
            int hit = *s && *s != '/' ? match_class(p, (unsigned char)*s, &end) : 0;
            if (hit < 0) { /* no closing ']': a literal '[' */
                if (*s != '[') return 0;
                s++;
                break;
            }
            if (!hit) return 0;
            s++;
            p = end - 1;
            break;
        }
        case '\\':
            if (p[1]) p++;
            /* fall through */
        default:
            if (*p != *s) return 0;
            s++;
        }
    }
    return *s == '\0';
}

static int glob_rule_matches(const rule *r, const char *path, int is_dir)
{
    if (r->dir_only && !is_dir) return 0;
    if (r->anchored) return glob_match(r->glob, path);
    const char *base = strrchr(path, '/');
    return glob_match(r->glob, base ? base + 1 : path);
}

static int regex_matches(const rule *r, const char *path)
{
    return pcre2_match(r->re, (PCRE2_SPTR)path, PCRE2_ZERO_TERMINATED, 0, 0, r->md, NULL) >= 0;
}

static int parse_glob(rule *r, const char *pattern, tome_error *err)
{
    const char *p = pattern;
    if (r->kind == INGEST_EXCLUDE_GLOB && *p == '!') {
        r->negate = 1;
        p++;
    }
    if (*p == '/') {
        r->anchored = 1;
        p++;
    }
    size_t len = strlen(p);
    if (len && p[len - 1] == '/') {
        r->dir_only = 1;
        len--;
    }
    if (!len) return tome_errorf(err, TOME_EINVAL, "filter pattern \"%s\" is empty", pattern);
    r->glob = strndup(p, len);
    if (!r->glob) return tome_errorf(err, TOME_ENOMEM, "out of memory adding a filter");
    if (memchr(r->glob, '/', len)) r->anchored = 1;
    return 0;
}

static int parse_regex(rule *r, const char *pattern, tome_error *err)
{
    int code;
    PCRE2_SIZE offset;
    r->re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &offset, NULL);
    if (!r->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return tome_errorf(err, TOME_EINVAL, "filter regex \"%s\": %s at offset %zu", pattern,
                           (const char *)msg, (size_t)offset);
    }
    r->md = pcre2_match_data_create_from_pattern(r->re, NULL);
    if (!r->md) return tome_errorf(err, TOME_ENOMEM, "out of memory adding a filter");
    return 0;
}

static void rule_clear(rule *r)
{
    free(r->glob);
    free(r->reason);
    pcre2_match_data_free(r->md);
    pcre2_code_free(r->re);
}

int ingest_filter_add(ingest_filter *f, ingest_rule_kind kind, const char *pattern, tome_error *err)
{
    int include = kind == INGEST_INCLUDE_GLOB || kind == INGEST_INCLUDE_REGEX;
    rule **list = include ? &f->includes : &f->rules;
    size_t *n = include ? &f->n_includes : &f->n_rules;
    rule *grown = realloc(*list, (*n + 1) * sizeof *grown);
    if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory adding a filter");
    *list = grown;
    rule *r = &grown[*n];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    int glob = kind == INGEST_EXCLUDE_GLOB || kind == INGEST_INCLUDE_GLOB;
    int rc = glob ? parse_glob(r, pattern, err) : parse_regex(r, pattern, err);
    char reason[300];
    snprintf(reason, sizeof reason, "%s %s \"%s\"", include ? "not matched by" : "excluded by",
             glob ? "pattern" : "regex", pattern);
    if (!rc && !(r->reason = strdup(reason)))
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory adding a filter");
    if (rc) {
        rule_clear(r);
        return rc;
    }
    (*n)++;
    return 0;
}

int ingest_filter_new(int with_defaults, ingest_filter **out, tome_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return tome_errorf(err, TOME_ENOMEM, "out of memory creating a filter");
    for (const char *const *p = default_excludes; with_defaults && *p; p++) {
        int rc = ingest_filter_add(*out, INGEST_EXCLUDE_GLOB, *p, err);
        if (rc) {
            ingest_filter_free(*out);
            *out = NULL;
            return rc;
        }
    }
    return 0;
}

void ingest_filter_free(ingest_filter *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_rules; i++) rule_clear(&f->rules[i]);
    for (size_t i = 0; i < f->n_includes; i++) rule_clear(&f->includes[i]);
    free(f->rules);
    free(f->includes);
    free(f);
}

/* The last exclude rule matching `path` decides; returns it if it
 * excludes, NULL if the path is kept. */
static const rule *deciding_rule(const ingest_filter *f, const char *path, int is_dir)
{
    const rule *last = NULL;
    for (size_t i = 0; i < f->n_rules; i++) {
        const rule *r = &f->rules[i];
        int hit = r->kind == INGEST_EXCLUDE_GLOB ? glob_rule_matches(r, path, is_dir)
                                                 : !is_dir && regex_matches(r, path);
        if (hit) last = r;
    }
    return last && !last->negate ? last : NULL;
}

int ingest_filter_excludes_dir(const ingest_filter *f, const char *path, const char **reason)
{
    if (!f) return 0;
    const rule *r = deciding_rule(f, path, 1);
    if (r) *reason = r->reason;
    return r != NULL;
}

/* Does a leading directory of `path` match include rule `inc` (or, when
 * `inc` is NULL, does the filter exclude one)?  Works on a copy, cutting
 * it at each '/' in turn. */
static int dir_prefix_matches(const ingest_filter *f, const rule *inc, const char *path,
                              const char **reason)
{
    char *copy = strdup(path);
    if (!copy) return 0;
    int hit = 0;
    for (char *s = strchr(copy, '/'); s && !hit; s = strchr(s + 1, '/')) {
        *s = '\0';
        hit = inc ? glob_rule_matches(inc, copy, 1) : ingest_filter_excludes_dir(f, copy, reason);
        *s = '/';
    }
    free(copy);
    return hit;
}

static int included(const ingest_filter *f, const char *path)
{
    for (size_t i = 0; i < f->n_includes; i++) {
        const rule *r = &f->includes[i];
        if (r->kind == INGEST_INCLUDE_REGEX) {
            if (regex_matches(r, path)) return 1;
            continue;
        }
        const char *unused;
        if (glob_rule_matches(r, path, 0) || dir_prefix_matches(f, r, path, &unused)) return 1;
    }
    return 0;
}

int ingest_filter_excludes(const ingest_filter *f, const char *path, const char **reason)
{
    if (!f) return 0;
    if (dir_prefix_matches(f, NULL, path, reason)) return 1;
    const rule *r = deciding_rule(f, path, 0);
    if (r) {
        *reason = r->reason;
        return 1;
    }
    if (f->n_includes && !included(f, path)) {
        *reason = f->n_includes == 1 ? f->includes[0].reason : "not matched by any include rule";
        return 1;
    }
    return 0;
}
