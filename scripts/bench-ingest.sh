#!/bin/sh
# bench-ingest.sh BUILDDIR - ingest throughput on a generated 200 MB text
# tree (made here, in a temporary directory, never committed): MB/s of
# text and where the time goes (reading, hashing, decoding, storing with
# the FTS5 index, rendering, tokenizing with DeepSeek's tokenizer), first
# from the directory, then from a .tar.gz of it, then a re-ingest of the
# unchanged tree.  Set BENCH_INGEST_MB for another size.
set -eu
build=${1:?usage: bench-ingest.sh BUILDDIR}
top=$(cd "$(dirname "$0")/.." && pwd)
tool="$build/tools/tome-ingest"
[ -x "$tool" ] || { echo "bench-ingest: $tool is not built"; exit 1; }
tokenizer="$build/vocab/v4/tokenizer.json"
[ -f "$tokenizer" ] || sh "$top/scripts/fetch-tokenizer.sh" "$build/vocab" > /dev/null
mb=${BENCH_INGEST_MB:-200}
work=$(mktemp -d "${TMPDIR:-/tmp}/tome-bench-ingest-XXXXXX")
trap 'rm -rf "$work"' EXIT

# Source-like text: 40 directories of 50 files, ~100 KB each for 200 MB,
# lines drawn from a vocabulary of a few thousand identifiers (about what a
# large code base has), so neither compression nor the full-text index see
# something far from real code.
files=2000
per_file=$((mb * 1024 * 1024 / files))
awk -v root="$work/tree" -v files="$files" -v bytes="$per_file" 'BEGIN {
    srand(42)
    split("static int return struct const char void size_t if else for while case", kw, " ")
    for (f = 0; f < files; f++) {
        dir = sprintf("%s/dir%02d", root, f % 40)
        if (f < 40) system("mkdir -p " dir)
        path = sprintf("%s/file%04d.c", dir, f)
        n = 0
        while (n < bytes) {
            line = sprintf("    %s value_%d = compute_%d(item_%d, %d); /* step %d */",
                           kw[1 + int(rand() * 12)], int(rand() * 5000), int(rand() * 500),
                           int(rand() * 2000), int(rand() * 100), int(rand() * 1000))
            print line > path
            n += length(line) + 1
        }
        close(path)
    }
}'
total=$(du -sb "$work/tree" | cut -f1)
(cd "$work/tree" && tar -czf "$work/tree.tar.gz" .)

report() { # LABEL JSON
    awk -v label="$1" -v total="$total" '
        /"read":/ { r = $2 } /"hash":/ { h = $2 } /"decode":/ { d = $2 } /"store":/ { s = $2 }
        /"render":/ { re = $2 } /"tokenize":/ { t = $2 } /"total":/ { tt = $2 }
        /"tokens":/ { tokens = $2 }
        END {
            gsub(",", "", tokens)
            printf "%-22s %7.1f MB in %6.2f s = %6.1f MB/s; %s tokens\n", label, total / 1e6, tt,
                   total / 1e6 / tt, tokens
            printf "%-22s read %.2f s, hash %.2f s, decode %.2f s, store %.2f s, render %.2f s, tokenize %.2f s\n",
                   "", r, h, d, s, re, t
        }' "$2"
}

echo "bench-ingest: $files files, $total bytes of text"
"$tool" --db "$work/a.db" --tokenizer "$tokenizer" --budget 1000000000 src "$work/tree" > "$work/dir.json"
report "directory" "$work/dir.json"
"$tool" --db "$work/b.db" --tokenizer "$tokenizer" --budget 1000000000 src "$work/tree.tar.gz" > "$work/tgz.json"
report "tar.gz" "$work/tgz.json"
"$tool" --db "$work/a.db" --tokenizer "$tokenizer" --budget 1000000000 src "$work/tree" > "$work/again.json"
report "unchanged re-ingest" "$work/again.json"
"$tool" --db "$work/c.db" src "$work/tree" > "$work/notok.json"
report "directory, no tokens" "$work/notok.json"
