#!/bin/sh
# bench-tokenizer.sh BUILDDIR - encoding speed of tome's tokenizer, single
# thread, beside the reference's figure.
#
# Inputs: the golden long.txt repeated 50 times (10 MB of mixed text: prose,
# code, numbers, CJK, emoji, whitespace; the first row of the reference table
# in shared/golden/tokenizer/README.md) and this repository's own sources
# repeated to about 10 MB.  Each is encoded in one call, best of 3; only the
# encode call is timed (tome-tokenize --stats), not loading or printing.
# The reference (Hugging Face tokenizers 0.23.2, Rust, one thread) did the
# first input at 373,000 tokens/s, 1.07 MB/s, on the development machine.
set -eu
build=${1:?usage: bench-tokenizer.sh BUILDDIR}
top=$(cd "$(dirname "$0")/.." && pwd)
shared=${TOME_SHARED:-$top/../shared}
tool=$build/tools/tome-tokenize
[ -x "$tool" ] || { echo "bench-tokenizer: $tool is not built (make first)" >&2; exit 1; }
tokenizer=${TOME_TOKENIZER_DIR:-$build/vocab}/v3/tokenizer.json
[ -f "$tokenizer" ] || sh "$top/scripts/fetch-tokenizer.sh" "${TOME_TOKENIZER_DIR:-$build/vocab}"
long=$shared/golden/tokenizer/long.txt
[ -f "$long" ] || { echo "bench-tokenizer: $long is missing (set TOME_SHARED)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
i=0
while [ $i -lt 50 ]; do cat "$long"; i=$((i + 1)); done >"$work/mixed.txt"
find "$top" -path "$top/_build*" -prune -o -type f \( -name '*.[ch]' -o -name '*.md' -o -name '*.am' \) \
    -print | sort | xargs cat >"$work/unit.txt"
: >"$work/code.txt"
while [ "$(wc -c <"$work/code.txt")" -lt 10000000 ]; do cat "$work/unit.txt" >>"$work/code.txt"; done

# Best of 3 runs: prints "MB/s tokens/s bytes ids".
best_of_3() {
    for run in 1 2 3; do
        "$tool" --tokenizer "$tokenizer" --special --stats <"$1" 2>&1 >/dev/null
    done | awk '$10 + 0 > best { best = $10; line = $8 " " $10 " " $2 " " $4 } END { print line }'
}

report() {
    set -- $2 "$1"
    printf '%-22s %11s bytes %10s ids %8.2f MB/s %11.0f tokens/s\n' "$5" "$3" "$4" "$1" "$2"
}

mixed=$(best_of_3 "$work/mixed.txt")
report "long.txt x 50" "$mixed"
report "repository sources" "$(best_of_3 "$work/code.txt")"
echo "reference (HF tokenizers, 1 thread): long.txt x 50 at 373000 tokens/s, 1.07 MB/s"
echo "$mixed" | awk '{ printf "speed-up over the reference on long.txt x 50: %.1fx\n", $2 / 373000 }'
