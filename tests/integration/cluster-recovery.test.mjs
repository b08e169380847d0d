// Connection state recovery across processes (issue 3, contract §5): the
// CONNECT reply carries a pid, recordable events carry offsets, and a client
// whose connection dropped gets `socket.recovered === true`, its old id and
// rooms, and the events it missed, even when it comes back through another
// depth-realtime process. Expired, unknown or explicitly closed sessions
// start fresh. The official client goes through a TCP proxy whose target the
// test switches from process A to process B.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, Scope, startServer, ack, rnd, startRedis, redisLines, waitFor, once, io, token, sleep, withTimeout, Inbox,
  waitSubscribed,
  switchableProxy, request, joinStored,
} from './lib/harness.mjs';

let redis;
let A;
let B;
let scope;


before(async () => {
  redis = await startRedis();
  const extraServer = redisLines(redis, { extra: ['recovery_window 3s;'] });
  A = await startServer({ workers: 2, extraServer });
  B = await startServer({ workers: 2, extraServer });
  scope = new Scope(null);
}, { timeout: 60000 });

after(async () => {
  await scope?.cleanup();
  await A?.stop();
  await B?.stop();
  await redis?.stop();
});

// The official client through `p`, reconnecting quickly.
function client(p, userId) {
  const s = io(`http://127.0.0.1:${p.port}/`, {
    transports: ['websocket'], forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200, timeout: 3000,
    auth: { token: token(userId) },
  });
  scope.track(s);
  return s;
}

describe('connection state recovery across processes', () => {
  test('the CONNECT reply carries a pid and events carry offsets', async () => {
    const p = await switchableProxy(A);
    try {
      const s = client(p, 'csr0');
      const hello = once(s, 'probe:hello');
      await once(s, 'connect');
      assert.equal(typeof s._pid, 'string');
      assert.equal(s._pid.length, 20);
      const [greeting, offset] = await hello;  // socket.emit is recorded too
      assert.equal(greeting, 'hi there');
      assert.match(offset, /^[0-9A-Za-z_-]+\.[0-9A-Za-z_-]+$/);
      assert.equal(s._lastOffset, offset);
      assert.equal(s.recovered, false);
    } finally {
      p.close();
    }
  });

  test('a client cut off from A resumes on B with its id, rooms and the events it missed', async () => {
    const p = await switchableProxy(A);
    try {
      const room = `csr-${rnd()}`;
      const s = client(p, 'csr1');
      await once(s, 'connect');
      const id = s.id;
      await ack(s, 'probe:join', { room });
      await waitSubscribed(redis, room, 1);
      const inbox = new Inbox(s, ['missed', 'live']);
      // Someone on B talks to the room while the client is away.
      const talker = await scope.connect(B, '/', { userId: 'talker' });
      await ack(talker, 'probe:emit', { rooms: [room], event: 'live', args: [0] });
      await inbox.wait('live');
      const gone = once(s, 'disconnect');
      p.target = B;  // it comes back through the other process
      p.drop();
      assert.equal((await gone)[0], 'transport close');
      for (let i = 1; i <= 3; i++) await ack(talker, 'probe:emit', { rooms: [room], event: 'missed', args: [i] });
      await ack(talker, 'probe:emit', { rooms: [`not-${room}`], event: 'missed', args: ['other room'] });
      await once(s, 'connect', 5000);
      assert.equal(s.recovered, true);
      assert.equal(s.id, id);
      await inbox.wait('missed', (a) => a[0] === 3);
      assert.deepEqual(inbox.of('missed').map((a) => a[0]), [1, 2, 3]);
      const who = await ack(s, 'probe:whoami');
      assert.ok(who.data.rooms.includes(room), `rooms restored: ${who.data.rooms}`);
      assert.equal(who.data.userId, 'csr1');
      assert.equal(who.data.sid, id);
      // Live again, in its rooms, on B.
      await ack(talker, 'probe:emit', { rooms: [room], event: 'live', args: [4] });
      await inbox.wait('live', (a) => a[0] === 4);
    } finally {
      p.close();
    }
  });

  test('Redis forgetting its scripts (SCRIPT FLUSH) while events flow: broadcasts and recovery go on, in order', async () => {
    const p = await switchableProxy(A);
    try {
      const room = `csr-flush-${rnd()}`;
      const s = client(p, 'csr-flush');
      await once(s, 'connect');
      const id = s.id;
      await ack(s, 'probe:join', { room });
      await waitSubscribed(redis, room, 1);
      const inbox = new Inbox(s, ['missed', 'live']);
      const talker = await scope.connect(B, '/', { userId: 'talker-flush' });
      await ack(talker, 'probe:emit', { rooms: [room], event: 'live', args: [1] });
      await inbox.wait('live');
      // Scripts go by their SHA1, loaded on connecting: Redis knew every one so far.
      const noscripts = async () => Number((await redis.cli('INFO', 'errorstats')).match(/errorstat_NOSCRIPT:count=(\d+)/)?.[1] ?? 0);
      assert.equal(await noscripts(), 0);
      // Pipelined broadcasts across a flush keep their order (recorded ones go
      // as EVAL: an EVALSHA sent again would run after the ones behind it).
      const sent = [];
      for (let i = 2; i <= 6; i++) {
        sent.push(ack(talker, 'probe:emit', { rooms: [room], event: 'live', args: [i] }));
        if (i === 3) await redis.cli('SCRIPT', 'FLUSH');
      }
      await Promise.all(sent);
      await inbox.wait('live', (a) => a[0] === 6);
      assert.deepEqual(inbox.of('live').map((a) => a[0]), [1, 2, 3, 4, 5, 6]);
      // The session's record and its recovery are scripts too.
      await redis.cli('SCRIPT', 'FLUSH');
      const gone = once(s, 'disconnect');
      p.target = B;
      p.drop();
      await gone;
      await redis.cli('SCRIPT', 'FLUSH');
      for (let i = 1; i <= 3; i++) await ack(talker, 'probe:emit', { rooms: [room], event: 'missed', args: [i] });
      await redis.cli('SCRIPT', 'FLUSH');
      await once(s, 'connect', 5000);
      assert.equal(s.recovered, true);
      assert.equal(s.id, id);
      await inbox.wait('missed', (a) => a[0] === 3);
      assert.deepEqual(inbox.of('missed').map((a) => a[0]), [1, 2, 3]);
      // The recovery's script went by its SHA1, was refused and sent again.
      assert.ok(await noscripts() > 0, 'the flush was noticed');
    } finally {
      p.close();
    }
  });

  test('missing more than 4 × max_output_buffer of events: a fresh connection, never an unbounded reply', async (t, ctx) => {
    const small = await ctx.startServer({ workers: 1, extraServer: redisLines(redis, { extra: ['recovery_window 3s;', 'max_output_buffer 64k;'] }) });
    const p = await switchableProxy(small);
    try {
      const room = `csr-big-${rnd()}`;
      const s = client(p, 'csr-big');
      await once(s, 'connect');
      await ack(s, 'probe:join', { room });
      const talker = await ctx.connect(small, '/', { userId: 'talker-big' });
      const gone = once(s, 'disconnect');
      p.drop();
      await gone;
      // 300 KB of the namespace's events while it is away: past 4 × 64 KB.
      for (let i = 0; i < 3; i++) await ack(talker, 'probe:emit', { rooms: [room], event: 'missed', args: ['x'.repeat(100000)] });
      await once(s, 'connect', 5000);
      assert.equal(s.recovered, false);
    } finally {
      p.close();
    }
  });

  test('resumed on B while A still holds its stale connection: the membership B wrote outlives A letting it go', async () => {
    const p = await switchableProxy(A);
    try {
      const room = `csr-stale-${rnd()}`;
      const s = client(p, 'csr-stale');
      await once(s, 'connect');
      const { id } = await joinStored(redis, s, room);
      const onA = async () => {
        const m = /^websocket_namespace_sockets\{namespace="\/"\} (\d+)/m.exec((await request(A, { path: '/metrics' })).text);
        return Number(m?.[1] ?? 0);
      };
      const heldByA = await onA();
      p.target = B;
      p.strand();  // the client sees its connection drop; A does not
      await once(s, 'connect', 5000);
      assert.equal(s.recovered, true);
      assert.equal(s.id, id);
      const members = async () => (await ack(s, 'probe:presence', { room })).data.members.map((m) => m.socketId);
      await waitFor(async () => (await members()).includes(id), { what: 'B wrote its membership' });
      p.dropStranded();  // A notices now
      await waitFor(async () => (await onA()) === heldByA - 1, { what: 'A let its stale socket go' });
      assert.deepEqual(await members(), [id], 'still a member, written by B');
      const talker = await scope.connect(B, '/', { userId: 'talker' });
      const inbox = new Inbox(s, ['live']);
      await ack(talker, 'probe:emit', { rooms: [room], event: 'live', args: ['after'] });
      await inbox.wait('live');
    } finally {
      p.close();
    }
  });

  test('resumed on B, then its old node dies: purging the dead node leaves the membership B wrote', { timeout: 30000 }, async (t, ctx) => {
    const nodes = async () => (await redis.cli('ZRANGE', 'depth:nodes', '0', '-1')).split('\n').filter(Boolean);
    const before = await nodes();
    const C = await ctx.startServer({ workers: 1, extraServer: redisLines(redis, { extra: ['recovery_window 3s;'] }) });
    let uidOfC;
    await waitFor(async () => { uidOfC = (await nodes()).find((n) => !before.includes(n)); return uidOfC; },
      { what: 'C in the cluster' });
    const p = await switchableProxy(C);
    ctx.defer(() => p.close());
    const room = `csr-dead-${rnd()}`;
    const s = client(p, 'csr-dead');
    await once(s, 'connect');
    const { id } = await joinStored(redis, s, room);
    p.target = B;
    p.strand();  // C never sees it go: its index still names the socket
    await once(s, 'connect', 5000);
    assert.equal(s.recovered, true);
    const members = async () => (await ack(s, 'probe:presence', { room })).data.members.map((m) => m.socketId);
    await waitFor(async () => (await members()).includes(id), { what: 'B wrote its membership' });
    for (const pid of [C.pid, ...C.workerPids()]) process.kill(pid, 'SIGKILL');
    await waitFor(async () => !(await nodes()).includes(uidOfC), { ms: 15000, every: 100, what: 'the dead node purged' });
    assert.deepEqual(await members(), [id], 'still a member, written by B');
  });

  test('after the window the session is gone: a fresh connection', async () => {
    const p = await switchableProxy(A);
    try {
      const s = client(p, 'csr2');
      await once(s, 'connect');
      const id = s.id;
      s.io.reconnection(false);
      const gone = once(s, 'disconnect');
      p.drop();
      await gone;
      await sleep(3500);  // recovery_window 3s
      p.target = B;
      s.connect();
      await once(s, 'connect');
      assert.equal(s.recovered, false);
      assert.notEqual(s.id, id);
    } finally {
      p.close();
    }
  });

  test('an explicit disconnect is never recovered', async () => {
    const p = await switchableProxy(B);
    try {
      const s = client(p, 'csr3');
      await once(s, 'connect');
      const id = s.id;
      const gone = once(s, 'disconnect');
      await ack(s, 'probe:disconnect', {});
      assert.equal((await gone)[0], 'io server disconnect');
      s.connect();
      await once(s, 'connect');
      assert.equal(s.recovered, false);
      assert.notEqual(s.id, id);
    } finally {
      p.close();
    }
  });

  test('a graceful stop of a process hands its clients\' sessions to the other one', async () => {
    const C = await startServer({ workers: 1, extraServer: redisLines(redis, { extra: ['recovery_window 10s;'] }) });
    const p = await switchableProxy(C);
    try {
      const room = `drain-${rnd()}`;
      const s = client(p, 'csr4');
      await once(s, 'connect');
      const id = s.id;
      await ack(s, 'probe:join', { room });
      const gone = once(s, 'disconnect');
      p.target = B;
      C.child.kill('SIGQUIT');  // graceful: the client is told the server is shutting down
      await gone;
      await once(s, 'connect', 8000);
      assert.equal(s.recovered, true);
      assert.equal(s.id, id);
      assert.ok((await ack(s, 'probe:whoami')).data.rooms.includes(room));
    } finally {
      p.close();
      await C.stop();
    }
  });
});
