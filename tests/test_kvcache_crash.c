/*
 * test_kvcache_crash.c - a writer of state files killed at random moments
 * never leaves a file that is accepted but wrong (kvstate/write.c).
 *
 * Two states of the golden model v4-tiny-a are prefilled once: A after
 * SHORT tokens and B after LONG tokens (B's file carries A as a restart
 * point).  Each round forks a child that saves A, B, A, B... to one target
 * path without pause, and SIGKILLs it after a random delay.  The target is
 * then opened, fully verified and restored: it must be absent (no save had
 * finished yet), refused, or exactly A or exactly B - every section the same
 * bytes as the prefilled state, and the first time each is seen, the same
 * decode logits bit for bit.  Most kills land inside a save (between the
 * temporary file's creation and its rename), which the test counts and
 * requires.  Leftover temporary files: the next save of the target removes
 * them, so at most one exists after any kill, and none after a clean save;
 * kvstate_remove_temps() clears a directory and nothing else in it.
 *
 * The seed is printed; TOME_CRASH_SEED replays a run.
 */
#include "engine/v4.h"
#include "kvstate/kvstate.h"
#include "store/store.h"
#include "tests/golden.h"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define SHORT        256
#define LONG         700
#define DECODE       2
#define ROUNDS       200
#define MAX_DELAY_US 30000

static int32_t ids[LONG + DECODE];

typedef struct reference {
    v4_state *st;
    uint64_t digest;
    float *logits; /* [DECODE][vocab] */
    int seen;      /* accepted after a kill at least once */
} reference;

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

/* ---- the writer ------------------------------------------------------------------------ */

/* Save A and B in turn until killed; a failed save is reported by the exit
 * status. */
static void writer(const char *path, reference *a, reference *b, unsigned first)
{
    const v4_state *point = a->st;
    for (unsigned i = first;; i++) {
        tome_error err = {0};
        int rc = i % 2 ? kvstate_save(path, b->st, &point, 1, ids, LONG, &err)
                       : kvstate_save(path, a->st, NULL, 0, ids, SHORT, &err);
        if (rc != 0) {
            fprintf(stderr, "writer: %s\n", err.msg);
            _exit(2);
        }
    }
}

/* ---- checking what a kill left --------------------------------------------------------- */

typedef struct tally {
    int absent, refused, a, b, mid_write;
} tally;

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

static void check_target(const v4_model *m, const char *path, reference *a, reference *b, tally *t)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        t->absent++;
        return;
    }
    kvstate_file *f;
    tome_error err = {0};
    int rc = kvstate_open(path, m, &f, &err);
    if (rc == 0) rc = kvstate_verify(f, &err);
    v4_state *s = NULL;
    if (rc == 0) rc = kvstate_restore(f, 0, &s, &err);
    if (rc != 0) {
        CHECKF(rc == TOME_EFORMAT && err.msg[0], "refused with rc=%d: %s", rc, err.msg);
        t->refused++;
    } else if (kvstate_tokens(f) == SHORT) {
        t->a++;
        check_same(s, a, SHORT);
    } else if (kvstate_tokens(f) == LONG) {
        t->b++;
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
}

static void one_round(const v4_model *m, const char *dir, const char *path, reference *a,
                      reference *b, int round, tally *t)
{
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    if (pid == 0) writer(path, a, b, (unsigned)round);
    usleep((useconds_t)(rand() % MAX_DELAY_US));
    REQUIRE(kill(pid, SIGKILL) == 0, "kill failed");
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid failed");
    CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "round %d: writer status %d", round,
           status);
    int temps = count_temps(dir);
    CHECKF(temps <= 1, "round %d: %d temporary files left", round, temps);
    t->mid_write += temps > 0;
    check_target(m, path, a, b, t);
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

    const char *seed_env = getenv("TOME_CRASH_SEED");
    unsigned seed = seed_env ? (unsigned)strtoul(seed_env, NULL, 10)
                             : (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    const char *dir = check_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/state.kv", dir);
    tally t = {0};
    double t0 = tome_now();
    for (int r = 0; r < ROUNDS; r++) one_round(m, dir, path, &a, &b, r, &t);
    fprintf(stderr,
            "seed %u: %d kills in %.1f s, %d inside a save; the target was absent %d times, "
            "refused %d, A %d, B %d\n",
            seed, ROUNDS, tome_now() - t0, t.mid_write, t.absent, t.refused, t.a, t.b);
    CHECKF(t.a > 0 && t.b > 0, "both states should have been accepted at some point");
    CHECKF(t.mid_write >= ROUNDS / 4, "too few kills inside a save to mean anything");
    CHECKF(t.refused == 0, "a renamed file is always complete, yet %d were refused", t.refused);

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
