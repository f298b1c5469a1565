/*
 * tome-run.c - tome-run: the engine on the command line.
 *
 * Loads a checkpoint directory, prefills token ids (or text, through the
 * model's tokenizer.json), decodes, and reports load time and tokens per
 * second.  With --dump it writes what it computed as a safetensors file
 * (prefill_logits, decode_logits, decode_tokens, mtp_logits), so any
 * outside tool can compare the engine with any reference without linking
 * against it.  It is the engine's only driver besides the daemon.
 */
#include "common/options.h"
#include "engine/v4.h"
#include "kvstate/kvstate.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <unistd.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct options {
    const char *model, *ids_file, *text, *decode_ids_file, *dump, *save_state, *load_state;
    const char *mtp_gguf;
    int chunk, decode, mtp, threads, print_tokens, kv_rope_bf16, warmup;
    int numerics; /* v4_numerics: the index in "qat|fp32|official" */
    int kernels;  /* v4_kernels: the index in "fast|exact" */
    int weights;  /* v4_weights: the index in "auto|copy|map" */
} options;

static int push_id(v4_ids *ids, int32_t id, tome_error *err)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 256;
        int32_t *g = realloc(ids->ids, cap * sizeof *g);
        if (!g) return tome_errorf(err, TOME_ENOMEM, "out of memory for %zu ids", cap);
        ids->ids = g;
        ids->cap = cap;
    }
    ids->ids[ids->n++] = id;
    return 0;
}

/* Read ids as a JSON array or as whitespace-separated integers. */
static int read_ids(const char *path, v4_ids *out, tome_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc;
    if (strcmp(path, "-") == 0) {
        if ((rc = tome_read_stream(stdin, "stdin", (size_t)1 << 30, &text, &len, err)) != 0)
            return rc;
    } else if ((rc = tome_read_file(path, (size_t)1 << 30, &text, &len, err)) != 0) {
        return rc;
    }
    rc = 0;
    json_error_t jerr;
    json_t *arr =
        len && text[strspn(text, " \t\r\n")] == '[' ? json_loadb(text, len, 0, &jerr) : NULL;
    if (arr) {
        if (!json_is_array(arr)) rc = tome_errorf(err, TOME_EFORMAT, "%s: not an array", path);
        for (size_t i = 0; rc == 0 && i < json_array_size(arr); i++) {
            json_t *v = json_array_get(arr, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > INT32_MAX)
                rc = tome_errorf(err, TOME_EFORMAT, "%s: element %zu is not a token id", path, i);
            else
                rc = push_id(out, (int32_t)json_integer_value(v), err);
        }
        json_decref(arr);
    } else {
        char *p = text;
        while (rc == 0) {
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
            if (!*p) break;
            char *end;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p || errno || v < 0 || v > INT32_MAX)
                rc = tome_errorf(err, TOME_EFORMAT, "%s: \"%.20s\" is not a token id", path, p);
            else
                rc = push_id(out, (int32_t)v, err);
            p = end;
        }
    }
    free(text);
    return rc;
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* ---- --dump: a small safetensors writer ---------------------------------------- */

typedef struct dump_tensor {
    const char *name;
    const char *dtype;
    int64_t rows, cols; /* cols 0: a vector */
    const void *data;
    size_t bytes;
} dump_tensor;

static int write_dump(const char *path, const dump_tensor *t, int n, tome_error *err)
{
    json_t *h = json_object();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *shape = t[i].cols ? json_pack("[II]", (json_int_t)t[i].rows, (json_int_t)t[i].cols)
                                  : json_pack("[I]", (json_int_t)t[i].rows);
        json_object_set_new(h, t[i].name,
                            json_pack("{s:s, s:o, s:[II]}", "dtype", t[i].dtype, "shape", shape,
                                      "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + t[i].bytes)));
        off += t[i].bytes;
    }
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "tome-run"));
    char *hdr = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(h);
    if (!hdr) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    int rc = 0;
    if (!f) rc = tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno));
    if (rc == 0) {
        uint8_t le[8];
        for (int i = 0; i < 8; i++) le[i] = (uint8_t)(padded >> (8 * i));
        int ok = fwrite(le, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
        for (size_t i = hlen; i < padded; i++) ok = ok && fputc(' ', f) != EOF;
        for (int i = 0; i < n; i++) ok = ok && fwrite(t[i].data, 1, t[i].bytes, f) == t[i].bytes;
        if (fclose(f) != 0 || !ok) rc = tome_errorf(err, TOME_EIO, "%s: write failed", path);
    }
    free(hdr);
    return rc;
}

/* ---- the run -------------------------------------------------------------------- */

typedef struct outputs {
    float *prefill, *decode, *mtp;
    int32_t *tokens;
    int64_t n_decode;
} outputs;

static options opt;
static const tome_option option_table[] = {
    TOME_STRING("model", 0, "DIR|FILE.gguf", opt.model,
                "the checkpoint directory, or a GGUF file (llama.cpp's V4 layout)"),
    TOME_STRING("ids", 0, "FILE", opt.ids_file,
                "token ids: a JSON array or whitespace-separated integers ('-' = stdin)"),
    TOME_STRING("text", 0, "TEXT", opt.text,
                "text, tokenized with DIR/tokenizer.json (beside a GGUF file;\n"
                "special tokens parsed)"),
    TOME_INT("chunk", 0, "N", opt.chunk, 1, 1 << 20,
             "prefill chunk size (default: the model's; 256 but for many experts)"),
    TOME_INT("decode", 0, "N", opt.decode, 0, INT32_MAX,
             "decode N tokens greedily after the prefill"),
    TOME_STRING("decode-ids", 0, "FILE", opt.decode_ids_file,
                "feed these tokens one step at a time instead"),
    TOME_FLAG("mtp", 0, opt.mtp, "also compute the MTP head's logits (needs a decode step)"),
    TOME_STRING("dump", 0, "FILE", opt.dump, "write logits and tokens as safetensors"),
    TOME_FLAG("warmup", 0, opt.warmup,
              "prefill the prompt once, untimed, before the timed prefill\n"
              "(weights and buffers then start warm, as in a running tomed)"),
    TOME_CHOICE("numerics", 0, "qat|fp32|official", opt.numerics,
                "qat (default), fp32 (round trips off, for debugging) or\n"
                "official (DeepSeek's own: FP8 activations, BF16 states)"),
    TOME_CHOICE("kernels", 0, "fast|exact", opt.kernels,
                "fast (default: SIMD, fixed order) or exact (the reference's\n"
                "rounding, bit for bit; slower)"),
    TOME_CHOICE("weights", 0, "auto|copy|map", opt.weights,
                "where the fast kernels read the matrices: copied into\n"
                "aligned huge pages at open (faster), mapped in place, or auto\n"
                "(default: copied where they fit in the memory available)"),
    TOME_INT("threads", 0, "N", opt.threads, 0, 256, "kernel threads (default 0: all cores)"),
    TOME_STRING("mtp-gguf", 0, "FILE", opt.mtp_gguf,
                "a GGUF model's MTP block from FILE, a GGUF of its own\n"
                "(ds4's layout, \"mtp.0.\" names)"),
    TOME_FLAG("kv-rope-bf16", 0, opt.kv_rope_bf16,
              "keep the RoPE dims of stored KV entries in BF16 (smaller state)"),
    TOME_FLAG("print-tokens", 0, opt.print_tokens,
              "print the decoded ids (and text, with a tokenizer) on stdout"),
    TOME_STRING("save-state", 0, "FILE", opt.save_state,
                "save the state after the prefill (tome-kvcache(5))"),
    TOME_STRING("load-state", 0, "FILE", opt.load_state,
                "start from the longest state or restart point in FILE whose\n"
                "ids start the prompt; prefill only the rest"),
};
static const tome_cli cli = {.program = "tome-run",
                             .usage = "--model DIR|FILE.gguf (--ids FILE | --text TEXT) [options]",
                             .options = option_table,
                             .n_options = sizeof option_table / sizeof option_table[0]};

/* The combinations tome-run refuses. */
static int check_options(void *ctx, int n_operands, char **argv, tome_error *err)
{
    (void)ctx;
    if (n_operands > 0) return tome_errorf(err, TOME_EINVAL, "unexpected argument: %s", argv[1]);
    if (!opt.model) return tome_errorf(err, TOME_EINVAL, "--model is required");
    if (!opt.ids_file == !opt.text)
        return tome_errorf(err, TOME_EINVAL, "give exactly one of --ids and --text");
    if (opt.load_state && (opt.mtp || opt.dump))
        return tome_errorf(err, TOME_EINVAL,
                           "--load-state skips the prompt's saved part, whose outputs --mtp and "
                           "--dump need");
    return 0;
}

/* --load-state: the longest saved point whose ids start the prompt, short
 * of its last token, which is evaluated so that its logits start the
 * decode.  *done gets the number of prompt tokens the state holds. */
static int load_state(const v4_model *m, const char *path, const v4_ids *ids, v4_state **s,
                      size_t *done, tome_error *err)
{
    kvstate_file *f;
    int rc = kvstate_open(path, m, &f, err);
    if (rc) return rc;
    size_t point = 0;
    rc = kvstate_longest(f, ids->ids, ids->n - 1, &point, err);
    if (rc == 0) rc = kvstate_restore(f, point, s, err);
    if (rc == 0) *done = (size_t)kvstate_point_tokens(f, point);
    kvstate_close(f);
    return rc;
}

/* The restore time (since `t0`), and what a fork of the restored state
 * costs: the price of each question asked from a cached state. */
static int report_restore(const char *path, const v4_state *s, size_t done, size_t n, double t0,
                          tome_error *err)
{
    double t_restore = tome_now() - t0, t1 = tome_now();
    v4_state *fork;
    int rc = v4_state_fork(s, &fork, err);
    if (rc) return rc;
    double t_fork = tome_now() - t1;
    v4_state_free(fork);
    fprintf(stderr, "tome-run: restored %zu of %zu prompt tokens from %s in %.6f s; fork %.6f s\n",
            done, n, path, t_restore, t_fork);
    return 0;
}

/* --save-state, timed. */
static int save_state(const char *path, const v4_state *s, const v4_ids *ids, tome_error *err)
{
    double t0 = tome_now();
    int rc = kvstate_save(path, s, NULL, 0, ids->ids, ids->n, err);
    if (rc) return rc;
    double t = tome_now() - t0;
    struct stat st;
    if (stat(path, &st) != 0) return tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno));
    fprintf(stderr, "tome-run: saved %zu tokens to %s: %lld bytes in %.3f s (%.1f MB/s)\n", ids->n,
            path, (long long)st.st_size, t, (double)st.st_size / 1e6 / (t > 0 ? t : 1e-9));
    return 0;
}

static int load_prompt(const options *o, v4_tokenizer **tok, v4_ids *ids, tome_error *err)
{
    if (o->text || o->print_tokens) {
        char name[4096], *json = NULL;
        size_t len;
        int rc = v4_model_tokenizer(o->model, &json, &len, name, sizeof name, err);
        if (rc == 0) rc = v4_tokenizer_from_json(name, json, len, tok, err);
        free(json);
        if (rc && o->text) return rc;
        if (rc) *tok = NULL;
    }
    if (o->text) return v4_tokenize(*tok, o->text, strlen(o->text), 1, ids, err);
    return read_ids(o->ids_file, ids, err);
}

/* Everything one run owns, released by run_free. */
typedef struct run {
    const options *o;
    v4_model *m;
    v4_tokenizer *tok;
    v4_ids ids, forced;
    v4_state *s;
    outputs out;
    float *hc, *last;
    size_t V, width, done_ids;
    double t_load, t_prefill, t_decode;
} run;

static void print_model_lines(const run *r)
{
    const options *o = r->o;
    v4_token_cost cost;
    v4_model_token_cost(r->m, &cost);
    fprintf(stderr,
            "tome-run: cost per token: %.3f GFLOP in matrix products, %.1f MB of weights "
            "(LM head: %.3f GFLOP, %.1f MB)\n",
            2e-9 * cost.macs, 1e-6 * cost.weight_bytes, 2e-9 * cost.head_macs,
            1e-6 * cost.head_bytes);
    size_t copied = v4_model_copied_bytes(r->m);
    char weights[64];
    if (o->kernels == V4_KERNELS_EXACT)
        snprintf(weights, sizeof weights, "in the exact kernels' panels");
    else if (copied)
        snprintf(weights, sizeof weights, "copied (%.1f MB)", 1e-6 * (double)copied);
    else
        snprintf(weights, sizeof weights, "mapped");
    fprintf(stderr,
            "tome-run: kernels %s (%s), numerics %s, %d threads, chunks of %d tokens, "
            "weights %s\n",
            v4_kernels_name((v4_kernels)o->kernels), v4_kernels_isa(),
            v4_numerics_name((v4_numerics)o->numerics),
            o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN),
            o->chunk > 0 ? o->chunk : v4_config_prefill_chunk(v4_model_config(r->m)), weights);
}

/* Open the model, read the prompt and the forced tokens, and allocate the
 * outputs. */
static int run_open(run *r, tome_error *err)
{
    const options *o = r->o;
    v4_open_options opts = {.numerics = (v4_numerics)o->numerics,
                            .kernels = (v4_kernels)o->kernels,
                            .weights = (v4_weights)o->weights,
                            .n_threads = o->threads,
                            .kv_rope_bf16 = o->kv_rope_bf16,
                            .mtp_gguf = o->mtp_gguf};
    double t0 = tome_now();
    int rc = v4_model_open(o->model, &opts, &r->m, err);
    if (rc) return rc;
    r->t_load = tome_now() - t0;
    print_model_lines(r);
    const v4_config *c = v4_model_config(r->m);
    r->V = (size_t)c->vocab_size;
    r->width = (size_t)c->hc_mult * c->dim;
    if ((rc = load_prompt(o, &r->tok, &r->ids, err)) != 0) return rc;
    if (r->ids.n == 0) return tome_errorf(err, TOME_EINVAL, "no prompt tokens");
    if (o->decode_ids_file && (rc = read_ids(o->decode_ids_file, &r->forced, err)) != 0) return rc;
    size_t n = r->ids.n, V = r->V;
    r->out.n_decode = o->decode_ids_file ? (int64_t)r->forced.n : o->decode;
    r->out.prefill = o->dump ? malloc(n * V * sizeof(float)) : NULL;
    /* Every step's logits are kept only for --dump: a fresh row a step is
     * half a megabyte of first-touch page faults in each timed step (about
     * 2.5% of a flash-shape decode step on a Zen 5 VM). */
    r->out.decode = o->dump ? malloc(((size_t)r->out.n_decode + 1) * V * sizeof(float)) : NULL;
    r->out.tokens = malloc(((size_t)r->out.n_decode + 1) * sizeof(int32_t));
    r->hc = malloc((n + 1) * r->width * sizeof(float));
    r->last = malloc(V * sizeof(float));
    if ((o->dump && (!r->out.prefill || !r->out.decode)) || !r->out.tokens || !r->hc || !r->last)
        return tome_errorf(err, TOME_ENOMEM, "out of memory for %zu prompt tokens", n);
    return 0;
}

/* --warmup: the whole prompt on a state of its own, thrown away.  The
 * first touch of a mapped weight or a fresh buffer costs more than the
 * arithmetic on it (page faults; in some virtual machines the host's
 * faults too): this leaves those costs out of the timed prefill. */
static int run_warmup(run *r, tome_error *err)
{
    v4_state *s;
    double t0 = tome_now();
    int rc = v4_state_new(r->m, &s, err);
    if (rc) return rc;
    v4_eval ev = {.chunk = r->o->chunk, .last_logits = r->last};
    rc = v4_eval_tokens(s, r->ids.ids, r->ids.n, &ev, err);
    v4_state_free(s);
    if (rc == 0) fprintf(stderr, "tome-run: warm-up prefill %.3f s (untimed)\n", tome_now() - t0);
    return rc;
}

/* A new state or the saved one, then the rest of the prompt; --save-state. */
static int run_prefill(run *r, tome_error *err)
{
    const options *o = r->o;
    int rc = o->warmup ? run_warmup(r, err) : 0;
    if (rc) return rc;
    double t0 = tome_now();
    rc = o->load_state ? load_state(r->m, o->load_state, &r->ids, &r->s, &r->done_ids, err)
                       : v4_state_new(r->m, &r->s, err);
    if (rc == 0 && o->load_state)
        rc = report_restore(o->load_state, r->s, r->done_ids, r->ids.n, t0, err);
    if (rc) return rc;
    /* A prompt resumed from a saved state is the rest of one evaluation of
     * the whole prompt: it rounds as a run from scratch would. */
    v4_eval ev = {.chunk = o->chunk,
                  .logits = r->out.prefill,
                  .last_logits = r->last,
                  .hc_out = o->mtp ? r->hc : NULL,
                  .part_first = (int64_t)r->done_ids,
                  .part_total = r->done_ids ? (int64_t)r->ids.n : 0};
    double t1 = tome_now();
    rc = v4_eval_tokens(r->s, r->ids.ids + r->done_ids, r->ids.n - r->done_ids, &ev, err);
    r->t_prefill = tome_now() - t1;
    if (rc == 0 && o->save_state) rc = save_state(o->save_state, r->s, &r->ids, err);
    return rc;
}

/* MTP row p pairs the state at p with token p+1; the prompt's last row
 * takes the first decoded token. */
static int run_mtp(run *r, tome_error *err)
{
    size_t n = r->ids.n;
    int32_t *shifted = malloc(n * sizeof *shifted);
    r->out.mtp = malloc(n * r->V * sizeof(float));
    if (!shifted || !r->out.mtp) {
        free(shifted);
        return tome_errorf(err, TOME_ENOMEM, "out of memory for MTP logits");
    }
    memcpy(shifted, r->ids.ids + 1, (n - 1) * sizeof *shifted);
    shifted[n - 1] = r->out.tokens[0];
    int rc = v4_mtp_eval(r->s, r->hc, shifted, n, r->out.mtp, NULL, err);
    free(shifted);
    return rc;
}

/* Greedy decode (or the forced tokens), then --mtp. */
static int run_decode(run *r, tome_error *err)
{
    double t0 = tome_now();
    int32_t next = argmax(r->last, (int)r->V);
    for (int64_t i = 0; i < r->out.n_decode; i++) {
        int32_t feed = r->o->decode_ids_file ? r->forced.ids[i] : next;
        float *logits = r->out.decode ? r->out.decode + (size_t)i * r->V : r->last;
        r->out.tokens[i] = feed;
        v4_eval ev = {.last_logits = logits};
        int rc = v4_eval_tokens(r->s, &feed, 1, &ev, err);
        if (rc) return rc;
        next = argmax(logits, (int)r->V);
    }
    r->t_decode = tome_now() - t0;
    return r->o->mtp && r->out.n_decode > 0 ? run_mtp(r, err) : 0;
}

static void print_tokens(const run *r)
{
    const outputs *out = &r->out;
    for (int64_t i = 0; i < out->n_decode; i++) printf("%s%d", i ? " " : "", out->tokens[i]);
    printf("\n");
    char *text;
    size_t len;
    tome_error ignored;
    if (r->tok && out->n_decode > 0 &&
        v4_detokenize(r->tok, out->tokens, (size_t)out->n_decode, &text, &len, &ignored) == 0) {
        fwrite(text, 1, len, stdout);
        printf("\n");
        free(text);
    }
}

/* The timing line, --print-tokens and --dump. */
static int run_report(const run *r, tome_error *err)
{
    const options *o = r->o;
    size_t n = r->ids.n, V = r->V, fresh = n - r->done_ids;
    int64_t nd = r->out.n_decode;
    fprintf(stderr,
            "tome-run: load %.3f s; prefill %zu tokens in %.3f s (%.1f tok/s); decode %lld tokens "
            "in %.3f s (%.2f tok/s); state %zu bytes of compressed KV (model: %.2f B/token)\n",
            r->t_load, fresh, r->t_prefill, fresh / (r->t_prefill > 0 ? r->t_prefill : 1e-9),
            (long long)nd, r->t_decode, nd / (r->t_decode > 0 ? r->t_decode : 1e-9),
            v4_state_kv_bytes(r->s), v4_model_state_bytes_per_token(r->m));
    if (o->print_tokens) print_tokens(r);
    if (!o->dump) return 0;
    dump_tensor t[4] = {
        {"prefill_logits", "F32", (int64_t)n, (int64_t)V, r->out.prefill, n * V * 4},
        {"decode_logits", "F32", nd, (int64_t)V, r->out.decode, (size_t)nd * V * 4},
        {"decode_tokens", "I32", nd, 0, r->out.tokens, (size_t)nd * 4},
        {"mtp_logits", "F32", (int64_t)n, (int64_t)V, r->out.mtp, n * V * 4},
    };
    return write_dump(o->dump, t, r->out.mtp ? 4 : 3, err);
}

static void run_free(run *r)
{
    v4_state_free(r->s);
    v4_tokenizer_free(r->tok);
    free(r->ids.ids);
    free(r->forced.ids);
    free(r->out.prefill);
    free(r->out.decode);
    free(r->out.mtp);
    free(r->out.tokens);
    free(r->hc);
    free(r->last);
    v4_model_free(r->m);
}

int main(int argc, char **argv)
{
    int n_operands, status;
    if (tome_options_start(&cli, argc, argv, NULL, check_options, 2, &n_operands, &status))
        return status;
    tome_error err = {0};
    run r = {.o = &opt};
    int rc = run_open(&r, &err);
    if (rc == 0) rc = run_prefill(&r, &err);
    if (rc == 0) rc = run_decode(&r, &err);
    if (rc == 0) rc = run_report(&r, &err);
    run_free(&r);
    if (rc) {
        fprintf(stderr, "tome-run: %s\n", err.msg);
        return 1;
    }
    return 0;
}
