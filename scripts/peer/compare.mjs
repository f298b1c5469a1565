// compare.mjs - tome's logits against llama.cpp's on the same GGUF file and
// the same ids, and both engines' top-1 against the golden qat argmax.
//
//   node compare.mjs TOME.safetensors LLAMA.f32 GOLDEN.safetensors [LIMITS]
//
// TOME.safetensors is tome-run's --dump (prefill_logits, decode_logits);
// LLAMA.f32 is llama.mjs's --logits for the same prompt and decode ids
// (rows of float32, the same positions in the same order); GOLDEN is a
// golden case file (prefill_argmax, decode_argmax).  Prints one JSON
// object: positions, max |dlogit|, the median over positions of each
// position's max |dlogit|, the mean |dlogit|, top-1 agreement between the
// engines and of each with the golden argmax.  LIMITS "MEDIAN,MEAN,AGREE"
// makes it exit 1 (saying which) when the median exceeds MEDIAN, the mean
// exceeds MEAN or the engines agree on fewer than AGREE of the positions.
import {readFileSync} from "node:fs";

// The named tensors of a safetensors file, as typed arrays.
function safetensors(path) {
    const bytes = readFileSync(path);
    const headerLen = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString("utf8"));
    const out = {};
    for (const [name, t] of Object.entries(header)) {
        if (name === "__metadata__") continue;
        const [begin, end] = t.data_offsets;
        const raw = bytes.subarray(8 + headerLen + begin, 8 + headerLen + end);
        const copy = new Uint8Array(raw).buffer;
        out[name] = t.dtype === "F32" ? new Float32Array(copy) : new Int32Array(copy);
    }
    return out;
}

function concat(a, b) {
    const out = new a.constructor(a.length + b.length);
    out.set(a);
    out.set(b, a.length);
    return out;
}

function argmax(v, from, n) {
    let best = 0;
    for (let i = 1; i < n; i++) if (v[from + i] > v[from + best]) best = i;
    return best;
}

function compare(tome, llama, golden) {
    const n = golden.length, vocab = tome.length / n;
    if (!Number.isInteger(vocab) || llama.length !== tome.length)
        throw new Error(`shapes differ: tome ${tome.length}, llama.cpp ${llama.length} values, ${n} positions`);
    let max = 0, sum = 0, peer = 0, tomeGolden = 0, llamaGolden = 0;
    const perPosition = [];
    for (let p = 0; p < n; p++) {
        let m = 0;
        for (let i = p * vocab; i < (p + 1) * vocab; i++) {
            const d = Math.abs(tome[i] - llama[i]);
            m = Math.max(m, d);
            sum += d;
        }
        perPosition.push(m);
        max = Math.max(max, m);
        const a = argmax(tome, p * vocab, vocab), b = argmax(llama, p * vocab, vocab);
        peer += a === b;
        tomeGolden += a === golden[p];
        llamaGolden += b === golden[p];
    }
    perPosition.sort((x, y) => x - y);
    return {
        positions: n,
        max_dlogit: max,
        median_position_max_dlogit: perPosition[Math.floor(n / 2)],
        mean_dlogit: sum / tome.length,
        top1_tome_llama: peer / n,
        top1_tome_golden: tomeGolden / n,
        top1_llama_golden: llamaGolden / n,
    };
}

function main() {
    const [tomePath, llamaPath, goldenPath, limits] = process.argv.slice(2);
    if (!goldenPath) {
        process.stderr.write("usage: compare.mjs TOME.safetensors LLAMA.f32 GOLDEN.safetensors [MEDIAN,MEAN,AGREE]\n");
        process.exit(2);
    }
    const t = safetensors(tomePath), g = safetensors(goldenPath);
    const llama = new Float32Array(new Uint8Array(readFileSync(llamaPath)).buffer);
    const r = compare(concat(t.prefill_logits, t.decode_logits), llama,
        concat(g.prefill_argmax, g.decode_argmax));
    process.stdout.write(JSON.stringify(r) + "\n");
    if (!limits) return;
    const [median, mean, agree] = limits.split(",").map(Number);
    const broken = [
        r.median_position_max_dlogit > median && `median max |dlogit| ${r.median_position_max_dlogit} > ${median}`,
        r.mean_dlogit > mean && `mean |dlogit| ${r.mean_dlogit} > ${mean}`,
        r.top1_tome_llama < agree && `top-1 agreement ${r.top1_tome_llama} < ${agree}`,
    ].filter(Boolean);
    if (broken.length) {
        process.stderr.write(`compare.mjs: ${broken.join("; ")}\n`);
        process.exit(1);
    }
}

main();
