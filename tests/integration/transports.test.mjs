// Transports: WebSocket only, long-polling only, polling upgraded to WebSocket,
// many clients at once spread over both workers, and polling sessions whose
// requests arrive on fresh TCP connections (any worker may accept them).
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe } from 'node:test';
import {
  test, startServer, ack, ackAll, once, workerOf, rawWs, rawPollingSession, pollingHandshake,
  pollGet, pollPost, records, RS, token, withTimeout, closedWithin, rawTcp, EIO_PATH,
} from './lib/harness.mjs';

let srv;
before(async () => { srv = await startServer({ workers: 2 }); });
after(() => srv?.stop());

// bench:echo round trips on a connected socket.
async function echoes(s, n = 3, tag = '') {
  for (let i = 0; i < n; i++) {
    const reply = await ackAll(s, 'bench:echo', `${tag}#${i}`, { i });
    assert.deepEqual(reply, [`${tag}#${i}`, { i }]);
  }
}

// A server→client event: the probe broadcasts to the socket's own room.
async function pushToSelf(s, payload) {
  const got = once(s, 'pushed');
  assert.deepEqual(await ack(s, 'probe:emit', { rooms: [s.id], event: 'pushed', args: [payload] }), { data: true });
  assert.deepEqual(await got, [payload]);
}

describe('single transports', () => {
  test('websocket-only client connects, exchanges events and acks', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { transports: ['websocket'] });
    assert.equal(s.io.engine.transport.name, 'websocket');
    await echoes(s, 3, 'ws');
    await pushToSelf(s, { via: 'websocket' });
    const who = await ack(s, 'probe:whoami');
    assert.equal(who.data.sid, s.id);
    assert.notEqual(s.id, s.io.engine.id, 'Socket.IO id must differ from the Engine.IO sid');
  });

  test('polling-only client connects, exchanges events and acks, never upgrades', async (t, ctx) => {
    const s = ctx.socket(srv, '/', { transports: ['polling'] });
    let upgraded = false;
    s.io.engine.on('upgrade', () => { upgraded = true; });
    await once(s, 'connect');
    assert.equal(s.io.engine.transport.name, 'polling');
    await echoes(s, 5, 'poll');
    await pushToSelf(s, { via: 'polling' });
    assert.equal(upgraded, false);
    assert.equal(s.io.engine.transport.name, 'polling');
  });

  test('polling client upgrades to websocket and keeps working', async (t, ctx) => {
    const s = ctx.socket(srv, '/', { transports: ['polling', 'websocket'] });
    const engine = s.io.engine;
    assert.equal(engine.transport.name, 'polling', 'first transport is polling');
    const upgraded = once(engine, 'upgrade', 8000);
    await once(s, 'connect');
    await upgraded;
    assert.equal(engine.transport.name, 'websocket', 'transport after the upgrade');
    await echoes(s, 3, 'upg');
    await pushToSelf(s, { via: 'upgraded' });
    // Polling requests for the upgraded session are refused now (transport mismatch).
    const late = await pollGet(srv, engine.id);
    assert.equal(late.status, 400);
    assert.deepEqual(JSON.parse(late.text), { code: 3, message: 'Bad request' });
  });

  test('open packet over polling and over websocket', async (t, ctx) => {
    const { open, res } = await pollingHandshake(srv);
    assert.deepEqual(Object.keys(open), ['sid', 'upgrades', 'pingInterval', 'pingTimeout', 'maxPayload']);
    assert.equal(typeof open.sid, 'string');
    assert.ok(open.sid.length > 0);
    assert.deepEqual(open.upgrades, ['websocket']);
    assert.equal(open.pingInterval, 25000);
    assert.equal(open.pingTimeout, 60000);
    assert.ok([1048576, 1000000].includes(open.maxPayload), `maxPayload ${open.maxPayload}`);
    assert.match(res.headers['content-type'], /^text\/plain; ?charset=UTF-8$/i);

    const ws = rawWs(srv);
    ctx.defer(() => ws.terminate());
    await withTimeout(ws.opened, 5000, 'ws open');
    const first = await ws.next();
    assert.ok(first.text?.startsWith('0{'), `first frame ${JSON.stringify(first)}`);
    const wsOpen = JSON.parse(first.text.slice(1));
    assert.deepEqual(Object.keys(wsOpen), ['sid', 'upgrades', 'pingInterval', 'pingTimeout', 'maxPayload']);
    assert.deepEqual(wsOpen.upgrades, []);
    assert.notEqual(wsOpen.sid, open.sid);
  });
});

describe('many clients', () => {
  test('24 clients (websocket, polling, upgrade) at once, spread over both workers', { timeout: 40000 }, async (t, ctx) => {
    const kinds = { websocket: ['websocket'], polling: ['polling'], upgrade: ['polling', 'websocket'] };
    const sockets = [];
    for (const [kind, transports] of Object.entries(kinds)) {
      for (let i = 0; i < 8; i++) sockets.push({ kind, s: ctx.socket(srv, '/', { transports, userId: `${kind}-${i}` }) });
    }
    await Promise.all(sockets.map(({ s }) => withTimeout(new Promise((resolve, reject) => {
      s.once('connect', resolve);
      s.once('connect_error', reject);
    }), 8000, 'connect')));
    const ids = new Set(sockets.map(({ s }) => s.id));
    assert.equal(ids.size, sockets.length, 'every socket has its own id');
    await Promise.all(sockets.map(({ kind, s }, i) => echoes(s, 4, `${kind}${i}`)));
    await Promise.all(sockets.map(async ({ s }) => {
      const who = await ack(s, 'probe:whoami');
      assert.equal(who.data.sid, s.id);
      assert.ok(who.data.rooms.includes(`user:${who.data.userId}`), JSON.stringify(who));
    }));
    assert.deepEqual(
      new Set(await Promise.all(sockets.map(async ({ s }) => (await ack(s, 'probe:whoami')).data.userId))),
      new Set(sockets.map(({ kind }, i) => `${kind}-${i % 8}`)));

    // The WebSocket clients: which worker serves each?
    const wsClients = sockets.filter(({ s }) => s.io.engine.transport.name === 'websocket');
    const owners = new Set();
    for (const { s } of wsClients) owners.add(await workerOf(srv, s));
    const workers = srv.workerPids();
    assert.equal(workers.length, 2, 'two worker processes');
    assert.ok([...owners].every((p) => workers.includes(p)), 'connections are held by workers, not the master');
    assert.equal(owners.size, 2, `both workers serve connections (owners: ${[...owners]})`);
  });
});

describe('polling sessions across workers', () => {
  test('every polling request on a fresh TCP connection (agent: false) still reaches its session', { timeout: 40000 }, async () => {
    // 6 raw sessions, each request a new TCP connection accepted by any worker.
    const sessions = await Promise.all(Array.from({ length: 6 }, (_, i) => rawPollingSession(srv, { tok: token(`raw-${i}`) })));
    for (let round = 0; round < 4; round++) {
      await Promise.all(sessions.map(async ({ sid }, i) => {
        const ackId = 10 + round;
        const p = await pollPost(srv, sid, `42${ackId}["bench:echo",{"s":${i},"r":${round}}]`);
        assert.equal(p.status, 200, `POST ${p.status} ${p.text}`);
        assert.equal(p.text, 'ok');
        let found = false;
        for (let k = 0; k < 5 && !found; k++) {
          const g = await pollGet(srv, sid);
          assert.equal(g.status, 200, `GET ${g.status} ${g.text}`);
          found = records(g.text).includes(`43${ackId}[{"s":${i},"r":${round}}]`);
        }
        assert.ok(found, `ack ${ackId} for session ${i}`);
      }));
    }
    for (const { sid } of sessions) assert.equal((await pollPost(srv, sid, '1')).status, 200);
  });

  test('one keep-alive connection carrying requests of sessions owned by different workers', { timeout: 30000 }, async (t, ctx) => {
    // Sessions made on fresh connections (so they are spread over the workers) ...
    const sessions = await Promise.all(Array.from({ length: 6 }, (_, i) => rawPollingSession(srv, { tok: token(`ka-${i}`) })));
    // ... then driven through ONE keep-alive TCP connection.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    ctx.defer(() => agent.destroy());
    const localPorts = new Set();
    for (let round = 0; round < 2; round++) {
      for (const [i, { sid }] of sessions.entries()) {
        const ackId = 20 + round;
        const p = await pollPost(srv, sid, `42${ackId}["bench:echo","ka${i}"]`, { agent });
        assert.equal(p.status, 200, `POST ${p.status} ${p.text}`);
        let found = false;
        for (let k = 0; k < 5 && !found; k++) {
          const g = await pollGet(srv, sid, { agent });
          assert.equal(g.status, 200, `GET ${g.status} ${g.text}`);
          found = records(g.text).includes(`43${ackId}["ka${i}"]`);
        }
        assert.ok(found, `ack for session ${i} over the shared connection`);
      }
    }
    for (const s of Object.values(agent.freeSockets).flat()) localPorts.add(s.localPort);
    assert.ok(localPorts.size <= 1, 'requests shared one connection');
    for (const { sid } of sessions) await pollPost(srv, sid, '1');
  });

  test('official polling clients: many at once, server pushes reach each of them', { timeout: 30000 }, async (t, ctx) => {
    const socks = await Promise.all(Array.from({ length: 10 }, (_, i) => ctx.connect(srv, '/', { transports: ['polling'], userId: `pp-${i}` })));
    await Promise.all(socks.map((s, i) => pushToSelf(s, { n: i })));
    await Promise.all(socks.map((s, i) => echoes(s, 3, `pp${i}`)));
  });
});

// A session the server ends for an error is gone at once, as Engine.IO's:
// the very next request gets 400, with nothing stale served first.
test('a POST it cannot parse ends the session: the next GET gets 400 at once', async () => {
  const { sid } = await rawPollingSession(srv, { tok: token('garbage') });
  const p = await pollPost(srv, sid, 'abc');
  assert.deepEqual([p.status, p.text], [200, 'ok']);  // as Node answers the POST
  const g = await pollGet(srv, sid);
  assert.equal(g.status, 400, `GET ${g.status} ${g.text}`);
  assert.deepEqual(JSON.parse(g.text), { code: 1, message: 'Session ID unknown' });
});

// Batching: several packets in one POST body, several in one GET response.
test('a POST carrying several packets is processed in order', async () => {
  const { sid } = await rawPollingSession(srv, { tok: token('batch') });
  const body = [1, 2, 3].map((n) => `42${n}["bench:echo",${n}]`).join(RS);
  assert.equal((await pollPost(srv, sid, body)).status, 200);
  const acks = [];
  for (let k = 0; k < 5 && acks.length < 3; k++) {
    const g = await pollGet(srv, sid);
    assert.equal(g.status, 200);
    acks.push(...records(g.text).filter((r) => r.startsWith('43')));
  }
  assert.deepEqual(acks, ['431[1]', '432[2]', '433[3]']);
  await pollPost(srv, sid, '1');
});

describe('upgrade on the wire', () => {
  // A raw polling session with one GET held, ready for an upgrade.
  async function heldSession() {
    const { sid } = await rawPollingSession(srv, { tok: token('upgrader') });
    const held = pollGet(srv, sid, { timeoutMs: 8000 });
    const ws = rawWs(srv, { query: { sid } });
    await withTimeout(ws.opened, 5000, 'upgrade WebSocket open');
    return { sid, held, ws };
  }

  test('2probe → 3probe, held GET answered with noop, 5 switches the session to the WebSocket', async (t, ctx) => {
    const { sid, held, ws } = await heldSession();
    ctx.defer(() => ws.terminate());
    ws.send('2probe');
    assert.deepEqual(await ws.next(), { text: '3probe' });
    const g = await held;
    assert.equal(g.status, 200);
    assert.ok(records(g.text).includes('6'), `held GET answered ${JSON.stringify(g.text)}`);
    ws.send('5');
    ws.send('42901["bench:echo","upgraded"]');
    assert.equal(await ws.until((x) => x.startsWith('43')), '43901["upgraded"]');
    // polling is over for this session
    const late = await pollGet(srv, sid);
    assert.equal(late.status, 400);
    assert.deepEqual(JSON.parse(late.text), { code: 3, message: 'Bad request' });
    // and a second upgrade is completed (101) and closed at once, as
    // Engine.IO does, leaving the upgraded session as it was
    const again = rawWs(srv, { query: { sid } });
    ctx.defer(() => again.terminate());
    await withTimeout(again.opened, 3000, 'the 101 of the second upgrade');
    assert.ok(await closedWithin(again, 3000), 'the second WebSocket is closed');
    assert.deepEqual(again.pending, [], 'it got nothing of the session');
    ws.send('42904["bench:echo","still upgraded"]');
    assert.equal(await ws.until((x) => x.startsWith('43904')), '43904["still upgraded"]');
  });

  test('an upgrade for an unknown session gets an HTTP 400, not a hang-up', async () => {
    const r = await rawTcp(srv, `GET ${EIO_PATH}?EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\n` +
      'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    assert.match(r.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.ok(r.text.endsWith('Session ID unknown'), r.text);
  });

  test('anything but 5 after 3probe aborts the upgrade; polling goes on', async (t, ctx) => {
    const { sid, held, ws } = await heldSession();
    ctx.defer(() => ws.terminate());
    ws.send('2probe');
    assert.deepEqual(await ws.next(), { text: '3probe' });
    await held;
    ws.send('42["bench:echo","not an upgrade"]');
    assert.ok(await closedWithin(ws, 5000), 'the upgrading WebSocket is closed');
    assert.equal((await pollPost(srv, sid, '42902["bench:echo","still polling"]')).status, 200);
    let found = false;
    for (let i = 0; i < 5 && !found; i++) {
      const g = await pollGet(srv, sid);
      assert.equal(g.status, 200, `GET ${g.status} ${g.text}`);
      found = records(g.text).includes('43902["still polling"]');
    }
    assert.ok(found, 'polling session still works');
    await pollPost(srv, sid, '1');
  });

  test('WebSocket with b64=1: binary goes out as "b<base64>" text frames', async (t, ctx) => {
    const ws = rawWs(srv, { query: { b64: '1' } });
    ctx.defer(() => ws.terminate());
    await withTimeout(ws.opened, 5000, 'open');
    assert.ok((await ws.next()).text.startsWith('0{'));
    ws.send(`40${JSON.stringify({ token: token('b64') })}`);
    await ws.until((x) => x.startsWith('40{'));
    ws.send('451-903["bench:echo",{"_placeholder":true,"num":0}]');
    ws.send(Buffer.from([0xde, 0xad, 0xbe, 0xef]));
    assert.equal(await ws.until((x) => x.startsWith('46')), '461-903[{"_placeholder":true,"num":0}]');
    const att = await ws.next();
    assert.deepEqual(att, { text: 'b3q2+7w==' });
  });

  test('server pushes sent while the official client upgrades arrive once each, in order', async (t, ctx) => {
    const s = ctx.socket(srv, '/', { transports: ['polling', 'websocket'], userId: 'racer' });
    const upgraded = once(s.io.engine, 'upgrade', 8000);
    const got = [];
    const all = withTimeout(new Promise((resolve) => s.on('seq', (n) => { got.push(n); if (got.length === 60) resolve(); })), 8000, '60 events');
    await once(s, 'connect');
    for (let i = 0; i < 60; i++) {
      s.emit('probe:emit', { rooms: [s.id], event: 'seq', args: [i] });
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 5));  // spread over the upgrade
    }
    await all;
    await upgraded;
    assert.deepEqual(got, Array.from({ length: 60 }, (_, i) => i));
    assert.equal(s.io.engine.transport.name, 'websocket');
  });
});
