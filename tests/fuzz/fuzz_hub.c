/*
 * fuzz_hub.c - what the Hugging Face hub, or a mirror named by
 * HF_ENDPOINT, answers tome-model fetch's listing requests
 * (tools/model/hub.c): a response header that may be the next page's
 * Link, and a page of the listing, parsed into the file list and checked
 * as a whole as hub_list checks it.  A hostile hub must get an error,
 * never a crash, a leak or a path that leaves the model directory.
 *
 * The input's first line is the header; the rest is the page.
 */
#include "tests/fuzz/fuzz.h"
#include "tools/model/hub.h"

#include <stdlib.h>
#include <string.h>

/* Whether a relative path has a ".." segment or is absolute. */
static int leaves(const char *p)
{
    size_t n = strlen(p);
    return p[0] == '/' || strcmp(p, "..") == 0 || strncmp(p, "../", 3) == 0 || strstr(p, "/../") ||
           (n >= 3 && strcmp(p + n - 3, "/..") == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *end = memchr(text, '\n', size);
    size_t header = end ? (size_t)(end - text) : size;
    char next[2048];
    hub_link_next(text, header, next, sizeof next);
    model_list list = {0};
    tome_error err = {0};
    size_t body = end ? size - header - 1 : 0;
    int rc = hub_parse_listing(end ? end + 1 : "", body, "http://hub/api", &list, &err);
    if (rc == 0) rc = model_list_check(&list, &err);
    for (size_t i = 0; rc == 0 && i < list.n; i++)
        if (leaves(list.files[i].path))
            fuzz_die("a listed path leaves the directory: %s", list.files[i].path);
    model_list_free(&list);
    if (rc != 0 && !err.msg[0]) fuzz_die("an error without a message");
    return 0;
}
