// One cluster through Redis (issue 3): two depth-realtime processes with two
// workers each on one redis-server. Every worker is a node: broadcasts from
// any client reach every member of the room exactly once wherever it is
// connected; the npm redis-emitter reaches our sockets; presence, fetchSockets,
// socketsJoin/Leave, disconnectSockets, serverSideEmit and broadcasts with acks
// work across the whole cluster; messages on Redis are those of
// @socket.io/redis-adapter.
//
// "Did not receive" is checked without sleeping, as in rooms.test.mjs: after
// the broadcast under test the same sender broadcasts a fence to the whole
// namespace; Redis delivers one publisher's messages in order, so a client
// that has the fence has everything sent to it before.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { createClient } from 'redis';
import { Emitter } from '@socket.io/redis-emitter';
import notepack from 'notepack.io';
import {
  test, Scope, startServer, ack, Inbox, workerOf, rnd, startRedis, redisLines, waitFor, request, once, waitSubscribed,
} from './lib/harness.mjs';

let redis;
let servers = [];
let scope;
let everyone = [];   // {s, userId, inbox, server (index), worker (pid)}
let byWorker = new Map();
let pub;             // a node-redis client for the emitter and raw checks

// Connects clients alternately to both processes until each of the four
// workers serves at least `per` of them.
async function spread(per = 2, max = 60) {
  for (let i = 0; i < max; i++) {
    const server = i % 2;
    const srv = servers[server];
    const userId = `u${i}`;
    const s = await scope.connect(srv, '/', { userId });
    const c = { s, userId, inbox: new Inbox(s), server, worker: await workerOf(srv, s) };
    everyone.push(c);
    if (!byWorker.has(c.worker)) byWorker.set(c.worker, []);
    byWorker.get(c.worker).push(c);
    const lists = [...byWorker.values()];
    if (lists.length >= 4 && lists.every((l) => l.length >= per)) return;
  }
  throw new Error(`clients per worker after ${max}: ${[...byWorker].map(([w, l]) => `${w}:${l.length}`).join(' ')}`);
}

// One client per worker: a, b on process 0; c, d on process 1.
let a; let b; let c; let d;

before(async () => {
  redis = await startRedis();
  const extraServer = redisLines(redis);
  servers = [await startServer({ workers: 2, extraServer }), await startServer({ workers: 2, extraServer })];
  scope = new Scope(null);
  await spread(2);
  const workers = [...byWorker.keys()];
  const first = (srvIndex, n) => workers.filter((w) => byWorker.get(w)[0].server === srvIndex)[n];
  [a, b] = [byWorker.get(first(0, 0))[0], byWorker.get(first(0, 1))[0]];
  [c, d] = [byWorker.get(first(1, 0))[0], byWorker.get(first(1, 1))[0]];
  pub = createClient({ url: redis.url });
  await pub.connect();
  // Every node must be subscribed before broadcasts are tested.
  await waitFor(async () => (await pub.pubSubNumSub('socket.io-request#/#'))['socket.io-request#/#'] === 4,
    { ms: 10000, what: 'four nodes subscribed' });
}, { timeout: 60000 });

after(async () => {
  await pub?.quit().catch(() => {});
  await scope?.cleanup();
  for (const srv of servers) await srv.stop();
  await redis?.stop();
});

// Members per room and worker, so that a join waits until every worker with
// members listens on the room's channel (subscriptions are asynchronous).
const members = new Map();
const join = async (cl, room) => {
  const r = await ack(cl.s, 'probe:join', { room });
  assert.ok(r.data.rooms.includes(room), `join ${room}: ${JSON.stringify(r)}`);
  if (!members.has(room)) members.set(room, new Map());
  const m = members.get(room);
  m.set(cl.worker, (m.get(cl.worker) ?? 0) + 1);
  await waitSubscribed(redis, room, m.size);
};
const leave = async (cl, room) => {
  const m = members.get(room);
  if (m?.has(cl.worker)) {
    m.set(cl.worker, m.get(cl.worker) - 1);
    if (!m.get(cl.worker)) m.delete(cl.worker);
  }
  return ack(cl.s, 'probe:leave', { room });
};

// Broadcast from `sender`, then a fence; returns what each client got of the event.
async function broadcast(sender, spec) {
  const event = spec.event ?? `ev-${rnd()}`;
  for (const cl of everyone) cl.inbox.clear();
  assert.deepEqual(await ack(sender.s, 'probe:emit', { ...spec, event }), { data: true });
  const tag = rnd();
  const waits = everyone.map((cl) => cl.inbox.wait('fence', (x) => x[0] === tag, 5000));
  assert.deepEqual(await ack(sender.s, 'probe:emit', { rooms: [], event: 'fence', args: [tag] }), { data: true });
  await Promise.all(waits);
  return new Map(everyone.map((cl) => [cl, cl.inbox.of(event)]));
}

// With connection state recovery on (the default with Redis) recordable
// events carry their offset as a last string argument.
function withoutOffset(cl, args) {
  assert.ok(cl.s._pid, 'recovery is on: the CONNECT reply carried a pid');
  assert.equal(typeof args.at(-1), 'string', `an offset ends ${JSON.stringify(args)}`);
  return args.slice(0, -1);
}

function expectOnly(got, expected, args, { offset = true } = {}) {
  for (const [cl, list] of got) {
    const want = expected.includes(cl) ? 1 : 0;
    assert.equal(list.length, want,
      `${cl.userId} (process ${cl.server}, worker ${cl.worker}) received ${list.length} time(s), expected ${want}`);
    if (want && args) assert.deepEqual(offset ? withoutOffset(cl, list[0]) : list[0], args);
  }
}

describe('two processes, two workers each, one Redis', () => {
  test('the clients are spread over the four workers of both processes', async () => {
    assert.equal(byWorker.size, 4);
    for (const [cl, srv] of [[a, 0], [b, 0], [c, 1], [d, 1]]) assert.equal(cl.server, srv);
    assert.equal(new Set([a.worker, b.worker, c.worker, d.worker]).size, 4);
    for (const srv of servers) {
      const r = await request(srv, { path: '/readyz' });
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.text), { status: 'ready' });
    }
  });

  test('every worker is a node: the server count is 4', async () => {
    for (const cl of [a, d]) assert.deepEqual(await ack(cl.s, 'probe:serverCount'), { data: 4 });
  });

  test('to the whole namespace: every client of every worker gets it once', async () => {
    for (const sender of [a, c]) {
      const got = await broadcast(sender, { args: ['all', 1] });
      expectOnly(got, everyone, ['all', 1]);
    }
  });

  test('to one room: its members on all four workers get it once, nobody else', async () => {
    const room = `room-${rnd()}`;
    const members = [a, b, c, d, byWorker.get(c.worker)[1]];
    for (const m of members) await join(m, room);
    for (const sender of [a, d, everyone.find((x) => !members.includes(x))]) {
      expectOnly(await broadcast(sender, { rooms: [room], args: [{ x: 1 }] }), members, [{ x: 1 }]);
    }
    for (const m of members) await leave(m, room);
    expectOnly(await broadcast(a, { rooms: [room], args: [] }), []);
  });

  test('to several rooms: each socket in any of them gets it exactly once', async () => {
    const r1 = `r1-${rnd()}`;
    const r2 = `r2-${rnd()}`;
    for (const m of [a, c]) await join(m, r1);
    for (const m of [b, c, d]) await join(m, r2);  // c is in both
    expectOnly(await broadcast(b, { rooms: [r1, r2], args: ['multi'] }), [a, b, c, d], ['multi']);
    for (const m of [a, c]) await leave(m, r1);
    for (const m of [b, c, d]) await leave(m, r2);
  });

  test('except: the whole namespace minus the members of a room, on every node', async () => {
    const room = `ex-${rnd()}`;
    for (const m of [b, d]) await join(m, room);
    const got = await broadcast(a, { except: [room], args: ['except'] });
    expectOnly(got, everyone.filter((x) => x !== b && x !== d), ['except']);
    for (const m of [b, d]) await leave(m, room);
  });

  test('all but the sender (socket.broadcast) and to a room but the sender (socket.to)', async () => {
    expectOnly(await broadcast(c, { excludeSelf: true, args: ['others'] }), everyone.filter((x) => x !== c), ['others']);
    const room = `to-${rnd()}`;
    for (const m of [a, b, c, d]) await join(m, room);
    expectOnly(await broadcast(b, { rooms: [room], excludeSelf: true, args: [] }), [a, c, d]);
    for (const m of [a, b, c, d]) await leave(m, room);
  });

  test('volatile broadcasts cross processes too (idle clients are writable)', async () => {
    expectOnly(await broadcast(d, { volatile: true, args: ['vol'] }), everyone, ['vol'], { offset: false });
  });

  test('binary arguments cross processes as binary', async () => {
    const got = await broadcast(a, { rooms: [d.s.id], args: [Buffer.from([1, 2, 3]), { nested: Buffer.from([255]) }] });
    const [list] = [got.get(d)];
    assert.equal(list.length, 1);
    assert.equal(list[0].length, 3);  // the two arguments and the offset
    assert.deepEqual(Buffer.from(list[0][0]), Buffer.from([1, 2, 3]));
    assert.deepEqual(Buffer.from(list[0][1].nested), Buffer.from([255]));
  });

  test('on Redis: the messages of @socket.io/redis-adapter, on the room channel for one room', async () => {
    const sub = pub.duplicate();
    await sub.connect();
    const seen = [];
    await sub.pSubscribe('socket.io#/#*', (msg, channel) => seen.push({ channel: channel.toString(), msg: notepack.decode(msg) }), true);
    try {
      const room = `wire-${rnd()}`;
      await join(c, room);
      await ack(a.s, 'probe:emit', { rooms: [room], event: 'wire', args: ['x', 1] });
      await ack(a.s, 'probe:emit', { except: [room], excludeSelf: true, event: 'wire2', args: [] });
      await waitFor(() => seen.length >= 2, { what: 'two published messages' });
      const [one, two] = seen;
      assert.equal(one.channel, `socket.io#/#${room}#`);
      assert.equal(typeof one.msg[0], 'string');
      const offset = one.msg[1].data.pop();  // recovery on: the offset travels in the data
      assert.match(offset, /^[0-9A-Za-z_-]+\.[0-9A-Za-z_-]+$/);
      assert.deepEqual(one.msg.slice(1), [{ type: 2, data: ['wire', 'x', 1], nsp: '/' }, { rooms: [room], except: [], flags: {} }]);
      assert.equal(two.channel, 'socket.io#/#');
      assert.deepEqual(two.msg[2], { rooms: [], except: [room, a.s.id], flags: {} });
      await leave(c, room);
    } finally {
      await sub.quit();
    }
  });

  test('subscriptions: one pattern per namespace, no channel per room, user or socket', async () => {
    const room = `sub-${rnd()}`;
    const numsub = async (channel) => (await pub.pubSubNumSub(channel))[channel];
    const roomChannels = async () => (await pub.pubSubChannels('socket.io#*')).length;
    const before = await roomChannels();
    await join(a, room);
    await join(byWorker.get(a.worker)[1], room);
    await join(d, room);
    // Nothing per room or socket, however many join: only the namespaces'.
    assert.equal(await numsub(`socket.io#/#${room}#`), 0);
    assert.equal(await numsub(`socket.io#/#${c.s.id}#`), 0);
    assert.equal(await roomChannels(), before);
    assert.equal(before, 0);
    assert.ok(Number(await redis.cli('PUBSUB', 'NUMPAT')) >= 1);
    // And a broadcast to the room still reaches its members on both processes.
    expectOnly(await broadcast(c, { rooms: [room] }), [a, byWorker.get(a.worker)[1], d]);
    await leave(a, room);
    await leave(byWorker.get(a.worker)[1], room);
    await leave(d, room);
  });

  test('the npm redis-emitter reaches user rooms, rooms and the namespace on both processes', async () => {
    const emitter = new Emitter(pub);
    // User "multi" connected to both processes.
    const m0 = { s: await scope.connect(servers[0], '/', { userId: 'multi' }) };
    const m1 = { s: await scope.connect(servers[1], '/', { userId: 'multi' }) };
    const chat = await scope.connect(servers[1], '/chat', { userId: 'multi' });
    const w0 = once(m0.s, 'private:message');
    const w1 = once(m1.s, 'private:message');
    // No subscription per room: the namespace's pattern was there before they joined.
    emitter.to('user:multi').emit('private:message', { text: 'hi', n: 1 });
    assert.deepEqual(await w0, [{ text: 'hi', n: 1 }]);
    assert.deepEqual(await w1, [{ text: 'hi', n: 1 }]);
    const wc = once(chat, 'em-chat');
    emitter.of('/chat').emit('em-chat', Buffer.from([10, 11]));
    const [bin] = await wc;
    assert.deepEqual(Buffer.from(bin), Buffer.from([10, 11]));
    const waits = everyone.map((cl) => cl.inbox.wait('em-all', () => true));
    emitter.emit('em-all', 'x');
    await Promise.all(waits);
    // socketsJoin from the emitter reaches our sockets on every node.
    emitter.in('user:multi').socketsJoin('joined-by-emitter');
    await waitFor(async () => (await ack(m1.s, 'probe:whoami')).data.rooms.includes('joined-by-emitter'),
      { what: 'emitter socketsJoin' });
    assert.ok((await ack(m0.s, 'probe:whoami')).data.rooms.includes('joined-by-emitter'));
    emitter.in('user:multi').disconnectSockets();
    await Promise.all([once(m0.s, 'disconnect'), once(m1.s, 'disconnect')]);
  });

  test('presence: who is in a room, for the whole cluster, from any node', async () => {
    const room = `project:${rnd()}`;
    for (const m of [a, c, d]) await join(m, room);
    for (const asker of [b, d]) {
      const r = await ack(asker.s, 'probe:presence', { room });
      assert.equal(r.data.error, null);
      const got = r.data.members.map((m) => `${m.userId}/${m.socketId}`).sort();
      assert.deepEqual(got, [a, c, d].map((m) => `${m.userId}/${m.s.id}`).sort());
      assert.equal(new Set(r.data.members.map((m) => m.node)).size, 3);
    }
    for (const m of [a, c]) await leave(m, room);
    const r = await ack(b.s, 'probe:presence', { room });
    assert.deepEqual(r.data.members.map((m) => m.userId), [d.userId]);
    await leave(d, room);
  });

  test('fetchSockets sees the sockets of every node', async () => {
    const room = `fetch-${rnd()}`;
    for (const m of [b, c, d]) await join(m, room);
    const r = await ack(a.s, 'probe:fetch', { rooms: [room] });
    assert.equal(r.data.error, null);
    const ids = r.data.sockets.map((x) => x.id).sort();
    assert.deepEqual(ids, [b, c, d].map((m) => m.s.id).sort());
    const dd = r.data.sockets.find((x) => x.id === d.s.id);
    assert.ok(dd.rooms.includes(room) && dd.rooms.includes(d.s.id));
    assert.equal(dd.data.userId, d.userId);
    const all = await ack(c.s, 'probe:fetch', {});
    assert.ok(all.data.sockets.length >= everyone.length - 2);
    for (const m of [b, c, d]) await leave(m, room);
  });

  test('socketsJoin and socketsLeave act on every node', async () => {
    const src = `src-${rnd()}`;
    const dst = `dst-${rnd()}`;
    for (const m of [b, c, d]) await join(m, src);
    assert.deepEqual(await ack(a.s, 'probe:socketsJoin', { rooms: [src], join: [dst] }), { data: true });
    // Each node applies the request when it reads it: wait for every member.
    for (const m of [b, c, d]) {
      await waitFor(async () => (await ack(m.s, 'probe:whoami')).data.rooms.includes(dst), { what: `remote join of ${m.userId}` });
    }
    await waitSubscribed(redis, dst, new Set([b, c, d].map((m) => m.worker)).size);
    expectOnly(await broadcast(a, { rooms: [dst], args: [] }), [b, c, d]);
    await ack(c.s, 'probe:socketsLeave', { rooms: [dst], leave: [dst] });
    for (const m of [b, c, d]) {
      await waitFor(async () => !(await ack(m.s, 'probe:whoami')).data.rooms.includes(dst), { what: `remote leave of ${m.userId}` });
    }
    expectOnly(await broadcast(a, { rooms: [dst], args: [] }), []);
    for (const m of [b, c, d]) await leave(m, src);
  });

  test('serverSideEmit: the other nodes run the handler and answer the ack', async () => {
    const watchers = [b, c, d];
    for (const m of watchers) await join(m, 'sse-watchers');
    const waits = watchers.map((m) => once(m.s, 'probe:sse-received'));
    const r = await ack(a.s, 'probe:serverSideEmit', { event: 'probe:sse', args: ['hello', 2], ack: true });
    assert.equal(r.data.error, null);
    assert.equal(r.data.replies.length, 3);  // the three other workers
    for (const reply of r.data.replies) assert.deepEqual(reply, { from: 'depth-realtime', got: ['hello', 2] });
    for (const args of await Promise.all(waits)) assert.deepEqual(args, ['hello', 2]);
    for (const m of watchers) await leave(m, 'sse-watchers');
  });

  test('broadcast with acks across processes collects every client\'s answer', async () => {
    const room = `acks-${rnd()}`;
    const members = [a, b, c, d];
    for (const m of members) {
      await join(m, room);
      m.s.on('question', (q, cb) => cb(`${m.userId}:${q}`));
    }
    const r = await ack(b.s, 'probe:emitWithAck', { rooms: [room], event: 'question', args: ['q1'], timeoutMs: 3000 });
    assert.equal(r.data.timedOut, false);
    assert.deepEqual(r.data.replies.sort(), members.map((m) => `${m.userId}:q1`).sort());
    for (const m of members) { m.s.off('question'); await leave(m, room); }
  });

  test('disconnectSockets reaches every node', async () => {
    const room = `kick-${rnd()}`;
    const victims = [b, d];
    for (const m of victims) await join(m, room);
    const gone = victims.map((m) => once(m.s, 'disconnect'));
    await ack(a.s, 'probe:disconnectSockets', { rooms: [room] });
    for (const [reason] of await Promise.all(gone)) assert.equal(reason, 'io server disconnect');
    everyone = everyone.filter((x) => !victims.includes(x));
  });
});
