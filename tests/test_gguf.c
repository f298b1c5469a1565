/*
 * test_gguf.c - GGUF files made by tome-convert from the golden models
 * (tests/test_gguf.sh makes them): hostile variants of a file are refused
 * with an error and never crash, and each file runs the golden short case.
 *
 * Usage: test_gguf MODEL_NAME FILE.gguf:same|run ...
 *   same  the file's arithmetic is the checkpoint's (lossless types): its
 *         logits must equal the safetensors model's bit for bit;
 *   run   quantised: it must load, run and give finite logits; the largest
 *         logit difference and the top-1 agreement with the golden qat
 *         file are printed (the figures of docs/GGUF.md).
 * The first file also goes through the hostile-file checks.
 */
#include <math.h>
#include <string.h>

#include "engine/gguf.h"
#include "tests/check.h"
#include "tests/golden.h"

/* ---- hostile files ------------------------------------------------------------ */

static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*size);
    REQUIRE(p && fread(p, 1, *size, f) == *size, "cannot read %s", path);
    fclose(f);
    return p;
}

/* Parsing must fail with TOME_EFORMAT and a message containing `want`. */
static void refused(const uint8_t *p, size_t n, const char *want, const char *what)
{
    v4_gguf *g = NULL;
    tome_error err = {0};
    int rc = v4_gguf_parse(p, n, "hostile.gguf", &g, &err);
    CHECKF(rc == TOME_EFORMAT && !g, "%s: rc %d", what, rc);
    CHECKF(!want || strstr(err.msg, want), "%s: message \"%s\" lacks \"%s\"", what, err.msg, want);
    v4_gguf_free(g);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void test_hostile(const char *path)
{
    size_t n;
    uint8_t *p = slurp(path, &n), *q = malloc(n);
    v4_gguf *g = NULL;
    tome_error err = {0};
    CHECK_OK(v4_gguf_parse(p, n, path, &g, &err), &err);
    REQUIRE(g, "%s does not parse", path);
    size_t header = g->header_bytes, end = 0;
    for (size_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].data + g->tensors[i].nbytes - p > (ptrdiff_t)end)
            end = (size_t)(g->tensors[i].data + g->tensors[i].nbytes - p);
    v4_gguf_free(g);
    /* Every truncation inside the header, and one in the data. */
    for (size_t cut = 0; cut < header; cut += 1 + cut / 64)
        refused(p, cut, NULL, "truncated header");
    refused(p, end - 1, "outside the file", "truncated data");
    memcpy(q, p, n);
    q[0] = 'X';
    refused(q, n, "bad magic", "magic");
    memcpy(q, p, n);
    q[4] = 7;
    refused(q, n, "version", "version");
    memcpy(q, p, n);
    put_u64(q + 16, (uint64_t)1 << 40);
    refused(q, n, "metadata count", "huge metadata count");
    memcpy(q, p, n);
    put_u64(q + 8, (uint64_t)1 << 40);
    refused(q, n, NULL, "huge tensor count");
    memcpy(q, p, n);
    put_u64(q + 24, (uint64_t)1 << 62); /* the first key's length */
    refused(q, n, "past the end", "huge string length");
    /* Random damage anywhere in the header: an error or a parse, no crash. */
    srand(7);
    for (int i = 0; i < 3000; i++) {
        memcpy(q, p, n);
        for (int k = 0; k < 4; k++) q[(size_t)rand() % header] = (uint8_t)rand();
        v4_gguf *h = NULL;
        if (v4_gguf_parse(q, n, "fuzz.gguf", &h, &err) == 0) v4_gguf_free(h);
    }
    free(q);
    free(p);
}

/* A hash layer's routing table naming an expert the layer lacks (or a
 * negative one) is refused when the model opens, with the entry named:
 * routing indexes by the table without checks. */
static void test_routing_table(const char *path)
{
    size_t n;
    uint8_t *p = slurp(path, &n);
    v4_gguf *g = NULL;
    tome_error err = {0};
    CHECK_OK(v4_gguf_parse(p, n, path, &g, &err), &err);
    const v4_gguf_tensor *t = g ? v4_gguf_tensor_find(g, "blk.0.ffn_gate_tid2eid.weight") : NULL;
    REQUIRE(t && t->nbytes >= 32, "%s has no routing table for block 0", path);
    size_t at = (size_t)(t->data - p) + 4 * 7; /* entry 7 */
    v4_gguf_free(g);
    static const int32_t bad[] = {1 << 20, -1};
    const char *dir = check_tmpdir();
    char copy[4200];
    snprintf(copy, sizeof copy, "%s/routing.gguf", dir);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memcpy(p + at, &bad[i], 4);
        FILE *f = fopen(copy, "wb");
        REQUIRE(f && fwrite(p, 1, n, f) == n && fclose(f) == 0, "cannot write %s", copy);
        v4_model *m = NULL;
        int rc = v4_model_open(copy, NULL, &m, &err);
        CHECKF(rc == TOME_EFORMAT && !m, "expert %d in tid2eid: rc %d", bad[i], rc);
        CHECKF(strstr(err.msg, "entry 7 names expert"), "expert %d: message \"%s\"", bad[i],
               err.msg);
        v4_model_free(m);
        remove(copy);
    }
    free(p);
}

/* ---- the golden short case ------------------------------------------------------ */

typedef struct logits {
    float *v; /* [rows][vocab]: the prefill, then every decode step */
    int rows, vocab;
} logits;

static logits run_short(const char *model, const golden_file *g)
{
    v4_model *m = NULL;
    tome_error err = {0};
    v4_open_options o = {.n_threads = 2};
    int rc = v4_model_open(model, &o, &m, &err);
    REQUIRE(rc == 0, "%s: %s", model, err.msg);
    golden_tensor in = golden_get(g, "input_ids"), dec = golden_get(g, "decode_input_ids");
    logits l = {0};
    l.vocab = v4_model_config(m)->vocab_size;
    l.rows = (int)(in.count + dec.count);
    l.v = malloc((size_t)l.rows * (size_t)l.vocab * sizeof(float));
    v4_state *s = NULL;
    REQUIRE(v4_state_new(m, &s, &err) == 0, "%s", err.msg);
    v4_eval ev = {.logits = l.v};
    REQUIRE(v4_eval_tokens(s, in.data, (size_t)in.count, &ev, &err) == 0, "%s", err.msg);
    for (int64_t i = 0; i < dec.count; i++) {
        v4_eval one = {.last_logits = l.v + (size_t)(in.count + i) * (size_t)l.vocab};
        REQUIRE(v4_eval_tokens(s, (const int32_t *)dec.data + i, 1, &one, &err) == 0, "%s",
                err.msg);
    }
    v4_state_free(s);
    v4_model_free(m);
    return l;
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* Top-1 agreement with the qat file's argmax at its logged positions. */
static double agreement(const logits *l, const golden_file *g)
{
    golden_tensor pos = golden_get(g, "prefill_logit_positions"),
                  pa = golden_get(g, "prefill_argmax");
    golden_tensor da = golden_get(g, "decode_argmax");
    int64_t prefill = l->rows - da.count, agree = 0;
    for (int64_t i = 0; i < pos.count; i++) {
        int p = ((const int32_t *)pos.data)[i];
        agree += argmax(l->v + (size_t)p * l->vocab, l->vocab) == ((const int32_t *)pa.data)[i];
    }
    for (int64_t i = 0; i < da.count; i++)
        agree += argmax(l->v + (size_t)(prefill + i) * l->vocab, l->vocab) ==
                 ((const int32_t *)da.data)[i];
    return 100.0 * (double)agree / (double)(pos.count + da.count);
}

static void test_file(const char *spec, const logits *ref, const golden_file *g)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", spec);
    char *colon = strrchr(path, ':');
    REQUIRE(colon, "%s: expected FILE:same or FILE:run", spec);
    *colon = 0;
    logits l = run_short(path, g);
    REQUIRE(l.rows == ref->rows && l.vocab == ref->vocab, "%s: shape differs", path);
    double worst = 0;
    int finite = 1;
    for (size_t i = 0; i < (size_t)l.rows * (size_t)l.vocab; i++) {
        finite &= isfinite(l.v[i]) != 0;
        worst = fmax(worst, fabs((double)l.v[i] - (double)ref->v[i]));
    }
    CHECKF(finite, "%s: non-finite logits", path);
    if (strcmp(colon + 1, "same") == 0)
        CHECKF(memcmp(l.v, ref->v, (size_t)l.rows * (size_t)l.vocab * sizeof(float)) == 0,
               "%s: logits differ from the safetensors model's (max |d| %g)", path, worst);
    printf("%s: max |dlogit| vs safetensors %.3g, top-1 agreement with golden qat %.1f%% "
           "(safetensors model: %.1f%%)\n",
           path, worst, agreement(&l, g), agreement(ref, g));
    free(l.v);
}

int main(int argc, char **argv)
{
    REQUIRE(argc >= 3, "usage: test_gguf MODEL_NAME FILE.gguf:same|run ...");
    char rel[512];
    snprintf(rel, sizeof rel, "golden/%s", argv[1]);
    const char *dir = check_shared_path(rel);
    snprintf(rel, sizeof rel, "golden/%s/expected/short.qat.safetensors", argv[1]);
    golden_file g;
    golden_open(&g, check_shared_path(rel));
    char first[4096];
    snprintf(first, sizeof first, "%s", argv[2]);
    *strrchr(first, ':') = 0;
    test_hostile(first);
    test_routing_table(first);
    logits ref = run_short(dir, &g);
    for (int i = 2; i < argc; i++) test_file(argv[i], &ref, &g);
    free(ref.v);
    golden_close(&g);
    return check_finish();
}
