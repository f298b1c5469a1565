/*
 * model.c - opening a checkpoint as a v4_model.
 *
 * Opening is: parse config.json (config.c), map the shards (safetensors.c),
 * check the checkpoint against the manifest the config implies - every
 * tensor present, none extra, each with the expected dtype and shape - and
 * bind the tensors to named weight views per block.  After that the forward
 * pass can trust every pointer and size it reads.
 *
 * Also here: the RoPE frequency tables (plain for window-only blocks, YaRN
 * for compressed ones, both computed in F32 exactly as the reference does),
 * the model fingerprint that saved states are checked against, and the
 * size of stored KV rows.
 */
#include "engine/model.h"

#include "engine/gguf.h"

#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- RoPE -------------------------------------------------------------------- */

static void rope_init(v4_rope *r, int rope_dim, double base, const v4_config *c, int yarn)
{
    r->pairs = rope_dim / 2;
    for (int i = 0; i < r->pairs; i++)
        r->freq[i] = 1.0f / powf((float)base, (float)(2 * i) / (float)rope_dim);
    if (!yarn || c->rope_original_len <= 0) return;
    /* The reference computes the correction range in "dimension" units and
     * then ramps over the pair index; reproduced as is. */
    double two_pi = 2 * M_PI, lnb = log(base);
    double lo_d =
        rope_dim * log((double)c->rope_original_len / (c->beta_fast * two_pi)) / (2 * lnb);
    double hi_d =
        rope_dim * log((double)c->rope_original_len / (c->beta_slow * two_pi)) / (2 * lnb);
    double low = floor(lo_d) < 0 ? 0 : floor(lo_d);
    double high = ceil(hi_d) > rope_dim - 1 ? rope_dim - 1 : ceil(hi_d);
    if (low == high) high += 0.001;
    for (int i = 0; i < r->pairs; i++) {
        float ramp = ((float)i - (float)low) / ((float)high - (float)low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float smooth = 1.0f - ramp;
        float f = r->freq[i];
        r->freq[i] = f / (float)c->rope_factor * (1.0f - smooth) + f * smooth;
    }
}

void v4_rope_apply_rows(const v4_rope *r, float *x, int64_t stride, int rows, int64_t pos,
                        int inverse)
{
    float c[sizeof r->freq / sizeof r->freq[0]], s[sizeof r->freq / sizeof r->freq[0]];
    for (int i = 0; i < r->pairs; i++) {
        float angle = (float)pos * r->freq[i];
        c[i] = cosf(angle); /* the reference's float cos/sin */
        s[i] = inverse ? -sinf(angle) : sinf(angle);
    }
    for (int row = 0; row < rows; row++) {
        float *v = x + row * stride;
        for (int i = 0; i < r->pairs; i++) {
            float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * c[i] - b * s[i];
            v[2 * i + 1] = a * s[i] + b * c[i];
        }
    }
}

void v4_rope_apply(const v4_rope *r, float *x, int64_t pos, int inverse)
{
    v4_rope_apply_rows(r, x, 0, 1, pos, inverse);
}

/* ---- binding ------------------------------------------------------------------- */

typedef struct binder {
    v4_model *m;
    tome_error *err;
    int rc;
} binder;

static const v4_ckpt_tensor *find(binder *b, const char *name)
{
    const v4_ckpt_tensor *t = v4_checkpoint_find(b->m->ck, name);
    if (!t && b->rc == 0)
        b->rc = tome_errorf(b->err, TOME_EINTERNAL, "tensor %s vanished after validation", name);
    return t;
}

/* `bytes` of memory the model owns (freed with it), or NULL and the error. */
static void *owned(binder *b, size_t bytes, const char *name)
{
    void **grown = realloc(b->m->owned, (b->m->n_owned + 1) * sizeof *grown);
    void *copy = grown ? v4_alloc(bytes) : NULL;
    if (grown) b->m->owned = grown;
    if (!copy) {
        if (b->rc == 0) b->rc = tome_errorf(b->err, TOME_ENOMEM, "out of memory copying %s", name);
        return NULL;
    }
    b->m->owned[b->m->n_owned++] = copy;
    return copy;
}

/* F32 data, copied to aligned memory when the file places it unaligned;
 * a GGUF tensor of another type (F16, BF16, a block type) is decoded. */
static const float *f32_data(binder *b, const v4_ckpt_tensor *t)
{
    if (t->dtype == V4_F32 && ((uintptr_t)t->data & 3) == 0)
        return (const float *)(const void *)t->data;
    int64_t cols = t->shape[t->ndim - 1], rows = 1;
    for (int i = 0; i < t->ndim - 1; i++) rows *= t->shape[i];
    float *copy = owned(b, (size_t)(rows * cols) * sizeof(float), t->name);
    if (!copy) return NULL;
    v4_weight w = {.dtype = t->dtype, .rows = rows, .cols = cols, .data = t->data};
    for (int64_t r = 0; r < rows; r++) v4_weight_row_scalar(&w, r, copy + r * cols);
    return copy;
}

/* A hash block's tid2eid as I64 (GGUF stores I32), every entry checked to
 * name one of the layer's experts: routing indexes by them unchecked. */
static const uint8_t *tid2eid_data(binder *b, const v4_ckpt_tensor *t)
{
    const uint8_t *data = t->data;
    size_t n = t->nbytes / (t->dtype == V4_I64 ? 8 : 4);
    if (t->dtype != V4_I64) {
        int64_t *wide = owned(b, n * sizeof *wide, t->name);
        for (size_t i = 0; wide && i < n; i++) {
            int32_t v;
            memcpy(&v, t->data + 4 * i, 4);
            wide[i] = v;
        }
        if (!(data = (const uint8_t *)wide)) return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        memcpy(&v, data + 8 * i, 8);
        if (v < 0 || v >= b->m->cfg.n_routed_experts) {
            if (b->rc == 0)
                b->rc = tome_errorf(b->err, TOME_EFORMAT,
                                    "%s: entry %zu names expert %lld; there are %d", t->name, i,
                                    (long long)v, b->m->cfg.n_routed_experts);
            return NULL;
        }
    }
    return data;
}

/* Whether the exact kernels keep panels of tensor `name` (ndim
 * dimensions): every matrix the model multiplies by, which is every
 * two-dimensional ".weight" but the embedding table (read a row at a
 * time). */
static int takes_panels(const char *name, int ndim)
{
    size_t len = strlen(name);
    return ndim == 2 && len > 7 && strcmp(name + len - 7, ".weight") == 0 &&
           strcmp(name, "embed.weight") != 0;
}

/* Let the kernel take back the mapped pages wholly inside [p, p + n): the
 * process no longer reads them (a later read maps them again). */
static void release_mapped(const uint8_t *p, size_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t first = ((uintptr_t)p + page - 1) / page * page,
              end = ((uintptr_t)p + n) / page * page;
    if (end > first) madvise((void *)first, end - first, MADV_DONTNEED);
}

/* w's panels where the model runs exact kernels and the CPU reads them;
 * the mapped rows (and FP4 scales, which the panels carry) are then let
 * go, so that the copy does not double the resident weights. */
static void add_panels(binder *b, v4_weight *w, const char *name)
{
    size_t bytes = v4_panels_bytes(w);
    uint8_t *panels = bytes ? owned(b, bytes, name) : NULL;
    if (!panels) return;
    v4_panels_attach(w, panels);
    release_mapped(w->data, (size_t)w->rows * v4_dtype_row_bytes(w->dtype, w->cols));
    if (w->dtype == V4_I8) release_mapped(w->scale, (size_t)w->rows * (size_t)w->scale_stride);
}

/* The fast kernels' copy of w's matrix (resident.c), its mapped pages let
 * go.  A tensor f32_data already copied stays where it is. */
static void copy_matrix(binder *b, v4_weight *w, const v4_ckpt_tensor *t)
{
    if (w->data != t->data) return;
    uint8_t *copy = owned(b, t->nbytes, t->name);
    if (!copy) return;
    v4_copy_parallel(b->m->pool, copy, t->data, t->nbytes);
    release_mapped(t->data, t->nbytes);
    w->data = copy;
    b->m->copied_bytes += t->nbytes;
}

static v4_weight weight(binder *b, const char *prefix, const char *name)
{
    char full[160], scale[160];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    v4_weight w = {0};
    const v4_ckpt_tensor *t = find(b, full);
    if (!t) return w;
    w.dtype = t->dtype;
    w.rows = t->shape[0];
    w.cols = t->ndim > 1 ? t->shape[1] : 1;
    w.data = t->data;
    w.fast = b->m->opts.kernels == V4_KERNELS_FAST;
    w.pool = b->m->pool;
    w.buffers = b->m->buffers;
    if (t->dtype == V4_F32) w.data = (const uint8_t *)f32_data(b, t);
    if (t->ndim == 1 && t->dtype != V4_BF16 && t->dtype != V4_F32) { /* GGUF F16 norms */
        w.data = (const uint8_t *)f32_data(b, t);
        w.dtype = V4_F32;
    }
    if (t->dtype == V4_I8) w.cols *= 2; /* two FP4 codes per byte */
    if (t->dtype == V4_F8_E4M3 || t->dtype == V4_I8) {
        /* "x.weight" pairs with "x.scale" */
        size_t len = strlen(full);
        if (len > 7 && strcmp(full + len - 7, ".weight") == 0) {
            snprintf(scale, sizeof scale, "%.*s.scale", (int)(len - 7), full);
            const v4_ckpt_tensor *s = find(b, scale);
            if (s) {
                w.scale = s->data;
                w.scale_stride = s->shape[1];
            }
        }
    }
    if (t->dtype == V4_F8_E4M3 && w.scale) {
        size_t blocks = (size_t)((w.rows + V4_FP8_BLOCK - 1) / V4_FP8_BLOCK * w.scale_stride);
        if ((w.fp8_clean = owned(b, blocks, full)) != NULL) memset(w.fp8_clean, 0, blocks);
    }
    if (b->m->opts.kernels == V4_KERNELS_EXACT && takes_panels(full, t->ndim))
        add_panels(b, &w, full);
    else if (b->m->copying && takes_panels(full, t->ndim))
        copy_matrix(b, &w, t);
    return w;
}

static const float *vector(binder *b, const char *prefix, const char *name)
{
    char full[160];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    const v4_ckpt_tensor *t = find(b, full);
    return t ? f32_data(b, t) : NULL;
}

static v4_hc_weights hc_weights(binder *b, const char *prefix, const char *which)
{
    char n[64];
    v4_hc_weights h;
    snprintf(n, sizeof n, "hc_%s_fn", which);
    h.fn = weight(b, prefix, n);
    snprintf(n, sizeof n, "hc_%s_base", which);
    h.base = vector(b, prefix, n);
    snprintf(n, sizeof n, "hc_%s_scale", which);
    h.scale = vector(b, prefix, n);
    return h;
}

static v4_compressor_weights compressor_weights(binder *b, const char *prefix, int ratio, int hd,
                                                int rotate)
{
    v4_compressor_weights c = {.ratio = ratio, .head_dim = hd, .rotate = rotate};
    c.width = hd * (ratio == V4_LAYER_CSA ? 2 : 1);
    c.wkv = weight(b, prefix, "compressor.wkv.weight");
    c.wgate = weight(b, prefix, "compressor.wgate.weight");
    c.norm = weight(b, prefix, "compressor.norm.weight");
    c.ape = vector(b, prefix, "compressor.ape");
    return c;
}

static int bind_block(binder *b, v4_block_weights *bw, const char *p, int ratio, int hash)
{
    const v4_config *c = &b->m->cfg;
    char a[96], f[96], ix[128];
    snprintf(a, sizeof a, "%sattn.", p);
    snprintf(f, sizeof f, "%sffn.", p);
    snprintf(ix, sizeof ix, "%sindexer.", a);
    bw->kind = (v4_layer_kind)ratio; /* config.c admits only the kinds' ratios */
    bw->ratio = ratio;
    bw->hash = hash;
    bw->hc_attn = hc_weights(b, p, "attn");
    bw->hc_ffn = hc_weights(b, p, "ffn");
    bw->attn_norm = weight(b, p, "attn_norm.weight");
    bw->ffn_norm = weight(b, p, "ffn_norm.weight");
    bw->wq_a = weight(b, a, "wq_a.weight");
    bw->q_norm = weight(b, a, "q_norm.weight");
    bw->wq_b = weight(b, a, "wq_b.weight");
    bw->wkv = weight(b, a, "wkv.weight");
    bw->kv_norm = weight(b, a, "kv_norm.weight");
    bw->wo_a = weight(b, a, "wo_a.weight");
    bw->wo_b = weight(b, a, "wo_b.weight");
    bw->attn_sink = vector(b, a, "attn_sink");
    if (bw->kind != V4_LAYER_SWA) bw->compressor = compressor_weights(b, a, ratio, c->head_dim, 0);
    if (bw->kind == V4_LAYER_CSA) {
        bw->index_compressor = compressor_weights(b, ix, 4, c->index_head_dim, 1);
        bw->index_wq_b = weight(b, ix, "wq_b.weight");
        bw->index_weights_proj = weight(b, ix, "weights_proj.weight");
    }
    bw->gate = weight(b, f, "gate.weight");
    if (hash) {
        char n[128];
        snprintf(n, sizeof n, "%sgate.tid2eid", f);
        const v4_ckpt_tensor *t = find(b, n);
        bw->tid2eid = t ? tid2eid_data(b, t) : NULL;
    } else {
        bw->gate_bias = vector(b, f, "gate.bias");
    }
    bw->experts = calloc((size_t)c->n_routed_experts * 3, sizeof *bw->experts);
    if (!bw->experts) return tome_errorf(b->err, TOME_ENOMEM, "out of memory");
    for (int e = 0; e < c->n_routed_experts; e++) {
        char ep[128];
        snprintf(ep, sizeof ep, "%sexperts.%d.", f, e);
        bw->experts[3 * e + 0] = weight(b, ep, "w1.weight");
        bw->experts[3 * e + 1] = weight(b, ep, "w2.weight");
        bw->experts[3 * e + 2] = weight(b, ep, "w3.weight");
    }
    char sp[128];
    snprintf(sp, sizeof sp, "%sshared_experts.", f);
    bw->shared_w1 = weight(b, sp, "w1.weight");
    bw->shared_w2 = weight(b, sp, "w2.weight");
    bw->shared_w3 = weight(b, sp, "w3.weight");
    return b->rc;
}

static int bind_all(v4_model *m, tome_error *err)
{
    binder b = {m, err, 0};
    const v4_config *c = &m->cfg;
    int n_blocks = c->n_layers + c->n_mtp_layers;
    m->blocks = calloc((size_t)n_blocks, sizeof *m->blocks);
    if (!m->blocks) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    m->embed = weight(&b, "", "embed.weight");
    m->head = weight(&b, "", "head.weight");
    m->norm = weight(&b, "", "norm.weight");
    m->hc_head = hc_weights(&b, "", "head");
    for (int l = 0; l < n_blocks && b.rc == 0; l++) {
        char p[32];
        int mtp = l >= c->n_layers;
        if (mtp)
            snprintf(p, sizeof p, "mtp.%d.", l - c->n_layers);
        else
            snprintf(p, sizeof p, "layers.%d.", l);
        v4_block_weights *bw = &m->blocks[l];
        if (bind_block(&b, bw, p, c->compress_ratio[l], !mtp && l < c->n_hash_layers)) break;
        if (!mtp) continue;
        bw->is_mtp = 1;
        bw->e_proj = weight(&b, p, "e_proj.weight");
        bw->h_proj = weight(&b, p, "h_proj.weight");
        bw->enorm = weight(&b, p, "enorm.weight");
        bw->hnorm = weight(&b, p, "hnorm.weight");
        bw->norm = weight(&b, p, "norm.weight");
        bw->hc_head = hc_weights(&b, p, "head");
    }
    return b.rc;
}

/* ---- validation against the manifest ------------------------------------------ */

static int shape_equal(const v4_tensor_spec *s, const v4_ckpt_tensor *t)
{
    if (s->ndim != t->ndim) return 0;
    for (int i = 0; i < s->ndim; i++)
        if (s->shape[i] != t->shape[i]) return 0;
    return 1;
}

static void shape_text(char *out, size_t cap, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used +=
            (size_t)snprintf(out + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < cap) snprintf(out + used, cap - used, "]");
}

static int validate(v4_model *m, const v4_tensor_spec *specs, size_t n, tome_error *err)
{
    const v4_checkpoint *ck = m->ck;
    for (size_t i = 0; i < n; i++) {
        const v4_tensor_spec *s = &specs[i];
        const v4_ckpt_tensor *t = v4_checkpoint_find(ck, s->name);
        if (!t)
            return tome_errorf(err, TOME_EFORMAT, "%s: tensor %s is missing from the checkpoint",
                               ck->dir, s->name);
        const char *file = ck->shards[t->shard].path;
        if (t->dtype != s->dtype)
            return tome_errorf(err, TOME_EFORMAT, "%s: tensor %s has dtype %s, expected %s", file,
                               s->name, v4_dtype_name(t->dtype), v4_dtype_name(s->dtype));
        if (!shape_equal(s, t)) {
            char got[96], want[96];
            shape_text(got, sizeof got, t->ndim, t->shape);
            shape_text(want, sizeof want, s->ndim, s->shape);
            return tome_errorf(err, TOME_EFORMAT, "%s: tensor %s has shape %s, config implies %s",
                               file, s->name, got, want);
        }
    }
    if (ck->n_tensors == n) return 0;
    /* Counts differ and every expected tensor exists: name an unexpected one. */
    json_t *expected = json_object();
    if (!expected) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) json_object_set_new(expected, specs[i].name, json_true());
    int rc = 0;
    for (size_t i = 0; i < ck->n_tensors && rc == 0; i++)
        if (!json_object_get(expected, ck->tensors[i].name))
            rc = tome_errorf(err, TOME_EFORMAT,
                             "%s: unexpected tensor %s (not implied by config.json)",
                             ck->shards[ck->tensors[i].shard].path, ck->tensors[i].name);
    json_decref(expected);
    return rc;
}

/* ---- fingerprint ------------------------------------------------------------------ */

/* SHA-256 over the config text, the numerics, and every tensor's name,
 * dtype, shape and first bytes of data.  The data sample distinguishes two
 * checkpoints of one shape (different seeds, different fine-tunes) at the
 * cost of one page per tensor.  The leading tag names the engine's rounding
 * (refmath.c): it changes whenever the engine would compute other bits, so
 * that a state saved by such an engine is refused rather than continued
 * with results a fresh prefill would not give.  2: the reference's rounding
 * order.  The kernels (fast or exact) are part of the mode: each rounds its
 * own way; with fast kernels, official numerics' FP8/FP4 products take the
 * pair order (engine/kernels/fast.h), named by a fourth byte, so states
 * saved before that order are refused (GGUF weights keep the F32 order):
 * 1 for the quantised layers, 2 since the grouped wo_a takes it too. */
static int fingerprint(v4_model *m, const char *config_text, size_t config_len,
                       const v4_tensor_spec *specs, size_t n, tome_error *err)
{
    uint8_t mode[4] = {(uint8_t)m->opts.numerics, (uint8_t)m->rope_bf16, (uint8_t)m->opts.kernels,
                       v4_official(m) && m->opts.kernels == V4_KERNELS_FAST ? 2 : 0};
    size_t mode_len = mode[3] ? 4 : 3;
    if (m->ck->gguf) { /* gguf_model.c's definition: never equal to this one */
        v4_gguf_fingerprint(m->ck, mode, 3, m->fingerprint);
        return 0;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(ctx);
        return tome_errorf(err, TOME_ENOMEM, "cannot create a SHA-256 context");
    }
    EVP_DigestUpdate(ctx, "tome-v4-model-2", 15);
    EVP_DigestUpdate(ctx, config_text, config_len);
    EVP_DigestUpdate(ctx, mode, mode_len);
    for (size_t i = 0; i < n; i++) {
        const v4_ckpt_tensor *t = v4_checkpoint_find(m->ck, specs[i].name);
        EVP_DigestUpdate(ctx, specs[i].name, strlen(specs[i].name) + 1);
        EVP_DigestUpdate(ctx, &specs[i].dtype, sizeof specs[i].dtype);
        EVP_DigestUpdate(ctx, specs[i].shape, sizeof specs[i].shape);
        EVP_DigestUpdate(ctx, t->data, t->nbytes < 64 ? t->nbytes : 64);
    }
    unsigned int len = 32;
    EVP_DigestFinal_ex(ctx, m->fingerprint, &len);
    EVP_MD_CTX_free(ctx);
    return 0;
}

/* ---- open / free -------------------------------------------------------------------- */

static int read_config(const char *dir, v4_model *m, char **text, size_t *len, tome_error *err)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path)
        return tome_errorf(err, TOME_EINVAL, "%s: path too long", dir);
    int rc = tome_read_file(path, 16u << 20, text, len, err);
    if (rc == 0) rc = v4_config_parse(*text, *len, path, &m->cfg, err);
    return rc;
}

/* The stored sizes of one compressed KV entry and one indexer key under
 * `opts` (NULL: the defaults), from the config alone. */
static void row_sizes(const v4_config *c, const v4_open_options *opts, size_t *kv, size_t *index)
{
    int nope = c->head_dim - c->rope_dim;
    if (opts && opts->numerics == V4_NUMERICS_FP32) {
        *kv = (size_t)c->head_dim * 4;
        *index = (size_t)c->index_head_dim * 4;
        return;
    }
    int rope_bf16 = opts && (opts->kv_rope_bf16 || opts->numerics == V4_NUMERICS_OFFICIAL);
    *kv = (size_t)nope + (size_t)nope / V4_KV_FP8_BLOCK + (size_t)c->rope_dim * (rope_bf16 ? 2 : 4);
    *index = (size_t)c->index_head_dim / 2 + (size_t)c->index_head_dim / V4_FP4_BLOCK;
}

static void size_rows(v4_model *m)
{
    m->rope_bf16 = m->opts.kv_rope_bf16 || v4_official(m);
    row_sizes(&m->cfg, &m->opts, &m->kv_row_bytes, &m->index_row_bytes);
}

/* The widest matrix row of the manifest, in values (two per FP4 byte):
 * what the kernels' scratch must hold. */
static int64_t widest(const v4_tensor_spec *specs, size_t n)
{
    int64_t most = 1;
    for (size_t i = 0; i < n; i++) {
        int64_t cols = specs[i].ndim > 1 ? specs[i].shape[1] : 1;
        if (specs[i].dtype == V4_I8) cols *= 2;
        if (cols > most) most = cols;
    }
    return most;
}

/* Bytes of the checkpoint's matrices (those the kernels multiply by). */
static double matrix_bytes(const v4_model *m, const v4_tensor_spec *specs, size_t n)
{
    double bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const v4_ckpt_tensor *t = v4_checkpoint_find(m->ck, specs[i].name);
        if (t && takes_panels(t->name, t->ndim)) bytes += (double)t->nbytes;
    }
    return bytes;
}

int v4_model_open(const char *dir, const v4_open_options *opts, v4_model **out, tome_error *err)
{
    *out = NULL;
    v4_quant_init();
    v4_model *m = calloc(1, sizeof *m);
    if (!m) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    if (opts) m->opts = *opts;
    if ((unsigned)m->opts.numerics > V4_NUMERICS_OFFICIAL) {
        free(m);
        return tome_errorf(err, TOME_EINVAL, "unknown numerics %d", (int)opts->numerics);
    }
    if ((unsigned)m->opts.weights > V4_WEIGHTS_MAP) {
        free(m);
        return tome_errorf(err, TOME_EINVAL, "unknown weights mode %d", (int)opts->weights);
    }
    char *config_text = NULL;
    size_t config_len = 0;
    v4_tensor_spec *specs = NULL;
    size_t n_specs = 0;
    int gguf = v4_gguf_is_file(dir);
    int rc = gguf ? v4_gguf_checkpoint(dir, m->opts.mtp_gguf, &m->cfg, &m->ck, err)
                  : read_config(dir, m, &config_text, &config_len, err);
    if (rc == 0 && !gguf && m->opts.mtp_gguf)
        rc = tome_errorf(err, TOME_EINVAL,
                         "%s: a separate MTP file (%s) attaches to a GGUF model only", dir,
                         m->opts.mtp_gguf);
    if (rc == 0) rc = v4_manifest(&m->cfg, &specs, &n_specs, err);
    if (rc == 0 && !gguf) rc = v4_checkpoint_open(dir, &m->ck, err);
    if (rc == 0 && !gguf) rc = validate(m, specs, n_specs, err); /* GGUF: checked as bound */
    if (rc == 0) {
        size_rows(m);
        rc = fingerprint(m, config_text, config_len, specs, n_specs, err);
    }
    if (rc == 0)
        rc = v4_pool_new(m->opts.n_threads, v4_kernel_scratch_bytes(widest(specs, n_specs)),
                         &m->pool, err);
    if (rc == 0) rc = v4_buffers_new(&m->buffers, err);
    if (rc == 0)
        m->copying =
            v4_weights_copying(m->opts.weights, m->opts.kernels, matrix_bytes(m, specs, n_specs));
    if (rc == 0) rc = bind_all(m, err);
    free(config_text);
    free(specs);
    if (rc) {
        v4_model_free(m);
        return rc;
    }
    rope_init(&m->rope_plain, m->cfg.rope_dim, m->cfg.rope_theta, &m->cfg, 0);
    rope_init(&m->rope_compress, m->cfg.rope_dim, m->cfg.compress_rope_theta, &m->cfg, 1);
    *out = m;
    return 0;
}

void v4_model_free(v4_model *m)
{
    if (!m) return;
    if (m->blocks)
        for (int l = 0; l < m->cfg.n_layers + m->cfg.n_mtp_layers; l++) free(m->blocks[l].experts);
    free(m->blocks);
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    v4_checkpoint_free(m->ck);
    v4_pool_free(m->pool);
    v4_buffers_free(m->buffers);
    free(m);
}

/* Where a tokenizer.json for `model` would be: inside a checkpoint
 * directory, or beside a GGUF file. */
static void tokenizer_path(const char *model, char *out, size_t cap)
{
    if (!v4_gguf_is_file(model)) {
        snprintf(out, cap, "%s/tokenizer.json", model);
        return;
    }
    const char *slash = strrchr(model, '/');
    if (!slash)
        snprintf(out, cap, "tokenizer.json");
    else
        snprintf(out, cap, "%.*s/tokenizer.json", (int)(slash - model), model);
}

int v4_model_tokenizer(const char *model, char **json, size_t *len, char *name, size_t cap,
                       tome_error *err)
{
    tokenizer_path(model, name, cap);
    if (v4_gguf_is_file(model) && access(name, F_OK) != 0) {
        snprintf(name, cap, "%s", model);
        return v4_gguf_tokenizer_json(model, json, len, err);
    }
    return tome_read_file(name, (size_t)1 << 30, json, len, err);
}

const v4_config *v4_model_config(const v4_model *m)
{
    return &m->cfg;
}

size_t v4_model_copied_bytes(const v4_model *m)
{
    return m->copied_bytes;
}

void v4_model_fingerprint(const v4_model *m, uint8_t out[32])
{
    memcpy(out, m->fingerprint, 32);
}

/* The manifest's entry named `name`, or NULL. */
static const v4_tensor_spec *spec_named(const v4_tensor_spec *specs, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(specs[i].name, name) == 0) return &specs[i];
    return NULL;
}

int v4_config_panel_bytes(const v4_config *cfg, const v4_open_options *opts, double *panels,
                          double *replaced, tome_error *err)
{
    *panels = *replaced = 0;
    int copies = opts && opts->kernels == V4_KERNELS_FAST && opts->weights == V4_WEIGHTS_COPY;
    if (!opts || (opts->kernels != V4_KERNELS_EXACT && !copies)) return 0;
    v4_tensor_spec *specs;
    size_t n;
    int rc = v4_manifest(cfg, &specs, &n, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const v4_tensor_spec *t = &specs[i];
        int64_t cols = t->dtype == V4_I8 ? 2 * t->shape[1] : t->shape[1];
        size_t bytes = !takes_panels(t->name, t->ndim) ? 0
                       : copies                        ? v4_tensor_spec_bytes(t)
                                : v4_panels_size(t->dtype, t->shape[0], cols);
        if (!bytes) continue;
        *panels += (double)bytes;
        *replaced += (double)v4_tensor_spec_bytes(t);
        if (copies || t->dtype != V4_I8) continue; /* FP4 panels carry their scales too */
        char scale[sizeof t->name + 8];
        snprintf(scale, sizeof scale, "%.*s.scale", (int)strlen(t->name) - 7, t->name);
        const v4_tensor_spec *s = spec_named(specs, n, scale);
        if (s) *replaced += (double)v4_tensor_spec_bytes(s);
    }
    if (rc == 0) free(specs);
    return rc;
}

double v4_config_state_bytes_per_token(const v4_config *cfg, const v4_open_options *opts)
{
    size_t kv, index;
    row_sizes(cfg, opts, &kv, &index);
    double total = 0;
    for (int l = 0; l < cfg->n_layers; l++) {
        int r = cfg->compress_ratio[l];
        if (r == 0) continue;
        total += (double)kv / r;
        if (r == V4_LAYER_CSA) total += (double)index / r;
    }
    return total;
}

double v4_model_state_bytes_per_token(const v4_model *m)
{
    return v4_config_state_bytes_per_token(&m->cfg, &m->opts);
}

/* ---- cost per token ------------------------------------------------------------ */

static double weight_storage(const v4_weight *w)
{
    return (double)w->rows * (double)v4_dtype_row_bytes(w->dtype, w->cols);
}

/* Add a weight every token multiplies by (absent ones are 0 x 0). */
static void add_weight(const v4_weight *w, double times, v4_token_cost *c)
{
    c->macs += times * (double)w->rows * (double)w->cols;
    c->weight_bytes += times * weight_storage(w);
}

static void add_compressor(const v4_compressor_weights *cw, v4_token_cost *c)
{
    add_weight(&cw->wkv, 1, c);
    add_weight(&cw->wgate, 1, c);
}

void v4_model_token_cost(const v4_model *m, v4_token_cost *out)
{
    memset(out, 0, sizeof *out);
    const v4_config *cfg = &m->cfg;
    for (int l = 0; l < cfg->n_layers; l++) {
        const v4_block_weights *b = &m->blocks[l];
        const v4_weight *attn[] = {&b->hc_attn.fn, &b->hc_ffn.fn, &b->wq_a,     &b->wq_b,
                                   &b->wkv,        &b->wo_a,      &b->wo_b,     &b->gate,
                                   &b->shared_w1,  &b->shared_w2, &b->shared_w3};
        for (size_t i = 0; i < sizeof attn / sizeof attn[0]; i++) add_weight(attn[i], 1, out);
        if (b->kind != V4_LAYER_SWA) add_compressor(&b->compressor, out);
        if (b->kind == V4_LAYER_CSA) {
            add_compressor(&b->index_compressor, out);
            add_weight(&b->index_wq_b, 1, out);
            add_weight(&b->index_weights_proj, 1, out);
        }
        /* each token runs n_active_experts routed experts of this shape */
        for (int k = 0; k < 3; k++) add_weight(&b->experts[k], cfg->n_active_experts, out);
    }
    v4_token_cost head = {0};
    add_weight(&m->head, 1, &head);
    add_weight(&m->hc_head.fn, 1, &head);
    out->head_macs = head.macs;
    out->head_bytes = head.weight_bytes;
}
