#!/bin/sh
# test_gguf.sh - the golden models converted to GGUF by tome-convert, in
# lossless types (F32, BF16, MXFP4 experts of the FP4 model: logits equal to
# the safetensors model's, bit for bit) and quantised ones (Q8_0, Q4_K, and
# ds4's 2-bit recipe IQ2_XXS gate/up + Q2_K down, and a mix of Q6_K, Q5_K,
# Q3_K and IQ4_XS as llama.cpp's own files bring them: they load and run; the
# figures are printed), then checked by tests/test_gguf; and ds4's split
# layout, the MTP block in a file of its own.  The vocabulary
# tome-convert writes is checked by tests/test_convert_vocab: the built-in
# model's tokenizer.json (that file, converted --no-mtp, also runs in
# tome-run) and the stand-in of the golden models; tests/test_gguf_vocab
# reads that vocabulary back as a tokenizer.
set -e
: "${TOME_SHARED:?TOME_SHARED is not set (run through make check)}"
top=$(pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/test_gguf.XXXXXX")
trap 'rm -rf "$work"' EXIT
convert() { # name model out options...
    m=$1 out=$2
    shift 2
    "$top/tools/tome-convert" "$@" "$TOME_SHARED/golden/$m" "$work/$out" 2>>"$work/convert.log"
}
for m in v4-tiny-a v4-tiny-b; do
    convert $m $m-f32.gguf
    convert $m $m-bf16.gguf --type BF16
    convert $m $m-q8_0.gguf --type Q8_0
    convert $m $m-q4_k.gguf --type Q8_0 --experts Q4_K --small F16
    convert $m $m-q2.gguf --type Q8_0 --experts IQ2_XXS --down Q2_K --small F16
    convert $m $m-kmix.gguf --type Q6_K --experts Q5_K --down Q3_K --small F16
    convert $m $m-iq4_xs.gguf --type IQ4_XS --small F16
done
convert v4-tiny-a v4-tiny-a-mxfp4.gguf --experts MXFP4
# Quantising on more threads writes the same bytes.
convert v4-tiny-a v4-tiny-a-q2-t1.gguf --type Q8_0 --experts IQ2_XXS --down Q2_K --small F16 \
    --threads 1
convert v4-tiny-a v4-tiny-a-q2-t3.gguf --type Q8_0 --experts IQ2_XXS --down Q2_K --small F16 \
    --threads 3
cmp "$work/v4-tiny-a-q2-t1.gguf" "$work/v4-tiny-a-q2-t3.gguf" ||
    { echo "FAIL: tome-convert --threads 1 and 3 wrote different files"; exit 1; }
cmp "$work/v4-tiny-a-q2-t1.gguf" "$work/v4-tiny-a-q2.gguf" ||
    { echo "FAIL: tome-convert --threads 1 and the default wrote different files"; exit 1; }

# ds4's layout: the MTP block in a GGUF of its own ("mtp.0." names),
# attached with --mtp-gguf, gives the one-file conversion's logits, the MTP
# head's (a compressor and an indexer in v4-tiny-b's) included, bit for bit.
convert v4-tiny-b v4-tiny-b-main.gguf --mtp-out "$work/v4-tiny-b-mtp.gguf"
run_ids() { # out options...
    out=$1
    shift
    seq 3 200 | "$top/tools/tome-run" --ids - --decode 4 "$@" >"$work/$out" 2>"$work/$out.err"
}
run_ids one.out --mtp --dump "$work/one.st" --model "$work/v4-tiny-b-f32.gguf" ||
    { cat "$work/one.out.err"; exit 1; }
run_ids split.out --mtp --dump "$work/split.st" --model "$work/v4-tiny-b-main.gguf" \
    --mtp-gguf "$work/v4-tiny-b-mtp.gguf" || { cat "$work/split.out.err"; exit 1; }
cmp "$work/one.st" "$work/split.st" ||
    { echo "FAIL: the MTP block from a separate file changes the logits"; exit 1; }
refused() { # what pattern options...
    what=$1 pattern=$2
    shift 2
    if run_ids refused.out "$@" || ! grep -q "$pattern" "$work/refused.out.err"; then
        echo "FAIL: $what: $(cat "$work/refused.out.err")"
        exit 1
    fi
}
refused "an MTP file on a model with its own" "already holds an MTP block" \
    --model "$work/v4-tiny-b-f32.gguf" --mtp-gguf "$work/v4-tiny-b-mtp.gguf"
refused "MTP logits without the MTP file" "has no MTP block" --mtp \
    --model "$work/v4-tiny-b-main.gguf"
refused "an MTP file without its tensors" "tensor mtp\.0\..* is missing" \
    --model "$work/v4-tiny-b-main.gguf" --mtp-gguf "$work/v4-tiny-b-main.gguf"
refused "an MTP file beside a safetensors model" "attaches to a GGUF model only" \
    --model "$TOME_SHARED/golden/v4-tiny-b" --mtp-gguf "$work/v4-tiny-b-mtp.gguf"
"$top/tests/test_gguf" v4-tiny-a "$work/v4-tiny-a-f32.gguf:same" "$work/v4-tiny-a-bf16.gguf:same" \
    "$work/v4-tiny-a-mxfp4.gguf:same" "$work/v4-tiny-a-q8_0.gguf:run" \
    "$work/v4-tiny-a-q4_k.gguf:run" "$work/v4-tiny-a-q2.gguf:run" "$work/v4-tiny-a-kmix.gguf:run" \
    "$work/v4-tiny-a-iq4_xs.gguf:run"
"$top/tests/test_gguf" v4-tiny-b "$work/v4-tiny-b-f32.gguf:same" "$work/v4-tiny-b-bf16.gguf:same" \
    "$work/v4-tiny-b-q8_0.gguf:run" "$work/v4-tiny-b-q4_k.gguf:run" "$work/v4-tiny-b-q2.gguf:run" \
    "$work/v4-tiny-b-kmix.gguf:run" "$work/v4-tiny-b-iq4_xs.gguf:run"
"$top/tests/test_convert_vocab" "$work/v4-tiny-a-f32.gguf" -
"$top/tools/tome-convert" --no-mtp --type Q8_0 --experts MXFP4 "$top/models/tiny" "$work/tiny.gguf" \
    2>>"$work/convert.log"
"$top/tests/test_convert_vocab" "$work/tiny.gguf" "$top/models/tiny/tokenizer.json"
# Without a tokenizer.json beside it, the GGUF's own vocabulary tokenizes as
# the file it came from; a pre-tokenizer tome does not know is refused by name.
"$top/tests/test_gguf_vocab" "$work/tiny.gguf" "$top/models/tiny/tokenizer.json"
perl -pe 's/deepseek-v3/deepseek-v9/' <"$work/tiny.gguf" >"$work/other-pre.gguf"
if echo hi | "$top/tools/tome-tokenize" --model "$work/other-pre.gguf" >/dev/null 2>"$work/pre.err" ||
    ! grep -q 'tokenizer.ggml.pre is "deepseek-v9"' "$work/pre.err"; then
    echo "FAIL: a GGUF with an unknown pre-tokenizer: $(cat "$work/pre.err")"
    exit 1
fi
echo 0 1 2 3 | "$top/tools/tome-run" --model "$work/tiny.gguf" --ids - --decode 2 2>"$work/run.log" ||
    { cat "$work/run.log"; exit 1; }
sed 's/^/  /' "$work/convert.log" | sort -u
