/*
 * tome-tokenize.c - tome-tokenize, the tokenizer and chat encoder as a
 * command, so that outside tools (and people) can compare tome with other
 * implementations.  See tome-tokenize(1).
 *
 *   tome-tokenize --model DIR | --tokenizer FILE [--special] [--stats]
 *       text on stdin -> JSON array of ids on stdout
 *   ... --decode          JSON array of ids on stdin -> bytes on stdout
 *   ... --chat FILE.json  messages -> the prompt text (--ids: its ids)
 *
 * Exit status: 0 on success, 1 on a usage error, 2 when the work fails.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/options.h"
#include "engine/v4.h"
#include "tokenizer/tokenizer.h"

#define MAX_INPUT ((size_t)4 << 30)

typedef struct options {
    const char *model_dir;
    const char *tokenizer;
    const char *chat;
    int decode, special, stats, ids;
    v4_chat_options chat_opts;
} options;

static int fail(const tome_error *err)
{
    fprintf(stderr, "tome-tokenize: %s\n", err->msg);
    return 2;
}

static int read_stdin(char **out, size_t *len, tome_error *err)
{
    return tome_read_stream(stdin, "stdin", MAX_INPUT, out, len, err);
}

static void print_ids(const v4_ids *ids)
{
    putchar('[');
    for (size_t i = 0; i < ids->n; i++) printf(i ? ",%d" : "%d", (int)ids->ids[i]);
    puts("]");
}

static int encode_stdin(const v4_tokenizer *t, const options *o, tome_error *err)
{
    char *text;
    size_t len;
    int rc = read_stdin(&text, &len, err);
    if (rc) return rc;
    v4_ids ids = {0};
    double start = tome_now();
    rc = v4_tokenize(t, text, len, o->special, &ids, err);
    double seconds = tome_now() - start;
    if (rc == 0) {
        print_ids(&ids);
        if (o->stats)
            fprintf(stderr, "bytes %zu ids %zu seconds %.3f MB/s %.2f tokens/s %.0f\n", len, ids.n,
                    seconds, len / seconds / 1e6, ids.n / seconds);
    }
    free(ids.ids);
    free(text);
    return rc;
}

static int decode_stdin(const v4_tokenizer *t, tome_error *err)
{
    char *json;
    size_t len;
    int rc = read_stdin(&json, &len, err);
    if (rc) return rc;
    json_error_t jerr;
    json_t *array = json_loadb(json, len, 0, &jerr);
    free(json);
    if (!json_is_array(array)) {
        json_decref(array);
        return tome_errorf(err, TOME_EINVAL, "stdin: expected a JSON array of ids (%s)",
                           array ? "not an array" : jerr.text);
    }
    size_t n = json_array_size(array);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; ids && i < n; i++) {
        const json_t *v = json_array_get(array, i);
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id > INT32_MAX) {
            rc = tome_errorf(err, TOME_EINVAL, "stdin: element %zu is not a token id", i);
            break;
        }
        ids[i] = (int32_t)id;
    }
    json_decref(array);
    if (!ids) rc = tome_errorf(err, TOME_ENOMEM, "out of memory for %zu ids", n);
    char *text = NULL;
    size_t text_len = 0;
    if (rc == 0) rc = v4_detokenize(t, ids, n, &text, &text_len, err);
    if (rc == 0 && fwrite(text, 1, text_len, stdout) != text_len)
        rc = tome_errorf(err, TOME_EIO, "writing stdout failed");
    free(text);
    free(ids);
    return rc;
}

static int render_chat(const v4_tokenizer *t, const options *o, tome_error *err)
{
    char *json;
    size_t len;
    int rc = tome_read_file(o->chat, 256u << 20, &json, &len, err);
    if (rc) return rc;
    v4_prompt prompt = {0};
    rc = v4_chat_render_json(json, len, &o->chat_opts, &prompt, err);
    if (rc) tome_error_wrap(err, "%s", o->chat);
    free(json);
    if (rc == 0 && o->ids) {
        v4_ids ids = {0};
        rc = v4_prompt_tokenize(t, &prompt, &ids, err);
        if (rc == 0) print_ids(&ids);
        free(ids.ids);
    } else if (rc == 0 && fwrite(prompt.text, 1, prompt.len, stdout) != prompt.len) {
        rc = tome_errorf(err, TOME_EIO, "writing stdout failed");
    }
    v4_prompt_free(&prompt);
    return rc;
}

static options opt;
static int effort; /* the index in "high|max" */
static const tome_option option_table[] = {
    TOME_STRING("model", 'm', "DIR|FILE.gguf", opt.model_dir,
                "use the model's tokenizer (DIR/tokenizer.json; for a GGUF file the "
                "tokenizer.json beside it, else its own vocabulary)"),
    TOME_STRING("tokenizer", 't', "FILE", opt.tokenizer, "use this tokenizer.json"),
    TOME_FLAG("decode", 'd', opt.decode, "JSON ids on stdin -> bytes on stdout"),
    TOME_FLAG("special", 's', opt.special, "special-token text becomes special tokens"),
    TOME_FLAG("stats", 'S', opt.stats, "print token and byte counts on stderr"),
    TOME_STRING("chat", 'c', "FILE.json", opt.chat, "render these messages to the prompt text"),
    TOME_FLAG("thinking", 'T', opt.chat_opts.thinking, "--chat: thinking mode"),
    TOME_CHOICE("effort", 0, "high|max", effort, "--chat, thinking: the reasoning effort"),
    TOME_FLAG("keep-reasoning", 0, opt.chat_opts.keep_reasoning,
              "--chat: keep every turn's reasoning"),
    TOME_FLAG("ids", 'i', opt.ids, "--chat: print the prompt's ids, not its text"),
};
static const tome_cli cli = {
    .program = "tome-tokenize",
    .usage = "(--model DIR | --tokenizer FILE) [--special] [--stats]\n"
             "       tome-tokenize (--model DIR | --tokenizer FILE) --decode\n"
             "       tome-tokenize [--model DIR | --tokenizer FILE] --chat FILE.json\n"
             "                     [--thinking] [--effort max] [--keep-reasoning] [--ids]",
    .options = option_table,
    .n_options = sizeof option_table / sizeof option_table[0]};

/* The combinations the modes allow. */
static int check_args(void *ctx, int n_operands, char **argv, tome_error *err)
{
    (void)ctx;
    (void)argv;
    int need_tokenizer = !opt.chat || opt.ids;
    const char *why = n_operands ? "no arguments are taken (the input is stdin)"
                      : opt.model_dir && opt.tokenizer ? "give --model or --tokenizer, not both"
                      : need_tokenizer && !opt.model_dir && !opt.tokenizer
                          ? "--model or --tokenizer is required"
                      : opt.chat && opt.decode ? "--chat and --decode do not go together"
                                               : NULL;
    if (why) return tome_errorf(err, TOME_EINVAL, "%s", why);
    opt.chat_opts.effort_max = effort == 1;
    return 0;
}

int main(int argc, char **argv)
{
    int n_operands, status;
    if (tome_options_start(&cli, argc, argv, NULL, check_args, 1, &n_operands, &status))
        return status;
    const options o = opt;
    tome_error err = {0};
    v4_tokenizer *t = NULL;
    if (o.model_dir) {
        char name[4096], *json = NULL;
        size_t len;
        int rc = v4_model_tokenizer(o.model_dir, &json, &len, name, sizeof name, &err);
        if (rc == 0) rc = v4_tokenizer_from_json(name, json, len, &t, &err);
        free(json);
        if (rc) return fail(&err);
    } else if (o.tokenizer && v4_tokenizer_load(o.tokenizer, &t, &err)) {
        return fail(&err);
    }
    int rc = o.chat     ? render_chat(t, &o, &err)
             : o.decode ? decode_stdin(t, &err)
                        : encode_stdin(t, &o, &err);
    v4_tokenizer_free(t);
    if (rc == 0 && fflush(stdout) != 0) rc = tome_errorf(&err, TOME_EIO, "writing stdout failed");
    return rc ? fail(&err) : 0;
}
