/*
 * test_limits.c - the machine's limits as plan/limits.h measures them.
 *
 * Each limit the CPU supports measures a positive rate and each one it
 * lacks reports 0; the read bandwidth, which splits its buffer between
 * the threads, measures a positive rate however the buffer divides: a
 * size that is no multiple of the threads' lines, and fewer lines than
 * threads (the threads left without one read nothing).
 */
#include "check.h"
#include "plan/limits.h"

static double measured(tome_limit_id id, int threads, size_t bytes)
{
    tome_error err = {0};
    double rate = -1;
    CHECK_OK(tome_limit_measure(id, threads, bytes, &rate, &err), &err);
    return rate;
}

int main(void)
{
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
