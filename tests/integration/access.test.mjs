// Access is checked beyond the first CONNECT (issue 9):
//  - connection state recovery runs the CONNECT hooks: a private session id
//    (pid) resumes a session only with a token that verifies now and names the
//    session's user; anything else is refused as any CONNECT would be
//    (TOKEN_REQUIRED, INVALID_TOKEN) or connects fresh, and the session stays
//    for its owner;
//  - a recovery rejoins only the rooms the modules' guards still allow (chat:
//    the conversation's member set), and replays only their missed messages;
//  - POST /api/v1/rooms/leave takes a room from users' live sockets on every
//    node at once.
// Two server processes (2 workers each) share one Redis; a victim's client
// goes through a TCP proxy so that the test can cut its connection.
// "Received nothing" is checked with a fence, never a sleep: a message the same
// sender says afterwards in a second conversation the socket has joined
// arrives after anything the socket would have got before it (one worker
// publishes a sender's broadcasts in order, one subscriber connection
// receives them in order). /chat takes chat events only (its schema), so the
// probe's events are used on / where a test needs them.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, Scope, startServer, startRedis, redisLines, request, waitFor, waitSubscribed, once, Inbox, io, token, ack, rnd,
  refused, connected,
  switchableProxy,
} from './lib/harness.mjs';

const KEY = 'access-test-key-0123456789';
const NSP = '/chat';

let redis;
let A;
let B;
let scope;


before(async () => {
  redis = await startRedis();
  const extraServer = redisLines(redis, { extra: ['recovery_window 10s;', `api_key ${KEY};`] });
  const modules = ['auth_jwt.so', 'chat.so', 'api.so'];
  A = await startServer({ workers: 2, modules, extraServer });
  B = await startServer({ workers: 2, modules, extraServer });
  scope = new Scope(null);
  // Every node (2 processes x 2 workers) answers requests on /chat.
  await waitFor(async () => Number((await redis.cli('PUBSUB', 'NUMSUB', `socket.io-request#${NSP}#`)).split('\n')[1]) === 4,
    { ms: 10000, what: 'four nodes on /chat' });
}, { timeout: 60000 });

after(async () => {
  await scope?.cleanup();
  await A?.stop();
  await B?.stop();
  await redis?.stop();
});

// ------------------------------------------------------------------ helpers

const conversation = () => `acc-${rnd()}`;
const roomOf = (id) => `conversation:${id}`;
const addMember = (id, user) => redis.cli('SADD', `depth:conversation:${id}:members`, user);
const removeMember = (id, user) => redis.cli('SREM', `depth:conversation:${id}:members`, user);
const sessionStored = (pid) => waitFor(async () => (await redis.cli('EXISTS', `depth:recovery:session:${pid}`)).trim() === '1',
  { what: `session ${pid} stored` });

const join = async (s, conv) =>
  assert.deepEqual(await ack(s, 'chat:join', { conversationId: conv }), { data: { conversationId: conv } });

// A /chat client that has joined `convs` (a member already).
async function member(srv, userId, ...convs) {
  const s = await scope.connect(srv, NSP, { userId });
  const inbox = new Inbox(s, ['chat:message']);
  for (const c of convs) await join(s, c);
  return { s, inbox };
}

// Two conversations with these members: the one under test, and a fence.
async function conversations(...users) {
  const conv = conversation();
  const fence = conversation();
  for (const u of users) {
    await addMember(conv, u);
    await addMember(fence, u);
  }
  return { conv, fence };
}

const say = async (s, conv, content) => {
  const r = await ack(s, 'chat:message', { conversationId: conv, content });
  assert.ok(r.data, `chat:message stored: ${JSON.stringify(r)}`);
};

// Everything `talker` said before has reached the socket of `inbox`, which is
// in `fence` (see the header).
async function fenced(talker, fence, inbox) {
  const mark = `fence-${rnd()}`;
  await say(talker, fence, mark);
  await inbox.wait('chat:message', (a) => a[0].content === mark);
}

// What was said in `conv` that the socket got.
const heard = (inbox, conv) =>
  inbox.of('chat:message').filter((a) => a[0].conversationId === conv).map((a) => a[0].content);

// The victim: `userId`, a member of `conv` and `fence`, joined, through a
// proxy to A; its connection is cut (a recoverable "transport close") and a
// message is said in `conv` while it is away. Resolves what a thief would
// need, its pid and offset, and its socket to resume later.
async function cutOff(userId, { conv, fence }, talker, { beforeMissed } = {}) {
  const p = await switchableProxy(A);
  scope.defer(() => p.close());
  const s = scope.track(io(`http://127.0.0.1:${p.port}${NSP}`, {
    transports: ['websocket'], forceNew: true, reconnection: false, timeout: 5000,
    auth: { token: token(userId) },
  }));
  const inbox = new Inbox(s, ['chat:message']);
  await connected(s);
  await join(s, conv);
  await join(s, fence);
  await waitSubscribed(redis, roomOf(conv), 2, { nsp: NSP });
  await waitSubscribed(redis, roomOf(fence), 2, { nsp: NSP });
  await say(talker, conv, 'before');
  await inbox.wait('chat:message', (a) => a[0].content === 'before');
  const victim = { s, inbox, p, id: s.id, pid: s._pid, offset: s._lastOffset };
  assert.equal(typeof victim.pid, 'string');
  assert.equal(typeof victim.offset, 'string');
  const gone = once(s, 'disconnect');
  p.drop();
  assert.equal((await gone)[0], 'transport close');
  await sessionStored(victim.pid);
  if (beforeMissed) await beforeMissed();
  await say(talker, conv, 'missed');
  return victim;
}

// A client that presents someone else's pid and offset, with `auth` besides.
function thief(srv, victim, auth = {}) {
  return scope.track(io(srv.url + NSP, {
    transports: ['websocket'], forceNew: true, reconnection: false, timeout: 5000,
    auth: { ...auth, pid: victim.pid, offset: victim.offset },
  }));
}

// The victim comes back (through B) with its own pid, offset and token.
async function resume(victim) {
  victim.p.target = B;
  victim.s.connect();
  await connected(victim.s);
  return victim.s;
}

async function api(srv, body, { key = KEY, path = '/api/v1/rooms/leave' } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (key) headers.authorization = `Bearer ${key}`;
  const r = await request(srv, { method: 'POST', path, headers, body: JSON.stringify(body) });
  let parsed;
  try { parsed = JSON.parse(r.text); } catch { parsed = r.text; }
  return { status: r.status, body: parsed };
}

// ------------------------------------------------------------------- tests

describe('a recovery must prove its identity', () => {
  test('a pid without a token is refused with TOKEN_REQUIRED and sees nothing of the session', async () => {
    const c = await conversations('acc-v1', 'acc-t1');
    const talker = await member(B, 'acc-t1', c.conv, c.fence);
    const victim = await cutOff('acc-v1', c, talker.s);
    const t = thief(B, victim);
    const seen = new Inbox(t);
    const err = await refused(t);
    assert.equal(err.data?.code, 'TOKEN_REQUIRED');
    assert.deepEqual(seen.got, [], 'no missed packet reached the thief');
    // The session was not spent: its owner still resumes it, missed message included.
    const s = await resume(victim);
    assert.equal(s.recovered, true);
    assert.equal(s.id, victim.id);
    await victim.inbox.wait('chat:message', (a) => a[0].content === 'missed');
  });

  test('a pid with another user\'s valid token connects fresh: no rooms, no missed packets, its own identity', async () => {
    const c = await conversations('acc-v2', 'acc-t2');
    await addMember(c.fence, 'acc-mallory');
    const talker = await member(B, 'acc-t2', c.conv, c.fence);
    const victim = await cutOff('acc-v2', c, talker.s);
    const t = thief(B, victim, { token: token('acc-mallory') });
    const seen = new Inbox(t, ['chat:message']);
    await connected(t);
    assert.notEqual(t.id, victim.id);
    await join(t, c.fence);
    await say(talker.s, c.conv, 'after the theft');
    await fenced(talker.s, c.fence, seen);
    assert.deepEqual(heard(seen, c.conv), [], 'nothing of the conversation reached the thief');
    // Nor can it talk as the victim: it is itself, not a member.
    const sent = await ack(t, 'chat:message', { conversationId: c.conv, content: 'as the victim' });
    assert.equal(sent.error?.code, 'FORBIDDEN');
    const s = await resume(victim);
    assert.equal(s.recovered, true);
    await victim.inbox.wait('chat:message', (a) => a[0].content === 'missed');
  });

  test('an expired token is refused with INVALID_TOKEN, even with the right pid', async () => {
    const c = await conversations('acc-v3', 'acc-t3');
    const talker = await member(B, 'acc-t3', c.conv, c.fence);
    const victim = await cutOff('acc-v3', c, talker.s);
    // The owner itself, its token expired meanwhile.
    const t = thief(B, victim, { token: token('acc-v3', {}, { expiresIn: -60 }) });
    const seen = new Inbox(t);
    const err = await refused(t);
    assert.equal(err.data?.code, 'INVALID_TOKEN');
    assert.deepEqual(seen.got, []);
    // A second try fares no better (the session is not resumed "again and again").
    const again = thief(A, victim, { token: token('acc-v3', {}, { expiresIn: -60 }) });
    assert.equal((await refused(again)).data?.code, 'INVALID_TOKEN');
  });

  test('the same user with a valid token resumes: id, rooms and the missed message', async () => {
    const c = await conversations('acc-v4', 'acc-t4');
    const talker = await member(B, 'acc-t4', c.conv, c.fence);
    const victim = await cutOff('acc-v4', c, talker.s);
    const s = await resume(victim);
    assert.equal(s.recovered, true);
    assert.equal(s.id, victim.id);
    await victim.inbox.wait('chat:message', (a) => a[0].content === 'missed');
    await say(talker.s, c.conv, 'live');
    await victim.inbox.wait('chat:message', (a) => a[0].content === 'live');
    // Its identity is the token's: it still acts as itself.
    assert.ok((await ack(s, 'chat:message', { conversationId: c.conv, content: 'back' })).data);
  });
});

describe('a member removed from a conversation stops hearing it', () => {
  test('a recovery does not rejoin a room the member set no longer allows, nor replay it', async () => {
    const c = await conversations('acc-v5', 'acc-t5');
    const talker = await member(B, 'acc-t5', c.conv, c.fence);
    const victim = await cutOff('acc-v5', c, talker.s, { beforeMissed: () => removeMember(c.conv, 'acc-v5') });
    const s = await resume(victim);
    assert.equal(s.recovered, true, 'the session itself is still the user\'s');
    assert.equal(s.id, victim.id);
    await say(talker.s, c.conv, 'after removal');
    await fenced(talker.s, c.fence, victim.inbox);  // the fence conversation was kept
    assert.deepEqual(heard(victim.inbox, c.conv), ['before'], 'neither the missed nor the later message');
    assert.equal((await ack(s, 'chat:join', { conversationId: c.conv })).error?.code, 'FORBIDDEN');
  });

  test('POST /api/v1/rooms/leave takes the room from a live member on another node; the others still hear it', async () => {
    const c = await conversations('acc-v6', 'acc-o6', 'acc-t6');
    const removed = await member(B, 'acc-v6', c.conv, c.fence);
    const other = await member(B, 'acc-o6', c.conv);
    const talker = await member(A, 'acc-t6', c.conv, c.fence);
    await waitSubscribed(redis, roomOf(c.conv), 2, { nsp: NSP });
    await waitSubscribed(redis, roomOf(c.fence), 2, { nsp: NSP });
    await say(talker.s, c.conv, 'one');
    await removed.inbox.wait('chat:message', (a) => a[0].content === 'one');
    await removeMember(c.conv, 'acc-v6');
    const r = await api(A, { namespace: NSP, room: roomOf(c.conv), userIds: ['acc-v6'] });
    assert.deepEqual(r, {
      status: 200, body: { data: { namespace: NSP, room: roomOf(c.conv), userIds: ['acc-v6'], sockets: 1 } },
    });
    await say(talker.s, c.conv, 'two');
    await other.inbox.wait('chat:message', (a) => a[0].content === 'two');
    await talker.inbox.wait('chat:message', (a) => a[0].content === 'two');
    await fenced(talker.s, c.fence, removed.inbox);
    assert.deepEqual(heard(removed.inbox, c.conv), ['one']);
    assert.ok(removed.s.connected, 'only the room is gone, not the connection');
  });

  test('POST /api/v1/rooms/leave picks sockets by identity, not by user room', async () => {
    const room = `r-${rnd()}`;
    const victim = await scope.connect(B, '/', { userId: 'acc-v7' });
    const bystander = await scope.connect(A, '/', { userId: 'acc-a7' });
    for (const s of [victim, bystander]) await ack(s, 'probe:join', { room });
    await ack(bystander, 'probe:join', { room: 'user:acc-v7' });  // in the victim's user room, not the victim
    const r = await api(A, { namespace: '/', room, userIds: ['acc-v7'] });
    assert.equal(r.status, 200);
    assert.equal(r.body.data.sockets, 1);
    const rooms = async (s) => (await ack(s, 'probe:whoami')).data.rooms;
    await waitFor(async () => !(await rooms(victim)).includes(room), { what: 'the victim out of the room' });
    assert.ok((await rooms(bystander)).includes(room), 'the bystander stays');
  });
  test('POST /api/v1/rooms/leave validates its input and needs the key', async () => {
    const bad = (details) => ({ status: 400, body: { error: { code: 'INVALID_DATA', message: 'Invalid data', details } } });
    const call = async (body, opts) => { const r = await api(A, body, opts); return { status: r.status, body: r.body }; };
    assert.equal((await call({ namespace: NSP, room: 'x', userIds: ['u'] }, { key: null })).status, 401);
    assert.deepEqual(await call({ room: 'x', userIds: ['u'] }), bad('namespace: is required'));
    assert.deepEqual(await call({ namespace: '/nope', room: 'x', userIds: ['u'] }),
      bad('namespace: unknown namespace "/nope"'));
    assert.equal((await call({ namespace: NSP, userIds: ['u'] })).status, 400);
    assert.equal((await call({ namespace: NSP, room: '', userIds: ['u'] })).status, 400);
    assert.equal((await call({ namespace: NSP, room: 'x', userIds: [] })).status, 400);
    assert.deepEqual(await call({ namespace: NSP, room: 'x', userIds: ['u', { id: 1 }] }),
      bad('userIds[1]: must be an id (string of 1-128 characters or non-negative integer)'));
    const none = await call({ namespace: NSP, room: `nobody-${rnd()}`, userIds: ['u'] });
    assert.equal(none.status, 200);
    assert.equal(none.body.data.sockets, 0);
  });
});
