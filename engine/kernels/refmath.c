/*
 * refmath.c - float arithmetic in the exact shape of the reference's.
 *
 * V4's trained graph rounds every KV vector to FP8 and every indexer vector
 * to FP4.  A value that sits within a few ulps of a rounding midpoint is
 * stored one code up or down depending on the last bits of the arithmetic
 * that produced it, and a flipped code stays in the cache and moves every
 * later logit.  Matching DeepSeek's code "to float precision" is therefore
 * not enough: to keep the stored codes identical, the engine reproduces the
 * reference's float operations themselves, in its order.  The reference runs
 * on PyTorch's CPU kernels; measured against its outputs (tests/test_golden),
 * that means:
 *
 *  - Matrix products sum in input order with a separate multiply and add
 *    (exact.c).
 *  - Sums and means along a row use PyTorch's cascade order (v4_sum,
 *    v4_mean_square below).
 *  - Element-wise exp and log1p come from a SIMD math library whose results
 *    differ from the C library's in the last bit for some inputs.  PyTorch
 *    runs its element-wise loops in 16-element steps (two 8-lane vectors) and
 *    finishes a tensor's remaining elements with the C library.  So which
 *    function computes an element depends on its index in the tensor:
 *    v4_vector_lane() says which, and v4_exp_at()/v4_log1p_at() choose.
 *    Softmax-shaped loops (attention, the compressors, the Sinkhorn rows)
 *    always use the vector functions.
 *
 * The vector functions below are the classic Cody-Waite exp and the
 * double-float log1p (argument reduction to [0.75, 1.5), a degree-3 odd
 * polynomial in m/(2+m) evaluated with compensated sums), written so that
 * every operation rounds as the 8-lane FMA versions do.
 */
#include "engine/internal.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

/* ---- exp ------------------------------------------------------------------ */

float v4_exp_vector(float d)
{
    /* d = q*ln2 + s, ln2 split in a short high part and a low part so that
     * q*ln2_hi is exact; then e^s by a degree-6 polynomial. */
    float q = rintf(d * 1.442695040888963407359924681001892137426645954152985934135449406931f);
    float s = fmaf(q, -0.693145751953125f, d);
    s = fmaf(q, -1.428606765330187045e-06f, s);
    float u = 0.000198527617612853646278381f;
    u = fmaf(u, s, 0.00139304355252534151077271f);
    u = fmaf(u, s, 0.00833336077630519866943359f);
    u = fmaf(u, s, 0.0416664853692054748535156f);
    u = fmaf(u, s, 0.166666671633720397949219f);
    u = fmaf(u, s, 0.5f);
    u = 1.0f + fmaf(s * s, u, s);
    if (d < -104.0f) return 0.0f;
    /* Above 104 the powers of two below overflow to infinity anyway; q as
     * an int would not fit for long.  A NaN has made u NaN. */
    if (d > 104.0f) return INFINITY;
    if (isnan(d)) return u;
    /* two steps so that 2^q never overflows on its own */
    int h = (int)q >> 1;
    return ldexpf(ldexpf(u, h), (int)q - h);
}

/* Many exps at once, bit for bit v4_exp_vector's: the same operations
 * (multiply, round to nearest even, fused multiply-adds, two multiplies by
 * powers of two, which round as ldexpf does) on sixteen or eight lanes.
 * Lanes outside the range where those powers of two are floats (d > 88,
 * which attention's max-subtracted arguments never reach, or NaN) are
 * computed by v4_exp_vector itself. */
#if defined(__x86_64__)
#include <immintrin.h>

#define EXP_CONSTANTS(V, set1)                                                                     \
    const V log2e = set1(1.442695040888963407359924681001892137426645954152985934135449406931f),   \
            ln2_hi = set1(-0.693145751953125f), ln2_lo = set1(-1.428606765330187045e-06f),         \
            c6 = set1(0.000198527617612853646278381f), c5 = set1(0.00139304355252534151077271f),   \
            c4 = set1(0.00833336077630519866943359f), c3 = set1(0.0416664853692054748535156f),     \
            c2 = set1(0.166666671633720397949219f), half = set1(0.5f), one = set1(1.0f)

__attribute__((target("avx512f,avx512dq"))) static void exp16(const float *d, float *out)
{
    EXP_CONSTANTS(__m512, _mm512_set1_ps);
    __m512 x = _mm512_loadu_ps(d);
    __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT);
    __m512 s = _mm512_fmadd_ps(q, ln2_lo, _mm512_fmadd_ps(q, ln2_hi, x));
    __m512 u = _mm512_fmadd_ps(c6, s, c5);
    u = _mm512_fmadd_ps(u, s, c4);
    u = _mm512_fmadd_ps(u, s, c3);
    u = _mm512_fmadd_ps(u, s, c2);
    u = _mm512_fmadd_ps(u, s, half);
    u = _mm512_add_ps(one, _mm512_fmadd_ps(_mm512_mul_ps(s, s), u, s));
    __m512i qi = _mm512_cvttps_epi32(q), h = _mm512_srai_epi32(qi, 1);
    __m512i bias = _mm512_set1_epi32(127);
    __m512 p1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(h, bias), 23));
    __m512 p2 =
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(qi, h), bias), 23));
    __m512 r = _mm512_mul_ps(_mm512_mul_ps(u, p1), p2);
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, _mm512_set1_ps(-104.0f), _CMP_LT_OQ),
                           _mm512_setzero_ps());
    _mm512_storeu_ps(out, r);
}

__attribute__((target("avx2,fma"))) static void exp8(const float *d, float *out)
{
    EXP_CONSTANTS(__m256, _mm256_set1_ps);
    __m256 x = _mm256_loadu_ps(d);
    __m256 q =
        _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 s = _mm256_fmadd_ps(q, ln2_lo, _mm256_fmadd_ps(q, ln2_hi, x));
    __m256 u = _mm256_fmadd_ps(c6, s, c5);
    u = _mm256_fmadd_ps(u, s, c4);
    u = _mm256_fmadd_ps(u, s, c3);
    u = _mm256_fmadd_ps(u, s, c2);
    u = _mm256_fmadd_ps(u, s, half);
    u = _mm256_add_ps(one, _mm256_fmadd_ps(_mm256_mul_ps(s, s), u, s));
    __m256i qi = _mm256_cvttps_epi32(q), h = _mm256_srai_epi32(qi, 1);
    __m256i bias = _mm256_set1_epi32(127);
    __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    __m256 p2 =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(qi, h), bias), 23));
    __m256 r = _mm256_mul_ps(_mm256_mul_ps(u, p1), p2);
    r = _mm256_blendv_ps(r, _mm256_setzero_ps(),
                         _mm256_cmp_ps(x, _mm256_set1_ps(-104.0f), _CMP_LT_OQ));
    _mm256_storeu_ps(out, r);
}

/* 16, 8 or 1 lanes: the ISA of the fast kernels (TOME_ISA can force it),
 * asked once. */
static int simd_width;
static pthread_once_t width_once = PTHREAD_ONCE_INIT;

static void probe_width(void)
{
    const char *isa = v4_kernels_isa();
    simd_width = strcmp(isa, "avx512") == 0 ? 16 : strcmp(isa, "avx2") == 0 ? 8 : 1;
}
#endif

/* Whether d is in the range the SIMD lanes compute (d <= 88, not NaN). */
static int lanes_cover(const float *d, int n)
{
    for (int i = 0; i < n; i++)
        if (!(d[i] <= 88.0f)) return 0;
    return 1;
}

void v4_exp_vector_lanes(const float *d, float *out, int64_t n, int lanes)
{
    int64_t i = 0;
#if defined(__x86_64__)
    for (; lanes > 1 && i + lanes <= n; i += lanes) {
        if (!lanes_cover(d + i, lanes)) {
            for (int k = 0; k < lanes; k++) out[i + k] = v4_exp_vector(d[i + k]);
        } else if (lanes == 16) {
            exp16(d + i, out + i);
        } else {
            exp8(d + i, out + i);
        }
    }
#endif
    for (; i < n; i++) out[i] = v4_exp_vector(d[i]);
}

void v4_exp_vector_n(const float *d, float *out, int64_t n)
{
#if defined(__x86_64__)
    pthread_once(&width_once, probe_width);
    v4_exp_vector_lanes(d, out, n, simd_width);
#else
    v4_exp_vector_lanes(d, out, n, 1);
#endif
}

/* ---- log1p ------------------------------------------------------------------ */

/* A float pair hi + lo carrying about 48 bits. */
typedef struct pair {
    float hi, lo;
} pair;

static pair pair_sum(float x, float y) /* needs |x| >= |y| */
{
    float s = x + y;
    return (pair){s, (x - s) + y};
}

static pair pair_add(pair x, pair y)
{
    float s = x.hi + y.hi;
    return (pair){s, (((x.hi - s) + y.hi) + x.lo) + y.lo};
}

static pair pair_add_float(pair x, float y)
{
    float s = x.hi + y;
    return (pair){s, ((x.hi - s) + y) + x.lo};
}

static pair pair_mul_float(pair x, float y)
{
    float s = x.hi * y;
    return (pair){s, fmaf(x.lo, y, fmaf(x.hi, y, -s))};
}

static pair pair_div(pair n, pair d)
{
    float t = 1.0f / d.hi;
    float s = n.hi * t;
    float u = fmaf(t, n.hi, -s);
    float v = fmaf(-d.lo, t, fmaf(-d.hi, t, 1.0f));
    return (pair){s, fmaf(s, v, fmaf(n.lo, t, u))};
}

static int float_exponent(float d)
{
    uint32_t u;
    memcpy(&u, &d, 4);
    return (int)((u >> 23) & 0xff) - 127;
}

static float times_pow2(float d, int e) /* d * 2^e by the exponent bits; d normal */
{
    uint32_t u;
    memcpy(&u, &d, 4);
    u += (uint32_t)e << 23;
    memcpy(&d, &u, 4);
    return d;
}

float v4_log1p_vector(float d)
{
    if (d > 1e38f) return INFINITY;
    if (d < -1.0f) return NAN;
    if (d == -1.0f) return -INFINITY;
    float dp1 = d + 1.0f;
    int tiny = dp1 < 1.17549435e-38f;
    if (tiny) dp1 *= 18446744073709551616.0f; /* 2^64 */
    /* 1 + d = 2^e * (1 + m) with 1 + m in [0.75, 1.5) */
    int e = float_exponent(dp1 * (1.0f / 0.75f));
    float t = times_pow2(1.0f, -e);
    float m = fmaf(d, t, t - 1.0f);
    if (tiny) e -= 64;
    pair s = pair_mul_float((pair){0.69314718246459960938f, -1.904654323148236017e-09f}, (float)e);
    pair x = pair_div((pair){m, 0.0f}, pair_sum(2.0f, m));
    float x2 = x.hi * x.hi;
    float poly = fmaf(fmaf(0.3027294874f, x2, 0.3996108174f), x2, 0.6666694880f);
    s = pair_add(s, (pair){x.hi * 2.0f, x.lo * 2.0f});
    s = pair_add_float(s, x2 * x.hi * poly);
    float r = s.hi + s.lo;
    return d == 0.0f ? d : r; /* keeps -0 */
}

/* ---- which function an element gets ----------------------------------------
 *
 * One loop over the whole tensor: vector code for every full 16-element
 * step, the C library for the rest.  PyTorch splits a tensor of more than
 * 32768 elements between its threads, each part with its own tail; how
 * depends on the reference machine's thread count, which nothing records.
 * The single-loop rule is exact for the golden models' tensors (all below
 * that size) and off by one ulp in a few elements of larger ones. */

int v4_vector_lane(int64_t index, int64_t count)
{
    return index < count / 16 * 16;
}

float v4_exp_at(float x, int64_t index, int64_t count)
{
    return v4_vector_lane(index, count) ? v4_exp_vector(x) : expf(x);
}

float v4_sigmoid_at(float x, int64_t index, int64_t count)
{
    return 1.0f / (1.0f + v4_exp_at(-x, index, count));
}

/* ---- sums in PyTorch's cascade order ---------------------------------------------
 *
 * A row of n floats is read as 8-lane vectors; four vector accumulators take
 * consecutive vectors in turn; every 2^p steps (p = max(4, ceil(log2(steps))
 * / 4)) the accumulators move their sums up into one of up to four levels;
 * at the end the levels fold back, the four accumulators are added, and the
 * result's eight lanes are added left to right after the elements that did
 * not fill a vector. */
#define LANES  8
#define CHAINS 4
#define LEVELS 4

static float term(const float *x, int64_t i, int square)
{
    return square ? x[i] * x[i] : x[i];
}

static void add_steps(float acc[CHAINS][LANES], const float *x, int64_t from, int64_t steps,
                      int square)
{
    for (int64_t i = from; i < from + steps; i++)
        for (int c = 0; c < CHAINS; c++)
            for (int l = 0; l < LANES; l++)
                acc[c][l] += term(x, (i * CHAINS + c) * LANES + l, square);
}

static int ceil_log2(int64_t v)
{
    int c = 0;
    while (((int64_t)1 << c) < v) c++;
    return c;
}

static float cascade_sum(const float *x, int64_t n, int square)
{
    float acc[LEVELS][CHAINS][LANES];
    memset(acc, 0, sizeof acc);
    int64_t vectors = n / LANES, steps = vectors / CHAINS;
    int power = ceil_log2(steps) / LEVELS;
    if (power < 4) power = 4;
    int64_t stride = (int64_t)1 << power, mask = stride - 1, i = 0;
    for (; i + stride <= steps; i += stride) {
        add_steps(acc[0], x, i, stride, square);
        for (int j = 1; j < LEVELS; j++) {
            for (int c = 0; c < CHAINS; c++)
                for (int l = 0; l < LANES; l++) {
                    acc[j][c][l] += acc[j - 1][c][l];
                    acc[j - 1][c][l] = 0;
                }
            if ((i + stride) & (mask << (j * power))) break;
        }
    }
    add_steps(acc[0], x, i, steps - i, square);
    for (int j = 1; j < LEVELS; j++)
        for (int c = 0; c < CHAINS; c++)
            for (int l = 0; l < LANES; l++) acc[0][c][l] += acc[j][c][l];
    for (int64_t v = steps * CHAINS; v < vectors; v++)
        for (int l = 0; l < LANES; l++) acc[0][0][l] += term(x, v * LANES + l, square);
    for (int c = 1; c < CHAINS; c++)
        for (int l = 0; l < LANES; l++) acc[0][0][l] += acc[0][c][l];
    float sum = 0;
    for (int64_t k = vectors * LANES; k < n; k++) sum += term(x, k, square);
    for (int l = 0; l < LANES; l++) sum += acc[0][0][l];
    return sum;
}

/* The order of a sum over a tensor's leading (non-contiguous) dimension:
 * the same levels as above, but each element is its own lane and chain, so
 * n < 16 terms add up in plain sequence. */
float v4_sum_outer(const float *x, int64_t n)
{
    float acc[LEVELS] = {0};
    int power = ceil_log2(n) / LEVELS;
    if (power < 4) power = 4;
    int64_t stride = (int64_t)1 << power, mask = stride - 1, i = 0;
    for (; i + stride <= n; i += stride) {
        for (int64_t k = i; k < i + stride; k++) acc[0] += x[k];
        for (int j = 1; j < LEVELS; j++) {
            acc[j] += acc[j - 1];
            acc[j - 1] = 0;
            if ((i + stride) & (mask << (j * power))) break;
        }
    }
    for (; i < n; i++) acc[0] += x[i];
    for (int j = 1; j < LEVELS; j++) acc[0] += acc[j];
    return acc[0];
}

float v4_sum(const float *x, int64_t n)
{
    return cascade_sum(x, n, 0);
}

float v4_mean_square(const float *x, int64_t n)
{
    return cascade_sum(x, n, 1) / (float)n;
}
