#!/bin/sh
# A full disk and damaged files under a real tomed.
#
# The state directory is a small tmpfs, mounted in a private mount
# namespace (the script runs itself again under unshare(1), as root or in a
# user namespace), and filled up to a few pages before each operation: an
# upload, a server-path ingest, SQLite writes (a corpus, a token) and the
# state file save of a prefill.  Each must fail with an answer that says
# so, leave the committed data and the daemon as they were, and succeed
# once there is room again.  Then a damaged page of tome.db must be found
# at start and reported (test_faults_prefill.sh damages a saved state).
if [ -z "${TOME_FAULTS_NS:-}" ]; then
    TOME_FAULTS_NS=1
    export TOME_FAULTS_NS
    if [ "$(id -u)" -eq 0 ]; then ns=-m; else ns=-rm; fi
    exec unshare "$ns" sh "$0" "$@"
fi
. "$TOME_SRCDIR/tests/daemon-lib.sh"
. "$TOME_SRCDIR/tests/faults-lib.sh"
require_model
faults=0

mkdir -m 700 "$tmp/state"
mount -t tmpfs -o size=4m,mode=0700 tome-test "$tmp/state" ||
    { echo "FAIL: cannot mount a tmpfs in a private mount namespace"; exit 1; }
trap 'kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null; daemon_pid=""
      umount "$tmp/state"; cleanup' EXIT
# The model's fit check wants disk for a question at max_context.
echo "max_context = 2048" >>"$tmp/tomed.conf"

mkdir "$tmp/docs" "$tmp/big"
i=1
while [ "$i" -le 20 ]; do
    printf 'Rule %d: the parser accepts token %d after its prefix.\n' "$i" "$i" >"$tmp/docs/r$i.txt"
    i=$((i + 1))
done
# 150 kB of text that does not compress to nothing.
awk 'BEGIN { x = 1; for (i = 0; i < 6000; i++) { x = (x * 1103515245 + 12345) % 2147483648;
     printf "line %d says %d\n", i, x } }' >"$tmp/big/big.txt"
tar -C "$tmp/big" -cf "$tmp/big.tar" big.txt

# fill LEFT: fill the state directory's disk but LEFT kilobytes.
fill() {
    rm -f "$tmp/state/filler"
    dd if=/dev/zero of="$tmp/state/filler" bs=64k 2>/dev/null
    truncate -s "-$1k" "$tmp/state/filler"
}
unfill() { rm -f "$tmp/state/filler"; }

# refused WHAT STATUS-REGEX: the last answer failed as a full disk should.
refused() {
    checks=$((checks + 1))
    faults=$((faults + 1))
    if echo "$code" | grep -Eq "$2" && grep -q '"error"' "$tmp/body"; then :; else
        fail "$1 on a full disk answered $code: $(head -c 300 "$tmp/body")"
    fi
}
call() {
    code=$(curl -s -o "$tmp/body" -w '%{http_code}' --unix-socket "$sock" "$@")
}
intact() {
    unix_http 200 /v1/corpora/docs && body_has '"version":1' && body_has '"documents":20'
    unix_http 200 "/v1/corpora/docs/search?q=%22token%207%22" && body_has '"path":"r7.txt"'
}

start_normal
unix_http 200 /v1/corpora/docs/ingest -d "{\"path\":\"$tmp/docs\"}"

fill 64
call http://tome/v1/corpora/docs/ingest -H 'Content-Type: application/octet-stream' \
    --data-binary "@$tmp/big.tar"
refused "an upload" '^(500|507)$'
check "the failed upload left nothing in tmp/" [ -z "$(ls "$tmp/state/tmp")" ]
intact

fill 64
call http://tome/v1/corpora/docs/ingest -d "{\"path\":\"$tmp/big\"}"
refused "a server-path ingest" '^(500|507)$'
intact

# Small SQLite writes may still fit in the pages the database has: each
# is done or refused, and what the daemon says afterwards agrees.
fill 0
call http://tome/v1/corpora -d '{"name":"small"}'
faults=$((faults + 1))
case "$code" in
201) unix_http 200 /v1/corpora/small ;;
500 | 507) unix_http 404 /v1/corpora/small ;;
*) fail "a new corpus on a full disk answered $code: $(head -c 300 "$tmp/body")" ;;
esac
call http://tome/v1/tokens -d '{"name":"t","scopes":[{"corpus":"docs","rights":"read"}]}'
faults=$((faults + 1))
case "$code" in
201) unix_http 200 /v1/tokens && body_has '"name":"t"' ;;
500 | 507) unix_http 200 /v1/tokens && ! grep -q '"name":"t"' "$tmp/body" ||
    fail "a refused token is listed" ;;
*) fail "a new token on a full disk answered $code: $(head -c 300 "$tmp/body")" ;;
esac
intact

fill 8
unix_http 202 /v1/corpora/docs/prefill -X POST
job=$(json_field id)
job_over() {
    curl -s -o "$tmp/job" --unix-socket "$sock" "http://tome/v1/jobs/$job" &&
        grep -Eq '"status":"(failed|done)"' "$tmp/job"
}
wait_for "the prefill on a full disk ends" job_over
# The job fails and says why (a prefill reported done would be taken as
# saved); the state lives on in memory, and once there is room a prefill
# saves it without running the model again.
checks=$((checks + 1))
faults=$((faults + 1))
grep -q '"status":"failed"' "$tmp/job" && grep -q 'could not be saved' "$tmp/job" &&
    grep -Eiq 'space|write' "$tmp/job" ||
    fail "a prefill whose state cannot be saved: $(head -c 300 "$tmp/job")"
intact
unfill
unix_http 202 /v1/corpora/docs/prefill -X POST
job=$(json_field id)
wait_for "the prefill with room again ends" job_over
check "the state held in memory is saved" grep -q '"status":"done"' "$tmp/job"
check "without running the model again" grep -q "job $job saves the state tomed holds in memory" \
    "$tmp/tomed.log"
unix_http 200 /v1/corpora/docs && body_has '"state":\{"id":"[0-9]+"'
stop_tomed

unfill
start_normal
unix_http 200 /v1/corpora/more/ingest -H 'Content-Type: application/octet-stream' \
    --data-binary "@$tmp/big.tar" && body_has '"version":1'
intact
stop_tomed

# A damaged page of tome.db: found and reported.  The page is the root of
# the documents table, zeroed (as a lost write leaves it): a page on the
# freelist, which a fixed offset may hit, holds nothing to find.
set -- $(python3 -c 'import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(db.execute("PRAGMA page_size").fetchone()[0],
      db.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", ("documents",)).fetchone()[0])
db.close()' "$tmp/state/tome.db")
check "the documents table has a root page to damage" [ "${2:-0}" -gt 1 ]
dd if=/dev/zero of="$tmp/state/tome.db" bs="$1" seek=$(($2 - 1)) count=1 conv=notrunc 2>/dev/null
launch_tomed --config "$tmp/tomed.conf" --model "$model" --log-level info
# settled: tomed is ready, or it has exited (a zombie until waited for).
settled() {
    st=$(ps -o stat= -p "$daemon_pid")
    grep -q '^tomed ready$' "$tmp/tomed.log" || [ -z "$st" ] || [ "${st#Z}" != "$st" ]
}
wait_for "tomed starts or stops on the damaged database" settled
if grep -q '^tomed ready$' "$tmp/tomed.log"; then
    fail "tomed started on a damaged database"
    stop_tomed
else
    wait "$daemon_pid"
    status=$?
    daemon_pid=""
    checks=$((checks + 1))
    [ "$status" -ne 0 ] && grep -Eiq 'malformed|corrupt|damaged' "$tmp/tomed.log" ||
        fail "tomed on a damaged database (exit $status): $(tail -3 "$tmp/tomed.log")"
fi

echo "disk: $faults faults, states lost $wrong, data lost $lost"
finish
