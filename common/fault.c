/*
 * fault.c - the kill points of fault.h.
 */
#include "common/fault.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char armed_name[64];
static long armed_after; /* 0: no point is armed */
static atomic_long passes;

static void read_environment(void)
{
    const char *v = getenv("TOME_TEST_DIE_AFTER");
    const char *colon = v ? strrchr(v, ':') : NULL;
    if (!colon || colon == v || (size_t)(colon - v) >= sizeof armed_name) return;
    char *end;
    long n = strtol(colon + 1, &end, 10);
    if (*end || n < 1) return;
    memcpy(armed_name, v, (size_t)(colon - v));
    armed_name[colon - v] = '\0';
    armed_after = n;
}

void tome_fault_point(const char *name)
{
    pthread_once(&once, read_environment);
    if (!armed_after || strcmp(name, armed_name) != 0) return;
    if (atomic_fetch_add(&passes, 1) + 1 != armed_after) return;
    fprintf(stderr, "tome: killed at %s:%ld (TOME_TEST_DIE_AFTER)\n", name, armed_after);
    kill(getpid(), SIGKILL);
}
