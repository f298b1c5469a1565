#!/bin/sh
# Every `tome` command against a real daemon/tomed with the built-in tiny
# model: stdout, stderr and exit statuses, the JSON output held to its
# schemas, a report run the way cron runs it (no TTY, a minimal
# environment, HOME unset), the progress bar under a pseudo-terminal, TLS
# with a bearer token and with client certificates, and a clean stop.
# Fails, never skips, when tomed or the model cannot be had.
set -u
build=$TOME_BUILDDIR
src=$TOME_SRCDIR
tome="$build/client/tome"
tomed="$build/daemon/tomed"
schema_check="$build/tests/client-schema-check"
for prog in "$tome" "$tomed" "$schema_check"; do
    [ -x "$prog" ] || { echo "FAIL: $prog is not built"; exit 1; }
done
command -v openssl >/dev/null 2>&1 || { echo "FAIL: openssl is missing"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tome-daemon-XXXXXX")
daemon_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect STATUS STDOUT-PATTERN STDERR-PATTERN -- ARGS...: run tome, check the
# exit status and that each stream matches its pattern ('' means empty).
expect() {
    want=$1 out_re=$2 err_re=$3
    shift 4
    "$tome" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    got=$?
    [ "$got" -eq "$want" ] || fail "tome $*: exit $got, expected $want: $(head -c 300 "$tmp/err")"
    check_stream out "$out_re" "$*"
    check_stream err "$err_re" "$*"
}
check_stream() {
    if [ -z "$2" ]; then
        [ ! -s "$tmp/$1" ] || fail "tome $3: std$1 should be empty: $(head -3 "$tmp/$1")"
    else
        grep -Eq -- "$2" "$tmp/$1" || fail "tome $3: std$1 lacks /$2/: $(head -c 300 "$tmp/$1")"
    fi
}

# ---- the built-in tiny model, which `make check` builds first ----
model=$build/models/tiny
[ -f "$model/config.json" ] ||
    { echo "FAIL: no built-in model at $model (make models/tiny/config.json)"; exit 1; }

# ---- TLS material: a CA and a certificate for localhost ----
(cd "$tmp" && printf 'subjectAltName=DNS:localhost\n' >san.ext &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 2 -subj /CN=tome-test-ca 2>/dev/null &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.pem -days 2 -extfile san.ext 2>/dev/null &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout alice.key -out alice.csr -subj /CN=alice 2>/dev/null &&
    openssl x509 -req -in alice.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out alice.pem -days 2 2>/dev/null &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout rogue.key -out rogue.pem -days 2 -subj /CN=alice 2>/dev/null) ||
    { echo "FAIL: openssl could not make test certificates"; exit 1; }

# ---- start tomed on a private state directory, socket and port ----
sock=$tmp/tomed.sock
export TOME_SOCKET="$sock"
unset TOME_HOST TOME_TOKEN TOME_TOKEN_FILE
printf 'client_cert = alice src read\n' >"$tmp/tomed.conf"

# Start tomed on `port` and wait until it is ready; 1 if it exits first.
start_tomed() {
    "$tomed" --foreground --config "$tmp/tomed.conf" --state-dir "$tmp/state" \
        --socket "$sock" --model "$model" --listen "127.0.0.1:$port" \
        --tls-cert "$tmp/server.pem" --tls-key "$tmp/server.key" --tls-client-ca "$tmp/ca.pem" \
        --log-level warn 2>"$tmp/tomed.log" &
    daemon_pid=$!
    i=0
    until "$tome" -q status >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -le 600 ] && kill -0 "$daemon_pid" 2>/dev/null || return 1
        sleep 0.1
    done
}
# A port taken by another program only costs another try.
. "$src/tests/port-lib.sh"
for try in 1 2 3; do
    port=$(free_port $((try * 7919)))
    start_tomed && break
    kill "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
    daemon_pid=""
    if [ "$try" -eq 3 ]; then
        echo "FAIL: tomed did not become ready; its log:"
        cat "$tmp/tomed.log"
        exit 1
    fi
done

expect 0 '^tomed .* up [0-9]+ s' '' -- status
expect 0 '^ready: model' '' -- status
expect 0 '"health"' '' -- status --json

# ---- corpora ----
expect 0 '' 'created corpus src' -- corpus add src
expect 0 '' '' -- -q corpus add empty
expect 1 '' 'error:.*src' -- corpus add src
expect 2 '' 'error:' -- corpus add '.hidden'
expect 0 '^src +0 +0' '' -- corpus ls
expect 0 '"name": "src"' '' -- corpus ls --json
expect 0 '^name: +src' '' -- corpus show src
expect 4 '' 'error:.*nope' -- corpus show nope

# ---- ingest: a directory, an archive, standard input ----
mkdir -p "$tmp/tree/src" "$tmp/tree/.git"
cat >"$tmp/tree/src/parse.c" <<'EOF'
/* The parser of the sample project. */
int parse_header(const char *line)
{
    return line[0] == '#';
}
EOF
printf 'Sample project.\nThe parser is in src/parse.c.\n' >"$tmp/tree/README"
printf 'secret internals\n' >"$tmp/tree/.git/HEAD"
expect 0 '^src version 1: 2 documents' 'uploading [0-9]+ bytes' -- ingest src "$tmp/tree"
expect 0 '^added 0, changed 0, removed 0, unchanged 2' '' -- -q ingest src "$tmp/tree"
printf 'Licence: MIT.\n' >"$tmp/tree/LICENSE"
(cd "$tmp/tree" && tar czf "$tmp/tree.tar.gz" README LICENSE src)
expect 0 '^added 1, changed 0, removed 0' 'uploading' -- ingest src "$tmp/tree.tar.gz"
"$tome" ingest src - <"$tmp/tree.tar.gz" >"$tmp/out" 2>"$tmp/err" ||
    fail "ingest from stdin: $(cat "$tmp/err")"
grep -Eq '^src version [0-9]+: 3 documents' "$tmp/out" || fail "ingest from stdin: $(cat "$tmp/out")"
expect 0 '"documents": 3' '' -- -q ingest src "$tmp/tree.tar.gz" --json
expect 1 '' 'error:.*missing-file' -- ingest src "$tmp/missing-file"
expect 0 '^src version' '' -- -q ingest src "$tmp/tree" --server-path
expect 2 '' 'absolute path' -- ingest src tree --server-path

# ---- search ----
expect 0 '^src/parse.c:2:int parse_header' '' -- search src parse_header
expect 0 '^src/parse.c:2:' '' -- search src --regex 'parse_[a-z]+\(' --limit 5
expect 0 '"matches"' '' -- search src parse_header --json
expect 0 '' 'no matches' -- search src zyzzyva

# ---- a report before any prefill: not prepared yet ----
cat >"$tmp/questions.txt" <<'EOF'
# Questions for the sample project.
## parser max-tokens=8
Where is the parser?

## licence max-tokens=6 think=none
Which licence applies?
EOF
expect 8 '' 'no cached state.*tome prefill src --wait' -- report src "$tmp/questions.txt"
expect 8 '' 'error:' -- ask src "Where is the parser?" --max-tokens 4

# ---- prefill: no TTY prints the job id; --wait follows with plain lines ----
expect 0 '^[0-9A-Za-z]+$' 'prefill job .* started' -- prefill src --detach
"$tome" prefill src --wait >"$tmp/out" 2>"$tmp/err" </dev/null ||
    fail "prefill --wait: $(cat "$tmp/err")"
grep -Eq '^corpus src: state ([^ ]+ )?cached, [0-9]+ tokens' "$tmp/out" ||
    fail "prefill --wait stdout: $(cat "$tmp/out")"
grep -q "$(printf '\r')" "$tmp/err" && fail "prefill --wait drew a TTY bar into a pipe"
expect 0 '^corpus src: state ([^ ]+ )?cached' '' -- prefill src --wait
expect 0 '"status": "done"' '' -- prefill src --wait --json
expect 8 '' 'error:' -- prefill empty --wait
# On a terminal the default is to follow the job with a progress bar.
printf 'More text for a new version.\n' >>"$tmp/tree/README"
"$tome" -q ingest src "$tmp/tree" >/dev/null || fail "ingest of a changed tree"
script -qec "$tome prefill src" /dev/null >"$tmp/tty" 2>&1 </dev/null
grep -q 'tok/s  ETA' "$tmp/tty" || fail "no progress bar on a TTY: $(head -c 300 "$tmp/tty")"
grep -q "$(printf '\r')" "$tmp/tty" || fail "the TTY progress bar is not redrawn in place"
grep -Eq 'corpus src: state ([^ ]+ )?cached' "$tmp/tty" || fail "prefill on a TTY did not finish"
expect 0 '^ID +KIND +CORPUS' '' -- jobs
job=$("$tome" jobs --json | sed -n 's/^ *"id": "\([^"]*\)",*$/\1/p' | head -1)
[ -n "$job" ] || fail "no job id in tome jobs --json"
expect 0 " prefill +src +done " '' -- jobs "$job"
expect 4 '' 'error:' -- jobs 999999
expect 8 '' 'error:' -- jobs "$job" --cancel
expect 0 'cached \([0-9]+ tokens\)' '' -- corpus show src

# ---- ask: streamed text, statistics on stderr, --json to its schema ----
expect 0 '.' 'answer tokens, first token after [0-9]+ ms' -- ask src "Where is the parser?" \
    --max-tokens 8 --no-think
# The passages that match the question follow the answer, unless --no-sources.
check_stream out '^Sources:$' "ask: sources"
check_stream out '^  README:2  The parser is in src/parse.c.$' "ask: a source"
expect 0 '.' 'answer tokens' -- ask src "Where is the parser?" --max-tokens 2 --no-sources
grep -q 'Sources:' "$tmp/out" && fail "ask --no-sources printed sources: $(cat "$tmp/out")"
"$tome" ask src "Which licence applies?" --max-tokens 6 --seed 3 --json >"$tmp/ask.json" \
    2>"$tmp/err" || fail "ask --json: $(cat "$tmp/err")"
"$schema_check" "$src/client/tome-ask.schema.json" "$tmp/ask.json" ||
    fail "ask --json does not follow its schema"
grep -q '"completion_tokens": [1-6],' "$tmp/ask.json" || fail "ask --json: $(cat "$tmp/ask.json")"
grep -q '"path": "LICENSE"' "$tmp/ask.json" || fail "ask --json lacks its sources: $(cat "$tmp/ask.json")"
expect 0 '"answer"' '' -- ask src "Again?" --max-tokens 2 --think=high --json
echo "Where is the parser?" | "$tome" ask src - --max-tokens 3 --json >"$tmp/out" 2>"$tmp/err" ||
    fail "ask with the question on stdin: $(cat "$tmp/err")"
grep -q '"question": "Where is the parser?"' "$tmp/out" || fail "ask -: $(head -3 "$tmp/out")"
expect 4 '' 'error:' -- ask nope "Where?"
expect 2 '' 'error:' -- ask src "Where?" --max-tokens 100000000

# ---- mcp: JSON-RPC over stdio, one answer per request, none for notifications ----
cat >"$tmp/mcp.in" <<'EOF'
{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
{"jsonrpc":"2.0","id":2,"method":"tools/list"}
{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","arguments":{"corpus":"src","query":"parser"}}}
{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"ask","arguments":{"corpus":"src","question":"Where is the parser?","max_tokens":3}}}
{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"ask","arguments":{"corpus":"nope","question":"Where?"}}}
{"jsonrpc":"2.0","id":"six","method":"tools/call","params":{"name":"list_corpora","arguments":{}}}
{"jsonrpc":"2.0","id":7,"method":"resources/list"}
not json
EOF
# A line over the 4 MiB limit is refused (and skipped, not held); the
# message after it is answered.
head -c 5000000 /dev/zero | tr '\0' x >>"$tmp/mcp.in"
printf '\n{"jsonrpc":"2.0","id":8,"method":"ping"}\r\n' >>"$tmp/mcp.in"
"$tome" mcp <"$tmp/mcp.in" >"$tmp/mcp.out" 2>"$tmp/err" || fail "tome mcp: $(cat "$tmp/err")"
[ "$(wc -l <"$tmp/mcp.out")" -eq 10 ] || fail "tome mcp: 10 answers expected: $(cat "$tmp/mcp.out")"
mcp_has() { grep -Eq -- "$1" "$tmp/mcp.out" || fail "tome mcp output lacks /$1/: $(cat "$tmp/mcp.out")"; }
mcp_has '^\{"jsonrpc":"2.0","id":1,"result":\{"protocolVersion":"2025-06-18","capabilities":\{"tools":\{\}\},"serverInfo":\{"name":"tome"'
mcp_has '^\{"jsonrpc":"2.0","id":2,"result":\{"tools":\[\{"name":"list_corpora".*\{"name":"search".*\{"name":"ask"'
mcp_has '^\{"jsonrpc":"2.0","id":3,"result":\{"content":\[\{"type":"text","text":"[^"]*README:2:The parser is in src/parse.c.'
mcp_has '^\{"jsonrpc":"2.0","id":4,"result":\{.*"isError":false,"structuredContent":\{"answer":".*","finish_reason":"[a-z_]+","citations":\[.*\],"sources":\[\{"path":"README","line":2'
mcp_has '^\{"jsonrpc":"2.0","id":5,"result":\{"content":\[\{"type":"text","text":"[^"]*nope[^"]*"\}\],"isError":true\}\}$'
mcp_has '^\{"jsonrpc":"2.0","id":"six","result":\{"content":\[\{"type":"text","text":"[^"]*src\\n'
mcp_has '^\{"jsonrpc":"2.0","id":7,"error":\{"code":-32601,'
mcp_has '^\{"jsonrpc":"2.0","id":null,"error":\{"code":-32700,'
mcp_has '^\{"jsonrpc":"2.0","id":null,"error":\{"code":-32600,"message":"message too long"\}\}$'
mcp_has '^\{"jsonrpc":"2.0","id":8,"result":\{\}\}$'
# ... and not held: a 256 MiB line leaves tome's peak memory far below it.
python3 - "$tome" >"$tmp/mcp.rss" 2>&1 <<'PY'
import resource, subprocess, sys
p = subprocess.Popen([sys.argv[1], "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
chunk = b"x" * (1 << 20)
for _ in range(256):
    p.stdin.write(chunk)
p.stdin.write(b'\n{"jsonrpc":"2.0","id":9,"method":"ping"}\n')
p.stdin.close()
out = p.stdout.read().decode()
p.wait()
assert '"id":9,"result":{}' in out, out
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, "MiB")
PY
rss=$(sed -n 's/^\([0-9]*\) MiB$/\1/p' "$tmp/mcp.rss")
[ -n "$rss" ] && [ "$rss" -lt 128 ] || fail "tome mcp held a 256 MiB line: $(cat "$tmp/mcp.rss")"

# ---- report from a cron-like environment: no TTY, no HOME, bare PATH ----
cron() {
    env -i PATH=/usr/bin:/bin TOME_SOCKET="$sock" "$tome" "$@" </dev/null
}
cron -q report src "$tmp/questions.txt" -o "$tmp/report.md" >"$tmp/out" 2>"$tmp/err"
status=$?
[ "$status" -eq 0 ] || fail "cron report: exit $status: $(cat "$tmp/err")"
[ ! -s "$tmp/out" ] && [ ! -s "$tmp/err" ] || fail "cron report -q printed something"
grep -q '^# Report: src$' "$tmp/report.md" || fail "report.md: $(head -5 "$tmp/report.md")"
grep -q '^## parser$' "$tmp/report.md" && grep -q '^## licence$' "$tmp/report.md" ||
    fail "report.md lacks its questions"
grep -q '2 questions, 2 answered, 0 failed' "$tmp/report.md" || fail "report.md summary"
cron report src "$tmp/questions.txt" --format json >"$tmp/report.json" 2>"$tmp/err" ||
    fail "cron report --format json: $(cat "$tmp/err")"
grep -q '\[2/2\] licence answered' "$tmp/err" || fail "report progress lines: $(cat "$tmp/err")"
"$schema_check" "$src/client/tome-report.schema.json" "$tmp/report.json" ||
    fail "the JSON report does not follow its schema"
cron report src "$tmp/questions.txt" --format text >"$tmp/report.txt" 2>/dev/null ||
    fail "cron report --format text"
grep -q '^\[parser\] Where is the parser?$' "$tmp/report.txt" || fail "text report"
printf '## ok max-tokens=4\nWhere?\n## too-long max-tokens=100000000\nWhere?\n' >"$tmp/mixed.txt"
cp "$tmp/report.md" "$tmp/before.md"
cron -q report src "$tmp/mixed.txt" -o "$tmp/mixed.md" 2>"$tmp/err"
[ $? -eq 5 ] || fail "a report with a failed question must exit 5"
grep -q '1 of 2 questions failed' "$tmp/err" || fail "mixed report stderr: $(cat "$tmp/err")"
grep -q '^## too-long (failed)$' "$tmp/mixed.md" || fail "the failed question is not reported"
grep -q '1 answered, 1 failed' "$tmp/mixed.md" || fail "mixed report summary"
cron -q report absent "$tmp/questions.txt" -o "$tmp/report.md" 2>"$tmp/err"
[ $? -eq 4 ] || fail "a report on a missing corpus must exit 4"
grep -q "absent" "$tmp/err" || fail "missing corpus stderr: $(cat "$tmp/err")"
cmp -s "$tmp/report.md" "$tmp/before.md" || fail "a failed report run changed the old report"
env -i PATH=/usr/bin:/bin TOME_SOCKET="$tmp/absent.sock" "$tome" -q report src \
    "$tmp/questions.txt" -o "$tmp/report.md" </dev/null 2>/dev/null
[ $? -eq 3 ] || fail "a report with the daemon unreachable must exit 3"

# ---- state cache ----
expect 0 '^ID +CORPUS' '' -- cache ls
state=$("$tome" corpus show src --json | sed -n 's/^ *"id": "\([^"]*\)".*/\1/p' | head -1)
[ -n "$state" ] || fail "no state id in tome corpus show --json"
expect 0 "^$state: ok$" '' -- cache verify "$state"
expect 4 '' 'error:' -- cache verify 0000

# ---- tokens, and the same commands over TLS ----
"$tome" token create reader --corpus src >"$tmp/reader.token" 2>"$tmp/err" ||
    fail "token create: $(cat "$tmp/err")"
grep -q 'shown only this once' "$tmp/err" || fail "token create note: $(cat "$tmp/err")"
chmod 600 "$tmp/reader.token"
expect 0 'reader +.*src:read' '' -- token ls
remote="--host localhost:$port --cacert $tmp/ca.pem"
# shellcheck disable=SC2086
expect 0 '^src ' '' -- $remote --token-file "$tmp/reader.token" corpus ls
# shellcheck disable=SC2086
expect 0 '.' 'answer tokens' -- $remote --token-file "$tmp/reader.token" ask src "Where?" \
    --max-tokens 3
TOME_TOKEN=$(cat "$tmp/reader.token") "$tome" --host "localhost:$port" --cacert "$tmp/ca.pem" \
    corpus show src >"$tmp/out" 2>&1 || fail "TOME_TOKEN over TLS: $(cat "$tmp/out")"
# shellcheck disable=SC2086
expect 6 '' 'error:' -- $remote --token-file "$tmp/reader.token" corpus rm src
# shellcheck disable=SC2086
expect 6 '' 'error:' -- $remote corpus ls
expect 3 '' 'TLS handshake' -- --host "localhost:$port" --cacert "$tmp/server.pem" corpus ls
# A client certificate (mTLS) maps to the rights its client_cert line gives.
# shellcheck disable=SC2086
expect 0 '^src ' '' -- $remote --cert "$tmp/alice.pem" --key "$tmp/alice.key" corpus ls
# shellcheck disable=SC2086
expect 6 '' 'error:' -- $remote --cert "$tmp/alice.pem" --key "$tmp/alice.key" corpus rm src
# shellcheck disable=SC2086
expect 3 '' 'error:' -- $remote --cert "$tmp/rogue.pem" --key "$tmp/rogue.key" corpus ls
# shellcheck disable=SC2086
expect 1 '' 'with key .*rogue.key' -- $remote --cert "$tmp/alice.pem" --key "$tmp/rogue.key" corpus ls
reader_id=$("$tome" token ls --json | sed -n 's/^ *"id": "\([^"]*\)".*/\1/p' | head -1)
expect 0 '' 'revoked token' -- token revoke "$reader_id"
# shellcheck disable=SC2086
expect 6 '' 'error:' -- $remote --token-file "$tmp/reader.token" corpus ls

# ---- removal ----
expect 0 '' 'removed state' -- cache rm "$state"
expect 8 '' 'no cached state' -- report src "$tmp/questions.txt"
expect 0 '' 'deleted corpus src' -- corpus rm src
expect 4 '' 'error:' -- corpus show src

# ---- a clean stop ----
kill -TERM "$daemon_pid"
wait "$daemon_pid"
status=$?
daemon_pid=""
[ "$status" -eq 0 ] || fail "tomed exited $status after SIGTERM: $(tail -5 "$tmp/tomed.log")"
expect 3 '' 'cannot connect' -- status

[ "$failures" -eq 0 ] || { echo "$failures failures"; exit 1; }
echo "all client checks against tomed passed"
