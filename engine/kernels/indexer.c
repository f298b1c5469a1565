/*
 * indexer.c - the lightning indexer's scores from FP4 codes (indexer.h):
 * the interleaved key layout, queries as codes, the scalar reference and
 * the AVX-512 VNNI and AVX2 kernels, which give the same scores.
 */
#include "engine/kernels/indexer.h"
#include "engine/kernels/avx2_formats.h"

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

/* Reallocate *p from `groups` to `new_groups` groups of `per_group`
 * bytes; the new groups' bytes are `fill` (with `fill_word`, 4-byte words,
 * when fill < 0). */
static int grow_array(void *p, size_t groups, size_t new_groups, size_t per_group, int fill,
                      uint32_t fill_word)
{
    uint8_t **array = p;
    uint8_t *grown = realloc(*array, new_groups * per_group);
    if (!grown) return -1;
    *array = grown;
    uint8_t *first = grown + groups * per_group;
    size_t bytes = (new_groups - groups) * per_group;
    if (fill >= 0)
        memset(first, fill, bytes);
    else
        for (size_t i = 0; i < bytes / 4; i++) memcpy(first + 4 * i, &fill_word, 4);
    return 0;
}

/* Room for n keys.  Lanes past the last key hold zeros (code 12) with
 * scale 1 (exponent 127), so that a kernel reading a whole group reads
 * defined values that pass the exactness test. */
static int grow(v4_index_keys *ik, int64_t n, tome_error *err)
{
    if (n <= ik->cap) return 0;
    int64_t cap = ik->cap ? ik->cap : 1024;
    while (cap < n) cap *= 2;
    size_t groups = (size_t)(ik->cap / V4_INDEX_GROUP), new_groups = (size_t)(cap / V4_INDEX_GROUP);
    size_t lanes = V4_INDEX_GROUP, blocks = (size_t)ik->blocks;
    uint32_t one;
    float f1 = 1.0f;
    memcpy(&one, &f1, 4);
    if (grow_array(&ik->codes, groups, new_groups, (size_t)ik->dim * lanes, 12, 0) ||
        grow_array(&ik->exps, groups, new_groups, blocks * lanes, 127, 0) ||
        grow_array(&ik->emin, groups, new_groups, lanes, 127, 0) ||
        grow_array(&ik->emax, groups, new_groups, lanes, 127, 0) ||
        grow_array(&ik->scale, groups, new_groups, blocks * lanes * sizeof(float), -1, one))
        return tome_errorf(err, TOME_ENOMEM, "out of memory for %lld indexer keys", (long long)cap);
    ik->cap = cap;
    return 0;
}

/* Key i's lane of the layout from its stored row. */
static void key_set(v4_index_keys *ik, int64_t i, const uint8_t *r)
{
    int64_t g = i / V4_INDEX_GROUP;
    int lane = (int)(i % V4_INDEX_GROUP), dim = ik->dim;
    uint8_t *codes = ik->codes + (size_t)g * dim * V4_INDEX_GROUP;
    for (int j = 0; j < dim; j++) {
        int code = (r[j / 2] >> (4 * (j & 1))) & 15;
        codes[((size_t)(j / 4) * V4_INDEX_GROUP + lane) * 4 + j % 4] =
            (uint8_t)(c2_of_code[code] + 12);
    }
    int lo = 255, hi = 0;
    for (int b = 0; b < ik->blocks; b++) {
        int e = r[dim / 2 + b];
        size_t at = ((size_t)g * ik->blocks + b) * V4_INDEX_GROUP + lane;
        ik->exps[at] = (uint8_t)e;
        ik->scale[at] = ldexpf(1.0f, e - 127);
        lo = e < lo ? e : lo;
        hi = e > hi ? e : hi;
    }
    if (hi == 255) lo = 0; /* a NaN scale: a spread no query passes */
    ik->emin[(size_t)g * V4_INDEX_GROUP + lane] = (uint8_t)lo;
    ik->emax[(size_t)g * V4_INDEX_GROUP + lane] = (uint8_t)hi;
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
    for (int64_t i = ik->n; i < n; i++) key_set(ik, i, row(ctx, i));
    ik->n = n;
    return 0;
}

void v4_index_keys_free(v4_index_keys *ik)
{
    free(ik->codes);
    free(ik->exps);
    free(ik->emin);
    free(ik->emax);
    free(ik->scale);
    memset(ik, 0, sizeof *ik);
}

/* ---- queries ----------------------------------------------------------------- */

/* The query's arrays, each rounded up to 64 bytes: scale, off, q4, e, c2. */
static size_t round64(size_t n)
{
    return (n + 63) / 64 * 64;
}

size_t v4_index_query_bytes(int heads, int dim)
{
    size_t hb = (size_t)heads * (dim / V4_FP4_BLOCK), hd = (size_t)heads * dim;
    return round64(hb * sizeof(float)) + round64(hb * sizeof(int32_t)) + round64(hd) + round64(hb) +
           round64(hd);
}

void v4_index_query_bind(v4_index_query *q, int heads, int dim, void *mem, const float *w)
{
    uint8_t *p = mem;
    size_t hb = (size_t)heads * (dim / V4_FP4_BLOCK), hd = (size_t)heads * dim;
    *q = (v4_index_query){.heads = heads, .dim = dim, .blocks = dim / V4_FP4_BLOCK, .w = w};
    q->scale = (float *)(void *)p;
    p += round64(hb * sizeof(float));
    q->off = (int32_t *)(void *)p;
    p += round64(hb * sizeof(int32_t));
    q->q4 = (uint32_t *)(void *)p;
    p += round64(hd);
    q->e = p;
    p += round64(hb);
    q->c2 = (int8_t *)p;
}

v4_index_query v4_index_query_head(const v4_index_query *q, int h, const float *w)
{
    v4_index_query v = *q;
    size_t hb = (size_t)h * q->blocks;
    v.heads = 1;
    v.w = w;
    v.official = 0;
    v.c2 += (size_t)h * q->dim;
    v.q4 += (size_t)h * (q->dim / 4);
    v.e += hb;
    v.off += hb;
    v.scale += hb;
    return v;
}

void v4_index_query_set(v4_index_query *q, int h, const uint8_t *packed, const uint8_t *scales)
{
    int8_t *c2 = q->c2 + (size_t)h * q->dim;
    for (int j = 0; j < q->dim; j++) c2[j] = c2_of_code[(packed[j / 2] >> (4 * (j & 1))) & 15];
    for (int b = 0; b < q->blocks; b++) {
        int32_t sum = 0;
        for (int j = 32 * b; j < 32 * b + 32; j++) sum += c2[j];
        q->e[(size_t)h * q->blocks + b] = scales[b];
        q->scale[(size_t)h * q->blocks + b] = ldexpf(1.0f, scales[b] - 129);
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

/* x rounded to a BF16 value (v4_bf16_round). */
static float bf16_of(float x)
{
    v4_bf16_round(&x, 1);
    return x;
}

void v4_index_score_scalar(const v4_index_keys *ik, const v4_index_query *q, int64_t k0, int64_t k1,
                           float *scores, v4_index_fallback fb, const void *fb_ctx)
{
    for (int64_t i = k0; i < k1; i++) {
        float s = 0;
        for (int h = 0; h < q->heads; h++) {
            float d = pair_dot(ik, q, i, h, fb, fb_ctx);
            float r = d > 0 ? d : 0;
            if (q->official)
                s = s + bf16_of(bf16_of(r) * q->w[h]);
            else
                s = s + r * q->w[h];
        }
        scores[i - k0] = q->official ? bf16_of(s) : s;
    }
}

/* ---- official queries, a head at a time ------------------------------------------ */

/* A fallback for a one-head view of head `head`: the caller's, told the
 * head's index in the whole query. */
typedef struct head_fallback {
    v4_index_fallback fb;
    const void *ctx;
    int head;
} head_fallback;

static float fallback_of_head(const void *ctx, int64_t key, int head)
{
    const head_fallback *hf = ctx;
    return hf->fb(hf->ctx, key, hf->head + head);
}

#define BY_HEADS_KEYS 256 /* keys per pass over the heads (a multiple of 16) */

void v4_index_score_by_heads(v4_index_score_fn fn, const v4_index_keys *ik, const v4_index_query *q,
                             int64_t k0, int64_t k1, float *scores, v4_index_fallback fb,
                             const void *fb_ctx)
{
    static const float one = 1.0f;
    float dot[BY_HEADS_KEYS];
    for (int64_t c0 = k0; c0 < k1; c0 += BY_HEADS_KEYS) {
        size_t n = (size_t)(k1 - c0 < BY_HEADS_KEYS ? k1 - c0 : BY_HEADS_KEYS);
        float *o = scores + (c0 - k0);
        memset(o, 0, n * sizeof *o);
        for (int h = 0; h < q->heads; h++) {
            v4_index_query head = v4_index_query_head(q, h, &one);
            head_fallback hf = {fb, fb_ctx, h};
            fn(ik, &head, c0, c0 + (int64_t)n, dot, fallback_of_head, &hf);
            v4_bf16_round(dot, n);
            for (size_t i = 0; i < n; i++) dot[i] *= q->w[h];
            v4_bf16_round(dot, n);
            for (size_t i = 0; i < n; i++) o[i] += dot[i];
        }
        v4_bf16_round(o, n);
    }
}

/* The query's exponents over all heads, for the groups' quick test: the
 * least and greatest, and the widest spread within one head. */
typedef struct query_bounds {
    int lo, hi, spread;
} query_bounds;

static query_bounds bounds_of(const v4_index_query *q)
{
    query_bounds qb = {255, 0, 0};
    for (int h = 0; h < q->heads; h++) {
        int lo = 255, hi = 0;
        for (int b = 0; b < q->blocks; b++) {
            int e = q->e[(size_t)h * q->blocks + b];
            lo = e < lo ? e : lo;
            hi = e > hi ? e : hi;
        }
        if (hi == 255) qb.spread = 1 << 20; /* NaN: no group passes */
        qb.lo = lo < qb.lo ? lo : qb.lo;
        qb.hi = hi > qb.hi ? hi : qb.hi;
        qb.spread = hi - lo > qb.spread ? hi - lo : qb.spread;
    }
    return qb;
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

/* The lanes of group g whose block exponents, with any head's, surely lie
 * within the bounds: X_b = Ek_b + Eq_b - 256 spreads at most (key spread)
 * + (query spread) and lies in [kmin + qlo, kmax + qhi] - 256. */
VNNI static __mmask16 group_sure(const v4_index_keys *ik, int64_t g, const query_bounds *qb)
{
    __m512i lo = _mm512_cvtepu8_epi32(
        _mm_loadu_si128((const __m128i *)(const void *)(ik->emin + (size_t)g * V4_INDEX_GROUP)));
    __m512i hi = _mm512_cvtepu8_epi32(
        _mm_loadu_si128((const __m128i *)(const void *)(ik->emax + (size_t)g * V4_INDEX_GROUP)));
    __mmask16 sure =
        _mm512_cmple_epi32_mask(_mm512_sub_epi32(hi, lo), _mm512_set1_epi32(SPREAD - qb->spread));
    sure &= _mm512_cmpge_epi32_mask(lo, _mm512_set1_epi32(X_MIN + 256 - qb->lo));
    sure &= _mm512_cmple_epi32_mask(hi, _mm512_set1_epi32(X_MAX + 256 - qb->hi));
    return sure;
}

/* Four heads of the query (h[0..3], repeats allowed) against the sixteen
 * keys of group g, when group_sure holds for them: every block's product
 * and every partial sum is exact, so the blocks are summed with FMAs and
 * no test.  The integer sums are exact in any order, so each head's block
 * runs as two chains (even and odd 4-dim steps) and the heads share each
 * load of the codes: eight independent chains hide vpdpbusd's latency. */
#define HEADS 4
VNNI static void group_dots_sure(const v4_index_keys *ik, const v4_index_query *q, int64_t g,
                                 const int h[HEADS], __m512 d[HEADS])
{
    const uint8_t *codes = ik->codes + (size_t)g * ik->dim * V4_INDEX_GROUP;
    const float *kscale = ik->scale + (size_t)g * ik->blocks * V4_INDEX_GROUP;
    int dim4 = ik->dim / 4, nb = q->blocks;
    const uint32_t *q0 = q->q4 + (size_t)h[0] * dim4, *q1 = q->q4 + (size_t)h[1] * dim4;
    const uint32_t *q2 = q->q4 + (size_t)h[2] * dim4, *q3 = q->q4 + (size_t)h[3] * dim4;
    __m512 d0 = _mm512_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
    for (int b = 0; b < nb; b++) {
        __m512i e0 = _mm512_set1_epi32(-q->off[(size_t)h[0] * nb + b]);
        __m512i e1 = _mm512_set1_epi32(-q->off[(size_t)h[1] * nb + b]);
        __m512i e2 = _mm512_set1_epi32(-q->off[(size_t)h[2] * nb + b]);
        __m512i e3 = _mm512_set1_epi32(-q->off[(size_t)h[3] * nb + b]);
        __m512i o0 = _mm512_setzero_si512(), o1 = o0, o2 = o0, o3 = o0;
#pragma GCC unroll 4
        for (int gi = 8 * b; gi < 8 * b + 8; gi += 2) {
            __m512i c0 = _mm512_loadu_si512((const void *)(codes + (size_t)gi * 64));
            __m512i c1 = _mm512_loadu_si512((const void *)(codes + (size_t)(gi + 1) * 64));
            e0 = _mm512_dpbusd_epi32(e0, c0, _mm512_set1_epi32((int)q0[gi]));
            o0 = _mm512_dpbusd_epi32(o0, c1, _mm512_set1_epi32((int)q0[gi + 1]));
            e1 = _mm512_dpbusd_epi32(e1, c0, _mm512_set1_epi32((int)q1[gi]));
            o1 = _mm512_dpbusd_epi32(o1, c1, _mm512_set1_epi32((int)q1[gi + 1]));
            e2 = _mm512_dpbusd_epi32(e2, c0, _mm512_set1_epi32((int)q2[gi]));
            o2 = _mm512_dpbusd_epi32(o2, c1, _mm512_set1_epi32((int)q2[gi + 1]));
            e3 = _mm512_dpbusd_epi32(e3, c0, _mm512_set1_epi32((int)q3[gi]));
            o3 = _mm512_dpbusd_epi32(o3, c1, _mm512_set1_epi32((int)q3[gi + 1]));
        }
        __m512 ks = _mm512_loadu_ps(kscale + (size_t)b * V4_INDEX_GROUP);
#define BLOCK_SUM(d, e, o, hk)                                                                     \
    d = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(e, o)),                                \
                        _mm512_mul_ps(ks, _mm512_set1_ps(q->scale[(size_t)(hk)*nb + b])), d)
        BLOCK_SUM(d0, e0, o0, h[0]);
        BLOCK_SUM(d1, e1, o1, h[1]);
        BLOCK_SUM(d2, e2, o2, h[2]);
        BLOCK_SUM(d3, e3, o3, h[3]);
#undef BLOCK_SUM
    }
    d[0] = d0;
    d[1] = d1;
    d[2] = d2;
    d[3] = d3;
}

/* Head h's dot products for group g with the per-lane test, the inexact
 * lanes through the fallback. */
VNNI static __m512 group_dots_checked(const v4_index_keys *ik, const v4_index_query *q, int64_t g,
                                      int h, int m, v4_index_fallback fb, const void *fb_ctx)
{
    __mmask16 inexact;
    __m512 d = group_dots(ik, q, g, h, &inexact);
    inexact &= (__mmask16)((1u << m) - 1);
    if (!inexact) return d;
    float lanes[V4_INDEX_GROUP];
    _mm512_storeu_ps(lanes, d);
    for (int l = 0; l < m; l++)
        if (inexact >> l & 1) lanes[l] = fb(fb_ctx, g * V4_INDEX_GROUP + l, h);
    return _mm512_loadu_ps(lanes);
}

VNNI void v4_index_score_vnni(const v4_index_keys *ik, const v4_index_query *q, int64_t k0,
                              int64_t k1, float *scores, v4_index_fallback fb, const void *fb_ctx)
{
    if (q->official) {
        v4_index_score_by_heads(v4_index_score_vnni, ik, q, k0, k1, scores, fb, fb_ctx);
        return;
    }
    query_bounds qb = bounds_of(q);
    for (int64_t g0 = k0; g0 < k1; g0 += V4_INDEX_GROUP) {
        int64_t g = g0 / V4_INDEX_GROUP;
        int m = k1 - g0 < V4_INDEX_GROUP ? (int)(k1 - g0) : V4_INDEX_GROUP;
        __mmask16 lanes = (__mmask16)((1u << m) - 1);
        int sure = (group_sure(ik, g, &qb) & lanes) == lanes;
        __m512 s = _mm512_setzero_ps();
        for (int h = 0; h < q->heads; h += HEADS) {
            int heads = q->heads - h < HEADS ? q->heads - h : HEADS;
            __m512 d[HEADS];
            if (sure) {
                /* the last heads repeated to make up four */
                int hk[HEADS];
                for (int k = 0; k < HEADS; k++) hk[k] = h + (k < heads ? k : heads - 1);
                group_dots_sure(ik, q, g, hk, d);
            } else
                for (int k = 0; k < heads; k++)
                    d[k] = group_dots_checked(ik, q, g, h + k, m, fb, fb_ctx);
            /* relu(d) * w, then the add, head by head: as the scalar loop rounds */
            for (int k = 0; k < heads; k++) {
                __m512 r = _mm512_max_ps(d[k], _mm512_setzero_ps());
                s = _mm512_add_ps(s, _mm512_mul_ps(r, _mm512_set1_ps(q->w[h + k])));
            }
        }
        _mm512_mask_storeu_ps(scores + (g0 - k0), lanes, s);
    }
}

/* ---- scoring: AVX2 ---------------------------------------------------------- */

#define AVX2        __attribute__((target("avx2,fma")))
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

/* The lanes of group g that pass group_sure's test, as a bit mask (a loop
 * over the lanes in scalar code had taken a fifth of the AVX2 kernel's
 * time on a model with four index heads). */
AVX2 static unsigned group_sure_avx2(const v4_index_keys *ik, int64_t g, const query_bounds *qb)
{
    const uint8_t *lo8 = ik->emin + (size_t)g * V4_INDEX_GROUP;
    const uint8_t *hi8 = ik->emax + (size_t)g * V4_INDEX_GROUP;
    unsigned sure = 0;
    for (int half = 0; half < 2; half++) {
        __m256i lo =
            _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(lo8 + 8 * half)));
        __m256i hi =
            _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(hi8 + 8 * half)));
        __m256i bad =
            _mm256_cmpgt_epi32(_mm256_sub_epi32(hi, lo), _mm256_set1_epi32(SPREAD - qb->spread));
        bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(_mm256_set1_epi32(X_MIN + 256 - qb->lo), lo));
        bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(hi, _mm256_set1_epi32(X_MAX + 256 - qb->hi)));
        unsigned bits = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(bad));
        sure |= (~bits & 0xFFu) << (8 * half);
    }
    return sure;
}

/* Heads h[0 .. nh - 1] of the query (nh <= AVX2_HEADS, a constant at each
 * call) against the sixteen keys of group g, which pass the test: d[k][half]
 * is head h[k] against keys 8 * half .. 8 * half + 7.  vpmaddubsw makes the
 * same four-product integer sums as vpdpbusd in two 16-bit halves
 * (|2k + 12| * |2q| <= 288, so a pair never saturates), and a block's eight
 * steps are added in 16 bits (at most 8 * 576 = 4608) before one vpmaddwd
 * by ones widens them: one multiply per 32 products instead of two.  Each
 * load of the codes serves every head and each load of a head's four dims
 * both halves, and the blocks are summed as the VNNI kernel does.  Three
 * heads keep the six sums, two code vectors and a head's vector in the
 * sixteen registers: with four, one sum lived in memory, and a microbench-
 * mark of 64 heads of 128 dims (one thread, Zen 3) ran at 134 GOPS against
 * 160 with three (the int8 limit, int8_dot_avx2: 222). */
#define AVX2_HEADS 3
AVX2_INLINE void group_dots_sure_avx2(const v4_index_keys *ik, const v4_index_query *q, int64_t g,
                                      const int *h, int nh, __m256 d[AVX2_HEADS][2])
{
    const uint8_t *codes = ik->codes + (size_t)g * ik->dim * V4_INDEX_GROUP;
    const float *kscale = ik->scale + (size_t)g * ik->blocks * V4_INDEX_GROUP;
    int dim4 = ik->dim / 4, nb = q->blocks;
    const __m256i ones = _mm256_set1_epi16(1);
    const uint32_t *q4[AVX2_HEADS];
    for (int k = 0; k < nh; k++) {
        q4[k] = q->q4 + (size_t)h[k] * dim4;
        d[k][0] = d[k][1] = _mm256_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        __m256i s[AVX2_HEADS][2];
#pragma GCC unroll 4
        for (int k = 0; k < nh; k++) s[k][0] = s[k][1] = _mm256_setzero_si256();
        for (int gi = 8 * b; gi < 8 * b + 8; gi++) {
            __m256i c0 =
                _mm256_loadu_si256((const __m256i *)(const void *)(codes + (size_t)gi * 64));
            __m256i c1 =
                _mm256_loadu_si256((const __m256i *)(const void *)(codes + (size_t)gi * 64 + 32));
#pragma GCC unroll 4
            for (int k = 0; k < nh; k++) {
                __m256i qv = _mm256_set1_epi32((int)q4[k][gi]);
                s[k][0] = _mm256_add_epi16(s[k][0], _mm256_maddubs_epi16(c0, qv));
                s[k][1] = _mm256_add_epi16(s[k][1], _mm256_maddubs_epi16(c1, qv));
            }
        }
#pragma GCC unroll 4
        for (int k = 0; k < nh; k++) {
            __m256i off = _mm256_set1_epi32(-q->off[(size_t)h[k] * nb + b]);
            __m256 qs = _mm256_set1_ps(q->scale[(size_t)h[k] * nb + b]);
            for (int half = 0; half < 2; half++) {
                __m256i sum = _mm256_add_epi32(off, _mm256_madd_epi16(s[k][half], ones));
                __m256 scale = _mm256_mul_ps(
                    _mm256_loadu_ps(kscale + (size_t)b * V4_INDEX_GROUP + 8 * half), qs);
                d[k][half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, d[k][half]);
            }
        }
    }
}

/* v4_index_score_avx2 with q->official as a constant (`official`), so that
 * qat's loop carries no BF16 steps. */
AVX2_INLINE void score_avx2(const v4_index_keys *ik, const v4_index_query *q, int64_t k0,
                            int64_t k1, float *scores, v4_index_fallback fb, const void *fb_ctx,
                            int official)
{
    query_bounds qb = bounds_of(q);
    for (int64_t g0 = k0; g0 < k1; g0 += V4_INDEX_GROUP) {
        int64_t g = g0 / V4_INDEX_GROUP;
        int m = k1 - g0 < V4_INDEX_GROUP ? (int)(k1 - g0) : V4_INDEX_GROUP;
        unsigned lanes = (1u << m) - 1;
        if ((group_sure_avx2(ik, g, &qb) & lanes) != lanes) {
            /* the scalar reference, with its per-pair test */
            v4_index_score_scalar(ik, q, g0, g0 + m, scores + (g0 - k0), fb, fb_ctx);
            continue;
        }
        __m256 s[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int h = 0; h < q->heads;) {
            /* three heads at a time, then one by one */
            int heads = q->heads - h >= AVX2_HEADS ? AVX2_HEADS : 1,
                hk[AVX2_HEADS] = {h, h + 1, h + 2};
            __m256 d[AVX2_HEADS][2];
            if (heads == AVX2_HEADS)
                group_dots_sure_avx2(ik, q, g, hk, AVX2_HEADS, d);
            else
                group_dots_sure_avx2(ik, q, g, hk, 1, d);
            /* relu(d) * w, then the add, head by head: as the scalar loop rounds */
            for (int k = 0; k < heads; k++, h++)
                for (int half = 0; half < 2; half++) {
                    __m256 r = _mm256_max_ps(d[k][half], _mm256_setzero_ps()),
                           w = _mm256_set1_ps(q->w[h]);
                    __m256 term = official ? bf16_round8(_mm256_mul_ps(bf16_round8(r), w))
                                           : _mm256_mul_ps(r, w);
                    s[half] = _mm256_add_ps(s[half], term);
                }
        }
        float out[V4_INDEX_GROUP];
        _mm256_storeu_ps(out, official ? bf16_round8(s[0]) : s[0]);
        _mm256_storeu_ps(out + 8, official ? bf16_round8(s[1]) : s[1]);
        memcpy(scores + (g0 - k0), out, (size_t)m * sizeof(float));
    }
}

AVX2 void v4_index_score_avx2(const v4_index_keys *ik, const v4_index_query *q, int64_t k0,
                              int64_t k1, float *scores, v4_index_fallback fb, const void *fb_ctx)
{
    if (q->official)
        score_avx2(ik, q, k0, k1, scores, fb, fb_ctx, 1);
    else
        score_avx2(ik, q, k0, k1, scores, fb, fb_ctx, 0);
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
    else if ((!forced || strcmp(forced, "avx512") == 0 || strcmp(forced, "avx2") == 0) &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        active = v4_index_score_avx2;
#endif
}

v4_index_score_fn v4_index_score_active(void)
{
    pthread_once(&active_once, choose);
    return active;
}
