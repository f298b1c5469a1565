/*
 * config.c - config.json and the tensor manifest it implies.
 *
 * DeepSeek V4 comes in several shapes (Flash, Pro, later re-releases, our
 * tiny test models).  Nothing about a shape is hard-coded in the engine:
 * this file reads every hyper-parameter from the checkpoint's config.json,
 * checks that the values are ones the forward pass can run (multiples of the
 * quantisation blocks, head groups that divide, known compress ratios), and
 * derives from them the exact list of tensors - name, dtype, shape - that a
 * checkpoint for that config must contain.  The loader validates a
 * checkpoint against this manifest and tome-mkmodel writes one from it, so
 * the two can never disagree about what a V4 checkpoint is.
 */
#include "engine/internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size; /* bytes per block */
    int block;   /* values per block */
} dtype_table[V4_DTYPE_COUNT] = {
    [V4_F32] = {"F32", 4, 1},
    [V4_BF16] = {"BF16", 2, 1},
    [V4_F8_E4M3] = {"F8_E4M3", 1, 1},
    [V4_F8_E8M0] = {"F8_E8M0", 1, 1},
    [V4_I8] = {"I8", 1, 1},
    [V4_I64] = {"I64", 8, 1},
    [V4_I32] = {"I32", 4, 1},
    [V4_F16] = {"F16", 2, 1},
    [V4_Q8_0] = {"Q8_0", 34, 32},
    [V4_MXFP4] = {"MXFP4", 17, 32},
    [V4_Q2_K] = {"Q2_K", 84, 256},
    [V4_Q3_K] = {"Q3_K", 110, 256},
    [V4_Q4_K] = {"Q4_K", 144, 256},
    [V4_Q5_K] = {"Q5_K", 176, 256},
    [V4_Q6_K] = {"Q6_K", 210, 256},
    [V4_IQ4_XS] = {"IQ4_XS", 136, 256},
    [V4_IQ2_XXS] = {"IQ2_XXS", 66, 256},
};

size_t v4_dtype_size(v4_dtype t)
{
    return v4_dtype_block(t) == 1 ? dtype_table[t].size : 0;
}

int v4_dtype_block(v4_dtype t)
{
    return (unsigned)t < V4_DTYPE_COUNT ? dtype_table[t].block : 0;
}

size_t v4_dtype_block_bytes(v4_dtype t)
{
    return (unsigned)t < V4_DTYPE_COUNT ? dtype_table[t].size : 0;
}

size_t v4_dtype_row_bytes(v4_dtype t, int64_t cols)
{
    if (t == V4_I8) return (size_t)cols / 2;
    int block = v4_dtype_block(t);
    return block ? (size_t)(cols / block) * dtype_table[t].size : 0;
}

const char *v4_dtype_name(v4_dtype t)
{
    return (unsigned)t < V4_DTYPE_COUNT ? dtype_table[t].name : "?";
}

int v4_dtype_from_name(const char *name, v4_dtype *out)
{
    for (int t = 0; t <= V4_I32; t++)
        if (strcmp(name, dtype_table[t].name) == 0) {
            *out = (v4_dtype)t;
            return 0;
        }
    return TOME_ENOTFOUND;
}

/* ---- config.json ---------------------------------------------------------- */

typedef struct reader {
    json_t *root;
    const char *origin;
    tome_error *err;
    int rc;
} reader;

static json_t *field(reader *r, json_t *obj, const char *key, int required)
{
    json_t *v = json_object_get(obj, key);
    if (!v && required && r->rc == 0)
        r->rc = tome_errorf(r->err, TOME_EFORMAT, "%s: required field \"%s\" is missing", r->origin,
                            key);
    return v;
}

static double get_number(reader *r, json_t *obj, const char *key, int required, double dflt)
{
    json_t *v = field(r, obj, key, required);
    if (!v) return dflt;
    if (!json_is_number(v)) {
        if (r->rc == 0)
            r->rc = tome_errorf(r->err, TOME_EFORMAT, "%s: field \"%s\" must be a number",
                                r->origin, key);
        return dflt;
    }
    return json_number_value(v);
}

static int64_t get_int(reader *r, json_t *obj, const char *key, int required, int64_t dflt)
{
    json_t *v = field(r, obj, key, required);
    if (!v) return dflt;
    if (!json_is_integer(v)) {
        if (r->rc == 0)
            r->rc = tome_errorf(r->err, TOME_EFORMAT, "%s: field \"%s\" must be an integer",
                                r->origin, key);
        return dflt;
    }
    return json_integer_value(v);
}

static int check_positive(reader *r, const char *key, int64_t v, int64_t max)
{
    if (r->rc == 0 && (v <= 0 || v > max))
        r->rc =
            tome_errorf(r->err, TOME_EFORMAT, "%s: field \"%s\" = %lld is out of range (1..%lld)",
                        r->origin, key, (long long)v, (long long)max);
    return (int)v;
}

static int check_multiple(reader *r, const char *what, int64_t v, int64_t of)
{
    if (r->rc == 0 && v % of != 0)
        r->rc = tome_errorf(r->err, TOME_EFORMAT, "%s: %s = %lld must be a multiple of %lld",
                            r->origin, what, (long long)v, (long long)of);
    return r->rc;
}

#define POS_INT(key, max) check_positive(&r, key, get_int(&r, root, key, 1, 0), max)

static void read_compress_ratios(reader *r, v4_config *c)
{
    json_t *arr = field(r, r->root, "compress_ratios", 1);
    if (!arr) return;
    int want = c->n_layers + c->n_mtp_layers;
    if (!json_is_array(arr) || (int)json_array_size(arr) != want) {
        if (r->rc == 0)
            r->rc = tome_errorf(r->err, TOME_EFORMAT,
                                "%s: \"compress_ratios\" must be an array of num_hidden_layers + "
                                "num_nextn_predict_layers = %d integers",
                                r->origin, want);
        return;
    }
    for (int i = 0; i < want; i++) {
        json_t *v = json_array_get(arr, (size_t)i);
        int64_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (x != V4_LAYER_SWA && x != V4_LAYER_CSA && x != V4_LAYER_HCA) {
            /* The compressor's overlap rule exists only for ratio 4 and the
             * window/compressor layout assumes window % ratio == 0; other
             * ratios would need code the reference does not have. */
            if (r->rc == 0)
                r->rc =
                    tome_errorf(r->err, TOME_EFORMAT,
                                "%s: compress_ratios[%d] = %lld; supported ratios are 0, 4, 128",
                                r->origin, i, (long long)x);
            return;
        }
        c->compress_ratio[i] = (int)x;
    }
}

static void read_rope_scaling(reader *r, v4_config *c)
{
    json_t *rs = json_object_get(r->root, "rope_scaling");
    c->rope_factor = 1.0;
    c->rope_original_len = 0;
    c->beta_fast = 32;
    c->beta_slow = 1;
    if (!rs || json_is_null(rs)) return;
    if (!json_is_object(rs)) {
        if (r->rc == 0)
            r->rc = tome_errorf(r->err, TOME_EFORMAT, "%s: \"rope_scaling\" must be an object",
                                r->origin);
        return;
    }
    json_t *type = json_object_get(rs, "type");
    if (!type) type = json_object_get(rs, "rope_type");
    if (type && (!json_is_string(type) || strcmp(json_string_value(type), "yarn") != 0)) {
        if (r->rc == 0)
            r->rc =
                tome_errorf(r->err, TOME_EFORMAT,
                            "%s: rope_scaling.type must be \"yarn\" (V4 uses no other)", r->origin);
        return;
    }
    c->rope_factor = get_number(r, rs, "factor", 1, 1.0);
    c->rope_original_len = get_int(r, rs, "original_max_position_embeddings", 1, 0);
    c->beta_fast = get_number(r, rs, "beta_fast", 0, 32);
    c->beta_slow = get_number(r, rs, "beta_slow", 0, 1);
}

static void check_shapes(reader *r, v4_config *c)
{
    if (r->rc) return;
    /* FP8 weights use 128x128 blocks and activations are quantised in
     * 128-wide blocks; FP4 experts use 32-wide scales. */
    if (check_multiple(r, "hidden_size", c->dim, 128) ||
        check_multiple(r, "q_lora_rank", c->q_lora_rank, 128) ||
        check_multiple(r, "head_dim", c->head_dim, 128) ||
        check_multiple(r, "o_lora_rank", c->o_lora_rank, 128) ||
        check_multiple(r, "moe_intermediate_size", c->moe_inter_dim, 128) ||
        check_multiple(r, "index_head_dim", c->index_head_dim, 64) ||
        check_multiple(r, "num_attention_heads", c->n_heads, c->o_groups) ||
        check_multiple(r, "head_dim - qk_rope_head_dim", c->head_dim - c->rope_dim, 64) ||
        check_multiple(r, "qk_rope_head_dim", c->rope_dim, 2) ||
        check_multiple(r, "sliding_window", c->window, 128))
        return;
    if (c->rope_dim >= c->head_dim || c->rope_dim > c->index_head_dim)
        r->rc = tome_errorf(r->err, TOME_EFORMAT,
                            "%s: qk_rope_head_dim = %d must be below head_dim and index_head_dim",
                            r->origin, c->rope_dim);
    else if (c->n_active_experts > c->n_routed_experts)
        r->rc = tome_errorf(r->err, TOME_EFORMAT,
                            "%s: num_experts_per_tok = %d exceeds n_routed_experts = %d", r->origin,
                            c->n_active_experts, c->n_routed_experts);
    else if (c->n_hash_layers > c->n_layers)
        r->rc = tome_errorf(r->err, TOME_EFORMAT, "%s: num_hash_layers exceeds num_hidden_layers",
                            r->origin);
    else if ((int64_t)c->hc_mult * c->dim > V4_MAX_COLS ||
             (int64_t)c->n_heads * c->head_dim / c->o_groups > V4_MAX_COLS ||
             (int64_t)c->o_groups * c->o_lora_rank > V4_MAX_COLS ||
             (int64_t)c->n_shared_experts * c->moe_inter_dim > V4_MAX_COLS)
        r->rc = tome_errorf(r->err, TOME_EFORMAT,
                            "%s: a weight matrix is wider than the engine's limit of %d columns",
                            r->origin, V4_MAX_COLS);
    else if ((c->index_head_dim & (c->index_head_dim - 1)) != 0)
        r->rc = tome_errorf(r->err, TOME_EFORMAT,
                            "%s: index_head_dim = %d must be a power of two (Hadamard rotation)",
                            r->origin, c->index_head_dim);
}

int v4_config_prefill_chunk(const v4_config *cfg)
{
    enum { STEP = 256, MOST = 2048, TOKENS_PER_EXPERT = 32 };
    int64_t want = (int64_t)TOKENS_PER_EXPERT * cfg->n_routed_experts /
                   (cfg->n_active_experts > 0 ? cfg->n_active_experts : 1);
    int64_t chunk = (want + STEP - 1) / STEP * STEP;
    return chunk < STEP ? STEP : chunk > MOST ? MOST : (int)chunk;
}

int v4_config_parse(const char *json, size_t len, const char *origin, v4_config *cfg,
                    tome_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (!root)
        return tome_errorf(err, TOME_EFORMAT, "%s: invalid JSON at line %d: %s", origin, jerr.line,
                           jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return tome_errorf(err, TOME_EFORMAT, "%s: top level must be an object", origin);
    }
    reader r = {root, origin, err, 0};
    json_t *mt = json_object_get(root, "model_type");
    if (mt && (!json_is_string(mt) || strcmp(json_string_value(mt), "deepseek_v4") != 0))
        r.rc = tome_errorf(err, TOME_EFORMAT, "%s: model_type is not \"deepseek_v4\"", origin);

    cfg->vocab_size = POS_INT("vocab_size", 1 << 24);
    cfg->dim = POS_INT("hidden_size", 1 << 16);
    cfg->n_layers = POS_INT("num_hidden_layers", V4_MAX_LAYERS);
    cfg->n_heads = POS_INT("num_attention_heads", 4096);
    cfg->head_dim = POS_INT("head_dim", 4096);
    cfg->rope_dim = POS_INT("qk_rope_head_dim", 512);
    cfg->q_lora_rank = POS_INT("q_lora_rank", 1 << 16);
    cfg->o_groups = POS_INT("o_groups", 4096);
    cfg->o_lora_rank = POS_INT("o_lora_rank", 1 << 16);
    cfg->window = POS_INT("sliding_window", 1 << 20);
    cfg->n_mtp_layers = (int)get_int(&r, root, "num_nextn_predict_layers", 0, 0);
    if (r.rc == 0 && (cfg->n_mtp_layers < 0 || cfg->n_mtp_layers > 8))
        r.rc = tome_errorf(err, TOME_EFORMAT, "%s: num_nextn_predict_layers out of range", origin);
    cfg->index_n_heads = POS_INT("index_n_heads", 4096);
    cfg->index_head_dim = POS_INT("index_head_dim", 4096);
    cfg->index_topk = POS_INT("index_topk", 1 << 24);
    cfg->n_routed_experts = POS_INT("n_routed_experts", 4096);
    cfg->n_shared_experts = POS_INT("n_shared_experts", 64);
    cfg->n_active_experts = POS_INT("num_experts_per_tok", 64);
    cfg->moe_inter_dim = POS_INT("moe_intermediate_size", 1 << 20);
    cfg->n_hash_layers = (int)get_int(&r, root, "num_hash_layers", 0, 0);
    cfg->hc_mult = POS_INT("hc_mult", 64);
    cfg->hc_sinkhorn_iters = POS_INT("hc_sinkhorn_iters", 1000);
    cfg->bos_id = (int)get_int(&r, root, "bos_token_id", 0, 0);
    cfg->eos_id = (int)get_int(&r, root, "eos_token_id", 0, 1);
    cfg->max_position = get_int(&r, root, "max_position_embeddings", 0, 1048576);
    cfg->hc_eps = get_number(&r, root, "hc_eps", 1, 0);
    cfg->norm_eps = get_number(&r, root, "rms_norm_eps", 1, 0);
    cfg->route_scale = get_number(&r, root, "routed_scaling_factor", 1, 0);
    cfg->swiglu_limit = get_number(&r, root, "swiglu_limit", 0, 0);
    cfg->rope_theta = get_number(&r, root, "rope_theta", 1, 0);
    cfg->compress_rope_theta = get_number(&r, root, "compress_rope_theta", 1, 0);

    json_t *ed = json_object_get(root, "expert_dtype");
    cfg->expert_fp4 = 1;
    if (ed && json_is_string(ed)) {
        const char *s = json_string_value(ed);
        if (strcmp(s, "fp8") == 0)
            cfg->expert_fp4 = 0;
        else if (strcmp(s, "fp4") != 0 && r.rc == 0)
            r.rc = tome_errorf(err, TOME_EFORMAT, "%s: expert_dtype \"%s\" is not fp4 or fp8",
                               origin, s);
    }
    json_t *sf = json_object_get(root, "scoring_func");
    if (sf && (!json_is_string(sf) || strcmp(json_string_value(sf), "sqrtsoftplus") != 0) &&
        r.rc == 0)
        r.rc = tome_errorf(err, TOME_EFORMAT, "%s: scoring_func must be \"sqrtsoftplus\"", origin);
    json_t *nkv = json_object_get(root, "num_key_value_heads");
    if (nkv && (!json_is_integer(nkv) || json_integer_value(nkv) != 1) && r.rc == 0)
        r.rc =
            tome_errorf(err, TOME_EFORMAT, "%s: num_key_value_heads must be 1 (V4 is MQA)", origin);
    if (r.rc == 0) {
        read_rope_scaling(&r, cfg);
        read_compress_ratios(&r, cfg);
        check_shapes(&r, cfg);
    }
    json_decref(root);
    return r.rc;
}

/* ---- the manifest ---------------------------------------------------------- */

typedef struct manifest {
    v4_tensor_spec *v;
    size_t n, cap;
    int failed;
} manifest;

static void add(manifest *m, v4_dtype t, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void add(manifest *m, v4_dtype t, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
{
    if (m->failed) return;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 256;
        v4_tensor_spec *v = realloc(m->v, cap * sizeof *v);
        if (!v) {
            m->failed = 1;
            return;
        }
        m->v = v;
        m->cap = cap;
    }
    v4_tensor_spec *s = &m->v[m->n++];
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->dtype = t;
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* An FP8 matrix [out, in] with its 128x128 block scales. */
static void add_fp8(manifest *m, const char *prefix, const char *name, int64_t out, int64_t in)
{
    add(m, V4_F8_E4M3, 2, out, in, "%s%s.weight", prefix, name);
    add(m, V4_F8_E8M0, 2, ceil_div(out, V4_FP8_BLOCK), ceil_div(in, V4_FP8_BLOCK), "%s%s.scale",
        prefix, name);
}

/* A routed-expert matrix: FP4 pairs with per-32 scales, or FP8. */
static void add_expert(manifest *m, const v4_config *c, const char *prefix, const char *name,
                       int64_t out, int64_t in)
{
    if (!c->expert_fp4) {
        add_fp8(m, prefix, name, out, in);
        return;
    }
    add(m, V4_I8, 2, out, in / 2, "%s%s.weight", prefix, name);
    add(m, V4_F8_E8M0, 2, out, in / V4_FP4_BLOCK, "%s%s.scale", prefix, name);
}

static void add_hc(manifest *m, const v4_config *c, const char *prefix, const char *which)
{
    int64_t mix = (2 + c->hc_mult) * c->hc_mult;
    add(m, V4_F32, 2, mix, (int64_t)c->hc_mult * c->dim, "%shc_%s_fn", prefix, which);
    add(m, V4_F32, 1, mix, 0, "%shc_%s_base", prefix, which);
    add(m, V4_F32, 1, 3, 0, "%shc_%s_scale", prefix, which);
}

static void add_compressor(manifest *m, const v4_config *c, const char *prefix, int ratio,
                           int64_t hd)
{
    int64_t width = (ratio == V4_LAYER_CSA ? 2 : 1) * hd;
    add(m, V4_F32, 2, ratio, width, "%scompressor.ape", prefix);
    add(m, V4_BF16, 2, width, c->dim, "%scompressor.wkv.weight", prefix);
    add(m, V4_BF16, 2, width, c->dim, "%scompressor.wgate.weight", prefix);
    add(m, V4_BF16, 1, hd, 0, "%scompressor.norm.weight", prefix);
}

/* One transformer block; `hash` selects token-id routing. */
static void add_block(manifest *m, const v4_config *c, const char *p, int ratio, int hash)
{
    char a[128];
    int64_t hd = c->head_dim, d = c->dim;
    add_hc(m, c, p, "attn");
    add_hc(m, c, p, "ffn");
    add(m, V4_BF16, 1, d, 0, "%sattn_norm.weight", p);
    add(m, V4_BF16, 1, d, 0, "%sffn_norm.weight", p);
    snprintf(a, sizeof a, "%sattn.", p);
    add(m, V4_F32, 1, c->n_heads, 0, "%sattn_sink", a);
    add_fp8(m, a, "wq_a", c->q_lora_rank, d);
    add(m, V4_BF16, 1, c->q_lora_rank, 0, "%sq_norm.weight", a);
    add_fp8(m, a, "wq_b", (int64_t)c->n_heads * hd, c->q_lora_rank);
    add_fp8(m, a, "wkv", hd, d);
    add(m, V4_BF16, 1, hd, 0, "%skv_norm.weight", a);
    add_fp8(m, a, "wo_a", (int64_t)c->o_groups * c->o_lora_rank,
            (int64_t)c->n_heads * hd / c->o_groups);
    add_fp8(m, a, "wo_b", d, (int64_t)c->o_groups * c->o_lora_rank);
    if (ratio) add_compressor(m, c, a, ratio, hd);
    if (ratio == V4_LAYER_CSA) {
        char ix[160];
        snprintf(ix, sizeof ix, "%sindexer.", a);
        add_fp8(m, ix, "wq_b", (int64_t)c->index_n_heads * c->index_head_dim, c->q_lora_rank);
        add(m, V4_BF16, 2, c->index_n_heads, d, "%sweights_proj.weight", ix);
        add_compressor(m, c, ix, 4, c->index_head_dim);
    }
    char f[128];
    snprintf(f, sizeof f, "%sffn.", p);
    add(m, V4_BF16, 2, c->n_routed_experts, d, "%sgate.weight", f);
    if (hash)
        add(m, V4_I64, 2, c->vocab_size, c->n_active_experts, "%sgate.tid2eid", f);
    else
        add(m, V4_F32, 1, c->n_routed_experts, 0, "%sgate.bias", f);
    for (int e = 0; e < c->n_routed_experts; e++) {
        char ep[160];
        snprintf(ep, sizeof ep, "%sexperts.%d.", f, e);
        add_expert(m, c, ep, "w1", c->moe_inter_dim, d);
        add_expert(m, c, ep, "w2", d, c->moe_inter_dim);
        add_expert(m, c, ep, "w3", c->moe_inter_dim, d);
    }
    char sp[160];
    int64_t si = (int64_t)c->n_shared_experts * c->moe_inter_dim;
    snprintf(sp, sizeof sp, "%sshared_experts.", f);
    add_fp8(m, sp, "w1", si, d);
    add_fp8(m, sp, "w2", d, si);
    add_fp8(m, sp, "w3", si, d);
}

static void add_head(manifest *m, const v4_config *c, const char *p)
{
    add(m, V4_F32, 2, c->hc_mult, (int64_t)c->hc_mult * c->dim, "%shc_head_fn", p);
    add(m, V4_F32, 1, c->hc_mult, 0, "%shc_head_base", p);
    add(m, V4_F32, 1, 1, 0, "%shc_head_scale", p);
}

uint64_t v4_tensor_spec_bytes(const v4_tensor_spec *t)
{
    uint64_t n = v4_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
    return n;
}

int v4_manifest(const v4_config *c, v4_tensor_spec **specs, size_t *n, tome_error *err)
{
    manifest m = {0};
    add(&m, V4_BF16, 2, c->vocab_size, c->dim, "embed.weight");
    for (int l = 0; l < c->n_layers; l++) {
        char p[32];
        snprintf(p, sizeof p, "layers.%d.", l);
        add_block(&m, c, p, c->compress_ratio[l], l < c->n_hash_layers);
    }
    add(&m, V4_BF16, 1, c->dim, 0, "norm.weight");
    add(&m, V4_BF16, 2, c->vocab_size, c->dim, "head.weight");
    add_head(&m, c, "");
    for (int k = 0; k < c->n_mtp_layers; k++) {
        char p[32];
        snprintf(p, sizeof p, "mtp.%d.", k);
        add_block(&m, c, p, c->compress_ratio[c->n_layers + k], 0);
        add_fp8(&m, p, "e_proj", c->dim, c->dim);
        add_fp8(&m, p, "h_proj", c->dim, c->dim);
        add(&m, V4_BF16, 1, c->dim, 0, "%senorm.weight", p);
        add(&m, V4_BF16, 1, c->dim, 0, "%shnorm.weight", p);
        add(&m, V4_BF16, 1, c->dim, 0, "%snorm.weight", p);
        add_head(&m, c, p);
    }
    if (m.failed) {
        free(m.v);
        return tome_errorf(err, TOME_ENOMEM, "out of memory building the tensor manifest");
    }
    *specs = m.v;
    *n = m.n;
    return 0;
}
