// Slow and idle HTTP clients are cut off (client_header_timeout,
// client_body_timeout, keepalive_timeout) while WebSocket clients stay.
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { test, startServer, rawTcp, ack } from './lib/harness.mjs';

let srv;
before(async () => {
  srv = await startServer({
    workers: 2,
    extraServer: 'client_header_timeout 400ms;\nclient_body_timeout 400ms;\nkeepalive_timeout 600ms;',
  });
});
after(() => srv?.stop());

test('headers that never end are cut off after client_header_timeout', async () => {
  const t0 = Date.now();
  const r = await rawTcp(srv, 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ', { ms: 3000 });
  assert.equal(r.closed, true, 'the server closed the connection');
  const took = Date.now() - t0;
  assert.ok(took >= 350 && took < 2500, `closed after ${took} ms`);
});

test('a body that never ends is cut off after client_body_timeout', async () => {
  const t0 = Date.now();
  const r = await rawTcp(srv, 'POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc', { ms: 3000 });
  assert.equal(r.closed, true);
  assert.ok(Date.now() - t0 < 2500);
});

test('an idle keep-alive connection is closed after keepalive_timeout, after its answer', async () => {
  const t0 = Date.now();
  const r = await rawTcp(srv, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 3000 });
  assert.match(r.text, /^HTTP\/1\.1 200 /);
  assert.match(r.text, /\{"status":"ok"\}$/);
  assert.equal(r.closed, true);
  const took = Date.now() - t0;
  assert.ok(took >= 500 && took < 2500, `closed after ${took} ms`);
});

test('a WebSocket client is not subject to the HTTP timeouts', async (t, ctx) => {
  const s = await ctx.connect(srv, '/chat');
  await new Promise((r) => setTimeout(r, 1200));  // twice the keep-alive timeout
  assert.equal(s.connected, true);
  assert.equal(await ack(s, 'bench:echo', 'still'), 'still');
});
