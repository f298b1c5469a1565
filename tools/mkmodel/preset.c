/*
 * preset.c - config.json for the named presets.
 *
 * A preset is the handful of numbers that differ between V4 shapes; every
 * other key is written with the value both official releases use, in the
 * key order of the official config.json (plus "expert_dtype", which the
 * official inference config has and the engine reads).  The text is parsed
 * back by v4_config_parse before anything is generated, so a preset can
 * never describe a model the engine would refuse.
 *
 * flash-shape layers.  Flash's compress_ratios start [0, 0, 4, 128, 4, ...]:
 * two sliding-window layers, then CSA (ratio 4) and HCA (ratio 128)
 * alternating.  With four layers or more the preset takes Flash's first
 * entries as they are.  With fewer, the two SWA layers are dropped, so a
 * benchmark model of one to three layers still has the compressed kinds
 * that dominate a long prefill: [4], [4, 128], [4, 128, 4].  The first
 * min(3, layers) layers route by token id, like Flash's first three, and
 * the MTP block is ratio 0, like Flash's.
 *
 * pro-shape layers.  The same with V4-Pro's sizes and its leading layers,
 * which are HCA (ratio 128): [128, 128, 4, 128, ...] from four layers on,
 * [4], [4, 128], [4, 128, 4] below.
 */
#include "tools/mkmodel/preset.h"

#include <jansson.h>
#include <string.h>

#include "engine/v4.h"

typedef struct shape {
    int vocab, hidden, layers, heads, head_dim, rope_dim;
    int q_lora, o_groups, o_lora, window;
    int index_heads, index_dim, index_topk;
    int experts, active, moe_inter, hash_layers;
    double route_scale;
    int ratios[V4_MAX_LAYERS + 1]; /* layers + the MTP block */
} shape;

static void tiny_shape(shape *s)
{
    static const int ratios[] = {0, 4, 128, 4, 128, 4};
    *s = (shape){.vocab = 129280,
                 .hidden = 128,
                 .layers = 5,
                 .heads = 4,
                 .head_dim = 128,
                 .rope_dim = 64,
                 .q_lora = 128,
                 .o_groups = 2,
                 .o_lora = 128,
                 .window = 128,
                 .index_heads = 4,
                 .index_dim = 64,
                 .index_topk = 16,
                 .experts = 8,
                 .active = 2,
                 .moe_inter = 128,
                 .hash_layers = 2,
                 .route_scale = 1.5};
    memcpy(s->ratios, ratios, sizeof ratios);
}

/* The published models' per-layer sizes (their config.json files, as in
 * tools/model/published/); layers, experts and ratios are filled in by
 * scaled_shape. */
static const shape flash_dims = {.vocab = 129280,
                                 .hidden = 4096,
                                 .heads = 64,
                                 .head_dim = 512,
                                 .rope_dim = 64,
                                 .q_lora = 1024,
                                 .o_groups = 8,
                                 .o_lora = 1024,
                                 .window = 128,
                                 .index_heads = 64,
                                 .index_dim = 128,
                                 .index_topk = 512,
                                 .moe_inter = 2048,
                                 .route_scale = 1.5};
static const shape pro_dims = {.vocab = 129280,
                               .hidden = 7168,
                               .heads = 128,
                               .head_dim = 512,
                               .rope_dim = 64,
                               .q_lora = 1536,
                               .o_groups = 16,
                               .o_lora = 1024,
                               .window = 128,
                               .index_heads = 64,
                               .index_dim = 128,
                               .index_topk = 1024,
                               .moe_inter = 3072,
                               .route_scale = 2.5};

/* Layer `layer` of `layers`: the model's two leading layers of ratio
 * `lead` (0 in Flash, 128 in Pro) when there are four layers or more,
 * then CSA and HCA alternating. */
static int scaled_ratio(int layer, int layers, int lead)
{
    if (layers >= 4 && layer < 2) return lead;
    int first_compressed = layers >= 4 ? 2 : 0;
    return (layer - first_compressed) % 2 == 0 ? 4 : 128;
}

static void scaled_shape(shape *s, const shape *dims, int lead, int layers, int experts)
{
    *s = *dims;
    s->layers = layers;
    s->experts = experts;
    s->active = experts < 6 ? experts : 6;
    s->hash_layers = layers < 3 ? layers : 3;
    for (int l = 0; l < layers; l++) s->ratios[l] = scaled_ratio(l, layers, lead);
    s->ratios[layers] = 0;
}

static json_t *ratio_array(const shape *s)
{
    json_t *a = json_array();
    for (int l = 0; a && l <= s->layers; l++) json_array_append_new(a, json_integer(s->ratios[l]));
    return a;
}

/* Adds keys to an object in order; remembers any allocation failure. */
typedef struct builder {
    json_t *obj;
    int failed;
} builder;

static void put(builder *b, const char *key, json_t *value)
{
    if (!value || json_object_set_new(b->obj, key, value) != 0) b->failed = 1;
}

static void put_int(builder *b, const char *key, json_int_t value)
{
    put(b, key, json_integer(value));
}

static void put_real(builder *b, const char *key, double value)
{
    put(b, key, json_real(value));
}

static void put_string(builder *b, const char *key, const char *value)
{
    put(b, key, json_string(value));
}

static void put_bool(builder *b, const char *key, int value)
{
    put(b, key, json_boolean(value));
}

static void put_shape(builder *b, const shape *s)
{
    put_int(b, "head_dim", s->head_dim);
    put_string(b, "hidden_act", "silu");
    put_int(b, "hidden_size", s->hidden);
    put_int(b, "index_head_dim", s->index_dim);
    put_int(b, "index_n_heads", s->index_heads);
    put_int(b, "index_topk", s->index_topk);
    put_real(b, "initializer_range", 0.02);
    put_int(b, "max_position_embeddings", 1048576);
    put_string(b, "model_type", "deepseek_v4");
    put_int(b, "moe_intermediate_size", s->moe_inter);
    put_int(b, "n_routed_experts", s->experts);
    put_int(b, "n_shared_experts", 1);
    put_bool(b, "norm_topk_prob", 1);
    put_int(b, "num_attention_heads", s->heads);
    put_int(b, "num_experts_per_tok", s->active);
    put_int(b, "num_hidden_layers", s->layers);
    put_int(b, "num_hash_layers", s->hash_layers);
    put_int(b, "num_key_value_heads", 1);
    put_int(b, "num_nextn_predict_layers", 1);
    put_int(b, "o_groups", s->o_groups);
    put_int(b, "o_lora_rank", s->o_lora);
    put_int(b, "q_lora_rank", s->q_lora);
    put_int(b, "qk_rope_head_dim", s->rope_dim);
}

static json_t *config_object(const shape *s)
{
    builder b = {json_object(), 0};
    if (!b.obj) return NULL;
    put(&b, "architectures", json_pack("[s]", "DeepseekV4ForCausalLM"));
    put_bool(&b, "attention_bias", 0);
    put_real(&b, "attention_dropout", 0.0);
    put_int(&b, "bos_token_id", 0);
    put_int(&b, "eos_token_id", 1);
    put_string(&b, "expert_dtype", "fp4");
    put_real(&b, "hc_eps", 1e-6);
    put_int(&b, "hc_mult", 4);
    put_int(&b, "hc_sinkhorn_iters", 20);
    put_shape(&b, s);
    put(&b, "quantization_config",
        json_pack("{s:s, s:s, s:s, s:s, s:[i, i]}", "activation_scheme", "dynamic", "fmt", "e4m3",
                  "quant_method", "fp8", "scale_fmt", "ue8m0", "weight_block_size", 128, 128));
    put_real(&b, "rms_norm_eps", 1e-6);
    put(&b, "rope_scaling",
        json_pack("{s:i, s:i, s:i, s:i, s:s}", "beta_fast", 32, "beta_slow", 1, "factor", 16,
                  "original_max_position_embeddings", 65536, "type", "yarn"));
    put_int(&b, "rope_theta", 10000);
    put_real(&b, "routed_scaling_factor", s->route_scale);
    put_string(&b, "scoring_func", "sqrtsoftplus");
    put_int(&b, "sliding_window", s->window);
    put_real(&b, "swiglu_limit", 10.0);
    put_bool(&b, "tie_word_embeddings", 0);
    put_string(&b, "topk_method", "noaux_tc");
    put_string(&b, "torch_dtype", "bfloat16");
    put_string(&b, "transformers_version", "4.57.1");
    put_bool(&b, "use_cache", 1);
    put_int(&b, "vocab_size", s->vocab);
    put_int(&b, "compress_rope_theta", 160000);
    put(&b, "compress_ratios", ratio_array(s));
    if (b.failed) {
        json_decref(b.obj);
        return NULL;
    }
    return b.obj;
}

static int shape_for(const char *preset, int layers, int experts, shape *s, tome_error *err)
{
    if (strcmp(preset, "tiny") == 0) {
        if (layers || experts)
            return tome_errorf(err, TOME_EINVAL,
                               "preset tiny has a fixed shape; --layers and --experts apply to "
                               "flash-shape and pro-shape");
        tiny_shape(s);
        return 0;
    }
    int flash = strcmp(preset, "flash-shape") == 0, pro = strcmp(preset, "pro-shape") == 0;
    if (!flash && !pro)
        return tome_errorf(err, TOME_EINVAL, "unknown preset \"%s\" (tiny, flash-shape, pro-shape)",
                           preset);
    layers = layers ? layers : MK_FLASH_DEFAULT_LAYERS;
    experts = experts ? experts : MK_FLASH_DEFAULT_EXPERTS;
    if (layers < 1 || layers > V4_MAX_LAYERS)
        return tome_errorf(err, TOME_EINVAL, "--layers %d: must be 1..%d", layers, V4_MAX_LAYERS);
    if (experts < 1 || experts > 4096)
        return tome_errorf(err, TOME_EINVAL, "--experts %d: must be 1..4096", experts);
    scaled_shape(s, flash ? &flash_dims : &pro_dims, flash ? 0 : 128, layers, experts);
    return 0;
}

int mk_preset_config(const char *preset, int layers, int experts, char **json, tome_error *err)
{
    shape s = {0};
    int rc = shape_for(preset, layers, experts, &s, err);
    if (rc) return rc;
    json_t *root = config_object(&s);
    *json = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))
                 : NULL;
    json_decref(root);
    if (!*json) return tome_errorf(err, TOME_ENOMEM, "preset %s: cannot build config.json", preset);
    return 0;
}
