// A worker's link to Redis is not ready at once after it starts (a restart,
// Redis reconnecting): a client resuming its session in that moment waits
// for the link, bounded in time, instead of losing its session to a fresh
// connection. Real daemon, real redis-server, the official socket.io-client;
// the daemon under test reaches Redis through a proxy that holds its
// connections until the test lets them through.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe } from 'node:test';
import {
  test, Scope, startServer, ack, rnd, startRedis, redisLines, waitFor, once, io, token, switchableProxy, isAlive,
} from './lib/harness.mjs';

let redis;
let A;  // where the clients' sessions begin
let scope;
const extraServer = (port) => [`redis 127.0.0.1:${port};`, 'redis_node_ttl 3s;', 'recovery_window 20s;'].join('\n');

before(async () => {
  redis = await startRedis();
  A = await startServer({ workers: 1, extraServer: redisLines(redis, { extra: ['recovery_window 20s;'] }) });
  scope = new Scope(null);
}, { timeout: 60000 });

after(async () => {
  await scope?.cleanup();
  await A?.stop();
  await redis?.stop();
});

// A TCP proxy to Redis that accepts connections but passes nothing either
// way until release(): a Redis the daemon reaches but that has not answered yet.
function heldRedis() {
  const held = new Set();
  const conns = new Set();
  let released = false;
  const pass = (client) => {
    if (client.destroyed) return;
    const up = net.connect(redis.port, '127.0.0.1');
    conns.add(up);
    client.pipe(up);
    up.pipe(client);
    const close = () => { client.destroy(); up.destroy(); };
    up.on('error', close);
    up.on('close', close);
  };
  const p = {
    port: 0,
    server: net.createServer((client) => {
      conns.add(client);
      client.on('error', () => client.destroy());
      client.on('close', () => held.delete(client));
      if (released) pass(client);
      else held.add(client);
    }),
    get waiting() { return held.size; },
    release() {
      released = true;
      for (const c of held) pass(c);
      held.clear();
    },
    close() { for (const c of conns) c.destroy(); p.server.close(); },
  };
  return new Promise((resolve) => p.server.listen(0, '127.0.0.1', () => { p.port = p.server.address().port; resolve(p); }));
}

// A client of A through `p` with its session stored in Redis: an offset (the
// probe's greeting is recorded) and a room; it reconnects when the test says.
async function clientWithSession(p, userId) {
  const s = io(`http://127.0.0.1:${p.port}/`, {
    transports: ['websocket'], forceNew: true, reconnection: false, timeout: 10000, auth: { token: token(userId) },
  });
  scope.track(s);
  const hello = once(s, 'probe:hello');
  await once(s, 'connect');
  await hello;
  const room = `late-${rnd()}`;
  await ack(s, 'probe:join', { room });
  const pid = s._pid;
  await waitFor(async () => {
    const text = (await redis.cli('GET', `depth:recovery:session:${pid}`)).trim();
    return text && JSON.parse(text).rooms?.includes(room);
  }, { what: `the session of ${userId} with its room` });
  return { s, room, id: s.id, userId };
}

// Sends `c`'s CONNECT (with its pid and offset) to the server behind `p`, and
// resolves once the server has handled it: a CONNECT to a namespace that does
// not exist, sent after it on the same WebSocket, has been refused.
async function resume(c, p, server) {
  const gone = once(c.s, 'disconnect');
  p.target = server;
  p.drop();
  await gone;
  c.s.connect();
  await once(c.s.io, 'open');
  const probe = c.s.io.socket('/no-such-namespace');
  const [err] = await once(probe, 'connect_error');
  assert.equal(err.message, 'Invalid namespace');
  probe.disconnect();
}

describe('recovery while the Redis link is not ready', () => {
  test('a client resuming before the link is up waits for it and gets its session back', { timeout: 60000 }, async (t, ctx) => {
    const held = await heldRedis();
    ctx.defer(() => held.close());
    const p = await switchableProxy(A);
    ctx.defer(() => p.close());
    const p2 = await switchableProxy(A);
    ctx.defer(() => p2.close());
    const c = await clientWithSession(p, 'late-1');
    const quitter = await clientWithSession(p2, 'late-quitter');
    const B = await ctx.startServer({ workers: 1, extraServer: extraServer(held.port) });
    const worker = B.workerPids()[0];
    await waitFor(() => held.waiting >= 1, { what: 'the worker to reach the held Redis' });
    // One waits and goes away before Redis answers: harmless.
    await resume(quitter, p2, B);
    assert.equal(quitter.s.connected, false, 'no answer while the link is not ready');
    quitter.s.disconnect();  // its last socket: the connection closes
    await resume(c, p, B);
    assert.equal(c.s.connected, false, 'its CONNECT waits for the link');
    const back = once(c.s, 'connect', 10000);
    held.release();
    await back;
    assert.equal(c.s.recovered, true, 'recovered');
    assert.equal(c.s.id, c.id, 'its id kept');
    const who = await ack(c.s, 'probe:whoami');
    assert.ok(who.data.rooms.includes(c.room), `still in ${c.room}: ${who.data.rooms}`);
    assert.equal(who.data.userId, 'late-1');
    assert.ok(isAlive(worker), 'the worker lives on');
    assert.deepEqual(B.workerPids(), [worker]);
  });

  test('a Redis that does not come in time: the client connects fresh, without hanging', { timeout: 60000 }, async (t, ctx) => {
    const held = await heldRedis();
    ctx.defer(() => held.close());
    const p = await switchableProxy(A);
    ctx.defer(() => p.close());
    const c = await clientWithSession(p, 'late-2');
    const B = await ctx.startServer({ workers: 1, extraServer: extraServer(held.port) });
    await waitFor(() => held.waiting >= 1, { what: 'the worker to reach the held Redis' });
    const back = once(c.s, 'connect', 10000);
    await resume(c, p, B);
    await back;
    assert.equal(c.s.recovered, false, 'a fresh connection');
    assert.notEqual(c.s.id, c.id);
    await ack(c.s, 'probe:whoami');
  });
});
