// upstream-server.mjs - a misbehaving OpenAI-compatible server, for the
// remote engine's tests (test_daemon_remote_hostile.sh).
//
// GET /v1/models answers 200.  POST /v1/completions streams a reply whose
// shape the file MODE names, read at each request, so a test switches the
// server's behaviour between questions.  A request for one token (how tomed
// warms a replica's cache) always gets a well-formed reply; the modes shape
// the answers to questions.  It prints its port on stdout once listening.
//
//   node upstream-server.mjs MODE
//
// Modes:
//   ok          text "Hello, world." in three events, usage, [DONE]
//   split       the same events, each JSON document split over several
//               data lines, CRLF and CR line endings, comments, an event id,
//               and the body written a byte or two at a time
//   error       one text event, then an error event as vLLM and SGLang send
//               one mid-stream ({"error": {...}}), then [DONE]
//   error-first the error event before any text
//   old-error   one text event, then an error as older vLLM sent one
//               ({"object": "error", "message": ...})
//   named-error one text event, then `event: error` whose data is the message
//   not-json    one text event, then an event whose data is not JSON
//   endless     text events, never finishing, until the client goes away
//   huge        one event whose data is 80 MB of text
//   bad-usage   the ok reply whose usage counts are negative or absurd
//   abort       text, then finish_reason "abort" (vLLM's for an aborted request)
//   json        a whole completion as application/json, not streamed
//   no-done     the ok reply without [DONE], then the connection closes
//   done-open   the ok reply, then the connection stays open after [DONE]
//   escapes     a text of quotes, a backslash, a newline, U+0000 and a
//               character outside the BMP (JSON escapes, a surrogate pair)
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const [modeFile] = process.argv.slice(2);

const text = (t, finish = null) => ({ choices: [{ index: 0, text: t, finish_reason: finish }] });
const usage = (prompt, completion, cached) => ({
  choices: [],
  usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion,
           prompt_tokens_details: { cached_tokens: cached } },
});
const data = (event) => `data: ${JSON.stringify(event)}\n\n`;

function okEvents(n) {
  return [text('Hello'), text(', world'), text('.', 'stop'), usage(n, 3, n - 3)];
}

// The SSE body for `mode`, for a prompt of `n` tokens, as an array of
// strings written in turn.
function reply(mode, n) {
  switch (mode) {
    case 'split':
      return [': keepalive\r\n\r\n', 'id: 1\r\n',
        ...okEvents(n).map((e) => {
          const json = JSON.stringify(e, null, 1).split('\n').map((l) => `data:${l}`);
          return `${json.join('\r')}\r\n\r\n`;
        }), 'data: [DONE]\r\n\r\n'];
    case 'error':
      return [data(text('Hel')),
        data({ error: { object: 'error', message: 'the server ran out of KV cache blocks',
                        type: 'InternalServerError', code: 500 } }), 'data: [DONE]\n\n'];
    case 'old-error':
      return [data(text('Hel')), data({ object: 'error', message: 'CUDA out of memory',
                                         type: 'InternalServerError', code: 500 }),
        'data: [DONE]\n\n'];
    case 'named-error':
      return [data(text('Hel')), 'event: error\ndata: worker 3 lost its GPU\n\n'];
    case 'error-first':
      return [data({ error: { message: 'the request was preempted', code: 503 } }),
        'data: [DONE]\n\n'];
    case 'not-json':
      return [data(text('Hel')), 'data: <html><body>502 Bad Gateway</body></html>\n\n',
        'data: [DONE]\n\n'];
    case 'huge':
      return [`data: {"choices":[{"index":0,"text":"${'x'.repeat(80 << 20)}"}]}\n\n`,
        'data: [DONE]\n\n'];
    case 'bad-usage':
      return [data(text('Hello.', 'stop')), data(usage(-5, -1e15, 1e300)), 'data: [DONE]\n\n'];
    case 'abort':
      return [data(text('Hel')), data(text('', 'abort')), 'data: [DONE]\n\n'];
    case 'no-done':
      return okEvents(n).map(data);
    case 'escapes':
      return ['data: {"choices":[{"index":0,"text":"\\"a\\" \\\\ b\\n\\u0000\\ud83d\\ude00","finish_reason":"stop"}]}\n\n',
        data(usage(n, 2, 0)), 'data: [DONE]\n\n'];
    default:
      return [...okEvents(n).map(data), 'data: [DONE]\n\n'];
  }
}

function writeAll(res, pieces, bytewise) {
  const all = pieces.join('');
  if (!bytewise) return res.end(all);
  let i = 0;
  const step = () => {
    if (i >= all.length) return res.end();
    res.write(all.slice(i, i + 1 + (i % 2)));
    i += 1 + (i % 2);
    setImmediate(step);
  };
  step();
}

function endless(res) {
  let stopped = false;
  res.on('close', () => { stopped = true; });
  const more = () => {
    if (stopped) return;
    res.write(data(text('more ')));
    setTimeout(more, 2);
  };
  more();
}

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/v1/models') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end('{"object":"list","data":[{"id":"deepseek-v4/bare","object":"model"}]}');
  }
  if (req.method !== 'POST' || req.url !== '/v1/completions') {
    res.writeHead(404);
    return res.end();
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(chunks).toString());
    const n = body.prompt.length;
    const mode = body.max_tokens === 1 ? 'ok' : readFileSync(modeFile, 'utf8').trim();
    if (mode === 'json') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify({ ...text('Hello.', 'stop'), usage: usage(n, 2, 0).usage }));
    }
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8' });
    if (mode === 'endless') return endless(res);
    if (mode === 'done-open') return res.write(reply('ok', n).join(''));
    writeAll(res, reply(mode, n), mode === 'split');
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
