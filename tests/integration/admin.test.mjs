// The admin module (contract §2 "/ (default) and /admin", §8 "/admin events"):
// admin:stats (and live pushes), admin:kick by user id or socket id across
// namespaces, workers and server processes sharing one Redis,
// admin:announce on `/` to everyone or to several rooms (each socket once),
// validation, the default namespace refusing client events, and the server
// side of the Socket.IO Admin UI (@socket.io/admin-ui) protocol, spoken by a
// socket.io-client the way the dashboard does (admin-ui-node.test.mjs compares
// it with the package's own Node instrumentation).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe } from 'node:test';
import {
  test, Scope, Manager, startServer, startRedis, redisLines, ack, once, Inbox, waitFor, token, rnd,
  request, testConfig, writeConf, tmpDir, freePort, io,
} from './lib/harness.mjs';

// bcrypt of "changeit" (cost 10), from shared/protocols/admin-ui.md.
const HASH = '$2a$10$0AYDnleGO/R8/js8ewVwKei2HX1k8B5AYczpMgoHiUUL1fEze2SzC';
const MODULES = ['auth_jwt.so', 'admin.so'];
const UI_LINES = [
  'namespace /admin-ui { auth_jwt off; }',
  'admin_ui_namespace /admin-ui;',
  `admin_ui_auth basic admin ${HASH};`,
  'admin_ui_stats_interval 500ms;',
];
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const invalid = (details) => ({ error: { code: 'INVALID_DATA', message: 'Invalid data', details } });

// One cluster for most tests: process A (2 workers) and B (1 worker) on one Redis.
let redis;
let A;
let B;
let scope;

before(async () => {
  redis = await startRedis();
  const extraServer = [redisLines(redis), ...UI_LINES].join('\n');
  [A, B] = await Promise.all([
    startServer({ workers: 2, modules: MODULES, probe: false, extraServer }),
    startServer({ workers: 1, modules: MODULES, probe: false, extraServer }),
  ]);
  scope = new Scope(null);
  // Cluster requests (disconnect, fetch) reach every node once all three listen.
  for (const nsp of ['/', '/chat', '/admin', '/admin-ui']) {
    await waitFor(async () => Number((await redis.cli('PUBSUB', 'NUMSUB', `socket.io-request#${nsp}#`)).split('\n')[1]) === 3,
      { ms: 10000, what: `three nodes listening on ${nsp}` });
  }
}, { timeout: 60000 });

after(async () => {
  await scope?.cleanup();
  await A?.stop();
  await B?.stop();
  await redis?.stop();
});

const admin = (ctx, srv = A, userId = 'root') => ctx.connect(srv, '/admin', { userId, role: 'admin' });

// Sockets of one connection (Socket.IO multiplexing), all connected.
async function multiplexed(ctx, srv, userId, nsps) {
  const manager = new Manager(srv.url, { transports: ['websocket'], reconnection: false, timeout: 5000 });
  const auth = { token: token(userId) };
  const sockets = nsps.map((nsp) => ctx.track(manager.socket(nsp, { auth })));
  await Promise.all(sockets.map((s) => once(s, 'connect')));
  return sockets;
}

// Resolves the reason of the socket's next disconnect.
const disconnected = (s) => once(s, 'disconnect').then(([reason]) => reason);

describe('/admin is for role admin', () => {
  test('a non-admin gets CONNECT_ERROR "Forbidden" with code FORBIDDEN; an admin connects', async (t, ctx) => {
    const err = await ctx.connectError(A, '/admin', { userId: 'joe', role: 'user' });
    assert.equal(err.message, 'Forbidden');
    assert.deepEqual(err.data, { code: 'FORBIDDEN' });
    const noRole = await ctx.connectError(A, '/admin', { userId: 'joe' });
    assert.deepEqual([noRole.message, noRole.data], ['Forbidden', { code: 'FORBIDDEN' }]);
    const s = await admin(ctx);
    assert.ok(s.connected);
  });
});

describe('admin:stats', () => {
  test('the stats object of the node, and figures that move as clients come and go', async (t, ctx) => {
    const srv = await startServer({
      workers: 2, modules: MODULES, probe: false, t, extraServer: 'admin_stats_interval 200ms;',
    });
    const s = await admin(ctx, srv);
    const first = (await ack(s, 'admin:stats')).data;
    assert.deepEqual(Object.keys(first).sort(), ['connections', 'eventsPerSecond', 'namespaces', 'node', 'redis', 'workers']);
    assert.deepEqual(Object.keys(first.namespaces).sort(), ['/', '/admin', '/chat']);
    assert.deepEqual(first.namespaces['/admin'], { sockets: 1, rooms: 1 }); // user:root
    assert.deepEqual(first.namespaces['/chat'], { sockets: 0, rooms: 0 });
    assert.equal(first.connections, 1);
    assert.equal(typeof first.eventsPerSecond, 'number');
    assert.deepEqual(first.redis, { status: 'off' });
    assert.equal(first.node.pid, srv.pid);
    assert.ok(Number.isInteger(first.node.uptimeSeconds) && first.node.uptimeSeconds >= 0);
    const workers = srv.workerPids();
    for (const w of first.workers) {
      assert.deepEqual(Object.keys(w).sort(), ['connections', 'pid', 'sockets']);
      assert.ok(workers.includes(w.pid), `worker ${w.pid} of ${workers}`);
    }
    assert.equal(first.workers.reduce((n, w) => n + w.sockets, 0), 1);

    const chat = [];
    for (const u of ['c1', 'c2', 'c3']) chat.push(await ctx.connect(srv, '/chat', { userId: u }));
    const three = (await ack(s, 'admin:stats')).data;
    assert.deepEqual(three.namespaces['/chat'], { sockets: 3, rooms: 3 });
    assert.equal(three.connections, 4);
    assert.equal(three.workers.reduce((n, w) => n + w.sockets, 0), 4);

    chat[0].disconnect();
    await waitFor(async () => (await ack(s, 'admin:stats')).data.namespaces['/chat'].sockets === 2,
      { what: '/chat down to 2 sockets' });

    // Events per second: client events counted by the node over the last seconds.
    for (let i = 0; i < 30; i++) chat[1].emit('anything', i);
    await waitFor(async () => (await ack(s, 'admin:stats')).data.eventsPerSecond > 0, { what: 'eventsPerSecond > 0' });

    // Live statistics: subscribe, get pushes, unsubscribe.
    const inbox = new Inbox(s, ['admin:stats']);
    const sub = await ack(s, 'admin:stats:subscribe');
    assert.equal(sub.data.namespaces['/chat'].sockets, 2);
    const [pushed] = await inbox.wait('admin:stats');
    assert.equal(pushed.node.pid, srv.pid);
    assert.equal(pushed.namespaces['/admin'].sockets, 1);
    chat[1].disconnect();
    await inbox.wait('admin:stats', ([st]) => st.namespaces['/chat'].sockets === 1);
    assert.deepEqual(await ack(s, 'admin:stats:unsubscribe'), { data: {} });
  });

  test('cluster: redis status "ready"', async (t, ctx) => {
    const s = await admin(ctx, B);
    const st = (await ack(s, 'admin:stats')).data;
    assert.deepEqual(st.redis, { status: 'ready' });
    assert.equal(st.node.pid, B.pid);
    assert.ok('/admin-ui' in st.namespaces);
  });
});

describe('admin:kick', () => {
  test('by userId: every socket of the user, in two namespaces on two server processes; others stay', async (t, ctx) => {
    const victim = `v-${rnd()}`;
    const a1 = await ctx.connect(A, '/chat', { userId: victim });
    const a2 = await ctx.connect(A, '/', { userId: victim });
    const b1 = await ctx.connect(B, '/', { userId: victim });
    const b2 = await ctx.connect(B, '/chat', { userId: victim });
    const bystander = await ctx.connect(B, '/chat', { userId: `by-${rnd()}` });
    const gone = [a1, a2, b1, b2].map(disconnected);
    const s = await admin(ctx);
    assert.deepEqual(await ack(s, 'admin:kick', { userId: victim }), { data: { userId: victim } });
    assert.deepEqual(await Promise.all(gone), Array(4).fill('io server disconnect'));
    // A fence: a later kick on the bystander's node and namespace has landed.
    const fence = await ctx.connect(B, '/chat', { userId: `fence-${rnd()}` });
    const fenceId = fence.id;
    const fenceGone = disconnected(fence);
    assert.deepEqual(await ack(s, 'admin:kick', { socketId: fenceId }), { data: { socketId: fenceId } });
    await fenceGone;
    assert.equal(bystander.connected, true);
  });

  test('a numeric userId is its decimal string', async (t, ctx) => {
    const c = await ctx.connect(B, '/chat', { auth: { token: token(4242) } });
    const gone = disconnected(c);
    const s = await admin(ctx);
    assert.deepEqual(await ack(s, 'admin:kick', { userId: 4242 }), { data: { userId: '4242' } });
    assert.equal(await gone, 'io server disconnect');
  });

  test('by socketId: that socket and its connection (multiplexed namespaces) go, not the user\'s other connections', async (t, ctx) => {
    const user = `m-${rnd()}`;
    const [chat, root] = await multiplexed(ctx, B, user, ['/chat', '/']);
    const elsewhere = await ctx.connect(A, '/chat', { userId: user });
    const gone = [chat, root].map(disconnected);
    const s = await admin(ctx);
    const chatId = chat.id;
    assert.deepEqual(await ack(s, 'admin:kick', { socketId: chatId }), { data: { socketId: chatId } });
    await Promise.all(gone);
    assert.equal(elsewhere.connected, true);
    // And the admin may kick themself: the ack arrives first.
    const self = await admin(ctx, A, `self-${rnd()}`);
    const selfGone = disconnected(self);
    const selfId = self.id;
    assert.deepEqual(await ack(self, 'admin:kick', { socketId: selfId }), { data: { socketId: selfId } });
    assert.equal(await selfGone, 'io server disconnect');
  });

  test('validation: exactly one of userId and socketId, of the right type', async (t, ctx) => {
    const s = await admin(ctx);
    assert.deepEqual(await ack(s, 'admin:kick', {}), invalid('userId: userId or socketId is required'));
    assert.deepEqual(await ack(s, 'admin:kick', { userId: null, socketId: null }), invalid('userId: userId or socketId is required'));
    assert.deepEqual(await ack(s, 'admin:kick', { userId: 'a', socketId: 'b' }), invalid('socketId: not allowed together with userId'));
    assert.deepEqual(await ack(s, 'admin:kick', { userId: '' }),
      invalid('userId: must be an id (string of 1-128 characters or non-negative integer)'));
    assert.deepEqual(await ack(s, 'admin:kick', { socketId: 7 }), invalid('socketId: must be a string'));
    assert.deepEqual(await ack(s, 'admin:kick', { socketId: 'user:root' }), invalid('socketId: must be a socket id'));
    assert.deepEqual(await ack(s, 'admin:kick', 'root'), invalid('payload: must be an object'));
    // Without an ack the error event says it.
    const err = once(s, 'error');
    s.emit('admin:kick', {});
    assert.deepEqual((await err)[0], invalid('userId: userId or socketId is required').error);
  });
});

test('admin:kick with Redis away: this node\'s sockets go, and the answer says only those', { timeout: 30000 }, async (t, ctx) => {
  const r = await startRedis({ t });
  const srv = await startServer({ workers: 1, modules: MODULES, probe: false, t, extraServer: redisLines(r) });
  const s = await admin(ctx, srv);
  const victim = await ctx.connect(srv, '/chat', { userId: 'v' });
  await r.kill();
  await waitFor(async () => (await ack(s, 'admin:stats')).data.redis.status === 'down', { what: 'Redis seen down' });
  const gone = disconnected(victim);
  assert.deepEqual(await ack(s, 'admin:kick', { userId: 'v' }), {
    error: { code: 'SOCKET_ERROR', message: 'A connection error occurred', details: 'Redis unavailable: disconnected on this node only' },
  });
  assert.equal(await gone, 'io server disconnect');
});

describe('admin:announce', () => {
  test('to all sockets of `/` on every node; the ack is what was broadcast', async (t, ctx) => {
    const tag = rnd();
    const receivers = [
      await ctx.connect(A, '/', { userId: `r1-${tag}` }),
      await ctx.connect(A, '/', { userId: `r2-${tag}` }),
      await ctx.connect(B, '/', { userId: `r3-${tag}` }),
    ];
    const chat = await ctx.connect(B, '/chat', { userId: `r4-${tag}` });
    const chatInbox = new Inbox(chat, ['announcement']);
    const got = receivers.map((r) => once(r, 'announcement'));
    const s = await admin(ctx);
    const r = await ack(s, 'admin:announce', { message: `hello ${tag}`, from: 'spoofed', at: 'x' });
    assert.deepEqual(Object.keys(r.data).sort(), ['at', 'from', 'message']);
    assert.equal(r.data.message, `hello ${tag}`);
    assert.equal(r.data.from, 'root');
    assert.match(r.data.at, ISO);
    for (const [payload] of await Promise.all(got)) assert.deepEqual(payload, r.data);
    assert.equal(chatInbox.of('announcement').length, 0); // only `/`
  });

  test('to two rooms: their union, each socket once; others get nothing', async (t, ctx) => {
    const tag = rnd();
    const both = await ctx.connect(A, '/', { userId: `both-${tag}` });
    const one = await ctx.connect(B, '/', { userId: `one-${tag}` });
    const none = await ctx.connect(B, '/', { userId: `none-${tag}` });
    const inboxes = [both, one, none].map((s) => new Inbox(s, ['announcement']));
    // `both` also joins the room team-<tag>, through the admin UI's join action.
    const ui = await dashboard(ctx, A);
    const team = `team-${tag}`;
    ui.s.emit('join', '/', team, both.id);
    await ui.inbox.wait('room_joined', ([nsp, room, id]) => nsp === '/' && room === team && id === both.id);
    const s = await admin(ctx);
    const r = await ack(s, 'admin:announce', { message: 'rooms', rooms: [`user:both-${tag}`, team, `user:one-${tag}`] });
    // The fence: an announcement to all from the same node comes after it.
    await ack(s, 'admin:announce', { message: `fence ${tag}` });
    await Promise.all(inboxes.map((i) => i.wait('announcement', ([a]) => a.message === `fence ${tag}`)));
    const count = (i) => i.of('announcement').filter(([a]) => a.message === 'rooms').length;
    assert.deepEqual(inboxes.map(count), [1, 1, 0]);
    assert.deepEqual(inboxes[0].of('announcement')[0][0], r.data);
    // One room as a string.
    await ack(s, 'admin:announce', { message: 'solo', rooms: `user:none-${tag}` });
    await inboxes[2].wait('announcement', ([a]) => a.message === 'solo');
  });

  test('validation: message 1-10000 characters, rooms a string or an array of strings', async (t, ctx) => {
    const s = await admin(ctx);
    assert.deepEqual(await ack(s, 'admin:announce', {}), invalid('message: is required'));
    assert.deepEqual(await ack(s, 'admin:announce', { message: '' }), invalid('message: must not be empty'));
    assert.deepEqual(await ack(s, 'admin:announce', { message: 'x'.repeat(10001) }),
      invalid('message: must be at most 10000 characters'));
    assert.deepEqual(await ack(s, 'admin:announce', { message: 5 }), invalid('message: must be a string'));
    const bad = invalid('rooms: must be a room name or an array of room names');
    assert.deepEqual(await ack(s, 'admin:announce', { message: 'x', rooms: 5 }), bad);
    assert.deepEqual(await ack(s, 'admin:announce', { message: 'x', rooms: { a: 1 } }), bad);
    assert.deepEqual(await ack(s, 'admin:announce', { message: 'x', rooms: ['a', 3] }), bad);
    assert.deepEqual(await ack(s, 'admin:announce', { message: 'x', rooms: '' }), bad);
    const ok = await ack(s, 'admin:announce', { message: 'x'.repeat(10000), rooms: null });
    assert.equal(ok.data.message.length, 10000);
  });
});

describe('unknown events', () => {
  test('on /admin: INVALID_DATA `event: unknown event "<name>"`', async (t, ctx) => {
    const s = await admin(ctx);
    assert.deepEqual(await ack(s, 'admin:nope', {}), invalid('event: unknown event "admin:nope"'));
    // The dashboard's actions are not events of /admin (they live on /admin-ui here).
    assert.deepEqual(await ack(s, 'join', '/', 'x'), invalid('event: unknown event "join"'));
  });

  test('`/` accepts no client events: ack or error event with the exact details', async (t, ctx) => {
    const s = await ctx.connect(A, '/', { userId: 'plain' });
    assert.deepEqual(await ack(s, 'hello', { a: 1 }), invalid('event: unknown event "hello"'));
    assert.deepEqual(await ack(s, 'admin:announce', { message: 'x' }), invalid('event: unknown event "admin:announce"'));
    const err = once(s, 'error');
    s.emit('chat:message', { content: 'x' });
    assert.deepEqual((await err)[0], invalid('event: unknown event "chat:message"').error);
    // An admin on `/` is no exception.
    const root = await ctx.connect(A, '/', { userId: 'root', role: 'admin' });
    assert.deepEqual(await ack(root, 'admin:stats'), invalid('event: unknown event "admin:stats"'));
  });
});

// ------------------------------------------------------------------ admin UI

// A socket.io-client speaking like the dashboard (admin-ui 0.5.1's connect
// options), with an inbox of everything it receives.
async function dashboard(ctx, srv, auth = { username: 'admin', password: 'changeit' }, opts = {}) {
  const s = ctx.track(io(`${srv.url}/admin-ui`, {
    forceNew: true, reconnection: false, withCredentials: true, transports: ['websocket'], path: '/socket.io', auth, ...opts,
  }));
  const inbox = new Inbox(s);
  await once(s, 'connect');
  return { s, inbox };
}

describe('Socket.IO Admin UI', () => {
  test('wrong credentials -> CONNECT_ERROR "invalid credentials" without data; JWTs are not its login', async (t, ctx) => {
    for (const auth of [{ username: 'admin', password: 'nope' }, { username: 'root', password: 'changeit' }, {},
      { token: token('root', { role: 'admin' }) }, { sessionId: '0123456789abcdef' }]) {
      const err = await ctx.connectError(A, '/admin-ui', { auth });
      assert.equal(err.message, 'invalid credentials', JSON.stringify(auth));
      assert.equal(err.data, undefined);
    }
  });

  test('login: session, config, all_sockets of every namespace on every node; the session id logs in again', async (t, ctx) => {
    const tag = rnd();
    const onA = await ctx.connect(A, '/chat', { userId: `ua-${tag}` });
    const [onB] = await multiplexed(ctx, B, `ub-${tag}`, ['/', '/chat']);
    const { s, inbox } = await dashboard(ctx, A);
    const [sessionId] = await inbox.wait('session');
    assert.match(sessionId, /^[0-9a-f]{16}$/);
    const [config] = await inbox.wait('config');
    assert.deepEqual(config, {
      supportedFeatures: ['EMIT', 'JOIN', 'LEAVE', 'DISCONNECT', 'MJOIN', 'MLEAVE', 'MDISCONNECT', 'AGGREGATED_EVENTS', 'ALL_EVENTS'],
    });
    // Node's order (admin-ui-node.test.mjs holds it against the package): the
    // session first, the dashboard's own arrival, then config.
    assert.deepEqual(inbox.got.slice(0, 4).map((m) => m.event), ['session', 'room_joined', 'socket_connected', 'config']);
    const [all] = await inbox.wait('all_sockets');
    const find = (id) => all.find((x) => x.id === id);
    for (const [sock, nsp, user] of [[onA, '/chat', `ua-${tag}`], [onB, '/', `ub-${tag}`], [s, '/admin-ui', null]]) {
      const x = find(sock.id);
      assert.ok(x, `all_sockets lists ${nsp} ${sock.id}`);
      assert.deepEqual(Object.keys(x).sort(), ['clientId', 'data', 'handshake', 'id', 'nsp', 'rooms', 'transport']);
      assert.equal(x.nsp, nsp);
      assert.equal(x.transport, 'websocket');
      assert.match(x.clientId, /^.{12}$/);
      assert.equal(x.handshake.auth, undefined, 'no auth (tokens, passwords) in the handshake');
      assert.equal(x.handshake.address, '127.0.0.1');
      assert.equal(x.handshake.query.EIO, '4');
      assert.equal(typeof x.handshake.issued, 'number');
      assert.ok(x.rooms.includes(sock.id));
      if (user) {
        assert.equal(x.data.userId, user);
        assert.ok(x.rooms.includes(`user:${user}`));
      }
      assert.equal(x.data._admin, undefined);
    }
    // Sockets of one connection share their clientId.
    const bChat = all.find((x) => x.nsp === '/chat' && x.data.userId === `ub-${tag}`);
    assert.equal(bChat.clientId, find(onB.id).clientId);

    // Stored as the Node RedisStore does, for a day.
    assert.equal((await redis.cli('GET', `socket.io-admin#${sessionId}`)).trim(), 'true');
    const ttl = Number((await redis.cli('TTL', `socket.io-admin#${sessionId}`)).trim());
    assert.ok(ttl > 86000 && ttl <= 86400, `ttl ${ttl}`);

    // After a page reload the dashboard sends the session id, on any node; no new session.
    const again = await dashboard(ctx, B, { sessionId });
    await again.inbox.wait('config');
    assert.equal(again.inbox.of('session').length, 0);
  });

  test('server_stats from each node', async (t, ctx) => {
    const { inbox } = await dashboard(ctx, B);
    const statsOf = async (srv) => (await inbox.wait('server_stats', ([st]) => st.pid === srv.pid, 8000))[0];
    const [a, b] = await Promise.all([statsOf(A), statsOf(B)]);
    for (const st of [a, b]) {
      assert.deepEqual(Object.keys(st).sort(),
        ['aggregatedEvents', 'clientsCount', 'hostname', 'namespaces', 'pid', 'pollingClientsCount', 'serverId', 'uptime']);
      assert.equal(st.serverId, `${st.hostname}#${st.pid}`);
      assert.ok(st.clientsCount >= 1 || st === a);
      assert.equal(st.pollingClientsCount, 0);
      assert.deepEqual(st.namespaces.map((n) => n.name).sort(), ['/', '/admin', '/admin-ui', '/chat']);
      for (const e of st.aggregatedEvents) {
        assert.ok(['rawConnection', 'rawDisconnection', 'packetsIn', 'packetsOut', 'bytesIn', 'bytesOut'].includes(e.type), e.type);
        assert.equal(e.timestamp % 1000, 0);
        assert.ok(e.count > 0);
      }
    }
    assert.notEqual(a.serverId, b.serverId);
    assert.equal(b.namespaces.find((n) => n.name === '/admin-ui').socketsCount, 1);
    // A connection to B shows up in its next stats.
    const c = await ctx.connect(B, '/chat', { userId: `s-${rnd()}` });
    await inbox.wait('server_stats', ([x]) => x.pid === B.pid && x.aggregatedEvents.some((e) => e.type === 'rawConnection') &&
      x.namespaces.find((n) => n.name === '/chat').socketsCount >= 1, 8000);
    c.disconnect();
    await inbox.wait('server_stats', ([x]) => x.pid === B.pid &&
      x.aggregatedEvents.some((e) => e.type === 'rawDisconnection' && e.subType === 'transport close'), 8000);
  });

  test('development mode: sockets connecting, joining, leaving, sending, upgrading and going, on any node', async (t, ctx) => {
    const { inbox } = await dashboard(ctx, A);
    await inbox.wait('all_sockets');
    // Past the 1.5 s (3 stats intervals) that the dashboard's connect told the
    // other nodes: from here on B reports because A keeps telling it.
    await waitFor(() => inbox.of('server_stats').filter(([st]) => st.pid === A.pid).length >= 5,
      { ms: 8000, what: 'five server_stats from A' });
    const user = `d-${rnd()}`;
    // Over polling first, then upgraded: socket_updated says so.
    const c = ctx.track(io(`${B.url}/chat`, { forceNew: true, reconnection: false, auth: { token: token(user) } }));
    await once(c, 'connect');
    const [sock, ts] = await inbox.wait('socket_connected', ([x]) => x.id === c.id);
    assert.match(ts, ISO);
    assert.equal(sock.nsp, '/chat');
    assert.equal(sock.data.userId, user);
    assert.equal(sock.transport, 'polling');
    assert.deepEqual(sock.rooms.sort(), [c.id, `user:${user}`].sort());
    assert.equal(sock.handshake.auth, undefined);
    await inbox.wait('room_joined', ([nsp, room, id]) => nsp === '/chat' && room === c.id && id === c.id);
    await inbox.wait('room_joined', ([nsp, room, id]) => nsp === '/chat' && room === `user:${user}` && id === c.id);
    const [update] = await inbox.wait('socket_updated', ([u]) => u.id === c.id);
    assert.deepEqual(update, { id: c.id, nsp: '/chat', transport: 'websocket' });

    c.emit('hello', { a: 1 }, 'two');
    const ev = await inbox.wait('event_received', ([nsp, id]) => nsp === '/chat' && id === c.id);
    assert.deepEqual(ev.slice(0, 3), ['/chat', c.id, ['hello', { a: 1 }, 'two']]);
    assert.match(ev[3], ISO);

    const cid = c.id;
    c.disconnect();
    const gone = await inbox.wait('socket_disconnected', ([, id]) => id === cid);
    assert.deepEqual(gone.slice(0, 3), ['/chat', cid, 'client namespace disconnect']);
    await inbox.wait('room_left', ([nsp, room, id]) => nsp === '/chat' && room === `user:${user}` && id === cid);
    await inbox.wait('room_left', ([nsp, room, id]) => nsp === '/chat' && room === cid && id === cid);
  });

  test('event_sent: a socket\'s own emits and each recipient of a broadcast, binary included, with array claims as values', async (t, ctx) => {
    const { s, inbox } = await dashboard(ctx, A);
    await inbox.wait('all_sockets');
    const tag = rnd();
    // A token with less than auth_jwt_refresh_before (60 s) left: the server's own
    // emit of auth:expiring to that socket, at once.
    const exp = Math.floor(Date.now() / 1000) + 30;
    const one = await ctx.connect(A, '/chat', { auth: { token: token(`s1-${tag}`, { exp, projects: ['p1', 'p2'] }) } });
    const two = await ctx.connect(A, '/chat', { userId: `s2-${tag}` });
    const [conn] = await inbox.wait('socket_connected', ([x]) => x.id === one.id);
    assert.deepEqual(conn.data['claim:projects'], ['p1', 'p2']);
    const own = await inbox.wait('event_sent', ([, id, args]) => id === one.id && args[0] === 'auth:expiring');
    // (then the recovery offset, as Node's instrumentation reports it with recovery on)
    assert.deepEqual(own.slice(0, 2), ['/chat', one.id]);
    assert.deepEqual(own[2].slice(0, 2), ['auth:expiring', { expiresAt: exp * 1000 }]);
    assert.match(own[3], ISO);
    // A broadcast to the namespace from the dashboard: one event_sent per recipient.
    const bin = Buffer.from([1, 2, 3]);
    s.emit('emit', '/chat', null, `all-${tag}`, { n: 1 }, bin);
    for (const c of [one, two]) {
      const [nsp, id, args] = await inbox.wait('event_sent', ([, x, a]) => x === c.id && a[0] === `all-${tag}`);
      assert.equal(nsp, '/chat');
      assert.deepEqual(args.slice(0, 2), [`all-${tag}`, { n: 1 }]);
      assert.deepEqual(Buffer.from(args[2]), bin);
    }
    // Nothing about the dashboards' own namespace.
    assert.equal(inbox.of('event_sent').filter(([nsp]) => nsp === '/admin-ui').length, 0);
  });

  test('actions: join, leave, emit, _disconnect (one socket, or with close its connection), cluster-wide', async (t, ctx) => {
    const { s, inbox } = await dashboard(ctx, A);
    await inbox.wait('all_sockets');
    const tag = rnd();
    const [root, chat] = await multiplexed(ctx, B, `x-${tag}`, ['/', '/chat']);
    const other = await ctx.connect(A, '/chat', { userId: `y-${tag}` });
    const room = `room-${tag}`;

    s.emit('join', '/chat', room, chat.id);
    await inbox.wait('room_joined', ([nsp, r, id]) => nsp === '/chat' && r === room && id === chat.id);
    s.emit('join', '/chat', room); // every socket of /chat
    await inbox.wait('room_joined', ([nsp, r, id]) => nsp === '/chat' && r === room && id === other.id);
    s.emit('leave', '/chat', room, other.id);
    await inbox.wait('room_left', ([nsp, r, id]) => nsp === '/chat' && r === room && id === other.id);

    const got = once(chat, 'adminmsg');
    s.emit('emit', '/chat', room, 'adminmsg', { a: 1 }, 2);
    // (a third argument: the connection state recovery offset, as Socket.IO appends it)
    assert.deepEqual((await got).slice(0, 2), [{ a: 1 }, 2]);

    // close=false: that socket only; its connection's other namespace stays.
    const chatGone = disconnected(chat);
    s.emit('_disconnect', '/chat', false, chat.id);
    assert.equal(await chatGone, 'io server disconnect');
    assert.equal(root.connected, true);
    // close=true: the whole connection.
    const rootGone = disconnected(root);
    s.emit('_disconnect', '/', true, root.id);
    await rootGone;
    assert.equal(other.connected, true);

    // Bad arguments are answered (the dashboard never sends them).
    assert.deepEqual(await ack(s, 'join', '/nope', 'r'), invalid('nsp: must be a namespace of this server'));
    assert.deepEqual(await ack(s, 'join', '/chat', ''), invalid('room: must be a room name'));
    assert.deepEqual(await ack(s, '_disconnect', '/chat', 'yes', 'x'), invalid('close: must be a boolean'));
    assert.deepEqual(await ack(s, 'emit', '/chat', null, 'disconnect'), invalid('eventName: "disconnect" is reserved'));
    assert.deepEqual(await ack(s, 'emit', '/chat', 5, 'x'), invalid('filter: must be a room name or a socket id'));
    assert.deepEqual(await ack(s, 'fetch', {}), invalid('event: unknown event "fetch"'));
  });
});

describe('configuration', () => {
  test('admin_ui_namespace needs admin_ui_auth; a bad hash, mode or namespace is refused with file:line', async () => {
    const dir = tmpDir();
    const port = await freePort();
    const check = (lines) => {
      const conf = writeConf(dir, { port, modules: MODULES, probe: false, extraServer: lines.join('\n') });
      return testConfig(conf);
    };
    let r = check(['namespace /admin-ui { auth_jwt off; }', 'admin_ui_namespace /admin-ui;']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /admin_ui_namespace needs admin_ui_auth/);
    r = check(['admin_ui_auth basic admin notahash;']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /depth-realtime\.conf:\d+: expected a bcrypt hash/);
    r = check(['admin_ui_mode loud;']);
    assert.match(r.stderr, /expected development or production/);
    r = check(['admin_ui_namespace /admin;', `admin_ui_auth basic admin ${HASH};`]);
    assert.match(r.stderr, /is the admin namespace/);
    r = check([...UI_LINES, 'admin_ui_readonly on;', 'admin_stats_interval 1s;']);
    assert.equal(r.code, 0, r.stderr);
  });

  test('read-only production dashboard on /admin for admin JWTs: stats only, no actions', async (t, ctx) => {
    const srv = await startServer({
      workers: 1, modules: MODULES, probe: false, t,
      extraServer: ['admin_ui_namespace /admin;', 'admin_ui_auth off;', 'admin_ui_readonly on;', 'admin_ui_mode production;',
        'admin_ui_stats_interval 300ms;'].join('\n'),
    });
    assert.ok((await ctx.connectError(srv, '/admin', { userId: 'u' })).data.code === 'FORBIDDEN');
    const s = ctx.socket(srv, '/admin', { userId: 'root', role: 'admin' });
    const inbox = new Inbox(s);
    await once(s, 'connect');
    const [config] = await inbox.wait('config');
    assert.deepEqual(config, { supportedFeatures: ['AGGREGATED_EVENTS'] });
    const [st] = await inbox.wait('server_stats');
    assert.equal(st.pid, srv.pid);
    // The app's admin events still work there; the dashboard's actions are not offered.
    assert.equal((await ack(s, 'admin:stats')).data.node.pid, srv.pid);
    const c = await ctx.connect(srv, '/chat', { userId: 'quiet' });
    assert.deepEqual(await ack(s, '_disconnect', '/chat', false, c.id), { error: { code: 'INVALID_DATA', message: 'Invalid data', details: 'event: unknown event "_disconnect"' } });
    assert.equal(c.connected, true);
    assert.equal(inbox.of('all_sockets').length + inbox.of('socket_connected').length, 0);
  });

  test('admin_ui_static serves the dashboard files under /admin-ui/', async (t) => {
    const dist = tmpDir('dr-ui-');
    fs.mkdirSync(path.join(dist, 'js'));
    fs.writeFileSync(path.join(dist, 'index.html'), '<!doctype html><title>ui</title>');
    fs.writeFileSync(path.join(dist, 'js', 'app.0d7d7845.js'), 'console.log(1)');
    const srv = await startServer({ workers: 1, modules: MODULES, probe: false, t, extraServer: `admin_ui_static ${dist};` });
    const redirect = await request(srv, { path: '/admin-ui' });
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.location, '/admin-ui/');
    const index = await request(srv, { path: '/admin-ui/' });
    assert.equal(index.status, 200);
    assert.match(index.headers['content-type'], /^text\/html/);
    assert.equal(index.text, '<!doctype html><title>ui</title>');
    const js = await request(srv, { path: '/admin-ui/js/app.0d7d7845.js' });
    assert.equal(js.status, 200);
    assert.match(js.headers['content-type'], /^application\/javascript/);
    assert.equal(js.text, 'console.log(1)');
    assert.equal((await request(srv, { path: '/admin-ui/nope.js' })).status, 404);
  });
});
