#!/bin/sh
# tomed's HTTP connections under clients that misbehave or are merely
# unusual, byte for byte through tests/raw_http: an answer sent before the
# request body was read (it must arrive, not be lost to a reset); a client
# that half-closes after its request (it must still get the whole answer);
# a client that pipelines megabytes of requests and reads its answers late
# (the daemon's memory must stay bounded); ambiguous message framing, the
# stuff of request smuggling (400 and closed), and a head over 32 KiB (431).
. "$TOME_SRCDIR/tests/daemon-lib.sh"
require_model
raw="$build/tests/raw_http"

cat >"$tmp/tomed.conf" <<EOF2
max_request_bytes = 64K
max_upload_bytes = 1M
header_timeout = 5
idle_timeout = 5
EOF2
# In a build with AddressSanitizer, freed blocks wait in its quarantine
# (256 MB by default) and count in the RSS that the pipelining check below
# bounds: a small one keeps that check about the daemon's own memory.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=8"
export ASAN_OPTIONS
start_tomed --config "$tmp/tomed.conf" --model "$model"

# ---- an early answer survives the body it did not read ----
# The 413 goes out as soon as the head is in, while the client is still
# sending 600 KB; the daemon must not reset the connection under it.
head -c 600000 /dev/zero | tr '\0' 'a' >"$tmp/big.json"
{
    printf 'POST /v1/corpora HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
    printf 'Content-Length: 600000\r\n\r\n'
    cat "$tmp/big.json"
} >"$tmp/early.req"
good=0
for i in $(seq 50); do
    "$raw" "$sock" <"$tmp/early.req" >"$tmp/raw" 2>"$tmp/raw.err"
    rc=$?
    if [ "$rc" -eq 0 ] && head -1 "$tmp/raw" | grep -q '^HTTP/1.1 413 ' &&
        grep -q 'max_request_bytes' "$tmp/raw"; then
        good=$((good + 1))
    fi
done
check "the early 413 arrived intact $good times of 50" [ "$good" -eq 50 ]
good=0
for i in $(seq 20); do
    [ "$(curl -s -o "$tmp/body" -w '%{http_code}' --unix-socket "$sock" \
        -H 'Content-Type: application/json' --data-binary "@$tmp/big.json" \
        http://tome/v1/corpora)" = 413 ] && good=$((good + 1))
done
check "curl got the early 413 $good times of 20" [ "$good" -eq 20 ]
unix_http 200 /v1/health

# ---- a half-closed client still gets its answers ----
mkdir -p "$tmp/docs"
printf 'the indexer walks the tree\n' >"$tmp/docs/notes.txt"
unix_http 201 /v1/corpora -d '{"name":"docs"}'
unix_http 200 /v1/corpora/docs/ingest -d "{\"path\":\"$tmp/docs\"}"
# half_closed NAME REQUEST-BYTES: send, shut the writing side, read to the end.
half_closed() {
    checks=$((checks + 1))
    printf "$2" | "$raw" --half-close "$sock" >"$tmp/raw" 2>"$tmp/raw.err"
    rc=$?
    [ "$rc" -eq 0 ] || fail "$1: raw_http exited $rc: $(cat "$tmp/raw.err")"
}
for i in $(seq 10); do
    half_closed "health, half-closed" 'GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n'
    grep -q '"status":"ok"' "$tmp/raw" || { fail "half-closed health lost its answer: $(cat "$tmp/raw")"; break; }
    half_closed "HTTP/1.0 search, half-closed" \
        'GET /v1/corpora/docs/search?q=indexer HTTP/1.0\r\n\r\n'
    grep -q '"path":"notes.txt","line":1' "$tmp/raw" ||
        { fail "half-closed search lost its answer: $(cat "$tmp/raw")"; break; }
done
half_closed "two pipelined requests, half-closed" \
    'GET /v1/corpora/docs/search?q=tree HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n'
check "both pipelined answers arrived: $(grep -c '^HTTP/1.1 200' "$tmp/raw")" \
    [ "$(grep -c '^HTTP/1.1 200' "$tmp/raw")" -eq 2 ]
unix_http 200 /v1/health

# ---- pipelined requests whose answers are read late ----
# 2^19 health requests (19 MB) answer with about 90 MB; the daemon must
# stop reading while the answers wait, not hold them all in memory.
rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$daemon_pid/status"; }
printf 'GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n' >"$tmp/pipe.req"
for i in $(seq 19); do cat "$tmp/pipe.req" "$tmp/pipe.req" >"$tmp/pipe2.req" &&
    mv "$tmp/pipe2.req" "$tmp/pipe.req"; done
printf 'GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >>"$tmp/pipe.req"
base=$(rss_kb)
"$raw" --half-close --read-after 4 --timeout 60 "$sock" <"$tmp/pipe.req" 2>"$tmp/raw.err" |
    grep -c '^HTTP/1.1 200 ' >"$tmp/answers" &
reader=$!
peak=$base
while kill -0 "$reader" 2>/dev/null; do
    now=$(rss_kb)
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.2
done
wait "$reader"
check "RSS grew by $(((peak - base) / 1024)) MB under pipelined requests (at most 64)" \
    [ $((peak - base)) -lt $((64 * 1024)) ]
check "all $(cat "$tmp/answers") of 524289 pipelined answers arrived" \
    [ "$(cat "$tmp/answers")" = 524289 ]
unix_http 200 /v1/health
# Reading resumes after the client's end of input too: 400 pipelined
# searches (12 MB of answers, each from a worker) from a client that then
# half-closes and reads late.
mkdir -p "$tmp/many"
for i in $(seq 300); do echo "line $i of the indexer notes, long enough for big answers"; done \
    >"$tmp/many/notes.txt"
unix_http 201 /v1/corpora -d '{"name":"many"}'
unix_http 200 /v1/corpora/many/ingest -d "{\"path\":\"$tmp/many\"}"
for i in $(seq 400); do
    printf 'GET /v1/corpora/many/search?q=indexer&limit=300 HTTP/1.1\r\nHost: x\r\n\r\n'
done | "$raw" --half-close --read-after 1 --timeout 30 "$sock" 2>"$tmp/raw.err" |
    grep -c '^HTTP/1.1 200 ' >"$tmp/answers"
check "all $(cat "$tmp/answers") of 400 pipelined searches arrived after a half-close" \
    [ "$(cat "$tmp/answers")" = 400 ]

# ---- framing a proxy could read another way: 400, then close ----
# refused NAME STATUS REQUEST-BYTES: the one answer is STATUS and the daemon
# closes the connection (no Connection: close is sent, so a daemon that
# takes the request keeps the connection open and raw_http times out).
refused() {
    checks=$((checks + 1))
    printf "$3" | "$raw" --timeout 5 "$sock" >"$tmp/raw" 2>"$tmp/raw.err"
    rc=$?
    n=$(grep -c '^HTTP/1.1 ' "$tmp/raw")
    if ! head -1 "$tmp/raw" | grep -q "^HTTP/1.1 $2 " || [ "$rc" -ne 0 ] || [ "$n" -ne 1 ]; then
        fail "$1: raw_http exited $rc, $n answers, the first: $(head -1 "$tmp/raw")"
    fi
}
post='POST /v1/corpora HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
refused "two different Content-Lengths" 400 \
    "${post}Content-Length: 15\r\nContent-Length: 16\r\n\r\n{\"name\":\"sm1\"}"
grep -q 'conflicting Content-Length' "$tmp/raw" || fail "the 400 does not say why: $(tail -1 "$tmp/raw")"
refused "a space before the colon" 400 "${post}Content-Length : 15\r\n\r\n{\"name\":\"sm2\"}"
refused "a Content-Length that is not a number" 400 "${post}Content-Length: +15\r\n\r\n{\"name\":\"sm3\"}"
refused "Content-Length and Transfer-Encoding" 400 \
    "${post}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\nf\r\n{\"name\":\"sm4\"}\r\n0\r\n\r\n"
refused "two Transfer-Encodings" 400 \
    "${post}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\nf\r\n{\"name\":\"sm5\"}\r\n0\r\n\r\n"
chunked="${post}Transfer-Encoding: chunked\r\n\r\n"
refused "chunk size 11zz" 400 "${chunked}11zz\r\n{\"name\":\"sm6xyz\"}\r\n0\r\n\r\n"
refused "chunk size 0x11" 400 "${chunked}0x11\r\n{\"name\":\"sm7xyz\"}\r\n0\r\n\r\n"
refused "bytes between chunk data and CRLF" 400 "${chunked}f\r\n{\"name\":\"sm8\"}XX\r\n0\r\n\r\n"
grep -q 'chunk data is longer' "$tmp/raw" || fail "the 400 does not say why: $(tail -1 "$tmp/raw")"
# A well-formed chunked request with an extension is still taken.
printf "${chunked}f;ext=1\r\n{\"name\":\"sm9\"}\r\n0\r\n\r\n" | "$raw" --half-close "$sock" >"$tmp/raw"
check "a good chunked request: $(head -1 "$tmp/raw")" grep -q '^HTTP/1.1 201 ' "$tmp/raw"
unix_http 200 /v1/corpora
checks=$((checks + 1))
grep -q '"sm[1-8]"' "$tmp/body" && fail "a refused request created a corpus: $(cat "$tmp/body")"
# A head over 32 KiB is answered 431, not dropped.
big=$(head -c 40000 /dev/zero | tr '\0' 'a')
refused "a 40 KB header line" 431 "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: $big\r\n\r\n"
refused "a 40 KB head without its end" 431 "GET /v1/health HTTP/1.1\r\nX-Big: $big"
unix_http 200 /v1/health

stop_tomed TERM
finish
