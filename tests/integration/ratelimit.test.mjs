// The ratelimit module (contract §4 and §8 "Rate limit"): a per-user sliding
// window over every received event (batch items one by one, invalid events
// too, refused ones not), RATE_LIMITED with retryAfterMs, disconnect after
// persistent abuse, per-namespace settings, the limit across workers and
// nodes through Redis, connections per IP, the metric, and a reload.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, startRedis, writeConf, tmpDir, freePort, token, ack, once, waitFor, sleep, workerOf,
  request, Manager, Scope, connected, SECRET, GREETING,
} from './lib/harness.mjs';

const MODULES = ['auth_jwt.so', 'ratelimit.so'];
const MESSAGE = 'Rate limit exceeded';

// A server block: `/` takes the server-level limit, the others their own.
function block({ port, redis, lines = [] }) {
  return [
    `listen 127.0.0.1:${port};`,
    `auth_jwt_secret ${SECRET};`,
    'client_batch on;',
    `probe_greeting "${GREETING}";`,
    redis ? `redis 127.0.0.1:${redis.port};` : '',
    redis ? 'redis_node_ttl 3s;' : '',
    ...lines,
    'namespace /;',
    'namespace /same;',
    'namespace /chat { ratelimit_events 2 4s; }',
    'namespace /free { ratelimit off; }',
    'namespace /z1 { ratelimit_zone shared; ratelimit_events 3 2s; }',
    'namespace /z2 { ratelimit_zone shared; ratelimit_events 3 2s; }',
  ].filter(Boolean).map((l) => `    ${l}`).join('\n');
}

async function server(ctx, { workers = 1, redis, lines = [] } = {}) {
  const port = await freePort();
  return ctx.startServer({ port, workers, modules: MODULES, serverBlock: block({ port, redis, lines }) });
}

const whoami = (s) => ack(s, 'probe:whoami', {});

// Sends probe:whoami until one is refused (at most `max`); returns how many
// were accepted and the refusal.
async function untilRefused(s, max = 20) {
  for (let n = 0; n < max; n++) {
    const r = await whoami(s);
    if (r.error) return { accepted: n, error: r.error };
    assert.ok(r.data, `unexpected answer ${JSON.stringify(r)}`);
  }
  assert.fail(`no refusal after ${max} events`);
}

function assertLimited(answer, { windowMs, min = 1, max = windowMs }) {
  assert.deepEqual(Object.keys(answer).sort(), ['error'], JSON.stringify(answer));
  const e = answer.error;
  assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'retryAfterMs']);
  assert.equal(e.code, 'RATE_LIMITED');
  assert.equal(e.message, MESSAGE);
  assert.ok(Number.isInteger(e.retryAfterMs), `retryAfterMs ${e.retryAfterMs} is an integer`);
  assert.ok(e.retryAfterMs > 0 && e.retryAfterMs <= windowMs, `retryAfterMs ${e.retryAfterMs} in (0, ${windowMs}]`);
  assert.ok(e.retryAfterMs >= min && e.retryAfterMs <= max, `retryAfterMs ${e.retryAfterMs} in [${min}, ${max}]`);
  return e;
}

// Events Redis counts for one user (all buckets of a zone), without the leases.
async function redisCount(redis, zone, user) {
  const out = await redis.cli('EVAL',
    "local s = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do for _, v in ipairs(redis.call('HVALS', k)) do s = s + tonumber(v) end end return s",
    '0', `depth:ratelimit:{${zone}|u:${user}}:*:b`);  // zone|window|subject
  return Number(out.trim());
}

async function scrape(srv) {
  const r = await request(srv, { path: '/metrics' });
  assert.equal(r.status, 200);
  return r.text;
}
const metricValue = (text, series) => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

// ------------------------------------------------ one worker, with Redis

describe('events, one worker (limit 5 per 2 s; /chat 2 per 4 s)', () => {
  let redis;
  let srv;
  let scope;
  before(async () => {
    redis = await startRedis();
    scope = new Scope(null);
    srv = await server(scope, { redis, lines: ['ratelimit_events 5 2s;', 'ratelimit_sync_interval 50ms;'] });
  });
  after(async () => {
    await scope.cleanup();
    await redis.stop();
  });

  test('over the limit: RATE_LIMITED with retryAfterMs, to the ack or as the error event, never both', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { userId: 'u-exact' });
    const errors = [];
    s.on('error', (e) => errors.push(e));
    const t0 = Date.now();
    assert.equal((await whoami(s)).data.userId, 'u-exact');
    const t1 = Date.now();  // the oldest event was counted within [t0, t1]
    for (let i = 1; i < 5; i++) assert.equal((await whoami(s)).data.userId, 'u-exact', `event ${i + 1} accepted`);
    const tSend = Date.now();
    const refusal = await whoami(s);
    const tAck = Date.now();  // ... and the refusal within [tSend, tAck]
    // retryAfterMs: until the oldest counted event leaves the window (2000 ms after it came).
    assertLimited(refusal, { windowMs: 2000, min: t0 + 2000 - tAck - 1, max: t1 + 2000 - tSend + 1 });

    // Without an ack: the `error` event, same shape.
    const got = once(s, 'error');
    s.emit('probe:whoami', {});
    const [e] = await got;
    assertLimited({ error: e }, { windowMs: 2000 });
    // The acked refusal raised no error event.
    assert.equal(errors.length, 1);
    assert.ok(s.connected);
  });

  test('the window slides; refused events use no budget', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { userId: 'u-slide' });
    const t0 = Date.now();
    for (let i = 0; i < 5; i++) assert.ok((await whoami(s)).data);
    const burst = Date.now() - t0;
    // Four refusals spread over the window (not more than the limit: no disconnect).
    let last;
    for (let i = 0; i < 4; i++) {
      last = assertLimited(await whoami(s), { windowMs: 2000 });
      await sleep(250);
    }
    // When the oldest accepted event has left, so have the other four (sent
    // within `burst` ms); had the refusals counted, they would still be in it.
    await sleep(last.retryAfterMs + burst + 20);
    for (let i = 0; i < 5; i++) assert.ok((await whoami(s)).data, `event ${i + 1} of the new window accepted`);
    assertLimited(await whoami(s), { windowMs: 2000 });
  });

  test('batch items count one by one (malformed ones too), the envelope does not', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { userId: 'u-batch' });
    const answer = await ack(s, 'batch', [
      { event: 'probe:whoami', data: {} },
      { event: 'probe:whoami', data: {} },
      { event: 'probe:whoami', data: {} },
      { event: 'probe:whoami', data: {} },
      { nope: true },
    ]);
    assert.equal(answer.data.length, 5);
    for (let i = 0; i < 4; i++) assert.equal(answer.data[i].data.userId, 'u-batch', `item ${i}`);
    // The fifth item is the fifth event: within the limit, refused as malformed.
    assert.equal(answer.data[4].error.code, 'INVALID_DATA');
    // ... and it counted.
    assertLimited(await whoami(s), { windowMs: 2000 });
    const over = await ack(s, 'batch', [{ event: 'probe:whoami', data: {} }, { nope: true }]);
    assert.equal(over.data.length, 2);
    for (const item of over.data) assertLimited(item, { windowMs: 2000 });
  });

  test('invalid and unknown events count before validation', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { userId: 'u-invalid' });
    assert.equal((await ack(s, 'probe:join', {})).error.code, 'INVALID_DATA');
    assert.equal((await ack(s, 'probe:join', { room: 42 })).error.code, 'INVALID_DATA');
    s.emit('no:such:event', {});
    s.emit('no:such:event', {});
    assert.ok((await whoami(s)).data, 'the fifth event');
    assertLimited(await whoami(s), { windowMs: 2000 });
    // The limit comes first: over it, an invalid event is RATE_LIMITED, not INVALID_DATA.
    assertLimited(await ack(s, 'probe:join', {}), { windowMs: 2000 });
  });

  test('auth:refresh counts as any event (each costs a token check): a flood of them is limited too', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { userId: 'u-refresh' });
    for (let i = 0; i < 5; i++) {
      const r = await ack(s, 'auth:refresh', { token: token('u-refresh') });
      assert.ok(r.data && 'expiresAt' in r.data, `refresh ${i + 1} accepted: ${JSON.stringify(r)}`);
    }
    assertLimited(await ack(s, 'auth:refresh', { token: token('u-refresh') }), { windowMs: 2000 });
    assertLimited(await whoami(s), { windowMs: 2000 });
  });

  test('one budget per user over all their sockets; other users are not affected', async (t, ctx) => {
    const a = await ctx.connect(srv, '/', { userId: 'u-two' });
    const b = await ctx.connect(srv, '/', { userId: 'u-two' });
    const other = await ctx.connect(srv, '/', { userId: 'u-other' });
    for (let i = 0; i < 3; i++) assert.ok((await whoami(a)).data);
    for (let i = 0; i < 2; i++) assert.ok((await whoami(b)).data);
    assertLimited(await whoami(b), { windowMs: 2000 });
    assertLimited(await whoami(a), { windowMs: 2000 });
    for (let i = 0; i < 5; i++) assert.equal((await whoami(other)).data.userId, 'u-other');
  });

  test('namespaces share the budget of their zone and window; per-namespace limits; `ratelimit off`', async (t, ctx) => {
    const user = 'u-nsp';
    const chat = await ctx.connect(srv, '/chat', { userId: user });
    const free = await ctx.connect(srv, '/free', { userId: user });
    const root = await ctx.connect(srv, '/', { userId: user });
    const same = await ctx.connect(srv, '/same', { userId: user });
    // / and /same: the server-level 5 per 2 s, one budget between them.
    for (let i = 0; i < 3; i++) assert.ok((await whoami(root)).data);
    for (let i = 0; i < 2; i++) assert.ok((await whoami(same)).data);
    assertLimited(await whoami(same), { windowMs: 2000 });
    assertLimited(await whoami(root), { windowMs: 2000 });
    // /chat: 2 per 4 s, another window hence a budget of its own.
    assert.ok((await whoami(chat)).data);
    assert.ok((await whoami(chat)).data);
    assertLimited(await whoami(chat), { windowMs: 4000, min: 2000 });
    // /free: no limit.
    for (let i = 0; i < 30; i++) assert.ok((await whoami(free)).data, `event ${i + 1} on /free`);
    // /z1 and /z2 share the zone "shared": 3 per 2 s between them.
    const z1 = await ctx.connect(srv, '/z1', { userId: user });
    const z2 = await ctx.connect(srv, '/z2', { userId: user });
    assert.ok((await whoami(z1)).data);
    assert.ok((await whoami(z2)).data);
    assert.ok((await whoami(z1)).data);
    assertLimited(await whoami(z2), { windowMs: 2000 });
    assertLimited(await whoami(z1), { windowMs: 2000 });
  });

  test('more refusals than the limit within one window disconnect that namespace socket only', async (t, ctx) => {
    const manager = new Manager(srv.url, { transports: ['websocket'], reconnection: false, forceNew: true });
    const auth = { token: token('u-abuse') };
    const root = manager.socket('/', { auth });
    const chat = manager.socket('/chat', { auth });
    ctx.track(root);
    ctx.track(chat);
    await connected(root);
    await connected(chat);
    const reasons = [];
    root.on('disconnect', (reason) => reasons.push(reason));
    for (let i = 0; i < 5; i++) assert.ok((await whoami(root)).data);
    for (let i = 0; i < 5; i++) assertLimited(await whoami(root), { windowMs: 2000 });
    assert.ok(root.connected, 'five refusals (= the limit) are tolerated');
    const gone = once(root, 'disconnect');
    const error = once(root, 'error');
    root.emit('probe:whoami', {});
    assertLimited({ error: (await error)[0] }, { windowMs: 2000 });
    assert.equal((await gone)[0], 'io server disconnect');
    assert.deepEqual(reasons, ['io server disconnect']);
    // The other namespace of the same connection stays.
    assert.ok(chat.connected);
    assert.ok((await whoami(chat)).data);
  });

  test('the metric counts refused events on /metrics', async () => {
    const text = await scrape(srv);
    assert.match(text, /^# TYPE depth_realtime_rate_limited_total counter$/m);
    assert.ok(metricValue(text, 'depth_realtime_rate_limited_total{kind="event"}') >= 20, text);
    assert.equal(metricValue(text, 'depth_realtime_rate_limited_total{kind="connection"}'), 0);
  });
});

// -------------------------------------------------- Redis away, one worker
// (the limit across workers and nodes: ratelimit-cluster.test.mjs)

test('while Redis is away each worker limits on its own; its counts reach Redis when it is back', async (t, ctx) => {
  const redis = await startRedis({ t });
  const srv = await server(ctx, {
    redis, lines: ['ratelimit_events 5 10s;', 'ratelimit_sync_interval 50ms;', 'ratelimit_lease 1s;'],
  });
  const s = await ctx.connect(srv, '/', { userId: 'u-outage' });
  const count = () => redisCount(redis, 'default|10000', 'u-outage');
  assert.ok((await whoami(s)).data);
  // Near the limit (5) a used share is reported at once.
  await waitFor(async () => (await count()) === 1, { what: 'the first event in Redis' });
  await redis.stop();
  // This worker's own count: 5 in all.
  assert.equal((await untilRefused(s)).accepted, 4);
  await redis.start();  // empty: only what was counted while it was away arrives
  await waitFor(async () => (await count()) === 4, { ms: 15000, what: 'the 4 events counted meanwhile in Redis' });
  assertLimited(await whoami(s), { windowMs: 10000 });
});

// ------------------------------------ connections per IP, two workers, no Redis

test('connections per IP over the workers of a node; limits without Redis; the metric', async (t, ctx) => {
  const srv = await server(ctx, {
    workers: 2,
    lines: ['ratelimit_events 5 2s;', 'ratelimit_connections_per_ip 3;', 'ratelimit_trusted_proxies 127.0.0.1 ::1;'],
  });
  // Behind a trusted proxy the client IP is the last untrusted X-Forwarded-For address.
  const from = (ip, userId = 'u-ip') => ({ userId, extraHeaders: { 'x-forwarded-for': ip } });
  const clients = [];
  for (let i = 0; i < 3; i++) clients.push(await ctx.connect(srv, '/', from('203.0.113.7')));
  const workers = new Set();
  for (const c of clients) workers.add(await workerOf(srv, c));
  assert.equal(workers.size, 2, 'the three connections are spread over both workers');
  // More namespaces over a counted connection are free.
  const chat = clients[0].io.socket('/chat', { auth: { token: token('u-ip') } });
  ctx.track(chat);
  await connected(chat);

  const err = await ctx.connectError(srv, '/', from('203.0.113.7'));
  assert.equal(err.message, 'Too many connections');
  assert.deepEqual(err.data, { code: 'RATE_LIMITED' });
  // The same client through a second proxy hop (trusted): the same IP.
  const err2 = await ctx.connectError(srv, '/chat', from('203.0.113.7, 127.0.0.1'));
  assert.deepEqual(err2.data, { code: 'RATE_LIMITED' });
  // Another IP is not affected; without the header a connection counts for the proxy.
  await ctx.connect(srv, '/', from('203.0.113.8'));
  await ctx.connect(srv, '/', { userId: 'u-ip' });

  // Without Redis each worker still limits its users.
  const s = await ctx.connect(srv, '/', from('198.51.100.1', 'u-local'));
  assert.equal((await untilRefused(s)).accepted, 5);

  const text = await scrape(srv);
  assert.match(text, /^# HELP depth_realtime_rate_limited_total .+/m);
  assert.equal(metricValue(text, 'depth_realtime_rate_limited_total{kind="connection"}'), 2, text);
  assert.equal(metricValue(text, 'depth_realtime_rate_limited_total{kind="event"}'), 1, text);

  // A closed connection frees its place (once the server has seen it go).
  clients[0].disconnect();
  chat.disconnect();
  await waitFor(async () => {
    const again = ctx.socket(srv, '/', from('203.0.113.7'));
    try {
      await connected(again);
      return true;
    } catch {
      again.close();
      return false;
    }
  }, { what: 'a connection from 203.0.113.7 to be admitted again', every: 100 });
});

// --------------------------------------------------------------------- reload

test('SIGHUP with a new limit applies in place, without disconnecting anyone', async (t, ctx) => {
  const dir = tmpDir();
  const port = await freePort();
  const conf = (limit) => writeConf(dir, {
    port, workers: 1, modules: MODULES, serverBlock: block({ port, lines: [`ratelimit_events ${limit} 10s;`] }),
  });
  const srv = await ctx.startServer({ dir, port, conf: conf(3), workers: 1 });
  const s = await ctx.connect(srv, '/', { userId: 'u-reload' });
  const disconnects = [];
  s.on('disconnect', (r) => disconnects.push(r));
  assert.equal((await untilRefused(s)).accepted, 3);

  conf(6);
  const from = srv.logs.length;
  process.kill(srv.pid, 'SIGHUP');
  await waitFor(() => srv.logs.slice(from).some((l) => /worker \d+: configuration applied in place/.test(l)),
    { what: 'the reload to apply in place' });
  // The events counted before the reload still count: 3 more fit in 6.
  assert.equal((await untilRefused(s)).accepted, 3);
  assert.ok(s.connected);
  assert.deepEqual(disconnects, []);
});

test('a reload that starts new workers keeps the connections counted by the old ones', async (t, ctx) => {
  const dir = tmpDir();
  const port = await freePort();
  const port2 = await freePort();
  // A second listener makes the reload start new workers; the old one takes a
  // minute to send its clients away, one connection per slice.
  const conf = (extra) => writeConf(dir, {
    port, workers: 1, modules: MODULES, extraMain: 'worker_shutdown_spread 60s;\nworker_shutdown_timeout 70s;',
    serverBlock: block({
      port, lines: [...extra, 'ratelimit_connections_per_ip 2;', 'ratelimit_trusted_proxies 127.0.0.1 ::1;'],
    }),
  });
  const srv = await ctx.startServer({ dir, port, conf: conf([]), workers: 1 });
  const from = (userId) => ({ userId, extraHeaders: { 'x-forwarded-for': '203.0.113.9' } });
  const old = [await ctx.connect(srv, '/', from('a')), await ctx.connect(srv, '/', from('b'))];
  const firstSentAway = Promise.race(old.map((s) => once(s, 'disconnect', 10000)));

  conf([`listen 127.0.0.1:${port2};`]);
  const since = srv.logs.length;
  process.kill(srv.pid, 'SIGHUP');
  await waitFor(() => srv.logs.slice(since).some((l) => /configuration reloaded \(generation \d+\)/.test(l)),
    { what: 'the reload to start new workers' });
  await firstSentAway;
  // One old connection is left: the new workers admit one more from that IP, not two.
  await ctx.connect(srv, '/', from('c'));
  const err = await ctx.connectError(srv, '/', from('d'));
  assert.equal(err.message, 'Too many connections');
});
