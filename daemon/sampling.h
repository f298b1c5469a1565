/*
 * sampling.h - choosing the next token from the logits, for tomed's
 * questions: greedy at temperature 0, otherwise a seeded draw from the
 * softmax at that temperature, cut to the top_p nucleus.
 *
 * Deterministic by contract: the same logits, parameters and seed give the
 * same ids on every machine (the generator is splitmix64, the nucleus is
 * ordered by probability and then by id), which is what `seed` promises
 * clients.  Owned by the engine thread; no state outside the sampler and
 * the caller's generator.
 */
#ifndef TOMED_SAMPLING_H
#define TOMED_SAMPLING_H

#include <stdint.h>

#include "common/common.h"

typedef struct tomed_sampler tomed_sampler;

/* A sampler for up to `vocab` ids (its workspace is allocated here, so
 * sampling never fails later). */
int tomed_sampler_new(int vocab, tomed_sampler **out, tome_error *err);
void tomed_sampler_free(tomed_sampler *s);

/* The next id among logits[0..vocab) (vocab <= the sampler's):
 *  - temperature <= 0: the greatest logit, the lowest id among equals;
 *  - otherwise: p(i) proportional to exp((logit_i - max) / temperature);
 *    the ids sorted by p (then by id) are kept until their sum reaches
 *    top_p of the total (at least one id), and one of them is drawn with
 *    the next number of *rng.
 * NaN logits are never chosen (id 0 if every logit is NaN). */
int32_t tomed_sample(tomed_sampler *s, const float *logits, int vocab, double temperature,
                     double top_p, uint64_t *rng);

/* splitmix64: the next number of the generator whose state is *x. */
uint64_t tomed_random(uint64_t *x);

#endif
