/*
 * verify.c - `tome-model verify DIR`: is a fetched directory whole?
 *
 * It is when the fetch finished (no incomplete marker) and every file of
 * the recorded list (files.h) has its size and its hub hash.  Each problem
 * is reported; the exit status is 1 when there is any.
 */
#include <stdio.h>
#include <unistd.h>

#include "common/options.h"
#include "tools/model/files.h"
#include "tools/model/model.h"

static int verify_dir(const char *dir, int *bad, tome_error *err)
{
    model_list l;
    int rc = model_list_load(dir, &l, err);
    if (rc) return rc;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, MODEL_INCOMPLETE_NAME);
    if (access(path, F_OK) == 0) {
        fprintf(stderr,
                "tome-model verify: %s: incomplete: a fetch did not finish (run "
                "`tome-model fetch %s %s` again to resume)\n",
                dir, l.repo, dir);
        (*bad)++;
    }
    for (size_t i = 0; i < l.n; i++) {
        tome_error ferr = {0};
        snprintf(path, sizeof path, "%s/%s", dir, l.files[i].path);
        if (model_file_check(path, &l.files[i], &ferr) != 0) {
            fprintf(stderr, "tome-model verify: %s\n", ferr.msg);
            (*bad)++;
        }
    }
    printf("%s: %s at %s, %zu files, %s\n", dir, l.repo, l.revision, l.n,
           *bad ? "NOT complete" : "complete and intact");
    model_list_free(&l);
    return 0;
}

int model_verify_main(int argc, char **argv)
{
    const tome_cli cli = {
        .program = "tome-model verify", .usage = "DIR", .options = NULL, .n_options = 0};
    int status, bad = 0;
    if (model_parse(&cli, argc, argv, 1, &status) != 0) return status;
    tome_error err = {0};
    if (verify_dir(argv[1], &bad, &err) != 0) {
        fprintf(stderr, "tome-model verify: %s\n", err.msg);
        return 1;
    }
    return bad ? 1 : 0;
}
