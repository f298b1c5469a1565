/*
 * model.h - the subcommands of tome-model, each a main of its own.
 *
 * tome-model gets real DeepSeek V4 weights onto a machine and says whether
 * they fit it: `fetch` downloads a Hugging Face repository (fetch.c over
 * the hub client in hub.c), `verify` re-checks a fetched directory against
 * the file list the fetch recorded (verify.c), `plan` runs the fit check
 * of plan/plan.h on a model directory or a config.json (plan.c).  Each
 * takes the arguments after its name (argv[0] is the subcommand) and
 * returns the process exit status: 0 done, 1 failed, 2 usage error.
 */
#ifndef TOME_TOOLS_MODEL_MODEL_H
#define TOME_TOOLS_MODEL_MODEL_H

int model_fetch_main(int argc, char **argv);
int model_verify_main(int argc, char **argv);
int model_plan_main(int argc, char **argv);

/* Parse a subcommand's options: prints help (returns -1 with *status 0)
 * or the usage error (returns -1 with *status 2); 0 when the command
 * should run, with exactly `want` operands in argv[1..]. */
struct tome_cli;
int model_parse(const struct tome_cli *cli, int argc, char **argv, int want, int *status);

#endif
