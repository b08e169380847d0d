// Soak (issue 9): a few members of one conversation send acked chat messages
// at a steady pace while a worker is killed with -9, Redis restarts (with its
// data: an append-only file) and the master reloads 20 times. Every message
// whose ack was {data} must be in chat:history exactly once, and must have
// reached, exactly once, every member that was connected from its sending on;
// the members cut off by the kill find what they missed in the history.
import assert from 'node:assert/strict';
import {
  test, startRedis, redisLines, waitFor, request, workerOf, rnd, tmpDir, sleep,
} from './lib/harness.mjs';
import { ChatTraffic, CHAT_MODULES } from './lib/chat-traffic.mjs';

const redisUp = async (srv) => Number(/^redis_up (-?\d+)/m.exec((await request(srv, { path: '/metrics' })).text)?.[1] ?? 0);

test('acked chat traffic through kill -9 of a worker, a Redis restart and 20 reloads: nothing acked is lost', { timeout: 90000 }, async (t, ctx) => {
  const redis = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', tmpDir('dr-redis-')] });
  ctx.defer(() => redis.stop());
  const srv = await ctx.startServer({ workers: 2, modules: CHAT_MODULES, probe: false, extraServer: redisLines(redis) });
  const traffic = new ChatTraffic(ctx, `c-${rnd()}`, { every: 30 });
  const owners = new Map();
  for (let i = 0; i < 8 && (i < 5 || new Set(owners.values()).size < 2); i++) {
    const m = await traffic.add(srv, `u${i}`);
    owners.set(m, await workerOf(srv, m.s));
  }
  assert.equal(new Set(owners.values()).size, 2, 'members on both workers');
  const steady = async (what, n = 60) => {
    const from = Date.now();
    await waitFor(() => traffic.ackedSince(from) >= n, { ms: 15000, what: `${n} messages acked ${what}` });
  };
  traffic.start();
  await steady('at first');

  // 1. Redis restarts (members on both workers): refused meanwhile (not stored), stored again once it is back.
  await redis.stop();
  await waitFor(async () => (await redisUp(srv)) === 0, { what: 'both workers cut off' });
  await sleep(600);  // away a moment: the workers' reconnect backoffs drift apart
  await redis.start();
  await waitFor(async () => (await redisUp(srv)) === 2, { ms: 20000, every: 100, what: 'both workers on Redis again' });
  await steady('after the Redis restart');

  // 2. kill -9 of a worker: its members reconnect to a live one and join again.
  const victim = owners.get(traffic.members[0]);
  const cut = traffic.members.filter((m) => owners.get(m) === victim);
  process.kill(victim, 'SIGKILL');
  await waitFor(() => srv.workerPids().length === 2 && !srv.workerPids().includes(victim), { ms: 10000, what: 'the worker respawned' });
  await waitFor(() => cut.every((m) => m.disconnects.length > 0) && traffic.members.every((m) => m.joinedAt !== null),
    { ms: 10000, what: 'every member back in the conversation' });
  await steady('after the kill');

  // 3. 20 reloads, one after the other, with traffic between them.
  const reloads = () => srv.logs.filter((l) => /configuration reloaded/.test(l)).length;
  for (let i = 0; i < 20; i++) {
    const before = reloads();
    process.kill(srv.pid, 'SIGHUP');
    await waitFor(() => reloads() > before, { what: `reload ${i + 1}` });
    await steady(`after reload ${i + 1}`, 5);
  }
  await steady('after the reloads');
  await traffic.stop();

  // Stored: each acked message in the history exactly once.
  const history = await traffic.history(traffic.members.find((m) => m.s.connected));
  const times = new Map();
  for (const msg of history) times.set(msg.id, (times.get(msg.id) ?? 0) + 1);
  const notOnce = [...traffic.acked.keys()].filter((id) => times.get(id) !== 1);
  assert.deepEqual(notOnce.map((id) => [id, times.get(id) ?? 0]), [], 'acked messages not in the history exactly once');
  for (const [id, a] of traffic.acked) assert.equal(history.find((x) => x.id === id).content, a.content);
  // Delivered: to every member connected all along, once.
  const { acked, deliveries } = await traffic.assertDelivered();
  // The members the kill cut off: whatever they missed is in the history (checked above).
  const missedByCut = [...traffic.acked.keys()].filter((id) => cut.some((m) => !m.got.has(id))).length;
  assert.ok(traffic.refused > 0, 'messages were refused while Redis was away');
  assert.equal(srv.exitInfo, null);
  t.diagnostic(`${acked} acked, ${deliveries} deliveries checked, ${history.length} in history, ${missedByCut} missed live by ` +
    `the killed worker's members, ${traffic.refused} refused, ${traffic.unanswered} unanswered`);
});
