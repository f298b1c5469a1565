/*
 * kvstate.h - the public interface of tome's KV state files: one saved
 * decode state of the engine on disk (the format is tome-kvcache(5)).
 *
 * A prefill of a large corpus is the expensive thing tome does once; this
 * library keeps its result.  It sits between the engine, whose state
 * sections it writes and restores (engine/v4.h), and its users, tomed and
 * tome-run.  The store's database keeps the index of these files and the
 * cache budget (store/store.h); this library knows only files.
 *
 * Errors as everywhere: 0 or a negative TOME_E* code with a message in a
 * caller-owned tome_error.
 */
#ifndef TOME_KVSTATE_H
#define TOME_KVSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* A state file holds one decode state of one model: a header (magic,
 * format version, model fingerprint, token count, numerics), a section
 * table with an XXH3-64 checksum per section, the exact token ids the state
 * consumed, and the engine's state sections (engine/v4.h), each aligned to
 * 4096 bytes so that the compressed rows can be used straight from a
 * read-only mapping.  Files are written atomically and never modified in
 * place, which is what makes mapping them safe. */

typedef struct v4_model v4_model;
typedef struct v4_state v4_state;

#define KVSTATE_FORMAT_VERSION 1

/* Write `st`, which has consumed exactly ids[0..n_ids), to `path`
 * atomically (temporary file in the same directory, fsync, rename, fsync of
 * the directory), streaming the sections without copying them.
 *
 * Restart points: `points` (NULL when n_points is 0) are earlier states
 * that `st` went through, in ascending order of position - forks taken
 * during its prefill (v4_state_fork).  Each costs the file only its small
 * parts (positions, window rings, compressor states): its compressed rows
 * are the first rows of `st`'s, which is checked (TOME_EINVAL if not). */
int kvstate_save(const char *path, const v4_state *st, const v4_state *const *points,
                 size_t n_points, const int32_t *ids, size_t n_ids, tome_error *err);

/* A save killed before its rename leaves a temporary file "PATH.tmpXXXXXX"
 * beside the target (the target itself is the old file or absent).  The
 * next save of the same PATH removes those first, so one writer at a time
 * per target path is assumed; this removes every such leftover in `dir`
 * (for a start-up, when no save is running), counting them in *removed
 * (may be NULL). */
int kvstate_remove_temps(const char *dir, size_t *removed, tome_error *err);

/* An open state file: mapped read-only, header, table and token ids
 * checked.  Used by one thread at a time; the states restored from it may
 * outlive it (the mapping stays until the last of them releases it). */
typedef struct kvstate_file kvstate_file;

/* Open `path` for model `m`.  Refuses, naming the file and the field: a bad
 * magic, a damaged header, table or id list (TOME_EFORMAT), a format
 * version other than KVSTATE_FORMAT_VERSION or another model or numerics
 * (TOME_EMISMATCH), a file shorter or longer than its header says
 * (TOME_EFORMAT).  Section checksums are checked later (kvstate_verify,
 * kvstate_restore). */
int kvstate_open(const char *path, const v4_model *m, kvstate_file **out, tome_error *err);
void kvstate_close(kvstate_file *f);
/* The token ids the state consumed (valid while `f` is open). */
int64_t kvstate_tokens(const kvstate_file *f);
const int32_t *kvstate_ids(const kvstate_file *f);
/* Restart points: point 0 is the state itself, 1..kvstate_points() the
 * restart points in ascending order; a point's ids are the first
 * kvstate_point_tokens() of kvstate_ids() (-1 for no such point). */
size_t kvstate_points(const kvstate_file *f);
int64_t kvstate_point_tokens(const kvstate_file *f, size_t point);
/* 0 when the caller's ids[0..n) start with the state's ids, else
 * TOME_EMISMATCH naming the first index that differs. */
int kvstate_match(const kvstate_file *f, const int32_t *ids, size_t n, tome_error *err);
/* The longest point (the state or a restart point) whose ids start the
 * caller's ids[0..n), into *point; TOME_EMISMATCH when none does. */
int kvstate_longest(const kvstate_file *f, const int32_t *ids, size_t n, size_t *point,
                    tome_error *err);
/* Check every section's checksum (TOME_EFORMAT names the damaged one). */
int kvstate_verify(kvstate_file *f, tome_error *err);
/* A new state equal to the saved one at `point` (0: the state itself).
 * The point's sections not yet verified are checksummed first; the
 * compressed rows are borrowed from the mapping, not copied.  The caller
 * frees the state with v4_state_free. */
int kvstate_restore(kvstate_file *f, size_t point, v4_state **out, tome_error *err);

#endif
