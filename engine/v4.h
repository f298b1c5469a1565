/*
 * v4.h - the public interface of tome's DeepSeek V4 engine.
 *
 * The engine is a library with this one header.  It owns everything that
 * knows what DeepSeek V4 is: reading a Hugging Face checkpoint directory
 * (config.json, model.safetensors.index.json, the shards, memory-mapped),
 * the forward pass and its kernels, and the decode state with its
 * save/restore sections.  It works on token ids; text and ids meet in the
 * tokenizer library (tokenizer/tokenizer.h), which the engine does not use.
 *
 * Ownership.  Every object here is created by a v4_*_new/open function and
 * released by the matching *_free; the caller owns what it created.  A
 * v4_state refers to its v4_model, which must outlive it.  Functions that
 * can fail return 0 or a negative TOME_E* code and fill a caller-owned
 * tome_error (see common/common.h); nothing here prints, aborts or exits.
 *
 * Threads.  A v4_model is immutable after open and may be shared by any
 * number of threads.  A v4_state is used by one thread at a time; forks of
 * one state are independent and may run concurrently.
 */
#ifndef TOME_ENGINE_V4_H
#define TOME_ENGINE_V4_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* ------------------------------------------------------------------------
 * Configuration (from config.json; nothing is hard-coded)
 * ------------------------------------------------------------------------ */

#define V4_MAX_LAYERS 256

/* The three kinds of attention layer V4 mixes, named by config.json's
 * compress_ratios (one per layer); each kind's value is its ratio. */
typedef enum v4_layer_kind {
    V4_LAYER_SWA = 0,  /* the 128-token sliding window only */
    V4_LAYER_CSA = 4,  /* compressed sparse attention: KV compressed 4x with
                          overlapping windows, the lightning indexer picks the
                          top index_topk entries */
    V4_LAYER_HCA = 128 /* heavily compressed attention: 128x, every entry */
} v4_layer_kind;

typedef struct v4_config {
    int vocab_size;
    int dim;      /* hidden_size */
    int n_layers; /* num_hidden_layers (main blocks, MTP excluded) */
    int n_heads;  /* num_attention_heads */
    int head_dim; /* also the KV width */
    int rope_dim; /* qk_rope_head_dim: RoPE on the last rope_dim dims */
    int q_lora_rank;
    int o_groups;
    int o_lora_rank;
    int window;                            /* sliding_window */
    int n_mtp_layers;                      /* num_nextn_predict_layers */
    int compress_ratio[V4_MAX_LAYERS + 8]; /* n_layers + n_mtp_layers entries, each a
                                              v4_layer_kind's ratio */
    int index_n_heads;
    int index_head_dim;
    int index_topk;
    int n_routed_experts;
    int n_shared_experts;
    int n_active_experts; /* num_experts_per_tok */
    int moe_inter_dim;
    int n_hash_layers;
    int expert_fp4; /* expert_dtype == "fp4" (else fp8) */
    int hc_mult;
    int hc_sinkhorn_iters;
    int bos_id, eos_id;
    int64_t max_position;
    double hc_eps;
    double norm_eps;
    double route_scale;
    double swiglu_limit;
    double rope_theta;
    double compress_rope_theta;
    double rope_factor;
    int64_t rope_original_len;
    double beta_fast, beta_slow;
} v4_config;

/* Parse and validate a config.json text; `origin` names it in errors. */
int v4_config_parse(const char *json, size_t len, const char *origin, v4_config *cfg,
                    tome_error *err);

/* The prefill chunk (tokens per forward pass) the engine takes where a
 * caller leaves v4_eval.chunk at 0: 256 tokens, or for models with many
 * routed experts enough that each expert sees about 32 of a chunk's tokens
 * on average, in multiples of 256 up to 2048.  An expert's weights are
 * decoded once per chunk, so with a handful of tokens each the decoding
 * rivals the arithmetic (V4-Flash's 256 experts, 6 a token: 1536 tokens,
 * where 256 left 6 tokens an expert).  A chunk's work buffers take about
 * 0.6 MB per token at V4's layer sizes. */
int v4_config_prefill_chunk(const v4_config *cfg);

/* ------------------------------------------------------------------------
 * Tensor manifest: what a checkpoint for a config must hold
 * ------------------------------------------------------------------------ */

typedef enum v4_dtype {
    V4_F32,
    V4_BF16,
    V4_F8_E4M3,
    V4_F8_E8M0,
    V4_I8, /* packed FP4 e2m1 pairs, low nibble first */
    V4_I64,
    V4_I32,
    /* GGUF's storage types (engine/kernels/blocks.c): IEEE half, and
     * llama.cpp's block formats, each a fixed number of bytes per block of
     * 32 or 256 values along a row. */
    V4_F16,
    V4_Q8_0,
    V4_MXFP4,
    V4_Q2_K,
    V4_Q3_K,
    V4_Q4_K,
    V4_Q5_K,
    V4_Q6_K,
    V4_IQ4_XS,
    V4_IQ2_XXS,
    V4_DTYPE_COUNT
} v4_dtype;

/* Size in bytes of one element (0 for the block formats); the name as
 * safetensors or GGUF spells it.  v4_dtype_from_name knows only the
 * safetensors types (one value per element). */
size_t v4_dtype_size(v4_dtype t);
const char *v4_dtype_name(v4_dtype t);
int v4_dtype_from_name(const char *name, v4_dtype *out);
/* Values per block (1 for element types) and bytes per block. */
int v4_dtype_block(v4_dtype t);
size_t v4_dtype_block_bytes(v4_dtype t);
/* Bytes of a row of `cols` values (cols a multiple of the block; FP4 I8
 * rows hold two values per byte). */
size_t v4_dtype_row_bytes(v4_dtype t, int64_t cols);

typedef struct v4_tensor_spec {
    char name[96];
    v4_dtype dtype;
    int ndim;
    int64_t shape[4];
} v4_tensor_spec;

/* Every tensor the config implies, in a stable order (weights before their
 * .scale).  The caller frees *specs with free(). */
int v4_manifest(const v4_config *cfg, v4_tensor_spec **specs, size_t *n, tome_error *err);
/* The bytes of a tensor's data in the checkpoint. */
uint64_t v4_tensor_spec_bytes(const v4_tensor_spec *t);

/* ------------------------------------------------------------------------
 * Model
 * ------------------------------------------------------------------------ */

typedef struct v4_model v4_model;

/* What the model rounds (the golden data's three modes).  qat, the
 * default: FP32 compute plus the trained graph's two round trips (KV FP8,
 * indexer FP4).  fp32: those round trips off, for debugging.  official:
 * what DeepSeek's inference code computes (engine/official.c): the inputs
 * of FP8/FP4 linear layers quantised to e4m3 in 128-wide blocks, BF16
 * hidden states and layer outputs, BF16 attention probabilities and
 * indexer scores; it implies BF16 RoPE dims in stored KV entries. */
typedef enum v4_numerics {
    V4_NUMERICS_QAT = 0,
    V4_NUMERICS_FP32 = 1,
    V4_NUMERICS_OFFICIAL = 2
} v4_numerics;

/* "qat" / "fp32" / "official", and the parse of such a name (-1 if
 * unknown). */
const char *v4_numerics_name(v4_numerics n);
int v4_numerics_parse(const char *name);

/* How the engine computes, independently of the numerics.  Fast kernels
 * (the default) use SIMD and fused multiply-adds in one fixed order of
 * their own (engine/kernels/fast.h): results do not depend on the CPU's
 * instruction set, the thread count, or how a prompt is cut into chunks,
 * and stay within the golden tolerances.  Exact kernels round every dot
 * product like DeepSeek's reference code, bit-identical to it on the golden
 * cases, several times slower: a verification mode.  States saved with one
 * are refused by the other (the fingerprint names the kernels). */
typedef enum v4_kernels { V4_KERNELS_FAST = 0, V4_KERNELS_EXACT = 1 } v4_kernels;

/* "fast" / "exact", and the parse of such a name (-1 if unknown). */
const char *v4_kernels_name(v4_kernels k);
int v4_kernels_parse(const char *name);
/* The instruction set the fast kernels run with on this machine ("avx512",
 * "avx2" or "scalar"; the environment variable TOME_ISA may force a lesser
 * one, for tests). */
const char *v4_kernels_isa(void);

/* Where the fast kernels read the matrices from.  Mapped: in place, in the
 * mapped checkpoint (the page cache's 4 kB pages, each tensor wherever
 * the file put it: few are 64-byte aligned).  Copied: each matrix the
 * kernels multiply by copied at open into 64-byte aligned memory in 2 MB
 * huge pages, its mapped pages let go: on a Zen 5, decode read the
 * weights about 1.5 times as fast, for a few seconds' open and RAM for
 * every matrix (routed experts can no longer wait on disk).  Auto (the
 * default): copied when the matrices fit in nine tenths of the memory
 * available (MemAvailable, and the cgroup's limit where one is set), else
 * mapped.  Results are the same bits either way.  The exact kernels keep
 * panels of their own (always in memory) and ignore this. */
typedef enum v4_weights { V4_WEIGHTS_AUTO = 0, V4_WEIGHTS_COPY = 1, V4_WEIGHTS_MAP = 2 } v4_weights;

/* "auto" / "copy" / "map", and the parse of such a name (-1 if unknown). */
const char *v4_weights_name(v4_weights w);
int v4_weights_parse(const char *name);

typedef struct v4_open_options {
    v4_numerics numerics;
    v4_kernels kernels;
    v4_weights weights;
    int n_threads; /* kernel threads; 0 = number of online CPUs */
    /* Store the RoPE dims of KV entries in BF16, as the official bf16 model
     * does (583 bytes per 512-wide entry instead of 711).  Off by default:
     * the trained graph's qat numerics keep them in F32, and rounding them
     * moves logits by ~0.05 on the golden models.  Official numerics
     * always store them so. */
    int kv_rope_bf16;
    /* A GGUF model's MTP block from a separate GGUF file (ds4 publishes
     * V4-Flash's so), or NULL. */
    const char *mtp_gguf;
} v4_open_options;

/* Open a checkpoint directory (config.json, model.safetensors.index.json or a
 * single model.safetensors, and the shards), or a GGUF file in llama.cpp's
 * DeepSeek V4 layout (engine/gguf_model.c).  Files are memory-mapped; every
 * tensor is checked against the manifest. `opts` may be NULL. */
int v4_model_open(const char *dir, const v4_open_options *opts, v4_model **out, tome_error *err);
void v4_model_free(v4_model *m);
/* The model's tokenizer as a tokenizer.json document (*json, *len; free
 * it): the one inside a checkpoint directory, or for a GGUF file the
 * tokenizer.json beside it when there is one, else the file's own
 * vocabulary (v4_gguf_vocab_json).  `name` gets where it came from (the
 * tokenizer.json's path, or the GGUF's), for messages. */
int v4_model_tokenizer(const char *model, char **json, size_t *len, char *name, size_t cap,
                       tome_error *err);
const v4_config *v4_model_config(const v4_model *m);
/* Bytes of matrices the model copied into memory at open (V4_WEIGHTS_COPY,
 * or AUTO where they fit; 0 where the fast kernels read them mapped, and
 * with exact kernels, whose panels are their own). */
size_t v4_model_copied_bytes(const v4_model *m);
/* SHA-256 over config.json and every tensor's name, dtype and shape, plus the
 * numerics mode: two models with equal fingerprints produce the same states. */
void v4_model_fingerprint(const v4_model *m, uint8_t out[32]);
/* Bytes of compressed KV state added per token (compact storage), summed
 * over the main layers, as a fractional average (ratio-4 layers add an entry
 * every 4 tokens). */
double v4_model_state_bytes_per_token(const v4_model *m);
/* The same figure from a config alone, for a model that would be opened
 * with `opts` (NULL: the defaults): what a fit check needs before any
 * weights exist on disk. */
double v4_config_state_bytes_per_token(const v4_config *cfg, const v4_open_options *opts);
/* What a model opened with `opts` (NULL: the defaults) holds beside its
 * mapped weights: with exact kernels, the panel copy of every matrix (their
 * layout, made where the CPU has AVX2: counted here whatever the CPU, so
 * that a fit check errs on the safe side) into *panels, and into *replaced
 * the bytes of mapped weights the model no longer reads once they are made
 * (the matrices, and FP4 ones' scales); with fast kernels and
 * V4_WEIGHTS_COPY, the matrices' copies and the matrices; else both 0
 * (V4_WEIGHTS_AUTO copies only where the copies fit, so a fit check
 * counts it as mapped). */
int v4_config_panel_bytes(const v4_config *cfg, const v4_open_options *opts, double *panels,
                          double *replaced, tome_error *err);
/* What one token costs in matrix products through the main blocks (the
 * MTP block aside): multiply-adds, and bytes of weights read (each routed
 * expert counted per token, as decode reads them); the LM head apart, since
 * prefill computes logits only where they are asked for.  Attention over
 * the KV state, which grows with the context, is not included.  Benchmarks
 * turn tokens/s into fractions of the machine's limits with it. */
typedef struct v4_token_cost {
    double macs, weight_bytes;
    double head_macs, head_bytes;
} v4_token_cost;
void v4_model_token_cost(const v4_model *m, v4_token_cost *out);

/* ------------------------------------------------------------------------
 * State: everything the decode path carries between tokens
 * ------------------------------------------------------------------------ */

typedef struct v4_state v4_state;

int v4_state_new(const v4_model *m, v4_state **out, tome_error *err);
void v4_state_free(v4_state *s);
/* Number of tokens consumed so far (= the next position). */
int64_t v4_state_pos(const v4_state *s);
/* A copy that continues independently.  Compressed arrays written before the
 * fork are shared read-only with the parent; the fork costs O(window +
 * partial compressor state), not O(context). */
int v4_state_fork(const v4_state *parent, v4_state **out, tome_error *err);
/* Bytes held by the state's compressed arrays (all layers). */
size_t v4_state_kv_bytes(const v4_state *s);

/* Progress callback for long prefills: return non-zero to cancel (the
 * prefill then stops at a chunk boundary with TOME_ECANCELED, and the state
 * holds every token consumed so far). */
typedef int (*v4_progress_fn)(void *ctx, int64_t done, int64_t total);

/* Optional outputs and hooks of an evaluation. */
typedef struct v4_eval {
    int chunk;          /* tokens per forward chunk; 0 = engine default */
    float *logits;      /* if set: [n][vocab] logits of every position */
    float *last_logits; /* if set: [vocab] logits of the last position */
    float *hc_out;      /* if set: [n][hc_mult][dim] final HC state (MTP input) */
    v4_progress_fn progress;
    void *progress_ctx;
    /* When one evaluation (a prompt) is fed over several calls, say where
     * this call's tokens sit in it: they are tokens part_first.. of
     * part_total.  Both 0 (the default): this call is the whole evaluation.
     * The reference rounds a few element-wise operations by a token's index
     * in its evaluation (engine/kernels/refmath.c), so a prompt fed in pieces that
     * say so gives the same bits as the prompt fed at once.  Between such
     * calls the model keeps its large work buffers for the next part; they
     * are freed when a call ends the evaluation (or fails). */
    int64_t part_first, part_total;
    /* Debug taps (used by the golden tests).  hidden: the HC state after
     * layer `layer` (-1 = embedding) at absolute position `pos`, hc_mult*dim
     * floats.  topk: the indexer selection of layer `layer` (-1 = MTP block)
     * at position `pos`, k compressed-entry indices, descending score. */
    void (*on_hidden)(void *ctx, int layer, int64_t pos, const float *x);
    void (*on_topk)(void *ctx, int layer, int64_t pos, const int32_t *idx, int k);
    void *tap_ctx;
} v4_eval;

/* Feed `n` tokens at positions pos..pos+n-1.  Prefill and decode are the same
 * call: n == 1 is a decode step.  `ev` may be NULL. */
int v4_eval_tokens(v4_state *s, const int32_t *ids, size_t n, const v4_eval *ev, tome_error *err);

/* The MTP block (multi-token prediction).  For each i, combines the main
 * model's final HC state `hc[i]` ([hc_mult][dim], from v4_eval.hc_out) with
 * the embedding of `next_ids[i]` (the token after that position) and writes
 * the MTP head's logits for the token after that.  The MTP block keeps its
 * own caches inside `s`, at its own positions (first call starts at 0). */
int v4_mtp_eval(v4_state *s, const float *hc, const int32_t *next_ids, size_t n, float *logits,
                const v4_eval *ev, tome_error *err);

/* ------------------------------------------------------------------------
 * State sections (save/restore)
 * ------------------------------------------------------------------------ */
/* (section owned by engine/state_io.c)  A state is a list of named, typed
 * sections, each a run of fixed-size rows: per block (main blocks 0..n_layers-1,
 * then the MTP blocks) its position, its window ring, and where the block
 * compresses its compressed KV rows, its indexer keys and its compressors'
 * partial state.  The store writes them to a file and hands them back; the
 * engine knows nothing of files. */

typedef enum v4_section_kind {
    V4_SECTION_POS = 1,        /* I64, 1 row: tokens the block has consumed */
    V4_SECTION_WINDOW = 2,     /* I8 rows: the window ring, slot = pos % window */
    V4_SECTION_KV = 3,         /* I8 rows: compressed KV entries (ratio != 0) */
    V4_SECTION_INDEX = 4,      /* I8 rows: indexer keys (ratio 4) */
    V4_SECTION_COMP_KV = 5,    /* F32 rows: main compressor, projected KV */
    V4_SECTION_COMP_SCORE = 6, /* F32 rows: main compressor, gate scores */
    V4_SECTION_ICOMP_KV = 7,   /* F32 rows: indexer compressor, projected KV */
    V4_SECTION_ICOMP_SCORE = 8 /* F32 rows: indexer compressor, gate scores */
} v4_section_kind;

/* Short stable name of a kind ("window", "kv", ...), for messages. */
const char *v4_section_kind_name(v4_section_kind kind);

typedef struct v4_section {
    v4_section_kind kind;
    int block;      /* block index; >= n_layers: an MTP block */
    v4_dtype dtype; /* V4_I64, V4_I8 (stored row bytes) or V4_F32 */
    size_t row_bytes;
    int64_t n_rows;
} v4_section;

/* Bytes of a section (row_bytes * n_rows). */
size_t v4_section_bytes(const v4_section *sec);

/* The sections of `s`, in a stable order (block by block, kinds ascending).
 * The caller frees *out with free().  A state left broken by a failed
 * evaluation is refused. */
int v4_state_sections(const v4_state *s, v4_section **out, size_t *n, tome_error *err);

/* Stream one section's bytes: `write` is called with consecutive pieces
 * that together are exactly v4_section_bytes(sec) bytes (the compressed rows
 * are handed out chunk by chunk, without copies).  For the append-only row
 * arrays (kv, index) sec->n_rows may be smaller than the state's: the first
 * n_rows rows are streamed, which is what an earlier position of the state
 * held (restart points).  A non-zero return from `write` stops the stream
 * and is returned. */
typedef int (*v4_section_write_fn)(void *ctx, const void *data, size_t len, tome_error *err);
int v4_state_section_write(const v4_state *s, const v4_section *sec, v4_section_write_fn write,
                           void *ctx, tome_error *err);

/* A section to restore: its description and its bytes. */
typedef struct v4_section_data {
    v4_section sec;
    const void *data;
} v4_section_data;

/* Lending restored rows instead of copying them.  When given to
 * v4_state_load, the compressed KV and indexer rows are not copied: the
 * state's chunks point into the sections' data, retain(owner) is called once
 * per chunk and release(owner) when that chunk is dropped, so the data must
 * stay valid and unchanged until the last release (a read-only mapping of a
 * file that is only ever replaced by rename).  Appending to a borrowed chunk
 * copies it first. */
typedef struct v4_borrow {
    void (*retain)(void *owner);
    void (*release)(void *owner);
    void *owner;
} v4_borrow;

/* Rebuild a state of model `m` from exactly the sections v4_state_sections
 * would list for it: every section once, row sizes as the model stores them,
 * row counts consistent with the positions (a ratio-r block holds pos / r
 * compressed rows) and every main block at the same position.  Anything else
 * is refused with TOME_EFORMAT naming the section.  `borrow` may be NULL
 * (everything is copied). */
int v4_state_load(const v4_model *m, const v4_section_data *secs, size_t n, const v4_borrow *borrow,
                  v4_state **out, tome_error *err);

/* The numerics the model was opened with (states record it), and the
 * model a state belongs to. */
v4_numerics v4_model_numerics(const v4_model *m);
const v4_model *v4_state_model(const v4_state *s);

#endif
