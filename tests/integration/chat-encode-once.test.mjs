// A chat:message is encoded once (issue 12): its broadcasts as chat:message
// and message:new and the ack to the sender are built around one JSON text of
// the message. What each client gets is what it got before: the raw Socket.IO
// packets carry the same message text under both names and in the ack, the
// text JSON.stringify writes for it (a Node server's bytes), with the
// recovery offset after it; msgpack clients and clients that asked for server
// batches (chat:message batchable) get theirs as before, binary metadata too.
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { createClient } from 'redis';
import msgpackParser from 'socket.io-msgpack-parser';
import { test, startServer, startRedis, redisLines, token, ack, once, Inbox, rnd } from './lib/harness.mjs';

const MODULES = ['auth_jwt.so', 'chat.so'];

let redis;
let js;       // the default parser, recovery on
let mp;       // parser msgpack
let batched;  // chat:message and message:new batchable for clients with auth.batch
let db;

before(async () => {
  redis = await startRedis();
  const lines = redisLines(redis, { extra: ['recovery_window 2m;'] });
  [js, mp, batched] = await Promise.all([
    startServer({ modules: MODULES, probe: false, workers: 1, extraServer: lines }),
    startServer({ modules: MODULES, probe: false, workers: 1, extraServer: `parser msgpack;\n${lines}` }),
    startServer({
      modules: MODULES, probe: false, workers: 1,
      extraServer: `${lines}\nserver_batch_events chat:message message:new;\nserver_batch_interval 50ms;`,
    }),
  ]);
  db = createClient({ url: redis.url });
  await db.connect();
}, { timeout: 60000 });

after(async () => {
  await db?.quit().catch(() => {});
  for (const s of [js, mp, batched]) await s?.stop();
  await redis?.stop();
});

const conv = () => `e-${rnd()}`;

function chat(ctx, server, userId, opts = {}) {
  return ctx.connect(server, '/chat', { ...opts, auth: { token: token(userId), ...(opts.auth ?? {}) } });
}

async function joined(s, id) {
  assert.deepEqual(await ack(s, 'chat:join', { conversationId: id }), { data: { conversationId: id } });
  return s;
}

// The text Engine.IO messages a socket's connection receives, as sent.
function rawTexts(s) {
  const texts = [];
  s.io.engine.on('packet', (p) => { if (p.type === 'message' && typeof p.data === 'string') texts.push(p.data); });
  return texts;
}

// Escapes, non-ASCII, numbers of both kinds, nesting: what the text must carry as JSON.stringify writes it.
const CONTENT = 'h\u00e9llo "quoted" \\ back/slash \u2028 \u{1F600} \t tab';
const METADATA = { n: 1.5, big: 12345678901234, neg: -7, list: [1, null, true, 'x'], nested: { a: {} } };

test('chat:message and message:new carry the same message text as the ack, the bytes JSON.stringify writes', async (t, ctx) => {
  const id = conv();
  await db.sAdd(`depth:conversation:${id}:members`, ['alice', 'bob']);
  const alice = await joined(await chat(ctx, js, 'alice'), id);
  const bob = await joined(await chat(ctx, js, 'bob'), id);
  const [aliceTexts, bobTexts] = [rawTexts(alice), rawTexts(bob)];
  const bobInbox = new Inbox(bob, ['chat:message', 'message:new']);

  const reply = await ack(alice, 'chat:message', { conversationId: id, content: CONTENT, metadata: METADATA });
  const m = reply.data;
  assert.equal(m.content, CONTENT);
  assert.deepEqual(m.metadata, METADATA);
  await bobInbox.wait('message:new');
  const text = JSON.stringify(m);

  // The ack: 43/chat,<id>[{"data":<text>}].
  const ackText = aliceTexts.find((x) => x.startsWith('3/chat,'));
  assert.match(ackText, /^3\/chat,\d+\[\{"data":/);
  assert.equal(ackText.slice(ackText.indexOf('[')), `[{"data":${text}}]`);

  // Both names, to the sender and to the others: the same text, then the offset.
  for (const texts of [aliceTexts, bobTexts]) {
    for (const name of ['chat:message', 'message:new']) {
      const got = texts.find((x) => x.startsWith(`2/chat,["${name}",`));
      assert.ok(got, `${name} received`);
      const array = JSON.parse(got.slice('2/chat,'.length));
      assert.equal(array.length, 3, 'name, message, offset');
      assert.equal(typeof array[2], 'string');
      assert.equal(got, `2/chat,["${name}",${text},${JSON.stringify(array[2])}]`);
    }
  }
  // Each broadcast has its own offset.
  const offsets = bobTexts.filter((x) => x.startsWith('2/chat,')).map((x) => JSON.parse(x.slice(7))[2]);
  assert.equal(new Set(offsets).size, offsets.length);
});

test('binary metadata: both names and the ack carry the same message and the same binary', async (t, ctx) => {
  const id = conv();
  await db.sAdd(`depth:conversation:${id}:members`, ['alice', 'bob']);
  const alice = await joined(await chat(ctx, js, 'alice'), id);
  const bob = await joined(await chat(ctx, js, 'bob'), id);
  const bobInbox = new Inbox(bob, ['chat:message', 'message:new']);
  const file = Buffer.from([1, 2, 3, 250]);
  const reply = await ack(alice, 'chat:message', { conversationId: id, content: 'file', metadata: { file, w: 2 } });
  const [[viaMessage], [viaNew]] = await Promise.all([bobInbox.wait('chat:message'), bobInbox.wait('message:new')]);
  for (const m of [reply.data, viaMessage, viaNew]) {
    assert.ok(Buffer.from(m.metadata.file).equals(file));
    assert.equal(m.metadata.w, 2);
  }
  assert.deepEqual(viaMessage, viaNew);
  assert.equal(viaMessage.id, reply.data.id);
});

test('msgpack clients get both names and the ack with the message', async (t, ctx) => {
  const id = conv();
  await db.sAdd(`depth:conversation:${id}:members`, ['alice', 'bob']);
  const withParser = { parser: msgpackParser };
  const alice = await joined(await chat(ctx, mp, 'alice', withParser), id);
  const bob = await joined(await chat(ctx, mp, 'bob', withParser), id);
  const bobInbox = new Inbox(bob, ['chat:message', 'message:new']);
  const file = Buffer.from([9, 8, 7]);
  const reply = await ack(alice, 'chat:message', { conversationId: id, content: CONTENT, metadata: { ...METADATA, file } });
  const [[viaMessage], [viaNew]] = await Promise.all([bobInbox.wait('chat:message'), bobInbox.wait('message:new')]);
  for (const m of [reply.data, viaMessage, viaNew]) {
    assert.equal(m.content, CONTENT);
    assert.equal(m.senderId, 'alice');
    assert.ok(Buffer.from(m.metadata.file).equals(file));
    const { file: _, ...rest } = m.metadata;
    assert.deepEqual(rest, METADATA);
  }
  assert.deepEqual(viaMessage, viaNew);
  assert.deepEqual(viaMessage, reply.data);
});

test('batching clients get chat:message and message:new in their batch; others one by one; the ack as always', async (t, ctx) => {
  const id = conv();
  await db.sAdd(`depth:conversation:${id}:members`, ['alice', 'bob', 'carol']);
  const alice = await joined(await chat(ctx, batched, 'alice'), id);
  const bob = await joined(await chat(ctx, batched, 'bob', { auth: { batch: true } }), id);
  const carol = await joined(await chat(ctx, batched, 'carol'), id);
  const carolInbox = new Inbox(carol, ['chat:message', 'message:new']);
  const gotBatch = once(bob, 'batch');
  const reply = await ack(alice, 'chat:message', { conversationId: id, content: CONTENT, metadata: METADATA });
  const [items] = await gotBatch;
  assert.deepEqual(items, [{ event: 'chat:message', data: reply.data }, { event: 'message:new', data: reply.data }]);
  const [[viaMessage], [viaNew]] = await Promise.all([carolInbox.wait('chat:message'), carolInbox.wait('message:new')]);
  assert.deepEqual(viaMessage, reply.data);
  assert.deepEqual(viaNew, reply.data);
});
