#!/bin/sh
# test_model_fetch.sh - tome-model fetch and verify against a local stand-in
# for the Hugging Face hub (tests/hub-server.mjs) serving a tiny model made
# by tome-mkmodel: a full fetch (paged listing, redirects, nested paths),
# a transfer dropped mid-file and resumed (within one run, and by a second
# run after a failed one), a wrong checksum refused, a 401 explained, and
# verify finding damage.  The server computes the hashes itself, and the
# fetched files are compared byte for byte with the served ones.
set -u
build=${TOME_BUILDDIR:?run through make check}
src=${TOME_SRCDIR:?run through make check}
tool=$build/tools/tome-model
for prog in "$tool" "$build/tools/tome-mkmodel" node cmp; do
    command -v "$prog" >/dev/null 2>&1 || { echo "FAIL: $prog is missing"; exit 1; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tome-fetch-XXXXXX")
servers=""
failures=0
checks=0
cleanup() {
    for pid in $servers; do kill "$pid" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
check() { what=$1; shift; checks=$((checks + 1)); "$@" || fail "$what"; }
has() { grep -q -- "$2" "$1"; }

repo=tome-test/tiny
"$build/tools/tome-mkmodel" --preset tiny --seed 3 --shard-size 8M -o "$tmp/src" 2>/dev/null ||
    { echo "FAIL: tome-mkmodel"; exit 1; }
mkdir -p "$tmp/src/inference" && echo "nested file" >"$tmp/src/inference/notes.txt"
n_files=$(cd "$tmp/src" && find . -type f | wc -l)
[ "$(ls "$tmp/src"/*.safetensors | wc -l)" -ge 2 ] || { echo "FAIL: want several shards"; exit 1; }
shard=$(cd "$tmp/src" && ls *.safetensors | head -1)

# start_hub NAME ARGS...: a server in the background; its port in $port.
# The port line is read through a FIFO, so nothing waits on a clock.
start_hub() {
    name=$1
    shift
    mkfifo "$tmp/$name.fifo"
    node "$src/tests/hub-server.mjs" "$tmp/src" "$repo" "$tmp/$name.log" "$@" \
        >"$tmp/$name.fifo" 2>"$tmp/$name.err" &
    servers="$servers $!"
    read -r port <"$tmp/$name.fifo" || { echo "FAIL: hub server $name did not start"; exit 1; }
    HF_ENDPOINT=http://127.0.0.1:$port
    export HF_ENDPOINT
}

# same_tree DIR: every served file is in DIR with the same bytes.
same_tree() {
    (cd "$tmp/src" && find . -type f) | while read -r f; do
        cmp -s "$tmp/src/$f" "$1/$f" || { echo "differs: $f"; return 1; }
    done
}

fetch() { "$tool" fetch "$repo" "$@" 2>"$tmp/stderr"; }

# 1. A transfer dropped mid-file is resumed within the run.
unset HF_TOKEN
start_hub drop --drop "$shard"
check "fetch with a dropped transfer succeeds" fetch "$tmp/a"
check "the dropped file was resumed with a range request" \
    grep -Eq "^GET /cdn/$shard bytes=[1-9][0-9]*-" "$tmp/drop.log"
check "the listing was read page by page" has "$tmp/drop.log" "cursor=2"
check "every file arrived intact" same_tree "$tmp/a"
check "no incomplete marker" test ! -e "$tmp/a/.tome-incomplete"
check "no .part left" test -z "$(find "$tmp/a" -name '*.part')"
check "verify passes" "$tool" verify "$tmp/a" >/dev/null
check "the file list records every file" \
    test "$(grep -c '"path"' "$tmp/a/.tome-fetch.json")" -eq "$n_files"

# 2. Interrupted without retries: the directory says so, a second run resumes.
start_hub cut --drop "$shard"
fetch "$tmp/b" --retries 0 --jobs 1
check "a dropped transfer without retries fails" test $? -ne 0
check "the failure says how to resume" has "$tmp/stderr" "run the fetch again"
check "the incomplete marker stays" test -e "$tmp/b/.tome-incomplete"
check "the partial file stays" test -s "$tmp/b/$shard.part"
"$tool" verify "$tmp/b" 2>"$tmp/verr" >/dev/null
check "verify refuses an incomplete directory" test $? -ne 0
check "verify says it is incomplete" has "$tmp/verr" "incomplete"
check "the second run completes" fetch "$tmp/b" --retries 0
check "it resumed from the partial file" \
    test "$(grep -Ec "^GET /cdn/$shard bytes=[1-9][0-9]*-" "$tmp/cut.log")" -eq 1
check "the resumed directory is intact" same_tree "$tmp/b"
check "and complete" "$tool" verify "$tmp/b" >/dev/null

# 3. A file whose hash is not the listed one is refused and deleted.
start_hub wrong --wrong-sha "$shard"
fetch "$tmp/c"
check "a wrong checksum fails the fetch" test $? -ne 0
check "the error names the mismatch" has "$tmp/stderr" "checksum mismatch"
check "the bad file is not kept" test ! -e "$tmp/c/$shard" -a ! -e "$tmp/c/$shard.part"
check "the directory stays marked incomplete" test -e "$tmp/c/.tome-incomplete"

# 3b. A listing that names a file a hostile hub should not: refused before
# anything is downloaded or written.
# refused NAME PATH MESSAGE: a hub listing PATH besides the model.
refused() {
    start_hub "$1" --list-also "$2"
    fetch "$tmp/$1"
    check "listing '$2' fails the fetch" test $? -ne 0
    check "the error says why ($3): $(cat "$tmp/stderr")" has "$tmp/stderr" "$3"
    check "nothing was written for '$2'" test -z "$(ls -A "$tmp/$1")"
}
refused own .tome-fetch.json ".tome-fetch.json is the name of tome-model's own record"
refused part "$shard.part" "$shard.part is where $shard is downloaded to"
refused twice config.json "config.json is listed twice"
refused filedir config.json/x "config.json is listed as a file and as a directory"
refused escape "$(printf 'a\033]0;owned\007b')" "refusing the file name"
# A next page on another host (the request for it would carry HF_TOKEN).
start_hub elsewhere --next-host localhost
HF_TOKEN=s3cret fetch "$tmp/elsewhere"
check "a listing continued elsewhere fails the fetch" test $? -ne 0
check "the error names where: $(cat "$tmp/stderr")" has "$tmp/stderr" "the listing continues at http://localhost:"
check "only the first page was asked for" test "$(grep -c '/tree/' "$tmp/elsewhere.log")" -eq 1

# 4. 401: explained, with and without a token; the right token works.
start_hub auth --token s3cret
fetch "$tmp/d"
check "401 without a token fails" test $? -ne 0
check "the 401 names HF_TOKEN" has "$tmp/stderr" "HF_TOKEN is not set"
check "the 401 is reported as such" has "$tmp/stderr" "HTTP 401"
HF_TOKEN=wrong fetch "$tmp/d"
check "a rejected token says so" has "$tmp/stderr" "HF_TOKEN was sent but not accepted"
check "the right token is accepted" env HF_TOKEN=s3cret "$tool" fetch "$repo" "$tmp/d" 2>/dev/null
check "the token's fetch is intact" same_tree "$tmp/d"

# 5. verify finds damage, in an LFS file and in a plain one.
printf 'X' | dd of="$tmp/a/$shard" bs=1 seek=100 conv=notrunc 2>/dev/null
echo " " >>"$tmp/a/config.json"
"$tool" verify "$tmp/a" 2>"$tmp/verr" >/dev/null
check "verify fails on damage" test $? -ne 0
check "verify names the damaged shard" has "$tmp/verr" "$shard: checksum mismatch"
check "verify names the grown config.json" has "$tmp/verr" "config.json: .* bytes, expected"

# 6. Usage errors and another repository's directory.
"$tool" fetch "not-a-repo" "$tmp/e" 2>"$tmp/stderr"
check "a bad repository name fails" has "$tmp/stderr" "not a repository name"
"$tool" fetch other/repo "$tmp/a" 2>"$tmp/stderr"
check "another repository's directory is refused" has "$tmp/stderr" "holds a fetch of $repo"

echo "$checks checks, $failures failed"
[ "$failures" -eq 0 ]
