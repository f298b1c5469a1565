/*
 * tome-ingest.c - the offline admin tool over the ingest library.
 *
 * It does what the daemon does for `tome ingest`, on a store file directly:
 * ingest a directory or archive as the next version of a corpus and print
 * the JSON report; and it shows what is stored: the rendered document
 * block, full-text and regex search with path:line results.  Exit status:
 * 0 done, 1 the operation failed (the message is on stderr), 2 bad usage.
 */
#include "common/options.h"
#include "ingest/ingest.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum mode { MODE_INGEST, MODE_RENDER, MODE_SEARCH, MODE_GREP };

typedef struct cli {
    const char *db;
    const char *tokenizer;
    enum mode mode;
    const char *query, *grep;
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

static cli cmd = {.max_hits = 1000};
static int render, no_defaults, no_line_numbers, order, truncate_tail;

static int add_rule(cli *cl, ingest_rule_kind kind, const char *pattern, tome_error *err)
{
    if (cl->n_rules == (int)(sizeof cl->rules / sizeof cl->rules[0]))
        return tome_errorf(err, TOME_EINVAL, "too many filter rules (at most 256)");
    cl->rules[cl->n_rules].kind = kind;
    cl->rules[cl->n_rules++].pattern = pattern;
    return 0;
}

/* --exclude, --include and their -regex forms: `kind` is the rule's. */
static int add_rule_option(void *ctx, const void *kind, const char *arg, tome_error *err)
{
    return add_rule(ctx, *(const ingest_rule_kind *)kind, arg, err);
}

static const ingest_rule_kind rule_kinds[] = {INGEST_EXCLUDE_GLOB, INGEST_EXCLUDE_REGEX,
                                              INGEST_INCLUDE_GLOB, INGEST_INCLUDE_REGEX};

static const tome_option option_table[] = {
    TOME_STRING("db", 0, "FILE", cmd.db, "the store (an SQLite file; created if absent)"),
    TOME_STRING("tokenizer", 0, "FILE", cmd.tokenizer, "count tokens with this tokenizer.json"),
    TOME_FLAG("render", 0, render, "print the latest version's rendered documents"),
    TOME_STRING("search", 0, "QUERY", cmd.query, "full-text search (FTS5 syntax)"),
    TOME_STRING("grep", 0, "REGEX", cmd.grep, "regular-expression search (PCRE2)"),
    TOME_CALL("exclude", 0, "GLOB", add_rule_option, &rule_kinds[0],
              "leave out matching paths (repeatable)"),
    TOME_CALL("exclude-regex", 0, "RE", add_rule_option, &rule_kinds[1],
              "the same with a regular expression"),
    TOME_CALL("include", 0, "GLOB", add_rule_option, &rule_kinds[2],
              "keep only matching paths (repeatable)"),
    TOME_CALL("include-regex", 0, "RE", add_rule_option, &rule_kinds[3],
              "the same with a regular expression"),
    TOME_FLAG("no-default-excludes", 0, no_defaults, "keep .git, build outputs, ..."),
    TOME_CHOICE("order", 0, "path|source", order, "document order (default path)"),
    TOME_FLAG("changed-to-end", 0, cmd.opts.changed_to_end, "changed documents last"),
    TOME_FLAG("no-line-numbers", 0, no_line_numbers, "render lines without \"N: \""),
    TOME_INT("budget", 0, "TOKENS", cmd.opts.render.token_budget, 0, INT64_MAX,
             "token budget of the rendered prompt"),
    TOME_CHOICE("truncate", 0, "none|tail", truncate_tail,
                "over the budget: refuse (none) or leave documents off the end"),
    TOME_UINT("max-entries", 0, "N", cmd.opts.limits.max_entries, 0, -1, "archive entries"),
    TOME_SIZE("max-file-bytes", 0, "N", cmd.opts.limits.max_file_bytes, 0, -1,
              "one entry, uncompressed (suffixes K, M, G, T)"),
    TOME_SIZE("max-total-bytes", 0, "N", cmd.opts.limits.max_total_bytes, 0, -1,
              "every entry, uncompressed"),
    TOME_REAL("max-ratio", 0, "R", cmd.opts.limits.max_ratio, 0, 1000000000,
              "uncompressed / compressed bytes of one archive"),
    TOME_SIZE("ratio-floor", 0, "N", cmd.opts.limits.ratio_floor, 0, -1,
              "bytes before the ratio is checked"),
    TOME_INT("max-depth", 0, "N", cmd.opts.limits.max_depth, 0, 64, "archives inside archives"),
    TOME_SIZE("max-path-bytes", 0, "N", cmd.opts.limits.max_path_bytes, 1, -1, "a normalised path"),
    TOME_UINT("max-hits", 0, "N", cmd.max_hits, 0, -1, "search results at most (default 1000)"),
};
static const tome_cli command_line = {.program = "tome-ingest",
                                      .usage =
                                          "--db FILE [options] CORPUS PATH-OR-ARCHIVE\n"
                                          "       tome-ingest --db FILE --render CORPUS\n"
                                          "       tome-ingest --db FILE --search QUERY CORPUS\n"
                                          "       tome-ingest --db FILE --grep REGEX CORPUS\n"
                                          "see tome-ingest(1)",
                                      .options = option_table,
                                      .n_options = sizeof option_table / sizeof option_table[0]};

/* The mode the options chose, its operands, and the options that are
 * the negations of settings. */
static int check_command_line(void *ctx, int n_operands, char **argv, tome_error *err)
{
    cli *c = ctx;
    (void)argv;
    if (render + !!c->query + !!c->grep > 1)
        return tome_errorf(err, TOME_EINVAL, "give at most one of --render, --search and --grep");
    c->mode = render ? MODE_RENDER : c->query ? MODE_SEARCH : c->grep ? MODE_GREP : MODE_INGEST;
    if (c->grep) c->query = c->grep;
    if (!c->db) return tome_errorf(err, TOME_EINVAL, "--db FILE is required");
    if (n_operands != (c->mode == MODE_INGEST ? 2 : 1))
        return tome_errorf(err, TOME_EINVAL, "wrong number of arguments");
    c->defaults = !no_defaults;
    c->opts.render.line_numbers = !no_line_numbers;
    c->opts.order = order ? INGEST_ORDER_SOURCE : INGEST_ORDER_PATH;
    c->opts.render.truncate = truncate_tail ? INGEST_TRUNCATE_TAIL : INGEST_TRUNCATE_NONE;
    return 0;
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
    ingest_options_default(&cmd.opts);
    int n_operands, status;
    if (tome_options_start(&command_line, argc, argv, &cmd, check_command_line, 2, &n_operands,
                           &status))
        return status;

    tome_error err = {0};
    store *s;
    v4_tokenizer *tok = NULL;
    char fingerprint[65];
    if (store_open(cmd.db, &s, &err)) return fail(&err);
    int rc = cmd.tokenizer ? load_tokenizer(&cmd, &tok, fingerprint, &err) : 0;
    if (rc)
        rc = fail(&err);
    else if (cmd.mode == MODE_INGEST)
        rc = run_ingest(s, &cmd, argv[1], argv[2], &err);
    else if (cmd.mode == MODE_RENDER)
        rc = show_render(s, &cmd, argv[1], &err);
    else
        rc = show_hits(s, &cmd, argv[1], &err);
    ingest_filter_free(cmd.filter);
    v4_tokenizer_free(tok);
    store_close(s);
    return rc;
}
