/*
 * test_gguf_kernels.c - GGUF's storage types in the kernels, on random
 * blocks.
 *
 * For every type: the AVX2 row decoder equals the scalar reference element
 * for element (bit for bit), and every fast-kernel ISA this CPU runs gives
 * matrix products equal bit for bit to the fast order (fast.h) computed
 * here from the reference's decoded rows, for one token (decode: rows_dot)
 * and for many (prefill: decode_rows + tile_acc).  The half conversions
 * are checked on every half value, and tome's quantiser against the
 * decoder: Q8_0 within half a step, MXFP4 exact on FP4 grids, the others
 * within an error bound of their bit width.
 */
#include <math.h>
#include <string.h>

#include "engine/kernels/blocks.h"
#include "engine/kernels/fast.h"
#include "tests/check.h"

static const v4_dtype types[] = {V4_F16,  V4_Q8_0, V4_MXFP4, V4_Q2_K,   V4_Q3_K,
                                 V4_Q4_K, V4_Q5_K, V4_Q6_K,  V4_IQ4_XS, V4_IQ2_XXS};

static uint32_t rng = 12345;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static float gauss(void)
{
    float s = 0;
    for (int i = 0; i < 12; i++) s += (float)(next() % 10000) / 10000.0f;
    return s - 6.0f;
}

/* A finite half between 2^-12 and 2^-4 (a block's scale). */
static void put_scale(uint8_t *p)
{
    uint16_t h =
        v4_f32_to_f16(ldexpf(1.0f + (float)(next() % 1000) / 1000.0f, -(int)(4 + next() % 8)));
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Random bytes with the type's F16 scales made finite. */
static void random_row(v4_dtype t, uint8_t *row, int64_t cols)
{
    size_t bytes = v4_dtype_row_bytes(t, cols), block = v4_dtype_block_bytes(t);
    for (size_t i = 0; i < bytes; i++) row[i] = (uint8_t)next();
    if (t == V4_F16) {
        for (int64_t c = 0; c < cols; c++) put_scale(row + 2 * c);
        return;
    }
    for (size_t b = 0; b < bytes; b += block) {
        uint8_t *p = row + b;
        switch (t) {
        case V4_Q2_K:
            put_scale(p + 80);
            put_scale(p + 82);
            break;
        case V4_Q3_K:
            put_scale(p + 108);
            break;
        case V4_Q6_K:
            put_scale(p + 208);
            break;
        case V4_Q4_K:
        case V4_Q5_K:
            put_scale(p);
            put_scale(p + 2);
            break;
        case V4_MXFP4:
            p[0] = (uint8_t)(110 + next() % 30);
            break;
        default:
            put_scale(p);
            break; /* Q8_0, IQ4_XS, IQ2_XXS: d first */
        }
    }
}

/* fast.h's order over a decoded row, from its definition: the pair order
 * (odd column, then even, of each 32 per lane) where n is a multiple of
 * 32, else lanes over k = l, l + 16, ... */
static float fast_dot(const float *w, const float *x, int64_t n)
{
    float acc[V4_FAST_LANES] = {0};
    for (int64_t k = 0; k < n; k += 2 * V4_FAST_LANES)
        for (int l = 0; l < V4_FAST_LANES; l++) {
            int64_t first = n % 32 ? k + l : k + 2 * l + 1,
                    second = n % 32 ? first + 16 : first - 1;
            acc[l] = fmaf(w[first], x[first], acc[l]);
            if (second < n) acc[l] = fmaf(w[second], x[second], acc[l]);
        }
    return v4_fast_reduce(acc);
}

static void test_products(v4_dtype t, const uint8_t *data, int64_t rows, int64_t cols,
                          const float *decoded, v4_pool *pool)
{
    enum { TOKENS = 9 };
    float *x = v4_floats((size_t)(TOKENS * cols)), *y = v4_floats((size_t)(TOKENS * rows));
    for (int64_t i = 0; i < TOKENS * cols; i++) x[i] = gauss();
    v4_weight w = {.dtype = t, .rows = rows, .cols = cols, .data = data, .fast = 1, .pool = pool};
    static const char *const isas[] = {"scalar", "avx2", "avx512"};
    for (int k = 0; k < 3; k++) {
        const v4_fast_kernels *kern = v4_fast_kernels_named(isas[k]);
        if (!kern) continue;
        for (int n = 1; n <= TOKENS; n += TOKENS - 1) { /* decode, then prefill */
            v4_fast_matmul(kern, &w, x, cols, n, y, rows);
            int same = 1;
            for (int tok = 0; tok < n; tok++)
                for (int64_t r = 0; r < rows; r++)
                    same &= y[tok * rows + r] == fast_dot(decoded + r * cols, x + tok * cols, cols);
            CHECKF(same, "%s: %s product of %d tokens differs from the fast order",
                   v4_dtype_name(t), isas[k], n);
        }
    }
    free(x);
    free(y);
}

static void test_type(v4_dtype t, v4_pool *pool)
{
    int64_t rows = 37, cols = 512;
    size_t row_bytes = v4_dtype_row_bytes(t, cols);
    uint8_t *data = malloc(row_bytes * (size_t)rows);
    float *ref = malloc((size_t)(rows * cols) * sizeof(float)), *simd = malloc((size_t)cols * 4);
    for (int64_t r = 0; r < rows; r++) random_row(t, data + r * row_bytes, cols);
    int same = 1, finite = 1;
    for (int64_t r = 0; r < rows; r++) {
        v4_gguf_row_scalar(t, data + r * row_bytes, cols, ref + r * cols);
        v4_gguf_row(t, data + r * row_bytes, cols, simd);
        same &= memcmp(simd, ref + r * cols, (size_t)cols * 4) == 0;
        for (int64_t c = 0; c < cols; c++) finite &= isfinite(ref[r * cols + c]) != 0;
    }
    CHECKF(same, "%s: SIMD rows differ from the scalar reference", v4_dtype_name(t));
    CHECKF(finite, "%s: non-finite values from finite scales", v4_dtype_name(t));
    test_products(t, data, rows, cols, ref, pool);
    free(data);
    free(ref);
    free(simd);
}

/* Every half survives half -> float -> half; rounding is to nearest even. */
static void test_half(void)
{
    int bad = 0, wrong = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = v4_f16_to_f32((uint16_t)h);
        if (!isnan(f) && v4_f32_to_f16(f) != h) bad++;
        /* against the format's definition, in double */
        int exp = (int)(h >> 10) & 31, man = (int)(h & 1023);
        double want = exp == 0    ? ldexp(man, -24)
                      : exp == 31 ? (man ? NAN : INFINITY)
                                  : ldexp(1024 + man, exp - 25);
        want = h & 0x8000 ? -want : want;
        wrong += isnan(want) ? !isnan(f) : (double)f != want || !signbit(f) != !signbit(want);
    }
    CHECKF(bad == 0, "%d halves do not round-trip", bad);
    CHECKF(wrong == 0, "%d halves decode to the wrong float", wrong);
    CHECK(v4_f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3C00);     /* tie: to even */
    CHECK(v4_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3C02); /* tie: to even (up) */
    CHECK(v4_f32_to_f16(70000.0f) == 0x7C00);
}

/* Quantise Gaussian rows and decode them: relative RMS error per type. */
static double quant_error(v4_dtype t, const float *x, int64_t n, float *back)
{
    uint8_t *q = malloc(v4_dtype_row_bytes(t, n));
    CHECK(v4_gguf_quantize(t, x, n, q) == 0);
    v4_gguf_row_scalar(t, q, n, back);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < n; i++) {
        err += ((double)back[i] - x[i]) * ((double)back[i] - x[i]);
        ref += (double)x[i] * x[i];
    }
    free(q);
    return sqrt(err / ref);
}

static void test_quantiser(void)
{
    enum { N = 4096 };
    float x[N], back[N];
    for (int i = 0; i < N; i++) x[i] = gauss();
    static const struct {
        v4_dtype t;
        double bound;
    } bounds[] = {{V4_Q8_0, 0.01},   {V4_Q6_K, 0.035}, {V4_Q5_K, 0.08}, {V4_Q4_K, 0.15},
                  {V4_IQ4_XS, 0.15}, {V4_Q3_K, 0.28},  {V4_Q2_K, 0.5},  {V4_IQ2_XXS, 0.6}};
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        double e = quant_error(bounds[i].t, x, N, back);
        printf("%s: relative RMS error %.4f on Gaussian values\n", v4_dtype_name(bounds[i].t), e);
        CHECKF(e < bounds[i].bound, "%s: error %g", v4_dtype_name(bounds[i].t), e);
    }
    quant_error(V4_Q8_0, x, N, back);
    int within = 1;
    for (int b = 0; b < N; b += 32) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b + i]));
        for (int i = 0; i < 32; i++) within &= fabsf(back[b + i] - x[b + i]) <= amax / 127 * 0.51f;
    }
    CHECKF(within, "Q8_0 is off by more than half a step");
    /* Values on FP4 grids (e2m1 times a power of two per 32) come back exactly. */
    for (int b = 0; b < N; b += 32) {
        float s = ldexpf(1.0f, (int)(next() % 20) - 10);
        for (int i = 0; i < 32; i++) x[b + i] = v4_e2m1_values[next() % 16] * s;
    }
    CHECK(quant_error(V4_MXFP4, x, N, back) == 0);
}

/* MXFP4 rows whose blocks all share one scale byte, for every byte from
 * the subnormal scales up to where the products would overflow: the
 * decode kernels' integer path (scales up to 2^0) and their tables (above)
 * against the fast order over the decoded rows, codes for -0 included. */
static void test_mxfp4_every_scale(v4_pool *pool)
{
    enum { ROWS = 8, COLS = 64 };
    size_t row_bytes = v4_dtype_row_bytes(V4_MXFP4, COLS);
    static uint8_t data[ROWS * 2 * 17];
    static float decoded[ROWS * COLS];
    for (int e = 0; e <= 200; e++) {
        for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)next();
        for (size_t b = 0; b < sizeof data; b += 17) data[b] = (uint8_t)e;
        data[1] = 0x88; /* two codes for -0 */
        for (int r = 0; r < ROWS; r++)
            v4_gguf_row_scalar(V4_MXFP4, data + r * row_bytes, COLS, decoded + r * COLS);
        test_products(V4_MXFP4, data, ROWS, COLS, decoded, pool);
    }
}

/* MXFP4's scale by bits equals ldexpf's for every exponent byte. */
static void test_mxfp4_scale(void)
{
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        float got = v4_mxfp4_scale((uint8_t)e), want = ldexpf(1.0f, e - 128);
        bad += memcmp(&got, &want, sizeof got) != 0;
    }
    CHECKF(bad == 0, "MXFP4 scales: %d of 256 differ from ldexpf", bad);
}

int main(void)
{
    v4_quant_init();
    v4_pool *pool = NULL;
    tome_error err = {0};
    REQUIRE(v4_pool_new(2, v4_kernel_scratch_bytes(512), &pool, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) test_type(types[i], pool);
    test_half();
    test_mxfp4_scale();
    test_mxfp4_every_scale(pool);
    test_quantiser();
    v4_pool_free(pool);
    return check_finish();
}
