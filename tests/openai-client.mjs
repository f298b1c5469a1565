// openai-client.mjs - the official OpenAI Node SDK against a real tomed
// (tests/test_daemon_openai.sh runs it): the models list, a chat completion
// non-streamed and streamed (the same greedy answer both ways), the cached
// corpus tokens in usage, tome's extras, and an unknown model and a bad
// token thrown as the SDK's APIError with OpenAI's status, type and code.
// Usage: node openai-client.mjs SDK-DIR BASE-URL API-KEY CORPUS CORPUS-TOKENS
import { createRequire } from 'node:module';
import path from 'node:path';

const [sdkDir, baseURL, apiKey, corpus, corpusTokens] = process.argv.slice(2);
const require = createRequire(path.join(sdkDir, 'package.json'));
const { default: OpenAI, APIError } = await import(require.resolve('openai'));

let checks = 0;
let failures = 0;
function check(what, ok, detail) {
    checks++;
    if (!ok) {
        failures++;
        console.log(`FAIL: ${what}${detail === undefined ? '' : ': ' + JSON.stringify(detail)}`);
    }
}

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

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const request = {
    model: corpus,
    messages: [{ role: 'user', content: 'Which rule mentions token 7?' }],
    max_tokens: 4,
    temperature: 0,
};

const models = await client.models.list();
const ids = models.data.map((m) => m.id);
check('the corpus is a model', ids.includes(corpus), ids);
check('models are model objects', models.data.every((m) => m.object === 'model'), models.data);

const c = await client.chat.completions.create(request);
const answer = c.choices[0].message.content;
check('a chat.completion', c.object === 'chat.completion' && c.model === corpus, c);
check('an assistant message', c.choices[0].message.role === 'assistant' && typeof answer === 'string', c.choices);
check('finish_reason', ['stop', 'length'].includes(c.choices[0].finish_reason), c.choices);
check('completion tokens', c.usage.completion_tokens >= 1 && c.usage.completion_tokens <= 4, c.usage);
check('cached tokens are the corpus tokens', c.usage.prompt_tokens_details.cached_tokens === Number(corpusTokens), c.usage);
check('total tokens', c.usage.total_tokens === c.usage.prompt_tokens + c.usage.completion_tokens, c.usage);
check('tome extras', Array.isArray(c.tome.citations) && Array.isArray(c.tome.sources), c.tome);
check('a source', c.tome.sources.some((s) => /token 7 /.test(s.snippet)), c.tome.sources);

const stream = await client.chat.completions.create({ ...request, stream: true });
let streamed = '';
let finish = null;
let last = null;
for await (const chunk of stream) {
    check('a chunk', chunk.object === 'chat.completion.chunk', chunk);
    check('one id for the stream', last === null || chunk.id === last.id, chunk);
    streamed += chunk.choices[0]?.delta?.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    last = chunk;
}
check('the streamed answer is the same', streamed === answer, { streamed, answer });
check('the stream ends with its finish_reason', finish === c.choices[0].finish_reason, finish);
check('the last chunk has the usage', last?.usage?.prompt_tokens_details?.cached_tokens === Number(corpusTokens), last);

await expectError('an unknown model', client.chat.completions.create({ ...request, model: 'nope' }),
    404, 'invalid_request_error', 'model_not_found');
await expectError('earlier messages', client.chat.completions.create({
    ...request, messages: [{ role: 'system', content: 'Be brief.' }, ...request.messages],
}), 400, 'invalid_request_error', 'invalid');
const intruder = new OpenAI({ baseURL, apiKey: 'not-a-token', maxRetries: 0 });
await expectError('a bad token', intruder.models.list(), 401, 'authentication_error', 'invalid_api_key');

console.log(`${checks} SDK checks, ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
