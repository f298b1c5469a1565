#!/bin/sh
# Every man page in man/ must pass mandoc's linter without warnings.
set -u
command -v mandoc >/dev/null 2>&1 || { echo "mandoc is missing (apt-get install mandoc)"; exit 1; }
cd "$TOME_SRCDIR/man" || exit 1
n=0; fail=0
for page in *.[1-8]; do
    [ -e "$page" ] || continue
    n=$((n + 1))
    out=$(mandoc -Tlint -W warning "$page" 2>&1)
    if [ -n "$out" ]; then echo "$out"; fail=1; fi
done
[ "$n" -gt 0 ] || { echo "no man pages found in man/"; exit 1; }
echo "$n man pages checked"
exit $fail
