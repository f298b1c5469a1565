/*
 * fuzz.h - what the fuzz targets of tests/fuzz/ share.
 *
 * Each fuzz_NAME.c defines LLVMFuzzerTestOneInput (and, where it needs a
 * model, a store or a server, LLVMFuzzerInitialize).  It is linked twice:
 * with libFuzzer (./configure --enable-fuzz; `make fuzz-smoke` runs it) and
 * with replay.c, a main() that feeds it every file of its committed corpus
 * tests/fuzz/corpus/NAME/, which `make check` runs with any compiler.
 * A target's inputs must never crash, leak, hang or trip a sanitizer;
 * every finding is fixed and its input added to the corpus.
 */
#ifndef TOME_FUZZ_H
#define TOME_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A private directory for this process's files, made on first use and
 * removed at exit. */
const char *fuzz_tmpdir(void);
/* Write data[0..n) to `path` (replacing it); exits when it cannot. */
void fuzz_write_file(const char *path, const void *data, size_t n);
/* $TOME_SHARED (the golden data); exits with a message when unset. */
const char *fuzz_shared(void);
/* Exits with a message: a harness that cannot set itself up. */
void fuzz_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
