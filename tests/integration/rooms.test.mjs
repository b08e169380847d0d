// Rooms and broadcasts with the clients spread over both workers: rooms must
// behave as one server (join/leave, one room, several rooms each socket once,
// except, all but the sender, user rooms, binary).
//
// "Did not receive" is checked without sleeping: after the broadcast under test
// the same sender broadcasts a fence to the whole namespace; once a client has
// the fence, everything sent to it before has arrived too.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, startServer, ack, Inbox, Scope, workerOf, rnd, once,
} from './lib/harness.mjs';

let srv;
let scope;
let w0 = [];  // clients served by worker A
let w1 = [];  // clients served by worker B
let everyone = [];

// Connects WebSocket clients until each worker serves at least `per` of them.
async function spread(per = 4, max = 40) {
  const byWorker = new Map();
  for (let i = 0; i < max; i++) {
    const userId = `u${i}`;
    const s = await scope.connect(srv, '/', { userId });
    const c = { s, userId, inbox: new Inbox(s), worker: await workerOf(srv, s) };
    if (!byWorker.has(c.worker)) byWorker.set(c.worker, []);
    byWorker.get(c.worker).push(c);
    everyone.push(c);
    const lists = [...byWorker.values()];
    if (lists.length >= 2 && lists.every((l) => l.length >= per)) return lists;
  }
  throw new Error(`after ${max} connections the workers serve ${[...byWorker].map(([w, l]) => `${w}:${l.length}`).join(' ')}` +
    ' — the master does not spread connections over both workers');
}

before(async () => {
  srv = await startServer({ workers: 2 });
  scope = new Scope(null);
  [w0, w1] = await spread(4);
}, { timeout: 30000 });
after(async () => { await scope?.cleanup(); await srv?.stop(); });

const join = async (c, room) => {
  const r = await ack(c.s, 'probe:join', { room });
  assert.ok(r.data.rooms.includes(room), `join ${room}: ${JSON.stringify(r)}`);
};

// Broadcast from `sender`, then a fence; returns how many `event`s each client got.
async function broadcast(sender, spec) {
  const event = spec.event ?? `ev-${rnd()}`;
  for (const c of everyone) c.inbox.clear();
  assert.deepEqual(await ack(sender.s, 'probe:emit', { ...spec, event }), { data: true });
  const tag = rnd();
  const waits = everyone.map((c) => c.inbox.wait('fence', (a) => a[0] === tag, 5000));
  assert.deepEqual(await ack(sender.s, 'probe:emit', { rooms: [], event: 'fence', args: [tag] }), { data: true });
  await Promise.all(waits);
  return new Map(everyone.map((c) => [c, c.inbox.of(event)]));
}

// Asserts that exactly `expected` (each once, with `args`) received the event.
function expectOnly(got, expected, args) {
  for (const [c, list] of got) {
    const want = expected.includes(c) ? 1 : 0;
    assert.equal(list.length, want,
      `${c.userId} (worker ${c.worker}) received ${list.length} time(s), expected ${want}`);
    if (want && args) assert.deepEqual(list[0], args);
  }
}

describe('rooms across two workers', () => {
  test('the clients are spread over both workers', () => {
    const workers = srv.workerPids();
    assert.equal(workers.length, 2);
    assert.ok(workers.includes(w0[0].worker) && workers.includes(w1[0].worker));
    assert.notEqual(w0[0].worker, w1[0].worker);
  });

  test('join and leave are reflected in the socket\'s rooms', async () => {
    const c = w0[0];
    const room = `jl-${rnd()}`;
    const who = await ack(c.s, 'probe:whoami');
    assert.ok(who.data.rooms.includes(c.s.id), 'own id room');
    assert.ok(who.data.rooms.includes(`user:${c.userId}`), 'user room');
    const joined = await ack(c.s, 'probe:join', { room });
    assert.deepEqual(new Set(joined.data.rooms), new Set([...who.data.rooms, room]));
    const left = await ack(c.s, 'probe:leave', { room });
    assert.deepEqual(new Set(left.data.rooms), new Set(who.data.rooms));
  });

  test('to one room: its members on both workers get it once, nobody else', async () => {
    const room = `one-${rnd()}`;
    const members = [w0[0], w1[0]];
    for (const c of members) await join(c, room);
    const sender = w0[1];  // not a member
    const got = await broadcast(sender, { rooms: [room], args: ['hello', { n: 1 }] });
    expectOnly(got, members, ['hello', { n: 1 }]);
  });

  test('a member on the other worker than the sender gets it (both directions)', async () => {
    const room = `dir-${rnd()}`;
    await join(w0[2], room);
    await join(w1[2], room);
    expectOnly(await broadcast(w0[3], { rooms: [room], args: [1] }), [w0[2], w1[2]], [1]);
    expectOnly(await broadcast(w1[3], { rooms: [room], args: [2] }), [w0[2], w1[2]], [2]);
  });

  test('to several rooms: each socket in any of them gets it exactly once', async () => {
    const rx = `x-${rnd()}`;
    const ry = `y-${rnd()}`;
    const [a, c] = w0;
    const [b, d] = w1;
    await join(a, rx); await join(a, ry);
    await join(b, rx); await join(b, ry);
    await join(c, ry);
    await join(d, rx);
    const got = await broadcast(w1[3], { rooms: [rx, ry], args: ['multi'] });
    expectOnly(got, [a, b, c, d], ['multi']);
  });

  test('except: the whole namespace minus the members of a room', async () => {
    const rz = `z-${rnd()}`;
    const excluded = [w0[1], w1[1]];
    for (const c of excluded) await join(c, rz);
    const got = await broadcast(w0[0], { rooms: [], except: [rz], args: ['not you'] });
    expectOnly(got, everyone.filter((c) => !excluded.includes(c)), ['not you']);
  });

  test('rooms and except together', async () => {
    const r1 = `r1-${rnd()}`;
    const r2 = `r2-${rnd()}`;
    const [a, b] = w0;
    const [c, d] = w1;
    await join(a, r1); await join(b, r1); await join(c, r1); await join(d, r1);
    await join(b, r2); await join(c, r2);
    const got = await broadcast(w0[3], { rooms: [r1], except: [r2], args: [] });
    expectOnly(got, [a, d], []);
  });

  test('all but the sender: only the sending socket is left out', async () => {
    const sender = w1[0];
    const got = await broadcast(sender, { rooms: [], excludeSelf: true, args: ['others'] });
    expectOnly(got, everyone.filter((c) => c !== sender), ['others']);
  });

  test('all but the sender within a room', async () => {
    const room = `ex-${rnd()}`;
    for (const c of [w0[0], w0[1], w1[0], w1[1]]) await join(c, room);
    const got = await broadcast(w0[0], { rooms: [room], excludeSelf: true, args: ['room others'] });
    expectOnly(got, [w0[1], w1[0], w1[1]], ['room others']);
  });

  test('user room: every socket of that user, on both workers', async (t, ctx) => {
    const userId = `multi-${rnd()}`;
    // open sockets for one user until it has one on each worker
    const mine = [];
    const seen = new Set();
    for (let i = 0; i < 20 && seen.size < 2; i++) {
      const s = await ctx.connect(srv, '/', { userId });
      const c = { s, userId, inbox: new Inbox(s), worker: await workerOf(srv, s) };
      mine.push(c);
      everyone.push(c);
      seen.add(c.worker);
    }
    try {
      assert.equal(seen.size, 2, 'the user has a socket on each worker');
      const got = await broadcast(w0[0], { rooms: [`user:${userId}`], args: ['to the user'] });
      expectOnly(got, mine, ['to the user']);
    } finally {
      everyone = everyone.filter((c) => !mine.includes(c));
    }
  });

  test('after leave, the room no longer reaches the socket', async () => {
    const room = `leave-${rnd()}`;
    const [a] = w0;
    const [b] = w1;
    await join(a, room); await join(b, room);
    const left = await ack(b.s, 'probe:leave', { room });
    assert.ok(!left.data.rooms.includes(room));
    expectOnly(await broadcast(w0[2], { rooms: [room], args: ['after leave'] }), [a], ['after leave']);
  });

  test('binary broadcast reaches members on both workers intact', async () => {
    const room = `bin-${rnd()}`;
    const members = [w0[3], w1[3]];
    for (const c of members) await join(c, room);
    const payload = Buffer.from([0, 1, 2, 253, 254, 255]);
    const got = await broadcast(w0[0], { rooms: [room], args: [{ blob: payload }, 'meta'] });
    for (const c of members) {
      const [[obj, meta]] = got.get(c);
      assert.equal(meta, 'meta');
      assert.deepEqual(Buffer.from(obj.blob), payload);
    }
    expectOnly(got, members);
  });

  test('bench:broadcast delivers bench:msg to the room members', async () => {
    const room = `bench-${rnd()}`;
    const members = [w0[1], w1[2]];
    for (const c of members) await join(c, room);
    const waits = members.map((c) => once(c.s, 'bench:msg'));
    w1[0].s.emit('bench:broadcast', { room, payload: { hello: 'bench' } });
    for (const w of waits) assert.deepEqual(await w, [{ hello: 'bench' }]);
  });

  test('rooms are per namespace: a /chat socket in a room of the same name gets nothing', async (t, ctx) => {
    const room = `nsp-${rnd()}`;
    const chat = await ctx.connect(srv, '/chat', { userId: 'chatter' });
    const joined = await ack(chat, 'probe:join', { room });
    assert.ok(joined.data.rooms.includes(room));
    let chatGot = 0;
    chat.onAny(() => { chatGot++; });
    await join(w1[1], room);
    const got = await broadcast(w0[0], { rooms: [room], args: ['root only'] });
    expectOnly(got, [w1[1]], ['root only']);
    // fence on /chat too
    const tag = rnd();
    const f = once(chat, 'fence');
    await ack(chat, 'probe:emit', { rooms: [chat.id], event: 'fence', args: [tag] });
    await f;
    assert.equal(chatGot, 1, 'the /chat socket only got its own fence');
  });

  test('polling members (sessions on either worker) receive room broadcasts', async (t, ctx) => {
    const room = `poll-${rnd()}`;
    const pollers = await Promise.all(Array.from({ length: 6 }, (_, i) => ctx.connect(srv, '/', { userId: `poller${i}`, transports: ['polling'] })));
    for (const p of pollers) assert.ok((await ack(p, 'probe:join', { room })).data.rooms.includes(room));
    const waits = pollers.map((p) => once(p, 'to-pollers'));
    await join(w1[0], room);
    const wsWait = w1[0].inbox.wait('to-pollers');
    await ack(w0[0].s, 'probe:emit', { rooms: [room], event: 'to-pollers', args: [{ hi: 'pollers' }] });
    for (const w of waits) assert.deepEqual(await w, [{ hi: 'pollers' }]);
    assert.deepEqual(await wsWait, [{ hi: 'pollers' }]);
  });

  test('a socket that disconnected is gone from its rooms; the others still receive', async (t, ctx) => {
    const room = `gone-${rnd()}`;
    const leaving = await ctx.connect(srv, '/', { userId: 'leaver' });
    await ack(leaving, 'probe:join', { room });
    await join(w0[0], room); await join(w1[0], room);
    leaving.disconnect();
    expectOnly(await broadcast(w1[1], { rooms: [room], args: ['still'] }), [w0[0], w1[0]], ['still']);
  });
});
