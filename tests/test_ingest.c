/*
 * Tests of ingest/ through its public header: path normalisation, text
 * detection and transcoding (checked against glibc's iconv), filters,
 * incremental versions, the failure policy, rendering with its line map,
 * the token map with the real DeepSeek tokenizer, the token budget, and
 * both kinds of search.  Archive formats and hostile archives are tested by
 * tests/ingest-formats.sh and tests/ingest-hostile.sh with real tools.
 */
#include "ingest/ingest.h"
#include "tests/check.h"

#include <iconv.h>
#include <sqlite3.h>
#include <unistd.h>

static char root[4200];

/* ---- paths ------------------------------------------------------------ */

static void expect_path(const char *in, size_t len, const char *want)
{
    char *out;
    const char *why = NULL;
    int rc = ingest_path_normalise(in, len, 100, &out, &why);
    CHECKF(rc == 0 && strcmp(out, want) == 0, "%s -> rc %d %s", in, rc, rc ? why : out);
    if (rc == 0) free(out);
}

static void expect_unsafe(const char *in, size_t len, int code, const char *why_part)
{
    char *out = NULL;
    const char *why = "";
    int rc = ingest_path_normalise(in, len, 100, &out, &why);
    CHECKF(rc == code && out == NULL && strstr(why, why_part), "%s -> rc %d (%s)", in, rc, why);
}

static void test_paths(void)
{
    expect_path("./a//b/./c", 10, "a/b/c");
    expect_path("a/../b", 6, "b");
    expect_path("dir/", 4, "dir");
    expect_path("./", 2, "");
    expect_path("caf\xc3\xa9/x", 7, "caf\xc3\xa9/x");
    expect_unsafe("../x", 4, TOME_EPERM, "escapes");
    expect_unsafe("a/../../x", 9, TOME_EPERM, "escapes");
    expect_unsafe("/etc/passwd", 11, TOME_EPERM, "absolute");
    expect_unsafe("a\0b", 3, TOME_EPERM, "NUL");
    expect_unsafe("\xff.txt", 5, TOME_EPERM, "UTF-8");
    expect_unsafe("\xc0\xaf", 2, TOME_EPERM, "UTF-8"); /* overlong '/' */
    expect_unsafe("a\nb", 3, TOME_EPERM, "control");
    char longname[200];
    memset(longname, 'x', sizeof longname);
    expect_unsafe(longname, sizeof longname, TOME_ELIMIT, "longer");
}

/* ---- text ------------------------------------------------------------- */

/* `utf8` converted to `charset` by iconv (the independent reference). */
static size_t encode(const char *charset, const char *utf8, char *out, size_t cap)
{
    iconv_t cd = iconv_open(charset, "UTF-8");
    REQUIRE(cd != (iconv_t)-1, "iconv cannot convert to %s", charset);
    char *in = (char *)utf8, *o = out;
    size_t inleft = strlen(utf8), outleft = cap;
    REQUIRE(iconv(cd, &in, &inleft, &o, &outleft) != (size_t)-1, "iconv to %s failed", charset);
    iconv_close(cd);
    return cap - outleft;
}

static void expect_text(const unsigned char *data, size_t len, const char *want,
                        const char *encoding, int64_t lines)
{
    ingest_text t;
    const char *why;
    int rc = ingest_text_decode(data, len, &t, &why);
    CHECKF(rc == 0, "decode as %s: rc %d (%s)", encoding, rc, why ? why : "");
    if (rc) return;
    CHECKF(t.len == strlen(want) && memcmp(t.text, want, t.len) == 0, "%s text differs", encoding);
    CHECKF(strcmp(t.encoding, encoding) == 0, "encoding %s, want %s", t.encoding, encoding);
    CHECKF(t.lines == lines, "%s: %lld lines, want %lld", encoding, (long long)t.lines,
           (long long)lines);
    free(t.text);
}

static void test_text(void)
{
    const char *sample = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\r\nline two\nend";
    char buf[256];
    expect_text((const unsigned char *)sample, strlen(sample), sample, "utf-8", 3);
    /* UTF-16 with a BOM, both byte orders, including a surrogate pair. */
    size_t n = encode("UTF-16LE", sample, buf + 2, sizeof buf - 2);
    buf[0] = (char)0xff, buf[1] = (char)0xfe;
    expect_text((unsigned char *)buf, n + 2, sample, "utf-16le", 3);
    n = encode("UTF-16BE", sample, buf + 2, sizeof buf - 2);
    buf[0] = (char)0xfe, buf[1] = (char)0xff;
    expect_text((unsigned char *)buf, n + 2, sample, "utf-16be", 3);
    const char *latin = "na\xc3\xafve fa\xc3\xa7"
                        "ade \xc2\xbd\n";
    n = encode("ISO-8859-1", latin, buf, sizeof buf);
    expect_text((unsigned char *)buf, n, latin, "latin-1", 1);
    expect_text((const unsigned char *)"\xef\xbb\xbfhi\n", 6, "hi\n", "utf-8-bom", 1);
    expect_text((const unsigned char *)"", 0, "", "utf-8", 0);

    ingest_text t;
    const char *why;
    CHECK(ingest_text_decode((const unsigned char *)"ab\0cd", 5, &t, &why) == 1);
    CHECK(strstr(why, "NUL") != NULL);
    unsigned char noise[64];
    for (int i = 0; i < 64; i++) noise[i] = (unsigned char)(i * 37 % 31 + 1); /* controls */
    CHECK(ingest_text_decode(noise, sizeof noise, &t, &why) == 1);
    CHECK(ingest_text_decode((const unsigned char *)"\xff\xfe\x00\xd8", 4, &t, &why) == 1);
    CHECK(strstr(why, "UTF-16") != NULL); /* lone surrogate */
    CHECK(strcmp(ingest_media_type("src/x.C"), "text/x-c") == 0);
    CHECK(strcmp(ingest_media_type("README"), "text/plain") == 0);
}

/* ---- filters ---------------------------------------------------------- */

static int excluded(const ingest_filter *f, const char *path)
{
    const char *reason;
    return ingest_filter_excludes(f, path, &reason);
}

static void test_filters(void)
{
    tome_error err = {0};
    ingest_filter *f;
    CHECK_OK(ingest_filter_new(1, &f, &err), &err);
    CHECK(excluded(f, ".git/HEAD") && excluded(f, "a/node_modules/x/y.js"));
    CHECK(excluded(f, "web/app.min.js") && excluded(f, "Cargo.lock") && excluded(f, "dist/a.c"));
    CHECK(!excluded(f, "src/main.c") && !excluded(f, "distribution/a.c"));
    CHECK(!excluded(f, "build.c")); /* "build/" is a directory rule */
    const char *reason = NULL;
    CHECK(ingest_filter_excludes(f, "x/.git/config", &reason) && strstr(reason, ".git/"));
    /* Every default exclude takes effect at any depth. */
    for (const char *const *d = ingest_default_excludes(); *d; d++) {
        char path[256];
        size_t len = strlen(*d);
        if ((*d)[len - 1] == '/')
            snprintf(path, sizeof path, "x/%sfile", *d);
        else if ((*d)[0] == '*')
            snprintf(path, sizeof path, "x/name%s", *d + 1);
        else
            snprintf(path, sizeof path, "x/%s", *d);
        CHECKF(excluded(f, path), "default %s does not exclude %s", *d, path);
    }
    CHECK_OK(ingest_filter_add(f, INGEST_EXCLUDE_GLOB, "!dist/", &err), &err);
    CHECK(!excluded(f, "dist/a.c"));
    CHECK_OK(ingest_filter_add(f, INGEST_EXCLUDE_GLOB, "/docs/**/*.txt", &err), &err);
    CHECK(excluded(f, "docs/a.txt") && excluded(f, "docs/x/y/a.txt"));
    CHECK(!excluded(f, "src/docs/a.txt") && !excluded(f, "docs/a.md"));
    CHECK_OK(ingest_filter_add(f, INGEST_EXCLUDE_GLOB, "*.[ch]", &err), &err);
    CHECK_OK(ingest_filter_add(f, INGEST_EXCLUDE_GLOB, "!keep.c", &err), &err);
    CHECK(excluded(f, "src/a.c") && excluded(f, "b.h") && !excluded(f, "src/keep.c"));
    CHECK_OK(ingest_filter_add(f, INGEST_EXCLUDE_REGEX, "^secret/.*\\.key$", &err), &err);
    CHECK(excluded(f, "secret/a.key") && !excluded(f, "x/secret/a.key"));
    CHECK(ingest_filter_add(f, INGEST_EXCLUDE_REGEX, "(", &err) == TOME_EINVAL);
    CHECK(strstr(err.msg, "offset") != NULL);
    ingest_filter_free(f);

    CHECK_OK(ingest_filter_new(0, &f, &err), &err);
    CHECK(!excluded(f, ".git/HEAD"));
    CHECK_OK(ingest_filter_add(f, INGEST_INCLUDE_GLOB, "src/", &err), &err);
    CHECK_OK(ingest_filter_add(f, INGEST_INCLUDE_REGEX, "\\.md$", &err), &err);
    CHECK(!excluded(f, "src/x/a.c") && !excluded(f, "README.md") && excluded(f, "lib/a.c"));
    ingest_filter_free(f);
}

/* ---- ingesting -------------------------------------------------------- */

static void write_file(const char *rel, const char *text)
{
    char path[4400], dir[4400];
    snprintf(path, sizeof path, "%s/src/%s", root, rel);
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    tome_error err = {0};
    REQUIRE(tome_mkdir_p(dir, 0755, &err) == 0, "%s", err.msg);
    REQUIRE(tome_write_file_atomic(path, text, strlen(text), &err) == 0, "%s", err.msg);
}

static int64_t count_rows(const char *db, const char *sql)
{
    sqlite3 *h;
    sqlite3_stmt *st;
    REQUIRE(sqlite3_open(db, &h) == SQLITE_OK, "open %s", db);
    REQUIRE(sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(h));
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

static const ingest_item *find_item(const ingest_report *r, ingest_change c, const char *path)
{
    for (size_t i = 0; i < r->n_items; i++)
        if (r->items[i].change == c && strcmp(r->items[i].path, path) == 0) return &r->items[i];
    return NULL;
}

static void paths_of(store *s, int64_t version, char *out, size_t cap)
{
    tome_error err = {0};
    store_document_list l;
    out[0] = '\0';
    CHECK_OK(store_version_documents(s, version, &l, &err), &err);
    for (size_t i = 0; i < l.n; i++) {
        strncat(out, l.docs[i].path, cap - strlen(out) - 2);
        strcat(out, " ");
    }
    store_document_list_free(&l);
}

static int cancel_at_second(void *ctx, uint64_t entries, uint64_t bytes)
{
    int *calls = ctx;
    CHECK(entries > 0 && bytes > 0);
    return ++*calls == 2;
}

/* After test_incremental's version 3 (`v3`): a cancelled ingest and two
 * that break limits leave it current and store nothing. */
static void check_failed_ingests(store *s, const char *db, const char *src, int64_t v1, int64_t v3)
{
    tome_error err = {0};
    ingest_options o;
    ingest_options_default(&o);
    ingest_report *r;
    char gone[4400];
    /* Progress is reported per file, and cancelling leaves version 3. */
    int calls = 0;
    o.progress = cancel_at_second;
    o.progress_ctx = &calls;
    write_file("late.txt", "late\n");
    CHECK(ingest_run(s, "code", src, &o, &r, &err) == TOME_ECANCELED && r == NULL);
    CHECK(calls == 2 && strstr(err.msg, "canceled") != NULL);
    o.progress = NULL;
    CHECK(count_rows(db, "SELECT count(*) FROM documents WHERE path = 'late.txt'") == 0);

    /* A limit violation fails the ingest and leaves version 3 current. */
    write_file("big.txt", "0123456789012345678901234567890123456789\n");
    o.limits.max_file_bytes = 20;
    CHECK(ingest_run(s, "code", src, &o, &r, &err) == TOME_ELIMIT && r == NULL);
    CHECK(strstr(err.msg, "big.txt") && strstr(err.msg, "max_file_bytes"));
    int64_t corpus, latest;
    CHECK_OK(store_corpus_find(s, "code", &corpus, &err), &err);
    CHECK_OK(store_version_latest(s, corpus, &latest, &err), &err);
    CHECK(latest == v3 && v1 < v3);
    CHECK(count_rows(db, "SELECT count(*) FROM documents WHERE path = 'big.txt'") == 0);
    o.limits.max_file_bytes = INGEST_DEFAULT_MAX_FILE_BYTES;
    o.limits.max_entries = 3;
    CHECK(ingest_run(s, "code", src, &o, &r, &err) == TOME_ELIMIT);
    CHECK(strstr(err.msg, "max_entries") != NULL);
    snprintf(gone, sizeof gone, "%s/big.txt", src);
    unlink(gone);
    snprintf(gone, sizeof gone, "%s/late.txt", src);
    unlink(gone);
}

static void test_incremental(store *s, const char *db)
{
    tome_error err = {0};
    char src[4400], order[1024];
    snprintf(src, sizeof src, "%s/src", root);
    write_file("b.txt", "bravo\n");
    write_file("a.txt", "alpha\n");
    write_file("c/d.txt", "delta\n");
    write_file("gone.txt", "soon gone\n");

    ingest_options o;
    ingest_options_default(&o);
    ingest_report *r;
    CHECK_OK(ingest_run(s, "code", src, &o, &r, &err), &err);
    REQUIRE(r != NULL, "first ingest failed: %s", err.msg);
    CHECK(r->version_number == 1 && r->added == 4 && r->documents == 4);
    CHECK(r->first_changed_position == 0 && r->tokens == -1);
    paths_of(s, r->version_id, order, sizeof order);
    CHECKF(strcmp(order, "a.txt b.txt c/d.txt gone.txt ") == 0, "order: %s", order);
    int64_t v1 = r->version_id;
    ingest_report_free(r);
    int64_t docs_after_1 = count_rows(db, "SELECT count(*) FROM documents");

    /* Change b, remove gone, add a new file that sorts first: it goes to
     * the end, and b keeps its place. */
    write_file("b.txt", "bravo two\n");
    char gone[4400];
    snprintf(gone, sizeof gone, "%s/gone.txt", src);
    unlink(gone);
    write_file("0new.txt", "new\n");
    CHECK_OK(ingest_run(s, "code", src, &o, &r, &err), &err);
    REQUIRE(r != NULL, "second ingest failed: %s", err.msg);
    CHECK(r->version_number == 2 && r->added == 1 && r->changed == 1 && r->removed == 1);
    CHECK(r->unchanged == 2 && r->documents == 4 && r->first_changed_position == 1);
    CHECK(find_item(r, INGEST_ADDED, "0new.txt") && find_item(r, INGEST_CHANGED, "b.txt"));
    CHECK(find_item(r, INGEST_REMOVED, "gone.txt") != NULL);
    paths_of(s, r->version_id, order, sizeof order);
    CHECKF(strcmp(order, "a.txt b.txt c/d.txt 0new.txt ") == 0, "order: %s", order);
    /* Unchanged files were not stored again: only the two new contents. */
    CHECK(count_rows(db, "SELECT count(*) FROM documents") == docs_after_1 + 2);
    ingest_report_free(r);

    /* The same tree again: no new version. */
    CHECK_OK(ingest_run(s, "code", src, &o, &r, &err), &err);
    CHECK(r && r->version_number == 2 && r->unchanged == 4 && r->first_changed_position == -1);
    ingest_report_free(r);

    /* changed_to_end moves a changed document behind the others. */
    write_file("a.txt", "alpha two\n");
    o.changed_to_end = 1;
    CHECK_OK(ingest_run(s, "code", src, &o, &r, &err), &err);
    paths_of(s, r->version_id, order, sizeof order);
    CHECKF(strcmp(order, "b.txt c/d.txt 0new.txt a.txt ") == 0, "order: %s", order);
    CHECK(r->first_changed_position == 0);
    int64_t v3 = r->version_id;
    ingest_report_free(r);

    check_failed_ingests(s, db, src, v1, v3);
}

/* Source order follows the walk (each directory sorted by name, depth
 * first), which differs from bytewise path order: "a/b" < "a.txt" only in
 * the walk, since '.' sorts before '/'. */
static void test_source_order(store *s)
{
    tome_error err = {0};
    char src[4400], order[256];
    snprintf(src, sizeof src, "%s/ordered", root);
    const char *files[] = {"a.txt", "a/b"};
    for (int i = 0; i < 2; i++) {
        char path[4500];
        snprintf(path, sizeof path, "%s/%s", src, files[i]);
        *strrchr(path, '/') = '\0';
        REQUIRE(tome_mkdir_p(path, 0755, &err) == 0, "%s", err.msg);
        snprintf(path, sizeof path, "%s/%s", src, files[i]);
        REQUIRE(tome_write_file_atomic(path, "x\n", 2, &err) == 0, "%s", err.msg);
    }
    ingest_options o;
    ingest_options_default(&o);
    ingest_report *r;
    CHECK_OK(ingest_run(s, "by-path", src, &o, &r, &err), &err);
    paths_of(s, r->version_id, order, sizeof order);
    CHECKF(strcmp(order, "a.txt a/b ") == 0, "path order: %s", order);
    ingest_report_free(r);
    o.order = INGEST_ORDER_SOURCE;
    CHECK_OK(ingest_run(s, "by-source", src, &o, &r, &err), &err);
    paths_of(s, r->version_id, order, sizeof order);
    CHECKF(strcmp(order, "a/b a.txt ") == 0, "source order: %s", order);
    ingest_report_free(r);
}

/* Every line's map entry points at "N: " and the line's text. */
static void check_line_map(store *s, const ingest_rendering *r)
{
    tome_error err = {0};
    for (size_t i = 0; i < r->ctx.n_docs; i++) {
        const store_context_doc *m = &r->ctx.docs[i];
        store_document d;
        CHECK_OK(store_document_get(s, m->document_id, &d, &err), &err);
        char header[512];
        snprintf(header, sizeof header, "<document path=\"%s\" lines=\"%lld\">\n", d.path,
                 (long long)d.line_count);
        CHECKF(strncmp(r->text + m->byte_start, header, strlen(header)) == 0, "%s header", d.path);
        CHECK(m->n_lines == d.line_count);
        const char *line = d.text;
        for (int64_t l = 0; l < m->n_lines; l++) {
            char num[32];
            int k = snprintf(num, sizeof num, "%lld: ", (long long)l + 1);
            const char *at = r->text + m->line_bytes[l];
            size_t len = strcspn(line, "\n");
            CHECKF(strncmp(at, num, (size_t)k) == 0 && strncmp(at + k, line, len) == 0,
                   "%s:%lld maps to the wrong bytes", d.path, (long long)l + 1);
            line += len + (line[len] == '\n');
        }
        store_document_clear(&d);
    }
}

static const char *tokenizer_path(void)
{
    static char path[4200];
    const char *dir = getenv("TOME_TOKENIZER_DIR"), *build = getenv("TOME_BUILDDIR");
    REQUIRE(dir || build, "set TOME_TOKENIZER_DIR or run through make check");
    snprintf(path, sizeof path, "%s%s/v4/tokenizer.json", dir ? dir : build, dir ? "" : "/vocab");
    REQUIRE(access(path, R_OK) == 0, "%s is missing (scripts/fetch-tokenizer.sh)", path);
    return path;
}

/* The token that holds each line's first byte, checked by decoding the
 * ids before it independently of the map. */
static void check_token_map(const v4_tokenizer *t, const ingest_rendering *r)
{
    tome_error err = {0};
    char *text;
    size_t len;
    CHECK_OK(v4_detokenize(t, r->ctx.token_ids, (size_t)r->ctx.token_count, &text, &len, &err),
             &err);
    CHECK(len == r->len && memcmp(text, r->text, len) == 0);
    free(text);
    for (size_t i = 0; i < r->ctx.n_docs; i++) {
        const store_context_doc *m = &r->ctx.docs[i];
        for (int64_t l = 0; l < m->n_lines; l++) {
            size_t before, upto;
            char *a, *b;
            int64_t k = m->line_tokens[l];
            CHECK_OK(v4_detokenize(t, r->ctx.token_ids, (size_t)k, &a, &before, &err), &err);
            CHECK_OK(v4_detokenize(t, r->ctx.token_ids, (size_t)k + 1, &b, &upto, &err), &err);
            CHECKF((int64_t)before <= m->line_bytes[l] && m->line_bytes[l] < (int64_t)upto,
                   "%s:%lld: token %lld covers bytes %zu..%zu, line starts at %lld", m->path,
                   (long long)l + 1, (long long)k, before, upto, (long long)m->line_bytes[l]);
            free(a);
            free(b);
        }
    }
}

static void test_render_and_tokens(store *s)
{
    tome_error err = {0};
    int64_t corpus, v;
    CHECK_OK(store_corpus_find(s, "code", &corpus, &err), &err);
    CHECK_OK(store_version_latest(s, corpus, &v, &err), &err);
    ingest_rendering *r;
    CHECK_OK(ingest_render(s, v, NULL, &r, &err), &err);
    CHECK(r->ctx.token_count == -1 && r->ctx.n_docs == 4);
    CHECK(r->corpus_start + r->corpus_len == r->len);
    check_line_map(s, r);
    ingest_rendering_free(r);

    v4_tokenizer *t;
    CHECK_OK(v4_tokenizer_load(tokenizer_path(), &t, &err), &err);
    write_file("special.txt", "not a turn: <\xef\xbd\x9cUser\xef\xbd\x9c> really\r\nsecond\n");
    ingest_options o;
    ingest_options_default(&o);
    o.render.tokenizer = t;
    o.render.tokenizer_fingerprint = "test-tokenizer";
    char src[4400];
    snprintf(src, sizeof src, "%s/src", root);
    ingest_report *rep;
    CHECK_OK(ingest_run(s, "code", src, &o, &rep, &err), &err);
    REQUIRE(rep != NULL, "ingest with tokens failed: %s", err.msg);
    CHECK(rep->tokens > 0 && rep->first_changed_token == -1); /* no earlier context */
    int64_t tokens_before = rep->tokens;
    ingest_report_free(rep);

    CHECK_OK(store_version_latest(s, corpus, &v, &err), &err);
    CHECK_OK(ingest_render(s, v, &o.render, &r, &err), &err);
    CHECK(r->ctx.token_count == tokens_before);
    check_line_map(s, r);
    check_token_map(t, r);
    /* The document's special-token text stayed text. */
    int32_t user = v4_token_lookup(t, "<\xef\xbd\x9cUser\xef\xbd\x9c>");
    CHECK(user >= 0);
    for (int64_t i = 0; i < r->ctx.token_count; i++) CHECK(r->ctx.token_ids[i] != user);
    int64_t doc0_start = r->ctx.docs[0].token_start;
    ingest_rendering_free(r);

    /* Appending a document: the first changed token is where it starts,
     * so every token before is reusable. */
    write_file("zz.txt", "appended\n");
    CHECK_OK(ingest_run(s, "code", src, &o, &rep, &err), &err);
    CHECK(rep && rep->first_changed_position == 5 && rep->first_changed_token > doc0_start);
    CHECK(rep && rep->first_changed_token <= tokens_before && rep->tokens > tokens_before);
    ingest_report_free(rep);

    /* Over the budget: refused with the count and the largest documents. */
    write_file("huge.txt", "many words here\nmany words here\nmany words here\n");
    o.render.token_budget = tokens_before;
    CHECK(ingest_run(s, "code", src, &o, &rep, &err) == TOME_ELIMIT);
    CHECKF(strstr(err.msg, "over the budget") && strstr(err.msg, "huge.txt"), "%s", err.msg);
    CHECK_OK(store_version_latest(s, corpus, &v, &err), &err);
    o.render.truncate = INGEST_TRUNCATE_TAIL;
    CHECK_OK(ingest_run(s, "code", src, &o, &rep, &err), &err);
    CHECK(rep && rep->dropped >= 1 && rep->tokens <= tokens_before);
    CHECK(rep && find_item(rep, INGEST_DROPPED, "huge.txt") != NULL);
    ingest_report_free(rep);
    v4_tokenizer_free(t);
}

static void test_search(store *s)
{
    tome_error err = {0};
    int64_t corpus, v;
    CHECK_OK(store_corpus_find(s, "code", &corpus, &err), &err);
    CHECK_OK(store_version_latest(s, corpus, &v, &err), &err);
    store_hits h = {0};
    CHECK_OK(ingest_grep(s, v, "^sec.nd$|bravo", 100, &h, &err), &err);
    CHECKF(h.n == 2, "%zu hits", h.n);
    if (h.n == 2) {
        CHECK(strcmp(h.hits[0].path, "b.txt") == 0 && h.hits[0].line == 1);
        CHECK(strcmp(h.hits[0].text, "bravo two") == 0);
        CHECK(strcmp(h.hits[1].path, "special.txt") == 0 && h.hits[1].line == 2);
    }
    store_hits_free(&h);
    CHECK(ingest_grep(s, v, "([", 10, &h, &err) == TOME_EINVAL);
    CHECK_OK(store_search(s, v, "appended", 10, &h, &err), &err);
    CHECK(h.n == 1 && strcmp(h.hits[0].path, "zz.txt") == 0 && h.hits[0].line == 1);
    store_hits_free(&h);
}

/* ---- citations and sources --------------------------------------------- */

static const ingest_citation *cited(const ingest_citations *c, const char *path, int64_t line)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->items[i].path, path) == 0 && c->items[i].line == line) return &c->items[i];
    return NULL;
}

static void test_citations(store *s)
{
    tome_error err = {0};
    char dir[4400], path[4500];
    snprintf(dir, sizeof dir, "%s/cite/src", root);
    REQUIRE(tome_mkdir_p(dir, 0755, &err) == 0, "%s", err.msg);
    const char *files[][2] = {{"src/main.c", "int main(void)\r\n{\n    return 0;\n}\n"},
                              {"Makefile", "all:\n\tcc main.c\n"},
                              {"notes.txt", "the indexer keeps keys\nwalnut walnut walnut\n"}};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/cite/%s", root, files[i][0]);
        REQUIRE(tome_write_file_atomic(path, files[i][1], strlen(files[i][1]), &err) == 0, "%s",
                err.msg);
    }
    snprintf(dir, sizeof dir, "%s/cite", root);
    ingest_options o;
    ingest_options_default(&o);
    ingest_report *r;
    CHECK_OK(ingest_run(s, "cited", dir, &o, &r, &err), &err);
    REQUIRE(r != NULL, "ingest failed: %s", err.msg);
    int64_t v = r->version_id;
    ingest_report_free(r);

    ingest_citations c;
    CHECK_OK(ingest_cite(s, v,
                         "See src/main.c:3 and (src/main.c:1-2), Makefile:2, notes.txt:9, "
                         "gone/file.c:4, src/main.c:3 again, at 12:30 and `Makefile:0`.",
                         &c, &err),
             &err);
    CHECKF(c.n == 5, "%zu citations", c.n);
    const ingest_citation *one = cited(&c, "src/main.c", 3);
    CHECK(one && one->end_line == 3 && one->exists && strcmp(one->text, "    return 0;") == 0);
    const ingest_citation *range = cited(&c, "src/main.c", 1);
    CHECK(range && range->end_line == 2 && range->exists && range->text &&
          strcmp(range->text, "int main(void)\r\n{") == 0);
    const ingest_citation *bare = cited(&c, "Makefile", 2);
    CHECK(bare && bare->exists && strcmp(bare->text, "\tcc main.c") == 0);
    const ingest_citation *past = cited(&c, "notes.txt", 9);
    CHECK(past && !past->exists && past->text == NULL);
    const ingest_citation *missing = cited(&c, "gone/file.c", 4);
    CHECK(missing && !missing->exists && missing->text == NULL);
    CHECK(c.n > 0 && strcmp(c.items[0].path, "src/main.c") == 0 && c.items[0].line == 3);
    ingest_citations_free(&c);
    /* A range that runs past the end is not there, though it starts inside. */
    CHECK_OK(ingest_cite(s, v, "notes.txt:2-3", &c, &err), &err);
    CHECK(c.n == 1 && !c.items[0].exists && c.items[0].end_line == 3);
    ingest_citations_free(&c);

    store_hits h;
    CHECK_OK(ingest_sources(s, v, "Which walnut keys? (a \"question\" OR not)", 5, &h, &err), &err);
    CHECKF(h.n == 2, "%zu sources", h.n);
    if (h.n == 2) {
        CHECK(strcmp(h.hits[0].path, "notes.txt") == 0 && h.hits[0].score > 0);
        CHECK(h.hits[0].line == 1 && h.hits[1].line == 2);
        CHECK(strcmp(h.hits[1].text, "walnut walnut walnut") == 0);
    }
    store_hits_free(&h);
    CHECK_OK(ingest_sources(s, v, "?!", 5, &h, &err), &err);
    CHECK(h.n == 0);
    store_hits_free(&h);
}

int main(void)
{
    snprintf(root, sizeof root, "%s", check_tmpdir());
    test_paths();
    test_text();
    test_filters();
    char db[4400];
    snprintf(db, sizeof db, "%s/tome.db", root);
    tome_error err = {0};
    store *s;
    REQUIRE(store_open(db, &s, &err) == 0, "%s", err.msg);
    test_incremental(s, db);
    test_source_order(s);
    test_render_and_tokens(s);
    test_search(s);
    test_citations(s);
    store_close(s);
    return check_finish();
}
