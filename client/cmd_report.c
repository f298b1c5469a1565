/*
 * cmd_report.c - `tome report CORPUS QUESTIONS-FILE`: a batch of questions
 * for cron, answered from one cached state and written as one report.
 *
 * The order of checks is what lets a cron job act on the exit status: the
 * questions file is parsed first (a mistake there is a usage error, before
 * anything is sent), then the corpus is looked up once (missing: its own
 * status; not prefilled: its own status), and only then are the questions
 * asked, one after another, each failure recorded in the report rather
 * than ending the run.  The report is written even when some questions
 * failed, and then the exit status says so.  With -o the file is replaced
 * atomically, so a reader never sees half a report and a failed run never
 * destroys the previous one.
 */
#include "client/client.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUESTIONS_FILE_MAX (4u << 20)

static int load_questions(const char *path, tome_question_list *list, tome_error *err)
{
    char *text;
    if (tome_read_file(path, QUESTIONS_FILE_MAX, &text, NULL, err)) {
        err->code = TOME_EINVAL; /* naming a bad file is a usage error */
        return tome_error_wrap(err, "questions file");
    }
    int rc = tome_questions_parse(text, path, list, err);
    free(text);
    return rc;
}

/* The corpus must exist and have a cached state before any question. */
static int check_corpus(tome_client *c, const char *corpus, tome_error *err)
{
    char *target = tome_api_target("/v1/corpora/", corpus, "");
    if (!target) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    json_t *reply = NULL;
    int rc = tome_api_json(c, "GET", target, NULL, &reply, NULL, err);
    free(target);
    if (rc == 0 && !json_is_object(json_object_get(reply, "state")))
        rc = tome_errorf(err, TOME_EMISMATCH,
                         "corpus %s has no cached state; run tome prefill %s --wait first", corpus,
                         corpus);
    json_decref(reply);
    return rc;
}

/* Question settings win over the command line's, which win over the
 * daemon's defaults. */
static tome_ask_params merged_params(const tome_options *opt, const tome_question *q)
{
    tome_ask_params p;
    tome_ask_params_from_options(opt, q->text, &p);
    if (q->params.max_tokens > 0) p.max_tokens = q->params.max_tokens;
    if (q->params.thinking) p.thinking = q->params.thinking;
    if (q->params.has_temperature) {
        p.temperature = q->params.temperature;
        p.has_temperature = 1;
    }
    if (q->params.has_seed) {
        p.seed = q->params.seed;
        p.has_seed = 1;
    }
    return p;
}

static int ask_all(tome_client *c, const tome_options *opt, const tome_question_list *list,
                   json_t *report)
{
    for (size_t i = 0; i < list->count; i++) {
        const tome_question *q = &list->items[i];
        tome_ask_params params = merged_params(opt, q);
        tome_error failure = {0};
        json_t *answer = NULL;
        int rc = tome_ask(c, opt->args[0], &params, NULL, NULL, &answer, &failure);
        if (rc)
            tome_note("[%zu/%zu] %s failed: %s", i + 1, list->count, q->id, failure.msg);
        else
            tome_note("[%zu/%zu] %s answered", i + 1, list->count, q->id);
        rc = tome_report_add(report, q, answer, rc ? &failure : NULL);
        json_decref(answer);
        if (rc) return rc;
    }
    return 0;
}

static int write_report(const char *text, const char *output, tome_error *err)
{
    if (output) return tome_write_file_atomic(output, text, strlen(text), err);
    if (fputs(text, stdout) == EOF || fflush(stdout) != 0)
        return tome_errorf(err, TOME_EIO, "cannot write the report to standard output");
    return 0;
}

static void utc_now(char *buf, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Ask every question and write the rendered report; *failed gets the
 * number of questions that failed. */
static int produce_report(tome_client *c, const tome_options *opt, const tome_question_list *list,
                          enum tome_report_format format, json_int_t *failed, tome_error *err)
{
    char when[32];
    utc_now(when, sizeof when);
    json_t *report = tome_report_new(opt->args[0], opt->args[1], when);
    if (!report) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    int rc = 0;
    if (ask_all(c, opt, list, report) != 0)
        rc = tome_errorf(err, TOME_ENOMEM, "out of memory building the report");
    char *text = rc ? NULL : tome_report_render(report, format);
    if (rc == 0 && !text) rc = tome_errorf(err, TOME_ENOMEM, "out of memory rendering the report");
    if (rc == 0) rc = write_report(text, opt->output, err);
    *failed = json_integer_value(json_object_get(json_object_get(report, "summary"), "failed"));
    free(text);
    json_decref(report);
    return rc;
}

int tome_cmd_report(tome_client *c, const tome_options *opt, tome_error *err)
{
    enum tome_report_format format;
    tome_question_list list;
    if (tome_report_format_parse(opt->format, &format, err)) return err->code;
    if (load_questions(opt->args[1], &list, err)) return err->code;
    json_int_t failed = 0;
    int rc = check_corpus(c, opt->args[0], err);
    if (rc == 0) rc = produce_report(c, opt, &list, format, &failed, err);
    if (rc == 0 && failed > 0)
        rc = tome_errorf(err, TOME_EQUESTIONS, "%lld of %zu questions failed", (long long)failed,
                         list.count);
    tome_questions_free(&list);
    return rc;
}
