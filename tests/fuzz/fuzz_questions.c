/*
 * fuzz_questions.c - the questions file of `tome report`
 * (client/questions.c): any text is parsed or refused with a message.
 */
#include "client/client.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    tome_question_list list = {0};
    tome_error err = {0};
    if (tome_questions_parse(text, "fuzz.questions", &list, &err) == 0) tome_questions_free(&list);
    free(text);
    return 0;
}
