/*
 * blocks.c - GGUF's storage types as weight rows: IEEE half and the block
 * formats of llama.cpp (Q8_0, MXFP4, the K-quants Q2_K to Q6_K, IQ4_XS and
 * IQ2_XXS), decoded to F32.
 *
 * Each block format, once its bits are unpacked, is the same arithmetic:
 * value i of a block is  mul[g] * q[i] - sub[g],  where q[i] is a small
 * integer code and (mul, sub) the two floats of its group g of 16 or 32
 * values, computed in F32 from the block's scales the way the format
 * defines them (one rounding per operation, no fused multiply-add).  So
 * decoding is two steps:
 *
 *   unpack   a block into codes and group pairs: plain C, one per format,
 *            shared by every path;
 *   apply    the two operations per value: the scalar reference, or AVX2
 *            eight lanes at a time (a conversion, a multiply and a
 *            subtraction, each rounded as the scalar code rounds it, so the
 *            two are bit-identical; test_gguf_kernels checks it).
 *
 * The layouts (byte offsets inside a block) are written out at each
 * unpacker.  Sources: the GGUF specification and the public descriptions of
 * ggml's block types; the IQ2_XXS codebook is data (see iq2xxs_points).
 */
#include "engine/kernels/blocks.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

/* ---- scalars -------------------------------------------------------------- */

uint16_t v4_f32_to_f16(float f)
{
    union {
        float f;
        uint32_t u;
    } v = {f};
    uint16_t sign = (uint16_t)((v.u >> 16) & 0x8000);
    float a = fabsf(f);
    if (isnan(a)) return sign | 0x7E00;
    if (a >= 65520.0f) return sign | 0x7C00; /* rounds to infinity */
    int e;
    frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    int exp = e - 1 < -14 ? -14 : e - 1;
    /* The half's quantum at this exponent is 2^(exp - 10); rintf rounds to
     * nearest even under the default rounding mode. */
    float q = rintf(ldexpf(a, 10 - exp));
    uint32_t bits = (uint32_t)q;
    if (bits >= 2048) { /* rounded up into the next binade */
        bits >>= 1;
        exp++;
    }
    if (bits < 1024) return sign | (uint16_t)bits; /* subnormal */
    return sign | (uint16_t)(((uint32_t)(exp + 15) << 10) | (bits - 1024));
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static float half_at(const uint8_t *p)
{
    return v4_f16_to_f32(le16(p));
}

/* ---- codebooks -------------------------------------------------------------- */

/* MXFP4 and IQ4_XS map a 4-bit code to an integer level. MXFP4's are the
 * e2m1 values doubled (with a scale of 2^(e-128) to match); IQ4_XS's are
 * its non-linear levels. */
static const int8_t mxfp4_levels[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
const int8_t v4_iq4_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                  1,    13,   25,  38,  53,  69,  89,  113};

/* IQ2_XXS's codebook: 256 points of {8, 25, 43}^8.  Point i is stored as
 * a base-3 number whose digit j (least significant first) gives element j
 * (0 -> 8, 1 -> 25, 2 -> 43).  This is data of the format, transcribed
 * (re-encoded) from the 64-bit table of ggml (ggml-common.h, "iq2xxs_grid",
 * one byte per element) so that files made by llama.cpp decode the same;
 * the points are listed in increasing order of that number. */
static const uint16_t iq2xxs_points[256] = {
    0,    2,    4,    6,    8,    10,   12,   18,   20,   24,   26,   28,   30,   36,   42,   46,
    48,   54,   56,   62,   74,   82,   84,   90,   94,   108,  138,  150,  162,  164,  182,  218,
    244,  246,  252,  262,  264,  270,  272,  276,  288,  298,  300,  306,  318,  324,  326,  330,
    342,  356,  376,  378,  388,  412,  414,  432,  462,  480,  486,  490,  492,  498,  510,  514,
    516,  522,  524,  546,  570,  594,  650,  660,  730,  732,  738,  748,  756,  774,  786,  792,
    796,  810,  816,  828,  846,  854,  864,  912,  922,  972,  978,  990,  994,  1006, 1026, 1068,
    1100, 1134, 1148, 1216, 1218, 1224, 1242, 1270, 1296, 1300, 1368, 1414, 1458, 1460, 1466, 1488,
    1504, 1512, 1514, 1564, 1572, 1620, 1622, 1702, 1704, 1710, 1728, 1742, 1782, 1810, 1830, 1926,
    1950, 1962, 2010, 2136, 2188, 2190, 2196, 2202, 2206, 2208, 2214, 2220, 2228, 2232, 2242, 2244,
    2250, 2268, 2286, 2314, 2322, 2326, 2350, 2358, 2382, 2390, 2400, 2430, 2436, 2448, 2484, 2500,
    2522, 2532, 2592, 2674, 2676, 2682, 2700, 2704, 2754, 2796, 2800, 2810, 2866, 2898, 2916, 2922,
    2926, 2932, 2934, 2970, 2976, 3000, 3026, 3072, 3142, 3222, 3224, 3248, 3322, 3360, 3402, 3412,
    3418, 3450, 3510, 3570, 3648, 3654, 3672, 3696, 3726, 3766, 3822, 3852, 3888, 3892, 3978, 3980,
    4026, 4160, 4374, 4376, 4382, 4402, 4430, 4458, 4470, 4482, 4546, 4618, 4620, 4626, 4630, 4644,
    4662, 4698, 4730, 4764, 4786, 4806, 4824, 4862, 4944, 5032, 5106, 5112, 5124, 5130, 5176, 5198,
    5238, 5296, 5346, 5366, 5376, 5464, 5644, 5688, 5834, 5868, 5890, 5920, 5994, 6090, 6354, 6402,
};

static uint8_t iq2xxs_grid[256][8];

static void expand_grid(void)
{
    static const uint8_t level[3] = {8, 25, 43};
    for (int i = 0; i < 256; i++) {
        unsigned c = iq2xxs_points[i];
        for (int j = 0; j < 8; j++, c /= 3) iq2xxs_grid[i][j] = level[c % 3];
    }
}

const uint8_t *v4_iq2xxs_point(int i)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, expand_grid);
    return iq2xxs_grid[i];
}

/* IQ2_XXS stores 7 sign bits per 8 values; the 8th makes the count of
 * negative values even. */
unsigned v4_iq2xxs_signs(unsigned s7)
{
    return s7 | ((unsigned)__builtin_parity(s7) << 7);
}

/* ---- unpacking: one block -> codes and group pairs ------------------------- */

/* Q8_0, 34 bytes / 32 values: f16 d @0, int8 q[32] @2.  v = d * q. */
static void unpack_q8_0(const uint8_t *b, v4_block_codes *c)
{
    c->mul[0] = half_at(b);
    c->sub[0] = 0;
    memcpy(c->q, b + 2, 32);
}

/* MXFP4, 17 bytes / 32 values: E8M0 e @0, nibbles @1; byte j holds value j
 * (low nibble) and value j + 16 (high).  v = level * 2^(e - 128). */
static void unpack_mxfp4(const uint8_t *b, v4_block_codes *c)
{
    c->mul[0] = v4_mxfp4_scale(b[0]);
    c->sub[0] = 0;
    for (int j = 0; j < 16; j++) {
        c->q[j] = mxfp4_levels[b[1 + j] & 15];
        c->q[j + 16] = mxfp4_levels[b[1 + j] >> 4];
    }
}

/* Q4_K, 144 bytes / 256: f16 d @0, f16 dmin @2, scales @4 (12), nibbles
 * @16 (128).  Groups of 32; groups 2p and 2p+1 share bytes 32p..32p+31,
 * low nibbles then high.  v = d*sc * q - dmin*m. */
static void unpack_q4_k(const uint8_t *b, v4_block_codes *c)
{
    v4_k_pairs(b, c->mul, c->sub);
    const uint8_t *qs = b + 16;
    for (int g = 0; g < 8; g++)
        for (int l = 0; l < 32; l++) {
            uint8_t byte = qs[32 * (g / 2) + l];
            c->q[32 * g + l] = (int8_t)(g % 2 ? byte >> 4 : byte & 15);
        }
}

/* Q5_K, 176 bytes / 256: as Q4_K with the fifth bits qh @16 (32 bytes:
 * bit g of qh[l] belongs to value l of group g) and the nibbles @48. */
static void unpack_q5_k(const uint8_t *b, v4_block_codes *c)
{
    v4_k_pairs(b, c->mul, c->sub);
    const uint8_t *qh = b + 16, *qs = b + 48;
    for (int g = 0; g < 8; g++)
        for (int l = 0; l < 32; l++) {
            uint8_t byte = qs[32 * (g / 2) + l];
            int low = g % 2 ? byte >> 4 : byte & 15;
            c->q[32 * g + l] = (int8_t)(low | (((qh[l] >> g) & 1) << 4));
        }
}

/* Q2_K, 84 bytes / 256: scales @0 (16: low nibble scale, high nibble min),
 * 2-bit codes @16 (64), f16 d @80, f16 dmin @82.  Groups of 16: group
 * k = 8n + 2j + h takes bits 2j..2j+1 of bytes 32n + 16h + l.
 * v = d*sc * q - dmin*m. */
static void unpack_q2_k(const uint8_t *b, v4_block_codes *c)
{
    float d = half_at(b + 80), dmin = half_at(b + 82);
    for (int k = 0; k < 16; k++) {
        int n = k / 8, j = (k % 8) / 2, h = k % 2;
        c->mul[k] = d * (float)(b[k] & 15);
        c->sub[k] = dmin * (float)(b[k] >> 4);
        for (int l = 0; l < 16; l++)
            c->q[16 * k + l] = (int8_t)((b[16 + 32 * n + 16 * h + l] >> (2 * j)) & 3);
    }
}

/* Q3_K, 110 bytes / 256: high-bit mask @0 (32), 2-bit codes @32 (64),
 * scales @96 (12), f16 d @108.  Group k = 8n + 2j + h as in Q2_K; its
 * value l has code ((qs[32n + 16h + l] >> 2j) & 3) minus 4 unless bit
 * 4n + j of hmask[16h + l] is set.  Its 6-bit scale: low 4 bits from the
 * nibbles of bytes 0-7 (k < 8 low nibble of byte k, else high nibble of
 * byte k - 8), top 2 bits from bits 2(k/4).. of byte 8 + k%4.
 * v = d*(sc - 32) * q. */
static void unpack_q3_k(const uint8_t *b, v4_block_codes *c)
{
    const uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
    float d = half_at(b + 108);
    for (int k = 0; k < 16; k++) {
        int n = k / 8, j = (k % 8) / 2, h = k % 2;
        int low = k < 8 ? sc[k] & 15 : sc[k - 8] >> 4;
        int high = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
        c->mul[k] = d * (float)((low | (high << 4)) - 32);
        c->sub[k] = 0;
        for (int l = 0; l < 16; l++) {
            int q = (qs[32 * n + 16 * h + l] >> (2 * j)) & 3;
            int set = (hm[16 * h + l] >> (4 * n + j)) & 1;
            c->q[16 * k + l] = (int8_t)(q - (set ? 0 : 4));
        }
    }
}

/* Q6_K, 210 bytes / 256: low nibbles @0 (128), high 2 bits @128 (64),
 * int8 scales @192 (16), f16 d @208.  Half n (128 values) uses ql + 64n
 * and qh + 32n; value 32r + l (r < 4, l < 32) of the half takes the low
 * nibble of ql[l + 32(r%2)] (r < 2) or its high nibble (r >= 2), and bits
 * 2r..2r+1 of qh[l], minus 32.  Groups of 16, scale scales[8n + group].
 * v = d*sc * q. */
static void unpack_q6_k(const uint8_t *b, v4_block_codes *c)
{
    float d = half_at(b + 208);
    for (int n = 0; n < 2; n++) {
        const uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
        for (int r = 0; r < 4; r++)
            for (int l = 0; l < 32; l++) {
                uint8_t byte = ql[l + 32 * (r % 2)];
                int low = r < 2 ? byte & 15 : byte >> 4;
                c->q[128 * n + 32 * r + l] = (int8_t)((low | (((qh[l] >> (2 * r)) & 3) << 4)) - 32);
            }
    }
    for (int k = 0; k < 16; k++) {
        c->mul[k] = d * (float)(int8_t)b[192 + k];
        c->sub[k] = 0;
    }
}

/* IQ4_XS, 136 bytes / 256: f16 d @0, u16 high scale bits @2, low scale
 * nibbles @4 (4), nibbles @8 (128).  Group g of 32 has the 6-bit scale
 * (nibble g of bytes 4..7) | (bits 2g..2g+1 of the u16) << 4 and its 16
 * bytes at 8 + 16g as MXFP4 (low nibbles values 0-15, high 16-31).
 * v = d*(ls - 32) * level. */
static void unpack_iq4_xs(const uint8_t *b, v4_block_codes *c)
{
    float d = half_at(b);
    unsigned high = le16(b + 2);
    for (int g = 0; g < 8; g++) {
        int ls = ((b[4 + g / 2] >> (4 * (g % 2))) & 15) | (((high >> (2 * g)) & 3) << 4);
        c->mul[g] = d * (float)(ls - 32);
        c->sub[g] = 0;
        const uint8_t *qs = b + 8 + 16 * g;
        for (int j = 0; j < 16; j++) {
            c->q[32 * g + j] = v4_iq4_levels[qs[j] & 15];
            c->q[32 * g + j + 16] = v4_iq4_levels[qs[j] >> 4];
        }
    }
}

/* IQ2_XXS, 66 bytes / 256: f16 d @0, then 8 bytes per group of 32: a
 * little-endian u32 of four codebook indices (one per 8 values), and a u32
 * of four 7-bit sign indices (bits 7l..) and the 4-bit scale (bits 28-31).
 * v = (d * (0.5 + ls) * 0.25) * (+-point[j]). */
static void unpack_iq2_xxs(const uint8_t *b, v4_block_codes *c)
{
    float d = half_at(b);
    for (int g = 0; g < 8; g++) {
        const uint8_t *p = b + 2 + 8 * g;
        uint32_t aux = le32(p + 4);
        c->mul[g] = d * (0.5f + (float)(aux >> 28)) * 0.25f;
        c->sub[g] = 0;
        for (int l = 0; l < 4; l++) {
            const uint8_t *pt = v4_iq2xxs_point(p[l]);
            unsigned signs = v4_iq2xxs_signs((aux >> (7 * l)) & 127);
            for (int j = 0; j < 8; j++)
                c->q[32 * g + 8 * l + j] = (int8_t)((signs >> j) & 1 ? -pt[j] : pt[j]);
        }
    }
}

static const v4_block_format formats[] = {
    {V4_Q8_0, 32, 32, unpack_q8_0},        {V4_MXFP4, 32, 32, unpack_mxfp4},
    {V4_Q2_K, 256, 16, unpack_q2_k},       {V4_Q3_K, 256, 16, unpack_q3_k},
    {V4_Q4_K, 256, 32, unpack_q4_k},       {V4_Q5_K, 256, 32, unpack_q5_k},
    {V4_Q6_K, 256, 16, unpack_q6_k},       {V4_IQ4_XS, 256, 32, unpack_iq4_xs},
    {V4_IQ2_XXS, 256, 32, unpack_iq2_xxs},
};

const v4_block_format *v4_block_format_of(v4_dtype t)
{
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (formats[i].dtype == t) return &formats[i];
    return NULL;
}

/* ---- applying: codes -> floats ---------------------------------------------- */

void v4_block_apply_scalar(const v4_block_codes *c, int values, int group, float *out)
{
    for (int i = 0; i < values; i++) {
        float prod = c->mul[i / group] * (float)c->q[i];
        out[i] = prod - c->sub[i / group];
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void v4_block_apply_avx2(const v4_block_codes *c, int values,
                                                         int group, float *out)
{
    for (int i = 0; i < values; i += 8) {
        __m128i q8 = _mm_loadl_epi64((const __m128i *)(const void *)(c->q + i));
        __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
        __m256 prod = _mm256_mul_ps(_mm256_set1_ps(c->mul[i / group]), q);
        _mm256_storeu_ps(out + i, _mm256_sub_ps(prod, _mm256_set1_ps(c->sub[i / group])));
    }
}

__attribute__((target("avx2,f16c"))) static void f16_row_avx2(const uint8_t *row, int64_t cols,
                                                              float *out)
{
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8)
        _mm256_storeu_ps(out + c, _mm256_cvtph_ps(_mm_loadu_si128(
                                      (const __m128i *)(const void *)(row + 2 * c))));
    for (; c < cols; c++) out[c] = half_at(row + 2 * c);
}
#endif

/* ---- rows -------------------------------------------------------------------- */

static void block_row(const v4_block_format *f, const uint8_t *row, int64_t cols, float *out,
                      void (*apply)(const v4_block_codes *, int, int, float *))
{
    size_t bytes = v4_dtype_block_bytes(f->dtype);
    v4_block_codes c;
    for (int64_t k = 0; k < cols; k += f->values, row += bytes) {
        f->unpack(row, &c);
        apply(&c, f->values, f->group, out + k);
    }
}

void v4_gguf_row_scalar(v4_dtype t, const uint8_t *row, int64_t cols, float *out)
{
    if (t == V4_F16) {
        for (int64_t c = 0; c < cols; c++) out[c] = half_at(row + 2 * c);
        return;
    }
    block_row(v4_block_format_of(t), row, cols, out, v4_block_apply_scalar);
}

#if defined(__x86_64__)
static int blocks_simd;

/* F16C from CPUID itself: clang's __builtin_cpu_supports has no name for it. */
static void probe_simd(void)
{
    unsigned a, b, c, d;
    __builtin_cpu_init();
    blocks_simd =
        __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

int v4_blocks_simd(void)
{
#if defined(__x86_64__)
    /* Once, under pthread_once: the decoders run on many threads. */
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, probe_simd);
    return blocks_simd;
#else
    return 0;
#endif
}

void v4_gguf_row(v4_dtype t, const uint8_t *row, int64_t cols, float *out)
{
#if defined(__x86_64__)
    if (v4_blocks_simd()) {
        if (t == V4_F16)
            f16_row_avx2(row, cols, out);
        else
            block_row(v4_block_format_of(t), row, cols, out, v4_block_apply_avx2);
        return;
    }
#endif
    v4_gguf_row_scalar(t, row, cols, out);
}
