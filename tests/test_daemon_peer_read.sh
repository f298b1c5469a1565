#!/bin/sh
# Server-path ingest reads only what the requesting peer could read itself,
# file by file: a second uid (1234, acting through setpriv) ingests trees
# that hold root's private files, a closed subdirectory, a file readable
# through a supplementary group only, and an archive; root then searches the
# store for what must not be there.  Acting as another uid needs root: run
# as anyone else, the test says so and is skipped (exit 77), never passed.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: this test must run as root to connect as a second uid (setpriv)"
    exit 77
fi
command -v setpriv >/dev/null 2>&1 || { echo "FAIL: setpriv (util-linux) is missing"; exit 1; }

peer() { setpriv --reuid=1234 --regid=1234 --clear-groups "$@"; }
peer_in_team() { setpriv --reuid=1234 --regid=1234 --groups=4321 "$@"; }
checks=$((checks + 1))
[ "$(peer id -u)" = 1234 ] || fail "setpriv cannot act as uid 1234"

# ingest_as RUNNER CORPUS PATH: POST the server path as RUNNER; the status
# goes to $tmp/status and the body to $tmp/body (written by this shell: the
# peer may not write in $tmp).
ingest_as() {
    $1 curl -s -w '\n%{http_code}' --unix-socket "$sock" \
        -d "{\"path\":\"$3\"}" "http://tome/v1/corpora/$2/ingest" >"$tmp/out"
    sed '$d' "$tmp/out" >"$tmp/body"
    tail -n 1 "$tmp/out" >"$tmp/status"
}

# found CORPUS WORD: does root's search of CORPUS find WORD?
found() {
    curl -s --unix-socket "$sock" "http://tome/v1/corpora/$1/search?q=$2" | grep -q "$2"
}

# ---- a readable tree holding files and a directory only root may read ----
mkdir -p "$tmp/tree/closed" "$tmp/tree/open"
printf 'visible words for everyone\n' >"$tmp/tree/public.txt"
printf 'rootsecret marker, mode 0600\n' >"$tmp/tree/secret.txt"
printf 'closedmarker behind a 0700 directory\n' >"$tmp/tree/closed/inside.txt"
printf 'nestedsecret marker\n' >"$tmp/tree/open/deep.txt"
chmod 755 "$tmp/tree" "$tmp/tree/open"
chmod 644 "$tmp/tree/public.txt" "$tmp/tree/closed/inside.txt"
chmod 600 "$tmp/tree/secret.txt" "$tmp/tree/open/deep.txt"
chmod 700 "$tmp/tree/closed"

# ---- a file the peer reads through a supplementary group only ----
mkdir -p "$tmp/team"
printf 'teamonly marker\n' >"$tmp/team/plan.txt"
chgrp 4321 "$tmp/team/plan.txt" && chmod 640 "$tmp/team/plan.txt"
chmod 755 "$tmp/team"

# ---- an archive the peer may read, and one it may not ----
tar -C "$tmp/tree" -czf "$tmp/open.tar.gz" public.txt
cp "$tmp/open.tar.gz" "$tmp/closed.tar.gz"
chmod 644 "$tmp/open.tar.gz"
chmod 600 "$tmp/closed.tar.gz"

cat >"$tmp/tomed.conf" <<EOF
socket_mode = 0666
allow_uids = 1234
EOF
start_tomed --config "$tmp/tomed.conf" --model "$model"

ingest_as peer tree "$tmp/tree"
check "uid 1234 can ingest a readable tree ($(cat "$tmp/status") $(head -c 300 "$tmp/body"))" \
    [ "$(cat "$tmp/status")" = 200 ]
check "the readable file is in the store" found tree visible
for word in rootsecret closedmarker nestedsecret; do
    checks=$((checks + 1))
    found tree $word && fail "uid 1234 ingested '$word', which it cannot read"
done
for entry in secret.txt closed open/deep.txt; do
    checks=$((checks + 1))
    grep -q "\"path\": *\"$entry/\{0,1\}\", *\"reason\": *\"not readable by uid 1234\"" "$tmp/body" ||
        fail "the report does not say $entry was left out: $(cat "$tmp/body")"
done

ingest_as peer team "$tmp/team"
check "uid 1234 without its group can ingest the team directory" [ "$(cat "$tmp/status")" = 200 ]
checks=$((checks + 1))
found team teamonly && fail "uid 1234 read a 0640 file of a group it is not in"
ingest_as peer_in_team team "$tmp/team"
check "uid 1234 in group 4321 can ingest the team directory" [ "$(cat "$tmp/status")" = 200 ]
check "a supplementary group grants its read right" found team teamonly

ingest_as peer arch "$tmp/open.tar.gz"
check "uid 1234 can ingest a readable archive ($(head -c 300 "$tmp/body"))" \
    [ "$(cat "$tmp/status")" = 200 ]
check "the archive's file is in the store" found arch visible

for path in "$tmp/closed.tar.gz" "$tmp/tree/secret.txt" "$tmp/tree/closed" \
    "$tmp/tree/closed/inside.txt" "$tmp/tree/closed/nothing-here"; do
    ingest_as peer other "$path"
    checks=$((checks + 1))
    case "$(cat "$tmp/status") $(cat "$tmp/body")" in
    "403 "*"does not exist or uid 1234 may not read it"*) ;;
    *) fail "uid 1234 on $path: $(cat "$tmp/status") $(cat "$tmp/body")" ;;
    esac
done

# Root still reads everything.
ingest_as "" all "$tmp/tree"
check "root can ingest the whole tree" [ "$(cat "$tmp/status")" = 200 ]
check "root's ingest holds the 0600 file" found all rootsecret
stop_tomed
finish
