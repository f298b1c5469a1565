/*
 * main.c - tome-mkmodel: write a random DeepSeek V4 checkpoint.
 *
 * The checkpoint is laid out exactly like an official Hugging Face download
 * (config.json, sharded safetensors with their index, tokenizer.json),
 * stored exactly as official: FP8 e4m3 matrices with ue8m0 128x128 block
 * scales, FP4 e2m1 experts with a scale per 32 inputs, BF16 and F32
 * elsewhere, an I64 hash-routing table.  Only the values are random, and
 * they depend on nothing but the seed, so a model can be regenerated
 * anywhere instead of being shipped.  The engine, its tests, the demo and
 * the benchmarks all run on such models.
 *
 * This file is the command: options, config.json (a preset or a file taken
 * as is), the tensor manifest from engine/config.c (the same list the
 * loader checks against), and the order of the work.  The values are in
 * fill.c, the number formats in quant.c, the container in
 * st.c, the atomic output directory in out.c.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "common/options.h"
#include "tools/mkmodel/fill.h"
#include "tools/mkmodel/out.h"
#include "tools/mkmodel/preset.h"
#include "tools/mkmodel/st.h"
#include "engine/v4.h"

#define CONFIG_MAX_BYTES    (1u << 20)
#define TOKENIZER_MAX_BYTES (256u << 20)
#define DEFAULT_SHARD_BYTES (4ull << 30)
#define DEFAULT_SEED        1

typedef struct options {
    const char *preset;
    const char *config_path;
    const char *tokenizer_path;
    const char *out_dir;
    int layers, experts, threads;
    uint64_t seed;
    uint64_t shard_bytes;
    int print_config;
} options;

static options opt = {.seed = DEFAULT_SEED, .shard_bytes = DEFAULT_SHARD_BYTES};
static const tome_option option_table[] = {
    TOME_STRING(
        "preset", 0, "NAME", opt.preset,
        "tiny (built-in demo model), flash-shape or pro-shape (V4-Flash/V4-Pro layer sizes)"),
    TOME_INT("layers", 0, "N", opt.layers, 1, 1000000, "flash-/pro-shape: main layers (default 2)"),
    TOME_INT("experts", 0, "N", opt.experts, 1, 1000000,
             "flash-/pro-shape: routed experts per layer (default 16)"),
    TOME_STRING("config", 0, "FILE", opt.config_path, "use this config.json as is"),
    TOME_UINT("seed", 0, "S", opt.seed, 0, -1,
              "random seed (default 1); equal seeds give identical files"),
    TOME_STRING("tokenizer", 0, "FILE", opt.tokenizer_path,
                "copy this tokenizer.json into the model"),
    TOME_SIZE("shard-size", 0, "BYTES", opt.shard_bytes, 1, -1,
              "tensor bytes per shard, suffix K, M, G or T (default 4G)"),
    TOME_INT("threads", 0, "N", opt.threads, 1, MK_MAX_THREADS,
             "worker threads (default: the online CPUs); no effect on bytes"),
    TOME_FLAG("print-config", 0, opt.print_config, "print the config.json and exit"),
    TOME_STRING("output", 'o', "DIR", opt.out_dir,
                "the model directory (must not exist, or be empty)"),
};
static const tome_cli cli = {
    .program = "tome-mkmodel",
    .usage =
        "--preset tiny|flash-shape|pro-shape [--layers N] [--experts N]\n"
        "                    [--seed S] [--tokenizer FILE] [--shard-size BYTES] [--threads N]\n"
        "                    -o DIR\n"
        "       tome-mkmodel --config FILE [--seed S] [--tokenizer FILE]"
        " [--shard-size BYTES] -o DIR\n"
        "       tome-mkmodel --preset NAME|--config FILE --print-config\n"
        "Writes a random DeepSeek V4 checkpoint in the official layout to DIR.",
    .options = option_table,
    .n_options = sizeof option_table / sizeof option_table[0]};

/* The combinations tome-mkmodel refuses; the default thread count. */
static int check_options(void *ctx, int n_operands, char **argv, tome_error *err)
{
    (void)ctx;
    if (n_operands) return tome_errorf(err, TOME_EINVAL, "unexpected argument: %s", argv[1]);
    if (!opt.preset == !opt.config_path)
        return tome_errorf(err, TOME_EINVAL, "give exactly one of --preset and --config");
    if (opt.config_path && (opt.layers || opt.experts))
        return tome_errorf(err, TOME_EINVAL, "--layers and --experts go with --preset");
    if (!opt.out_dir && !opt.print_config)
        return tome_errorf(err, TOME_EINVAL, "no output directory (-o DIR)");
    if (!opt.threads) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        opt.threads = cpus < 1 ? 1 : cpus > MK_MAX_THREADS ? MK_MAX_THREADS : (int)cpus;
    }
    return 0;
}

static int config_text(const options *o, char **text, size_t *len, tome_error *err)
{
    if (o->config_path) return tome_read_file(o->config_path, CONFIG_MAX_BYTES, text, len, err);
    int rc = mk_preset_config(o->preset, o->layers, o->experts, text, err);
    if (rc == 0) *len = strlen(*text);
    return rc;
}

/* The largest token id a tokenizer.json defines, plus one. */
static int tokenizer_ids(const char *path, const char *text, size_t len, int64_t *n,
                         tome_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root)
        return tome_errorf(err, TOME_EFORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line,
                           jerr.text);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *added = json_object_get(root, "added_tokens");
    const char *key;
    json_t *v;
    size_t i;
    *n = 0;
    json_object_foreach(vocab, key, v) {
        if (json_integer_value(v) + 1 > *n) *n = json_integer_value(v) + 1;
    }
    json_array_foreach(added, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id + 1 > *n) *n = id + 1;
    }
    json_decref(root);
    if (*n == 0)
        return tome_errorf(err, TOME_EFORMAT, "%s: no model.vocab or added_tokens ids", path);
    return 0;
}

/* Copy the tokenizer in, refusing one with ids the model has no rows for. */
static int add_tokenizer(const mk_outdir *out, const char *src, const v4_config *cfg,
                         tome_error *err)
{
    char *text, dst[4096];
    size_t len;
    int64_t n_ids;
    int rc = tome_read_file(src, TOKENIZER_MAX_BYTES, &text, &len, err);
    if (rc) return rc;
    rc = tokenizer_ids(src, text, len, &n_ids, err);
    if (rc == 0 && n_ids > cfg->vocab_size)
        rc = tome_errorf(err, TOME_EMISMATCH,
                         "%s: token ids go up to %lld but the model's vocab_size is %d", src,
                         (long long)n_ids - 1, cfg->vocab_size);
    if (rc == 0) rc = mk_outdir_file(out, "tokenizer.json", dst, sizeof dst, err);
    if (rc == 0) rc = tome_write_file_atomic(dst, text, len, err);
    free(text);
    return rc;
}

static int produce_tensor(void *ctx, const v4_tensor_spec *t, mk_sink sink, void *sink_ctx,
                          tome_error *err)
{
    return mk_fill_tensor(ctx, t, sink, sink_ctx, err);
}

static int write_model(const options *o, const char *cfg_text, size_t cfg_len, const v4_config *cfg,
                       tome_error *err)
{
    v4_tensor_spec *specs = NULL;
    size_t n = 0;
    mk_fill *fill = NULL;
    mk_outdir out;
    mk_st_summary sum;
    char path[4096];
    double t0 = tome_now();
    int rc = v4_manifest(cfg, &specs, &n, err);
    if (rc) return rc;
    rc = mk_outdir_begin(&out, o->out_dir, err);
    if (rc) {
        free(specs);
        return rc;
    }
    rc = mk_outdir_file(&out, "config.json", path, sizeof path, err);
    if (rc == 0) rc = tome_write_file_atomic(path, cfg_text, cfg_len, err);
    if (rc == 0 && o->tokenizer_path) rc = add_tokenizer(&out, o->tokenizer_path, cfg, err);
    if (rc == 0) rc = mk_fill_new(o->seed, o->threads, cfg, specs, n, &fill, err);
    if (rc == 0)
        rc = mk_st_write(out.tmp, specs, n, o->shard_bytes, produce_tensor, fill, &sum, err);
    if (rc == 0) rc = mk_outdir_commit(&out, err);
    if (rc)
        mk_outdir_abort(&out);
    else
        fprintf(stderr, "tome-mkmodel: %s: %zu tensors, %zu shards, %llu bytes, %.2f s\n",
                out.final, n, sum.n_shards, (unsigned long long)sum.file_bytes, tome_now() - t0);
    mk_fill_free(fill);
    free(specs);
    return rc;
}

int main(int argc, char **argv)
{
    tome_error err = {0};
    char *text = NULL;
    size_t len = 0;
    v4_config cfg;
    int n_operands, status;
    if (tome_options_start(&cli, argc, argv, NULL, check_options, 2, &n_operands, &status))
        return status;
    const options o = opt;
    int rc = config_text(&o, &text, &len, &err);
    if (rc == 0)
        rc = v4_config_parse(text, len, o.config_path ? o.config_path : o.preset, &cfg, &err);
    if (rc == 0 && o.print_config)
        fwrite(text, 1, len, stdout);
    else if (rc == 0)
        rc = write_model(&o, text, len, &cfg, &err);
    free(text);
    if (rc) {
        fprintf(stderr, "tome-mkmodel: %s\n", err.msg);
        return 1;
    }
    return 0;
}
