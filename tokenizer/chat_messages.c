/*
 * chat_messages.c - the message list as the V4 encoder reshapes it before
 * rendering (stages 1 to 3 of chat.c), and the Python-style reading of a
 * message that the reshaping and the rendering share.
 *
 *   1. merge: tool results become <tool_result> blocks of a user turn, and
 *      consecutive user messages merge into one turn;
 *   2. sort: results in one turn follow the order of the calls that the
 *      preceding assistant message made;
 *   3. drop (thinking mode, no tools anywhere): assistant turns before the
 *      last user message lose their reasoning, developer messages before
 *      it disappear.
 *
 * The stages work on copies: the caller's messages are never changed.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/chat_internal.h"

/* ---- Python-style access to messages ------------------------------------ */

int chat_truthy(const json_t *v)
{
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_OBJECT:
        return json_object_size(v) > 0;
    case JSON_ARRAY:
        return json_array_size(v) > 0;
    case JSON_STRING:
        return json_string_length(v) > 0;
    case JSON_INTEGER:
        return json_integer_value(v) != 0;
    case JSON_REAL:
        return json_real_value(v) != 0;
    case JSON_TRUE:
        return 1;
    default:
        return 0;
    }
}

const char *chat_role_of(const json_t *m)
{
    const char *r = json_string_value(json_object_get(m, "role"));
    return r ? r : "";
}

int chat_has_role(const json_t *m, const char *role)
{
    return strcmp(chat_role_of(m), role) == 0;
}

/* `key` is present and not null (Python's `m.get(key) is not None`). */
int chat_is_set(const json_t *m, const char *key)
{
    const json_t *v = json_object_get(m, key);
    return v && !json_is_null(v);
}

long chat_last_user(const json_t *msgs)
{
    for (size_t i = json_array_size(msgs); i-- > 0;) {
        const json_t *m = json_array_get(msgs, i);
        if (chat_has_role(m, "user") || chat_has_role(m, "developer")) return (long)i;
    }
    return -1;
}

/* ---- Stage 1: merge tool results and user messages ----------------------- */

/* m[key] if present (even null), else an empty string; a new reference. */
static json_t *get_or_empty(const json_t *m, const char *key)
{
    json_t *v = json_object_get(m, key);
    return v ? json_incref(v) : json_string("");
}

static json_t *new_user_turn(const json_t *first_block)
{
    json_t *turn = json_object();
    json_t *blocks = json_array();
    json_array_append(blocks, (json_t *)first_block);
    json_object_set_new(turn, "role", json_string("user"));
    json_object_set_new(turn, "content_blocks", blocks);
    return turn;
}

static int merge_messages(const json_t *in, json_t *merged, tome_error *err)
{
    size_t i;
    const json_t *m;
    json_array_foreach(in, i, m) {
        if (!json_is_object(m))
            return tome_errorf(err, TOME_EINVAL, "message %zu is not an object", i);
        size_t n = json_array_size(merged);
        json_t *last = n ? json_array_get(merged, n - 1) : NULL;
        json_t *last_blocks =
            last && chat_has_role(last, "user") ? json_object_get(last, "content_blocks") : NULL;
        if (chat_has_role(m, "tool")) {
            json_t *block =
                json_pack("{s:s, s:o, s:o}", "type", "tool_result", "tool_use_id",
                          get_or_empty(m, "tool_call_id"), "content", get_or_empty(m, "content"));
            if (last_blocks)
                json_array_append(last_blocks, block);
            else
                json_array_append_new(merged, new_user_turn(block));
            json_decref(block);
        } else if (chat_has_role(m, "user")) {
            json_t *block =
                json_pack("{s:s, s:o}", "type", "text", "text", get_or_empty(m, "content"));
            if (last_blocks && !chat_is_set(last, "task")) {
                json_array_append(last_blocks, block);
            } else {
                json_t *turn = new_user_turn(block);
                json_object_set_new(turn, "content", get_or_empty(m, "content"));
                static const char *const kept[] = {"task", "wo_eos", "mask"};
                for (size_t k = 0; k < 3; k++)
                    if (json_object_get(m, kept[k]))
                        json_object_set(turn, kept[k], json_object_get(m, kept[k]));
                json_array_append_new(merged, turn);
            }
            json_decref(block);
        } else {
            json_array_append(merged, (json_t *)m);
        }
    }
    return 0;
}

/* ---- Stage 2: tool results in call order -------------------------------- */

static json_int_t call_position(const json_t *order, const json_t *block)
{
    const char *id = json_string_value(json_object_get(block, "tool_use_id"));
    const json_t *pos = id ? json_object_get(order, id) : NULL;
    return pos ? json_integer_value(pos) : 0;
}

static void record_call_order(json_t *order, const json_t *calls)
{
    json_object_clear(order);
    size_t i;
    const json_t *tc;
    json_array_foreach(calls, i, tc) {
        const json_t *id = json_object_get(tc, "id");
        if (!chat_truthy(id)) id = json_object_get(json_object_get(tc, "function"), "id");
        if (json_is_string(id) && chat_truthy(id))
            json_object_set_new(order, json_string_value(id), json_integer((json_int_t)i));
    }
}

/* Stable-sort the tool_result blocks of one turn in place, leaving the
 * other blocks where they are. */
static void sort_results(json_t *blocks, const json_t *order)
{
    size_t n = json_array_size(blocks), k = 0;
    size_t *slot = malloc((n ? n : 1) * sizeof *slot);
    json_t **result = malloc((n ? n : 1) * sizeof *result);
    if (!slot || !result) {
        free(slot);
        free(result);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *b = json_array_get(blocks, i);
        const char *type = json_string_value(json_object_get(b, "type"));
        if (type && strcmp(type, "tool_result") == 0) {
            slot[k] = i;
            result[k++] = json_incref(b);
        }
    }
    if (k > 1) {
        for (size_t i = 1; i < k; i++) /* insertion sort: stable, and k is tiny */
            for (size_t j = i;
                 j > 0 && call_position(order, result[j - 1]) > call_position(order, result[j]);
                 j--) {
                json_t *tmp = result[j];
                result[j] = result[j - 1];
                result[j - 1] = tmp;
            }
        for (size_t i = 0; i < k; i++) json_array_set(blocks, slot[i], result[i]);
    }
    for (size_t i = 0; i < k; i++) json_decref(result[i]);
    free(slot);
    free(result);
}

static void sort_tool_results(json_t *msgs)
{
    json_t *order = json_object();
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (chat_has_role(m, "assistant") && chat_truthy(json_object_get(m, "tool_calls")))
            record_call_order(order, json_object_get(m, "tool_calls"));
        else if (chat_has_role(m, "user") && json_object_size(order) > 0)
            sort_results(json_object_get(m, "content_blocks"), order);
    }
    json_decref(order);
}

/* ---- Stage 3: drop earlier reasoning ------------------------------------ */

static json_t *drop_thinking(const json_t *msgs)
{
    static const char *const kept[] = {"user", "system", "tool", "latest_reminder",
                                       "direct_search_results"};
    long last_user = chat_last_user(msgs);
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        int keep = (long)i >= last_user;
        for (size_t k = 0; k < sizeof kept / sizeof kept[0] && !keep; k++)
            keep = chat_has_role(m, kept[k]);
        if (keep) {
            json_array_append(out, m);
        } else if (chat_has_role(m, "assistant")) {
            json_t *copy = json_copy(m);
            json_object_del(copy, "reasoning_content");
            json_array_append_new(out, copy);
        }
    }
    return out;
}

/* ---- The three stages ---------------------------------------------------- */

int chat_prepare(const json_t *messages, const v4_chat_options *o, json_t **out, int *drop,
                 tome_error *err)
{
    json_t *merged = json_array();
    int rc = merge_messages(messages, merged, err);
    if (rc) {
        json_decref(merged);
        return rc;
    }
    sort_tool_results(merged);
    /* Reasoning is kept when asked, and whenever a message offers tools:
     * the reference drops it only from tool-free conversations. */
    *drop = !o->keep_reasoning;
    size_t i;
    const json_t *m;
    json_array_foreach(merged, i, m)
        if (chat_truthy(json_object_get(m, "tools"))) *drop = 0;
    *out = merged;
    if (o->thinking && *drop) {
        *out = drop_thinking(merged);
        json_decref(merged);
    }
    return 0;
}
