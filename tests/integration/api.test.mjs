// The HTTP API for backends (module api): Bearer key, JSON errors (400, 401,
// 404, 405, 413), emit to rooms / several rooms / all but some / a whole
// namespace across two server processes sharing Redis, notifications,
// disconnect of a user everywhere, stats, and the API off without a key.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, Scope, startServer, startRedis, redisLines, request, waitFor, waitSubscribed, workerOf, once, Inbox, freePort,
} from './lib/harness.mjs';

const KEY = 'api-test-key-9876543210';
const NAMESPACES = ['/', '/chat', '/notifications', '/admin'];

let redis;
let servers = [];
let scope;

const serverBlock = (port, extra = []) => [
  `listen 127.0.0.1:${port};`,
  'auth_jwt_secret integration-test-secret;',
  'namespace /;',
  'namespace /chat;',
  'namespace /notifications;',
  'namespace /admin { auth_jwt_require_role admin; }',
  redisLines(redis),
  ...extra,
].join('\n');

async function start(extra = [`api_key ${KEY};`, 'api_max_body 4k;'], opts = {}) {
  const port = await freePort();
  return startServer({
    port, workers: 2, probe: false, modules: ['auth_jwt.so', 'notifications.so', 'api.so'],
    serverBlock: serverBlock(port, extra), ...opts,
  });
}

const numsub = async (channel) => Number((await redis.cli('PUBSUB', 'NUMSUB', channel)).split('\n')[1]);

before(async () => {
  redis = await startRedis();
  servers = [await start(), await start()];
  scope = new Scope(null);
  // Every node (2 processes x 2 workers) listens to every namespace before the
  // tests (its broadcasts' pattern is subscribed before its request channel).
  for (const nsp of NAMESPACES) {
    await waitFor(async () => (await numsub(`socket.io-request#${nsp}#`)) === 4,
      { ms: 10000, what: `four nodes on ${nsp}` });
  }
}, { timeout: 40000 });

after(async () => {
  await scope?.cleanup();
  for (const srv of servers) await srv.stop();
  await redis?.stop();
});

// One API call; resolves {status, headers, body (parsed JSON)}.
async function api(method, path, body, { srv = servers[0], key = KEY, raw, headers = {} } = {}) {
  const h = { ...headers };
  if (key !== null) h.authorization = `Bearer ${key}`;
  if (body !== undefined || raw !== undefined) h['content-type'] = 'application/json';
  const r = await request(srv, { method, path, headers: h, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)) });
  let parsed;
  try { parsed = JSON.parse(r.text); } catch { parsed = r.text; }
  return { status: r.status, headers: r.headers, body: parsed };
}

const invalid = (details) => ({ status: 400, body: { error: { code: 'INVALID_DATA', message: 'Invalid data', details } } });
const answer = (r) => ({ status: r.status, body: r.body });

// With connection state recovery (on with Redis) each event ends with its offset.
const payload = (s, args) => (s._pid && typeof args.at(-1) === 'string' ? args.slice(0, -1) : args);

// A client: its socket, server index and an inbox of everything it gets.
async function client(srvIndex, nsp, userId) {
  const s = await scope.connect(servers[srvIndex], nsp, { userId });
  return { s, srvIndex, nsp, userId, inbox: new Inbox(s) };
}

// Waits until every worker holding a member of `room` listens on its channel.
async function listening(clients, room) {
  const workers = new Set();
  for (const c of clients) workers.add(await workerOf(servers[c.srvIndex], c.s));
  await waitSubscribed(redis, room, workers.size, { nsp: clients[0].nsp });
}

// Emits through the API, then a fence to the whole namespace: afterwards each
// client's inbox holds everything the emit sent it.
async function emitAndFence(clients, body) {
  for (const c of clients) c.inbox.clear();
  const r = await api('POST', '/api/v1/emit', body);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const tag = `fence-${Math.random()}`;
  const waits = clients.map((c) => c.inbox.wait(tag));
  for (const nsp of new Set(clients.map((c) => c.nsp))) {
    assert.equal((await api('POST', '/api/v1/emit', { namespace: nsp, event: tag })).status, 200);
  }
  await Promise.all(waits);
  return r.body;
}

describe('HTTP API: authentication and errors', () => {
  test('401 without a key, with a wrong key or another scheme; WWW-Authenticate: Bearer', async () => {
    const none = await api('POST', '/api/v1/emit', { event: 'x' }, { key: null });
    assert.deepEqual(answer(none), { status: 401, body: { error: { code: 'UNAUTHORIZED', message: 'Unauthorized', details: 'Authorization: Bearer <API key> is required' } } });
    assert.equal(none.headers['www-authenticate'], 'Bearer');
    const wrong = { status: 401, body: { error: { code: 'UNAUTHORIZED', message: 'Unauthorized', details: 'wrong API key' } } };
    assert.deepEqual(answer(await api('POST', '/api/v1/emit', { event: 'x' }, { key: 'nope' })), wrong);
    assert.deepEqual(answer(await api('POST', '/api/v1/emit', { event: 'x' }, { key: `${KEY}x` })), wrong);
    assert.deepEqual(answer(await api('GET', '/api/v1/stats', undefined, { key: null, headers: { authorization: `Basic ${KEY}` } })), wrong);
    assert.deepEqual(answer(await api('GET', '/api/v1/stats', undefined, { key: null })).status, 401);
    // The scheme is case-insensitive.
    assert.equal((await api('GET', '/api/v1/stats', undefined, { key: null, headers: { authorization: `bearer ${KEY}` } })).status, 200);
  });

  test('404 unknown path, 405 wrong method (with Allow)', async () => {
    const notFound = { status: 404, body: { error: { code: 'NOT_FOUND', message: 'Not found' } } };
    assert.deepEqual(answer(await api('POST', '/api/v1/nope', {})), notFound);
    assert.deepEqual(answer(await api('GET', '/api/v2/stats')), notFound);
    const get = await api('GET', '/api/v1/emit');
    assert.deepEqual(answer(get), { status: 405, body: { error: { code: 'METHOD_NOT_ALLOWED', message: 'Method not allowed', details: 'use POST' } } });
    assert.equal(get.headers.allow, 'POST');
    const post = await api('POST', '/api/v1/stats', {});
    assert.deepEqual(answer(post), { status: 405, body: { error: { code: 'METHOD_NOT_ALLOWED', message: 'Method not allowed', details: 'use GET' } } });
    assert.equal(post.headers.allow, 'GET');
    assert.equal((await api('DELETE', '/api/v1/notifications')).status, 405);
  });

  test('413 over api_max_body (JSON error); over max_payload the core refuses it too', async () => {
    const big = { event: 'big', data: 'x'.repeat(5000) };
    assert.deepEqual(answer(await api('POST', '/api/v1/emit', big)),
      { status: 413, body: { error: { code: 'PAYLOAD_TOO_LARGE', message: 'Payload too large', details: 'body: larger than 4096 bytes' } } });
    const huge = await api('POST', '/api/v1/emit', { event: 'big', data: 'x'.repeat(1100000) });
    assert.deepEqual(answer(huge), { status: 413, body: { error: { code: 'PAYLOAD_TOO_LARGE', message: 'Payload too large' } } });
  });

  test('400 INVALID_DATA with details: bad JSON, bad fields, unknown namespace, reserved events', async () => {
    const badJson = await api('POST', '/api/v1/emit', undefined, { raw: '{"event":' });
    assert.equal(badJson.status, 400);
    assert.equal(badJson.body.error.code, 'INVALID_DATA');
    assert.match(badJson.body.error.details, /^body: not valid JSON \(.+\)$/);
    assert.deepEqual(answer(await api('POST', '/api/v1/emit', undefined, { raw: '' })).status, 400);
    assert.deepEqual(answer(await api('POST', '/api/v1/emit', [1, 2])), invalid('body: must be a JSON object'));

    const emit = async (body) => answer(await api('POST', '/api/v1/emit', body));
    assert.deepEqual(await emit({}), invalid('event: is required'));
    assert.deepEqual(await emit({ event: '' }), invalid('event: must not be empty'));
    assert.deepEqual(await emit({ event: 5 }), invalid('event: must be a string'));
    assert.deepEqual(await emit({ namespace: '/nope', event: 'x' }), invalid('namespace: unknown namespace "/nope"'));
    assert.deepEqual(await emit({ namespace: 3, event: 'x' }), invalid('namespace: must be a string'));
    for (const ev of ['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener']) {
      assert.deepEqual(await emit({ event: ev }), invalid(`event: "${ev}" is a reserved event name`));
    }
    assert.deepEqual(await emit({ event: 'x', rooms: 5 }), invalid('rooms: must be a room name or an array of room names'));
    assert.deepEqual(await emit({ event: 'x', rooms: ['a', ''] }), invalid('rooms: must be a room name or an array of room names'));
    assert.deepEqual(await emit({ event: 'x', except: [1] }), invalid('except: must be a room name or an array of room names'));

    const notify = async (body) => answer(await api('POST', '/api/v1/notifications', body));
    const n = { type: 't', title: 'x' };
    assert.deepEqual(await notify({ notification: n }), invalid('userIds: is required'));
    assert.deepEqual(await notify({ userIds: 'u1', notification: n }), invalid('userIds: must be an array'));
    assert.deepEqual(await notify({ userIds: [], notification: n }), invalid('userIds: must have 1 to 10000 items'));
    assert.deepEqual(await notify({ userIds: ['a', ''], notification: n }),
      invalid('userIds[1]: must be an id (string of 1-128 characters or non-negative integer)'));
    assert.deepEqual(await notify({ userIds: ['a'] }), invalid('notification: is required'));
    assert.deepEqual(await notify({ userIds: ['a'], notification: [] }), invalid('notification: must be an object'));
    assert.deepEqual(await notify({ userIds: ['a'], notification: {} }), invalid('notification.type: is required'));
    assert.deepEqual(await notify({ userIds: ['a'], notification: { type: 't' } }), invalid('notification.title: is required'));
    assert.deepEqual(await notify({ userIds: ['a'], notification: { ...n, body: 3 } }), invalid('notification.body: must be a string'));
    assert.deepEqual(await notify({ userIds: ['a'], notification: { ...n, data: 5 } }), invalid('notification.data: must be an object'));

    assert.deepEqual(answer(await api('POST', '/api/v1/disconnect', {})), invalid('userId: is required'));
    assert.deepEqual(answer(await api('POST', '/api/v1/disconnect', { userId: -2 })),
      invalid('userId: must be an id (string of 1-128 characters or non-negative integer)'));
  });

  test('without api_key the API is off: every API path answers 404', async (t, ctx) => {
    const port = await freePort();
    const off = await ctx.startServer({
      port, workers: 1, probe: false, modules: ['auth_jwt.so', 'notifications.so', 'api.so'], serverBlock: serverBlock(port, []),
    });
    const notFound = { status: 404, body: { error: { code: 'NOT_FOUND', message: 'Not found' } } };
    assert.deepEqual(answer(await api('POST', '/api/v1/emit', { event: 'x' }, { srv: off })), notFound);
    assert.deepEqual(answer(await api('GET', '/api/v1/emit', undefined, { srv: off })), notFound);
    assert.deepEqual(answer(await api('GET', '/api/v1/stats', undefined, { srv: off, key: null })), notFound);
  });
});

describe('HTTP API: emit, notifications, disconnect, stats', () => {
  test('emit to one room, to several rooms (each socket once), all but some rooms, a whole namespace', async () => {
    const a = await client(0, '/', 'e-a');
    const b = await client(1, '/', 'e-b');
    const c = await client(1, '/', 'e-c');
    const chat = await client(0, '/chat', 'e-a');
    const all = [a, b, c, chat];
    await listening([a], 'user:e-a');
    await listening([b], 'user:e-b');
    await listening([a], a.s.id);
    const got = (cl, ev) => cl.inbox.of(ev).map((args) => payload(cl.s, args));

    // One room, data given.
    let r = await emitAndFence(all, { rooms: 'user:e-a', event: 'one', data: { x: 1 } });
    assert.deepEqual(r, { data: { namespace: '/', rooms: ['user:e-a'], except: [], event: 'one' } });
    assert.deepEqual(all.map((cl) => got(cl, 'one')), [[[{ x: 1 }]], [], [], []]);

    // Several rooms: a is in two of them and gets it once.
    r = await emitAndFence(all, { namespace: '/', rooms: ['user:e-a', a.s.id, 'user:e-b'], event: 'two', data: [1, 'two'] });
    assert.deepEqual(r.data.rooms, ['user:e-a', a.s.id, 'user:e-b']);
    assert.deepEqual(all.map((cl) => got(cl, 'two')), [[[[1, 'two']]], [[[1, 'two']]], [], []]);

    // The whole namespace but some rooms.
    r = await emitAndFence(all, { except: ['user:e-b'], event: 'three', data: 'text' });
    assert.deepEqual(r.data, { namespace: '/', rooms: [], except: ['user:e-b'], event: 'three' });
    assert.deepEqual(all.map((cl) => got(cl, 'three').length), [1, 0, 1, 0]);
    assert.equal(a.inbox.of('three')[0][0], 'text');

    // A whole namespace, no data: an event without arguments.
    r = await emitAndFence(all, { namespace: '/chat', event: 'four' });
    assert.deepEqual(r.data, { namespace: '/chat', rooms: [], except: [], event: 'four' });
    assert.deepEqual(all.map((cl) => got(cl, 'four')), [[], [], [], [[]]]);
  });

  test('notifications: one id per call shared by its recipients, ids as strings, duplicates once; pushed to each', async () => {
    const u1 = await client(0, '/notifications', '7');
    const u2 = await client(1, '/notifications', 'api-u2');
    await listening([u1], 'user:7');
    await listening([u2], 'user:api-u2');
    const r = await api('POST', '/api/v1/notifications', {
      userIds: [7, '7', 'api-u2', 'api-u2'], notification: { type: 'mention', title: 'Hi', data: { by: 'x' } },
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const n = r.body.data.notification;
    assert.deepEqual(r.body, {
      data: {
        notification: { id: n.id, type: 'mention', title: 'Hi', body: '', data: { by: 'x' }, createdAt: n.createdAt, read: false },
        userIds: ['7', 'api-u2'],
      },
    });
    assert.match(n.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.match(n.createdAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    assert.ok(Math.abs(Date.parse(n.createdAt) - Date.now()) < 60000);
    for (const cl of [u1, u2]) {
      const [args] = await Promise.all([cl.inbox.wait('notification:new')]);
      assert.deepEqual(payload(cl.s, args), [n]);
    }
    // A second call gets its own id.
    const r2 = await api('POST', '/api/v1/notifications', { userIds: ['7'], notification: { type: 'x', title: 'y', body: 'z' } });
    assert.notEqual(r2.body.data.notification.id, n.id);
    assert.equal(r2.body.data.notification.body, 'z');
  });

  test('disconnect closes every socket of the user in every namespace on both processes; others stay', async () => {
    const targets = [await client(0, '/', 'd-x'), await client(1, '/chat', 'd-x'), await client(0, '/notifications', 'd-x'),
      await client(1, '/notifications', 'd-x')];
    const keep = [await client(0, '/', 'd-keep'), await client(1, '/chat', 'd-keep')];
    // Chosen by identity, not by room: a socket that left user:d-x is reached,
    // an admin who joined it (subscribed to d-x's notifications) is not.
    assert.deepEqual(await targets[3].s.timeout(5000).emitWithAck('notifications:unsubscribe', { userId: 'd-x' }), { data: { userId: 'd-x' } });
    const admin = await scope.connect(servers[0], '/notifications', { userId: 'd-admin', role: 'admin' });
    assert.deepEqual(await admin.timeout(5000).emitWithAck('notifications:subscribe', { userId: 'd-x' }), { data: { userId: 'd-x' } });
    const gone = targets.map((cl) => once(cl.s, 'disconnect'));
    const r = await api('POST', '/api/v1/disconnect', { userId: 'd-x' }, { srv: servers[1] });
    assert.deepEqual(answer(r), { status: 200, body: { data: { userId: 'd-x' } } });
    for (const reason of await Promise.all(gone)) assert.deepEqual(reason.slice(0, 1), ['io server disconnect']);
    await listening([keep[0]], 'user:d-keep');
    await emitAndFence(keep, { rooms: 'user:d-keep', event: 'still-here' });
    assert.ok(keep.every((cl) => cl.s.connected));
    assert.deepEqual(await admin.timeout(5000).emitWithAck('notifications:unsubscribe', { userId: 'd-x' }), { data: { userId: 'd-x' } });
    // A numeric id names the same user as its decimal string.
    const num = await client(1, '/', '55');
    const numGone = once(num.s, 'disconnect');
    assert.equal((await api('POST', '/api/v1/disconnect', { userId: 55 })).body.data.userId, '55');
    assert.deepEqual((await numGone).slice(0, 1), ['io server disconnect']);
  });

  test('stats: the node\'s figures', async () => {
    const r = await api('GET', '/api/v1/stats');
    assert.equal(r.status, 200);
    const d = r.body.data;
    assert.equal(typeof d.connections, 'number');
    assert.deepEqual(Object.keys(d.namespaces).sort(), [...NAMESPACES].sort());
    for (const v of Object.values(d.namespaces)) assert.deepEqual(Object.keys(v).sort(), ['rooms', 'sockets']);
    assert.equal(typeof d.eventsPerSecond, 'number');
    assert.deepEqual(d.redis, { status: 'ready' });
    assert.equal(d.node.pid, servers[0].pid);
    assert.equal(typeof d.node.uptimeSeconds, 'number');
    assert.ok(Array.isArray(d.workers));
  });
});
