/*
 * client_schema_check.c - `client-schema-check SCHEMA [FILE]`: exit 0 when
 * the JSON document in FILE (or standard input) follows SCHEMA.  The
 * client's shell tests pipe real `tome` output through it.
 */
#include "tests/client_schema.h"

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: client-schema-check SCHEMA [FILE]\n");
        return 2;
    }
    json_error_t jerr;
    json_t *schema = json_load_file(argv[1], 0, &jerr);
    json_t *doc = argc == 3 ? json_load_file(argv[2], 0, &jerr) : json_loadf(stdin, 0, &jerr);
    if (!schema || !doc) {
        fprintf(stderr, "client-schema-check: %s:%d: %s\n", jerr.source, jerr.line, jerr.text);
        return 1;
    }
    char why[1024];
    int bad = schema_validate(schema, doc, "$", why, sizeof why);
    if (bad) fprintf(stderr, "client-schema-check: %s\n", why);
    json_decref(schema);
    json_decref(doc);
    return bad;
}
