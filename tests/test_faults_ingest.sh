#!/bin/sh
# kill -9 of tomed at every pass through the kill points of an ingest: each
# file read (ingest-file), each store commit, before and after it
# (store-commit, store-committed), each piece of an upload written
# (upload).  After each kill a restart must find the corpus exactly at its
# old version or exactly at its new one (no half-stored version), every
# committed document still there and searchable, no upload left behind,
# and the ingest, run again, must complete.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
. "$TOME_SRCDIR/tests/faults-lib.sh"
require_model

# Version 1: 40 files.  Version 2: one changed, one removed, 40 added.
mkdir "$tmp/v1" "$tmp/v2"
i=1
while [ "$i" -le 80 ]; do
    [ "$i" -le 40 ] && printf 'file %d of version one\nkeep-me-%d\n' "$i" "$i" >"$tmp/v1/f$i.txt"
    printf 'file %d of version two\nkeep-me-%d\n' "$i" "$i" >"$tmp/v2/f$i.txt"
    i=$((i + 1))
done
cp "$tmp/v1/f2.txt" "$tmp/v1/f3.txt" "$tmp/v2/"
rm "$tmp/v2/f1.txt"
tar -C "$tmp/v2" -cf "$tmp/v2.tar" .

start_normal
unix_http 200 /v1/corpora/docs/ingest -d "{\"path\":\"$tmp/v1\"}"
stop_tomed
save_state v1

# after_kill POINT N: what a restart finds, then the ingest once more.
after_kill() {
    start_normal
    unix_http 200 /v1/corpora/docs
    v=$(json_field version) d=$(json_field documents)
    checks=$((checks + 1))
    case "$v:$d" in
    1:40 | 2:79) ;;
    *)
        lost=$((lost + 1))
        fail "after a kill at $1:$2 the corpus is version $v with $d documents"
        ;;
    esac
    unix_http 200 "/v1/corpora/docs/search?q=%22keep-me-2%22" && body_has '"path":"f2.txt"' ||
        lost=$((lost + 1))
    check "no upload is left in tmp/ after a kill at $1:$2" \
        [ -z "$(ls "$tmp/state/tmp" 2>/dev/null)" ]
    unix_http 200 /v1/corpora/docs/ingest -d "{\"path\":\"$tmp/v2\"}"
    unix_http 200 /v1/corpora/docs && body_has '"documents":79'
    stop_tomed
}

# kill_loop POINT REQUEST...: for N = 1, 2, ...: a daemon armed at POINT:N
# on version 1 gets the request; until it completes without dying.
kill_loop() {
    point=$1
    shift
    n=1
    while [ "$n" -le 500 ]; do
        reset_state v1
        if start_armed "$point" "$n"; then
            code=$(curl -s -o "$tmp/body" -w '%{http_code}' --unix-socket "$sock" "$@")
            if [ "$code" = 200 ]; then
                stop_tomed
                break
            fi
        fi
        expect_killed "$point" "$n"
        after_kill "$point" "$n"
        n=$((n + 1))
    done
    checks=$((checks + 1))
    [ "$n" -gt 1 ] || fail "the ingest never passed $point"
    echo "$point: killed at each of its $((n - 1)) passes"
}

kill_loop ingest-file http://tome/v1/corpora/docs/ingest -d "{\"path\":\"$tmp/v2\"}"
kill_loop store-commit http://tome/v1/corpora/docs/ingest -d "{\"path\":\"$tmp/v2\"}"
kill_loop store-committed http://tome/v1/corpora/docs/ingest -d "{\"path\":\"$tmp/v2\"}"
kill_loop upload http://tome/v1/corpora/docs/ingest -H 'Content-Type: application/octet-stream' \
    --data-binary "@$tmp/v2.tar"
report "ingest"
check "no committed data was lost" [ "$lost" -eq 0 ]
finish
