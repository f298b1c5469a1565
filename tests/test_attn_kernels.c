/* engine/kernels/: the attention kernels against values computed here
 * from the formats' definitions: the lightning indexer's scores straight
 * from FP4 codes (every ISA, with the exactness fallbacks), the exact
 * kernels' register tiles, and the fast kernels' scores and P.V over KV
 * rows where they are stored (FP8 codes with their scales and a BF16/F32
 * tail), bit for bit against their summation order. */
#include "engine/internal.h"
#include "engine/kernels/fast.h"
#include "engine/kernels/indexer.h"
#include "tests/check.h"
#include "tests/kernel_cases.h"

#include <math.h>
#include <string.h>

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

/* Each head of q alone (v4_index_query_head, weight 1), as official
 * numerics score them: its scores must be relu(q_h . key) bit for bit.
 * Returns the number that differ. */
static int head_view_mismatches(v4_index_score_fn fn, const v4_index_keys *ik,
                                const v4_index_query *q, const index_case *c)
{
    static const float one = 1.0f;
    int bad = 0;
    for (int h = 0; h < q->heads; h++) {
        v4_index_query qh = v4_index_query_head(q, h, &one);
        index_case ch = *c;
        ch.q = c->q + (size_t)h * c->dim; /* the fallback sees head 0 */
        float got[101];
        fn(ik, &qh, 0, c->n, got, case_dot, &ch);
        for (int64_t i = 0; i < c->n; i++) {
            float d = case_dot(c, i, h), want = d > 0 ? d : 0;
            bad += memcmp(&got[i], &want, sizeof want) != 0;
        }
    }
    return bad;
}

/* x rounded to a BF16 value, by the definition: to nearest, ties to even
 * (no NaN reaches here). */
static float bf16_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t low = u & 0xFFFF, r = u & 0xFFFF0000u;
    if (low > 0x8000 || (low == 0x8000 && (u & 0x10000))) r += 0x10000;
    memcpy(&x, &r, 4);
    return x;
}

/* Official queries' scores (indexer.h: each term and the sum rounded to
 * BF16), from fn itself and from fn a head at a time through
 * v4_index_score_by_heads, against want.  Returns how many differ. */
static int official_mismatches(v4_index_score_fn fn, const v4_index_keys *ik, v4_index_query *q,
                               index_case *c, const float *want)
{
    float got[101], by_heads[101];
    q->official = 1;
    fn(ik, q, 0, 48, got, case_dot, c);
    fn(ik, q, 48, c->n, got + 48, case_dot, c);
    v4_index_score_by_heads(fn, ik, q, 0, c->n, by_heads, case_dot, c);
    q->official = 0;
    int bad = 0;
    for (int64_t i = 0; i < c->n; i++)
        bad += memcmp(&got[i], &want[i], 4) != 0 || memcmp(&by_heads[i], &want[i], 4) != 0;
    return bad;
}

/* What check_index_scores draws: head_dim, heads (at most 6), the key and
 * query block exponents from [kbase, kbase + span) and [qbase, qbase +
 * span), key 77 with a NaN scale (nan), whether some pairs must take the
 * F32 way (fallbacks), and every code the largest magnitude (extreme: key
 * codes +6, query codes -6, so that every product is -144 and a block's
 * integer sum the most negative). */
typedef struct index_params {
    int dim, heads, kbase, qbase, span, nan, fallbacks, extreme;
} index_params;

#define MAX_INDEX_HEADS 6

/* A packed code byte: random, or two codes of magnitude 6 with the sign. */
static uint8_t case_code_byte(const index_params *p, int negative)
{
    return p->extreme ? (negative ? 0xFF : 0x77) : (uint8_t)next_random();
}

/* Random codes and scales as p says; the scores of every kernel must equal
 * the F32 computation bit for bit. */
static void check_index_scores(index_params p)
{
    int dim = p.dim;
    index_case c = {.dim = dim, .heads = p.heads, .n = 101};
    int nb = dim / 32, row = dim / 2 + nb;
    c.rows = malloc((size_t)c.n * row);
    c.keys = malloc((size_t)c.n * dim * sizeof(float));
    c.q = malloc((size_t)c.heads * dim * sizeof(float));
    uint8_t qpacked[MAX_INDEX_HEADS][64], qscales[MAX_INDEX_HEADS][4];
    for (int64_t i = 0; i < c.n; i++) {
        uint8_t *r = c.rows + (size_t)i * row;
        for (int b = 0; b < nb; b++) r[dim / 2 + b] = (uint8_t)(p.kbase + next_random() % p.span);
        if (p.nan && i == 77) r[dim / 2 + nb - 1] = 255;
        for (int j = 0; j < dim; j += 2) r[j / 2] = case_code_byte(&p, 0);
        for (int j = 0; j < dim; j++)
            c.keys[(size_t)i * dim + j] = e2m1_by_definition((r[j / 2] >> (4 * (j & 1))) & 15) *
                                          ldexpf(1.0f, r[dim / 2 + j / 32] - 127);
    }
    for (int h = 0; h < c.heads; h++) {
        for (int b = 0; b < nb; b++) qscales[h][b] = (uint8_t)(p.qbase + next_random() % p.span);
        for (int j = 0; j < dim; j += 2) qpacked[h][j / 2] = case_code_byte(&p, 1);
        for (int j = 0; j < dim; j++)
            c.q[h * dim + j] = e2m1_by_definition((qpacked[h][j / 2] >> (4 * (j & 1))) & 15) *
                               ldexpf(1.0f, qscales[h][j / 32] - 127);
    }
    /* weights with bits below BF16's, so that official's roundings show */
    float w[MAX_INDEX_HEADS] = {0.75f, -0.5f, 1.2578125f, 0.0625f, 2.5f, 0.3759765625f};
    float want[101], want_official[101];
    for (int64_t i = 0; i < c.n; i++) {
        float sc = 0, so = 0;
        for (int h = 0; h < c.heads; h++) {
            float d = case_dot(&c, i, h), r = d > 0 ? d : 0;
            sc += r * w[h];
            so += bf16_of(bf16_of(r) * w[h]);
        }
        want[i] = sc;
        want_official[i] = bf16_of(so);
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
        CHECKF(bad == 0,
               "index scores (dim %d, %d heads, exponents %d/%d+%d, kernel %d): %d of %lld differ",
               dim, c.heads, p.kbase, p.qbase, p.span, f, bad, (long long)c.n);
        CHECKF(p.fallbacks ? c.fallbacks > 0 : c.fallbacks == 0,
               "dim %d span %d kernel %d: %d pairs fell back", dim, p.span, f, c.fallbacks);
        bad = head_view_mismatches(fns[f], &ik, &q, &c);
        CHECKF(bad == 0, "one-head views (dim %d, kernel %d): %d scores differ", dim, f, bad);
        bad = official_mismatches(fns[f], &ik, &q, &c, want_official);
        CHECKF(bad == 0, "official scores (dim %d, %d heads, kernel %d): %d differ", dim, c.heads,
               f, bad);
    }
    v4_index_keys_free(&ik);
    free(qmem);
    free(c.rows);
    free(c.keys);
    free(c.q);
}

static void test_index_scores(void)
{
    /* exponents close: every pair from the codes */
    check_index_scores(
        (index_params){.dim = 64, .heads = 4, .kbase = 124, .qbase = 120, .span = 4});
    check_index_scores(
        (index_params){.dim = 128, .heads = 4, .kbase = 124, .qbase = 120, .span = 4});
    /* heads not a multiple of the kernels' four; one head alone */
    check_index_scores(
        (index_params){.dim = 128, .heads = 6, .kbase = 124, .qbase = 120, .span = 4});
    check_index_scores(
        (index_params){.dim = 64, .heads = 1, .kbase = 124, .qbase = 120, .span = 4});
    /* every product at its largest magnitude: the integer sums' bounds */
    check_index_scores((index_params){
        .dim = 128, .heads = 5, .kbase = 124, .qbase = 120, .span = 1, .extreme = 1});
    /* spread past 9: some pairs the F32 way */
    check_index_scores((index_params){
        .dim = 128, .heads = 4, .kbase = 124, .qbase = 120, .span = 12, .fallbacks = 1});
    /* a NaN scale */
    check_index_scores((index_params){
        .dim = 128, .heads = 4, .kbase = 124, .qbase = 120, .span = 4, .nan = 1, .fallbacks = 1});
    /* products near the least normal float, and near the largest allowed */
    check_index_scores(
        (index_params){.dim = 64, .heads = 4, .kbase = 63, .qbase = 64, .span = 4, .fallbacks = 1});
    check_index_scores((index_params){
        .dim = 64, .heads = 4, .kbase = 200, .qbase = 150, .span = 6, .fallbacks = 1});
    /* below it: all the F32 way */
    check_index_scores(
        (index_params){.dim = 64, .heads = 4, .kbase = 1, .qbase = 2, .span = 3, .fallbacks = 1});
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

/* Column k of a stored row, decoded as the definitions say: an e4m3 code
 * (S.1111.111 is NaN) times its block's E8M0 scale 2^(e - 127) (0xFF is
 * NaN), then the tail's BF16 (a float's high half) or F32 values. */
static float kv_decoded(const v4_kv_format *f, const uint8_t *row, int k)
{
    uint32_t bits;
    float v;
    if (k < f->fp8) {
        uint8_t c = row[k], e = row[f->fp8 + k / V4_KV_FP8_BLOCK];
        float code = (c & 0x7F) == 0x7F ? NAN : e4m3_by_definition(c);
        return code * (e == 0xFF ? NAN : ldexpf(1.0f, e - 127));
    }
    const uint8_t *tail = v4_kv_tail(f, row);
    k -= f->fp8;
    if (f->tail_bf16) {
        bits = (uint32_t)(tail[2 * k] | tail[2 * k + 1] << 8) << 16;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
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
    v4_quant_init(); /* the scalar kernels' e4m3 table, filled as v4_open does */
    test_index_scores();
    test_tiles();
    test_fast_attention();
    return check_finish();
}
