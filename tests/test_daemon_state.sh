#!/bin/sh
# tomed's state directory: what it creates is private (0700 directories,
# 0600 files; the socket keeps its configured mode), and a directory or
# store file that other users may read or write is refused at start with a
# message naming it and its mode.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
state=$tmp/state

# start_must_fail DESCRIPTION REGEX ARGS...: tomed must exit non-zero
# without becoming ready, and say REGEX (extended) on stderr.
start_must_fail() {
    what=$1 want=$2
    shift 2
    checks=$((checks + 1))
    "$tomed" --foreground --state-dir "$state" --socket "$sock" --model "$model" "$@" \
        >"$tmp/refused.log" 2>&1 &
    pid=$!
    i=0
    while kill -0 "$pid" 2>/dev/null && ! grep -q '^tomed ready$' "$tmp/refused.log"; do
        i=$((i + 1))
        [ "$i" -le 200 ] || break
        sleep 0.1
    done
    if grep -q '^tomed ready$' "$tmp/refused.log"; then
        kill "$pid"
        wait "$pid"
        fail "$what: tomed started"
        return
    fi
    wait "$pid"
    status=$?
    [ "$status" -ne 0 ] || fail "$what: tomed exited 0"
    grep -Eq -- "$want" "$tmp/refused.log" || fail "$what: stderr lacks /$want/: $(cat "$tmp/refused.log")"
}

# mode PATH: its permission bits in octal.
mode() { stat -c %a "$1"; }

printf 'socket_mode = 0666\n' >"$tmp/tomed.conf"
start_tomed --config "$tmp/tomed.conf" --model "$model"
wait_ready
unix_http 201 /v1/corpora -d '{"name":"docs"}'
unix_http 201 /v1/tokens -d '{"name":"ci","scopes":[{"corpus":"docs","rights":"read"}]}'
check "the state directory is 0700, not $(mode "$state")" [ "$(mode "$state")" = 700 ]
for f in tome.db tome.db-wal tome.db-shm tokens.json tomed.pid; do
    [ -e "$state/$f" ] || continue
    check "$f is 0600, not $(mode "$state/$f")" [ "$(mode "$state/$f")" = 600 ]
done
for d in kv tmp; do
    check "$d/ is 0700, not $(mode "$state/$d")" [ "$(mode "$state/$d")" = 700 ]
done
check "the socket keeps socket_mode 0666, not $(mode "$sock")" [ "$(mode "$sock")" = 666 ]
check "the socket's directory stays reachable" [ "$(mode "$tmp")" = 755 ]
stop_tomed TERM

chmod 755 "$state"
start_must_fail "a state directory others can read" "state directory $state has mode 0755"
chmod 700 "$state"
chmod 644 "$state/tome.db"
start_must_fail "a database others can read" "$state/tome.db has mode 0644.*chmod 600"
chmod 600 "$state/tome.db"
start_tomed --config "$tmp/tomed.conf" --model "$model"
unix_http 200 /v1/corpora/docs
stop_tomed TERM
finish
