/*
 * report.c - the ingest report: releasing it, and writing it as JSON.
 *
 * The JSON is what tome-ingest prints and what the daemon returns for an
 * ingest job, so both show the same fields (documented in tome-ingest(1)).
 * Numbers that are unknown (no tokenizer, no previous context) are null,
 * never a made-up 0 or -1.
 */
#include "ingest/ingest-internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const change_names[] = {"added", "changed", "removed", "skipped", "dropped"};

const char *ingest_change_name(ingest_change c)
{
    return (unsigned)c < 5 ? change_names[c] : "unknown";
}

void ingest_report_free(ingest_report *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_items; i++) {
        free(r->items[i].path);
        free(r->items[i].reason);
    }
    for (size_t i = 0; i < r->n_warnings; i++) free(r->warnings[i]);
    free(r->items);
    free(r->warnings);
    free(r->corpus);
    free(r->source);
    free(r);
}

/* An integer, or null when negative (unknown). */
static json_t *known(int64_t v)
{
    return v < 0 ? json_null() : json_integer(v);
}

static json_t *items_of(const ingest_report *r, ingest_change c)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < r->n_items; i++) {
        const ingest_item *it = &r->items[i];
        if (it->change != c) continue;
        json_t *o = json_object();
        json_object_set_new(o, "path", json_string(it->path));
        if (it->reason)
            json_object_set_new(o, "reason", json_string(it->reason));
        else
            json_object_set_new(o, "bytes", json_integer(it->bytes));
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *seconds(const ingest_report *r)
{
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "read", r->t_read, "hash", r->t_hash,
                     "decode", r->t_decode, "store", r->t_store, "render", r->t_render, "tokenize",
                     r->t_tokenize, "total", r->t_total);
}

int ingest_report_json(const ingest_report *r, char **json, tome_error *err)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I}", "corpus", r->corpus, "source", r->source,
                          "version", (json_int_t)r->version_number, "documents",
                          (json_int_t)r->documents, "unchanged", (json_int_t)r->unchanged);
    json_t *warnings = json_array();
    for (size_t i = 0; warnings && i < r->n_warnings; i++)
        json_array_append_new(warnings, json_string(r->warnings[i]));
    if (o && warnings) {
        for (int c = INGEST_ADDED; c <= INGEST_DROPPED; c++)
            json_object_set_new(o, ingest_change_name((ingest_change)c),
                                items_of(r, (ingest_change)c));
        json_object_set_new(o, "warnings", warnings);
        json_object_set_new(o, "entries", json_integer((json_int_t)r->entries));
        json_object_set_new(o, "bytes_read", json_integer((json_int_t)r->bytes_read));
        json_object_set_new(o, "document_bytes", json_integer((json_int_t)r->document_bytes));
        json_object_set_new(o, "rendered_bytes", json_integer(r->rendered_bytes));
        json_object_set_new(o, "tokens", known(r->tokens));
        json_object_set_new(o, "first_changed_position", known(r->first_changed_position));
        json_object_set_new(o, "first_changed_byte", known(r->first_changed_byte));
        json_object_set_new(o, "first_changed_token", known(r->first_changed_token));
        json_object_set_new(o, "seconds", seconds(r));
        warnings = NULL;
    }
    *json = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    json_decref(warnings);
    if (!*json) return tome_errorf(err, TOME_ENOMEM, "out of memory writing the report as JSON");
    return 0;
}
