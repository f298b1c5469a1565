/*
 * test_quant.c - tome-mkmodel's number formats against references
 * written here from the format definitions (V4-ARCHITECTURE.md section 2.2),
 * not from the encoders: values are decoded with ldexp, and the nearest
 * representable value is found by brute force over every code.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tools/mkmodel/quant.h"
#include "tests/check.h"

static double e4m3_value(uint8_t b)
{
    int e = b >> 3 & 0xf, m = b & 7;
    double v = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
    return b & 0x80 ? -v : v;
}

static double e2m1_value(uint8_t c)
{
    int e = c >> 1 & 3, m = c & 1;
    double v = e == 0 ? 0.5 * m : ldexp(2 + m, e - 2);
    return c & 8 ? -v : v;
}

/* The code nearest to x among `n` codes (ties to the even code), by brute
 * force, with magnitudes above the largest value clamped first. */
static int nearest_code(double x, double (*value)(uint8_t), int n_codes, int skip_nan)
{
    int best = -1;
    double best_d = INFINITY;
    for (int c = 0; c < n_codes; c++) {
        if (skip_nan && (c & 0x7f) == 0x7f) continue;
        if ((c & (n_codes / 2)) != (x < 0 || (x == 0 && signbit(x)) ? n_codes / 2 : 0)) continue;
        double d = fabs(value((uint8_t)c) - x);
        if (d < best_d || (d == best_d && (c & 1) == 0)) {
            best = c;
            best_d = d;
        }
    }
    return best;
}

static uint64_t rng_state = 0x1234567;

static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double random_in(double lo, double hi)
{
    return lo + (hi - lo) * (double)(next_random() >> 11) * 0x1p-53;
}

static void test_e4m3(void)
{
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7f) == 0x7f) continue;
        int got = mk_e4m3_encode((float)e4m3_value((uint8_t)b));
        CHECKF(got == b, "e4m3 byte 0x%02x decodes to %g, re-encodes to 0x%02x", b,
               e4m3_value((uint8_t)b), got);
    }
    /* Midpoints of neighbours go to the even code, and a hair either side
     * goes to the nearer one. */
    for (int c = 0; c < 0x7e; c++) {
        for (int sign = 0; sign <= 0x80; sign += 0x80) {
            int lo = c | sign, hi = (c + 1) | sign;
            float mid = (float)((e4m3_value((uint8_t)lo) + e4m3_value((uint8_t)hi)) / 2);
            int even = (c & 1) == 0 ? lo : hi;
            CHECKF(mk_e4m3_encode(mid) == even, "tie %g -> 0x%02x, want 0x%02x", mid,
                   mk_e4m3_encode(mid), even);
            float toward_zero = nextafterf(mid, 0), away = nextafterf(mid, sign ? -1e9f : 1e9f);
            CHECK(mk_e4m3_encode(toward_zero) == lo);
            CHECK(mk_e4m3_encode(away) == hi);
        }
    }
    CHECK(mk_e4m3_encode(448.0f) == 0x7e);
    CHECK(mk_e4m3_encode(464.0f) == 0x7e); /* clamped, never NaN */
    CHECK(mk_e4m3_encode(1e30f) == 0x7e);
    CHECK(mk_e4m3_encode(INFINITY) == 0x7e);
    CHECK(mk_e4m3_encode(-1e30f) == 0xfe);
    CHECK(mk_e4m3_encode(0x1p-10f) == 0x00); /* half the smallest subnormal: tie to 0 */
    CHECK(mk_e4m3_encode(-0.0f) == 0x80);
    for (int i = 0; i < 200000; i++) {
        double x = random_in(-500, 500) * (i % 3 == 0 ? 1e-3 : 1);
        int want = nearest_code(fmax(fmin(x, 448), -448), e4m3_value, 256, 1);
        int got = mk_e4m3_encode((float)x);
        if (got != want) {
            CHECKF(got == want, "e4m3 of %.9g: got 0x%02x, nearest is 0x%02x", x, got, want);
            break;
        }
    }
}

static void test_e2m1(void)
{
    for (int c = 0; c < 16; c++) {
        int got = mk_e2m1_encode((float)e2m1_value((uint8_t)c));
        CHECKF(got == c, "e2m1 code %d decodes to %g, re-encodes to %d", c, e2m1_value((uint8_t)c),
               got);
    }
    static const struct {
        float x;
        int code;
    } ties[] = {{0.25f, 0}, {0.75f, 2}, {1.25f, 2},  {1.75f, 4}, {2.5f, 4},
                {3.5f, 6},  {5.0f, 6},  {-5.0f, 14}, {7.0f, 7},  {-100.0f, 15}};
    for (size_t i = 0; i < sizeof ties / sizeof ties[0]; i++)
        CHECKF(mk_e2m1_encode(ties[i].x) == ties[i].code, "e2m1 of %g: got %d, want %d", ties[i].x,
               mk_e2m1_encode(ties[i].x), ties[i].code);
    for (int i = 0; i < 200000; i++) {
        double x = random_in(-8, 8);
        int want = nearest_code(fmax(fmin(x, 6), -6), e2m1_value, 16, 0);
        int got = mk_e2m1_encode((float)x);
        if (got != want) {
            CHECKF(got == want, "e2m1 of %.9g: got %d, nearest is %d", x, got, want);
            break;
        }
    }
}

/* The value of float bits b, reading the all-ones exponent with a zero
 * mantissa as 2^128 (the next step after FLT_MAX, where rounding lands when
 * it overflows). */
static double float_bits_value(uint32_t b)
{
    if ((b & 0x7fffffff) == 0x7f800000) return b >> 31 ? -0x1p128 : 0x1p128;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static void test_bf16(void)
{
    int bad = 0;
    for (int i = 0; i < 1000000 && !bad; i++) {
        uint32_t b = (uint32_t)next_random();
        if ((b & 0x7f800000) == 0x7f800000) continue; /* inf and NaN below */
        float x;
        memcpy(&x, &b, sizeof x);
        uint32_t lo = b & 0xffff0000u, hi = lo + 0x10000u;
        double dlo = fabs(float_bits_value(lo) - x), dhi = fabs(float_bits_value(hi) - x);
        uint16_t want = (uint16_t)((dlo < dhi || (dlo == dhi && !(lo & 0x10000u)) ? lo : hi) >> 16);
        uint16_t got = mk_bf16_encode(x);
        if (got != want) {
            bad = 1;
            CHECKF(got == want, "bf16 of %.9g (0x%08x): got 0x%04x, want 0x%04x", x, b, got, want);
        }
    }
    CHECK(mk_bf16_encode(1.0f) == 0x3f80);
    CHECK(mk_bf16_encode(INFINITY) == 0x7f80);
    CHECK(mk_bf16_encode(3.4028235e38f) == 0x7f80); /* above the largest bf16: overflows */
    uint16_t nan = mk_bf16_encode(NAN);
    CHECK((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0);
    float in[3] = {1.0f, -2.0f, 0x1.0101p0f};
    uint16_t out[3];
    mk_bf16_encode_n(in, 3, out);
    for (int i = 0; i < 3; i++) CHECK(out[i] == mk_bf16_encode(in[i]));
}

/* ceil(log2(max(amax, floor) * (1/qmax))) by frexp. */
static int reference_exponent(float amax, float amax_floor, float qmax)
{
    float t = fmaxf(amax, amax_floor) * (1.0f / qmax);
    int e;
    float m = frexpf(t, &e); /* t = m * 2^e, m in [0.5, 1) */
    return m == 0.5f ? e - 1 : e;
}

static void test_scales(void)
{
    for (int i = 0; i < 100000; i++) {
        float amax = (float)ldexp(random_in(0.5, 1), (int)(next_random() % 80) - 40);
        if (i % 7 == 0) amax = (float)ldexp(1, (int)(next_random() % 40) - 20) * 448; /* exact */
        int got = mk_scale_exponent(amax, MK_FP8_AMAX_FLOOR, MK_E4M3_MAX);
        int want = reference_exponent(amax, MK_FP8_AMAX_FLOOR, MK_E4M3_MAX);
        if (got != want) {
            CHECKF(got == want, "fp8 scale of amax %g: 2^%d, want 2^%d", amax, got, want);
            break;
        }
        got = mk_scale_exponent(amax, MK_FP4_AMAX_FLOOR, MK_E2M1_MAX);
        want = reference_exponent(amax, MK_FP4_AMAX_FLOOR, MK_E2M1_MAX);
        if (got != want) {
            CHECKF(got == want, "fp4 scale of amax %g: 2^%d, want 2^%d", amax, got, want);
            break;
        }
    }
    CHECK(mk_scale_exponent(0, MK_FP8_AMAX_FLOOR, MK_E4M3_MAX) ==
          reference_exponent(0, MK_FP8_AMAX_FLOOR, MK_E4M3_MAX));
    CHECK(mk_scale_exponent(0, MK_FP4_AMAX_FLOOR, MK_E2M1_MAX) == -126);
    CHECK(mk_scale_exponent(1.0f, MK_FP8_AMAX_FLOOR, MK_E4M3_MAX) == -8); /* 1/448 -> 2^-8 */
}

static void test_fp8_tile(void)
{
    enum { ROWS = 5, COLS = 7, LD = 9 };
    float x[ROWS * LD];
    uint8_t q[ROWS * LD];
    memset(q, 0xaa, sizeof q);
    for (int i = 0; i < ROWS * LD; i++) x[i] = (float)random_in(-3, 3);
    x[2 * LD + 3] = -100; /* amax outside the tile must not count */
    x[2 * LD + 8] = 1000;
    int e = mk_fp8_tile(x, LD, ROWS, COLS, q, LD);
    CHECK(e == reference_exponent(100, MK_FP8_AMAX_FLOOR, MK_E4M3_MAX));
    double max_q = 0;
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < LD; c++) {
            if (c >= COLS) {
                CHECK(q[r * LD + c] == 0xaa);
                continue;
            }
            double v = e4m3_value(q[r * LD + c]);
            max_q = fmax(max_q, fabs(v));
            CHECK(q[r * LD + c] == nearest_code(ldexp(x[r * LD + c], -e), e4m3_value, 256, 1));
        }
    CHECKF(max_q > 224 && max_q <= 448, "largest e4m3 in the tile %g, want (224, 448]", max_q);
}

static void test_fp4_group(void)
{
    float x[32];
    uint8_t packed[16];
    for (int i = 0; i < 32; i++) x[i] = 0.25f;
    x[0] = 6.0f;  /* amax 6: scale 2^0 */
    x[1] = -0.5f; /* high nibble of byte 0 */
    x[30] = 3.0f;
    x[31] = -4.0f;
    CHECK(mk_fp4_group(x, 32, packed) == 0);
    CHECKF(packed[0] == 0x97, "byte 0 = 0x%02x: low nibble 6 (code 7), high -0.5 (code 9)",
           packed[0]);
    CHECKF(packed[15] == 0xe5, "byte 15 = 0x%02x: low 3 (code 5), high -4 (code 14)", packed[15]);
    CHECK(packed[7] == 0x00); /* 0.25 is a tie between 0 and 0.5: even code 0 */
    for (int i = 0; i < 32; i++) x[i] = (float)i / 100;
    int e = mk_fp4_group(x, 32, packed); /* amax 0.31 -> 2^ceil(log2(0.31/6)) = 2^-4 */
    CHECK(e == -4);
    CHECK((packed[15] >> 4) == mk_e2m1_encode(0.31f * 16));
}

int main(void)
{
    test_e4m3();
    test_e2m1();
    test_bf16();
    test_scales();
    test_fp8_tile();
    test_fp4_group();
    return check_finish();
}
