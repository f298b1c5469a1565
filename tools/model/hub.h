/*
 * hub.h - the little of the Hugging Face hub's HTTP interface tome-model
 * uses, over libcurl.
 *
 * The file list comes from GET {endpoint}/api/models/{repo}/tree/{revision}
 * ?recursive=true: a JSON array of entries {type, path, size, oid, lfs?:
 * {oid, size}}, where lfs.oid is the SHA-256 of an LFS file's content and
 * oid otherwise the git blob id; a long listing continues at the URL of
 * the response's `Link: <...>; rel="next"` header, which must stay on the
 * endpoint.  A file's bytes come
 * from {endpoint}/{repo}/resolve/{revision}/{path}, which redirects to a
 * CDN for LFS files and honours Range requests.  HF_ENDPOINT replaces the
 * endpoint (mirrors, tests), HF_TOKEN is sent as a Bearer token.
 */
#ifndef TOME_TOOLS_MODEL_HUB_H
#define TOME_TOOLS_MODEL_HUB_H

#include <curl/curl.h>

#include "tools/model/files.h"

#define HUB_DEFAULT_ENDPOINT "https://huggingface.co"

typedef struct hub {
    char endpoint[1024]; /* without a trailing '/' */
    char repo[256];      /* owner/name */
    char revision[256];  /* branch, tag or commit */
    const char *token;   /* HF_TOKEN, or NULL */
} hub;

/* Fill `h` from the repository, the revision and the environment; refuses
 * a repository name that is not owner/name. */
int hub_init(hub *h, const char *repo, const char *revision, tome_error *err);

/* The repository's files (with their hashes) into `out` (repo and
 * revision set too). */
int hub_list(const hub *h, model_list *out, tome_error *err);

/* One page of the listing (a JSON array of entries) added to `out`;
 * directories are skipped, a file without a size or with a malformed hash
 * or path is refused (model_list_add). */
int hub_parse_listing(const char *body, size_t len, const char *url, model_list *out,
                      tome_error *err);
/* The URL of a `Link: <URL>; rel="next"` response header (`len` bytes,
 * not NUL-terminated) into `next`: its length, or 0 when the header is no
 * such link or the URL does not fit `cap`. */
size_t hub_link_next(const char *header, size_t len, char *next, size_t cap);

/* The download URL of a file of the repository, path segments escaped;
 * the caller frees it. */
char *hub_file_url(const hub *h, CURL *curl, const char *path);

/* An easy handle set up for the hub: the Bearer token, redirects
 * followed (the token is not sent to another host), a user agent, and
 * a failure when the transfer stalls. */
CURL *hub_easy(const hub *h, struct curl_slist **headers);

/* The error for an HTTP status >= 400 of `url`: 401/403 say what HF_TOKEN
 * has to do with it, 404 that the repository, revision or file does not
 * exist. */
int hub_http_error(const hub *h, long status, const char *url, tome_error *err);

#endif
