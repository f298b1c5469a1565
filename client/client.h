/*
 * client.h - the internal interface between the parts of the `tome` client.
 *
 * The client is one program built from small files, each owning one layer:
 *
 *   args.c      the command line: global options, the command table, and
 *               the per-command options, parsed into one tome_options
 *   conn.c      byte transport: a Unix socket, or TCP wrapped in TLS
 *               (OpenSSL), with a read buffer for the HTTP layer
 *   http.c      HTTP/1.1 framing: request heads, response heads, bodies
 *               delimited by Content-Length, chunked encoding or close
 *   api.c       one request against the daemon: JSON in, JSON or events
 *               out, HTTP errors turned into tome_error codes
 *   output.c    stdout/stderr conventions: colour, --quiet, diagnostics
 *   progress.c  the prefill progress bar (TTY) and progress lines (not)
 *   view.c      the daemon's objects as tables and "key: value" text
 *   upload.c    what `tome ingest` sends: an archive file, or a directory
 *               or standard input packed into a temporary tar file
 *   questions.c the questions-file format of `tome report`
 *   report.c    the report writers (Markdown, JSON, text)
 *   cmd_*.c     one file per command group
 *   main.c      startup: parse, connect settings, run, map to exit codes
 *
 * The client depends on the daemon only through the protocol documented in
 * tome-protocol(7); it links common/ for errors and file helpers.  Every
 * function that can fail returns 0 or a negative code and fills a
 * tome_error, as everywhere in tome; main.c alone turns codes into exit
 * statuses.
 */
#ifndef TOME_CLIENT_H
#define TOME_CLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "common/common.h"
#include "common/sse.h"

/* The exit statuses documented in tome(1); cron jobs branch on them. */
enum {
    TOME_EXIT_OK = 0,
    TOME_EXIT_FAILURE = 1,      /* anything not listed below */
    TOME_EXIT_USAGE = 2,        /* bad command line or request */
    TOME_EXIT_UNREACHABLE = 3,  /* no connection to the daemon, or it went away */
    TOME_EXIT_NOT_FOUND = 4,    /* corpus, job, state or token missing */
    TOME_EXIT_QUESTIONS = 5,    /* tome report: some questions failed */
    TOME_EXIT_DENIED = 6,       /* no valid credentials or no right */
    TOME_EXIT_BUSY = 7,         /* daemon busy, starting or stopping: retry later */
    TOME_EXIT_NOT_PREPARED = 8, /* no cached state (or no documents) yet */
};

/* A client-only error code beside common.h's TOME_E*: the daemon could not
 * be reached, or the connection broke before the answer was complete. */
#define TOME_EUNREACHABLE (-64)
/* And `tome report`'s outcome when it wrote a report in which some
 * questions failed. */
#define TOME_EQUESTIONS (-65)

int tome_exit_status(int code);

/* ------------------------------------------------------------------------
 * Command line (args.c)
 * ------------------------------------------------------------------------ */

typedef struct tome_options tome_options;
typedef struct tome_client tome_client;
typedef int (*tome_command_fn)(tome_client *client, const tome_options *opt, tome_error *err);

typedef struct tome_command {
    const char *group; /* "corpus", or NULL for a one-word command */
    const char *name;
    const char *params; /* positional parameters, for usage lines */
    int min_args, max_args;
    const char *options; /* the command's own options, space-separated */
    tome_command_fn run;
    const char *summary;
} tome_command;

#define TOME_MAX_ARGS 4

struct tome_options {
    /* connection (global) */
    const char *socket_path;
    const char *host;
    const char *cacert, *cert, *key;
    const char *token_file;
    /* output (global) */
    int quiet, no_color, json;
    int help, version;
    /* the command and its positional arguments */
    const tome_command *command;
    const char *args[TOME_MAX_ARGS];
    int nargs;
    /* command options; numbers left unset are -1 */
    const char *thinking; /* none, high, max, or NULL for the daemon default */
    long max_tokens;
    double temperature;
    long long seed;
    int wait, detach, cancel;
    int regex;
    int no_sources; /* ask: no sources or citations after the answer */
    long limit;
    int server_path;
    const char *output;
    const char *format; /* markdown, json, text */
    const char *scope_corpus;
    const char *rights;
};

extern const tome_command tome_commands[];

/* The commands, one file per group (cmd_*.c). */
int tome_corpus_add(tome_client *c, const tome_options *opt, tome_error *err);
int tome_corpus_ls(tome_client *c, const tome_options *opt, tome_error *err);
int tome_corpus_show(tome_client *c, const tome_options *opt, tome_error *err);
int tome_corpus_rm(tome_client *c, const tome_options *opt, tome_error *err);
int tome_cmd_ingest(tome_client *c, const tome_options *opt, tome_error *err);
int tome_cmd_prefill(tome_client *c, const tome_options *opt, tome_error *err);
int tome_cmd_ask(tome_client *c, const tome_options *opt, tome_error *err);
int tome_cmd_search(tome_client *c, const tome_options *opt, tome_error *err);
int tome_cmd_jobs(tome_client *c, const tome_options *opt, tome_error *err);
int tome_cache_ls(tome_client *c, const tome_options *opt, tome_error *err);
int tome_cache_verify(tome_client *c, const tome_options *opt, tome_error *err);
int tome_cache_rm(tome_client *c, const tome_options *opt, tome_error *err);
int tome_token_create(tome_client *c, const tome_options *opt, tome_error *err);
int tome_token_ls(tome_client *c, const tome_options *opt, tome_error *err);
int tome_token_revoke(tome_client *c, const tome_options *opt, tome_error *err);
int tome_cmd_status(tome_client *c, const tome_options *opt, tome_error *err);
int tome_cmd_report(tome_client *c, const tome_options *opt, tome_error *err);
/* MCP over stdio until stdin ends (cmd_mcp.c). */
int tome_cmd_mcp(tome_client *c, const tome_options *opt, tome_error *err);
/* One message line of MCP (len bytes at line, without its end): its
 * answer, if it needs one, written to standard output as a line. */
void tome_mcp_message(tome_client *c, const char *line, size_t len);

/* Parse argv into `opt`.  Options may come before or after the command;
 * "--" ends them.  A TOME_EINVAL return is a usage error whose message says
 * what is wrong.  argv is reordered (the words that are not options first),
 * never its strings. */
int tome_parse_args(int argc, char **argv, tome_options *opt, tome_error *err);
/* The usage text: all commands, or one command's line when `cmd` is set. */
void tome_print_usage(FILE *f, const tome_command *cmd);

/* ------------------------------------------------------------------------
 * Transport and HTTP (conn.c, http.c)
 * ------------------------------------------------------------------------ */

typedef struct tome_conn tome_conn;

typedef struct tome_endpoint {
    const char *socket_path; /* used when host is NULL */
    const char *host;        /* "name:port" or "[v6]:port": TLS */
    const char *cacert, *cert, *key;
} tome_endpoint;

int tome_conn_open(const tome_endpoint *ep, tome_conn **out, tome_error *err);
/* Wrap an already connected plain socket (the HTTP unit tests use this). */
int tome_conn_from_fd(int fd, tome_conn **out, tome_error *err);
void tome_conn_free(tome_conn *c);
int tome_conn_write(tome_conn *c, const void *data, size_t len, tome_error *err);
/* Up to `cap` bytes, from the buffer first; *got is 0 at end of stream. */
int tome_conn_read(tome_conn *c, void *buf, size_t cap, size_t *got, tome_error *err);
/* One line without its CR LF; TOME_ELIMIT when longer than `cap` - 1. */
int tome_conn_read_line(tome_conn *c, char *line, size_t cap, tome_error *err);

typedef struct tome_request {
    const char *method;
    const char *target;       /* path and query, already encoded */
    const char *host;         /* Host header */
    const char *token;        /* bearer secret, or NULL */
    const char *content_type; /* NULL when there is no body */
    long long content_length;
    const char *accept;
} tome_request;

typedef struct tome_response {
    int status;
    char content_type[128];
    long long content_length; /* -1 when not given */
    int chunked;
    long long retry_after; /* seconds, -1 when not given */
    /* body framing state */
    long long left;  /* bytes left in the body or in the current chunk */
    int chunks_seen; /* later chunk heads follow the previous chunk's CRLF */
    int done;
} tome_response;

int tome_http_write_head(tome_conn *c, const tome_request *req, tome_error *err);
/* Read the status line and headers (skipping 1xx answers). */
int tome_http_read_head(tome_conn *c, tome_response *resp, tome_error *err);
/* Next piece of the body; *got is 0 once the body is complete. */
int tome_http_read_body(tome_conn *c, tome_response *resp, char *buf, size_t cap, size_t *got,
                        tome_error *err);
/* The whole body, NUL-terminated, refused beyond `max` bytes. */
int tome_http_read_all(tome_conn *c, tome_response *resp, size_t max, char **body, size_t *len,
                       tome_error *err);
/* Percent-encode `s` for a query string or path segment into a malloc'd
 * string. */
char *tome_url_escape(const char *s);

/* ------------------------------------------------------------------------
 * Requests to the daemon (api.c)
 * ------------------------------------------------------------------------ */

struct tome_client {
    tome_endpoint endpoint;
    char *token; /* from TOME_TOKEN or --token-file; never from argv */
};

int tome_client_init(tome_client *c, const tome_options *opt, tome_error *err);
void tome_client_free(tome_client *c);

/* A JSON request (body may be NULL) whose answer is JSON (or 204): on a 2xx
 * *reply gets the object (NULL for 204) and `*status` the code if wanted.
 * Error answers become the matching TOME_E* with the daemon's message. */
int tome_api_json(tome_client *c, const char *method, const char *target, json_t *body,
                  json_t **reply, int *status, tome_error *err);
/* A request answered with Server-Sent Events, each passed to `on_event`.
 * An answer that is not an event stream is treated like tome_api_json's
 * errors. */
int tome_api_events(tome_client *c, const char *method, const char *target, json_t *body,
                    tome_sse_fn on_event, void *ctx, tome_error *err);
/* POST `len` bytes from `fd` as application/octet-stream. */
int tome_api_upload(tome_client *c, const char *target, int fd, long long len, json_t **reply,
                    tome_error *err);
/* "BEFORE" + escaped NAME + "AFTER" as a malloc'd request target. */
char *tome_api_target(const char *before, const char *name, const char *after);
/* The daemon's {"error":{"code","message"}} object as a tome_error. */
int tome_api_error_from_json(json_t *error, int http_status, tome_error *err);

/* ------------------------------------------------------------------------
 * Output conventions (output.c) and progress (progress.c)
 * ------------------------------------------------------------------------ */

enum tome_style { TOME_STYLE_BOLD, TOME_STYLE_DIM, TOME_STYLE_RED, TOME_STYLE_GREEN };

/* Decide colour and quietness once, from the options, NO_COLOR and isatty. */
void tome_output_init(int quiet, int no_color);
int tome_output_quiet(void);
int tome_stderr_is_tty(void);
/* The escape sequence for a style on stdout or stderr, or "" without colour. */
const char *tome_style_on(FILE *f, enum tome_style style);
const char *tome_style_off(FILE *f);
/* "tome: ..." on stderr, unless --quiet. */
void tome_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "tome: error: ..." on stderr, always. */
void tome_report_error(const tome_error *err);
/* Print a JSON value to stdout, indented, with a final newline. */
int tome_print_json(json_t *value, tome_error *err);

typedef struct tome_progress {
    int tty;
    double last_print;
    int width_used;
} tome_progress;

void tome_progress_init(tome_progress *p);
/* Show a job object's progress (tokens_done, tokens_total, tokens_per_s,
 * eta_s): a redrawn bar on a TTY, at most one plain line a second else. */
void tome_progress_update(tome_progress *p, json_t *job);
/* Clear the bar so the next line starts clean. */
void tome_progress_finish(tome_progress *p);
/* "1:02:03" style durations and "12.3k" style counts for humans. */
void tome_format_duration(double seconds, char *buf, size_t cap);

/* ------------------------------------------------------------------------
 * Views of the daemon's objects, and the common request shape (view.c)
 * ------------------------------------------------------------------------ */

typedef void (*tome_view_fn)(json_t *reply);

void tome_view_corpora(json_t *reply);
void tome_view_corpus(json_t *corpus);
void tome_view_jobs(json_t *reply);
void tome_view_job_row(json_t *job);
void tome_view_states(json_t *reply);
void tome_view_tokens(json_t *reply);

/* Send a request and show its answer: the daemon's JSON with --json, else
 * `view` (which may be NULL for answers that need no showing). */
int tome_request_and_show(tome_client *c, const tome_options *opt, const char *method,
                          const char *target, json_t *body, tome_view_fn view, tome_error *err);
/* The same for a target made of BEFORE + escaped NAME + AFTER, no body. */
int tome_request_named(tome_client *c, const tome_options *opt, const char *method,
                       const char *before, const char *name, const char *after, tome_view_fn view,
                       tome_error *err);

/* ------------------------------------------------------------------------
 * Uploads (upload.c)
 * ------------------------------------------------------------------------ */

/* Open what `tome ingest` sends for `path`: a regular file as is; a
 * directory, or "-" (standard input), packed or copied into an unlinked
 * temporary file.  *fd and *len describe the bytes to send. */
int tome_upload_open(const char *path, int *fd, long long *len, tome_error *err);

/* ------------------------------------------------------------------------
 * Asking (cmd_ask.c), shared with the report
 * ------------------------------------------------------------------------ */

typedef struct tome_ask_params {
    const char *question;
    long max_tokens;      /* -1: daemon default */
    const char *thinking; /* NULL: daemon default */
    double temperature;
    int has_temperature;
    long long seed;
    int has_seed;
} tome_ask_params;

/* Called with each piece of answer text as it streams in. */
typedef void (*tome_token_fn)(void *ctx, const char *text);

/* Ask one question; *result gets the done event's object, to which the
 * client adds its own measurements (client_ttft_ms, client_total_ms). */
int tome_ask(tome_client *c, const char *corpus, const tome_ask_params *q, tome_token_fn on_token,
             void *ctx, json_t **result, tome_error *err);
/* A JSON request body for `q`. */
json_t *tome_ask_body(const tome_ask_params *q);
/* The ask options of the command line (--think, --max-tokens, ...). */
void tome_ask_params_from_options(const tome_options *opt, const char *question,
                                  tome_ask_params *q);

/* ------------------------------------------------------------------------
 * Questions files and reports (questions.c, report.c)
 * ------------------------------------------------------------------------ */

typedef struct tome_question {
    char *id;
    int line; /* where its header is, for messages */
    tome_ask_params params;
    char *text;
} tome_question;

typedef struct tome_question_list {
    tome_question *items;
    size_t count;
} tome_question_list;

/* Parse a questions file's text; `name` is used in messages ("FILE:LINE:"). */
int tome_questions_parse(const char *text, const char *name, tome_question_list *out,
                         tome_error *err);
void tome_questions_free(tome_question_list *list);

enum tome_report_format { TOME_REPORT_MARKDOWN, TOME_REPORT_JSON, TOME_REPORT_TEXT };

int tome_report_format_parse(const char *name, enum tome_report_format *out, tome_error *err);

/* The report object (the schema in tome(1)): corpus, generated_at, summary
 * and one result per question.  Results are added as questions finish. */
json_t *tome_report_new(const char *corpus, const char *questions_file, const char *generated_at);
/* Add a result: `answer` is the ask result (NULL if it failed), `failure`
 * the error (NULL if it succeeded). */
int tome_report_add(json_t *report, const tome_question *q, json_t *answer,
                    const tome_error *failure);
/* Render the report as text in the chosen format (a malloc'd string). */
char *tome_report_render(json_t *report, enum tome_report_format format);

#endif
