/*
 * limits.c - tome-limits: what this machine can do at most, measured.
 *
 * Speed figures mean little on their own (machines differ from one run to
 * the next), so the benchmarks report each one as a fraction of a limit
 * measured in the same run: the FP32 fused multiply-add peak, the BF16 and
 * int8 dot-product peaks, and the memory read bandwidth (over a 1 GiB
 * buffer), on one thread and on all of them.  The measuring loops live in
 * plan/limits.c, which the fit check of tome-model plan shares.  It warns
 * on stderr when other work is keeping the CPUs busy as it starts: every
 * figure measured beside it reads low.
 *
 *   tome-limits [--threads N] [--csv]
 */
#include <stdio.h>
#include <unistd.h>

#include "common/options.h"
#include "plan/limits.h"

#define BANDWIDTH_BUFFER ((size_t)1 << 30)

static double measure_g(tome_limit_id id, int threads)
{
    tome_error err = {0};
    double rate = 0;
    if (tome_limit_measure(id, threads, BANDWIDTH_BUFFER, &rate, &err) != 0)
        fprintf(stderr, "tome-limits: %s\n", err.msg);
    return rate / 1e9;
}

int main(int argc, char **argv)
{
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), csv = 0, n_operands = 0;
    const tome_option options[] = {
        TOME_INT("threads", 't', "N", threads, 1, 4096, "threads for the all-threads column"),
        TOME_FLAG("csv", 0, csv, "comma-separated output with a header line"),
    };
    const tome_cli cli = {.program = "tome-limits",
                          .usage = "[--threads N] [--csv]",
                          .options = options,
                          .n_options = sizeof options / sizeof options[0]};
    int status;
    if (tome_options_start(&cli, argc, argv, NULL, tome_options_no_operands, 2, &n_operands,
                           &status))
        return status;
    tome_limit_warn_if_busy("tome-limits");
    if (csv) printf("limit,unit,one_thread,all_threads,threads\n");
    for (int i = 0; i < TOME_LIMIT_COUNT; i++) {
        double one = measure_g((tome_limit_id)i, 1), all = measure_g((tome_limit_id)i, threads);
        const char *name = tome_limit_name((tome_limit_id)i),
                   *unit = tome_limit_unit((tome_limit_id)i);
        if (csv)
            printf("%s,%s,%.2f,%.2f,%d\n", name, unit, one, all, threads);
        else
            printf("%-16s %8.1f %-7s (1 thread) %8.1f %-7s (%d threads)\n", name, one, unit, all,
                   unit, threads);
    }
    return 0;
}
