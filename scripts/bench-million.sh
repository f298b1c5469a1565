#!/bin/sh
# The mission end to end at full size, as a user runs it (not part of
# `make check`; about an hour on a 2-core machine): a corpus of about a
# million tokens made of this repository's sources and man pages, repeated
# with varied text, ingested into a private tomed; `tome prefill --wait`
# with the progress bar; tomed killed with SIGKILL mid-prefill and started
# again (the job resumes from its last restart point); then five questions,
# each timed.  Prints a summary: prefill wall time, the tokens that had to
# be computed again after the kill, the state's size on disk, the restore
# and first-token times, and the decode rate of each question.
#
#   sh scripts/bench-million.sh BUILDDIR [TOKENS]
#
# TOKENS (default 1048576) sizes the corpus (measured on the first copy;
# the prefill reports the exact count).  TOME_MILLION_KILL_AFTER
# (seconds, default a third of the expected prefill) sets when the kill
# comes.
set -eu
build=${1:?usage: bench-million.sh BUILDDIR [TOKENS]}
tokens=${2:-1048576}
top=$(cd "$(dirname "$0")/.." && pwd)
tome="$build/client/tome"
tomed="$build/daemon/tomed"
make -C "$build" -s models/tiny/config.json
work=$(mktemp -d "${TMPDIR:-/tmp}/tome-million-XXXXXX")
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
export TOME_SOCKET="$work/tomed.sock"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- the corpus: copies of the tree's text files, each copy headed by a
# line of its own so no two documents are the same.  The first copy is
# rendered and tokenized as tomed will, to learn the bytes per token of
# this text; the copies then stop 2% short of the budget (the rendering's
# per-document lines vary a little from copy to copy). ----
mkdir -p "$work/corpus"
files=$(cd "$top" && git ls-files '*.c' '*.h' '*.md' 'man/*' 'scripts/*.sh' 2>/dev/null ||
    find . -name '*.[ch]')
copy=0 have=0 bytes=""
while [ -z "$bytes" ] || [ "$have" -lt "$bytes" ]; do
    copy=$((copy + 1))
    for f in $files; do
        dst="$work/corpus/copy$copy/$f"
        mkdir -p "$(dirname "$dst")"
        { echo "Revision $copy of $f, reviewed by team $((copy * 7 % 13)) on day $((copy * 3))."
          cat "$top/$f"; } >"$dst"
        have=$((have + $(wc -c <"$dst")))
        [ -z "$bytes" ] || [ "$have" -lt "$bytes" ] || break
    done
    if [ -z "$bytes" ]; then
        "$build/tools/tome-ingest" --db "$work/probe.db" probe "$work/corpus/copy1" >/dev/null
        rendered=$("$build/tools/tome-ingest" --db "$work/probe.db" --render probe |
            "$build/tools/tome-tokenize" --model "$build/models/tiny" --stats 2>&1 >/dev/null |
            awk '{ for (i = 1; i < NF; i++) if ($i == "ids") print $(i + 1) }')
        bytes=$(awk -v t="$tokens" -v b="$have" -v r="$rendered" 'BEGIN { printf "%d", t * 0.98 * b / r }')
        echo "one copy: $have bytes render to $rendered tokens"
        rm -f "$work/probe.db"
    fi
done
echo "corpus: $copy copies of $(echo "$files" | wc -w) files, $have bytes"

start_daemon() {
    "$tomed" --foreground --state-dir "$work/state" --socket "$TOME_SOCKET" \
        --model "$build/models/tiny" --log-level info 2>>"$work/tomed.log" &
    pid=$!
    i=0
    until "$tome" -q status >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -lt 600 ] || { echo "tomed did not start"; tail "$work/tomed.log"; exit 1; }
        sleep 0.2
    done
}
start_daemon
"$tome" corpus add big >/dev/null
t0=$(now)
"$tome" ingest big "$work/corpus" >"$work/ingest.out"
echo "ingest: $(since "$t0") s"

# ---- prefill, killed once ----
t0=$(now)
"$tome" prefill big --wait >"$work/prefill1.out" 2>&1 &
waiter=$!
kill_after=${TOME_MILLION_KILL_AFTER:-$((tokens / 2000 / 3 + 5))}
waited=0
while [ "$waited" -lt "$kill_after" ]; do
    if ! kill -0 "$waiter" 2>/dev/null; then
        echo "the prefill ended before the kill:"
        tr '\r' '\n' <"$work/prefill1.out" | tail -3
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
done_before=$("$tome" --json jobs | sed -n 's/.*"tokens_done": *\([0-9]*\).*/\1/p' | head -1)
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
pid=""
wait "$waiter" 2>/dev/null || true
echo "killed tomed with SIGKILL after ${kill_after}s at ${done_before:-?} tokens"
start_daemon
if ! "$tome" prefill big --wait >"$work/prefill2.out" 2>&1; then
    echo "the resumed prefill failed:"
    tr '\r' '\n' <"$work/prefill2.out" | tail -3
    exit 1
fi
tr '\r' '\n' <"$work/prefill2.out" | tail -1
prefill_s=$(since "$t0")
resumed=$(grep -o 'resumes from its restart point at token [0-9]*' "$work/tomed.log" | tail -1 || true)
state=$(du -sb "$work/state/kv" | cut -f1)
echo "prefill: ${prefill_s} s wall (kill and restart included); ${resumed:-resume not logged}"
echo "state on disk: $state bytes"

# ---- questions from a restarted daemon: the first restores the state ----
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
start_daemon
for q in "Which file defines the KV state file format?" \
    "How does tomed authenticate TLS clients?" \
    "What does the lightning indexer select?" \
    "Where is the chat template rendered?" \
    "Which limits does ingest enforce on archives?"; do
    "$tome" ask big "$q" --max-tokens 64 --json >"$work/ask.json"
    ttft=$(sed -n 's/.*"ttft_ms": *\([0-9.e+-]*\).*/\1/p' "$work/ask.json" | head -1)
    total=$(sed -n 's/.*"total_ms": *\([0-9.e+-]*\).*/\1/p' "$work/ask.json" | head -1)
    rate=$(sed -n 's/.*"decode_tokens_per_s": *\([0-9.e+-]*\).*/\1/p' "$work/ask.json" | head -1)
    echo "question: first token ${ttft} ms, total ${total} ms, decode ${rate} tok/s: $q"
done
