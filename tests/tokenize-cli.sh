#!/bin/sh
# tome-tokenize as a command: encode/decode round trip, --model, --special,
# --chat (text and ids), and exit statuses with messages that name the
# problem.  Needs the fetched tokenizer (see tests/tokenizer.am).
set -u
tool=$TOME_BUILDDIR/tools/tome-tokenize
dir=${TOME_TOKENIZER_DIR:-$TOME_BUILDDIR/vocab}
golden=$TOME_SHARED/golden
fail=0
check() { # check DESCRIPTION COMMAND...: the command must succeed
    what=$1
    shift
    if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; fail=1; fi
}
[ -x "$tool" ] || { echo "FAILED: $tool is not built"; exit 1; }
[ -f "$dir/v4/tokenizer.json" ] || { echo "FAILED: $dir/v4/tokenizer.json is missing (run scripts/fetch-tokenizer.sh DIR, set TOME_TOKENIZER_DIR=DIR)"; exit 1; }
[ -f "$golden/tokenizer/long.txt" ] || { echo "FAILED: golden data missing under $TOME_SHARED"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$tool" --model "$dir/v3" --special <"$golden/tokenizer/long.txt" >"$tmp/ids.json"
"$tool" --model "$dir/v3" --decode <"$tmp/ids.json" >"$tmp/back.txt"
check "decode(encode(long.txt)) == long.txt" cmp -s "$tmp/back.txt" "$golden/tokenizer/long.txt"
n=$(tr ',' '\n' <"$tmp/ids.json" | wc -l)
check "long.txt has the reference's 69991 ids" [ "$n" -eq 69991 ]

printf '<｜User｜>' | "$tool" --tokenizer "$dir/v3/tokenizer.json" --special >"$tmp/special"
printf '<｜User｜>' | "$tool" --tokenizer "$dir/v3/tokenizer.json" >"$tmp/plain"
check "--special gives the added token's id" [ "$(cat "$tmp/special")" = "[128803]" ]
check "without --special the text is ordinary" [ "$(tr -cd , <"$tmp/plain" | wc -c)" -gt 0 ]
printf '' | "$tool" --tokenizer "$dir/v3/tokenizer.json" >"$tmp/empty"
check "empty input gives []" [ "$(cat "$tmp/empty")" = "[]" ]

"$tool" --chat "$golden/encoding/test_input_2.json" --thinking >"$tmp/chat.txt"
check "--chat renders official case 2" cmp -s "$tmp/chat.txt" "$golden/encoding/test_output_2.txt"
"$tool" --model "$dir/v4" --chat "$golden/encoding/test_input_4.json" --ids >"$tmp/chat.ids"
"$tool" --model "$dir/v4" --special <"$golden/encoding/test_output_4.txt" >"$tmp/text.ids"
check "--chat --ids equals the ids of the rendered text" cmp -s "$tmp/chat.ids" "$tmp/text.ids"

"$tool" >/dev/null 2>&1
check "no tokenizer is a usage error (1)" [ $? -eq 1 ]
"$tool" --tokenizer "$tmp/nothere.json" </dev/null >/dev/null 2>"$tmp/err"
status=$?
check "a missing tokenizer fails with 2" [ $status -eq 2 ]
check "... and names the file" grep -q nothere.json "$tmp/err"
echo '[1, "x"]' | "$tool" --model "$dir/v4" --decode >/dev/null 2>"$tmp/err"
check "a bad id list fails with 2" [ $? -eq 2 ]
echo '[999999]' | "$tool" --model "$dir/v4" --decode >/dev/null 2>"$tmp/err"
check "an unknown id fails and is named" grep -q 999999 "$tmp/err"
echo '[{"role": "wizard"}]' >"$tmp/bad.json"
"$tool" --chat "$tmp/bad.json" >/dev/null 2>"$tmp/err"
check "a bad message fails with 2" [ $? -eq 2 ]
check "... naming the role and the file" grep -q 'wizard.*' "$tmp/err"
exit $fail
