/*
 * test_kvcache.c - saving and restoring decode states (engine/state_io.c,
 * kvstate/read.c) on the golden model v4-tiny-a.
 *
 * The one property that matters: a restored state is the SAME state.  So a
 * prefix is prefilled (main blocks and the MTP block), saved, restored - in
 * this process and in a fresh one - and K tokens are decoded in each, main
 * and MTP logits compared bit for bit with decoding in the original state.
 * Forks of a restored state must each match a fresh prefill followed by
 * their own continuation.  The rest checks refusals: every section, the
 * header, the table and the ids damaged by one flipped bit; another model,
 * other numerics, another format version; truncated and extended files;
 * token ids that do not start with the state's.  The test reads the file
 * layout itself (tome-kvcache(5)) rather than through the code under test.
 *
 * The prefix is long enough (1100 tokens) that the ratio-4 blocks hold more
 * than one chunk of rows, so borrowed chunks past the first and the
 * copy-on-write of a partly filled borrowed chunk are exercised.
 */
#include "engine/v4.h"
#include "kvstate/kvstate.h"
#include "store/store.h"
#include "tests/golden.h"

#include <dirent.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#define PREFIX 1100
#define POINT1 500 /* restart points */
#define POINT2 900
#define K      8
#define VOCAB  1024

extern char **environ;

static int32_t ids[PREFIX + K]; /* the prefix, then continuation A */
static int32_t cont_b[K];       /* continuation B */
static const char *model_dir;

/* ---- helpers ----------------------------------------------------------------------- */

static v4_model *open_model(v4_numerics numerics)
{
    v4_open_options o = {.numerics = numerics};
    v4_model *m;
    tome_error err = {0};
    REQUIRE(v4_model_open(model_dir, &o, &m, &err) == 0, "%s", err.msg);
    return m;
}

/* Feed ids[from..to) to the main blocks, then the MTP block over the same
 * positions (it reads the token after each, ids[to] included), so that
 * both hold caches worth saving. */
static void advance(v4_state *s, int from, int to)
{
    const v4_config *c = v4_model_config(v4_state_model(s));
    size_t n = (size_t)(to - from), width = (size_t)c->hc_mult * c->dim;
    float *hc = malloc(n * width * sizeof *hc);
    float *mtp = malloc(n * VOCAB * sizeof *mtp);
    REQUIRE(hc && mtp, "out of memory");
    tome_error err = {0};
    v4_eval ev = {.hc_out = hc};
    REQUIRE(v4_eval_tokens(s, ids + from, n, &ev, &err) == 0, "prefill: %s", err.msg);
    REQUIRE(v4_mtp_eval(s, hc, ids + from + 1, n, mtp, NULL, &err) == 0, "mtp: %s", err.msg);
    free(hc);
    free(mtp);
}

/* A new state prefilled with the first n ids (POINT1, POINT2 or PREFIX)
 * through the same pieces as every state of this test, so that the float
 * rounding of chunking is the same; with `points`, forks taken at POINT1
 * and POINT2 on the way (restart points). */
static v4_state *prefill(const v4_model *m, int n, v4_state **points)
{
    static const int stops[] = {0, POINT1, POINT2, PREFIX};
    v4_state *s;
    tome_error err = {0};
    REQUIRE(v4_state_new(m, &s, &err) == 0, "%s", err.msg);
    for (int i = 1; i < 4 && stops[i - 1] < n; i++) {
        advance(s, stops[i - 1], stops[i]);
        if (points && i < 3)
            REQUIRE(v4_state_fork(s, &points[i - 1], &err) == 0, "fork: %s", err.msg);
    }
    return s;
}

/* Decode K tokens one at a time; out gets [K][2][VOCAB]: the main logits
 * and the MTP logits of each step. */
static void decode(v4_state *s, const int32_t *cont, float *out)
{
    const v4_config *c = v4_model_config(v4_state_model(s));
    float *hc = malloc((size_t)c->hc_mult * c->dim * sizeof *hc);
    REQUIRE(hc, "out of memory");
    tome_error err = {0};
    for (int i = 0; i < K; i++) {
        v4_eval ev = {.last_logits = out + (size_t)i * 2 * VOCAB, .hc_out = hc};
        REQUIRE(v4_eval_tokens(s, &cont[i], 1, &ev, &err) == 0, "decode %d: %s", i, err.msg);
        int32_t next = cont[(i + 1) % K];
        REQUIRE(v4_mtp_eval(s, hc, &next, 1, out + ((size_t)i * 2 + 1) * VOCAB, NULL, &err) == 0,
                "mtp decode %d: %s", i, err.msg);
    }
    free(hc);
}

static float *logits_new(void)
{
    float *l = calloc((size_t)K * 2 * VOCAB, sizeof *l);
    REQUIRE(l, "out of memory");
    return l;
}

static int same_logits(const float *a, const float *b)
{
    return memcmp(a, b, (size_t)K * 2 * VOCAB * sizeof *a) == 0;
}

static v4_state *restore(const v4_model *m, const char *path)
{
    kvstate_file *f;
    v4_state *s;
    tome_error err = {0};
    REQUIRE(kvstate_open(path, m, &f, &err) == 0, "%s", err.msg);
    REQUIRE(kvstate_restore(f, 0, &s, &err) == 0, "%s", err.msg);
    /* The state keeps the mapping alive on its own. */
    kvstate_close(f);
    return s;
}

static uint8_t *read_all(const char *path, size_t *len)
{
    char *data;
    tome_error err = {0};
    REQUIRE(tome_read_file(path, (size_t)1 << 30, &data, len, &err) == 0, "%s", err.msg);
    return (uint8_t *)data;
}

static void write_all(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(data, 1, len, f) == len && fclose(f) == 0, "cannot write %s", path);
}

static uint64_t le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Open `path` and, if that works, verify it: the first refusal's code. */
static int open_and_verify(const v4_model *m, const char *path, tome_error *err)
{
    kvstate_file *f;
    int rc = kvstate_open(path, m, &f, err);
    if (rc) return rc;
    rc = kvstate_verify(f, err);
    if (rc == 0) {
        v4_state *s;
        rc = kvstate_restore(f, 0, &s, err);
        v4_state_free(s);
    }
    kvstate_close(f);
    return rc;
}

/* ---- the child process: restore and decode in a fresh address space --------------------- */

static int child_main(const char *path, const char *out_path)
{
    v4_model *m = open_model(V4_NUMERICS_QAT);
    v4_state *s = restore(m, path);
    float *l = logits_new();
    decode(s, ids + PREFIX, l);
    write_all(out_path, (const uint8_t *)l, (size_t)K * 2 * VOCAB * sizeof *l);
    free(l);
    v4_state_free(s);
    v4_model_free(m);
    return 0;
}

static void check_other_process(const char *self, const char *path, const char *dir,
                                const float *want)
{
    char out[4200];
    snprintf(out, sizeof out, "%s/child.logits", dir);
    char *argv[] = {(char *)self, "child", (char *)path, out, NULL};
    pid_t pid;
    int status;
    REQUIRE(posix_spawn(&pid, self, NULL, NULL, argv, environ) == 0, "cannot run %s", self);
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid failed");
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    size_t len;
    uint8_t *bytes = read_all(out, &len);
    float *got = logits_new();
    if (len == (size_t)K * 2 * VOCAB * sizeof *got) memcpy(got, bytes, len);
    CHECKF(len == (size_t)K * 2 * VOCAB * sizeof *got && same_logits(got, want),
           "logits decoded after a restore in another process differ");
    free(bytes);
    free(got);
}

/* ---- refusals ------------------------------------------------------------------------- */

/* Flip one bit in every section (and in the header, table and ids): each is
 * refused, and the message names the damaged part. */
static void check_damage(const v4_model *m, const uint8_t *good, size_t len, const char *dir)
{
    char bad[4200];
    snprintf(bad, sizeof bad, "%s/bad.kv", dir);
    uint8_t *copy = malloc(len);
    REQUIRE(copy, "out of memory");
    uint64_t n = le(good + 60, 4), table = le(good + 64, 8), idsoff = le(good + 72, 8);
    int kinds_seen[9] = {0};
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *e = good + table + i * 56;
        int kind = (int)le(e, 4), block = (int)le(e + 4, 4);
        uint64_t off = le(e + 32, 8), length = le(e + 40, 8);
        if (length == 0) continue;
        memcpy(copy, good, len);
        copy[off + length / 2] ^= 0x10;
        write_all(bad, copy, len);
        tome_error err = {0};
        int rc = open_and_verify(m, bad, &err);
        char want[64];
        snprintf(want, sizeof want, "section %s of block %d", v4_section_kind_name(kind), block);
        CHECKF(rc == TOME_EFORMAT && strstr(err.msg, want) && strstr(err.msg, "checksum"),
               "flipped bit in %s: rc=%d %s", want, rc, err.msg);
        if (kind >= 1 && kind <= 8) kinds_seen[kind] = 1;
    }
    for (int k = 1; k <= 8; k++) CHECKF(kinds_seen[k], "no section of kind %d was damaged", k);
    const struct {
        uint64_t off;
        const char *what;
    } parts[] = {{20, "header"}, {table + 5, "section table"}, {idsoff + 3, "token id"}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        memcpy(copy, good, len);
        copy[parts[i].off] ^= 0x01;
        write_all(bad, copy, len);
        tome_error err = {0};
        int rc = open_and_verify(m, bad, &err);
        CHECKF(rc == TOME_EFORMAT && strstr(err.msg, parts[i].what),
               "flipped bit in the %s: rc=%d %s", parts[i].what, rc, err.msg);
    }
    free(copy);
}

/* A header field changed and the header checksum made valid again, so that
 * the field itself is what gets refused. */
static int with_field(const v4_model *m, const uint8_t *good, size_t len, const char *dir,
                      size_t off, uint64_t value, int bytes, tome_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/patched.kv", dir);
    uint8_t *copy = malloc(len);
    REQUIRE(copy, "out of memory");
    memcpy(copy, good, len);
    put_le(copy + off, value, bytes);
    put_le(copy + 120, XXH3_64bits(copy, 120), 8);
    write_all(path, copy, len);
    free(copy);
    return open_and_verify(m, path, err);
}

static void check_mismatches(const v4_model *m, const char *path, const uint8_t *good, size_t len,
                             const char *dir)
{
    tome_error err = {0};
    int rc = with_field(m, good, len, dir, 8, 2, 4, &err);
    CHECKF(rc == TOME_EMISMATCH && strstr(err.msg, "format version 2"), "rc=%d %s", rc, err.msg);
    rc = with_field(m, good, len, dir, 16, good[16] ^ 0xff, 1, &err);
    CHECKF(rc == TOME_EMISMATCH && strstr(err.msg, "saved for model"), "rc=%d %s", rc, err.msg);
    rc = with_field(m, good, len, dir, 0, 0x4c4c4c4c, 4, &err);
    CHECKF(rc == TOME_EFORMAT && strstr(err.msg, "magic"), "rc=%d %s", rc, err.msg);
    /* The same checkpoint opened with other numerics makes other states. */
    v4_model *fp32 = open_model(V4_NUMERICS_FP32);
    rc = open_and_verify(fp32, path, &err);
    CHECKF(rc == TOME_EMISMATCH && strstr(err.msg, "numerics"), "rc=%d %s", rc, err.msg);
    v4_model_free(fp32);
    /* Another checkpoint altogether. */
    v4_open_options o = {.numerics = V4_NUMERICS_QAT};
    v4_model *other;
    REQUIRE(v4_model_open(check_shared_path("golden/v4-tiny-b"), &o, &other, &err) == 0, "%s",
            err.msg);
    rc = open_and_verify(other, path, &err);
    CHECKF(rc == TOME_EMISMATCH && strstr(err.msg, "saved for model"), "rc=%d %s", rc, err.msg);
    v4_model_free(other);
}

static void check_sizes(const v4_model *m, const uint8_t *good, size_t len, const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/short.kv", dir);
    const size_t cuts[] = {0, 7, 127, 128, 4096, len / 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_all(path, good, cuts[i]);
        tome_error err = {0};
        int rc = open_and_verify(m, path, &err);
        CHECKF(rc == TOME_EFORMAT, "file cut to %zu bytes: rc=%d %s", cuts[i], rc, err.msg);
    }
    uint8_t *longer = calloc(len + 1, 1);
    REQUIRE(longer, "out of memory");
    memcpy(longer, good, len);
    write_all(path, longer, len + 1);
    tome_error err = {0};
    int rc = open_and_verify(m, path, &err);
    CHECKF(rc == TOME_EFORMAT && strstr(err.msg, "extended"), "rc=%d %s", rc, err.msg);
    free(longer);
}

static void check_prefix_match(const v4_model *m, const char *path)
{
    kvstate_file *f;
    tome_error err = {0};
    REQUIRE(kvstate_open(path, m, &f, &err) == 0, "%s", err.msg);
    CHECK(kvstate_tokens(f) == PREFIX);
    CHECK(memcmp(kvstate_ids(f), ids, PREFIX * sizeof *ids) == 0);
    CHECK_OK(kvstate_match(f, ids, PREFIX + K, &err), &err);
    CHECK_OK(kvstate_match(f, ids, PREFIX, &err), &err);
    CHECK(kvstate_match(f, ids, PREFIX - 1, &err) == TOME_EMISMATCH);
    int32_t *other = malloc(sizeof ids);
    REQUIRE(other, "out of memory");
    memcpy(other, ids, sizeof ids);
    other[17] = (other[17] + 1) % VOCAB;
    int rc = kvstate_match(f, other, PREFIX + K, &err);
    CHECKF(rc == TOME_EMISMATCH && strstr(err.msg, "token 17"), "rc=%d %s", rc, err.msg);
    free(other);
    kvstate_close(f);
}

/* ---- the engine's own checks of a section list -------------------------------------------- */

typedef struct mem_state {
    v4_section *secs;
    v4_section_data *data;
    uint8_t **bufs;
    size_t n, filled;
} mem_state;

static int to_memory(void *ctx, const void *d, size_t len, tome_error *err)
{
    mem_state *ms = ctx;
    memcpy(ms->bufs[ms->n] + ms->filled, d, len);
    ms->filled += len;
    return 0;
}

static void save_to_memory(const v4_state *s, mem_state *ms)
{
    tome_error err = {0};
    size_t n;
    REQUIRE(v4_state_sections(s, &ms->secs, &n, &err) == 0, "%s", err.msg);
    ms->data = calloc(n, sizeof *ms->data);
    ms->bufs = calloc(n, sizeof *ms->bufs);
    REQUIRE(ms->data && ms->bufs, "out of memory");
    for (ms->n = 0; ms->n < n; ms->n++) {
        ms->bufs[ms->n] = malloc(v4_section_bytes(&ms->secs[ms->n]) + 1);
        ms->filled = 0;
        REQUIRE(v4_state_section_write(s, &ms->secs[ms->n], to_memory, ms, &err) == 0, "%s",
                err.msg);
        CHECK(ms->filled == v4_section_bytes(&ms->secs[ms->n]));
        ms->data[ms->n].sec = ms->secs[ms->n];
        ms->data[ms->n].data = ms->bufs[ms->n];
    }
}

static void mem_state_free(mem_state *ms)
{
    for (size_t i = 0; i < ms->n; i++) free(ms->bufs[i]);
    free(ms->bufs);
    free(ms->data);
    free(ms->secs);
}

/* Every section of a and b holds the same bytes: a stronger check than the
 * logits, as a damaged indexer key may change no top-k selection. */
static int same_state(const v4_state *a, const v4_state *b)
{
    mem_state ma, mb;
    save_to_memory(a, &ma);
    save_to_memory(b, &mb);
    int same = ma.n == mb.n;
    for (size_t i = 0; same && i < ma.n; i++) {
        size_t bytes = v4_section_bytes(&ma.secs[i]);
        const v4_section *x = &ma.secs[i], *y = &mb.secs[i];
        same = x->kind == y->kind && x->block == y->block && x->dtype == y->dtype &&
               x->row_bytes == y->row_bytes && x->n_rows == y->n_rows &&
               memcmp(ma.bufs[i], mb.bufs[i], bytes) == 0;
    }
    mem_state_free(&ma);
    mem_state_free(&mb);
    return same;
}

/* Copy (not borrow) from memory gives the same state; lists that do not
 * describe a consistent state are refused. */
static void check_engine_load(const v4_model *m, mem_state *saved, const float *want)
{
    mem_state ms = *saved;
    tome_error err = {0};
    v4_state *r = NULL;
    CHECK_OK(v4_state_load(m, ms.data, ms.n, NULL, &r, &err), &err);
    if (r) {
        float *l = logits_new();
        decode(r, ids + PREFIX, l);
        CHECKF(same_logits(l, want), "logits after a copying restore differ");
        free(l);
        v4_state_free(r);
    }
    int rc = v4_state_load(m, ms.data, ms.n - 1, NULL, &r, &err);
    CHECKF(rc == TOME_EFORMAT && strstr(err.msg, "missing"), "rc=%d %s", rc, err.msg);
    for (size_t i = 0; i < ms.n; i++) {
        if (ms.data[i].sec.kind != V4_SECTION_KV) continue;
        ms.data[i].sec.n_rows--;
        rc = v4_state_load(m, ms.data, ms.n, NULL, &r, &err);
        CHECKF(rc == TOME_EFORMAT && strstr(err.msg, "implies"), "rc=%d %s", rc, err.msg);
        ms.data[i].sec.n_rows++;
        ms.data[i].sec.row_bytes++;
        rc = v4_state_load(m, ms.data, ms.n, NULL, &r, &err);
        CHECKF(rc == TOME_EFORMAT && strstr(err.msg, "bytes"), "rc=%d %s", rc, err.msg);
        ms.data[i].sec.row_bytes--;
        break;
    }
    mem_state_free(&ms);
}

/* Each restart point restores to the state the prefill passed through
 * there; the longest usable point is found for ids that diverge; a point
 * that is not an earlier state of the saved one is refused. */
static void check_points(const v4_model *m, const char *path, v4_state *const *points)
{
    kvstate_file *f;
    tome_error err = {0};
    REQUIRE(kvstate_open(path, m, &f, &err) == 0, "%s", err.msg);
    CHECK(kvstate_points(f) == 2);
    CHECK(kvstate_point_tokens(f, 0) == PREFIX && kvstate_point_tokens(f, 1) == POINT1 &&
          kvstate_point_tokens(f, 2) == POINT2 && kvstate_point_tokens(f, 3) == -1);
    float *want = logits_new(), *got = logits_new();
    for (size_t k = 1; k <= 2; k++) {
        v4_state *s = NULL;
        CHECK_OK(kvstate_restore(f, k, &s, &err), &err);
        if (!s) continue;
        int64_t pos = v4_state_pos(points[k - 1]);
        CHECK(v4_state_pos(s) == pos);
        decode(points[k - 1], ids + pos, want);
        decode(s, ids + pos, got);
        CHECKF(same_logits(want, got) && same_state(s, points[k - 1]),
               "restart point %zu restores another state", k);
        v4_state_free(s);
    }
    int32_t *other = malloc(sizeof ids);
    REQUIRE(other, "out of memory");
    const struct {
        int change_at;
        size_t point;
    } cases[] = {{-1, 0}, {POINT1 + 200, 1}, {POINT2, 2}, {PREFIX - 1, 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(other, ids, sizeof ids);
        if (cases[i].change_at >= 0) other[cases[i].change_at] ^= 1;
        size_t point = 99;
        CHECK_OK(kvstate_longest(f, other, PREFIX + K, &point, &err), &err);
        CHECKF(point == cases[i].point, "ids changed at %d: point %zu", cases[i].change_at, point);
    }
    other[POINT1 - 1] ^= 1;
    size_t point;
    CHECK(kvstate_longest(f, other, PREFIX + K, &point, &err) == TOME_EMISMATCH);
    v4_state *none;
    CHECK(kvstate_restore(f, 3, &none, &err) == TOME_EINVAL);
    free(other);
    free(want);
    free(got);
    kvstate_close(f);

    /* A state that went another way is no restart point of this one. */
    v4_state *stranger;
    REQUIRE(v4_state_new(m, &stranger, &err) == 0, "%s", err.msg);
    REQUIRE(v4_eval_tokens(stranger, cont_b, K, NULL, &err) == 0, "%s", err.msg);
    v4_state *orig = prefill(m, POINT1, NULL);
    char path2[4200];
    snprintf(path2, sizeof path2, "%s.other", path);
    int rc = kvstate_save(path2, orig, (const v4_state *const *)&stranger, 1, ids, POINT1, &err);
    CHECKF(rc == TOME_EINVAL && strstr(err.msg, "not the start"), "rc=%d %s", rc, err.msg);
    rc = kvstate_save(path2, stranger, (const v4_state *const *)&orig, 1, cont_b, K, &err);
    CHECKF(rc == TOME_EINVAL && strstr(err.msg, "position"), "rc=%d %s", rc, err.msg);
    CHECK(access(path2, F_OK) != 0);
    v4_state_free(stranger);
    v4_state_free(orig);
}

/* A state that has consumed nothing saves and restores too (empty row
 * sections); a save that fails leaves neither the target nor a temporary
 * file behind. */
static void check_empty_and_failures(const v4_model *m, const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/empty.kv", dir);
    v4_state *s;
    tome_error err = {0};
    REQUIRE(v4_state_new(m, &s, &err) == 0, "%s", err.msg);
    CHECK_OK(kvstate_save(path, s, NULL, 0, ids, 0, &err), &err);
    v4_state *back = restore(m, path);
    CHECK(v4_state_pos(back) == 0);
    float *want = logits_new(), *got = logits_new();
    decode(s, ids, want);
    decode(back, ids, got);
    CHECKF(same_logits(want, got) && same_state(s, back), "an empty state restores differently");
    free(want);
    free(got);
    v4_state_free(back);
    unlink(path);

    char missing[4300];
    snprintf(missing, sizeof missing, "%s/no-such-dir/x.kv", dir);
    CHECK(kvstate_save(missing, s, NULL, 0, ids, K, &err) == TOME_EIO);
    v4_state_free(s);
    DIR *d = opendir(dir);
    REQUIRE(d, "cannot list %s", dir);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        CHECKF(!strstr(e->d_name, ".tmp"), "temporary file %s left behind", e->d_name);
    closedir(d);
}

/* ---- main ------------------------------------------------------------------------------- */

static void load_ids(void)
{
    golden_file g;
    golden_open(&g, check_shared_path("golden/v4-tiny-a/expected/long.qat.safetensors"));
    golden_tensor t = golden_get(&g, "input_ids");
    const int32_t *gold = t.data;
    /* The golden prompt, repeated as far as needed: any ids below the
     * vocabulary serve. */
    for (int i = 0; i < PREFIX + K; i++) ids[i] = gold[i % t.count];
    for (int i = 0; i < K; i++) cont_b[i] = (int32_t)((i * 37 + 11) % VOCAB);
    golden_close(&g);
}

/* Two forks of one restored state, two continuations: each equals a fresh
 * prefill followed by the same continuation (A: `want`, from `orig`). */
static void check_forks(v4_model *m, const char *path, const v4_state *orig, const float *want)
{
    tome_error err = {0};
    v4_state *base = restore(m, path), *fa, *fb;
    REQUIRE(v4_state_fork(base, &fa, &err) == 0 && v4_state_fork(base, &fb, &err) == 0, "%s",
            err.msg);
    float *la = logits_new(), *lb = logits_new(), *fresh_b = logits_new(), *got = logits_new();
    decode(fb, cont_b, lb);
    decode(fa, ids + PREFIX, la);
    v4_state *fresh = prefill(m, PREFIX, NULL);
    decode(fresh, cont_b, fresh_b);
    CHECKF(same_logits(la, want), "fork A of a restored state differs from a fresh prefill");
    CHECKF(same_logits(lb, fresh_b), "fork B of a restored state differs from a fresh prefill");
    CHECKF(same_state(fa, orig) && same_state(fb, fresh), "a fork's state differs");
    CHECK(!same_logits(la, lb));
    /* The forks' appends (copies of the borrowed last chunks) left the
     * restored state as it was. */
    decode(base, ids + PREFIX, got);
    CHECKF(same_logits(got, want), "the restored state changed under its forks");
    CHECK(same_state(base, orig));
    v4_state_free(fa);
    v4_state_free(fb);
    v4_state_free(base);
    v4_state_free(fresh);
    free(la);
    free(lb);
    free(fresh_b);
    free(got);
}

int main(int argc, char **argv)
{
    model_dir = check_shared_path("golden/v4-tiny-a");
    load_ids();
    if (argc == 4 && strcmp(argv[1], "child") == 0) return child_main(argv[2], argv[3]);

    const char *dir = check_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/state.kv", dir);
    v4_model *m = open_model(V4_NUMERICS_QAT);
    tome_error err = {0};

    v4_state *points[2];
    v4_state *orig = prefill(m, PREFIX, points);
    mem_state in_memory;
    save_to_memory(orig, &in_memory);
    double t0 = tome_now();
    CHECK_OK(kvstate_save(path, orig, NULL, 0, ids, PREFIX, &err), &err);
    double t_save = tome_now() - t0;
    CHECK(kvstate_save(path, orig, NULL, 0, ids, PREFIX - 1, &err) == TOME_EINVAL);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    size_t plain_len;
    free(read_all(path, &plain_len));
    fprintf(stderr,
            "state file: %zu bytes for %d tokens (%.1f bytes/token; the model's "
            "compressed KV: %.1f bytes/token), saved in %.3f s\n",
            plain_len, PREFIX, (double)plain_len / PREFIX, v4_model_state_bytes_per_token(m),
            t_save);
    /* From here on the file has two restart points. */
    CHECK_OK(kvstate_save(path, orig, (const v4_state *const *)points, 2, ids, PREFIX, &err), &err);
    size_t len;
    uint8_t *file = read_all(path, &len);
    fprintf(stderr, "with 2 restart points: %zu bytes (%.0f per point)\n", len,
            (double)(len - plain_len) / 2);

    /* Restore in this process, then decode in both. */
    t0 = tome_now();
    v4_state *back = restore(m, path);
    fprintf(stderr, "restored in %.4f s\n", tome_now() - t0);
    CHECK(v4_state_pos(back) == PREFIX);
    CHECK(v4_state_kv_bytes(back) == v4_state_kv_bytes(orig));
    float *want = logits_new(), *got = logits_new();
    decode(orig, ids + PREFIX, want);
    decode(back, ids + PREFIX, got);
    CHECKF(same_logits(want, got), "logits decoded after a restore differ");
    CHECKF(same_state(orig, back), "the states differ after decoding");
    v4_state_free(back);

    check_other_process(argv[0], path, dir, want);
    check_engine_load(m, &in_memory, want);

    check_forks(m, path, orig, want);

    check_points(m, path, points);
    check_empty_and_failures(m, dir);
    check_prefix_match(m, path);
    check_damage(m, file, len, dir);
    check_mismatches(m, path, file, len, dir);
    check_sizes(m, file, len, dir);

    const char *names[] = {"state.kv",   "state.kv.other", "bad.kv",
                           "patched.kv", "short.kv",       "child.logits"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    free(file);
    free(want);
    free(got);
    v4_state_free(orig);
    v4_state_free(points[0]);
    v4_state_free(points[1]);
    v4_model_free(m);
    return check_finish();
}
