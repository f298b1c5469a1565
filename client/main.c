/*
 * main.c - `tome`, the command-line client of tomed.
 *
 * Startup only: parse the command line, settle the output conventions and
 * the connection (socket or TLS, token), run the command, and turn its
 * result into one of the exit statuses documented in tome(1).  Every
 * failure ends here as one "tome: error: ..." line on stderr; nothing below
 * prints errors itself, so no failure is reported twice or not at all.
 */
#include "config.h"

#include "client/client.h"

#include <stdlib.h>

int main(int argc, char **argv)
{
    tome_options opt;
    tome_error err = {0};
    int rc = tome_parse_args(argc, argv, &opt, &err);
    tome_output_init(opt.quiet, opt.no_color);
    if (rc) {
        tome_report_error(&err);
        return TOME_EXIT_USAGE;
    }
    if (opt.version) {
        printf("tome %s\n", PACKAGE_VERSION);
        return TOME_EXIT_OK;
    }
    if (opt.help) {
        tome_print_usage(stdout, opt.command);
        return TOME_EXIT_OK;
    }
    tome_client client;
    rc = tome_client_init(&client, &opt, &err);
    if (rc == 0) rc = opt.command->run(&client, &opt, &err);
    tome_client_free(&client);
    if (fflush(stdout) != 0 && rc == 0)
        rc = tome_errorf(&err, TOME_EIO, "cannot write to standard output");
    if (rc) tome_report_error(&err);
    return tome_exit_status(rc);
}
