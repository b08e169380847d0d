// A Node.js socket.io server with @socket.io/redis-adapter joins the cluster
// of a depth-realtime process (two workers) on the same Redis (issue 3): rooms
// are shared both ways, and the request/response operations work in both
// directions: fetchSockets, socketsJoin/socketsLeave, disconnectSockets,
// serverSideEmit with acks, broadcasts with acks (emitWithAck), server count.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe } from 'node:test';
import { createClient } from 'redis';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import {
  test, Scope, startServer, ack, rnd, startRedis, redisLines, waitFor, once, io, freePort, withTimeout, workerOf,
  waitSubscribed,
} from './lib/harness.mjs';

let redis;
let srv;          // depth-realtime, 2 workers
let scope;
let nodeIo;       // the Node socket.io server
let nodeHttp;
let nodeUrl;
let redisClients = [];
let ours = [];    // our clients (at least one per worker)
let theirs;       // a client of the Node server
const nodeSse = [];

before(async () => {
  redis = await startRedis();
  srv = await startServer({ workers: 2, extraServer: redisLines(redis, { extra: ['recovery_window 0;'] }) });
  scope = new Scope(null);

  const pubClient = createClient({ url: redis.url });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);
  redisClients = [pubClient, subClient];
  nodeHttp = http.createServer();
  nodeIo = new Server(nodeHttp, { adapter: createAdapter(pubClient, subClient, { requestsTimeout: 3000 }) });
  nodeIo.on('connection', (socket) => {
    socket.data = { server: 'node', userId: socket.handshake.auth.userId };
    socket.on('join', (room, cb) => { socket.join(room); cb?.(); });
  });
  nodeIo.on('probe:sse', (...args) => {
    const cb = typeof args.at(-1) === 'function' ? args.pop() : null;
    nodeSse.push(args);
    cb?.({ from: 'node', got: args });
  });
  const port = await freePort();
  await new Promise((resolve) => nodeHttp.listen(port, '127.0.0.1', resolve));
  nodeUrl = `http://127.0.0.1:${port}`;

  // Ours on both workers, theirs on the Node server.
  const workers = new Set();
  for (let i = 0; i < 20 && workers.size < 2; i++) {
    const s = await scope.connect(srv, '/', { userId: `ours${i}` });
    const { data } = await ack(s, 'probe:whoami');
    ours.push({ s, userId: data.userId });
    workers.add(await workerOf(srv, s));
  }
  assert.equal(workers.size, 2, 'our clients are on both workers');
  theirs = scope.track(io(nodeUrl, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { userId: 'theirs' } }));
  await once(theirs, 'connect');
  await waitFor(async () => (await pubClient.pubSubNumSub('socket.io-request#/#'))['socket.io-request#/#'] === 3,
    { ms: 10000, what: 'three nodes (two workers and the Node server)' });
}, { timeout: 60000 });

after(async () => {
  await scope?.cleanup();
  nodeIo?.close();
  for (const c of redisClients) await c.quit().catch(() => {});
  await srv?.stop();
  await redis?.stop();
});

const join = (s, room) => ack(s, 'probe:join', { room });
const nodeJoin = (room) => withTimeout(theirs.emitWithAck('join', room), 3000, 'node join');

describe('a Node socket.io server with @socket.io/redis-adapter in the cluster', () => {
  test('server count: both workers and the Node server', async () => {
    assert.deepEqual(await ack(ours[0].s, 'probe:serverCount'), { data: 3 });
    assert.equal(await nodeIo.of('/').adapter.serverCount(), 3);
  });

  test('rooms are shared both ways', async () => {
    const room = `shared-${rnd()}`;
    for (const o of ours) await join(o.s, room);
    await waitSubscribed(redis, room, 2);  // both workers listen on the room
    await nodeJoin(room);
    const theirsGot = once(theirs, 'from-ours');
    const oursGot = ours.map((o) => once(o.s, 'from-ours'));
    await ack(ours[0].s, 'probe:emit', { rooms: [room], event: 'from-ours', args: [1, { a: 'b' }] });
    assert.deepEqual(await theirsGot, [1, { a: 'b' }]);
    for (const got of await Promise.all(oursGot)) assert.deepEqual(got, [1, { a: 'b' }]);

    const fromNode = ours.map((o) => once(o.s, 'from-node'));
    nodeIo.to(room).emit('from-node', 'x', Buffer.from([7]));
    for (const [x, bin] of await Promise.all(fromNode)) {
      assert.equal(x, 'x');
      assert.deepEqual(Buffer.from(bin), Buffer.from([7]));
    }
    // except, from the Node side: ours[1] leaves out.
    await join(ours[1].s, `ex-${room}`);
    const w0 = once(ours[0].s, 'node-except');
    let wrong = false;
    ours[1].s.once('node-except', () => { wrong = true; });
    nodeIo.to(room).except(`ex-${room}`).emit('node-except');
    await w0;
    const fence = once(ours[1].s, 'node-fence');
    nodeIo.to(room).emit('node-fence');
    await fence;
    assert.equal(wrong, false);
  });

  test('Node\'s fetchSockets sees our sockets, and its remote sockets act on ours', async () => {
    const room = `nf-${rnd()}`;
    await join(ours[1].s, room);
    const sockets = await nodeIo.in(room).fetchSockets();
    assert.equal(sockets.length, 1);
    const [rs] = sockets;
    assert.equal(rs.id, ours[1].s.id);
    assert.ok(rs.rooms.has(room) && rs.rooms.has(rs.id));
    assert.equal(rs.data.userId, ours[1].userId);
    assert.equal(rs.handshake.auth.token !== undefined, true);
    assert.equal(typeof rs.handshake.time, 'string');
    const got = once(ours[1].s, 'to-remote');
    rs.emit('to-remote', 42);
    assert.deepEqual(await got, [42]);
    rs.join('remote-joined');
    await waitFor(async () => (await ack(ours[1].s, 'probe:whoami')).data.rooms.includes('remote-joined'),
      { what: 'remote socket join' });
    rs.leave('remote-joined');
    await waitFor(async () => !(await ack(ours[1].s, 'probe:whoami')).data.rooms.includes('remote-joined'),
      { what: 'remote socket leave' });
    const all = await nodeIo.fetchSockets();
    const ids = all.map((x) => x.id);
    for (const o of ours) assert.ok(ids.includes(o.s.id), `fetchSockets lists ${o.s.id}`);
    assert.ok(ids.includes(theirs.id));
  });

  test('Node\'s socketsJoin / socketsLeave reach our sockets', async () => {
    const room = `nsj-${rnd()}`;
    for (const o of ours) await join(o.s, room);
    nodeIo.in(room).socketsJoin(`${room}-b`);
    for (const o of ours) {
      await waitFor(async () => (await ack(o.s, 'probe:whoami')).data.rooms.includes(`${room}-b`), { what: 'join' });
    }
    nodeIo.in(room).socketsLeave(`${room}-b`);
    for (const o of ours) {
      await waitFor(async () => !(await ack(o.s, 'probe:whoami')).data.rooms.includes(`${room}-b`), { what: 'leave' });
    }
  });

  test('Node\'s serverSideEmit reaches our nodes, and our acks come back', async () => {
    for (const o of ours) await join(o.s, 'sse-watchers');
    const seen = ours.map((o) => once(o.s, 'probe:sse-received'));
    const replies = await withTimeout(nodeIo.serverSideEmitWithAck('probe:sse', 'ping', 5), 4000, 'sse acks');
    assert.deepEqual(replies, [{ from: 'depth-realtime', got: ['ping', 5] }, { from: 'depth-realtime', got: ['ping', 5] }]);
    for (const args of await Promise.all(seen)) assert.deepEqual(args, ['ping', 5]);
    nodeIo.serverSideEmit('probe:sse', 'no-ack');
    await Promise.all(ours.map((o) => once(o.s, 'probe:sse-received')));
    for (const o of ours) await ack(o.s, 'probe:leave', { room: 'sse-watchers' });
  });

  test('Node\'s emitWithAck (a broadcast with acks) collects our clients\' answers', async () => {
    const room = `nack-${rnd()}`;
    for (const o of ours) {
      await join(o.s, room);
      o.s.on('ask', (q, cb) => cb(`${o.userId}:${q}`));
    }
    await waitSubscribed(redis, room, 2);
    await nodeJoin(room);
    theirs.on('ask', (q, cb) => cb(`theirs:${q}`));
    const replies = await withTimeout(nodeIo.timeout(3000).to(room).emitWithAck('ask', 'q'), 4000, 'acks');
    assert.deepEqual(replies.sort(), [...ours.map((o) => `${o.userId}:q`), 'theirs:q'].sort());
    for (const o of ours) o.s.off('ask');
    theirs.off('ask');
  });

  test('our fetchSockets, serverSideEmit, emitWithAck and allRooms see the Node server', async () => {
    const room = `of-${rnd()}`;
    await nodeJoin(room);
    await join(ours[0].s, room);
    const f = await ack(ours[1].s, 'probe:fetch', { rooms: [room] });
    assert.equal(f.data.error, null);
    const ids = f.data.sockets.map((x) => x.id).sort();
    assert.deepEqual(ids, [theirs.id, ours[0].s.id].sort());
    assert.deepEqual(f.data.sockets.find((x) => x.id === theirs.id).data, { server: 'node', userId: 'theirs' });

    const r = await ack(ours[0].s, 'probe:serverSideEmit', { event: 'probe:sse', args: ['from-ours'], ack: true, timeoutMs: 3000 });
    assert.equal(r.data.error, null);
    const replies = r.data.replies.map((x) => x.from).sort();
    assert.deepEqual(replies, ['depth-realtime', 'node']);  // the other worker and the Node server
    assert.deepEqual(nodeSse.at(-1), ['from-ours']);

    theirs.on('q2', (x, cb) => cb(`theirs-${x}`));
    ours[0].s.on('q2', (x, cb) => cb(`ours-${x}`));
    const w = await ack(ours[1].s, 'probe:emitWithAck', { rooms: [room], event: 'q2', args: [9], timeoutMs: 3000 });
    assert.equal(w.data.timedOut, false);
    assert.deepEqual(w.data.replies.sort(), ['ours-9', 'theirs-9']);
    theirs.off('q2');
    ours[0].s.off('q2');

    const rooms = await ack(ours[0].s, 'probe:allRooms');
    assert.equal(rooms.data.error, null);
    assert.ok(rooms.data.rooms.includes(room) && rooms.data.rooms.includes(theirs.id));
  });

  test('our socketsJoin and disconnectSockets act on the Node server\'s sockets', async () => {
    const room = `oj-${rnd()}`;
    await nodeJoin(room);
    await ack(ours[0].s, 'probe:socketsJoin', { rooms: [room], join: [`${room}-x`] });
    await waitFor(async () => {
      const [s] = await nodeIo.local.in(`${room}-x`).fetchSockets();
      return s?.id === theirs.id;
    }, { what: 'Node socket joined' });
    const gone = once(theirs, 'disconnect');
    await ack(ours[0].s, 'probe:disconnectSockets', { rooms: [`${room}-x`] });
    assert.equal((await gone)[0], 'io server disconnect');
  });
});
