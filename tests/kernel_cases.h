/*
 * kernel_cases.h - what the kernel tests share: the stored formats'
 * values computed from their definitions (not from the engine's tables),
 * and a small deterministic generator for random cases, so that a failure
 * reproduces run after run.
 */
#ifndef TOME_TESTS_KERNEL_CASES_H
#define TOME_TESTS_KERNEL_CASES_H

#include <math.h>
#include <stdint.h>

/* An FP8 e4m3 code's value: bias 7, subnormals below exponent 1. */
static inline float e4m3_by_definition(uint8_t b)
{
    int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
    double v = exp ? ldexp(1.0 + man / 8.0, exp - 7) : ldexp(man / 8.0, -6);
    return (float)(sign ? -v : v);
}

/* An FP4 e2m1 code's value. */
static inline float e2m1_by_definition(uint8_t c)
{
    static const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    return (float)((c & 8) ? -mags[c & 7] : mags[c & 7]);
}

/* 24 random bits from a linear congruential generator with a fixed seed
 * (one sequence per test program). */
static uint32_t kernel_case_rng = 12345;
static inline uint32_t next_random(void)
{
    kernel_case_rng = kernel_case_rng * 1664525u + 1013904223u;
    return kernel_case_rng >> 8;
}

#endif
