/*
 * quant.c - BF16, FP8 e4m3, FP4 e2m1 and power-of-two block scales,
 * encoded the way the official DeepSeek V4 quantiser encodes them.
 *
 * All three element encoders use the same trick: for values in the normal
 * range of the narrow format, rounding a float to fewer mantissa bits is an
 * integer add on its bit pattern (add half an ulp minus one, plus the lowest
 * kept bit, so exact halves go to the even neighbour) followed by a shift; a
 * mantissa that rounds up carries into the exponent by itself.  Below the
 * narrow format's smallest normal the grid is uniform, so there the value
 * is scaled to grid units and rounded with rintf (ties to even in the
 * default rounding mode).  Magnitudes are clamped to the largest finite
 * value first, which is what the official code does before its cast.
 *
 * The scale rule is the official one: scale = 2^ceil(log2(amax / qmax)) with
 * amax floored, the exponent read from the float bits of amax * (1/qmax)
 * (a multiplication by the rounded reciprocal, not a division, so the
 * rounding at exact powers of two matches the official kernels).
 */
#include "tools/mkmodel/quant.h"

#include <math.h>
#include <string.h>

static uint32_t float_bits(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static float bits_float(uint32_t b)
{
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* Round the float bit pattern b to `keep` mantissa bits, ties to even. */
static uint32_t round_mantissa(uint32_t b, int keep)
{
    int drop = 23 - keep;
    uint32_t half_minus_one = (1u << (drop - 1)) - 1;
    return (b + half_minus_one + ((b >> drop) & 1)) >> drop;
}

/* The encoders proper, inlined into the bulk loops below; the exported
 * single-value functions are for callers outside the hot path and tests. */
static inline uint16_t bf16_of(float x)
{
    uint32_t b = float_bits(x);
    if (isnan(x)) return (uint16_t)((b >> 16) | 0x40);
    return (uint16_t)round_mantissa(b, 7);
}

static inline float clamp_magnitude(float x, float max)
{
    float a = fabsf(x);
    return a > max ? max : a;
}

static inline uint8_t e4m3_of(float x)
{
    uint8_t sign = signbit(x) ? 0x80 : 0;
    float a = clamp_magnitude(x, MK_E4M3_MAX);
    if (a < 0x1p-6f) return sign | (uint8_t)rintf(a * 0x1p9f); /* subnormals: k * 2^-9 */
    /* Rebias the exponent from 127 to 7: code = (exponent + 7) << 3 | mantissa. */
    return sign | (uint8_t)(round_mantissa(float_bits(a), 3) - ((127 - 7) << 3));
}

static inline uint8_t e2m1_of(float x)
{
    uint8_t sign = signbit(x) ? 0x8 : 0;
    float a = clamp_magnitude(x, MK_E2M1_MAX);
    if (a < 1.0f) return sign | (uint8_t)rintf(a * 2.0f); /* 0, 0.5, and 1 (code 2) */
    return sign | (uint8_t)(round_mantissa(float_bits(a), 1) - ((127 - 1) << 1));
}

static inline float amax_of(float amax, float x)
{
    float a = fabsf(x);
    return a > amax ? a : amax;
}

uint16_t mk_bf16_encode(float x)
{
    return bf16_of(x);
}

uint8_t mk_e4m3_encode(float x)
{
    return e4m3_of(x);
}

uint8_t mk_e2m1_encode(float x)
{
    return e2m1_of(x);
}

void mk_bf16_encode_n(const float *x, size_t n, uint16_t *out)
{
    for (size_t i = 0; i < n; i++) out[i] = bf16_of(x[i]);
}

int mk_scale_exponent(float amax, float amax_floor, float qmax)
{
    float t = (amax > amax_floor ? amax : amax_floor) * (1.0f / qmax);
    uint32_t b = float_bits(t);
    int biased = (int)(b >> 23) & 0xff;
    /* The floors keep t at or above 2^-126, so a subnormal t can only be a
     * rounding hair below it. */
    if (biased == 0) return -126;
    return biased - 127 + ((b & 0x7fffff) != 0);
}

int mk_fp8_tile(const float *x, size_t ld, size_t rows, size_t cols, uint8_t *q, size_t ldq)
{
    float amax = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) amax = amax_of(amax, x[r * ld + c]);
    int e = mk_scale_exponent(amax, MK_FP8_AMAX_FLOOR, MK_E4M3_MAX);
    float inv = bits_float((uint32_t)(127 - e) << 23); /* 2^-e */
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) q[r * ldq + c] = e4m3_of(x[r * ld + c] * inv);
    return e;
}

int mk_fp4_group(const float *x, size_t n, uint8_t *packed)
{
    float amax = 0;
    for (size_t i = 0; i < n; i++) amax = amax_of(amax, x[i]);
    int e = mk_scale_exponent(amax, MK_FP4_AMAX_FLOOR, MK_E2M1_MAX);
    float inv = bits_float((uint32_t)(127 - e) << 23);
    for (size_t j = 0; j < n / 2; j++)
        packed[j] = (uint8_t)(e2m1_of(x[2 * j] * inv) | e2m1_of(x[2 * j + 1] * inv) << 4);
    return e;
}
