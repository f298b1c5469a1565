/*
 * test_kvcache_crash.c - a writer of state files killed at any point of a
 * save never leaves a file that is accepted but wrong, and never loses the
 * state the target held before (kvstate/write.c).
 *
 * Two states of the golden model v4-tiny-a are prefilled once: A after
 * SHORT tokens and B after LONG tokens (B's file carries A as a restart
 * point).  Each round saves one of them to the target, then forks a child
 * that saves the other over it and kills itself with SIGKILL once it has
 * written N bytes: the write that crosses N writes only its first bytes.
 * The kill points are deterministic, not timed: the linker wraps pwrite(2)
 * and rename(2) for this program (-Wl,--wrap), so the N of each round is
 * exact and the rounds walk N from 0 through every byte range of both
 * saves to just before and just after the rename (the rename counts as one
 * byte).  After each kill the target is opened, fully verified and
 * restored: it must be exactly the old state when the kill came before the
 * rename, exactly the new one after - every section the same bytes as the
 * prefilled state, and the first time each is seen, the same decode logits
 * bit for bit.  One temporary file is left by a kill before the rename and
 * none after; the next save removes it, and kvstate_remove_temps() clears
 * a directory and nothing else in it.
 */
#include "engine/v4.h"
#include "kvstate/kvstate.h"
#include "store/store.h"
#include "tests/golden.h"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#define SHORT  256
#define LONG   700
#define DECODE 2
#define STEPS  100 /* kill points spread over each save's bytes */

static int32_t ids[LONG + DECODE];

typedef struct reference {
    v4_state *st;
    uint64_t digest;
    float *logits; /* [DECODE][vocab] */
    int seen;      /* accepted after a kill at least once */
} reference;

/* ---- the kill switch ------------------------------------------------------------------ */

static uint64_t written;              /* bytes written (and renames done) */
static uint64_t kill_at = UINT64_MAX; /* die on reaching this many */

ssize_t __real_pwrite(int fd, const void *buf, size_t n, off_t off);
int __real_rename(const char *from, const char *to);

ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (written + n >= kill_at) {
        size_t part = (size_t)(kill_at - written);
        if (part && __real_pwrite(fd, buf, part, off) != (ssize_t)part) _exit(3);
        raise(SIGKILL);
    }
    ssize_t done = __real_pwrite(fd, buf, n, off);
    if (done > 0) written += (uint64_t)done;
    return done;
}

int __wrap_rename(const char *from, const char *to)
{
    if (written >= kill_at) raise(SIGKILL);
    int rc = __real_rename(from, to);
    if (++written >= kill_at) raise(SIGKILL);
    return rc;
}

/* ---- helpers ----------------------------------------------------------------------- */

static int hash_piece(void *ctx, const void *data, size_t len, tome_error *err)
{
    XXH3_64bits_update(ctx, data, len);
    return 0;
}

/* One checksum over every section of `s`: its description and its bytes. */
static uint64_t state_digest(const v4_state *s)
{
    tome_error err = {0};
    v4_section *secs;
    size_t n;
    REQUIRE(v4_state_sections(s, &secs, &n, &err) == 0, "%s", err.msg);
    XXH3_state_t *h = XXH3_createState();
    REQUIRE(h, "out of memory");
    XXH3_64bits_reset(h);
    for (size_t i = 0; i < n; i++) {
        const int64_t desc[] = {secs[i].kind, secs[i].block, secs[i].dtype,
                                (int64_t)secs[i].row_bytes, secs[i].n_rows};
        XXH3_64bits_update(h, desc, sizeof desc);
        REQUIRE(v4_state_section_write(s, &secs[i], hash_piece, h, &err) == 0, "%s", err.msg);
    }
    uint64_t d = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    free(secs);
    return d;
}

/* Decode ids[from..from+DECODE) in a fork of `s` (so `s` stays as it is). */
static float *decode(const v4_state *s, int from)
{
    int vocab = v4_model_config(v4_state_model(s))->vocab_size;
    float *out = calloc((size_t)DECODE * vocab, sizeof *out);
    v4_state *f;
    tome_error err = {0};
    REQUIRE(out && v4_state_fork(s, &f, &err) == 0, "%s", err.msg);
    for (int i = 0; i < DECODE; i++) {
        v4_eval ev = {.last_logits = out + (size_t)i * vocab};
        REQUIRE(v4_eval_tokens(f, &ids[from + i], 1, &ev, &err) == 0, "%s", err.msg);
    }
    v4_state_free(f);
    return out;
}

static int count_temps(const char *dir)
{
    DIR *d = opendir(dir);
    REQUIRE(d, "cannot list %s", dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += strstr(e->d_name, ".tmp") != NULL;
    closedir(d);
    return n;
}

static void load_ids(void)
{
    golden_file g;
    golden_open(&g, check_shared_path("golden/v4-tiny-a/expected/long.qat.safetensors"));
    golden_tensor t = golden_get(&g, "input_ids");
    const int32_t *gold = t.data;
    for (int i = 0; i < LONG + DECODE; i++) ids[i] = gold[i % t.count];
    golden_close(&g);
}

/* ---- checking what a kill left --------------------------------------------------------- */

/* The restored state must be `want` exactly; the first time, decode too. */
static void check_same(const v4_state *got, reference *want, int tokens)
{
    CHECKF(state_digest(got) == want->digest, "a state of %d tokens was accepted but differs",
           tokens);
    if (want->seen++) return;
    int vocab = v4_model_config(v4_state_model(got))->vocab_size;
    float *l = decode(got, tokens);
    CHECKF(memcmp(l, want->logits, (size_t)DECODE * vocab * sizeof *l) == 0,
           "decoding after a restore of %d tokens differs", tokens);
    free(l);
}

/* Which state the target holds, A or B, checked section by section and
 * by decoding; NULL when it is refused or something else. */
static reference *check_target(const v4_model *m, const char *path, reference *a, reference *b)
{
    kvstate_file *f = NULL;
    tome_error err = {0};
    int rc = kvstate_open(path, m, &f, &err);
    if (rc == 0) rc = kvstate_verify(f, &err);
    v4_state *s = NULL;
    if (rc == 0) rc = kvstate_restore(f, 0, &s, &err);
    reference *got = NULL;
    if (rc != 0) {
        CHECKF(0, "the target was refused (rc=%d): %s", rc, err.msg);
    } else if (kvstate_tokens(f) == SHORT) {
        got = a;
        check_same(s, a, SHORT);
    } else if (kvstate_tokens(f) == LONG) {
        got = b;
        check_same(s, b, LONG);
        v4_state *p = NULL;
        CHECK_OK(kvstate_restore(f, 1, &p, &err), &err);
        CHECKF(p && state_digest(p) == a->digest, "B's restart point is not A");
        v4_state_free(p);
    } else {
        CHECKF(0, "accepted a state of %lld tokens", (long long)kvstate_tokens(f));
    }
    v4_state_free(s);
    if (f) kvstate_close(f);
    return got;
}

/* ---- the rounds ------------------------------------------------------------------------ */

typedef struct tally {
    int kills, old, new, mid_write;
} tally;

/* Bytes a save of `ref` writes, the rename counted as one. */
static uint64_t save_cost(const char *path, reference *ref, reference *a)
{
    const v4_state *point = a->st;
    tome_error err = {0};
    uint64_t before = written;
    int rc = ref == a ? kvstate_save(path, a->st, NULL, 0, ids, SHORT, &err)
                      : kvstate_save(path, ref->st, &point, 1, ids, LONG, &err);
    REQUIRE(rc == 0, "%s", err.msg);
    return written - before;
}

/* The target holds `from`; a child saves `to` over it and dies after
 * `budget` bytes of `cost`.  Before the rename the target must still be
 * `from`, after it `to`. */
static void one_round(const v4_model *m, const char *dir, const char *path, reference *a,
                      reference *from, reference *to, uint64_t budget, uint64_t cost, tally *t)
{
    save_cost(path, from, a);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    if (pid == 0) {
        written = 0;
        kill_at = budget;
        save_cost(path, to, a);
        _exit(2); /* not reached: the budget ends within the save */
    }
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid failed");
    CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "kill at %llu: writer status %d",
           (unsigned long long)budget, status);
    int renamed = budget >= cost, temps = count_temps(dir);
    CHECKF(temps == !renamed, "kill at %llu of %llu: %d temporary files left",
           (unsigned long long)budget, (unsigned long long)cost, temps);
    t->kills++;
    t->mid_write += temps > 0;
    reference *want = renamed ? to : from;
    reference *got = check_target(m, path, a, from == a ? to : from);
    CHECKF(got == want, "kill at %llu of %llu: the target is not the %s state",
           (unsigned long long)budget, (unsigned long long)cost, renamed ? "new" : "old");
    if (got == want) renamed ? t->new ++ : t->old++;
}

/* Every kill point of a save of `to` over `from`: STEPS spread over its
 * bytes, and each side of the rename. */
static void all_rounds(const v4_model *m, const char *dir, const char *path, reference *a,
                       reference *from, reference *to, tally *t)
{
    char scratch[4300];
    snprintf(scratch, sizeof scratch, "%s/cost.kv", dir);
    uint64_t cost = save_cost(scratch, to, a);
    unlink(scratch);
    for (int i = 0; i < STEPS; i++)
        one_round(m, dir, path, a, from, to, (cost - 1) * (uint64_t)i / STEPS, cost, t);
    one_round(m, dir, path, a, from, to, cost - 1, cost, t); /* just before the rename */
    one_round(m, dir, path, a, from, to, cost, cost, t);     /* just after it */
}

/* A clean save removes the last kill's leftover; the directory sweep
 * removes temporary files of any target and nothing else. */
static void check_cleanup(const char *dir, const char *path, reference *a)
{
    tome_error err = {0};
    CHECK_OK(kvstate_save(path, a->st, NULL, 0, ids, SHORT, &err), &err);
    CHECK(count_temps(dir) == 0);
    char other[4200], keep[4200];
    snprintf(other, sizeof other, "%s/other.kv.tmpAb12Cd", dir);
    snprintf(keep, sizeof keep, "%s/notes.tmp", dir);
    FILE *f1 = fopen(other, "w"), *f2 = fopen(keep, "w");
    REQUIRE(f1 && f2, "cannot create files in %s", dir);
    fclose(f1);
    fclose(f2);
    size_t removed = 0;
    CHECK_OK(kvstate_remove_temps(dir, &removed, &err), &err);
    struct stat st;
    CHECK(removed == 1 && stat(other, &st) != 0 && stat(keep, &st) == 0 && stat(path, &st) == 0);
    unlink(keep);
}

/* ---- main ------------------------------------------------------------------------------- */

int main(void)
{
    const char *model_dir = check_shared_path("golden/v4-tiny-a");
    load_ids();
    v4_open_options o = {.numerics = V4_NUMERICS_QAT};
    v4_model *m;
    tome_error err = {0};
    REQUIRE(v4_model_open(model_dir, &o, &m, &err) == 0, "%s", err.msg);

    reference a = {0}, b = {0};
    REQUIRE(v4_state_new(m, &b.st, &err) == 0, "%s", err.msg);
    v4_eval ev = {0};
    REQUIRE(v4_eval_tokens(b.st, ids, SHORT, &ev, &err) == 0, "%s", err.msg);
    REQUIRE(v4_state_fork(b.st, &a.st, &err) == 0, "%s", err.msg);
    REQUIRE(v4_eval_tokens(b.st, ids + SHORT, LONG - SHORT, &ev, &err) == 0, "%s", err.msg);
    a.digest = state_digest(a.st);
    b.digest = state_digest(b.st);
    a.logits = decode(a.st, SHORT);
    b.logits = decode(b.st, LONG);

    const char *dir = check_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/state.kv", dir);
    tally t = {0};
    double t0 = tome_now();
    all_rounds(m, dir, path, &a, &a, &b, &t);
    all_rounds(m, dir, path, &a, &b, &a, &t);
    fprintf(stderr,
            "%d kills in %.1f s, %d inside a save: the old state kept %d times, "
            "the new one %d\n",
            t.kills, tome_now() - t0, t.mid_write, t.old, t.new);
    CHECKF(t.kills == 2 * (STEPS + 2) && t.old == 2 * (STEPS + 1) && t.new == 2,
           "%d kills: old %d, new %d", t.kills, t.old, t.new);

    check_cleanup(dir, path, &a);
    unlink(path);
    rmdir(dir);
    free(a.logits);
    free(b.logits);
    v4_state_free(a.st);
    v4_state_free(b.st);
    v4_model_free(m);
    return check_finish();
}
