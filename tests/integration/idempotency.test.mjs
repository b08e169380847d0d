// Idempotent chat messages and project comments (contract §5): a client may
// send `clientMessageId`; a retry with the same key returns the stored entry
// (same id, same createdAt) instead of storing it twice, and the room hears of
// it once. A command Redis did not answer (stalled past redis_command_timeout)
// is answered "unknown, retry with the same key", never "not stored"; Redis
// refusing at once (stopped) is the truthful "not stored".
//
// Redis is stalled with DEBUG SLEEP from a second connection: what the worker
// had sent stays in the socket and runs when Redis wakes, after the worker gave
// up on it (the case where an answer "not stored" was a lie).
// "Did not receive" without sleeping: one worker, so a later broadcast from the
// same worker to the same socket is the fence.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before } from 'node:test';
import { createClient } from 'redis';
import {
  test, startServer, startRedis, redisLines, token, ack, Inbox, rnd, waitFor, request, withTimeout,
} from './lib/harness.mjs';

const MODULES = ['auth_jwt.so', 'chat.so', 'projects.so'];
const SOCKET_ERROR = 'A connection error occurred';
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const STREAM_ID = /^\d+-\d+$/;

const serverOpts = (redis, extra = []) => ({
  modules: MODULES, probe: false, workers: 1,
  extraServer: [redisLines(redis, { extra }), 'namespace /projects;'].join('\n'),
});

let redis;
let srv;

before(async () => {
  redis = await startRedis();
  srv = await startServer(serverOpts(redis));
}, { timeout: 30000 });

after(async () => {
  await srv?.stop();
  await redis?.stop();
});

// ------------------------------------------------------------------ helpers

const conv = () => `c-${rnd()}`;
const pid = () => `p-${rnd()}`;

// A socket on `nsp` whose token grants `ids` (no Redis needed for access),
// recording the room events it receives.
async function member(ctx, server, nsp, userId, ids) {
  const claims = nsp === '/chat' ? { conversations: ids } : { projects: ids };
  const s = await ctx.connect(server, nsp, { auth: { token: token(userId, claims) } });
  s.inbox = new Inbox(s, ['chat:message', 'message:new', 'project:comment', 'activity']);
  return s;
}

async function joinChat(s, id) {
  assert.deepEqual(await ack(s, 'chat:join', { conversationId: id }), { data: { conversationId: id } });
  return s;
}
async function joinProject(s, id) {
  assert.deepEqual(await ack(s, 'project:join', { projectId: id }), { data: { projectId: id } });
  s.inbox.clear();  // its own join's activity
  return s;
}

const xlen = async (r, key) => Number(await r.cli('XLEN', key));
const chatStream = (id) => `depth:chat:${id}`;
const commentStream = (id) => `depth:project:${id}:comments`;

// The entries of a stream, oldest first: [{id, fields}].
async function entries(r, key) {
  const db = createClient({ url: r.url });
  await db.connect();
  try {
    return (await db.xRange(key, '-', '+')).map((e) => ({ id: e.id, fields: { ...e.message } }));
  } finally {
    await db.quit();
  }
}

// The events `s` received of `event` whose payload has `id`.
const receivedId = (s, event, id) => s.inbox.of(event).filter(([m]) => m.id === id);

// Stalls Redis for `ms` (DEBUG SLEEP on a connection of its own); resolves once
// Redis is asleep (a PING on another connection goes unanswered) with
// {woke}: a promise of the DEBUG reply, when it wakes up.
async function stall(r, ms) {
  const sleeper = net.connect(r.port, '127.0.0.1');
  const woke = new Promise((resolve, reject) => {
    sleeper.once('data', (d) => { sleeper.destroy(); resolve(d.toString()); });
    sleeper.once('error', reject);
  });
  sleeper.write(`DEBUG SLEEP ${ms / 1000}\r\n`);
  await waitFor(() => new Promise((resolve) => {
    const probe = net.connect(r.port, '127.0.0.1', () => probe.write('PING\r\n'));
    const timer = setTimeout(() => { probe.destroy(); resolve(true); }, 100);
    probe.once('data', () => { clearTimeout(timer); probe.destroy(); resolve(false); });
    probe.once('error', () => { clearTimeout(timer); resolve(false); });
  }), { ms: 3000, every: 1, what: 'Redis asleep' });
  return { woke };
}

// ------------------------------------------------------- (a) Redis healthy

test('chat: a retry with the same clientMessageId returns the stored message; stored and broadcast once', async (t, ctx) => {
  const id = conv();
  const alice = await joinChat(await member(ctx, srv, '/chat', 'alice', [id]), id);
  const bob = await joinChat(await member(ctx, srv, '/chat', 'bob', [id]), id);
  const send = { conversationId: id, content: 'hello', clientMessageId: 'a1:b2.c3-d_4' };

  const { data: first } = await ack(alice, 'chat:message', send);
  assert.match(first.id, STREAM_ID);
  assert.match(first.createdAt, ISO);
  assert.deepEqual(first, {
    id: first.id, conversationId: id, senderId: 'alice', content: 'hello', type: 'text', metadata: {},
    createdAt: first.createdAt, clientMessageId: 'a1:b2.c3-d_4',
  });
  // The retry, also under the other event name and with another content: the
  // stored message, not a new one.
  assert.deepEqual(await ack(alice, 'chat:message', send), { data: first });
  assert.deepEqual(await ack(alice, 'message:send', { ...send, content: 'hello again' }), { data: first });
  assert.equal(await xlen(redis, chatStream(id)), 1);
  const [stored] = await entries(redis, chatStream(id));
  assert.equal(stored.id, first.id);
  assert.equal(stored.fields.clientMessageId, 'a1:b2.c3-d_4');
  assert.equal(stored.fields.createdAt, first.createdAt);

  // The key is the sender's, per conversation: bob's same key is his own message.
  const { data: bobs } = await ack(bob, 'chat:message', send);
  assert.notEqual(bobs.id, first.id);
  assert.equal(bobs.senderId, 'bob');
  await bob.inbox.wait('chat:message', ([m]) => m.id === bobs.id);  // fence: alice's broadcasts came before
  assert.equal(receivedId(bob, 'chat:message', first.id).length, 1);
  assert.equal(receivedId(bob, 'message:new', first.id).length, 1);
  assert.deepEqual((await ack(alice, 'chat:history', { conversationId: id })).data.map((m) => [m.id, m.clientMessageId]),
    [[bobs.id, 'a1:b2.c3-d_4'], [first.id, 'a1:b2.c3-d_4']]);

  // A record key with its TTL.
  const ttl = Number(await redis.cli('PTTL', `depth:idem:chat:${id.length}:${id}:5:alice:a1:b2.c3-d_4`));
  assert.ok(ttl > 23 * 3600 * 1000 && ttl <= 24 * 3600 * 1000, `PTTL ${ttl}`);
});

test('chat: two concurrent sends with one key (two sockets of the user) store one message, broadcast once', async (t, ctx) => {
  const id = conv();
  const phone = await member(ctx, srv, '/chat', 'alice', [id]);
  const laptop = await member(ctx, srv, '/chat', 'alice', [id]);
  const bob = await joinChat(await member(ctx, srv, '/chat', 'bob', [id]), id);
  const send = { conversationId: id, content: 'once', clientMessageId: 'k-1' };
  const [a, b] = await Promise.all([ack(phone, 'chat:message', send), ack(laptop, 'message:send', send)]);
  assert.ok(a.data, JSON.stringify(a));
  assert.deepEqual(b, a);
  assert.equal(await xlen(redis, chatStream(id)), 1);
  const { data: fence } = await ack(phone, 'chat:message', { conversationId: id, content: 'fence' });
  await bob.inbox.wait('chat:message', ([m]) => m.id === fence.id);
  assert.equal(receivedId(bob, 'chat:message', a.data.id).length, 1);
});

test('chat: clientMessageId is validated; a bad one stores nothing', async (t, ctx) => {
  const id = conv();
  const alice = await member(ctx, srv, '/chat', 'alice', [id]);
  const invalid = (details) => ({ error: { code: 'INVALID_DATA', message: 'Invalid data', details } });
  const chars = "clientMessageId: must be 1-64 characters of A-Z, a-z, 0-9, '_', '-', ':', '.'";
  for (const [key, details] of [
    ['has space', chars], ['ünï', chars], ['a/b', chars],
    ['x'.repeat(65), 'clientMessageId: must be at most 64 characters'],
    ['', 'clientMessageId: must not be empty'],
    [42, 'clientMessageId: must be a string'],
  ]) {
    assert.deepEqual(await ack(alice, 'chat:message', { conversationId: id, content: 'x', clientMessageId: key }),
      invalid(details), JSON.stringify(key));
  }
  assert.ok((await ack(alice, 'chat:message', { conversationId: id, content: 'x', clientMessageId: 'x'.repeat(64) })).data);
  assert.equal(await xlen(redis, chatStream(id)), 1);
});

test('project:comment: a retry with the same clientMessageId returns the stored comment; stored and broadcast once', async (t, ctx) => {
  const p = pid();
  const alice = await joinProject(await member(ctx, srv, '/projects', 'alice', [p]), p);
  const bob = await joinProject(await member(ctx, srv, '/projects', 'bob', [p]), p);
  alice.inbox.clear();
  const send = { projectId: p, comment: 'looks good', attachments: [{ name: 'a.txt' }], clientMessageId: 'c-1' };
  const { data: first } = await ack(alice, 'project:comment', send);
  assert.deepEqual(first, {
    id: first.id, projectId: p, userId: 'alice', comment: 'looks good', attachments: [{ name: 'a.txt' }],
    createdAt: first.createdAt, clientMessageId: 'c-1',
  });
  assert.deepEqual(await ack(alice, 'project:comment', { ...send, comment: 'edited retry' }), { data: first });
  assert.equal(await xlen(redis, commentStream(p)), 1);
  const { data: fence } = await ack(alice, 'project:comment', { projectId: p, comment: 'fence' });
  await bob.inbox.wait('project:comment', ([c]) => c.id === fence.id);
  assert.equal(receivedId(bob, 'project:comment', first.id).length, 1);
  assert.equal(bob.inbox.of('activity').filter(([a]) => a.kind === 'comment').length, 2);  // first + fence
});

// ------------------------------------------------- (b) Redis stalled

test('Redis stalled past redis_command_timeout: "unknown, retry"; the retry returns what was stored and delivers it once', { timeout: 40000 }, async (t, ctx) => {
  const own = await startRedis({ t, args: ['--enable-debug-command', 'local'] });
  const server = await ctx.startServer(serverOpts(own, ['redis_command_timeout 300ms;']));
  const id = conv();
  const p = pid();
  const alice = await member(ctx, server, '/chat', 'alice', [id]);
  const aliceToo = await member(ctx, server, '/chat', 'alice', [id]);  // a second in-flight send
  const bob = await joinChat(await member(ctx, server, '/chat', 'bob', [id]), id);
  const aliceP = await member(ctx, server, '/projects', 'alice', [p]);
  const bobP = await joinProject(await member(ctx, server, '/projects', 'bob', [p]), p);

  const send = { conversationId: id, content: 'hello', clientMessageId: 'retry-me' };
  const comment = { projectId: p, comment: 'noted', clientMessageId: 'retry-me' };
  const { woke } = await stall(own, 2000);
  const [answer, keyless, commentAnswer] = await Promise.all([
    ack(alice, 'chat:message', send),
    ack(aliceToo, 'chat:message', { conversationId: id, content: 'no key' }),
    ack(aliceP, 'project:comment', comment),
  ]);
  assert.deepEqual(answer, {
    error: {
      code: 'SOCKET_ERROR', message: SOCKET_ERROR,
      details: 'Redis did not answer: the message may have been stored; send it again with the same clientMessageId',
      retry: true, clientMessageId: 'retry-me',
    },
  });
  assert.deepEqual(keyless, {
    error: {
      code: 'SOCKET_ERROR', message: SOCKET_ERROR,
      details: 'Redis did not answer: the message may have been stored (a clientMessageId makes a retry safe)',
    },
  });
  assert.deepEqual(commentAnswer, {
    error: {
      code: 'SOCKET_ERROR', message: SOCKET_ERROR,
      details: 'comment may have been stored: Redis did not answer; send it again with the same clientMessageId',
      retry: true, clientMessageId: 'retry-me',
    },
  });

  // Redis wakes and runs what it had been sent: stored, heard by nobody.
  assert.equal(await withTimeout(woke, 5000, 'DEBUG SLEEP reply'), '+OK\r\n');
  await waitFor(async () => await xlen(own, chatStream(id)) === 2 && await xlen(own, commentStream(p)) === 1,
    { what: 'the stalled commands applied' });
  const stored = (await entries(own, chatStream(id))).find((e) => e.fields.clientMessageId === 'retry-me');
  const storedComment = (await entries(own, commentStream(p)))[0];

  // The retry (once Redis answers again): the stored message, broadcast now.
  await waitFor(async () => (await request(server, { path: '/readyz' })).status === 200, { ms: 10000, what: 'readyz 200' });
  const { data: message } = await ack(alice, 'chat:message', send);
  assert.deepEqual(message, {
    id: stored.id, conversationId: id, senderId: 'alice', content: 'hello', type: 'text', metadata: {},
    createdAt: stored.fields.createdAt, clientMessageId: 'retry-me',
  });
  const { data: c } = await ack(aliceP, 'project:comment', comment);
  assert.deepEqual(c, {
    id: storedComment.id, projectId: p, userId: 'alice', comment: 'noted', attachments: [],
    createdAt: storedComment.fields.createdAt, clientMessageId: 'retry-me',
  });
  await bob.inbox.wait('chat:message', ([m]) => m.id === stored.id);
  await bobP.inbox.wait('project:comment', ([x]) => x.id === storedComment.id);

  // Another retry: the same answer, nothing broadcast again.
  assert.deepEqual(await ack(alice, 'message:send', send), { data: message });
  assert.deepEqual(await ack(aliceP, 'project:comment', comment), { data: c });
  const { data: fence } = await ack(alice, 'chat:message', { conversationId: id, content: 'fence' });
  const { data: fenceP } = await ack(aliceP, 'project:comment', { projectId: p, comment: 'fence' });
  await bob.inbox.wait('chat:message', ([m]) => m.id === fence.id);
  await bobP.inbox.wait('project:comment', ([x]) => x.id === fenceP.id);
  assert.equal(receivedId(bob, 'chat:message', stored.id).length, 1);
  assert.equal(receivedId(bob, 'message:new', stored.id).length, 1);
  assert.equal(receivedId(bobP, 'project:comment', storedComment.id).length, 1);

  // History holds it once (and the keyless one, stored blind, as before).
  const history = (await ack(bob, 'chat:history', { conversationId: id })).data;
  assert.deepEqual(history.map((m) => m.content).sort(), ['fence', 'hello', 'no key']);
  assert.equal(history.filter((m) => m.id === stored.id).length, 1);
  assert.equal(await xlen(own, commentStream(p)), 2);
});

// ------------------------------------------------- (c) Redis stopped

test('Redis stopped: truthfully "not stored" (nothing was sent); the retry with the key stores it once', { timeout: 40000 }, async (t, ctx) => {
  const own = await startRedis({ t });
  const server = await ctx.startServer(serverOpts(own));
  const id = conv();
  const p = pid();
  const alice = await joinChat(await member(ctx, server, '/chat', 'alice', [id]), id);
  const aliceP = await member(ctx, server, '/projects', 'alice', [p]);
  const send = { conversationId: id, content: 'later', clientMessageId: 'k' };
  const comment = { projectId: p, comment: 'later', clientMessageId: 'k' };

  await own.stop();
  await waitFor(async () => (await request(server, { path: '/readyz' })).status === 503, { what: 'readyz 503' });
  assert.deepEqual(await ack(alice, 'chat:message', send),
    { error: { code: 'SOCKET_ERROR', message: SOCKET_ERROR, details: 'Redis unavailable: the message was not stored' } });
  assert.deepEqual(await ack(aliceP, 'project:comment', comment),
    { error: { code: 'SOCKET_ERROR', message: SOCKET_ERROR, details: 'comment not stored: Redis unavailable' } });

  await own.start();
  await waitFor(async () => (await request(server, { path: '/readyz' })).status === 200, { ms: 10000, what: 'readyz 200' });
  const { data: m } = await ack(alice, 'chat:message', send);
  assert.equal(m.content, 'later');
  await alice.inbox.wait('chat:message', ([x]) => x.id === m.id);
  assert.deepEqual(await ack(alice, 'chat:message', send), { data: m });
  assert.ok((await ack(aliceP, 'project:comment', comment)).data);
  assert.equal(await xlen(own, chatStream(id)), 1);
  assert.equal(await xlen(own, commentStream(p)), 1);
});
