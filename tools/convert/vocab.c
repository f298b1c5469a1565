/*
 * vocab.c - tokenizer.ggml.* metadata for tome-convert (contract in
 * vocab.h): read a Hugging Face tokenizer.json, or make a stand-in
 * vocabulary, and write it as GGUF arrays.
 */
#include "tools/convert/vocab.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/gguf.h"

/* llama.cpp's token types (tokenizer.ggml.token_type). */
enum { TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_USER = 4, TOKEN_UNUSED = 5 };

typedef struct vocab {
    char **text; /* per id; NULL until set */
    int32_t *type;
    int64_t n;
} vocab;

static void vocab_free(vocab *v)
{
    for (int64_t i = 0; v->text && i < v->n; i++) free(v->text[i]);
    free(v->text);
    free(v->type);
}

static int set_token(vocab *v, int64_t id, const char *s, int32_t type, const char *origin,
                     tome_error *err)
{
    if (id < 0 || id >= v->n)
        return tome_errorf(err, TOME_EFORMAT, "%s: token id %lld is outside the model's %lld ids",
                           origin, (long long)id, (long long)v->n);
    char *copy = strdup(s);
    if (!copy) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    free(v->text[id]);
    v->text[id] = copy;
    v->type[id] = type;
    return 0;
}

/* ---- the stand-in vocabulary ----------------------------------------------------- */

/* GPT-2's byte-level alphabet: printable Latin-1 bytes stand for
 * themselves, every other byte for U+0100 upwards in byte order. */
static int byte_printable(int b)
{
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

static void byte_token(int b, char out[3])
{
    unsigned cp = (unsigned)b;
    if (!byte_printable(b)) {
        cp = 256;
        for (int i = 0; i < b; i++) cp += !byte_printable(i);
    }
    out[0] = (char)(cp < 0x80 ? cp : 0xc0 | cp >> 6);
    out[1] = (char)(cp < 0x80 ? 0 : 0x80 | (cp & 0x3f));
    out[2] = 0;
}

static int standin(vocab *v, const v4_config *c, tome_error *err)
{
    int rc = set_token(v, c->bos_id, "<｜begin▁of▁sentence｜>", TOKEN_CONTROL, "config", err);
    if (rc == 0)
        rc = set_token(v, c->eos_id, "<｜end▁of▁sentence｜>", TOKEN_CONTROL, "config", err);
    int64_t id = 0;
    for (int b = 0; b < 256 && rc == 0; b++) {
        while (id < v->n && v->text[id]) id++;
        if (id == v->n) break;
        char s[3];
        byte_token(b, s);
        rc = set_token(v, id, s, TOKEN_NORMAL, "config", err);
    }
    return rc;
}

/* ---- tokenizer.json -------------------------------------------------------------- */

static int from_json(vocab *v, json_t *root, const char *path, tome_error *err)
{
    json_t *words = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(words) || (added && !json_is_array(added)))
        return tome_errorf(err, TOME_EFORMAT, "%s: no model.vocab object", path);
    const char *word;
    json_t *id;
    int rc = 0;
    json_object_foreach(words, word, id) {
        if (rc == 0 && !json_is_integer(id))
            rc = tome_errorf(err, TOME_EFORMAT, "%s: the id of %s is not an integer", path, word);
        if (rc == 0) rc = set_token(v, json_integer_value(id), word, TOKEN_NORMAL, path, err);
    }
    size_t i;
    json_t *t;
    json_array_foreach(added, i, t) {
        json_t *tid = json_object_get(t, "id");
        const char *content = json_string_value(json_object_get(t, "content"));
        if (rc == 0 && (!json_is_integer(tid) || !content))
            rc = tome_errorf(err, TOME_EFORMAT, "%s: added_tokens[%zu] lacks id or content", path,
                             i);
        int32_t type = json_is_true(json_object_get(t, "special")) ? TOKEN_CONTROL : TOKEN_USER;
        if (rc == 0) rc = set_token(v, json_integer_value(tid), content, type, path, err);
    }
    return rc;
}

/* A merge as GGUF writes it: "left right" (tokenizer.json has either that
 * string or the pair as an array). */
static int merge_text(json_t *merge, char *out, size_t cap)
{
    if (json_is_string(merge)) return snprintf(out, cap, "%s", json_string_value(merge)) < (int)cap;
    const char *l = json_string_value(json_array_get(merge, 0));
    const char *r = json_string_value(json_array_get(merge, 1));
    return l && r && json_array_size(merge) == 2 && snprintf(out, cap, "%s %s", l, r) < (int)cap;
}

static int write_merges(cv_meta *m, json_t *merges, const char *path, tome_error *err)
{
    if (merges && !json_is_array(merges))
        return tome_errorf(err, TOME_EFORMAT, "%s: model.merges is not an array", path);
    cv_kv_array(m, "tokenizer.ggml.merges", V4_GGUF_STRING, json_array_size(merges));
    size_t i;
    json_t *merge;
    json_array_foreach(merges, i, merge) {
        char text[1024];
        if (!merge_text(merge, text, sizeof text))
            return tome_errorf(err, TOME_EFORMAT, "%s: model.merges[%zu] is not a pair", path, i);
        cv_put_str(&m->b, text);
    }
    return 0;
}

/* ---- the keys ---------------------------------------------------------------------- */

static void write_tokens(cv_meta *m, vocab *v, const v4_config *c)
{
    cv_kv_str(m, "tokenizer.ggml.model", "gpt2");
    cv_kv_str(m, "tokenizer.ggml.pre", "deepseek-v3");
    cv_kv_array(m, "tokenizer.ggml.tokens", V4_GGUF_STRING, (uint64_t)v->n);
    for (int64_t i = 0; i < v->n; i++) {
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%lld]", (long long)i);
        cv_put_str(&m->b, v->text[i] ? v->text[i] : pad);
    }
    cv_kv_array(m, "tokenizer.ggml.token_type", V4_GGUF_I32, (uint64_t)v->n);
    for (int64_t i = 0; i < v->n; i++)
        cv_put_u32(&m->b, (uint32_t)(v->text[i] ? v->type[i] : TOKEN_UNUSED));
    cv_kv_u32(m, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_id);
    cv_kv_u32(m, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_id);
}

int cv_vocab(cv_meta *m, const char *dir, const v4_config *c, tome_error *err)
{
    vocab v = {calloc((size_t)c->vocab_size, sizeof(char *)),
               calloc((size_t)c->vocab_size, sizeof(int32_t)), c->vocab_size};
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    struct stat st;
    json_t *root = NULL;
    json_error_t jerr;
    int rc = v.text && v.type ? 0 : tome_errorf(err, TOME_ENOMEM, "out of memory");
    if (rc == 0 && stat(path, &st) != 0)
        rc = standin(&v, c, err);
    else if (rc == 0 && !(root = json_load_file(path, 0, &jerr)))
        rc = tome_errorf(err, TOME_EFORMAT, "%s: %s (line %d)", path, jerr.text, jerr.line);
    else if (rc == 0)
        rc = from_json(&v, root, path, err);
    if (rc == 0) write_tokens(m, &v, c);
    if (rc == 0)
        rc = write_merges(m, json_object_get(json_object_get(root, "model"), "merges"), path, err);
    json_decref(root);
    vocab_free(&v);
    return rc;
}
