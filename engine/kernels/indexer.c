/*
 * indexer.c - the lightning indexer's scores from FP4 codes (indexer.h):
 * the interleaved key layout, queries as codes, the scalar reference and
 * the AVX-512 VNNI kernel, which give the same scores.
 */
#include "engine/kernels/indexer.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* 2 * e2m1 value of each code (bit 3 the sign; -0 is 0), and the same plus
 * 12 for the unsigned key bytes. */
static const int8_t c2_of_code[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* The exactness bounds of indexer.h: block exponents X_b = Eq_b + Ek_b -
 * 256 within SPREAD of each other, 2^X_b a normal float, and the largest
 * partial sum (< 2^15 units of 2^X) far from overflow. */
#define SPREAD 9
#define X_MIN  (-126)
#define X_MAX  100

/* ---- keys ------------------------------------------------------------------ */

static int grow(v4_index_keys *ik, int64_t n, tome_error *err)
{
    if (n <= ik->cap) return 0;
    int64_t cap = ik->cap ? ik->cap : 1024;
    while (cap < n) cap *= 2;
    size_t per_group_codes = (size_t)ik->dim * V4_INDEX_GROUP;
    size_t per_group_exps = (size_t)ik->blocks * V4_INDEX_GROUP;
    uint8_t *codes = realloc(ik->codes, (size_t)(cap / V4_INDEX_GROUP) * per_group_codes);
    if (!codes)
        return tome_errorf(err, TOME_ENOMEM, "out of memory for %lld indexer keys", (long long)cap);
    ik->codes = codes;
    uint8_t *exps = realloc(ik->exps, (size_t)(cap / V4_INDEX_GROUP) * per_group_exps);
    if (!exps)
        return tome_errorf(err, TOME_ENOMEM, "out of memory for %lld indexer keys", (long long)cap);
    ik->exps = exps;
    /* Lanes past the last key hold zeros (code 12) with scale 1, so that a
     * kernel reading a whole group reads defined bytes. */
    size_t old_groups = (size_t)((ik->cap + V4_INDEX_GROUP - 1) / V4_INDEX_GROUP);
    size_t new_groups = (size_t)(cap / V4_INDEX_GROUP);
    memset(ik->codes + old_groups * per_group_codes, 12,
           (new_groups - old_groups) * per_group_codes);
    memset(ik->exps + old_groups * per_group_exps, 127, (new_groups - old_groups) * per_group_exps);
    ik->cap = cap;
    return 0;
}

int v4_index_keys_add(v4_index_keys *ik, int dim, int64_t n,
                      const uint8_t *(*row)(const void *ctx, int64_t i), const void *ctx,
                      tome_error *err)
{
    if (ik->n == 0 && ik->cap == 0) {
        ik->dim = dim;
        ik->blocks = dim / V4_FP4_BLOCK;
    }
    int rc = grow(ik, n, err);
    if (rc != 0) return rc;
    int dim4 = dim / 4;
    for (int64_t i = ik->n; i < n; i++) {
        const uint8_t *r = row(ctx, i);
        int64_t g = i / V4_INDEX_GROUP;
        int lane = (int)(i % V4_INDEX_GROUP);
        uint8_t *codes = ik->codes + (size_t)g * dim * V4_INDEX_GROUP;
        for (int j = 0; j < dim; j++) {
            int code = (r[j / 2] >> (4 * (j & 1))) & 15;
            codes[((size_t)(j / 4) * V4_INDEX_GROUP + lane) * 4 + j % 4] =
                (uint8_t)(c2_of_code[code] + 12);
        }
        (void)dim4;
        for (int b = 0; b < ik->blocks; b++)
            ik->exps[((size_t)g * ik->blocks + b) * V4_INDEX_GROUP + lane] = r[dim / 2 + b];
    }
    ik->n = n;
    return 0;
}

void v4_index_keys_free(v4_index_keys *ik)
{
    free(ik->codes);
    free(ik->exps);
    memset(ik, 0, sizeof *ik);
}

/* ---- queries ----------------------------------------------------------------- */

void v4_index_query_set(v4_index_query *q, int h, const uint8_t *packed, const uint8_t *scales)
{
    int8_t *c2 = q->c2 + (size_t)h * q->dim;
    for (int j = 0; j < q->dim; j++) c2[j] = c2_of_code[(packed[j / 2] >> (4 * (j & 1))) & 15];
    for (int b = 0; b < q->blocks; b++) {
        int32_t sum = 0;
        for (int j = 32 * b; j < 32 * b + 32; j++) sum += c2[j];
        q->e[(size_t)h * q->blocks + b] = scales[b];
        q->off[(size_t)h * q->blocks + b] = 12 * sum;
    }
    for (int g = 0; g < q->dim / 4; g++) {
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) v |= (uint32_t)(uint8_t)c2[4 * g + k] << (8 * k);
        q->q4[(size_t)h * (q->dim / 4) + g] = v;
    }
}

/* ---- scoring: the scalar reference -------------------------------------------- */

/* q_h . key, exactly from the codes, or through the fallback. */
static float pair_dot(const v4_index_keys *ik, const v4_index_query *q, int64_t key, int h,
                      v4_index_fallback fb, const void *fb_ctx)
{
    int64_t g = key / V4_INDEX_GROUP;
    int lane = (int)(key % V4_INDEX_GROUP);
    const uint8_t *codes = ik->codes + (size_t)g * ik->dim * V4_INDEX_GROUP;
    const int8_t *c2 = q->c2 + (size_t)h * q->dim;
    int xmin = 1 << 20, xmax = -(1 << 20), nan = 0;
    float d = 0;
    for (int b = 0; b < ik->blocks; b++) {
        int32_t sum = 0;
        for (int j = 32 * b; j < 32 * b + 32; j++)
            sum += codes[((size_t)(j / 4) * V4_INDEX_GROUP + lane) * 4 + j % 4] * c2[j];
        sum -= q->off[(size_t)h * q->blocks + b];
        int ek = ik->exps[((size_t)g * ik->blocks + b) * V4_INDEX_GROUP + lane];
        int eq = q->e[(size_t)h * q->blocks + b];
        nan |= ek == 255 || eq == 255;
        int x = ek + eq - 256;
        xmin = x < xmin ? x : xmin;
        xmax = x > xmax ? x : xmax;
        float part = (float)sum * ldexpf(1.0f, x < X_MIN ? X_MIN : x > X_MAX ? X_MAX : x);
        d = b == 0 ? part : d + part;
    }
    if (nan || xmax - xmin > SPREAD || xmin < X_MIN || xmax > X_MAX) return fb(fb_ctx, key, h);
    return d;
}

void v4_index_score_scalar(const v4_index_keys *ik, const v4_index_query *q, int64_t k0, int64_t k1,
                           float *scores, v4_index_fallback fb, const void *fb_ctx)
{
    for (int64_t i = k0; i < k1; i++) {
        float s = 0;
        for (int h = 0; h < q->heads; h++) {
            float d = pair_dot(ik, q, i, h, fb, fb_ctx);
            float r = d > 0 ? d : 0;
            s = s + r * q->w[h];
        }
        scores[i - k0] = s;
    }
}

/* ---- scoring: AVX-512 VNNI --------------------------------------------------- */

#if defined(__x86_64__)
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* Sixteen keys of group g against head h: the dot products, and the lanes
 * the integer path cannot give exactly. */
VNNI static __m512 group_dots(const v4_index_keys *ik, const v4_index_query *q, int64_t g, int h,
                              __mmask16 *inexact)
{
    int dim4 = ik->dim / 4;
    const uint8_t *codes = ik->codes + (size_t)g * ik->dim * V4_INDEX_GROUP;
    const uint32_t *q4 = q->q4 + (size_t)h * dim4;
    __m512i xmin = _mm512_set1_epi32(1 << 20), xmax = _mm512_set1_epi32(-(1 << 20));
    __mmask16 nan = 0;
    __m512 d = _mm512_setzero_ps();
    for (int b = 0; b < ik->blocks; b++) {
        __m512i acc = _mm512_setzero_si512();
        for (int gi = 8 * b; gi < 8 * b + 8; gi++)
            acc = _mm512_dpbusd_epi32(acc,
                                      _mm512_loadu_si512((const void *)(codes + (size_t)gi * 64)),
                                      _mm512_set1_epi32((int)q4[gi]));
        acc = _mm512_sub_epi32(acc, _mm512_set1_epi32(q->off[(size_t)h * q->blocks + b]));
        __m512i ek = _mm512_cvtepu8_epi32(_mm_loadu_si128(
            (const __m128i *)(const void *)(ik->exps +
                                            ((size_t)g * ik->blocks + b) * V4_INDEX_GROUP)));
        int eq = q->e[(size_t)h * q->blocks + b];
        nan |= _mm512_cmpeq_epi32_mask(ek, _mm512_set1_epi32(255));
        if (eq == 255) nan = 0xFFFF;
        __m512i x = _mm512_add_epi32(ek, _mm512_set1_epi32(eq - 256));
        xmin = _mm512_min_epi32(xmin, x);
        xmax = _mm512_max_epi32(xmax, x);
        __m512i clamped = _mm512_min_epi32(_mm512_max_epi32(x, _mm512_set1_epi32(X_MIN)),
                                           _mm512_set1_epi32(X_MAX));
        __m512 pow2 = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_add_epi32(clamped, _mm512_set1_epi32(127)), 23));
        __m512 part = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), pow2);
        d = b == 0 ? part : _mm512_add_ps(d, part);
    }
    __mmask16 bad = nan;
    bad |= _mm512_cmpgt_epi32_mask(_mm512_sub_epi32(xmax, xmin), _mm512_set1_epi32(SPREAD));
    bad |= _mm512_cmplt_epi32_mask(xmin, _mm512_set1_epi32(X_MIN));
    bad |= _mm512_cmpgt_epi32_mask(xmax, _mm512_set1_epi32(X_MAX));
    *inexact = bad;
    return d;
}

VNNI void v4_index_score_vnni(const v4_index_keys *ik, const v4_index_query *q, int64_t k0,
                              int64_t k1, float *scores, v4_index_fallback fb, const void *fb_ctx)
{
    for (int64_t g0 = k0; g0 < k1; g0 += V4_INDEX_GROUP) {
        int64_t g = g0 / V4_INDEX_GROUP;
        int m = k1 - g0 < V4_INDEX_GROUP ? (int)(k1 - g0) : V4_INDEX_GROUP;
        __m512 s = _mm512_setzero_ps();
        for (int h = 0; h < q->heads; h++) {
            __mmask16 inexact;
            __m512 d = group_dots(ik, q, g, h, &inexact);
            inexact &= (__mmask16)((1u << m) - 1);
            if (inexact) {
                float lanes[V4_INDEX_GROUP];
                _mm512_storeu_ps(lanes, d);
                for (int l = 0; l < m; l++)
                    if (inexact >> l & 1) lanes[l] = fb(fb_ctx, g0 + l, h);
                d = _mm512_loadu_ps(lanes);
            }
            /* relu(d) * w, then the add: as the scalar loop rounds */
            __m512 r = _mm512_max_ps(d, _mm512_setzero_ps());
            s = _mm512_add_ps(s, _mm512_mul_ps(r, _mm512_set1_ps(q->w[h])));
        }
        _mm512_mask_storeu_ps(scores + (g0 - k0), (__mmask16)((1u << m) - 1), s);
    }
}
#endif

/* ---- dispatch ------------------------------------------------------------------ */

static v4_index_score_fn active;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    active = v4_index_score_scalar;
#if defined(__x86_64__)
    const char *forced = getenv("TOME_ISA");
    __builtin_cpu_init();
    if ((!forced || strcmp(forced, "avx512") == 0) && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni"))
        active = v4_index_score_vnni;
#endif
}

v4_index_score_fn v4_index_score_active(void)
{
    pthread_once(&active_once, choose);
    return active;
}
