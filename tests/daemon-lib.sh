# daemon-lib.sh - what the tomed tests share (sourced, not run).
#
# A private directory with a CA and certificates made by the openssl CLI,
# starting tomed in the foreground and waiting for its `tomed ready` line,
# stopping it with a signal and checking its exit status, and an HTTP helper
# over curl that records the status and the body.  Everything fails loudly:
# a missing program or model is a failure, never a skip.
set -u

build=${TOME_BUILDDIR:?run through make check}
src=${TOME_SRCDIR:?run through make check}
tomed="$build/daemon/tomed"
model="$build/models/tiny"
for prog in "$tomed" curl openssl; do
    command -v "$prog" >/dev/null 2>&1 || { echo "FAIL: $prog is missing"; exit 1; }
done

. "$src/tests/port-lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tomed-test-XXXXXX")
chmod 755 "$tmp"
sock=$tmp/tomed.sock
daemon_pid=""
failures=0
checks=0

cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# check DESCRIPTION COMMAND...: the command must succeed.
check() {
    what=$1
    shift
    checks=$((checks + 1))
    "$@" || fail "$what"
}

finish() {
    echo "$checks checks, $failures failed"
    [ "$failures" -eq 0 ]
    exit $?
}

# make_pki: a CA, a server certificate for 127.0.0.1 and localhost, a client
# certificate "alice" from the CA, and "mallory", self-signed.
make_pki() {
    (
        cd "$tmp" || exit 1
        ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj /CN=tome-test-ca &&
            for name in server server2 alice; do
                openssl req $ec -keyout $name.key -out $name.csr -subj /CN=$name &&
                    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >$name.ext &&
                    openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                        -out $name.pem -days 2 -extfile $name.ext || exit 1
            done &&
            openssl req -x509 $ec -keyout mallory.key -out mallory.pem -days 2 -subj /CN=alice
    ) >"$tmp/openssl.log" 2>&1 || {
        echo "FAIL: openssl could not make the test certificates:"
        cat "$tmp/openssl.log"
        exit 1
    }
}

# start_tomed ARGS...: run tomed in the foreground on the private socket and
# state directory; returns once it printed `tomed ready` (20 s at most), and
# fails at once on `tomed not ready`.
start_tomed() {
    launch_tomed "$@"
    await_start '^tomed ready$' '^tomed not ready: '
}

# start_tomed_unready ARGS...: the same for a tomed whose model is refused:
# returns once it printed `tomed not ready: WHY` (it keeps serving).
start_tomed_unready() {
    launch_tomed "$@"
    await_start '^tomed not ready: ' '^tomed ready$'
}

launch_tomed() {
    : >"$tmp/tomed.log"
    "$tomed" --foreground --state-dir "$tmp/state" --socket "$sock" "$@" \
        2>>"$tmp/tomed.log" &
    daemon_pid=$!
}

# await_start EXPECTED OTHER: until tomed's log has a line matching
# EXPECTED; a line matching OTHER, an exit or 20 s is a failure.
await_start() {
    i=0
    until grep -q "$1" "$tmp/tomed.log"; do
        i=$((i + 1))
        if [ "$i" -gt 200 ] || ! kill -0 "$daemon_pid" 2>/dev/null ||
            grep -q "$2" "$tmp/tomed.log"; then
            echo "FAIL: tomed did not start as expected ($1); its log:"
            cat "$tmp/tomed.log"
            daemon_pid=""
            exit 1
        fi
        sleep 0.1
    done
}

# wait_for DESCRIPTION COMMAND...: poll until the command succeeds (10 s at
# most, then a failure): tests wait for events this way, never by sleeping.
wait_for() {
    what=$1
    shift
    i=0
    until "$@"; do
        i=$((i + 1))
        [ "$i" -le 100 ] || { fail "timed out waiting until $what"; return 1; }
        sleep 0.1
    done
}

# stop_tomed [SIGNAL]: signal tomed (TERM by default) and require exit 0.
stop_tomed() {
    kill -"${1:-TERM}" "$daemon_pid"
    wait "$daemon_pid"
    status=$?
    daemon_pid=""
    checks=$((checks + 1))
    [ "$status" -eq 0 ] || fail "tomed exited $status after SIG${1:-TERM}: $(tail -5 "$tmp/tomed.log")"
}

# wait_ready: until GET /v1/ready answers 200 (the model is loaded).
wait_ready() {
    i=0
    until [ "$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$sock" http://tome/v1/ready)" = 200 ]; do
        i=$((i + 1))
        [ "$i" -le 300 ] || { echo "FAIL: tomed never became ready"; cat "$tmp/tomed.log"; exit 1; }
        sleep 0.1
    done
}

# http EXPECTED-STATUS CURL-ARGS...: run curl, keep the body in $tmp/body,
# and count a failure when the status differs.
http() {
    want=$1
    shift
    checks=$((checks + 1))
    got=$(curl -s -o "$tmp/body" -w '%{http_code}' "$@")
    if [ "$got" != "$want" ]; then
        fail "curl $*: status $got, expected $want: $(head -c 300 "$tmp/body")"
        return 1
    fi
    return 0
}

# unix_http EXPECTED PATH [CURL-ARGS...] over the Unix socket.
unix_http() {
    want=$1 path=$2
    shift 2
    http "$want" --unix-socket "$sock" "$@" "http://tome$path"
}

# body_has REGEX: the last body matches (extended regex).
body_has() {
    checks=$((checks + 1))
    grep -Eq -- "$1" "$tmp/body" || fail "body lacks /$1/: $(head -c 300 "$tmp/body")"
}

# json_field NAME: the first string or number value of "NAME" in the body.
json_field() {
    sed -n "s/.*\"$1\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" "$tmp/body" | head -1
}

require_model() {
    [ -f "$model/config.json" ] ||
        { echo "FAIL: no built-in model at $model (make models/tiny/config.json)"; exit 1; }
}

# npm_clients: the official client libraries of tests/npm/package.json
# (OpenAI's and MCP's SDKs), installed with `npm ci` from its lock file
# once per lock into ${TOME_NPM_CACHE:-$HOME/.cache/tome-npm} (without HOME,
# into the test's directory); sets $clients to the directory holding
# node_modules.  Returns 1 after saying SKIP when npm or node is missing;
# an npm that cannot install them is a failure (exit).  Two tests may
# install at once: each installs aside and renames, the loser discards.
npm_clients() {
    if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
        echo "SKIP: npm or node is missing; the official client libraries' part did not run"
        return 1
    fi
    lock=$src/tests/npm/package-lock.json
    clients=${TOME_NPM_CACHE:-${HOME:-$tmp}/.cache/tome-npm}/clients-$(cksum <"$lock" | cut -d' ' -f1)
    [ -f "$clients/node_modules/.package-lock.json" ] && return 0
    aside=$clients.$$
    mkdir -p "$aside" && cp "$src/tests/npm/package.json" "$lock" "$aside/" &&
        npm ci --prefix "$aside" --no-audit --no-fund --fetch-retries=1 --fetch-timeout=60000 \
            >"$tmp/npm.log" 2>&1 ||
        { echo "FAIL: npm ci could not install tests/npm into $aside: $(tail -5 "$tmp/npm.log")"; exit 1; }
    mv -T "$aside" "$clients" 2>/dev/null || rm -rf "$aside"
    [ -f "$clients/node_modules/.package-lock.json" ] ||
        { echo "FAIL: $clients holds no installed clients"; exit 1; }
}

# make_rules DIR: DIR/rules.txt, 40 numbered rules, each naming its token.
make_rules() {
    mkdir -p "$1"
    i=1
    while [ "$i" -le 40 ]; do
        echo "Rule $i: the parser accepts token $i only after the lexer has seen its prefix."
        i=$((i + 1))
    done >"$1/rules.txt"
}
