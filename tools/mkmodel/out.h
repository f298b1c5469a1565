/*
 * out.h - the output directory of tome-mkmodel (private).
 *
 * A model is built in a fresh directory beside its final name and renamed
 * into place only when every file is written and synced, so an interrupted
 * or failed run never leaves something that looks like a complete model.
 * The caller owns the mk_outdir (usually on its stack); begin fills it,
 * and exactly one of commit or abort ends it.
 */
#ifndef TOME_TOOLS_MKMODEL_OUT_H
#define TOME_TOOLS_MKMODEL_OUT_H

#include <stddef.h>

#include "common/common.h"

typedef struct mk_outdir {
    char final[4096]; /* where the model will appear */
    char tmp[4096];   /* where it is being built */
} mk_outdir;

/* Refuses a `final` that exists and is not an empty directory; creates its
 * parent directories and the temporary directory. */
int mk_outdir_begin(mk_outdir *o, const char *final, tome_error *err);
/* The path of file `name` inside the directory being built. */
int mk_outdir_file(const mk_outdir *o, const char *name, char *buf, size_t size, tome_error *err);
/* Move the finished directory to its final name (and sync the parent). */
int mk_outdir_commit(mk_outdir *o, tome_error *err);
/* Remove the temporary directory and everything written into it. */
void mk_outdir_abort(mk_outdir *o);

#endif
