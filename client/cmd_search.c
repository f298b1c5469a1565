/*
 * cmd_search.c - `tome search CORPUS PATTERN`: find text without the model.
 *
 * The daemon searches the corpus's current version with SQLite's full-text
 * index (PATTERN in FTS5 query syntax) or, with --regex, line by line with
 * a PCRE2 pattern.  Matches print like grep -n, "path:line:text", so the
 * output feeds editors and other tools directly.
 */
#include "client/client.h"

#include <stdlib.h>
#include <string.h>

static char *search_target(const tome_options *opt)
{
    char *pattern = tome_url_escape(opt->args[1]);
    char *prefix = tome_api_target("/v1/corpora/", opt->args[0], "/search?");
    char *target = NULL;
    if (pattern && prefix) {
        size_t n = strlen(prefix) + strlen(pattern) + 40;
        target = malloc(n);
        if (target) {
            int used = snprintf(target, n, "%s%s=%s", prefix, opt->regex ? "regex" : "q", pattern);
            if (opt->limit > 0) snprintf(target + used, n - (size_t)used, "&limit=%ld", opt->limit);
        }
    }
    free(pattern);
    free(prefix);
    return target;
}

static void print_matches(json_t *reply)
{
    size_t i;
    json_t *match;
    json_t *matches = json_object_get(reply, "matches");
    json_array_foreach(matches, i, match) {
        printf("%s%s%s:%lld:%s\n", tome_style_on(stdout, TOME_STYLE_BOLD),
               json_string_value(json_object_get(match, "path")), tome_style_off(stdout),
               json_integer_value(json_object_get(match, "line")),
               json_string_value(json_object_get(match, "text")));
    }
    if (json_array_size(matches) == 0) tome_note("no matches");
    if (json_is_true(json_object_get(reply, "truncated")))
        tome_note("more matches were left out; raise --limit (at most 1000) to see them");
}

int tome_cmd_search(tome_client *c, const tome_options *opt, tome_error *err)
{
    char *target = search_target(opt);
    if (!target) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    int rc = tome_request_and_show(c, opt, "GET", target, NULL, print_matches, err);
    free(target);
    return rc;
}
