/* Unit tests of the questions-file parser (client/questions.c) and the
 * report writers (client/report.c), with the JSON report held to the
 * schema shipped in client/tome-report.schema.json. */
#include "client/client.h"
#include "tests/check.h"
#include "tests/client_schema.h"

#include <unistd.h>

static void test_questions(void)
{
    tome_question_list list;
    tome_error err = {0};
    const char *text = "# weekly questions\r\n"
                       "\n"
                       "## licence max-tokens=200\n"
                       "\n"
                       "Under which licence\n"
                       "is this released?\n"
                       "# a comment inside\n"
                       "\n"
                       "## auth think=high temperature=0.7 seed=3\n"
                       "  Where are passwords checked?  \n";
    CHECK_OK(tome_questions_parse(text, "q.txt", &list, &err), &err);
    REQUIRE(list.count == 2, "count %zu", list.count);
    CHECK(!strcmp(list.items[0].id, "licence") && list.items[0].line == 3);
    CHECK(!strcmp(list.items[0].text, "Under which licence\nis this released?"));
    CHECK(list.items[0].params.max_tokens == 200 && list.items[0].params.thinking == NULL);
    CHECK(!strcmp(list.items[1].text, "Where are passwords checked?"));
    CHECK(!strcmp(list.items[1].params.thinking, "high"));
    CHECK(list.items[1].params.has_temperature && list.items[1].params.temperature == 0.7);
    CHECK(list.items[1].params.has_seed && list.items[1].params.seed == 3);
    CHECK(list.items[1].params.max_tokens == -1);
    CHECK(list.items[1].params.question == list.items[1].text);
    tome_questions_free(&list);
}

/* A last line ending in CR without a newline (a file saved on Windows and
 * cut) once made the parser loop on it forever (found by fuzz_questions);
 * the alarm in main() turns a hang into a failure. */
static void test_questions_cr_at_end(void)
{
    tome_question_list list;
    tome_error err = {0};
    CHECK_OK(tome_questions_parse("## a\r\nquestion text\r", "q.txt", &list, &err), &err);
    REQUIRE(list.count == 1, "count %zu", list.count);
    CHECK(!strcmp(list.items[0].text, "question text"));
    tome_questions_free(&list);
    CHECK_OK(tome_questions_parse("## a\nq\n\r", "q.txt", &list, &err), &err);
    CHECK(list.count == 1 && !strcmp(list.items[0].text, "q"));
    tome_questions_free(&list);
}

static void expect_error(const char *text, const char *needle)
{
    tome_question_list list;
    tome_error err = {0};
    int rc = tome_questions_parse(text, "q.txt", &list, &err);
    CHECKF(rc == TOME_EINVAL, "rc=%d for %s", rc, needle);
    CHECKF(strstr(err.msg, needle) != NULL, "'%s' not in '%s'", needle, err.msg);
    CHECK(list.count == 0 && list.items == NULL);
}

static void test_question_errors(void)
{
    expect_error("", "q.txt: no questions");
    expect_error("# only a comment\n", "no questions");
    expect_error("stray text\n## a\nq\n", "q.txt:1: text before the first");
    expect_error("## a\nfirst\n## a\nsecond\n", "q.txt:3: duplicate question id a");
    expect_error("## a\n\n## b\nq\n", "q.txt:1: question 'a' has no text");
    expect_error("## bad/id\nq\n", "q.txt:1: a question id is");
    expect_error("## \nq\n", "a question id is");
    expect_error("## a max-tokens=0\nq\n", "max-tokens must be");
    expect_error("## a think=deep\nq\n", "think is none, high or max");
    expect_error("## a colour=red\nq\n", "unknown setting colour=red");
    expect_error("## a verbose\nq\n", "expected key=value");
    expect_error("## a temperature=-1\nq\n", "temperature must be");
}

/* A done event as the daemon sends it, with the client's additions. */
static json_t *sample_answer(void)
{
    return json_loads("{\"answer\": \"It is MIT.\\nSee COPYING:1.\", \"finish_reason\": \"stop\","
                      " \"usage\": {\"corpus_tokens\": 900, \"prompt_tokens\": 920,"
                      "  \"completion_tokens\": 12, \"context_tokens\": 4096},"
                      " \"timings\": {\"queue_ms\": 0.1, \"ttft_ms\": 210.4,"
                      "  \"prefill_tokens_per_s\": 100.0, \"decode_tokens_per_s\": 24.5,"
                      "  \"total_ms\": 700.0},"
                      " \"state\": {\"id\": \"9f2c\", \"tokens\": 900, \"hit\": true},"
                      " \"client\": {\"ttft_ms\": 212.0, \"total_ms\": 705.0}}",
                      0, NULL);
}

static json_t *sample_report(const tome_question_list *list)
{
    json_t *report = tome_report_new("src", "q.txt", "2026-11-28T23:00:00Z");
    json_t *answer = sample_answer();
    tome_error failure = {0};
    tome_errorf(&failure, TOME_EUNREACHABLE, "cannot connect to tomed");
    CHECK(tome_report_add(report, &list->items[0], answer, NULL) == 0);
    CHECK(tome_report_add(report, &list->items[1], NULL, &failure) == 0);
    json_decref(answer);
    return report;
}

static void test_report_json(json_t *report)
{
    char schema_path[4096], why[1024];
    const char *src = getenv("TOME_SRCDIR");
    REQUIRE(src && *src, "TOME_SRCDIR is not set (run through make check)");
    snprintf(schema_path, sizeof schema_path, "%s/client/tome-report.schema.json", src);
    json_t *schema = json_load_file(schema_path, 0, NULL);
    REQUIRE(schema, "cannot load %s", schema_path);
    char *text = tome_report_render(report, TOME_REPORT_JSON);
    json_t *parsed = text ? json_loads(text, 0, NULL) : NULL;
    REQUIRE(parsed, "the JSON report does not parse");
    CHECKF(schema_validate(schema, parsed, "$", why, sizeof why) == 0, "%s", why);
    json_t *summary = json_object_get(parsed, "summary");
    CHECK(json_integer_value(json_object_get(summary, "questions")) == 2);
    CHECK(json_integer_value(json_object_get(summary, "answered")) == 1);
    CHECK(json_integer_value(json_object_get(summary, "failed")) == 1);
    CHECK(json_integer_value(json_object_get(summary, "completion_tokens")) == 12);
    json_t *failed = json_array_get(json_object_get(parsed, "results"), 1);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(failed, "error"), "code")),
                  "unreachable"));
    CHECK(json_is_null(json_object_get(failed, "answer")));
    /* The checker must catch a broken report, or the test proves nothing. */
    json_object_del(json_array_get(json_object_get(parsed, "results"), 0), "status");
    CHECK(schema_validate(schema, parsed, "$", why, sizeof why) == 1);
    CHECK(strstr(why, "missing status") != NULL);
    json_decref(parsed);
    json_decref(schema);
    free(text);
}

static void test_report_markdown_and_text(json_t *report)
{
    char *md = tome_report_render(report, TOME_REPORT_MARKDOWN);
    REQUIRE(md, "markdown rendering failed");
    const char *top = "# Report: src\n\nCorpus src, questions from q.txt, generated "
                      "2026-11-28T23:00:00Z: 2 questions, 1 answered, 1 failed.\n";
    CHECKF(strncmp(md, top, strlen(top)) == 0, "%s", md);
    CHECK(strstr(md, "\n## licence\n\n> Under which licence\n> is this released?\n\n"
                     "It is MIT.\nSee COPYING:1.\n\n*12 tokens, first token after 210 ms, "
                     "24.5 tokens/s, 0.70 s*\n") != NULL);
    CHECK(strstr(md, "\n## auth (failed)\n\n> Where are passwords checked?\n\n"
                     "**Failed** (unreachable): cannot connect to tomed\n") != NULL);
    free(md);
    char *text = tome_report_render(report, TOME_REPORT_TEXT);
    REQUIRE(text, "text rendering failed");
    CHECK(strstr(text, "\n[licence] Under which licence\nis this released?\nIt is MIT.\n"
                       "See COPYING:1.\n(12 tokens,") != NULL);
    CHECK(strstr(text, "\n[auth] Where are passwords checked?\nFAILED (unreachable): cannot "
                       "connect to tomed\n") != NULL);
    free(text);
}

static void test_formats(void)
{
    enum tome_report_format f;
    tome_error err = {0};
    CHECK(tome_report_format_parse(NULL, &f, &err) == 0 && f == TOME_REPORT_MARKDOWN);
    CHECK(tome_report_format_parse("json", &f, &err) == 0 && f == TOME_REPORT_JSON);
    CHECK(tome_report_format_parse("text", &f, &err) == 0 && f == TOME_REPORT_TEXT);
    CHECK(tome_report_format_parse("html", &f, &err) == TOME_EINVAL);
}

int main(void)
{
    alarm(60);
    test_questions();
    test_questions_cr_at_end();
    test_question_errors();
    tome_question_list list;
    tome_error err = {0};
    REQUIRE(tome_questions_parse("## licence\nUnder which licence\nis this released?\n"
                                 "## auth\nWhere are passwords checked?\n",
                                 "q.txt", &list, &err) == 0,
            "%s", err.msg);
    json_t *report = sample_report(&list);
    test_report_json(report);
    test_report_markdown_and_text(report);
    json_decref(report);
    tome_questions_free(&list);
    test_formats();
    return check_finish();
}
