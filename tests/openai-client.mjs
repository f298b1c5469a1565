// openai-client.mjs - the official OpenAI Node SDK against a real tomed
// (tests/test_daemon_openai.sh runs it): the models list, a chat completion
// non-streamed and streamed (the same greedy answer both ways), the cached
// corpus tokens in usage, tome's extras, a conversation of several turns, a
// completion, the bare model, and an unknown model, a bad argument and a
// bad token thrown as the SDK's APIError with OpenAI's status, type and code;
// over TLS, then the same over the Unix socket (the SDK's fetch replaced
// by one over node:http, as the SDK allows).
// Usage: node openai-client.mjs SDK-DIR BASE-URL API-KEY CORPUS CORPUS-TOKENS SOCKET
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Readable } from 'node:stream';

import { check, finish } from './check.mjs';

const [sdkDir, baseURL, apiKey, corpus, corpusTokens, socketPath] = process.argv.slice(2);
const require = createRequire(path.join(sdkDir, 'package.json'));
const { default: OpenAI, APIError } = await import(require.resolve('openai'));


// expectError(WHAT, PROMISE, STATUS, TYPE, CODE): the call throws APIError.
async function expectError(what, promise, status, type, code) {
    try {
        const got = await promise;
        check(`${what} should fail`, false, got);
    } catch (e) {
        check(`${what}: an APIError`, e instanceof APIError, String(e));
        check(`${what}: status ${status}`, e.status === status, e.status);
        check(`${what}: type ${type}`, e.type === type, e.error);
        check(`${what}: code ${code}`, e.code === code, e.error);
    }
}

// fetch over a Unix socket: the SDK only needs a WHATWG Response.
function unixFetch(socket) {
    return (url, init = {}) =>
        new Promise((resolve, reject) => {
            const u = new URL(url);
            const req = http.request(
                {
                    socketPath: socket,
                    path: u.pathname + u.search,
                    method: init.method ?? 'GET',
                    headers: Object.fromEntries(new Headers(init.headers)),
                },
                (res) => {
                    const headers = new Headers();
                    for (const [k, v] of Object.entries(res.headers))
                        headers.set(k, Array.isArray(v) ? v.join(', ') : v);
                    resolve(new Response(Readable.toWeb(res), { status: res.statusCode, headers }));
                },
            );
            req.on('error', reject);
            init.signal?.addEventListener('abort', () => req.destroy(new Error('aborted')));
            if (init.body) req.write(init.body);
            req.end();
        });
}

// The whole conversation with one daemon through `make(key)`'s clients.
async function suite(where, make, tokens) {
    const client = make(apiKey);
    const intruder = make('not-a-token');
    const request = {
        model: corpus,
        messages: [{ role: 'user', content: 'Which rule mentions token 7?' }],
        max_tokens: 4,
        temperature: 0,
    };

    const models = await client.models.list();
    const ids = models.data.map((m) => m.id);
    check(`${where}: the corpus is a model`, ids.includes(corpus), ids);
    check(`${where}: models are model objects`, models.data.every((m) => m.object === 'model'), models.data);

    const c = await client.chat.completions.create(request);
    const answer = c.choices[0].message.content;
    check(`${where}: a chat.completion`, c.object === 'chat.completion' && c.model === corpus, c);
    check(`${where}: an assistant message`, c.choices[0].message.role === 'assistant' && typeof answer === 'string', c.choices);
    check(`${where}: finish_reason`, ['stop', 'length'].includes(c.choices[0].finish_reason), c.choices);
    check(`${where}: completion tokens`, c.usage.completion_tokens >= 1 && c.usage.completion_tokens <= 4, c.usage);
    check(`${where}: cached tokens are the corpus tokens`, c.usage.prompt_tokens_details.cached_tokens === Number(corpusTokens), c.usage);
    check(`${where}: total tokens`, c.usage.total_tokens === c.usage.prompt_tokens + c.usage.completion_tokens, c.usage);
    check(`${where}: tome extras`, Array.isArray(c.tome.citations) && Array.isArray(c.tome.sources), c.tome);
    check(`${where}: a source`, c.tome.sources.some((s) => /token 7 /.test(s.snippet)), c.tome.sources);

    const stream = await client.chat.completions.create({ ...request, stream: true });
    let streamed = '';
    let finish = null;
    let last = null;
    for await (const chunk of stream) {
        check(`${where}: a chunk`, chunk.object === 'chat.completion.chunk', chunk);
        check(`${where}: one id for the stream`, last === null || chunk.id === last.id, chunk);
        streamed += chunk.choices[0]?.delta?.content ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
        last = chunk;
    }
    check(`${where}: the streamed answer is the same`, streamed === answer, { streamed, answer });
    check(`${where}: the stream ends with its finish_reason`, finish === c.choices[0].finish_reason, finish);
    check(`${where}: the last chunk has the usage`, last?.usage?.prompt_tokens_details?.cached_tokens === Number(corpusTokens), last);

    await expectError(`${where}: an unknown model`, client.chat.completions.create({ ...request, model: 'nope' }),
        404, 'invalid_request_error', 'model_not_found');
    const turns = await client.chat.completions.create({
        ...request,
        messages: [{ role: 'system', content: 'Be brief.' }, ...request.messages,
            { role: 'assistant', content: 'Rule 7.' }, { role: 'user', content: 'And token 8?' }],
    });
    check(`${where}: more turns, more prompt tokens`, turns.usage.prompt_tokens > c.usage.prompt_tokens, turns.usage);
    check(`${where}: the corpus is still cached`, turns.usage.prompt_tokens_details.cached_tokens === Number(corpusTokens), turns.usage);

    const done = await client.completions.create({ model: corpus, prompt: 'Rule 41:', max_tokens: 3, temperature: 0 });
    check(`${where}: a text_completion`, done.object === 'text_completion' && typeof done.choices[0].text === 'string', done);
    check(`${where}: its cached tokens`, done.usage.prompt_tokens_details.cached_tokens === Number(corpusTokens), done.usage);

    if (ids.includes('deepseek-v4/bare')) {
        const bare = await client.chat.completions.create({ ...request, model: 'deepseek-v4/bare' });
        check(`${where}: the bare model caches nothing`, bare.usage.prompt_tokens_details.cached_tokens === 0 && bare.usage.prompt_tokens > 0, bare.usage);
    } else {
        check(`${where}: the bare model is listed`, false, ids);
    }

    await expectError(`${where}: tools`, client.chat.completions.create({
        ...request, tools: [{ type: 'function', function: { name: 'f', parameters: {} } }],
    }), 400, 'invalid_request_error', 'invalid');
    if (tokens) {
        await expectError(`${where}: a bad token`, intruder.models.list(), 401, 'authentication_error', 'invalid_api_key');
    } else {
        const listed = await intruder.models.list();
        check(`${where}: the key is not a credential here`, listed.data.length > 0, listed.data);
    }
}

await suite('TLS', (key) => new OpenAI({ baseURL, apiKey: key, maxRetries: 0 }), true);
// Over the socket the peer's uid is the principal and any key is ignored.
await suite('Unix socket', (key) =>
    new OpenAI({
        baseURL: 'http://tome/openai/v1',
        apiKey: key,
        maxRetries: 0,
        fetch: unixFetch(socketPath),
    }), false);
finish('SDK checks');
