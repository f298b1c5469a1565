/*
 * args.c - the command line of `tome`: the command table and the options.
 *
 * Commands read like git's and kubectl's: `tome [OPTIONS] COMMAND [SUB]
 * ARGS [OPTIONS]`.  Options may stand before or after the command, because
 * people type `tome ask src "why?" --think` as often as `tome --quiet ask`;
 * "--" ends the options so a question may start with a dash.
 *
 * The parser is our own rather than getopt_long: options must be checked
 * against the command that turns up later on the line, and a parser that
 * only fills a struct (no globals, no exit) is easy to unit-test.  Every
 * option is in one table; each command lists the command options it takes,
 * and anything else is a usage error that names the option and command.
 *
 * The bearer token is deliberately not an option: argv is visible to every
 * user in ps(1).  It comes from TOME_TOKEN or --token-file (see api.c).
 */
#include "client/client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ASK_OPTIONS "think no-think max-tokens temperature seed"

const tome_command tome_commands[] = {
    {"corpus", "add", "NAME", 1, 1, "", tome_corpus_add, "create an empty corpus"},
    {"corpus", "ls", "", 0, 0, "", tome_corpus_ls, "list corpora"},
    {"corpus", "show", "NAME", 1, 1, "", tome_corpus_show, "show one corpus"},
    {"corpus", "rm", "NAME", 1, 1, "", tome_corpus_rm, "delete a corpus and its states"},
    {NULL, "ingest", "CORPUS PATH", 2, 2, "server-path", tome_cmd_ingest,
     "upload a directory, archive or - (stdin)"},
    {NULL, "prefill", "CORPUS", 1, 1, "wait detach", tome_cmd_prefill,
     "prefill and cache the model state"},
    {NULL, "ask", "CORPUS QUESTION", 2, 2, ASK_OPTIONS " no-sources", tome_cmd_ask,
     "ask a question, streaming the answer"},
    {NULL, "search", "CORPUS PATTERN", 2, 2, "regex limit", tome_cmd_search,
     "search the corpus text without the model"},
    {NULL, "jobs", "[ID]", 0, 1, "cancel", tome_cmd_jobs, "list jobs, show or cancel one"},
    {"cache", "ls", "", 0, 0, "", tome_cache_ls, "list cached states"},
    {"cache", "verify", "ID", 1, 1, "", tome_cache_verify, "check a state file"},
    {"cache", "rm", "ID", 1, 1, "", tome_cache_rm, "remove a cached state"},
    {"token", "create", "NAME", 1, 1, "corpus rights", tome_token_create,
     "create a bearer token and print its secret"},
    {"token", "ls", "", 0, 0, "", tome_token_ls, "list tokens"},
    {"token", "revoke", "ID", 1, 1, "", tome_token_revoke, "revoke a token"},
    {NULL, "status", "", 0, 0, "", tome_cmd_status, "daemon health and readiness"},
    {NULL, "report", "CORPUS QUESTIONS-FILE", 2, 2, "output format " ASK_OPTIONS, tome_cmd_report,
     "answer a questions file as a report"},
    {NULL, "mcp", "", 0, 0, "", tome_cmd_mcp, "serve the corpora as MCP tools on stdin/stdout"},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL},
};

enum option_id {
    OPT_SOCKET,
    OPT_HOST,
    OPT_CACERT,
    OPT_CERT,
    OPT_KEY,
    OPT_TOKEN_FILE,
    OPT_QUIET,
    OPT_NO_COLOR,
    OPT_JSON,
    OPT_HELP,
    OPT_VERSION,
    OPT_THINK,
    OPT_NO_THINK,
    OPT_MAX_TOKENS,
    OPT_TEMPERATURE,
    OPT_SEED,
    OPT_WAIT,
    OPT_DETACH,
    OPT_REGEX,
    OPT_LIMIT,
    OPT_SERVER_PATH,
    OPT_OUTPUT,
    OPT_FORMAT,
    OPT_CANCEL,
    OPT_CORPUS,
    OPT_RIGHTS,
    OPT_NO_SOURCES,
    OPT_COUNT
};

enum option_arg { ARG_NONE, ARG_REQUIRED, ARG_OPTIONAL };

typedef struct option_spec {
    const char *name;
    char short_name;
    enum option_arg arg;
    int global;
} option_spec;

static const option_spec options[OPT_COUNT] = {
    [OPT_SOCKET] = {"socket", 0, ARG_REQUIRED, 1},
    [OPT_HOST] = {"host", 0, ARG_REQUIRED, 1},
    [OPT_CACERT] = {"cacert", 0, ARG_REQUIRED, 1},
    [OPT_CERT] = {"cert", 0, ARG_REQUIRED, 1},
    [OPT_KEY] = {"key", 0, ARG_REQUIRED, 1},
    [OPT_TOKEN_FILE] = {"token-file", 0, ARG_REQUIRED, 1},
    [OPT_QUIET] = {"quiet", 'q', ARG_NONE, 1},
    [OPT_NO_COLOR] = {"no-color", 0, ARG_NONE, 1},
    [OPT_JSON] = {"json", 0, ARG_NONE, 1},
    [OPT_HELP] = {"help", 'h', ARG_NONE, 1},
    [OPT_VERSION] = {"version", 0, ARG_NONE, 1},
    [OPT_THINK] = {"think", 0, ARG_OPTIONAL, 0},
    [OPT_NO_THINK] = {"no-think", 0, ARG_NONE, 0},
    [OPT_MAX_TOKENS] = {"max-tokens", 0, ARG_REQUIRED, 0},
    [OPT_TEMPERATURE] = {"temperature", 0, ARG_REQUIRED, 0},
    [OPT_SEED] = {"seed", 0, ARG_REQUIRED, 0},
    [OPT_WAIT] = {"wait", 0, ARG_NONE, 0},
    [OPT_DETACH] = {"detach", 0, ARG_NONE, 0},
    [OPT_REGEX] = {"regex", 0, ARG_NONE, 0},
    [OPT_LIMIT] = {"limit", 0, ARG_REQUIRED, 0},
    [OPT_SERVER_PATH] = {"server-path", 0, ARG_NONE, 0},
    [OPT_OUTPUT] = {"output", 'o', ARG_REQUIRED, 0},
    [OPT_FORMAT] = {"format", 0, ARG_REQUIRED, 0},
    [OPT_CANCEL] = {"cancel", 0, ARG_NONE, 0},
    [OPT_CORPUS] = {"corpus", 0, ARG_REQUIRED, 0},
    [OPT_RIGHTS] = {"rights", 0, ARG_REQUIRED, 0},
    [OPT_NO_SOURCES] = {"no-sources", 0, ARG_NONE, 0},
};

static int parse_long(const char *name, const char *text, long min, long max, long *out,
                      tome_error *err)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return tome_errorf(err, TOME_EINVAL, "--%s: '%s' is not a whole number from %ld to %ld",
                           name, text, min, max);
    *out = v;
    return 0;
}

static int parse_thinking(const char *value, tome_options *opt, tome_error *err)
{
    if (!value) value = "high";
    if (strcmp(value, "high") != 0 && strcmp(value, "max") != 0)
        return tome_errorf(err, TOME_EINVAL, "--think=%s: the level is high or max", value);
    opt->thinking = value;
    return 0;
}

/* Store one option's effect in `opt`. */
static int apply_option(enum option_id id, const char *value, tome_options *opt, tome_error *err)
{
    long n;
    char *end;
    switch (id) {
    case OPT_SOCKET:
        opt->socket_path = value;
        break;
    case OPT_HOST:
        opt->host = value;
        break;
    case OPT_CACERT:
        opt->cacert = value;
        break;
    case OPT_CERT:
        opt->cert = value;
        break;
    case OPT_KEY:
        opt->key = value;
        break;
    case OPT_TOKEN_FILE:
        opt->token_file = value;
        break;
    case OPT_QUIET:
        opt->quiet = 1;
        break;
    case OPT_NO_COLOR:
        opt->no_color = 1;
        break;
    case OPT_JSON:
        opt->json = 1;
        break;
    case OPT_HELP:
        opt->help = 1;
        break;
    case OPT_VERSION:
        opt->version = 1;
        break;
    case OPT_THINK:
        return parse_thinking(value, opt, err);
    case OPT_NO_THINK:
        opt->thinking = "none";
        break;
    case OPT_MAX_TOKENS:
        if (parse_long("max-tokens", value, 1, 1L << 30, &n, err)) return err->code;
        opt->max_tokens = n;
        break;
    case OPT_TEMPERATURE:
        opt->temperature = strtod(value, &end);
        if (end == value || *end || opt->temperature < 0)
            return tome_errorf(err, TOME_EINVAL, "--temperature: '%s' is not a number >= 0", value);
        opt->has_temperature = 1;
        break;
    case OPT_SEED:
        if (parse_long("seed", value, 0, 0x7fffffffL, &n, err)) return err->code;
        opt->seed = n;
        opt->has_seed = 1;
        break;
    case OPT_WAIT:
        opt->wait = 1;
        break;
    case OPT_DETACH:
        opt->detach = 1;
        break;
    case OPT_REGEX:
        opt->regex = 1;
        break;
    case OPT_LIMIT:
        if (parse_long("limit", value, 1, 1000, &n, err)) return err->code;
        opt->limit = n;
        break;
    case OPT_SERVER_PATH:
        opt->server_path = 1;
        break;
    case OPT_OUTPUT:
        opt->output = value;
        break;
    case OPT_FORMAT:
        opt->format = value;
        break;
    case OPT_CANCEL:
        opt->cancel = 1;
        break;
    case OPT_CORPUS:
        opt->scope_corpus = value;
        break;
    case OPT_RIGHTS:
        if (strcmp(value, "read") != 0 && strcmp(value, "write") != 0)
            return tome_errorf(err, TOME_EINVAL, "--rights=%s: rights are read or write", value);
        opt->rights = value;
        break;
    case OPT_NO_SOURCES:
        opt->no_sources = 1;
        break;
    case OPT_COUNT:
        break;
    }
    return 0;
}

static int find_long_option(const char *name, size_t len)
{
    for (int i = 0; i < OPT_COUNT; i++)
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0) return i;
    return -1;
}

static int find_short_option(char c)
{
    for (int i = 0; i < OPT_COUNT; i++)
        if (options[i].short_name == c) return i;
    return -1;
}

/* Parse the option at argv[*i] (which starts with '-'), taking its value from
 * the same word or the next one.  `seen` records command options so they can
 * be checked once the command is known. */
static int parse_option(int argc, char **argv, int *i, tome_options *opt, int *seen,
                        tome_error *err)
{
    const char *word = argv[*i];
    const char *inline_value = NULL;
    int id;
    if (word[1] == '-') {
        const char *name = word + 2;
        const char *eq = strchr(name, '=');
        id = find_long_option(name, eq ? (size_t)(eq - name) : strlen(name));
        if (eq) inline_value = eq + 1;
    } else {
        id = find_short_option(word[1]);
        if (id >= 0 && word[2]) inline_value = word + 2;
    }
    if (id < 0) return tome_errorf(err, TOME_EINVAL, "unknown option '%s'", word);
    const option_spec *spec = &options[id];
    const char *value = inline_value;
    if (spec->arg == ARG_NONE && inline_value)
        return tome_errorf(err, TOME_EINVAL, "option --%s takes no value", spec->name);
    if (spec->arg == ARG_REQUIRED && !value) {
        if (*i + 1 >= argc)
            return tome_errorf(err, TOME_EINVAL, "option --%s needs a value", spec->name);
        value = argv[++*i];
    }
    seen[id] = 1;
    return apply_option((enum option_id)id, value, opt, err);
}

static const tome_command *find_command(const char *group, const char *name)
{
    for (const tome_command *c = tome_commands; c->name; c++) {
        int same_group = group ? c->group && strcmp(c->group, group) == 0 : c->group == NULL;
        if (same_group && strcmp(c->name, name) == 0) return c;
    }
    return NULL;
}

static int is_group(const char *word)
{
    for (const tome_command *c = tome_commands; c->name; c++)
        if (c->group && strcmp(c->group, word) == 0) return 1;
    return 0;
}

/* Whether `name` is in the command's space-separated option list. */
static int command_takes(const tome_command *cmd, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = cmd->options; (p = strstr(p, name)) != NULL; p += len) {
        int starts = p == cmd->options || p[-1] == ' ';
        int ends = p[len] == '\0' || p[len] == ' ';
        if (starts && ends) return 1;
    }
    return 0;
}

/* A positional word: the command (one or two words), then its arguments. */
static int take_word(const char *word, const char **group, tome_options *opt, tome_error *err)
{
    if (!*word) return tome_errorf(err, TOME_EINVAL, "an argument is empty");
    if (opt->command) {
        if (opt->nargs == TOME_MAX_ARGS)
            return tome_errorf(err, TOME_EINVAL, "too many arguments at '%s'", word);
        opt->args[opt->nargs++] = word;
        return 0;
    }
    if (*group) {
        opt->command = find_command(*group, word);
        if (!opt->command)
            return tome_errorf(err, TOME_EINVAL, "unknown command '%s %s' (try tome --help)",
                               *group, word);
        return 0;
    }
    if (strcmp(word, "help") == 0) {
        opt->help = 1;
        return 0;
    }
    if (is_group(word)) {
        *group = word;
        return 0;
    }
    opt->command = find_command(NULL, word);
    if (!opt->command)
        return tome_errorf(err, TOME_EINVAL, "unknown command '%s' (try tome --help)", word);
    return 0;
}

static int check_command(const tome_options *opt, const char *group, const int *seen,
                         tome_error *err)
{
    const tome_command *cmd = opt->command;
    if (!cmd && group && !opt->help)
        return tome_errorf(err, TOME_EINVAL, "'%s' needs a subcommand (try tome --help)", group);
    if (!cmd && !opt->help && !opt->version)
        return tome_errorf(err, TOME_EINVAL, "no command given (try tome --help)");
    if (!cmd) return 0;
    for (int i = 0; i < OPT_COUNT; i++)
        if (seen[i] && !options[i].global && !command_takes(cmd, options[i].name))
            return tome_errorf(err, TOME_EINVAL, "option --%s does not apply to '%s%s%s'",
                               options[i].name, cmd->group ? cmd->group : "", cmd->group ? " " : "",
                               cmd->name);
    if (opt->help) return 0;
    if (opt->nargs < cmd->min_args || opt->nargs > cmd->max_args)
        return tome_errorf(err, TOME_EINVAL, "usage: tome %s%s%s %s", cmd->group ? cmd->group : "",
                           cmd->group ? " " : "", cmd->name, cmd->params);
    if (opt->wait && opt->detach)
        return tome_errorf(err, TOME_EINVAL, "--wait and --detach exclude each other");
    if (!opt->cert != !opt->key)
        return tome_errorf(err, TOME_EINVAL, "--cert and --key go together");
    return 0;
}

int tome_parse_args(int argc, char **argv, tome_options *opt, tome_error *err)
{
    memset(opt, 0, sizeof *opt);
    opt->max_tokens = -1;
    opt->limit = -1;
    int seen[OPT_COUNT] = {0};
    const char *group = NULL;
    int options_ended = 0;
    for (int i = 1; i < argc; i++) {
        const char *word = argv[i];
        int rc;
        if (!options_ended && strcmp(word, "--") == 0) {
            options_ended = 1;
            continue;
        }
        if (!options_ended && word[0] == '-' && word[1] != '\0')
            rc = parse_option(argc, argv, &i, opt, seen, err);
        else
            rc = take_word(word, &group, opt, err);
        if (rc) return rc;
    }
    return check_command(opt, group, seen, err);
}

static void print_command_line(FILE *f, const tome_command *c)
{
    char words[64];
    snprintf(words, sizeof words, "%s%s%s %s", c->group ? c->group : "", c->group ? " " : "",
             c->name, c->params);
    fprintf(f, "  tome %-29s %s\n", words, c->summary);
}

void tome_print_usage(FILE *f, const tome_command *cmd)
{
    if (cmd) {
        fprintf(f, "usage:\n");
        print_command_line(f, cmd);
        if (*cmd->options) {
            fprintf(f, "options:");
            for (int i = 0; i < OPT_COUNT; i++)
                if (!options[i].global && command_takes(cmd, options[i].name))
                    fprintf(f, " --%s", options[i].name);
            fprintf(f, " (and the global options)\n");
        }
        fprintf(f, "See tome(1) for details.\n");
        return;
    }
    fprintf(f, "usage: tome [--socket PATH | --host HOST:PORT [--cacert FILE]\n"
               "            [--cert FILE --key FILE]] [--token-file FILE]\n"
               "            [--quiet] [--no-color] [--json] COMMAND ARGS\n\ncommands:\n");
    for (const tome_command *c = tome_commands; c->name; c++) print_command_line(f, c);
    fprintf(f, "\nThe bearer token comes from TOME_TOKEN or --token-file.  See tome(1).\n");
}
