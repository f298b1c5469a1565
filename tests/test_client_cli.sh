#!/bin/sh
# The `tome` program without a daemon: version and help, usage errors and
# their exit statuses, an unreachable daemon, token file permissions, a
# questions file checked before anything is sent, NO_COLOR, and the bash
# and zsh completions.  (test_client_daemon.sh drives a real tomed.)
set -u
tome="$TOME_BUILDDIR/client/tome"
[ -x "$tome" ] || { echo "FAIL: $tome is not built"; exit 1; }
command -v zsh >/dev/null 2>&1 || { echo "FAIL: zsh is missing (apt-get install zsh)"; exit 1; }
command -v bash >/dev/null 2>&1 || { echo "FAIL: bash is missing"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tome-cli-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect STATUS STDOUT-PATTERN STDERR-PATTERN -- ARGS...: run tome and check
# its exit status and that each stream matches (an empty pattern: empty).
expect() {
    want=$1 out_re=$2 err_re=$3
    shift 4
    "$tome" "$@" >"$tmp/out" 2>"$tmp/err"
    got=$?
    [ "$got" -eq "$want" ] || fail "tome $*: exit $got, expected $want ($(cat "$tmp/err"))"
    check_stream out "$out_re" "$*"
    check_stream err "$err_re" "$*"
}
check_stream() {
    if [ -z "$2" ]; then
        [ ! -s "$tmp/$1" ] || fail "tome $3: std$1 should be empty: $(head -3 "$tmp/$1")"
    else
        grep -Eq -- "$2" "$tmp/$1" || fail "tome $3: std$1 lacks /$2/: $(head -3 "$tmp/$1")"
    fi
}

export TOME_SOCKET="$tmp/nobody-listens.sock"
unset TOME_HOST TOME_TOKEN TOME_TOKEN_FILE

expect 0 '^tome [0-9]+\.[0-9]+' '' -- --version
expect 0 'tome report CORPUS QUESTIONS-FILE' '' -- --help
expect 0 'tome ask CORPUS QUESTION' '' -- help ask
expect 2 '' 'tome: error: no command given' --
expect 2 '' "unknown command 'fly'" -- fly
expect 2 '' 'usage: tome ask CORPUS QUESTION' -- ask src
expect 2 '' "option --wait does not apply to 'ask'" -- ask src q --wait
expect 2 '' "unknown option '--token'" -- --token s3cret status
expect 2 '' 'exclude each other' -- --socket /a --host b:1 status
expect 3 '' "cannot connect to tomed at $tmp/nobody-listens.sock" -- status
expect 3 '' 'cannot connect to tomed' -- corpus ls
expect 3 '' 'cannot connect to tomed' -- ask src "why?"
printf '  \n' | "$tome" ask src - >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q 'question on standard input is empty' "$tmp/err" ||
    fail "an empty question on stdin: $(cat "$tmp/err")"
expect 3 '' 'cannot connect to localhost' -- --host localhost:1 status
TOME_HOST=localhost:1 expect 3 '' 'cannot connect to localhost' -- status
unset TOME_HOST
expect 3 '' 'tomed at /elsewhere.sock' -- --socket /elsewhere.sock status

# The token file must be private, and its secret never appears anywhere.
printf 's3cret\n' >"$tmp/token"
chmod 644 "$tmp/token"
expect 6 '' 'chmod 600' -- --token-file "$tmp/token" status
chmod 600 "$tmp/token"
expect 3 '' 'cannot connect' -- --token-file "$tmp/token" status
grep -q s3cret "$tmp/err" && fail "the token leaked into stderr"

# A bad questions file is a usage error found before connecting.
printf '## one\nfine\n## one\nagain\n' >"$tmp/dup.txt"
expect 2 '' "dup.txt:3: duplicate question id one" -- report src "$tmp/dup.txt"
expect 2 '' 'questions file' -- report src "$tmp/missing.txt"
printf '## one\nfine\n' >"$tmp/ok.txt"
expect 2 '' 'use markdown, json or text' -- report src "$tmp/ok.txt" --format html
expect 3 '' 'cannot connect' -- report src "$tmp/ok.txt" -o "$tmp/report.md"
[ ! -e "$tmp/report.md" ] || fail "a failed report run created its output file"

# Colour: never without a terminal, never with NO_COLOR, never in pipes.
"$tome" status 2>"$tmp/err"
grep -q "$(printf '\033')" "$tmp/err" && fail "colour escape codes without a terminal"
if command -v script >/dev/null 2>&1; then
    script -qec "$tome status" /dev/null >"$tmp/tty" 2>&1
    grep -q "$(printf '\033\\[31m')" "$tmp/tty" || fail "no red error on a terminal"
    NO_COLOR=1 script -qec "$tome status" /dev/null >"$tmp/tty" 2>&1
    grep -q "$(printf '\033')" "$tmp/tty" && fail "colour on a terminal despite NO_COLOR"
    script -qec "$tome --no-color status" /dev/null >"$tmp/tty" 2>&1
    grep -q "$(printf '\033')" "$tmp/tty" && fail "colour on a terminal despite --no-color"
else
    fail "script(1) is missing (apt-get install bsdutils)"
fi

# Completions: bash by calling the function as bash would, zsh by syntax.
complete_words() {
    bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _tome;
             printf "%s\n" "${COMPREPLY[@]}"' _ "$TOME_SRCDIR/client/completion/tome" "$@"
}
complete_words tome "" | grep -qx report || fail "bash: commands not completed"
complete_words tome corpus "" | tr '\n' ' ' | grep -q "^add ls show rm" ||
    fail "bash: corpus subcommands not completed"
complete_words tome ask src --th | grep -qx -- --think || fail "bash: ask options not completed"
complete_words tome report src q.txt --format "" | tr '\n' ' ' | grep -q "markdown json text" ||
    fail "bash: --format values not completed"
complete_words tome prefill --w | grep -qx -- --wait || fail "bash: prefill options not completed"
zsh -n "$TOME_SRCDIR/client/completion/_tome" || fail "zsh: the completion does not parse"
head -1 "$TOME_SRCDIR/client/completion/_tome" | grep -qx '#compdef tome' ||
    fail "zsh: the completion lacks its #compdef line"

# tome(1) passes groff's checks and documents every command and option
# that `tome help` lists.
command -v mandoc >/dev/null 2>&1 || { echo "FAIL: mandoc is missing"; exit 1; }
page="$TOME_SRCDIR/man/tome.1"
LC_ALL=C.UTF-8 MANWIDTH=100 man --warnings -l "$page" >/dev/null 2>"$tmp/manwarn" ||
    fail "man -l tome.1 failed"
[ ! -s "$tmp/manwarn" ] || fail "groff warnings in tome.1: $(head -5 "$tmp/manwarn")"
mandoc -Tascii "$page" | sed "s/.\x08//g" >"$tmp/man.txt"
"$tome" --help | sed -n 's/^  tome \([a-z]*\)\( \([a-z]*\)\)\{0,1\}.*/\1 \3/p' >"$tmp/commands"
[ "$(wc -l <"$tmp/commands")" -ge 17 ] || fail "tome --help lists too few commands"
while read -r first second; do
    grep -q "$first${second:+ $second}" "$tmp/man.txt" ||
        fail "tome.1 does not document '$first $second'"
    "$tome" help $first $second | sed -n 's/^options://p' | tr ' ' '\n' | grep -- '^--' |
        while read -r option; do
            grep -q -- "$option" "$tmp/man.txt" || echo "$option of $first $second"
        done >>"$tmp/undocumented"
done <"$tmp/commands"
for option in --socket --host --cacert --cert --key --token-file --quiet --no-color --json \
    --help --version TOME_SOCKET TOME_HOST TOME_TOKEN NO_COLOR "EXIT STATUS"; do
    grep -q -- "$option" "$tmp/man.txt" || echo "$option" >>"$tmp/undocumented"
done
[ ! -s "$tmp/undocumented" ] || fail "tome.1 lacks: $(tr '\n' ' ' <"$tmp/undocumented")"

[ "$failures" -eq 0 ] || { echo "$failures failures"; exit 1; }
echo "all client command-line checks passed"
