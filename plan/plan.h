/*
 * plan.h - will a model and a context fit this machine?
 *
 * The fit check that `tome-model plan` prints and tomed logs at start.  It
 * works from a config.json alone (no weights need exist yet): the tensor
 * manifest the config implies (engine/v4.h) gives the weights' size by
 * kind, the engine's own formula the KV state per token; the machine gives
 * its RAM (sysinfo), the free disk under a directory (statvfs) and, when
 * measured, its read bandwidth, FMA peak and disk read speed, which turn
 * into upper bounds on decode and prefill speed.  The module computes and
 * formats; it never prints: lines go to the caller's callback.
 */
#ifndef TOME_PLAN_PLAN_H
#define TOME_PLAN_PLAN_H

#include <stdint.h>

#include "common/common.h"
#include "engine/v4.h"

/* What the weights are, by the checkpoint's tensor names. */
typedef enum tome_weight_kind {
    TOME_WEIGHT_ATTENTION, /* layers.*.attn.*: projections, compressors, indexers */
    TOME_WEIGHT_SHARED,    /* layers.*.ffn.shared_experts.* */
    TOME_WEIGHT_ROUTED,    /* layers.*.ffn.experts.* */
    TOME_WEIGHT_EMBED,     /* embed.weight */
    TOME_WEIGHT_HEAD,      /* head.weight and the head's hyper-connection mix */
    TOME_WEIGHT_OTHER,     /* norms, routers, hash tables, hyper-connections */
    TOME_WEIGHT_MTP,       /* the multi-token-prediction block(s), mtp.* */
    TOME_WEIGHT_KINDS
} tome_weight_kind;

/* "attention", "shared experts", ... for reports. */
const char *tome_weight_kind_name(tome_weight_kind k);
/* The kind of a checkpoint tensor by its name. */
tome_weight_kind tome_weight_kind_of(const char *tensor_name);

typedef struct tome_weights {
    double bytes[TOME_WEIGHT_KINDS]; /* as stored (FP4 two to a byte, scales included) */
    double total;
    /* Bytes of weights one decoded token reads: the main blocks with each
     * layer's routed experts at num_experts_per_tok / n_routed_experts,
     * and the head; not the embedding table (one row) or the MTP block. */
    double decode_bytes;
    double routed_decode_bytes; /* the routed experts' share of decode_bytes */
    /* FLOP (2 per multiply-add) of one prompt token through the matrices
     * of the main blocks; the head apart (prefill computes logits only
     * where asked) and attention over the context apart (it grows with it). */
    double prefill_flop;
} tome_weights;

/* The weights a checkpoint for `cfg` holds. */
int tome_weights_of(const v4_config *cfg, tome_weights *w, tome_error *err);

/* The machine.  Figures of 0 are "not measured". */
typedef struct tome_machine {
    double ram;       /* bytes of physical memory */
    double free_disk; /* bytes an unprivileged user may still write under the directory */
    double read_bw;   /* memory read bandwidth, bytes/s */
    double flops;     /* FP32 FMA peak, FLOP/s */
    double disk_read; /* sequential disk read speed, bytes/s */
} tome_machine;

/* RAM (sysinfo) and the free space of the file system holding `dir`;
 * leaves the other fields as they are. */
int tome_machine_probe(const char *dir, tome_machine *m, tome_error *err);

typedef enum tome_verdict {
    TOME_FITS_RAM,        /* weights and states in RAM with a tenth to spare */
    TOME_FITS_PAGE_CACHE, /* all but the routed experts in RAM; those are read from disk
                           * (never with exact kernels: their copy must stay in RAM) */
    TOME_FITS_NOT         /* not even that, or the states do not fit on the disk */
} tome_verdict;

typedef struct tome_plan {
    tome_weights weights;
    int64_t context;      /* tokens per question */
    int questions;        /* concurrent questions, each over its own corpus */
    double kv_per_token;  /* bytes of KV state one token adds */
    double kv_at_context; /* ... at `context` tokens */
    /* With exact kernels (or fast ones and V4_WEIGHTS_COPY), their copy of
     * the matrices and the mapped bytes it replaces (v4_config_panel_bytes);
     * 0 otherwise. */
    double panels, replaced;
    double memory;     /* weights - replaced + panels + questions x kv_at_context */
    double state_disk; /* questions x kv_at_context, saved */
    tome_verdict verdict;
    char why[160]; /* the verdict's reason, one line */
    /* Upper bounds (0: not measured): decode from RAM at the read
     * bandwidth; decode with every routed expert read from disk; prefill
     * at the FMA peak. */
    double decode_tps, decode_disk_tps, prefill_tps;
} tome_plan;

/* The plan for `questions` questions of `context` tokens each of a model
 * with `cfg`, opened with `opts` (NULL: the defaults; the numerics size the
 * KV state, exact kernels add their panels), on machine `m`. */
int tome_plan_make(const v4_config *cfg, const v4_open_options *opts, int64_t context,
                   int questions, const tome_machine *m, tome_plan *p, tome_error *err);

/* "fits in RAM", "runs from the page cache", "does not fit". */
const char *tome_verdict_name(tome_verdict v);

/* The report, one line at a time (no newline), as `tome-model plan`
 * prints it and tomed logs it. */
typedef void (*tome_plan_line_fn)(void *ctx, const char *line);
void tome_plan_report(const tome_plan *p, const tome_machine *m, tome_plan_line_fn line, void *ctx);

#endif
