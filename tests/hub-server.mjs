// hub-server.mjs - a stand-in for the Hugging Face hub, for tome-model's tests.
//
// Serves the files under ROOT as the repository REPO in the hub's URL
// layout: GET /api/models/REPO/tree/main?recursive=true lists them (two
// entries a page, continued through a `Link: <...>; rel="next"` header),
// *.safetensors as LFS files with their SHA-256, the others with their git
// blob id; GET /REPO/resolve/main/PATH serves the bytes (LFS files through
// a redirect to /cdn/PATH, as the real hub does) and honours
// `Range: bytes=N-`.  The hashes are computed here, independently of
// tome-model.  It prints its port on stdout once listening.
//
//   node hub-server.mjs ROOT REPO LOG [--token T] [--drop PATH] [--wrong-sha PATH]
//                       [--list-also PATH] [--next-host HOST]
//
// --token T: every request without `Authorization: Bearer T` gets 401.
// --drop PATH: the first download of PATH is cut off after half its bytes.
// --wrong-sha PATH: PATH is listed with a SHA-256 that is not its own.
// --list-also PATH: the listing also names PATH, a 3-byte file, as a
//   hostile hub could (a name of tome-model's own, a duplicate, ...).
// --next-host HOST: the listing's next pages are named on HOST (this
//   server's port) instead of the host the request named.
// Each request is appended to LOG as "METHOD URL RANGE".
import { createHash } from 'node:crypto';
import { appendFileSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { join, relative } from 'node:path';

const [root, repo, log, ...rest] = process.argv.slice(2);
const opt = {};
for (let i = 0; i < rest.length; i += 2) opt[rest[i].replace(/^--/, '')] = rest[i + 1];
let dropped = false;

function walk(dir) {
  return readdirSync(dir).sort().flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [relative(root, p)];
  });
}

function entry(path) {
  const bytes = readFileSync(join(root, path));
  const blob = createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
  const e = { type: 'file', path, size: bytes.length, oid: blob };
  if (path.endsWith('.safetensors')) {
    let sha = createHash('sha256').update(bytes).digest('hex');
    if (opt['wrong-sha'] === path) sha = (sha[0] === '0' ? '1' : '0') + sha.slice(1);
    e.lfs = { oid: sha, size: bytes.length, pointerSize: 134 };
  }
  return e;
}

function tree(req, res, url) {
  const files = walk(root);
  const dirs = [...new Set(files.filter((f) => f.includes('/')).map((f) => f.split('/')[0]))];
  const all = [...dirs.map((d) => ({ type: 'directory', path: d, size: 0, oid: '0'.repeat(40) })),
    ...files.map(entry)];
  if (opt['list-also']) all.push({ type: 'file', path: opt['list-also'], size: 3, oid: 'f'.repeat(40) });
  const at = Number(url.searchParams.get('cursor') || 0);
  if (at + 2 < all.length) {
    const host = opt['next-host'] ? `${opt['next-host']}:${server.address().port}` : req.headers.host;
    const next = `http://${host}${url.pathname}?recursive=true&cursor=${at + 2}`;
    res.setHeader('Link', `<${next}>; rel="next"`);
  }
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify(all.slice(at, at + 2)));
}

function serve(req, res, path) {
  let bytes;
  try {
    bytes = readFileSync(join(root, path));
  } catch {
    res.statusCode = 404;
    return res.end('Entry not found');
  }
  const m = /^bytes=(\d+)-$/.exec(req.headers.range || '');
  const from = m ? Number(m[1]) : 0;
  if (from > bytes.length) {
    res.statusCode = 416;
    return res.end();
  }
  res.statusCode = m ? 206 : 200;
  if (m) res.setHeader('Content-Range', `bytes ${from}-${bytes.length - 1}/${bytes.length}`);
  res.setHeader('Content-Length', bytes.length - from);
  const body = bytes.subarray(from);
  if (opt.drop === path && !dropped && body.length > 1) {
    dropped = true;
    res.flushHeaders();
    return res.write(body.subarray(0, body.length >> 1), () => res.socket.destroy());
  }
  res.end(body);
}

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  appendFileSync(log, `${req.method} ${req.url} ${req.headers.range || '-'}\n`);
  if (opt.token && req.headers.authorization !== `Bearer ${opt.token}`) {
    res.statusCode = 401;
    return res.end('Invalid credentials in Authorization header');
  }
  const treePrefix = `/api/models/${repo}/tree/main`;
  const resolvePrefix = `/${repo}/resolve/main/`;
  if (url.pathname === treePrefix) return tree(req, res, url);
  if (url.pathname.startsWith(resolvePrefix)) {
    const path = decodeURIComponent(url.pathname.slice(resolvePrefix.length));
    if (!path.endsWith('.safetensors')) return serve(req, res, path);
    res.statusCode = 302;
    res.setHeader('Location', `/cdn/${encodeURIComponent(path)}`);
    return res.end();
  }
  if (url.pathname.startsWith('/cdn/')) return serve(req, res, decodeURIComponent(url.pathname.slice(5)));
  res.statusCode = 404;
  res.end('Repository not found');
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
