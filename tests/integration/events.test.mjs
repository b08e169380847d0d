// Events and acknowledgements in both directions, binary payloads, namespace
// multiplexing over one connection, namespace disconnects from either side.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, startServer, ack, ackAll, once, Manager, token, withTimeout,
} from './lib/harness.mjs';

let srv;
before(async () => { srv = await startServer({ workers: 2 }); });
after(() => srv?.stop());

// Received binary may be a Buffer, ArrayBuffer or typed array: compare bytes.
function toBuf(v) {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof ArrayBuffer) return Buffer.from(v);
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw new Error(`not binary: ${typeof v} ${JSON.stringify(v)}`);
}
const isBinary = (v) => Buffer.isBuffer(v) || v instanceof ArrayBuffer || ArrayBuffer.isView(v);

// Deep copy with every binary value turned into a Buffer, so deepEqual works.
function norm(v) {
  if (isBinary(v)) return toBuf(v);
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  return v;
}

const bytes = (n, seed = 1) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

for (const transport of ['websocket', 'polling']) {
  describe(`over ${transport}`, () => {
    const connect = (ctx, nsp = '/', opts = {}) => ctx.connect(srv, nsp, { transports: [transport], ...opts });

    test('client event with ack: bench:echo returns every argument unchanged', async (t, ctx) => {
      const s = await connect(ctx);
      assert.equal(s.io.engine.transport.name, transport);
      const args = [1, 'two', { three: [3, 3.5, -4] }, null, true, false, [], {}, 'üñï©ødé ✓ \u001e', 1e21,
        '😀 𝄞 مرحبا 你好', { 'key with spaces': 'v', nested: { deep: [{ a: [] }] } }, -0.5, 9007199254740991];
      assert.deepEqual(await ackAll(s, 'bench:echo', ...args), args);
      assert.deepEqual(await ackAll(s, 'bench:echo'), []);
    });

    test('acks come back to the right callers when many are in flight', async (t, ctx) => {
      const s = await connect(ctx);
      const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => ackAll(s, 'bench:echo', i, `n${i}`)));
      replies.forEach((r, i) => assert.deepEqual(r, [i, `n${i}`]));
    });

    test('server event to the client (probe:emit to its own room), in order', async (t, ctx) => {
      const s = await connect(ctx);
      const got = [];
      const all = withTimeout(new Promise((resolve) => s.on('seq', (n, obj) => {
        got.push([n, obj]);
        if (got.length === 20) resolve();
      })), 5000, '20 seq events');
      for (let i = 0; i < 20; i++) s.emit('probe:emit', { rooms: [s.id], event: 'seq', args: [i, { i }] });
      await all;
      assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => [i, { i }]));
    });

    test('server event with ack: the client answers (probe:ask)', async (t, ctx) => {
      const s = await connect(ctx);
      s.on('question', (a, b, cb) => cb('answer', a + b, { a, b }));
      const answer = once(s, 'probe:answer');
      s.emit('probe:ask', { event: 'question', args: [2, 3], timeoutMs: 3000 });
      const [res] = await answer;
      assert.deepEqual(res, { timedOut: false, reply: ['answer', 5, { a: 2, b: 3 }] });
    });

    test('server event with ack: the client never answers, the server times out', async (t, ctx) => {
      const s = await connect(ctx);
      let asked = 0;
      s.on('silent', () => { asked++; });
      const answer = once(s, 'probe:answer', 5000);
      const t0 = Date.now();
      s.emit('probe:ask', { event: 'silent', args: [], timeoutMs: 400 });
      const [res] = await answer;
      const elapsed = Date.now() - t0;
      assert.deepEqual(res, { timedOut: true, reply: [] });
      assert.equal(asked, 1);
      assert.ok(elapsed >= 350, `timed out after ${elapsed} ms, before the 400 ms timeout`);
    });

    test('binary: client event with buffers, server ack with the same buffers', async (t, ctx) => {
      const s = await connect(ctx);
      const args = [bytes(4), { nested: { buf: bytes(1000, 7), list: [bytes(1, 9), 'x'] } }, 'text', bytes(0)];
      const reply = await ackAll(s, 'bench:echo', ...args);
      assert.deepEqual(norm(reply), args);
      assert.ok(Buffer.isBuffer(toBuf(reply[0])));
    });

    test('binary: server event carrying buffers to the client', async (t, ctx) => {
      const s = await connect(ctx);
      const got = once(s, 'bin');
      const payload = { file: bytes(300, 3), parts: [bytes(2, 5), bytes(3, 6)] };
      assert.deepEqual(await ack(s, 'probe:emit', { rooms: [s.id], event: 'bin', args: [payload, bytes(16)] }), { data: true });
      const args = await got;
      assert.deepEqual(norm(args), [payload, bytes(16)]);
    });

    test('binary: client ack with a buffer to a server event', async (t, ctx) => {
      const s = await connect(ctx);
      s.on('need-bytes', (n, cb) => cb(bytes(n, 11), 'tail'));
      const answer = once(s, 'probe:answer');
      s.emit('probe:ask', { event: 'need-bytes', args: [64], timeoutMs: 3000 });
      const [res] = await answer;
      assert.equal(res.timedOut, false);
      assert.deepEqual(norm(res.reply), [bytes(64, 11), 'tail']);
    });

    test('large binary payload (256 KB) round trip', async (t, ctx) => {
      const s = await connect(ctx);
      const blob = bytes(256 * 1024, 5);
      const [back] = await ackAll(s, 'bench:echo', blob);
      assert.ok(toBuf(back).equals(blob));
    });

    test('ten attachments in one event', async (t, ctx) => {
      const s = await connect(ctx);
      const parts = Array.from({ length: 10 }, (_, i) => bytes(i + 1, i));
      const back = await ackAll(s, 'bench:echo', ...parts);
      assert.deepEqual(norm(back), parts);
    });

    test('large text payload (200 KB) round trip', async (t, ctx) => {
      const s = await connect(ctx);
      const big = 'x'.repeat(200 * 1024);
      const [back] = await ackAll(s, 'bench:echo', big);
      assert.equal(back.length, big.length);
      assert.equal(back, big);
    });

    test('several namespaces over one connection (Manager)', async (t, ctx) => {
      const manager = new Manager(srv.url, { transports: [transport], reconnection: false, timeout: 5000 });
      const auth = { token: token('multi') };
      const root = ctx.track(manager.socket('/', { auth }));
      const chat = ctx.track(manager.socket('/chat', { auth }));
      await Promise.all([once(root, 'connect'), once(chat, 'connect')]);
      assert.equal(root.io, chat.io);
      const engine = manager.engine;
      const whoRoot = await ack(root, 'probe:whoami');
      const whoChat = await ack(chat, 'probe:whoami');
      assert.equal(whoRoot.data.nsp, '/');
      assert.equal(whoChat.data.nsp, '/chat');
      assert.equal(whoRoot.data.sid, root.id);
      assert.equal(whoChat.data.sid, chat.id);
      assert.notEqual(root.id, chat.id);
      // An event sent to /chat only reaches the /chat socket.
      let rootGot = 0;
      root.on('nsp-test', () => { rootGot++; });
      const chatGot = once(chat, 'nsp-test');
      await ack(chat, 'probe:emit', { rooms: [chat.id], event: 'nsp-test', args: ['chat'] });
      assert.deepEqual(await chatGot, ['chat']);
      // fence on "/": anything for "/" sent before would have arrived by now
      const fence = once(root, 'fence');
      await ack(root, 'probe:emit', { rooms: [root.id], event: 'fence', args: [] });
      await fence;
      assert.equal(rootGot, 0);
      assert.equal(manager.engine, engine, 'still one Engine.IO connection');
      assert.deepEqual(await ackAll(root, 'bench:echo', 'r'), ['r']);
      assert.deepEqual(await ackAll(chat, 'bench:echo', 'c'), ['c']);
    });

    test('binary events and acks in a non-default namespace, next to "/" on one connection', async (t, ctx) => {
      const manager = new Manager(srv.url, { transports: [transport], reconnection: false, timeout: 5000 });
      const auth = { token: token('bin-nsp') };
      const root = ctx.track(manager.socket('/', { auth }));
      const chat = ctx.track(manager.socket('/chat', { auth }));
      await Promise.all([once(root, 'connect'), once(chat, 'connect')]);
      const [rb, cb] = [bytes(33, 1), bytes(77, 2)];
      const [r1, c1] = await Promise.all([ackAll(root, 'bench:echo', rb, 'root'), ackAll(chat, 'bench:echo', { b: cb }, 'chat')]);
      assert.deepEqual(norm(r1), [rb, 'root']);
      assert.deepEqual(norm(c1), [{ b: cb }, 'chat']);
      // server -> client binary event and client -> server binary ack on /chat
      const gotBin = once(chat, 'chat-bin');
      await ack(chat, 'probe:emit', { rooms: [chat.id], event: 'chat-bin', args: [bytes(5, 9)] });
      assert.deepEqual(norm(await gotBin), [bytes(5, 9)]);
      chat.on('chat-ask', (cb2) => cb2({ file: bytes(12, 4) }));
      const answer = once(chat, 'probe:answer');
      chat.emit('probe:ask', { event: 'chat-ask', args: [], timeoutMs: 3000 });
      const [res] = await answer;
      assert.deepEqual(norm(res), { timedOut: false, reply: [{ file: bytes(12, 4) }] });
    });

    test('client disconnects one namespace; the other stays up on the same connection', async (t, ctx) => {
      const manager = new Manager(srv.url, { transports: [transport], reconnection: false, timeout: 5000 });
      const auth = { token: token('multi2') };
      const root = ctx.track(manager.socket('/', { auth }));
      const chat = ctx.track(manager.socket('/chat', { auth }));
      await Promise.all([once(root, 'connect'), once(chat, 'connect')]);
      const engineId = manager.engine.id;
      const reason = once(chat, 'disconnect');
      chat.disconnect();
      assert.equal((await reason)[0], 'io client disconnect');
      assert.equal(root.connected, true);
      assert.deepEqual(await ackAll(root, 'bench:echo', 'still here'), ['still here']);
      assert.equal(manager.engine.id, engineId, 'same Engine.IO session');
      // The namespace can be joined again over the same connection.
      chat.connect();
      await once(chat, 'connect');
      assert.deepEqual(await ackAll(chat, 'bench:echo', 'back'), ['back']);
      assert.equal(manager.engine.id, engineId);
    });

    test('server disconnects one namespace; the other stays up', async (t, ctx) => {
      const manager = new Manager(srv.url, { transports: [transport], reconnection: false, timeout: 5000 });
      const auth = { token: token('multi3') };
      const root = ctx.track(manager.socket('/', { auth }));
      const chat = ctx.track(manager.socket('/chat', { auth }));
      await Promise.all([once(root, 'connect'), once(chat, 'connect')]);
      const engineId = manager.engine.id;
      const reason = once(chat, 'disconnect');
      chat.emit('probe:disconnect', {});
      assert.equal((await reason)[0], 'io server disconnect');
      assert.equal(chat.connected, false);
      assert.equal(root.connected, true);
      assert.deepEqual(await ackAll(root, 'bench:echo', 'alive'), ['alive']);
      assert.equal(manager.engine.id, engineId, 'same Engine.IO session');
    });

    test('server disconnect with close: every namespace and the connection go', async (t, ctx) => {
      const manager = new Manager(srv.url, { transports: [transport], reconnection: false, timeout: 5000 });
      const auth = { token: token('multi4') };
      const root = ctx.track(manager.socket('/', { auth }));
      const chat = ctx.track(manager.socket('/chat', { auth }));
      await Promise.all([once(root, 'connect'), once(chat, 'connect')]);
      const engine = manager.engine;
      const closed = once(engine, 'close');
      const r1 = once(root, 'disconnect');
      const r2 = once(chat, 'disconnect');
      root.emit('probe:disconnect', { close: true });
      const [[reasonRoot], [reasonChat]] = await Promise.all([r1, r2]);
      assert.equal(reasonRoot, 'io server disconnect');
      assert.equal(reasonChat, 'io server disconnect');
      await closed;
      assert.equal(engine.readyState, 'closed');
    });

    test('unknown namespace: connect_error "Invalid namespace", other namespaces unaffected', async (t, ctx) => {
      const err = await ctx.connectError(srv, '/does-not-exist', { transports: [transport] });
      assert.equal(err.message, 'Invalid namespace');

      const manager = new Manager(srv.url, { transports: [transport], reconnection: false, timeout: 5000 });
      const auth = { token: token('multi5') };
      const root = ctx.track(manager.socket('/', { auth }));
      await once(root, 'connect');
      const bad = ctx.track(manager.socket('/nope', { auth }));
      const [e2] = await once(bad, 'connect_error');
      assert.equal(e2.message, 'Invalid namespace');
      assert.deepEqual(await ackAll(root, 'bench:echo', 'ok'), ['ok']);
    });
  });
}
