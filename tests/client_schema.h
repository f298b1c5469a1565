/*
 * client_schema.h - a small JSON Schema checker for the client's tests.
 *
 * tome(1) promises that `tome ask --json` and `tome report --format json`
 * follow the JSON Schemas shipped in client/.  The tests hold the output to
 * those files with this checker, which understands the keywords the
 * schemas use (type, with "integer" and type lists; required; properties;
 * items; enum of strings; minimum) and fails on any other keyword, so a
 * schema cannot quietly grow a rule that is not being checked.
 */
#ifndef TOME_TESTS_CLIENT_SCHEMA_H
#define TOME_TESTS_CLIENT_SCHEMA_H

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static int schema_type_matches(const char *type, json_t *v)
{
    if (!strcmp(type, "object")) return json_is_object(v);
    if (!strcmp(type, "array")) return json_is_array(v);
    if (!strcmp(type, "string")) return json_is_string(v);
    if (!strcmp(type, "integer")) return json_is_integer(v);
    if (!strcmp(type, "number")) return json_is_number(v);
    if (!strcmp(type, "boolean")) return json_is_boolean(v);
    if (!strcmp(type, "null")) return json_is_null(v);
    return 0;
}

static int schema_check_type(json_t *type, json_t *v)
{
    if (json_is_string(type)) return schema_type_matches(json_string_value(type), v);
    size_t i;
    json_t *t;
    json_array_foreach(type, i, t)
        if (schema_type_matches(json_string_value(t), v)) return 1;
    return 0;
}

/* 0 if `v` satisfies `schema`; else 1 with the reason and JSON path in `why`. */
static int schema_validate(json_t *schema, json_t *v, const char *path, char *why, size_t cap)
{
    const char *key;
    json_t *rule;
    json_object_foreach(schema, key, rule) {
        if (!strcmp(key, "$schema") || !strcmp(key, "$id") || !strcmp(key, "title")) continue;
        if (!strcmp(key, "type")) {
            if (!schema_check_type(rule, v)) {
                snprintf(why, cap, "%s: wrong type", path);
                return 1;
            }
        } else if (!strcmp(key, "required")) {
            size_t i;
            json_t *name;
            json_array_foreach(rule, i, name) {
                if (json_is_object(v) && !json_object_get(v, json_string_value(name))) {
                    snprintf(why, cap, "%s: missing %s", path, json_string_value(name));
                    return 1;
                }
            }
        } else if (!strcmp(key, "properties")) {
            const char *field;
            json_t *sub;
            json_object_foreach(rule, field, sub) {
                json_t *child = json_is_object(v) ? json_object_get(v, field) : NULL;
                char child_path[512];
                snprintf(child_path, sizeof child_path, "%s.%s", path, field);
                if (child && schema_validate(sub, child, child_path, why, cap)) return 1;
            }
        } else if (!strcmp(key, "items")) {
            size_t i;
            json_t *item;
            json_array_foreach(v, i, item) {
                char child_path[512];
                snprintf(child_path, sizeof child_path, "%s[%zu]", path, i);
                if (schema_validate(rule, item, child_path, why, cap)) return 1;
            }
        } else if (!strcmp(key, "enum")) {
            int found = 0;
            size_t i;
            json_t *choice;
            json_array_foreach(rule, i, choice) found |= json_equal(choice, v);
            if (!found) {
                snprintf(why, cap, "%s: value not in the enum", path);
                return 1;
            }
        } else if (!strcmp(key, "minimum")) {
            if (json_is_number(v) && json_number_value(v) < json_number_value(rule)) {
                snprintf(why, cap, "%s: below the minimum", path);
                return 1;
            }
        } else {
            snprintf(why, cap, "%s: the checker does not know schema keyword %s", path, key);
            return 1;
        }
    }
    return 0;
}

#endif
