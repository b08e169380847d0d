// Heartbeat with ping_interval 300ms / ping_timeout 300ms: clients that answer
// stay connected across many pings; a client that does not answer is closed.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, startServer, ackAll, once, rawSioWs, rawWs, rawPollingSession, pollingHandshake, pollGet, pollPost,
  records, withTimeout, waitFor, request,
} from './lib/harness.mjs';

const INTERVAL = 300;
const TIMEOUT = 300;
let srv;
before(async () => {
  srv = await startServer({ workers: 2, extraServer: `ping_interval ${INTERVAL}ms;\nping_timeout ${TIMEOUT}ms;` });
});
after(() => srv?.stop());

// Resolves after the engine has seen `n` pings; rejects if the socket drops first.
function pings(s, n, ms) {
  return withTimeout(new Promise((resolve, reject) => {
    let count = 0;
    s.io.engine.on('ping', () => { if (++count === n) resolve(count); });
    s.once('disconnect', (reason) => reject(new Error(`disconnected (${reason}) after ${count} pings`)));
  }), ms, `${n} pings`);
}

test('the open packet announces the configured heartbeat', async () => {
  const { open } = await pollingHandshake(srv);
  assert.equal(open.pingInterval, INTERVAL);
  assert.equal(open.pingTimeout, TIMEOUT);
});

// Pings leave on the timer facility at ping_interval, not at the next turn of
// a coarse tick (a 100 ms tick made 300 ms pings arrive at 340-400 ms). The
// precision to the millisecond is shown on an injected clock in
// tests/unit/timers_test.cc; here the official client sees its consequence,
// with a tolerance for a loaded machine.
test('the official client sees pings every ping_interval (median within 30 ms)', async (t, ctx) => {
  const s = await ctx.connect(srv, '/', { transports: ['websocket'] });
  const at = [];
  await withTimeout(new Promise((resolve) => {
    s.io.engine.on('ping', () => { at.push(performance.now()); if (at.length === 8) resolve(); });
  }), 8000, '8 pings');
  const gaps = at.slice(1).map((v, i) => v - at[i]).sort((a, b) => a - b);
  const median = gaps[Math.floor(gaps.length / 2)];
  // (One gap can look short after a late one: the client's loop is measured too.)
  assert.ok(median >= INTERVAL - 10 && median <= INTERVAL + 30, `median ${median.toFixed(1)} ms, ${gaps.map(Math.round)}`);
});

describe('official clients stay connected across pings', () => {
  for (const transports of [['websocket'], ['polling'], ['polling', 'websocket']]) {
    test(`transports ${transports.join('+')}`, async (t, ctx) => {
      const s = ctx.socket(srv, '/', { transports });
      const sid = once(s, 'connect').then(() => s.io.engine.id);
      const engineId = s.io.engine;
      await pings(s, 6, 6000);
      assert.equal(s.connected, true);
      assert.equal(s.io.engine, engineId, 'same Engine.IO session (no reconnect)');
      assert.equal(s.io.engine.id, await sid);
      assert.deepEqual(await ackAll(s, 'bench:echo', 'after pings'), ['after pings']);
    });
  }

  test('pings keep coming while the client is busy sending events', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { transports: ['websocket'] });
    let stop = false;
    const traffic = (async () => {
      let i = 0;
      while (!stop) await ackAll(s, 'bench:echo', i++);
      return i;
    })();
    await pings(s, 4, 5000);
    stop = true;
    assert.ok(await traffic > 0);
    assert.equal(s.connected, true);
  });
});

describe('raw clients', () => {
  test('websocket: a client that answers every ping stays open', async (t, ctx) => {
    const ws = await rawSioWs(srv);
    ctx.defer(() => ws.terminate());
    const times = [];
    while (times.length < 5) {
      const m = await ws.next(INTERVAL + TIMEOUT + 1000);
      if (m.text === '2') {
        times.push(Date.now());
        ws.send('3');
      }
    }
    for (let i = 1; i < times.length; i++) {
      const gap = times[i] - times[i - 1];
      assert.ok(gap >= INTERVAL - 60, `ping ${i} came ${gap} ms after the previous one (interval ${INTERVAL})`);
    }
    ws.send('42900["bench:echo","ok"]');
    assert.equal(await ws.until((x) => x.startsWith('43')), '43900["ok"]');
  });

  test('websocket: a client that does not answer the ping is closed after ping_timeout', async (t, ctx) => {
    const ws = await rawSioWs(srv);
    ctx.defer(() => ws.terminate());
    let pingAt;
    for (;;) {
      const m = await ws.next(INTERVAL + TIMEOUT + 1000);
      if (m.text === '2') { pingAt = Date.now(); break; }
    }
    // deliberately no pong
    const closed = await withTimeout(ws.closed, TIMEOUT + 2000, 'the server to close the silent client');
    const after = Date.now() - pingAt;
    assert.ok(after >= TIMEOUT - 60, `closed ${after} ms after the ping, before ping_timeout ${TIMEOUT}`);
    assert.ok(closed.code !== undefined);
  });

  test('websocket: a silent client is closed even before it joins a namespace', async (t, ctx) => {
    const ws = rawWs(srv);
    ctx.defer(() => ws.terminate());
    await withTimeout(ws.opened, 5000, 'open');
    await withTimeout(ws.closed, INTERVAL + TIMEOUT + 2000, 'the server to close the silent client');
  });

  test('polling: a client that does not answer gets the close packet, then the sid is unknown', async () => {
    const { sid } = await rawPollingSession(srv);
    let sawPing = false;
    let sawClose = false;
    for (let i = 0; i < 10 && !sawClose; i++) {
      const g = await pollGet(srv, sid, { timeoutMs: INTERVAL + TIMEOUT + 2000 });
      if (g.status === 400) break;
      const recs = records(g.text);
      if (recs.includes('2')) sawPing = true;
      if (recs.includes('1')) sawClose = true;
    }
    assert.ok(sawPing, 'got a ping');
    assert.ok(sawClose, 'got the close packet after the unanswered ping');
    const g = await pollGet(srv, sid);
    assert.equal(g.status, 400);
    assert.equal(g.text, JSON.stringify({ code: 1, message: 'Session ID unknown' }));
  });

  test('polling: an idle session polled after its ping timeout gets 400, not the stale ping', async () => {
    const closedBy = async (reason) => Number(new RegExp(`^depth_realtime_engine_sessions_closed_total\\{reason="${reason}"\\} (\\d+)`, 'm')
      .exec((await request(srv, { path: '/metrics' })).text)?.[1] ?? 0);
    const before = await closedBy('ping timeout');
    const { sid } = await rawPollingSession(srv);
    // no GET: the ping waits in the queue, unanswered, until the timeout ends the session
    await waitFor(async () => (await closedBy('ping timeout')) > before, { ms: INTERVAL + TIMEOUT + 3000, what: 'the ping timeout' });
    const g = await pollGet(srv, sid);
    assert.equal(g.status, 400, `GET ${g.status} ${g.text}`);
    assert.equal(g.text, JSON.stringify({ code: 1, message: 'Session ID unknown' }));
  });

  test('polling: a client that answers with POST "3" stays alive across pings', async () => {
    const { sid } = await rawPollingSession(srv);
    let pingsSeen = 0;
    while (pingsSeen < 4) {
      const g = await pollGet(srv, sid, { timeoutMs: INTERVAL + TIMEOUT + 2000 });
      assert.equal(g.status, 200, `GET ${g.status} ${g.text}`);
      const recs = records(g.text);
      assert.ok(!recs.includes('1'), `session closed after ${pingsSeen} answered pings`);
      if (recs.includes('2')) {
        pingsSeen++;
        assert.equal((await pollPost(srv, sid, '3')).status, 200);
      }
    }
    await pollPost(srv, sid, '1');
  });
});
