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
    int attach_mtp; /* a separate file brings the MTP block */
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
 * more value than the blocks present (ds4's main file keeps the MTP's),
 * which is the attached MTP block's when a separate file brings it. */
static void copy_layers(meta *m)
{
    double blocks = 0, nextn = 0;
    const v4_gguf_kv *bc = arch_key(m, "block_count", 1);
    const v4_gguf_kv *nx = arch_key(m, "nextn_predict_layers", 0);
    if (bc) number(m, bc, &blocks);
    if (nx) number(m, nx, &nextn);
    set_number(m, "num_hidden_layers", blocks - nextn, 0);
    if (m->rc == 0 && m->attach_mtp && nextn > 0)
        m->rc = tome_errorf(m->err, TOME_EINVAL,
                            "%s already holds an MTP block; a separate MTP file cannot be added",
                            m->g->path);
    const v4_gguf_kv *cr = arch_key(m, "attention.compress_ratios", 1);
    if (m->rc) return;
    uint64_t want = (uint64_t)blocks + (m->attach_mtp ? 1 : 0);
    if (cr->type != V4_GGUF_ARRAY || cr->count < want)
        m->rc = tome_errorf(m->err, TOME_EFORMAT,
                            "%s: deepseek4.attention.compress_ratios must be an array of at least "
                            "%llu numbers (block_count%s)",
                            m->g->path, (unsigned long long)want,
                            m->attach_mtp ? ", then the separate MTP block's" : "");
    if (m->attach_mtp) set_number(m, "num_nextn_predict_layers", 1, 0);
    json_t *arr = json_array();
    json_object_set_new(m->root, "compress_ratios", arr);
    for (uint64_t i = 0; m->rc == 0 && i < want; i++) {
        double v;
        if ((m->rc = v4_gguf_number(m->g, cr, i, &v, m->err)) == 0)
            json_array_append_new(arr, json_integer((json_int_t)v));
    }
}

static int check_architecture(const v4_gguf *g, tome_error *err)
{
    const v4_gguf_kv *arch = v4_gguf_find(g, "general.architecture");
    if (!arch || arch->type != V4_GGUF_STRING || arch->count != 9 ||
        memcmp(arch->data, "deepseek4", 9) != 0)
        return tome_errorf(err, TOME_EFORMAT,
                           "%s: general.architecture is not \"deepseek4\" (tome runs DeepSeek V4 "
                           "only)",
                           g->path);
    return 0;
}

/* Settings V4 fixes that the file may state: refuse any other value. */
static void check_fixed(meta *m)
{
    if ((m->rc = check_architecture(m->g, m->err)) != 0) return;
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

static int gguf_config(const v4_gguf *g, int attach_mtp, v4_config *cfg, tome_error *err)
{
    meta m = {g, json_object(), err, 0, attach_mtp};
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

/* Binding the manifest to the file's tensors: files[0] the model, files[1]
 * a separate MTP file (or NULL), each with its tensors' used marks. */
typedef struct binder {
    const v4_gguf *files[2];
    const v4_config *cfg;
    v4_checkpoint *ck;
    uint8_t *used[2];
    tome_error *err;
} binder;

/* The file that holds manifest tensor `name`. */
static int file_of(const binder *b, const char *name)
{
    return b->files[1] && strncmp(name, "mtp.", 4) == 0;
}

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

static int check_dims(binder *b, const v4_gguf *g, const v4_gguf_tensor *t, const int64_t *shape,
                      int ndim, int experts)
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
                       "%s: tensor %s has dims [%s], the metadata implies [%s]", g->path, t->name,
                       got, exp);
}

static const v4_gguf_tensor *lookup(binder *b, const v4_gguf *g, const v4_tensor_spec *s,
                                    int *expert, char *name, size_t cap)
{
    for (int variant = 0; variant < 2; variant++) {
        if (v4_gguf_name(b->cfg, s->name, variant, name, cap, expert) != 0) return NULL;
        const v4_gguf_tensor *t = v4_gguf_tensor_find(g, name);
        if (t || strncmp(s->name, "mtp.", 4) != 0) return t;
    }
    /* missing: named as a separate MTP file would name it, else as llama.cpp */
    v4_gguf_name(b->cfg, s->name, g == b->files[1], name, cap, expert);
    return NULL;
}

static int bind_spec(binder *b, const v4_tensor_spec *s)
{
    char name[160];
    int expert, f = file_of(b, s->name);
    const v4_gguf *g = b->files[f];
    const v4_gguf_tensor *t = lookup(b, g, s, &expert, name, sizeof name);
    if (!t)
        return tome_errorf(b->err, TOME_EFORMAT, "%s: tensor %s (%s) is missing", g->path, name,
                           s->name);
    const char *want;
    if (!type_allowed(s, t, &want))
        return tome_errorf(b->err, TOME_EFORMAT, "%s: tensor %s has type %s; it must be %s",
                           g->path, t->name, v4_dtype_name(t->dtype), want);
    v4_ckpt_tensor *ct = &b->ck->tensors[b->ck->n_tensors];
    memset(ct, 0, sizeof *ct);
    logical_shape(s, ct->shape);
    uint8_t *used = &b->used[f][t - g->tensors];
    int rc =
        *used ? 0
              : check_dims(b, g, t, ct->shape, s->ndim, expert >= 0 ? b->cfg->n_routed_experts : 0);
    if (rc) return rc;
    *used = 1;
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

/* Every tensor of file f was bound. */
static int none_left(const binder *b, int f)
{
    const v4_gguf *g = b->files[f];
    for (size_t i = 0; g && i < g->n_tensors; i++)
        if (!b->used[f][i])
            return tome_errorf(b->err, TOME_EFORMAT,
                               "%s: unexpected tensor %s (not implied by the metadata)", g->path,
                               g->tensors[i].name);
    return 0;
}

static int bind_specs(binder *b, const v4_tensor_spec *specs, size_t n)
{
    b->ck->tensors = calloc(n ? n : 1, sizeof *b->ck->tensors);
    if (!b->ck->tensors) return tome_errorf(b->err, TOME_ENOMEM, "out of memory");
    for (int f = 0; f < 2; f++)
        if (b->files[f] && !(b->used[f] = calloc(b->files[f]->n_tensors + 1, 1)))
            return tome_errorf(b->err, TOME_ENOMEM, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (!is_scale(specs[i].name)) rc = bind_spec(b, &specs[i]);
    for (int f = 0; f < 2 && rc == 0; f++) rc = none_left(b, f);
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

/* The file mapped as the checkpoint's next shard, and parsed into *g. */
static int map_gguf(v4_checkpoint *ck, const char *path, v4_gguf **g, tome_error *err)
{
    v4_shard *grown = realloc(ck->shards, (size_t)(ck->n_shards + 1) * sizeof *grown);
    if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    ck->shards = grown;
    v4_shard *s = &ck->shards[ck->n_shards++];
    memset(s, 0, sizeof *s);
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
    return v4_gguf_parse(s->map, s->size, s->path, g, err);
}

static int name_table(v4_checkpoint *ck, tome_error *err)
{
    if (!(ck->by_name = json_object())) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    for (size_t i = 0; i < ck->n_tensors; i++)
        if (json_object_set_new(ck->by_name, ck->tensors[i].name, json_integer((json_int_t)i)))
            return tome_errorf(err, TOME_ENOMEM, "out of memory");
    return 0;
}

int v4_gguf_checkpoint(const char *path, const char *mtp_path, v4_config *cfg, v4_checkpoint **out,
                       tome_error *err)
{
    *out = NULL;
    v4_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->dir = strdup(path))) {
        free(ck);
        return tome_errorf(err, TOME_ENOMEM, "out of memory");
    }
    v4_tensor_spec *specs = NULL;
    size_t n = 0;
    int rc = map_gguf(ck, path, &ck->gguf, err);
    if (rc == 0 && mtp_path && (rc = map_gguf(ck, mtp_path, &ck->gguf_mtp, err)) == 0)
        rc = check_architecture(ck->gguf_mtp, err);
    if (rc == 0) rc = gguf_config(ck->gguf, mtp_path != NULL, cfg, err);
    if (rc == 0) rc = v4_manifest(cfg, &specs, &n, err);
    binder b = {{ck->gguf, ck->gguf_mtp}, cfg, ck, {NULL, NULL}, err};
    if (rc == 0) rc = bind_specs(&b, specs, n);
    if (rc == 0) rc = name_table(ck, err);
    free(b.used[0]);
    free(b.used[1]);
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
    int rc = map_gguf(ck, path, &ck->gguf, err);
    if (rc == 0) rc = v4_gguf_vocab_json(ck->gguf, json, len, err);
    v4_checkpoint_free(ck);
    return rc;
}

/* The header (metadata and tensor infos), `mode` and each tensor's first
 * bytes. */
static void hash_file(EVP_MD_CTX *ctx, const v4_gguf *g, const uint8_t *mode, size_t mode_len)
{
    EVP_DigestUpdate(ctx, g->map, g->header_bytes);
    EVP_DigestUpdate(ctx, mode, mode_len);
    for (size_t i = 0; i < g->n_tensors; i++)
        EVP_DigestUpdate(ctx, g->tensors[i].data,
                         g->tensors[i].nbytes < 64 ? g->tensors[i].nbytes : 64);
}

void v4_gguf_fingerprint(const v4_checkpoint *ck, const uint8_t *mode, size_t mode_len,
                         uint8_t out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int len = 32;
    memset(out, 0, 32);
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(ctx);
        return;
    }
    EVP_DigestUpdate(ctx, "tome-v4-gguf-1", 14);
    hash_file(ctx, ck->gguf, mode, mode_len);
    if (ck->gguf_mtp) {
        EVP_DigestUpdate(ctx, "tome-v4-gguf-mtp", 16);
        hash_file(ctx, ck->gguf_mtp, NULL, 0);
    }
    EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
}
