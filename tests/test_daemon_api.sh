#!/bin/sh
# tomed's API over both transports: every endpoint that needs no prefill,
# over the Unix socket and over TLS; bearer tokens (read, write, revoked,
# without rights to a corpus, on an admin endpoint); client certificates
# (mapped, signed by another CA); a peer uid that is not allowed; server
# paths only for a peer that could read them itself; size and
# time limits; --check-config; SIGHUP swapping the TLS certificate while a
# Unix client is mid-request; and a clean SIGTERM.
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
make_pki

# ---- a small corpus, as an archive and as a directory ----
mkdir -p "$tmp/corpus/src" "$tmp/other"
printf 'int parse(const char *s)\n{\n    return s[0] == 0x7f;\n}\n' >"$tmp/corpus/src/parse.c"
printf 'Licensed under the tome licence.\n' >"$tmp/corpus/LICENSE"
printf 'nothing here\n' >"$tmp/other/notes.txt"
tar -C "$tmp/corpus" -czf "$tmp/corpus.tar.gz" src LICENSE
head -c 2000000 /dev/urandom >"$tmp/big.bin"

port=$(free_port 1)
T=https://127.0.0.1:$port
cat >"$tmp/tomed.conf" <<EOF
# test configuration
socket_mode = 0666
client_cert = alice src read
allow_uids = 1234
max_request_bytes = 64K
max_upload_bytes = 1M
header_timeout = 2
idle_timeout = 5
keepalive_interval = 1
EOF
tls_args="--listen 127.0.0.1:$port --tls-cert $tmp/server.pem --tls-key $tmp/server.key"
tls_args="$tls_args --tls-client-ca $tmp/ca.pem"

# ---- --check-config ----
checks=$((checks + 1))
"$tomed" --check-config --config "$tmp/tomed.conf" --state-dir "$tmp/state" --socket "$sock" \
    $tls_args >"$tmp/out" 2>&1 || fail "--check-config refused a good config: $(cat "$tmp/out")"
printf 'socket_mode = 0666\nno_such_key = 1\n' >"$tmp/bad.conf"
checks=$((checks + 1))
if "$tomed" --check-config --config "$tmp/bad.conf" >"$tmp/out" 2>&1; then
    fail "--check-config accepted an unknown key"
fi
grep -q "bad.conf:2: unknown key 'no_such_key'" "$tmp/out" ||
    fail "--check-config does not name the file and line: $(cat "$tmp/out")"
checks=$((checks + 1))
"$tomed" --check-config --listen 127.0.0.1:1 >"$tmp/out" 2>&1 &&
    fail "--check-config accepted --listen without a certificate"

start_tomed --config "$tmp/tomed.conf" --model "$model" $tls_args --log-level debug
wait_ready
check "socket mode is the configured 0666" [ "$(stat -c %a "$sock")" = 666 ]
check "pidfile holds the daemon's pid" [ "$(cat "$tmp/state/tomed.pid")" = "$daemon_pid" ]

# ---- health, readiness, metrics ----
unix_http 200 /v1/health && body_has '"status":"ok"'
unix_http 200 /v1/ready && body_has '"ready":true'
http 200 --cacert "$tmp/ca.pem" "$T/v1/health"
unix_http 200 /metrics && body_has '^tome_requests_total\{transport="unix",status="2xx"\} [1-9]'
http 401 --cacert "$tmp/ca.pem" "$T/metrics"

# ---- corpora ----
unix_http 201 /v1/corpora -d '{"name":"src"}' && body_has '"name":"src"'
unix_http 409 /v1/corpora -d '{"name":"src"}' && body_has '"code":"exists"'
unix_http 201 /v1/corpora -d '{"name":"other"}'
unix_http 400 /v1/corpora -d '{"name":"../etc"}' && body_has '"code":"invalid"'
unix_http 400 /v1/corpora -d 'not json' && body_has '"code":"format"'
unix_http 200 /v1/corpora && body_has '"corpora":\[\{"name":"other".*\{"name":"src"'
unix_http 200 /v1/corpora/src && body_has '"documents":0'
unix_http 404 /v1/corpora/absent && body_has '"code":"not_found"'
unix_http 200 /metrics && body_has '^tome_disk_bytes\{kind="db"\} [1-9]'

# ---- ingest: an upload, a server-side path, limits ----
unix_http 200 /v1/corpora/src/ingest -H 'Content-Type: application/octet-stream' \
    --data-binary "@$tmp/corpus.tar.gz" && body_has '"documents":2'
body_has '"path":"src/parse.c"'
check "the upload was removed from tmp/" [ -z "$(ls "$tmp/state/tmp")" ]
unix_http 200 /v1/corpora/other/ingest -d "{\"path\":\"$tmp/other\"}" && body_has '"documents":1'
unix_http 400 /v1/corpora/other/ingest -d '{"path":"relative/path"}'
unix_http 413 /v1/corpora/src/ingest -H 'Content-Type: application/octet-stream' \
    --data-binary "@$tmp/big.bin" && body_has '"code":"limit"'
head -c 70000 /dev/zero | tr '\0' 'a' >"$tmp/long.json"
unix_http 413 /v1/corpora -d "@$tmp/long.json" && body_has 'max_request_bytes'
unix_http 200 /v1/corpora/src && body_has '"documents":2' && body_has '"version":1'

# ---- search ----
unix_http 200 '/v1/corpora/src/search?q=parse' && body_has '"path":"src/parse.c","line":1'
unix_http 200 '/v1/corpora/src/search?regex=0x7%5Bf%5D' && body_has '"line":3'
unix_http 200 '/v1/corpora/src/search?q=licence&limit=1' && body_has '"truncated":false'
unix_http 400 '/v1/corpora/src/search' && body_has 'exactly one of'
unix_http 400 '/v1/corpora/src/search?regex=%28' && body_has '"code":"invalid"'
# A store error tells the client what is wrong, not where the store lies.
unix_http 400 '/v1/corpora/src/search?q=%22' && body_has '"message":"search'
checks=$((checks + 1))
grep -qF "$tmp/state" "$tmp/body" && fail "a search error shows the state directory: $(cat "$tmp/body")"
unix_http 400 '/v1/corpora/src/search?q=x&limit=0'

# ---- a document's lines, now and in an earlier version ----
mkdir -p "$tmp/versioned"
printf 'first\nsecond\n' >"$tmp/versioned/notes.txt"
unix_http 201 /v1/corpora -d '{"name":"versioned"}'
unix_http 200 /v1/corpora/versioned/ingest -d "{\"path\":\"$tmp/versioned\"}"
printf 'first\nchanged\nthird\n' >"$tmp/versioned/notes.txt"
unix_http 200 /v1/corpora/versioned/ingest -d "{\"path\":\"$tmp/versioned\"}"
unix_http 200 '/v1/corpora/versioned/document?path=notes.txt' &&
    body_has '"version":2' && body_has '"text":"first\\nchanged\\nthird' && body_has '"line_count":3'
unix_http 200 '/v1/corpora/versioned/document?path=notes.txt&version=1&from=2' &&
    body_has '"version":1' && body_has '"text":"second' && body_has '"line_count":2'
unix_http 404 '/v1/corpora/versioned/document?path=notes.txt&version=9' && body_has 'no version 9'
unix_http 400 '/v1/corpora/versioned/document?path=notes.txt&version=0' && body_has "'version'"

# ---- jobs and cache without a prefill ----
unix_http 200 /v1/jobs && body_has '"jobs":\[\]'
unix_http 404 /v1/jobs/99
unix_http 404 /v1/jobs/99/events
unix_http 200 /v1/cache && body_has '"states":\[\]'
unix_http 404 /v1/cache/mem-1-1/verify -X POST
unix_http 409 /v1/corpora/src/ask -d '{"question":"why?"}' && body_has 'prefill first'
unix_http 400 /v1/corpora/src/ask -d '{"question":""}'
unix_http 400 /v1/corpora/src/ask -d '{"question":"x","thinking":"lots"}'
unix_http 400 /v1/corpora/src/ask -d '{"question":"x","max_tokens":0}'

# ---- routing errors ----
unix_http 404 /v1/nothing && body_has '"code":"not_found"'
unix_http 405 /v1/health -X DELETE && body_has '"code":"invalid"'

# ---- tokens: created and revoked over the Unix socket by an admin ----
unix_http 201 /v1/tokens -d '{"name":"reader","scopes":[{"corpus":"src","rights":"read"}]}'
reader=$(json_field secret)
reader_id=$(sed -n 's/.*"token":{"id":"\([0-9]*\)".*/\1/p' "$tmp/body")
check "a token secret is returned once" [ -n "$reader" ]
check "only the hash is stored" sh -c "! grep -q '$reader' '$tmp/state/tokens.json'"
unix_http 201 /v1/tokens -d '{"name":"writer","scopes":[{"corpus":"*","rights":"write"}]}'
writer=$(json_field secret)
unix_http 409 /v1/tokens -d '{"name":"reader","scopes":[{"corpus":"src","rights":"read"}]}'
unix_http 400 /v1/tokens -d '{"name":"bad","scopes":[{"corpus":"src","rights":"all"}]}'
unix_http 200 /v1/tokens && body_has '"name":"reader"' && body_has '"name":"writer"'
check "token list shows no secrets" sh -c "! grep -q 'tome_' '$tmp/body'"

http 200 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $reader" "$T/v1/corpora/src"
http 200 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $reader" "$T/v1/corpora" &&
    body_has '^\{"corpora":\[\{"name":"src"[^]]*\]\}$'
http 200 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $reader" "$T/v1/corpora/src/search?q=parse"
http 403 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $reader" "$T/v1/corpora/other" &&
    body_has "no read right on corpus 'other'"
http 403 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $reader" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$tmp/corpus.tar.gz" \
    "$T/v1/corpora/src/ingest" && body_has 'no write right'
http 403 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $reader" -X DELETE "$T/v1/corpora/src"
http 403 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $writer" "$T/v1/tokens" &&
    body_has 'administrator on the Unix socket'
http 201 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $writer" -d '{"name":"scratch"}' \
    "$T/v1/corpora"
http 200 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $writer" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$tmp/corpus.tar.gz" \
    "$T/v1/corpora/scratch/ingest" && body_has '"documents":2'
http 403 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $writer" \
    -d "{\"path\":\"$tmp/other\"}" "$T/v1/corpora/scratch/ingest" && body_has 'Unix socket only'
http 204 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $writer" -X DELETE \
    "$T/v1/corpora/scratch"
http 404 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $writer" "$T/v1/corpora/scratch"
http 401 --cacert "$tmp/ca.pem" "$T/v1/corpora" && body_has 'credentials required'
http 401 --cacert "$tmp/ca.pem" -H "Authorization: Bearer tome_0000" "$T/v1/corpora"
http 401 --cacert "$tmp/ca.pem" -H "Authorization: Basic eDp5" "$T/v1/corpora"
unix_http 204 "/v1/tokens/$reader_id" -X DELETE
unix_http 404 "/v1/tokens/$reader_id" -X DELETE
http 401 --cacert "$tmp/ca.pem" -H "Authorization: Bearer $reader" "$T/v1/corpora/src" &&
    body_has 'not valid'

# ---- client certificates ----
http 200 --cacert "$tmp/ca.pem" --cert "$tmp/alice.pem" --key "$tmp/alice.key" \
    "$T/v1/corpora/src" && body_has '"name":"src"'
http 403 --cacert "$tmp/ca.pem" --cert "$tmp/alice.pem" --key "$tmp/alice.key" \
    "$T/v1/corpora/other"
http 403 --cacert "$tmp/ca.pem" --cert "$tmp/alice.pem" --key "$tmp/alice.key" \
    -d '{"name":"x"}' "$T/v1/corpora"
checks=$((checks + 1))
got=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$tmp/ca.pem" --cert "$tmp/mallory.pem" \
    --key "$tmp/mallory.key" "$T/v1/corpora/src")
[ "$got" = 000 ] || fail "a certificate from another CA got HTTP status $got"
# The client sees the refusal before tomed has written its log line (under
# the sanitizers often enough): wait for it.
wait_for "the refused certificate is logged" grep -q 'TLS: .*certificate' "$tmp/tomed.log"

# ---- TLS versions ----
# OpenSSL 3's client refuses TLS 1.1 by itself at its default security
# level; at SECLEVEL=0 it offers it, so a refusal is the server's.  The
# same client against an openssl s_server that allows TLS 1.1 shows that it
# gets through where a server lets it.  (s_client names the protocol it
# offered even when refused; "New, TLSv1..." is a handshake that happened.)
tls11() { openssl s_client -connect "127.0.0.1:$1" -tls1_1 -cipher DEFAULT@SECLEVEL=0 </dev/null 2>&1; }
legacy_port=$(free_port 11)
openssl s_server -quiet -accept "$legacy_port" -cert "$tmp/server.pem" -key "$tmp/server.key" \
    -tls1_1 -cipher DEFAULT@SECLEVEL=0 >/dev/null 2>&1 &
legacy=$!
checks=$((checks + 1))
i=0
until tls11 "$legacy_port" | grep -q '^New, TLS'; do
    i=$((i + 1))
    [ "$i" -le 100 ] || { fail "the TLS 1.1 client never reached a TLS 1.1 server"; break; }
    sleep 0.1
done
kill "$legacy"
wait "$legacy" 2>/dev/null
tls11 "$port" >"$tmp/tls11"
checks=$((checks + 1))
grep -q '^New, TLS' "$tmp/tls11" && fail "TLS 1.1 was accepted"
checks=$((checks + 1))
grep -q 'alert protocol version' "$tmp/tls11" ||
    fail "TLS 1.1 was not refused by the server: $(grep -i 'error\|alert' "$tmp/tls11" | head -3)"
checks=$((checks + 1))
curl -sv -o /dev/null --cacert "$tmp/ca.pem" "$T/v1/health" 2>&1 | grep -q 'using TLSv1.3' ||
    fail "TLS 1.3 was not negotiated"
checks=$((checks + 1))
curl -sv -o /dev/null --cacert "$tmp/ca.pem" --tlsv1.2 --tls-max 1.2 "$T/v1/health" 2>&1 |
    grep -q 'using TLSv1.2' || fail "TLS 1.2 was refused"

# ---- a peer uid that is not allowed ----
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
checks=$((checks + 1))
got=$(nobody curl -s -o /dev/null -w '%{http_code}' --unix-socket "$sock" http://tome/v1/corpora)
[ "$got" = 403 ] || fail "uid 65534 listed corpora (status $got)"
checks=$((checks + 1))
got=$(nobody curl -s -o /dev/null -w '%{http_code}' --unix-socket "$sock" http://tome/v1/health)
[ "$got" = 200 ] || fail "uid 65534 cannot read /v1/health (status $got)"
wait_for "the refused uid is logged" grep -q 'uid:65534 is not allowed' "$tmp/tomed.log"

# ---- a server-side path only for a peer that could read it itself ----
as_user() { setpriv --reuid=1234 --regid=1234 --clear-groups "$@"; }
mkdir -p "$tmp/private" "$tmp/locked/open"
cp "$tmp/other/notes.txt" "$tmp/private/" && cp "$tmp/other/notes.txt" "$tmp/locked/open/"
chmod 700 "$tmp/private" "$tmp/locked"
ln -s "$tmp/private" "$tmp/link"
for path in private locked/open link; do
    checks=$((checks + 1))
    got=$(as_user curl -s -w ' %{http_code}' --unix-socket "$sock" \
        -d "{\"path\":\"$tmp/$path\"}" http://tome/v1/corpora/other/ingest)
    case $got in
    *'may not'*' 403') ;;
    *) fail "uid 1234 ingested $path, which it cannot read: $got" ;;
    esac
done
checks=$((checks + 1))
got=$(as_user curl -s -o /dev/null -w '%{http_code}' --unix-socket "$sock" \
    -d "{\"path\":\"$tmp/other\"}" http://tome/v1/corpora/other/ingest)
[ "$got" = 200 ] || fail "uid 1234 could not ingest a readable directory (status $got)"

# ---- a client that sends its request head too slowly is cut off ----
checks=$((checks + 1))
start=$(date +%s)
(printf 'GET /v1/health HTTP/1.1\r\nHost: x\r\n'; sleep 6) | {
    openssl s_client -quiet -connect "127.0.0.1:$port" -CAfile "$tmp/ca.pem" >/dev/null 2>&1
    date +%s >"$tmp/cut"
}
elapsed=$(($(cat "$tmp/cut") - start))
[ "$elapsed" -lt 6 ] || fail "a stalled request head held its connection for ${elapsed}s"

# ---- SIGHUP swaps the certificate; a Unix upload in progress goes on ----
checks=$((checks + 1))
openssl s_client -connect "127.0.0.1:$port" -CAfile "$tmp/ca.pem" </dev/null 2>/dev/null |
    grep -q 'subject=CN = server$' || fail "the first certificate is not served"
head -c 600000 /dev/urandom >"$tmp/slow.bin"
curl -s -o "$tmp/slow.out" -w '%{http_code}' --limit-rate 200K --unix-socket "$sock" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$tmp/slow.bin" \
    http://tome/v1/corpora/other/ingest >"$tmp/slow.status" &
upload=$!
uploading() { find "$tmp/state/tmp" -type f -size +0 | grep -q .; }
wait_for "the upload is streaming" uploading
cp "$tmp/server2.pem" "$tmp/server.pem"
cp "$tmp/server2.key" "$tmp/server.key"
kill -HUP "$daemon_pid"
wait_for "the certificates are reloaded" grep -q 'TLS certificates reloaded' "$tmp/tomed.log"
checks=$((checks + 1))
openssl s_client -connect "127.0.0.1:$port" -CAfile "$tmp/ca.pem" </dev/null 2>/dev/null |
    grep -q 'subject=CN = server2$' || fail "SIGHUP did not swap the certificate"
grep -q 'TLS certificates reloaded' "$tmp/tomed.log" || fail "the reload is not logged"
wait "$upload"
# The random bytes are a binary file, not a corpus: what matters is that the
# upload, begun before the reload, got a whole JSON answer after it.
checks=$((checks + 1))
case $(cat "$tmp/slow.status") in
2??|4??) grep -q '^{' "$tmp/slow.out" || fail "the Unix upload's answer is not JSON" ;;
*) fail "the Unix upload was dropped by SIGHUP (status $(cat "$tmp/slow.status"))" ;;
esac
unix_http 200 /v1/health

# ---- clean stop ----
stop_tomed TERM
check "the socket is removed at exit" [ ! -e "$sock" ]
check "the pidfile is removed at exit" [ ! -e "$tmp/state/tomed.pid" ]
grep -q 'SIGTERM: draining' "$tmp/tomed.log" || fail "the drain is not logged"
finish
