/*
 * blocks_quant.c - tome's own quantiser: F32 rows written in GGUF's types
 * (F32, F16, BF16, Q8_0, MXFP4, Q4_K, Q2_K, IQ2_XXS), for tome-convert and
 * the tests.
 *
 * Simple and deterministic rather than optimal: per group a min/max fit
 * (K-quants) or an absolute-max fit (Q8_0, MXFP4), the group scales then
 * quantised against the block's F16 scale, and every code chosen by
 * rounding against the scales exactly as they will be decoded.  MXFP4
 * uses power-of-two scales like the official FP4 checkpoints, so an FP4
 * expert converts without loss.  IQ2_XXS searches its 256-point codebook
 * for each 8 values.  The block layouts are those blocks.c decodes.
 */
#include "engine/kernels/blocks.h"

#include <math.h>
#include <string.h>

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The F16 scale a block stores, and its value as decoded. */
static float half_scale(float want, uint8_t *at)
{
    uint16_t h = v4_f32_to_f16(want);
    put16(at, h);
    return v4_f16_to_f32(h);
}

static int clampi(float v, int lo, int hi)
{
    long r = lrintf(v);
    return r < lo ? lo : r > hi ? hi : (int)r;
}

static float amax_of(const float *x, int n)
{
    float m = 0;
    for (int i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

static void quant_q8_0(const float *x, uint8_t *b)
{
    float d = half_scale(amax_of(x, 32) / 127.0f, b);
    for (int i = 0; i < 32; i++)
        b[2 + i] = (uint8_t)(int8_t)(d > 0 ? clampi(x[i] / d, -127, 127) : 0);
}

static void quant_mxfp4(const float *x, uint8_t *b)
{
    /* value = e2m1(code) * 2^(e - 127): a power-of-two scale for amax / 6,
     * floored so the exponent stays a normal E8M0. */
    int exp = v4_pow2_scale_exp(fmaxf(amax_of(x, 32), 6.0f * ldexpf(1.0f, -126)), 1.0f / 6.0f);
    b[0] = (uint8_t)(exp + 127);
    uint8_t code[32];
    for (int i = 0; i < 32; i++) code[i] = v4_f32_to_e2m1(fminf(fmaxf(ldexpf(x[i], -exp), -6), 6));
    for (int j = 0; j < 16; j++) b[1 + j] = (uint8_t)(code[j] | (code[j + 16] << 4));
}

/* Min/max fit of `n` values for codes 0..levels: the group's step and its
 * (non-negative) offset below zero. */
static void fit_min_max(const float *x, int n, int levels, float *step, float *offset)
{
    float lo = 0, hi = 0;
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    *step = (hi - lo) / (float)levels;
    *offset = -lo;
}

/* The 6-bit scale/min packing of Q4_K (blocks.h, v4_k_scale_min). */
static void pack_k_scales(const int *sc, const int *mn, uint8_t *s)
{
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] |= (uint8_t)(sc[j] & 63);
            s[j + 4] |= (uint8_t)(mn[j] & 63);
        } else {
            s[j + 4] = (uint8_t)((sc[j] & 15) | ((mn[j] & 15) << 4));
            s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

/* Group scales (steps, offsets) of `groups` groups as integers 0..top
 * times the block's two F16 scales, stored at b and b + 2. */
static void k_super(const float *step, const float *off, int groups, int top, uint8_t *b, int *sc,
                    int *mn, float *d, float *dmin)
{
    float ms = 0, mo = 0;
    for (int g = 0; g < groups; g++) {
        ms = fmaxf(ms, step[g]);
        mo = fmaxf(mo, off[g]);
    }
    *d = half_scale(ms / (float)top, b);
    *dmin = half_scale(mo / (float)top, b + 2);
    for (int g = 0; g < groups; g++) {
        sc[g] = *d > 0 ? clampi(step[g] / *d, 0, top) : 0;
        mn[g] = *dmin > 0 ? clampi(off[g] / *dmin, 0, top) : 0;
    }
}

/* The code of x for v = mul * q - sub, q in 0..top. */
static int k_code(float x, float mul, float sub, int top)
{
    return mul > 0 ? clampi((x + sub) / mul, 0, top) : 0;
}

static void quant_q4_k(const float *x, uint8_t *b)
{
    float step[8], off[8], d, dmin;
    int sc[8], mn[8];
    for (int g = 0; g < 8; g++) fit_min_max(x + 32 * g, 32, 15, &step[g], &off[g]);
    k_super(step, off, 8, 63, b, sc, mn, &d, &dmin);
    pack_k_scales(sc, mn, b + 4);
    uint8_t *qs = b + 16;
    memset(qs, 0, 128);
    for (int g = 0; g < 8; g++) {
        float mul = d * (float)sc[g], sub = dmin * (float)mn[g];
        for (int l = 0; l < 32; l++) {
            int q = k_code(x[32 * g + l], mul, sub, 15);
            qs[32 * (g / 2) + l] |= (uint8_t)(g % 2 ? q << 4 : q);
        }
    }
}

static void quant_q2_k(const float *x, uint8_t *b)
{
    float step[16], off[16], d, dmin;
    int sc[16], mn[16];
    for (int k = 0; k < 16; k++) fit_min_max(x + 16 * k, 16, 3, &step[k], &off[k]);
    /* d and dmin live at 80 and 82 in Q2_K; k_super writes them there. */
    k_super(step, off, 16, 15, b + 80, sc, mn, &d, &dmin);
    memset(b, 0, 80);
    for (int k = 0; k < 16; k++) {
        int n = k / 8, j = (k % 8) / 2, h = k % 2;
        b[k] = (uint8_t)(sc[k] | (mn[k] << 4));
        float mul = d * (float)sc[k], sub = dmin * (float)mn[k];
        for (int l = 0; l < 16; l++)
            b[16 + 32 * n + 16 * h + l] |= (uint8_t)(k_code(x[16 * k + l], mul, sub, 3) << (2 * j));
    }
}

/* ---- IQ2_XXS -------------------------------------------------------------- */

/* The codebook point nearest to a / s (squared error), a >= 0. */
static int nearest_point(const float *a, float s)
{
    int best = 0;
    float best_err = INFINITY;
    for (int i = 0; i < 256; i++) {
        const uint8_t *p = v4_iq2xxs_point(i);
        float err = 0;
        for (int j = 0; j < 8; j++) {
            float e = a[j] - s * (float)p[j];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best = i;
        }
    }
    return best;
}

/* Signs of 8 values as a 7-bit index; the count of negatives must be even,
 * so with an odd count the smallest value's sign is given up (its target
 * magnitude becomes 0).  a gets the target magnitudes. */
static unsigned signs_of(const float *x, float *a)
{
    unsigned bits = 0;
    int smallest = 0;
    for (int j = 0; j < 8; j++) {
        a[j] = fabsf(x[j]);
        if (x[j] < 0) bits |= 1u << j;
        if (a[j] < a[smallest]) smallest = j;
    }
    if (__builtin_parity(bits)) {
        bits ^= 1u << smallest;
        a[smallest] = 0;
    }
    return bits & 127;
}

/* The least-squares scale of a group of 32 given its points, trying a few
 * starting scales; returns the best scale found. */
static float fit_group(const float *a)
{
    float amax = amax_of(a, 32), best_s = amax / 43.0f, best_err = INFINITY;
    static const float starts[] = {43.0f, 34.0f, 25.0f};
    for (int t = 0; t < 3 && amax > 0; t++) {
        float s = amax / starts[t], num = 0, den = 0;
        int idx[4];
        for (int l = 0; l < 4; l++) idx[l] = nearest_point(a + 8 * l, s);
        for (int l = 0; l < 4; l++)
            for (int j = 0; j < 8; j++) {
                float p = (float)v4_iq2xxs_point(idx[l])[j];
                num += a[8 * l + j] * p;
                den += p * p;
            }
        float fit = num / den, err = 0;
        for (int l = 0; l < 4; l++)
            for (int j = 0; j < 8; j++) {
                float e = a[8 * l + j] - fit * (float)v4_iq2xxs_point(idx[l])[j];
                err += e * e;
            }
        if (err < best_err) {
            best_err = err;
            best_s = fit;
        }
    }
    return best_s;
}

static void quant_iq2_xxs(const float *x, uint8_t *b)
{
    float a[256], s[8], smax = 0;
    unsigned sg[32];
    for (int k = 0; k < 32; k++) sg[k] = signs_of(x + 8 * k, a + 8 * k);
    for (int g = 0; g < 8; g++) {
        s[g] = fit_group(a + 32 * g);
        smax = fmaxf(smax, s[g]);
    }
    /* group scale = d * (0.5 + ls) / 4 with ls < 16 */
    float d = half_scale(smax * 4.0f / 15.5f, b);
    for (int g = 0; g < 8; g++) {
        int ls = d > 0 ? clampi(4.0f * s[g] / d - 0.5f, 0, 15) : 0;
        float db = d * (0.5f + (float)ls) * 0.25f;
        uint8_t *p = b + 2 + 8 * g;
        uint32_t aux = (uint32_t)ls << 28;
        for (int l = 0; l < 4; l++) {
            p[l] = (uint8_t)(db > 0 ? nearest_point(a + 32 * g + 8 * l, db) : 0);
            aux |= sg[4 * g + l] << (7 * l);
        }
        put32(p + 4, aux);
    }
}

/* ---- rows ------------------------------------------------------------------ */

int v4_gguf_quantize(v4_dtype t, const float *x, int64_t n, uint8_t *out)
{
    void (*block)(const float *, uint8_t *) = NULL;
    switch (t) {
    case V4_F32:
        memcpy(out, x, (size_t)n * 4);
        return 0;
    case V4_F16:
        for (int64_t i = 0; i < n; i++) put16(out + 2 * i, v4_f32_to_f16(x[i]));
        return 0;
    case V4_BF16:
        for (int64_t i = 0; i < n; i++) put16(out + 2 * i, v4_f32_to_bf16(x[i]));
        return 0;
    case V4_Q8_0:
        block = quant_q8_0;
        break;
    case V4_MXFP4:
        block = quant_mxfp4;
        break;
    case V4_Q4_K:
        block = quant_q4_k;
        break;
    case V4_Q2_K:
        block = quant_q2_k;
        break;
    case V4_IQ2_XXS:
        block = quant_iq2_xxs;
        break;
    default:
        return TOME_EINVAL;
    }
    int values = v4_dtype_block(t);
    size_t bytes = v4_dtype_block_bytes(t);
    for (int64_t k = 0; k < n; k += values) block(x + k, out + (size_t)(k / values) * bytes);
    return 0;
}
