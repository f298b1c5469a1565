/*
 * plan.c - the fit check (plan.h): weights by kind from the manifest, KV
 * state from the engine's formula, the machine from the kernel, a verdict.
 *
 * Everything is computed from the config, so the check can run before a
 * download (on a published config.json) as well as on a model directory.
 * Speeds are upper bounds from the machine's limits: a decoded token reads
 * at least its weights once (bandwidth), a prompt token does at least its
 * multiply-adds (FMA peak); attention over the context only adds to both.
 */
#include "plan/plan.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>

/* Keep a tenth of RAM for the system, the page cache and the activations. */
#define RAM_SPARE 0.10
#define GIB       (1024.0 * 1024 * 1024)

static const char *const kind_names[TOME_WEIGHT_KINDS] = {
    "attention", "shared experts",   "routed experts", "embeddings",
    "head",      "norms/routers/HC", "MTP block"};

const char *tome_weight_kind_name(tome_weight_kind k)
{
    return kind_names[k];
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

tome_weight_kind tome_weight_kind_of(const char *name)
{
    if (starts(name, "mtp.")) return TOME_WEIGHT_MTP;
    if (starts(name, "embed.")) return TOME_WEIGHT_EMBED;
    if (starts(name, "head.") || starts(name, "hc_head")) return TOME_WEIGHT_HEAD;
    if (strstr(name, ".ffn.experts.")) return TOME_WEIGHT_ROUTED;
    if (strstr(name, ".ffn.shared_experts.")) return TOME_WEIGHT_SHARED;
    if (strstr(name, ".attn.")) return TOME_WEIGHT_ATTENTION;
    return TOME_WEIGHT_OTHER;
}

/* Multiply-adds of one product with a matrix tensor (0 for vectors, block
 * scales, integer tables and additive tables such as compressor.ape). */
static double spec_macs(const v4_tensor_spec *s)
{
    size_t len = strlen(s->name);
    int matrix = (len > 7 && strcmp(s->name + len - 7, ".weight") == 0) ||
                 (len > 3 && strcmp(s->name + len - 3, "_fn") == 0);
    if (!matrix || s->ndim != 2 || s->dtype == V4_I64 || s->dtype == V4_I32 ||
        s->dtype == V4_F8_E8M0)
        return 0;
    double per_byte = s->dtype == V4_I8 ? 2.0 : 1.0 / (double)v4_dtype_size(s->dtype);
    return (double)v4_tensor_spec_bytes(s) * per_byte;
}

int tome_weights_of(const v4_config *cfg, tome_weights *w, tome_error *err)
{
    memset(w, 0, sizeof *w);
    v4_tensor_spec *specs;
    size_t n;
    int rc = v4_manifest(cfg, &specs, &n, err);
    if (rc) return rc;
    double active = (double)cfg->n_active_experts / (double)cfg->n_routed_experts;
    for (size_t i = 0; i < n; i++) {
        tome_weight_kind k = tome_weight_kind_of(specs[i].name);
        double bytes = (double)v4_tensor_spec_bytes(&specs[i]), macs = spec_macs(&specs[i]);
        w->bytes[k] += bytes;
        w->total += bytes;
        if (k == TOME_WEIGHT_EMBED || k == TOME_WEIGHT_MTP) continue;
        double share = k == TOME_WEIGHT_ROUTED ? active : 1.0;
        w->decode_bytes += bytes * share;
        if (k == TOME_WEIGHT_ROUTED) w->routed_decode_bytes += bytes * share;
        if (k != TOME_WEIGHT_HEAD) w->prefill_flop += 2.0 * macs * share;
    }
    free(specs);
    return 0;
}

int tome_machine_probe(const char *dir, tome_machine *m, tome_error *err)
{
    struct sysinfo si;
    if (sysinfo(&si) != 0) return tome_errorf(err, TOME_EIO, "sysinfo: %s", strerror(errno));
    m->ram = (double)si.totalram * (double)si.mem_unit;
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0)
        return tome_errorf(err, TOME_EIO, "%s: cannot read the free space: %s", dir,
                           strerror(errno));
    m->free_disk = (double)vfs.f_bavail * (double)vfs.f_frsize;
    return 0;
}

const char *tome_verdict_name(tome_verdict v)
{
    return v == TOME_FITS_RAM          ? "fits in RAM"
           : v == TOME_FITS_PAGE_CACHE ? "runs from the page cache"
                                       : "does not fit";
}

static void judge(tome_plan *p, const tome_machine *m)
{
    double usable = m->ram * (1 - RAM_SPARE), gib = GIB;
    double states = p->state_disk;
    /* the routed experts may stay on disk only where they are read mapped */
    double pageable = p->panels > 0 ? 0 : p->weights.bytes[TOME_WEIGHT_ROUTED];
    double without_routed = p->memory - pageable;
    if (m->free_disk > 0 && p->state_disk > m->free_disk) {
        p->verdict = TOME_FITS_NOT;
        snprintf(p->why, sizeof p->why, "the saved states need %.1f GiB of disk, %.1f GiB are free",
                 p->state_disk / gib, m->free_disk / gib);
    } else if (p->memory <= usable) {
        p->verdict = TOME_FITS_RAM;
        snprintf(p->why, sizeof p->why, "%.1f GiB needed, %.1f GiB usable (90%% of RAM)",
                 p->memory / gib, usable / gib);
    } else if (pageable > 0 && without_routed <= usable) {
        p->verdict = TOME_FITS_PAGE_CACHE;
        snprintf(p->why, sizeof p->why,
                 "all but the routed experts (%.1f GiB) fit in %.1f GiB; experts are read from "
                 "disk as tokens need them",
                 without_routed / gib, usable / gib);
    } else if (pageable > 0) {
        p->verdict = TOME_FITS_NOT;
        snprintf(p->why, sizeof p->why,
                 "even without the routed experts %.1f GiB are needed (states %.1f GiB), %.1f GiB "
                 "usable",
                 without_routed / gib, states / gib, usable / gib);
    } else {
        p->verdict = TOME_FITS_NOT;
        snprintf(p->why, sizeof p->why,
                 "%.1f GiB are needed in RAM with every matrix held there (exact kernels' "
                 "panels or copied weights; states %.1f GiB), "
                 "%.1f GiB usable",
                 p->memory / gib, states / gib, usable / gib);
    }
}

int tome_plan_make(const v4_config *cfg, const v4_open_options *opts, int64_t context,
                   int questions, const tome_machine *m, tome_plan *p, tome_error *err)
{
    memset(p, 0, sizeof *p);
    if (context < 1 || questions < 1)
        return tome_errorf(err, TOME_EINVAL, "a plan needs a context and questions of at least 1");
    int rc = tome_weights_of(cfg, &p->weights, err);
    if (rc == 0) rc = v4_config_panel_bytes(cfg, opts, &p->panels, &p->replaced, err);
    if (rc) return rc;
    p->context = context;
    p->questions = questions;
    p->kv_per_token = v4_config_state_bytes_per_token(cfg, opts);
    p->kv_at_context = p->kv_per_token * (double)context;
    p->state_disk = p->kv_at_context * questions;
    p->memory = p->weights.total - p->replaced + p->panels + p->state_disk;
    if (m->read_bw > 0) p->decode_tps = m->read_bw / p->weights.decode_bytes;
    if (m->disk_read > 0 && p->weights.routed_decode_bytes > 0)
        p->decode_disk_tps = m->disk_read / p->weights.routed_decode_bytes;
    if (m->flops > 0) p->prefill_tps = m->flops / p->weights.prefill_flop;
    judge(p, m);
    return 0;
}

/* A report line, formatted. */
static void say(tome_plan_line_fn line, void *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(tome_plan_line_fn line, void *ctx, const char *fmt, ...)
{
    char text[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    line(ctx, text);
}

static void report_speed(const tome_plan *p, const tome_machine *m, tome_plan_line_fn line,
                         void *ctx)
{
    const tome_weights *w = &p->weights;
    if (p->decode_tps > 0)
        say(line, ctx,
            "decode       at most %.1f tokens/s (%.2f GiB of weights per token at %.1f "
            "GB/s read bandwidth)",
            p->decode_tps, w->decode_bytes / GIB, m->read_bw / 1e9);
    else
        say(line, ctx, "decode       %.2f GiB of weights per token (read bandwidth not measured)",
            w->decode_bytes / GIB);
    if (p->decode_disk_tps > 0)
        say(line, ctx,
            "             at most %.2f tokens/s if every routed expert comes from disk "
            "(%.2f GiB per token at %.2f GB/s)",
            p->decode_disk_tps, w->routed_decode_bytes / GIB, m->disk_read / 1e9);
    if (p->prefill_tps > 0)
        say(line, ctx,
            "prefill      at most %.0f tokens/s (%.1f GFLOP per token at %.0f GFLOP/s "
            "FMA peak)",
            p->prefill_tps, w->prefill_flop / 1e9, m->flops / 1e9);
    else
        say(line, ctx, "prefill      %.1f GFLOP per token (FMA peak not measured)",
            w->prefill_flop / 1e9);
    if (p->decode_tps > 0 || p->prefill_tps > 0)
        say(line, ctx, "             (upper bounds: attention over the context adds to both)");
}

void tome_plan_report(const tome_plan *p, const tome_machine *m, tome_plan_line_fn line, void *ctx)
{
    const tome_weights *w = &p->weights;
    say(line, ctx, "weights      %.1f GiB", w->total / GIB);
    for (int k = 0; k < TOME_WEIGHT_KINDS; k++)
        say(line, ctx, "  %-18s %9.2f GiB", tome_weight_kind_name((tome_weight_kind)k),
            w->bytes[k] / GIB);
    say(line, ctx, "KV state     %.1f bytes/token, %.2f GiB at %lld tokens", p->kv_per_token,
        p->kv_at_context / GIB, (long long)p->context);
    say(line, ctx, "questions    %d x %.2f GiB = %.2f GiB (each over its own corpus)", p->questions,
        p->kv_at_context / GIB, p->state_disk / GIB);
    if (p->panels > 0)
        say(line, ctx,
            "panels       %.1f GiB (the exact kernels' copy of the matrices, in RAM; replaces "
            "%.1f GiB of mapped weights)",
            p->panels / GIB, p->replaced / GIB);
    say(line, ctx, "memory       %.1f GiB (weights%s and states)", p->memory / GIB,
        p->panels > 0 ? ", the matrices as panels," : "");
    say(line, ctx, "machine      %.1f GiB RAM, %.1f GiB free disk", m->ram / GIB,
        m->free_disk / GIB);
    say(line, ctx, "verdict      %s: %s", tome_verdict_name(p->verdict), p->why);
    report_speed(p, m, line, ctx);
}
