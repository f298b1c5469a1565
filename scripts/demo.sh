#!/bin/sh
# The README's main job: install, build, make the built-in model, start
# tomed on a private state directory, ingest this repository, search it,
# prefill, ask one question, print the answer with its sources and timings,
# and stop the daemon.  It says before the answer that the built-in model's
# weights are random (its text is noise, its sources are not), and at the
# end how to run the same with real DeepSeek V4 weights.  Steps whose parts
# are not built yet are reported as such.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh scripts/install-deps.sh
build="$top/_build"
if [ ! -f "$build/Makefile" ]; then
    autoreconf -fi >/dev/null
    mkdir -p "$build"
    (cd "$build" && "$top/configure" >/dev/null)
fi
make -C "$build" -j"$(nproc)" >/dev/null
echo "demo: build ok"
for prog in tools/tome-mkmodel daemon/tomed client/tome; do
    if [ ! -x "$build/$prog" ]; then
        echo "demo: $prog is not built yet; stopping here"
        exit 0
    fi
done

# The rest is what a user does with the client: a daemon on a private state
# directory and socket, a corpus made from this repository, one prefill, one
# question.  On a terminal the prefill shows a progress bar and the answer
# streams in as it is generated.
tome="$build/client/tome"
work=$(mktemp -d "${TMPDIR:-/tmp}/tome-demo-XXXXXX")
daemon_pid=""
stop_daemon() {
    if [ -n "$daemon_pid" ]; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        status=0
        wait "$daemon_pid" || status=$?
        echo "demo: tomed stopped (exit status $status)"
        daemon_pid=""
    fi
}
trap 'stop_daemon; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# The built-in tiny model (random weights, the real DeepSeek tokenizer),
# made by the build's own rule.
make -C "$build" models/tiny/config.json >/dev/null
model=$build/models/tiny

export TOME_SOCKET="$work/tomed.sock"
"$build/daemon/tomed" --foreground --state-dir "$work/state" --socket "$TOME_SOCKET" \
    --model "$model" --log-level warn 2>"$work/tomed.log" &
daemon_pid=$!
tries=0
until "$tome" -q status >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ] || ! kill -0 "$daemon_pid" 2>/dev/null; then
        echo "demo: tomed did not become ready; its log:"
        cat "$work/tomed.log"
        exit 1
    fi
    sleep 0.2
done
echo "demo: \$ tome status"
"$tome" status

echo "demo: \$ tome corpus add tome"
"$tome" corpus add tome
# The whole tree is over 400k tokens, which the tiny model on a small
# machine prefills in tens of minutes; by default the demo takes the
# documentation and the public headers (about 30k tokens, minutes), and
# TOME_DEMO_CORPUS=full takes everything.
if [ "${TOME_DEMO_CORPUS:-}" = full ]; then
    paths=""
    echo "demo: corpus: the whole repository (git archive HEAD)"
else
    paths="README.md ARCHITECTURE.md common/common.h engine/v4.h store/store.h ingest/ingest.h"
    paths="$paths client/client.h"
    echo "demo: corpus: the documentation and public headers of this repository"
    echo "demo: (TOME_DEMO_CORPUS=full ingests all of it; its prefill takes tens of minutes)"
fi
# shellcheck disable=SC2086
git archive --format=tar.gz HEAD $paths >"$work/tome.tar.gz"
echo "demo: \$ tome ingest tome tome.tar.gz   (git archive --format=tar.gz HEAD $paths)"
"$tome" ingest tome "$work/tome.tar.gz"
# Search needs no model: FTS5 over the ingested lines, path:line hits.
echo "demo: \$ tome search tome 'state AND file' --limit 5"
"$tome" search tome 'state AND file' --limit 5
echo "demo: \$ tome prefill tome --wait"
"$tome" prefill tome --wait
question="Which module owns the KV state file format, and which header declares it?"
cat <<'EOF'
demo: ----------------------------------------------------------------------
demo: NOTE: the built-in "tiny" model has RANDOM WEIGHTS. It runs every
demo: DeepSeek V4 layer and the real tokenizer, but the answer text below is
demo: noise, not an answer. The "Sources" after it are real: the corpus lines
demo: that best match the question (SQLite full-text search), whatever the
demo: model. Citations in the answer are checked against the corpus.
demo: ----------------------------------------------------------------------
EOF
echo "demo: \$ tome ask tome \"$question\""
"$tome" ask tome "$question" --max-tokens 48
echo "demo: the same question with --json (answer, token counts and timings):"
"$tome" ask tome "$question" --max-tokens 48 --json
stop_daemon
cat <<'EOF'
demo: To get real answers, run the same with real DeepSeek V4 weights:
demo:   huggingface-cli download deepseek-ai/DeepSeek-V4-Flash --local-dir /models/v4-flash
demo:   tomed --model /models/v4-flash      (or model = /models/v4-flash in tomed.conf)
demo:   tome corpus add mycode && tome ingest mycode ./src && tome prefill mycode --wait
demo:   tome ask mycode "Where is the configuration parsed?"
demo: (README.md, "Using real DeepSeek V4 weights", has the details.)
EOF
