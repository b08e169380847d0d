// The shipped configuration (conf/depth-realtime.conf with modules-enabled/),
// run as a user runs it, with the seed's environment variables and a real
// Redis: one pass through every module, as a client app and a backend would.
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import {
  test, startServer, startRedis, freePort, request, token, once, waitFor, SOURCE_DIR,
} from './lib/harness.mjs';

const SECRET = 'shipped-conf-secret';
const API_KEY = 'shipped-conf-api-key';
const ORIGIN = 'https://app.example.com';

let redis;
let srv;
let metricsPort;
before(async () => {
  redis = await startRedis();
  const port = await freePort();
  metricsPort = await freePort();
  srv = await startServer({
    conf: path.join(SOURCE_DIR, 'conf', 'depth-realtime.conf'),
    port,
    healthPort: metricsPort,
    workers: os.cpus().length,
    env: {
      PORT: String(port),
      JWT_SECRET: SECRET,
      CLIENT_URL: `${ORIGIN},http://localhost:3000`,
      REDIS_HOST: '127.0.0.1',
      REDIS_PORT: String(redis.port),
      API_KEY,
      METRICS_PORT: `127.0.0.1:${metricsPort}`,
    },
  });
});
after(async () => {
  await srv?.stop();
  await redis?.stop();
});

const jwt = (userId, extra) => token(userId, extra, { secret: SECRET });
const connect = (ctx, nsp, userId, extra = {}, auth = {}) =>
  ctx.connect(srv, nsp, { auth: { token: jwt(userId, extra), ...auth } });
const api = (method, p, body) => request(srv, {
  method, path: p, body: body === undefined ? undefined : JSON.stringify(body),
  headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
});
// Events carry their recovery offset as a last argument (recovery is on with Redis).
const first = (args) => args[0];

test('health and metrics on METRICS_PORT; CORS from CLIENT_URL', async () => {
  const h = await request({ port: metricsPort }, { path: '/healthz' });
  assert.deepEqual([h.status, h.text], [200, '{"status":"ok"}']);
  await waitFor(async () => (await request({ port: metricsPort }, { path: '/readyz' })).status === 200, { what: '/readyz' });
  assert.equal((await request(srv, { path: '/metrics' })).status, 404, 'metrics are not on the main port');
  const pre = await request(srv, { method: 'OPTIONS', path: '/socket.io/?EIO=4&transport=polling', headers: { origin: ORIGIN } });
  assert.equal(pre.headers['access-control-allow-origin'], ORIGIN);
  assert.equal(pre.headers['access-control-allow-credentials'], 'true');
});

test('chat: members send, the room receives both event styles, history reads the stream', async (t, ctx) => {
  await redis.cli('SADD', 'depth:conversation:c1:members', 'alice', 'bob');
  const alice = await connect(ctx, '/chat', 'alice');
  const bob = await connect(ctx, '/chat', 'bob');
  assert.deepEqual(await bob.emitWithAck('chat:join', { conversationId: 'c1' }), { data: { conversationId: 'c1' } });
  const got = Promise.all([once(bob, 'chat:message'), once(bob, 'message:new')]);
  const sent = await alice.emitWithAck('chat:message', { conversationId: 'c1', content: 'hello' });
  assert.equal(sent.data.senderId, 'alice');
  const [a, b] = await got;
  assert.deepEqual(first(a), sent.data);
  assert.deepEqual(first(b), sent.data);
  const history = await bob.emitWithAck('chat:history', { conversationId: 'c1' });
  assert.deepEqual(history.data[0], sent.data);
  const eve = await connect(ctx, '/chat', 'eve');
  assert.equal((await eve.emitWithAck('chat:message', { conversationId: 'c1', content: 'x' })).error.code, 'FORBIDDEN');
});

test('projects with a token claim; progress batched for clients that ask', async (t, ctx) => {
  const alice = await connect(ctx, '/projects', 'alice', { projects: ['p1'] });
  const watcher = await connect(ctx, '/projects', 'bob', { projects: ['p1'] }, { batch: true });
  await watcher.emitWithAck('project:join', { projectId: 'p1' });
  const batch = once(watcher, 'batch');
  const r = await alice.emitWithAck('project:progress', { projectId: 'p1', progress: 40 });
  assert.equal(r.data.kind, 'progress');
  const items = first(await batch);
  assert.deepEqual(items, [{ event: 'project:update', data: r.data }]);
});

test('a notification created through the HTTP API reaches the subscribed user, and waits for an offline one', async (t, ctx) => {
  const n = await connect(ctx, '/notifications', 'alice');
  await n.emitWithAck('notifications:subscribe', { userId: 'alice' });
  const live = once(n, 'notification:new');
  const res = await api('POST', '/api/v1/notifications', { userIds: ['alice', 'carol'], notification: { type: 'mention', title: 'Hi' } });
  assert.equal(res.status, 200);
  const created = JSON.parse(res.text).data.notification;
  assert.deepEqual(first(await live), created);
  const carol = await connect(ctx, '/notifications', 'carol');
  const offline = once(carol, 'notification:new');
  await carol.emitWithAck('notifications:subscribe', { userId: 'carol' });
  assert.deepEqual(first(await offline), created);
  assert.equal((await request(srv, { method: 'POST', path: '/api/v1/emit', body: '{}' })).status, 401);
});

test('/admin for admins: stats; others refused', async (t, ctx) => {
  const admin = await connect(ctx, '/admin', 'root', { role: 'admin' });
  const stats = await admin.emitWithAck('admin:stats');
  assert.equal(stats.data.redis.status, 'ready');
  assert.ok(stats.data.namespaces['/chat']);
  const err = await ctx.connectError(srv, '/admin', { auth: { token: jwt('alice') } });
  assert.deepEqual([err.message, err.data.code], ['Forbidden', 'FORBIDDEN']);
});

test('the seed\'s rate limit: 100 events per user per 60 s, then RATE_LIMITED; counted on /metrics', async (t, ctx) => {
  const s = await connect(ctx, '/chat', 'dave');
  let refused = null;
  for (let i = 0; i < 101 && !refused; i++) {
    const r = await s.emitWithAck('chat:leave', { conversationId: 'c1' });
    if (r.error) refused = { i, error: r.error };
  }
  assert.equal(refused?.i, 100, 'the 101st event is the first refused');
  assert.equal(refused.error.code, 'RATE_LIMITED');
  assert.ok(refused.error.retryAfterMs > 0 && refused.error.retryAfterMs <= 60000);
  const m = await request({ port: metricsPort }, { path: '/metrics' });
  assert.match(m.text, /depth_realtime_rate_limited_total\{kind="event"\} [1-9]/);
  assert.match(m.text, /websocket_connections_total\{namespace="\/chat"\} [1-9]/);
});
