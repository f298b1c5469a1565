// mcp-client.mjs - the official MCP TypeScript SDK as a client of
// `tome mcp` (tests/test_client_mcp.sh runs it), spawned over stdio the way
// an agent spawns it.  Phase "up": initialize, the five tools and their
// exact schemas, each tool called (its results checked against the corpus
// files read here, not through tome), progress notifications while ask
// prefills and answers, the forced answer's citations resolved or flagged,
// and bad arguments answered as tool errors.  Phase "down" (tomed
// stopped): a tool call is a tool error naming the socket, not a crash.
// Usage: node mcp-client.mjs CLIENTS-DIR TOME SOCKET CORPUS-DIR up|down
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

import { check, finish } from './check.mjs';

const [clientsDir, tome, socketPath, corpusDir, phase] = process.argv.slice(2);
const require = createRequire(path.join(clientsDir, 'package.json'));
const { Client } = await import(require.resolve('@modelcontextprotocol/sdk/client/index.js'));
const { StdioClientTransport } = await import(require.resolve('@modelcontextprotocol/sdk/client/stdio.js'));


const transport = new StdioClientTransport({
    command: tome,
    args: ['mcp'],
    env: { PATH: process.env.PATH, TOME_SOCKET: socketPath },
    stderr: 'pipe',
});
const client = new Client({ name: 'tome-test', version: '1.0.0' });
await client.connect(transport);
check('the server is tome', client.getServerVersion()?.name === 'tome', client.getServerVersion());
check('it offers tools', client.getServerCapabilities()?.tools !== undefined, client.getServerCapabilities());
const text = (result) => result.content.map((c) => c.text).join('\n');

// lines(FILE): the corpus file's lines, read here.
const lines = (file) => fs.readFileSync(path.join(corpusDir, file), 'utf8').replace(/\n$/, '').split('\n');

async function up() {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name).sort();
    check('five tools', JSON.stringify(names) ===
        JSON.stringify(['ask', 'list_corpora', 'prefill_status', 'read_document', 'search']), names);
    for (const t of tools) {
        check(`${t.name}: a closed object schema`, t.inputSchema.type === 'object' &&
            t.inputSchema.additionalProperties === false, t.inputSchema);
        check(`${t.name}: required are properties`, (t.inputSchema.required ?? []).every(
            (r) => r in t.inputSchema.properties), t.inputSchema);
    }

    const corpora = await client.callTool({ name: 'list_corpora', arguments: {} });
    check('list_corpora', !corpora.isError && corpora.structuredContent.corpora.some((c) => c.name === 'docs'), corpora);

    const before = await client.callTool({ name: 'prefill_status', arguments: { corpus: 'docs' } });
    check('prefill_status: no state yet', !before.isError && before.structuredContent.state === null &&
        /no prefilled state/.test(text(before)), before);

    const notes = lines('notes.md');
    const zanzibar = notes.findIndex((l) => l.includes('zanzibar')) + 1;
    const found = await client.callTool({ name: 'search', arguments: { corpus: 'docs', query: 'zanzibar' } });
    check('search: the line that holds the term', !found.isError &&
        text(found).startsWith(`notes.md:${zanzibar}:${notes[zanzibar - 1]}\n`), text(found));
    const rules = lines('rules.txt');
    const tens = rules.map((l, i) => [l, i + 1]).filter(([l]) => /token 1[0-9] /.test(l));
    const grep = await client.callTool({ name: 'search', arguments: { corpus: 'docs', query: 'token 1[0-9] ', regex: true } });
    check('search by regex: every matching line', !grep.isError && JSON.stringify(grep.structuredContent.matches.map((m) => m.line)) ===
        JSON.stringify(tens.map(([, n]) => n)), grep.structuredContent);

    const read = await client.callTool({ name: 'read_document', arguments: { corpus: 'docs', path: 'rules.txt', from: 7, to: 9 } });
    check('read_document: lines 7 to 9, numbered', !read.isError && text(read).startsWith(
        [7, 8, 9].map((n) => `rules.txt:${n}:${rules[n - 1]}`).join('\n') + '\n'), text(read));
    const tail = await client.callTool({ name: 'read_document', arguments: { corpus: 'docs', path: 'rules.txt', from: rules.length, to: rules.length + 50 } });
    check('read_document: cut at the end', !tail.isError && tail.structuredContent.to === rules.length &&
        tail.structuredContent.line_count === rules.length, tail.structuredContent);
    const missing = await client.callTool({ name: 'read_document', arguments: { corpus: 'docs', path: 'gone.c' } });
    check('read_document: a missing file is a tool error', missing.isError && /gone\.c/.test(text(missing)), missing);

    // ask: no state yet, so it prefills first; progress all along.
    const progress = [];
    const asked = await client.callTool({ name: 'ask', arguments: { corpus: 'docs', question: 'Where is zanzibar mentioned?' } },
        undefined, { onprogress: (p) => progress.push(p), timeout: 120000 });
    check('ask: an answer', !asked.isError && typeof asked.structuredContent.answer === 'string', asked);
    check('ask: progress while the prefill runs', progress.some((p) => /^prefill: /.test(p.message)), progress);
    check('ask: progress while it waits and answers', progress.some((p) => /waiting for the model/.test(p.message)), progress);
    check('ask: progress increases', progress.every((p, i) => i === 0 || p.progress > progress[i - 1].progress), progress);
    check('ask: the sources point at the term', asked.structuredContent.sources[0]?.path === 'notes.md' &&
        asked.structuredContent.sources[0]?.line === zanzibar, asked.structuredContent.sources);
    const cited = Object.fromEntries(asked.structuredContent.citations.map((c) => [`${c.path}:${c.line}`, c]));
    check('ask: an existing line is resolved', cited['rules.txt:7']?.exists === true &&
        cited['rules.txt:7']?.text === rules[6], cited);
    check('ask: a line past the end is flagged', cited[`rules.txt:${rules.length + 59}`]?.exists === false, cited);
    check('ask: a missing file is flagged', cited['gone.c:3']?.exists === false, cited);

    const after = await client.callTool({ name: 'prefill_status', arguments: { corpus: 'docs' } });
    check('prefill_status: prefilled', !after.isError && after.structuredContent.state?.tokens > 0 &&
        after.structuredContent.job?.status === 'done', after.structuredContent);

    for (const [what, args, re] of [
        ['a missing argument', { corpus: 'docs' }, /'query' is required/],
        ['a wrong type', { corpus: 'docs', query: 7 }, /'query' must be a string/],
        ['out of range', { corpus: 'docs', query: 'x', limit: 0 }, /'limit' must be from 1/],
        ['an unknown argument', { corpus: 'docs', query: 'x', color: 'red' }, /unknown argument 'color'/],
        ['a bad FTS5 query', { corpus: 'docs', query: '"unclosed' }, /./],
    ]) {
        const bad = await client.callTool({ name: 'search', arguments: args });
        check(`search with ${what}: a tool error`, bad.isError === true && re.test(text(bad)), bad);
    }
    const nope = await client.callTool({ name: 'ask', arguments: { corpus: 'nope', question: 'x' } });
    check('ask an unknown corpus: a tool error', nope.isError && /nope/.test(text(nope)), nope);
    try {
        await client.callTool({ name: 'no_such_tool', arguments: {} });
        check('an unknown tool is a protocol error', false);
    } catch (e) {
        check('an unknown tool is a protocol error', /no such tool/.test(String(e)), String(e));
    }
}

async function down() {
    for (const [name, args] of [['list_corpora', {}], ['ask', { corpus: 'docs', question: 'x' }]]) {
        const r = await client.callTool({ name, arguments: args });
        check(`${name} with tomed down: a tool error naming the socket`, r.isError === true &&
            text(r).includes(socketPath), r);
    }
    check('still serving after the failures', (await client.listTools()).tools.length === 5);
}

await (phase === 'up' ? up() : down());
await client.close();
finish(`MCP SDK checks (${phase})`);
