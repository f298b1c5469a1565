#!/bin/sh
# test_model_plan.sh - tome-model plan on the published V4 configs.
#
# Expected figures are worked out here, not copied from the program:
#  - KV state per token, Flash: a stored entry is 448 FP8 dims + 7 scales +
#    64 F32 RoPE dims = 711 bytes, an indexer key 64 + 4 = 68 bytes; 21 CSA
#    layers add (711 + 68) / 4 a token, 20 HCA layers 711 / 128:
#    4089.75 + 111.09375 = 4200.84375.  Pro: 30 CSA, 31 HCA:
#    30 * 194.75 + 31 * 711 / 128 = 5842.5 + 172.1953125 = 6014.6953125.
#  - Flash's weights: the published index's total_size, 159609485896 bytes
#    = 148.649 GiB.
#  - The verdicts follow from those sizes and the RAM given.
set -u
build=${TOME_BUILDDIR:?run through make check}
src=${TOME_SRCDIR:?run through make check}
tool=$build/tools/tome-model
flash=$src/tools/model/published/DeepSeek-V4-Flash.config.json
pro=$src/tools/model/published/DeepSeek-V4-Pro.config.json
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tome-plan-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
checks=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# expect DESCRIPTION PATTERN: the last plan's output has a line matching.
expect() { checks=$((checks + 1)); grep -q -- "$2" "$tmp/out" || { fail "$1"; cat "$tmp/out"; }; }
plan() { "$tool" plan --no-measure "$@" >"$tmp/out" 2>"$tmp/err"; }

plan "$flash" --ram 512G --free-disk 2T
expect "Flash KV state per token" "^KV state     4200.8 bytes/token"
expect "Flash KV state at 1M tokens (4200.84375 * 2^20 / 2^30)" "4.10 GiB at 1048576 tokens"
expect "Flash weights as published" "^weights      148.6 GiB"
expect "Flash fits 512 GB" "^verdict      fits in RAM"
expect "no bandwidth, no decode speed" "read bandwidth not measured"

plan "$pro" --ram 512G --free-disk 4T --context 65536 --questions 4
expect "Pro KV state per token" "^KV state     6014.7 bytes/token"
expect "Pro memory for 4 questions (4 * 6014.6953125 * 65536 / 2^30)" \
    "^questions    4 x 0.37 GiB = 1.47 GiB"
expect "Pro on 512 GB runs from the page cache" "^verdict      runs from the page cache"

plan "$flash" --ram 128G --free-disk 2T
expect "Flash on 128 GB runs from the page cache" "^verdict      runs from the page cache"
plan "$flash" --ram 8G --free-disk 2T
expect "Flash on 8 GB does not fit" "^verdict      does not fit: even without the routed experts"
plan "$flash" --ram 512G --free-disk 1G
expect "states larger than the disk do not fit" \
    "^verdict      does not fit: the saved states need 4.1 GiB of disk, 1.0 GiB are free"

# Speeds are the given limits over the per-token figures the plan prints.
plan "$flash" --ram 512G --free-disk 2T --bandwidth 100 --gflops 2000 --disk-speed 1000
checks=$((checks + 1))
awk '/^decode       at most/ { tps = $4; gib = substr($6, 2) + 0; want = 100e9 / (gib * 1073741824);
        ok = tps > want * 0.99 && tps < want * 1.01 }
     /^prefill      at most/ { tps = $4; gf = substr($6, 2) + 0; want = 2000 / gf;
        ok2 = tps > want - 1 && tps < want + 1 }
     /every routed expert comes from disk/ { disk = 1 }
     END { exit !(ok && ok2 && disk) }' "$tmp/out" || { fail "speeds from the given limits"; cat "$tmp/out"; }

# Exact kernels read a panel copy of every matrix, made at open, instead of
# the mapped matrices: every routed expert (codes and scales, 137.06 GiB as
# printed above) and at most all the weights but the embedding table.  Memory
# counts the panels in place of what they replace (Flash's dimensions are
# multiples of 8, so the two differ only by FP8's NaN marks, a byte per
# 128 x 8 weights).  The copy cannot come from disk: on 128 GB, where the
# fast kernels run from the page cache, the exact ones do not fit.
plan "$flash" --ram 512G --free-disk 2T --kernels exact
checks=$((checks + 1))
awk '/^weights/ { w = $2 } /^  routed experts/ { r = $3 } /^  embeddings/ { e = $2 }
     /^panels/ { p = $2; x = $(NF - 4) } /^questions/ { s = $(NF - 6) }
     /^memory .*the matrices as panels/ { m = $2 }
     END { exit !(p >= r && p <= w - e + 0.1 && x > p - 0.2 && x <= p &&
                  m > w - x + p + s - 0.2 && m < w - x + p + s + 0.2) }' \
    "$tmp/out" || { fail "exact kernels' panels: between the routed experts and all but the embedding"; cat "$tmp/out"; }
plan "$flash" --ram 128G --free-disk 2T --kernels exact
expect "Flash on 128 GB with exact kernels does not fit" \
    "^verdict      does not fit: .* needed in RAM with every matrix held there (exact kernels' panels"
# fp32 numerics store F32 rows: a KV entry 512 * 4 = 2048 bytes, an
# indexer key 128 * 4 = 512; 21 * (2048 + 512) / 4 + 20 * 2048 / 128 = 13760.
plan "$flash" --ram 512G --free-disk 2T --numerics fp32
expect "Flash fp32 KV state per token" "^KV state     13760.0 bytes/token"
"$tool" plan "$flash" --no-measure --kernels quick 2>"$tmp/err" >/dev/null
rc=$?
checks=$((checks + 1))
[ $rc -eq 1 ] && grep -q -- "--kernels quick: expected fast or exact" "$tmp/err" ||
    fail "an unknown --kernels is named"

# A model directory: the plan measures this machine (bandwidth, FMA,
# the disk read of its largest shard).
"$build/tools/tome-mkmodel" --preset tiny --seed 2 -o "$tmp/tiny" 2>/dev/null
"$tool" plan "$tmp/tiny" --threads 1 --context 4096 >"$tmp/out" 2>"$tmp/err"
rc=$?
checks=$((checks + 1))
[ $rc -eq 0 ] || fail "plan of a model directory"
expect "a directory's config is read" "^model        $tmp/tiny/config.json"
expect "bandwidth measured" "^decode       at most .* GB/s read bandwidth"
expect "FMA peak measured" "^prefill      at most .* GFLOP/s FMA peak"
expect "disk read measured" "every routed expert comes from disk"

# Bad input is named.
"$tool" plan "$tmp/nothing" 2>"$tmp/err" >/dev/null
checks=$((checks + 1))
grep -q "nothing: No such file" "$tmp/err" || fail "a missing model is named"
echo '{"hidden_size": 4096}' >"$tmp/bad.json"
"$tool" plan "$tmp/bad.json" --no-measure 2>"$tmp/err" >/dev/null
checks=$((checks + 1))
grep -q "bad.json" "$tmp/err" || fail "a bad config is named"
"$tool" plan "$flash" --questions 0 2>"$tmp/err" >/dev/null
rc=$?
checks=$((checks + 1))
[ $rc -eq 2 ] && grep -q -- "--questions" "$tmp/err" || fail "--questions 0 is a usage error"

echo "$checks checks, $failures failed"
[ "$failures" -eq 0 ]
