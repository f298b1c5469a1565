/* engine/kernels/: weight decoding and matmul against
 * values computed here from the formats' definitions, and the order
 * invariance the engine relies on (a row's result does not depend on the
 * batch it is computed in); the fast kernels of every instruction set this
 * CPU has against their summation order computed here, bit for bit. */
#include "engine/internal.h"
#include "engine/kernels/fast.h"
#include "engine/kernels/indexer.h"
#include "tests/check.h"
#include "tests/kernel_cases.h"

#include <math.h>

/* The threads (and their scratch) every product here runs on, as a model's
 * would: two threads, rows up to V4_MAX_COLS wide. */
static v4_pool *pool;

/* w's values decoded by definition into ref. */
static void make_weight_values(const v4_weight *w, float *ref)
{
    int64_t rows = w->rows, cols = w->cols, scols = w->scale_stride;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float v;
            if (w->dtype == V4_F8_E4M3 && (w->data[r * cols + c] & 0x7F) == 0x7F)
                v = NAN; /* e4m3 has no infinities; S.1111.111 is NaN */
            else if (w->dtype == V4_F8_E4M3)
                v = e4m3_by_definition(w->data[r * cols + c]) *
                    ldexpf(1.0f, w->scale[(r / 128) * scols + c / 128] - 127);
            else if (w->dtype == V4_I8) {
                uint8_t b = w->data[(r * cols + c) / 2];
                v = e2m1_by_definition(c & 1 ? b >> 4 : b & 15) *
                    ldexpf(1.0f, w->scale[r * scols + c / 32] - 127);
            } else {
                uint32_t bits =
                    (uint32_t)(w->data[2 * (r * cols + c)] | w->data[2 * (r * cols + c) + 1] << 8)
                    << 16;
                memcpy(&v, &bits, 4);
            }
            ref[r * cols + c] = v;
        }
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
    make_weight_values(&w, ref);
    return w;
}

/* w's panels (v4_panels_attach), malloc'd into *panels, or w unchanged
 * where the CPU has no panel kernels. */
static v4_weight with_panels(v4_weight w, uint8_t **panels)
{
    size_t bytes = v4_panels_bytes(&w);
    *panels = bytes ? malloc(bytes) : NULL;
    if (*panels) v4_panels_attach(&w, *panels);
    return w;
}

/* Shapes that leave the exact kernels' tiles part full: 264 rows (the
 * AVX-512 prefill tile takes 64 at a time), 7 tokens (4 and 6 at a time),
 * 640 columns (over one 512-column run of that tile). */
static void test_format(v4_dtype t)
{
    int rows = 264, cols = 640, n = 7;
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
    /* decode and prefill from panels: the same sums, bit for bit */
    uint8_t *copy;
    v4_weight wp = with_panels(w, &copy);
    int moved = 0;
    for (int t2 = 0; t2 < n; t2++) {
        v4_matmul(&wp, x + (size_t)t2 * cols, 1, y1, rows);
        for (int r = 0; r < rows; r++) moved += y1[r] != y[(size_t)t2 * rows + r];
    }
    float *yp = malloc((size_t)n * rows * sizeof *yp);
    v4_matmul(&wp, x, n, yp, rows);
    for (int i = 0; i < n * rows; i++) moved += yp[i] != y[i];
    free(yp);
    CHECKF(moved == 0, "%s: %d sums from panels differ", v4_dtype_name(t), moved);
    free(copy);
    free(data);
    free(scale);
    free(ref);
    free(row);
    free(x);
    free(y);
    free(y1);
}

/* A weight over caller-owned codes and scales, run on the test's pool. */
static v4_weight scaled_weight(v4_dtype t, int64_t rows, int64_t cols, const uint8_t *data,
                               const uint8_t *scale, int64_t scale_stride)
{
    return (v4_weight){.dtype = t,
                       .rows = rows,
                       .cols = cols,
                       .data = data,
                       .scale = scale,
                       .scale_stride = scale_stride,
                       .pool = pool};
}

/* fast.h's order, written from its definition: 16 lanes of fused
 * multiply-adds over k = l, l + 16, ..., or for rows a multiple of 32
 * wide (the pair order) over k = c + 2l + 1, then c + 2l, for each 32
 * columns c; then the fixed tree. */
static float fast_order(const float *w, const float *x, int cols)
{
    float lane[16] = {0};
    for (int k = 0; k < cols; k++) {
        int c = k / 32 * 32, j = k % 32, at = j < 16 ? c + 2 * j + 1 : c + 2 * (j - 16);
        if (cols % 32 == 0)
            lane[j % 16] = fmaf(w[at], x[at], lane[j % 16]);
        else
            lane[k % 16] = fmaf(w[k], x[k], lane[k % 16]);
    }
    float s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = lane[i] + lane[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/* Every fast kernel this CPU runs gives, for every token count (the decode
 * path for 1 and 2, register tiles and column blocks beyond), exactly the
 * order's result, and stays close to the exact sum: for rows `cols` wide
 * (the pair order over whole FP8 blocks, over a short last block, and the
 * plain order where cols is not a multiple of 32). */
static void test_fast(v4_dtype t, int cols)
{
    int rows = 264, n = 100;
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
            CHECKF(bad == 0,
                   "%s %s, %d columns, %d tokens a call: %d of %d results differ from "
                   "the order",
                   isas[i], v4_dtype_name(t), cols, counts[c], bad, n * rows);
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

/* v4_matmul_set gives each product's v4_matmul bits, whatever the mix of
 * formats, widths, row counts (multiples of a task's rows or not) and
 * token counts, over more products than one region takes, and with a
 * product on the exact kernels among them. */
static void test_matmul_set(void)
{
    enum { COUNT = V4_FAST_SET + 7 };
    static const v4_dtype types[] = {V4_F8_E4M3, V4_I8, V4_BF16};
    static const int rows_of[] = {264, 100, 40, 1000}, cols_of[] = {384, 256}, n_of[] = {1, 2, 5};
    v4_weight w[COUNT];
    v4_product set[COUNT];
    uint8_t *data[COUNT], *scale[COUNT];
    float *x[COUNT], *y[COUNT], *want[COUNT];
    for (int i = 0; i < COUNT; i++) {
        int rows = rows_of[i % 4], cols = cols_of[i % 2], n = n_of[i % 3];
        float *ref = malloc((size_t)rows * cols * sizeof *ref);
        w[i] = make_weight(types[i % 3], rows, cols, &data[i], &scale[i], ref);
        free(ref);
        w[i].fast = 1;
        x[i] = malloc((size_t)n * cols * sizeof *x[i]);
        for (int e = 0; e < n * cols; e++)
            x[i][e] = (float)((int)(next_random() % 2001) - 1000) / 999.0f;
        y[i] = calloc((size_t)n * (rows + 3), sizeof *y[i]);
        want[i] = calloc((size_t)n * (rows + 3), sizeof *want[i]);
        set[i] = (v4_product){&w[i], x[i], n, y[i], rows + 3};
    }
    for (int exact = 0; exact < 2; exact++) {
        w[5].fast = !exact;
        for (int i = 0; i < COUNT; i++) v4_matmul(&w[i], x[i], set[i].n, want[i], set[i].ystride);
        v4_matmul_set(set, COUNT);
        int bad = 0;
        for (int i = 0; i < COUNT; i++)
            bad += memcmp(y[i], want[i], (size_t)set[i].n * set[i].ystride * sizeof(float)) != 0;
        CHECKF(bad == 0, "v4_matmul_set%s: %d of %d products differ from v4_matmul's",
               exact ? " with an exact product" : "", bad, COUNT);
    }
    for (int i = 0; i < COUNT; i++) {
        free(data[i]);
        free(scale[i]);
        free(x[i]);
        free(y[i]);
        free(want[i]);
    }
}

/* Decode's FP8 short path folds each block's factor (2^120 times its
 * scale) into x; where that is not exact (x so small that x * factor
 * underflows and loses bits, or so large that it overflows) the multiply
 * path must take over, so every ISA still gives the scalar table's bits. */
static void test_fast_fp8_scales(void)
{
    enum { R = 8, C = 256 };
    static uint8_t data[R * C];
    uint8_t scale[2] = {2, 134}; /* factors 2^-5 and 2^127 for the two column blocks */
    for (int i = 0; i < R * C; i++) data[i] = (uint8_t)(next_random() % 0x7E) | (i & 0x80);
    v4_weight w = scaled_weight(V4_F8_E4M3, R, C, data, scale, 2);
    static float x[C], want[R], got[R];
    for (int k = 0; k < C; k++) /* 1.2345e-37 has low bits a factor of 2^-5 drops */
        x[k] = k < 128 ? (k % 3 ? 1.5f : 1.2345e-37f) : (k % 3 ? 1.5f : 1e30f);
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

/* Whether a[i] and b[i] have the same bits or are both NaN (NaN's sign
 * and payload are not part of the order), for i < n. */
static int same_or_both_nan(const float *a, const float *b, int n)
{
    for (int i = 0; i < n; i++)
        if (!(isnan(a[i]) && isnan(b[i])) && memcmp(&a[i], &b[i], sizeof a[i]) != 0) return 0;
    return 1;
}

/* The value of weight (r, c) under the given codes and scales, by
 * definition (NaN for NaN codes and E8M0's NaN scale). */
static float value_by_definition(v4_dtype t, const uint8_t *data, const uint8_t *scale, int C,
                                 int SC, int r, int c)
{
    if (t == V4_F8_E4M3) {
        uint8_t b = data[r * C + c], e = scale[(r / 128) * SC + c / 128];
        return (b & 0x7F) == 0x7F || e == 0xFF ? NAN
                                               : e4m3_by_definition(b) * ldexpf(1.0f, e - 127);
    }
    uint8_t b = data[(r * C + c) / 2], e = scale[r * SC + c / 32];
    return e == 0xFF ? NAN : e2m1_by_definition(c & 1 ? b >> 4 : b & 15) * ldexpf(1.0f, e - 127);
}

/* The exact kernels' decode product over FP8 and FP4 rows under every E8M0
 * code, from the rows and from their panels: each row's in-order sum of
 * the weights by definition times x, bit for bit (NaN for NaN).  FP8 rows
 * span two whole 128-row blocks of scales and part of a third (and of a
 * panel), the inputs' column blocks run from 2^-126 to 2^20 so that
 * folding a scale into them is inexact in some (underflow, overflow), and
 * two blocks hold NaN codes: every way the AVX2 kernels can take a block. */
static void test_exact_scales(v4_dtype t)
{
    enum { R = 277, C = 512 };
    int fp8 = t == V4_F8_E4M3, SC = fp8 ? C / 128 : C / 32, SR = fp8 ? (R + 127) / 128 : R;
    size_t bytes = fp8 ? (size_t)R * C : (size_t)R * C / 2;
    uint8_t *data = malloc(bytes), *scale = malloc((size_t)SR * SC);
    enum { T = 3 }; /* prefill's tokens: x, x / 8, -x */
    float *x = malloc(T * C * sizeof *x), *y = malloc(T * R * sizeof *y);
    for (size_t i = 0; i < bytes; i++) {
        uint8_t b = (uint8_t)next_random();
        data[i] = fp8 && (b & 0x7F) == 0x7F ? b & 0xFE : b;
    }
    if (fp8) data[5 * C + 130] = 0x7F, data[200 * C + 300] = 0xFF;
    for (int c = 0; c < C; c++) {
        x[c] = ldexpf((float)((int)(next_random() % 2001) - 1000), -136 + 48 * (c / 128));
        x[C + c] = x[c] / 8;
        x[2 * C + c] = -x[c];
    }
    for (int panels = 0; panels < 2; panels++) {
        int bad = 0, bad_prefill = 0;
        for (int e0 = 0; e0 < 256; e0++) {
            for (int i = 0; i < SR * SC; i++) scale[i] = (uint8_t)(e0 + 37 * i);
            uint8_t *copy = NULL;
            v4_weight w = scaled_weight(t, R, C, data, scale, SC);
            if (panels) w = with_panels(w, &copy);
            for (int n = 1; n <= T; n += T - 1) {
                v4_matmul(&w, x, n, y, R);
                for (int tok = 0; tok < n; tok++)
                    for (int r = 0; r < R; r++) {
                        float seq = 0;
                        for (int c = 0; c < C; c++)
                            seq +=
                                value_by_definition(t, data, scale, C, SC, r, c) * x[tok * C + c];
                        int differs = !same_or_both_nan(&seq, &y[tok * R + r], 1);
                        bad += n == 1 && differs;
                        bad_prefill += n > 1 && differs;
                    }
            }
            free(copy);
        }
        CHECKF(bad == 0, "exact %s decode%s: %d rows differ from the in-order sum under some scale",
               v4_dtype_name(t), panels ? " from panels" : "", bad);
        CHECKF(bad_prefill == 0,
               "exact %s prefill%s: %d rows differ from the in-order sum under some scale",
               v4_dtype_name(t), panels ? " from panels" : "", bad_prefill);
    }
    free(data);
    free(scale);
    free(x);
    free(y);
}

/* FP4 decode in the frame its sums can take (exact.c: the inputs scaled
 * once, each row's sum rescaled where its scale changes), across the edges
 * of the conditions that allow it: inputs spread over 0 to 140 binades
 * (zeros of both signs, subnormals at the widest), rows whose scale codes
 * spread by up to 120 around bases from 0 to 254 (NaN's 255 at the top),
 * so that some rows stay in the frame, some never enter it and some leave
 * it midway.  Every row is the in-order sum of its weights by definition
 * times x, bit for bit. */
static void test_fp4_frame(void)
{
    enum { R = 40, C = 512, SC = C / 32 }; /* a pass of four panels, one of one */
    static const int spreads[] = {0, 20, 60, 124, 130, 140};
    static const int bases[] = {0, 30, 120, 127, 230, 250};
    static const int widths[] = {0, 3, 60, 107, 108, 120};
    uint8_t *data = malloc((size_t)R * C / 2), *scale = malloc((size_t)R * SC);
    float *x = malloc(C * sizeof *x), y[R];
    int bad = 0;
    for (int i = 0; i < R * C / 2; i++) data[i] = (uint8_t)next_random();
    for (size_t si = 0; si < sizeof spreads / sizeof *spreads; si++)
        for (size_t bi = 0; bi < sizeof bases / sizeof *bases; bi++)
            for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
                int spread = spreads[si];
                for (int k = 0; k < C; k++) {
                    float m = 1.0f + (float)(next_random() % (1u << 23)) * 0x1p-23f;
                    int sign = next_random() % 2 ? -1 : 1;
                    x[k] = k % 17 == 0 ? 0.0f
                           : k % 29 == 0
                               ? -0.0f
                               : sign * ldexpf(m, 10 - (int)(next_random() % (spread + 1)));
                }
                for (int i = 0; i < R * SC; i++) {
                    int e = bases[bi] + (int)(next_random() % (widths[wi] + 1));
                    scale[i] = (uint8_t)(e > 255 ? 255 : e);
                }
                uint8_t *copy;
                v4_weight w = with_panels(scaled_weight(V4_I8, R, C, data, scale, SC), &copy);
                v4_matmul(&w, x, 1, y, R);
                for (int r = 0; r < R; r++) {
                    float seq = 0;
                    for (int c = 0; c < C; c++)
                        seq += value_by_definition(V4_I8, data, scale, C, SC, r, c) * x[c];
                    bad += !same_or_both_nan(&seq, &y[r], 1);
                }
                free(copy);
            }
    CHECKF(bad == 0, "FP4 decode in a frame: %d rows differ from the in-order sum", bad);
    free(data);
    free(scale);
    free(x);
}

/* The frame's bounds where they are tight.  Inputs: two of
 * (1 + 2^-23) 2^-20, the least (Lx = -20), one 2^4 (Hx = 4) times code 0,
 * so a frame has A = 121, products normal in both from code e_lo = 22,
 * and a change of frame exact while a row's codes spread by at most
 * Lx + A - 1 = 100.  Row 0 weighs the least inputs by 0.5 under codes
 * (block 0, block 1): at 21 the reference rounds each product to a
 * subnormal (two of them sum to 2^-126, not (1 + 2^-23) 2^-126); with one
 * product under (30, 131) a move to block 1's frame would drop its last
 * bit.  One short of each, the frame holds: 22 and (30, 130).  Four
 * panels of rows (the others' weights zeros), so that where the exact
 * kernels sum all four in 512-bit registers, that loop meets the edges. */
static void test_fp4_frame_edges(void)
{
    enum { R = 32, C = 64, SC = C / 32 };
    static const struct {
        uint8_t e0, e1, products;
    } cases[] = {{21, 21, 2}, {22, 22, 2}, {30, 131, 1}, {30, 130, 1}};
    uint8_t data[R * C / 2] = {0}, scale[R * SC];
    float x[C] = {0}, y[R];
    x[0] = x[1] = ldexpf(1.0f + 0x1p-23f, -20);
    x[2] = 16.0f;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        data[0] = cases[i].products == 2 ? 0x11 : 0x01; /* code 1 is 0.5 */
        memset(scale, 127, sizeof scale);
        scale[0] = cases[i].e0;
        scale[1] = cases[i].e1;
        uint8_t *copy;
        v4_weight w = with_panels(scaled_weight(V4_I8, R, C, data, scale, SC), &copy);
        v4_matmul(&w, x, 1, y, R);
        float seq = 0;
        for (int c = 0; c < C; c++)
            seq += value_by_definition(V4_I8, data, scale, C, SC, 0, c) * x[c];
        CHECKF(same_or_both_nan(&seq, &y[0], 1), "FP4 codes (%d, %d): %a, in order %a", cases[i].e0,
               cases[i].e1, y[0], seq);
        free(copy);
    }
}

/* A slice of a weight's rows (v4_weight_rows: wo_a's groups) computes what
 * those rows of the whole weight do, from the rows and from panels, in
 * decode and prefill; an FP8 NaN code in the last slice makes its row NaN
 * there too (the slice finds its own blocks' NaN marks). */
static void test_weight_rows(v4_dtype t)
{
    enum { R = 384, C = 256, N = 3 };
    uint8_t *data, *scale, *copy;
    float *ref = malloc((size_t)R * C * sizeof *ref);
    float x[N * C], whole[N * R], part[N * 128];
    v4_weight w = make_weight(t, R, C, &data, &scale, ref);
    if (t == V4_F8_E4M3) data[300 * C + 17] = 0x7F;
    for (int i = 0; i < N * C; i++) x[i] = (float)((int)(next_random() % 2001) - 1000) / 1000.0f;
    v4_matmul(&w, x, N, whole, R);
    CHECKF(t != V4_F8_E4M3 || isnan(whole[300]), "%s: a NaN code gives a NaN row",
           v4_dtype_name(t));
    v4_weight wp = with_panels(w, &copy);
    int bad = 0;
    for (int panels = 0; panels < 2; panels++)
        for (int first = 128; first < R; first += 128) {
            v4_weight s = v4_weight_rows(panels ? &wp : &w, first, 128);
            for (int n = 1; n <= N; n += N - 1) {
                v4_matmul(&s, x, n, part, 128);
                for (int k = 0; k < n; k++)
                    bad += !same_or_both_nan(part + k * 128, whole + k * R + first, 128);
            }
        }
    CHECKF(bad == 0, "%s: %d slices' token rows differ from the whole's", v4_dtype_name(t), bad);
    free(data);
    free(scale);
    free(ref);
    free(copy);
}

/* Panels hold every row's units in place (a weight read back from them
 * is the weight), and rows past the last (a part-full panel) are zeros;
 * then, block by block, FP8 panels say whether a block holds a NaN code
 * and FP4 panels give their rows' scales (1.0 past the last row). */
static void test_panels_layout(v4_dtype t)
{
    enum { R = 13, C = 192 };
    uint8_t *data, *scale, *copy;
    float *ref = malloc((size_t)R * C * sizeof *ref);
    v4_weight w = make_weight(t, R, C, &data, &scale, ref);
    if (t == V4_F8_E4M3) data[9 * C + 150] = 0xFF; /* panel 1, second block */
    w = with_panels(w, &copy);
    size_t row_bytes = v4_dtype_row_bytes(t, C), unit = t == V4_BF16 ? 4 : 1;
    size_t blocks = t == V4_I8 ? C / 32 : t == V4_F8_E4M3 ? 2 : 0, extra = t == V4_I8 ? 8 : 1;
    int bad = 0;
    if (copy) {
        for (int r = 0; r < 16; r++)
            for (size_t b = 0; b < row_bytes; b++) {
                uint8_t want = r < R ? data[r * row_bytes + b] : 0;
                size_t at =
                    (size_t)(r / 8) * 8 * row_bytes + (b / unit * 8 + r % 8) * unit + b % unit;
                bad += copy[at] != want;
            }
        const uint8_t *extras = copy + 2 * 8 * row_bytes;
        for (int r = 0; r < 16 && t == V4_I8; r++)
            for (size_t b = 0; b < blocks; b++) {
                uint8_t want = r < R ? scale[r * blocks + b] : 127;
                bad += extras[((size_t)(r / 8) * blocks + b) * 8 + r % 8] != want;
            }
        if (t == V4_F8_E4M3)
            bad += extras[0] != 0 || extras[1] != 0 || extras[2] != 0 || extras[3] != 1;
        CHECKF(v4_panels_bytes(&w) == 2 * (8 * row_bytes + blocks * extra),
               "%s: panels of 13 rows take two", v4_dtype_name(t));
    }
    CHECKF(bad == 0, "%s: %d panel bytes out of place", v4_dtype_name(t), bad);
    free(data);
    free(scale);
    free(ref);
    free(copy);
}

/* The BF16 byte tables of fast.h against the F32 tables they are made
 * from: for every scale and code the two bytes, as the top half of a
 * float, are the value itself (its bottom half zero, NaN included: AVX2's
 * FP4 and MXFP4 kernels look up every scale there). */
static void test_fast_bf16_tables(void)
{
    const float(*f32[2])[16] = {v4_fast_e2m1_scaled(), v4_fast_mxfp4_scaled()};
    const uint8_t(*bf16[2])[32] = {v4_fast_e2m1_bf16(), v4_fast_mxfp4_bf16()};
    for (int t = 0; t < 2; t++) {
        int bad = 0;
        for (int e = 0; e < 256; e++)
            for (int i = 0; i < 16; i++) {
                uint32_t u = (uint32_t)bf16[t][e][16 + i] << 24 | (uint32_t)bf16[t][e][i] << 16;
                bad += memcmp(&u, &f32[t][e][i], sizeof u) != 0;
            }
        CHECKF(bad == 0, "%s BF16 table: %d entries not the F32 table's values",
               t ? "MXFP4" : "e2m1", bad);
    }
}

/* Every E8M0 code, as the scale of FP8 and FP4 blocks: the decode kernels'
 * short paths (which look the scaled values up in tables, or fold the
 * scale into the weights' exponent range or into x and leave the large
 * codes, the subnormal-product codes and NaN's 0xFF to the general path)
 * give the scalar table's bits on every ISA, for
 * one token and for a prefill chunk, with subnormal weight codes
 * included. */
static void test_fast_every_scale(v4_dtype t)
{
    enum { R = 128, C = 1024, N = 5 };
    int fp4 = t == V4_I8;
    int scols = fp4 ? C / 32 : C / 128, srows = fp4 ? R : 1;
    static uint8_t data[R * C], scale[R * (C / 32)];
    for (int i = 0; i < R * C; i++) {
        uint8_t b = (uint8_t)next_random();
        if (i % 5 == 0) b &= 0x87; /* zero exponent: subnormal (and zero) codes */
        data[i] = !fp4 && (b & 0x7F) == 0x7F ? b & 0xFE : b;
    }
    static float x[N * C], want[N * R], got[N * R];
    for (int k = 0; k < N * C; k++) { /* blocks of x from about 2^-24 to 2^22 */
        int low = -34 + 12 * ((k / 128 + k / C) % 4);
        x[k] = ldexpf((float)((int)(next_random() % 2001) - 1000), low + (int)(next_random() % 5));
    }
    static const char *const names[] = {"avx2", "avx512"};
    const v4_fast_kernels *ref = v4_fast_kernels_named("scalar");
    int bad[2] = {0, 0};
    for (int e0 = 0; e0 < 256; e0++) {
        for (int i = 0; i < srows * scols; i++) scale[i] = (uint8_t)(e0 + i % 3);
        v4_weight w = scaled_weight(t, R, C, data, scale, scols);
        for (int n = 1; n <= N; n += N - 1) {
            v4_fast_matmul(ref, &w, x, C, n, want, R);
            for (int i = 0; i < 2; i++) {
                const v4_fast_kernels *k = v4_fast_kernels_named(names[i]);
                if (!k) continue;
                v4_fast_matmul(k, &w, x, C, n, got, R);
                bad[i] += !same_or_both_nan(got, want, n * R);
            }
        }
    }
    for (int i = 0; i < 2; i++)
        CHECKF(bad[i] == 0, "%s: %s weights differ from the scalar kernels under %d scale codes",
               names[i], fp4 ? "FP4" : "FP8", bad[i]);
}

/* x rows as official numerics quantise them: e4m3 values times a power
 * of two per 128 columns, 2^lo to 2^(lo + spread - 1). */
static void quantised_rows(float *x, int n, int cols, int lo, int spread)
{
    for (int t = 0; t < n; t++)
        for (int c0 = 0; c0 < cols; c0 += 128) {
            int e = lo + (int)(next_random() % (unsigned)spread);
            for (int c = c0; c < c0 + 128; c++) {
                uint8_t b = (uint8_t)next_random();
                if ((b & 0x7F) == 0x7F) b &= 0xFE;
                x[(size_t)t * cols + c] = e4m3_by_definition(b) * ldexpf(1.0f, e);
            }
        }
}

/* Official numerics' products (fast.h's pair order): every ISA's
 * v4_fast_matmul_pairs (vdpbf16ps where the CPU has AVX512-BF16, the fast
 * order over permuted columns elsewhere) gives v4_pairs_dot's bits over
 * the decoded rows, for one, two and seven tokens; with ordinary scales,
 * and with weights and inputs small enough that the flushing of subnormals
 * decides some sums.  v4_pairs_dot itself is the exact sum where every
 * partial sum is exact (small integers). */
static void test_pairs(v4_dtype t)
{
    enum { R = 76, C = 512, N = 7, XS = C + 32 };
    static float ref[R * C], x[N * C], wide[N * XS], want[N * R], got[N * R];
    static const char *const names[] = {"scalar", "avx2", "avx512"};
    /* case 0: ordinary scales; 1: weights at 2^-127 .. 2^-118 times
     * inputs up to 2^24, so products straddle 2^-126 and subnormal weights
     * meet large inputs; 2: inputs at 2^-140 .. 2^-125 times ordinary
     * weights. */
    for (int tiny = 0; tiny < 3; tiny++) {
        uint8_t *data, *scale;
        v4_weight w = make_weight(t, R, C, &data, &scale, ref);
        if (tiny == 1) {
            int blocks = t == V4_I8 ? R * (C / 32) : ((R + 127) / 128) * (C / 128);
            for (int i = 0; i < blocks; i++) scale[i] = (uint8_t)(next_random() % 10);
        } else if (t == V4_F8_E4M3) { /* the decode kernels' general FP8 path */
            data[5 * C + 130] = 0x7F; /* a NaN code */
            scale[3] = 135;           /* a scale just past the short paths' range */
        }
        make_weight_values(&w, ref);
        /* ordinary inputs within a factor of 4, so that no block's sums
         * drown another's */
        quantised_rows(x, N, C, tiny == 0 ? -10 : tiny == 1 ? 0 : -140, tiny == 0 ? 3 : 16);
        /* the same rows XS apart, NaN between them (a column slice) */
        for (int i = 0; i < N * XS; i++) wide[i] = NAN;
        for (int tk = 0; tk < N; tk++) memcpy(wide + tk * XS, x + tk * C, C * sizeof *x);
        for (int n = 1; n <= N; n += n < 2 ? 1 : N - 2) {
            for (int tk = 0; tk < n; tk++)
                for (int r = 0; r < R; r++)
                    want[tk * R + r] = v4_pairs_dot(ref + (size_t)r * C, x + (size_t)tk * C, C);
            for (int i = 0; i < 3; i++) {
                const v4_fast_kernels *k = v4_fast_kernels_named(names[i]);
                if (!k) continue;
                for (int strided = 0; strided < 2; strided++) {
                    memset(got, 0, sizeof got);
                    v4_fast_matmul_pairs(k, &w, strided ? wide : x, strided ? XS : C, n, got, R,
                                         NULL);
                    CHECKF(same_or_both_nan(got, want, n * R),
                           "%s: %s pair-order products of %d token(s)%s%s differ from "
                           "v4_pairs_dot",
                           names[i], t == V4_I8 ? "FP4" : "FP8", n, tiny ? " (tiny scales)" : "",
                           strided ? " (strided inputs)" : "");
                }
            }
        }
        free(data);
        free(scale);
    }
    float a[64], b[64];
    double exact = 0;
    for (int i = 0; i < 64; i++) {
        a[i] = (float)((int)(next_random() % 41) - 20);
        b[i] = (float)((int)(next_random() % 41) - 20);
        exact += (double)a[i] * b[i];
    }
    CHECKF(v4_pairs_dot(a, b, 64) == (float)exact, "v4_pairs_dot of small integers is exact");
}

/* The kernels' call-free scale gives v4_e8m0_to_f32's bits for every
 * code, the subnormal 2^-127 and the NaN included. */
static void test_fast_scale(void)
{
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        float a = v4_fast_scale((uint8_t)e), b = v4_e8m0_to_f32((uint8_t)e);
        bad += memcmp(&a, &b, sizeof a) != 0;
    }
    CHECKF(bad == 0, "v4_fast_scale differs from v4_e8m0_to_f32 on %d codes", bad);
}

/* The FP8 NaN codes decode to NaN in every fast kernel, as in the exact
 * decoder (a damaged checkpoint must not turn into finite numbers): in a
 * narrow matrix, and in one NaN among full 128-column blocks, which the
 * decode kernels otherwise take a shorter path through. */
static void test_fast_nan(void)
{
    enum { R = 8, C = 512 };
    static uint8_t wide[R * C], wscale[1 * 4];
    for (int i = 0; i < R * C; i++) wide[i] = (uint8_t)(0x30 + i % 7);
    memset(wscale, 127, sizeof wscale);
    wide[5 * C + 300] = 0xFF;
    v4_weight ww = scaled_weight(V4_F8_E4M3, R, C, wide, wscale, 4);
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
    v4_weight w = scaled_weight(V4_F8_E4M3, 16, 16, data, scale, 1);
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

/* A model's FP8 weights carry marks of the 128 x 128 blocks found free of
 * NaN codes (v4_weight.fp8_clean), which let the decode kernels skip their
 * own check: with marks, every ISA gives the scalar kernels' results, the
 * first time (marks being set) and again (marks read), for one token and
 * for five; the block with a NaN code is marked so and its row stays NaN,
 * every other block is marked clean. */
static void test_fast_fp8_marks(void)
{
    enum { R = 256, C = 512, SC = C / 128, N = 5 };
    static uint8_t data[R * C], scale[2 * SC], marks[2 * SC];
    for (int i = 0; i < R * C; i++) data[i] = (uint8_t)(next_random() % 0x7E) | (i & 0x80);
    data[200 * C + 300] = 0x7F; /* row block 1, column block 2 */
    memset(scale, 120, sizeof scale);
    v4_weight w = scaled_weight(V4_F8_E4M3, R, C, data, scale, SC);
    static float x[N * C], want[N * R], got[N * R];
    for (int i = 0; i < N * C; i++) x[i] = (float)((int)(next_random() % 2001) - 1000) / 999.0f;
    v4_fast_matmul(v4_fast_kernels_named("scalar"), &w, x, C, N, want, R);
    CHECKF(isnan(want[200]) && !isnan(want[199]),
           "the NaN code's row is NaN in the scalar kernels");
    static const char *const names[] = {"avx2", "avx512"};
    for (int i = 0; i < 2; i++) {
        const v4_fast_kernels *k = v4_fast_kernels_named(names[i]);
        if (!k) continue;
        memset(marks, 0, sizeof marks);
        w.fp8_clean = marks;
        for (int pass = 0; pass < 2; pass++)
            for (int n = 1; n <= N; n += N - 1) {
                v4_fast_matmul(k, &w, x, C, n, got, R);
                CHECKF(same_or_both_nan(got, want, n * R), "%s, pass %d, %d tokens: marked FP8",
                       names[i], pass, n);
            }
        int wrong = 0;
        for (int b = 0; b < 2 * SC; b++) wrong += marks[b] != (b == SC + 2 ? 2 : 1);
        CHECKF(wrong == 0, "%s: %d blocks marked wrongly", names[i], wrong);
        w.fp8_clean = NULL;
    }
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

/* A float for the round-trip tests: random bits of every kind (NaNs,
 * infinities, subnormals, zeros of both signs) one time in four, else a
 * modest value of random sign and magnitude, some on e4m3 midpoints. */
static float awkward_float(void)
{
    uint32_t u = (uint32_t)next_random() << 8 ^ (uint32_t)next_random();
    float f;
    memcpy(&f, &u, sizeof f);
    switch (next_random() % 8) {
    case 0:
        return f;
    case 1:
        return (float)(int)(next_random() % 33 - 16) * 0x1p-12f; /* subnormal-code range */
    case 2:
        return (next_random() & 1 ? -1.0f : 1.0f) * (1.0f + (float)(next_random() % 16) / 16.0f);
    default:
        return ldexpf((float)((int)(next_random() % 20001) - 10000),
                      (int)(next_random() % 40) - 30);
    }
}

/* The vectorised round trips give the scalar loops' bits: the FP8 act
 * round trip without codes (SIMD where the CPU has AVX2) against the same
 * call with codes (always the scalar loop), blocks of 128 and 64 and a
 * short one; BF16 rounding against v4_f32_to_bf16, value by value. */
static void test_roundtrip_simd(void)
{
    enum { N = 128 * 64 };
    static float x[N], y[N];
    static uint8_t codes[N], scales[N / 8];
    int64_t bad = 0, bad_bf16 = 0;
    for (int round = 0; round < 20; round++) {
        int block = round % 3 == 0 ? 128 : round % 3 == 1 ? 64 : 24;
        for (int i = 0; i < N; i++) x[i] = y[i] = awkward_float();
        if (round == 5) x[7] = y[7] = INFINITY; /* a block whose scale is infinite */
        v4_fp8_roundtrip(x, N / block * block, block, NULL, NULL);
        v4_fp8_roundtrip(y, N / block * block, block, codes, scales);
        for (int i = 0; i < N; i++)
            bad += memcmp(&x[i], &y[i], sizeof x[i]) != 0 && !(isnan(x[i]) && isnan(y[i]));
        for (int i = 0; i < N; i++) y[i] = x[i] = awkward_float();
        v4_bf16_round(x, N - round); /* lengths with and without a tail */
        for (int i = 0; i < N - round; i++) {
            uint32_t want = (uint32_t)v4_f32_to_bf16(y[i]) << 16, got;
            memcpy(&got, &x[i], sizeof got);
            bad_bf16 += isnan(y[i]) ? !isnan(x[i]) : got != want;
        }
    }
    CHECKF(bad == 0, "%lld values differ between the FP8 round trip with and without codes",
           (long long)bad);
    CHECKF(bad_bf16 == 0, "%lld values rounded to BF16 wrongly", (long long)bad_bf16);
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

int main(void)
{
    tome_error err = {0};
    if (v4_pool_new(2, v4_kernel_scratch_bytes(V4_MAX_COLS), &pool, &err) != 0) {
        fprintf(stderr, "test_kernels: %s\n", err.msg);
        return 1;
    }
    test_quant();
    test_roundtrip_simd();
    test_format(V4_F8_E4M3);
    test_format(V4_I8);
    test_format(V4_BF16);
    for (int i = 0; i < 2; i++) {
        test_fast(V4_F8_E4M3, i ? 352 : 384);
        test_fast(V4_I8, i ? 352 : 384);
        test_fast(V4_BF16, i ? 352 : 384);
    }
    test_fast(V4_F8_E4M3, 336);
    test_fast(V4_BF16, 336);
    test_matmul_set();
    test_fast_scale();
    test_fast_nan();
    test_fast_fp8_marks();
    test_fast_fp8_scales();
    test_fast_bf16_tables();
    test_exact_scales(V4_F8_E4M3);
    test_exact_scales(V4_I8);
    test_fp4_frame();
    test_fp4_frame_edges();
    test_weight_rows(V4_F8_E4M3);
    test_weight_rows(V4_I8);
    test_weight_rows(V4_BF16);
    test_panels_layout(V4_F8_E4M3);
    test_panels_layout(V4_I8);
    test_panels_layout(V4_BF16);
    test_fast_every_scale(V4_F8_E4M3);
    test_fast_every_scale(V4_I8);
    test_pairs(V4_F8_E4M3);
    test_pairs(V4_I8);
    test_refmath();
    test_exp_lanes();
    v4_pool_free(pool);
    return check_finish();
}
