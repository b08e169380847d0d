// Bad input with raw `ws` and raw HTTP/TCP: every case closes THAT connection
// (cleanly where the protocol allows it) while official clients connected
// before keep exchanging events, and the master and both workers stay the same
// processes (no crash, no respawn).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe } from 'node:test';
import {
  test, startServer, Scope, ackAll, rawSioWs, rawPollingSession, pollGet, pollPost,
  pollingHandshake, request, rawTcp, closedWithin, records, token, once, sleep,
  workerOf, waitFor, ack, Inbox,
} from './lib/harness.mjs';

let srv;
let scope;
let witnesses = [];
let pidsBefore;

before(async () => {
  srv = await startServer({ workers: 2, extraServer: 'max_payload 1k;' });
  scope = new Scope(null);
  // Official clients that must not notice anything: one per transport.
  witnesses = [
    await scope.connect(srv, '/', { userId: 'witness-ws', transports: ['websocket'] }),
    await scope.connect(srv, '/', { userId: 'witness-poll', transports: ['polling'] }),
    await scope.connect(srv, '/chat', { userId: 'witness-chat', transports: ['websocket'] }),
  ];
  pidsBefore = { master: srv.pid, workers: srv.workerPids().sort() };
  assert.equal(pidsBefore.workers.length, 2);
}, { timeout: 20000 });

after(async () => { await scope?.cleanup(); await srv?.stop(); });

let round = 0;
// The witnesses still exchange events, the server still answers HTTP, and the
// processes are the ones we started with.
async function assertServerHealthy() {
  round++;
  for (const w of witnesses) {
    assert.equal(w.connected, true, `witness ${w.nsp} (${w.io.engine?.transport?.name}) still connected`);
    assert.deepEqual(await ackAll(w, 'bench:echo', 'alive', round), ['alive', round]);
  }
  assert.equal((await request(srv, { path: '/healthz' })).status, 200);
  assert.equal(srv.exitInfo, null, 'master still running');
  assert.deepEqual(srv.workerPids().sort(), pidsBefore.workers, 'same worker processes (none crashed or respawned)');
}

// Expects the server to close the raw WebSocket within `ms`.
async function expectClosed(ws, what, { clean = true, ms = 5000 } = {}) {
  const c = await closedWithin(ws, ms);
  if (!c) {
    ws.terminate();
    assert.fail(`${what}: the server did not close the connection within ${ms} ms`);
  }
  if (clean) assert.notEqual(c.code, 1006, `${what}: closed without a close frame (abnormal closure 1006)`);
  return c;
}

const big = (n) => 'x'.repeat(n);

// [label, send(ws), options]
const wsCases = [
  ['reserved event name 42["disconnect"]', (ws) => ws.send('42["disconnect"]')],
  ['reserved event name 42["connect"]', (ws) => ws.send('42["connect"]')],
  ['empty Engine.IO message "4"', (ws) => ws.send('4')],
  ['unknown Engine.IO packet type "9"', (ws) => ws.send('9')],
  ['empty text frame', (ws) => ws.send('')],
  ['unknown Socket.IO packet type "49"', (ws) => ws.send('49["x"]')],
  ['event payload not JSON', (ws) => ws.send('42["bench:echo",')],
  ['event payload is an object', (ws) => ws.send('42{"a":1}')],
  ['event payload is an empty array', (ws) => ws.send('42[]')],
  ['event name is an object', (ws) => ws.send('42[{"a":1}]')],
  ['ack payload is not an array', (ws) => ws.send('430{"a":1}')],
  ['DISCONNECT with data', (ws) => ws.send('41{"a":1}')],
  ['CONNECT_ERROR sent by the client', (ws) => ws.send('44{"message":"x"}')],
  ['CONNECT with a string payload', (ws) => ws.send('40/chat,"str"')],
  ['second CONNECT to an already connected namespace', (ws) => ws.send(`40${JSON.stringify({ token: token('raw-user') })}`)],
  ['event for a namespace that is not connected', (ws) => ws.send('42/chat,["bench:echo"]')],
  ['binary frame without a binary header', (ws) => ws.send(Buffer.from([1, 2, 3]))],
  ['binary header followed by text instead of the attachment', (ws) => {
    ws.send('451-["bench:echo",{"_placeholder":true,"num":0}]');
    ws.send('42["bench:echo"]');
  }],
  ['placeholder num out of range', (ws) => {
    ws.send('451-0["bench:echo",{"_placeholder":true,"num":3}]');
    ws.send(Buffer.from([1]));
  }],
  ['attachment count 0', (ws) => ws.send('450-["bench:echo"]')],
  ['attachment count not a number', (ws) => ws.send('45x-["bench:echo"]')],
  ['ping from the client (wrong heartbeat direction in v4)', (ws) => ws.send('2')],
  ['text message over max_payload (1k)', (ws) => ws.send(`42["bench:echo","${big(2000)}"]`), { code: 1009 }],
  ['binary message over max_payload (1k)', (ws) => {
    ws.send('451-["bench:echo",{"_placeholder":true,"num":0}]');
    ws.send(Buffer.alloc(4096, 7));
  }, { code: 1009 }],
  ['garbage bytes instead of a WebSocket frame (16 x 0xff)', (ws) => ws._socket.write(Buffer.alloc(16, 0xff)), { clean: false }],
  // 'G' = FIN 0, RSV2 set, reserved opcode 7; 'E' = unmasked: invalid from the first two bytes
  ['HTTP text instead of a WebSocket frame (invalid from its first two bytes)', (ws) => ws._socket.write('GET / HTTP/1.1\r\n\r\n'), { clean: false }],
  ['unmasked client frame', (ws) => ws._socket.write(Buffer.from([0x81, 0x02, 0x34, 0x32])), { clean: false }],
  ['reserved opcode 0x3', (ws) => ws._socket.write(Buffer.from([0x83, 0x80, 1, 2, 3, 4])), { clean: false }],
  ['RSV1 set without an extension', (ws) => ws._socket.write(Buffer.from([0xc1, 0x81, 1, 2, 3, 4, 0x35])), { clean: false }],
  ['invalid UTF-8 in a text frame', (ws) => ws._socket.write(Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0x34, 0xff])), { clean: false }],
  ['fragmented control frame', (ws) => ws._socket.write(Buffer.from([0x09, 0x80, 0, 0, 0, 0])), { clean: false }],
  ['frame length claiming 2^63 bytes', (ws) => ws._socket.write(Buffer.from([0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4])), { clean: false }],
];

describe('WebSocket: bad input closes that connection only', () => {
  for (const [label, send, opts = {}] of wsCases) {
    test(label, async () => {
      const ws = await rawSioWs(srv);
      try {
        // sanity: the connection works before the bad input
        ws.send('42100["bench:echo","before"]');
        assert.equal(await ws.until((x) => x.startsWith('43')), '43100["before"]');
        send(ws);
        const c = await expectClosed(ws, label, { clean: opts.clean ?? true });
        if (opts.code) assert.equal(c.code, opts.code, `${label}: close code`);
      } finally {
        ws.terminate();
      }
      await assertServerHealthy();
    });
  }

  test('a message of exactly max_payload bytes is accepted', async () => {
    const ws = await rawSioWs(srv);
    try {
      const head = '42101["bench:echo","';
      const tail = '"]';
      const msg = head + big(1024 - head.length - tail.length) + tail;
      assert.equal(Buffer.byteLength(msg), 1024);
      ws.send(msg);
      const m = await ws.until((x) => x.startsWith('43'));
      assert.ok(m.startsWith('43101["xxx'), m.slice(0, 80));
    } finally {
      ws.terminate();
    }
  });

  test('an official client emitting more than max_payload loses its connection; others do not', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { userId: 'too-big', transports: ['websocket'] });
    const gone = once(s, 'disconnect');
    s.emit('bench:echo', big(4000));
    const [reason] = await gone;
    assert.ok(['transport close', 'transport error'].includes(reason), `reason ${reason}`);
    await assertServerHealthy();
  });

  test('bad input on one namespace closes the whole connection (all its namespaces)', async () => {
    const ws = await rawSioWs(srv);
    try {
      ws.send(`40/chat,${JSON.stringify({ token: token('raw-user') })}`);
      await ws.until((x) => x.startsWith('40/chat,{') || x.startsWith('44/chat,'));
      ws.send('42/chat,{"not":"an array"}');
      await expectClosed(ws, 'bad packet on /chat');
    } finally {
      ws.terminate();
    }
    await assertServerHealthy();
  });

  test('a WebSocket closed by the client in the middle of a frame', async () => {
    const ws = await rawSioWs(srv);
    ws._socket.write(Buffer.from([0x81, 0xfe, 0x10, 0x00, 1, 2, 3, 4, 5, 6]));  // 4096-byte frame, 2 bytes sent
    ws._socket.destroy();
    await ws.closed;
    await assertServerHealthy();
  });
});

describe('input that must NOT close the connection', () => {
  const harmless = [
    ['ack for an unknown id', '43999["late"]'],
    ['event nobody handles', '42["no-such-handler",1]'],
    ['numeric event name', '42[7,"numeric"]'],
    ['event with ack id nobody answers', '42998["no-such-handler"]'],
  ];
  for (const [label, text] of harmless) {
    test(label, async () => {
      const ws = await rawSioWs(srv);
      try {
        ws.send(text);
        ws.send('42103["bench:echo","after"]');
        assert.equal(await ws.until((x) => x.startsWith('43103')), '43103["after"]');
        assert.equal(ws.readyState, ws.OPEN);
      } finally {
        ws.terminate();
      }
    });
  }

  test('a fragmented text message (with a ping between fragments) is reassembled', async () => {
    const ws = await rawSioWs(srv);
    try {
      const pong = once(ws, 'pong');
      ws.send('42105["bench:', { fin: false });
      ws.ping('between');
      ws.send('echo","frag', { fin: false });
      ws.send('mented"]', { fin: true });
      assert.equal(await ws.until((x) => x.startsWith('43105')), '43105["fragmented"]');
      const [data] = await pong;
      assert.equal(data.toString(), 'between', 'WebSocket ping answered with a pong carrying its data');
    } finally {
      ws.terminate();
    }
  });

  test('a WebSocket close frame from the client is answered with a close frame', async () => {
    const ws = await rawSioWs(srv);
    ws.close(1000, 'bye');
    const c = await closedWithin(ws, 3000);
    assert.ok(c, 'closed');
    assert.equal(c.code, 1000);
    await assertServerHealthy();
  });

  test('Engine.IO close packet "1" over the WebSocket closes the session', async () => {
    const ws = await rawSioWs(srv);
    ws.send('1');
    assert.ok(await closedWithin(ws, 3000), 'closed after "1"');
    await assertServerHealthy();
  });

  test('max_payload 1k is announced as maxPayload 1024', async () => {
    const ws = await rawSioWs(srv);
    ws.terminate();
    assert.equal(ws.open.maxPayload, 1024);
  });

  test('official polling client with maxPayload 1k: many small events in a burst all arrive', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { userId: 'burst', transports: ['polling'] });
    const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => ackAll(s, 'bench:echo', `${i}:${big(150)}`)));
    replies.forEach((r, i) => assert.deepEqual(r, [`${i}:${big(150)}`]));
    assert.equal(s.connected, true);
  });
});

describe('long-polling: bad input closes that session only', () => {
  // The session is closed: a GET ends with a close packet, or the sid is unknown.
  async function expectSessionClosed(sid, what) {
    for (let i = 0; i < 5; i++) {
      const g = await pollGet(srv, sid, { timeoutMs: 5000 });
      if (g.status === 400) {
        assert.equal(g.text, JSON.stringify({ code: 1, message: 'Session ID unknown' }), `${what}: ${g.text}`);
        return;
      }
      assert.equal(g.status, 200, `${what}: GET ${g.status} ${g.text}`);
      if (records(g.text).includes('1')) {
        const again = await pollGet(srv, sid);
        assert.equal(again.status, 400, `${what}: sid still valid after the close packet`);
        assert.equal(again.text, JSON.stringify({ code: 1, message: 'Session ID unknown' }));
        return;
      }
    }
    assert.fail(`${what}: session ${sid} still open`);
  }

  const pollCases = [
    ['reserved event name', '42["disconnect"]'],
    ['unknown Engine.IO packet type', '9'],
    ['empty Engine.IO message', '4'],
    ['non-JSON payload', '42[not json'],
    ['binary record without a binary header', 'bAQID'],
    ['invalid base64 record', 'b***'],
    ['event before CONNECT on another namespace', '42/chat,["x"]'],
    ['client ping', '2'],
  ];
  for (const [label, body] of pollCases) {
    test(label, async () => {
      const { sid } = await rawPollingSession(srv);
      const p = await pollPost(srv, sid, body);
      assert.ok([200, 400].includes(p.status), `POST answered ${p.status}`);
      await expectSessionClosed(sid, label);
      await assertServerHealthy();
    });
  }

  test('POST body over max_payload → 413, the session survives', async () => {
    const { sid } = await rawPollingSession(srv);
    const r = await pollPost(srv, sid, `42["bench:echo","${big(3000)}"]`);
    assert.equal(r.status, 413);
    assert.equal((await pollPost(srv, sid, '425["bench:echo","small"]')).status, 200);
    let found = false;
    for (let i = 0; i < 5 && !found; i++) found = records((await pollGet(srv, sid)).text).includes('435["small"]');
    assert.ok(found);
    await pollPost(srv, sid, '1');
    await assertServerHealthy();
  });

  test('unknown sid → 400 code 1, GET and POST', async () => {
    for (const r of [await pollGet(srv, 'AAAAAAAAAAAAAAAAAAAA'), await pollPost(srv, 'AAAAAAAAAAAAAAAAAAAA', '40')]) {
      assert.equal(r.status, 400);
      assert.equal(r.text, JSON.stringify({ code: 1, message: 'Session ID unknown' }));
    }
    await assertServerHealthy();
  });

  test('overlapping GET: the second gets 400, the held one gets a close packet, the session is gone', async () => {
    const { sid } = await rawPollingSession(srv);
    const first = pollGet(srv, sid, { timeoutMs: 8000 });
    await sleep(200);  // give the first GET time to be held (nothing to await on the wire)
    const second = await pollGet(srv, sid, { timeoutMs: 8000 });
    assert.equal(second.status, 400, `second GET ${second.status} ${second.text}`);
    const f = await first;
    assert.equal(f.status, 200);
    assert.ok(records(f.text).includes('1'), `held GET answered ${JSON.stringify(f.text)}`);
    const after = await pollGet(srv, sid);
    assert.equal(after.status, 400);
    assert.equal(after.text, JSON.stringify({ code: 1, message: 'Session ID unknown' }));
    await assertServerHealthy();
  });

  test('client aborts a held GET: the session is closed', async () => {
    const { sid } = await rawPollingSession(srv);
    const sock = net.connect(srv.port, '127.0.0.1');
    await once(sock, 'connect');
    sock.write(`GET /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await sleep(200);  // let it be held
    sock.destroy();
    // a new GET must find the session closed (close packet or unknown sid)
    await expectSessionClosed(sid, 'aborted GET');
    await assertServerHealthy();
  });

  test('POST with "1" closes the session', async () => {
    const { sid } = await rawPollingSession(srv);
    assert.equal((await pollPost(srv, sid, '1')).status, 200);
    const g = await pollGet(srv, sid);
    assert.equal(g.status, 400);
    await assertServerHealthy();
  });
});

describe('raw TCP', () => {
  test('request cut in the middle of the headers', async () => {
    const r = await rawTcp(srv, 'GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Part', { ms: 300, endAfterWrite: true });
    assert.ok(r.closed || r.text === '' || r.text.startsWith('HTTP/1.1'));
    await assertServerHealthy();
  });

  test('POST whose body is shorter than its Content-Length, then close', async () => {
    const { sid } = await pollingHandshake(srv);
    await rawTcp(srv, `POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 500\r\n\r\n40`, { ms: 300, endAfterWrite: true });
    await assertServerHealthy();
  });

  test('Content-Length far over max_payload (body keeps coming) → 413', async () => {
    const { sid } = await pollingHandshake(srv);
    const r = await rawTcp(srv, `POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 999999999\r\n\r\n42${big(4000)}`, { ms: 3000 });
    assert.match(r.text, /^HTTP\/1\.1 413/, `response ${JSON.stringify(r.text.slice(0, 100))}`);
    await assertServerHealthy();
  });

  test('WebSocket upgrade with a bad Sec-WebSocket-Version is refused', async () => {
    const r = await rawTcp(srv, 'GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 99\r\n\r\n', { ms: 3000 });
    assert.doesNotMatch(r.text, /^HTTP\/1\.1 101/);
    assert.match(r.text, /^HTTP\/1\.1 4\d\d/, `response ${JSON.stringify(r.text.slice(0, 100))}`);
    await assertServerHealthy();
  });

  test('WebSocket upgrade without Sec-WebSocket-Key is refused', async () => {
    const r = await rawTcp(srv, 'GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Version: 13\r\n\r\n', { ms: 3000 });
    assert.doesNotMatch(r.text, /^HTTP\/1\.1 101/);
    await assertServerHealthy();
  });

  test('100 connections opened and dropped at once', async () => {
    await Promise.all(Array.from({ length: 100 }, (_, i) => new Promise((resolve) => {
      const s = net.connect(srv.port, '127.0.0.1');
      s.on('connect', () => {
        if (i % 2) s.write('GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n');
        s.destroy();
        resolve();
      });
      s.on('error', resolve);
    })));
    await assertServerHealthy();
  });

  test('200 sessions opened and abandoned', async () => {
    await Promise.all(Array.from({ length: 200 }, () => pollingHandshake(srv)));
    await assertServerHealthy();
  });
});

test('at the end: same master and workers, witnesses still connected', async () => {
  await assertServerHealthy();
  assert.equal(srv.pid, pidsBefore.master);
});

// A separate server: this one gets a worker killed on purpose.
test('a worker killed with SIGKILL is replaced; the other worker\'s clients keep going; rooms span the new worker', { timeout: 30000 }, async (t, ctx) => {
  const srv2 = await ctx.startServer({ workers: 2 });
  // one client on each worker
  const byWorker = new Map();
  for (let i = 0; i < 30 && byWorker.size < 2; i++) {
    const s = await ctx.connect(srv2, '/', { userId: `k${i}` });
    const w = await workerOf(srv2, s);
    if (!byWorker.has(w)) byWorker.set(w, s);
  }
  assert.equal(byWorker.size, 2, 'clients on both workers');
  const [[victim, doomed], [survivorPid, survivor]] = [...byWorker];
  const gone = once(doomed, 'disconnect', 5000);
  process.kill(victim, 'SIGKILL');
  await gone;
  const workers = await waitFor(() => {
    const w = srv2.workerPids();
    return w.length === 2 && !w.includes(victim) ? w : null;
  }, { ms: 10000, what: 'a replacement worker' });
  assert.ok(workers.includes(survivorPid), 'the other worker was not restarted');
  assert.equal(survivor.connected, true);
  assert.deepEqual(await ackAll(survivor, 'bench:echo', 'unaffected'), ['unaffected']);
  // a client on the new worker and the survivor share a room
  const replacement = workers.find((p) => p !== survivorPid);
  let fresh = null;
  for (let i = 0; i < 30 && !fresh; i++) {
    const s = await ctx.connect(srv2, '/', { userId: `n${i}` });
    if (await workerOf(srv2, s) === replacement) fresh = s;
  }
  assert.ok(fresh, 'a new client lands on the replacement worker');
  const room = 'after-respawn';
  await ack(fresh, 'probe:join', { room });
  await ack(survivor, 'probe:join', { room });
  const inboxes = [new Inbox(fresh), new Inbox(survivor)];
  await ack(survivor, 'probe:emit', { rooms: [room], event: 'x-worker', args: ['from survivor'] });
  await ack(fresh, 'probe:emit', { rooms: [room], event: 'x-worker', args: ['from fresh'] });
  for (const ib of inboxes) {
    await ib.wait('x-worker', (a) => a[0] === 'from survivor');
    await ib.wait('x-worker', (a) => a[0] === 'from fresh');
  }
  assert.equal(srv2.exitInfo, null, 'master still running');
});
