// No stop short of a crash of the whole host costs a client its session
// (issue 10, item 5). `systemctl stop` / `restart` send SIGTERM: the workers
// write every client's session for recovery_window before they exit, so a
// restart within the window recovers every client. A connected socket's
// session is also kept in Redis while it is connected (written at connect,
// join and leave), so the clients of a worker killed with SIGKILL come back
// recovered too, on whichever worker they reach. Real daemon, real
// redis-server, the official socket.io-client.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, Scope, startServer, ack, rnd, startRedis, redisLines, waitFor, once, io, token, Inbox, workerOf, isAlive,
  waitSubscribed,
} from './lib/harness.mjs';

let redis;
let talkerSrv;  // another process of the cluster: it talks to the rooms while the one under test is down
let talker;
let scope;
const extraServer = () => redisLines(redis, { extra: ['recovery_window 20s;'] });

before(async () => {
  redis = await startRedis();
  talkerSrv = await startServer({ workers: 1, extraServer: extraServer() });
  scope = new Scope(null);
  talker = await scope.connect(talkerSrv, '/', { userId: 'stops-talker' });
}, { timeout: 60000 });

after(async () => {
  await scope?.cleanup();
  await talkerSrv?.stop();
  await redis?.stop();
});

// The official client, reconnecting on its own as a browser's would.
function client(srv, userId, opts = {}) {
  const s = io(`${srv.url}/`, {
    transports: ['websocket'], forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 300, timeout: 3000,
    auth: { token: token(userId) }, ...opts,
  });
  scope.track(s);
  return s;
}

// `n` clients of `srv`, each in room `${prefix}-${i % rooms}`, each with an
// offset (the probe's greeting is recorded) and its session stored with its room.
async function clientsInRooms(srv, n, { prefix, rooms = 4 }) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const s = client(srv, `${prefix}-u${i}`);
    const hello = once(s, 'probe:hello');
    const inbox = new Inbox(s, ['missed', 'live']);
    await once(s, 'connect');
    await hello;
    const room = `${prefix}-${i % rooms}`;
    await ack(s, 'probe:join', { room });
    out.push({ s, inbox, room, id: s.id, pid: s._pid, userId: `${prefix}-u${i}` });
  }
  for (let r = 0; r < rooms; r++) await waitSubscribed(redis, `${prefix}-${r}`, 1);
  return out;
}

const sessionOf = async (pid) => {
  const text = (await redis.cli('GET', `depth:recovery:session:${pid}`)).trim();
  return text ? JSON.parse(text) : null;
};

// Every client back recovered: same id, the gap's events of its room only and
// in order, still in its room, live again.
async function assertRecovered(c, gapEvents) {
  assert.equal(c.s.recovered, true, `${c.userId} recovered`);
  assert.equal(c.s.id, c.id, `${c.userId} kept its id`);
  await c.inbox.wait('missed', (a) => a[0] === gapEvents);
  assert.deepEqual(c.inbox.of('missed').map((a) => a[0]), Array.from({ length: gapEvents }, (_, k) => k + 1),
    `${c.userId} got the gap's events of ${c.room}, in order`);
  assert.ok(c.inbox.of('missed').every((a) => a[1] === c.room), `${c.userId} got no other room's events`);
  const who = await ack(c.s, 'probe:whoami');
  assert.ok(who.data.rooms.includes(c.room), `${c.userId} still in ${c.room}: ${who.data.rooms}`);
  assert.equal(who.data.userId, c.userId);
}

async function talkToRooms(rooms, count) {
  for (let k = 1; k <= count; k++)
    for (const room of rooms) await ack(talker, 'probe:emit', { rooms: [room], event: 'missed', args: [k, room] });
}

describe('stops that keep the clients\' sessions', () => {
  test('systemctl restart (SIGTERM, then a new master on the same port): every client is recovered', { timeout: 60000 }, async (t, ctx) => {
    const prefix = `restart-${rnd()}`;
    let A = await ctx.startServer({ workers: 2, extraServer: extraServer() });
    const port = A.port;
    const clients = await clientsInRooms(A, 20, { prefix });
    const rooms = [...new Set(clients.map((c) => c.room))];
    const gone = clients.map((c) => once(c.s, 'disconnect', 10000));
    const exit = await A.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, 'the master exits cleanly');
    for (const g of gone) assert.equal((await g)[0], 'transport close');
    const stopLog = A.logText();
    // The gap: the rooms are talked to while nobody serves these clients.
    await talkToRooms(rooms, 3);
    const back = clients.map((c) => once(c.s, 'connect', 15000));
    A = await ctx.startServer({ port, workers: 2, extraServer: extraServer() });
    await Promise.all(back);
    for (const c of clients) await assertRecovered(c, 3);
    assert.match(stopLog, /saved \d+ session\(s\) for recovery/);
    // Live again in their rooms, on the new workers.
    for (const r of rooms) await waitSubscribed(redis, r, 1);
    await ack(talker, 'probe:emit', { rooms: [rooms[0]], event: 'live', args: ['after'] });
    for (const c of clients.filter((x) => x.room === rooms[0])) await c.inbox.wait('live', (a) => a[0] === 'after');
  });

  test('a worker killed with SIGKILL: its clients come back recovered with what they missed', { timeout: 60000 }, async (t, ctx) => {
    const prefix = `kill-${rnd()}`;
    const A = await ctx.startServer({ workers: 2, extraServer: extraServer() });
    const clients = await clientsInRooms(A, 12, { prefix });
    for (const c of clients) c.worker = await workerOf(A, c.s);
    const victim = clients[0].worker;
    const killed = clients.filter((c) => c.worker === victim);
    const survivors = clients.filter((c) => c.worker !== victim);
    assert.ok(killed.length > 0 && survivors.length > 0, 'clients on both workers');
    // While connected, each session is in Redis with its room (nothing is
    // written at the crash).
    for (const c of killed)
      await waitFor(async () => (await sessionOf(c.pid))?.rooms?.includes(c.room), { what: `session of ${c.userId}` });
    // These clients reconnect when the test says, so the gap is certain.
    for (const c of killed) c.s.io.reconnection(false);
    const gone = killed.map((c) => once(c.s, 'disconnect'));
    process.kill(victim, 'SIGKILL');
    for (const g of gone) assert.equal((await g)[0], 'transport close');
    await waitFor(() => !isAlive(victim), { what: 'the worker to die' });
    const rooms = [...new Set(clients.map((c) => c.room))];
    await talkToRooms(rooms, 2);
    for (const c of survivors) {
      assert.equal(c.s.connected, true, `${c.userId} on the other worker stays connected`);
      await c.inbox.wait('missed', (a) => a[0] === 2);
    }
    for (const c of killed) {
      const back = once(c.s, 'connect', 10000);
      c.s.connect();
      await back;
      await assertRecovered(c, 2);
    }
  });

  test('a connected socket\'s session is refreshed before it expires', async () => {
    // recovery_window 2s: refreshed every second, kept 3 s past each refresh.
    const A = await scope.startServer({ workers: 1, extraServer: redisLines(redis, { extra: ['recovery_window 2s;'] }) });
    const s = client(A, 'stops-idle', { reconnection: false });
    await once(s, 'connect');
    const key = `depth:recovery:session:${s._pid}`;
    const pttl = async () => Number((await redis.cli('PTTL', key)).trim());
    await waitFor(async () => (await pttl()) > 0, { what: 'the live session' });
    const first = await pttl();
    assert.ok(first <= 3000, `expires window + refresh interval after the write (${first} ms)`);
    // Well past the window, while nothing happens on the socket, it is still there: refreshed.
    let low = first;
    await waitFor(async () => {
      const now = await pttl();
      if (now < low) low = now;
      return now > low + 200;
    }, { ms: 4000, every: 50, what: 'a refresh of the session' });
    assert.ok(low > 0, 'it never expired');
    s.disconnect();
    await A.stop();
  });

  test('a client that disconnects itself is not recovered, and its stored session is gone', async () => {
    const A = await scope.startServer({ workers: 1, extraServer: extraServer() });
    const s = client(A, 'stops-leaver', { reconnection: false });
    const hello = once(s, 'probe:hello');  // an offset: the client will ask to recover
    await once(s, 'connect');
    await hello;
    const id = s.id;
    const pid = s._pid;
    await waitFor(async () => (await sessionOf(pid))?.sid === id, { what: 'the live session' });
    s.disconnect();  // io client disconnect
    await waitFor(async () => (await sessionOf(pid))?.closed === true, { what: 'the session closed' });
    assert.equal((await sessionOf(pid)).sid, undefined, 'nothing of the session is left to resume');
    s.connect();
    await once(s, 'connect');
    assert.equal(s.recovered, false);
    assert.notEqual(s.id, id);
    await A.stop();
  });
});
