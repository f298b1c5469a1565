/*
 * ingest.h - the public interface of tome's corpus ingestion.
 *
 * Ingest turns a directory or an archive into a new version of a corpus in
 * the store (store/store.h): it reads every entry with libarchive into
 * memory (nothing is ever extracted to the filesystem), normalises its
 * path, applies the limits and filters, detects text and transcodes it to
 * UTF-8, hashes it, and stores the documents that are new or changed.  The
 * new version is committed in one transaction only when everything
 * succeeded, so a failed ingest leaves the previous version as it was.
 * Before committing it renders the version into the document-QA prompt
 * prefix (a header per document, numbered lines), checks the token budget
 * and stores the document and line -> byte/token map with the version.
 *
 * Policy for hostile input:
 *  - unsafe entries (symbolic and hard links, devices and other special
 *    files, absolute paths, paths escaping the root, names that are not
 *    UTF-8 or hold control characters) are skipped with a warning;
 *  - limit violations (too many entries, a file or the total too large, a
 *    compression ratio like a zip bomb's, nesting too deep, a path too
 *    long) and unreadable archives (truncated, corrupted) fail the whole
 *    ingest with TOME_ELIMIT / TOME_EFORMAT and a message naming the entry.
 *
 * Entry names: libarchive converts them through the locale, so a program
 * that ingests should run with a UTF-8 LC_CTYPE (tome-ingest sets
 * "C.UTF-8"); names that are still not UTF-8 are skipped as unsafe.
 *
 * Ownership: objects from *_new are released with the matching *_free; the
 * report and rendering a function fills are the caller's to free.  Errors
 * follow common/common.h.  An ingest uses the one store handle it is given
 * (and so the calling thread); ingests of different corpora may run in
 * parallel on separate handles, but the second waits for the first's
 * write lock (up to STORE_BUSY_TIMEOUT_MS, then TOME_EBUSY).
 */
#ifndef TOME_INGEST_INGEST_H
#define TOME_INGEST_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "tokenizer/tokenizer.h"
#include "store/store.h"

/* ------------------------------------------------------------------------
 * Limits
 * ------------------------------------------------------------------------ */

typedef struct ingest_limits {
    uint64_t max_entries;     /* entries of every kind, all nesting levels */
    uint64_t max_file_bytes;  /* one entry, uncompressed */
    uint64_t max_total_bytes; /* every entry, uncompressed, all levels */
    double max_ratio;         /* uncompressed / compressed bytes of one archive */
    uint64_t ratio_floor;     /* uncompressed bytes before the ratio is checked */
    int max_depth;            /* archives inside archives (0 = none allowed) */
    size_t max_path_bytes;    /* a normalised path */
} ingest_limits;

/* The defaults, as documented in tome-ingest(1). */
#define INGEST_DEFAULT_MAX_ENTRIES     100000
#define INGEST_DEFAULT_MAX_FILE_BYTES  (64ULL << 20)
#define INGEST_DEFAULT_MAX_TOTAL_BYTES (4ULL << 30)
#define INGEST_DEFAULT_MAX_RATIO       200.0
#define INGEST_DEFAULT_RATIO_FLOOR     (1ULL << 20)
#define INGEST_DEFAULT_MAX_DEPTH       3
#define INGEST_DEFAULT_MAX_PATH_BYTES  1024
/* DeepSeek V4's context, the default token budget of a rendered corpus. */
#define INGEST_DEFAULT_TOKEN_BUDGET 1048576

void ingest_limits_default(ingest_limits *l);

/* ------------------------------------------------------------------------
 * Paths and text (exposed for the daemon's upload names and for tests)
 * ------------------------------------------------------------------------ */

/* Normalise an archive or directory entry name of `len` bytes into a
 * relative path: "." and empty components dropped, "a/../b" resolved.
 * Returns 0 with a malloc'd `*out` (the caller frees), "" for the root
 * itself; TOME_EPERM with `*why` set when the name is unsafe (NUL, not
 * UTF-8, control characters, absolute, escaping the root); TOME_ELIMIT
 * when the result is longer than `max_bytes`. */
int ingest_path_normalise(const char *name, size_t len, size_t max_bytes, char **out,
                          const char **why);

/* A document's text: always UTF-8, with line endings kept as they were. */
typedef struct ingest_text {
    char *text; /* malloc'd, NUL-terminated; the caller frees */
    size_t len;
    const char *encoding; /* "utf-8", "utf-8-bom", "utf-16le", "utf-16be", "latin-1" */
    int64_t lines;
} ingest_text;

/* Decide whether `data` is text and decode it.  Returns 0 with `out`
 * filled, 1 when the data is binary (`*why` says why), or TOME_ENOMEM. */
int ingest_text_decode(const unsigned char *data, size_t len, ingest_text *out, const char **why);
/* Media type guessed from the path's extension ("text/plain" otherwise). */
const char *ingest_media_type(const char *path);

/* ------------------------------------------------------------------------
 * Filters: gitignore-style globs and PCRE2 patterns over normalised paths
 * ------------------------------------------------------------------------ */

typedef struct ingest_filter ingest_filter;

typedef enum ingest_rule_kind {
    INGEST_EXCLUDE_GLOB,  /* gitignore syntax, "!" re-includes, last match wins */
    INGEST_EXCLUDE_REGEX, /* PCRE2, unanchored, against the whole path */
    INGEST_INCLUDE_GLOB,  /* with any include rule, a file must match one */
    INGEST_INCLUDE_REGEX
} ingest_rule_kind;

/* A filter, starting with the default excludes (VCS directories, build
 * outputs, dependency trees, lockfiles, minified bundles, object files)
 * when `with_defaults`; later rules override them ("!dist/"). */
int ingest_filter_new(int with_defaults, ingest_filter **out, tome_error *err);
void ingest_filter_free(ingest_filter *f);
int ingest_filter_add(ingest_filter *f, ingest_rule_kind kind, const char *pattern,
                      tome_error *err);
/* 1 if the file `path` is filtered out (with `*reason`, valid while the
 * filter lives, naming the rule), else 0. */
int ingest_filter_excludes(const ingest_filter *f, const char *path, const char **reason);
/* 1 if the directory `path` is excluded, and with it everything below it
 * (as in git, a file cannot be re-included below an excluded directory). */
int ingest_filter_excludes_dir(const ingest_filter *f, const char *path, const char **reason);
/* The default exclude globs, NULL-terminated. */
const char *const *ingest_default_excludes(void);

/* ------------------------------------------------------------------------
 * Rendering: a version as the document block of the V4 document-QA prompt
 * ------------------------------------------------------------------------ */

typedef enum ingest_truncate {
    INGEST_TRUNCATE_NONE, /* a corpus over the budget is refused (TOME_ELIMIT) */
    INGEST_TRUNCATE_TAIL  /* documents that do not fit are left off the end */
} ingest_truncate;

typedef struct ingest_render_options {
    int line_numbers;                  /* "N: " before every line (default 1) */
    const v4_tokenizer *tokenizer;     /* NULL: no tokens, no budget check */
    const char *tokenizer_fingerprint; /* identifies the tokenizer in stored contexts */
    int64_t token_budget;
    ingest_truncate truncate;
} ingest_render_options;

void ingest_render_options_default(ingest_render_options *o);

/* A rendered version: the V4 document-QA prefix (v4_docqa_prefix with
 * tome's default instructions, chat mode) holding the document block, and
 * in `ctx` the per-document byte/token ranges and line offsets within that
 * prefix (ready for store_context_save).  With a tokenizer, ctx.token_ids
 * are the prefix's ids: what a prefill consumes.  Document text is content,
 * so special-token syntax inside a document stays plain text. */
typedef struct ingest_rendering {
    v4_prompt prompt;                /* owns the text */
    const char *text;                /* prompt.text */
    size_t len;                      /* prompt.len */
    size_t corpus_start, corpus_len; /* the document block within text */
    store_context ctx;
    size_t n_dropped;            /* documents left off by INGEST_TRUNCATE_TAIL */
    double t_render, t_tokenize; /* seconds */
} ingest_rendering;

/* Each document renders as
 *     <document path="PATH" lines="N">\n
 *     1: first line\n ... N: last line\n
 *     </document>\n
 * with '&', '<' and '"' in PATH written as &amp; &lt; &quot;. */
int ingest_render(store *s, int64_t version_id, const ingest_render_options *o,
                  ingest_rendering **out, tome_error *err);
void ingest_rendering_free(ingest_rendering *r);

/* ------------------------------------------------------------------------
 * Ingesting
 * ------------------------------------------------------------------------ */

/* The order of the first version, and of the documents each later version
 * adds at its end. */
typedef enum ingest_order {
    INGEST_ORDER_PATH,  /* sorted by path (bytewise) */
    INGEST_ORDER_SOURCE /* in the order the source lists them */
} ingest_order;

/* Whose read rights an ingest is limited to, when not the process's own
 * (tomed, for a server path sent by a Unix peer).  `may` is asked about
 * every file and directory the ingest opens, on its open descriptor and
 * before a byte is read from it, so a path swapped underneath cannot
 * redirect the check: `want` is access(2)'s R_OK, X_OK or both, and a
 * non-zero answer allows.  The source path itself is then opened one
 * component at a time without following symbolic links (resolve it first),
 * each directory on the way needing X_OK; entries inside the tree that are
 * refused are skipped with a warning.  `who` names the reader in messages
 * ("uid 1000"). */
typedef struct ingest_access {
    int (*may)(void *ctx, int fd, int want);
    void *ctx;
    const char *who;
} ingest_access;

typedef struct ingest_options {
    ingest_limits limits;
    const ingest_access *access; /* NULL: the process's own rights */
    const ingest_filter *filter; /* NULL: the default excludes */
    ingest_order order;
    /* New documents always go after the existing ones, so the rendered
     * prefix (and a cached KV state of it) stays valid.  With this set,
     * changed documents move to the end as well (a longer valid prefix);
     * otherwise they keep their place. */
    int changed_to_end;
    ingest_render_options render;
    /* If set, called after each file is read with the entries and bytes
     * read so far; a non-zero return cancels the ingest (TOME_ECANCELED,
     * nothing stored). */
    int (*progress)(void *ctx, uint64_t entries, uint64_t bytes);
    void *progress_ctx;
} ingest_options;

void ingest_options_default(ingest_options *o);

typedef enum ingest_change {
    INGEST_ADDED,
    INGEST_CHANGED,
    INGEST_REMOVED,
    INGEST_SKIPPED,
    INGEST_DROPPED /* over the token budget, left off by truncation */
} ingest_change;

typedef struct ingest_item {
    ingest_change change;
    char *path;
    char *reason; /* why it was skipped or dropped; NULL otherwise */
    int64_t bytes;
} ingest_item;

/* What an ingest did.  Token fields are -1 when no tokenizer was given or
 * the previous version has no context to compare with. */
typedef struct ingest_report {
    char *corpus;
    char *source;
    int64_t corpus_id, version_id, version_number, context_id;
    int64_t documents; /* in the new version */
    int64_t added, changed, removed, skipped, unchanged, dropped;
    ingest_item *items; /* every added, changed, removed, skipped, dropped */
    size_t n_items;
    char **warnings;
    size_t n_warnings;
    uint64_t entries;        /* entries seen, all levels */
    uint64_t bytes_read;     /* uncompressed bytes of the entries read */
    uint64_t document_bytes; /* the new version's documents, as read */
    int64_t rendered_bytes;
    int64_t tokens;
    int64_t first_changed_position; /* first document position that differs */
    int64_t first_changed_byte;     /* in the rendered text */
    int64_t first_changed_token;    /* first token id that differs */
    /* Where the time went, in seconds. */
    double t_read, t_hash, t_decode, t_store, t_render, t_tokenize, t_total;
} ingest_report;

/* Ingest `source` (a directory, an archive, a compressed file or a plain
 * file) as the next version of `corpus` (created if new).  `opts` may be
 * NULL for the defaults.  On success `*report` is the caller's (free it
 * with ingest_report_free); on failure nothing was changed in the store and
 * `*report` is NULL. */
int ingest_run(store *s, const char *corpus, const char *source, const ingest_options *opts,
               ingest_report **report, tome_error *err);
void ingest_report_free(ingest_report *r);
/* The report as a JSON object (malloc'd string, the caller frees). */
int ingest_report_json(const ingest_report *r, char **json, tome_error *err);
const char *ingest_change_name(ingest_change c);

/* ------------------------------------------------------------------------
 * Search without the model
 * ------------------------------------------------------------------------ */

/* PCRE2 search (UTF, multiline) over a version's documents in order: one
 * hit per line where a match starts, at most `max`.  A bad pattern is
 * TOME_EINVAL with PCRE2's message and offset.  (Full-text search is
 * store_search.) */
int ingest_grep(store *s, int64_t version_id, const char *pattern, size_t max, store_hits *out,
                tome_error *err);

/* ------------------------------------------------------------------------
 * Citations and sources of an answer (cite.c)
 * ------------------------------------------------------------------------ */

#define INGEST_CITE_MAX       64  /* citations kept from one answer */
#define INGEST_CITE_MAX_LINES 200 /* longer ranges are checked, not quoted */
#define INGEST_SNIPPET_BYTES  240 /* a source's text, cut at a character */
#define INGEST_SOURCE_LINES   200 /* matching lines ranked for the sources */

/* One "path:line" or "path:first-last" found in an answer.  `exists` is 1
 * when the version has the document and every line of the range; `text`
 * is then those lines joined by newlines (NULL for a missing citation, and
 * for a range over INGEST_CITE_MAX_LINES lines). */
typedef struct ingest_citation {
    char *path;
    int64_t line, end_line; /* equal for a single line */
    int exists;
    char *text;
} ingest_citation;

typedef struct ingest_citations {
    ingest_citation *items;
    size_t n;
} ingest_citations;

/* The citations of `answer`, in order of first appearance, duplicates
 * once, at most INGEST_CITE_MAX, each checked against the documents of
 * version `version_id`.  A reference counts as a citation when its path is
 * a document of the version or looks like a file name (has a '/' or '.'
 * and a letter), so "at 12:30" is not one but "gone.c:4" is (exists = 0).
 * Free with ingest_citations_free. */
int ingest_cite(store *s, int64_t version_id, const char *answer, ingest_citations *out,
                tome_error *err);
void ingest_citations_free(ingest_citations *c);

/* Lines `first` to `last` of document `path` in version `version_id`, for
 * a reader: `last` is cut to the document's end and to
 * INGEST_READ_MAX_LINES lines from `first`.  Fills *text (malloc'd, the
 * lines joined by newlines), *last_out (the last line given) and *count
 * (the document's lines).  TOME_ENOTFOUND when the version has no such
 * document, TOME_EINVAL when `first` is past its end or below 1, or
 * `last` is before it. */
#define INGEST_READ_MAX_LINES 2000
int ingest_read_lines(store *s, int64_t version_id, const char *path, int64_t first, int64_t last,
                      char **text, int64_t *last_out, int64_t *count, tome_error *err);

/* The passages of the version that best match `question`: full-text search
 * for any of its words (FTS5; words of two bytes or more, and numbers) in
 * the first INGEST_SOURCE_LINES matching lines, ranked by their score: the
 * number of the question's words on the line plus the document's bm25
 * relevance.  At most two lines per document, at most `max` hits, each
 * hit's text cut to INGEST_SNIPPET_BYTES.  No words: no hits.  Free with
 * store_hits_free. */
int ingest_sources(store *s, int64_t version_id, const char *question, size_t max, store_hits *out,
                   tome_error *err);

#endif
