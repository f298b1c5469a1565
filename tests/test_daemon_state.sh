#!/bin/sh
# tomed's state directory: what it creates is private (0700 directories,
# 0600 files; the socket keeps its configured mode), and a directory or
# store file that other users may read or write is refused at start with a
# message naming it and its mode; a second daemon on the same state
# directory (with its own pidfile and socket) is refused before it touches
# anything there, naming the directory and the first daemon's pid.
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

# ---- one daemon per state directory ----
# An upload in progress on the first daemon: its head and part of its body
# come through a FIFO that stays open.
unix_http 200 /v1/health
mkfifo "$tmp/fifo"
"$build/tests/raw_http" --timeout 30 "$sock" <"$tmp/fifo" >/dev/null 2>&1 &
uploader=$!
exec 3>"$tmp/fifo"
printf 'POST /v1/corpora/docs/ingest HTTP/1.1\r\nHost: x\r\n' >&3
printf 'Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n' >&3
head -c 5000 /dev/zero >&3
i=0
until ls "$state/tmp" | grep -q '^upload-'; do
    i=$((i + 1))
    [ "$i" -le 100 ] || { fail "the upload never reached tmp/"; break; }
    sleep 0.1
done
upload=$(ls "$state/tmp" | grep '^upload-')
start_must_fail "a second daemon on the same state directory" \
    "state directory $state is in use by tomed \(pid $daemon_pid\)" \
    --pidfile "$tmp/other.pid" --socket "$tmp/other.sock"
check "the first daemon's upload in progress is still there" [ -e "$state/tmp/$upload" ]
check "the second daemon made no socket" [ ! -e "$tmp/other.sock" ]
unix_http 200 /v1/health
exec 3>&-
kill "$uploader" 2>/dev/null
wait "$uploader" 2>/dev/null
stop_tomed TERM
finish
