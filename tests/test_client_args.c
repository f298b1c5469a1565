/* Unit tests of the client's command line (client/args.c) and of the
 * mapping from error codes to the exit statuses documented in tome(1). */
#include "client/client.h"
#include "tests/check.h"

/* The words after "tome", as a NULL-terminated list. */
#define ARGV(...) ((const char *[]){__VA_ARGS__, NULL})

static int parse(tome_options *opt, tome_error *err, const char *const *words)
{
    char *argv[32] = {"tome"};
    int argc = 1;
    for (; *words && argc < 31; words++) argv[argc++] = (char *)*words;
    return tome_parse_args(argc, argv, opt, err);
}

static void test_commands(void)
{
    tome_options opt;
    tome_error err = {0};
    CHECK_OK(parse(&opt, &err, ARGV("corpus", "add", "src")), &err);
    REQUIRE(opt.command, "no command");
    CHECK(strcmp(opt.command->group, "corpus") == 0);
    CHECK(strcmp(opt.command->name, "add") == 0 && opt.nargs == 1 && !strcmp(opt.args[0], "src"));

    CHECK_OK(parse(&opt, &err, ARGV("--socket", "/tmp/s", "ask", "src", "why?", "--think")), &err);
    CHECK(!strcmp(opt.socket_path, "/tmp/s") && !strcmp(opt.command->name, "ask"));
    CHECK(opt.nargs == 2 && !strcmp(opt.args[1], "why?") && !strcmp(opt.thinking, "high"));
    CHECK(opt.max_tokens == -1 && opt.seed == -1 && opt.temperature == -1);

    CHECK_OK(parse(&opt, &err,
                   ARGV("ask", "--think=max", "--max-tokens=64", "--seed", "7", "--temperature",
                        "0.5", "src", "--", "--why?")),
             &err);
    CHECK(!strcmp(opt.thinking, "max") && opt.max_tokens == 64 && opt.seed == 7);
    CHECK(opt.temperature == 0.5);
    CHECK(opt.nargs == 2 && !strcmp(opt.args[1], "--why?"));

    CHECK_OK(parse(&opt, &err,
                   ARGV("-q", "report", "src", "q.txt", "-o", "out.md", "--format", "json",
                        "--no-think")),
             &err);
    CHECK(opt.quiet && !strcmp(opt.output, "out.md") && !strcmp(opt.format, "json"));
    CHECK(!strcmp(opt.thinking, "none"));
    CHECK_OK(parse(&opt, &err, ARGV("report", "src", "q.txt", "-oout.md")), &err);
    CHECK(!strcmp(opt.output, "out.md"));

    CHECK_OK(parse(&opt, &err, ARGV("prefill", "src", "--wait", "--json")), &err);
    CHECK(opt.wait && opt.json && !opt.detach);
    CHECK_OK(parse(&opt, &err, ARGV("jobs")), &err);
    CHECK(opt.nargs == 0);
    CHECK_OK(parse(&opt, &err, ARGV("jobs", "7", "--cancel")), &err);
    CHECK(opt.cancel && opt.nargs == 1);
    CHECK_OK(
        parse(&opt, &err, ARGV("token", "create", "ci", "--corpus", "src", "--rights", "write")),
        &err);
    CHECK(!strcmp(opt.scope_corpus, "src") && !strcmp(opt.rights, "write"));
    CHECK_OK(
        parse(&opt, &err, ARGV("--host", "h:1", "--cert", "c.pem", "--key", "k.pem", "status")),
        &err);
    CHECK(!strcmp(opt.host, "h:1") && !strcmp(opt.cert, "c.pem") && !strcmp(opt.key, "k.pem"));
    /* A bare --think never takes the next word as its level. */
    CHECK_OK(parse(&opt, &err, ARGV("ask", "--think", "src", "why?")), &err);
    CHECK(!strcmp(opt.thinking, "high") && opt.nargs == 2 && !strcmp(opt.args[0], "src"));
    CHECK_OK(parse(&opt, &err, ARGV("ask", "src", "why?", "--no-think", "--seed=0")), &err);
    CHECK(!strcmp(opt.thinking, "none") && opt.seed == 0);
    CHECK_OK(parse(&opt, &err, ARGV("--help")), &err);
    CHECK(opt.help && !opt.command);
    CHECK_OK(parse(&opt, &err, ARGV("help", "ask")), &err);
    CHECK(opt.help && opt.command && !strcmp(opt.command->name, "ask"));
}

/* Each bad line must be a usage error whose message names the problem. */
static void expect_usage_error(const char *needle, int rc, const tome_error *err)
{
    CHECKF(rc == TOME_EINVAL, "rc=%d for '%s'", rc, needle);
    CHECKF(strstr(err->msg, needle) != NULL, "'%s' not in '%s'", needle, err->msg);
}

static void test_usage_errors(void)
{
    tome_options opt;
    tome_error err = {0};
    expect_usage_error("no command", parse(&opt, &err, ARGV(NULL)), &err);
    expect_usage_error("an argument is empty", parse(&opt, &err, ARGV("jobs", "")), &err);
    expect_usage_error("unknown command 'frobnicate'", parse(&opt, &err, ARGV("frobnicate")), &err);
    expect_usage_error("needs a subcommand", parse(&opt, &err, ARGV("corpus")), &err);
    expect_usage_error("unknown command 'corpus eat'", parse(&opt, &err, ARGV("corpus", "eat")),
                       &err);
    expect_usage_error("usage: tome ask CORPUS QUESTION", parse(&opt, &err, ARGV("ask", "src")),
                       &err);
    expect_usage_error("too many arguments",
                       parse(&opt, &err, ARGV("ask", "a", "b", "c", "d", "e")), &err);
    expect_usage_error("usage: tome corpus ls", parse(&opt, &err, ARGV("corpus", "ls", "x")), &err);
    expect_usage_error("unknown option '--token'",
                       parse(&opt, &err, ARGV("--token", "secret", "status")), &err);
    expect_usage_error("does not apply to 'ask'",
                       parse(&opt, &err, ARGV("ask", "a", "b", "--wait")), &err);
    expect_usage_error("does not apply to 'corpus ls'",
                       parse(&opt, &err, ARGV("corpus", "ls", "--regex")), &err);
    expect_usage_error("needs a value", parse(&opt, &err, ARGV("ask", "a", "b", "--max-tokens")),
                       &err);
    expect_usage_error("not a whole number",
                       parse(&opt, &err, ARGV("ask", "a", "b", "--max-tokens", "ten")), &err);
    expect_usage_error("not a whole number",
                       parse(&opt, &err, ARGV("ask", "a", "b", "--max-tokens", "0")), &err);
    expect_usage_error("high or max", parse(&opt, &err, ARGV("ask", "a", "b", "--think=low")),
                       &err);
    expect_usage_error("takes no value", parse(&opt, &err, ARGV("--quiet=1", "status")), &err);
    expect_usage_error("exclude each other",
                       parse(&opt, &err, ARGV("prefill", "a", "--wait", "--detach")), &err);
    expect_usage_error("go together", parse(&opt, &err, ARGV("--cert", "c", "status")), &err);
    expect_usage_error("read or write",
                       parse(&opt, &err, ARGV("token", "create", "t", "--rights", "all")), &err);
    expect_usage_error("--temperature: 101 is not a number from 0 to 100",
                       parse(&opt, &err, ARGV("ask", "a", "b", "--temperature", "101")), &err);
    expect_usage_error("--seed: -1 is not a whole number",
                       parse(&opt, &err, ARGV("ask", "a", "b", "--seed", "-1")), &err);
    expect_usage_error("option --think does not apply to 'search'",
                       parse(&opt, &err, ARGV("--think", "search", "a", "b")), &err);
    expect_usage_error("not a whole number from 1 to 1000",
                       parse(&opt, &err, ARGV("search", "a", "b", "--limit", "5000")), &err);
}

static void test_exit_statuses(void)
{
    CHECK(tome_exit_status(0) == 0);
    CHECK(tome_exit_status(TOME_EINVAL) == 2);
    CHECK(tome_exit_status(TOME_EUNREACHABLE) == 3);
    CHECK(tome_exit_status(TOME_ENOTFOUND) == 4);
    CHECK(tome_exit_status(TOME_EQUESTIONS) == 5);
    CHECK(tome_exit_status(TOME_EPERM) == 6);
    CHECK(tome_exit_status(TOME_EBUSY) == 7);
    CHECK(tome_exit_status(TOME_EMISMATCH) == 8);
    CHECK(tome_exit_status(TOME_EIO) == 1);
    CHECK(tome_exit_status(TOME_EINTERNAL) == 1);
}

static void test_every_command_has_a_handler(void)
{
    int n = 0;
    for (const tome_command *c = tome_commands; c->name; c++, n++) {
        CHECKF(c->run != NULL, "%s has no handler", c->name);
        CHECK(c->min_args <= c->max_args && c->max_args <= TOME_MAX_ARGS);
    }
    CHECK(n == 18);
}

int main(void)
{
    test_commands();
    test_usage_errors();
    test_exit_statuses();
    test_every_command_has_a_handler();
    return check_finish();
}
