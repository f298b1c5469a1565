/*
 * args.c - the command line of `tome`: the command table and the options.
 *
 * Commands read like git's and kubectl's: `tome [OPTIONS] COMMAND [SUB]
 * ARGS [OPTIONS]`.  Options may stand before or after the command, because
 * people type `tome ask src "why?" --think` as often as `tome --quiet ask`;
 * "--" ends the options so a question may start with a dash.
 *
 * The options are rows of common/options' tables, like every other tome
 * program's: the global ones, and the commands' ones, which the parser
 * takes anywhere on the line and notes; once the words have named the
 * command, tome_options_scope refuses those the command does not list.
 * The usage text is generated from the same tables.
 *
 * The bearer token is deliberately not an option: argv is visible to every
 * user in ps(1).  It comes from TOME_TOKEN or --token-file (see api.c).
 */
#include "client/client.h"

#include "common/options.h"

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

/* The rows below fill this struct; tome_parse_args starts it with the
 * defaults and copies it out, so callers still get a struct of their own. */
static tome_options parsed;

/* --think[=LEVEL] and --no-think: `level` is the word a bare option means. */
static int set_thinking(void *ctx, const void *level, const char *arg, tome_error *err)
{
    tome_options *opt = ctx;
    if (arg && strcmp(arg, "high") != 0 && strcmp(arg, "max") != 0)
        return tome_errorf(err, TOME_EINVAL, "\"%s\": the level is high or max", arg);
    opt->thinking = arg ? arg : level;
    return 0;
}

/* The daemon takes the rights as the word itself, so it is kept as given. */
static int set_rights(void *ctx, const void *data, const char *arg, tome_error *err)
{
    tome_options *opt = ctx;
    if (strcmp(arg, "read") != 0 && strcmp(arg, "write") != 0)
        return tome_errorf(err, TOME_EINVAL, "\"%s\": rights are read or write", arg);
    opt->rights = arg;
    return 0;
}

static const tome_option global_options[] = {
    TOME_STRING("socket", 0, "PATH", parsed.socket_path, "the daemon's Unix socket"),
    TOME_STRING("host", 0, "HOST:PORT", parsed.host, "a remote daemon, over TLS"),
    TOME_STRING("cacert", 0, "FILE", parsed.cacert, "the CAs to trust for --host (PEM)"),
    TOME_STRING("cert", 0, "FILE", parsed.cert, "a client certificate (PEM; with --key)"),
    TOME_STRING("key", 0, "FILE", parsed.key, "its private key (PEM)"),
    TOME_STRING("token-file", 0, "FILE", parsed.token_file, "the bearer token (mode 0600)"),
    TOME_FLAG("quiet", 'q', parsed.quiet, "no notes or progress on stderr"),
    TOME_FLAG("no-color", 0, parsed.no_color, "never use colour"),
    TOME_FLAG("json", 0, parsed.json, "JSON on stdout instead of text"),
    TOME_FLAG("help", 'h', parsed.help, "this help, or with a command, the command's"),
    TOME_FLAG("version", 0, parsed.version, "print the version"),
};

/* The options of the commands; each command lists those it takes. */
static const tome_option command_options[] = {
    TOME_CALL_OPTIONAL("think", 0, "LEVEL", set_thinking, "high",
                       "think before answering: high (the default) or max"),
    TOME_CALL("no-think", 0, NULL, set_thinking, "none", "answer without thinking"),
    TOME_INT("max-tokens", 0, "N", parsed.max_tokens, 1, 1 << 30, "stop after N tokens"),
    TOME_REAL("temperature", 0, "T", parsed.temperature, 0, 100,
              "sampling temperature (0: greedy)"),
    TOME_INT("seed", 0, "N", parsed.seed, 0, INT32_MAX, "the sampling seed"),
    TOME_FLAG("wait", 0, parsed.wait, "follow the job until it ends"),
    TOME_FLAG("detach", 0, parsed.detach, "print the job id and return at once"),
    TOME_FLAG("regex", 0, parsed.regex, "the pattern is a PCRE2 regular expression"),
    TOME_INT("limit", 0, "N", parsed.limit, 1, 1000, "at most N matches (default 100)"),
    TOME_FLAG("server-path", 0, parsed.server_path, "PATH is on the daemon's machine"),
    TOME_STRING("output", 'o', "FILE", parsed.output, "write the report to FILE"),
    TOME_STRING("format", 0, "FORMAT", parsed.format, "markdown (the default), json or text"),
    TOME_FLAG("cancel", 0, parsed.cancel, "cancel the job"),
    TOME_STRING("corpus", 0, "NAME", parsed.scope_corpus, "the corpus the token may use"),
    TOME_CALL("rights", 0, "read|write", set_rights, NULL, "what it may do there"),
    TOME_FLAG("no-sources", 0, parsed.no_sources, "the answer without its sources"),
};

#define N_GLOBAL  (sizeof global_options / sizeof global_options[0])
#define N_COMMAND (sizeof command_options / sizeof command_options[0])

static const tome_cli cli = {.program = "tome",
                             .usage = "[OPTIONS] COMMAND ARGS [COMMAND OPTIONS]",
                             .options = global_options,
                             .n_options = N_GLOBAL,
                             .command_options = command_options,
                             .n_command_options = N_COMMAND};

/* "corpus ls" or "ask": the command as typed. */
static const char *command_words(const tome_command *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s%s", c->group ? c->group : "", c->group ? " " : "", c->name);
    return buf;
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

/* A word that is not an option: the command (one or two words), then its
 * arguments. */
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

/* The rules that need the whole line: a command, its options and its
 * number of arguments, and the options that go together or exclude each
 * other. */
static int check_command(const tome_options *opt, const char *group, const unsigned char *seen,
                         tome_error *err)
{
    const tome_command *cmd = opt->command;
    if (!cmd && group && !opt->help)
        return tome_errorf(err, TOME_EINVAL, "'%s' needs a subcommand (try tome --help)", group);
    if (!cmd && !opt->help && !opt->version)
        return tome_errorf(err, TOME_EINVAL, "no command given (try tome --help)");
    if (!cmd) return 0;
    char words[64];
    command_words(cmd, words, sizeof words);
    if (tome_options_scope(&cli, seen, cmd->options, words, err)) return err->code;
    if (opt->help) return 0;
    if (opt->nargs < cmd->min_args || opt->nargs > cmd->max_args)
        return tome_errorf(err, TOME_EINVAL, "usage: tome %s %s", words, cmd->params);
    if (opt->wait && opt->detach)
        return tome_errorf(err, TOME_EINVAL, "--wait and --detach exclude each other");
    if (!opt->cert != !opt->key)
        return tome_errorf(err, TOME_EINVAL, "--cert and --key go together");
    return 0;
}

int tome_parse_args(int argc, char **argv, tome_options *opt, tome_error *err)
{
    unsigned char seen[N_GLOBAL + N_COMMAND] = {0};
    int n_words;
    parsed = (tome_options){.max_tokens = -1, .temperature = -1, .seed = -1, .limit = -1};
    int rc = tome_options_parse_seen(&cli, argc, argv, &parsed, &n_words, seen, err);
    *opt = parsed;
    const char *group = NULL;
    /* The parser moved the words that are not options to argv[1..n_words]. */
    for (int i = 1; rc == 0 && i <= n_words; i++) rc = take_word(argv[i], &group, opt, err);
    return rc ? rc : check_command(opt, group, seen, err);
}

static void print_command_line(FILE *f, const tome_command *c)
{
    char words[64], line[96];
    snprintf(line, sizeof line, "%s %s", command_words(c, words, sizeof words), c->params);
    fprintf(f, "  tome %-29s %s\n", line, c->summary);
}

/* One command's usage: its line, the names of its options (one line that
 * scripts read), then each option with its help. */
static void print_command_usage(FILE *f, const tome_command *cmd)
{
    fprintf(f, "usage:\n");
    print_command_line(f, cmd);
    if (*cmd->options) {
        fprintf(f, "options:");
        for (size_t i = 0; i < N_COMMAND; i++)
            if (tome_options_listed(cmd->options, command_options[i].name))
                fprintf(f, " --%s", command_options[i].name);
        fprintf(f, " (and the global options)\n");
        tome_options_help_rows(command_options, N_COMMAND, cmd->options, f);
    }
    fprintf(f, "See tome(1) for details.\n");
}

void tome_print_usage(FILE *f, const tome_command *cmd)
{
    if (cmd) {
        print_command_usage(f, cmd);
        return;
    }
    fprintf(f, "usage: %s %s\n\ncommands:\n", cli.program, cli.usage);
    for (const tome_command *c = tome_commands; c->name; c++) print_command_line(f, c);
    fprintf(f, "\nglobal options:\n");
    tome_options_help_rows(global_options, N_GLOBAL, NULL, f);
    fprintf(f, "\nOptions may come before or after the command; \"--\" ends them.\n"
               "The bearer token comes from TOME_TOKEN or --token-file.  See tome(1).\n");
}
