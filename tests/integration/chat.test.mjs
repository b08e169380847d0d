// The chat module on /chat (contract §2 "/chat", §4, §5, §8): joins with an
// access check, messages stored in a Redis Stream before they are acked and
// broadcast to the whole room as chat:message and message:new, typing and read
// markers to the others, history (paging, clamping, entries a backend
// appended, edits merged), edits by the sender only, binary metadata, Redis
// going away, and two server processes sharing one Redis.
//
// Access: the Redis set depth:conversation:<id>:members, or the token's
// `conversations` claim, or role admin. "Did not receive" is checked without
// sleeping: a later broadcast from the same sender to the same socket is the
// fence (one worker delivers a sender's broadcasts in order).
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { createClient } from 'redis';
import {
  test, startServer, startRedis, redisLines, token, ack, once, Inbox, rnd, waitFor, request, waitSubscribed, tmpDir,
  writeConf, testConfig, freePort, SECRET,
} from './lib/harness.mjs';

const MODULES = ['auth_jwt.so', 'chat.so'];
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const STREAM_ID = /^\d+-\d+$/;
const INVALID = (details) => ({ error: { code: 'INVALID_DATA', message: 'Invalid data', details } });
const FORBIDDEN = (conv) => ({ error: { code: 'FORBIDDEN', message: 'Forbidden', details: `not a member of conversation ${conv}` } });

let redis;
let srv;
let db;  // node-redis client on the same Redis

before(async () => {
  redis = await startRedis();
  // Batching as the shipped conf has it.
  srv = await startServer({
    modules: MODULES, probe: false, workers: 1,
    extraServer: `${redisLines(redis)}\nclient_batch on;\nserver_batch_events user:typing;\nserver_batch_interval 100ms;`,
  });
  db = createClient({ url: redis.url });
  await db.connect();
}, { timeout: 30000 });

after(async () => {
  await db?.quit().catch(() => {});
  await srv?.stop();
  await redis?.stop();
});

// ------------------------------------------------------------------ helpers

const conv = () => `c-${rnd()}`;
const addMembers = (id, ...users) => db.sAdd(`depth:conversation:${id}:members`, users);

// A /chat socket for `userId`; `claims` go into the token (conversations, role).
function chat(ctx, server, userId, claims = {}) {
  return ctx.connect(server, '/chat', { auth: { token: token(userId, claims) } });
}

async function joined(s, id) {
  assert.deepEqual(await ack(s, 'chat:join', { conversationId: id }), { data: { conversationId: id } });
  return s;
}

function assertMessage(m, { conversationId, senderId, content, type = 'text', metadata = {} }) {
  assert.match(m.id, STREAM_ID);
  assert.match(m.createdAt, ISO);
  assert.deepEqual(m, { id: m.id, conversationId, senderId, content, type, metadata, createdAt: m.createdAt });
}

// Stream entry fields as an object.
async function entry(id, messageId) {
  const [e] = await db.xRange(`depth:chat:${id}`, messageId, messageId);
  return e && { ...e.message };
}

// Stream ids in order: <ms>-<seq> compared as numbers.
function idLess(a, b) {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  return am < bm || (am === bm && as < bs);
}

const bytes = (x) => Buffer.from(x instanceof ArrayBuffer ? new Uint8Array(x) : x);

// ------------------------------------------------------------------- joining

test('chat:join / conversation:join need access; FORBIDDEN joins nothing; chat:leave acks', async (t, ctx) => {
  const c1 = conv();
  const c2 = conv();
  await addMembers(c1, 'alice');
  const alice = await joined(await chat(ctx, srv, 'alice'), c1);
  // Token claim (string and integer ids) and role admin grant access too.
  const bob = await chat(ctx, srv, 'bob', { conversations: [c2, 42] });
  assert.deepEqual(await ack(bob, 'conversation:join', { conversationId: c2 }), { data: { conversationId: c2 } });
  assert.deepEqual(await ack(bob, 'chat:join', { conversationId: 42 }), { data: { conversationId: '42' } });
  const root = await chat(ctx, srv, 'root', { role: 'admin' });
  assert.deepEqual(await ack(root, 'chat:join', { conversationId: c1 }), { data: { conversationId: c1 } });

  // bob is no member of c1: refused, and he does not receive its traffic.
  assert.deepEqual(await ack(bob, 'chat:join', { conversationId: c1 }), FORBIDDEN(c1));
  assert.deepEqual(await ack(bob, 'conversation:join', { conversationId: c1 }), FORBIDDEN(c1));
  // Without an ack the refusal is an `error` event.
  const err = once(bob, 'error');
  bob.emit('chat:join', { conversationId: c1 });
  assert.deepEqual((await err)[0], FORBIDDEN(c1).error);

  await addMembers(c2, 'alice');
  const inbox = new Inbox(bob, ['chat:message']);
  await ack(alice, 'chat:message', { conversationId: c1, content: 'in c1' });
  await ack(alice, 'chat:message', { conversationId: c2, content: 'in c2' });
  await inbox.wait('chat:message', ([m]) => m.conversationId === c2);
  assert.deepEqual(inbox.of('chat:message').map(([m]) => m.content), ['in c2']);

  // Leaving: acked with the id, and the room's traffic stops.
  assert.deepEqual(await ack(bob, 'chat:leave', { conversationId: c2 }), { data: { conversationId: c2 } });
  assert.deepEqual(await ack(bob, 'chat:leave', { conversationId: c2 }), { data: { conversationId: c2 } });
  await ack(alice, 'chat:message', { conversationId: c2, content: 'after leave' });
  const fence = once(bob, 'chat:message');
  await ack(root, 'chat:message', { conversationId: 42, content: 'fence' });
  assert.equal((await fence)[0].content, 'fence');
  assert.deepEqual(inbox.of('chat:message').map(([m]) => m.content), ['in c2', 'fence']);
});

// ------------------------------------------------------------------ messages

test('chat:message is stored, then sent to the whole room as chat:message and message:new, then acked', async (t, ctx) => {
  const id = conv();
  await addMembers(id, 'alice', 'bob');
  const alice = await joined(await chat(ctx, srv, 'alice'), id);
  const bob = await joined(await chat(ctx, srv, 'bob'), id);
  const watcher = await joined(await chat(ctx, srv, 'carol', { conversations: [id] }), id);
  const inboxes = [alice, bob, watcher].map((s) => new Inbox(s, ['chat:message', 'message:new']));

  // Server-trusted fields from the client are ignored.
  const reply = await ack(alice, 'chat:message', {
    conversationId: id, content: 'hello', senderId: 'mallory', id: '1-1', createdAt: 'yesterday',
  });
  const m = reply.data;
  assertMessage(m, { conversationId: id, senderId: 'alice', content: 'hello' });
  assert.deepEqual(Object.keys(reply), ['data']);
  for (const inbox of inboxes) {
    assert.deepEqual((await inbox.wait('chat:message'))[0], m);
    assert.deepEqual((await inbox.wait('message:new'))[0], m);
  }
  // The stream entry, in the layout backends consume.
  assert.deepEqual(await entry(id, m.id), {
    conversationId: id, senderId: 'alice', content: 'hello', type: 'text', metadata: '{}', createdAt: m.createdAt,
  });

  // type and metadata; no ack asked: still stored and broadcast.
  bob.emit('chat:message', { conversationId: id, content: 'pic', type: 'image', metadata: { w: 3, tags: ['a'], n: null } });
  const [pic] = await inboxes[0].wait('chat:message', ([x]) => x.content === 'pic');
  assertMessage(pic, { conversationId: id, senderId: 'bob', content: 'pic', type: 'image', metadata: { w: 3, tags: ['a'], n: null } });
  assert.equal((await entry(id, pic.id)).metadata, '{"w":3,"tags":["a"],"n":null}');
  assert.equal(await db.xLen(`depth:chat:${id}`), 2);
});

test('message:send clients get message:new; numeric conversation ids are strings; events stay in order', async (t, ctx) => {
  const alice = await chat(ctx, srv, 'alice', { conversations: [7001] });
  const bob = await chat(ctx, srv, 'bob', { conversations: ['7001'] });
  assert.deepEqual(await ack(bob, 'conversation:join', { conversationId: 7001 }), { data: { conversationId: '7001' } });
  const got = once(bob, 'message:new');
  const { data } = await ack(alice, 'message:send', { conversationId: 7001, content: 'seed style' });
  assertMessage(data, { conversationId: '7001', senderId: 'alice', content: 'seed style' });
  assert.deepEqual((await got)[0], data);

  // A burst from one socket keeps its order, though some events wait on Redis
  // for the access check (member set) and others do not (token claim).
  const bySet = conv();
  const byClaim = conv();
  await addMembers(bySet, 'erin');
  const erin = await chat(ctx, srv, 'erin', { conversations: [byClaim] });
  const watcher = await chat(ctx, srv, 'root', { role: 'admin' });
  await joined(watcher, bySet);
  await joined(watcher, byClaim);
  const inbox = new Inbox(watcher, ['chat:message']);
  const acked = [];
  const acks = [];
  for (let i = 0; i < 20; i++) {
    const conversationId = i % 2 ? byClaim : bySet;
    acks.push(ack(erin, i % 3 ? 'chat:message' : 'message:send', { conversationId, content: `m${i}` })
      .then((r) => { acked.push(r.data.content); return r; }));
  }
  const replies = await Promise.all(acks);
  const order = [...Array(20).keys()].map((i) => `m${i}`);
  assert.deepEqual(acked, order);
  // Per conversation the stream ids grow with the order of sending.
  for (const c of [bySet, byClaim]) {
    const ids = replies.map((r) => r.data).filter((m) => m.conversationId === c).map((m) => m.id);
    for (let i = 1; i < ids.length; i++) assert.ok(idLess(ids[i - 1], ids[i]), `${ids[i - 1]} < ${ids[i]}`);
  }
  await waitFor(() => inbox.of('chat:message').length === 20, { what: '20 messages' });
  assert.deepEqual(inbox.of('chat:message').map(([m]) => m.content), order);

  // A batch: each item handled in order as if sent alone, answers in one ack.
  const batch = await ack(erin, 'batch', [
    { event: 'chat:message', data: { conversationId: bySet, content: 'b1' } },
    { event: 'chat:nope', data: {} },
    { event: 'chat:history', data: { conversationId: bySet, limit: 2 } },
  ]);
  assert.equal(batch.data?.length, 3, JSON.stringify(batch));
  assert.equal(batch.data[0].data.content, 'b1');
  assert.deepEqual(batch.data[1], INVALID('event: unknown event "chat:nope"'));
  assert.deepEqual(batch.data[2].data.map((m) => m.content), ['b1', 'm18']);
});

test('invalid payloads and unknown events: INVALID_DATA with details, to the ack or else to `error`, nothing stored', async (t, ctx) => {
  const id = conv();
  const alice = await chat(ctx, srv, 'alice', { conversations: [id] });
  const cases = [
    ['chat:message', { content: 'x' }, 'conversationId: is required'],
    ['chat:message', { conversationId: id }, 'content: is required'],
    ['chat:message', { conversationId: id, content: '' }, 'content: must not be empty'],
    ['chat:message', { conversationId: id, content: 'x'.repeat(10001) }, 'content: must be at most 10000 characters'],
    ['chat:message', { conversationId: id, content: 5 }, 'content: must be a string'],
    ['chat:message', { conversationId: id, content: 'x', type: 'video' }, 'type: must be one of "text", "image", "file"'],
    ['message:send', { conversationId: id, content: 'x', metadata: [] }, 'metadata: must be an object'],
    ['chat:message', { conversationId: '', content: 'x' }, 'conversationId: must be an id (string of 1-128 characters or non-negative integer)'],
    ['chat:message', { conversationId: 'x'.repeat(129), content: 'x' }, 'conversationId: must be an id (string of 1-128 characters or non-negative integer)'],
    ['chat:join', { conversationId: -1 }, 'conversationId: must be an id (string of 1-128 characters or non-negative integer)'],
    ['chat:join', { conversationId: 1.5 }, 'conversationId: must be an id (string of 1-128 characters or non-negative integer)'],
    ['chat:leave', {}, 'conversationId: is required'],
    ['chat:typing', { conversationId: id }, 'isTyping: is required'],
    ['chat:typing', { conversationId: id, isTyping: 'yes' }, 'isTyping: must be a boolean'],
    ['chat:read', { conversationId: id }, 'messageId: is required'],
    ['chat:history', { conversationId: id, limit: 0 }, 'limit: must be a positive integer'],
    ['chat:history', { conversationId: id, limit: -5 }, 'limit: must be a positive integer'],
    ['chat:history', { conversationId: id, limit: 2.5 }, 'limit: must be an integer'],
    ['chat:history', { conversationId: id, limit: '10' }, 'limit: must be an integer'],
    ['chat:history', { conversationId: id, before: 'abc' }, 'before: must be a message id (<ms>-<seq>, e.g. 1714567890123-0)'],
    ['chat:history', { conversationId: id, before: 12 }, 'before: must be a string'],
    ['message:edit', { conversationId: id, messageId: '1-0' }, 'content: is required'],
    ['chat:message', 'hello', 'payload: must be an object'],
    ['chat:nope', { conversationId: id }, 'event: unknown event "chat:nope"'],
    ['project:join', { projectId: 1 }, 'event: unknown event "project:join"'],
  ];
  for (const [event, payload, details] of cases) {
    assert.deepEqual(await ack(alice, event, payload), INVALID(details), `${event} ${JSON.stringify(payload).slice(0, 60)}`);
  }
  // Without an ack: the `error` event, once.
  const errors = new Inbox(alice, ['error']);
  alice.emit('chat:message', { conversationId: id, content: '' });
  alice.emit('chat:bogus');
  await waitFor(() => errors.of('error').length === 2, { what: 'two errors' });
  assert.deepEqual(errors.of('error').map(([e]) => e), [INVALID('content: must not be empty').error, INVALID('event: unknown event "chat:bogus"').error]);
  // Boundaries that pass; `null` in an optional field means absent.
  const long = await ack(alice, 'chat:message', { conversationId: id, content: 'é'.repeat(10000), type: null, metadata: null });
  assertMessage(long.data, { conversationId: id, senderId: 'alice', content: 'é'.repeat(10000) });
  assert.equal(await db.xLen(`depth:chat:${id}`), 1);
  assert.equal(errors.of('error').length, 2);
});

test('non-members cannot send, type, read, read history or edit; admins and token claims can', async (t, ctx) => {
  const id = conv();
  await addMembers(id, 'alice');
  const alice = await joined(await chat(ctx, srv, 'alice'), id);
  const mallory = await chat(ctx, srv, 'mallory', { conversations: ['other'] });
  const inbox = new Inbox(alice, ['chat:message', 'message:new', 'user:typing', 'chat:read', 'message:updated']);
  const { data: m } = await ack(alice, 'chat:message', { conversationId: id, content: 'mine' });

  assert.deepEqual(await ack(mallory, 'chat:message', { conversationId: id, content: 'spam' }), FORBIDDEN(id));
  assert.deepEqual(await ack(mallory, 'message:send', { conversationId: id, content: 'spam' }), FORBIDDEN(id));
  assert.deepEqual(await ack(mallory, 'chat:typing', { conversationId: id, isTyping: true }), FORBIDDEN(id));
  assert.deepEqual(await ack(mallory, 'chat:read', { conversationId: id, messageId: m.id }), FORBIDDEN(id));
  assert.deepEqual(await ack(mallory, 'chat:history', { conversationId: id }), FORBIDDEN(id));
  assert.deepEqual(await ack(mallory, 'message:edit', { conversationId: id, messageId: m.id, content: 'x' }), FORBIDDEN(id));
  assert.equal(await db.xLen(`depth:chat:${id}`), 1);
  assert.equal(await db.exists(`depth:chat:${id}:read`), 0);
  assert.equal(await db.exists(`depth:chat:${id}:edits`), 0);

  // An admin acts without being a member; a claim-holder too.
  const root = await chat(ctx, srv, 'root', { role: 'admin' });
  const { data: fromRoot } = await ack(root, 'chat:message', { conversationId: id, content: 'admin here' });
  assert.equal(fromRoot.senderId, 'root');
  const dave = await chat(ctx, srv, 'dave', { conversations: [id] });
  assert.equal((await ack(dave, 'chat:history', { conversationId: id })).data.length, 2);
  // alice saw her own message, the admin's, and nothing of mallory's.
  await inbox.wait('message:new', ([x]) => x.id === fromRoot.id);
  assert.deepEqual(inbox.got.map((g) => `${g.event}:${g.args[0].content}`),
    ['chat:message:mine', 'message:new:mine', 'chat:message:admin here', 'message:new:admin here']);
});

// ------------------------------------------------------- typing and reading

test('chat:typing goes to the others (volatile), not to the sending socket but to the same user\'s other socket', async (t, ctx) => {
  const id = conv();
  await addMembers(id, 'alice', 'bob');
  const a1 = await joined(await chat(ctx, srv, 'alice'), id);
  const a2 = await joined(await chat(ctx, srv, 'alice'), id);
  const bob = await joined(await chat(ctx, srv, 'bob'), id);
  const outsider = await chat(ctx, srv, 'zed', { conversations: [id] });  // a member who did not join
  // A client that asked for server batching gets user:typing inside `batch`.
  const batcher = await joined(await ctx.connect(srv, '/chat', { auth: { token: token('bob'), batch: true } }), id);
  const batched = new Inbox(batcher, ['batch', 'user:typing']);
  const boxes = [a1, a2, bob, outsider].map((s) => new Inbox(s, ['user:typing', 'chat:message']));

  const typing = { userId: 'alice', conversationId: id, isTyping: true };
  assert.deepEqual(await ack(a1, 'chat:typing', { conversationId: id, isTyping: true, userId: 'mallory' }), { data: typing });
  a1.emit('chat:typing', { conversationId: id, isTyping: false });
  assert.deepEqual((await boxes[1].wait('user:typing', ([x]) => !x.isTyping))[0], { ...typing, isTyping: false });
  await boxes[2].wait('user:typing', ([x]) => !x.isTyping);
  // Fence: a message from the same socket reaches every joined socket after the typing events.
  await ack(a1, 'chat:message', { conversationId: id, content: 'fence' });
  await ack(outsider, 'chat:join', { conversationId: id });
  await ack(bob, 'chat:message', { conversationId: id, content: 'fence2' });
  for (const b of boxes) await b.wait('chat:message', ([m]) => m.content === 'fence2');
  assert.deepEqual(boxes[0].of('user:typing'), []);
  assert.deepEqual(boxes[1].of('user:typing'), [[typing], [{ ...typing, isTyping: false }]]);
  assert.deepEqual(boxes[2].of('user:typing'), [[typing], [{ ...typing, isTyping: false }]]);
  assert.deepEqual(boxes[3].of('user:typing'), []);
  await waitFor(() => batched.of('batch').flatMap(([items]) => items).length === 2, { what: 'two batched typing events' });
  assert.deepEqual(batched.of('batch').flatMap(([items]) => items),
    [{ event: 'user:typing', data: typing }, { event: 'user:typing', data: { ...typing, isTyping: false } }]);
  assert.deepEqual(batched.of('user:typing'), []);
});

test('chat:read stores the marker in the conversation hash and tells the others', async (t, ctx) => {
  const id = conv();
  await addMembers(id, 'alice', 'bob');
  const a1 = await joined(await chat(ctx, srv, 'alice'), id);
  const a2 = await joined(await chat(ctx, srv, 'alice'), id);
  const bob = await joined(await chat(ctx, srv, 'bob'), id);
  const boxes = [a1, a2, bob].map((s) => new Inbox(s, ['chat:read', 'chat:message']));
  const { data: m } = await ack(bob, 'chat:message', { conversationId: id, content: 'read me' });

  const { data } = await ack(a1, 'chat:read', { conversationId: id, messageId: m.id, userId: 'bob', readAt: 'x' });
  assert.match(data.readAt, ISO);
  assert.deepEqual(data, { conversationId: id, messageId: m.id, userId: 'alice', readAt: data.readAt });
  assert.deepEqual((await boxes[1].wait('chat:read'))[0], data);
  assert.deepEqual((await boxes[2].wait('chat:read'))[0], data);
  assert.deepEqual({ ...await db.hGetAll(`depth:chat:${id}:read`) }, { alice: m.id });
  // A later marker replaces it; the sender's socket never gets its own.
  await ack(bob, 'chat:read', { conversationId: id, messageId: m.id });
  await ack(a1, 'chat:message', { conversationId: id, content: 'fence' });
  await boxes[0].wait('chat:message', ([x]) => x.content === 'fence');
  assert.equal(boxes[0].of('chat:read').length, 1);  // bob's, not its own
  assert.deepEqual({ ...await db.hGetAll(`depth:chat:${id}:read`) }, { alice: m.id, bob: m.id });
});

// ------------------------------------------------------------------- history

test('chat:history: newest first, limit (default 50, clamped to 200), before exclusive, backend entries included', async (t, ctx) => {
  const id = conv();
  await addMembers(id, 'alice');
  const alice = await chat(ctx, srv, 'alice');
  const sent = [];
  for (let i = 0; i < 4; i++) sent.push((await ack(alice, 'chat:message', { conversationId: id, content: `m${i}`, metadata: { i } })).data);
  // A backend appends a message in the same layout (and one with fields missing).
  const backendId = (await redis.cli('XADD', `depth:chat:${id}`, '*', 'conversationId', id, 'senderId', 'backend',
    'content', 'from the backend', 'type', 'file', 'metadata', '{"url":"https://x.test/a.pdf"}',
    'createdAt', '2024-05-01T12:00:00.000Z')).trim();
  const bareId = (await redis.cli('XADD', `depth:chat:${id}`, '*', 'content', 'bare')).trim();
  const backend = { id: backendId, conversationId: id, senderId: 'backend', content: 'from the backend', type: 'file',
    metadata: { url: 'https://x.test/a.pdf' }, createdAt: '2024-05-01T12:00:00.000Z' };
  const bare = { id: bareId, conversationId: id, senderId: null, content: 'bare', type: 'text', metadata: {},
    createdAt: new Date(Number(bareId.split('-')[0])).toISOString() };
  const all = [bare, backend, ...[...sent].reverse()];

  assert.deepEqual(await ack(alice, 'chat:history', { conversationId: id }), { data: all });
  assert.deepEqual(await ack(alice, 'chat:history', { conversationId: id, limit: 2 }), { data: all.slice(0, 2) });
  assert.deepEqual(await ack(alice, 'chat:history', { conversationId: id, before: backendId, limit: 2 }), { data: all.slice(2, 4) });
  assert.deepEqual(await ack(alice, 'chat:history', { conversationId: id, before: sent[1].id }), { data: [sent[0]] });
  assert.deepEqual(await ack(alice, 'chat:history', { conversationId: id, before: sent[0].id }), { data: [] });
  assert.deepEqual(await ack(alice, 'chat:history', { conversationId: id, before: '0-0' }), { data: [] });
  assert.deepEqual(await ack(alice, 'chat:history', { conversationId: id, before: null, limit: null }), { data: all });
  const empty = conv();
  await addMembers(empty, 'alice');
  assert.deepEqual(await ack(alice, 'chat:history', { conversationId: empty }), { data: [] });

  // 260 messages: the default is 50, a larger limit is clamped to 200.
  const big = conv();
  await addMembers(big, 'alice');
  const multi = db.multi();
  for (let i = 0; i < 260; i++) {
    multi.xAdd(`depth:chat:${big}`, '*', { conversationId: big, senderId: 'bot', content: `n${i}`, type: 'text', metadata: '{}', createdAt: '2024-05-01T12:00:00.000Z' });
  }
  await multi.exec();
  const def = (await ack(alice, 'chat:history', { conversationId: big })).data;
  assert.equal(def.length, 50);
  assert.equal(def[0].content, 'n259');
  const clamped = (await ack(alice, 'chat:history', { conversationId: big, limit: 100000 })).data;
  assert.equal(clamped.length, 200);
  assert.deepEqual([clamped[0].content, clamped[199].content], ['n259', 'n60']);
  const page2 = (await ack(alice, 'chat:history', { conversationId: big, before: clamped[199].id, limit: 500 })).data;
  assert.deepEqual(page2.map((m) => m.content), [...Array(60).keys()].reverse().map((i) => `n${i}`));
});

// ---------------------------------------------------------------------- edits

test('message:edit: only the sender; message:updated with editedAt to the whole room; history shows the edit', async (t, ctx) => {
  const id = conv();
  await addMembers(id, 'alice', 'bob');
  const alice = await joined(await chat(ctx, srv, 'alice'), id);
  const bob = await joined(await chat(ctx, srv, 'bob'), id);
  const boxes = [alice, bob].map((s) => new Inbox(s, ['message:updated']));
  const { data: m } = await ack(alice, 'chat:message', { conversationId: id, content: 'teh typo', type: 'text', metadata: { k: 1 } });

  const { data: edited } = await ack(alice, 'message:edit', { conversationId: id, messageId: m.id, content: 'the typo', senderId: 'bob' });
  assert.match(edited.editedAt, ISO);
  assert.deepEqual(edited, { ...m, content: 'the typo', editedAt: edited.editedAt });
  for (const b of boxes) assert.deepEqual((await b.wait('message:updated'))[0], edited);
  const [latest] = (await ack(bob, 'chat:history', { conversationId: id })).data;
  assert.deepEqual(latest, edited);
  // The stream entry itself is unchanged; the edit is beside it.
  assert.equal((await entry(id, m.id)).content, 'teh typo');
  assert.deepEqual(JSON.parse(await db.hGet(`depth:chat:${id}:edits`, m.id)), { content: 'the typo', editedAt: edited.editedAt, editedBy: 'alice' });

  // Someone else's message: FORBIDDEN; unknown ones: NOT_FOUND. Nothing changes.
  const notFound = { error: { code: 'NOT_FOUND', message: 'Not found', details: 'messageId: no such message in this conversation' } };
  assert.deepEqual(await ack(bob, 'message:edit', { conversationId: id, messageId: m.id, content: 'hijack' }),
    { error: { code: 'FORBIDDEN', message: 'Forbidden', details: 'only the sender may edit a message' } });
  assert.deepEqual(await ack(alice, 'message:edit', { conversationId: id, messageId: '1-0', content: 'x' }), notFound);
  assert.deepEqual(await ack(alice, 'message:edit', { conversationId: id, messageId: 'nonsense', content: 'x' }), notFound);
  assert.deepEqual(await ack(alice, 'message:edit', { conversationId: id, messageId: 12, content: 'x' }), notFound);
  const other = conv();
  await addMembers(other, 'alice');
  assert.deepEqual(await ack(alice, 'message:edit', { conversationId: other, messageId: m.id, content: 'x' }), notFound);
  const errs = once(bob, 'error');
  bob.emit('message:edit', { conversationId: id, messageId: m.id, content: 'hijack' });
  assert.equal((await errs)[0].code, 'FORBIDDEN');
  assert.deepEqual((await ack(bob, 'chat:history', { conversationId: id })).data, [edited]);

  // A second edit replaces the first.
  const { data: again } = await ack(alice, 'message:edit', { conversationId: id, messageId: m.id, content: 'final' });
  assert.deepEqual((await ack(alice, 'chat:history', { conversationId: id })).data, [again]);
  assert.deepEqual((await boxes[1].wait('message:updated', ([x]) => x.content === 'final'))[0], again);
});

// --------------------------------------------------------------------- binary

test('binary values in metadata are relayed, acked, kept in history and edits as binary', async (t, ctx) => {
  const id = conv();
  await addMembers(id, 'alice', 'bob');
  const alice = await joined(await chat(ctx, srv, 'alice'), id);
  const bob = await joined(await chat(ctx, srv, 'bob'), id);
  const thumb = Buffer.from([0, 1, 2, 253, 254, 255]);
  const part = Buffer.from('part two');
  const metadata = { thumb, nested: { parts: [part, 'text'] }, $binary: 'not binary', name: 'a.png' };
  const got = once(bob, 'chat:message');
  const { data: m } = await ack(alice, 'chat:message', { conversationId: id, content: 'image', type: 'image', metadata });

  const check = (msg, what) => {
    assert.ok(bytes(msg.metadata.thumb).equals(thumb), `${what}: thumb ${msg.metadata.thumb}`);
    assert.ok(bytes(msg.metadata.nested.parts[0]).equals(part), `${what}: part`);
    assert.equal(typeof msg.metadata.thumb, 'object');
    assert.deepEqual([msg.metadata.nested.parts[1], msg.metadata.$binary, msg.metadata.name], ['text', 'not binary', 'a.png'], what);
  };
  check(m, 'ack');
  check((await got)[0], 'broadcast');
  // Stored as {"$binary": base64}; the client's own "$binary" key is escaped.
  assert.deepEqual(JSON.parse((await entry(id, m.id)).metadata), {
    thumb: { $binary: thumb.toString('base64') }, nested: { parts: [{ $binary: part.toString('base64') }, 'text'] },
    $$binary: 'not binary', name: 'a.png',
  });
  const [h] = (await ack(bob, 'chat:history', { conversationId: id })).data;
  check(h, 'history');
  const { data: e } = await ack(alice, 'message:edit', { conversationId: id, messageId: m.id, content: 'image!' });
  check(e, 'edit');

  // A backend entry with the marker reads back as binary.
  await redis.cli('XADD', `depth:chat:${id}`, '*', 'senderId', 'backend', 'content', 'blob',
    'metadata', '{"blob":{"$binary":"AAEC"},"plain":{"$binary":"not base64!"}}');
  const [b] = (await ack(bob, 'chat:history', { conversationId: id, limit: 1 })).data;
  assert.ok(bytes(b.metadata.blob).equals(Buffer.from([0, 1, 2])));
  assert.deepEqual(b.metadata.plain, { $binary: 'not base64!' });
});

// ----------------------------------------------------------------- directives

test('directives: members key, access claim off, history default and max, stream trimming; bad values fail -t', async (t, ctx) => {
  const port = await freePort();
  const custom = await ctx.startServer({
    modules: MODULES, probe: false, workers: 1, port,
    serverBlock: [
      `listen 127.0.0.1:${port};`, `auth_jwt_secret ${SECRET};`, redisLines(redis),
      'namespace /chat { chat_members_key "room:{id}:users"; chat_access_claim off;',
      '  chat_history_limit 2; chat_history_max 3; chat_stream_maxlen 5; }',
    ].join('\n'),
  });
  const id = conv();
  await db.sAdd(`depth:room:${id}:users`, 'alice');
  const alice = await chat(ctx, custom, 'alice');
  const claimOnly = await chat(ctx, custom, 'bob', { conversations: [id] });
  assert.deepEqual(await ack(claimOnly, 'chat:join', { conversationId: id }), FORBIDDEN(id));
  await addMembers(id, 'carol');  // the default key means nothing here
  assert.deepEqual(await ack(await chat(ctx, custom, 'carol'), 'chat:join', { conversationId: id }), FORBIDDEN(id));

  const multi = db.multi();
  for (let i = 0; i < 300; i++) multi.xAdd(`depth:chat:${id}`, '*', { senderId: 'bot', content: `n${i}` });
  await multi.exec();
  await ack(alice, 'chat:message', { conversationId: id, content: 'last' });
  const len = await db.xLen(`depth:chat:${id}`);
  assert.ok(len >= 5 && len < 300, `trimmed approximately to 5: ${len}`);
  assert.deepEqual((await ack(alice, 'chat:history', { conversationId: id })).data.map((m) => m.content), ['last', 'n299']);
  assert.equal((await ack(alice, 'chat:history', { conversationId: id, limit: 50 })).data.length, 3);

  for (const [line, err] of [
    ['chat_members_key conversation:members;', /expected a key pattern holding \{id\}/],
    ['chat_history_limit 300;', /chat_history_limit must be between 1 and chat_history_max/],
    ['chat_stream_maxlen 0;', /chat_stream_maxlen must be at least 1/],
    ['chat_history_max lots;', /invalid number "lots"/],
  ]) {
    const dir = tmpDir('dr-chat-conf-');
    const file = writeConf(dir, { port: 1, modules: MODULES, probe: false, extraServer: line });
    const r = testConfig(file);
    assert.notEqual(r.code, 0, line);
    assert.match(r.stderr + r.stdout, err, line);
  }
});

// ---------------------------------------------------------------- Redis away

test('Redis stopped: SOCKET_ERROR saying the message was not stored, nothing broadcast or stored; works again after', async (t, ctx) => {
  const r = await startRedis({ t, args: ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', tmpDir('dr-chat-redis-')] });
  const s2 = await ctx.startServer({ modules: MODULES, probe: false, workers: 1, extraServer: redisLines(r) });
  const id = conv();
  await r.cli('SADD', `depth:conversation:${id}:members`, 'bob');
  const alice = await joined(await chat(ctx, s2, 'alice', { conversations: [id] }), id);
  const bob = await chat(ctx, s2, 'bob');
  const inbox = new Inbox(alice, ['chat:message', 'message:new']);
  const { data: first } = await ack(alice, 'chat:message', { conversationId: id, content: 'before' });

  await r.stop();
  await waitFor(async () => (await request(s2, { path: '/readyz' })).status === 503, { what: 'readyz 503' });
  const unavailable = (details) => ({ error: { code: 'SOCKET_ERROR', message: 'A connection error occurred', details } });
  // The token grants access: the XADD itself fails.
  assert.deepEqual(await ack(alice, 'chat:message', { conversationId: id, content: 'lost' }),
    unavailable('Redis unavailable: the message was not stored'));
  // Membership from Redis cannot be checked either.
  assert.deepEqual(await ack(bob, 'message:send', { conversationId: id, content: 'lost too' }),
    unavailable('Redis unavailable: cannot check access, the message was not stored'));
  const err = once(alice, 'error');
  alice.emit('chat:message', { conversationId: id, content: 'lost, no ack' });
  assert.deepEqual((await err)[0], unavailable('Redis unavailable: the message was not stored').error);
  assert.deepEqual(await ack(alice, 'chat:history', { conversationId: id }), unavailable('Redis unavailable: cannot read the history'));
  assert.deepEqual(await ack(alice, 'chat:read', { conversationId: id, messageId: first.id }), unavailable('Redis unavailable: the read marker was not stored'));
  assert.equal(alice.connected, true);

  await r.start();
  await waitFor(async () => (await request(s2, { path: '/readyz' })).status === 200, { ms: 10000, what: 'readyz 200' });
  const { data: next } = await waitFor(async () => {
    const reply = await ack(alice, 'chat:message', { conversationId: id, content: 'after' });
    return reply.data ? reply : null;
  }, { what: 'a stored message after the restart' });
  assert.equal(next.content, 'after');
  assert.deepEqual((await ack(bob, 'chat:history', { conversationId: id })).data.map((m) => m.content), ['after', 'before']);
  await inbox.wait('chat:message', ([m]) => m.content === 'after');
  assert.deepEqual(inbox.of('chat:message').map(([m]) => m.content), ['before', 'after']);
});

// -------------------------------------------------------------- two servers

test('two server processes on one Redis: a message sent on one reaches members on the other; history is shared', async (t, ctx) => {
  const other = await ctx.startServer({ modules: MODULES, probe: false, workers: 1, extraServer: redisLines(redis) });
  const id = conv();
  await addMembers(id, 'alice', 'bob');
  const alice = await joined(await chat(ctx, srv, 'alice'), id);
  const bob = await joined(await chat(ctx, other, 'bob'), id);
  await waitSubscribed(redis, `conversation:${id}`, 2, { nsp: '/chat' });
  const got = [once(bob, 'chat:message'), once(bob, 'message:new')];
  const { data: m } = await ack(alice, 'chat:message', { conversationId: id, content: 'across', metadata: { bin: Buffer.from([9, 8]) } });
  for (const p of got) {
    const [x] = await p;
    assert.deepEqual({ ...x, metadata: {} }, { ...m, metadata: {} });
    assert.ok(bytes(x.metadata.bin).equals(Buffer.from([9, 8])));
  }
  // Typing crosses too (to the others); the edit comes back to alice.
  const typing = once(alice, 'user:typing');
  await ack(bob, 'chat:typing', { conversationId: id, isTyping: true });
  assert.deepEqual((await typing)[0], { userId: 'bob', conversationId: id, isTyping: true });
  const upd = once(bob, 'message:updated');
  const { data: e } = await ack(alice, 'message:edit', { conversationId: id, messageId: m.id, content: 'across!' });
  assert.equal((await upd)[0].editedAt, e.editedAt);
  const [h] = (await ack(bob, 'chat:history', { conversationId: id })).data;
  assert.equal(h.content, 'across!');
});
