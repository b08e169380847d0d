// Plain HTTP on the Socket.IO port: /healthz, 404/405/431/400, the Engine.IO
// error codes with their exact JSON bodies, CORS, and the probe's GET /probe.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, startServer, request, rawTcp, eioUrl, pollingHandshake, pollPost, pollGet,
  rawPollingSession, WebSocket, withTimeout, rnd, records,
} from './lib/harness.mjs';

let srv;
before(async () => { srv = await startServer({ workers: 2 }); });
after(() => srv?.stop());

const ALLOWED = 'http://example.com';
const ALLOWED2 = 'http://localhost:3000';
const DISALLOWED = 'http://evil.example';

// Parses the status code from a raw HTTP response text.
const statusOf = (text) => Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1]);

function assertEioError(res, status, code, message) {
  assert.equal(res.status, status, `status (body ${res.text})`);
  assert.match(res.headers['content-type'] ?? '', /^application\/json/);
  assert.equal(res.text, JSON.stringify({ code, message }));
}

describe('plain HTTP', () => {
  test('GET /healthz → 200 {"status":"ok"}', async () => {
    const r = await request(srv, { path: '/healthz' });
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'] ?? '', /^application\/json/);
    assert.deepEqual(JSON.parse(r.text), { status: 'ok' });
  });

  test('GET /healthz many times on fresh connections (any worker answers)', async () => {
    const rs = await Promise.all(Array.from({ length: 20 }, () => request(srv, { path: '/healthz' })));
    for (const r of rs) assert.equal(r.status, 200);
  });

  test('unknown path → 404', async () => {
    for (const p of ['/nope', '/healthz/extra', '/socket', '/favicon.ico']) {
      const r = await request(srv, { path: p });
      assert.equal(r.status, 404, `GET ${p}`);
    }
  });

  test('bad method on a known path → 405', async () => {
    for (const [method, p] of [['POST', '/healthz'], ['DELETE', '/healthz'], ['PUT', '/probe'], ['POST', '/probe']]) {
      const r = await request(srv, { method, path: p, body: method === 'DELETE' ? undefined : '{}' });
      assert.equal(r.status, 405, `${method} ${p}`);
    }
  });

  test('GET /probe (route of the out-of-tree probe module) → 200 "probe ok"', async () => {
    const r = await request(srv, { path: '/probe' });
    assert.equal(r.status, 200);
    assert.equal(r.text, 'probe ok');
  });

  test('keep-alive: several requests on one connection', async () => {
    const res = await rawTcp(srv, [
      'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    ], { ms: 3000 });
    const statuses = [...res.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 404, 200]);
    assert.equal(res.closed, true, 'closed after Connection: close');
  });

  test('HTTP/1.0 request is answered and closed', async () => {
    const res = await rawTcp(srv, 'GET /healthz HTTP/1.0\r\n\r\n', { ms: 3000 });
    assert.equal(statusOf(res.text), 200, res.text.slice(0, 200));
    assert.ok(res.text.endsWith('{"status":"ok"}'), res.text);
    assert.equal(res.closed, true);
  });

  test('oversize request header → 431', async () => {
    const big = 'a'.repeat(128 * 1024);
    const res = await rawTcp(srv, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${big}\r\n\r\n`, { ms: 5000 });
    assert.equal(statusOf(res.text), 431, `response: ${res.text.slice(0, 200)}`);
  });

  test('garbage request line → 400 and the connection is closed', async () => {
    const res = await rawTcp(srv, 'THIS IS NOT HTTP\r\n\r\n', { ms: 3000 });
    assert.equal(statusOf(res.text), 400, `response: ${JSON.stringify(res.text.slice(0, 200))}`);
    assert.equal(res.closed, true, 'connection closed');
  });

  test('binary garbage → 400 (or just closed), and the server still answers', async () => {
    const res = await rawTcp(srv, Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a]), { ms: 3000 });
    assert.equal(res.closed, true, 'connection closed');
    if (res.text.length) assert.equal(statusOf(res.text), 400);
    assert.equal((await request(srv, { path: '/healthz' })).status, 200);
  });
});

describe('Engine.IO errors', () => {
  test('code 0: unknown transport', async () => {
    assertEioError(await request(srv, { path: '/socket.io/?EIO=4&transport=foo' }), 400, 0, 'Transport unknown');
  });

  test('code 0: missing transport', async () => {
    assertEioError(await request(srv, { path: '/socket.io/?EIO=4' }), 400, 0, 'Transport unknown');
  });

  test('code 1: unknown sid (GET and POST)', async () => {
    assertEioError(await request(srv, { path: eioUrl({ sid: 'nope' }) }), 400, 1, 'Session ID unknown');
    assertEioError(await request(srv, { method: 'POST', path: eioUrl({ sid: 'nope' }), body: '40' }), 400, 1, 'Session ID unknown');
  });

  test('code 2: handshake that is not a GET', async () => {
    assertEioError(await request(srv, { method: 'POST', path: eioUrl(), body: '40' }), 400, 2, 'Bad handshake method');
  });

  test('code 3: transport=websocket without an Upgrade', async () => {
    assertEioError(await request(srv, { path: '/socket.io/?EIO=4&transport=websocket' }), 400, 3, 'Bad request');
  });

  test('code 3: polling request for a websocket session (transport mismatch)', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { transports: ['websocket'] });
    assertEioError(await request(srv, { path: eioUrl({ sid: s.io.engine.id }) }), 400, 3, 'Bad request');
    assert.equal(s.connected, true);
  });

  test('code 5: EIO=3 and missing EIO', async () => {
    assertEioError(await request(srv, { path: '/socket.io/?EIO=3&transport=polling' }), 400, 5, 'Unsupported protocol version');
    assertEioError(await request(srv, { path: '/socket.io/?transport=polling' }), 400, 5, 'Unsupported protocol version');
  });

  test('WebSocket upgrade with an unknown sid is refused with 400', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket&sid=nope`);
    const status = await withTimeout(new Promise((resolve) => {
      ws.on('unexpected-response', (req, res) => { resolve(res.statusCode); req.destroy(); });
      ws.on('open', () => resolve('open'));
      ws.on('error', () => {});
    }), 5000, 'upgrade answer');
    assert.equal(status, 400);
  });

  test('POST body over max_payload → 413 and the session survives', async () => {
    const { sid, open } = await rawPollingSession(srv);
    const big = `42["bench:echo","${'x'.repeat(open.maxPayload + 10)}"]`;
    const r = await pollPost(srv, sid, big, { timeoutMs: 10000 }).catch((e) => ({ status: `error ${e.message}` }));
    assert.equal(r.status, 413);
    const ok = await pollPost(srv, sid, '427["bench:echo","after"]');
    assert.equal(ok.status, 200, `POST after 413: ${ok.status} ${ok.text}`);
    let found = false;
    for (let i = 0; i < 5 && !found; i++) {
      const g = await pollGet(srv, sid);
      assert.equal(g.status, 200);
      found = records(g.text).includes('437["after"]');
    }
    assert.ok(found, 'session still works after the 413');
  });

  test('POST with Transfer-Encoding: chunked is accepted', async () => {
    const { sid } = await pollingHandshake(srv);
    const body = `40${JSON.stringify({ token: 'x' })}`;
    const chunked = `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
    const r = await rawTcp(srv, `POST ${eioUrl({ sid })} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;charset=UTF-8\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunked}`, { ms: 3000 });
    assert.equal(statusOf(r.text), 200, r.text.slice(0, 200));
    assert.ok(r.text.endsWith('ok'), r.text);
    // the CONNECT went through (refused: the token is not a JWT)
    let seen = '';
    for (let i = 0; i < 5 && !seen.includes('44'); i++) seen += (await pollGet(srv, sid)).text;
    assert.match(seen, /44\{"message":"Invalid token"/);
  });

  test('polling responses: GET text/plain, POST "ok"', async () => {
    const { sid, res } = await pollingHandshake(srv);
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /^text\/plain; ?charset=UTF-8$/i);
    const p = await pollPost(srv, sid, `40{"token":"x"}`);
    assert.equal(p.status, 200);
    assert.equal(p.text, 'ok');
    await pollPost(srv, sid, '1');
  });

  test('other method on an existing sid → 500 (engine.io behaviour)', async () => {
    const { sid } = await pollingHandshake(srv);
    const r = await request(srv, { method: 'PUT', path: eioUrl({ sid }), body: 'x' });
    assert.equal(r.status, 500);
    await pollPost(srv, sid, '1');
  });

  test('POST with Content-Type application/octet-stream → 400', async () => {
    const { sid } = await pollingHandshake(srv);
    const r = await pollPost(srv, sid, Buffer.from([1, 2, 3]), { headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(r.status, 400);
  });

  test('the path is matched by prefix: /socket.io/anything?EIO=4... is Engine.IO', async () => {
    const r = await request(srv, { path: `/socket.io/anything?EIO=4&transport=polling&t=${rnd()}` });
    assert.equal(r.status, 200);
    assert.ok(r.text.startsWith('0{"sid":'), r.text);
  });
});

describe('CORS', () => {
  test('preflight with an allowed origin', async () => {
    const r = await request(srv, {
      method: 'OPTIONS', path: eioUrl(),
      headers: { origin: ALLOWED, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    assert.equal(r.status, 204);
    assert.equal(r.headers['access-control-allow-origin'], ALLOWED);
    assert.equal(r.headers['access-control-allow-credentials'], 'true');
    const methods = (r.headers['access-control-allow-methods'] ?? '').split(/\s*,\s*/);
    for (const m of ['GET', 'POST']) assert.ok(methods.includes(m), `allow-methods ${methods}`);
    assert.match(r.headers['access-control-allow-headers'] ?? '', /content-type/i);
    assert.match(r.headers.vary ?? '', /Origin/);
    assert.ok(!r.headers['content-length'] || r.headers['content-length'] === '0');
  });

  test('handshake with each allowed origin echoes it, with credentials', async () => {
    for (const origin of [ALLOWED, ALLOWED2]) {
      const { res } = await pollingHandshake(srv, { headers: { origin } });
      assert.equal(res.headers['access-control-allow-origin'], origin);
      assert.equal(res.headers['access-control-allow-credentials'], 'true');
      assert.match(res.headers.vary ?? '', /Origin/);
    }
  });

  test('POST and error responses carry the CORS headers for an allowed origin', async () => {
    const { sid } = await pollingHandshake(srv, { headers: { origin: ALLOWED } });
    const p = await pollPost(srv, sid, '40{"token":"x"}', { headers: { origin: ALLOWED } });
    assert.equal(p.headers['access-control-allow-origin'], ALLOWED);
    assert.equal(p.headers['access-control-allow-credentials'], 'true');
    const e = await request(srv, { path: eioUrl({ sid: 'nope' }), headers: { origin: ALLOWED } });
    assert.equal(e.status, 400);
    assert.equal(e.headers['access-control-allow-origin'], ALLOWED);
    assert.equal(e.headers['access-control-allow-credentials'], 'true');
  });

  test('a disallowed origin gets no Access-Control-Allow-Origin (never *)', async () => {
    const pre = await request(srv, {
      method: 'OPTIONS', path: eioUrl(),
      headers: { origin: DISALLOWED, 'access-control-request-method': 'POST' },
    });
    assert.ok(pre.status < 500, `preflight status ${pre.status}`);
    assert.equal(pre.headers['access-control-allow-origin'], undefined);
    const r = await request(srv, { path: eioUrl({ t: rnd() }), headers: { origin: DISALLOWED } });
    assert.equal(r.headers['access-control-allow-origin'], undefined);
    // a prefix of an allowed origin is not allowed either
    const r2 = await request(srv, { path: eioUrl({ t: rnd() }), headers: { origin: 'http://example.com.evil.example' } });
    assert.equal(r2.headers['access-control-allow-origin'], undefined);
  });

  test('WebSocket upgrade with an allowed origin: 101 carries the CORS headers', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`, { origin: ALLOWED });
    const headers = await withTimeout(new Promise((resolve, reject) => {
      ws.on('upgrade', (res) => resolve(res.headers));
      ws.on('error', reject);
    }), 5000, 'upgrade');
    ws.terminate();
    assert.equal(headers['access-control-allow-origin'], ALLOWED);
    assert.equal(headers['access-control-allow-credentials'], 'true');
  });

  test('official client with withCredentials and an allowed Origin header connects over polling', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { transports: ['polling'], withCredentials: true, extraHeaders: { origin: ALLOWED } });
    assert.equal(s.connected, true);
  });
});
