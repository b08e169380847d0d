// The parts of the module API the application modules stand on, driven
// through the probe module: events of one socket handled in arrival order
// while a handler waits (Socket::delay_next_events), CONNECT hooks run by
// phase, and dr::redis commands, with Redis up and away.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import {
  test, startServer, startRedis, redisLines, ack, waitFor, probeSo,
} from './lib/harness.mjs';

describe('events of one socket stay in arrival order', () => {
  test('a held handler makes the next events wait; other sockets are not held', async (t, ctx) => {
    const srv = await startServer({ workers: 1, t });
    const s = await ctx.connect(srv, '/');
    const other = await ctx.connect(srv, '/');
    const order = [];
    const slow = ack(s, 'probe:later', { ms: 300, value: 'slow' }).then((r) => order.push(r.data));
    const fast = ack(s, 'probe:whoami').then(() => order.push('fast'));
    // The other socket's events do not wait for this one's: answered while it is held.
    const elsewhere = ack(other, 'probe:whoami').then(() => order.push('other'));
    await Promise.all([slow, fast, elsewhere]);
    assert.deepEqual(order, ['other', 'slow', 'fast']);
  });

  test('items of a client batch run in order around a held item; the answer lists each', async (t, ctx) => {
    const srv = await startServer({ workers: 1, t, extraServer: 'client_batch on;' });
    const s = await ctx.connect(srv, '/');
    const r = await ack(s, 'batch', [
      { event: 'probe:later', data: { ms: 150, value: 1 } },
      { event: 'probe:later', data: { ms: 0, value: 2 } },
      { event: 'probe:later', data: { ms: 50, value: 3 } },
    ]);
    assert.deepEqual(r, { data: [{ data: 1 }, { data: 2 }, { data: 3 }] });
  });

  test('a socket that disconnects while held drops its queue; the worker keeps serving', async (t, ctx) => {
    const srv = await startServer({ workers: 1, t });
    const s = await ctx.connect(srv, '/');
    s.emit('probe:later', { ms: 200, value: 'x' });
    for (let i = 0; i < 50; i++) s.emit('probe:whoami');
    s.disconnect();
    await new Promise((r) => setTimeout(r, 300));
    const s2 = await ctx.connect(srv, '/');
    assert.equal((await ack(s2, 'probe:whoami')).data.nsp, '/');
  });
});

describe('CONNECT hooks run by phase, whatever the order of registration and loading', () => {
  // The probe registers an App phase hook, then an Identify phase hook.
  test('the probe\'s Identify hook runs before its App hook, which sees the user auth_jwt identified', async (t, ctx) => {
    const srv = await startServer({ workers: 1, t });
    const s = await ctx.connect(srv, '/chat', { userId: 'phases' });
    assert.equal((await ack(s, 'probe:connectPhases')).data, 'identify,app:user');
  });

  test('loaded before auth_jwt, the probe\'s App hook still runs after auth_jwt\'s Identify hook', async (t, ctx) => {
    const srv = await startServer({ workers: 1, t, probe: false, modules: [probeSo(), 'auth_jwt.so', 'bench.so'] });
    const s = await ctx.connect(srv, '/', { userId: 'phases' });
    assert.equal((await ack(s, 'probe:connectPhases')).data, 'identify,app:user');
  });
});

describe('dr::redis', () => {
  test('commands reach Redis under the app prefix; errors come back as replies; Redis away -> "Redis unavailable"', { timeout: 60000 }, async (t, ctx) => {
    const redis = await startRedis({ t });
    const srv = await startServer({ workers: 2, t, extraServer: redisLines(redis) });
    const s = await ctx.connect(srv, '/');
    assert.equal((await ack(s, 'probe:redis', { argv: ['SET', 'depth:probe:k', 'v1'] })).data, 'OK');
    assert.equal((await redis.cli('GET', 'depth:probe:k')).trim(), 'v1');
    assert.deepEqual((await ack(s, 'probe:redis', { argv: ['RPUSH', 'depth:probe:l', 'a', 'b'] })).data, 2);
    assert.deepEqual((await ack(s, 'probe:redis', { argv: ['LRANGE', 'depth:probe:l', '0', '-1'] })).data, ['a', 'b']);
    assert.equal((await ack(s, 'probe:redis', { argv: ['GET', 'depth:probe:none'] })).data, null);
    const bad = await ack(s, 'probe:redis', { argv: ['NOSUCHCOMMAND'] });
    assert.match(bad.data.error, /unknown command/i);

    await redis.stop();
    await waitFor(async () => {
      const r = await ack(s, 'probe:redis', { argv: ['GET', 'depth:probe:k'] });
      return r.data?.error === 'Redis unavailable';
    }, { ms: 10000, what: '"Redis unavailable" reply' });
  });

  test('without a redis directive every command answers "Redis unavailable"', async (t, ctx) => {
    const srv = await startServer({ workers: 1, t });
    const s = await ctx.connect(srv, '/');
    assert.deepEqual((await ack(s, 'probe:redis', { argv: ['PING'] })).data, { error: 'Redis unavailable' });
  });
});
