// Fuzz-style: thousands of random and malformed frames, packets and payloads.
// Whatever comes in, the workers stay up (same pids) and keep serving an
// official client that was connected all along.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before } from 'node:test';
import {
  test, startServer, ack, rawWs, rawSioWs, closedWithin, withTimeout, pollingHandshake, pollPost, request,
} from './lib/harness.mjs';

let srv;
let workers;
before(async () => {
  srv = await startServer({ workers: 2, extraServer: 'max_payload 64k;\nclient_batch on;' });
  workers = srv.workerPids().sort();
});
after(() => srv?.stop());

// Deterministic randomness, so a failure can be replayed.
function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

function randomValue(r, depth = 0) {
  const k = Math.floor(r() * (depth > 3 ? 5 : 8));
  switch (k) {
    case 0: return null;
    case 1: return r() < 0.5;
    case 2: return Math.floor(r() * 2 ** 40) * (r() < 0.5 ? -1 : 1) / (r() < 0.3 ? 7 : 1);
    case 3: return crypto.randomBytes(Math.floor(r() * 40)).toString(r() < 0.5 ? 'latin1' : 'base64');
    case 4: return '😀مرحبا\u0000\u001e"\\'.slice(0, Math.floor(r() * 10));
    case 5: return Array.from({ length: Math.floor(r() * 5) }, () => randomValue(r, depth + 1));
    default: {
      const o = {};
      for (let i = Math.floor(r() * 5); i > 0; i--) o[['room', 'event', 'args', 'payload', 'x', '_placeholder', 'num'][i % 7]] = randomValue(r, depth + 1);
      return o;
    }
  }
}

const EVENTS = ['bench:echo', 'bench:join', 'bench:broadcast', 'probe:whoami', 'probe:join', 'probe:leave', 'probe:emit',
  'probe:volatile', 'batch', 'unknown:event', ''];

function randomPacket(r) {
  const kind = Math.floor(r() * 10);
  const nsp = r() < 0.7 ? '' : ['/chat,', '/nope,', '/admin,', '/', '/,'][Math.floor(r() * 5)];
  switch (kind) {
    case 0: return crypto.randomBytes(Math.floor(r() * 64)).toString('latin1');  // garbage text
    case 1: return `4${Math.floor(r() * 10)}${nsp}${JSON.stringify(randomValue(r))}`;  // random Socket.IO type
    case 2: return `45${Math.floor(r() * 3)}-${nsp}${JSON.stringify([EVENTS[Math.floor(r() * EVENTS.length)], { _placeholder: true, num: Math.floor(r() * 3) - 1 }])}`;
    case 3: return `${Math.floor(r() * 9)}${crypto.randomBytes(8).toString('hex')}`;  // random Engine.IO type
    case 4: return `43${nsp}${Math.floor(r() * 1e6)}${JSON.stringify([randomValue(r)])}`;  // stray ack
    default: {
      const ev = EVENTS[Math.floor(r() * EVENTS.length)];
      const args = Array.from({ length: Math.floor(r() * 3) }, () => randomValue(r));
      const id = r() < 0.5 ? String(Math.floor(r() * 1000)) : '';
      const text = `42${nsp}${id}${JSON.stringify([ev, ...args])}`;
      return r() < 0.1 ? text.slice(0, Math.floor(r() * text.length)) : text;  // sometimes truncated
    }
  }
}

async function assertServing(ctx, witness) {
  assert.deepEqual(srv.workerPids().sort(), workers, 'a worker died');
  assert.deepEqual(await ack(witness, 'bench:echo', 'still here'), 'still here');
  const fresh = await ctx.connect(srv, '/chat', { userId: 'fresh' });
  assert.equal(await ack(fresh, 'bench:echo', 1), 1);
}

test('random Socket.IO packets over WebSocket', { timeout: 90000 }, async (t, ctx) => {
  const witness = await ctx.connect(srv, '/chat', { userId: 'witness' });
  const r = prng(20261125);
  let sent = 0;
  for (let round = 0; round < 40; round++) {
    const ws = await rawSioWs(srv, { nsp: r() < 0.5 ? '/' : '/chat' });
    for (let i = 0; i < 60 && ws.readyState === 1; i++) {
      if (r() < 0.1) ws.send(crypto.randomBytes(Math.floor(r() * 32)));  // stray binary
      else ws.send(randomPacket(r));
      sent++;
    }
    ws.terminate();
  }
  assert.ok(sent > 1000, `sent ${sent}`);
  await assertServing(ctx, witness);
});

test('random well-formed events with random payloads to every event', { timeout: 90000 }, async (t, ctx) => {
  const witness = await ctx.connect(srv, '/chat', { userId: 'witness2' });
  const r = prng(7);
  const s = await ctx.connect(srv, '/chat', { userId: 'fuzzer' });
  let answered = 0;
  const pending = [];
  for (let i = 0; i < 3000; i++) {
    const ev = EVENTS[Math.floor(r() * (EVENTS.length - 1))] || 'bench:echo';
    const args = Array.from({ length: 1 + Math.floor(r() * 2) }, () => randomValue(r));
    if (ev === 'probe:volatile' || ev === 'probe:emit') continue;  // would flood the witness, not the server
    if (r() < 0.5) pending.push(withTimeout(new Promise((res) => s.emit(ev, ...args, () => { answered++; res(); })), 10000, ev).catch(() => {}));
    else s.emit(ev, ...args);
    if (pending.length > 200) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  assert.ok(s.connected, 'the fuzzing client itself stays connected: its payloads are valid Socket.IO');
  await assertServing(ctx, witness);
});

test('random WebSocket frames and random polling bodies', { timeout: 90000 }, async (t, ctx) => {
  const witness = await ctx.connect(srv, '/chat', { userId: 'witness3', transports: ['polling'] });
  const r = prng(99);
  for (let i = 0; i < 30; i++) {
    const ws = rawWs(srv);
    await withTimeout(ws.opened, 5000, 'open');
    // Raw bytes under the WebSocket layer: invalid opcodes, lengths, masks.
    ws._socket.write(crypto.randomBytes(2 + Math.floor(r() * 64)));
    await closedWithin(ws, 2000);
    ws.terminate();
  }
  for (let i = 0; i < 200; i++) {
    const { sid } = await pollingHandshake(srv);
    const body = Array.from({ length: 1 + Math.floor(r() * 4) }, () => randomPacket(r)).join('\x1e');
    const res = await pollPost(srv, sid, body);
    assert.ok([200, 400, 413].includes(res.status), `status ${res.status}`);
  }
  for (let i = 0; i < 100; i++) {
    const junkPath = `/socket.io/?EIO=${Math.floor(r() * 6)}&transport=${['polling', 'websocket', 'x'][i % 3]}&sid=${crypto.randomBytes(15).toString('base64url')}`;
    const res = await request(srv, { method: ['GET', 'POST', 'PUT', 'OPTIONS'][i % 4], path: junkPath, body: i % 4 === 1 ? 'x' : undefined });
    assert.ok(res.status >= 200 && res.status < 600);
  }
  await assertServing(ctx, witness);
});
