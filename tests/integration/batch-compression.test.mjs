// The client `batch` event (contract §2 "Batching"), and compression both ways
// (permessage-deflate, gzip long-polling) with the official client.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import zlib from 'node:zlib';
import { test, startServer, ack, once, request, pollingHandshake, pollPost, token } from './lib/harness.mjs';

let srv;
before(async () => {
  srv = await startServer({
    workers: 2,
    extraServer: 'client_batch on;\nserver_batch_events user:typing project:update[kind=progress];\nserver_batch_interval 1s;',
  });
});
after(() => srv?.stop());

describe('client batch', () => {
  test('items are handled in order and the ack collects each answer', async (t, ctx) => {
    const s = await ctx.connect(srv, '/chat');
    const answer = await ack(s, 'batch', [
      { event: 'bench:echo', data: { n: 1 } },
      { event: 'bench:echo', data: 'two' },
      { event: 'bench:echo', data: [3] },
    ]);
    assert.deepEqual(answer, { data: [{ n: 1 }, 'two', [3]] });
  });

  test('a nested batch or a malformed item is INVALID_DATA for that item only', async (t, ctx) => {
    const s = await ctx.connect(srv, '/chat');
    const answer = await ack(s, 'batch', [
      { event: 'bench:echo', data: 1 },
      { event: 'batch', data: [] },
      { data: 'no event name' },
    ]);
    assert.equal(answer.data[0], 1);
    assert.deepEqual(answer.data[1].error.code, 'INVALID_DATA');
    assert.match(answer.data[1].error.details, /^batch\[1\]: /);
    assert.deepEqual(answer.data[2].error.code, 'INVALID_DATA');
  });

  test('a malformed envelope is INVALID_DATA, through the ack or the error event', async (t, ctx) => {
    const s = await ctx.connect(srv, '/chat');
    for (const bad of ['nope', [], Array.from({ length: 101 }, () => ({ event: 'bench:echo', data: 1 }))]) {
      const answer = await ack(s, 'batch', bad);
      assert.equal(answer.error.code, 'INVALID_DATA');
      assert.equal(answer.error.details, 'batch: must be an array of 1 to 100 items');
    }
    const err = once(s, 'error');
    s.emit('batch', [{ nope: true }]);
    const [e] = await err;
    assert.equal(e.code, 'INVALID_DATA');
  });

  test('binary inside an item reaches its handler', async (t, ctx) => {
    const s = await ctx.connect(srv, '/chat');
    const answer = await ack(s, 'batch', [{ event: 'bench:echo', data: { file: Buffer.from([7, 8, 9]) } }]);
    assert.deepEqual([...Buffer.from(answer.data[0].file)], [7, 8, 9]);
  });
});

describe('server batching', () => {
  test('batchable events reach opted-in clients as one batch, others one by one', async (t, ctx) => {
    const batched = await ctx.connect(srv, '/chat', { auth: { token: token('b1'), batch: true } });
    const plain = await ctx.connect(srv, '/chat', { auth: { token: token('p1') } });
    const sender = await ctx.connect(srv, '/chat', { userId: 'sender' });
    for (const s of [batched, plain]) await ack(s, 'probe:join', { room: 'r1' });
    const gotBatch = once(batched, 'batch');
    const typings = [];
    const plainDone = new Promise((resolve) => plain.on('user:typing', (d) => { typings.push(d); if (typings.length === 3) resolve(); }));
    const progress = new Promise((resolve) => plain.on('project:update', resolve));
    const status = new Promise((resolve) => batched.on('project:update', resolve));
    for (let i = 0; i < 3; i++) await ack(sender, 'probe:emit', { rooms: ['r1'], event: 'user:typing', args: [{ i }] });
    await ack(sender, 'probe:emit', { rooms: ['r1'], event: 'project:update', args: [{ kind: 'progress', progress: 5 }] });
    await ack(sender, 'probe:emit', { rooms: ['r1'], event: 'project:update', args: [{ kind: 'status', status: 'done' }] });
    const [items] = await gotBatch;
    assert.deepEqual(items, [
      { event: 'user:typing', data: { i: 0 } }, { event: 'user:typing', data: { i: 1 } },
      { event: 'user:typing', data: { i: 2 } }, { event: 'project:update', data: { kind: 'progress', progress: 5 } },
    ]);
    await plainDone;
    assert.deepEqual(typings, [{ i: 0 }, { i: 1 }, { i: 2 }]);
    assert.deepEqual(await progress, { kind: 'progress', progress: 5 });
    // Not batchable (kind status): delivered directly even to the opted-in client.
    assert.deepEqual(await status, { kind: 'status', status: 'done' });
  });
});

describe('compression', () => {
  test('permessage-deflate is negotiated and large messages survive both ways', async (t, ctx) => {
    const s = await ctx.connect(srv, '/chat');
    const ws = s.io.engine.transport.ws;
    assert.match(ws.extensions ?? '', /permessage-deflate/);
    const big = 'déjà vu '.repeat(4000);
    assert.equal(await ack(s, 'bench:echo', big), big);
  });

  test('a long-polling response over the threshold is gzipped when accepted', async () => {
    const { sid } = await pollingHandshake(srv);
    const big = 'x'.repeat(5000);
    // Something large the server sends without auth: the CONNECT_ERROR of a long namespace name.
    await pollPost(srv, sid, `40/${big},`);
    const r = await request(srv, {
      path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`, headers: { 'accept-encoding': 'gzip' },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-encoding'], 'gzip');
    const text = zlib.gunzipSync(r.body).toString('utf8');
    assert.equal(text, `44/${big},{"message":"Invalid namespace"}`);
  });

  test('a small long-polling response is not compressed', async () => {
    const { sid } = await pollingHandshake(srv);
    await pollPost(srv, sid, '40/nope,');
    const r = await request(srv, {
      path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`, headers: { 'accept-encoding': 'gzip' },
    });
    assert.equal(r.headers['content-encoding'], undefined);
    assert.equal(r.text, '44/nope,{"message":"Invalid namespace"}');
  });
});
