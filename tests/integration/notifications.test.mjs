// The /notifications namespace (module notifications) and the inbox it shares
// with the HTTP API (module api): subscribe delivers the unread inbox oldest
// first before its ack, read marks sync to the user's other devices,
// unsubscribe stops live pushes, pushes from @socket.io/redis-emitter, the
// Redis layout backends read, the inbox bound, and Redis failures.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { createClient } from 'redis';
import { Emitter } from '@socket.io/redis-emitter';
import {
  test, Scope, startServer, startRedis, redisLines, ack, once, Inbox, request, waitFor, waitSubscribed, workerOf,
  freePort, makeJwt,
} from './lib/harness.mjs';

const KEY = 'test-api-key-0123456789';
const NSP = '/notifications';
const INBOX_MAX = 4;

let redis;
let srv;
let scope;
let pub;  // node-redis client for the emitter

const serverBlock = (port, r) => [
  `listen 127.0.0.1:${port};`,
  'auth_jwt_secret integration-test-secret;',
  'namespace /;',
  'namespace /chat;',
  `namespace ${NSP};`,
  'namespace /admin { auth_jwt_require_role admin; }',
  `api_key ${KEY};`,
  `api_inbox_max ${INBOX_MAX};`,
  redisLines(r),
].join('\n');

async function start(r, opts = {}) {
  const port = await freePort();
  return startServer({
    port, workers: 2, probe: false, modules: ['auth_jwt.so', 'notifications.so', 'api.so'],
    serverBlock: serverBlock(port, r), ...opts,
  });
}

before(async () => {
  redis = await startRedis();
  srv = await start(redis);
  scope = new Scope(null);
  pub = createClient({ url: redis.url });
  await pub.connect();
}, { timeout: 30000 });

after(async () => {
  await pub?.quit().catch(() => {});
  await scope?.cleanup();
  await srv?.stop();
  await redis?.stop();
});

// POST to the API; resolves {status, body (parsed)}.
async function api(path, body, { server = srv, key = KEY } = {}) {
  const r = await request(server, {
    method: 'POST', path, body: JSON.stringify(body),
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
  });
  return { status: r.status, body: JSON.parse(r.text) };
}

async function notify(userIds, notification) {
  const r = await api('/api/v1/notifications', { userIds, notification });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.data.notification;
}

// With connection state recovery (on with Redis) each event ends with its offset.
const payload = (s, args) => (s._pid && typeof args.at(-1) === 'string' ? args.slice(0, -1) : args);

// Broadcasts from other workers reach a room once its workers listen on it.
async function listening(sockets, room) {
  const workers = new Set(await Promise.all(sockets.map((s) => workerOf(srv, s))));
  await waitSubscribed(redis, room, workers.size, { nsp: NSP });
}

// Everything the server sent this socket before now has arrived.
async function fence(s) {
  const tag = `fence-${Math.random()}`;
  const got = new Promise((resolve) => {
    const fn = (event, ...args) => { if (event === tag) { s.offAny(fn); resolve(args); } };
    s.onAny(fn);
  });
  const r = await api('/api/v1/emit', { namespace: NSP, rooms: s.id, event: tag });
  assert.equal(r.status, 200);
  await got;
}

const connect = (userId, opts = {}) => scope.connect(srv, NSP, { userId, ...opts });

// Subscribes and records what arrived, in order, the ack included.
async function subscribe(s, userId) {
  const seen = [];
  const fn = (event, ...args) => { if (event === 'notification:new') seen.push(['notification:new', payload(s, args)[0]]); };
  s.onAny(fn);
  const reply = await ack(s, 'notifications:subscribe', { userId });
  s.offAny(fn);
  seen.push(['ack', reply]);
  return seen;
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('notifications', () => {
  test('subscribe to one\'s own id: ack {data:{userId}}; numeric ids as decimal strings', async () => {
    const s = await connect('n-own');
    assert.deepEqual(await subscribe(s, 'n-own'), [['ack', { data: { userId: 'n-own' } }]]);
    const num = await scope.connect(srv, NSP, { auth: { token: makeJwt({ userId: 42 }) } });
    assert.deepEqual(await ack(num, 'notifications:subscribe', { userId: 42 }), { data: { userId: '42' } });
    assert.deepEqual(await ack(num, 'notifications:subscribe', { userId: '42' }), { data: { userId: '42' } });
  });

  test('another user\'s id is FORBIDDEN (ack or error event); an admin may, and gets that inbox', async () => {
    const s = await connect('n-forb');
    const forbidden = { code: 'FORBIDDEN', message: 'Forbidden', details: 'userId: not your own user id' };
    assert.deepEqual(await ack(s, 'notifications:subscribe', { userId: 'n-victim' }), { error: forbidden });
    assert.deepEqual(await ack(s, 'notifications:unsubscribe', { userId: 'n-victim' }), { error: forbidden });
    const err = once(s, 'error');
    s.emit('notifications:subscribe', { userId: 'n-victim' });
    assert.deepEqual(payload(s, await err), [forbidden]);

    const n = await notify(['n-victim'], { type: 'info', title: 'for the victim' });
    const admin = await connect('n-admin', { role: 'admin' });
    assert.deepEqual(await subscribe(admin, 'n-victim'),
      [['notification:new', n], ['ack', { data: { userId: 'n-victim' } }]]);
    // The admin now gets the user's live pushes too.
    await listening([admin], 'user:n-victim');
    const live = once(admin, 'notification:new');
    const n2 = await notify(['n-victim'], { type: 'info', title: 'live' });
    assert.deepEqual(payload(admin, await live), [n2]);
  });

  test('offline delivery: stored while offline, delivered oldest first before the subscribe ack', async () => {
    const first = await notify(['n-off'], { type: 'message', title: 'one', body: 'first', data: { k: 1 } });
    const second = await notify(['n-off', 'n-other'], { type: 'message', title: 'two' });
    const third = await notify(['n-off'], { type: 'alert', title: 'three', data: { nested: { a: [1, 2] } } });
    assert.deepEqual(third, {
      id: third.id, type: 'alert', title: 'three', body: '', data: { nested: { a: [1, 2] } }, createdAt: third.createdAt, read: false,
    });
    assert.match(third.id, UUID);
    assert.match(third.createdAt, ISO);
    const s = await connect('n-off');
    assert.deepEqual(await subscribe(s, 'n-off'), [
      ['notification:new', first], ['notification:new', second], ['notification:new', third],
      ['ack', { data: { userId: 'n-off' } }],
    ]);
    // Subscribing again delivers them again: they are still unread.
    assert.equal((await subscribe(s, 'n-off')).length, 4);
  });

  test('multi-device read: the other device gets notification:read, the reader does not; read ones are not redelivered', async () => {
    const a = await connect('n-multi');
    const b = await connect('n-multi');
    await subscribe(a, 'n-multi');
    await subscribe(b, 'n-multi');
    await listening([a, b], 'user:n-multi');
    const inA = new Inbox(a, ['notification:new', 'notification:read']);
    const inB = new Inbox(b, ['notification:new', 'notification:read']);
    const n1 = await notify(['n-multi'], { type: 't', title: 'one' });
    const n2 = await notify(['n-multi'], { type: 't', title: 'two' });
    await inA.wait('notification:new', (x) => x[0].id === n2.id);
    await inB.wait('notification:new', (x) => x[0].id === n2.id);
    assert.deepEqual(inA.of('notification:new').map((x) => payload(a, x)), [[n1], [n2]]);

    assert.deepEqual(await ack(a, 'notification:read', { notificationId: n1.id }), { data: { notificationId: n1.id } });
    const [got] = await inB.wait('notification:read');
    assert.deepEqual(got, { notificationId: n1.id });
    await fence(a);
    assert.deepEqual(inA.of('notification:read'), []);
    assert.equal(inB.of('notification:read').length, 1);
    assert.equal(await redis.cli('SISMEMBER', 'depth:notifications:n-multi:unread', n1.id).then(Number), 0);

    // Reading again is fine (still in the inbox); a new device gets only the unread one.
    assert.deepEqual(await ack(b, 'notification:read', { notificationId: n1.id }), { data: { notificationId: n1.id } });
    const c = await connect('n-multi');
    assert.deepEqual(await subscribe(c, 'n-multi'),
      [['notification:new', n2], ['ack', { data: { userId: 'n-multi' } }]]);
  });

  test('read of a notification not in one\'s inbox is NOT_FOUND and changes nothing', async () => {
    const n = await notify(['n-owner'], { type: 't', title: 'mine' });
    const thief = await connect('n-thief');
    const notFound = { code: 'NOT_FOUND', message: 'Not found', details: 'notificationId: not in your inbox' };
    assert.deepEqual(await ack(thief, 'notification:read', { notificationId: n.id }), { error: notFound });
    assert.deepEqual(await ack(thief, 'notification:read', { notificationId: 'no-such-id' }), { error: notFound });
    const err = once(thief, 'error');
    thief.emit('notification:read', { notificationId: n.id });
    assert.deepEqual(payload(thief, await err), [notFound]);
    const owner = await connect('n-owner');
    assert.deepEqual(await subscribe(owner, 'n-owner'), [['notification:new', n], ['ack', { data: { userId: 'n-owner' } }]]);
  });

  test('unsubscribe leaves user:<id>: live pushes stop for that socket only; subscribe brings them back from the inbox', async () => {
    const a = await connect('n-unsub');
    const b = await connect('n-unsub');
    await listening([a, b], 'user:n-unsub');
    assert.deepEqual(await ack(a, 'notifications:unsubscribe', { userId: 'n-unsub' }), { data: { userId: 'n-unsub' } });
    await listening([b], 'user:n-unsub');
    const inA = new Inbox(a, ['notification:new']);
    const atB = once(b, 'notification:new');
    const n = await notify(['n-unsub'], { type: 't', title: 'after unsubscribe' });
    assert.deepEqual(payload(b, await atB), [n]);
    await fence(a);
    assert.deepEqual(inA.of('notification:new'), []);
    assert.deepEqual(await subscribe(a, 'n-unsub'), [['notification:new', n], ['ack', { data: { userId: 'n-unsub' } }]]);
    await listening([a, b], 'user:n-unsub');
    const again = once(a, 'notification:new');
    const n2 = await notify(['n-unsub'], { type: 't', title: 'live again' });
    assert.deepEqual(payload(a, await again), [n2]);
  });

  test('validation: unknown events, missing and bad ids are INVALID_DATA', async () => {
    const s = await connect('n-valid');
    const bad = (details) => ({ error: { code: 'INVALID_DATA', message: 'Invalid data', details } });
    assert.deepEqual(await ack(s, 'notifications:nope', {}), bad('event: unknown event "notifications:nope"'));
    assert.deepEqual(await ack(s, 'notifications:subscribe', {}), bad('userId: is required'));
    assert.deepEqual(await ack(s, 'notifications:subscribe', { userId: null }), bad('userId: is required'));
    assert.deepEqual(await ack(s, 'notifications:unsubscribe', { userId: '' }),
      bad('userId: must be an id (string of 1-128 characters or non-negative integer)'));
    assert.deepEqual(await ack(s, 'notification:read', { notificationId: 'x'.repeat(129) }),
      bad('notificationId: must be an id (string of 1-128 characters or non-negative integer)'));
    assert.deepEqual(await ack(s, 'notification:read', { notificationId: -1 }),
      bad('notificationId: must be an id (string of 1-128 characters or non-negative integer)'));
    assert.deepEqual(await ack(s, 'notification:read', 'text'), bad('payload: must be an object'));
    const err = once(s, 'error');
    s.emit('notification:unknown');
    assert.deepEqual(payload(s, await err), [{ code: 'INVALID_DATA', message: 'Invalid data', details: 'event: unknown event "notification:unknown"' }]);
  });

  test('@socket.io/redis-emitter: of("/notifications").to("user:42").emit("notification:new", n) reaches the client', async () => {
    const s = await scope.connect(srv, NSP, { auth: { token: makeJwt({ userId: 42 }) } });
    await listening([s], 'user:42');
    const got = once(s, 'notification:new');
    const n = { id: 'from-backend-1', type: 'info', title: 'Hello', body: '', data: {}, createdAt: new Date().toISOString(), read: false };
    new Emitter(pub).of(NSP).to('user:42').emit('notification:new', n);
    assert.deepEqual(payload(s, await got), [n]);
  });

  test('Redis layout: items hash (JSON without read), order list oldest first, unread set', async () => {
    const n1 = await notify(['n-layout'], { type: 't', title: 'one', data: { x: 1 } });
    const n2 = await notify(['n-layout'], { type: 't', title: 'two' });
    const items = await pub.hGetAll('depth:notifications:n-layout:items');
    const { read, ...stored1 } = n1;
    assert.equal(read, false);
    assert.deepEqual(JSON.parse(items[n1.id]), stored1);
    assert.deepEqual(Object.keys(items).sort(), [n1.id, n2.id].sort());
    assert.deepEqual(await pub.lRange('depth:notifications:n-layout:order', 0, -1), [n1.id, n2.id]);
    assert.deepEqual((await pub.sMembers('depth:notifications:n-layout:unread')).sort(), [n1.id, n2.id].sort());
  });

  test(`an inbox keeps the newest ${INBOX_MAX}: older ones are dropped from all three keys`, async () => {
    const all = [];
    for (let i = 0; i < INBOX_MAX + 2; i++) all.push(await notify(['n-cap'], { type: 't', title: `n${i}` }));
    const kept = all.slice(2);
    assert.deepEqual(await pub.lRange('depth:notifications:n-cap:order', 0, -1), kept.map((n) => n.id));
    assert.equal(await pub.hLen('depth:notifications:n-cap:items'), INBOX_MAX);
    assert.equal(await pub.sCard('depth:notifications:n-cap:unread'), INBOX_MAX);
    const s = await connect('n-cap');
    assert.deepEqual(await subscribe(s, 'n-cap'),
      [...kept.map((n) => ['notification:new', n]), ['ack', { data: { userId: 'n-cap' } }]]);
  });

  test('a recipient whose keys are not an inbox fails the call for all: nothing half-stored', async () => {
    await pub.set('depth:notifications:n-broken:order', 'not a list');
    const r = await api('/api/v1/notifications', { userIds: ['n-fine', 'n-broken'], notification: { type: 't', title: 'x' } });
    assert.equal(r.status, 500);
    assert.equal(r.body.error.code, 'INTERNAL');
    assert.match(r.body.error.details, /^the notification was not stored: WRONGTYPE/);
    assert.equal(await pub.exists('depth:notifications:n-fine:items'), 0);
    assert.equal(await pub.exists('depth:notifications:n-fine:order'), 0);
  });
});

describe('notifications while Redis is away', () => {
  test('the API answers 503 and pushes nothing; subscribe and read answer SOCKET_ERROR; all works again after', { timeout: 40000 }, async (t, ctx) => {
    const r2 = await startRedis({ t });
    const port = await freePort();
    const s2 = await ctx.startServer({
      port, workers: 1, probe: false, modules: ['auth_jwt.so', 'notifications.so', 'api.so'], serverBlock: serverBlock(port, r2),
    });
    const s = await ctx.connect(s2, NSP, { userId: 'n-down' });
    const inbox = new Inbox(s, ['notification:new']);
    await r2.stop();
    await waitFor(async () => (await request(s2, { path: '/readyz' })).status === 503, { what: 'readyz 503' });
    const r = await api('/api/v1/notifications', { userIds: ['n-down'], notification: { type: 't', title: 'lost' } }, { server: s2 });
    assert.deepEqual(r, {
      status: 503,
      body: { error: { code: 'UNAVAILABLE', message: 'Service unavailable', details: 'the notification was not stored: Redis unavailable' } },
    });
    const sub = await ack(s, 'notifications:subscribe', { userId: 'n-down' });
    assert.deepEqual(sub, { error: { code: 'SOCKET_ERROR', message: 'A connection error occurred', details: 'cannot read the inbox: Redis unavailable' } });
    const rd = await ack(s, 'notification:read', { notificationId: 'x' });
    assert.deepEqual(rd, { error: { code: 'SOCKET_ERROR', message: 'A connection error occurred', details: 'cannot mark the notification read: Redis unavailable' } });
    assert.deepEqual(inbox.of('notification:new'), []);
    assert.ok(s.connected);

    await r2.start();
    await waitFor(async () => (await request(s2, { path: '/readyz' })).status === 200, { ms: 15000, what: 'readyz 200' });
    const ok = await api('/api/v1/notifications', { userIds: ['n-down'], notification: { type: 't', title: 'kept' } }, { server: s2 });
    assert.equal(ok.status, 200);
    const [n] = await inbox.wait('notification:new');
    assert.equal(n.title, 'kept');
    assert.deepEqual(await ack(s, 'notifications:subscribe', { userId: 'n-down' }), { data: { userId: 'n-down' } });
  });
});
