/*
 * sampling.c - the next token from the logits (daemon/sampling.h).
 */
#include "daemon/sampling.h"

#include <math.h>
#include <stdlib.h>

typedef struct candidate {
    double p;
    int32_t id;
} candidate;

struct tomed_sampler {
    int vocab;
    candidate *c;
};

int tomed_sampler_new(int vocab, tomed_sampler **out, tome_error *err)
{
    tomed_sampler *s = calloc(1, sizeof *s);
    if (s) s->c = malloc((size_t)(vocab > 0 ? vocab : 1) * sizeof *s->c);
    if (!s || !s->c) {
        free(s);
        return tome_errorf(err, TOME_ENOMEM, "out of memory for sampling %d ids", vocab);
    }
    s->vocab = vocab;
    *out = s;
    return 0;
}

void tomed_sampler_free(tomed_sampler *s)
{
    if (!s) return;
    free(s->c);
    free(s);
}

uint64_t tomed_random(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Most probable first; the lower id first among equals, so the order (and
 * the draw) does not depend on the sort's algorithm. */
static int by_probability(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

static int32_t greatest(const float *logits, int vocab)
{
    int32_t best = -1;
    for (int i = 0; i < vocab; i++)
        if (!isnan(logits[i]) && (best < 0 || logits[i] > logits[best])) best = i;
    return best < 0 ? 0 : best;
}

int32_t tomed_sample(tomed_sampler *s, const float *logits, int vocab, double temperature,
                     double top_p, uint64_t *rng)
{
    if (vocab > s->vocab) vocab = s->vocab;
    int32_t best = greatest(logits, vocab);
    if (temperature <= 0 || isnan(logits[best])) return best;
    double sum = 0;
    int n = 0;
    for (int i = 0; i < vocab; i++) {
        if (isnan(logits[i])) continue;
        double p = exp(((double)logits[i] - logits[best]) / temperature);
        if (p <= 0) continue; /* underflow: never drawn */
        s->c[n++] = (candidate){p, i};
        sum += p;
    }
    qsort(s->c, (size_t)n, sizeof *s->c, by_probability);
    double kept = 0;
    int k = 0;
    while (k < n && (k == 0 || kept < top_p * sum)) kept += s->c[k++].p;
    /* 53 random bits: a uniform double in [0, 1). */
    double r = (double)(tomed_random(rng) >> 11) / 9007199254740992.0 * kept;
    for (int i = 0; i < k; i++) {
        r -= s->c[i].p;
        if (r < 0) return s->c[i].id;
    }
    return s->c[k - 1].id;
}
