/*
 * cmd_ask.c - `tome ask CORPUS QUESTION`, and the asking that `tome report`
 * shares with it.
 *
 * The answer always travels as an event stream, even for the report and for
 * --json, which print nothing until the end: one code path means the report
 * exercises exactly what people see, and the client can measure its own
 * time to first token, which includes the socket and is what a user feels.
 * The daemon's own numbers (usage, timings, state) come in the done event
 * and are passed on unchanged; the client adds its measurements beside them
 * under "client".
 *
 * A person sees the text as it is generated on stdout, then the sources
 * and citations the daemon found (unless --no-sources), then one line of
 * statistics on stderr (so `tome ask ... > answer.txt` keeps the answer
 * and its references).  --json prints one object instead, whose fields
 * tome(1) lists.
 */
#include "client/client.h"

#include <stdlib.h>
#include <string.h>

#define QUESTION_MAX_BYTES (1u << 20)

typedef struct ask_ctx {
    tome_token_fn on_token;
    void *token_ctx;
    double started, first_token;
    json_t *done;
} ask_ctx;

static int on_ask_event(void *ctx, const char *event, const char *data, tome_error *err)
{
    ask_ctx *a = ctx;
    json_error_t jerr;
    json_t *obj = json_loads(data, 0, &jerr);
    if (!obj)
        return tome_errorf(err, TOME_EFORMAT, "bad %s event from tomed: %s", event, jerr.text);
    int rc = 0;
    if (strcmp(event, "token") == 0) {
        const char *text = json_string_value(json_object_get(obj, "text"));
        if (a->first_token == 0) a->first_token = tome_now();
        if (text && a->on_token) a->on_token(a->token_ctx, text);
    } else if (strcmp(event, "done") == 0) {
        json_decref(a->done);
        a->done = json_incref(obj);
    } else if (strcmp(event, "error") == 0) {
        rc = tome_api_error_from_json(json_object_get(obj, "error"), 500, err);
    }
    json_decref(obj);
    return rc;
}

json_t *tome_ask_body(const tome_ask_params *q)
{
    json_t *body = json_pack("{s:s, s:b}", "question", q->question, "stream", 1);
    if (!body) return NULL;
    if (q->max_tokens > 0) json_object_set_new(body, "max_tokens", json_integer(q->max_tokens));
    if (q->thinking) json_object_set_new(body, "thinking", json_string(q->thinking));
    if (q->has_temperature) json_object_set_new(body, "temperature", json_real(q->temperature));
    if (q->has_seed) json_object_set_new(body, "seed", json_integer(q->seed));
    return body;
}

static void add_client_timings(json_t *result, const ask_ctx *a)
{
    double end = tome_now();
    json_t *client = json_object();
    json_object_set_new(client, "ttft_ms",
                        a->first_token ? json_real((a->first_token - a->started) * 1e3)
                                       : json_null());
    json_object_set_new(client, "total_ms", json_real((end - a->started) * 1e3));
    json_object_set_new(result, "client", client);
}

int tome_ask(tome_client *c, const char *corpus, const tome_ask_params *q, tome_token_fn on_token,
             void *ctx, json_t **result, tome_error *err)
{
    *result = NULL;
    char *target = tome_api_target("/v1/corpora/", corpus, "/ask");
    json_t *body = tome_ask_body(q);
    if (!target || !body) {
        free(target);
        json_decref(body);
        return tome_errorf(err, TOME_ENOMEM, "out of memory");
    }
    ask_ctx a = {.on_token = on_token, .token_ctx = ctx, .started = tome_now()};
    int rc = tome_api_events(c, "POST", target, body, on_ask_event, &a, err);
    free(target);
    json_decref(body);
    if (rc == 0 && !a.done)
        rc = tome_errorf(err, TOME_EUNREACHABLE, "the answer stream ended before it was done");
    if (rc) {
        json_decref(a.done);
        return rc;
    }
    add_client_timings(a.done, &a);
    *result = a.done;
    return 0;
}

/* What has reached the terminal, so the answer always ends with a newline
 * before anything else (statistics or an error) is printed. */
typedef struct printed_answer {
    int any;
    char last;
} printed_answer;

static void print_token(void *ctx, const char *text)
{
    printed_answer *p = ctx;
    size_t len = strlen(text);
    if (len == 0) return;
    fputs(text, stdout);
    fflush(stdout);
    p->any = 1;
    p->last = text[len - 1];
}

static void end_answer_line(const printed_answer *p)
{
    if (p->any && p->last != '\n') putchar('\n');
    fflush(stdout);
}

static double timing(json_t *result, const char *key)
{
    return json_number_value(json_object_get(json_object_get(result, "timings"), key));
}

static void print_statistics(json_t *result)
{
    json_t *usage = json_object_get(result, "usage");
    json_t *state = json_object_get(result, "state");
    tome_note("%s%lld answer tokens, first token after %.0f ms, %.1f tokens/s, %.2f s in all; "
              "%lld corpus tokens (%lld from the engine's cache) from state %.12s%s",
              tome_style_on(stderr, TOME_STYLE_DIM),
              json_integer_value(json_object_get(usage, "completion_tokens")),
              timing(result, "ttft_ms"), timing(result, "decode_tokens_per_s"),
              timing(result, "total_ms") / 1e3,
              json_integer_value(json_object_get(usage, "corpus_tokens")),
              json_integer_value(json_object_get(usage, "cached_tokens")),
              json_string_value(json_object_get(state, "id")), tome_style_off(stderr));
}

/* "  path:line-end" (the range only when it is one). */
static void print_place(json_t *ref)
{
    long long line = json_integer_value(json_object_get(ref, "line"));
    json_t *end = json_object_get(ref, "end_line");
    printf("  %s:%lld", json_string_value(json_object_get(ref, "path")), line);
    if (end && json_integer_value(end) != line) printf("-%lld", json_integer_value(end));
}

/* The passages that match the question, then what the answer cites with
 * the cited text; a citation of a file or line the corpus lacks is
 * flagged, not hidden. */
static void print_references(json_t *result)
{
    json_t *sources = json_object_get(result, "sources");
    json_t *citations = json_object_get(result, "citations");
    size_t i;
    json_t *ref;
    if (json_array_size(sources)) printf("\nSources:\n");
    json_array_foreach(sources, i, ref) {
        print_place(ref);
        printf("  %s\n", json_string_value(json_object_get(ref, "snippet")));
    }
    if (json_array_size(citations)) printf("\nCitations:\n");
    json_array_foreach(citations, i, ref) {
        print_place(ref);
        const char *text = json_string_value(json_object_get(ref, "text"));
        if (!json_is_true(json_object_get(ref, "exists")))
            printf("  (not in the corpus)\n");
        else
            printf("  %s\n", text ? text : "");
    }
    fflush(stdout);
}

void tome_ask_params_from_options(const tome_options *opt, const char *question, tome_ask_params *q)
{
    q->question = question;
    q->max_tokens = opt->max_tokens;
    q->thinking = opt->thinking;
    q->temperature = opt->temperature;
    q->has_temperature = opt->temperature >= 0;
    q->seed = opt->seed;
    q->has_seed = opt->seed >= 0;
}

/* A question of "-" is read from standard input, for questions too long or
 * too full of quotes for a command line. */
static int read_question(const char *arg, char **owned, tome_error *err)
{
    *owned = NULL;
    if (strcmp(arg, "-") != 0) return 0;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, stdin);
        if (len < cap - 1) break;
        char *bigger = cap < QUESTION_MAX_BYTES ? realloc(buf, cap * 2) : NULL;
        if (!bigger) {
            free(buf);
            return tome_errorf(err, TOME_ELIMIT, "the question on standard input is over %u bytes",
                               QUESTION_MAX_BYTES);
        }
        buf = bigger;
        cap *= 2;
    }
    if (!buf) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    if (ferror(stdin)) {
        free(buf);
        return tome_errorf(err, TOME_EIO, "reading the question from standard input failed");
    }
    while (len > 0 && strchr(" \t\r\n", buf[len - 1])) len--;
    buf[len] = '\0';
    if (len == 0) {
        free(buf);
        return tome_errorf(err, TOME_EINVAL, "the question on standard input is empty");
    }
    *owned = buf;
    return 0;
}

int tome_cmd_ask(tome_client *c, const tome_options *opt, tome_error *err)
{
    char *from_stdin;
    if (read_question(opt->args[1], &from_stdin, err)) return err->code;
    tome_ask_params q;
    tome_ask_params_from_options(opt, from_stdin ? from_stdin : opt->args[1], &q);
    printed_answer printed = {0};
    json_t *result = NULL;
    int rc = tome_ask(c, opt->args[0], &q, opt->json ? NULL : print_token, &printed, &result, err);
    end_answer_line(&printed);
    if (rc == 0 && opt->json) {
        json_t *out = json_pack("{s:s, s:s}", "corpus", opt->args[0], "question", q.question);
        json_object_update(out, result);
        rc = tome_print_json(out, err);
        json_decref(out);
    } else if (rc == 0) {
        if (!printed.any) putchar('\n');
        if (!opt->no_sources) print_references(result);
        print_statistics(result);
    }
    json_decref(result);
    free(from_stdin);
    return rc;
}
