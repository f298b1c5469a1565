/*
 * cmd_mcp.c - `tome mcp`: the daemon's corpora as tools for an AI agent,
 * over the Model Context Protocol's stdio transport.
 *
 * The agent starts `tome mcp` and writes JSON-RPC 2.0 messages to its
 * standard input, one per line; each request gets one answer on standard
 * output, one per line, and notifications get none.  Standard output is
 * the protocol's alone: notes and errors go to standard error.  The
 * methods are initialize, ping, tools/list and tools/call, with five
 * tools that map onto the daemon's API:
 *
 *   list_corpora    {}                                GET /v1/corpora
 *   search          {corpus, query, regex?, limit?}   GET .../search
 *   read_document   {corpus, path, from?, to?, version?}  GET .../document
 *   ask             {corpus, question, max_tokens?, prefill?}  POST .../ask
 *   prefill_status  {corpus}                          GET .../NAME, /v1/jobs
 *
 * Arguments are checked against the tool's input schema (no other
 * properties, the right types and ranges) before anything is sent.  A tool
 * that fails (a bad argument, a corpus without a prefilled state, a daemon
 * that is down) answers a result with isError and a message, not a
 * JSON-RPC error: MCP keeps protocol errors for malformed requests, and the
 * agent should read why its tool call failed.  When the call carries a
 * progressToken, ask sends notifications/progress while the question waits
 * and is answered, and while the prefill it starts (a corpus without a
 * state) runs.  Each call opens its own connection, so a daemon restarted
 * between calls is simply reached again.
 */
#include "config.h"
#include "client/client.h"

#include <stdlib.h>
#include <string.h>

/* The protocol versions this server speaks, newest first. */
static const char *const protocol_versions[] = {"2025-11-25", "2025-06-18"};

/* The longest message read; a longer line is skipped, not held. */
#define MCP_LINE_MAX ((size_t)4 << 20)

/* JSON-RPC 2.0's error codes. */
enum {
    RPC_PARSE = -32700,
    RPC_INVALID = -32600,
    RPC_NO_METHOD = -32601,
    RPC_PARAMS = -32602,
    RPC_INTERNAL = -32603
};

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

/* `message` may quote the agent's bytes (a parse error's), which need not
 * be UTF-8: repaired, or the answer could not be built. */
static void reply_error(json_t *id, int code, const char *message)
{
    char *text = tome_utf8_repair_dup(message, strlen(message), NULL);
    send_message(json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
                           id ? id : json_null(), "error", "code", code, "message",
                           text ? text : "out of memory"));
    free(text);
}

/* A result that could not be built (out of memory) still gets an answer:
 * an agent waits for one per request. */
static void reply(json_t *id, json_t *result)
{
    if (!result) {
        reply_error(id, RPC_INTERNAL, "tome could not build the answer (out of memory?)");
        return;
    }
    send_message(json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result));
}

/* ------------------------------------------------------------------------
 * The tools' schemas, and arguments checked against them
 * ------------------------------------------------------------------------ */

static json_t *string_prop(const char *description)
{
    return json_pack("{s:s, s:s}", "type", "string", "description", description);
}

static json_t *integer_prop(const char *description, int minimum, int maximum)
{
    json_t *p = json_pack("{s:s, s:s, s:i}", "type", "integer", "description", description,
                          "minimum", minimum);
    if (maximum > 0) json_object_set_new(p, "maximum", json_integer(maximum));
    return p;
}

static json_t *boolean_prop(const char *description)
{
    return json_pack("{s:s, s:s}", "type", "boolean", "description", description);
}

/* A tool: its schema takes `props` (stolen) and requires the names in
 * `required` (a NULL-terminated list). */
static json_t *tool(const char *name, const char *description, json_t *props,
                    const char *const *required)
{
    json_t *need = json_array();
    for (; *required; required++) json_array_append_new(need, json_string(*required));
    return json_pack("{s:s, s:s, s:{s:s, s:o, s:o, s:b}}", "name", name, "description", description,
                     "inputSchema", "type", "object", "properties", props, "required", need,
                     "additionalProperties", 0);
}

static json_t *tool_list(void)
{
    static const char *const none[] = {NULL}, *const corpus_only[] = {"corpus", NULL};
    static const char *const search_req[] = {"corpus", "query", NULL};
    static const char *const read_req[] = {"corpus", "path", NULL};
    static const char *const ask_req[] = {"corpus", "question", NULL};
    const char *corpus = "the corpus name (list_corpora names them)";
    json_t *list = json_array();
    json_array_append_new(
        list, tool("list_corpora",
                   "List the corpora (document collections) tome can answer questions about, "
                   "with their sizes and whether each has a prefilled state.",
                   json_object(), none));
    json_array_append_new(
        list, tool("search",
                   "Find lines of a corpus that match a full-text query (SQLite FTS5 syntax) or, "
                   "with regex, a PCRE2 pattern; returns path:line:text lines. Fast, no model.",
                   json_pack("{s:o, s:o, s:o, s:o}", "corpus", string_prop(corpus), "query",
                             string_prop("FTS5 query (parser OR lexer) or PCRE2 pattern"), "regex",
                             boolean_prop("query is a regular expression"), "limit",
                             integer_prop("most lines returned (default 100)", 1, 1000)),
                   search_req));
    json_array_append_new(
        list,
        tool("read_document",
             "Read lines of one document of a corpus's current version (or of an "
             "earlier one), numbered as citations number them (path:line:text), e.g. "
             "to check a citation.",
             json_pack("{s:o, s:o, s:o, s:o, s:o}", "corpus", string_prop(corpus), "path",
                       string_prop("the document's path in the corpus"), "from",
                       integer_prop("first line (default 1)", 1, 0), "to",
                       integer_prop("last line (default: up to 2000 lines on)", 1, 0), "version",
                       integer_prop("the corpus version (default: the current one)", 1, 0)),
             read_req));
    json_array_append_new(
        list, tool("ask",
                   "Ask DeepSeek V4 a question about a whole corpus, which it has read in full; "
                   "returns the answer with its path:line citations checked against the corpus "
                   "and the passages that match the question.",
                   json_pack("{s:o, s:o, s:o, s:o}", "corpus", string_prop(corpus), "question",
                             string_prop("the question"), "max_tokens",
                             integer_prop("most tokens in the answer", 1, 0), "prefill",
                             boolean_prop("prefill the corpus first when it has no state "
                                          "(default true; can take long)")),
                   ask_req));
    json_array_append_new(
        list, tool("prefill_status",
                   "Whether a corpus's current version has a prefilled state (questions need "
                   "one), and its latest prefill job's progress.",
                   json_pack("{s:o}", "corpus", string_prop(corpus)), corpus_only));
    return json_pack("{s:o}", "tools", list);
}

/* Does `v` have the JSON type the schema names? */
static int has_type(json_t *v, const char *type)
{
    if (strcmp(type, "string") == 0) return json_is_string(v);
    if (strcmp(type, "integer") == 0) return json_is_integer(v);
    return strcmp(type, "boolean") == 0 && json_is_boolean(v);
}

/* Check `args` against `schema` (as tool_list writes them); 0, or
 * TOME_EINVAL with a message naming the first problem. */
static int check_args(json_t *schema, json_t *args, tome_error *err)
{
    json_t *props = json_object_get(schema, "properties"), *v, *need;
    const char *key;
    size_t i;
    if (!json_is_object(args))
        return tome_errorf(err, TOME_EINVAL, "the arguments must be an object");
    json_array_foreach(json_object_get(schema, "required"), i, need)
        if (!json_object_get(args, json_string_value(need)))
            return tome_errorf(err, TOME_EINVAL, "'%s' is required", json_string_value(need));
    json_object_foreach(args, key, v) {
        json_t *p = json_object_get(props, key);
        const char *type = json_string_value(json_object_get(p, "type"));
        json_t *lo = json_object_get(p, "minimum"), *hi = json_object_get(p, "maximum");
        if (!p) return tome_errorf(err, TOME_EINVAL, "unknown argument '%s'", key);
        if (!has_type(v, type))
            return tome_errorf(err, TOME_EINVAL, "'%s' must be a %s", key, type);
        if ((lo && json_integer_value(v) < json_integer_value(lo)) ||
            (hi && json_integer_value(v) > json_integer_value(hi)))
            return tome_errorf(err, TOME_EINVAL, "'%s' must be from %lld%s", key,
                               (long long)json_integer_value(lo),
                               hi ? " up to the maximum" : " up");
        if (json_is_string(v) && !*json_string_value(v))
            return tome_errorf(err, TOME_EINVAL, "'%s' must not be empty", key);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * The tools
 * ------------------------------------------------------------------------ */

/* One tools/call: the connection settings, and where progress goes. */
typedef struct mcp_call {
    tome_client *c;
    json_t *progress_token; /* borrowed; NULL when the client asked for none */
    double progress;        /* increases with every notification */
} mcp_call;

static void notify_progress(mcp_call *call, double total, const char *message)
{
    if (!call->progress_token) return;
    json_t *params = json_pack("{s:O, s:f, s:s}", "progressToken", call->progress_token, "progress",
                               ++call->progress, "message", message);
    if (total > 0) json_object_set_new(params, "total", json_real(total));
    send_message(json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", "notifications/progress",
                           "params", params));
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

/* GET "/v1/corpora/" + CORPUS + `after` + escaped `value` (NULL: none). */
static int get_corpus(mcp_call *call, const char *corpus, const char *after, const char *value,
                      json_t **out, tome_error *err)
{
    char *prefix = tome_api_target("/v1/corpora/", corpus, after);
    char *escaped = value ? tome_url_escape(value) : strdup("");
    size_t n = (prefix ? strlen(prefix) : 0) + (escaped ? strlen(escaped) : 0) + 1;
    char *target = prefix && escaped ? malloc(n) : NULL;
    if (target) snprintf(target, n, "%s%s", prefix, escaped);
    free(prefix);
    free(escaped);
    if (!target) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    int rc = tome_api_json(call->c, "GET", target, NULL, out, NULL, err);
    free(target);
    return rc;
}

static json_t *call_list_corpora(mcp_call *call, json_t *args, tome_error *err)
{
    (void)args;
    json_t *out;
    if (tome_api_json(call->c, "GET", "/v1/corpora", NULL, &out, NULL, err) != 0) return NULL;
    size_t i;
    json_t *corpus;
    char *text = strdup("");
    json_array_foreach(json_object_get(out, "corpora"), i, corpus) {
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

/* Lines as grep -n prints them, PATH:LINE:TEXT, from `lines` ({path?,
 * line, text} objects; `path` for those without one) into *out; an
 * answer of tomed's without them is refused. */
static int numbered_text(json_t *lines, const char *path, char **out, tome_error *err)
{
    size_t i, len = 1;
    json_t *m;
    *out = NULL;
    if (lines && !json_is_array(lines))
        return tome_errorf(err, TOME_EFORMAT, "tomed's answer holds lines that are not a list");
    json_array_foreach(lines, i, m) {
        const char *p = json_string_value(json_object_get(m, "path"));
        const char *text = json_string_value(json_object_get(m, "text"));
        if (!(p || path) || !text || !json_is_integer(json_object_get(m, "line")))
            return tome_errorf(err, TOME_EFORMAT,
                               "tomed's answer holds a line without its path, number or text");
        len += strlen(p ? p : path) + strlen(text) + 24;
    }
    char *text = malloc(len);
    if (!text) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    size_t used = 0;
    text[0] = '\0';
    json_array_foreach(lines, i, m) {
        const char *p = json_string_value(json_object_get(m, "path"));
        used += (size_t)snprintf(text + used, len - used, "%s:%lld:%s\n", p ? p : path,
                                 json_integer_value(json_object_get(m, "line")),
                                 json_string_value(json_object_get(m, "text")));
    }
    *out = text;
    return 0;
}

static json_t *call_search(mcp_call *call, json_t *args, tome_error *err)
{
    const char *corpus = json_string_value(json_object_get(args, "corpus"));
    json_int_t limit = json_integer_value(json_object_get(args, "limit"));
    char after[64];
    snprintf(after, sizeof after, "/search?limit=%lld&%s=", (long long)(limit ? limit : 100),
             json_is_true(json_object_get(args, "regex")) ? "regex" : "q");
    json_t *out;
    if (get_corpus(call, corpus, after, json_string_value(json_object_get(args, "query")), &out,
                   err) != 0)
        return NULL;
    char *text;
    if (numbered_text(json_object_get(out, "matches"), "", &text, err) != 0) {
        json_decref(out);
        return NULL;
    }
    json_t *result = tool_result(*text ? text : "no matches\n", out, 0);
    free(text);
    return result;
}

/* The document's text as numbered lines, into *out. */
static int document_lines(json_t *doc, char **out, tome_error *err)
{
    const char *path = json_string_value(json_object_get(doc, "path"));
    const char *p = json_string_value(json_object_get(doc, "text"));
    json_int_t line = json_integer_value(json_object_get(doc, "from"));
    *out = NULL;
    if (!path || !p) return tome_errorf(err, TOME_EFORMAT, "tomed's document has no path or text");
    json_t *lines = json_array();
    while (p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        json_array_append_new(lines, json_pack("{s:I, s:s%}", "line", line++, "text", p, n));
        p = nl ? nl + 1 : NULL;
    }
    int rc = numbered_text(lines, path, out, err);
    json_decref(lines);
    return rc;
}

static json_t *call_read_document(mcp_call *call, json_t *args, tome_error *err)
{
    json_int_t from = json_integer_value(json_object_get(args, "from"));
    json_int_t to = json_integer_value(json_object_get(args, "to"));
    json_int_t version = json_integer_value(json_object_get(args, "version"));
    char after[128];
    int used = snprintf(after, sizeof after, "/document?from=%lld", (long long)(from ? from : 1));
    if (to) used += snprintf(after + used, sizeof after - (size_t)used, "&to=%lld", (long long)to);
    if (version)
        used += snprintf(after + used, sizeof after - (size_t)used, "&version=%lld",
                         (long long)version);
    snprintf(after + used, sizeof after - (size_t)used, "&path=");
    json_t *out;
    if (get_corpus(call, json_string_value(json_object_get(args, "corpus")), after,
                   json_string_value(json_object_get(args, "path")), &out, err) != 0)
        return NULL;
    char *text;
    if (document_lines(out, &text, err) != 0) {
        json_decref(out);
        return NULL;
    }
    json_t *result = tool_result(text, out, 0);
    free(text);
    return result;
}

/* ---- ask, with a prefill first when the corpus needs one ---- */

static int on_prefill_event(void *ctx, const char *event, const char *data, tome_error *err)
{
    mcp_call *call = ctx;
    json_t *job = json_loads(data, 0, NULL);
    if (!job) return tome_errorf(err, TOME_EFORMAT, "bad %s event from tomed", event);
    char message[96];
    json_int_t done = json_integer_value(json_object_get(job, "tokens_done"));
    json_int_t total = json_integer_value(json_object_get(job, "tokens_total"));
    snprintf(message, sizeof message, "prefill: %lld of %lld tokens", (long long)done,
             (long long)total);
    notify_progress(call, 0, message);
    int rc = 0;
    if (strcmp(event, "error") == 0 || strcmp(event, "canceled") == 0) {
        rc = tome_api_error_from_json(json_object_get(job, "error"), 500, err);
        if (rc == 0) rc = tome_errorf(err, TOME_ECANCELED, "the prefill was cancelled");
    }
    json_decref(job);
    return rc;
}

/* Start the corpus's prefill (or join the running one) and follow it. */
static int prefill(mcp_call *call, const char *corpus, tome_error *err)
{
    char *target = tome_api_target("/v1/corpora/", corpus, "/prefill");
    json_t *reply = NULL;
    int rc = target ? tome_api_json(call->c, "POST", target, NULL, &reply, NULL, err)
                    : tome_errorf(err, TOME_ENOMEM, "out of memory");
    free(target);
    const char *id = json_string_value(json_object_get(json_object_get(reply, "job"), "id"));
    target = rc == 0 && id ? tome_api_target("/v1/jobs/", id, "/events") : NULL;
    if (rc == 0 && !target) rc = tome_errorf(err, TOME_EFORMAT, "tomed started no prefill job");
    json_decref(reply);
    notify_progress(call, 0, "prefill: started");
    if (rc == 0) rc = tome_api_events(call->c, "GET", target, NULL, on_prefill_event, call, err);
    free(target);
    return rc;
}

typedef struct answering {
    mcp_call *call;
    long tokens, max_tokens;
} answering;

/* Every 16th piece of the answer is news worth a notification. */
static void on_answer_text(void *ctx, const char *text)
{
    answering *a = ctx;
    (void)text;
    if (a->tokens++ % 16 != 0) return;
    char message[64];
    snprintf(message, sizeof message, "answering: %ld pieces", a->tokens);
    notify_progress(a->call, 0, message);
}

static json_t *call_ask(mcp_call *call, json_t *args, tome_error *err)
{
    const char *corpus = json_string_value(json_object_get(args, "corpus"));
    tome_ask_params q = {.question = json_string_value(json_object_get(args, "question")),
                         .max_tokens = -1};
    json_int_t max_tokens = json_integer_value(json_object_get(args, "max_tokens"));
    if (max_tokens > 0) q.max_tokens = (long)max_tokens;
    answering a = {.call = call};
    json_t *answer;
    notify_progress(call, 0, "question sent; waiting for the model");
    int rc = tome_ask(call->c, corpus, &q, on_answer_text, &a, &answer, err);
    if (rc == TOME_EMISMATCH && strstr(err->msg, "no prefilled state") &&
        !json_is_false(json_object_get(args, "prefill"))) {
        rc = prefill(call, corpus, err);
        notify_progress(call, 0, "question sent again; waiting for the model");
        if (rc == 0) rc = tome_ask(call->c, corpus, &q, on_answer_text, &a, &answer, err);
    }
    if (rc != 0) return NULL;
    if (!json_is_string(json_object_get(answer, "answer"))) {
        json_decref(answer);
        tome_errorf(err, TOME_EFORMAT, "tomed's answer holds no text");
        return NULL;
    }
    json_t *data = json_pack("{s:O, s:O, s:O, s:O}", "answer", json_object_get(answer, "answer"),
                             "finish_reason", json_object_get(answer, "finish_reason"), "citations",
                             json_object_get(answer, "citations"), "sources",
                             json_object_get(answer, "sources"));
    json_t *result = tool_result(json_string_value(json_object_get(answer, "answer")), data, 0);
    json_decref(answer);
    return result;
}

/* The newest prefill job (the highest id) of `corpus` in the daemon's
 * list, or NULL. */
static json_t *latest_job(json_t *jobs, const char *corpus)
{
    json_t *job, *latest = NULL;
    size_t i;
    json_array_foreach(json_object_get(jobs, "jobs"), i, job) {
        const char *name = json_string_value(json_object_get(job, "corpus"));
        const char *id = json_string_value(json_object_get(job, "id"));
        if (name && id && strcmp(name, corpus) == 0 &&
            (!latest || strtoll(id, NULL, 10) >
                            strtoll(json_string_value(json_object_get(latest, "id")), NULL, 10)))
            latest = job;
    }
    return latest;
}

static json_t *call_prefill_status(mcp_call *call, json_t *args, tome_error *err)
{
    const char *corpus = json_string_value(json_object_get(args, "corpus"));
    json_t *shown, *jobs;
    if (get_corpus(call, corpus, "", NULL, &shown, err) != 0) return NULL;
    if (tome_api_json(call->c, "GET", "/v1/jobs", NULL, &jobs, NULL, err) != 0) {
        json_decref(shown);
        return NULL;
    }
    json_t *state = json_object_get(shown, "state"), *job = latest_job(jobs, corpus);
    char text[256];
    int used =
        json_is_object(state)
            ? snprintf(text, sizeof text, "%s version %lld: prefilled, %lld tokens\n", corpus,
                       json_integer_value(json_object_get(shown, "version")),
                       json_integer_value(json_object_get(state, "tokens")))
            : snprintf(text, sizeof text, "%s version %lld: no prefilled state (ask prefills it)\n",
                       corpus, json_integer_value(json_object_get(shown, "version")));
    const char *status = json_string_value(json_object_get(job, "status"));
    if (job)
        snprintf(text + used, sizeof text - (size_t)used,
                 "latest prefill job %s: %s, %lld of %lld tokens\n",
                 json_string_value(json_object_get(job, "id")), status ? status : "unknown",
                 json_integer_value(json_object_get(job, "tokens_done")),
                 json_integer_value(json_object_get(job, "tokens_total")));
    json_t *data = json_pack("{s:s, s:O, s:O, s:O}", "corpus", corpus, "version",
                             json_object_get(shown, "version"), "state", state, "job",
                             job ? job : json_null());
    json_decref(shown);
    json_decref(jobs);
    return tool_result(text, data, 0);
}

typedef json_t *(*tool_fn)(mcp_call *call, json_t *args, tome_error *err);

static const struct {
    const char *name;
    tool_fn call;
} tools[] = {
    {"list_corpora", call_list_corpora},     {"search", call_search},
    {"read_document", call_read_document},   {"ask", call_ask},
    {"prefill_status", call_prefill_status},
};

/* The schema of tool `name` in `list`, or NULL. */
static json_t *schema_of(json_t *list, const char *name)
{
    json_t *t;
    size_t i;
    json_array_foreach(json_object_get(list, "tools"), i, t)
        if (strcmp(json_string_value(json_object_get(t, "name")), name) == 0)
            return json_object_get(t, "inputSchema");
    return NULL;
}

static void tools_call(tome_client *c, json_t *id, json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *args = json_object_get(params, "arguments");
    json_t *list = tool_list();
    mcp_call call = {.c = c,
                     .progress_token =
                         json_object_get(json_object_get(params, "_meta"), "progressToken")};
    for (size_t i = 0; name && i < sizeof tools / sizeof tools[0]; i++) {
        if (strcmp(tools[i].name, name) != 0) continue;
        tome_error err = {0};
        json_t *none = args ? NULL : json_object(), *given = args ? args : none, *result = NULL;
        if (check_args(schema_of(list, name), given, &err) != 0 ||
            !(result = tools[i].call(&call, given, &err)))
            result = tool_result(err.msg[0] ? err.msg : "the tool failed", NULL, 1);
        reply(id, result);
        json_decref(none);
        json_decref(list);
        return;
    }
    json_decref(list);
    reply_error(id, RPC_PARAMS, "no such tool (tools/list names them)");
}

/* ------------------------------------------------------------------------
 * The protocol
 * ------------------------------------------------------------------------ */

/* The client's version when this server speaks it, else the newest this
 * server speaks (the client then decides whether to go on). */
static void initialize(json_t *id, json_t *params)
{
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    const char *version = protocol_versions[0];
    for (size_t i = 0; asked && i < sizeof protocol_versions / sizeof *protocol_versions; i++)
        if (strcmp(asked, protocol_versions[i]) == 0) version = protocol_versions[i];
    reply(id, json_pack("{s:s, s:{s:{}}, s:{s:s, s:s}}", "protocolVersion", version, "capabilities",
                        "tools", "serverInfo", "name", "tome", "version", PACKAGE_VERSION));
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

void tome_mcp_message(tome_client *c, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *msg = json_loadb(line, len, 0, &jerr);
    if (!msg)
        reply_error(NULL, RPC_PARSE, jerr.text);
    else
        handle(c, msg);
    json_decref(msg);
}

/* The next message line of standard input, without its end: 1 when a line
 * was read (*too_long when it was over MCP_LINE_MAX: its bytes are skipped,
 * never held), 0 at the end of input. */
static int next_line(char **line, size_t *cap, size_t *len, int *too_long)
{
    size_t n = 0;
    int ch, any = 0;
    *too_long = 0;
    while ((ch = getc_unlocked(stdin)) != EOF && ch != '\n') {
        any = 1;
        if (n == MCP_LINE_MAX) {
            *too_long = 1;
            continue;
        }
        if (n + 2 > *cap) {
            size_t grown = *cap ? *cap * 2 : 4096;
            char *bigger = realloc(*line, grown);
            if (!bigger) {
                *too_long = 1; /* what cannot be held is refused like a long line */
                continue;
            }
            *line = bigger;
            *cap = grown;
        }
        (*line)[n++] = (char)ch;
    }
    if (ch == EOF && !any) return 0;
    while (n > 0 && (*line)[n - 1] == '\r') n--;
    if (*line) (*line)[n] = '\0';
    *len = n;
    return 1;
}

int tome_cmd_mcp(tome_client *c, const tome_options *opt, tome_error *err)
{
    (void)opt;
    char *line = NULL;
    size_t cap = 0, len;
    int too_long;
    while (next_line(&line, &cap, &len, &too_long)) {
        if (too_long) {
            reply_error(NULL, RPC_INVALID, "message too long");
            continue;
        }
        if (len > 0) tome_mcp_message(c, line, len);
    }
    free(line);
    if (ferror(stdin)) return tome_errorf(err, TOME_EIO, "reading MCP messages from stdin failed");
    return 0;
}
