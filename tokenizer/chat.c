/*
 * chat.c - the DeepSeek V4 chat encoding: a message list to prompt text.
 *
 * V4 has no Jinja template; the source of truth is the official Python
 * encoder (encoding_dsv4.py) and its four test cases, which this file
 * reproduces byte for byte (shared/docs/V4-CHAT-ENCODING.md describes the
 * format).  It runs the same stages in the same order, because the stages
 * interact (dropping a message changes which index is "the last user
 * message"): stages 1 to 3 (merge, sort, drop) reshape the message list
 * (chat_messages.c); this file owns stage 4, which renders each message
 * and then the transition to what follows (the assistant opener with
 * <think> or </think>, or a task token), with the tools block and the DSML
 * tool calls, and the entry points.
 *
 * Messages are jansson values throughout, since tools, schemas and tool
 * arguments are free-form JSON that is re-serialized the way Python does
 * (pyjson.c).  Where the Python code would crash on a malformed
 * message (a tool call without a function, a non-string content), this
 * returns TOME_EINVAL naming the message; a null content is rendered as
 * empty text.
 */
#include <string.h>

#include "tokenizer/chat_internal.h"

#define DSML "｜DSML｜"

const char v4_effort_max_text[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n";

static const char tools_head[] =
    "## Tools\n\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools "
    "by writing a \"<" DSML "tool_calls>\" block like the following:\n\n"
    "<" DSML "tool_calls>\n"
    "<" DSML "invoke name=\"$TOOL_NAME\">\n"
    "<" DSML "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" DSML
    "parameter>\n"
    "...\n"
    "</" DSML "invoke>\n"
    "<" DSML "invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</" DSML "invoke>\n"
    "</" DSML "tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types "
    "(numbers, booleans, arrays, objects), pass the value in JSON format and set "
    "`string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by " V4_THINK "), you MUST output your complete "
    "reasoning inside " V4_THINK "..." V4_THINK_END " BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after " V4_THINK_END " with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n";

static const char tools_tail[] = "\n\nYou MUST strictly follow the above defined tool name and "
                                 "parameter schemas to invoke tool calls.\n";

static const char response_format_head[] =
    "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

static const struct {
    const char *name, *token;
} tasks[] = {
    {"action", "<｜action｜>"}, {"query", "<｜query｜>"}, {"authority", "<｜authority｜>"},
    {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"}, {"read_url", "<｜read_url｜>"},
};

typedef struct renderer {
    json_t *msgs; /* after merge, sort and drop */
    const v4_chat_options *o;
    int drop;       /* drop_thinking in effect */
    long last_user; /* index of the last user/developer message, or -1 */
    v4_prompt *out;
    tome_error *err;
} renderer;

/* Append the text field `key` of message `index`, as content; a missing or
 * null field is empty. */
static int put_field(renderer *r, const json_t *m, const char *key, size_t index)
{
    const json_t *v = json_object_get(m, key);
    if (!v || json_is_null(v) || json_is_false(v)) return 0;
    if (!json_is_string(v))
        return tome_errorf(r->err, TOME_EINVAL, "message %zu: \"%s\" must be a string", index, key);
    return chat_put_content(r->out, json_string_value(v), json_string_length(v), r->err);
}

/* ---- Stage 4: rendering ------------------------------------------------- */

static int put_tools(renderer *r, const json_t *tools, size_t index)
{
    int rc = chat_template(r->out, "\n\n", r->err);
    if (rc == 0) rc = chat_template(r->out, tools_head, r->err);
    size_t i;
    const json_t *tool;
    json_array_foreach(tools, i, tool) {
        const json_t *function = json_object_get(tool, "function");
        if (rc == 0 && !function)
            rc = tome_errorf(r->err, TOME_EINVAL, "message %zu: tool %zu has no \"function\"",
                             index, i);
        if (rc == 0 && i > 0) rc = chat_template(r->out, "\n", r->err);
        if (rc == 0) rc = chat_put_pyjson(r->out, function, r->err);
    }
    return rc ? rc : chat_template(r->out, tools_tail, r->err);
}

/* The tools block and the response format of a system/developer message. */
static int put_attachments(renderer *r, const json_t *m, size_t index)
{
    const json_t *tools = json_object_get(m, "tools");
    const json_t *format = json_object_get(m, "response_format");
    int rc = 0;
    if (chat_truthy(tools)) {
        if (!json_is_array(tools))
            return tome_errorf(r->err, TOME_EINVAL, "message %zu: \"tools\" is not a list", index);
        rc = put_tools(r, tools, index);
    }
    if (rc == 0 && chat_truthy(format)) {
        rc = chat_template(r->out, response_format_head, r->err);
        if (rc == 0) rc = chat_put_pyjson(r->out, format, r->err);
    }
    return rc;
}

static int put_block_text(renderer *r, const json_t *v, size_t index)
{
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v))
        return tome_errorf(r->err, TOME_EINVAL, "message %zu: content must be a string", index);
    return chat_put_content(r->out, json_string_value(v), json_string_length(v), r->err);
}

/* A tool result's content: text, or a list of parts joined by blank lines. */
static int put_tool_content(renderer *r, const json_t *content, size_t index)
{
    if (!json_is_array(content)) return put_block_text(r, content, index);
    size_t i;
    const json_t *part;
    int rc = 0;
    json_array_foreach(content, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        if (rc == 0 && i > 0) rc = chat_content(r->out, "\n\n", r->err);
        if (rc == 0 && type && strcmp(type, "text") == 0) {
            rc = put_block_text(r, json_object_get(part, "text"), index);
        } else if (rc == 0) {
            rc = chat_content(r->out, "[Unsupported ", r->err);
            if (rc == 0) rc = chat_content(r->out, type ? type : "None", r->err);
            if (rc == 0) rc = chat_content(r->out, "]", r->err);
        }
    }
    return rc;
}

static int put_user(renderer *r, const json_t *m, size_t index)
{
    int rc = chat_template(r->out, V4_USER, r->err);
    const json_t *blocks = json_object_get(m, "content_blocks");
    if (!chat_truthy(blocks)) return rc ? rc : put_field(r, m, "content", index);
    size_t i;
    const json_t *b;
    json_array_foreach(blocks, i, b) {
        const char *type = json_string_value(json_object_get(b, "type"));
        if (rc == 0 && i > 0) rc = chat_content(r->out, "\n\n", r->err);
        if (rc) break;
        if (type && strcmp(type, "text") == 0) {
            rc = put_block_text(r, json_object_get(b, "text"), index);
        } else if (type && strcmp(type, "tool_result") == 0) {
            rc = chat_content(r->out, "<tool_result>", r->err);
            if (rc == 0) rc = put_tool_content(r, json_object_get(b, "content"), index);
            if (rc == 0) rc = chat_content(r->out, "</tool_result>", r->err);
        } else {
            rc = chat_content(r->out, "[Unsupported ", r->err);
            if (rc == 0) rc = chat_content(r->out, type ? type : "None", r->err);
            if (rc == 0) rc = chat_content(r->out, "]", r->err);
        }
    }
    return rc;
}

/* One DSML parameter: strings raw, anything else as Python JSON. */
static int put_parameter(renderer *r, const char *key, size_t key_len, const json_t *value)
{
    int rc = chat_template(r->out, "<" DSML "parameter name=\"", r->err);
    if (rc == 0) rc = chat_put_content(r->out, key, key_len, r->err);
    if (rc == 0)
        rc = chat_template(
            r->out, json_is_string(value) ? "\" string=\"true\">" : "\" string=\"false\">", r->err);
    if (rc == 0 && json_is_string(value))
        rc = chat_put_content(r->out, json_string_value(value), json_string_length(value), r->err);
    else if (rc == 0)
        rc = chat_put_pyjson(r->out, value, r->err);
    return rc ? rc : chat_template(r->out, "</" DSML "parameter>", r->err);
}

/* The parameters of a call: its "arguments" JSON object in key order; text
 * that is not JSON (or not a string at all) becomes one parameter named
 * "arguments", as the reference does. */
static int put_arguments(renderer *r, const json_t *arguments, size_t index)
{
    json_t *parsed = NULL;
    if (json_is_string(arguments))
        parsed = json_loadb(json_string_value(arguments), json_string_length(arguments),
                            JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!parsed) return put_parameter(r, "arguments", strlen("arguments"), arguments);
    if (!json_is_object(parsed)) {
        json_decref(parsed);
        return tome_errorf(r->err, TOME_EINVAL,
                           "message %zu: tool call arguments are not a "
                           "JSON object",
                           index);
    }
    const char *key;
    size_t key_len;
    json_t *value;
    int rc = 0, first = 1;
    json_object_keylen_foreach(parsed, key, key_len, value)
    {
        if (rc == 0 && !first) rc = chat_template(r->out, "\n", r->err);
        if (rc == 0) rc = put_parameter(r, key, key_len, value);
        first = 0;
    }
    json_decref(parsed);
    return rc;
}

static int put_tool_calls(renderer *r, const json_t *calls, size_t index)
{
    int rc = chat_template(r->out, "\n\n<" DSML "tool_calls>\n", r->err);
    size_t i;
    const json_t *tc;
    json_array_foreach(calls, i, tc) {
        const json_t *function = json_object_get(tc, "function");
        const json_t *name = json_object_get(function, "name");
        const json_t *arguments = json_object_get(function, "arguments");
        if (rc == 0 && (!json_is_string(name) || !arguments))
            rc = tome_errorf(r->err, TOME_EINVAL,
                             "message %zu: tool call %zu lacks "
                             "function.name or function.arguments",
                             index, i);
        if (rc == 0 && i > 0) rc = chat_template(r->out, "\n", r->err);
        if (rc == 0) rc = chat_template(r->out, "<" DSML "invoke name=\"", r->err);
        if (rc == 0)
            rc =
                chat_put_content(r->out, json_string_value(name), json_string_length(name), r->err);
        if (rc == 0) rc = chat_template(r->out, "\">\n", r->err);
        if (rc == 0) rc = put_arguments(r, arguments, index);
        if (rc == 0) rc = chat_template(r->out, "\n</" DSML "invoke>", r->err);
    }
    return rc ? rc : chat_template(r->out, "\n</" DSML "tool_calls>", r->err);
}

static int put_assistant(renderer *r, const json_t *m, size_t index)
{
    const json_t *prev = index > 0 ? json_array_get(r->msgs, index - 1) : NULL;
    int rc = 0;
    if (r->o->thinking && !(prev && chat_is_set(prev, "task")) &&
        (!r->drop || (long)index > r->last_user)) {
        rc = put_field(r, m, "reasoning_content", index);
        if (rc == 0) rc = chat_template(r->out, V4_THINK_END, r->err);
    }
    if (rc == 0) rc = put_field(r, m, "content", index);
    const json_t *calls = json_object_get(m, "tool_calls");
    if (rc == 0 && chat_truthy(calls)) {
        if (!json_is_array(calls))
            return tome_errorf(r->err, TOME_EINVAL,
                               "message %zu: \"tool_calls\" is not a "
                               "list",
                               index);
        rc = put_tool_calls(r, calls, index);
    }
    if (rc == 0 && !chat_truthy(json_object_get(m, "wo_eos")))
        rc = chat_template(r->out, V4_EOS, r->err);
    return rc;
}

static int put_body(renderer *r, const json_t *m, size_t index)
{
    int rc;
    if (chat_has_role(m, "system")) {
        rc = put_field(r, m, "content", index);
        return rc ? rc : put_attachments(r, m, index);
    }
    if (chat_has_role(m, "developer")) {
        if (!chat_truthy(json_object_get(m, "content")))
            return tome_errorf(r->err, TOME_EINVAL,
                               "message %zu: a developer message needs "
                               "content",
                               index);
        rc = chat_template(r->out, V4_USER, r->err);
        if (rc == 0) rc = put_field(r, m, "content", index);
        return rc ? rc : put_attachments(r, m, index);
    }
    if (chat_has_role(m, "user")) return put_user(r, m, index);
    if (chat_has_role(m, "latest_reminder")) {
        rc = chat_template(r->out, "<｜latest_reminder｜>", r->err);
        return rc ? rc : put_field(r, m, "content", index);
    }
    if (chat_has_role(m, "assistant")) return put_assistant(r, m, index);
    return tome_errorf(r->err, TOME_EINVAL, "message %zu: unknown role \"%s\"", index,
                       chat_role_of(m));
}

/* What follows message `index`: nothing if the next message starts a turn
 * of its own, else a task token or the assistant opener. */
static int put_transition(renderer *r, const json_t *m, size_t index)
{
    const json_t *next = json_array_get(r->msgs, index + 1);
    if (next && !chat_has_role(next, "assistant") && !chat_has_role(next, "latest_reminder"))
        return 0;
    const char *opener = V4_THINK_END;
    if (r->o->thinking && (!r->drop || (long)index >= r->last_user)) opener = V4_THINK;
    if (chat_is_set(m, "task")) {
        const char *task = json_string_value(json_object_get(m, "task"));
        for (size_t i = 0; task && i < sizeof tasks / sizeof tasks[0]; i++) {
            if (strcmp(task, tasks[i].name) != 0) continue;
            if (strcmp(task, "action") != 0) return chat_template(r->out, tasks[i].token, r->err);
            int rc = chat_template(r->out, V4_ASSISTANT, r->err);
            if (rc == 0)
                rc = chat_template(r->out, r->o->thinking ? V4_THINK : V4_THINK_END, r->err);
            return rc ? rc : chat_template(r->out, tasks[i].token, r->err);
        }
        return tome_errorf(r->err, TOME_EINVAL, "message %zu: invalid task", index);
    }
    if (!chat_has_role(m, "user") && !chat_has_role(m, "developer")) return 0;
    int rc = chat_template(r->out, V4_ASSISTANT, r->err);
    return rc ? rc : chat_template(r->out, opener, r->err);
}

static int render_all(renderer *r)
{
    int rc = r->o->omit_bos ? 0 : chat_template(r->out, V4_BOS, r->err);
    size_t i;
    const json_t *m;
    json_array_foreach(r->msgs, i, m) {
        if (rc == 0 && i == 0 && r->o->thinking && r->o->effort_max)
            rc = chat_template(r->out, v4_effort_max_text, r->err);
        if (rc == 0) rc = put_body(r, m, i);
        if (rc == 0) rc = put_transition(r, m, i);
    }
    return rc;
}

static int render_messages(const json_t *messages, const v4_chat_options *o, v4_prompt *out,
                           tome_error *err)
{
    static const v4_chat_options defaults = {0};
    renderer r = {.o = o ? o : &defaults, .out = out, .err = err};
    int rc = chat_prepare(messages, r.o, &r.msgs, &r.drop, err);
    if (rc) return rc;
    r.last_user = chat_last_user(r.msgs);
    size_t len = out->len, n_spans = out->n_spans;
    rc = render_all(&r);
    json_decref(r.msgs);
    if (rc && out->text) {
        out->len = len;
        out->n_spans = n_spans;
        out->text[len] = '\0';
    }
    return rc;
}

int v4_chat_render_json(const char *json, size_t len, const v4_chat_options *opts, v4_prompt *out,
                        tome_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &jerr);
    if (!root) return tome_errorf(err, TOME_EINVAL, "line %d: %s", jerr.line, jerr.text);
    json_t *messages = root;
    if (json_is_object(root)) {
        messages = json_object_get(root, "messages");
        json_t *tools = json_object_get(root, "tools");
        json_t *first = json_array_get(messages, 0);
        if (tools && json_is_object(first)) json_object_set(first, "tools", tools);
    }
    int rc = json_is_array(messages) ? render_messages(messages, opts, out, err)
                                     : tome_errorf(err, TOME_EINVAL,
                                                   "expected a list of messages or an object "
                                                   "with \"messages\"");
    json_decref(root);
    return rc;
}

int v4_chat_render(const v4_chat_message *msgs, size_t n, const v4_chat_options *opts,
                   v4_prompt *out, tome_error *err)
{
    json_t *messages = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_object();
        if (!msgs[i].role) {
            json_decref(m);
            json_decref(messages);
            return tome_errorf(err, TOME_EINVAL, "message %zu has no role", i);
        }
        /* Unchecked: content that is not valid UTF-8 is rendered as it is. */
        json_object_set_new(m, "role", json_string_nocheck(msgs[i].role));
        if (msgs[i].content)
            json_object_set_new(m, "content", json_string_nocheck(msgs[i].content));
        if (msgs[i].reasoning)
            json_object_set_new(m, "reasoning_content", json_string_nocheck(msgs[i].reasoning));
        json_array_append_new(messages, m);
    }
    int rc = render_messages(messages, opts, out, err);
    json_decref(messages);
    return rc;
}
