// A broadcast recorded after a resuming client's claim ran in Redis, but
// delivered on its worker before the claim's reply came back, is not among
// the missed packets the reply carries, and the socket is in no room yet:
// the worker keeps such broadcasts while the claim is in flight and sends the
// socket those of its rooms after the missed ones. Real daemons, a real
// redis-server, the official socket.io-client; process A reaches Redis
// through a proxy that holds back the claim's reply until the test lets it go.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe } from 'node:test';
import {
  test, Scope, startServer, ack, rnd, startRedis, redisLines, once, io, token, Inbox, waitSubscribed,
  switchableProxy, joinStored,
} from './lib/harness.mjs';

let redis;
let claims;  // the proxy between A and Redis
let A;       // where the client resumes: its claim's reply is held
let B;       // where the talker is: it records and publishes directly
let scope;

// A TCP proxy to Redis. Once armed with a marker, the connection that sends
// an EVALSHA naming it (the claim: the session key holds the pid) gets no
// more replies until release(), or, with `cut`, is cut before the claim
// reaches Redis; everything else passes.
function claimHoldingProxy() {
  const conns = new Set();
  let marker = null;
  let cut = false;
  let onHeld = () => {};
  const releases = [];
  const p = {
    port: 0,
    arm(m, opts = {}) {
      marker = m;
      cut = !!opts.cut;
      return new Promise((resolve) => { onHeld = resolve; });
    },
    release() {
      marker = null;
      for (const r of releases.splice(0)) r();
    },
    close() { for (const c of conns) c.destroy(); p.server.close(); },
    server: net.createServer((client) => {
      const up = net.connect(redis.port, '127.0.0.1');
      conns.add(client);
      conns.add(up);
      let seen = '';  // the last bytes sent, for a marker split across chunks
      let held = null;  // replies kept back, once held
      client.on('data', (chunk) => {
        if (!marker || held) {
          up.write(chunk);
          return;
        }
        seen = (seen + chunk.toString('latin1')).slice(-8192);
        // EVALSHA <sha> 1 <key naming the pid>: the claim, not another command near it
        const claim = new RegExp(`EVALSHA\r\n\\$40\r\n[0-9a-f]{40}\r\n\\$1\r\n1\r\n\\$\\d+\r\n[^\r]*${marker}`).test(seen);
        if (claim && cut) {
          marker = null;
          client.destroy();
          up.destroy();
          onHeld();
          return;
        }
        up.write(chunk);
        if (claim) {
          held = [];
          releases.push(() => {
            for (const c of held) client.write(c);
            held = null;
          });
          onHeld();
        }
      });
      up.on('data', (chunk) => {
        if (held) held.push(chunk);
        else client.write(chunk);
      });
      const close = () => { client.destroy(); up.destroy(); };
      for (const s of [client, up]) { s.on('error', close); s.on('close', close); }
    }),
  };
  return new Promise((resolve) => p.server.listen(0, '127.0.0.1', () => { p.port = p.server.address().port; resolve(p); }));
}

before(async () => {
  redis = await startRedis();
  claims = await claimHoldingProxy();
  const extra = ['recovery_window 20s;'];
  A = await startServer({ workers: 1, extraServer: redisLines({ port: claims.port }, { extra }) });
  B = await startServer({ workers: 1, extraServer: redisLines(redis, { extra }) });
  scope = new Scope(null);
}, { timeout: 60000 });

after(async () => {
  await scope?.cleanup();
  await A?.stop();
  await B?.stop();
  claims?.close();
  await redis?.stop();
});

// The official client through `p`, connected, reconnecting quickly.
async function resumingClient(p, userId) {
  const s = io(`http://127.0.0.1:${p.port}/`, {
    transports: ['websocket'], forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200, timeout: 10000,
    auth: { token: token(userId) },
  });
  scope.track(s);
  await once(s, 'connect');
  return s;
}

describe('recovery while broadcasts flow', () => {
  test('a broadcast recorded after the claim ran, delivered before its reply, reaches the resumed socket', { timeout: 60000 }, async (t, ctx) => {
    const p = await switchableProxy(A);
    ctx.defer(() => p.close());
    const room = `race-${rnd()}`;
    const s = await resumingClient(p, 'racer');
    const { id, pid } = await joinStored(redis, s, room);
    const watcher = await scope.connect(A, '/', { userId: 'watcher' });  // on A, in the room: shows A delivered it
    await ack(watcher, 'probe:join', { room });
    const talker = await scope.connect(B, '/', { userId: 'talker' });
    await waitSubscribed(redis, room, 2);
    const watched = new Inbox(watcher, ['news']);
    const inbox = new Inbox(s, ['news']);

    const claimed = claims.arm(pid);
    const gone = once(s, 'disconnect');
    p.drop();
    await gone;
    await ack(talker, 'probe:emit', { rooms: [room], event: 'news', args: ['missed'] });
    await watched.wait('news', (a) => a[0] === 'missed');
    await claimed;  // the claim ran in Redis; A has not read its reply
    await ack(talker, 'probe:emit', { rooms: [room], event: 'news', args: ['during the claim'] });
    await ack(talker, 'probe:emit', { rooms: [`not-${room}`], event: 'news', args: ['another room'] });
    await watched.wait('news', (a) => a[0] === 'during the claim');
    const back = once(s, 'connect', 10000);
    claims.release();
    await back;
    assert.equal(s.recovered, true, 'recovered');
    assert.equal(s.id, id, 'its id kept');
    await ack(talker, 'probe:emit', { rooms: [room], event: 'news', args: ['after'] });
    await inbox.wait('news', (a) => a[0] === 'after');
    assert.deepEqual(inbox.of('news').map((a) => a[0]), ['missed', 'during the claim', 'after'],
      'each once, in order, none of another room');
  });

  test('the link to Redis lost just before the claim ran: the claim goes again once the link is back', { timeout: 60000 }, async (t, ctx) => {
    const p = await switchableProxy(A);
    ctx.defer(() => p.close());
    const room = `cut-${rnd()}`;
    const s = await resumingClient(p, 'cut');
    const { id, pid } = await joinStored(redis, s, room);
    const talker = await scope.connect(B, '/', { userId: 'talker' });
    await waitSubscribed(redis, room, 2);
    const inbox = new Inbox(s, ['news']);
    const cut = claims.arm(pid, { cut: true });
    const gone = once(s, 'disconnect');
    p.drop();
    await gone;
    await ack(talker, 'probe:emit', { rooms: [room], event: 'news', args: ['missed'] });
    const back = once(s, 'connect', 10000);
    await cut;
    await back;
    assert.equal(s.recovered, true, 'recovered');
    assert.equal(s.id, id, 'its id kept');
    await inbox.wait('news', (a) => a[0] === 'missed');
    assert.deepEqual(inbox.of('news').map((a) => a[0]), ['missed']);
  });
});
