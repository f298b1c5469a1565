#!/bin/sh
# Hostile input, per tome-ingest(1)'s policy: unsafe entries (path
# traversal, absolute paths, symbolic and hard links, names that are not
# UTF-8) are skipped with a warning; limit violations (a zip bomb, too many
# entries, nesting too deep) and damaged archives (truncated, corrupted)
# fail the whole ingest with an error naming the entry, leaving the
# previous version intact.  In every case nothing is written outside the
# store.  The archives are built here with the real tools.
set -eu
tool="$TOME_BUILDDIR/tools/tome-ingest"
for t in bsdtar zip 7z gzip; do
    command -v "$t" >/dev/null 2>&1 || { echo "FAIL: $t is missing (sh scripts/install-deps.sh)"; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/tome-hostile-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/make" "$work/run" "$work/home" "$work/tmp" "$work/run/deep"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
db="$work/run/tome.db"
# tome-ingest runs in a sandbox of empty directories: the checks at the end
# look for anything it wrote besides the store.
ingest() (cd "$work/run/deep" && HOME="$work/home" TMPDIR="$work/tmp" "$tool" --db "$db" "$@")

cd "$work/make"
mkdir good && printf 'the good version\n' > good/keep.txt
ingest h "$work/make/good" > /dev/null
ingest --render h > "$work/before.render"

# skipped NAME ARCHIVE PATH REASON: ingest ARCHIVE as a new corpus; PATH
# must be skipped with REASON and a warning, and the rest kept.
skipped() {
    if ! ingest "$1" "$work/make/$2" > "$work/$1.json" 2> "$work/$1.err"; then
        fail "$1: the ingest failed instead of skipping: $(cat "$work/$1.err")"
        return
    fi
    grep -qF "\"skipped $3: $4" "$work/$1.json" || fail "$1: no warning for $3 ($4)"
    grep -qF '"path": "ok.txt"' "$work/$1.json" || fail "$1: the safe entry was not kept"
}
printf 'ok\n' > ok.txt
printf 'payload\n' > payload.txt
bsdtar -cf trav.tar -P -s ',^payload,../../escaped,' ok.txt payload.txt
skipped trav-tar trav.tar ../../escaped.txt "the path escapes the archive root"
bsdtar --format zip -cf trav.zip -P -s ',^payload,a/../../escaped,' ok.txt payload.txt
skipped trav-zip trav.zip a/../../escaped.txt "the path escapes the archive root"
mkdir -p abs && cp payload.txt abs/
bsdtar -cPf abs.tar ok.txt "$work/make/abs/payload.txt"
rm -r abs
skipped abs abs.tar "$work/make/abs/payload.txt" "the path is absolute"
ln -s /etc/passwd sym
ln ok.txt hard
bsdtar -cf links.tar ok.txt sym hard
skipped symlink links.tar sym "symbolic link to /etc/passwd"
skipped hardlink links.tar hard "hard link to ok.txt"
zip -qy links.zip ok.txt sym
skipped symlink-zip links.zip sym "symbolic link to /etc/passwd"
mkdir names && cp ok.txt names/ && printf 'x\n' > "names/$(printf 'bad\377').txt"
bsdtar -cf names.tar -C names . 2> /dev/null # it warns about the name, as it should
# (JSON writes the backslash of the escaped name as \\)
skipped badname names.tar './bad\\xff.txt' "the name is not valid UTF-8"
(cd names && zip -q ../names.zip ./*)
skipped badname-zip names.zip 'bad\\xff.txt' "the name is not valid UTF-8"

# The same policy in a directory: links are not followed, FIFOs not read.
mkdir tree && cp ok.txt tree/ && ln -s /etc tree/etc-link && ln -s ../payload.txt tree/up && mkfifo tree/fifo
skipped dir-symlink tree etc-link "symbolic link, not followed"
skipped dir-symlink-up tree up "symbolic link, not followed"
skipped dir-fifo tree fifo "device, FIFO or socket"

# refused ERRTEXT [OPTIONS] h SOURCE: the ingest into corpus h must fail,
# say ERRTEXT on stderr, and leave h exactly as it was.
refused() {
    want=$1
    shift
    if ingest "$@" > /dev/null 2> "$work/err"; then
        fail "accepted: $*"
        return
    fi
    grep -qF -- "$want" "$work/err" || fail "$*: unclear error: $(cat "$work/err")"
    ingest --render h > "$work/after.render"
    cmp -s "$work/before.render" "$work/after.render" || fail "$*: corpus h changed"
}
head -c 50000000 /dev/zero > zeros.txt
zip -q bomb.zip zeros.txt
rm zeros.txt
refused "entry zeros.txt: bomb.zip expands more than 200:1" h "$work/make/bomb.zip"
# The bomb was abandoned early: the bytes it reports are far below 50 MB.
out=$(sed -n 's/.*(\([0-9]*\) bytes out of.*/\1/p' "$work/err")
[ -n "$out" ] && [ "$out" -lt 5000000 ] || fail "the bomb was inflated to ${out:-?} bytes"

mkdir many
i=0
while [ $i -lt 10000 ]; do : > "many/f$i.txt"; i=$((i + 1)); done
printf 'last\n' > many/zz.txt
bsdtar -cf many.tar -C many .
refused "more than 10000 entries (limit max_entries)" --max-entries 10000 h "$work/make/many.tar"
# Within the default limits the same archive is an ordinary ingest.
ingest many "$work/make/many.tar" > "$work/many.json" || fail "10001 entries were refused"
grep -q '"documents": 10001' "$work/many.json" || fail "10001 entries did not give 10001 documents"

cp ok.txt level0.txt
bsdtar -cf n1.tar level0.txt
for i in 2 3 4 5; do bsdtar -cf "n$i.tar" "n$((i - 1)).tar"; done
refused "entry n4.tar/n3.tar/n2.tar/n1.tar: an archive nested more than 3 levels deep" \
    h "$work/make/n5.tar"
ingest nest4 "$work/make/n4.tar" > "$work/nest.json" || fail "3 nested levels were refused"
grep -qF '"path": "n3.tar/n2.tar/n1.tar/level0.txt"' "$work/nest.json" || fail "nested path"

printf 'some text for the archive\n' > t1.txt
cp t1.txt t2.txt
bsdtar -czf t.tgz t1.txt t2.txt
zip -q t.zip t1.txt t2.txt
7z a t.7z t1.txt t2.txt > /dev/null
bsdtar -cf t.tar t1.txt t2.txt
for f in t.tgz t.zip t.7z t.tar; do
    size=$(wc -c < "$f")
    head -c $((size / 2)) "$f" > "cut-$f"
    refused "cut-$f" h "$work/make/cut-$f"
done
cp t.tar bad-header.tar # damage the second header's name (its checksum no longer matches)
printf 'XXXXXXXX' | dd of=bad-header.tar bs=1 seek=1030 conv=notrunc 2> /dev/null
refused "bad-header.tar: damaged archive" h "$work/make/bad-header.tar"
cp t.7z bad-crc.7z # damage the packed data: the CRC check catches it
printf 'XXXXXXXX' | dd of=bad-crc.7z bs=1 seek=34 conv=notrunc 2> /dev/null
refused "bad-crc.7z" h "$work/make/bad-crc.7z"

# Nothing was written anywhere but the store, and no traversal target
# exists.
extra=$(cd "$work" && find run home tmp -mindepth 1 ! -path 'run/deep' ! -name 'tome.db*' | head)
[ -z "$extra" ] || fail "files written outside the store: $extra"
for p in "$work/escaped.txt" "$work/run/escaped.txt" "$work/make/escaped.txt" \
    "$work/make/abs/payload.txt"; do
    [ ! -e "$p" ] || fail "$p was written"
done

[ "$failures" -eq 0 ] || exit 1
echo "hostile archives handled per policy"
