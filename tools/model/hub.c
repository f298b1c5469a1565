/*
 * hub.c - the hub's file list and URLs (hub.h).
 *
 * libcurl rather than our own HTTP client over OpenSSL: downloads from the
 * hub go through redirects to a CDN, over HTTP/1.1 or HTTP/2, with
 * proxies, range requests and certificate checks that libcurl already
 * does right; the daemon's HTTP code is a server and would have had to
 * grow a client for all of that.
 */
#include "tools/model/hub.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"

#define LIST_MAX_BYTES ((size_t)64 << 20)

int hub_init(hub *h, const char *repo, const char *revision, tome_error *err)
{
    memset(h, 0, sizeof *h);
    const char *slash = strchr(repo, '/');
    if (!slash || slash == repo || !slash[1] || strchr(slash + 1, '/') ||
        strlen(repo) >= sizeof h->repo || strstr(repo, ".."))
        return tome_errorf(err, TOME_EINVAL, "\"%s\" is not a repository name (owner/name)", repo);
    if (!*revision || strlen(revision) >= sizeof h->revision)
        return tome_errorf(err, TOME_EINVAL, "\"%s\" is not a revision", revision);
    const char *endpoint = getenv("HF_ENDPOINT");
    if (!endpoint || !*endpoint) endpoint = HUB_DEFAULT_ENDPOINT;
    if (strlen(endpoint) >= sizeof h->endpoint)
        return tome_errorf(err, TOME_EINVAL, "HF_ENDPOINT is too long");
    snprintf(h->endpoint, sizeof h->endpoint, "%s", endpoint);
    size_t len = strlen(h->endpoint);
    while (len > 0 && h->endpoint[len - 1] == '/') h->endpoint[--len] = '\0';
    snprintf(h->repo, sizeof h->repo, "%s", repo);
    snprintf(h->revision, sizeof h->revision, "%s", revision);
    const char *token = getenv("HF_TOKEN");
    h->token = token && *token ? token : NULL;
    return 0;
}

CURL *hub_easy(const hub *h, struct curl_slist **headers)
{
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    *headers = NULL;
    if (h->token) {
        char auth[4200];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", h->token);
        *headers = curl_slist_append(NULL, auth);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, *headers);
    }
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "tome-model/" PACKAGE_VERSION);
    /* a transfer under 1 KB/s for 60 s has stalled */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    return c;
}

int hub_http_error(const hub *h, long status, const char *url, tome_error *err)
{
    if (status == 401 || status == 403)
        return tome_errorf(err, TOME_EPERM,
                           "%s: HTTP %ld: %s; gated and private repositories need an access "
                           "token in HF_TOKEN (a read token from the hub's settings, after "
                           "accepting the model's terms)",
                           url, status,
                           h->token ? "HF_TOKEN was sent but not accepted" : "HF_TOKEN is not set");
    if (status == 404)
        return tome_errorf(err, TOME_ENOTFOUND,
                           "%s: HTTP 404: no such repository, revision or file (%s at %s)", url,
                           h->repo, h->revision);
    return tome_errorf(err, TOME_EIO, "%s: HTTP %ld", url, status);
}

char *hub_file_url(const hub *h, CURL *curl, const char *path)
{
    size_t cap =
        strlen(h->endpoint) + strlen(h->repo) + 3 * strlen(h->revision) + 3 * strlen(path) + 32;
    char *url = malloc(cap);
    char *rev = curl_easy_escape(curl, h->revision, 0);
    if (!url || !rev) {
        free(url);
        curl_free(rev);
        return NULL;
    }
    int n = snprintf(url, cap, "%s/%s/resolve/%s", h->endpoint, h->repo, rev);
    curl_free(rev);
    for (const char *seg = path; seg && n > 0 && (size_t)n < cap;) {
        const char *slash = strchr(seg, '/');
        int len = slash ? (int)(slash - seg) : (int)strlen(seg);
        char *esc = curl_easy_escape(curl, seg, len);
        if (!esc) break;
        n += snprintf(url + n, cap - (size_t)n, "/%s", esc);
        curl_free(esc);
        seg = slash ? slash + 1 : NULL;
    }
    return url;
}

/* ---- the listing ------------------------------------------------------------ */

typedef struct page {
    char *body;
    size_t len;
    char next[2048]; /* the Link rel="next" URL, if any */
    int too_big;
} page;

static size_t on_body(char *data, size_t size, size_t n, void *ctx)
{
    page *p = ctx;
    size_t add = size * n;
    if (p->len + add > LIST_MAX_BYTES) {
        p->too_big = 1;
        return 0;
    }
    char *g = realloc(p->body, p->len + add + 1);
    if (!g) return 0;
    memcpy(g + p->len, data, add);
    p->body = g;
    p->len += add;
    p->body[p->len] = '\0';
    return add;
}

size_t hub_link_next(const char *header, size_t len, char *next, size_t cap)
{
    if (len <= 5 || strncasecmp(header, "link:", 5) != 0) return 0;
    char line[4096];
    snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), header);
    char *lt = strchr(line, '<'), *gt = lt ? strchr(lt, '>') : NULL;
    if (!lt || !gt || !strstr(gt, "rel=\"next\"") || (size_t)(gt - lt - 1) >= cap) return 0;
    snprintf(next, cap, "%.*s", (int)(gt - lt - 1), lt + 1);
    return (size_t)(gt - lt - 1);
}

static size_t on_header(char *data, size_t size, size_t n, void *ctx)
{
    page *p = ctx;
    hub_link_next(data, size * n, p->next, sizeof p->next);
    return size * n;
}

static int add_entry(json_t *e, const char *url, model_list *out, tome_error *err)
{
    json_t *type = json_object_get(e, "type"), *path = json_object_get(e, "path");
    json_t *size = json_object_get(e, "size"), *oid = json_object_get(e, "oid");
    json_t *lfs = json_object_get(e, "lfs");
    if (!json_is_string(type) || !json_is_string(path))
        return tome_errorf(err, TOME_EFORMAT, "%s: an entry without type or path", url);
    if (strcmp(json_string_value(type), "file") != 0) return 0;
    json_t *sha = json_object_get(lfs, "oid");
    if (!json_is_integer(size) || (lfs && !json_is_string(sha)))
        return tome_errorf(err, TOME_EFORMAT, "%s: %s has no size or LFS hash", url,
                           json_string_value(path));
    return model_list_add(out, json_string_value(path), json_integer_value(size),
                          lfs ? json_string_value(sha) : "",
                          !lfs && json_is_string(oid) ? json_string_value(oid) : "", err);
}

int hub_parse_listing(const char *body, size_t len, const char *url, model_list *out,
                      tome_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!json_is_array(root)) {
        json_decref(root);
        return tome_errorf(err, TOME_EFORMAT, "%s: not a JSON array of files", url);
    }
    int rc = 0;
    size_t i;
    json_t *e;
    json_array_foreach(root, i, e)
        if (rc == 0) rc = add_entry(e, url, out, err);
    json_decref(root);
    return rc;
}

/* GET one page of the listing; its next page's URL in p->next. */
static int get_page(const hub *h, const char *url, page *p, tome_error *err)
{
    struct curl_slist *headers;
    CURL *c = hub_easy(h, &headers);
    if (!c) return tome_errorf(err, TOME_ENOMEM, "cannot start libcurl");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, p);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    int rc = 0;
    if (p->too_big)
        rc =
            tome_errorf(err, TOME_ELIMIT, "%s: the listing is over %zu bytes", url, LIST_MAX_BYTES);
    else if (cc != CURLE_OK)
        rc = tome_errorf(err, TOME_EIO, "%s: %s", url, curl_easy_strerror(cc));
    else if (status >= 400)
        rc = hub_http_error(h, status, url, err);
    curl_easy_cleanup(c);
    curl_slist_free_all(headers);
    return rc;
}

/* Whether `url` is on the endpoint: a listing's next page must be, since
 * the request for it carries HF_TOKEN. */
static int on_endpoint(const hub *h, const char *url)
{
    size_t len = strlen(h->endpoint);
    return strncmp(url, h->endpoint, len) == 0 && (url[len] == '/' || url[len] == '?');
}

int hub_list(const hub *h, model_list *out, tome_error *err)
{
    memset(out, 0, sizeof *out);
    out->repo = strdup(h->repo);
    out->revision = strdup(h->revision);
    if (!out->repo || !out->revision) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    char url[2048];
    CURL *esc = curl_easy_init();
    char *rev = esc ? curl_easy_escape(esc, h->revision, 0) : NULL;
    snprintf(url, sizeof url, "%s/api/models/%s/tree/%s?recursive=true", h->endpoint, h->repo,
             rev ? rev : h->revision);
    curl_free(rev);
    curl_easy_cleanup(esc);
    int rc = 0;
    for (int pages = 0; rc == 0 && *url; pages++) {
        page p = {0};
        if (pages == 10000) rc = tome_errorf(err, TOME_ELIMIT, "%s: too many pages", url);
        if (rc == 0) rc = get_page(h, url, &p, err);
        if (rc == 0) rc = hub_parse_listing(p.body ? p.body : "", p.len, url, out, err);
        if (rc == 0 && p.next[0] && !on_endpoint(h, p.next))
            rc = tome_errorf(err, TOME_EFORMAT,
                             "%s: the listing continues at %.200s, away from %s (where "
                             "HF_TOKEN may go)",
                             url, p.next, h->endpoint);
        snprintf(url, sizeof url, "%s", p.next);
        free(p.body);
    }
    if (rc == 0 && out->n == 0)
        rc = tome_errorf(err, TOME_EFORMAT, "%s at %s: the repository lists no files", h->repo,
                         h->revision);
    if (rc == 0 && model_list_check(out, err) != 0)
        rc = tome_error_wrap(err, "%s at %s", h->repo, h->revision);
    return rc;
}
