/*
 * fuzz_gguf.c - a GGUF model file (engine/gguf.c, gguf_model.c,
 * gguf_vocab.c) from its parsing to a forward pass.
 *
 * The input is a GGUF file's first bytes: its header, metadata and tensor
 * infos, where every mutation that matters lands.  The target appends
 * TAIL bytes of a fixed pseudo-random pattern as the tensor data, so a
 * corpus file stays a few kilobytes while the file written holds data for
 * every tensor of a small model (random bytes are hostile weights too:
 * f16 scales that are infinite or NaN, every code of every block type).
 * Integer tensors (hash layers' tid2eid) whose data lies in that tail get
 * entries 0, 1, 0, 1, ... instead, so that a model with two or more
 * experts passes their check and its forward pass runs on random weights
 * (their check is fuzzed through the header: a mutated offset, shape or
 * expert count).  The file then goes through, as far as each step accepts
 * it:
 *
 *   1. v4_gguf_parse, then every tensor's first and last byte read (one
 *      reaching past the mapping would fault), every key found again by
 *      name and every number read back;
 *   2. its own vocabulary as a tokenizer.json document, which must be JSON;
 *   3. v4_model_open on one thread, then one token evaluated, with
 *      logits, from a fresh state.  The input's length picks the numerics
 *      (modulo 3: qat, fp32, official) and the kernels (the parity of the
 *      length divided by 3: fast, exact), so that mutations reach every
 *      pair.
 *
 * An input holding a second "GGUF" magic after its start is two headers:
 * the model's, then a separate MTP block's (ds4's layout, v4_open_options'
 * mtp_gguf), each given its own tail and parsed as above; a model that
 * opens with it also runs the MTP head once.
 *
 * Nothing may crash, leak, hang or trip a sanitizer on the way; a refusal
 * at any step is an answer.
 */
#include "engine/gguf.h"
#include "engine/v4.h"
#include "tests/fuzz/fuzz.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of tensor data appended: the seeds' models hold under 2 MiB. */
#define TAIL ((size_t)2 << 20)

/* Where the tensors' bytes are read to. */
volatile uint8_t sink;

/* The input, then TAIL bytes of xorshift output (the same for every run). */
static uint8_t *with_tail(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size + TAIL);
    if (!p) fuzz_die("out of memory");
    memcpy(p, data, size);
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (size_t i = 0; i < TAIL; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[size + i] = (uint8_t)(x >> 24);
    }
    return p;
}

/* ggml's number for 32-bit integer tensors. */
#define GGML_I32 26

static void small_integers(const v4_gguf *g, uint8_t *file, size_t tail_start)
{
    for (size_t i = 0; i < g->n_tensors; i++) {
        const v4_gguf_tensor *t = &g->tensors[i];
        size_t at = (size_t)(t->data - g->map);
        if (t->ggml_type != GGML_I32 || at < tail_start) continue;
        for (size_t k = 0; k + 4 <= t->nbytes; k += 4) {
            int32_t v = (int32_t)(k / 4 % 2);
            memcpy(file + at + k, &v, 4);
        }
    }
}

static void touch_parsed(uint8_t *file, size_t n, size_t tail_start)
{
    v4_gguf *g = NULL;
    tome_error err = {0};
    if (v4_gguf_parse(file, n, "fuzz.gguf", &g, &err) != 0) return;
    small_integers(g, file, tail_start);
    for (size_t i = 0; i < g->n_tensors; i++) {
        const v4_gguf_tensor *t = &g->tensors[i];
        if (v4_gguf_tensor_find(g, t->name) == NULL)
            fuzz_die("tensor %s is not found by its own name", t->name);
        if (t->nbytes) sink ^= t->data[0] ^ t->data[t->nbytes - 1];
    }
    for (size_t i = 0; i < g->n_kv; i++) {
        const v4_gguf_kv *kv = &g->kv[i];
        if (v4_gguf_find(g, kv->key) == NULL) fuzz_die("key %s is not found by its name", kv->key);
        uint64_t count = kv->type == V4_GGUF_ARRAY ? kv->count : 1;
        double v;
        for (uint64_t k = 0; k < count && k < 64; k++)
            if (v4_gguf_number(g, kv, k, &v, &err) != 0) break;
    }
    char *json = NULL;
    size_t len = 0;
    if (v4_gguf_vocab_json(g, &json, &len, &err) == 0) {
        json_error_t jerr;
        json_t *doc = json_loadb(json, len, 0, &jerr);
        if (!doc) fuzz_die("the vocabulary's tokenizer.json is not JSON: %s", jerr.text);
        json_decref(doc);
        free(json);
    }
    v4_gguf_free(g);
}

static void run_model(const char *path, const char *mtp_path, size_t size)
{
    static const v4_numerics numerics[] = {V4_NUMERICS_QAT, V4_NUMERICS_FP32, V4_NUMERICS_OFFICIAL};
    v4_open_options o = {.n_threads = 1,
                         .numerics = numerics[size % 3],
                         .kernels = size / 3 % 2 ? V4_KERNELS_EXACT : V4_KERNELS_FAST,
                         .mtp_gguf = mtp_path};
    v4_model *m = NULL;
    tome_error err = {0};
    if (v4_model_open(path, &o, &m, &err) != 0) return;
    const v4_config *c = v4_model_config(m);
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    float *hc = malloc((size_t)c->hc_mult * (size_t)c->dim * sizeof *hc);
    v4_state *s = NULL;
    if (logits && hc && v4_state_new(m, &s, &err) == 0) {
        int32_t token = c->vocab_size > 3 ? 3 : 0;
        v4_eval ev = {.last_logits = logits, .hc_out = hc};
        if (v4_eval_tokens(s, &token, 1, &ev, &err) == 0 && c->n_mtp_layers > 0)
            v4_mtp_eval(s, hc, &token, 1, logits, NULL, &err);
        v4_state_free(s);
    }
    free(hc);
    free(logits);
    v4_model_free(m);
}

/* One header given its tail, checked, and written to dir/name. */
static void prepare(const uint8_t *data, size_t size, const char *name, char *path, size_t cap)
{
    uint8_t *file = with_tail(data, size);
    touch_parsed(file, size + TAIL, size);
    snprintf(path, cap, "%s/%s", fuzz_tmpdir(), name);
    fuzz_write_file(path, file, size + TAIL);
    free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *second = size > 4 ? memmem(data + 4, size - 4, "GGUF", 4) : NULL;
    size_t first = second ? (size_t)(second - data) : size;
    char path[128], mtp_path[128];
    prepare(data, first, "model.gguf", path, sizeof path);
    if (second) prepare(second, size - first, "mtp.gguf", mtp_path, sizeof mtp_path);
    run_model(path, second ? mtp_path : NULL, size);
    return 0;
}
