/*
 * blocks_quant.c - tome's own quantiser: F32 rows written in GGUF's types
 * (F32, F16, BF16, Q8_0, MXFP4, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS,
 * IQ2_XXS), for tome-convert and the tests.
 *
 * Simple and deterministic rather than optimal: per group a min/max fit
 * (the K-quants with minima: Q2_K, Q4_K, Q5_K), an absolute-max fit (Q8_0,
 * MXFP4) or a least-squares fit to the levels over a few trial scales (the
 * symmetric Q3_K, Q6_K, IQ4_XS), the group scales then quantised against
 * the block's F16 scale, and every code chosen by rounding against the
 * scales exactly as they will be decoded.  MXFP4
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

/* Q4_K and Q5_K's common part: groups of 32 fitted for codes 0..top, the
 * scales and minima packed at b (d, dmin, 12 scale bytes), and the codes
 * against the factors as decoded. */
static void k_codes_32(const float *x, int top, uint8_t *b, uint8_t q[256])
{
    float step[8], off[8], d, dmin;
    int sc[8], mn[8];
    for (int g = 0; g < 8; g++) fit_min_max(x + 32 * g, 32, top, &step[g], &off[g]);
    k_super(step, off, 8, 63, b, sc, mn, &d, &dmin);
    pack_k_scales(sc, mn, b + 4);
    for (int g = 0; g < 8; g++) {
        float mul = d * (float)sc[g], sub = dmin * (float)mn[g];
        for (int l = 0; l < 32; l++) q[32 * g + l] = (uint8_t)k_code(x[32 * g + l], mul, sub, top);
    }
}

/* The low nibbles of 256 codes as Q4_K/Q5_K store them: groups 2p and
 * 2p + 1 share bytes 32p.., low nibbles then high. */
static void pack_k_nibbles(const uint8_t q[256], uint8_t *qs)
{
    memset(qs, 0, 128);
    for (int g = 0; g < 8; g++)
        for (int l = 0; l < 32; l++)
            qs[32 * (g / 2) + l] |=
                (uint8_t)(g % 2 ? (q[32 * g + l] & 15) << 4 : q[32 * g + l] & 15);
}

static void quant_q4_k(const float *x, uint8_t *b)
{
    uint8_t q[256];
    k_codes_32(x, 15, b, q);
    pack_k_nibbles(q, b + 16);
}

/* Q5_K: Q4_K's layout with the fifth bits at 16 (bit g of byte l is value
 * l of group g) and the nibbles at 48. */
static void quant_q5_k(const float *x, uint8_t *b)
{
    uint8_t q[256];
    k_codes_32(x, 31, b, q);
    memset(b + 16, 0, 32);
    for (int g = 0; g < 8; g++)
        for (int l = 0; l < 32; l++) b[16 + l] |= (uint8_t)((q[32 * g + l] >> 4) << g);
    pack_k_nibbles(q, b + 48);
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

/* ---- symmetric types: v = d * scale * level ------------------------------- */

/* The integer levels a symmetric type's codes decode to, ascending: a
 * table indexed by the codes 0..hi (IQ4_XS) with the midpoints between
 * neighbours, or, without one, the codes themselves lo..hi (Q3_K -4..3,
 * Q6_K -32..31). */
typedef struct levels {
    const int8_t *table;
    int lo, hi;
    float mid[15];
} levels;

static levels table_levels(const int8_t *table, int n)
{
    levels lv = {table, 0, n - 1, {0}};
    for (int c = 0; c + 1 < n; c++) lv.mid[c] = 0.5f * ((float)table[c] + (float)table[c + 1]);
    return lv;
}

static float level_of(const levels *lv, int code)
{
    return (float)(lv->table ? lv->table[code] : code);
}

/* The code whose level is nearest to t (of two as near, the lower): for a
 * table, how many midpoints lie below t, counted without branches (a
 * binary search's branches, which t makes unpredictable, ran at a third
 * of the speed). */
static int nearest_level(const levels *lv, float t)
{
    if (!lv->table) return clampi(t, lv->lo, lv->hi);
    int code = 0;
    for (int c = 0; c < lv->hi; c++) code += t > lv->mid[c];
    return code;
}

/* The scale s of n values for x ~ s * level.  The value of largest
 * magnitude goes on the lowest level (the longer end of every table here)
 * or a little inside or beyond it; each trial's codes are refitted by
 * least squares (whose squared error is sum x^2 - (sum x v)^2 / sum v^2),
 * and the scale of least squared error wins. */
static float fit_levels(const float *x, int n, const levels *lv)
{
    float m = 0, xx = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > fabsf(m)) m = x[i];
        xx += x[i] * x[i];
    }
    if (m == 0) return 0;
    static const float reach[] = {0.8f, 0.9f, 1.0f, 1.1f, 1.2f, 1.3f};
    float best_s = m / level_of(lv, lv->lo), best_err = INFINITY;
    for (size_t t = 0; t < sizeof reach / sizeof reach[0]; t++) {
        float s = m / (level_of(lv, lv->lo) * reach[t]), num = 0, den = 0;
        for (int i = 0; i < n; i++) {
            float v = level_of(lv, nearest_level(lv, x[i] / s));
            num += x[i] * v;
            den += v * v;
        }
        float err = den > 0 ? xx - num * num / den : xx;
        if (err < best_err) {
            best_err = err;
            best_s = den > 0 ? num / den : s;
        }
    }
    return best_s;
}

/* A block of 256 in groups of `group`: each group's scale an integer
 * -top-1..top times the block's F16 d (stored at d_at), and every value's
 * code against its group's factor as decoded. */
static void sym_block(const float *x, const levels *lv, int group, int top, uint8_t *d_at, int *sc,
                      int code[256])
{
    float s[16], smax = 0;
    for (int g = 0; g < 256 / group; g++) {
        s[g] = fit_levels(x + group * g, group, lv);
        smax = fmaxf(smax, fabsf(s[g]));
    }
    float d = half_scale(smax / (float)top, d_at);
    for (int g = 0; g < 256 / group; g++) {
        sc[g] = d > 0 ? clampi(s[g] / d, -top - 1, top) : 0;
        float mul = d * (float)sc[g];
        for (int l = 0; l < group; l++)
            code[group * g + l] = nearest_level(lv, mul != 0 ? x[group * g + l] / mul : 0);
    }
}

/* Q3_K: codes -4..3 stored as u = code + 4, its low 2 bits as Q2_K's and
 * its third in the mask; 6-bit scales biased by 32. */
static void quant_q3_k(const float *x, uint8_t *b)
{
    static const levels lv = {NULL, -4, 3, {0}};
    int sc[16], code[256];
    sym_block(x, &lv, 16, 31, b + 108, sc, code);
    memset(b, 0, 108);
    uint8_t *hm = b, *qs = b + 32, *scales = b + 96;
    for (int k = 0; k < 16; k++) {
        int n = k / 8, j = (k % 8) / 2, h = k % 2, ls = sc[k] + 32;
        scales[k % 8] |= (uint8_t)((ls & 15) << (k < 8 ? 0 : 4));
        scales[8 + k % 4] |= (uint8_t)((ls >> 4) << (2 * (k / 4)));
        for (int l = 0; l < 16; l++) {
            int u = code[16 * k + l] + 4;
            qs[32 * n + 16 * h + l] |= (uint8_t)((u & 3) << (2 * j));
            hm[16 * h + l] |= (uint8_t)((u >> 2) << (4 * n + j));
        }
    }
}

/* Q6_K: codes -32..31 stored as u = code + 32, low nibbles and top 2 bits
 * apart; int8 scales per 16. */
static void quant_q6_k(const float *x, uint8_t *b)
{
    static const levels lv = {NULL, -32, 31, {0}};
    int sc[16], code[256];
    sym_block(x, &lv, 16, 127, b + 208, sc, code);
    memset(b, 0, 192);
    for (int i = 0; i < 256; i++) {
        int n = i / 128, r = i % 128 / 32, l = i % 32, u = code[i] + 32;
        b[64 * n + l + 32 * (r % 2)] |= (uint8_t)((u & 15) << (r < 2 ? 0 : 4));
        b[128 + 32 * n + l] |= (uint8_t)((u >> 4) << (2 * r));
    }
    for (int k = 0; k < 16; k++) b[192 + k] = (uint8_t)(int8_t)sc[k];
}

/* IQ4_XS: 4-bit indices of its non-linear levels, MXFP4's nibble order
 * per group of 32; 6-bit scales biased by 32, split low nibbles and high
 * pairs. */
static void quant_iq4_xs(const float *x, uint8_t *b)
{
    const levels lv = table_levels(v4_iq4_levels, 16);
    int sc[8], code[256];
    sym_block(x, &lv, 32, 31, b, sc, code);
    memset(b + 2, 0, 134);
    unsigned high = 0;
    for (int g = 0; g < 8; g++) {
        int ls = sc[g] + 32;
        b[4 + g / 2] |= (uint8_t)((ls & 15) << (4 * (g % 2)));
        high |= (unsigned)(ls >> 4) << (2 * g);
        for (int j = 0; j < 16; j++)
            b[8 + 16 * g + j] = (uint8_t)(code[32 * g + j] | code[32 * g + j + 16] << 4);
    }
    put16(b + 2, (uint16_t)high);
}

/* ---- IQ2_XXS -------------------------------------------------------------- */

/* IQ2_XXS's codebook by element, for searches over all its points at
 * once: value[j][i] is element j of point i, power[i] the point's squared
 * length. */
typedef struct iq2_book {
    float value[8][256];
    float power[256];
} iq2_book;

static void iq2_book_init(iq2_book *book)
{
    for (int i = 0; i < 256; i++) {
        book->power[i] = 0;
        for (int j = 0; j < 8; j++) {
            book->value[j][i] = (float)v4_iq2xxs_point(i)[j];
            book->power[i] += book->value[j][i] * book->value[j][i];
        }
    }
}

/* The codebook point nearest to a / s, a >= 0 and s > 0: the one of least
 * |a - s p|^2 = |a|^2 - 2 s a.p + s^2 |p|^2, so of least s |p|^2 - 2 a.p
 * (of two as near, the first).  Scored a point per lane, in loops that
 * compilers vectorise: IQ2_XXS rows quantise at 4.5 million values a
 * second on one Zen 3 thread, where the squared errors summed point by
 * point and one running least ran at 0.8. */
static int nearest_point(const iq2_book *book, const float *a, float s)
{
    float twice[8], least[8];
    int at[8];
    for (int j = 0; j < 8; j++) twice[j] = 2 * a[j];
    /* eight points at a time, each with a running least of its own (one
     * running least waited on each comparison), then the least of those */
    for (int i = 0; i < 256; i += 8) {
        float score[8];
        for (int k = 0; k < 8; k++) score[k] = s * book->power[i + k];
        for (int j = 0; j < 8; j++)
            for (int k = 0; k < 8; k++) score[k] -= twice[j] * book->value[j][i + k];
        for (int k = 0; k < 8; k++) {
            int lower = i == 0 || score[k] < least[k];
            least[k] = lower ? score[k] : least[k];
            at[k] = lower ? i + k : at[k];
        }
    }
    int best = 0;
    for (int k = 1; k < 8; k++)
        if (least[k] < least[best] || (least[k] == least[best] && at[k] < at[best])) best = k;
    return at[best];
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
 * starting scales; returns the best scale found (squared errors as
 * |a|^2 - (a.p)^2 / |p|^2 for the fitted scale a.p / |p|^2). */
static float fit_group(const iq2_book *book, const float *a)
{
    float amax = amax_of(a, 32), best_s = amax / 43.0f, best_err = INFINITY, aa = 0;
    for (int i = 0; i < 32; i++) aa += a[i] * a[i];
    static const float starts[] = {43.0f, 34.0f, 25.0f};
    for (int t = 0; t < 3 && amax > 0; t++) {
        float s = amax / starts[t], num = 0, den = 0;
        for (int l = 0; l < 4; l++) {
            int idx = nearest_point(book, a + 8 * l, s);
            for (int j = 0; j < 8; j++) num += a[8 * l + j] * book->value[j][idx];
            den += book->power[idx];
        }
        float err = aa - num * num / den;
        if (err < best_err) {
            best_err = err;
            best_s = num / den;
        }
    }
    return best_s;
}

static void quant_iq2_xxs(const float *x, uint8_t *b)
{
    float a[256], s[8], smax = 0;
    unsigned sg[32];
    iq2_book book; /* 9 kB, remade per block: under 2% of its searches' time */
    iq2_book_init(&book);
    for (int k = 0; k < 32; k++) sg[k] = signs_of(x + 8 * k, a + 8 * k);
    for (int g = 0; g < 8; g++) {
        s[g] = fit_group(&book, a + 32 * g);
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
            p[l] = (uint8_t)(db > 0 ? nearest_point(&book, a + 32 * g + 8 * l, db) : 0);
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
    case V4_Q3_K:
        block = quant_q3_k;
        break;
    case V4_Q5_K:
        block = quant_q5_k;
        break;
    case V4_Q6_K:
        block = quant_q6_k;
        break;
    case V4_IQ4_XS:
        block = quant_iq4_xs;
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
