/*
 * options.c - the table-driven command-line parser (common/options.h).
 *
 * Values are checked completely before they are stored: a number must be
 * the whole argument (no trailing junk, no overflow), inside the row's
 * range, and fit the target's width; a choice must be one of its words.
 * The messages say which option and what was wrong, because a cron job's
 * log is often the only place a user will see them.
 */
#include "common/options.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The rows are numbered through cli->options and then cli->command_options,
 * so that one index names a row for `seen`. */
static size_t row_count(const tome_cli *cli)
{
    return cli->n_options + cli->n_command_options;
}

static const tome_option *row(const tome_cli *cli, size_t i)
{
    return i < cli->n_options ? &cli->options[i] : &cli->command_options[i - cli->n_options];
}

/* The index of the row named name[0..len), or -1. */
static long find_long(const tome_cli *cli, const char *name, size_t len)
{
    for (size_t i = 0; i < row_count(cli); i++) {
        const char *candidate = row(cli, i)->name;
        if (strlen(candidate) == len && memcmp(candidate, name, len) == 0) return (long)i;
    }
    return -1;
}

static long find_short(const tome_cli *cli, char c)
{
    for (size_t i = 0; i < row_count(cli); i++)
        if (row(cli, i)->short_name && row(cli, i)->short_name == c) return (long)i;
    return -1;
}

/* K, M, G, T as powers of 1024; 1 for no suffix, 0 for anything else. */
static uint64_t suffix_scale(const char *s)
{
    if (!*s) return 1;
    if (s[1] && !(s[1] == 'B' && !s[2]) && !(s[1] == 'i' && s[2] == 'B' && !s[3])) return 0;
    switch (*s) {
    case 'k':
    case 'K':
        return 1ull << 10;
    case 'M':
        return 1ull << 20;
    case 'G':
        return 1ull << 30;
    case 'T':
        return 1ull << 40;
    default:
        return 0;
    }
}

/* Store `v` in the row's target, whose width is o->size. */
static void store_integer(const tome_option *o, uint64_t v)
{
    switch (o->size) {
    case 1: {
        uint8_t x = (uint8_t)v;
        memcpy(o->value, &x, 1);
        break;
    }
    case 2: {
        uint16_t x = (uint16_t)v;
        memcpy(o->value, &x, 2);
        break;
    }
    case 4: {
        uint32_t x = (uint32_t)v;
        memcpy(o->value, &x, 4);
        break;
    }
    default:
        memcpy(o->value, &v, 8);
    }
}

/* The largest value a target of o->size bytes holds. */
static uint64_t width_max(const tome_option *o)
{
    unsigned bits = (unsigned)(o->size * 8) - (o->is_unsigned ? 0 : 1);
    return bits >= 64 ? UINT64_MAX : (1ull << bits) - 1;
}

static int parse_unsigned(const tome_option *o, const char *opt, const char *arg, tome_error *err)
{
    char *end;
    errno = 0;
    if (arg[0] == '-' || arg[0] == '+' || arg[0] == ' ' || !*arg)
        return tome_errorf(err, TOME_EINVAL, "%s: \"%s\" is not a whole number", opt, arg);
    uint64_t v = strtoull(arg, &end, 10);
    uint64_t scale = o->kind == TOME_OPT_SIZE ? suffix_scale(end) : (*end ? 0 : 1);
    if (end == arg || scale == 0)
        return tome_errorf(err, TOME_EINVAL, "%s: \"%s\" is not a whole number%s", opt, arg,
                           o->kind == TOME_OPT_SIZE ? " (suffixes: K, M, G, T)" : "");
    uint64_t hi = o->max < 0 ? width_max(o) : (uint64_t)o->max;
    if (hi > width_max(o)) hi = width_max(o);
    if (errno == ERANGE || v > UINT64_MAX / scale || v * scale > hi || v * scale < (uint64_t)o->min)
        return tome_errorf(err, TOME_EINVAL, "%s: %s is not a whole number from %lld to %llu", opt,
                           arg, (long long)o->min, (unsigned long long)hi);
    store_integer(o, v * scale);
    return 0;
}

static int parse_signed(const tome_option *o, const char *opt, const char *arg, tome_error *err)
{
    char *end;
    errno = 0;
    if (!*arg || arg[0] == ' ')
        return tome_errorf(err, TOME_EINVAL, "%s: \"%s\" is not a whole number", opt, arg);
    long long v = strtoll(arg, &end, 10);
    if (end == arg || *end)
        return tome_errorf(err, TOME_EINVAL, "%s: \"%s\" is not a whole number", opt, arg);
    long long hi = o->max > (int64_t)width_max(o) ? (long long)width_max(o) : o->max;
    long long lo = o->min < -(long long)width_max(o) - 1 ? -(long long)width_max(o) - 1 : o->min;
    if (errno == ERANGE || v < lo || v > hi)
        return tome_errorf(err, TOME_EINVAL, "%s: %s is not a whole number from %lld to %lld", opt,
                           arg, lo, hi);
    store_integer(o, (uint64_t)v);
    return 0;
}

static int parse_real(const tome_option *o, const char *opt, const char *arg, tome_error *err)
{
    char *end;
    errno = 0;
    double v = *arg && arg[0] != ' ' ? strtod(arg, &end) : 0;
    if (!*arg || arg[0] == ' ' || end == arg || *end || !isfinite(v))
        return tome_errorf(err, TOME_EINVAL, "%s: \"%s\" is not a number", opt, arg);
    if (errno == ERANGE || v < (double)o->min || v > (double)o->max)
        return tome_errorf(err, TOME_EINVAL, "%s: %s is not a number from %lld to %lld", opt, arg,
                           (long long)o->min, (long long)o->max);
    memcpy(o->value, &v, sizeof v);
    return 0;
}

static int parse_choice(const tome_option *o, const char *opt, const char *arg, tome_error *err)
{
    size_t len = strlen(arg);
    int index = 0;
    for (const char *w = o->choices; *w; index++) {
        size_t n = strcspn(w, "|");
        if (n == len && memcmp(w, arg, n) == 0) {
            memcpy(o->value, &index, sizeof index);
            return 0;
        }
        w += n + (w[n] == '|');
    }
    return tome_errorf(err, TOME_EINVAL, "%s: \"%s\" is not one of %s", opt, arg, o->choices);
}

/* Apply one option with its value (NULL for a flag). */
static int apply(const tome_option *o, const char *opt, const char *arg, void *ctx, tome_error *err)
{
    switch (o->kind) {
    case TOME_OPT_FLAG: {
        int v = o->flag_value ? o->flag_value : 1;
        memcpy(o->value, &v, sizeof v);
        return 0;
    }
    case TOME_OPT_STRING:
        memcpy(o->value, &arg, sizeof arg);
        return 0;
    case TOME_OPT_INT:
    case TOME_OPT_SIZE:
        return o->is_unsigned ? parse_unsigned(o, opt, arg, err) : parse_signed(o, opt, arg, err);
    case TOME_OPT_REAL:
        return parse_real(o, opt, arg, err);
    case TOME_OPT_CHOICE:
        return parse_choice(o, opt, arg, err);
    case TOME_OPT_CALL: {
        int rc = o->call(ctx, o->data, arg, err);
        if (rc) tome_error_wrap(err, "%s", opt);
        return rc;
    }
    }
    return tome_errorf(err, TOME_EINVAL, "%s: bad option table", opt);
}

/* Whether the option takes a value. */
static int takes_value(const tome_option *o)
{
    return !(o->kind == TOME_OPT_FLAG || (o->kind == TOME_OPT_CALL && !o->arg));
}

/* What one parse works on, handed down to the helpers below. */
typedef struct parse_state {
    const tome_cli *cli;
    int argc;
    char **argv;
    void *ctx;
    unsigned char *seen; /* may be NULL */
    tome_error *err;
} parse_state;

/* Apply row `index` met at argv[*i], its value inline (after '=' or a
 * short name; NULL: none there) or in the next word. */
static int take(parse_state *ps, long index, int *i, const char *inline_value)
{
    const tome_option *o = row(ps->cli, (size_t)index);
    char opt[128];
    snprintf(opt, sizeof opt, "--%s", o->name); /* also for options met as -x */
    if (ps->seen) ps->seen[index] = 1;
    if (!takes_value(o)) {
        if (inline_value) return tome_errorf(ps->err, TOME_EINVAL, "%s takes no value", opt);
        return apply(o, opt, NULL, ps->ctx, ps->err);
    }
    if (inline_value || o->optional) return apply(o, opt, inline_value, ps->ctx, ps->err);
    if (*i + 1 >= ps->argc)
        return tome_errorf(ps->err, TOME_EINVAL, "%s needs a value (%s)", opt, o->arg);
    return apply(o, opt, ps->argv[++*i], ps->ctx, ps->err);
}

/* A long option at argv[*i] ("--name" or "--name=value"). */
static int take_long(parse_state *ps, int *i)
{
    const char *text = ps->argv[*i] + 2, *eq = strchr(text, '=');
    size_t len = eq ? (size_t)(eq - text) : strlen(text);
    long index = find_long(ps->cli, text, len);
    if (index < 0 && len == 4 && memcmp(text, "help", 4) == 0 && !eq) return TOME_OPTIONS_HELP;
    if (index < 0)
        return tome_errorf(ps->err, TOME_EINVAL, "unknown option '--%.*s'", (int)len, text);
    return take(ps, index, i, eq ? eq + 1 : NULL);
}

/* A cluster of short options at argv[*i] ("-v", "-abc", "-oFILE", "-o FILE"). */
static int take_short(parse_state *ps, int *i)
{
    for (const char *p = ps->argv[*i] + 1; *p; p++) {
        long index = find_short(ps->cli, *p);
        if (index < 0 && *p == 'h') return TOME_OPTIONS_HELP;
        if (index < 0) return tome_errorf(ps->err, TOME_EINVAL, "unknown option '-%c'", *p);
        if (!takes_value(row(ps->cli, (size_t)index))) {
            int rc = take(ps, index, i, NULL);
            if (rc) return rc;
            continue;
        }
        return take(ps, index, i, p[1] ? p + 1 : NULL);
    }
    return 0;
}

int tome_options_parse_seen(const tome_cli *cli, int argc, char **argv, void *ctx, int *n_operands,
                            unsigned char *seen, tome_error *err)
{
    char **options = malloc((size_t)(argc > 0 ? argc : 1) * sizeof *options);
    if (!options) return tome_errorf(err, TOME_ENOMEM, "out of memory parsing the command line");
    parse_state ps = {cli, argc, argv, ctx, seen, err};
    int n = 0, n_options = 0, rc = 0, i = 1;
    for (; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        int first = i;
        if (strcmp(a, "--") == 0) {
            options[n_options++] = argv[i++];
            break;
        }
        if (a[0] == '-' && a[1] == '-')
            rc = take_long(&ps, &i);
        else if (a[0] == '-' && a[1])
            rc = take_short(&ps, &i);
        else {
            argv[1 + n++] = argv[i]; /* never overtakes i: the slot is free */
            continue;
        }
        for (int k = first; k <= i && k < argc; k++) options[n_options++] = argv[k];
    }
    while (rc == 0 && i < argc) argv[1 + n++] = argv[i++];
    /* The options go back after the operands, so argv still holds every
     * string. */
    if (rc == 0) memcpy(argv + 1 + n, options, (size_t)n_options * sizeof *options);
    free(options);
    *n_operands = n;
    return rc;
}

int tome_options_parse(const tome_cli *cli, int argc, char **argv, void *ctx, int *n_operands,
                       tome_error *err)
{
    return tome_options_parse_seen(cli, argc, argv, ctx, n_operands, NULL, err);
}

int tome_options_listed(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += len) {
        int starts = p == list || p[-1] == ' ';
        int ends = p[len] == '\0' || p[len] == ' ';
        if (starts && ends) return 1;
    }
    return 0;
}

int tome_options_scope(const tome_cli *cli, const unsigned char *seen, const char *takes,
                       const char *command, tome_error *err)
{
    for (size_t i = 0; i < cli->n_command_options; i++) {
        const char *name = cli->command_options[i].name;
        if (seen[cli->n_options + i] && !tome_options_listed(takes, name))
            return tome_errorf(err, TOME_EINVAL, "option --%s does not apply to '%s'", name,
                               command);
    }
    return 0;
}

/* One option's help: the names at the left, the text from column 28 (or
 * two spaces after long names), one line per '\n'. */
static void help_row(FILE *out, const tome_option *o)
{
    char c = o->short_name;
    const char *arg = o->arg ? o->arg : "", *help = o->help;
    const char *before = !o->arg ? "" : o->optional ? "[=" : " ", *after = o->optional ? "]" : "";
    int len = fprintf(out, "  %c%c%c --%s%s%s%s", c ? '-' : ' ', c ? c : ' ', c ? ',' : ' ',
                      o->name, before, arg, after);
    do {
        size_t line = strcspn(help, "\n");
        fprintf(out, "%*s%.*s\n", len < 28 ? 28 - len : 2, "", (int)line, help);
        help += line + (help[line] == '\n');
        len = 0;
    } while (*help);
}

void tome_options_help_rows(const tome_option *rows, size_t n, const char *only, FILE *out)
{
    for (size_t i = 0; i < n; i++)
        if (!only || tome_options_listed(only, rows[i].name)) help_row(out, &rows[i]);
}

void tome_options_help(const tome_cli *cli, FILE *out)
{
    static const tome_option help = {
        .name = "help", .short_name = 'h', .kind = TOME_OPT_FLAG, .help = "show this help"};
    fprintf(out, "usage: %s %s\n", cli->program, cli->usage);
    tome_options_help_rows(cli->options, cli->n_options, NULL, out);
    if (find_long(cli, "help", 4) < 0) help_row(out, &help);
}

int tome_options_no_operands(void *ctx, int n_operands, char **argv, tome_error *err)
{
    (void)ctx;
    return n_operands ? tome_errorf(err, TOME_EINVAL, "unexpected argument: %s", argv[1]) : 0;
}

int tome_options_start(const tome_cli *cli, int argc, char **argv, void *ctx,
                       tome_options_check check, int usage_status, int *n_operands, int *status)
{
    tome_error err = {0};
    int rc = tome_options_parse(cli, argc, argv, ctx, n_operands, &err);
    *status = 0;
    if (rc == TOME_OPTIONS_HELP) {
        tome_options_help(cli, stdout);
        return 1;
    }
    if (rc == 0 && check) rc = check(ctx, *n_operands, argv, &err);
    if (rc == 0) return 0;
    fprintf(stderr, "%s: %s (see %s --help)\n", cli->program, err.msg, cli->program);
    *status = usage_status;
    return 1;
}
