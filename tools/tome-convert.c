/*
 * tome-convert.c - an official-layout V4 checkpoint written as a GGUF file
 * in llama.cpp's DeepSeek V4 layout, quantised by tome's own quantiser.
 *
 * The metadata is the config (engine/gguf_model.c reads it back the same
 * way) and the vocabulary (tools/convert/vocab.c), the tensors are the
 * manifest's (engine/config.c) under their GGUF names (v4_gguf_name),
 * routed experts stacked per projection.  Every weight is decoded exactly
 * to F32 (FP8 and FP4 with their scales) and written in the type its role
 * gets:
 *
 *   --experts T / --down T   routed experts (gate/up, and down)
 *   --type T                 the other matrices (attention, shared experts,
 *                            MTP projections, output head)
 *   --small T                embedding, router, indexer, compressor and HC
 *                            matrices (the numerically sensitive ones)
 *   vectors                  F32; the hash-routing table I32
 *
 * A tensor whose rows are not whole blocks of its type falls back to Q8_0
 * (or F32 when rows are not whole 32s), and says so on stderr, like
 * llama.cpp's quantiser does for such shapes.  --keep-float keeps BF16,
 * F16 and F32 matrices as they are; --no-mtp leaves the MTP layers out, as
 * llama.cpp's deepseek4 model needs.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "common/options.h"
#include "engine/gguf.h"
#include "engine/kernels/blocks.h"
#include "tools/convert/meta.h"
#include "tools/convert/vocab.h"

#define ALIGN       32
#define MAX_THREADS 256
/* Rows quantised at once: each thread takes every n-th row of the batch. */
#define BATCH_ROWS 256
#define ROW_FLOATS (2 * V4_MAX_COLS)

typedef struct options {
    const char *type, *experts, *down, *small, *mtp_out;
    int no_mtp, keep_float, threads;
} options;

static options opt;
static const tome_option option_table[] = {
    TOME_STRING("type", 0, "T", opt.type, "attention, shared experts, head (default F32)"),
    TOME_STRING("experts", 0, "T", opt.experts, "routed experts (default: --type)"),
    TOME_STRING("down", 0, "T", opt.down, "routed experts' down projection (default: --experts)"),
    TOME_STRING("small", 0, "T", opt.small,
                "embedding, router, indexer, compressor, HC (default F32)"),
    TOME_FLAG("keep-float", 0, opt.keep_float,
              "matrices stored as BF16, F16 or F32 keep that type (lossless);\n"
              "--type and --small then apply to the FP8 ones"),
    TOME_FLAG("no-mtp", 0, opt.no_mtp,
              "leave out the MTP layers (llama.cpp's deepseek4 loads none)"),
    TOME_STRING("mtp-out", 0, "FILE", opt.mtp_out,
                "write the MTP block to FILE, a GGUF of its own with \"mtp.0.\"\n"
                "names (ds4's layout), not to OUT.gguf"),
    TOME_INT("threads", 0, "N", opt.threads, 0, MAX_THREADS,
             "quantise on N threads (default 0: all cores; the file is the same)"),
};
static const tome_cli cli = {.program = "tome-convert",
                             .usage = "[options] DIR OUT.gguf",
                             .options = option_table,
                             .n_options = sizeof option_table / sizeof option_table[0]};

/* ---- metadata ------------------------------------------------------------------- */

/* The model file's metadata; `mtp_blocks` of the config's MTP blocks are
 * in it (compress_ratios lists them all: ds4's main file keeps the
 * separate MTP block's). */
static void write_metadata(cv_meta *w, const v4_config *c, int mtp_blocks)
{
    cv_kv_str(w, "general.architecture", "deepseek4");
    cv_kv_str(w, "general.name", "DeepSeek V4 (tome-convert)");
    cv_kv_u32(w, "general.quantization_version", 2);
    cv_kv_u32(w, "block_count", (uint32_t)(c->n_layers + mtp_blocks));
    cv_kv_u32(w, "nextn_predict_layers", (uint32_t)mtp_blocks);
    cv_kv_u32(w, "context_length", (uint32_t)c->max_position);
    cv_kv_u32(w, "embedding_length", (uint32_t)c->dim);
    cv_kv_u32(w, "vocab_size", (uint32_t)c->vocab_size);
    cv_kv_u32(w, "attention.head_count", (uint32_t)c->n_heads);
    cv_kv_u32(w, "attention.head_count_kv", 1);
    cv_kv_u32(w, "attention.key_length", (uint32_t)c->head_dim);
    cv_kv_u32(w, "attention.value_length", (uint32_t)c->head_dim);
    cv_kv_u32(w, "attention.q_lora_rank", (uint32_t)c->q_lora_rank);
    cv_kv_u32(w, "attention.output_lora_rank", (uint32_t)c->o_lora_rank);
    cv_kv_u32(w, "attention.output_group_count", (uint32_t)c->o_groups);
    cv_kv_u32(w, "attention.sliding_window", (uint32_t)c->window);
    cv_kv_f32(w, "attention.compress_rope_freq_base", c->compress_rope_theta);
    cv_kv_f32(w, "attention.layer_norm_rms_epsilon", c->norm_eps);
    cv_kv_u32(w, "attention.indexer.head_count", (uint32_t)c->index_n_heads);
    cv_kv_u32(w, "attention.indexer.key_length", (uint32_t)c->index_head_dim);
    cv_kv_u32(w, "attention.indexer.top_k", (uint32_t)c->index_topk);
    cv_kv_u32(w, "rope.dimension_count", (uint32_t)c->rope_dim);
    cv_kv_f32(w, "rope.freq_base", c->rope_theta);
    cv_kv_u32(w, "expert_count", (uint32_t)c->n_routed_experts);
    cv_kv_u32(w, "expert_used_count", (uint32_t)c->n_active_experts);
    cv_kv_u32(w, "expert_shared_count", (uint32_t)c->n_shared_experts);
    cv_kv_u32(w, "expert_feed_forward_length", (uint32_t)c->moe_inter_dim);
    cv_kv_f32(w, "expert_weights_scale", c->route_scale);
    cv_kv_bool(w, "expert_weights_norm", 1);
    cv_kv_u32(w, "expert_gating_func", 4);
    cv_kv_u32(w, "hash_layer_count", (uint32_t)c->n_hash_layers);
    cv_kv_f32(w, "swiglu_clamp_exp", c->swiglu_limit);
    cv_kv_u32(w, "hyper_connection.count", (uint32_t)c->hc_mult);
    cv_kv_u32(w, "hyper_connection.sinkhorn_iterations", (uint32_t)c->hc_sinkhorn_iters);
    cv_kv_f32(w, "hyper_connection.epsilon", c->hc_eps);
    cv_kv_array(w, "attention.compress_ratios", V4_GGUF_U32,
                (uint64_t)(c->n_layers + c->n_mtp_layers));
    for (int i = 0; i < c->n_layers + c->n_mtp_layers; i++)
        cv_put_u32(&w->b, (uint32_t)c->compress_ratio[i]);
    if (c->rope_original_len > 0) {
        cv_kv_str(w, "rope.scaling.type", "yarn");
        cv_kv_f32(w, "rope.scaling.factor", c->rope_factor);
        cv_kv_u32(w, "rope.scaling.original_context_length", (uint32_t)c->rope_original_len);
        cv_kv_f32(w, "rope.scaling.yarn_beta_fast", c->beta_fast);
        cv_kv_f32(w, "rope.scaling.yarn_beta_slow", c->beta_slow);
    }
    cv_kv_u32(w, "general.alignment", ALIGN);
}

/* ---- the tensors ------------------------------------------------------------------- */

typedef struct out_tensor {
    char name[160];
    v4_dtype type;
    int ndim;
    int64_t ne[4];
    uint64_t offset, nbytes;
    size_t *specs; /* manifest entries, one per stacked expert */
    int n_specs;
} out_tensor;

typedef struct plan {
    out_tensor *t;
    size_t n;
    uint64_t data_bytes;
} plan;

static int parse_type(const char *name, v4_dtype dflt, v4_dtype *out, tome_error *err)
{
    if (!name) {
        *out = dflt;
        return 0;
    }
    for (int t = 0; t < V4_DTYPE_COUNT; t++) {
        static const float probe[256];
        uint8_t sink[512];
        if (strcmp(v4_dtype_name((v4_dtype)t), name) == 0 &&
            v4_gguf_quantize((v4_dtype)t, probe, v4_dtype_block((v4_dtype)t), sink) == 0) {
            *out = (v4_dtype)t;
            return 0;
        }
    }
    return tome_errorf(err, TOME_EINVAL,
                       "type %s: tome-convert writes F32, F16, BF16, Q8_0, MXFP4, Q2_K, Q3_K, "
                       "Q4_K, Q5_K, Q6_K, IQ4_XS and IQ2_XXS",
                       name);
}

static int is_small(const char *n)
{
    return strcmp(n, "embed.weight") == 0 || strstr(n, "ffn.gate.weight") ||
           strstr(n, "indexer.") || strstr(n, "compressor.") || strstr(n, "hc_");
}

static int kept_float(const v4_tensor_spec *s)
{
    return opt.keep_float && (s->dtype == V4_BF16 || s->dtype == V4_F16 || s->dtype == V4_F32);
}

/* The type of a tensor by its role, with the block fallback. */
static v4_dtype choose_type(const v4_tensor_spec *s, int expert, int64_t row, const v4_dtype *types)
{
    v4_dtype t = s->dtype == V4_I64  ? V4_I32
                 : s->ndim == 1      ? V4_F32
                 : kept_float(s)     ? s->dtype
                 : expert >= 0       ? types[strstr(s->name, ".w2.") ? 2 : 1]
                 : is_small(s->name) ? types[3]
                                     : types[0];
    if (row % v4_dtype_block(t) == 0) return t;
    v4_dtype fb = row % 32 == 0 ? V4_Q8_0 : V4_F32;
    fprintf(stderr, "tome-convert: %s: rows of %lld are not whole %s blocks; writing %s\n", s->name,
            (long long)row, v4_dtype_name(t), v4_dtype_name(fb));
    return fb;
}

/* Manifest entry i into plan p under its GGUF name (`variant` as
 * v4_gguf_name's). */
static int add_tensor(plan *p, const v4_config *c, const v4_tensor_spec *specs, size_t i,
                      int variant, const v4_dtype *types, tome_error *err)
{
    const v4_tensor_spec *s = &specs[i];
    char name[160];
    int expert;
    if (v4_gguf_name(c, s->name, variant, name, sizeof name, &expert) != 0) return 0; /* .scale */
    out_tensor *t = NULL;
    if (expert > 0)
        for (size_t k = p->n; !t && k-- > 0;)
            if (strcmp(p->t[k].name, name) == 0) t = &p->t[k];
    if (!t) {
        out_tensor *grown = realloc(p->t, (p->n + 1) * sizeof *grown);
        if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory");
        p->t = grown;
        t = &p->t[p->n++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", name);
        int64_t cols = s->ndim > 1 ? s->shape[1] * (s->dtype == V4_I8 ? 2 : 1) : s->shape[0];
        t->ndim = s->ndim + (expert >= 0);
        t->ne[0] = cols;
        if (s->ndim > 1) t->ne[1] = s->shape[0];
        if (expert >= 0) t->ne[2] = c->n_routed_experts;
        t->type = choose_type(s, expert, cols, types);
    }
    size_t *grown = realloc(t->specs, (size_t)(t->n_specs + 1) * sizeof *grown);
    if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    t->specs = grown;
    t->specs[t->n_specs++] = i;
    return 0;
}

static void place(plan *p)
{
    uint64_t off = 0;
    for (size_t i = 0; i < p->n; i++) {
        out_tensor *t = &p->t[i];
        int64_t rows = 1;
        for (int d = 1; d < t->ndim; d++) rows *= t->ne[d];
        t->nbytes = v4_dtype_row_bytes(t->type, t->ne[0]) * (uint64_t)rows;
        t->offset = off;
        off = (off + t->nbytes + ALIGN - 1) / ALIGN * ALIGN;
    }
    p->data_bytes = off;
}

/* A manifest tensor of the checkpoint as a weight (FP8/FP4 with scales);
 * vectors are one row. */
static v4_weight source(const v4_checkpoint *ck, const v4_tensor_spec *s)
{
    const v4_ckpt_tensor *t = v4_checkpoint_find(ck, s->name);
    v4_weight w = {.dtype = t->dtype, .data = t->data};
    w.rows = t->ndim > 1 ? t->shape[0] : 1;
    w.cols = t->ndim > 1 ? t->shape[1] * (t->dtype == V4_I8 ? 2 : 1) : t->shape[0];
    if (t->dtype == V4_F8_E4M3 || t->dtype == V4_I8) {
        char scale[128];
        snprintf(scale, sizeof scale, "%.*s.scale", (int)(strlen(s->name) - 7), s->name);
        const v4_ckpt_tensor *st = v4_checkpoint_find(ck, scale);
        w.scale = st->data;
        w.scale_stride = st->shape[1];
    }
    return w;
}

/* One thread's share of a batch of rows: rows thread, thread + threads,
 * ... of [r0, r0 + n), each decoded and quantised alone into its place in
 * `out`, so the bytes do not depend on the thread count. */
typedef struct quant_share {
    const v4_weight *w;
    v4_dtype type;
    int64_t r0, n;
    size_t row_bytes;
    uint8_t *out;
    int thread, threads;
    float *row; /* the thread's decoded row */
} quant_share;

static void *quantise_share(void *arg)
{
    const quant_share *q = arg;
    for (int64_t i = q->thread; i < q->n; i += q->threads) {
        v4_weight_row_scalar(q->w, q->r0 + i, q->row);
        v4_gguf_quantize(q->type, q->row, q->w->cols, q->out + (size_t)i * q->row_bytes);
    }
    return NULL;
}

/* The writer's threads and buffers: a decoded row per thread and one batch
 * of quantised rows. */
typedef struct writer {
    int threads;
    float *rows;    /* threads x ROW_FLOATS */
    uint8_t *batch; /* BATCH_ROWS quantised rows of the widest tensor */
} writer;

/* Rows [r0, r0 + n) quantised on the writer's threads (a thread that cannot
 * start leaves its share to the caller). */
static void quantise_batch(const writer *wr, const v4_weight *w, v4_dtype type, int64_t r0,
                           int64_t n, size_t row_bytes)
{
    quant_share share[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    int threads = wr->threads < 1 ? 1 : wr->threads;
    for (int t = threads - 1; t >= 0; t--) {
        share[t] = (quant_share){
            w, type, r0, n, row_bytes, wr->batch, t, threads, wr->rows + (size_t)t * ROW_FLOATS};
        if (t > 0)
            started[t] = pthread_create(&tid[t], NULL, quantise_share, &share[t]) == 0;
        else
            quantise_share(&share[t]); /* the caller's share, while the others run */
    }
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            quantise_share(&share[t]);
    }
}

static int write_one(FILE *f, const writer *wr, const v4_checkpoint *ck, const v4_tensor_spec *s,
                     v4_dtype type)
{
    v4_weight w = source(ck, s);
    if (s->dtype == V4_I64) { /* tid2eid: I64 -> I32 */
        for (int64_t i = 0; i < w.rows * w.cols; i++) {
            int64_t v;
            memcpy(&v, w.data + 8 * i, 8);
            int32_t n = (int32_t)v;
            if (fwrite(&n, 4, 1, f) != 1) return TOME_EIO;
        }
        return 0;
    }
    size_t row_bytes = v4_dtype_row_bytes(type, w.cols);
    for (int64_t r = 0; r < w.rows; r += BATCH_ROWS) {
        int64_t n = w.rows - r < BATCH_ROWS ? w.rows - r : BATCH_ROWS;
        quantise_batch(wr, &w, type, r, n, row_bytes);
        if (fwrite(wr->batch, row_bytes, (size_t)n, f) != (size_t)n) return TOME_EIO;
    }
    return 0;
}

static int write_data(FILE *f, const plan *p, const v4_checkpoint *ck, const v4_tensor_spec *specs,
                      tome_error *err)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    writer wr = {0};
    wr.threads = opt.threads > 0      ? opt.threads
                 : cpus < 1           ? 1
                 : cpus > MAX_THREADS ? MAX_THREADS
                                      : (int)cpus;
    wr.rows = malloc((size_t)wr.threads * ROW_FLOATS * sizeof *wr.rows);
    wr.batch = malloc((size_t)BATCH_ROWS * V4_MAX_COLS * 8);
    int rc = wr.rows && wr.batch ? 0 : tome_errorf(err, TOME_ENOMEM, "out of memory");
    static const uint8_t zeros[ALIGN];
    for (size_t i = 0; i < p->n && rc == 0; i++) {
        for (int e = 0; e < p->t[i].n_specs && rc == 0; e++)
            rc = write_one(f, &wr, ck, &specs[p->t[i].specs[e]], p->t[i].type);
        uint64_t pad = (ALIGN - p->t[i].nbytes % ALIGN) % ALIGN;
        if (rc == 0 && pad && fwrite(zeros, 1, pad, f) != pad) rc = TOME_EIO;
        if (rc) rc = tome_errorf(err, TOME_EIO, "writing %s failed", p->t[i].name);
    }
    free(wr.rows);
    free(wr.batch);
    return rc;
}

static void write_infos(cv_buf *b, const plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        const out_tensor *t = &p->t[i];
        cv_put_str(b, t->name);
        cv_put_u32(b, (uint32_t)t->ndim);
        for (int d = 0; d < t->ndim; d++) cv_put_u64(b, (uint64_t)t->ne[d]);
        cv_put_u32(b, (uint32_t)v4_gguf_type_of(t->type));
        cv_put_u64(b, t->offset);
    }
}

/* ---- the command ---------------------------------------------------------------------- */

/* The file's header: magic, version, counts, the metadata (the config's
 * keys and the vocabulary of `dir`; for a separate MTP file only what
 * names it), the tensor infos, padding. */
static int build_header(const char *dir, const v4_config *c, const plan *p, int mtp_file,
                        cv_buf *head, tome_error *err)
{
    cv_meta meta = {{0}, 0};
    int rc = 0;
    if (mtp_file) {
        cv_kv_str(&meta, "general.architecture", "deepseek4");
        cv_kv_str(&meta, "general.name", "DeepSeek V4 MTP block (tome-convert)");
        cv_kv_u32(&meta, "nextn_predict_layers", (uint32_t)c->n_mtp_layers);
        cv_kv_u32(&meta, "general.alignment", ALIGN);
    } else {
        write_metadata(&meta, c, opt.mtp_out ? 0 : c->n_mtp_layers);
        rc = cv_vocab(&meta, dir, c, err);
    }
    cv_put(head, "GGUF", 4);
    cv_put_u32(head, 3);
    cv_put_u64(head, p->n);
    cv_put_u64(head, meta.n);
    cv_put(head, meta.b.p, meta.b.n);
    write_infos(head, p);
    static const uint8_t zeros[ALIGN];
    cv_put(head, zeros, (ALIGN - head->n % ALIGN) % ALIGN);
    if (rc == 0 && (head->failed || meta.b.failed))
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory");
    free(meta.b.p);
    return rc;
}

static int write_file(const char *path, const char *dir, const v4_config *c, const plan *p,
                      int mtp_file, const v4_checkpoint *ck, const v4_tensor_spec *specs,
                      tome_error *err)
{
    cv_buf head = {0};
    int rc = build_header(dir, c, p, mtp_file, &head, err);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = rc ? NULL : fopen(tmp, "wb");
    if (rc == 0 && !f) rc = tome_errorf(err, TOME_EIO, "%s: cannot create", tmp);
    if (rc == 0 && fwrite(head.p, 1, head.n, f) != head.n)
        rc = tome_errorf(err, TOME_EIO, "%s: write failed", tmp);
    if (rc == 0) rc = write_data(f, p, ck, specs, err);
    if (f && fclose(f) != 0 && rc == 0) rc = tome_errorf(err, TOME_EIO, "%s: write failed", tmp);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = tome_errorf(err, TOME_EIO, "%s: rename failed", path);
    if (rc && f) remove(tmp);
    free(head.p);
    return rc;
}

static int convert(const char *dir, const char *out, const v4_dtype *types, tome_error *err)
{
    char path[4200], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    v4_config c;
    v4_checkpoint *ck = NULL;
    v4_tensor_spec *specs = NULL;
    size_t n = 0;
    plan p = {0}, pm = {0}; /* the model file's tensors; the separate MTP file's */
    int rc = tome_read_file(path, 16u << 20, &text, &len, err);
    if (rc == 0) rc = v4_config_parse(text, len, path, &c, err);
    if (opt.no_mtp) c.n_mtp_layers = 0;
    if (rc == 0) rc = v4_manifest(&c, &specs, &n, err);
    if (rc == 0) rc = v4_checkpoint_open(dir, &ck, err);
    if (rc == 0 && opt.mtp_out && c.n_mtp_layers == 0)
        rc = tome_errorf(err, TOME_EINVAL, "--mtp-out: this model has no MTP block");
    for (size_t i = 0; i < n && rc == 0; i++) {
        int apart = opt.mtp_out && strncmp(specs[i].name, "mtp.", 4) == 0;
        if (!v4_checkpoint_find(ck, specs[i].name))
            rc = tome_errorf(err, TOME_EFORMAT, "%s: tensor %s is missing", dir, specs[i].name);
        else
            rc = add_tensor(apart ? &pm : &p, &c, specs, i, apart, types, err);
    }
    if (rc == 0) {
        place(&p);
        place(&pm);
        rc = write_file(out, dir, &c, &p, 0, ck, specs, err);
    }
    if (rc == 0 && opt.mtp_out) rc = write_file(opt.mtp_out, dir, &c, &pm, 1, ck, specs, err);
    for (size_t i = 0; i < p.n; i++) free(p.t[i].specs);
    for (size_t i = 0; i < pm.n; i++) free(pm.t[i].specs);
    free(p.t);
    free(pm.t);
    free(specs);
    free(text);
    v4_checkpoint_free(ck);
    return rc;
}

int main(int argc, char **argv)
{
    tome_error err = {0};
    int n_operands = 0;
    int rc = tome_options_parse(&cli, argc, argv, NULL, &n_operands, &err);
    if (rc == TOME_OPTIONS_HELP) {
        tome_options_help(&cli, stdout);
        return 0;
    }
    if (rc == 0 && n_operands != 2) rc = tome_errorf(&err, TOME_EINVAL, "give DIR and OUT.gguf");
    v4_dtype types[4]; /* other matrices, experts, down, small */
    if (rc == 0) rc = parse_type(opt.type, V4_F32, &types[0], &err);
    if (rc == 0) rc = parse_type(opt.experts, types[0], &types[1], &err);
    if (rc == 0) rc = parse_type(opt.down, types[1], &types[2], &err);
    if (rc == 0) rc = parse_type(opt.small, V4_F32, &types[3], &err);
    if (rc) {
        fprintf(stderr, "tome-convert: %s (see tome-convert --help)\n", err.msg);
        return 2;
    }
    v4_quant_init();
    rc = convert(argv[1], argv[2], types, &err);
    if (rc) {
        fprintf(stderr, "tome-convert: %s\n", err.msg);
        return 1;
    }
    return 0;
}
