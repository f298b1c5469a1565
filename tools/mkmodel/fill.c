/*
 * fill.c - what a random V4 checkpoint holds, and how each tensor
 * becomes bytes.
 *
 * Randomness.  Element i of tensor "name" is drawn from a counter-based
 * generator: the splitmix64 finaliser applied to key + (i+1) * gamma, with
 * the key derived from the seed and a hash of the name.  No generator state
 * is carried from one element or tensor to the next, so a tensor's values
 * do not depend on which tensors were produced before it, and any slice of
 * it can be produced on its own.  Near-normal values come from one 64-bit
 * draw split into four 16-bit uniforms and summed (Irwin-Hall): integer
 * arithmetic and one float multiply, so the bytes are the same on every
 * IEEE machine, whatever its libm.
 *
 * Initialisation.  A random model only has to be numerically sane: the
 * forward pass should see activations of order one in every layer, or the
 * engine's tests would be exercising overflow instead of arithmetic.  So
 * matrices get a standard deviation of 1/sqrt(fan-in) (a product with a
 * unit-size vector stays unit-size), RMSNorm gains sit near 1, the
 * hyper-connection mixes come out near N(0, 1) with scales in [0.5, 1.5) so
 * the sigmoids and the Sinkhorn iterations stay well away from saturation,
 * and the router bias is small.  The rules are a table keyed by the end of
 * the tensor name; a manifest entry that no rule covers is an error, so a
 * new tensor kind cannot silently get an arbitrary distribution.
 *
 * Quantisation.  FP8 matrices are produced in bands of 128 rows (one row of
 * 128x128 scale blocks), FP4 experts in bands of rows with one scale per 32
 * inputs; the band is drawn as floats, quantised with tools/mkmodel/quant.c
 * and handed to the sink.  Within a band the work is split over threads by
 * rows or by scale blocks, each thread writing its own slice, which is why
 * the thread count cannot change a byte.  The scales are remembered for the ".scale"
 * tensor that follows its weight in the manifest; if it does not follow
 * (a different order, another shard), the weight is simply drawn again.
 */
#include "tools/mkmodel/fill.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/mkmodel/quant.h"

#define GOLDEN_GAMMA 0x9e3779b97f4a7c15ull
#define FP8_BLOCK    128
#define FP4_GROUP    32
#define PLAIN_CHUNK  (1 << 20)
#define FP4_BAND     64
#define TID_ROWS     1024

struct mk_fill {
    uint64_t seed;
    int threads;
    const v4_config *cfg;
    const v4_tensor_spec *specs;
    size_t n_specs;
    /* The block scales of the last quantised weight produced. */
    char scale_owner[sizeof((v4_tensor_spec *)0)->name];
    uint8_t *scales;
    size_t n_scales, scales_cap;
};

/* ---- the generator ------------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_key(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return mix64(mix64(seed) ^ h);
}

static uint64_t draw(uint64_t key, uint64_t i)
{
    return mix64(key + (i + 1) * GOLDEN_GAMMA);
}

/* Roughly N(0, 1), bounded by +-3.46. */
static float normal_from(uint64_t r)
{
    int32_t s = (int32_t)(r & 0xffff) + (int32_t)(r >> 16 & 0xffff) + (int32_t)(r >> 32 & 0xffff) +
                (int32_t)(r >> 48);
    /* The sum of four uniforms on 0..65535 has mean 131070 and standard
     * deviation sqrt(4 * (65536^2 - 1) / 12) = 37837.227... */
    return (float)(s - 131070) * 2.6428997921303014e-05f;
}

/* Uniform on (-1, 1). */
static float uniform_from(uint64_t r)
{
    return (float)(2 * (r >> 41) + 1) * 0x1p-23f - 1.0f;
}

/* A uniform integer below m (m < 2^32). */
static uint32_t below(uint64_t r, uint32_t m)
{
    return (uint32_t)(((r >> 32) * m) >> 32);
}

/* ---- initialisation rules ------------------------------------------------ */

typedef struct init_rule {
    const char *suffix;
    int uniform; /* else near-normal */
    float center;
    float spread;   /* standard deviation, or half-width when uniform */
    int per_fan_in; /* spread / sqrt(fan-in): matrices only */
} init_rule;

/* First match wins, so specific suffixes come before ".weight". */
static const init_rule rules[] = {
    {"norm.weight", 0, 1.0f, 0.1f, 0},  /* RMSNorm gains */
    {"embed.weight", 0, 0.0f, 1.0f, 0}, /* token vectors of unit size */
    {"attn_sink", 0, 0.0f, 0.5f, 0},    /* per-head softmax sink logits */
    {"ape", 0, 0.0f, 0.5f, 0},          /* compressor position biases */
    {"_base", 0, 0.0f, 0.5f, 0},        /* hyper-connection biases */
    {"_scale", 1, 1.0f, 0.5f, 0},       /* hyper-connection scales, [0.5, 1.5) */
    {"gate.bias", 0, 0.0f, 0.1f, 0},    /* router selection bias */
    {"_fn", 0, 0.0f, 1.0f, 1},          /* hyper-connection mixes */
    {".weight", 0, 0.0f, 1.0f, 1},      /* every other matrix */
};

/* How one tensor's floats are drawn. */
typedef struct plan {
    uint64_t key;
    int uniform;
    float center, spread;
} plan;

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Columns of the matrix a tensor stores (FP4 packs two per byte). */
static int64_t logical_cols(const v4_tensor_spec *t)
{
    return t->dtype == V4_I8 ? 2 * t->shape[1] : t->shape[1];
}

static int64_t element_count(const v4_tensor_spec *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static int plan_for(const mk_fill *f, const v4_tensor_spec *t, plan *p, tome_error *err)
{
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        const init_rule *r = &rules[i];
        if (!ends_with(t->name, r->suffix)) continue;
        if (r->per_fan_in && t->ndim != 2) break;
        p->key = name_key(f->seed, t->name);
        p->uniform = r->uniform;
        p->center = r->center;
        p->spread = r->per_fan_in ? r->spread / sqrtf((float)logical_cols(t)) : r->spread;
        return 0;
    }
    return tome_errorf(err, TOME_EINVAL, "tensor %s (%s, %d-D): no initialisation rule covers it",
                       t->name, v4_dtype_name(t->dtype), t->ndim);
}

static void draw_values(const plan *p, uint64_t first, size_t n, float *out)
{
    uint64_t key = p->key;
    float center = p->center, spread = p->spread;
    if (p->uniform)
        for (size_t j = 0; j < n; j++)
            out[j] = center + spread * uniform_from(draw(key, first + j));
    else
        for (size_t j = 0; j < n; j++) out[j] = center + spread * normal_from(draw(key, first + j));
}

/* ---- splitting a band of work over threads ------------------------------ */

typedef void (*part_fn)(void *ctx, size_t begin, size_t end);

typedef struct part {
    part_fn fn;
    void *ctx;
    size_t begin, end;
} part;

static void *run_part(void *arg)
{
    const part *p = arg;
    p->fn(p->ctx, p->begin, p->end);
    return NULL;
}

/* Run fn over [0, n) cut into one contiguous range per thread, the calling
 * thread taking the first.  Each range writes only its own slice of the
 * output, so the result does not depend on the thread count; a thread that
 * cannot be started just leaves its range to the caller. */
static void split_over_threads(int threads, size_t n, part_fn fn, void *ctx)
{
    part parts[MK_MAX_THREADS];
    pthread_t tid[MK_MAX_THREADS];
    int started[MK_MAX_THREADS] = {0};
    size_t k = (size_t)threads < n ? (size_t)threads : n;
    if (k == 0) return;
    for (size_t i = 0; i < k; i++) parts[i] = (part){fn, ctx, n * i / k, n * (i + 1) / k};
    for (size_t i = 1; i < k; i++)
        started[i] = pthread_create(&tid[i], NULL, run_part, &parts[i]) == 0;
    run_part(&parts[0]);
    for (size_t i = 1; i < k; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            run_part(&parts[i]);
    }
}

/* ---- producers, one per storage kind ---------------------------------- */

/* A band of a tensor: consecutive elements (plain) or whole rows
 * (quantised), produced into x (floats), out (stored bytes) and scales. */
typedef struct band {
    const plan *p;
    uint64_t first; /* index of the band's first element */
    size_t cols;    /* logical columns of a quantised matrix */
    float *x;
    void *out;
    uint8_t *scales;
} band;

static void bf16_part(void *ctx, size_t begin, size_t end)
{
    const band *b = ctx;
    draw_values(b->p, b->first + begin, end - begin, b->x + begin);
    mk_bf16_encode_n(b->x + begin, end - begin, (uint16_t *)b->out + begin);
}

static void f32_part(void *ctx, size_t begin, size_t end)
{
    const band *b = ctx;
    draw_values(b->p, b->first + begin, end - begin, (float *)b->out + begin);
}

static int fill_plain(const mk_fill *f, const plan *p, const v4_tensor_spec *t, mk_sink sink,
                      void *ctx, tome_error *err)
{
    int64_t n = element_count(t);
    size_t width = v4_dtype_size(t->dtype), chunk = n < PLAIN_CHUNK ? (size_t)n : PLAIN_CHUNK;
    band b = {.p = p, .x = malloc(chunk * sizeof(float)), .out = malloc(chunk * width)};
    int rc = b.x && b.out ? 0 : tome_errorf(err, TOME_ENOMEM, "tensor %s: out of memory", t->name);
    for (int64_t i0 = 0; rc == 0 && i0 < n; i0 += (int64_t)chunk) {
        size_t m = n - i0 < (int64_t)chunk ? (size_t)(n - i0) : chunk;
        b.first = (uint64_t)i0;
        split_over_threads(f->threads, m, t->dtype == V4_BF16 ? bf16_part : f32_part, &b);
        rc = sink(ctx, b.out, m * width, err);
    }
    free(b.x);
    free(b.out);
    return rc;
}

static size_t scale_count(const v4_tensor_spec *w)
{
    int64_t rows = w->shape[0], cols = logical_cols(w);
    if (w->dtype == V4_I8) return (size_t)(rows * (cols / FP4_GROUP));
    return (size_t)(((rows + FP8_BLOCK - 1) / FP8_BLOCK) * ((cols + FP8_BLOCK - 1) / FP8_BLOCK));
}

static void draw_rows_part(void *ctx, size_t begin, size_t end)
{
    const band *b = ctx;
    draw_values(b->p, b->first + begin * b->cols, (end - begin) * b->cols, b->x + begin * b->cols);
}

/* FP8: column blocks [begin, end) of a band of up to 128 rows, one tile
 * (and one scale) each. */
typedef struct fp8_band {
    band b;
    size_t rows;
} fp8_band;

static void fp8_tiles_part(void *ctx, size_t begin, size_t end)
{
    const fp8_band *fb = ctx;
    const band *b = &fb->b;
    for (size_t t = begin; t < end; t++) {
        size_t c0 = t * FP8_BLOCK, nc = b->cols - c0 < FP8_BLOCK ? b->cols - c0 : FP8_BLOCK;
        uint8_t *q = (uint8_t *)b->out + c0;
        b->scales[t] = (uint8_t)(mk_fp8_tile(b->x + c0, b->cols, fb->rows, nc, q, b->cols) + 127);
    }
}

/* FP4: rows [begin, end) of a band, a scale per 32 inputs of each row. */
static void fp4_rows_part(void *ctx, size_t begin, size_t end)
{
    const band *b = ctx;
    size_t groups = b->cols / FP4_GROUP;
    draw_rows_part(ctx, begin, end);
    for (size_t r = begin; r < end; r++)
        for (size_t g = 0; g < groups; g++) {
            size_t i = r * b->cols + g * FP4_GROUP;
            int e = mk_fp4_group(b->x + i, FP4_GROUP, (uint8_t *)b->out + i / 2);
            b->scales[r * groups + g] = (uint8_t)(e + 127);
        }
}

static int reserve_scales(mk_fill *f, size_t n, const char *name, tome_error *err)
{
    if (n <= f->scales_cap) return 0;
    uint8_t *s = realloc(f->scales, n);
    if (!s) return tome_errorf(err, TOME_ENOMEM, "tensor %s: out of memory", name);
    f->scales = s;
    f->scales_cap = n;
    return 0;
}

/* A quantised weight (FP8 or packed FP4): the bytes go to `sink` (which may
 * be NULL when only the scales are wanted), the scales to f->scales. */
static int fill_quantised(mk_fill *f, const v4_tensor_spec *t, mk_sink sink, void *ctx,
                          tome_error *err)
{
    int fp4 = t->dtype == V4_I8;
    if (t->ndim != 2 || (fp4 && logical_cols(t) % FP4_GROUP != 0))
        return tome_errorf(err, TOME_EINVAL, "tensor %s: not a quantisable matrix shape", t->name);
    plan p;
    int rc = plan_for(f, t, &p, err);
    if (rc == 0) rc = reserve_scales(f, scale_count(t), t->name, err);
    if (rc) return rc;
    f->scale_owner[0] = '\0';
    size_t rows = (size_t)t->shape[0], cols = (size_t)logical_cols(t);
    size_t band_rows = fp4 ? FP4_BAND : FP8_BLOCK, row_bytes = fp4 ? cols / 2 : cols;
    size_t tiles = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
    fp8_band fb = {{.p = &p,
                    .cols = cols,
                    .x = malloc(band_rows * cols * sizeof(float)),
                    .out = malloc(band_rows * row_bytes)},
                   0};
    band *b = &fb.b;
    if (!b->x || !b->out) rc = tome_errorf(err, TOME_ENOMEM, "tensor %s: out of memory", t->name);
    for (size_t r0 = 0; rc == 0 && r0 < rows; r0 += band_rows) {
        fb.rows = rows - r0 < band_rows ? rows - r0 : band_rows;
        b->first = (uint64_t)(r0 * cols);
        if (fp4) {
            b->scales = f->scales + r0 * (cols / FP4_GROUP);
            split_over_threads(f->threads, fb.rows, fp4_rows_part, b);
        } else {
            b->scales = f->scales + (r0 / FP8_BLOCK) * tiles;
            split_over_threads(f->threads, fb.rows, draw_rows_part, b);
            split_over_threads(f->threads, tiles, fp8_tiles_part, &fb);
        }
        if (sink) rc = sink(ctx, b->out, fb.rows * row_bytes, err);
    }
    free(b->x);
    free(b->out);
    if (rc) return rc;
    f->n_scales = scale_count(t);
    snprintf(f->scale_owner, sizeof f->scale_owner, "%s", t->name);
    return 0;
}

static const v4_tensor_spec *find_spec(const mk_fill *f, const char *name)
{
    for (size_t i = 0; i < f->n_specs; i++)
        if (strcmp(f->specs[i].name, name) == 0) return &f->specs[i];
    return NULL;
}

/* "<x>.scale": the block scales of "<x>.weight". */
static int fill_scale(mk_fill *f, const v4_tensor_spec *t, mk_sink sink, void *ctx, tome_error *err)
{
    char weight[sizeof t->name + 8];
    size_t stem = strlen(t->name) - strlen(".scale");
    if (!ends_with(t->name, ".scale"))
        return tome_errorf(err, TOME_EINVAL, "tensor %s: F8_E8M0 but not named <x>.scale", t->name);
    snprintf(weight, sizeof weight, "%.*s.weight", (int)stem, t->name);
    if (strcmp(f->scale_owner, weight) != 0) {
        const v4_tensor_spec *w = find_spec(f, weight);
        if (!w || (w->dtype != V4_F8_E4M3 && w->dtype != V4_I8))
            return tome_errorf(err, TOME_EINVAL, "tensor %s: no FP8/FP4 weight %s to scale",
                               t->name, weight);
        int rc = fill_quantised(f, w, NULL, NULL, err);
        if (rc) return rc;
    }
    if ((int64_t)f->n_scales != element_count(t))
        return tome_errorf(err, TOME_EINVAL,
                           "tensor %s: %zu scales expected for %s, shape says %lld", t->name,
                           f->n_scales, weight, (long long)element_count(t));
    return sink(ctx, f->scales, f->n_scales, err);
}

/* Hash routing table: each token id gets k distinct experts (Floyd's
 * sampling, so k draws per row whatever the expert count). */
static int fill_tid2eid(const mk_fill *f, const v4_tensor_spec *t, mk_sink sink, void *ctx,
                        tome_error *err)
{
    int64_t rows = t->shape[0], k = t->ndim == 2 ? t->shape[1] : 0;
    int64_t n = f->cfg->n_routed_experts;
    if (!ends_with(t->name, "tid2eid") || k <= 0 || k > n)
        return tome_errorf(err, TOME_EINVAL, "tensor %s: cannot pick %lld of %lld experts", t->name,
                           (long long)k, (long long)n);
    int64_t *ids = malloc((size_t)(TID_ROWS * k) * sizeof *ids);
    if (!ids) return tome_errorf(err, TOME_ENOMEM, "tensor %s: out of memory", t->name);
    uint64_t key = name_key(f->seed, t->name);
    int rc = 0;
    for (int64_t r0 = 0; rc == 0 && r0 < rows; r0 += TID_ROWS) {
        int64_t nr = rows - r0 < TID_ROWS ? rows - r0 : TID_ROWS;
        for (int64_t r = 0; r < nr; r++) {
            int64_t *row = ids + r * k;
            for (int64_t j = n - k, got = 0; j < n; j++, got++) {
                int64_t pick = below(draw(key, (uint64_t)((r0 + r) * k + got)), (uint32_t)j + 1);
                for (int64_t i = 0; i < got; i++)
                    if (row[i] == pick) pick = j;
                row[got] = pick;
            }
        }
        rc = sink(ctx, ids, (size_t)(nr * k) * sizeof *ids, err);
    }
    free(ids);
    return rc;
}

/* ---- public ---------------------------------------------------------------- */

int mk_fill_new(uint64_t seed, int threads, const v4_config *cfg, const v4_tensor_spec *specs,
                size_t n_specs, mk_fill **out, tome_error *err)
{
    if (threads < 1 || threads > MK_MAX_THREADS)
        return tome_errorf(err, TOME_EINVAL, "%d threads: must be 1..%d", threads, MK_MAX_THREADS);
    mk_fill *f = calloc(1, sizeof *f);
    if (!f) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    f->seed = seed;
    f->threads = threads;
    f->cfg = cfg;
    f->specs = specs;
    f->n_specs = n_specs;
    *out = f;
    return 0;
}

void mk_fill_free(mk_fill *f)
{
    if (!f) return;
    free(f->scales);
    free(f);
}

int mk_fill_tensor(mk_fill *f, const v4_tensor_spec *t, mk_sink sink, void *ctx, tome_error *err)
{
    plan p;
    int rc;
    switch (t->dtype) {
    case V4_F32:
    case V4_BF16:
        rc = plan_for(f, t, &p, err);
        return rc ? rc : fill_plain(f, &p, t, sink, ctx, err);
    case V4_F8_E4M3:
    case V4_I8:
        return fill_quantised(f, t, sink, ctx, err);
    case V4_F8_E8M0:
        return fill_scale(f, t, sink, ctx, err);
    case V4_I64:
        return fill_tid2eid(f, t, sink, ctx, err);
    default:
        return tome_errorf(err, TOME_EINVAL, "tensor %s: mkmodel cannot produce dtype %s", t->name,
                           v4_dtype_name(t->dtype));
    }
}
