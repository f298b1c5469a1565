/*
 * test_hostile_weights.c - a checkpoint whose every weight byte is random
 * (FP8 and FP4 codes that are NaN, E8M0 scales of 2^127 and NaN, BF16 and
 * F32 infinities and NaNs) opens and runs: a prefill of 300 tokens in
 * chunks of 64, which fills every kind of layer's compressed entries and
 * the indexer's choices, then decode steps and the MTP head, for every
 * numerics and kernels pair.  Every call must succeed (a logit may be
 * anything, NaN included) without a crash; under `scripts/check.sh
 * --sanitize` without a sanitizer report either.  The fuzz target
 * fuzz_gguf does the same for GGUF block types; this covers the official
 * layout's own formats.  tests/test_kernels_isa.sh runs it again with
 * each lesser kernel path forced.
 *
 * The model is tome-mkmodel's, made small (two layers, ratios 4 and 128,
 * 512 tokens, two experts, one hash layer), then overwritten in place;
 * only the hash layer's routing table stays valid (0, 1, 0, 1, ...), as
 * the model refuses any other (test_gguf checks that).
 */
#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/v4.h"
#include "tests/check.h"
#include "tests/ckpt_reader.h"

#define PROMPT 300
#define CHUNK  64

/* tools/tome-mkmodel with `args` (NULL-terminated), stdout to `out`. */
static void mkmodel(const char *out, const char *const *args)
{
    REQUIRE(check_run_tool("tools/tome-mkmodel", out, NULL, args) == 0, "tome-mkmodel failed");
}

/* The tiny preset's config.json, made small. */
static void write_config(const char *dir, const char *path)
{
    char printed[4200];
    snprintf(printed, sizeof printed, "%s/tiny.json", dir);
    mkmodel(printed, (const char *const[]){"--preset", "tiny", "--print-config", NULL});
    json_error_t jerr;
    json_t *c = json_load_file(printed, 0, &jerr);
    REQUIRE(c, "%s: %s", printed, jerr.text);
    static const struct {
        const char *key;
        int value;
    } small[] = {{"vocab_size", 512},        {"num_hidden_layers", 2},
                 {"num_hash_layers", 1},     {"n_routed_experts", 2},
                 {"num_experts_per_tok", 1}, {"num_attention_heads", 2},
                 {"index_n_heads", 2},       {"num_nextn_predict_layers", 1}};
    for (size_t i = 0; i < sizeof small / sizeof *small; i++)
        json_object_set_new(c, small[i].key, json_integer(small[i].value));
    json_object_set_new(c, "compress_ratios", json_pack("[i, i, i]", 4, 128, 0));
    REQUIRE(json_dump_file(c, path, 0) == 0, "cannot write %s", path);
    json_decref(c);
}

/* Bytes [begin, end) of a shard replaced by xorshift output `*x`, or for
 * a routing table by the int64 entries 0, 1, 0, 1, ... */
static void fill(uint8_t *p, size_t begin, size_t end, int table, uint64_t *x)
{
    for (size_t k = begin; k < end; k++) {
        *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
        size_t at = k - begin;
        p[k] = table ? (at % 8 ? 0 : (uint8_t)(at / 8 % 2)) : (uint8_t)(*x >> 24);
    }
}

/* Every tensor of the shard at `path` overwritten by fill(). */
static void randomise_shard(const char *path, uint64_t *x)
{
    size_t len;
    uint8_t *p = (uint8_t *)ckpt_slurp(path, &len);
    uint64_t header;
    REQUIRE(len >= 8, "%s: too short", path);
    memcpy(&header, p, 8);
    REQUIRE(header <= len - 8, "%s: bad header length", path);
    json_error_t jerr;
    json_t *h = json_loadb((const char *)p + 8, (size_t)header, 0, &jerr);
    REQUIRE(h, "%s: %s", path, jerr.text);
    const char *name;
    json_t *t;
    json_object_foreach(h, name, t) {
        json_t *off = json_object_get(t, "data_offsets");
        if (!off) continue; /* __metadata__ */
        size_t base = 8 + (size_t)header,
               begin = (size_t)json_integer_value(json_array_get(off, 0)),
               end = (size_t)json_integer_value(json_array_get(off, 1));
        REQUIRE(begin <= end && base + end <= len, "%s: %s lies outside the file", path, name);
        fill(p, base + begin, base + end, strstr(name, "tid2eid") != NULL, x);
    }
    json_decref(h);
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(p, 1, len, f) == len && fclose(f) == 0, "cannot write %s", path);
    free(p);
}

static void randomise(const char *model)
{
    DIR *d = opendir(model);
    REQUIRE(d, "cannot open %s", model);
    uint64_t x = 0x2545F4914F6CDD1Du;
    struct dirent *e;
    int shards = 0;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 12 || strcmp(e->d_name + n - 12, ".safetensors") != 0) continue;
        randomise_shard(ckpt_path(model, e->d_name), &x);
        shards++;
    }
    closedir(d);
    REQUIRE(shards > 0, "%s holds no shard", model);
}

/* The prompt in chunks, decode steps, the MTP head: every call succeeds. */
static void run(const char *model, v4_numerics numerics, v4_kernels kernels)
{
    static const char *const numerics_names[] = {"qat", "fp32", "official"};
    const char *what = numerics_names[numerics],
               *how = kernels == V4_KERNELS_EXACT ? "exact" : "fast";
    v4_open_options o = {.numerics = numerics, .kernels = kernels, .n_threads = 2};
    v4_model *m = NULL;
    v4_state *s = NULL;
    tome_error err = {0};
    REQUIRE(v4_model_open(model, &o, &m, &err) == 0, "%s/%s: %s", what, how, err.msg);
    const v4_config *c = v4_model_config(m);
    size_t hc = (size_t)c->hc_mult * (size_t)c->dim;
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits),
          *hc_out = malloc(hc * sizeof *hc_out), *mtp = malloc((size_t)c->vocab_size * sizeof *mtp);
    REQUIRE(logits && hc_out && mtp, "out of memory");
    REQUIRE(v4_state_new(m, &s, &err) == 0, "%s", err.msg);
    int32_t ids[PROMPT];
    for (int i = 0; i < PROMPT; i++) ids[i] = 3 + i % (c->vocab_size - 3);
    v4_eval ev = {.chunk = CHUNK, .last_logits = logits};
    CHECKF(v4_eval_tokens(s, ids, PROMPT, &ev, &err) == 0, "%s/%s prefill: %s", what, how, err.msg);
    for (int step = 0; step < 3; step++) {
        int32_t next = 5 + step;
        v4_eval one = {.last_logits = logits, .hc_out = hc_out};
        CHECKF(v4_eval_tokens(s, &next, 1, &one, &err) == 0, "%s/%s decode: %s", what, how,
               err.msg);
        CHECKF(v4_mtp_eval(s, hc_out, &next, 1, mtp, NULL, &err) == 0, "%s/%s MTP: %s", what, how,
               err.msg);
    }
    printf("ok: %s numerics, %s kernels: %d prompt tokens, 3 decode steps, MTP\n", what, how,
           PROMPT);
    v4_state_free(s);
    free(logits);
    free(hc_out);
    free(mtp);
    v4_model_free(m);
}

int main(void)
{
    const char *dir = check_tmpdir();
    char config[4200], model[4200];
    snprintf(config, sizeof config, "%s/config.json", dir);
    snprintf(model, sizeof model, "%s/model", dir);
    write_config(dir, config);
    mkmodel(NULL, (const char *const[]){"--config", config, "--seed", "3", "-o", model, NULL});
    randomise(model);
    for (int n = V4_NUMERICS_QAT; n <= V4_NUMERICS_OFFICIAL; n++) {
        run(model, (v4_numerics)n, V4_KERNELS_FAST);
        run(model, (v4_numerics)n, V4_KERNELS_EXACT);
    }
    return check_finish();
}
