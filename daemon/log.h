/*
 * log.h - levelled logging to stderr or syslog (log.c).
 */
#ifndef TOMED_LOG_H
#define TOMED_LOG_H

#include "common/common.h"

enum { TOMED_LOG_ERROR, TOMED_LOG_WARN, TOMED_LOG_INFO, TOMED_LOG_DEBUG };

int tomed_log_level_parse(const char *name, int *level);
/* Where messages go from now on; safe to call again on reload. */
void tomed_log_setup(int level, int use_syslog);
void tomed_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
