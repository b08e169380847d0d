// `parser msgpack;` (issue 10, item 6): clients using the real npm
// socket.io-msgpack-parser with socket.io-client connect, emit and get acks,
// send and receive binaries (Buffers, nested) and get connect_error; a
// broadcast reaches msgpack clients from a json-parser daemon and from a Node
// socket.io server on the same redis-server, and the other way round;
// malformed msgpack closes the connection and nothing else, also when it
// comes in 1-byte TCP segments.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before } from 'node:test';
import { createClient } from 'redis';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import msgpackParser from 'socket.io-msgpack-parser';
import {
  test, Scope, startServer, ack, Inbox, startRedis, redisLines, waitFor, waitSubscribed, rawWs, withTimeout,
  closedWithin, token, testConfig, tmpDir, writeConf, freePort, rnd, once, switchableProxy, io,
} from './lib/harness.mjs';

const encoder = new msgpackParser.Encoder();
const pack = (packet) => encoder.encode(packet)[0];
const unpack = (buf) => {
  let out;
  const d = new msgpackParser.Decoder();
  d.on('decoded', (p) => { out = p; });
  d.add(buf);
  return out;
};

let redis;
let mp;        // depth-realtime with `parser msgpack;`
let js;        // depth-realtime with the default parser
let nodeIo;    // a Node socket.io server (json parser) on the same Redis
let nodeHttp;
let redisClients = [];
let scope;

before(async () => {
  redis = await startRedis();
  const lines = redisLines(redis, { extra: ['recovery_window 0;'] });
  [mp, js] = await Promise.all([
    startServer({ workers: 2, extraServer: `parser msgpack;\n${lines}` }),
    startServer({ workers: 1, extraServer: lines }),
  ]);
  const pubClient = createClient({ url: redis.url });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);
  redisClients = [pubClient, subClient];
  nodeHttp = http.createServer();
  nodeIo = new Server(nodeHttp, { adapter: createAdapter(pubClient, subClient) });
  await new Promise((resolve) => nodeHttp.listen(0, '127.0.0.1', resolve));
  scope = new Scope(null);
}, { timeout: 60000 });

after(async () => {
  await scope?.cleanup();
  nodeIo?.close();
  for (const c of redisClients) await c.quit().catch(() => {});
  for (const srv of [mp, js]) await srv?.stop();
  await redis?.stop();
});

const withParser = { parser: msgpackParser };

test('a msgpack client connects, emits with acks and is who its token says', async (t, ctx) => {
  const s = await ctx.connect(mp, '/', { ...withParser, userId: 'mia' });
  const { data } = await ack(s, 'probe:whoami');
  assert.equal(data.userId, 'mia');
  assert.equal(data.sid, s.id);
  // The module's greeting on connect went through the msgpack encoder too.
  const chat = await ctx.connect(mp, '/chat', withParser);
  assert.equal((await ack(chat, 'probe:whoami')).data.nsp, '/chat');
  // Numbers, strings, null, nesting come back as they went.
  const reply = await withTimeout(s.timeout(5000).emitWithAck('bench:echo', 1, 2.5, -3, 'é', null, { a: [true, { b: 'c' }] }),
    6000, 'echo');
  assert.equal(reply, 1);
  const all = await new Promise((resolve, reject) => s.timeout(5000).emit('bench:echo', 1, 2.5, -3, 'é', null,
    { a: [true, { b: 'c' }] }, (err, ...args) => (err ? reject(err) : resolve(args))));
  assert.deepEqual(all, [1, 2.5, -3, 'é', null, { a: [true, { b: 'c' }] }]);
});

test('Buffers both ways, nested, and in acks of events the server sends', async (t, ctx) => {
  const s = await ctx.connect(mp, '/', withParser);
  const a = Buffer.from([0, 1, 2, 255]);
  const b = Buffer.alloc(70000, 7);  // a bin 32
  const empty = Buffer.alloc(0);
  const echoed = await new Promise((resolve, reject) => s.timeout(5000).emit('bench:echo', a, { nested: [b, { deeper: empty }] },
    (err, ...args) => (err ? reject(err) : resolve(args))));
  assert.ok(Buffer.isBuffer(echoed[0]) && echoed[0].equals(a), 'top-level Buffer');
  assert.ok(echoed[1].nested[0].equals(b), 'nested Buffer of 70000 bytes');
  assert.ok(Buffer.isBuffer(echoed[1].nested[1].deeper) && echoed[1].nested[1].deeper.length === 0, 'empty Buffer');

  // The server asks with a binary, the client answers with one (an ACK from the client).
  s.on('q', (buf, cb) => cb({ got: buf.length, back: Buffer.concat([buf, Buffer.from('!')]) }));
  const answer = new Promise((resolve) => s.once('probe:answer', resolve));
  assert.deepEqual(await ack(s, 'probe:ask', { event: 'q', args: [Buffer.from('hey')] }), { data: true });
  const got = await withTimeout(answer, 5000, 'probe:answer');
  assert.equal(got.timedOut, false);
  assert.equal(got.reply[0].got, 3);
  assert.ok(got.reply[0].back.equals(Buffer.from('hey!')));
});

test('connect_error carries the refusal under msgpack', async (t, ctx) => {
  const bad = await ctx.connectError(mp, '/', { ...withParser, auth: { token: 'not-a-jwt' } });
  assert.equal(bad.message, 'Invalid token');
  assert.equal(bad.data?.code, 'INVALID_TOKEN');
  const noRole = await ctx.connectError(mp, '/admin', withParser);
  assert.equal(noRole.message, 'Forbidden');
  assert.equal(noRole.data?.code, 'FORBIDDEN');
  const unknown = await ctx.connectError(mp, '/nowhere', withParser);
  assert.equal(unknown.message, 'Invalid namespace');
  // The same server still serves a good client.
  await ctx.connect(mp, '/', withParser);
});

test('a json-parser client cannot talk to a msgpack server (both sides must agree)', async (t, ctx) => {
  const s = ctx.socket(mp, '/');
  const closed = once(s.io, 'close');  // the server closes the session on the text CONNECT
  const [reason] = await closed;
  assert.equal(s.connected, false);
  assert.match(String(reason), /transport close/);
  await waitFor(() => /a text message under the msgpack parser/.test(mp.logText()), { what: 'the server saying why' });
});

test('broadcasts: json daemon → msgpack clients, msgpack daemon → json clients, Node server → msgpack clients', { timeout: 40000 }, async (t, ctx) => {
  const room = `r-${rnd()}`;
  const m = await ctx.connect(mp, '/', { ...withParser, userId: 'm' });
  const j = await ctx.connect(js, '/', { userId: 'j' });
  const mIn = new Inbox(m, ['news']);
  const jIn = new Inbox(j, ['news']);
  await ack(m, 'probe:join', { room });
  await ack(j, 'probe:join', { room });
  await waitSubscribed(redis, room, 2);

  // From a json client of the json daemon, with a Buffer inside.
  assert.deepEqual(await ack(j, 'probe:emit', { event: 'news', rooms: [room], args: ['from-json', { bin: Buffer.from('J') }] }), { data: true });
  const [fromJson, body] = await mIn.wait('news', (args) => args[0] === 'from-json');
  assert.equal(fromJson, 'from-json');
  assert.ok(Buffer.isBuffer(body.bin) && body.bin.equals(Buffer.from('J')), 'the Buffer arrived as one');

  // From a msgpack client of the msgpack daemon.
  assert.deepEqual(await ack(m, 'probe:emit', { event: 'news', rooms: [room], args: ['from-msgpack', Buffer.from('M')] }), { data: true });
  const got = await jIn.wait('news', (args) => args[0] === 'from-msgpack');
  assert.ok(Buffer.from(got[1]).equals(Buffer.from('M')));
  // ... and its own msgpack members got it too.
  await mIn.wait('news', (args) => args[0] === 'from-msgpack');

  // From a Node socket.io server (json parser) through @socket.io/redis-adapter.
  nodeIo.to(room).emit('news', 'from-node', Buffer.from([9, 9]), { n: 1 });
  const fromNode = await mIn.wait('news', (args) => args[0] === 'from-node');
  assert.ok(fromNode[1].equals(Buffer.from([9, 9])));
  assert.deepEqual(fromNode[2], { n: 1 });
  await jIn.wait('news', (args) => args[0] === 'from-node');
});

// Connection state recovery (on by default with Redis) records events as
// text headers and replays them: under msgpack they reach the client as msgpack.
test('connection state recovery under msgpack: offsets, and the missed events (with a Buffer) replayed', { timeout: 30000 }, async (t, ctx) => {
  const srv = await ctx.startServer({ workers: 1, extraServer: `parser msgpack;\n${redisLines(redis)}` });
  const p = await switchableProxy(srv);
  ctx.defer(() => p.close());
  const room = `rec-${rnd()}`;
  const s = ctx.track(io(p.url ?? `http://127.0.0.1:${p.port}`, {
    ...withParser, transports: ['websocket'], forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200,
    timeout: 3000, auth: { token: token('rec') },
  }));
  const hello = once(s, 'probe:hello');
  await once(s, 'connect');
  const [greeting, offset] = await hello;  // a recorded socket.emit, through the text header and back
  assert.equal(greeting, 'hi there');
  assert.equal(s._lastOffset, offset);
  await ack(s, 'probe:join', { room });
  await waitSubscribed(redis, room, 1);
  const inbox = new Inbox(s, ['missed']);
  const talker = await ctx.connect(srv, '/', { ...withParser, userId: 'talker' });
  const gone = once(s, 'disconnect');
  p.drop();
  await gone;
  await ack(talker, 'probe:emit', { rooms: [room], event: 'missed', args: [1, Buffer.from('b1')] });
  await ack(talker, 'probe:emit', { rooms: [room], event: 'missed', args: [2] });
  await once(s, 'connect', 5000);
  assert.equal(s.recovered, true);
  await inbox.wait('missed', (a) => a[0] === 2);
  assert.deepEqual(inbox.of('missed').map((a) => a[0]), [1, 2]);
  assert.ok(inbox.of('missed')[0][1].equals(Buffer.from('b1')));
});

// ------------------------------------------------------ malformed input

// A raw WebSocket with the Engine.IO open done and "/" connected in msgpack.
async function rawMsgpackWs(target) {
  const ws = rawWs(target);
  await withTimeout(ws.opened, 5000, 'WebSocket open');
  const open = await ws.nextText();
  assert.ok(open.text?.startsWith('0{'), JSON.stringify(open));
  ws.send(pack({ type: 0, nsp: '/', data: { token: token('raw-msgpack') } }));
  for (;;) {
    const msg = await ws.next();
    if (msg.text === '2') { ws.send('3'); continue; }
    assert.ok(msg.binary, `a binary CONNECT reply, got ${JSON.stringify(msg)}`);
    const p = unpack(msg.binary);
    if (p.type === 0) return ws;
    if (p.type === 4) throw new Error(`refused: ${JSON.stringify(p.data)}`);
  }
}

const malformed = {
  'not msgpack': Buffer.from('hello'),
  'cut short': pack({ type: 2, nsp: '/', data: ['x', 'y'] }).subarray(0, 10),
  'a huge array declared': Buffer.from([0xdd, 0x7f, 0xff, 0xff, 0xff]),
  'a reserved byte': Buffer.from([0xc1]),
  'trailing bytes': Buffer.concat([pack({ type: 2, nsp: '/', data: ['x'] }), Buffer.from([0xc0])]),
  'a binary type': pack({ type: 5, nsp: '/', data: ['x'] }),
  'no namespace': pack({ type: 2, data: ['x'] }),
  'event data not an array': pack({ type: 2, nsp: '/', data: 'x' }),
  'a string id': pack({ type: 2, nsp: '/', data: ['x'], id: '1' }),
  'a text message': 'not for this parser',
};

for (const [name, bytes] of Object.entries(malformed)) {
  test(`malformed msgpack (${name}) closes that connection only`, async (t, ctx) => {
    const bystander = await ctx.connect(mp, '/', withParser);
    const ws = await rawMsgpackWs(mp);
    ws.send(bytes);
    assert.ok(await closedWithin(ws, 5000), 'the connection was closed');
    assert.equal((await ack(bystander, 'probe:whoami')).data.sid, bystander.id, 'the worker serves on');
    assert.deepEqual(mp.workerPids().length, 2);
  });
}

// A proxy that sends what the client writes one byte per TCP segment.
async function segmentingProxy(targetPort) {
  const server = net.createServer((client) => {
    const up = net.connect(targetPort, '127.0.0.1');
    client.setNoDelay(true);
    up.setNoDelay(true);
    const queue = [];
    let busy = false;
    const drain = async () => {
      if (busy) return;
      busy = true;
      while (queue.length) {
        const chunk = queue.shift();
        for (let i = 0; i < chunk.length && !up.destroyed; i++) {
          up.write(chunk.subarray(i, i + 1));
          await new Promise((r) => setImmediate(r));  // one write, one segment
        }
      }
      busy = false;
    };
    client.on('data', (c) => { queue.push(c); drain(); });
    up.on('data', (c) => client.write(c));
    const close = () => { client.destroy(); up.destroy(); };
    for (const s of [client, up]) { s.on('error', close); s.on('close', close); }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  return { port, url: `http://127.0.0.1:${port}`, close: () => server.close() };
}

test('through 1-byte TCP segments: binaries arrive whole and malformed msgpack still only closes', { timeout: 40000 }, async (t, ctx) => {
  const proxy = await segmentingProxy(mp.port);
  ctx.defer(() => proxy.close());
  const s = await ctx.connect(proxy, '/', { ...withParser, timeout: 20000 });
  const blob = Buffer.alloc(3000, 0xab);
  const [back] = await new Promise((resolve, reject) => s.timeout(20000).emit('bench:echo', { blob },
    (err, ...args) => (err ? reject(err) : resolve(args))));
  assert.ok(back.blob.equals(blob));
  for (const name of ['cut short', 'a huge array declared', 'trailing bytes']) {
    const ws = await rawMsgpackWs(proxy);
    ws.send(malformed[name]);
    assert.ok(await closedWithin(ws, 10000), `${name}: closed`);
  }
  assert.equal((await ack(s, 'probe:whoami')).data.sid, s.id, 'the segmented client is still served');
});

// ------------------------------------------------------------ admin UI

// @socket.io/admin-ui's dashboard has a "msgpack" parser choice: its
// namespace goes through the server's parser like any other.
test('the Admin UI namespace speaks msgpack under parser msgpack', async (t, ctx) => {
  const HASH = '$2a$10$0AYDnleGO/R8/js8ewVwKei2HX1k8B5AYczpMgoHiUUL1fEze2SzC';  // bcrypt of "changeit"
  const srv = await ctx.startServer({
    workers: 1, modules: ['auth_jwt.so', 'admin.so'], probe: false,
    extraServer: ['parser msgpack;', 'namespace /admin-ui { auth_jwt off; }', 'admin_ui_namespace /admin-ui;',
      `admin_ui_auth basic admin ${HASH};`].join('\n'),
  });
  const s = ctx.socket(srv, '/admin-ui', { ...withParser, auth: { username: 'admin', password: 'changeit' } });
  const inbox = new Inbox(s);
  await withTimeout(new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); }),
    5000, 'the dashboard connect');
  const [sessionId] = await inbox.wait('session');
  assert.match(sessionId, /^[0-9a-f]{16}$/);
  const [config] = await inbox.wait('config');
  assert.ok(config.supportedFeatures.includes('EMIT'));
  const bad = await ctx.connectError(srv, '/admin-ui', { ...withParser, auth: { username: 'admin', password: 'nope' } });
  assert.equal(bad.message, 'invalid credentials');
});

// ------------------------------------------------------------ configuration

test('the parser directive: a bad value and a namespace block are refused with file:line', async () => {
  const dir = tmpDir();
  const port = await freePort();
  const conf = writeConf(dir, { port, extraServer: 'parser protobuf;' });
  const r = testConfig(conf);
  assert.notEqual(r.code, 0);
  const line = fs.readFileSync(conf, 'utf8').split('\n').findIndex((l) => l.includes('parser protobuf')) + 1;
  assert.match(r.stderr + r.stdout, new RegExp(`${path.basename(conf)}:${line}: unknown parser "protobuf"`));

  const conf2 = writeConf(tmpDir(), { port, extraServer: 'namespace /m { parser msgpack; }' });
  const r2 = testConfig(conf2);
  assert.notEqual(r2.code, 0);
  assert.match(r2.stderr + r2.stdout, /"parser" is not allowed here/);
  assert.equal(testConfig(writeConf(tmpDir(), { port, extraServer: 'parser json;' })).code, 0);
});
