/*
 * cmd_mcp.c - `tome mcp`: the daemon's corpora as tools for an AI agent,
 * over the Model Context Protocol's stdio transport.
 *
 * The agent starts `tome mcp` and writes JSON-RPC 2.0 messages to its
 * standard input, one per line; each request gets one answer on standard
 * output, one per line, and notifications get none.  Standard output is
 * the protocol's alone: notes and errors go to standard error.  The
 * methods are initialize, ping, tools/list and tools/call, with three
 * tools that map onto the daemon's API:
 *
 *   list_corpora  {}                            GET /v1/corpora
 *   search        {corpus, query, limit?}       GET .../search (FTS5)
 *   ask           {corpus, question, max_tokens?}  POST .../ask
 *
 * A tool that fails (a corpus without a prefilled state, a daemon that is
 * down) answers a result with isError and the daemon's message, not a
 * JSON-RPC error: MCP keeps protocol errors for malformed calls, and the
 * agent should read why its tool call failed.  Each call opens its own
 * connection, so a daemon restarted between calls is simply reached again.
 */
#include "config.h"
#include "client/client.h"

#include <stdlib.h>
#include <string.h>

#define MCP_PROTOCOL_VERSION "2025-06-18"
#define MCP_LINE_MAX         (4u << 20)

/* JSON-RPC 2.0's error codes. */
enum { RPC_PARSE = -32700, RPC_INVALID = -32600, RPC_NO_METHOD = -32601, RPC_PARAMS = -32602 };

static void send_message(json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text) return;
    fputs(text, stdout);
    putchar('\n');
    fflush(stdout);
    free(text);
}

static void reply(json_t *id, json_t *result)
{
    send_message(json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result));
}

static void reply_error(json_t *id, int code, const char *message)
{
    send_message(json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
                           id ? id : json_null(), "error", "code", code, "message", message));
}

/* ------------------------------------------------------------------------
 * The tools
 * ------------------------------------------------------------------------ */

static json_t *tool_list(void)
{
    json_t *corpus = json_pack("{s:s, s:s}", "type", "string", "description", "the corpus name");
    json_t *list = json_pack(
        "{s:[{s:s, s:s, s:{s:s, s:{}}},"
        "   {s:s, s:s, s:{s:s, s:{s:O, s:{s:s, s:s}, s:{s:s, s:i, s:i}}, s:[s, s]}},"
        "   {s:s, s:s, s:{s:s, s:{s:O, s:{s:s, s:s}, s:{s:s, s:i}}, s:[s, s]}}]}",
        "tools", "name", "list_corpora", "description",
        "List the corpora (document collections) tome can answer questions about, with their "
        "sizes and whether each has a prefilled state.",
        "inputSchema", "type", "object", "properties",
        /* search */
        "name", "search", "description",
        "Find lines of a corpus that match a full-text query (SQLite FTS5 syntax); returns "
        "path:line:text lines. Fast, no model involved.",
        "inputSchema", "type", "object", "properties", "corpus", corpus, "query", "type", "string",
        "description", "FTS5 query, e.g. parser OR lexer", "limit", "type", "integer", "minimum", 1,
        "maximum", 1000, "required", "corpus", "query",
        /* ask */
        "name", "ask", "description",
        "Ask DeepSeek V4 a question about a whole corpus, which it has read in full; returns the "
        "answer with its path:line citations checked against the corpus and matching passages.",
        "inputSchema", "type", "object", "properties", "corpus", corpus, "question", "type",
        "string", "description", "the question", "max_tokens", "type", "integer", "minimum", 1,
        "required", "corpus", "question");
    json_decref(corpus);
    return list;
}

/* A tool result: `text` for the agent, `data` (stolen, may be NULL) as
 * structured content, which MCP asks to repeat as JSON text for clients
 * that do not read structured content. */
static json_t *tool_result(const char *text, json_t *data, int is_error)
{
    json_t *result = json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text", text,
                               "isError", is_error);
    char *json = data ? json_dumps(data, JSON_COMPACT) : NULL;
    if (json)
        json_array_append_new(json_object_get(result, "content"),
                              json_pack("{s:s, s:s}", "type", "text", "text", json));
    free(json);
    if (data) json_object_set_new(result, "structuredContent", data);
    return result;
}

static json_t *call_list_corpora(tome_client *c, json_t *args, tome_error *err)
{
    (void)args;
    json_t *out;
    if (tome_api_json(c, "GET", "/v1/corpora", NULL, &out, NULL, err) != 0) return NULL;
    size_t i;
    json_t *corpus;
    char *text = strdup("");
    json_array_foreach(json_object_get(out, "corpora"), i, corpus)
    {
        const char *name = json_string_value(json_object_get(corpus, "name"));
        size_t len = strlen(text) + strlen(name ? name : "") + 2;
        char *grown = text ? realloc(text, len) : NULL;
        if (!grown) break;
        text = grown;
        strcat(strcat(text, name ? name : ""), "\n");
    }
    json_t *result = tool_result(text && *text ? text : "(no corpora)\n", out, 0);
    free(text);
    return result;
}

/* The search's matches as grep -n lines. */
static char *matches_text(json_t *reply)
{
    size_t i, len = 1;
    json_t *m;
    json_t *matches = json_object_get(reply, "matches");
    json_array_foreach(matches, i, m) len += strlen(json_string_value(json_object_get(m, "path"))) +
                                             strlen(json_string_value(json_object_get(m, "text"))) +
                                             24;
    char *text = malloc(len);
    if (!text) return NULL;
    size_t used = 0;
    text[0] = '\0';
    json_array_foreach(matches, i, m) used += (size_t)snprintf(
        text + used, len - used, "%s:%lld:%s\n", json_string_value(json_object_get(m, "path")),
        json_integer_value(json_object_get(m, "line")),
        json_string_value(json_object_get(m, "text")));
    return text;
}

static json_t *call_search(tome_client *c, json_t *args, tome_error *err)
{
    const char *corpus = json_string_value(json_object_get(args, "corpus"));
    const char *query = json_string_value(json_object_get(args, "query"));
    if (!corpus || !query) return tool_result("corpus and query are required strings", NULL, 1);
    json_int_t limit = json_integer_value(json_object_get(args, "limit"));
    char *prefix = tome_api_target("/v1/corpora/", corpus, "/search?q=");
    char *escaped = tome_url_escape(query);
    size_t n = (prefix ? strlen(prefix) : 0) + (escaped ? strlen(escaped) : 0) + 32;
    char *target = prefix && escaped ? malloc(n) : NULL;
    if (target) {
        int used = snprintf(target, n, "%s%s", prefix, escaped);
        if (limit > 0) snprintf(target + used, n - (size_t)used, "&limit=%lld", (long long)limit);
    }
    free(prefix);
    free(escaped);
    if (!target) {
        tome_errorf(err, TOME_ENOMEM, "out of memory");
        return NULL;
    }
    json_t *out;
    int rc = tome_api_json(c, "GET", target, NULL, &out, NULL, err);
    free(target);
    if (rc != 0) return NULL;
    char *text = matches_text(out);
    json_t *result = tool_result(text && *text ? text : "no matches\n", out, 0);
    free(text);
    return result;
}

static json_t *call_ask(tome_client *c, json_t *args, tome_error *err)
{
    const char *corpus = json_string_value(json_object_get(args, "corpus"));
    const char *question = json_string_value(json_object_get(args, "question"));
    if (!corpus || !question)
        return tool_result("corpus and question are required strings", NULL, 1);
    tome_ask_params q = {.question = question, .max_tokens = -1};
    json_int_t max_tokens = json_integer_value(json_object_get(args, "max_tokens"));
    if (max_tokens > 0) q.max_tokens = (long)max_tokens;
    json_t *answer;
    if (tome_ask(c, corpus, &q, NULL, NULL, &answer, err) != 0) return NULL;
    json_t *data = json_pack("{s:O, s:O, s:O, s:O}", "answer", json_object_get(answer, "answer"),
                             "finish_reason", json_object_get(answer, "finish_reason"), "citations",
                             json_object_get(answer, "citations"), "sources",
                             json_object_get(answer, "sources"));
    json_t *result = tool_result(json_string_value(json_object_get(answer, "answer")), data, 0);
    json_decref(answer);
    return result;
}

typedef json_t *(*tool_fn)(tome_client *c, json_t *args, tome_error *err);

static const struct {
    const char *name;
    tool_fn call;
} tools[] = {
    {"list_corpora", call_list_corpora},
    {"search", call_search},
    {"ask", call_ask},
};

static void tools_call(tome_client *c, json_t *id, json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *args = json_object_get(params, "arguments");
    for (size_t i = 0; name && i < sizeof tools / sizeof tools[0]; i++) {
        if (strcmp(tools[i].name, name) != 0) continue;
        tome_error err = {0};
        json_t *result = tools[i].call(c, args ? args : json_object(), &err);
        if (!result) result = tool_result(err.msg, NULL, 1);
        reply(id, result);
        return;
    }
    reply_error(id, RPC_PARAMS, "no such tool (tools/list names them)");
}

/* ------------------------------------------------------------------------
 * The protocol
 * ------------------------------------------------------------------------ */

static void initialize(json_t *id, json_t *params)
{
    /* Agree to the client's version; this server uses nothing newer. */
    const char *version = json_string_value(json_object_get(params, "protocolVersion"));
    reply(id, json_pack("{s:s, s:{s:{}}, s:{s:s, s:s}}", "protocolVersion",
                        version ? version : MCP_PROTOCOL_VERSION, "capabilities", "tools",
                        "serverInfo", "name", "tome", "version", PACKAGE_VERSION));
}

static void handle(tome_client *c, json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    const char *method = json_string_value(json_object_get(msg, "method"));
    if (!json_is_object(msg) || !method) {
        /* A response from the client (it sends none we need) is ignored. */
        if (json_is_object(msg) &&
            (json_object_get(msg, "result") || json_object_get(msg, "error")))
            return;
        reply_error(id, RPC_INVALID, "not a JSON-RPC 2.0 request");
        return;
    }
    if (!id) return; /* notifications (initialized, cancelled) need no answer */
    json_t *params = json_object_get(msg, "params");
    if (strcmp(method, "initialize") == 0)
        initialize(id, params);
    else if (strcmp(method, "ping") == 0)
        reply(id, json_object());
    else if (strcmp(method, "tools/list") == 0)
        reply(id, tool_list());
    else if (strcmp(method, "tools/call") == 0)
        tools_call(c, id, params);
    else
        reply_error(id, RPC_NO_METHOD, "method not supported by tome");
}

int tome_cmd_mcp(tome_client *c, const tome_options *opt, tome_error *err)
{
    (void)opt;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        if ((size_t)len > MCP_LINE_MAX) {
            reply_error(NULL, RPC_INVALID, "message too long");
            continue;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        json_error_t jerr;
        json_t *msg = json_loadb(line, (size_t)len, 0, &jerr);
        if (!msg)
            reply_error(NULL, RPC_PARSE, jerr.text);
        else
            handle(c, msg);
        json_decref(msg);
    }
    free(line);
    if (ferror(stdin)) return tome_errorf(err, TOME_EIO, "reading MCP messages from stdin failed");
    return 0;
}
