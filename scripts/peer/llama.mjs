// llama.mjs - llama.cpp, as shipped prebuilt in node-llama-cpp, run on a
// GGUF file the way tome-run runs it: a prompt of token ids prefilled in
// one batch (timed), then greedy decode steps (timed) or given ids fed one
// step at a time; CPU only, with a given thread count.
//
//   node llama.mjs PEER_DIR --model FILE.gguf --ids FILE [--threads N]
//                  [--decode N | --decode-ids FILE] [--logits OUT] [--warmup]
//
// PEER_DIR is what scripts/peer/setup.sh prints (it holds node_modules).
// --ids and --decode-ids files hold token ids (a JSON array or whitespace-
// separated integers).  --logits writes the logits of every prompt position
// and of every decode step, position after position, as little-endian
// float32 rows of the vocabulary's width.  Prints one JSON object on
// stdout: prefill and decode token counts, seconds and tokens/s, the
// decoded ids and the CPU backend llama.cpp chose.  --warmup first
// prefills the prompt once, untimed, and clears it (tome-run --warmup).
import {readFileSync, writeFileSync} from "node:fs";
import {createRequire} from "node:module";
import {join} from "node:path";
import {pathToFileURL} from "node:url";

function usage(msg) {
    process.stderr.write(`llama.mjs: ${msg}\n`);
    process.exit(2);
}

function parseArgs(argv) {
    const o = {peer: argv[0], threads: 1, decode: 0, warmup: false};
    for (let i = 1; i < argv.length; i += 2) {
        if (argv[i] === "--warmup") {
            o.warmup = true;
            i -= 1;
            continue;
        }
        const v = argv[i + 1];
        if (v === undefined) usage(`${argv[i]} needs a value`);
        if (argv[i] === "--model") o.model = v;
        else if (argv[i] === "--ids") o.ids = readIds(v);
        else if (argv[i] === "--threads") o.threads = Number(v);
        else if (argv[i] === "--decode") o.decode = Number(v);
        else if (argv[i] === "--decode-ids") o.feed = readIds(v);
        else if (argv[i] === "--logits") o.logits = v;
        else usage(`unknown option ${argv[i]}`);
    }
    if (!o.peer || !o.model || !o.ids?.length) usage("give PEER_DIR, --model and a non-empty --ids");
    if (!(o.threads >= 1) || !(o.decode >= 0)) usage("--threads must be >= 1 and --decode >= 0");
    return o;
}

function readIds(path) {
    const text = readFileSync(path, "utf8").trim();
    const ids = text.startsWith("[") ? JSON.parse(text) : text.split(/[\s,]+/).filter(Boolean).map(Number);
    if (!ids.every((x) => Number.isInteger(x) && x >= 0)) usage(`${path}: not a list of token ids`);
    return ids;
}

async function loadLlama(peer) {
    const entry = createRequire(join(peer, "package.json")).resolve("node-llama-cpp");
    const {getLlama, LlamaLogLevel} = await import(pathToFileURL(entry).href);
    let backend = "unknown";
    const llama = await getLlama({
        gpu: false,
        build: "never",
        logLevel: LlamaLogLevel.log, // "log" carries the chosen CPU backend
        logger: (level, message) => {
            const m = /loaded CPU backend from .*libggml-cpu-([\w-]+)\.so/.exec(message);
            if (m) backend = m[1];
            if (level === "error" || level === "fatal") process.stderr.write(`llama.cpp: ${message}\n`);
        },
    });
    return {llama, backend: () => backend};
}

// The next-token logits of one evaluated position (a map over the whole
// vocabulary), as a dense row.
function denseRow(out) {
    const row = new Float32Array(out.next.logits.size);
    for (const [token, logit] of out.next.logits) row[token] = logit;
    return row;
}

function argmax(row) {
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
    return best;
}

// Evaluate `ids` as one batch and return logits rows: the last position's,
// or every position's when `all`.
async function logitsOf(seq, ids, all) {
    const wanted = (i) => all || i === ids.length - 1;
    const input = ids.map((t, i) => (wanted(i) ? [t, {generateNext: {logits: true}}] : t));
    const out = await seq.controlledEvaluate(input);
    return ids.map((_, i) => (wanted(i) ? denseRow(out[i]) : null)).filter(Boolean);
}

// Evaluate `ids` as one batch and return the greedy next token (chosen by
// llama.cpp's sampler at temperature 0, with no logits copied out).
async function greedyNext(seq, ids) {
    const last = ids.length - 1;
    const input = ids.map((t, i) => (i === last ? [t, {generateNext: {token: true, options: {temperature: 0}}}] : t));
    const out = await seq.controlledEvaluate(input);
    return out[last].next.token;
}

// One evaluation: the next greedy token, and the logits rows when asked.
async function step(seq, ids, o) {
    if (!o.logits) return {next: await greedyNext(seq, ids), rows: []};
    const rows = await logitsOf(seq, ids, true);
    return {next: argmax(rows[rows.length - 1]), rows};
}

async function main() {
    const o = parseArgs(process.argv.slice(2));
    const {llama, backend} = await loadLlama(o.peer);
    const model = await llama.loadModel({modelPath: o.model, gpuLayers: 0});
    const steps = o.feed ? o.feed.length : o.decode;
    const context = await model.createContext({
        contextSize: o.ids.length + steps + 16,
        batchSize: o.ids.length,
        threads: o.threads,
        sequences: 1,
    });
    const seq = context.getSequence();
    if (o.warmup) {
        await greedyNext(seq, o.ids);
        await seq.clearHistory();
    }
    let t0 = performance.now();
    const prompt = await step(seq, o.ids, o);
    const prefillS = (performance.now() - t0) / 1000;
    const rows = [...prompt.rows], tokens = [];
    let next = o.feed ? o.feed[0] : prompt.next;
    t0 = performance.now();
    for (let i = 0; i < steps; i++) {
        tokens.push(next);
        const r = await step(seq, [next], o);
        rows.push(...r.rows);
        next = o.feed ? o.feed[i + 1] : r.next;
    }
    const decodeS = (performance.now() - t0) / 1000;
    if (o.logits) writeFileSync(o.logits, Buffer.concat(rows.map((r) => Buffer.from(r.buffer))));
    process.stdout.write(JSON.stringify({
        backend: backend(),
        threads: o.threads,
        prefill_tokens: o.ids.length,
        prefill_s: prefillS,
        prefill_tok_s: o.ids.length / prefillS,
        decode_tokens: steps,
        decode_s: decodeS,
        decode_tok_s: steps ? steps / decodeS : 0,
        tokens,
    }) + "\n");
    await context.dispose();
    await model.dispose();
    await llama.dispose();
}

await main();
