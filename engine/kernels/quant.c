/*
 * quant.c - the number formats of a V4 checkpoint and of its trained graph.
 *
 * Two jobs.  First, decoding what the checkpoint stores: FP8 E4M3 weights,
 * FP4 E2M1 expert weights (two per byte, low nibble first), E8M0 power-of-
 * two scales and BF16.  Decoding is exact (every such value is a float).
 *
 * Second, the two quantisation round trips that are part of the trained
 * graph and so part of what the model computes: the FP8 round trip of the
 * non-RoPE dims of every KV vector (64-wide blocks) and the FP4 round trip
 * of the indexer's Hadamard-rotated queries and keys (32-wide blocks).  The
 * scale rule is the reference kernels': s = 2^ceil(log2(amax * 1/max)),
 * read off the float bits of the product, then q = round_to_nearest_even(
 * clamp(x / s)) on the target grid.  Because the results are exactly
 * code x scale, the state can keep them in compact form (codes + scales)
 * without losing anything; the round-trip functions can emit both.
 */
#include "engine/internal.h"
#include "engine/kernels/avx2_formats.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

float v4_e4m3_table[256];
const float v4_e2m1_values[16] = {0,  0.5f,  1,  1.5f,  2,  3,  4,  6,
                                  -0, -0.5f, -1, -1.5f, -2, -3, -4, -6};

static float e4m3_decode(uint8_t b)
{
    int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
    if (exp == 15 && man == 7) return NAN; /* the format's only NaN: no infinities */
    float v = exp == 0 ? ldexpf((float)man / 8.0f, -6) : ldexpf(1.0f + (float)man / 8.0f, exp - 7);
    return sign ? -v : v;
}

static void fill_tables(void)
{
    for (int b = 0; b < 256; b++) v4_e4m3_table[b] = e4m3_decode((uint8_t)b);
}

void v4_quant_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fill_tables);
}

float v4_e8m0_to_f32(uint8_t e)
{
    if (e == 0xFF) return NAN;
    if (e == 0) return ldexpf(1.0f, -127); /* 2^-127 is a subnormal float */
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)e << 23};
    return v.f;
}

uint16_t v4_f32_to_bf16(float f)
{
    union {
        float f;
        uint32_t u;
    } v = {f};
    if (isnan(f)) return 0x7FC0;
    uint32_t round = 0x7FFF + ((v.u >> 16) & 1);
    return (uint16_t)((v.u + round) >> 16);
}

#ifdef V4_HAVE_X86
/* v4_bf16_round's bits, eight at a time (the compiler does not vectorise
 * the loop below for a plain x86-64 target). */
__attribute__((target("avx2,fma"))) static size_t bf16_round_avx2(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, bf16_round8(_mm256_loadu_ps(x + i)));
    return i;
}
#endif

void v4_bf16_round(float *x, size_t n)
{
    size_t i = 0;
#ifdef V4_HAVE_X86
    if (n >= 8 && v4_cpu_has_avx2()) i = bf16_round_avx2(x, n);
#endif
    /* On the bits: add half an ulp of BF16 (less one, plus the kept lowest
     * bit: ties to even) and cut. */
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        uint32_t r = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000u;
        int nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
        r = nan ? u | 0x00400000u : r;
        memcpy(&x[i], &r, 4);
    }
}

uint8_t v4_f32_to_e4m3(float f)
{
    /* Codes 0..126 are the non-negative finite values in ascending order,
     * so the nearest code, ties to even, is round-to-nearest-even on the
     * float's own bits: multiples of 2^-9 below 2^-6 (the subnormal codes,
     * rintf rounding), else the exponent and the top three mantissa bits.
     * Values from 448 up (the largest code) give 126, NaN gives 0. */
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (!(a < 448.0f)) return (uint8_t)(sign | (isnan(a) ? 0 : 126));
    if (a < 0x1p-6f) return (uint8_t)(sign | (uint8_t)rintf(a * 512.0f));
    union {
        float f;
        uint32_t u;
    } v = {a};
    uint32_t top = (v.u + 0x7FFFF + ((v.u >> 20) & 1)) >> 20; /* exponent, 3 mantissa bits */
    return (uint8_t)(sign | (top - (120u << 3)));             /* bias 127 -> 7 */
}

uint8_t v4_f32_to_e2m1(float f)
{
    /* The codes' values are 0, .5, 1, 1.5, 2, 3, 4, 6: the code is the
     * number of midpoints below |f|, a midpoint counting when |f| is on it
     * only if the code above it is the even one (ties to even).  NaN gives
     * 0, like every comparison with it. */
    float a = fabsf(f);
    int code = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) +
               (a > 5.0f);
    return (uint8_t)((signbit(f) ? 8 : 0) | code);
}

int v4_pow2_scale_exp(float amax, float inv_max)
{
    union {
        float f;
        uint32_t u;
    } v = {amax * inv_max};
    int exp = (int)((v.u >> 23) & 0xFF) - 127;
    return exp + ((v.u & 0x7FFFFF) != 0);
}

static float pow2f(int exp)
{
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)(exp + 127) << 23};
    return v.f;
}

/* The largest |x[i]|, NaNs (quiet or signalling) ignored; not fmaxf,
 * which lets a signalling NaN reset the maximum. */
static float block_amax(const float *x, int n)
{
    float m = 0;
    for (int i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

#if defined(__x86_64__)
/* The largest |x| of a block, NaNs ignored (block_amax's value: the
 * maximum does not depend on the order). */
__attribute__((target("avx2"))) static float block_amax_avx2(const float *x, int n)
{
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) /* a NaN first operand yields the second */
        m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), magnitude), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
}

/* One block's round trip without its codes, eight values at a time, with
 * the bits of the scalar loop below: q = clamp(x / s) (a NaN x clamps to
 * -448, as fmaxf(NaN, -448) does), then e4m3's nearest value of |q| ties
 * to even, by rintf on multiples of 2^-9 below 2^-6 and by rounding the
 * float's bits to three mantissa bits above (v4_f32_to_e4m3's two cases,
 * whose codes decode to exactly these values), the sign put back, times
 * s. */
__attribute__((target("avx2,fma"))) static void fp8_block_avx2(float *v, int n, float s)
{
    const __m256 scale = _mm256_set1_ps(s), low = _mm256_set1_ps(-448.0f),
                 high = _mm256_set1_ps(448.0f), subnormal = _mm256_set1_ps(0x1p-6f);
    const __m256i sign_bit = _mm256_set1_epi32((int)0x80000000u);
    for (int i = 0; i < n; i += 8) {
        __m256 q = _mm256_div_ps(_mm256_loadu_ps(v + i), scale);
        q = _mm256_min_ps(_mm256_max_ps(q, low), high);
        __m256i bits = _mm256_castps_si256(q);
        __m256i sign = _mm256_and_si256(bits, sign_bit);
        __m256i u = _mm256_andnot_si256(sign_bit, bits);
        __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 20), _mm256_set1_epi32(1));
        __m256i up = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFFF)), odd);
        __m256 normal =
            _mm256_castsi256_ps(_mm256_and_si256(up, _mm256_set1_epi32((int)0xFFF00000u)));
        __m256 a = _mm256_castsi256_ps(u);
        __m256 tiny = _mm256_mul_ps(_mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(512.0f)),
                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                                    _mm256_set1_ps(0x1p-9f));
        __m256 mag = _mm256_blendv_ps(normal, tiny, _mm256_cmp_ps(a, subnormal, _CMP_LT_OQ));
        __m256 value = _mm256_or_ps(mag, _mm256_castsi256_ps(sign));
        _mm256_storeu_ps(v + i, _mm256_mul_ps(value, scale));
    }
}
#endif

void v4_fp8_roundtrip(float *x, int n, int block, uint8_t *codes, uint8_t *scales)
{
#if defined(__x86_64__)
    int simd = !codes && block % 8 == 0 && v4_cpu_has_avx2();
#else
    int simd = 0;
#endif
    for (int b = 0; b < n / block; b++) {
        float *v = x + b * block;
#if defined(__x86_64__)
        float amax = simd ? block_amax_avx2(v, block) : block_amax(v, block);
#else
        float amax = block_amax(v, block);
#endif
        int exp = v4_pow2_scale_exp(fmaxf(amax, 1e-4f), 1.0f / 448.0f);
        float s = pow2f(exp);
        if (scales) scales[b] = (uint8_t)(exp + 127);
#if defined(__x86_64__)
        if (simd) {
            fp8_block_avx2(v, block, s);
            continue;
        }
#endif
        for (int i = 0; i < block; i++) {
            float q = fminf(fmaxf(v[i] / s, -448.0f), 448.0f);
            uint8_t c = v4_f32_to_e4m3(q);
            if (codes) codes[b * block + i] = c;
            v[i] = v4_e4m3_table[c] * s;
        }
    }
}

void v4_fp4_roundtrip(float *x, int n, uint8_t *packed, uint8_t *scales)
{
    const float min_amax = 6.0f * ldexpf(1.0f, -126);
    for (int b = 0; b < n / V4_FP4_BLOCK; b++) {
        float *v = x + b * V4_FP4_BLOCK;
        int exp = v4_pow2_scale_exp(fmaxf(block_amax(v, V4_FP4_BLOCK), min_amax), 1.0f / 6.0f);
        float s = pow2f(exp);
        if (scales) scales[b] = (uint8_t)(exp + 127);
        for (int i = 0; i < V4_FP4_BLOCK; i++) {
            float q = fminf(fmaxf(v[i] / s, -6.0f), 6.0f);
            uint8_t c = v4_f32_to_e2m1(q);
            if (packed) {
                uint8_t *p = &packed[(b * V4_FP4_BLOCK + i) / 2];
                *p = (i & 1) ? (uint8_t)((*p & 0x0F) | (c << 4)) : (uint8_t)((*p & 0xF0) | c);
            }
            v[i] = v4_e2m1_values[c] * s;
        }
    }
}

void v4_hadamard(float *x, int n)
{
    for (int h = 1; h < n; h *= 2)
        for (int i = 0; i < n; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    float scale = (float)(1.0 / sqrt((double)n));
    for (int i = 0; i < n; i++) x[i] *= scale;
}
