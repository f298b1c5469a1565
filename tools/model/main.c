/*
 * main.c - tome-model: dispatch to the subcommand named by the first
 * argument (model.h), and the option handling they share.
 */
#include <stdio.h>
#include <string.h>

#include "common/options.h"
#include "tools/model/model.h"

static const char usage[] =
    "usage: tome-model fetch REPO DIR [options]   download a Hugging Face model repository\n"
    "       tome-model verify DIR                 re-check a fetched directory\n"
    "       tome-model plan MODEL [options]       will MODEL (a directory or config.json) fit?\n"
    "`tome-model COMMAND --help` lists a command's options.\n";

int model_parse(const struct tome_cli *cli, int argc, char **argv, int want, int *status)
{
    tome_error err = {0};
    int n = 0;
    int rc = tome_options_parse(cli, argc, argv, NULL, &n, &err);
    if (rc == TOME_OPTIONS_HELP) {
        tome_options_help(cli, stdout);
        *status = 0;
        return -1;
    }
    if (rc == 0 && n != want)
        rc = tome_errorf(&err, TOME_EINVAL, "%d operand%s expected, %d given", want,
                         want == 1 ? "" : "s", n);
    if (rc != 0) {
        fprintf(stderr, "%s: %s (see --help)\n", cli->program, err.msg);
        *status = 2;
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } commands[] = {
        {"fetch", model_fetch_main}, {"verify", model_verify_main}, {"plan", model_plan_main}};
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    for (size_t i = 0; argc >= 2 && i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    if (argc >= 2) fprintf(stderr, "tome-model: unknown command \"%s\"\n", argv[1]);
    fputs(usage, stderr);
    return 2;
}
