// The event limit across workers and nodes (contract §4: "per user across all
// their sockets, workers and machines"): two server processes on one real
// redis-server, budget leases (module/ratelimit/lease.h). Exact: the limit's
// worth on one node leaves nothing on the other, a burst from 2 nodes x 4
// sockets admits exactly the limit; far from the limit one lease covers many
// events; shares go back when the user leaves or the lease is over; events
// wait for a lease only so long; Redis away -> per-worker limits.
import assert from 'node:assert/strict';
import {
  test, startRedis, freePort, ack, waitFor, workerOf, SECRET, GREETING,
} from './lib/harness.mjs';

const MODULES = ['auth_jwt.so', 'ratelimit.so'];

async function node(ctx, redis, { workers = 2, lines = [] } = {}) {
  const port = await freePort();
  const serverBlock = [
    `listen 127.0.0.1:${port};`,
    `auth_jwt_secret ${SECRET};`,
    `probe_greeting "${GREETING}";`,
    `redis 127.0.0.1:${redis.port};`,
    'redis_node_ttl 3s;',
    ...lines,
    'namespace /;',
  ].map((l) => `    ${l}`).join('\n');
  return ctx.startServer({ port, workers, modules: MODULES, serverBlock });
}

const whoami = (s) => ack(s, 'probe:whoami', {});

function assertLimited(answer, windowMs) {
  assert.deepEqual(Object.keys(answer), ['error'], JSON.stringify(answer));
  assert.equal(answer.error.code, 'RATE_LIMITED');
  assert.ok(answer.error.retryAfterMs >= 1 && answer.error.retryAfterMs <= windowMs, JSON.stringify(answer));
}

// Sends probe:whoami one after the other until one is refused.
async function untilRefused(s, max = 100) {
  for (let n = 0; n < max; n++) {
    const r = await whoami(s);
    if (r.error) return { accepted: n, error: r.error };
    assert.ok(r.data, JSON.stringify(r));
  }
  assert.fail(`no refusal after ${max} events`);
}

// The leases Redis holds for a user (zone default).
const leasesKey = (windowMs, user) => `depth:ratelimit:{default|${windowMs}|u:${user}}:${windowMs / 10}:l`;
async function leases(redis, windowMs, user) {
  return Number((await redis.cli('HLEN', leasesKey(windowMs, user))).trim());
}

async function evalCalls(redis) {
  const info = await redis.cli('INFO', 'commandstats');
  const m = /^cmdstat_eval:calls=(\d+)/m.exec(info);
  return m ? Number(m[1]) : 0;
}

// Connects sockets of `user` until `n` of them are on distinct workers of `srv` (or all `n` sockets when
// the node has fewer workers): events of one user from every worker.
async function spread(ctx, srv, user, n) {
  const out = [];
  const seen = new Set();
  for (let i = 0; i < 4 * n && out.length < n; i++) {
    const s = await ctx.connect(srv, '/', { userId: user });
    const w = await workerOf(srv, s);
    if (!seen.has(w) || seen.size >= 2) {
      seen.add(w);
      out.push(s);
    }
  }
  assert.equal(out.length, n);
  assert.ok(seen.size >= 2, 'sockets on both workers');
  return out;
}

test('the limit\'s worth on node A leaves nothing on node B: its first event is refused', { timeout: 30000 }, async (t, ctx) => {
  const redis = await startRedis({ t });
  const lines = ['ratelimit_events 10 10s;', 'ratelimit_sync_interval 50ms;'];
  const a = await node(ctx, redis, { lines });
  const b = await node(ctx, redis, { lines });
  const user = 'u-exact';
  const [a1, a2] = await spread(ctx, a, user, 2);  // both workers of node A
  const onB = await ctx.connect(b, '/', { userId: user });
  // Alternating between the workers: near the limit a share one of them holds
  // goes back once idle, and the other's event waits for it.
  for (let i = 0; i < 10; i++) {
    const r = await whoami(i % 2 ? a2 : a1);
    assert.ok(r.data, `event ${i + 1} on node A: ${JSON.stringify(r)}`);
  }
  // At once: no sync interval to wait for.
  assertLimited(await whoami(onB), 10000);
  assertLimited(await whoami(a1), 10000);
  assertLimited(await whoami(a2), 10000);
  // Another user is not affected.
  const other = await ctx.connect(b, '/', { userId: 'u-other' });
  assert.equal((await untilRefused(other)).accepted, 10);
});

test('a burst from 2 nodes x 4 sockets of one user admits exactly the limit', { timeout: 30000 }, async (t, ctx) => {
  const redis = await startRedis({ t });
  const lines = ['ratelimit_events 40 10s;'];
  const a = await node(ctx, redis, { lines });
  const b = await node(ctx, redis, { lines });
  const user = 'u-burst';
  const sockets = [...await spread(ctx, a, user, 4), ...await spread(ctx, b, user, 4)];
  // 8 x 15 = 120 events at once, without waiting for any answer.
  const answers = await Promise.all(sockets.flatMap((s) => Array.from({ length: 15 }, () => whoami(s))));
  const admitted = answers.filter((r) => r.data).length;
  const refused = answers.filter((r) => r.error);
  for (const r of refused) assertLimited(r, 10000);
  t.diagnostic(`admitted ${admitted}, refused ${refused.length}`);
  assert.equal(admitted, 40);
  assert.equal(refused.length, 80);
  for (const s of sockets) assert.ok(s.connected);
  // Nothing is left anywhere, for any of them.
  for (const s of sockets) assertLimited(await whoami(s), 10000);
});

test('far from the limit one lease covers many events; Redis is asked again near it', { timeout: 30000 }, async (t, ctx) => {
  const redis = await startRedis({ t });
  const a = await node(ctx, redis, { workers: 1, lines: ['ratelimit_events 100000 60s;'] });
  const s = await ctx.connect(a, '/', { userId: 'u-far' });
  const before = await evalCalls(redis);
  for (let i = 0; i < 500; i++) assert.ok((await whoami(s)).data);
  const far = (await evalCalls(redis)) - before;
  t.diagnostic(`${far} lease requests for 500 events far from the limit`);
  assert.ok(far >= 1 && far <= 2, `${far} lease requests for 500 events`);
});

test('the rest of a share goes back when the user\'s last socket leaves, or when the lease is over', { timeout: 30000 }, async (t, ctx) => {
  const redis = await startRedis({ t });
  const lines = ['ratelimit_events 20 10s;', 'ratelimit_lease 1s;', 'ratelimit_sync_interval 50ms;'];
  const a = await node(ctx, redis, { workers: 1, lines });
  const b = await node(ctx, redis, { workers: 1, lines });

  // Leaves: node A took a share (half of 20) for one event; all but that one is B's.
  const gone = await ctx.connect(a, '/', { userId: 'u-leaves' });
  assert.ok((await whoami(gone)).data);
  assert.equal(await leases(redis, 10000, 'u-leaves'), 1, 'node A holds a lease');
  gone.disconnect();
  await waitFor(async () => (await leases(redis, 10000, 'u-leaves')) === 0, { what: 'node A to give its share back' });
  const b1 = await ctx.connect(b, '/', { userId: 'u-leaves' });
  assert.equal((await untilRefused(b1)).accepted, 19);

  // Stays connected, idle: the lease is over after 1 s and goes back.
  const idle = await ctx.connect(a, '/', { userId: 'u-idle' });
  assert.ok((await whoami(idle)).data);
  await waitFor(async () => (await leases(redis, 10000, 'u-idle')) === 0, { what: 'the idle lease to end' });
  const b2 = await ctx.connect(b, '/', { userId: 'u-idle' });
  assert.equal((await untilRefused(b2)).accepted, 19);
  assertLimited(await whoami(idle), 10000);
});

test('events wait for a lease only ratelimit_lease_wait, then are refused; then leases resume', { timeout: 30000 }, async (t, ctx) => {
  const redis = await startRedis({ t });
  const a = await node(ctx, redis, { workers: 1, lines: ['ratelimit_events 10 10s;', 'ratelimit_lease_wait 100ms;'] });
  const s = await ctx.connect(a, '/', { userId: 'u-wait' });
  await redis.cli('CLIENT', 'PAUSE', '1500', 'ALL');  // Redis stalls: no lease can come
  const t0 = Date.now();
  const answer = await whoami(s);
  const took = Date.now() - t0;
  assertLimited(answer, 10000);
  t.diagnostic(`refused after ${took} ms`);
  assert.ok(took >= 90 && took < 1000, `refused after ${took} ms, not once Redis answered`);
  // Once Redis answers, the user's budget is whole: the refused events used
  // none, and did not count as abuse (the socket stays).
  await waitFor(async () => !!(await whoami(s)).data, { ms: 5000, every: 100, what: 'a lease once Redis is back' });
  assert.equal((await untilRefused(s)).accepted, 9);
  assert.ok(s.connected);
});

test('Redis away: each worker limits on its own, as before', { timeout: 30000 }, async (t, ctx) => {
  const redis = await startRedis({ t });
  const lines = ['ratelimit_events 5 10s;'];
  const a = await node(ctx, redis, { workers: 1, lines });
  const b = await node(ctx, redis, { workers: 1, lines });
  const sa = await ctx.connect(a, '/', { userId: 'u-away' });
  const sb = await ctx.connect(b, '/', { userId: 'u-away' });
  await redis.stop();
  await waitFor(async () => !!(await whoami(sa)).data, { what: 'node A to admit on its own' });
  assert.equal((await untilRefused(sa)).accepted, 4);
  assert.equal((await untilRefused(sb)).accepted, 5);
});
