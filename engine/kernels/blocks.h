/*
 * blocks.h - GGUF's storage types (IEEE half, llama.cpp's block formats):
 * decoding rows to F32 (blocks.c) and writing them (blocks_quant.c).
 *
 * A row of a block type is cols / values blocks of v4_dtype_block_bytes
 * bytes each; cols must be a multiple of the block (the loader checks).
 * Decoding is exact in the sense of the format: every value is the F32
 * result of the format's operations, rounded once each, and every path
 * (scalar, AVX2) gives the same bits.
 */
#ifndef TOME_ENGINE_KERNELS_BLOCKS_H
#define TOME_ENGINE_KERNELS_BLOCKS_H

#include <math.h>
#include <stdint.h>

#include "engine/internal.h"

/* One unpacked block: value i = mul[i / group] * q[i] - sub[i / group]. */
typedef struct v4_block_codes {
    int8_t q[256];
    float mul[16], sub[16];
} v4_block_codes;

typedef struct v4_block_format {
    v4_dtype dtype;
    int values; /* per block: 32 or 256 */
    int group;  /* values sharing one (mul, sub): 16 or 32 */
    void (*unpack)(const uint8_t *block, v4_block_codes *out);
} v4_block_format;

/* The format of a block dtype, or NULL (F16 and the element types). */
const v4_block_format *v4_block_format_of(v4_dtype t);

/* The apply step, scalar reference and AVX2 (x86-64 only). */
void v4_block_apply_scalar(const v4_block_codes *c, int values, int group, float *out);
#if defined(__x86_64__)
void v4_block_apply_avx2(const v4_block_codes *c, int values, int group, float *out);
#endif
/* Whether this CPU runs the AVX2 paths (AVX2 and F16C). */
int v4_blocks_simd(void);

/* Decode a row of `cols` values of type t (F16 or a block type): the SIMD
 * path where the CPU has it, or the scalar reference. */
void v4_gguf_row(v4_dtype t, const uint8_t *row, int64_t cols, float *out);
void v4_gguf_row_scalar(v4_dtype t, const uint8_t *row, int64_t cols, float *out);

/* IEEE half -> float, exactly (NaN as the quiet NaN of its sign); inline,
 * as the decode kernels call it for every block's scale. */
static inline float v4_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    int exp = (h >> 10) & 31, man = h & 1023;
    float mag;
    if (exp == 0) {
        mag = (float)man * 0x1p-24f; /* zero and subnormals: exact */
    } else if (exp == 31) {
        mag = man ? NAN : INFINITY;
    } else { /* a normal f16 is a normal float: rebias the exponent (no ldexpf call) */
        union {
            uint32_t u;
            float f;
        } n = {(uint32_t)(exp + 112) << 23 | (uint32_t)man << 13};
        mag = n.f;
    }
    union {
        float f;
        uint32_t u;
    } v = {mag};
    v.u |= sign;
    return v.f;
}
/* The eight 6-bit (scale, min) pairs of Q4_K and Q5_K in 12 bytes: pairs
 * 0-3 are the low 6 bits of bytes 0-3 (scale) and 4-7 (min); pairs 4-7
 * take their low 4 bits from the nibbles of bytes 8-11 and their top 2
 * bits from the top bits of bytes 0-3 (scale) and 4-7 (min). */
static inline void v4_k_scale_min(const uint8_t *s, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* A Q4_K or Q5_K block's eight group factors, as its unpacker makes them:
 * mul[j] = d * scale_j and sub[j] = dmin * min_j (f16 d at 0, dmin at 2,
 * the 6-bit pairs in the 12 bytes at 4), so that value = mul * q - sub
 * (inline: decode calls it for every block of every row). */
static inline void v4_k_pairs(const uint8_t *b, float mul[8], float sub[8])
{
    float d = v4_f16_to_f32((uint16_t)(b[0] | b[1] << 8));
    float dmin = v4_f16_to_f32((uint16_t)(b[2] | b[3] << 8));
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        v4_k_scale_min(b + 4, j, &sc, &mn);
        mul[j] = d * (float)sc;
        sub[j] = dmin * (float)mn;
    }
}

/* float -> IEEE half, rounding to nearest even. */
uint16_t v4_f32_to_f16(float f);

/* MXFP4's block scale 2^(e - 128) (as ldexpf gives it, without its cost:
 * the decoders call it once per 32 values), subnormal for e < 2. */
static inline float v4_mxfp4_scale(uint8_t e)
{
    union {
        uint32_t u;
        float f;
    } v = {.u = e >= 2 ? (uint32_t)(e - 1) << 23 : (uint32_t)1 << (21 + e)};
    return v.f;
}

/* IQ4_XS's sixteen non-linear levels, indexed by its 4-bit codes. */
extern const int8_t v4_iq4_levels[16];

/* IQ2_XXS: codebook point i (8 magnitudes), and the 8 sign bits of a 7-bit
 * sign index (the 8th bit makes the count of negatives even). */
const uint8_t *v4_iq2xxs_point(int i);
unsigned v4_iq2xxs_signs(unsigned s7);

/* Write `n` values (a multiple of the block) as type t: F32, F16, BF16 or
 * one of the block types blocks_quant.c writes (Q8_0, MXFP4, Q2_K, Q3_K,
 * Q4_K, Q5_K, Q6_K, IQ4_XS, IQ2_XXS: every block type blocks.c decodes).  `out` gets
 * v4_dtype_row_bytes(t, n) bytes.  Returns 0, or TOME_EINVAL for a type it cannot write. */
int v4_gguf_quantize(v4_dtype t, const float *x, int64_t n, uint8_t *out);

#endif
