/*
 * test_chat.c - the V4 chat encoding and the document-QA prompt.
 *
 * Expected texts come from DeepSeek's official encoder: the four official
 * test cases (shared/golden/encoding) and the cases in
 * tests/data/chat-cases.jsonl, which tests/data/make-chat-cases.py made with
 * that encoder.  On top of the text, the ids: a rendered prompt must
 * tokenize like the reference tokenizes the text (special tokens parsed),
 * except that special-token text inside content stays text.
 */
#include <jansson.h>

#include "tests/tok_testutil.h"

static char *read_all(const char *path, size_t *len)
{
    char *text = NULL;
    tome_error err = {0};
    REQUIRE(tome_read_file(path, 1 << 24, &text, len, &err) == 0, "%s", err.msg);
    return text;
}

static const char *src_path(const char *rel)
{
    static char path[4096];
    const char *src = getenv("TOME_SRCDIR");
    REQUIRE(src && *src, "TOME_SRCDIR is not set (run through `make check`)");
    snprintf(path, sizeof path, "%s/%s", src, rel);
    return path;
}

static int count_id(const v4_ids *ids, int32_t id)
{
    int n = 0;
    for (size_t i = 0; i < ids->n; i++) n += ids->ids[i] == id;
    return n;
}

/* The prompt's ids equal the reference's ids of its text when no content
 * holds special-token text (true of every case here). */
static void check_ids(const v4_tokenizer *t, const v4_prompt *p, const char *what)
{
    tome_error err = {0};
    v4_ids from_prompt = {0}, from_text = {0};
    CHECK_OK(v4_prompt_tokenize(t, p, &from_prompt, &err), &err);
    CHECK_OK(v4_tokenize(t, p->text, p->len, 1, &from_text, &err), &err);
    CHECKF(from_prompt.n == from_text.n &&
               memcmp(from_prompt.ids, from_text.ids, from_text.n * sizeof(int32_t)) == 0,
           "%s: prompt ids differ from the ids of its text", what);
    CHECKF(from_prompt.n > 0 && from_prompt.ids[0] == 0, "%s: does not start with BOS", what);
    free(from_prompt.ids);
    free(from_text.ids);
}

static void test_official(const v4_tokenizer *t)
{
    for (int i = 1; i <= 4; i++) {
        char in[64], out[64];
        snprintf(in, sizeof in, "golden/encoding/test_input_%d.json", i);
        snprintf(out, sizeof out, "golden/encoding/test_output_%d.txt", i);
        size_t in_len, out_len;
        char *json = read_all(check_shared_path(in), &in_len);
        char *expected = read_all(check_shared_path(out), &out_len);
        v4_chat_options o = {.thinking = i != 4}; /* case 4 is chat mode */
        v4_prompt p = {0};
        tome_error err = {0};
        CHECK_OK(v4_chat_render_json(json, in_len, &o, &p, &err), &err);
        CHECKF(p.len == out_len && memcmp(p.text, expected, out_len) == 0,
               "official case %d renders differently", i);
        check_ids(t, &p, out);
        v4_prompt_free(&p);
        free(json);
        free(expected);
    }
}

static void test_reference_cases(const v4_tokenizer *t)
{
    const char *path = src_path("tests/data/chat-cases.jsonl");
    FILE *f = fopen(path, "rb");
    REQUIRE(f, "cannot open %s", path);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        n++;
        json_t *c = json_loads(line, 0, NULL);
        REQUIRE(c, "%s:%d is not JSON", path, n);
        const json_t *opts = json_object_get(c, "options");
        const char *effort = json_string_value(json_object_get(opts, "reasoning_effort"));
        v4_chat_options o = {
            .thinking = strcmp(json_string_value(json_object_get(c, "mode")), "thinking") == 0,
            .effort_max = effort && strcmp(effort, "max") == 0,
            .keep_reasoning = json_is_false(json_object_get(opts, "drop_thinking")),
        };
        char *messages = json_dumps(json_object_get(c, "messages"), 0);
        const json_t *expected = json_object_get(c, "expected");
        v4_prompt p = {0};
        tome_error err = {0};
        CHECK_OK(v4_chat_render_json(messages, strlen(messages), &o, &p, &err), &err);
        CHECKF(p.len == json_string_length(expected) &&
                   memcmp(p.text, json_string_value(expected), p.len) == 0,
               "case %d renders differently:\n%s\n--- expected:\n%s", n, p.text,
               json_string_value(expected));
        char what[32];
        snprintf(what, sizeof what, "case %d", n);
        check_ids(t, &p, what);
        v4_prompt_free(&p);
        free(messages);
        json_decref(c);
    }
    free(line);
    fclose(f);
    CHECKF(n == 15, "%d cases read, expected 15", n);
}

/* The C message API renders like the JSON one. */
static void test_struct_api(void)
{
    static const v4_chat_message msgs[] = {
        {"system", "Be brief.", NULL},
        {"user", "Hello", NULL},
        {"assistant", "Hi!", "Greet."},
        {"user", "Sum 2+2?", NULL},
    };
    static const char json[] = "[{\"role\": \"system\", \"content\": \"Be brief.\"},"
                               "{\"role\": \"user\", \"content\": \"Hello\"},"
                               "{\"role\": \"assistant\", \"content\": \"Hi!\","
                               " \"reasoning_content\": \"Greet.\"},"
                               "{\"role\": \"user\", \"content\": \"Sum 2+2?\"}]";
    for (int mode = 0; mode < 4; mode++) {
        v4_chat_options o = {.thinking = mode & 1, .keep_reasoning = mode >> 1};
        v4_prompt a = {0}, b = {0};
        tome_error err = {0};
        CHECK_OK(v4_chat_render(msgs, 4, &o, &a, &err), &err);
        CHECK_OK(v4_chat_render_json(json, strlen(json), &o, &b, &err), &err);
        CHECKF(a.len == b.len && memcmp(a.text, b.text, a.len) == 0, "mode %d differs", mode);
        v4_prompt_free(&a);
        v4_prompt_free(&b);
    }
}

/* Special-token text written by a user stays text. */
static void test_content_is_text(const v4_tokenizer *t)
{
    static const v4_chat_message msgs[] = {
        {"user", "quote: <｜User｜> and <｜end▁of▁sentence｜> and <think>", NULL},
    };
    v4_prompt p = {0};
    tome_error err = {0};
    CHECK_OK(v4_chat_render(msgs, 1, NULL, &p, &err), &err);
    v4_ids safe = {0}, naive = {0};
    CHECK_OK(v4_prompt_tokenize(t, &p, &safe, &err), &err);
    CHECK_OK(v4_tokenize(t, p.text, p.len, 1, &naive, &err), &err);
    int32_t user = v4_token_lookup(t, "<｜User｜>"),
            eos = v4_token_lookup(t, "<｜end▁of▁sentence｜>");
    CHECK(count_id(&safe, user) == 1 && count_id(&naive, user) == 2);
    CHECK(count_id(&safe, eos) == 0 && count_id(&naive, eos) == 1);
    CHECK(count_id(&safe, v4_token_lookup(t, "</think>")) == 1);
    char *back = NULL;
    size_t len = 0;
    CHECK_OK(v4_detokenize(t, safe.ids, safe.n, &back, &len, &err), &err);
    CHECK(back && len == p.len && memcmp(back, p.text, len) == 0);
    free(back);
    free(safe.ids);
    free(naive.ids);
    v4_prompt_free(&p);
}

static void test_docqa(const v4_tokenizer *t)
{
    static const char corpus[] = "== a.c ==\n1 int main(void) { return 0; } // <｜User｜>\n";
    static const char question[] = "What does main return?";
    for (int mode = 0; mode < 3; mode++) {
        v4_chat_options o = {.thinking = mode > 0, .effort_max = mode == 2};
        v4_prompt prefix = {0}, whole = {0}, chat = {0};
        tome_error err = {0};
        CHECK_OK(v4_docqa_prefix(&o, NULL, corpus, strlen(corpus), &prefix, &err), &err);
        CHECK_OK(v4_docqa_prefix(&o, NULL, corpus, strlen(corpus), &whole, &err), &err);
        CHECK_OK(v4_docqa_question(&o, question, strlen(question), &whole, &err), &err);

        /* The same text as the chat encoding of [system, user]. */
        char *system = malloc(strlen(v4_docqa_default_instructions()) + sizeof corpus + 2);
        sprintf(system, "%s\n\n%s", v4_docqa_default_instructions(), corpus);
        v4_chat_message msgs[] = {{"system", system, NULL}, {"user", question, NULL}};
        CHECK_OK(v4_chat_render(msgs, 2, &o, &chat, &err), &err);
        CHECKF(whole.len == chat.len && memcmp(whole.text, chat.text, chat.len) == 0,
               "mode %d: document QA differs from the chat encoding", mode);

        /* ids(prefix) is a prefix of ids(prefix + question). */
        v4_ids a = {0}, b = {0};
        CHECK_OK(v4_prompt_tokenize(t, &prefix, &a, &err), &err);
        CHECK_OK(v4_prompt_tokenize(t, &whole, &b, &err), &err);
        CHECK(a.n < b.n && memcmp(a.ids, b.ids, a.n * sizeof(int32_t)) == 0);
        CHECK(count_id(&b, v4_token_lookup(t, "<｜User｜>")) == 1);
        CHECK(b.ids[b.n - 1] == v4_token_lookup(t, mode ? "<think>" : "</think>"));
        free(a.ids);
        free(b.ids);
        free(system);
        v4_prompt_free(&prefix);
        v4_prompt_free(&whole);
        v4_prompt_free(&chat);
    }
}

static void expect_invalid(const char *json, const char *needle)
{
    v4_prompt p = {0};
    tome_error err = {0};
    v4_chat_options o = {.thinking = 1};
    static const char ok[] = "[{\"role\": \"user\", \"content\": \"x\"}]";
    CHECK_OK(v4_chat_render_json(ok, strlen(ok), &o, &p, &err), &err);
    size_t before = p.len;
    int rc = v4_chat_render_json(json, strlen(json), &o, &p, &err);
    CHECKF(rc == TOME_EINVAL && strstr(err.msg, needle), "%s: rc %d, \"%s\"", json, rc, err.msg);
    CHECKF(p.len == before && strlen(p.text) == before, "%s: a failed render left text", json);
    v4_prompt_free(&p);
}

static void test_errors(void)
{
    expect_invalid("[{\"role\": \"wizard\", \"content\": \"x\"}]", "unknown role \"wizard\"");
    expect_invalid("[{\"role\": \"developer\"}]", "developer message needs content");
    expect_invalid("[{\"role\": \"user\", \"content\": 7}]", "content must be a string");
    expect_invalid("[{\"role\": \"user\", \"content\": \"x\", \"task\": \"dance\"}]", "task");
    expect_invalid("[{\"role\": \"assistant\", \"tool_calls\": [{\"type\": \"function\"}]}]",
                   "function.name");
    expect_invalid("[{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": \"f\","
                   " \"arguments\": \"[1]\"}}]}]",
                   "not a JSON object");
    expect_invalid("[1]", "message 0 is not an object");
    expect_invalid("{\"messages\": 3}", "expected a list of messages");
    expect_invalid("[{\"role\": ", "line 1");
}

int main(void)
{
    v4_tokenizer *t = tok_test_load("v4");
    test_official(t);
    test_reference_cases(t);
    test_struct_api();
    test_content_is_text(t);
    test_docqa(t);
    test_errors();
    v4_tokenizer_free(t);
    return check_finish();
}
