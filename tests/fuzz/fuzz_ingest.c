/*
 * fuzz_ingest.c - archive ingest into a store (ingest/): the input is a
 * file handed to ingest_run as a corpus's source, so every format that
 * libarchive is asked to read (tar, zip, 7z, cpio, ar, ISO 9660, each
 * compressed or not, nested) and the text decoding behind it see hostile
 * bytes.  The limits are the defaults, made smaller so one input stays
 * fast; the corpus is deleted after each input, so the store stays small.
 * An ingest that succeeds must have stored what its report says.
 */
#include "ingest/ingest.h"
#include "store/store.h"
#include "tests/fuzz/fuzz.h"

#include <stdio.h>

static store *db;
static char source[128];
static ingest_options opts;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char path[128];
    snprintf(path, sizeof path, "%s/fuzz.db", fuzz_tmpdir());
    snprintf(source, sizeof source, "%s/input", fuzz_tmpdir());
    tome_error err = {0};
    if (store_open(path, &db, &err) != 0) fuzz_die("%s", err.msg);
    ingest_options_default(&opts);
    opts.limits.max_entries = 256;
    opts.limits.max_file_bytes = 1 << 20;
    opts.limits.max_total_bytes = 4 << 20;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write_file(source, data, size);
    ingest_report *rep;
    tome_error err = {0};
    if (ingest_run(db, "fuzz", source, &opts, &rep, &err) == 0) {
        int64_t latest;
        if (store_version_latest(db, rep->corpus_id, &latest, &err) != 0 ||
            latest != rep->version_id)
            fuzz_die("ingest reported version %lld, the store has another",
                     (long long)rep->version_id);
        ingest_report_free(rep);
    }
    if (store_corpus_delete(db, "fuzz", &err) != 0 && err.code != TOME_ENOTFOUND)
        fuzz_die("%s", err.msg);
    return 0;
}
