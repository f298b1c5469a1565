/*
 * fuzz_tokenizer.c - tokenizer.json (tokenizer/load.c): loaded or
 * refused; a tokenizer that loads must tokenize and detokenize a text that
 * exercises its pre-tokenizer, added tokens and byte fallback.
 */
#include "tests/fuzz/fuzz.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>

static const char sample[] = "Hello, world! 12345 <｜begin▁of▁sentence｜>naïve 日本語\n\t  x";

static void use(const v4_tokenizer *t)
{
    v4_ids ids = {0};
    tome_error err = {0};
    if (v4_tokenize(t, sample, sizeof sample - 1, 1, &ids, &err) == 0) {
        char *text;
        size_t len;
        if (v4_detokenize(t, ids.ids, ids.n, &text, &len, &err) == 0) free(text);
    }
    free(ids.ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer.json", fuzz_tmpdir());
    fuzz_write_file(path, data, size);
    v4_tokenizer *t;
    tome_error err = {0};
    if (v4_tokenizer_load(path, &t, &err) != 0) return 0;
    use(t);
    v4_tokenizer_free(t);
    return 0;
}
