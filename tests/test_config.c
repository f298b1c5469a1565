/* engine/config.c: config.json parsing and the tensor manifest, checked
 * against the golden checkpoints' own index files; the default prefill
 * chunk. */
#include "engine/v4.h"
#include "tests/check.h"

#include <jansson.h>

static void load_config(const char *model, v4_config *cfg)
{
    char rel[256], *text;
    size_t len;
    tome_error err = {0};
    snprintf(rel, sizeof rel, "golden/%s/config.json", model);
    const char *path = check_shared_path(rel);
    REQUIRE(tome_read_file(path, 1 << 20, &text, &len, &err) == 0, "%s", err.msg);
    CHECK_OK(v4_config_parse(text, len, path, cfg, &err), &err);
    free(text);
}

/* The manifest must list exactly the tensors of the index's weight_map. */
static void manifest_matches_index(const char *model)
{
    v4_config cfg;
    load_config(model, &cfg);
    v4_tensor_spec *specs;
    size_t n;
    tome_error err = {0};
    CHECK_OK(v4_manifest(&cfg, &specs, &n, &err), &err);
    char rel[256];
    snprintf(rel, sizeof rel, "golden/%s/model.safetensors.index.json", model);
    json_error_t jerr;
    json_t *idx = json_load_file(check_shared_path(rel), 0, &jerr);
    REQUIRE(idx, "%s", jerr.text);
    json_t *map = json_object_get(idx, "weight_map");
    CHECKF(json_object_size(map) == n, "%s: index has %zu tensors, manifest %zu", model,
           json_object_size(map), n);
    for (size_t i = 0; i < n; i++)
        CHECKF(json_object_get(map, specs[i].name) != NULL, "%s: %s not in index", model,
               specs[i].name);
    json_decref(idx);
    free(specs);
}

static void bad_configs(void)
{
    v4_config cfg;
    tome_error err = {0};
    const char *broken = "{\"hidden_size\": 256,";
    CHECK(v4_config_parse(broken, strlen(broken), "x.json", &cfg, &err) == TOME_EFORMAT);
    CHECK(strstr(err.msg, "x.json") != NULL);
    const char *missing = "{\"model_type\": \"deepseek_v4\"}";
    CHECK(v4_config_parse(missing, strlen(missing), "y.json", &cfg, &err) == TOME_EFORMAT);
    CHECKF(strstr(err.msg, "vocab_size") != NULL, "%s", err.msg);
}

/* The default prefill chunk: 256, or about 32 tokens per routed expert
 * (experts x 32 / experts per token, up to a multiple of 256), at most
 * 2048. */
static void prefill_chunks(void)
{
    static const struct {
        int routed, active, chunk;
    } cases[] = {
        {16, 6, 256},    /* the flash-shape bench model: 85 -> 256 */
        {64, 6, 512},    /* 341.3 */
        {256, 6, 1536},  /* V4-Flash: 1365.3 */
        {384, 6, 2048},  /* V4-Pro: exactly 2048 */
        {4096, 2, 2048}, /* the cap */
        {8, 8, 256},     /* dense-like: the floor */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        v4_config cfg = {.n_routed_experts = cases[i].routed, .n_active_experts = cases[i].active};
        int got = v4_config_prefill_chunk(&cfg);
        CHECKF(got == cases[i].chunk, "%d experts, %d a token: chunk %d, want %d", cases[i].routed,
               cases[i].active, got, cases[i].chunk);
    }
}

int main(void)
{
    v4_config a, b;
    load_config("v4-tiny-a", &a);
    load_config("v4-tiny-b", &b);
    CHECK(a.dim == 256 && a.n_layers == 5 && a.compress_ratio[5] == 0 && a.expert_fp4);
    CHECK(b.dim == 128 && b.compress_ratio[0] == 128 && b.compress_ratio[5] == 4 && !b.expert_fp4);
    CHECK(a.rope_factor == 16 && a.rope_original_len == 65536 && a.index_topk == 32);
    manifest_matches_index("v4-tiny-a");
    manifest_matches_index("v4-tiny-b");
    bad_configs();
    prefill_chunks();
    return check_finish();
}
