/*
 * tome-ingest.c - the offline admin tool over the ingest library.
 *
 * It does what the daemon does for `tome ingest`, on a store file directly:
 * ingest a directory or archive as the next version of a corpus and print
 * the JSON report; and it shows what is stored: the rendered document
 * block, full-text and regex search with path:line results.  Exit status:
 * 0 done, 1 the operation failed (the message is on stderr), 2 bad usage.
 */
#include "ingest/ingest.h"

#include <getopt.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum mode { MODE_INGEST, MODE_RENDER, MODE_SEARCH, MODE_GREP };

typedef struct cli {
    const char *db;
    const char *tokenizer;
    enum mode mode;
    const char *query;
    size_t max_hits;
    ingest_options opts;
    ingest_filter *filter;
    int defaults; /* default excludes on */
    int n_rules;
    struct {
        ingest_rule_kind kind;
        const char *pattern;
    } rules[256];
} cli;

static void usage(FILE *f)
{
    fputs("usage: tome-ingest --db FILE [options] CORPUS PATH-OR-ARCHIVE\n"
          "       tome-ingest --db FILE --render CORPUS\n"
          "       tome-ingest --db FILE --search QUERY CORPUS\n"
          "       tome-ingest --db FILE --grep REGEX CORPUS\n"
          "options: --tokenizer FILE --exclude GLOB --exclude-regex RE --include GLOB\n"
          "  --include-regex RE --no-default-excludes --order path|source --changed-to-end\n"
          "  --no-line-numbers --budget TOKENS --truncate none|tail --max-entries N\n"
          "  --max-file-bytes N --max-total-bytes N --max-ratio R --ratio-floor N\n"
          "  --max-depth N --max-path-bytes N --max-hits N\n"
          "see tome-ingest(1)\n",
          f);
}

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "tome-ingest: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    usage(stderr);
    return 2;
}

/* A non-negative decimal number, or -1. */
static double number(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    return *s && !*end && v >= 0 ? v : -1;
}

enum {
    OPT_DB = 256,
    OPT_TOKENIZER,
    OPT_RENDER,
    OPT_SEARCH,
    OPT_GREP,
    OPT_EXCLUDE,
    OPT_EXCLUDE_RE,
    OPT_INCLUDE,
    OPT_INCLUDE_RE,
    OPT_NO_DEFAULTS,
    OPT_ORDER,
    OPT_CHANGED_TO_END,
    OPT_NO_LINE_NUMBERS,
    OPT_BUDGET,
    OPT_TRUNCATE,
    OPT_MAX_ENTRIES,
    OPT_MAX_FILE,
    OPT_MAX_TOTAL,
    OPT_MAX_RATIO,
    OPT_RATIO_FLOOR,
    OPT_MAX_DEPTH,
    OPT_MAX_PATH,
    OPT_MAX_HITS,
    OPT_HELP
};

static const struct option long_options[] = {
    {"db", required_argument, NULL, OPT_DB},
    {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
    {"render", no_argument, NULL, OPT_RENDER},
    {"search", required_argument, NULL, OPT_SEARCH},
    {"grep", required_argument, NULL, OPT_GREP},
    {"exclude", required_argument, NULL, OPT_EXCLUDE},
    {"exclude-regex", required_argument, NULL, OPT_EXCLUDE_RE},
    {"include", required_argument, NULL, OPT_INCLUDE},
    {"include-regex", required_argument, NULL, OPT_INCLUDE_RE},
    {"no-default-excludes", no_argument, NULL, OPT_NO_DEFAULTS},
    {"order", required_argument, NULL, OPT_ORDER},
    {"changed-to-end", no_argument, NULL, OPT_CHANGED_TO_END},
    {"no-line-numbers", no_argument, NULL, OPT_NO_LINE_NUMBERS},
    {"budget", required_argument, NULL, OPT_BUDGET},
    {"truncate", required_argument, NULL, OPT_TRUNCATE},
    {"max-entries", required_argument, NULL, OPT_MAX_ENTRIES},
    {"max-file-bytes", required_argument, NULL, OPT_MAX_FILE},
    {"max-total-bytes", required_argument, NULL, OPT_MAX_TOTAL},
    {"max-ratio", required_argument, NULL, OPT_MAX_RATIO},
    {"ratio-floor", required_argument, NULL, OPT_RATIO_FLOOR},
    {"max-depth", required_argument, NULL, OPT_MAX_DEPTH},
    {"max-path-bytes", required_argument, NULL, OPT_MAX_PATH},
    {"max-hits", required_argument, NULL, OPT_MAX_HITS},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0}};

static int add_rule(cli *c, ingest_rule_kind kind, const char *pattern)
{
    if (c->n_rules == (int)(sizeof c->rules / sizeof c->rules[0]))
        return bad_usage("too many filter rules (at most 256): %s", pattern);
    c->rules[c->n_rules].kind = kind;
    c->rules[c->n_rules++].pattern = pattern;
    return 0;
}

/* Options that set a number; 0 if `opt` is not one of them. */
static int set_number(cli *c, int opt, const char *arg)
{
    double v = number(arg);
    if (v < 0) return bad_usage("not a non-negative number: %s", arg);
    ingest_limits *l = &c->opts.limits;
    switch (opt) {
    case OPT_MAX_ENTRIES:
        l->max_entries = (uint64_t)v;
        break;
    case OPT_MAX_FILE:
        l->max_file_bytes = (uint64_t)v;
        break;
    case OPT_MAX_TOTAL:
        l->max_total_bytes = (uint64_t)v;
        break;
    case OPT_MAX_RATIO:
        l->max_ratio = v;
        break;
    case OPT_RATIO_FLOOR:
        l->ratio_floor = (uint64_t)v;
        break;
    case OPT_MAX_DEPTH:
        l->max_depth = (int)v;
        break;
    case OPT_MAX_PATH:
        l->max_path_bytes = (size_t)v;
        break;
    case OPT_MAX_HITS:
        c->max_hits = (size_t)v;
        break;
    case OPT_BUDGET:
        c->opts.render.token_budget = (int64_t)v;
        break;
    }
    return 0;
}

static int parse_option(cli *c, int opt, const char *arg)
{
    switch (opt) {
    case OPT_DB:
        c->db = arg;
        return 0;
    case OPT_TOKENIZER:
        c->tokenizer = arg;
        return 0;
    case OPT_RENDER:
        c->mode = MODE_RENDER;
        return 0;
    case OPT_SEARCH:
        c->mode = MODE_SEARCH, c->query = arg;
        return 0;
    case OPT_GREP:
        c->mode = MODE_GREP, c->query = arg;
        return 0;
    case OPT_EXCLUDE:
        return add_rule(c, INGEST_EXCLUDE_GLOB, arg);
    case OPT_EXCLUDE_RE:
        return add_rule(c, INGEST_EXCLUDE_REGEX, arg);
    case OPT_INCLUDE:
        return add_rule(c, INGEST_INCLUDE_GLOB, arg);
    case OPT_INCLUDE_RE:
        return add_rule(c, INGEST_INCLUDE_REGEX, arg);
    case OPT_NO_DEFAULTS:
        c->defaults = 0;
        return 0;
    case OPT_CHANGED_TO_END:
        c->opts.changed_to_end = 1;
        return 0;
    case OPT_NO_LINE_NUMBERS:
        c->opts.render.line_numbers = 0;
        return 0;
    case OPT_ORDER:
        if (strcmp(arg, "path") == 0)
            c->opts.order = INGEST_ORDER_PATH;
        else if (strcmp(arg, "source") == 0)
            c->opts.order = INGEST_ORDER_SOURCE;
        else
            return bad_usage("--order takes path or source, not %s", arg);
        return 0;
    case OPT_TRUNCATE:
        if (strcmp(arg, "none") == 0)
            c->opts.render.truncate = INGEST_TRUNCATE_NONE;
        else if (strcmp(arg, "tail") == 0)
            c->opts.render.truncate = INGEST_TRUNCATE_TAIL;
        else
            return bad_usage("--truncate takes none or tail, not %s", arg);
        return 0;
    case OPT_HELP:
        usage(stdout);
        exit(0);
    default:
        if (opt >= OPT_BUDGET && opt <= OPT_MAX_HITS) return set_number(c, opt, arg);
        usage(stderr);
        return 2;
    }
}

static int fail(const tome_error *err)
{
    fprintf(stderr, "tome-ingest: %s\n", err->msg);
    return 1;
}

static int latest_version(store *s, const char *corpus, int64_t *version, tome_error *err)
{
    int64_t id;
    int rc = store_corpus_find(s, corpus, &id, err);
    return rc ? rc : store_version_latest(s, id, version, err);
}

static int show_render(store *s, cli *c, const char *corpus, tome_error *err)
{
    int64_t v;
    ingest_rendering *r;
    int rc = latest_version(s, corpus, &v, err);
    if (!rc) rc = ingest_render(s, v, &c->opts.render, &r, err);
    if (rc) return fail(err);
    fwrite(r->text + r->corpus_start, 1, r->corpus_len, stdout);
    ingest_rendering_free(r);
    return 0;
}

static int show_hits(store *s, cli *c, const char *corpus, tome_error *err)
{
    int64_t v;
    store_hits hits = {0};
    int rc = latest_version(s, corpus, &v, err);
    if (!rc)
        rc = c->mode == MODE_SEARCH ? store_search(s, v, c->query, c->max_hits, &hits, err)
                                    : ingest_grep(s, v, c->query, c->max_hits, &hits, err);
    for (size_t i = 0; !rc && i < hits.n; i++)
        printf("%s:%lld: %s\n", hits.hits[i].path, (long long)hits.hits[i].line, hits.hits[i].text);
    store_hits_free(&hits);
    return rc ? fail(err) : 0;
}

/* The tokenizer named by --tokenizer, fingerprinted by its file's SHA-256. */
static int load_tokenizer(cli *c, v4_tokenizer **t, char fingerprint[65], tome_error *err)
{
    char *json;
    size_t len;
    int rc = tome_read_file(c->tokenizer, (size_t)1 << 30, &json, &len, err);
    if (rc) return rc;
    uint8_t digest[32];
    tome_sha256(json, len, digest);
    tome_hex(digest, 32, fingerprint);
    free(json);
    rc = v4_tokenizer_load(c->tokenizer, t, err);
    if (rc) return rc;
    c->opts.render.tokenizer = *t;
    c->opts.render.tokenizer_fingerprint = fingerprint;
    return 0;
}

static int run_ingest(store *s, cli *c, const char *corpus, const char *source, tome_error *err)
{
    ingest_report *report;
    char *json;
    int rc = ingest_filter_new(c->defaults, &c->filter, err);
    for (int i = 0; i < c->n_rules && !rc; i++)
        rc = ingest_filter_add(c->filter, c->rules[i].kind, c->rules[i].pattern, err);
    c->opts.filter = c->filter;
    if (!rc) rc = ingest_run(s, corpus, source, &c->opts, &report, err);
    if (rc) return fail(err);
    rc = ingest_report_json(report, &json, err);
    ingest_report_free(report);
    if (rc) return fail(err);
    puts(json);
    free(json);
    return 0;
}

int main(int argc, char **argv)
{
    /* libarchive converts entry names through the locale: make it UTF-8. */
    if (!setlocale(LC_CTYPE, "C.UTF-8")) setlocale(LC_CTYPE, "");
    cli c = {.max_hits = 1000, .defaults = 1};
    ingest_options_default(&c.opts);
    int opt;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        int rc = parse_option(&c, opt, optarg);
        if (rc) return rc;
    }
    int want = c.mode == MODE_INGEST ? 2 : 1;
    if (!c.db) return bad_usage("%s", "--db FILE is required");
    if (argc - optind != want) return bad_usage("%s", "wrong number of arguments");

    tome_error err = {0};
    store *s;
    v4_tokenizer *tok = NULL;
    char fingerprint[65];
    if (store_open(c.db, &s, &err)) return fail(&err);
    int rc = c.tokenizer ? load_tokenizer(&c, &tok, fingerprint, &err) : 0;
    if (rc)
        rc = fail(&err);
    else if (c.mode == MODE_INGEST)
        rc = run_ingest(s, &c, argv[optind], argv[optind + 1], &err);
    else if (c.mode == MODE_RENDER)
        rc = show_render(s, &c, argv[optind], &err);
    else
        rc = show_hits(s, &c, argv[optind], &err);
    ingest_filter_free(c.filter);
    v4_tokenizer_free(tok);
    store_close(s);
    return rc;
}
