/*
 * test_options.c - common/options.c: every value kind, its range and width
 * checks, the GNU spellings, operands in place, and the errors' wording.
 */
#include "common/options.h"
#include "tests/check.h"

#include <stdarg.h>
#include <stdint.h>

typedef struct values {
    const char *model;
    int chunk, verbose, quiet, order;
    int64_t budget;
    uint64_t seed, shard;
    uint8_t small;
    double ratio;
    char list[64];
} values;

static int add_to_list(void *ctx, const void *separator, const char *arg, tome_error *err)
{
    values *v = ctx;
    if (strchr(arg, ',')) return tome_errorf(err, TOME_EINVAL, "no commas in \"%s\"", arg);
    strncat(v->list, arg, sizeof v->list - strlen(v->list) - 2);
    strcat(v->list, separator);
    return 0;
}

static values vals;
static const tome_option table[] = {
    TOME_STRING("model", 'm', "DIR", vals.model, "the model directory"),
    TOME_INT("chunk", 'c', "N", vals.chunk, 1, 4096, "prefill chunk"),
    TOME_FLAG("verbose", 'v', vals.verbose, "say more"),
    {.name = "quiet",
     .short_name = 'q',
     .kind = TOME_OPT_FLAG,
     .help = "say less",
     .value = &vals.verbose,
     .flag_value = -1},
    TOME_INT("budget", 0, "TOKENS", vals.budget, -1, INT64_MAX, "token budget, -1 none"),
    TOME_UINT("seed", 0, "N", vals.seed, 0, -1, "any 64-bit seed"),
    TOME_SIZE("shard-size", 0, "BYTES", vals.shard, 1, -1, "shard size\nsecond line"),
    TOME_UINT("small", 0, "N", vals.small, 0, 1000, "a byte-wide target"),
    TOME_REAL("ratio", 0, "R", vals.ratio, 0, 1000, "a ratio"),
    TOME_CHOICE("order", 0, "path|source|size", vals.order, "document order"),
    TOME_CALL("add", 'a', "WORD", add_to_list, ";", "append a word (repeatable)"),
};
static const tome_cli cli = {.program = "prog",
                             .usage = "[options] A B",
                             .options = table,
                             .n_options = sizeof table / sizeof table[0]};

/* Parse a NULL-terminated argument list; returns the code, operands in out. */
static int parse(tome_error *err, int *n, char **out, const char *first, ...)
{
    char *argv[32] = {"prog"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    memset(&vals, 0, sizeof vals);
    tome_error_clear(err);
    int rc = tome_options_parse(&cli, argc, argv, &vals, n, err);
    for (int i = 0; rc == 0 && i < *n; i++) out[i] = argv[1 + i];
    return rc;
}

static void test_spellings(void)
{
    tome_error err;
    char *ops[32];
    int n;
    CHECK(parse(&err, &n, ops, "A", "--model", "m1", "-c", "64", "B", "-v", NULL) == 0);
    CHECK(vals.model && strcmp(vals.model, "m1") == 0 && vals.chunk == 64 && vals.verbose == 1);
    CHECK(n == 2 && strcmp(ops[0], "A") == 0 && strcmp(ops[1], "B") == 0);
    CHECK(parse(&err, &n, ops, "--model=m2", "-c128", "-vq", NULL) == 0);
    CHECK(strcmp(vals.model, "m2") == 0 && vals.chunk == 128 && vals.verbose == -1 && n == 0);
    CHECK(parse(&err, &n, ops, "-a", "x", "--add=y", "--", "-c", "--model", NULL) == 0);
    CHECKF(strcmp(vals.list, "x;y;") == 0, "%s", vals.list);
    CHECK(n == 2 && strcmp(ops[0], "-c") == 0 && strcmp(ops[1], "--model") == 0);
    CHECK(parse(&err, &n, ops, "-", NULL) == 0 && n == 1 && strcmp(ops[0], "-") == 0);
    CHECK(parse(&err, &n, ops, "--help", NULL) == TOME_OPTIONS_HELP);
    CHECK(parse(&err, &n, ops, "-vh", NULL) == TOME_OPTIONS_HELP);
}

static void test_numbers(void)
{
    tome_error err;
    char *ops[32];
    int n;
    CHECK(parse(&err, &n, ops, "--budget", "-1", "--seed", "18446744073709551615", NULL) == 0);
    CHECK(vals.budget == -1 && vals.seed == UINT64_MAX);
    CHECK(parse(&err, &n, ops, "--shard-size", "4G", "--ratio", "2.5", NULL) == 0);
    CHECK(vals.shard == (4ull << 30) && vals.ratio == 2.5);
    CHECK(parse(&err, &n, ops, "--shard-size", "3KiB", "--small", "255", NULL) == 0);
    CHECK(vals.shard == 3072 && vals.small == 255);

    CHECK(parse(&err, &n, ops, "--chunk", "12x", NULL) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "--chunk: \"12x\" is not a whole number") == 0, "%s", err.msg);
    CHECK(parse(&err, &n, ops, "-c", "0", NULL) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "--chunk: 0 is not a whole number from 1 to 4096") == 0, "%s", err.msg);
    CHECK(parse(&err, &n, ops, "--chunk", "99999999999999999999", NULL) == TOME_EINVAL);
    CHECK(parse(&err, &n, ops, "--small", "256", NULL) == TOME_EINVAL);
    CHECKF(strstr(err.msg, "not a whole number from 0 to 255") != NULL, "%s", err.msg);
    CHECK(parse(&err, &n, ops, "--seed", "-1", NULL) == TOME_EINVAL);
    CHECK(parse(&err, &n, ops, "--seed", "18446744073709551616", NULL) == TOME_EINVAL);
    CHECK(parse(&err, &n, ops, "--shard-size", "0", NULL) == TOME_EINVAL);
    CHECK(parse(&err, &n, ops, "--shard-size", "17179869184T", NULL) == TOME_EINVAL);
    CHECK(parse(&err, &n, ops, "--shard-size", "4X", NULL) == TOME_EINVAL);
    CHECKF(strstr(err.msg, "suffixes: K, M, G, T") != NULL, "%s", err.msg);
    CHECK(parse(&err, &n, ops, "--chunk", "", NULL) == TOME_EINVAL);
    CHECK(parse(&err, &n, ops, "--chunk", " 5", NULL) == TOME_EINVAL);
    CHECK(parse(&err, &n, ops, "--ratio", "nan", NULL) == TOME_EINVAL);
    CHECK(parse(&err, &n, ops, "--ratio", "1001", NULL) == TOME_EINVAL);
}

static void test_errors(void)
{
    tome_error err;
    char *ops[32];
    int n;
    CHECK(parse(&err, &n, ops, "--modle", "x", NULL) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "unknown option '--modle'") == 0, "%s", err.msg);
    CHECK(parse(&err, &n, ops, "-x", NULL) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "unknown option '-x'") == 0, "%s", err.msg);
    CHECK(parse(&err, &n, ops, "--model", NULL) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "--model needs a value (DIR)") == 0, "%s", err.msg);
    CHECK(parse(&err, &n, ops, "--verbose=1", NULL) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "--verbose takes no value") == 0, "%s", err.msg);
    CHECK(parse(&err, &n, ops, "--order", "date", NULL) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "--order: \"date\" is not one of path|source|size") == 0, "%s", err.msg);
    CHECK(parse(&err, &n, ops, "--order", "source", NULL) == 0 && vals.order == 1);
    CHECK(parse(&err, &n, ops, "--add", "a,b", NULL) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "--add: no commas in \"a,b\"") == 0, "%s", err.msg);
    char *argv[] = {"prog", "stray", NULL};
    tome_error_clear(&err);
    CHECK(tome_options_no_operands(NULL, 0, argv, &err) == 0);
    CHECK(tome_options_no_operands(NULL, 1, argv, &err) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "unexpected argument: stray") == 0, "%s", err.msg);
}

static void test_help(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    tome_options_help(&cli, f);
    fclose(f);
    CHECKF(strncmp(text, "usage: prog [options] A B\n", 26) == 0, "%s", text);
    CHECKF(strstr(text, "  -m, --model DIR           the model directory\n") != NULL, "%s", text);
    CHECKF(strstr(text, "      --shard-size BYTES    shard size\n"
                        "                            second line\n") != NULL,
           "%s", text);
    CHECKF(strstr(text, "      --order path|source|size  document order\n") != NULL, "%s", text);
    CHECK(strstr(text, "  -h, --help") != NULL);
    free(text);
}

/* A program with commands: "go" takes --fast and --level, "stop" takes
 * --fast only; --level's value is optional. */
static int fast, verbose_cmd;
static const char *level;

static int set_level(void *ctx, const void *fallback, const char *arg, tome_error *err)
{
    (void)ctx;
    if (arg && strcmp(arg, "1") != 0 && strcmp(arg, "2") != 0)
        return tome_errorf(err, TOME_EINVAL, "the level is 1 or 2");
    level = arg ? arg : fallback;
    return 0;
}

static const tome_option globals[] = {
    TOME_FLAG("verbose", 'v', verbose_cmd, "say more"),
};
static const tome_option per_command[] = {
    TOME_FLAG("fast", 'f', fast, "hurry"),
    TOME_CALL_OPTIONAL("level", 0, "L", set_level, "1", "how hard"),
};
static const tome_cli commands_cli = {.program = "prog",
                                      .usage = "COMMAND",
                                      .options = globals,
                                      .n_options = 1,
                                      .command_options = per_command,
                                      .n_command_options = 2};

static int parse_command(tome_error *err, unsigned char *seen, const char *a, const char *b,
                         const char *c)
{
    char *argv[] = {"prog", (char *)a, (char *)b, (char *)c, NULL};
    int argc = c ? 4 : b ? 3 : 2, n;
    fast = verbose_cmd = 0;
    level = NULL;
    memset(seen, 0, 3);
    tome_error_clear(err);
    int rc = tome_options_parse_seen(&commands_cli, argc, argv, NULL, &n, seen, err);
    if (rc == 0)
        rc = tome_options_scope(&commands_cli, seen,
                                strcmp(argv[1], "go") == 0 ? "fast level" : "fast", argv[1], err);
    return rc;
}

static void test_command_options(void)
{
    tome_error err;
    unsigned char seen[3];
    CHECK(parse_command(&err, seen, "--fast", "go", "--level") == 0);
    CHECK(fast && level && strcmp(level, "1") == 0 && seen[1] && seen[2] && !seen[0]);
    CHECK(parse_command(&err, seen, "go", "--level=2", "-v") == 0);
    CHECK(strcmp(level, "2") == 0 && verbose_cmd && seen[0]);
    /* A bare optional value never takes the next word. */
    CHECK(parse_command(&err, seen, "go", "--level", "2") == 0 && strcmp(level, "1") == 0);
    CHECK(parse_command(&err, seen, "go", "--level=3", NULL) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "--level: the level is 1 or 2") == 0, "%s", err.msg);
    CHECK(parse_command(&err, seen, "-f", "stop", NULL) == 0 && fast);
    CHECK(parse_command(&err, seen, "stop", "--level", NULL) == TOME_EINVAL);
    CHECKF(strcmp(err.msg, "option --level does not apply to 'stop'") == 0, "%s", err.msg);
    CHECK(tome_options_listed("fast level", "level") && !tome_options_listed("fast level", "lev"));

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    tome_options_help_rows(per_command, 2, "level", f);
    fclose(f);
    CHECKF(strcmp(text, "      --level[=L]           how hard\n") == 0, "%s", text);
    free(text);
}

int main(void)
{
    test_command_options();
    test_spellings();
    test_numbers();
    test_errors();
    test_help();
    return check_finish();
}
