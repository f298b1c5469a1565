/*
 * report.c - the report of `tome report`, built as JSON and written as
 * Markdown, JSON or plain text.
 *
 * The report is first one JSON object (schema "tome-report/1", described
 * field by field in tome(1)) and only then rendered, so the three formats
 * can never disagree: Markdown and text are views of the same object that
 * other tools get with --format json.  Fields are only ever added to the
 * schema, never renamed or retyped; a breaking change would be
 * "tome-report/2".
 *
 * Each result keeps the daemon's usage, timings and state objects as they
 * came, plus the client's own measurements, so a report answers "how long
 * did that take and from which cached state" without a second source.
 */
#include "client/client.h"

#include <stdlib.h>
#include <string.h>

#define REPORT_SCHEMA "tome-report/1"

int tome_report_format_parse(const char *name, enum tome_report_format *out, tome_error *err)
{
    if (!name || strcmp(name, "markdown") == 0)
        *out = TOME_REPORT_MARKDOWN;
    else if (strcmp(name, "json") == 0)
        *out = TOME_REPORT_JSON;
    else if (strcmp(name, "text") == 0)
        *out = TOME_REPORT_TEXT;
    else
        return tome_errorf(err, TOME_EINVAL, "--format %s: use markdown, json or text", name);
    return 0;
}

json_t *tome_report_new(const char *corpus, const char *questions_file, const char *generated_at)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:{s:i, s:i, s:i, s:i}, s:[]}", "schema", REPORT_SCHEMA,
                     "corpus", corpus, "questions_file", questions_file, "generated_at",
                     generated_at, "summary", "questions", 0, "answered", 0, "failed", 0,
                     "completion_tokens", 0, "results");
}

static void count(json_t *summary, const char *key, json_int_t add)
{
    json_int_t now = json_integer_value(json_object_get(summary, key));
    json_object_set_new(summary, key, json_integer(now + add));
}

static const char *error_code_name(int code)
{
    return code == TOME_EUNREACHABLE ? "unreachable" : tome_error_name(code);
}

int tome_report_add(json_t *report, const tome_question *q, json_t *answer,
                    const tome_error *failure)
{
    json_t *result = json_pack("{s:s, s:s, s:s}", "id", q->id, "question", q->text, "status",
                               failure ? "failed" : "answered");
    if (!result) return TOME_ENOMEM;
    json_t *summary = json_object_get(report, "summary");
    count(summary, "questions", 1);
    if (failure) {
        json_object_set_new(result, "answer", json_null());
        json_object_set_new(result, "error",
                            json_pack("{s:s, s:s}", "code", error_code_name(failure->code),
                                      "message", failure->msg));
        count(summary, "failed", 1);
    } else {
        static const char *const kept[] = {"answer",  "finish_reason", "usage",
                                           "timings", "state",         "client"};
        for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
            json_t *v = json_object_get(answer, kept[i]);
            json_object_set(result, kept[i], v ? v : json_null());
        }
        json_object_set_new(result, "error", json_null());
        count(summary, "answered", 1);
        count(summary, "completion_tokens",
              json_integer_value(
                  json_object_get(json_object_get(answer, "usage"), "completion_tokens")));
    }
    return json_array_append_new(json_object_get(report, "results"), result) ? TOME_ENOMEM : 0;
}

/* Shorthands for reading a result. */
static const char *str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

static json_int_t integer(json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

static double timing(json_t *result, const char *key)
{
    return json_number_value(json_object_get(json_object_get(result, "timings"), key));
}

static void write_statistics(FILE *f, json_t *result, const char *before, const char *after)
{
    fprintf(f, "%s%lld tokens, first token after %.0f ms, %.1f tokens/s, %.2f s%s\n", before,
            (long long)integer(json_object_get(result, "usage"), "completion_tokens"),
            timing(result, "ttft_ms"), timing(result, "decode_tokens_per_s"),
            timing(result, "total_ms") / 1e3, after);
}

static void write_summary_line(FILE *f, json_t *report)
{
    json_t *summary = json_object_get(report, "summary");
    fprintf(f,
            "Corpus %s, questions from %s, generated %s: %lld questions, %lld answered, "
            "%lld failed.\n",
            str(report, "corpus"), str(report, "questions_file"), str(report, "generated_at"),
            (long long)integer(summary, "questions"), (long long)integer(summary, "answered"),
            (long long)integer(summary, "failed"));
}

/* Quote each line of `text` as a Markdown block quote. */
static void write_quoted(FILE *f, const char *text)
{
    for (const char *s = text; *s;) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        fprintf(f, ">%s%.*s\n", len ? " " : "", (int)len, s);
        s += len + (nl ? 1 : 0);
    }
}

static void write_markdown(FILE *f, json_t *report)
{
    fprintf(f, "# Report: %s\n\n", str(report, "corpus"));
    write_summary_line(f, report);
    size_t i;
    json_t *result;
    json_array_foreach(json_object_get(report, "results"), i, result) {
        int failed = strcmp(str(result, "status"), "failed") == 0;
        fprintf(f, "\n## %s%s\n\n", str(result, "id"), failed ? " (failed)" : "");
        write_quoted(f, str(result, "question"));
        json_t *error = json_object_get(result, "error");
        if (failed) {
            fprintf(f, "\n**Failed** (%s): %s\n", str(error, "code"), str(error, "message"));
            continue;
        }
        const char *answer = str(result, "answer");
        size_t len = strlen(answer);
        fprintf(f, "\n%s%s\n", answer, len && answer[len - 1] == '\n' ? "" : "\n");
        write_statistics(f, result, "*", "*");
    }
}

static void write_text(FILE *f, json_t *report)
{
    write_summary_line(f, report);
    size_t i;
    json_t *result;
    json_array_foreach(json_object_get(report, "results"), i, result) {
        fprintf(f, "\n[%s] %s\n", str(result, "id"), str(result, "question"));
        json_t *error = json_object_get(result, "error");
        if (json_is_object(error)) {
            fprintf(f, "FAILED (%s): %s\n", str(error, "code"), str(error, "message"));
            continue;
        }
        const char *answer = str(result, "answer");
        size_t len = strlen(answer);
        fprintf(f, "%s%s", answer, len && answer[len - 1] == '\n' ? "" : "\n");
        write_statistics(f, result, "(", ")");
    }
}

char *tome_report_render(json_t *report, enum tome_report_format format)
{
    if (format == TOME_REPORT_JSON) {
        char *text = json_dumps(report, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        size_t n = text ? strlen(text) : 0;
        char *with_newline = text ? realloc(text, n + 2) : NULL;
        if (!with_newline) {
            free(text);
            return NULL;
        }
        memcpy(with_newline + n, "\n", 2);
        return with_newline;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    if (format == TOME_REPORT_MARKDOWN)
        write_markdown(f, report);
    else
        write_text(f, report);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
