// Redis failures and dead nodes (issue 3): the daemon starts and serves while
// Redis is down (clear log lines, /readyz 503, local delivery between its own
// workers), joins the cluster when Redis appears; Redis stopped and restarted
// mid-run loses nothing that matters (subscriptions and membership restored
// without a restart); a slow Redis cannot make a worker queue without bound;
// a node killed with -9 has its membership purged within redis_node_ttl.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import {
  test, ack, rnd, startRedis, redisLines, waitFor, once, request, freePort, workerOf, isAlive, Inbox, sleep, waitSubscribed,
} from './lib/harness.mjs';
import { ChatTraffic, CHAT_MODULES } from './lib/chat-traffic.mjs';

const readyz = async (srv) => (await request(srv, { path: '/readyz' })).status;
// Workers of `srv` whose two Redis connections are up (/readyz asks only one).
const redisUp = async (srv) => Number(/^redis_up (-?\d+)/m.exec((await request(srv, { path: '/metrics' })).text)?.[1] ?? 0);

// Clients until both workers of `srv` serve one; returns [onW0, onW1].
async function twoWorkers(ctx, srv, prefix) {
  const by = new Map();
  for (let i = 0; i < 20; i++) {
    const s = await ctx.connect(srv, '/', { userId: `${prefix}${i}` });
    const w = await workerOf(srv, s);
    if (!by.has(w)) by.set(w, s);
    if (by.size === 2) return [...by.values()];
  }
  throw new Error('clients did not spread over both workers');
}

// `event` from `sender` reaches every socket in `receivers` exactly once.
async function reachesOnce(sender, receivers, spec = {}) {
  const event = `ev-${rnd()}`;
  const inboxes = receivers.map((s) => new Inbox(s, [event, 'fence']));
  await ack(sender, 'probe:emit', { ...spec, event, args: [1] });
  const tag = rnd();
  await ack(sender, 'probe:emit', { ...spec, event: 'fence', args: [tag] });
  await Promise.all(inboxes.map((ib) => ib.wait('fence', (a) => a[0] === tag)));
  for (const ib of inboxes) assert.equal(ib.of(event).length, 1);
}

describe('Redis failures', () => {
  test('Redis down at start: the daemon serves locally, /readyz 503, joins when Redis appears', { timeout: 60000 }, async (t, ctx) => {
    const port = await freePort();
    const redis = { port };
    const srv = await ctx.startServer({ workers: 2, extraServer: redisLines(redis) });
    assert.equal((await request(srv, { path: '/healthz' })).status, 200);
    assert.equal(await readyz(srv), 503);
    assert.deepEqual(JSON.parse((await request(srv, { path: '/readyz' })).text), { status: 'not ready', redis: 'down' });
    await waitFor(() => /redis: cannot connect the \w+ connection to 127\.0\.0\.1:\d+ \(.*\); retrying/.test(srv.logText()),
      { what: 'a clear log line' });
    // Local delivery goes on, across this process's workers.
    const [s0, s1] = await twoWorkers(ctx, srv, 'down');
    await reachesOnce(s0, [s0, s1]);
    // Redis appears: the workers connect (backoff at most 10 s) and are ready.
    const real = await startRedis({ port });
    ctx.defer(() => real.stop());
    await waitFor(async () => (await readyz(srv)) === 200, { ms: 20000, every: 200, what: '/readyz 200' });
    await waitFor(async () => (await redisUp(srv)) === 2, { ms: 20000, every: 100, what: 'both workers connected' });
    await waitFor(async () => Number((await real.cli('PUBSUB', 'NUMSUB', 'socket.io-request#/#')).split('\n')[1]) === 2,
      { what: 'both workers subscribed' });
    await reachesOnce(s1, [s0, s1]);  // now through Redis, still once
    assert.match(srv.logText(), /is back after|joined the cluster/);
  });

  test('Redis stopped and restarted mid-run: local delivery goes on, then the cluster is restored', { timeout: 60000 }, async (t, ctx) => {
    const redis = await startRedis();
    ctx.defer(() => redis.stop());
    const extraServer = redisLines(redis);
    const A = await ctx.startServer({ workers: 2, extraServer });
    const B = await ctx.startServer({ workers: 2, extraServer });
    const [a0, a1] = await twoWorkers(ctx, A, 'ra');
    const b0 = await ctx.connect(B, '/', { userId: 'rb' });
    const room = `r-${rnd()}`;
    for (const s of [a0, a1, b0]) await ack(s, 'probe:join', { room });
    await waitSubscribed(redis, room, 3);  // three workers hold members
    await reachesOnce(a0, [a0, a1, b0], { rooms: [room] });

    await redis.stop();
    await waitFor(async () => (await readyz(A)) === 503, { what: 'A not ready' });
    await waitFor(() => /redis: lost the \w+ connection/.test(A.logText()), { what: 'log line' });
    await reachesOnce(a1, [a0, a1], { rooms: [room] });  // the process's own workers still get it
    for (const w of [...A.workerPids(), ...B.workerPids()]) assert.ok(isAlive(w));

    await redis.start();  // an empty Redis on the same port
    await waitFor(async () => (await readyz(A)) === 200 && (await readyz(B)) === 200,
      { ms: 20000, every: 200, what: 'ready again' });
    await waitFor(async () => (await redisUp(A)) === 2 && (await redisUp(B)) === 2,
      { ms: 20000, every: 100, what: 'every worker connected again' });
    await waitSubscribed(redis, room, 4, { ms: 20000 });  // every worker's pattern restored
    await reachesOnce(b0, [a0, a1, b0], { rooms: [room] });
    // Membership written again by every node.
    await waitFor(async () => {
      const r = await ack(b0, 'probe:presence', { room });
      return r.data.members.length === 3;
    }, { what: 'presence restored' });
  });

  test('a Redis that stops answering: commands are dropped, not queued, and the link is dropped', { timeout: 60000 }, async (t, ctx) => {
    const redis = await startRedis();
    ctx.defer(async () => { try { process.kill(redis.child.pid, 'SIGCONT'); } catch { /* gone */ } await redis.stop(); });
    const srv = await ctx.startServer({
      workers: 1, extraServer: redisLines(redis, { extra: ['redis_max_pending 64k;', 'redis_command_timeout 1s;'] }),
    });
    const s = await ctx.connect(srv, '/', { userId: 'slow' });
    await waitFor(async () => (await readyz(srv)) === 200, { what: 'ready' });
    process.kill(redis.child.pid, 'SIGSTOP');
    const big = 'x'.repeat(1024);
    for (let i = 0; i < 200; i++) await ack(s, 'probe:emit', { event: 'flood', args: [big] });
    const metrics = await request(srv, { path: '/metrics' });
    const dropped = Number(/^redis_commands_dropped_total (\d+)/m.exec(metrics.text)?.[1] ?? 0);
    assert.ok(dropped > 0, `commands dropped: ${dropped}`);
    await waitFor(async () => (await readyz(srv)) === 503, { what: 'link dropped after the command timeout' });
    assert.match(srv.logText(), /no reply within redis_command_timeout/);
    process.kill(redis.child.pid, 'SIGCONT');
    await waitFor(async () => (await readyz(srv)) === 200, { ms: 20000, every: 200, what: 'ready again' });
  });
});

describe('Redis restarted under traffic', () => {
  // Issue 9: in the first ~0.4 s after Redis came back, a worker published on
  // Redis while its siblings had not subscribed again yet (each reconnects on
  // its own backoff), and their members missed messages that were acked.
  test('steady chat traffic over 2 workers: every acked message reaches every member exactly once', { timeout: 60000 }, async (t, ctx) => {
    const redis = await startRedis();
    ctx.defer(() => redis.stop());
    const srv = await ctx.startServer({ workers: 2, modules: CHAT_MODULES, probe: false, extraServer: redisLines(redis) });
    const conversation = `c-${rnd()}`;
    const traffic = new ChatTraffic(ctx, conversation, { every: 40 });
    const owners = new Set();
    for (let i = 0; i < 6; i++) owners.add(await workerOf(srv, (await traffic.add(srv, `m${i}`)).s));
    assert.equal(owners.size, 2, 'members on both workers');
    // The namespace's request channel: subscribed after its pattern, which
    // brings the conversation's broadcasts.
    const channel = 'socket.io-request#/chat#';
    const subscribers = async () => Number((await redis.cli('PUBSUB', 'NUMSUB', channel)).split('\n')[1]);
    await waitFor(async () => (await subscribers()) === 2, { what: 'both workers subscribed' });

    traffic.start();
    await waitFor(() => traffic.acked.size >= 30, { what: '30 messages acked' });
    // Which worker's connections come back last is luck (each has its own
    // backoff): a few restarts, so that every order is likely to happen.
    for (let round = 0; round < 4; round++) {
      await redis.stop();
      await waitFor(async () => (await redisUp(srv)) === 0, { what: 'both workers cut off' });
      await sleep(600);  // Redis stays away a moment: the reconnect backoffs drift apart
      await redis.start();
      const backAt = Date.now();
      await waitFor(async () => (await redisUp(srv)) === 2 && (await subscribers()) === 2,
        { ms: 20000, every: 50, what: 'both workers connected and subscribed again' });
      await waitFor(() => traffic.ackedSince(backAt) >= 60, { ms: 20000, what: '60 messages acked after Redis is back' });
      const firstAfter = Math.min(...[...traffic.acked.values()].filter((a) => a.ackedAt >= backAt).map((a) => a.ackedAt));
      assert.ok(firstAfter - backAt < 2000, `acks resumed ${firstAfter - backAt} ms after Redis came back`);
    }
    await traffic.stop();

    const { acked, deliveries } = await traffic.assertDelivered();
    assert.ok(traffic.refused > 0, 'some messages were refused while Redis was away');
    t.diagnostic(`${acked} acked, ${deliveries} deliveries checked, ${traffic.refused} refused, ${traffic.unanswered} unanswered`);
  });

  // Issue 9: between processes only Redis carries a broadcast; what another
  // process published while a worker's subscriber was away or not subscribed
  // yet is read back from the recovery stream once it is subscribed again.
  test('steady chat traffic over 2 daemons: every acked message reaches every member exactly once', { timeout: 90000 }, async (t, ctx) => {
    const redis = await startRedis();
    ctx.defer(() => redis.stop());
    const opts = { workers: 2, modules: CHAT_MODULES, probe: false, extraServer: redisLines(redis) };
    const daemons = [await ctx.startServer(opts), await ctx.startServer(opts)];
    const conversation = `c-${rnd()}`;
    const traffic = new ChatTraffic(ctx, conversation, { every: 60 });
    // Two members on every worker of both daemons.
    for (const [d, srv] of daemons.entries()) {
      const perWorker = new Map();
      for (let i = 0; perWorker.size < 2 || [...perWorker.values()].some((n) => n < 2); i++) {
        assert.ok(i < 30, 'members did not spread over both workers');
        const m = await traffic.add(srv, `d${d}m${i}`);
        const w = await workerOf(srv, m.s);
        if ((perWorker.get(w) ?? 0) >= 2) {
          m.s.close();
          traffic.members.pop();
          continue;
        }
        perWorker.set(w, (perWorker.get(w) ?? 0) + 1);
      }
    }
    assert.equal(traffic.members.length, 8);
    // The namespace's request channel: subscribed after its pattern, which
    // brings the conversation's broadcasts.
    const channel = 'socket.io-request#/chat#';
    const subscribers = async () => Number((await redis.cli('PUBSUB', 'NUMSUB', channel)).split('\n')[1]);
    const allUp = async () => (await redisUp(daemons[0])) === 2 && (await redisUp(daemons[1])) === 2;
    await waitFor(async () => (await subscribers()) === 4, { what: 'every worker subscribed' });

    traffic.start();
    await waitFor(() => traffic.acked.size >= 30, { what: '30 messages acked' });
    // Each worker's connections come back on their own backoff: a worker
    // publishes while another process's worker is not subscribed yet.
    for (let round = 0; round < 4; round++) {
      await redis.stop();
      await waitFor(async () => (await redisUp(daemons[0])) === 0 && (await redisUp(daemons[1])) === 0,
        { what: 'every worker cut off' });
      await sleep(600);  // Redis stays away a moment: the reconnect backoffs drift apart
      await redis.start();
      const backAt = Date.now();
      await waitFor(async () => (await allUp()) && (await subscribers()) === 4,
        { ms: 20000, every: 50, what: 'every worker connected and subscribed again' });
      await waitFor(() => traffic.ackedSince(backAt) >= 60, { ms: 20000, what: '60 messages acked after Redis is back' });
    }
    await traffic.stop();

    const { acked, deliveries } = await traffic.assertDelivered();
    assert.equal(traffic.members.filter((m) => m.disconnects.length === 0).length, 8, 'every member stayed connected');
    // And in the order each sender sent them (what was read back came before
    // what arrived live meanwhile).
    for (const m of traffic.members) {
      const last = new Map();
      for (const id of m.got.keys()) {
        const a = traffic.acked.get(id);
        if (!a) continue;
        const n = Number(a.content.split('-').at(-1));
        assert.ok((last.get(a.sender) ?? -1) < n, `${m.userId} got ${a.content} after ${a.sender}-${last.get(a.sender)}`);
        last.set(a.sender, n);
      }
    }
    const caughtUp = async (srv) => Number(/^cluster_messages_caught_up_total (\d+)/m.exec((await request(srv, { path: '/metrics' })).text)?.[1] ?? 0);
    const read = (await caughtUp(daemons[0])) + (await caughtUp(daemons[1]));
    assert.ok(read > 0, 'some broadcasts came while a subscriber was away and were read back');
    assert.match(daemons[0].logText() + daemons[1].logText(), /delivered \d+ broadcast\(s\) on \/chat that came while its subscriber was away/);
    t.diagnostic(`${acked} acked, ${deliveries} deliveries checked, ${read} broadcasts read back, ${traffic.refused} refused, ${traffic.unanswered} unanswered`);
  });
});

describe('a broadcast Redis never ran', () => {
  // A module may ack once the broadcast is sent (chat acks after the store,
  // not after the PUBLISH): if Redis dies before running it, the other
  // processes' members would never get it.
  test('sent to a frozen Redis that is then killed: published again when Redis is back, reaches the other process once', { timeout: 60000 }, async (t, ctx) => {
    const redis = await startRedis();
    ctx.defer(() => redis.stop());
    const extraServer = redisLines(redis);
    const A = await ctx.startServer({ workers: 1, extraServer });
    const B = await ctx.startServer({ workers: 1, extraServer });
    const a = await ctx.connect(A, '/', { userId: 'ua' });
    const b = await ctx.connect(B, '/', { userId: 'ub' });
    const room = `r-${rnd()}`;
    for (const s of [a, b]) await ack(s, 'probe:join', { room });
    await waitSubscribed(redis, room, 2);
    await reachesOnce(a, [a, b], { rooms: [room] });

    const inboxes = [a, b].map((s) => new Inbox(s, ['late', 'fence']));
    process.kill(redis.child.pid, 'SIGSTOP');
    await ack(a, 'probe:emit', { rooms: [room], event: 'late', args: [1] });  // acked; Redis has not read it
    await redis.kill();  // never ran
    await redis.start();
    await waitFor(async () => (await readyz(A)) === 200 && (await readyz(B)) === 200, { ms: 20000, every: 100, what: 'ready again' });
    await inboxes[1].wait('late', () => true, 10000);
    await waitSubscribed(redis, room, 2);
    await ack(a, 'probe:emit', { rooms: [room], event: 'fence', args: [1] });
    await Promise.all(inboxes.map((ib) => ib.wait('fence')));
    for (const ib of inboxes) assert.equal(ib.of('late').length, 1);
    assert.match(A.logText(), /publishing again [1-9]\d* broadcast\(s\) Redis had not answered/);
  });
});

describe('dead nodes', () => {
  test('kill -9 of a process: its membership is purged within redis_node_ttl', { timeout: 60000 }, async (t, ctx) => {
    const redis = await startRedis();
    ctx.defer(() => redis.stop());
    const extraServer = redisLines(redis, { nodeTtl: '2s' });
    const A = await ctx.startServer({ workers: 2, extraServer });
    const B = await ctx.startServer({ workers: 2, extraServer });
    const room = `project:${rnd()}`;
    const a = await ctx.connect(A, '/', { userId: 'alive' });
    await ack(a, 'probe:join', { room });
    for (let i = 0; i < 3; i++) await ack(await ctx.connect(B, '/', { userId: `doomed${i}` }), 'probe:join', { room });
    await waitFor(async () => (await ack(a, 'probe:presence', { room })).data.members.length === 4, { what: '4 members' });
    assert.equal(Number(await redis.cli('ZCARD', 'depth:nodes')), 4);

    const killedAt = Date.now();
    for (const pid of [B.pid, ...B.workerPids()]) process.kill(pid, 'SIGKILL');
    await waitFor(async () => {
      const r = await ack(a, 'probe:presence', { room });
      return r.data.members.length === 1 && r.data.members[0].userId === 'alive';
    }, { ms: 10000, every: 100, what: 'the dead node\'s members purged' });
    const took = Date.now() - killedAt;
    assert.ok(took <= 2000 + 1500, `purged after ${took} ms (ttl 2s, heartbeat every ttl/3)`);
    assert.equal(Number(await redis.cli('ZCARD', 'depth:nodes')), 2);
    assert.equal(Number((await redis.cli('PUBSUB', 'NUMSUB', 'socket.io-request#/#')).split('\n')[1]), 2);
    await waitFor(() => /removed the membership of \d+ node\(s\)/.test(A.logText()), { what: 'log line' });
    await sleep(0);
  });
});
