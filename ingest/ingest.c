/*
 * ingest.c - one ingest from start to commit: read, hash, decode, store,
 * compare with the previous version, order, render, commit.
 *
 * Everything happens inside one store transaction, so the new version and
 * the documents it needs appear together or not at all: a limit violation,
 * a damaged archive, a refused token budget or a crash leaves the corpus
 * exactly at its previous version.  (The cost is that the write lock is
 * held for the whole ingest; readers are not blocked in WAL mode.)
 *
 * A file is hashed first; if the corpus already has a document with the
 * same path and SHA-256 that row is reused, and the text is neither
 * decoded nor stored again.  The new version's order keeps the previous
 * version's documents where they were and appends new ones at the end, so
 * the rendered prefix up to the first change, and a KV state cached for
 * it, stays valid; the report says where that first change is, as a
 * document position, a byte and (with a tokenizer) a token.
 */
#include "ingest/ingest-internal.h"

#include "common/fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *path;
    int64_t doc_id;
    int64_t bytes;
    size_t arrival;       /* order in the source */
    ingest_change change; /* ADDED or CHANGED, unless `unchanged` */
    int unchanged;
} entry;

typedef struct run {
    ingest_reader reader; /* first: the callbacks get it back as a run */
    store *s;
    const ingest_options *opts;
    ingest_report *report;
    int64_t corpus_id;
    entry *entries;
    size_t n_entries, cap_entries;
    size_t items_cap, warnings_cap;
} run;

void ingest_limits_default(ingest_limits *l)
{
    l->max_entries = INGEST_DEFAULT_MAX_ENTRIES;
    l->max_file_bytes = INGEST_DEFAULT_MAX_FILE_BYTES;
    l->max_total_bytes = INGEST_DEFAULT_MAX_TOTAL_BYTES;
    l->max_ratio = INGEST_DEFAULT_MAX_RATIO;
    l->ratio_floor = INGEST_DEFAULT_RATIO_FLOOR;
    l->max_depth = INGEST_DEFAULT_MAX_DEPTH;
    l->max_path_bytes = INGEST_DEFAULT_MAX_PATH_BYTES;
}

void ingest_options_default(ingest_options *o)
{
    memset(o, 0, sizeof *o);
    ingest_limits_default(&o->limits);
    o->order = INGEST_ORDER_PATH;
    ingest_render_options_default(&o->render);
}

static int add_item(run *ru, ingest_change change, const char *path, const char *reason,
                    int64_t bytes, tome_error *err)
{
    ingest_report *rep = ru->report;
    if (rep->n_items == ru->items_cap) {
        size_t ncap = ru->items_cap ? 2 * ru->items_cap : 32;
        ingest_item *grown = realloc(rep->items, ncap * sizeof *grown);
        if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory writing the report");
        rep->items = grown;
        ru->items_cap = ncap;
    }
    ingest_item *it = &rep->items[rep->n_items];
    it->change = change;
    it->bytes = bytes;
    it->path = strdup(path);
    it->reason = reason ? strdup(reason) : NULL;
    if (!it->path || (reason && !it->reason)) {
        free(it->path);
        free(it->reason);
        return tome_errorf(err, TOME_ENOMEM, "out of memory writing the report");
    }
    rep->n_items++;
    return 0;
}

static int add_warning(run *ru, const char *text, tome_error *err)
{
    ingest_report *rep = ru->report;
    if (rep->n_warnings == ru->warnings_cap) {
        size_t ncap = ru->warnings_cap ? 2 * ru->warnings_cap : 16;
        char **grown = realloc(rep->warnings, ncap * sizeof *grown);
        if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory writing the report");
        rep->warnings = grown;
        ru->warnings_cap = ncap;
    }
    if (!(rep->warnings[rep->n_warnings] = strdup(text)))
        return tome_errorf(err, TOME_ENOMEM, "out of memory writing the report");
    rep->n_warnings++;
    return 0;
}

static int on_skip(ingest_reader *r, const char *path, const char *reason, int warn,
                   tome_error *err)
{
    run *ru = (run *)r;
    ru->report->skipped++;
    int rc = add_item(ru, INGEST_SKIPPED, path, reason, 0, err);
    if (!rc && warn) {
        char text[8400];
        snprintf(text, sizeof text, "skipped %s: %s", path, reason);
        rc = add_warning(ru, text, err);
    }
    return rc;
}

static int on_warn(ingest_reader *r, const char *message, tome_error *err)
{
    return add_warning((run *)r, message, err);
}

static int push_entry(run *ru, const char *path, int64_t doc_id, int64_t bytes, tome_error *err)
{
    if (ru->n_entries == ru->cap_entries) {
        size_t ncap = ru->cap_entries ? 2 * ru->cap_entries : 256;
        entry *grown = realloc(ru->entries, ncap * sizeof *grown);
        if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory listing documents");
        ru->entries = grown;
        ru->cap_entries = ncap;
    }
    entry *e = &ru->entries[ru->n_entries];
    if (!(e->path = strdup(path)))
        return tome_errorf(err, TOME_ENOMEM, "out of memory listing documents");
    e->doc_id = doc_id;
    e->bytes = bytes;
    e->arrival = ru->n_entries++;
    return 0;
}

/* Decode and store a file the corpus has not seen with this content. */
static int store_new_document(run *ru, const char *path, const unsigned char *data, size_t len,
                              int64_t mtime, const char *sha, int64_t *id, tome_error *err)
{
    ingest_report *rep = ru->report;
    double t0 = tome_now();
    ingest_text text;
    const char *why;
    int rc = ingest_text_decode(data, len, &text, &why);
    rep->t_decode += tome_now() - t0;
    if (rc < 0) return tome_errorf(err, rc, "%s: out of memory decoding", path);
    if (rc == 1) {
        rc = on_skip(&ru->reader, path, why, 0, err);
        return rc ? rc : 1;
    }
    store_document d = {.path = (char *)path,
                        .size = (int64_t)len,
                        .mtime = mtime,
                        .media_type = (char *)ingest_media_type(path),
                        .encoding = (char *)text.encoding,
                        .line_count = text.lines,
                        .text = text.text,
                        .text_len = text.len};
    memcpy(d.sha256, sha, 65);
    t0 = tome_now();
    rc = store_document_add(ru->s, ru->corpus_id, &d, id, err);
    rep->t_store += tome_now() - t0;
    free(text.text);
    return rc;
}

static int on_file(ingest_reader *r, const char *path, const unsigned char *data, size_t len,
                   int64_t mtime, tome_error *err)
{
    run *ru = (run *)r;
    ingest_report *rep = ru->report;
    rep->bytes_read += len;
    double t0 = tome_now();
    uint8_t digest[32];
    char sha[65];
    tome_sha256(data, len, digest);
    tome_hex(digest, 32, sha);
    rep->t_hash += tome_now() - t0;

    int64_t id;
    t0 = tome_now();
    int rc = store_document_find(ru->s, ru->corpus_id, path, sha, &id, err);
    rep->t_store += tome_now() - t0;
    if (rc == TOME_ENOTFOUND) rc = store_new_document(ru, path, data, len, mtime, sha, &id, err);
    if (rc == 1)
        rc = 0; /* binary: skipped */
    else if (!rc)
        rc = push_entry(ru, path, id, (int64_t)len, err);
    tome_fault_point("ingest-file");
    if (!rc && ru->opts->progress &&
        ru->opts->progress(ru->opts->progress_ctx, r->entries, r->total_bytes) != 0)
        rc = tome_errorf(err, TOME_ECANCELED, "ingest of %s canceled after %s", rep->source, path);
    return rc;
}

static int by_path_then_arrival(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    int c = strcmp(x->path, y->path);
    if (c) return c;
    return x->arrival < y->arrival ? -1 : x->arrival > y->arrival;
}

static int by_arrival(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    return x->arrival < y->arrival ? -1 : x->arrival > y->arrival;
}

/* Sort by path and keep only the last of several entries with one path
 * (as extracting the archive would), with a warning. */
static int drop_duplicates(run *ru, tome_error *err)
{
    /* An archive may hold nothing at all, and qsort's array may not be NULL. */
    if (ru->n_entries > 1)
        qsort(ru->entries, ru->n_entries, sizeof *ru->entries, by_path_then_arrival);
    size_t k = 0;
    for (size_t i = 0; i < ru->n_entries; i++) {
        if (i + 1 < ru->n_entries && strcmp(ru->entries[i].path, ru->entries[i + 1].path) == 0) {
            char text[4200];
            snprintf(text, sizeof text, "%s appears more than once; the last copy is used",
                     ru->entries[i].path);
            free(ru->entries[i].path);
            int rc = add_warning(ru, text, err);
            if (rc) return rc;
            continue;
        }
        ru->entries[k++] = ru->entries[i];
    }
    ru->n_entries = k;
    return 0;
}

static int find_entry(const run *ru, const char *path)
{
    size_t lo = 0, hi = ru->n_entries;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(ru->entries[mid].path, path);
        if (c == 0) return (int)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Classify entries against the previous version and build the new order:
 * previous documents in place (changed ones in place or at the end), then
 * the new ones.  `*ids` gets the document ids by position. */
static int plan_version(run *ru, const store_document_list *prev, int64_t **ids, size_t *n,
                        tome_error *err)
{
    ingest_report *rep = ru->report;
    int64_t *order = malloc((ru->n_entries + 1) * sizeof *order);
    char *placed = calloc(ru->n_entries + 1, 1);
    if (!order || !placed) {
        free(order);
        free(placed);
        return tome_errorf(err, TOME_ENOMEM, "out of memory ordering documents");
    }
    for (size_t i = 0; i < ru->n_entries; i++) {
        ru->entries[i].change = INGEST_ADDED;
        ru->entries[i].unchanged = 0;
    }
    size_t k = 0;
    int rc = 0;
    for (size_t p = 0; p < prev->n && !rc; p++) {
        int i = find_entry(ru, prev->docs[p].path);
        if (i < 0) {
            rep->removed++;
            rc = add_item(ru, INGEST_REMOVED, prev->docs[p].path, NULL, prev->docs[p].size, err);
            continue;
        }
        entry *e = &ru->entries[i];
        e->unchanged = e->doc_id == prev->docs[p].id;
        e->change = INGEST_CHANGED;
        if (!e->unchanged && ru->opts->changed_to_end) continue;
        order[k++] = e->doc_id;
        placed[i] = 1;
    }
    /* Changed documents moved to the end keep their previous relative
     * order; new documents follow in path or source order. */
    for (size_t p = 0; p < prev->n && !rc; p++) {
        int i = find_entry(ru, prev->docs[p].path);
        if (i >= 0 && !placed[i] && ru->entries[i].change == INGEST_CHANGED &&
            !ru->entries[i].unchanged) {
            order[k++] = ru->entries[i].doc_id;
            placed[i] = 1;
        }
    }
    if (!rc && ru->opts->order == INGEST_ORDER_SOURCE && ru->n_entries > 1)
        qsort(ru->entries, ru->n_entries, sizeof *ru->entries, by_arrival);
    for (size_t i = 0; i < ru->n_entries && !rc; i++) {
        entry *e = &ru->entries[i];
        if (e->unchanged) {
            rep->unchanged++;
            continue;
        }
        rc = add_item(ru, e->change, e->path, NULL, e->bytes, err);
        if (e->change == INGEST_ADDED) {
            rep->added++;
            order[k++] = e->doc_id;
        } else {
            rep->changed++;
        }
    }
    free(placed);
    if (rc) {
        free(order);
        return rc;
    }
    *ids = order;
    *n = k;
    return 0;
}

static int64_t first_difference(const int64_t *a, size_t na, const store_document_list *prev)
{
    size_t i = 0;
    while (i < na && i < prev->n && a[i] == prev->docs[i].id) i++;
    return i == na && i == prev->n ? -1 : (int64_t)i;
}

/* The first token where the new rendering differs from the previous
 * version's rendering with the same tokenizer and options, if stored. */
static void compare_tokens(run *ru, int64_t prev_version, const ingest_rendering *now)
{
    ingest_report *rep = ru->report;
    rep->first_changed_token = -1;
    const ingest_render_options *o = &ru->opts->render;
    int64_t id;
    tome_error ignored;
    if (!now->ctx.token_ids || !prev_version ||
        store_context_find(ru->s, prev_version, now->ctx.tokenizer, o->line_numbers, &id,
                           &ignored) != 0)
        return;
    store_context old;
    if (store_context_load(ru->s, id, &old, &ignored) != 0 || !old.token_ids) {
        store_context_clear(&old);
        return;
    }
    int64_t i = 0,
            n = now->ctx.token_count < old.token_count ? now->ctx.token_count : old.token_count;
    while (i < n && now->ctx.token_ids[i] == old.token_ids[i]) i++;
    if (i < now->ctx.token_count || i < old.token_count) rep->first_changed_token = i;
    store_context_clear(&old);
}

/* Report the documents a truncating render left off the end. */
static int report_dropped(run *ru, size_t kept, tome_error *err)
{
    store_document_list all;
    int rc = store_version_documents(ru->s, ru->report->version_id, &all, err);
    for (size_t i = kept; i < all.n && !rc; i++) {
        ru->report->dropped++;
        rc = add_item(ru, INGEST_DROPPED, all.docs[i].path, "over the token budget",
                      all.docs[i].size, err);
    }
    store_document_list_free(&all);
    return rc;
}

/* Render the new version, check the budget, save the context. */
static int render_and_save(run *ru, int64_t prev_version, tome_error *err)
{
    ingest_report *rep = ru->report;
    ingest_rendering *r;
    int rc = ingest_render(ru->s, rep->version_id, &ru->opts->render, &r, err);
    if (rc) return rc;
    rep->t_render = r->t_render;
    rep->t_tokenize = r->t_tokenize;
    rep->rendered_bytes = (int64_t)r->len;
    rep->tokens = r->ctx.token_count;
    rep->first_changed_byte = -1;
    if (rep->first_changed_position >= 0)
        rep->first_changed_byte = rep->first_changed_position < (int64_t)r->ctx.n_docs
                                      ? r->ctx.docs[rep->first_changed_position].byte_start
                                      : (int64_t)r->len;
    compare_tokens(ru, prev_version, r);
    if (r->n_dropped) rc = report_dropped(ru, r->ctx.n_docs, err);
    double t0 = tome_now();
    if (!rc) rc = store_context_save(ru->s, &r->ctx, &rep->context_id, err);
    rep->t_store += tome_now() - t0;
    ingest_rendering_free(r);
    return rc;
}

/* Nothing changed: report the previous version and its stored tokens. */
static void report_unchanged(run *ru, int64_t prev_version)
{
    ingest_report *rep = ru->report;
    const ingest_render_options *o = &ru->opts->render;
    const char *fingerprint =
        o->tokenizer && o->tokenizer_fingerprint ? o->tokenizer_fingerprint : "";
    rep->version_id = prev_version;
    int64_t id;
    tome_error ignored;
    if (store_context_find(ru->s, prev_version, fingerprint, o->line_numbers, &id, &ignored) == 0 &&
        store_context_size(ru->s, id, &rep->tokens, &rep->rendered_bytes, &ignored) == 0)
        rep->context_id = id;
}

static int ingest_in_transaction(run *ru, const char *corpus, const char *source, tome_error *err)
{
    ingest_report *rep = ru->report;
    int64_t prev_version = 0;
    int rc = store_corpus_ensure(ru->s, corpus, &ru->corpus_id, err);
    if (rc) return rc;
    rep->corpus_id = ru->corpus_id;
    rc = store_version_latest(ru->s, ru->corpus_id, &prev_version, err);
    if (rc == TOME_ENOTFOUND) prev_version = 0, rc = 0;
    store_document_list prev = {0};
    if (!rc && prev_version) rc = store_version_documents(ru->s, prev_version, &prev, err);
    if (!rc) rc = ingest_read_source(&ru->reader, source, err);
    rep->entries = ru->reader.entries;
    rep->t_read = ru->reader.t_read;
    if (!rc) rc = drop_duplicates(ru, err);
    int64_t *ids = NULL;
    size_t n = 0;
    if (!rc) rc = plan_version(ru, &prev, &ids, &n, err);
    if (!rc) {
        rep->documents = (int64_t)n;
        rep->first_changed_position = first_difference(ids, n, &prev);
        for (size_t i = 0; i < ru->n_entries; i++)
            rep->document_bytes += (uint64_t)ru->entries[i].bytes;
    }
    if (!rc && prev_version && rep->first_changed_position < 0) {
        report_unchanged(ru, prev_version);
    } else if (!rc) {
        store_version_info info = {.source = source,
                                   .added = rep->added,
                                   .changed = rep->changed,
                                   .removed = rep->removed,
                                   .first_changed_position = rep->first_changed_position};
        double t0 = tome_now();
        rc = store_version_create(ru->s, ru->corpus_id, ids, n, &info, &rep->version_id,
                                  &rep->version_number, err);
        rep->t_store += tome_now() - t0;
        if (!rc) rc = render_and_save(ru, prev_version, err);
    }
    if (!rc && !rep->version_number)
        rc = store_version_number(ru->s, rep->version_id, &rep->version_number, err);
    free(ids);
    store_document_list_free(&prev);
    return rc;
}

int ingest_run(store *s, const char *corpus, const char *source, const ingest_options *opts,
               ingest_report **report, tome_error *err)
{
    *report = NULL;
    double t0 = tome_now();
    ingest_options defaults;
    if (!opts) {
        ingest_options_default(&defaults);
        opts = &defaults;
    }
    ingest_filter *own_filter = NULL;
    int rc = opts->filter ? 0 : ingest_filter_new(1, &own_filter, err);
    if (rc) return rc;
    run ru = {.s = s, .opts = opts};
    ru.reader = (ingest_reader){.limits = &opts->limits,
                                .filter = opts->filter ? opts->filter : own_filter,
                                .access = opts->access,
                                .file = on_file,
                                .skip = on_skip,
                                .warn = on_warn};
    ru.report = calloc(1, sizeof *ru.report);
    if (!ru.report || !(ru.report->corpus = strdup(corpus)) ||
        !(ru.report->source = strdup(source))) {
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory starting an ingest");
    } else {
        ru.report->tokens = ru.report->first_changed_token = -1;
        ru.report->first_changed_byte = ru.report->first_changed_position = -1;
        rc = store_begin(s, err);
        if (!rc) rc = ingest_in_transaction(&ru, corpus, source, err);
        double tc = tome_now();
        if (!rc) rc = store_commit(s, err);
        ru.report->t_store += tome_now() - tc;
        if (rc) store_rollback(s);
    }
    for (size_t i = 0; i < ru.n_entries; i++) free(ru.entries[i].path);
    free(ru.entries);
    free(ru.reader.last_skipped_dir);
    ingest_filter_free(own_filter);
    if (rc) {
        ingest_report_free(ru.report);
        return rc;
    }
    ru.report->t_total = tome_now() - t0;
    *report = ru.report;
    return 0;
}
