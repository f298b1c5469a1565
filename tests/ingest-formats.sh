#!/bin/sh
# Every archive format tome-ingest promises, built here by the real tools,
# ingests to the same corpus as the directory it was made from.  The
# expected rendering is computed in this script with awk and iconv from the
# files themselves, independently of tome.  A missing tool is a failure
# (scripts/install-deps.sh installs them all), never a skip.
set -eu
tool="$TOME_BUILDDIR/tools/tome-ingest"
for t in bsdtar zip 7z cpio xorriso ar gzip xz iconv awk; do
    command -v "$t" >/dev/null 2>&1 || { echo "FAIL: $t is missing (sh scripts/install-deps.sh)"; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/tome-formats-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# The tree: text in several encodings and line endings, an empty file, a
# file big enough to be compressed (so Deflate64 is really used), and what
# the default filters and text detection must leave out.
mkdir -p tree/sub/deep tree/.git tree/node_modules/m
printf 'alpha\nbeta\n' > tree/a.txt
printf 'x = 1\r\ny = "caf\303\251"\r\n' > tree/sub/b.py
printf 'no newline at the end' > tree/sub/deep/c.md
: > tree/sub/empty.txt
printf 'na\357ve fa\347ade\n' > tree/sub/latin1.txt
seq 1 3000 > tree/sub/numbers.txt
printf '[core]\n' > tree/.git/config
printf 'module.exports = 1;\n' > tree/node_modules/m/index.js
printf 'bin\000ary\n' > tree/sub/blob.bin
mkdir flat
cp tree/a.txt tree/sub/b.py tree/sub/latin1.txt flat/

# expected LISTFILE [FORMAT]: render "PATH<TAB>FILE" lines, sorted bytewise
# by PATH, the way tome renders documents: a header, every line as FORMAT
# (an awk printf format of the line number and the line; by default
# "N: line"), a footer.
expected() {
    format=${2:-'%d: %s\n'}
    LC_ALL=C sort -t "$(printf '\t')" -k1,1 "$1" | while IFS="$(printf '\t')" read -r path file; do
        case "$path" in *latin1.txt) conv="iconv -f ISO-8859-1 -t UTF-8" ;; *) conv=cat ;; esac
        lines=$($conv < "$file" | awk 'END { print NR }')
        printf '<document path="%s" lines="%d">\n' "$path" "$lines"
        $conv < "$file" | awk -v format="$format" '{ printf format, NR, $0 }'
        printf '</document>\n'
    done
}
# list DIR PREFIX: the text files of DIR that tome keeps, as PATH<TAB>FILE.
list() {
    (cd "$1" && find . -type f ! -path './.git/*' ! -path './node_modules/*' ! -name '*.bin' |
        sed 's|^\./||') | while read -r f; do printf '%s%s\t%s/%s\n' "$2" "$f" "$1" "$f"; done
}
list tree "" > tree.list
expected tree.list > tree.expected
list flat "" > flat.list
expected flat.list > flat.expected

# check NAME SOURCE EXPECTED: ingest SOURCE as corpus NAME, compare.
check() {
    if ! "$tool" --db tome.db "$1" "$2" > "$1.json" 2> "$1.err"; then
        fail "$1: ingest failed: $(cat "$1.err")"
        return
    fi
    "$tool" --db tome.db --render "$1" > "$1.render"
    cmp -s "$1.render" "$3" || { fail "$1: corpus differs from the expected one"; diff "$3" "$1.render" | head -20; }
}

check dir tree tree.expected
grep -q '"path": "sub/blob.bin"' dir.json || fail "dir: the binary file is not reported as skipped"
(
    cd tree
    bsdtar -cf ../t.tar .
    bsdtar -czf ../t.tar.gz .
    bsdtar -cjf ../t.tar.bz2 .
    bsdtar -cJf ../t.tar.xz .
    bsdtar --zstd -cf ../t.tar.zst .
    bsdtar --lz4 -cf ../t.tar.lz4 .
    zip -qr ../t.zip .
    7z a -tzip -mm=Deflate64 ../t64.zip . > /dev/null
    7z a ../t.7z . > /dev/null
    find . | cpio -o -H newc > ../t.cpio 2> /dev/null
    xorriso -as mkisofs -quiet -R -o ../t.iso . 2> /dev/null
)
(cd flat && ar rc ../t.a a.txt b.py latin1.txt)
for f in t.tar t.tar.gz t.tar.bz2 t.tar.xz t.tar.zst t.tar.lz4 t.zip t.7z t.cpio t.iso; do
    check "$f" "$f" tree.expected
done
check ar t.a flat.expected

# Deflate64: libarchive reads it only in some versions.  bsdtar uses the
# same libarchive, so it says which to expect: the same corpus, or a clear
# error naming the entry and the method.
7z l -slt t64.zip | grep -q 'Method = Deflate64' || fail "7z did not write Deflate64"
if bsdtar -xOf t64.zip > /dev/null 2>&1; then
    check t64.zip t64.zip tree.expected
elif "$tool" --db tome.db t64.zip t64.zip > /dev/null 2> t64.err; then
    fail "t64.zip: ingested although libarchive cannot read Deflate64"
else
    grep -q 'sub/numbers.txt.*compression method' t64.err || fail "t64.zip: unclear error: $(cat t64.err)"
fi

# A single compressed file, and archives nested in an archive.
gzip -c tree/sub/deep/c.md > c.md.gz
printf 'c.md\ttree/sub/deep/c.md\n' > single.list
expected single.list > single.expected
check single c.md.gz single.expected
cp t.zip inner.zip
xz -c t.tar > inner.tar.xz
zip -q outer.zip inner.zip inner.tar.xz t.tar.gz
{ list tree inner.zip/; list tree inner.tar.xz/; list tree t.tar.gz/; } > nested.list
expected nested.list > nested.expected
check nested outer.zip nested.expected

# Without line numbers the lines are the files' own.
"$tool" --db tome.db --render --no-line-numbers dir > plain.render
expected tree.list '%.0s%s\n' > plain.expected
cmp -s plain.render plain.expected || fail "--no-line-numbers rendering differs"

# Bad usage exits 2, a failed operation 1 with the error on stderr.
status=0
"$tool" --db tome.db onlyone > /dev/null 2>&1 || status=$?
[ "$status" -eq 2 ] || fail "bad usage exited $status, not 2"
status=0
"$tool" --db tome.db --render no-such-corpus > /dev/null 2> missing.err || status=$?
[ "$status" -eq 1 ] && grep -q 'no-such-corpus' missing.err || fail "a missing corpus: exit $status"

# Full-text and regex search give path:line.
"$tool" --db tome.db --search 'beta' t.7z > search.out
[ "$(cat search.out)" = "a.txt:2: beta" ] || fail "search: $(cat search.out)"
"$tool" --db tome.db --grep '^29[0-9]{2}$' --max-hits 3 t.iso > grep.out
[ "$(cat grep.out)" = "$(printf 'sub/numbers.txt:2900: 2900\nsub/numbers.txt:2901: 2901\nsub/numbers.txt:2902: 2902')" ] ||
    fail "grep: $(cat grep.out)"

[ "$failures" -eq 0 ] || exit 1
echo "all formats give the expected corpus"
