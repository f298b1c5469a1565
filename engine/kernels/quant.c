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

#include <math.h>
#include <pthread.h>
#include <string.h>

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

void v4_bf16_round(float *x, size_t n)
{
    /* On the bits, so that the loop vectorises: add half an ulp of BF16
     * (less one, plus the kept lowest bit: ties to even) and cut. */
    for (size_t i = 0; i < n; i++) {
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

static float block_amax(const float *x, int n)
{
    float m = 0;
    for (int i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

void v4_fp8_roundtrip(float *x, int n, int block, uint8_t *codes, uint8_t *scales)
{
    for (int b = 0; b < n / block; b++) {
        float *v = x + b * block;
        int exp = v4_pow2_scale_exp(fmaxf(block_amax(v, block), 1e-4f), 1.0f / 448.0f);
        float s = pow2f(exp);
        if (scales) scales[b] = (uint8_t)(exp + 127);
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
