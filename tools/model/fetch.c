/*
 * fetch.c - `tome-model fetch REPO DIR`: download a hub repository.
 *
 * The file list (hub.c) is recorded in DIR with the "incomplete" marker
 * first (files.h); then up to --jobs files download at once through one
 * libcurl multi handle, each into PATH.part, appended to with a Range
 * request when a .part is already there (an earlier run, or a dropped
 * connection retried here up to --retries times).  A finished file is
 * checked against the hub's hash (SHA-256 for LFS files, the git blob id
 * for the others) before it is renamed into place; one that does not
 * match is deleted and the fetch fails.  The marker goes when every file
 * is in place, so DIR is complete exactly when it has no marker.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/options.h"
#include "tools/model/files.h"
#include "tools/model/hub.h"
#include "tools/model/model.h"

typedef struct transfer {
    const model_file *f;
    char final[4096], part[4096];
    FILE *out;
    int64_t offset; /* bytes in the .part when this request started */
    int64_t got;    /* bytes written by this request */
    int attempts;
    int checked_status; /* the response code was looked at (first write) */
    CURL *easy;
    struct curl_slist *headers;
    char *url;
} transfer;

typedef struct fetch {
    const hub *h;
    const char *dir;
    model_list list;
    transfer *t; /* one per file */
    size_t next; /* first file not started */
    int active, jobs, retries, tty;
    CURLM *multi;
    int64_t total, finished_bytes; /* all files, and those in place */
    int64_t base;                  /* bytes already there when the downloads began */
    double t0, last_draw;
} fetch;

static int path_in(const char *dir, const char *rel, const char *suffix, char *out, size_t cap,
                   tome_error *err)
{
    if ((size_t)snprintf(out, cap, "%s/%s%s", dir, rel, suffix) >= cap)
        return tome_errorf(err, TOME_EINVAL, "%s/%s: path too long", dir, rel);
    return 0;
}

/* ---- progress ------------------------------------------------------------------- */

static int64_t bytes_so_far(const fetch *F)
{
    int64_t b = F->finished_bytes;
    for (size_t i = 0; i < F->list.n; i++)
        if (F->t[i].easy) b += F->t[i].offset + F->t[i].got;
    return b;
}

static void draw(fetch *F, int force)
{
    double now = tome_now();
    if (!F->tty || (!force && now - F->last_draw < 0.25)) return;
    F->last_draw = now;
    int64_t b = bytes_so_far(F);
    double frac = F->total ? (double)b / (double)F->total : 1, gib = 1024.0 * 1024 * 1024;
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\r[%s] %3.0f%% %.2f/%.2f GiB %6.1f MB/s  ", bar, frac * 100, b / gib,
            F->total / gib, (double)(b - F->base) / 1e6 / (now - F->t0 + 1e-9));
    fflush(stderr);
}

/* ---- one file ------------------------------------------------------------------- */

/* The first bytes of a response: an error status writes nothing (the
 * transfer stops, finish() reports it); a full 200 answer to a Range
 * request starts the .part over. */
static int check_status(transfer *t)
{
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    t->checked_status = 1;
    if (status >= 400) return -1;
    if (t->offset > 0 && status == 200) {
        if (fflush(t->out) != 0 || ftruncate(fileno(t->out), 0) != 0) return -1;
        rewind(t->out);
        t->offset = 0;
    }
    return 0;
}

static size_t on_data(char *data, size_t size, size_t n, void *ctx)
{
    transfer *t = ctx;
    if (!t->checked_status && check_status(t) != 0) return 0;
    size_t len = size * n;
    if (t->offset + t->got + (int64_t)len > t->f->size) return 0; /* more than the list says */
    if (fwrite(data, 1, len, t->out) != len) return 0;
    t->got += (int64_t)len;
    return len;
}

static void release(fetch *F, transfer *t)
{
    if (t->easy) {
        curl_multi_remove_handle(F->multi, t->easy);
        curl_easy_cleanup(t->easy);
        F->active--;
    }
    curl_slist_free_all(t->headers);
    free(t->url);
    if (t->out) fclose(t->out);
    t->easy = NULL;
    t->headers = NULL;
    t->url = NULL;
    t->out = NULL;
}

/* Make the directories above a file. */
static int parents(const char *path, tome_error *err)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return 0;
    *slash = '\0';
    return tome_mkdir_p(dir, 0755, err);
}

/* Request the rest of a file (its .part opened for appending). */
static int start(fetch *F, transfer *t, tome_error *err)
{
    int rc = parents(t->part, err);
    if (rc) return rc;
    t->out = fopen(t->part, "ab");
    if (!t->out) return tome_errorf(err, TOME_EIO, "%s: %s", t->part, strerror(errno));
    struct stat st;
    t->offset = fstat(fileno(t->out), &st) == 0 ? st.st_size : 0;
    if (t->offset > t->f->size && ftruncate(fileno(t->out), 0) == 0) t->offset = 0;
    t->got = 0;
    t->checked_status = 0;
    t->attempts++;
    t->easy = hub_easy(F->h, &t->headers);
    t->url = t->easy ? hub_file_url(F->h, t->easy, t->f->path) : NULL;
    if (!t->url) return tome_errorf(err, TOME_ENOMEM, "cannot start a transfer");
    curl_easy_setopt(t->easy, CURLOPT_URL, t->url);
    curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
    if (t->offset > 0) curl_easy_setopt(t->easy, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)t->offset);
    if (curl_multi_add_handle(F->multi, t->easy) != CURLM_OK) {
        curl_easy_cleanup(t->easy);
        t->easy = NULL;
        return tome_errorf(err, TOME_EIO, "cannot add a transfer");
    }
    F->active++;
    return 0;
}

/* A complete .part (synced): check it, rename it into place. */
static int settle(fetch *F, transfer *t, tome_error *err)
{
    int rc = model_file_check(t->part, t->f, err);
    if (rc == TOME_EMISMATCH) {
        unlink(t->part);
        return tome_error_wrap(err, "refused (the download was deleted)");
    }
    if (rc == 0 && rename(t->part, t->final) != 0)
        rc = tome_errorf(err, TOME_EIO, "%s: %s", t->final, strerror(errno));
    if (rc == 0) {
        F->finished_bytes += t->f->size;
        if (!F->tty)
            fprintf(stderr, "tome-model: %s (%lld bytes)\n", t->f->path, (long long)t->f->size);
    }
    return rc;
}

/* A request ended: an HTTP error fails the fetch, a dropped connection
 * or a short body is resumed from where the .part stands. */
static int finish(fetch *F, transfer *t, CURLcode cc, tome_error *err)
{
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    int synced = fflush(t->out) == 0 && fsync(fileno(t->out)) == 0;
    int64_t have = t->offset + t->got;
    int rc = 0;
    if (status >= 400)
        rc = hub_http_error(F->h, status, t->url, err);
    else if (!synced)
        rc = tome_errorf(err, TOME_EIO, "%s: %s", t->part, strerror(errno));
    release(F, t);
    if (rc) return rc;
    if (cc == CURLE_OK && have == t->f->size) return settle(F, t, err);
    const char *why = cc != CURLE_OK ? curl_easy_strerror(cc) : "the body ended early";
    if (t->attempts > F->retries)
        return tome_errorf(err, TOME_EIO,
                           "%s: %s after %d attempts (run the fetch again to resume)", t->f->path,
                           why, t->attempts);
    fprintf(stderr, "%stome-model: %s: %s; resuming at byte %lld\n", F->tty ? "\n" : "", t->f->path,
            why, (long long)have);
    return start(F, t, err);
}

/* ---- the whole repository ------------------------------------------------------- */

/* Next file to download, after skipping those already in place (checked)
 * and settling a .part that is already whole.  NULL when none is left. */
static int next_transfer(fetch *F, transfer **out, tome_error *err)
{
    *out = NULL;
    while (F->next < F->list.n) {
        transfer *t = &F->t[F->next++];
        struct stat st;
        if (stat(t->final, &st) == 0 && model_file_check(t->final, t->f, err) == 0) {
            F->finished_bytes += t->f->size;
            continue;
        }
        if (stat(t->part, &st) == 0 && st.st_size == t->f->size) {
            int rc = settle(F, t, err);
            if (rc != TOME_EMISMATCH) {
                if (rc) return rc;
                continue;
            }
        }
        tome_error_clear(err);
        *out = t;
        return 0;
    }
    return 0;
}

/* Keep --jobs transfers going until every file is in place. */
static int run_transfers(fetch *F, tome_error *err)
{
    int rc = 0;
    F->t0 = tome_now();
    while (rc == 0) {
        transfer *t = NULL;
        while (rc == 0 && F->active < F->jobs && (rc = next_transfer(F, &t, err)) == 0 && t)
            rc = start(F, t, err);
        if (rc || F->active == 0) break;
        int running;
        curl_multi_perform(F->multi, &running);
        CURLMsg *msg;
        int left;
        while (rc == 0 && (msg = curl_multi_info_read(F->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURLcode cc = msg->data.result;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
            rc = finish(F, t, cc, err);
        }
        draw(F, 0);
        if (rc == 0 && F->active) curl_multi_poll(F->multi, NULL, 0, 250, NULL);
    }
    draw(F, 1);
    if (F->tty) fputc('\n', stderr);
    return rc;
}

static int prepare(fetch *F, tome_error *err)
{
    F->t = calloc(F->list.n ? F->list.n : 1, sizeof *F->t);
    if (!F->t) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    for (size_t i = 0; i < F->list.n; i++) {
        transfer *t = &F->t[i];
        t->f = &F->list.files[i];
        F->total += t->f->size;
        int rc = path_in(F->dir, t->f->path, "", t->final, sizeof t->final, err);
        if (rc == 0) rc = path_in(F->dir, t->f->path, ".part", t->part, sizeof t->part, err);
        if (rc) return rc;
    }
    F->multi = curl_multi_init();
    return F->multi ? 0 : tome_errorf(err, TOME_ENOMEM, "cannot start libcurl");
}

/* DIR must be empty, or hold an earlier fetch of the same repository. */
static int claim_dir(const fetch *F, tome_error *err)
{
    int rc = tome_mkdir_p(F->dir, 0755, err);
    if (rc) return rc;
    model_list old;
    tome_error ignored = {0};
    if (model_list_load(F->dir, &old, &ignored) != 0) return 0;
    if (strcmp(old.repo, F->h->repo) != 0 || strcmp(old.revision, F->h->revision) != 0)
        rc = tome_errorf(err, TOME_EEXIST, "%s holds a fetch of %s at %s, not %s at %s", F->dir,
                         old.repo, old.revision, F->h->repo, F->h->revision);
    model_list_free(&old);
    return rc;
}

static int mark(const char *dir, int incomplete, tome_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, MODEL_INCOMPLETE_NAME);
    static const char text[] = "a tome-model fetch has not finished; run it again to resume\n";
    int rc = incomplete ? tome_write_file_atomic(path, text, sizeof text - 1, err)
                        : (unlink(path) == 0 || errno == ENOENT
                               ? 0
                               : tome_errorf(err, TOME_EIO, "%s: %s", path, strerror(errno)));
    return rc ? rc : tome_fsync_parent_dir(path, err);
}

static int fetch_repo(fetch *F, tome_error *err)
{
    int rc = claim_dir(F, err);
    if (rc == 0) rc = hub_list(F->h, &F->list, err);
    if (rc == 0) rc = mark(F->dir, 1, err);
    if (rc == 0) rc = model_list_save(F->dir, &F->list, err);
    if (rc == 0) rc = prepare(F, err);
    if (rc == 0) rc = run_transfers(F, err);
    if (rc == 0) rc = mark(F->dir, 0, err);
    for (size_t i = 0; F->t && i < F->list.n; i++) release(F, &F->t[i]);
    if (F->multi) curl_multi_cleanup(F->multi);
    if (rc == 0)
        fprintf(stderr, "tome-model: %s: %zu files, %lld bytes, complete\n", F->dir, F->list.n,
                (long long)F->total);
    free(F->t);
    model_list_free(&F->list);
    return rc;
}

int model_fetch_main(int argc, char **argv)
{
    const char *revision = "main";
    int jobs = 4, retries = 5;
    const tome_option options[] = {
        TOME_STRING("revision", 'r', "REV", revision, "branch, tag or commit (default main)"),
        TOME_INT("jobs", 'j', "N", jobs, 1, 64, "files downloaded at once (default 4)"),
        TOME_INT("retries", 0, "N", retries, 0, 1000,
                 "resumptions of a dropped transfer before giving up (default 5)"),
    };
    const tome_cli cli = {.program = "tome-model fetch",
                          .usage = "REPO DIR [options]",
                          .options = options,
                          .n_options = sizeof options / sizeof options[0]};
    int status;
    if (model_parse(&cli, argc, argv, 2, &status) != 0) return status;
    hub h;
    tome_error err = {0};
    int rc = hub_init(&h, argv[1], revision, &err);
    if (rc == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
        rc = tome_errorf(&err, TOME_EIO, "cannot start libcurl");
    if (rc == 0) {
        fetch F = {.h = &h,
                   .dir = argv[2],
                   .jobs = jobs,
                   .retries = retries,
                   .tty = isatty(STDERR_FILENO)};
        rc = fetch_repo(&F, &err);
        curl_global_cleanup();
    }
    if (rc) {
        fprintf(stderr, "tome-model fetch: %s\n", err.msg);
        return 1;
    }
    return 0;
}
