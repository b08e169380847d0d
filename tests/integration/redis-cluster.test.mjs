// Redis Cluster (issue 14, part 2): `redis cluster=HOST:PORT,...` routes each
// command to the master of its key's slot (CLUSTER SLOTS, MOVED, ASK), and
// broadcasts go over sharded Pub/Sub in the format of @socket.io/redis-adapter's
// createShardedAdapter. A real 3-master cluster on loopback, two daemon
// processes, and a Node socket.io server with the sharded adapter.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe } from 'node:test';
import { createCluster } from 'redis';
import { Server } from 'socket.io';
import { createShardedAdapter } from '@socket.io/redis-adapter';
import { Emitter } from '@socket.io/redis-emitter';
import {
  test, Scope, startServer, ack, rnd, waitFor, once, io, freePort, withTimeout, request, token, tmpDir,
  writeConf, testConfig, switchableProxy, sleep,
} from './lib/harness.mjs';
import { ChatTraffic } from './lib/chat-traffic.mjs';
import { startClusterTopology, slotOf, cli } from './lib/redis-topology.mjs';

const MODULES = ['auth_jwt.so', 'chat.so', 'projects.so', 'notifications.so', 'ratelimit.so', 'api.so'];
const API_KEY = 'cluster-test-key';

let cl;           // the Redis Cluster
let A;            // depth-realtime, 2 workers
let B;            // depth-realtime, 2 workers
let scope;
let db;           // node-redis cluster client
let nodeIo;       // a Node socket.io server with the sharded adapter
let nodeHttp;
let nodeUrl;
let nodeClients = [];

const readyz = async (srv) => (await request(srv, { path: '/readyz' })).status;
const redisUp = async (srv) => Number(/^redis_up (-?\d+)/m.exec((await request(srv, { path: '/metrics' })).text)?.[1] ?? 0);
const chatSocket = (ctx, srv, userId, conversations) =>
  ctx.connect(srv, '/chat', { auth: { token: token(userId, { conversations }) } });

async function startDaemon(extra = []) {
  const srv = await startServer({
    workers: 2, modules: MODULES,
    extraServer: [cl.directive(), 'redis_node_ttl 3s;', 'redis_connect_timeout 1s;', `api_key ${API_KEY};`,
      'namespace /projects;', 'namespace /notifications;', ...extra]
      .join('\n'),
  });
  await waitFor(async () => (await readyz(srv)) === 200 && (await redisUp(srv)) === 2,
    { ms: 15000, what: `${srv.port}: both workers on the cluster` });
  return srv;
}

before(async () => {
  cl = await startClusterTopology();
  [A, B] = await Promise.all([startDaemon(), startDaemon()]);
  scope = new Scope(null);
  db = createCluster({ rootNodes: cl.ports.map((p) => ({ url: `redis://127.0.0.1:${p}` })) });
  await db.connect();

  const pub = createCluster({ rootNodes: [{ url: `redis://127.0.0.1:${cl.ports[0]}` }] });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  nodeClients = [pub, sub];
  nodeHttp = http.createServer();
  nodeIo = new Server(nodeHttp, { adapter: createShardedAdapter(pub, sub) });
  nodeIo.on('connection', (socket) => {
    socket.data = { server: 'node', userId: socket.handshake.auth.userId };
    socket.on('join', (room, cb) => { socket.join(room); cb?.(); });
  });
  nodeIo.of('/chat').on('connection', (socket) => {
    socket.data = { server: 'node', userId: socket.handshake.auth.userId };
    socket.on('join', (room, cb) => { socket.join(room); cb?.(); });
  });
  const port = await freePort();
  await new Promise((resolve) => nodeHttp.listen(port, '127.0.0.1', resolve));
  nodeUrl = `http://127.0.0.1:${port}`;
}, { timeout: 90000 });

after(async () => {
  await scope?.cleanup();
  nodeIo?.close();
  for (const c of nodeClients) await c.quit().catch(() => {});
  await db?.quit().catch(() => {});
  await A?.stop();
  await B?.stop();
  await cl?.stop();
});

// Subscribers of a shard channel, on the master of its slot.
const shardNumSub = async (channel) => {
  const out = await cl.cli(channel, 'PUBSUB', 'SHARDNUMSUB', channel);
  return Number(out.trim().split('\n')[1] ?? 0);
};

describe('Redis Cluster', () => {
  test('-t: cluster= is accepted; db= and redis_wait_replicas are refused with it', async () => {
    const dir = tmpDir();
    const port = await freePort();
    const conf = (redis) => writeConf(dir, { port, modules: ['auth_jwt.so', 'chat.so'], probe: false, extraServer: redis });
    let r = testConfig(conf('redis cluster=127.0.0.1:7000,127.0.0.1:7001 password=x;'));
    assert.equal(r.code, 0, r.stderr);
    r = testConfig(conf('redis cluster=127.0.0.1:7000 db=2;'));
    assert.match(r.stderr, /depth-realtime\.conf:\d+: invalid parameter "db=2", expected password=SECRET \(a Redis Cluster has database 0 only\)/);
    r = testConfig(conf('redis cluster=127.0.0.1:7000;\nredis_wait_replicas 1 500ms;'));
    assert.match(r.stderr, /redis_wait_replicas is not supported with "redis cluster=\.\.\." yet/);
    r = testConfig(conf('redis cluster=,127.0.0.1:7000;'));
    assert.match(r.stderr, /invalid cluster address ""/);
  });

  test('no seed answers: the daemon serves, /readyz is 503, stores are refused with "Redis unavailable"', async (t, ctx) => {
    const ports = [await freePort(), await freePort()];
    const srv = await ctx.startServer({
      workers: 1, modules: MODULES, probe: false,
      extraServer: `redis cluster=${ports.map((p) => `127.0.0.1:${p}`).join(',')};\nredis_connect_timeout 1s;`,
    });
    assert.equal(await readyz(srv), 503);
    await waitFor(() => new RegExp(`redis: cannot connect the commands connection to 127\\.0\\.0\\.1:${ports[0]}`).test(srv.logText()),
      { what: 'the log line' });
    const s = await chatSocket(ctx, srv, 'lonely', ['c1']);
    const r = await ack(s, 'chat:message', { conversationId: 'c1', content: 'hi' });
    assert.equal(r.error?.code, 'SOCKET_ERROR', JSON.stringify(r));
    assert.match(r.error.details, /Redis unavailable/);
  });

  test('the daemons map the slots and subscribe on the shards', async () => {
    assert.match(A.logText(), /redis: cluster of 3 master\(s\) mapped/);
    // Every worker of both daemons (4 nodes) and the Node server on the
    // namespace's shard channel, and each on its own response channel.
    await waitFor(async () => (await shardNumSub('socket.io#/chat#')) === 5, { ms: 10000, what: '5 servers on socket.io#/chat#' });
    const uids = [...new Set([A, B].flatMap((srv) => [...srv.logText().matchAll(/cluster: node (\S+), redis cluster/g)].map((m) => m[1])))];
    assert.equal(uids.length, 4);
    for (const uid of uids) assert.equal(await shardNumSub(`socket.io#/chat#${uid}#`), 1, uid);
  });

  test('chat across two daemons: acked messages reach every member, stored on the conversation\'s slot', { timeout: 60000 }, async (t, ctx) => {
    const conv = `c-${rnd()}`;
    const traffic = new ChatTraffic(ctx, conv, { every: 30 });
    for (let i = 0; i < 6; i++) await traffic.add(i % 2 ? B : A, `u${i}`);
    traffic.start();
    await waitFor(() => traffic.acked.size >= 60, { ms: 20000, what: '60 messages acked' });
    await traffic.stop();
    await traffic.assertDelivered?.();
    // Every acked message reached every member (they were connected all along).
    await waitFor(() => traffic.members.every((m) => [...traffic.acked.keys()].every((id) => m.got.has(id))),
      { ms: 5000, what: 'every acked message at every member' });
    for (const m of traffic.members) for (const id of traffic.acked.keys()) assert.equal(m.got.get(id), 1, `${m.userId} got ${id} once`);
    // Stored in the conversation's stream, whose keys share one slot.
    const key = `depth:chat:{${conv}}`;
    assert.equal(await db.xLen(key), traffic.acked.size);
    assert.equal(slotOf(`depth:chat:{${conv}}:read`), slotOf(key));
    // The room's own shard channel: both daemons' workers that hold members.
    assert.ok(await shardNumSub(`socket.io#/chat#conversation:${conv}#`) >= 2);
  });

  test('chat history, read markers and an idempotent retry over the cluster', async (t, ctx) => {
    const conv = `h-${rnd()}`;
    const a = await chatSocket(ctx, A, 'ha', [conv]);
    const b = await chatSocket(ctx, B, 'hb', [conv]);
    for (const s of [a, b]) assert.ok((await ack(s, 'chat:join', { conversationId: conv })).data);
    const got = once(b, 'chat:message');
    const first = await ack(a, 'chat:message', { conversationId: conv, content: 'one', clientMessageId: 'k1' });
    assert.ok(first.data?.id, JSON.stringify(first));
    assert.equal((await got)[0].content, 'one');
    const again = await ack(a, 'chat:message', { conversationId: conv, content: 'one', clientMessageId: 'k1' });
    assert.equal(again.data.id, first.data.id, 'the retry is the stored message');
    const hist = await ack(b, 'chat:history', { conversationId: conv });
    assert.deepEqual(hist.data.map((m) => m.content), ['one'], JSON.stringify(hist));
    assert.ok((await ack(b, 'chat:read', { conversationId: conv, messageId: first.data.id })).data);
    assert.equal(await db.hGet(`depth:chat:{${conv}}:read`, 'hb'), first.data.id);
  });

  test('a Node server with createShardedAdapter exchanges broadcasts, fetchSockets and serverSideEmit with the daemons', { timeout: 30000 }, async (t, ctx) => {
    const conv = `n-${rnd()}`;
    const room = `conversation:${conv}`;
    const a = await chatSocket(ctx, A, 'na', [conv]);
    const b = await chatSocket(ctx, B, 'nb', [conv]);
    for (const s of [a, b]) assert.ok((await ack(s, 'chat:join', { conversationId: conv })).data);
    const theirs = ctx.track(io(`${nodeUrl}/chat`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { userId: 'theirs' } }));
    await once(theirs, 'connect');
    await withTimeout(theirs.emitWithAck('join', room), 3000, 'node join');
    // The room's shard channel: a worker of each daemon, and the Node server.
    await waitFor(async () => (await shardNumSub(`socket.io#/chat#${room}#`)) === 3, { what: '3 servers on the room' });
    // The Node server counts itself and our four workers.
    await waitFor(async () => (await nodeIo.of('/chat').adapter.serverCount()) === 5, { ms: 10000, what: '5 servers' });

    // Ours -> theirs: a chat message reaches the Node server's client.
    const theirsGot = once(theirs, 'chat:message');
    const sent = await ack(a, 'chat:message', { conversationId: conv, content: 'to node' });
    assert.ok(sent.data?.id);
    assert.equal((await theirsGot)[0].content, 'to node');

    // Theirs -> ours, with binary.
    const oursGot = [once(a, 'from-node'), once(b, 'from-node')];
    nodeIo.of('/chat').to(room).emit('from-node', 'x', Buffer.from([7, 8]));
    for (const [x, bin] of await Promise.all(oursGot)) {
      assert.equal(x, 'x');
      assert.deepEqual(Buffer.from(bin), Buffer.from([7, 8]));
    }

    // Node's fetchSockets sees our sockets in the room, with their data.
    const sockets = await nodeIo.of('/chat').in(room).fetchSockets();
    assert.deepEqual(sockets.map((s) => s.id).sort(), [a.id, b.id, theirs.id].sort());
    const remote = sockets.find((s) => s.id === b.id);
    assert.ok(remote.rooms.has(room) && remote.rooms.has(b.id), JSON.stringify([...remote.rooms]));
    assert.equal(remote.data.userId, 'nb');
    // ... and acts on them: socketsJoin through the cluster.
    remote.join(`extra-${conv}`);
    const extraGot = once(b, 'extra');
    await waitFor(async () => (await shardNumSub(`socket.io#/chat#extra-${conv}#`)) >= 1, { what: 'the joined room subscribed' });
    nodeIo.of('/chat').to(`extra-${conv}`).emit('extra', 1);
    assert.deepEqual(await extraGot, [1]);

    // serverSideEmit, daemon -> daemon and Node: the HTTP API of A disconnects
    // a user's sockets everywhere (the apps' depth:disconnect-user event).
    const nodeHeard = new Promise((resolve) => nodeIo.on('depth:disconnect-user', resolve));
    const bGone = once(b, 'disconnect');
    const r = await request(A, {
      method: 'POST', path: '/api/v1/disconnect',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ userId: 'nb' }),
    });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual((await bGone).slice(0, 1), ['io server disconnect']);
    assert.deepEqual(await withTimeout(nodeHeard, 5000, 'the Node server heard it'), { userId: 'nb', close: false });
    // Node -> daemons: the same event from the Node server.
    const aGone = once(a, 'disconnect');
    nodeIo.serverSideEmit('depth:disconnect-user', { userId: 'na', close: true });
    assert.deepEqual((await aGone).slice(0, 1), ['io server disconnect']);
  });

  test('@socket.io/redis-emitter with a cluster client reaches the daemons\' sockets (a classic PUBLISH)', async (t, ctx) => {
    const conv = `e-${rnd()}`;
    const a = await chatSocket(ctx, A, 'ea', [conv]);
    const b = await chatSocket(ctx, B, 'eb', [conv]);
    for (const s of [a, b]) assert.ok((await ack(s, 'chat:join', { conversationId: conv })).data);
    await waitFor(async () => (await shardNumSub(`socket.io#/chat#conversation:${conv}#`)) >= 2, { what: 'the room on both daemons' });
    const got = [once(a, 'from-emitter'), once(b, 'from-emitter')];
    new Emitter(db).of('/chat').to(`conversation:${conv}`).emit('from-emitter', { n: 1 });
    for (const args of await Promise.all(got)) assert.deepEqual(args.slice(0, 1), [{ n: 1 }]);
  });

  test('projects, notifications and the HTTP API over the cluster', async (t, ctx) => {
    const project = `p-${rnd()}`;
    const alice = await ctx.connect(A, '/projects', { auth: { token: token(`pa-${rnd()}`, { projects: [project] }) } });
    const bob = await ctx.connect(B, '/projects', { auth: { token: token(`pb-${rnd()}`, { projects: [project] }) } });
    for (const x of [alice, bob]) assert.deepEqual(await ack(x, 'project:join', { projectId: project }), { data: { projectId: project } });
    await waitFor(async () => (await shardNumSub(`socket.io#/projects#project:${project}#`)) >= 2, { what: 'the project room on both daemons' });
    const got = once(bob, 'project:comment');
    const c = await ack(alice, 'project:comment', { projectId: project, comment: 'hello' });
    assert.ok(c.data?.id, JSON.stringify(c));
    assert.equal((await got)[0].comment, 'hello');
    assert.equal(await db.xLen(`depth:project:{${project}}:comments`), 1);

    // A notification for two users (two slots) through the HTTP API of B,
    // live to a subscriber on A and in both inboxes.
    const u1 = `n1-${rnd()}`;
    const u2 = `n2-${rnd()}`;
    const n1 = await ctx.connect(A, '/notifications', { auth: { token: token(u1) } });
    assert.ok((await ack(n1, 'notifications:subscribe', { userId: u1 })).data);
    await waitFor(async () => (await shardNumSub(`socket.io#/notifications#user:${u1}#`)) >= 1, { what: 'the user room subscribed' });
    const live = once(n1, 'notification:new');
    const r = await request(B, {
      method: 'POST', path: '/api/v1/notifications',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ userIds: [u1, u2], notification: { type: 'mention', title: 'hi' } }),
    });
    assert.equal(r.status, 200, r.text);
    assert.equal((await live)[0].type, 'mention');
    assert.notEqual(slotOf(`depth:notifications:{${u1}}:order`), slotOf(`depth:notifications:{${u2}}:order`));
    for (const u of [u1, u2]) assert.equal(await db.lLen(`depth:notifications:{${u}}:order`), 1, u);
  });

  test('rate limit: one budget across two daemons, counted on the user\'s slot', { timeout: 30000 }, async (t, ctx) => {
    const extraServer = [cl.directive(), 'redis_node_ttl 3s;', 'ratelimit_events 6 10s;', 'ratelimit_sync_interval 50ms;'].join('\n');
    const [X, Y] = await Promise.all([0, 1].map(() => ctx.startServer({ workers: 1, modules: ['auth_jwt.so', 'ratelimit.so'], extraServer })));
    for (const srv of [X, Y]) await waitFor(async () => (await readyz(srv)) === 200, { ms: 15000, what: 'on the cluster' });
    const user = `rl-${rnd()}`;
    const tag = `{default|10000|u:${user}}`;
    const port = await cl.portOf(tag);
    // The user's keys (whatever the module keeps), all on the master of the user's tag.
    const userKeys = async () => (await cli(port, 'KEYS', `depth:ratelimit:${tag}:*`)).split('\n').filter(Boolean);
    const whoami = (s) => ack(s, 'probe:whoami', {});
    const a = await ctx.connect(X, '/', { userId: user });
    const b = await ctx.connect(Y, '/', { userId: user });
    // Another user synced alongside: a slot of its own.
    const other = await ctx.connect(X, '/', { userId: `rl-other-${rnd()}` });
    for (let i = 0; i < 3; i++) {
      assert.ok((await whoami(a)).data);
      assert.ok((await whoami(other)).data);
    }
    await waitFor(async () => (await userKeys()).length > 0, { what: 'X to count the user on the user\'s shard' });
    // Y, one event per 100 ms (past the sync interval): 3 of the 6 are left.
    let accepted = 0;
    let refused;
    await waitFor(async () => {
      const r = await whoami(b);
      if (r.error) refused = r.error;
      else accepted++;
      return !!refused || accepted > 6;
    }, { ms: 10000, every: 100, what: 'Y to refuse' });
    assert.equal(refused?.code, 'RATE_LIMITED', JSON.stringify(refused));
    assert.ok(accepted >= 3 && accepted <= 4, `Y accepted ${accepted} of the 3 left (one sync of slack)`);
    // X refuses too once it knows (at once, or within a few sync intervals).
    let moreOnX = 0;
    await waitFor(async () => {
      const r = await whoami(a);
      if (r.data) moreOnX++;
      return r.error?.code === 'RATE_LIMITED';
    }, { ms: 5000, every: 100, what: 'X to refuse' });
    assert.ok(3 + accepted + moreOnX <= 7, `${3 + accepted + moreOnX} accepted for a budget of 6`);
    // The other user's budget is its own.
    assert.ok((await whoami(other)).data);
  });

  test('connection state recovery: a chat member cut off from A resumes on B with what it missed', { timeout: 30000 }, async (t, ctx) => {
    const conv = `r-${rnd()}`;
    const p = await switchableProxy(A);
    ctx.defer(() => p.close());
    const s = ctx.track(io(`http://127.0.0.1:${p.port}/chat`, {
      transports: ['websocket'], forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200, timeout: 3000,
      auth: { token: token('r-away', { conversations: [conv] }) },
    }));
    await once(s, 'connect');
    assert.ok((await ack(s, 'chat:join', { conversationId: conv })).data);
    const talker = await chatSocket(ctx, B, 'r-talker', [conv]);
    assert.ok((await ack(talker, 'chat:join', { conversationId: conv })).data);
    await waitFor(async () => (await shardNumSub(`socket.io#/chat#conversation:${conv}#`)) >= 2, { what: 'the room on both daemons' });
    const got = [];
    s.on('chat:message', (m) => got.push(m.content));
    await ack(talker, 'chat:message', { conversationId: conv, content: 'live' });
    await waitFor(() => got.includes('live'), { what: 'the live message' });
    const id = s.id;
    const gone = once(s, 'disconnect');
    p.target = B;
    p.drop();
    assert.equal((await gone)[0], 'transport close');
    for (let i = 1; i <= 3; i++) assert.ok((await ack(talker, 'chat:message', { conversationId: conv, content: `missed${i}` })).data);
    await once(s, 'connect', 5000);
    assert.equal(s.recovered, true);
    assert.equal(s.id, id);
    await waitFor(() => got.includes('missed3'), { what: 'the missed messages' });
    assert.deepEqual(got, ['live', 'missed1', 'missed2', 'missed3']);
    // Its room is back, on B.
    await ack(talker, 'chat:message', { conversationId: conv, content: 'after' });
    await waitFor(() => got.includes('after'), { what: 'live again' });
  });

  test('slot migration mid-run: the conversation\'s keys and its room\'s channel move to another master; nothing acked is lost', { timeout: 90000 }, async (t, ctx) => {
    const conv = `m-${rnd()}`;
    const traffic = new ChatTraffic(ctx, conv, { every: 25 });
    for (let i = 0; i < 4; i++) await traffic.add(i % 2 ? B : A, `mu${i}`);
    traffic.start();
    await waitFor(() => traffic.acked.size >= 30, { ms: 15000, what: '30 messages acked before the migration' });
    const keySlot = slotOf(`{${conv}}`);
    const channel = `socket.io#/chat#conversation:${conv}#`;
    const channelSlot = slotOf(channel);
    const from = [await cl.portOf(`{${conv}}`), await cl.portOf(channel)];
    const to = [cl.ports.find((p) => p !== from[0]), cl.ports.find((p) => p !== from[1])];
    await cl.moveSlot(keySlot, to[0]);
    await cl.moveSlot(channelSlot, to[1]);
    assert.equal(await cl.portOf(`{${conv}}`), to[0]);
    assert.equal(await cl.portOf(channel), to[1]);
    const movedAt = Date.now();
    await waitFor(() => traffic.ackedSince(movedAt) >= 30, { ms: 20000, what: '30 messages acked after the migration' });
    await traffic.stop();
    t.diagnostic(`${traffic.acked.size} acked, ${traffic.refused} refused, ${traffic.unanswered} unanswered`);
    // Every acked message is in the stream, now on the new master ...
    const ids = new Set((await cli(to[0], '--no-raw', 'XRANGE', `depth:chat:{${conv}}`, '-', '+')).match(/"\d+-\d+"/g).map((x) => x.slice(1, -1)));
    for (const id of traffic.acked.keys()) assert.ok(ids.has(id), `acked ${id} stored`);
    // ... and reached every member, once.
    await waitFor(() => traffic.members.every((m) => [...traffic.acked.keys()].every((id) => m.got.has(id))),
      { ms: 10000, what: 'every acked message at every member' });
    for (const m of traffic.members) for (const id of traffic.acked.keys()) assert.equal(m.got.get(id), 1, `${m.userId} got ${id} once`);
    // The daemons subscribe on the channel's new master.
    await waitFor(async () => Number((await cli(to[1], 'PUBSUB', 'SHARDNUMSUB', channel)).trim().split('\n')[1]) >= 2,
      { what: 'the room subscribed on its new master' });
  });
});
