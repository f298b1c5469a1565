/*
 * engine_answer.c - a question's answer text, from decoded pieces to what
 * the client receives.
 *
 * Text arrives from the detokenizer always valid UTF-8 (ill-formed bytes
 * become U+FFFD); here it is held back where it could be the start of a
 * stop string, cut at a stop string when one appears, appended to the
 * answer and, for streaming questions, posted to the loop thread piece by
 * piece.
 */
#include "daemon/engine_internal.h"

#include <stdlib.h>
#include <string.h>

static int append_answer(active_ask *a, const char *text, size_t len)
{
    tomed_ask *ask = a->ask;
    if (ask->answer_len + len + 1 > a->answer_cap) {
        size_t cap = (a->answer_cap ? a->answer_cap * 2 : 4096) + len;
        char *grown = realloc(ask->answer, cap);
        if (!grown) return TOME_ENOMEM;
        ask->answer = grown;
        a->answer_cap = cap;
    }
    memcpy(ask->answer + ask->answer_len, text, len);
    ask->answer_len += len;
    ask->answer[ask->answer_len] = '\0';
    return 0;
}

static void emit(engine_local *e, active_ask *a, size_t len)
{
    if (len == 0) return;
    append_answer(a, a->held, len);
    if (a->ask->stream) tomed_ask_post_text(a->ask, a->held, len);
    memmove(a->held, a->held + len, a->held_len - len);
    a->held_len -= len;
}

/* Length of the longest tail of `s` that is a proper prefix of `stop`. */
static size_t partial_stop(const char *s, size_t n, const char *stop)
{
    size_t m = strlen(stop);
    for (size_t k = m - 1 < n ? m - 1 : n; k > 0; k--)
        if (memcmp(s + n - k, stop, k) == 0) return k;
    return 0;
}

/* New text: finish at a stop string, else send what cannot begin one. */
int engine_take_text(engine_local *e, active_ask *a, const char *text, size_t len)
{
    char *grown = realloc(a->held, a->held_len + len + 1);
    if (!grown) return TOME_ENOMEM;
    a->held = grown;
    memcpy(a->held + a->held_len, text, len);
    a->held_len += len;
    tomed_ask *ask = a->ask;
    size_t keep = 0;
    for (int i = 0; i < ask->n_stop; i++) {
        char *hit = memmem(a->held, a->held_len, ask->stop[i], strlen(ask->stop[i]));
        if (hit) {
            a->held_len = (size_t)(hit - a->held);
            emit(e, a, a->held_len);
            ask->finish_reason = "stop_string";
            return 1;
        }
        size_t k = partial_stop(a->held, a->held_len, ask->stop[i]);
        if (k > keep) keep = k;
    }
    emit(e, a, a->held_len - keep);
    return 0;
}

/* The answer is over (end of sequence or max_tokens): a character the
 * last token left unfinished becomes U+FFFD, so the answer stays valid
 * UTF-8 and keeps its end; then whatever was held for stop strings. */
void engine_flush_answer(engine_local *e, active_ask *a)
{
    const char *text;
    size_t len;
    if (a->detok && !(a->ask->finish_reason && strcmp(a->ask->finish_reason, "stop_string") == 0)) {
        v4_detok_flush(a->detok, &text, &len);
        if (len) engine_take_text(e, a, text, len);
    }
    emit(e, a, a->held_len);
}
