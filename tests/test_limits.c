/*
 * test_limits.c - the machine's limits as plan/limits.h measures them.
 *
 * Each limit the CPU supports measures a positive rate and each one it
 * lacks reports 0; the read bandwidth, which splits its buffer between
 * the threads, measures a positive rate however the buffer divides: a
 * size that is no multiple of the threads' lines, and fewer lines than
 * threads (the threads left without one read nothing).  The busy-CPU
 * reading that warns a benchmark of other work is checked on /proc/stat
 * texts written here, and once on the machine's own /proc/stat.
 */
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "plan/limits.h"

static double measured(tome_limit_id id, int threads, size_t bytes)
{
    tome_error err = {0};
    double rate = -1;
    CHECK_OK(tome_limit_measure(id, threads, bytes, &rate, &err), &err);
    return rate;
}

/* Two readings of a 2-CPU machine 1000 ticks apart: `busy` of them busy
 * (split over user, system, irq and steal), the rest idle or iowait. */
static void check_busy_between(void)
{
    const char *before = "cpu  100 5 50 1000 20 1 2 3 0 0\n"
                         "cpu0 50 2 25 500 10 0 1 1 0 0\n"
                         "cpu1 50 3 25 500 10 1 1 2 0 0\nintr 12345\nctxt 678\n";
    /* 1000 ticks later, 600 of them busy: 300 user, 200 system, 50 irq, 50 steal */
    const char *after = "cpu  400 5 250 1350 70 51 2 53 0 0\n"
                        "cpu0 200 2 125 675 35 25 1 26 0 0\n"
                        "cpu1 200 3 125 675 35 26 1 27 0 0\nintr 23456\n";
    tome_error err = {0};
    double cpus = -1;
    CHECK_OK(tome_limit_busy_between(before, after, &cpus, &err), &err);
    CHECKF(cpus > 1.1999 && cpus < 1.2001, "600 busy of 1000 ticks on 2 CPUs: %g", cpus);
    CHECK_OK(tome_limit_busy_between(before, before, &cpus, &err), &err);
    CHECKF(cpus == 0, "no ticks between the readings: %g", cpus);

    const char *bad[][2] = {
        {"intr 1\n", "no \"cpu \" line"},
        {"cpu  1 2 3\ncpu0 1 2 3\n", "three counters"},
        {"cpu0 1 2 3 4 5 6 7 8\n", "a cpuN line first"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tome_error e = {0};
        CHECKF(tome_limit_busy_between(bad[i][0], after, &cpus, &e) != 0, "%s accepted", bad[i][1]);
        CHECKF(strstr(e.msg, "\"cpu \" line of eight counters") != NULL, "%s: %s", bad[i][1],
               e.msg);
    }
    tome_error e = {0};
    CHECK(tome_limit_busy_between(after, before, &cpus, &e) != 0);
    CHECKF(strstr(e.msg, "backwards") != NULL, "counters going down: %s", e.msg);

    /* the machine's own: a share of its CPUs, whatever else runs */
    CHECK_OK(tome_limit_busy_cpus(0.05, &cpus, &err), &err);
    CHECKF(cpus >= 0 && cpus <= sysconf(_SC_NPROCESSORS_CONF) + 0.01, "busy CPUs here: %g", cpus);
}

int main(void)
{
    check_busy_between();
    for (int i = 0; i < TOME_LIMIT_COUNT; i++) {
        tome_limit_id id = (tome_limit_id)i;
        double rate = measured(id, 1, (size_t)1 << 20);
        if (tome_limit_supported(id))
            CHECKF(rate > 0, "%s: %g on one thread", tome_limit_name(id), rate);
        else
            CHECKF(rate == 0, "%s: %g where the CPU lacks it", tome_limit_name(id), rate);
    }
    CHECK(tome_limit_supported(TOME_LIMIT_READ_BW));
    double odd = measured(TOME_LIMIT_READ_BW, 3, ((size_t)1 << 20) + 8);
    CHECKF(odd > 0, "read bandwidth, 3 threads over 1 MiB + 8 bytes: %g", odd);
    double one_line = measured(TOME_LIMIT_READ_BW, 4, 64);
    CHECKF(one_line > 0, "read bandwidth, 4 threads over one line: %g", one_line);
    return check_finish();
}
