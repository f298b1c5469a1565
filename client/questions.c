/*
 * questions.c - the questions file that `tome report` reads.
 *
 * The format is meant to be written by hand and kept in version control
 * next to a cron job, so it is line-based and close to Markdown:
 *
 *     # Comments start with one '#'.
 *     ## licence max-tokens=200
 *     Under which licence is this code released?  Cite the file.
 *
 *     ## auth think=high
 *     Where are passwords checked, and how are they compared?
 *
 * A line starting with "## " opens a question: an id (1 to 64 characters
 * from [A-Za-z0-9._-], unique in the file, used as the key of the result
 * in JSON output) and optional key=value settings: max-tokens=N,
 * think=none|high|max, temperature=X, seed=N.  The lines up to the next
 * "## " line are the question, verbatim, without the blank lines around
 * it.  Other lines starting with '#' are comments wherever they appear.
 * Mistakes are usage errors that name the file and line.
 */
#include "client/client.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ID_MAX 64

typedef struct parser {
    const char *name;
    int line;
    tome_question_list *list;
    char *text;
    size_t text_len, text_cap;
} parser;

static int fail(parser *p, tome_error *err, const char *what, const char *detail)
{
    return tome_errorf(err, TOME_EINVAL, "%s:%d: %s%s", p->name, p->line, what, detail);
}

static int valid_id(const char *id, size_t len)
{
    if (len == 0 || len > ID_MAX) return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)id[i]) && !strchr("._-", id[i])) return 0;
    return 1;
}

/* The level as a string that outlives the line it was read from. */
static const char *thinking_level(const char *value)
{
    static const char *const levels[] = {"none", "high", "max"};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if (strcmp(value, levels[i]) == 0) return levels[i];
    return NULL;
}

static int parse_setting(parser *p, const char *word, tome_ask_params *q, tome_error *err)
{
    const char *eq = strchr(word, '=');
    if (!eq) return fail(p, err, "expected key=value, not ", word);
    const char *value = eq + 1;
    size_t key_len = (size_t)(eq - word);
    char *end;
    errno = 0;
    if (key_len == 10 && strncmp(word, "max-tokens", 10) == 0) {
        q->max_tokens = strtol(value, &end, 10);
        if (*end || end == value || q->max_tokens < 1 || errno)
            return fail(p, err, "max-tokens must be a positive whole number: ", value);
    } else if (key_len == 5 && strncmp(word, "think", 5) == 0) {
        q->thinking = thinking_level(value);
        if (!q->thinking) return fail(p, err, "think is none, high or max, not ", value);
    } else if (key_len == 11 && strncmp(word, "temperature", 11) == 0) {
        q->temperature = strtod(value, &end);
        if (*end || end == value || q->temperature < 0)
            return fail(p, err, "temperature must be a number >= 0: ", value);
        q->has_temperature = 1;
    } else if (key_len == 4 && strncmp(word, "seed", 4) == 0) {
        q->seed = strtoll(value, &end, 10);
        if (*end || end == value || q->seed < 0 || errno)
            return fail(p, err, "seed must be a whole number >= 0: ", value);
        q->has_seed = 1;
    } else {
        return fail(p, err, "unknown setting ", word);
    }
    return 0;
}

/* Strip the blank lines around the text gathered for the last question and
 * give it to that question. */
static int finish_question(parser *p, tome_error *err)
{
    if (p->list->count == 0) return 0;
    tome_question *q = &p->list->items[p->list->count - 1];
    size_t start = 0, end = p->text_len;
    while (start < end && isspace((unsigned char)p->text[start])) start++;
    while (end > start && isspace((unsigned char)p->text[end - 1])) end--;
    if (start == end)
        return tome_errorf(err, TOME_EINVAL, "%s:%d: question '%s' has no text", p->name, q->line,
                           q->id);
    q->text = strndup(p->text + start, end - start);
    if (!q->text) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    q->params.question = q->text;
    p->text_len = 0;
    return 0;
}

static int add_text(parser *p, const char *line, size_t len, tome_error *err)
{
    if (p->text_len + len + 2 > p->text_cap) {
        size_t cap = (p->text_len + len + 2) * 2;
        char *bigger = realloc(p->text, cap);
        if (!bigger) return tome_errorf(err, TOME_ENOMEM, "out of memory");
        p->text = bigger;
        p->text_cap = cap;
    }
    memcpy(p->text + p->text_len, line, len);
    p->text_len += len;
    p->text[p->text_len++] = '\n';
    return 0;
}

/* A "## id key=value..." line (without the "## "): a new question. */
static int open_question(parser *p, char *header, tome_error *err)
{
    if (finish_question(p, err)) return err->code;
    char *save = NULL;
    char *id = strtok_r(header, " \t", &save);
    if (!id || !valid_id(id, strlen(id)))
        return fail(p, err, "a question id is 1 to 64 of A-Z a-z 0-9 . _ -, not ", id ? id : "''");
    for (size_t i = 0; i < p->list->count; i++)
        if (strcmp(p->list->items[i].id, id) == 0)
            return fail(p, err, "duplicate question id ", id);
    tome_question *grown = realloc(p->list->items, (p->list->count + 1) * sizeof *grown);
    if (!grown) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    p->list->items = grown;
    tome_question *q = &grown[p->list->count++];
    memset(q, 0, sizeof *q);
    q->params.max_tokens = -1;
    q->line = p->line;
    if (!(q->id = strdup(id))) return tome_errorf(err, TOME_ENOMEM, "out of memory");
    for (char *word; (word = strtok_r(NULL, " \t", &save)) != NULL;)
        if (parse_setting(p, word, &q->params, err)) return err->code;
    return 0;
}

static int parse_line(parser *p, char *line, size_t len, tome_error *err)
{
    if (len >= 3 && strncmp(line, "## ", 3) == 0) return open_question(p, line + 3, err);
    if (len > 0 && line[0] == '#') return 0;
    if (p->list->count > 0) return add_text(p, line, len, err);
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)line[i]))
            return fail(p, err, "text before the first '## id' line", "");
    return 0;
}

int tome_questions_parse(const char *text, const char *name, tome_question_list *out,
                         tome_error *err)
{
    memset(out, 0, sizeof *out);
    parser p = {.name = name, .list = out};
    int rc = 0;
    const char *s = text;
    while (rc == 0 && *s) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        const char *next = nl ? nl + 1 : s + len;
        char *line = strndup(s, len);
        if (!line) return tome_errorf(err, TOME_ENOMEM, "out of memory");
        if (len > 0 && line[len - 1] == '\r') line[--len] = '\0';
        p.line++;
        rc = parse_line(&p, line, len, err);
        free(line);
        s = next;
    }
    if (rc == 0) rc = finish_question(&p, err);
    if (rc == 0 && out->count == 0)
        rc = tome_errorf(err, TOME_EINVAL, "%s: no questions (each starts with '## id')", name);
    free(p.text);
    if (rc) tome_questions_free(out);
    return rc;
}

void tome_questions_free(tome_question_list *list)
{
    for (size_t i = 0; i < list->count; i++) {
        free(list->items[i].id);
        free(list->items[i].text);
    }
    free(list->items);
    list->items = NULL;
    list->count = 0;
}
