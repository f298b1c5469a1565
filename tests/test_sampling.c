/*
 * test_sampling.c - daemon/sampling.c: greedy choice and its ties, seeded
 * determinism, the nucleus cut, NaN logits, and the drawn frequencies
 * against the softmax computed here independently.
 */
#include "daemon/sampling.h"
#include "tests/check.h"

#include <math.h>

static tomed_sampler *sampler;

/* Draw `n` ids with one generator seeded `seed`; counts[id]++. */
static void draw(const float *logits, int vocab, double t, double top_p, uint64_t seed, int n,
                 int *counts)
{
    uint64_t rng = seed;
    for (int i = 0; i < n; i++) counts[tomed_sample(sampler, logits, vocab, t, top_p, &rng)]++;
}

static void test_greedy(void)
{
    float l[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
    uint64_t rng = 7, before = rng;
    CHECK(tomed_sample(sampler, l, 5, 0.0, 1.0, &rng) == 1); /* the lower id of the tie */
    CHECK(rng == before);                                    /* greedy draws nothing */
    CHECK(tomed_sample(sampler, l, 5, -1.0, 0.5, &rng) == 1);
    float with_nan[3] = {NAN, -5.0f, -6.0f};
    CHECK(tomed_sample(sampler, with_nan, 3, 0.0, 1.0, &rng) == 1);
    float all_nan[2] = {NAN, NAN};
    CHECK(tomed_sample(sampler, all_nan, 2, 1.0, 1.0, &rng) == 0);
    /* A very low temperature concentrates on the maximum. */
    float l2[4] = {1.0f, 1.5f, 1.49f, 0.0f};
    int counts[4] = {0};
    draw(l2, 4, 1e-4, 1.0, 3, 200, counts);
    CHECK(counts[1] == 200);
}

static void test_determinism(void)
{
    float l[64];
    for (int i = 0; i < 64; i++) l[i] = (float)sin(i * 0.7) * 3.0f;
    int32_t a[100], b[100], c[100];
    uint64_t ra = 42, rb = 42, rc = 43;
    for (int i = 0; i < 100; i++) {
        a[i] = tomed_sample(sampler, l, 64, 1.0, 0.9, &ra);
        b[i] = tomed_sample(sampler, l, 64, 1.0, 0.9, &rb);
        c[i] = tomed_sample(sampler, l, 64, 1.0, 0.9, &rc);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    /* splitmix64's published first outputs for seed 0. */
    uint64_t x = 0;
    CHECK(tomed_random(&x) == 0xe220a8397b1dcdafULL);
    CHECK(tomed_random(&x) == 0x6e789e6aa1b965f4ULL);
}

static void test_nucleus(void)
{
    /* p = 0.5, 0.3, 0.2 (logits are their logs): top_p 0.6 keeps the first
     * two (0.5 < 0.6, then 0.8 >= 0.6); top_p 0.5 the first alone. */
    float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    int counts[3] = {0};
    draw(l, 3, 1.0, 0.6, 11, 4000, counts);
    CHECKF(counts[2] == 0 && counts[0] > 0 && counts[1] > 0, "%d %d %d", counts[0], counts[1],
           counts[2]);
    /* Within the nucleus the odds stay 5:3 (within 5 standard deviations). */
    double expect0 = 4000 * 0.625, sd = sqrt(4000 * 0.625 * 0.375);
    CHECKF(fabs(counts[0] - expect0) < 5 * sd, "%d vs %.0f", counts[0], expect0);
    memset(counts, 0, sizeof counts);
    draw(l, 3, 1.0, 0.5, 11, 500, counts);
    CHECK(counts[0] == 500);
    memset(counts, 0, sizeof counts);
    draw(l, 3, 1.0, 0.0, 11, 500, counts); /* top_p 0: the most probable id */
    CHECK(counts[0] == 500);
}

static void test_frequencies(void)
{
    /* Temperature 2 over 6 ids: frequencies against softmax(l / 2). */
    float l[6] = {1.0f, 0.0f, -1.0f, 2.0f, 0.5f, -3.0f};
    double p[6], sum = 0;
    for (int i = 0; i < 6; i++) sum += p[i] = exp(l[i] / 2.0);
    int counts[6] = {0}, n = 60000;
    draw(l, 6, 2.0, 1.0, 2026, n, counts);
    for (int i = 0; i < 6; i++) {
        double e = n * p[i] / sum, sd = sqrt(e * (1 - p[i] / sum));
        CHECKF(fabs(counts[i] - e) < 5 * sd, "id %d: %d draws, expected %.0f", i, counts[i], e);
    }
}

int main(void)
{
    tome_error err;
    if (tomed_sampler_new(64, &sampler, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_greedy();
    test_determinism();
    test_nucleus();
    test_frequencies();
    tomed_sampler_free(sampler);
    return check_finish();
}
