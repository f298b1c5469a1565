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
#include "engine/v4.h"
#include "kvstate/kvstate.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <getopt.h>
#include <unistd.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tome-run --model DIR (--ids FILE | --text TEXT) [options]\n"
            "  --ids FILE         token ids: a JSON array or whitespace-separated integers ('-' = "
            "stdin)\n"
            "  --text TEXT        text, tokenized with DIR/tokenizer.json (special tokens parsed)\n"
            "  --chunk N          prefill chunk size (default 256)\n"
            "  --decode N         decode N tokens greedily after the prefill\n"
            "  --decode-ids FILE  feed these tokens one step at a time instead\n"
            "  --mtp              also compute the MTP head's logits (needs a decode step)\n"
            "  --dump FILE        write logits and tokens as safetensors\n"
            "  --numerics MODE    qat (default) or fp32 (round trips off, for debugging)\n"
            "  --kernels MODE     fast (default: SIMD, fixed order) or exact (the reference's\n"
            "                     rounding, bit for bit; slower)\n"
            "  --threads N        kernel threads (default: all cores)\n"
            "  --kv-rope-bf16     keep the RoPE dims of stored KV entries in BF16 (smaller state)\n"
            "  --print-tokens     print the decoded ids (and text, with a tokenizer) on stdout\n"
            "  --save-state FILE  save the state after the prefill (tome-kvcache(5))\n"
            "  --load-state FILE  start from the longest state or restart point in FILE whose\n"
            "                     ids start the prompt; prefill only the rest\n");
}

typedef struct options {
    const char *model, *ids_file, *text, *decode_ids_file, *dump, *save_state, *load_state;
    int chunk, decode, mtp, threads, print_tokens, kv_rope_bf16;
    v4_numerics numerics;
    v4_kernels kernels;
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

static int parse_options(int argc, char **argv, options *o)
{
    static const struct option longs[] = {{"model", required_argument, 0, 'm'},
                                          {"ids", required_argument, 0, 'i'},
                                          {"text", required_argument, 0, 't'},
                                          {"chunk", required_argument, 0, 'c'},
                                          {"decode", required_argument, 0, 'd'},
                                          {"decode-ids", required_argument, 0, 'D'},
                                          {"mtp", no_argument, 0, 'M'},
                                          {"dump", required_argument, 0, 'o'},
                                          {"numerics", required_argument, 0, 'n'},
                                          {"kernels", required_argument, 0, 'K'},
                                          {"threads", required_argument, 0, 'j'},
                                          {"print-tokens", no_argument, 0, 'p'},
                                          {"help", no_argument, 0, 'h'},
                                          {"kv-rope-bf16", no_argument, 0, 'B'},
                                          {"save-state", required_argument, 0, 'S'},
                                          {"load-state", required_argument, 0, 'L'},
                                          {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    int c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case 'm':
            o->model = optarg;
            break;
        case 'i':
            o->ids_file = optarg;
            break;
        case 't':
            o->text = optarg;
            break;
        case 'c':
            o->chunk = atoi(optarg);
            break;
        case 'd':
            o->decode = atoi(optarg);
            break;
        case 'D':
            o->decode_ids_file = optarg;
            break;
        case 'M':
            o->mtp = 1;
            break;
        case 'o':
            o->dump = optarg;
            break;
        case 'j':
            o->threads = atoi(optarg);
            break;
        case 'p':
            o->print_tokens = 1;
            break;
        case 'B':
            o->kv_rope_bf16 = 1;
            break;
        case 'S':
            o->save_state = optarg;
            break;
        case 'L':
            o->load_state = optarg;
            break;
        case 'n':
            if (strcmp(optarg, "qat") == 0)
                o->numerics = V4_NUMERICS_QAT;
            else if (strcmp(optarg, "fp32") == 0)
                o->numerics = V4_NUMERICS_FP32;
            else {
                fprintf(stderr, "tome-run: --numerics must be qat or fp32\n");
                return 2;
            }
            break;
        case 'K':
            if (v4_kernels_parse(optarg) < 0) {
                fprintf(stderr, "tome-run: --kernels must be fast or exact\n");
                return 2;
            }
            o->kernels = (v4_kernels)v4_kernels_parse(optarg);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!o->model || (!o->ids_file == !o->text) || o->chunk < 0 || o->decode < 0) {
        usage(stderr);
        return 2;
    }
    if (o->load_state && (o->mtp || o->dump)) {
        fprintf(stderr, "tome-run: --load-state skips the prompt's saved part, whose outputs "
                        "--mtp and --dump need\n");
        return 2;
    }
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
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", o->model);
    if (o->text || o->print_tokens) {
        int rc = v4_tokenizer_load(path, tok, err);
        if (rc && o->text) return rc;
        if (rc) *tok = NULL;
    }
    if (o->text) return v4_tokenize(*tok, o->text, strlen(o->text), 1, ids, err);
    return read_ids(o->ids_file, ids, err);
}

static int run(const options *o, tome_error *err)
{
    v4_open_options opts = {.numerics = o->numerics,
                            .kernels = o->kernels,
                            .n_threads = o->threads,
                            .kv_rope_bf16 = o->kv_rope_bf16};
    double t0 = tome_now();
    v4_model *m;
    int rc = v4_model_open(o->model, &opts, &m, err);
    if (rc) return rc;
    double t_load = tome_now() - t0;
    v4_token_cost cost;
    v4_model_token_cost(m, &cost);
    fprintf(stderr,
            "tome-run: cost per token: %.3f GFLOP in matrix products, %.1f MB of weights "
            "(LM head: %.3f GFLOP, %.1f MB)\n",
            2e-9 * cost.macs, 1e-6 * cost.weight_bytes, 2e-9 * cost.head_macs,
            1e-6 * cost.head_bytes);
    fprintf(stderr, "tome-run: kernels %s (%s), numerics %s, %d threads\n",
            v4_kernels_name(o->kernels), v4_kernels_isa(),
            o->numerics == V4_NUMERICS_FP32 ? "fp32" : "qat",
            o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    const v4_config *c = v4_model_config(m);
    size_t V = (size_t)c->vocab_size, width = (size_t)c->hc_mult * c->dim;
    v4_tokenizer *tok = NULL;
    v4_ids ids = {0}, forced = {0};
    v4_state *s = NULL;
    outputs out = {0};
    float *hc = NULL, *last = NULL;
    if ((rc = load_prompt(o, &tok, &ids, err)) != 0) goto done;
    if (ids.n == 0) {
        rc = tome_errorf(err, TOME_EINVAL, "no prompt tokens");
        goto done;
    }
    if (o->decode_ids_file && (rc = read_ids(o->decode_ids_file, &forced, err)) != 0) goto done;
    out.n_decode = o->decode_ids_file ? (int64_t)forced.n : o->decode;
    out.prefill = o->dump ? malloc(ids.n * V * sizeof(float)) : NULL;
    out.decode = malloc(((size_t)out.n_decode + 1) * V * sizeof(float));
    out.tokens = malloc(((size_t)out.n_decode + 1) * sizeof(int32_t));
    hc = malloc((ids.n + 1) * width * sizeof(float));
    last = malloc(V * sizeof(float));
    if ((o->dump && !out.prefill) || !out.decode || !out.tokens || !hc || !last) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory for %zu prompt tokens", ids.n);
        goto done;
    }
    size_t done_ids = 0;
    double t1 = tome_now();
    rc = o->load_state ? load_state(m, o->load_state, &ids, &s, &done_ids, err)
                       : v4_state_new(m, &s, err);
    if (rc) goto done;
    if (o->load_state && (rc = report_restore(o->load_state, s, done_ids, ids.n, t1, err)) != 0)
        goto done;
    /* A prompt resumed from a saved state is the rest of one evaluation of
     * the whole prompt: it rounds as a run from scratch would. */
    v4_eval ev = {.chunk = o->chunk,
                  .logits = out.prefill,
                  .last_logits = last,
                  .hc_out = o->mtp ? hc : NULL,
                  .part_first = (int64_t)done_ids,
                  .part_total = done_ids ? (int64_t)ids.n : 0};
    t1 = tome_now();
    if ((rc = v4_eval_tokens(s, ids.ids + done_ids, ids.n - done_ids, &ev, err)) != 0) goto done;
    double t_prefill = tome_now() - t1;
    if (o->save_state && (rc = save_state(o->save_state, s, &ids, err)) != 0) goto done;
    double t2 = tome_now();
    int32_t next = argmax(last, (int)V);
    for (int64_t i = 0; i < out.n_decode; i++) {
        int32_t feed = o->decode_ids_file ? forced.ids[i] : next;
        out.tokens[i] = feed;
        v4_eval dev = {.last_logits = out.decode + (size_t)i * V};
        if ((rc = v4_eval_tokens(s, &feed, 1, &dev, err)) != 0) goto done;
        next = argmax(out.decode + (size_t)i * V, (int)V);
    }
    double t_decode = tome_now() - t2;
    if (o->mtp && out.n_decode > 0) {
        /* MTP row p pairs the state at p with token p+1; the prompt's last
         * row takes the first decoded token. */
        int32_t *shifted = malloc(ids.n * sizeof *shifted);
        out.mtp = malloc(ids.n * V * sizeof(float));
        if (!shifted || !out.mtp) {
            free(shifted);
            rc = tome_errorf(err, TOME_ENOMEM, "out of memory for MTP logits");
            goto done;
        }
        memcpy(shifted, ids.ids + 1, (ids.n - 1) * sizeof *shifted);
        shifted[ids.n - 1] = out.tokens[0];
        rc = v4_mtp_eval(s, hc, shifted, ids.n, out.mtp, NULL, err);
        free(shifted);
        if (rc) goto done;
    }
    fprintf(stderr,
            "tome-run: load %.3f s; prefill %zu tokens in %.3f s (%.1f tok/s); decode %lld tokens "
            "in %.3f s (%.2f tok/s); state %zu bytes of compressed KV (model: %.2f B/token)\n",
            t_load, ids.n - done_ids, t_prefill,
            (ids.n - done_ids) / (t_prefill > 0 ? t_prefill : 1e-9), (long long)out.n_decode,
            t_decode, out.n_decode / (t_decode > 0 ? t_decode : 1e-9), v4_state_kv_bytes(s),
            v4_model_state_bytes_per_token(m));
    if (o->print_tokens) {
        for (int64_t i = 0; i < out.n_decode; i++) printf("%s%d", i ? " " : "", out.tokens[i]);
        printf("\n");
        if (tok && out.n_decode > 0) {
            char *text;
            size_t len;
            if (v4_detokenize(tok, out.tokens, (size_t)out.n_decode, &text, &len, err) == 0) {
                fwrite(text, 1, len, stdout);
                printf("\n");
                free(text);
            }
        }
    }
    if (o->dump) {
        dump_tensor t[4] = {
            {"prefill_logits", "F32", (int64_t)ids.n, (int64_t)V, out.prefill, ids.n * V * 4},
            {"decode_logits", "F32", out.n_decode, (int64_t)V, out.decode,
             (size_t)out.n_decode * V * 4},
            {"decode_tokens", "I32", out.n_decode, 0, out.tokens, (size_t)out.n_decode * 4},
            {"mtp_logits", "F32", (int64_t)ids.n, (int64_t)V, out.mtp, ids.n * V * 4},
        };
        rc = write_dump(o->dump, t, out.mtp ? 4 : 3, err);
    }
done:
    v4_state_free(s);
    v4_tokenizer_free(tok);
    free(ids.ids);
    free(forced.ids);
    free(out.prefill);
    free(out.decode);
    free(out.mtp);
    free(out.tokens);
    free(hc);
    free(last);
    v4_model_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc;
    tome_error err = {0};
    if (run(&o, &err) != 0) {
        fprintf(stderr, "tome-run: %s\n", err.msg);
        return 1;
    }
    return 0;
}
