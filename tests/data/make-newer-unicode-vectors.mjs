// Regenerate tests/data/newer-unicode.jsonl with the reference tokenizer.
//
// usage: npm install tokenizers@0.23.2 && node make-newer-unicode-vectors.mjs tokenizer.json > newer-unicode.jsonl
//
// tokenizer.json is DeepSeek's (scripts/fetch-tokenizer.sh, v3).  The texts
// mix ASCII with characters that Unicode assigned after version 14, which
// Debian's PCRE2 does not know and the reference does (engine/tok_unicode.c):
// emoji 15 and 16, CJK extensions H and I, and letters, marks, digits and
// punctuation of newer scripts, beside spaces, digits and punctuation so
// that every pre-tokenizer rule meets them.
import { Tokenizer } from "tokenizers";
import fs from "fs";

const tok = Tokenizer.fromString(fs.readFileSync(process.argv[2], "utf8"));
const newer = [0x1fae8, 0x1fa77, 0x1fadf, 0x1f6dc, 0x31350, 0x3235a, 0x2ebf0, 0x2ee5d, 0x142b0,
    0x1e4d0, 0x1e4ec, 0x1e4f0, 0x11f04, 0x11f43, 0x11f50, 0x10d4a, 0x10d69, 0x10d40, 0x1cc00,
    0x16100, 0x1611e, 0x16130, 0x1b4e, 0xcf3, 0x897, 0x1c89, 0xa7cb, 0x2ffc, 0x31ef, 0x1fbcb];
const around = ["", " ", "  ", "a", "Z", "1", "123", ".", "!?", "\n", "\r\n", "中", "é", "-"];
let seed = 4;
const pick = (xs) => xs[(seed = (seed * 1103515245 + 12345) % 2147483648) % xs.length];
for (let i = 0; i < 60; i++) {
    let text = "";
    for (let k = 0; k < 6; k++) text += pick(around) + String.fromCodePoint(pick(newer));
    text += pick(around);
    const ids = Array.from((await tok.encode(text, null, { addSpecialTokens: false })).getIds());
    console.log(JSON.stringify({ text, ids }));
}
