// The network as it is: TCP that splits every byte into its own segment, and
// readers that stall. A client that stops reading in a busy room, or a
// long-polling session that never fetches, is closed at its bound
// (max_output_buffer) while the worker and every other client go on; and
// every wire path (WebSocket, polling, the upgrade) reads 1-byte segments the
// same as whole ones.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { after, before } from 'node:test';
import { createClient } from 'redis';
import {
  test, startServer, startRedis, redisLines, token, ack, Inbox, rnd, waitFor, request, rawSioWs, rawPollingSession,
  pollGet, pollPost, RS,
} from './lib/harness.mjs';

const MODULES = ['auth_jwt.so', 'chat.so'];
const BOUND = 2 * 1024 * 1024;

let redis;
let srv;
let db;

before(async () => {
  redis = await startRedis();
  srv = await startServer({
    modules: MODULES, probe: false, workers: 1,
    extraServer: `${redisLines(redis)}\nmax_output_buffer ${BOUND};\nmax_payload 1000000;`,
  });
  db = createClient({ url: redis.url });
  await db.connect();
}, { timeout: 30000 });

after(async () => {
  await db?.quit().catch(() => {});
  await srv?.stop();
  await redis?.stop();
});

const conv = () => `net-${rnd()}`;
const member = (userId, id) => ({ auth: { token: token(userId, { conversations: [id] }) } });

async function metric(name, labels) {
  const text = (await request(srv, { path: '/metrics' })).text;
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

async function joined(s, id) {
  assert.deepEqual(await ack(s, 'chat:join', { conversationId: id }), { data: { conversationId: id } });
  return s;
}

// A raw WebSocket member of `id` on /chat that will stop reading when told.
async function rawMember(userId, id) {
  const ws = await rawSioWs(srv, { nsp: '/chat', tok: token(userId, { conversations: [id] }) });
  ws.send(`42/chat,1${JSON.stringify(['chat:join', { conversationId: id }])}`);
  await ws.until((t) => t.startsWith('43/chat,1'));
  ws.stall = () => ws._socket.pause();  // the kernel's buffers fill, then the server's
  return ws;
}

const bigMessage = (id, n, size) => ({ conversationId: id, content: `m${n}`, metadata: { blob: 'x'.repeat(size) } });

// The worker survived (same pid), the healthy member is still there and got
// every message, and the server closed the stalled one at its bound.
async function assertSurvived(workersBefore, observer, inbox, count, queue, closedBefore) {
  await waitFor(() => inbox.of('chat:message').length === count, { ms: 15000, what: `${count} messages at the observer` });
  await waitFor(async () => (await metric('depth_realtime_slow_clients_closed_total', `queue="${queue}"`)) > closedBefore,
    { ms: 10000, what: `a slow client closed (${queue})` });
  assert.deepEqual(srv.workerPids(), workersBefore, 'no worker died');
  assert.equal(observer.connected, true);
  assert.deepEqual(inbox.of('chat:message').map(([m]) => m.content), Array.from({ length: count }, (_, i) => `m${i}`));
}

test('a member that stops reading sends big messages to its own room: it is closed, the worker and the room go on', { timeout: 60000 }, async (t, ctx) => {
  const id = conv();
  const workers = srv.workerPids();
  const closedAny = async () => (await metric('depth_realtime_slow_clients_closed_total', 'queue="output"')) +
    (await metric('depth_realtime_slow_clients_closed_total', 'queue="events"'));
  const before = await closedAny();
  const observer = await joined(await ctx.connect(srv, '/chat', member('obs', id)), id);
  const inbox = new Inbox(observer, ['chat:message']);
  const stalled = await rawMember('stalled', id);
  ctx.defer(() => stalled.terminate());
  stalled.stall();
  // Under max_payload and under any rate limit: 7 messages of ~900 KB. Each
  // comes back to the stalled socket twice (chat:message, message:new) and
  // acked; the ones read while the first waits for Redis wait in its queue.
  // Whichever bound it passes first (output or waiting events), it is closed.
  for (let n = 0; n < 7; n++) stalled.send(`42/chat,${10 + n}${JSON.stringify(['chat:message', bigMessage(id, n, 900000)])}`);
  await waitFor(async () => (await closedAny()) > before, { ms: 15000, what: 'the stalled client closed' });
  // What the server read before it closed the client was stored and reached
  // the room; the rest was never read (and never acked).
  const history = await ack(observer, 'chat:history', { conversationId: id, limit: 50 });
  const stored = history.data.map((m) => m.content).sort();
  assert.ok(stored.length >= 1 && stored.length <= 7, `stored ${stored.length}`);
  await waitFor(() => inbox.of('chat:message').length === stored.length, { ms: 15000, what: 'every stored message at the observer' });
  assert.deepEqual(inbox.of('chat:message').map(([m]) => m.content).sort(), stored);
  assert.deepEqual(srv.workerPids(), workers, 'no worker died');
  assert.equal(observer.connected, true);
});

test('another member stalls while one sends big messages: only the stalled one is closed', { timeout: 60000 }, async (t, ctx) => {
  const id = conv();
  const workers = srv.workerPids();
  const sender = await joined(await ctx.connect(srv, '/chat', member('sender', id)), id);
  const observer = await joined(await ctx.connect(srv, '/chat', member('obs2', id)), id);
  const inbox = new Inbox(observer, ['chat:message']);
  const stalled = await rawMember('stalled2', id);
  ctx.defer(() => stalled.terminate());
  stalled.stall();
  const before = await metric('depth_realtime_slow_clients_closed_total', 'queue="output"');
  for (let n = 0; n < 7; n++) {
    const r = await ack(sender, 'chat:message', bigMessage(id, n, 900000));
    assert.equal(r.data?.content, `m${n}`, JSON.stringify(r).slice(0, 200));
  }
  await assertSurvived(workers, observer, inbox, 7, 'output', before);
});

test('a stalled phone in a busy room of ordinary 9 KB messages is closed at its bound', { timeout: 90000 }, async (t, ctx) => {
  const id = conv();
  const workers = srv.workerPids();
  const sender = await joined(await ctx.connect(srv, '/chat', member('busy', id)), id);
  const observer = await joined(await ctx.connect(srv, '/chat', member('obs3', id)), id);
  const inbox = new Inbox(observer, ['chat:message']);
  const stalled = await rawMember('phone', id);
  ctx.defer(() => stalled.terminate());
  stalled.stall();
  const before = await metric('depth_realtime_slow_clients_closed_total', 'queue="output"');
  // Enough to fill the loopback socket's buffers and then the bound: pipelined 50 at a time.
  const total = 1500;
  for (let n = 0; n < total; n += 50) {
    const acks = [];
    for (let k = n; k < n + 50; k++) acks.push(ack(sender, 'chat:message', bigMessage(id, k, 9000)));
    for (const r of await Promise.all(acks)) assert.ok(r.data, JSON.stringify(r).slice(0, 200));
    if (await metric('depth_realtime_slow_clients_closed_total', 'queue="output"') > before) {
      await waitFor(() => inbox.of('chat:message').length === n + 50, { ms: 15000, what: 'every message at the observer' });
      assert.deepEqual(srv.workerPids(), workers, 'no worker died');
      assert.equal(observer.connected, true);
      return;
    }
  }
  assert.fail(`${total} messages of 9 KB did not close the stalled member`);
});

test('a long-polling session that never fetches is ended at its bound; its next request gets 400', { timeout: 60000 }, async (t, ctx) => {
  const id = conv();
  const workers = srv.workerPids();
  const tok = token('poller', { conversations: [id] });
  const poller = await rawPollingSession(srv, { nsp: '/chat', tok });
  assert.equal((await pollPost(srv, poller.sid, `42/chat,1${JSON.stringify(['chat:join', { conversationId: id }])}`)).status, 200);
  await waitFor(async () => (await pollGet(srv, poller.sid)).text.split(RS).some((p) => p.startsWith('43/chat,1')),
    { what: 'the join ack' });
  const sender = await joined(await ctx.connect(srv, '/chat', member('sender-p', id)), id);
  const observer = await joined(await ctx.connect(srv, '/chat', member('obs-p', id)), id);
  const inbox = new Inbox(observer, ['chat:message']);
  const before = await metric('depth_realtime_slow_clients_closed_total', 'queue="polling"');
  // The poller only says it is alive (a pong) and never fetches.
  for (let n = 0; n < 4; n++) {
    assert.ok((await ack(sender, 'chat:message', bigMessage(id, n, 900000))).data);
    await pollPost(srv, poller.sid, '3').catch(() => {});
  }
  await assertSurvived(workers, observer, inbox, 4, 'polling', before);
  const next = await pollGet(srv, poller.sid);
  assert.equal(next.status, 400);
  assert.deepEqual(JSON.parse(next.text), { code: 1, message: 'Session ID unknown' });
});

test('events waiting for a held handler are bounded in bytes too', { timeout: 30000 }, async () => {
  // A client that floods one socket with large events while its handler
  // waits for Redis (CLIENT PAUSE holds the XADD) is closed, not buffered.
  const id = conv();
  const ws = await rawMember('flood', id);
  const pauser = createClient({ url: redis.url });
  await pauser.connect();
  const before = await metric('depth_realtime_slow_clients_closed_total', 'queue="events"');
  try {
    await pauser.sendCommand(['CLIENT', 'PAUSE', '3000', 'WRITE']);
    for (let n = 0; n < 6; n++) ws.send(`42/chat,${100 + n}${JSON.stringify(['chat:message', bigMessage(id, n, 900000)])}`);
    const closed = await Promise.race([ws.closed, new Promise((r) => setTimeout(() => r(null), 8000))]);
    assert.ok(closed, 'the flooding client was closed');
    assert.ok(await metric('depth_realtime_slow_clients_closed_total', 'queue="events"') > before);
  } finally {
    await pauser.sendCommand(['CLIENT', 'UNPAUSE']).catch(() => {});
    await pauser.quit().catch(() => {});
    ws.terminate();
  }
});

// ------------------------------------------------------ 1-byte TCP segments

// A TCP proxy that forwards every byte the client sends as its own segment
// (what the server reads; its answers pass unchanged, the client's parser is
// not under test).
async function segmentingProxy(targetPort) {
  const proxy = { segmentsToServer: 0 };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const pump = (from, to) => {
      const queue = [];
      let busy = false;
      let ended = false;
      const drain = async () => {
        if (busy) return;
        busy = true;
        while (queue.length) {
          const chunk = queue.shift();
          for (let i = 0; i < chunk.length; i++) {
            if (to.destroyed) return;
            to.write(chunk.subarray(i, i + 1));
            if (from === client) proxy.segmentsToServer++;
            await new Promise((r) => setImmediate(r));  // one write, one segment
          }
        }
        busy = false;
        if (ended) to.end();  // after every byte that came before the end
      };
      from.on('data', (c) => {
        if (from !== client) { to.write(c); return; }
        queue.push(c);
        drain();
      });
      from.on('end', () => { ended = true; if (!busy) to.end(); });
      from.on('error', () => to.destroy());
    };
    pump(client, upstream);
    pump(upstream, client);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  proxy.port = server.address().port;
  proxy.url = `http://127.0.0.1:${proxy.port}`;
  proxy.close = () => server.close();
  return proxy;
}

for (const transports of [['websocket'], ['polling'], ['polling', 'websocket']]) {
  test(`1-byte TCP segments to the server over ${transports.join(' → ')}: the same messages, acks and broadcasts`, { timeout: 60000 }, async (t, ctx) => {
    const proxy = await segmentingProxy(srv.port);
    ctx.defer(() => proxy.close());
    const id = conv();
    const observer = await joined(await ctx.connect(srv, '/chat', member('direct', id)), id);
    const inbox = new Inbox(observer, ['chat:message']);
    const s = ctx.socket(proxy, '/chat', { ...member('segmented', id), transports, timeout: 20000 });
    await new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); });
    if (transports.length === 2) await waitFor(() => s.io.engine.transport.name === 'websocket', { ms: 20000, what: 'the upgrade' });
    assert.deepEqual(await s.timeout(20000).emitWithAck('chat:join', { conversationId: id }), { data: { conversationId: id } });
    const own = new Inbox(s, ['chat:message']);
    // Frames with 7-bit, 16-bit and 64-bit lengths, deflated or not: random
    // text, so that permessage-deflate cannot shrink the big one below 64 KB.
    const sizes = [20, 300, 100000];
    for (const [n, size] of sizes.entries()) {
      const msg = { conversationId: id, content: `m${n}`, metadata: { blob: crypto.randomBytes(size).toString('base64').slice(0, size) } };
      const r = await s.timeout(30000).emitWithAck('chat:message', msg);
      assert.equal(r.data?.content, `m${n}`);
      assert.equal(r.data.metadata.blob.length, size);
    }
    await waitFor(() => inbox.of('chat:message').length === 3, { ms: 10000, what: 'the observer got all three' });
    assert.deepEqual(inbox.of('chat:message').map(([m]) => m.metadata.blob.length), sizes);
    await waitFor(() => own.of('chat:message').length === 3, { ms: 30000, what: 'the segmented client got its own broadcasts' });
    assert.equal(s.connected, true);
    assert.ok(proxy.segmentsToServer > 70000, `only ${proxy.segmentsToServer} segments`);
  });
}
