/*
 * gguf_model.c - a GGUF file in llama.cpp's DeepSeek V4 layout
 * (general.architecture "deepseek4") opened as a V4 checkpoint.
 *
 * The metadata becomes a config.json-shaped object (table `keys` below:
 * each GGUF key and the Hugging Face field it stands for), which
 * v4_config_parse then checks like any config.json, so a GGUF and an
 * official checkpoint obey the same rules.  The config implies the manifest
 * (config.c); each manifest name maps to a GGUF tensor name (table `names`
 * and v4_gguf_name), FP8/FP4 scale tensors have no GGUF counterpart (GGUF
 * stores quantised weights in its own block types), and the routed experts
 * of a block are one stacked tensor per projection, split here into one
 * view per expert.  Every tensor is checked: present, a type the engine
 * reads and the role allows, ggml dims equal to the manifest's shape
 * reversed (ggml lists the row first), none left over.  The checkpoint
 * this builds holds the manifest's names, so model.c binds GGUF and
 * safetensors checkpoints the same way.
 *
 * The MTP block: llama.cpp appends it as block n_layers ("blk.43." in
 * Flash) with its own tensors under "blk.43.nextn."; ds4 writes it as
 * "mtp.0." with plain names (mtp.0.e_proj.weight, mtp.0.norm.weight).
 * Both are accepted.  docs/GGUF.md lists the full mapping.
 */
#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- metadata -> config ------------------------------------------------------ */

enum { INT, REAL, OPT_INT, OPT_REAL };

static const struct {
    const char *gguf; /* after "deepseek4." */
    const char *hf;
    int kind;
} keys[] = {
    {"context_length", "max_position_embeddings", OPT_INT},
    {"embedding_length", "hidden_size", INT},
    {"attention.head_count", "num_attention_heads", INT},
    {"attention.head_count_kv", "num_key_value_heads", OPT_INT},
    {"attention.key_length", "head_dim", INT},
    {"attention.q_lora_rank", "q_lora_rank", INT},
    {"attention.output_lora_rank", "o_lora_rank", INT},
    {"attention.output_group_count", "o_groups", INT},
    {"attention.sliding_window", "sliding_window", INT},
    {"attention.compress_rope_freq_base", "compress_rope_theta", REAL},
    {"attention.layer_norm_rms_epsilon", "rms_norm_eps", REAL},
    {"attention.indexer.head_count", "index_n_heads", INT},
    {"attention.indexer.key_length", "index_head_dim", INT},
    {"attention.indexer.top_k", "index_topk", INT},
    {"rope.dimension_count", "qk_rope_head_dim", INT},
    {"rope.freq_base", "rope_theta", REAL},
    {"expert_count", "n_routed_experts", INT},
    {"expert_used_count", "num_experts_per_tok", INT},
    {"expert_shared_count", "n_shared_experts", INT},
    {"expert_feed_forward_length", "moe_intermediate_size", INT},
    {"expert_weights_scale", "routed_scaling_factor", REAL},
    {"hash_layer_count", "num_hash_layers", OPT_INT},
    {"swiglu_clamp_exp", "swiglu_limit", OPT_REAL},
    {"hyper_connection.count", "hc_mult", INT},
    {"hyper_connection.sinkhorn_iterations", "hc_sinkhorn_iters", INT},
    {"hyper_connection.epsilon", "hc_eps", REAL},
    {"nextn_predict_layers", "num_nextn_predict_layers", OPT_INT},
};

typedef struct meta {
    const v4_gguf *g;
    json_t *root;
    tome_error *err;
    int rc;
} meta;

static const v4_gguf_kv *arch_key(meta *m, const char *name, int required)
{
    char full[128];
    snprintf(full, sizeof full, "deepseek4.%s", name);
    const v4_gguf_kv *kv = v4_gguf_find(m->g, full);
    if (!kv && required && m->rc == 0)
        m->rc =
            tome_errorf(m->err, TOME_EFORMAT, "%s: metadata key %s is missing", m->g->path, full);
    return kv;
}

/* A number (element 0 of a per-layer array, whose values must agree). */
static int number(meta *m, const v4_gguf_kv *kv, double *out)
{
    if (m->rc == 0) m->rc = v4_gguf_number(m->g, kv, 0, out, m->err);
    for (uint64_t i = 1; m->rc == 0 && kv->type == V4_GGUF_ARRAY && i < kv->count; i++) {
        double v;
        if ((m->rc = v4_gguf_number(m->g, kv, i, &v, m->err)) == 0 && v != *out)
            m->rc = tome_errorf(m->err, TOME_EFORMAT,
                                "%s: %s differs between layers; tome needs one value", m->g->path,
                                kv->key);
    }
    return m->rc;
}

static void set_number(meta *m, const char *hf, double v, int real)
{
    if (m->rc) return;
    json_object_set_new(m->root, hf, real ? json_real(v) : json_integer((json_int_t)v));
}

static void copy_keys(meta *m)
{
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && m->rc == 0; i++) {
        int opt = keys[i].kind == OPT_INT || keys[i].kind == OPT_REAL;
        const v4_gguf_kv *kv = arch_key(m, keys[i].gguf, !opt);
        double v;
        if (kv && number(m, kv, &v) == 0)
            set_number(m, keys[i].hf, v, keys[i].kind == REAL || keys[i].kind == OPT_REAL);
    }
}

static void copy_rope_scaling(meta *m)
{
    const v4_gguf_kv *type = arch_key(m, "rope.scaling.type", 0);
    if (!type || m->rc) return;
    json_t *rs = json_object();
    json_object_set_new(m->root, "rope_scaling", rs);
    json_object_set_new(rs, "type", json_stringn((const char *)type->data, type->count));
    static const char *const pairs[][2] = {
        {"rope.scaling.factor", "factor"},
        {"rope.scaling.original_context_length", "original_max_position_embeddings"},
        {"rope.scaling.yarn_beta_fast", "beta_fast"},
        {"rope.scaling.yarn_beta_slow", "beta_slow"}};
    for (int i = 0; i < 4 && m->rc == 0; i++) {
        const v4_gguf_kv *kv = arch_key(m, pairs[i][0], i < 2);
        double v;
        if (kv && number(m, kv, &v) == 0)
            json_object_set_new(rs, pairs[i][1],
                                i == 1 ? json_integer((json_int_t)v) : json_real(v));
    }
}

/* block_count counts the appended MTP block; compress_ratios may list one
 * more value than the blocks present (ds4's main file keeps the MTP's). */
static void copy_layers(meta *m)
{
    double blocks = 0, nextn = 0;
    const v4_gguf_kv *bc = arch_key(m, "block_count", 1);
    const v4_gguf_kv *nx = arch_key(m, "nextn_predict_layers", 0);
    if (bc) number(m, bc, &blocks);
    if (nx) number(m, nx, &nextn);
    set_number(m, "num_hidden_layers", blocks - nextn, 0);
    const v4_gguf_kv *cr = arch_key(m, "attention.compress_ratios", 1);
    if (m->rc) return;
    if (cr->type != V4_GGUF_ARRAY || cr->count < (uint64_t)blocks)
        m->rc = tome_errorf(m->err, TOME_EFORMAT,
                            "%s: deepseek4.attention.compress_ratios must be an array of at least "
                            "block_count = %.0f numbers",
                            m->g->path, blocks);
    json_t *arr = json_array();
    json_object_set_new(m->root, "compress_ratios", arr);
    for (uint64_t i = 0; m->rc == 0 && i < (uint64_t)blocks; i++) {
        double v;
        if ((m->rc = v4_gguf_number(m->g, cr, i, &v, m->err)) == 0)
            json_array_append_new(arr, json_integer((json_int_t)v));
    }
}

/* Settings V4 fixes that the file may state: refuse any other value. */
static void check_fixed(meta *m)
{
    const v4_gguf_kv *arch = v4_gguf_find(m->g, "general.architecture");
    if (!arch || arch->type != V4_GGUF_STRING || arch->count != 9 ||
        memcmp(arch->data, "deepseek4", 9) != 0) {
        m->rc = tome_errorf(m->err, TOME_EFORMAT,
                            "%s: general.architecture is not \"deepseek4\" (tome runs DeepSeek V4 "
                            "only)",
                            m->g->path);
        return;
    }
    const v4_gguf_kv *gf = arch_key(m, "expert_gating_func", 0),
                     *wn = arch_key(m, "expert_weights_norm", 0);
    double v;
    if (gf && number(m, gf, &v) == 0 && v != 4)
        m->rc =
            tome_errorf(m->err, TOME_EFORMAT,
                        "%s: deepseek4.expert_gating_func = %.0f; V4 routes by sqrt(softplus) (4)",
                        m->g->path, v);
    if (wn && number(m, wn, &v) == 0 && v != 1)
        m->rc =
            tome_errorf(m->err, TOME_EFORMAT,
                        "%s: deepseek4.expert_weights_norm is false; V4 normalises", m->g->path);
}

static void copy_tokens(meta *m)
{
    static const char *const ids[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token_id"},
                                         {"tokenizer.ggml.eos_token_id", "eos_token_id"}};
    for (int i = 0; i < 2 && m->rc == 0; i++) {
        const v4_gguf_kv *kv = v4_gguf_find(m->g, ids[i][0]);
        double v;
        if (kv && number(m, kv, &v) == 0) set_number(m, ids[i][1], v, 0);
    }
    const v4_gguf_kv *vs = arch_key(m, "vocab_size", 0);
    const v4_gguf_kv *tokens = v4_gguf_find(m->g, "tokenizer.ggml.tokens");
    double v = 0;
    if (vs)
        number(m, vs, &v);
    else if (tokens && tokens->type == V4_GGUF_ARRAY)
        v = (double)tokens->count;
    else if (m->rc == 0)
        m->rc = tome_errorf(m->err, TOME_EFORMAT,
                            "%s: no deepseek4.vocab_size and no tokenizer.ggml.tokens", m->g->path);
    set_number(m, "vocab_size", v, 0);
}

static int gguf_config(const v4_gguf *g, v4_config *cfg, tome_error *err)
{
    meta m = {g, json_object(), err, 0};
    if (!m.root) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    json_object_set_new(m.root, "model_type", json_string("deepseek_v4"));
    check_fixed(&m);
    copy_keys(&m);
    copy_layers(&m);
    copy_rope_scaling(&m);
    copy_tokens(&m);
    char *text = m.rc == 0 ? json_dumps(m.root, JSON_COMPACT) : NULL;
    if (m.rc == 0 && !text) m.rc = tome_errorf(err, TOME_ENOMEM, "out of memory");
    char origin[4200];
    snprintf(origin, sizeof origin, "%s (metadata read as config.json)", g->path);
    if (m.rc == 0) m.rc = v4_config_parse(text, strlen(text), origin, cfg, err);
    free(text);
    json_decref(m.root);
    return m.rc;
}

/* ---- manifest names -> GGUF names ---------------------------------------------- */

/* Per-block names: manifest suffix, GGUF suffix, and the ds4 MTP file's
 * suffix where it differs from llama.cpp's "nextn." one. */
static const struct {
    const char *hf, *gguf, *ds4_mtp;
} names[] = {
    {"hc_attn_fn", "hc_attn_fn.weight", NULL},
    {"hc_attn_base", "hc_attn_base.weight", NULL},
    {"hc_attn_scale", "hc_attn_scale.weight", NULL},
    {"hc_ffn_fn", "hc_ffn_fn.weight", NULL},
    {"hc_ffn_base", "hc_ffn_base.weight", NULL},
    {"hc_ffn_scale", "hc_ffn_scale.weight", NULL},
    {"attn_norm.weight", "attn_norm.weight", NULL},
    {"ffn_norm.weight", "ffn_norm.weight", NULL},
    {"attn.wq_a.weight", "attn_q_a.weight", NULL},
    {"attn.q_norm.weight", "attn_q_a_norm.weight", NULL},
    {"attn.wq_b.weight", "attn_q_b.weight", NULL},
    {"attn.wkv.weight", "attn_kv.weight", NULL},
    {"attn.kv_norm.weight", "attn_kv_a_norm.weight", NULL},
    {"attn.attn_sink", "attn_sinks.weight", NULL},
    {"attn.wo_a.weight", "attn_output_a.weight", NULL},
    {"attn.wo_b.weight", "attn_output_b.weight", NULL},
    {"attn.compressor.ape", "attn_compressor_ape.weight", NULL},
    {"attn.compressor.wkv.weight", "attn_compressor_kv.weight", NULL},
    {"attn.compressor.wgate.weight", "attn_compressor_gate.weight", NULL},
    {"attn.compressor.norm.weight", "attn_compressor_norm.weight", NULL},
    {"attn.indexer.wq_b.weight", "indexer.attn_q_b.weight", NULL},
    {"attn.indexer.weights_proj.weight", "indexer.proj.weight", NULL},
    {"attn.indexer.compressor.ape", "indexer_compressor_ape.weight", NULL},
    {"attn.indexer.compressor.wkv.weight", "indexer_compressor_kv.weight", NULL},
    {"attn.indexer.compressor.wgate.weight", "indexer_compressor_gate.weight", NULL},
    {"attn.indexer.compressor.norm.weight", "indexer_compressor_norm.weight", NULL},
    {"ffn.gate.weight", "ffn_gate_inp.weight", NULL},
    {"ffn.gate.bias", "exp_probs_b.bias", NULL},
    {"ffn.gate.tid2eid", "ffn_gate_tid2eid.weight", NULL},
    {"ffn.shared_experts.w1.weight", "ffn_gate_shexp.weight", NULL},
    {"ffn.shared_experts.w2.weight", "ffn_down_shexp.weight", NULL},
    {"ffn.shared_experts.w3.weight", "ffn_up_shexp.weight", NULL},
    {"e_proj.weight", "nextn.e_proj.weight", "e_proj.weight"},
    {"h_proj.weight", "nextn.h_proj.weight", "h_proj.weight"},
    {"enorm.weight", "nextn.enorm.weight", "enorm.weight"},
    {"hnorm.weight", "nextn.hnorm.weight", "hnorm.weight"},
    {"norm.weight", "nextn.shared_head_norm.weight", "norm.weight"},
    {"hc_head_fn", "nextn.hc_head_fn.weight", "hc_head_fn.weight"},
    {"hc_head_base", "nextn.hc_head_base.weight", "hc_head_base.weight"},
    {"hc_head_scale", "nextn.hc_head_scale.weight", "hc_head_scale.weight"},
};

static const char *const top_level[][2] = {
    {"embed.weight", "token_embd.weight"},     {"norm.weight", "output_norm.weight"},
    {"head.weight", "output.weight"},          {"hc_head_fn", "output_hc_fn.weight"},
    {"hc_head_base", "output_hc_base.weight"}, {"hc_head_scale", "output_hc_scale.weight"},
};

/* Routed experts: "ffn.experts.E.wK.weight" -> the stacked tensor. */
static const char *expert_name(const char *rest, int *expert)
{
    int e, k, used = 0;
    if (sscanf(rest, "ffn.experts.%d.w%d.weight%n", &e, &k, &used) != 2 || rest[used] != 0)
        return NULL;
    *expert = e;
    return k == 1 ? "ffn_gate_exps.weight" : k == 2 ? "ffn_down_exps.weight" : "ffn_up_exps.weight";
}

int v4_gguf_name(const v4_config *c, const char *hf, int variant, char *out, size_t cap,
                 int *expert)
{
    *expert = -1;
    int l, used = 0, mtp = 0;
    if (sscanf(hf, "layers.%d.%n", &l, &used) != 1 || used == 0) {
        used = 0;
        if (sscanf(hf, "mtp.%d.%n", &l, &used) != 1 || used == 0) {
            for (size_t i = 0; i < sizeof top_level / sizeof top_level[0]; i++)
                if (strcmp(hf, top_level[i][0]) == 0) {
                    snprintf(out, cap, "%s", top_level[i][1]);
                    return 0;
                }
            return TOME_ENOTFOUND;
        }
        mtp = 1;
    }
    const char *rest = hf + used, *suffix = expert_name(rest, expert);
    for (size_t i = 0; !suffix && i < sizeof names / sizeof names[0]; i++)
        if (strcmp(rest, names[i].hf) == 0)
            suffix = variant && names[i].ds4_mtp ? names[i].ds4_mtp : names[i].gguf;
    if (!suffix) return TOME_ENOTFOUND;
    if (mtp && variant)
        snprintf(out, cap, "mtp.%d.%s", l, suffix);
    else
        snprintf(out, cap, "blk.%d.%s", mtp ? c->n_layers + l : l, suffix);
    return 0;
}

/* ---- checking and presenting the tensors ------------------------------------------- */

typedef struct binder {
    const v4_gguf *g;
    const v4_config *cfg;
    v4_checkpoint *ck;
    uint8_t *used; /* per GGUF tensor */
    tome_error *err;
} binder;

static int is_scale(const char *name)
{
    size_t n = strlen(name);
    return n > 6 && strcmp(name + n - 6, ".scale") == 0;
}

/* The manifest's shape in values (FP4 I8 tensors list bytes). */
static void logical_shape(const v4_tensor_spec *s, int64_t *shape)
{
    for (int i = 0; i < s->ndim; i++) shape[i] = s->shape[i];
    if (s->dtype == V4_I8) shape[1] *= 2;
}

static int type_allowed(const v4_tensor_spec *s, const v4_gguf_tensor *t, const char **want)
{
    if (s->dtype == V4_I64) {
        *want = "I32";
        return t->dtype == V4_I32;
    }
    if (s->ndim == 1) {
        *want = "F32, F16 or BF16";
        return t->dtype == V4_F32 || t->dtype == V4_F16 || t->dtype == V4_BF16;
    }
    *want = "a float or quantised type";
    return t->dtype != V4_I32;
}

static int check_dims(binder *b, const v4_gguf_tensor *t, const int64_t *shape, int ndim,
                      int experts)
{
    int64_t want[4];
    int n = 0;
    for (int i = ndim - 1; i >= 0; i--) want[n++] = shape[i];
    if (experts) want[n++] = experts;
    int ok = t->ndim == n;
    for (int i = 0; ok && i < n; i++) ok = t->ne[i] == want[i];
    if (ok) return 0;
    char got[96] = "", exp[96] = "";
    for (int i = 0; i < t->ndim; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                 (long long)t->ne[i]);
    for (int i = 0; i < n; i++)
        snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", i ? ", " : "",
                 (long long)want[i]);
    return tome_errorf(b->err, TOME_EFORMAT,
                       "%s: tensor %s has dims [%s], the metadata implies [%s]", b->g->path,
                       t->name, got, exp);
}

static const v4_gguf_tensor *lookup(binder *b, const v4_tensor_spec *s, int *expert, char *name,
                                    size_t cap)
{
    for (int variant = 0; variant < 2; variant++) {
        if (v4_gguf_name(b->cfg, s->name, variant, name, cap, expert) != 0) return NULL;
        const v4_gguf_tensor *t = v4_gguf_tensor_find(b->g, name);
        if (t || strncmp(s->name, "mtp.", 4) != 0) return t;
    }
    v4_gguf_name(b->cfg, s->name, 0, name, cap, expert);
    return NULL;
}

static int bind_spec(binder *b, const v4_tensor_spec *s)
{
    char name[160];
    int expert;
    const v4_gguf_tensor *t = lookup(b, s, &expert, name, sizeof name);
    if (!t)
        return tome_errorf(b->err, TOME_EFORMAT, "%s: tensor %s (%s) is missing", b->g->path, name,
                           s->name);
    const char *want;
    if (!type_allowed(s, t, &want))
        return tome_errorf(b->err, TOME_EFORMAT, "%s: tensor %s has type %s; it must be %s",
                           b->g->path, t->name, v4_dtype_name(t->dtype), want);
    v4_ckpt_tensor *ct = &b->ck->tensors[b->ck->n_tensors];
    memset(ct, 0, sizeof *ct);
    logical_shape(s, ct->shape);
    int first = !b->used[t - b->g->tensors];
    int rc = first
                 ? check_dims(b, t, ct->shape, s->ndim, expert >= 0 ? b->cfg->n_routed_experts : 0)
                 : 0;
    if (rc) return rc;
    b->used[t - b->g->tensors] = 1;
    if (!(ct->name = strdup(s->name))) return tome_errorf(b->err, TOME_ENOMEM, "out of memory");
    b->ck->n_tensors++;
    ct->dtype = t->dtype;
    ct->ndim = s->ndim;
    ct->data = t->data;
    ct->nbytes = t->nbytes;
    if (expert >= 0) { /* one expert's [out][in] slice of the stack */
        ct->nbytes = t->nbytes / (size_t)b->cfg->n_routed_experts;
        ct->data += (size_t)expert * ct->nbytes;
    }
    return 0;
}

static int bind_specs(binder *b, const v4_tensor_spec *specs, size_t n)
{
    b->ck->tensors = calloc(n ? n : 1, sizeof *b->ck->tensors);
    b->used = calloc(b->g->n_tensors ? b->g->n_tensors : 1, 1);
    if (!b->ck->tensors || !b->used) return tome_errorf(b->err, TOME_ENOMEM, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (!is_scale(specs[i].name)) rc = bind_spec(b, &specs[i]);
    for (size_t i = 0; i < b->g->n_tensors && rc == 0; i++)
        if (!b->used[i])
            rc = tome_errorf(b->err, TOME_EFORMAT,
                             "%s: unexpected tensor %s (not implied by the metadata)", b->g->path,
                             b->g->tensors[i].name);
    return rc;
}

/* ---- opening --------------------------------------------------------------------- */

int v4_gguf_is_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char magic[4];
    struct stat st;
    int yes = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && read(fd, magic, 4) == 4 &&
              memcmp(magic, "GGUF", 4) == 0;
    close(fd);
    return yes;
}

/* The file as the checkpoint's one shard. */
static int map_file(v4_checkpoint *ck, const char *path, tome_error *err)
{
    ck->shards = calloc(1, sizeof *ck->shards);
    if (!ck->shards) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    ck->n_shards = 1;
    v4_shard *s = &ck->shards[0];
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    s->path = strdup(path);
    s->file = strdup(path);
    if (!s->path || !s->file) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    if (s->fd < 0) return tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(s->fd, &st) != 0) return tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno));
    s->size = (size_t)st.st_size;
    if (s->size == 0) return tome_errorf(err, TOME_EFORMAT, "%s: empty file", path);
    s->map = mmap(NULL, s->size, PROT_READ, MAP_SHARED, s->fd, 0);
    if (s->map == MAP_FAILED) {
        s->map = NULL;
        return tome_errorf(err, TOME_EIO, "%s: mmap failed: %s", path, strerror(errno));
    }
    return 0;
}

static int name_table(v4_checkpoint *ck, tome_error *err)
{
    if (!(ck->by_name = json_object())) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    for (size_t i = 0; i < ck->n_tensors; i++)
        if (json_object_set_new(ck->by_name, ck->tensors[i].name, json_integer((json_int_t)i)))
            return tome_errorf(err, TOME_ENOMEM, "out of memory");
    return 0;
}

int v4_gguf_checkpoint(const char *path, v4_config *cfg, v4_checkpoint **out, tome_error *err)
{
    *out = NULL;
    v4_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->dir = strdup(path))) {
        free(ck);
        return tome_errorf(err, TOME_ENOMEM, "out of memory");
    }
    v4_tensor_spec *specs = NULL;
    size_t n = 0;
    int rc = map_file(ck, path, err);
    if (rc == 0)
        rc = v4_gguf_parse(ck->shards[0].map, ck->shards[0].size, ck->shards[0].path, &ck->gguf,
                           err);
    if (rc == 0) rc = gguf_config(ck->gguf, cfg, err);
    if (rc == 0) rc = v4_manifest(cfg, &specs, &n, err);
    binder b = {ck->gguf, cfg, ck, NULL, err};
    if (rc == 0) rc = bind_specs(&b, specs, n);
    if (rc == 0) rc = name_table(ck, err);
    free(b.used);
    free(specs);
    if (rc) {
        v4_checkpoint_free(ck);
        return rc;
    }
    *out = ck;
    return 0;
}

int v4_gguf_tokenizer_json(const char *path, char **json, size_t *len, tome_error *err)
{
    *json = NULL;
    v4_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    int rc = map_file(ck, path, err);
    if (rc == 0)
        rc = v4_gguf_parse(ck->shards[0].map, ck->shards[0].size, ck->shards[0].path, &ck->gguf,
                           err);
    if (rc == 0) rc = v4_gguf_vocab_json(ck->gguf, json, len, err);
    v4_checkpoint_free(ck);
    return rc;
}

void v4_gguf_fingerprint(const v4_gguf *g, const uint8_t *mode, size_t mode_len, uint8_t out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int len = 32;
    memset(out, 0, 32);
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(ctx);
        return;
    }
    EVP_DigestUpdate(ctx, "tome-v4-gguf-1", 14);
    EVP_DigestUpdate(ctx, g->map, g->header_bytes);
    EVP_DigestUpdate(ctx, mode, mode_len);
    for (size_t i = 0; i < g->n_tensors; i++)
        EVP_DigestUpdate(ctx, g->tensors[i].data,
                         g->tensors[i].nbytes < 64 ? g->tensors[i].nbytes : 64);
    EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
}
