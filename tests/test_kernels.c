/* engine/kernels/: weight decoding and matmul against
 * values computed here from the formats' definitions, and the order
 * invariance the engine relies on (a row's result does not depend on the
 * batch it is computed in); the fast kernels of every instruction set this
 * CPU has against their summation order computed here, bit for bit. */
#include "engine/internal.h"
#include "engine/kernels/fast.h"
#include "engine/kernels/indexer.h"
#include "tests/check.h"

#include <math.h>

static float e4m3_by_definition(uint8_t b)
{
    int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
    double v = exp ? ldexp(1.0 + man / 8.0, exp - 7) : ldexp(man / 8.0, -6);
    return (float)(sign ? -v : v);
}

static float e2m1_by_definition(uint8_t c)
{
    static const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    return (float)((c & 8) ? -mags[c & 7] : mags[c & 7]);
}

/* The threads (and their scratch) every product here runs on, as a model's
 * would: two threads, rows up to V4_MAX_COLS wide. */
static v4_pool *pool;

static uint32_t rng = 12345;
static uint32_t next_random(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

/* A random weight of the given format, its values decoded by definition. */
static v4_weight make_weight(v4_dtype t, int rows, int cols, uint8_t **data, uint8_t **scale,
                             float *ref)
{
    v4_weight w = {.dtype = t, .rows = rows, .cols = cols, .pool = pool};
    size_t bytes = t == V4_I8 ? (size_t)rows * cols / 2 : (size_t)rows * cols * v4_dtype_size(t);
    *data = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) {
        uint8_t b = (uint8_t)next_random();
        if (t == V4_F8_E4M3 && (b & 0x7F) == 0x7F) b &= 0xFE; /* no NaN codes */
        if (t == V4_BF16 && (i & 1)) b &= 0xBF;               /* finite, modest exponents */
        (*data)[i] = b;
    }
    int scols = t == V4_I8 ? cols / 32 : (cols + 127) / 128;
    int srows = t == V4_I8 ? rows : (rows + 127) / 128;
    *scale = malloc((size_t)srows * scols);
    for (int i = 0; i < srows * scols; i++) (*scale)[i] = (uint8_t)(120 + next_random() % 10);
    w.data = *data;
    w.scale = *scale;
    w.scale_stride = scols;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float v;
            if (t == V4_F8_E4M3)
                v = e4m3_by_definition((*data)[(size_t)r * cols + c]) *
                    ldexpf(1.0f, (*scale)[(r / 128) * scols + c / 128] - 127);
            else if (t == V4_I8) {
                uint8_t b = (*data)[((size_t)r * cols + c) / 2];
                v = e2m1_by_definition(c & 1 ? b >> 4 : b & 15) *
                    ldexpf(1.0f, (*scale)[r * scols + c / 32] - 127);
            } else {
                uint32_t bits = (uint32_t)((*data)[2 * ((size_t)r * cols + c)] |
                                           (*data)[2 * ((size_t)r * cols + c) + 1] << 8)
                                << 16;
                memcpy(&v, &bits, 4);
            }
            ref[(size_t)r * cols + c] = v;
        }
    return w;
}

static void test_format(v4_dtype t)
{
    int rows = 264, cols = 384, n = 5;
    uint8_t *data, *scale;
    float *ref = malloc((size_t)rows * cols * sizeof *ref);
    v4_weight w = make_weight(t, rows, cols, &data, &scale, ref);
    float *row = malloc((size_t)cols * sizeof *row);
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        v4_weight_row(&w, r, row);
        for (int c = 0; c < cols; c++) bad += row[c] != ref[(size_t)r * cols + c];
    }
    CHECKF(bad == 0, "%s: %d decoded values differ from the definition", v4_dtype_name(t), bad);

    float *x = malloc((size_t)n * cols * sizeof *x), *y = malloc((size_t)n * rows * sizeof *y);
    float *y1 = malloc((size_t)rows * sizeof *y1);
    for (int i = 0; i < n * cols; i++) x[i] = (float)((int)(next_random() % 2001) - 1000) / 1000.0f;
    v4_matmul(&w, x, n, y, rows);
    double worst = 0;
    for (int t2 = 0; t2 < n; t2++) {
        v4_matmul(&w, x + (size_t)t2 * cols, 1, y1, rows);
        for (int r = 0; r < rows; r++) {
            /* the batch does not change a single bit of a row's result */
            CHECKF(y1[r] == y[(size_t)t2 * rows + r], "%s: token %d row %d differs by batch",
                   v4_dtype_name(t), t2, r);
            float seq = 0; /* the in-order, unfused sum the kernels promise */
            for (int c = 0; c < cols; c++)
                seq += ref[(size_t)r * cols + c] * x[(size_t)t2 * cols + c];
            CHECKF(seq == y1[r], "%s: row %d is not the in-order sum", v4_dtype_name(t), r);
            /* error against the exact sum, relative to the sum of |terms|
             * (the bound for any float summation order) */
            double exact = 0, mag = 0;
            for (int c = 0; c < cols; c++) {
                double term = (double)ref[(size_t)r * cols + c] * x[(size_t)t2 * cols + c];
                exact += term;
                mag += fabs(term);
            }
            worst = fmax(worst, fabs(exact - y1[r]) / (mag + 1e-30));
        }
    }
    CHECKF(worst < 1e-5, "%s: error %.3g of the sum of |terms|", v4_dtype_name(t), worst);
    free(data);
    free(scale);
    free(ref);
    free(row);
    free(x);
    free(y);
    free(y1);
}

/* fast.h's order, written from its definition: 16 lanes of fused
 * multiply-adds over k = l, l + 16, ..., then the fixed tree. */
static float fast_order(const float *w, const float *x, int cols)
{
    float lane[16] = {0};
    for (int k = 0; k < cols; k++) lane[k % 16] = fmaf(w[k], x[k], lane[k % 16]);
    float s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = lane[i] + lane[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/* Every fast kernel this CPU runs gives, for every token count (the decode
 * path for 1 and 2, register tiles and column blocks beyond), exactly the
 * order's result, and stays close to the exact sum. */
static void test_fast(v4_dtype t)
{
    int rows = 264, cols = 384, n = 100;
    uint8_t *data, *scale;
    float *ref = malloc((size_t)rows * cols * sizeof *ref);
    v4_weight w = make_weight(t, rows, cols, &data, &scale, ref);
    float *x = malloc((size_t)n * cols * sizeof *x), *y = malloc((size_t)n * rows * sizeof *y);
    float *want = malloc((size_t)n * rows * sizeof *want);
    for (int i = 0; i < n * cols; i++) x[i] = (float)((int)(next_random() % 2001) - 1000) / 999.0f;
    double worst = 0;
    for (int tok = 0; tok < n; tok++)
        for (int r = 0; r < rows; r++) {
            const float *wr = ref + (size_t)r * cols, *xt = x + (size_t)tok * cols;
            want[(size_t)tok * rows + r] = fast_order(wr, xt, cols);
            double exact = 0, mag = 0;
            for (int c = 0; c < cols; c++) {
                exact += (double)wr[c] * xt[c];
                mag += fabs((double)wr[c] * xt[c]);
            }
            worst = fmax(worst, fabs(exact - want[(size_t)tok * rows + r]) / (mag + 1e-30));
        }
    CHECKF(worst < 1e-5, "%s: the fast order's error is %.3g of the sum of |terms|",
           v4_dtype_name(t), worst);
    static const char *const isas[] = {"scalar", "avx2", "avx512"};
    static const int counts[] = {1, 2, 3, 5, 6, 7, 13, 100};
    int tested = 0;
    for (int i = 0; i < 3; i++) {
        const v4_fast_kernels *k = v4_fast_kernels_named(isas[i]);
        if (!k) continue;
        tested++;
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            /* tokens in calls of counts[c]: results must not depend on it */
            memset(y, 0, (size_t)n * rows * sizeof *y);
            for (int t0 = 0; t0 < n; t0 += counts[c]) {
                int m = n - t0 < counts[c] ? n - t0 : counts[c];
                v4_fast_matmul(k, &w, x + (size_t)t0 * cols, cols, m, y + (size_t)t0 * rows, rows);
            }
            int bad = 0;
            for (int e = 0; e < n * rows; e++) bad += memcmp(&y[e], &want[e], sizeof(float)) != 0;
            CHECKF(bad == 0, "%s %s, %d tokens a call: %d of %d results differ from the order",
                   isas[i], v4_dtype_name(t), counts[c], bad, n * rows);
        }
    }
    CHECKF(tested >= 1 && (tested == 3 || !v4_fast_kernels_named("avx512")),
           "%d instruction sets tested", tested);
    free(data);
    free(scale);
    free(ref);
    free(x);
    free(y);
    free(want);
}

/* The FP8 NaN codes decode to NaN in every fast kernel, as in the exact
 * decoder (a damaged checkpoint must not turn into finite numbers): in a
 * narrow matrix, and in one NaN among full 128-column blocks, which the
 * decode kernels otherwise take a shorter path through. */
/* Decode's FP8 short path folds the block scale into x; where that is not
 * exact (x so small that x * scale underflows, or so large that it
 * overflows) the general path must take over, so every ISA still gives the
 * scalar table's bits. */
static void test_fast_fp8_scales(void)
{
    enum { R = 8, C = 256 };
    static uint8_t data[R * C];
    uint8_t scale[2] = {100, 160}; /* 2^-27 and 2^33 for the two column blocks */
    for (int i = 0; i < R * C; i++) data[i] = (uint8_t)(next_random() % 0x7E) | (i & 0x80);
    v4_weight w = {.dtype = V4_F8_E4M3,
                   .rows = R,
                   .cols = C,
                   .data = data,
                   .scale = scale,
                   .scale_stride = 2,
                   .pool = pool};
    static float x[C], want[R], got[R];
    for (int k = 0; k < C; k++) x[k] = k < 128 ? (k % 3 ? 1.5f : 1e-33f) : (k % 3 ? 1.5f : 1e30f);
    const v4_fast_kernels *ref = v4_fast_kernels_named("scalar");
    v4_fast_matmul(ref, &w, x, C, 1, want, R);
    static const char *const names[] = {"avx2", "avx512"};
    for (int i = 0; i < 2; i++) {
        const v4_fast_kernels *k = v4_fast_kernels_named(names[i]);
        if (!k) continue;
        v4_fast_matmul(k, &w, x, C, 1, got, R);
        CHECKF(memcmp(got, want, sizeof got) == 0, "%s: FP8 rows with extreme x * scale", names[i]);
    }
}

static void test_fast_nan(void)
{
    enum { R = 8, C = 512 };
    static uint8_t wide[R * C], wscale[1 * 4];
    for (int i = 0; i < R * C; i++) wide[i] = (uint8_t)(0x30 + i % 7);
    memset(wscale, 127, sizeof wscale);
    wide[5 * C + 300] = 0xFF;
    v4_weight ww = {.dtype = V4_F8_E4M3,
                    .rows = R,
                    .cols = C,
                    .data = wide,
                    .scale = wscale,
                    .scale_stride = 4,
                    .pool = pool};
    static float xw[C], yw[R];
    for (int i = 0; i < C; i++) xw[i] = 0.5f;
    static const char *const names[] = {"scalar", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        const v4_fast_kernels *k = v4_fast_kernels_named(names[i]);
        if (!k) continue;
        v4_fast_matmul(k, &ww, xw, C, 1, yw, R);
        CHECKF(isnan(yw[5]) && !isnan(yw[4]) && !isnan(yw[6]), "%s: a NaN in a full block",
               names[i]);
    }
    uint8_t data[16 * 16], scale[1] = {127};
    for (int i = 0; i < 256; i++) data[i] = (uint8_t)i;
    v4_weight w = {.dtype = V4_F8_E4M3,
                   .rows = 16,
                   .cols = 16,
                   .data = data,
                   .scale = scale,
                   .scale_stride = 1,
                   .pool = pool};
    float x[16], y[16];
    for (int i = 0; i < 16; i++) x[i] = 1;
    static const char *const isas[] = {"scalar", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        const v4_fast_kernels *k = v4_fast_kernels_named(isas[i]);
        if (!k) continue;
        v4_fast_matmul(k, &w, x, 16, 1, y, 16);
        /* rows 7 and 15 hold the codes 0x7F and 0xFF */
        CHECKF(isnan(y[7]) && isnan(y[15]) && !isnan(y[6]), "%s: NaN codes", isas[i]);
    }
}

/* ---- indexer scores from codes ---- */

typedef struct index_case {
    int dim, heads;
    int64_t n;
    uint8_t *rows;   /* [n][dim/2 + dim/32] */
    float *keys, *q; /* decoded: [n][dim], [heads][dim] */
    int fallbacks;
} index_case;

static const uint8_t *case_row(const void *ctx, int64_t i)
{
    const index_case *c = ctx;
    return c->rows + (size_t)i * (c->dim / 2 + c->dim / 32);
}

/* The F32 in-order dot, as the engine's float path computes it. */
static float case_dot(const void *ctx, int64_t key, int h)
{
    index_case *c = (index_case *)ctx;
    c->fallbacks++;
    float sum = 0;
    for (int j = 0; j < c->dim; j++)
        sum += c->keys[(size_t)key * c->dim + j] * c->q[h * c->dim + j];
    return sum;
}

/* Random codes and scales (exponents drawn from [kbase, kbase + span) for
 * keys, [qbase, qbase + span) for the query; key 77 has a NaN scale when
 * `nan`); the scores of every kernel must equal the F32 computation bit for
 * bit. */
static void check_index_scores(int dim, int kbase, int qbase, int span, int nan, int want_fallbacks)
{
    index_case c = {.dim = dim, .heads = 4, .n = 101};
    int nb = dim / 32, row = dim / 2 + nb;
    c.rows = malloc((size_t)c.n * row);
    c.keys = malloc((size_t)c.n * dim * sizeof(float));
    c.q = malloc((size_t)c.heads * dim * sizeof(float));
    uint8_t qpacked[4][64], qscales[4][4];
    for (int64_t i = 0; i < c.n; i++) {
        uint8_t *r = c.rows + (size_t)i * row;
        for (int b = 0; b < nb; b++) r[dim / 2 + b] = (uint8_t)(kbase + next_random() % span);
        if (nan && i == 77) r[dim / 2 + nb - 1] = 255;
        for (int j = 0; j < dim; j += 2) r[j / 2] = (uint8_t)next_random();
        for (int j = 0; j < dim; j++)
            c.keys[(size_t)i * dim + j] = e2m1_by_definition((r[j / 2] >> (4 * (j & 1))) & 15) *
                                          ldexpf(1.0f, r[dim / 2 + j / 32] - 127);
    }
    for (int h = 0; h < c.heads; h++) {
        for (int b = 0; b < nb; b++) qscales[h][b] = (uint8_t)(qbase + next_random() % span);
        for (int j = 0; j < dim; j += 2) qpacked[h][j / 2] = (uint8_t)next_random();
        for (int j = 0; j < dim; j++)
            c.q[h * dim + j] = e2m1_by_definition((qpacked[h][j / 2] >> (4 * (j & 1))) & 15) *
                               ldexpf(1.0f, qscales[h][j / 32] - 127);
    }
    float w[4] = {0.75f, -0.5f, 1.25f, 0.0625f}, want[101];
    for (int64_t i = 0; i < c.n; i++) {
        float sc = 0;
        for (int h = 0; h < c.heads; h++) {
            float d = case_dot(&c, i, h);
            sc += (d > 0 ? d : 0) * w[h];
        }
        want[i] = sc;
    }
    tome_error err = {0};
    v4_index_keys ik = {0};
    CHECK_OK(v4_index_keys_add(&ik, dim, 40, case_row, &c, &err), &err);
    CHECK_OK(v4_index_keys_add(&ik, dim, c.n, case_row, &c, &err), &err); /* in two steps */
    void *qmem = malloc(v4_index_query_bytes(c.heads, dim));
    v4_index_query q;
    v4_index_query_bind(&q, c.heads, dim, qmem, w);
    for (int h = 0; h < c.heads; h++) v4_index_query_set(&q, h, qpacked[h], qscales[h]);
    /* the scalar reference, then each SIMD kernel this CPU runs */
    v4_index_score_fn fns[3] = {v4_index_score_scalar};
    int n_fns = 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        fns[n_fns++] = v4_index_score_avx2;
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni"))
        fns[n_fns++] = v4_index_score_vnni;
#endif
    for (int f = 0; f < n_fns; f++) {
        float got[101];
        c.fallbacks = 0;
        fns[f](&ik, &q, 0, 48, got, case_dot, &c);
        fns[f](&ik, &q, 48, c.n, got + 48, case_dot, &c);
        int bad = 0;
        for (int64_t i = 0; i < c.n; i++) bad += memcmp(&got[i], &want[i], sizeof(float)) != 0;
        CHECKF(bad == 0, "index scores (dim %d, exponents %d/%d+%d, kernel %d): %d of %lld differ",
               dim, kbase, qbase, span, f, bad, (long long)c.n);
        CHECKF(want_fallbacks ? c.fallbacks > 0 : c.fallbacks == 0,
               "dim %d span %d kernel %d: %d pairs fell back", dim, span, f, c.fallbacks);
    }
    v4_index_keys_free(&ik);
    free(qmem);
    free(c.rows);
    free(c.keys);
    free(c.q);
}

static void test_index_scores(void)
{
    check_index_scores(64, 124, 120, 4, 0, 0); /* exponents close: every pair from the codes */
    check_index_scores(128, 124, 120, 4, 0, 0);
    check_index_scores(128, 124, 120, 12, 0, 1); /* spread past 9: some pairs the F32 way */
    check_index_scores(128, 124, 120, 4, 1, 1);  /* a NaN scale */
    check_index_scores(64, 63, 64, 4, 0, 1);     /* products near the least normal float */
    check_index_scores(64, 200, 150, 6, 0, 1);   /* and near the largest allowed */
    check_index_scores(64, 1, 2, 3, 0, 1);       /* below it: all the F32 way */
}

static void test_tiles(void)
{
    int n = 37, dim = 96;
    float *rows = malloc((size_t)n * dim * sizeof *rows), q[96], out[37];
    const float *ptr[37];
    for (int i = 0; i < n * dim; i++) rows[i] = (float)((int)(next_random() % 201) - 100) / 64.0f;
    for (int k = 0; k < dim; k++) q[k] = (float)((int)(next_random() % 201) - 100) / 32.0f;
    for (int i = 0; i < n; i++) ptr[i] = rows + (size_t)i * dim;
    float *tiles = malloc((size_t)40 * dim * sizeof *tiles);
    v4_tiles_pack(ptr, n, dim, tiles);
    v4_tiles_dot(tiles, n, dim, q, out);
    for (int i = 0; i < n; i++) CHECKF(out[i] == v4_dot(ptr[i], q, dim), "tile dot %d", i);
    free(rows);
    free(tiles);
}

static void test_quant(void)
{
    v4_quant_init();
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7F) == 0x7F) continue;
        CHECKF(v4_e4m3_table[b] == e4m3_by_definition((uint8_t)b), "e4m3 table %d", b);
        CHECKF(v4_e4m3_table[v4_f32_to_e4m3(v4_e4m3_table[b])] == v4_e4m3_table[b],
               "e4m3 round trip %d", b);
    }
    /* ties go to the even code: 1.0625 lies between 1.0 (code 0x38) and 1.125 (0x39) */
    /* Against the nearest code found by brute force (ties to the even
     * code), around every code and midpoint and on random floats. */
    int64_t wrong = 0;
    for (int i = 0; i < 2000000; i++) {
        float f;
        if (i < 127 * 8) {
            int c = i / 8, k = i % 8;
            float lo = v4_e4m3_table[c], hi = c < 126 ? v4_e4m3_table[c + 1] : 480.0f;
            float mid = (lo + hi) / 2,
                  pts[4] = {lo, mid, nextafterf(mid, 0), nextafterf(mid, 1e9f)};
            f = pts[k % 4] * (k < 4 ? 1.0f : -1.0f);
        } else {
            uint32_t u = (uint32_t)next_random() << 8 ^ (uint32_t)next_random();
            memcpy(&f, &u, sizeof f);
            if (isnan(f)) continue;
            f = fmodf(f, 512.0f);
        }
        float a = fabsf(f);
        int best = 0;
        for (int c = 1; c < 127; c++) {
            float dc = fabsf(v4_e4m3_table[c] - a), db = fabsf(v4_e4m3_table[best] - a);
            if (dc < db || (dc == db && !(c & 1))) best = c;
        }
        if (a >= 448.0f) best = 126;
        wrong += v4_f32_to_e4m3(f) != (uint8_t)((signbit(f) ? 0x80 : 0) | best);
    }
    CHECKF(wrong == 0, "%lld floats rounded to the wrong e4m3 code", (long long)wrong);
    /* e2m1 the same way: every value and midpoint, then random floats. */
    wrong = 0;
    for (int i = 0; i < 400000; i++) {
        float f =
            i < 64 ? (i < 32 ? v4_e2m1_values[i % 8] * (1 + (i / 8) * 0.25f)
                             : (v4_e2m1_values[i % 8] + v4_e2m1_values[(i % 8) + (i % 8 < 7)]) / 2)
                   : (float)((int)(next_random() % 1600001) - 800000) / 100000.0f;
        float a = fabsf(f);
        int best = 0;
        for (int c = 1; c < 8; c++) {
            float dc = fabsf(v4_e2m1_values[c] - a), db = fabsf(v4_e2m1_values[best] - a);
            if (dc < db || (dc == db && !(c & 1))) best = c;
        }
        wrong += v4_f32_to_e2m1(f) != (uint8_t)((signbit(f) ? 8 : 0) | best);
    }
    CHECKF(wrong == 0, "%lld floats rounded to the wrong e2m1 code", (long long)wrong);
    CHECK(v4_f32_to_e2m1(NAN) == 0 && v4_f32_to_e2m1(-INFINITY) == 15);
    CHECK(v4_f32_to_e4m3(NAN) == 0 && v4_f32_to_e4m3(INFINITY) == 126 &&
          v4_f32_to_e4m3(-1000.0f) == 0xFE);
    CHECK(v4_f32_to_e4m3(1.0625f) == 0x38);
    CHECK(v4_f32_to_e2m1(0.25f) == 0 && v4_f32_to_e2m1(0.75f) == 2 && v4_f32_to_e2m1(5.0f) == 6);
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = (float)(i - 32) * 0.37f;
    uint8_t codes[64], scales[1];
    v4_fp8_roundtrip(x, 64, 64, codes, scales);
    for (int i = 0; i < 64; i++)
        CHECK(x[i] == v4_e4m3_table[codes[i]] * ldexpf(1.0f, scales[0] - 127));
}

/* ulps between two floats of the same sign */
static int64_t ulps(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    return ia > ib ? (int64_t)ia - ib : (int64_t)ib - ia;
}

/* v4_exp_vector_n gives v4_exp_vector's bits on every lane width the CPU
 * has: over the whole range, at its edges (arguments whose results are
 * subnormal, the -104 cut, the 88 limit of the SIMD lanes, infinities,
 * NaN) and for lengths that leave a tail. */
static void test_exp_lanes(void)
{
    enum { N = 20000 + 13 };
    static float d[N], want[N], got[N];
    static const float edges[] = {-INFINITY, -104.0001f, -104.0f,  -103.9999f, -100.0f,
                                  -87.5f,    -87.3f,     -0.0f,    0.0f,       1e-30f,
                                  87.9f,     88.0f,      88.0001f, 89.0f,      100.0f,
                                  1e38f,     2e38f,      INFINITY, NAN};
    int n_edges = (int)(sizeof edges / sizeof edges[0]);
    for (int i = 0; i < N; i++)
        d[i] = i < n_edges ? edges[i] : (float)((int)(next_random() % 240000) - 120000) / 1000.0f;
    for (int i = 0; i < N; i++) want[i] = v4_exp_vector(d[i]);
    static const int lanes[] = {16, 8, 1};
    static const char *const isa[] = {"avx512", "avx2", "scalar"};
    for (int k = 0; k < 3; k++) {
        if (!v4_fast_kernels_named(isa[k])) continue;
        int64_t differ = 0;
        for (int64_t len = N; len >= N - 17; len -= 17) {
            v4_exp_vector_lanes(d, got, len, lanes[k]);
            for (int64_t i = 0; i < len; i++)
                differ += memcmp(&got[i], &want[i], sizeof(float)) != 0;
        }
        CHECKF(differ == 0, "%d lanes: %lld exps differ from v4_exp_vector", lanes[k],
               (long long)differ);
    }
    v4_exp_vector_n(d, got, N);
    CHECK(memcmp(got, want, sizeof got) == 0);
}

/* The vector exp and log1p stay within one ulp of the exact value (double
 * libm rounded) over their whole useful range, and the cascade sums add
 * exactly what a sum must add. */
static void test_refmath(void)
{
    int64_t worst_exp = 0, worst_log = 0, differ = 0, n = 0;
    for (float x = -87.0f; x < 88.0f; x += 0.000731f, n++) {
        float want = (float)exp((double)x), got = v4_exp_vector(x);
        worst_exp = ulps(want, got) > worst_exp ? ulps(want, got) : worst_exp;
        differ += got != expf(x);
    }
    for (float x = -0.999f; x < 1e6f; x = x < 10 ? x + 0.000377f : x * 1.0009f) {
        float want = (float)log1p((double)x), got = v4_log1p_vector(x);
        worst_log = ulps(want, got) > worst_log ? ulps(want, got) : worst_log;
    }
    CHECKF(worst_exp <= 1, "vector exp is %lld ulps off", (long long)worst_exp);
    CHECKF(worst_log <= 1, "vector log1p is %lld ulps off", (long long)worst_log);
    /* it is a different function from the C library's, not a copy of it */
    CHECKF(differ > 0 && differ < n / 10, "vector exp differs from expf on %lld of %lld inputs",
           (long long)differ, (long long)n);
    CHECK(v4_exp_vector(-200.0f) == 0.0f && isinf(v4_exp_vector(200.0f)));
    CHECK(v4_log1p_vector(-1.0f) == -INFINITY && isnan(v4_log1p_vector(-2.0f)));
    CHECK(v4_exp_at(1.5f, 15, 20) == v4_exp_vector(1.5f) && v4_exp_at(1.5f, 16, 20) == expf(1.5f));

    /* small integers sum exactly in any order: the cascade must add every
     * element once, for lengths around each level boundary */
    for (int64_t len = 0; len < 5000; len += len < 300 ? 1 : 97) {
        float *x = malloc((size_t)(len ? len : 1) * sizeof *x);
        double want = 0, want_sq = 0;
        for (int64_t i = 0; i < len; i++) {
            x[i] = (float)((int)(next_random() % 17) - 8);
            want += x[i];
            want_sq += (double)x[i] * x[i];
        }
        CHECKF(v4_sum(x, len) == (float)want, "sum of %lld integers", (long long)len);
        if (len)
            CHECKF(v4_mean_square(x, len) == (float)want_sq / (float)len,
                   "mean square of %lld integers", (long long)len);
        free(x);
    }
}

/* Attention's fast kernels read KV rows where they are stored and decode
 * them in registers: the scores (register tiles of the matrix product)
 * must be fast.h's order over the decoded values, checked against a
 * literal lane-by-lane evaluation, and P.V an in-order chain of fused
 * multiply-adds per output; every ISA gives those bits, for each row
 * format (FP8 with a BF16 or F32 tail, plain floats), head sizes on and
 * off the vector widths, any number of rows and heads (past one tile and
 * one block of rows, where rows are decoded into cache once for all the
 * heads), NaN codes, and scales at the edges of the quick decoding (2^8
 * times the scale finite). */
enum { KV_ROWS = 71, KV_HEADS = 11, KV_MAXDIM = 512 };

/* Column k of a stored row, decoded as the definition says. */
static float kv_decoded(const v4_kv_format *f, const uint8_t *row, int k)
{
    if (k < f->fp8)
        return v4_e4m3_table[row[k]] * v4_e8m0_to_f32(row[f->fp8 + k / V4_KV_FP8_BLOCK]);
    const uint8_t *tail = v4_kv_tail(f, row);
    k -= f->fp8;
    if (f->tail_bf16) return v4_bf16_to_f32((uint16_t)(tail[2 * k] | tail[2 * k + 1] << 8));
    float v;
    memcpy(&v, tail + 4 * k, sizeof v);
    return v;
}

static int same_value(float got, float want)
{
    return memcmp(&got, &want, sizeof got) == 0 || (isnan(got) && isnan(want));
}

/* Random stored rows of format f: row s gets NaN codes when s % 7 == 3,
 * and block scales from `scales` in turn (the rest near 2^0). */
static void kv_fill(const v4_kv_format *f, uint8_t *rows, size_t rb, const uint8_t *scales,
                    int n_sc)
{
    for (int s = 0; s < KV_ROWS; s++) {
        uint8_t *row = rows + (size_t)s * rb;
        for (int k = 0; k < f->fp8; k++)
            row[k] = (uint8_t)(next_random() % 0x7F) | (next_random() & 0x80);
        if (s % 7 == 3 && f->fp8) row[next_random() % (uint32_t)f->fp8] |= 0x7F;
        for (int b = 0; b < f->fp8 / V4_KV_FP8_BLOCK; b++)
            row[f->fp8 + b] =
                s % 5 == 1 ? scales[(s + b) % n_sc] : (uint8_t)(122 + next_random() % 10);
        uint8_t *tail = (uint8_t *)v4_kv_tail(f, row);
        for (int k = 0; k < f->tail; k++) {
            float v = (float)((int)(next_random() % 20001) - 10000) / 997.0f;
            if (f->tail_bf16) {
                uint16_t h = v4_f32_to_bf16(v);
                tail[2 * k] = (uint8_t)h, tail[2 * k + 1] = (uint8_t)(h >> 8);
            } else {
                memcpy(tail + 4 * k, &v, sizeof v);
            }
        }
    }
}

static void test_fast_attention(void)
{
    static const v4_kv_format formats[] = {
        {64, 64, 1}, {448, 64, 1}, {128, 16, 0}, {64, 48, 1}, {192, 32, 0}, {0, 208, 0}, {0, 16, 0},
    };
    static const uint8_t scales[] = {0, 1, 100, 127, 140, 246, 247, 254, 255};
    static const char *const names[] = {"scalar", "avx2", "avx512"};
    static float q[KV_HEADS][KV_MAXDIM], p[KV_HEADS][KV_ROWS], dec[KV_ROWS][KV_MAXDIM];
    static float z[KV_HEADS][KV_ROWS], o[KV_HEADS][KV_MAXDIM];
    for (int h = 0; h < KV_HEADS; h++) {
        for (int k = 0; k < KV_MAXDIM; k++)
            q[h][k] = (float)((int)(next_random() % 20001) - 10000) / 1009.0f;
        for (int s = 0; s < KV_ROWS; s++) p[h][s] = (float)(next_random() % 10007) / 10007.0f;
    }
    for (size_t fi = 0; fi < sizeof formats / sizeof formats[0]; fi++) {
        const v4_kv_format *f = &formats[fi];
        int hd = f->fp8 + f->tail;
        size_t rb = (size_t)(f->fp8 + f->fp8 / V4_KV_FP8_BLOCK + f->tail * (f->tail_bf16 ? 2 : 4));
        uint8_t *data = malloc(KV_ROWS * rb);
        const uint8_t *rows[KV_ROWS];
        kv_fill(f, data, rb, scales, (int)sizeof scales);
        for (int s = 0; s < KV_ROWS; s++) {
            rows[s] = data + (size_t)s * rb;
            for (int k = 0; k < hd; k++) dec[s][k] = kv_decoded(f, rows[s], k);
        }
        for (int i = 0; i < 3; i++) {
            const v4_fast_kernels *k = v4_fast_kernels_named(names[i]);
            if (!k) continue;
            for (int nh = 1; nh <= KV_HEADS; nh += 5) {
                float packed[KV_HEADS * KV_MAXDIM]; /* heads hd apart */
                for (int h = 0; h < nh; h++)
                    memcpy(packed + h * hd, q[h], (size_t)hd * sizeof(float));
                v4_fast_scores(k, f, rows, KV_ROWS, packed, nh, &z[0][0], KV_ROWS);
                /* P.V in two slices of columns, as a decode step splits it */
                int cut = hd > 32 ? 32 : hd;
                v4_fast_values(k, f, rows, KV_ROWS, &p[0][0], KV_ROWS, nh, cut, hd, &o[0][0],
                               KV_MAXDIM);
                v4_fast_values(k, f, rows, KV_ROWS, &p[0][0], KV_ROWS, nh, 0, cut, &o[0][0],
                               KV_MAXDIM);
                int bad_z = 0, bad_o = 0;
                for (int h = 0; h < nh; h++) {
                    for (int s = 0; s < KV_ROWS; s++) {
                        float lanes[V4_FAST_LANES] = {0};
                        for (int j = 0; j < hd; j++)
                            lanes[j % 16] = fmaf(dec[s][j], q[h][j], lanes[j % 16]);
                        bad_z += !same_value(z[h][s], v4_fast_reduce(lanes));
                    }
                    for (int j = 0; j < hd; j++) {
                        float want = 0;
                        for (int s = 0; s < KV_ROWS; s++) want = fmaf(p[h][s], dec[s][j], want);
                        bad_o += !same_value(o[h][j], want);
                    }
                }
                CHECKF(bad_z == 0, "%s scores, rows of %d FP8 + %d %s, %d heads: %d differ",
                       names[i], f->fp8, f->tail, f->tail_bf16 ? "BF16" : "F32", nh, bad_z);
                CHECKF(bad_o == 0, "%s weighted sums, rows of %d FP8 + %d %s, %d heads: %d differ",
                       names[i], f->fp8, f->tail, f->tail_bf16 ? "BF16" : "F32", nh, bad_o);
            }
        }
        free(data);
    }
}

int main(void)
{
    tome_error err = {0};
    if (v4_pool_new(2, v4_kernel_scratch_bytes(V4_MAX_COLS), &pool, &err) != 0) {
        fprintf(stderr, "test_kernels: %s\n", err.msg);
        return 1;
    }
    test_quant();
    test_format(V4_F8_E4M3);
    test_format(V4_I8);
    test_format(V4_BF16);
    test_fast(V4_F8_E4M3);
    test_fast(V4_I8);
    test_fast(V4_BF16);
    test_fast_nan();
    test_fast_fp8_scales();
    test_index_scores();
    test_tiles();
    test_refmath();
    test_exp_lanes();
    test_fast_attention();
    v4_pool_free(pool);
    return check_finish();
}
