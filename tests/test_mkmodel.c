/*
 * test_mkmodel.c - tome-mkmodel's checkpoints, read back independently.
 *
 * The reader (ckpt_reader.c) shares no code with the writer: it parses
 * the index and the safetensors headers with jansson and decodes
 * FP8/FP4/BF16 from their definitions.  The tests check the files against
 * the tensor manifest the engine will load them with (v4_manifest) and
 * against the official golden
 * checkpoints in $TOME_SHARED (same tensor order, dtypes and shapes).  It
 * also checks what the official scale rules imply about the stored bytes,
 * that the weights have the intended size, that a seed fixes every byte
 * (whatever the thread count or shard size) and that failures leave nothing
 * behind.
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/common.h"
#include "engine/v4.h"
#include "tests/check.h"
#include "tests/ckpt_reader.h"

/* ---- running the tool ------------------------------------------------ */

/* tome-mkmodel with `args` (check_run_tool). */
static int run_tool_argv(const char *out_path, const char *err_path, const char *const *args)
{
    return check_run_tool("tools/tome-mkmodel", out_path, err_path, args);
}

#define RUN_TOOL(out_path, ...)                                                                    \
    run_tool_argv(out_path, NULL, (const char *const[]){__VA_ARGS__, NULL})

/* The tool must refuse `args` with exactly `status` (1: a bad input, 2: a
 * bad command line; a crash is neither) and say `message` on stderr, which
 * goes to a file in `dir`. */
static void check_refused(int line, const char *dir, int status, const char *message,
                          const char *const *args)
{
    char err_path[4200];
    snprintf(err_path, sizeof err_path, "%s/refused.err", dir);
    int got = run_tool_argv(NULL, err_path, args);
    char *text = NULL;
    size_t len;
    tome_error err = {0};
    REQUIRE(tome_read_file(err_path, 1 << 20, &text, &len, &err) == 0, "%s", err.msg);
    CHECKF(got == status && strstr(text, message), "line %d: status %d, expected %d; stderr: %s",
           line, got, status, text);
    free(text);
}

#define REFUSED(dir, status, message, ...)                                                         \
    check_refused(__LINE__, dir, status, message, (const char *const[]){__VA_ARGS__, NULL})

static void spit(const char *path, const char *text)
{
    tome_error err;
    REQUIRE(tome_write_file_atomic(path, text, strlen(text), &err) == 0, "%s", err.msg);
}

/* ---- value checks ------------------------------------------------------ */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static const ckpt_tensor *scale_of(const ckpt_model *m, const ckpt_tensor *w)
{
    char name[128];
    snprintf(name, sizeof name, "%.*s.scale", (int)(strlen(w->name) - strlen(".weight")), w->name);
    const ckpt_tensor *s = ckpt_find(m, name);
    REQUIRE(s && s->dtype == V4_F8_E8M0, "%s: no F8_E8M0 scale %s", m->dir, name);
    return s;
}

/* The ratio of a matrix's RMS to 1/sqrt(fan-in), the intended size. */
static void check_rms(const char *name, double sum_sq, double count, double fan_in)
{
    double ratio = sqrt(sum_sq / count) * sqrt(fan_in);
    CHECKF(ratio > 0.85 && ratio < 1.15, "%s: RMS is %.3f x 1/sqrt(fan-in)", name, ratio);
}

/* FP8: 128x128 blocks whose largest |e4m3| lies in [224, 448] (the scale
 * rule puts amax/scale in (224, 448]), no NaN bytes. */
static void check_fp8(const ckpt_model *m, const ckpt_tensor *w)
{
    const ckpt_tensor *s = scale_of(m, w);
    int64_t rows = w->shape[0], cols = w->shape[1], bc = (cols + 127) / 128;
    CHECKF(s->shape[0] == (rows + 127) / 128 && s->shape[1] == bc, "%s: scale shape", s->name);
    int bad_block = 0, nan = 0;
    double sum_sq = 0;
    for (int64_t br = 0; br * 128 < rows; br++)
        for (int64_t b = 0; b < bc; b++) {
            uint8_t sb = s->data[br * bc + b];
            double max = 0;
            for (int64_t r = br * 128; r < rows && r < br * 128 + 128; r++)
                for (int64_t c = b * 128; c < cols && c < b * 128 + 128; c++) {
                    uint8_t q = w->data[r * cols + c];
                    nan += (q & 0x7f) == 0x7f;
                    double v = ckpt_e4m3(q);
                    max = fmax(max, fabs(v));
                    sum_sq += ldexp(v, sb - 127) * ldexp(v, sb - 127);
                }
            bad_block += max < 224 || max > 448 || sb == 0xff;
        }
    CHECKF(nan == 0, "%s: %d NaN bytes", w->name, nan);
    CHECKF(bad_block == 0, "%s: %d blocks whose largest value is outside [224, 448]", w->name,
           bad_block);
    check_rms(w->name, sum_sq, (double)(rows * cols), (double)cols);
}

/* FP4: in each 32-input group the largest |e2m1| lies in [3, 6]; element
 * 2j is the low nibble. */
static void check_fp4(const ckpt_model *m, const ckpt_tensor *w)
{
    const ckpt_tensor *s = scale_of(m, w);
    int64_t rows = w->shape[0], cols = 2 * w->shape[1], groups = cols / 32;
    CHECKF(s->shape[0] == rows && s->shape[1] == groups, "%s: scale shape", s->name);
    int bad = 0;
    double sum_sq = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < groups; g++) {
            uint8_t sb = s->data[r * groups + g];
            double max = 0;
            for (int64_t i = g * 32; i < g * 32 + 32; i++) {
                uint8_t byte = w->data[(r * cols + i) / 2];
                double v = ckpt_e2m1(i % 2 ? byte >> 4 : byte & 0xf);
                max = fmax(max, fabs(v));
                sum_sq += ldexp(v, sb - 127) * ldexp(v, sb - 127);
            }
            bad += max < 3 || max > 6 || sb == 0xff;
        }
    CHECKF(bad == 0, "%s: %d groups whose largest value is outside [3, 6]", w->name, bad);
    check_rms(w->name, sum_sq, (double)(rows * cols), (double)cols);
}

static void check_tid2eid(const ckpt_model *m, const ckpt_tensor *t)
{
    int64_t rows = t->shape[0], k = t->shape[1];
    int bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < k; i++) {
            int64_t id;
            memcpy(&id, t->data + (r * k + i) * 8, 8);
            bad += id < 0 || id >= m->cfg.n_routed_experts;
            for (int64_t j = 0; j < i; j++) {
                int64_t other;
                memcpy(&other, t->data + (r * k + j) * 8, 8);
                bad += other == id;
            }
        }
    CHECKF(bad == 0, "%s: %d ids repeated or out of range", t->name, bad);
}

static void check_floats(const ckpt_tensor *t)
{
    size_t width = v4_dtype_size(t->dtype), n = t->size / width;
    double sum = 0, sum_sq = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double v = t->dtype == V4_BF16 ? ckpt_bf16(t->data + i * 2) : ckpt_f32(t->data + i * 4);
        bad += !isfinite(v);
        sum += v;
        sum_sq += v * v;
    }
    CHECKF(bad == 0, "%s: %d values not finite", t->name, bad);
    if (ends_with(t->name, "norm.weight"))
        CHECKF(fabs(sum / (double)n - 1) < 0.05, "%s: mean gain %.3f, want about 1", t->name,
               sum / (double)n);
    else if (t->ndim == 2 && strcmp(t->name, "embed.weight") != 0 && !ends_with(t->name, ".ape"))
        check_rms(t->name, sum_sq, (double)n, (double)t->shape[1]);
}

/* Everything v4_manifest lists is present with its dtype and shape, nothing
 * else is, and every value passes the checks above. */
static void check_model(const ckpt_model *m)
{
    v4_tensor_spec *specs;
    size_t n;
    tome_error err;
    REQUIRE(v4_manifest(&m->cfg, &specs, &n, &err) == 0, "%s", err.msg);
    CHECKF(n == m->n, "%s: %zu tensors, the manifest has %zu", m->dir, m->n, n);
    for (size_t i = 0; i < n; i++) {
        const ckpt_tensor *t = ckpt_find(m, specs[i].name);
        if (!t) {
            CHECKF(t, "%s: %s is missing", m->dir, specs[i].name);
            continue;
        }
        int same = t->dtype == specs[i].dtype && t->ndim == specs[i].ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == specs[i].shape[d];
        CHECKF(same, "%s: %s has the wrong dtype or shape", m->dir, t->name);
        if (!same) continue;
        switch (t->dtype) {
        case V4_F8_E4M3:
            check_fp8(m, t);
            break;
        case V4_I8:
            check_fp4(m, t);
            break;
        case V4_I64:
            check_tid2eid(m, t);
            break;
        case V4_F32:
        case V4_BF16:
            check_floats(t);
            break;
        default:
            break; /* scales: checked with their weights */
        }
    }
    free(specs);
}

/* ---- the tests ------------------------------------------------------------ */

static void check_same_tensors(const ckpt_model *a, const ckpt_model *b, int expect_equal)
{
    CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        const ckpt_tensor *x = &a->t[i], *y = ckpt_find(b, x->name);
        if (!y || x->size != y->size) {
            CHECKF(0, "%s: missing or resized in %s", x->name, b->dir);
            continue;
        }
        int equal = memcmp(x->data, y->data, x->size) == 0;
        if (expect_equal)
            CHECKF(equal, "%s differs between %s and %s", x->name, a->dir, b->dir);
        else if (x->dtype != V4_F8_E8M0) /* block scales may well coincide */
            CHECKF(!equal, "%s is the same in %s and %s", x->name, a->dir, b->dir);
    }
}

static void check_same_files(const char *a, const char *b)
{
    DIR *d = opendir(a);
    REQUIRE(d, "cannot list %s", a);
    const struct dirent *e;
    int files = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        size_t la, lb;
        char *x = ckpt_slurp(ckpt_path(a, e->d_name), &la),
             *y = ckpt_slurp(ckpt_path(b, e->d_name), &lb);
        CHECKF(la == lb && memcmp(x, y, la) == 0, "%s differs between %s and %s", e->d_name, a, b);
        free(x);
        free(y);
        files++;
    }
    closedir(d);
    CHECKF(files >= 4, "%s: only %d files", a, files);
}

/* The golden checkpoints were written by other tools from the official
 * code: ours must list the same tensors in the same order. */
static void check_matches_golden(const ckpt_model *ours, const char *golden_dir)
{
    ckpt_model g;
    ckpt_load(&g, golden_dir);
    CHECKF(g.n == ours->n, "%s: %zu tensors, golden has %zu", ours->dir, ours->n, g.n);
    for (size_t i = 0; i < g.n && i < ours->n; i++) {
        const ckpt_tensor *x = &ours->t[i], *y = &g.t[i];
        int same = strcmp(x->name, y->name) == 0 && x->dtype == y->dtype && x->ndim == y->ndim &&
                   memcmp(x->shape, y->shape, sizeof x->shape) == 0;
        if (!same) {
            CHECKF(same, "tensor %zu: ours %s, golden %s", i, x->name, y->name);
            break;
        }
    }
    ckpt_free(&g);
}

static void test_golden_config(const char *tmp, const char *which)
{
    char rel[64], a[4096], b[4096], c[4096], d[4096];
    snprintf(rel, sizeof rel, "golden/%s/config.json", which);
    const char *cfg = check_shared_path(rel);
    snprintf(a, sizeof a, "%s/%s-seed7", tmp, which);
    snprintf(b, sizeof b, "%s/%s-seed7-again", tmp, which);
    snprintf(c, sizeof c, "%s/%s-seed7-sharded", tmp, which);
    snprintf(d, sizeof d, "%s/%s-seed8", tmp, which);
    const char *tok = ckpt_path(tmp, "tokenizer.json");
    spit(tok, "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}}, "
              "\"added_tokens\": [{\"id\": 1023, \"content\": \"<x>\"}]}");
    CHECK(RUN_TOOL(NULL, "--config", cfg, "--seed", "7", "--threads", "2", "--tokenizer", tok, "-o",
                   a) == 0);
    CHECK(RUN_TOOL(NULL, "--config", cfg, "--seed", "7", "--threads", "1", "--tokenizer", tok, "-o",
                   b) == 0);
    CHECK(RUN_TOOL(NULL, "--config", cfg, "--seed", "7", "--shard-size", "1M", "-o", c) == 0);
    CHECK(RUN_TOOL(NULL, "--config", cfg, "--seed", "8", "-o", d) == 0);
    size_t la, lb;
    char *x = ckpt_slurp(cfg, &la), *y = ckpt_slurp(ckpt_path(a, "config.json"), &lb);
    CHECKF(la == lb && memcmp(x, y, la) == 0, "%s: config.json is not the given file", a);
    free(x);
    free(y);
    x = ckpt_slurp(tok, &la);
    y = ckpt_slurp(ckpt_path(a, "tokenizer.json"), &lb);
    CHECKF(la == lb && memcmp(x, y, la) == 0, "%s: tokenizer.json is not the given file", a);
    free(x);
    free(y);
    check_same_files(a, b);
    ckpt_model ma, mc, md;
    ckpt_load(&ma, a);
    ckpt_load(&mc, c);
    ckpt_load(&md, d);
    check_model(&ma);
    check_model(&mc);
    check_matches_golden(&ma, ckpt_path(check_shared_path("golden"), which));
    CHECKF(ma.n_shards == 1, "%s: %d shards for a few MB", a, ma.n_shards);
    CHECKF(mc.n_shards > 2, "%s: only %d shards at 1 MiB each", c, mc.n_shards);
    for (int s = 0; s < mc.n_shards; s++) {
        size_t data = 0, count = 0;
        for (size_t i = 0; i < mc.n; i++)
            if (mc.t[i].shard == s) data += mc.t[i].size, count++;
        CHECKF(data <= (1u << 20) || count == 1, "%s: shard %d holds %zu bytes", c, s, data);
    }
    check_same_tensors(&ma, &mc, 1);
    check_same_tensors(&ma, &md, 0);
    ckpt_free(&ma);
    ckpt_free(&mc);
    ckpt_free(&md);
}

/* The largest id a tokenizer.json defines (model.vocab and added_tokens). */
static json_int_t tokenizer_max_id(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    REQUIRE(root, "%s: %s", path, jerr.text);
    json_int_t max = -1;
    const char *key;
    json_t *v;
    size_t i;
    json_object_foreach(json_object_get(json_object_get(root, "model"), "vocab"), key, v) {
        if (json_integer_value(v) > max) max = json_integer_value(v);
    }
    json_array_foreach(json_object_get(root, "added_tokens"), i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id > max) max = id;
    }
    json_decref(root);
    return max;
}

/* The built-in model the build makes (engine/mkmodel.am). */
static void test_builtin_tiny(void)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models/tiny", getenv("TOME_BUILDDIR"));
    ckpt_model m;
    ckpt_load(&m, dir);
    check_model(&m);
    const v4_config *c = &m.cfg;
    CHECK(c->vocab_size == 129280);
    CHECK(c->expert_fp4 && c->n_hash_layers >= 1 && c->n_hash_layers < c->n_layers);
    CHECK(c->n_mtp_layers == 1 && c->compress_ratio[c->n_layers] == 4);
    int kinds[3] = {0};
    for (int l = 0; l < c->n_layers; l++)
        kinds[c->compress_ratio[l] == 0 ? 0 : c->compress_ratio[l] == 4 ? 1 : 2]++;
    CHECKF(kinds[0] && kinds[1] && kinds[2], "tiny lacks a layer kind: %d SWA, %d CSA, %d HCA",
           kinds[0], kinds[1], kinds[2]);
    CHECK(c->index_topk < 64); /* selection must happen on short texts */
    size_t bytes = 0;
    for (int s = 0; s < m.n_shards; s++) bytes += m.shard_len[s];
    CHECKF(bytes > 10e6 && bytes < 100e6, "tiny is %zu bytes, want tens of MB", bytes);
    /* The real DeepSeek vocabulary, all of it inside the embedding. */
    json_int_t max_id = tokenizer_max_id(ckpt_path(dir, "tokenizer.json"));
    CHECKF(max_id > 128000 && max_id < c->vocab_size, "tokenizer ids up to %lld, vocab_size %d",
           (long long)max_id, c->vocab_size);
    ckpt_free(&m);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    REQUIRE(d, "cannot list %s", dir);
    int n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_errors(const char *tmp)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/errors", tmp);
    REQUIRE(tome_mkdir_p(dir, 0755, &(tome_error){0}) == 0, "mkdir %s", dir);
    const char *out = ckpt_path(dir, "model"),
               *cfg = check_shared_path("golden/v4-tiny-a/config.json");
    const char *big_tok = ckpt_path(dir, "big-tokenizer.json");
    spit(big_tok, "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 5000}]}");
    REFUSED(tmp, 1, "unknown preset \"huge\"", "--preset", "huge", "-o", out);
    REFUSED(tmp, 2, "no output directory (-o DIR)", "--preset", "tiny");
    REFUSED(tmp, 2, "give exactly one of --preset and --config", "--preset", "tiny", "--config",
            cfg, "-o", out);
    REFUSED(tmp, 1, "preset tiny has a fixed shape", "--preset", "tiny", "--layers", "3", "-o",
            out);
    REFUSED(tmp, 2, "--shard-size: \"4X\" is not a whole number (suffixes: K, M, G, T)", "--config",
            cfg, "--shard-size", "4X", "-o", out);
    REFUSED(tmp, 1, "absent.json: No such file or directory", "--config", cfg, "--tokenizer",
            ckpt_path(dir, "absent.json"), "-o", out);
    REFUSED(tmp, 1, "token ids go up to 5000 but the model's vocab_size is 1024", "--config", cfg,
            "--tokenizer", big_tok, "-o", out);
    REFUSED(tmp, 1, "required field \"vocab_size\" is missing", "--config", big_tok, "-o", out);
    CHECKF(count_entries(dir) == 1, "a failed run left files in %s", dir);
    /* An existing non-empty directory is never replaced. */
    REQUIRE(tome_mkdir_p(out, 0755, &(tome_error){0}) == 0, "mkdir %s", out);
    spit(ckpt_path(out, "keep"), "x");
    REFUSED(tmp, 1, "already exists and is not an empty directory", "--config", cfg, "-o", out);
    CHECK(count_entries(out) == 1 && count_entries(dir) == 2);
    /* An empty one is. */
    CHECK(unlink(ckpt_path(out, "keep")) == 0);
    CHECK(RUN_TOOL(NULL, "--config", cfg, "-o", out) == 0);
    CHECK(count_entries(out) == 3 && count_entries(dir) == 2);
}

/* flash-shape against V4-Flash's config.json (V4-ARCHITECTURE.md, 1.1). */
static void test_flash_shape(const char *tmp)
{
    static const struct {
        const char *args[4];
        int layers, experts, active, hash;
        int ratios[8];
    } cases[] = {
        {{NULL}, 2, 16, 6, 2, {4, 128, 0}},
        {{"--layers", "5", NULL}, 5, 16, 6, 3, {0, 0, 4, 128, 4, 0}},
        {{"--layers", "1", "--experts", "4"}, 1, 4, 4, 1, {4, 0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *out = ckpt_path(tmp, "flash.json");
        const char *args[] = {
            "--preset",       "flash-shape",    "--print-config", cases[i].args[0],
            cases[i].args[1], cases[i].args[2], cases[i].args[3], NULL};
        CHECK(run_tool_argv(out, NULL, args) == 0);
        size_t len;
        char *text = ckpt_slurp(out, &len);
        v4_config c;
        tome_error err;
        REQUIRE(v4_config_parse(text, len, out, &c, &err) == 0, "%s", err.msg);
        free(text);
        CHECK(c.vocab_size == 129280 && c.dim == 4096 && c.n_heads == 64 && c.head_dim == 512);
        CHECK(c.rope_dim == 64 && c.q_lora_rank == 1024 && c.o_groups == 8 &&
              c.o_lora_rank == 1024);
        CHECK(c.index_n_heads == 64 && c.index_head_dim == 128 && c.index_topk == 512);
        CHECK(c.moe_inter_dim == 2048 && c.expert_fp4 && c.n_shared_experts == 1);
        CHECK(c.route_scale == 1.5 && c.compress_rope_theta == 160000 && c.rope_theta == 10000);
        CHECK(c.window == 128 && c.hc_mult == 4 && c.hc_sinkhorn_iters == 20);
        CHECK(c.rope_factor == 16 && c.rope_original_len == 65536 && c.max_position == 1048576);
        CHECK(c.n_layers == cases[i].layers && c.n_routed_experts == cases[i].experts);
        CHECK(c.n_active_experts == cases[i].active && c.n_hash_layers == cases[i].hash);
        CHECK(c.n_mtp_layers == 1);
        for (int l = 0; l <= c.n_layers; l++)
            CHECKF(c.compress_ratio[l] == cases[i].ratios[l], "case %zu: ratio[%d] = %d, want %d",
                   i, l, c.compress_ratio[l], cases[i].ratios[l]);
    }
}

/* pro-shape against V4-Pro's published config.json (the copy shipped as
 * data in tools/model/published/): every per-layer size equal, layers and
 * experts scaled down, Pro's leading HCA layers kept from four layers on. */
static void test_pro_shape(const char *tmp)
{
    const char *src = getenv("TOME_SRCDIR");
    REQUIRE(src && *src, "TOME_SRCDIR is not set (run through `make check`)");
    char pub_path[4096];
    snprintf(pub_path, sizeof pub_path, "%s/tools/model/published/DeepSeek-V4-Pro.config.json",
             src);
    size_t len;
    char *text = ckpt_slurp(pub_path, &len);
    v4_config pro, c;
    tome_error err;
    REQUIRE(v4_config_parse(text, len, pub_path, &pro, &err) == 0, "%s", err.msg);
    free(text);
    const char *out = ckpt_path(tmp, "pro.json");
    CHECK(RUN_TOOL(out, "--preset", "pro-shape", "--layers", "5", "--experts", "8",
                   "--print-config") == 0);
    text = ckpt_slurp(out, &len);
    REQUIRE(v4_config_parse(text, len, out, &c, &err) == 0, "%s", err.msg);
    free(text);
    CHECK(c.n_layers == 5 && c.n_routed_experts == 8 && c.n_active_experts == 6);
    /* what is not scaled must be Pro's own */
    c.n_layers = pro.n_layers;
    c.n_routed_experts = pro.n_routed_experts;
    memcpy(c.compress_ratio, pro.compress_ratio, sizeof c.compress_ratio);
    CHECK(memcmp(&c, &pro, sizeof c) == 0);
    static const int want[] = {128, 128, 4, 128, 4, 0};
    text = ckpt_slurp(out, &len);
    REQUIRE(v4_config_parse(text, len, out, &c, &err) == 0, "%s", err.msg);
    free(text);
    for (int l = 0; l <= 5; l++)
        CHECKF(c.compress_ratio[l] == want[l], "ratio[%d] = %d, want %d", l, c.compress_ratio[l],
               want[l]);
}

int main(void)
{
    const char *tmp = check_tmpdir();
    test_golden_config(tmp, "v4-tiny-a");
    test_golden_config(tmp, "v4-tiny-b");
    test_builtin_tiny();
    test_errors(tmp);
    test_flash_shape(tmp);
    test_pro_shape(tmp);
    int rc = check_finish();
    if (rc == 0) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        rc = system(cmd) == 0 ? 0 : 1;
    }
    return rc;
}
