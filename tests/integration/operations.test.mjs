// Operating the daemon like nginx (issue 5): SIGHUP reloads that drop nothing,
// reloads that roll the workers, refused reloads, a killed worker, graceful QUIT,
// the Prometheus metrics and the JSON event log with USR1.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe } from 'node:test';
import {
  test, startServer, writeConf, tmpDir, freePort, token, connected, ack, ackAll, once, waitFor, withTimeout,
  sleep, workerOf, isAlive, pollingHandshake, pollPost, pollGet, rawPollingSession, request, eioUrl, rnd, io,
  ALLOWED_ORIGINS, SECRET, RS, BINARY, MODULES_DIR,
} from './lib/harness.mjs';
import { spawnSync } from 'node:child_process';

// ----------------------------------------------------------------- helpers

// The server block these tests use; every value a reload changes is a parameter.
function serverBlock({ ports, greeting = 'hello', origins = ALLOWED_ORIGINS, secret = SECRET, pingInterval, extra = [] }) {
  return [
    ...ports.map((p) => `    listen 127.0.0.1:${p};`),
    `    cors_origins ${origins.join(' ')};`,
    `    auth_jwt_secret ${secret};`,
    '    namespace /;',
    '    namespace /chat;',
    `    probe_greeting "${greeting}";`,
    pingInterval ? `    ping_interval ${pingInterval}ms;` : '',
    ...extra.map((l) => `    ${l}`),
  ].filter(Boolean).join('\n');
}

// (Re)writes DIR/depth-realtime.conf; returns its path.
function opsConf(dir, opts) {
  return writeConf(dir, {
    port: opts.ports[0], workers: opts.workers ?? 2, extraMain: opts.extraMain ?? '', serverBlock: serverBlock(opts),
  });
}

async function opsServer(opts) {
  const dir = opts.dir ?? tmpDir();
  const ports = opts.ports ?? [await freePort()];
  const conf = opsConf(dir, { ...opts, ports });
  const srv = await startServer({ dir, conf, port: ports[0], workers: opts.workers ?? 2 });
  return srv;
}

const OUTCOMES = {
  'in place': /configuration reloaded in place/,
  restart: /configuration reloaded \(generation \d+\)/,
  failed: /reload failed, keeping the running configuration/,
};

// SIGHUP to the master, then waits for what the error log says it did:
// 'in place' (and every worker applied it), 'restart' (new workers) or 'failed'.
// Returns the log lines written since the signal.
async function reload(srv, expect, { workers = 2, ms = 10000 } = {}) {
  const from = srv.logs.length;
  const since = () => srv.logs.slice(from);
  process.kill(srv.pid, 'SIGHUP');
  const outcome = await waitFor(() => {
    const lines = since();
    for (const [k, re] of Object.entries(OUTCOMES)) if (lines.some((l) => re.test(l))) return k;
    return null;
  }, { ms, what: `the outcome of a reload (expected "${expect}")` });
  assert.equal(outcome, expect, `reload outcome; log since SIGHUP:\n${since().join('\n')}`);
  if (expect === 'in place') {
    await waitFor(() => since().filter((l) => /worker \d+: configuration applied in place/.test(l)).length >= workers,
      { ms, what: `${workers} workers to apply the configuration in place` })
      .catch((e) => { throw new Error(`${e.message}; log since SIGHUP:\n${since().join('\n')}`); });
  }
  return since();
}

// GET /metrics → Map of 'name{labels}' → number; also the raw response.
async function scrape(port) {
  const r = await request({ port }, { path: '/metrics' });
  assert.equal(r.status, 200, `GET /metrics on ${port}: ${r.status} ${r.text.slice(0, 200)}`);
  const m = new Map();
  for (const line of r.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  m.res = r;
  return m;
}

// Waits until series `key` has the value `want` (the gauges move a moment after
// the client sees its connect/disconnect).
async function metricBecomes(port, key, want, ms = 5000) {
  let last;
  await waitFor(async () => { last = (await scrape(port)).get(key); return last === want; }, { ms, what: `${key} == ${want}` })
    .catch(() => assert.fail(`${key}: ${last}, expected ${want}`));
}

function portIsClosed(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.on('connect', () => { c.destroy(); resolve(false); });
    c.on('error', () => resolve(true));
  });
}

// What the client says about a disconnect: the engine's description, plus the
// HTTP status or network error of a failed long-polling request.
function whyClosed(details) {
  let d = String(details.description?.message ?? details.description ?? details.message ?? '');
  const xhr = details.context;
  if (xhr?.status) d += ` status ${xhr.status}`;
  else if (xhr && typeof xhr.responseText === 'string' && xhr.responseText) d += `: ${xhr.responseText.split('\n')[0]}`;
  return d;
}

// An official client that reconnects by itself (quickly), fetching a token from
// `auth()` at every connection, and records what happens to it.
class Client {
  constructor(url, i, transports, auth = () => token(`u${i}`)) {
    this.i = i;
    this.transports = transports;
    this.s = io(`${url}/`, {
      transports, forceNew: true, timeout: 10000,
      reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 1000, randomizationFactor: 0.5,
      // A client closed in the middle of an upgrade keeps its heartbeat timer
      // (85 s); unref'd, it does not hold the test process.
      autoUnref: true,
      auth: (cb) => cb({ token: auth() }),
    });
    this.connects = 0;
    this.disconnects = [];   // {at, reason}
    this.greetings = [];
    this.s.on('connect', () => { this.connects++; });
    this.s.on('disconnect', (reason, details) => this.disconnects.push({
      at: Date.now(), reason, transport: this.s.io.engine?.transport?.name,
      ...(details ? { details: whyClosed(details) } : {}),
    }));
    this.s.on('probe:hello', (g) => this.greetings.push(g));
  }

  close() {
    try { this.s.disconnect(); } catch { /* ignore */ }
    try { this.s.io.engine?.close(); } catch { /* ignore */ }
  }
}

const KINDS = [['websocket'], ['polling'], ['polling', 'websocket']];

// `n` clients, a third each: WebSocket only, long-polling only, polling then upgrade.
async function crowd(srv, n, auth) {
  const clients = [];
  for (let at = 0; at < n; at += 100) {
    const batch = [];
    for (let i = at; i < Math.min(n, at + 100); i++) {
      const c = new Client(srv.url, i, KINDS[i % 3], auth && (() => auth(i)));
      clients.push(c);
      batch.push(connected(c.s, 15000));
    }
    await Promise.all(batch);
  }
  return clients;
}

// Every client emits bench:echo with an ack; each gets its own payload back.
async function echoAll(clients, tag) {
  await Promise.all(clients.map(async (c) => {
    const payload = { tag, u: c.i };
    const reply = await ackAll(c.s, 'bench:echo', payload)
      .catch((e) => {
        throw new Error(`client ${c.i} (${c.transports}) ${tag}: ${e.message}; now on ${c.s.io.engine?.transport?.name} ` +
          `sid ${c.s.io.engine?.id}, connected ${c.s.connected}, disconnects ${JSON.stringify(c.disconnects)}`);
      });
    assert.deepEqual(reply, [payload], `client ${c.i} got someone else's ack`);
  }));
}

// {value: count} of a list of strings.
const tally = (list) => list.reduce((acc, k) => ({ ...acc, [k]: (acc[k] ?? 0) + 1 }), {});

const disconnectCount = (clients) => clients.reduce((n, c) => n + c.disconnects.length, 0);

// --------------------------------------------- 500 clients through reloads

describe('500 clients on 2 workers', () => {
  let srv;
  let dir;
  let port;
  let clients = [];
  const auth = { secret: SECRET };
  const N = 500;
  let settings = { greeting: 'greeting 0', origins: ['http://app-0.example'], pingInterval: 20000 };

  before(async () => {
    dir = tmpDir();
    port = await freePort();
    srv = await opsServer({
      dir, ports: [port], ...settings, extraMain: 'worker_shutdown_spread 1s;\nworker_shutdown_timeout 8s;',
    });
    clients = await crowd(srv, N, (i) => token(`u${i}`, {}, { secret: auth.secret }));
    await waitFor(() => clients.every((c) => c.greetings.length === 1), { ms: 5000, what: 'every greeting' });
    for (const c of clients) assert.deepEqual(c.greetings, ['greeting 0']);
  }, { timeout: 30000 });

  after(async () => {
    for (const c of clients) c.close();
    await srv?.stop();
  });

  test('20 SIGHUP reloads of in-place settings: nobody is disconnected, new connections see each new value',
    { timeout: 60000 }, async (t, ctx) => {
      const workers = srv.workerPids().sort();
      assert.equal(workers.length, 2);
      const ids = clients.map((c) => c.s.id);
      // A raw long-polling session: an existing session sees new CORS origins too.
      const raw = await rawPollingSession(srv, { tok: token('raw', {}, { secret: auth.secret }) });
      for (let i = 1; i <= 20; i++) {
        const prev = settings;
        settings = {
          greeting: `greeting ${i}`, origins: [`http://app-${i}.example`, 'http://localhost:3000'],
          secret: `secret-${i}`, pingInterval: 20000 + 50 * i,
        };
        opsConf(dir, { ports: [port], ...settings, extraMain: 'worker_shutdown_spread 1s;\nworker_shutdown_timeout 8s;' });
        // Every client has an acked event in flight while the reload happens.
        const round = echoAll(clients, `before-${i}`);
        await reload(srv, 'in place');
        await round;
        auth.secret = settings.secret;

        // A new connection gets the new greeting and is checked with the new secret.
        const fresh = ctx.socket(srv, '/', {
          transports: KINDS[i % 3], auth: { token: token(`new${i}`, {}, { secret: settings.secret }) },
        });
        const hello = once(fresh, 'probe:hello');
        await connected(fresh);
        assert.deepEqual(await hello, [settings.greeting], `greeting after reload ${i}`);
        fresh.disconnect();
        const refusedErr = await ctx.connectError(srv, '/', {
          auth: { token: token(`old${i}`, {}, { secret: prev.secret ?? SECRET }) },
        });
        assert.equal(refusedErr.data?.code, 'INVALID_TOKEN', `the secret before reload ${i} still opens connections`);

        // CORS: the new origin is echoed, the removed one is not; new sessions announce the new ping interval.
        const { open, res } = await pollingHandshake(srv, { headers: { origin: `http://app-${i}.example` } });
        assert.equal(res.headers['access-control-allow-origin'], `http://app-${i}.example`);
        assert.equal(open.pingInterval, settings.pingInterval, 'pingInterval of a new session');
        const old = await request(srv, { path: eioUrl({ t: rnd() }), headers: { origin: `http://app-${i - 1}.example` } });
        assert.equal(old.headers['access-control-allow-origin'], undefined, `removed origin still allowed after reload ${i}`);
        const p = await pollPost(srv, raw.sid, `42${i}["bench:echo","raw ${i}"]`, { headers: { origin: `http://app-${i}.example` } });
        assert.equal(p.status, 200, `existing polling session after reload ${i}: ${p.status} ${p.text}`);
        assert.equal(p.headers['access-control-allow-origin'], `http://app-${i}.example`);
        const g = await pollGet(srv, raw.sid, { headers: { origin: `http://app-${i}.example` } });
        // A slow run may find the session's ping in the same poll: answered, not asserted.
        const got = g.text.split(RS);
        if (got.includes('2')) await pollPost(srv, raw.sid, '3');
        assert.deepEqual(got.filter((x) => x !== '2'), [`43${i}["raw ${i}"]`]);
        assert.equal(g.headers['access-control-allow-origin'], `http://app-${i}.example`);

        // Existing clients keep exchanging acked events, and nobody was dropped.
        await echoAll(clients, `after-${i}`);
        assert.equal(disconnectCount(clients), 0,
          `disconnects after reload ${i}: ${JSON.stringify(clients.filter((c) => c.disconnects.length).map((c) => [c.i, c.disconnects]))}`);
      }
      assert.deepEqual(srv.workerPids().sort(), workers, 'workers were replaced by in-place reloads');
      assert.deepEqual(clients.map((c) => c.s.id), ids, 'a client got a new socket id');
      for (const c of clients) assert.equal(c.greetings.length, 1, `client ${c.i} connected again`);
      const m = await scrape(srv.port);  // no metrics_listen: /metrics is on the main port
      assert.equal(m.get('depth_realtime_reloads_total{result="ok"}'), 20);
      assert.equal(m.get('depth_realtime_reloads_total{result="failed"}') ?? 0, 0);
      assert.equal(m.get('depth_realtime_last_reload_success'), 1);
      assert.equal(m.get('depth_realtime_worker_restarts_total') ?? 0, 0);
      // the 500, plus the raw session (the fresh ones have gone)
      await metricBecomes(srv.port, 'websocket_namespace_sockets{namespace="/"}', N + 1);
    });

  test('a listen change rolls the workers: clients reconnect, spread out, and no acked message is lost',
    { timeout: 40000 }, async (t, ctx) => {
      const oldWorkers = srv.workerPids();
      assert.equal(oldWorkers.length, 2);
      const port2 = await freePort();
      // Every client emits numbered messages, one at a time, each with an ack.
      // An ack must carry exactly the message it acknowledges; a message whose
      // ack does not come (the connection closed) is sent again.
      let stop = false;
      const wrong = [];
      const pump = async (c) => {
        c.acked = [];
        c.afterReconnect = 0;
        c.retries = 0;
        let n = 0;
        while (!stop) {
          if (!c.s.connected) { await sleep(50); continue; }
          const msg = { u: c.i, n };
          try {
            const reply = await c.s.timeout(4000).emitWithAck('bench:echo', msg);
            if (reply?.u !== c.i || reply?.n !== n) wrong.push({ client: c.i, sent: msg, got: reply });
            c.acked.push(n);
            if (c.disconnects.length) c.afterReconnect++;
            n++;
          } catch {
            c.retries++;
          }
          await sleep(150);
        }
      };
      const pumps = clients.map(pump);
      await waitFor(() => clients.every((c) => c.acked.length >= 2), { ms: 15000, what: 'every client to get 2 acks' });

      const t0 = Date.now();
      opsConf(dir, {
        ports: [port, port2], ...settings, extraMain: 'worker_shutdown_spread 1s;\nworker_shutdown_timeout 8s;',
      });
      await reload(srv, 'restart');
      // The old workers drain and exit; two new ones serve.
      await waitFor(() => oldWorkers.every((p) => !isAlive(p)), { ms: 12000, what: 'the old workers to exit' });
      const drained = Date.now() - t0;
      const newWorkers = srv.workerPids();
      assert.equal(newWorkers.length, 2, `workers now: ${newWorkers}`);
      assert.ok(newWorkers.every((p) => !oldWorkers.includes(p)));
      await waitFor(() => clients.every((c) => c.disconnects.length >= 1 && c.s.connected && c.afterReconnect >= 3),
        { ms: 15000, what: 'every client to reconnect and get 3 more acks' })
        .catch((e) => {
          const lagging = clients.filter((c) => !(c.disconnects.length >= 1 && c.s.connected && c.afterReconnect >= 3));
          throw new Error(`${e.message}: ${lagging.length} clients, e.g. ${JSON.stringify(lagging.slice(0, 5).map((c) => ({
            i: c.i, t: c.transports, connected: c.s.connected, disconnects: c.disconnects, after: c.afterReconnect })))}`);
        });
      stop = true;
      await withTimeout(Promise.all(pumps), 8000, 'the clients to stop');

      assert.deepEqual(wrong, [], 'acks that do not match their message');
      // Told to reconnect: a clean close (WebSocket closed, or the Engine.IO close
      // packet on the long-poll), not a failed request.
      const how = tally(clients.flatMap((c) => c.disconnects.map((d) => `${c.transports}: ${d.reason} (${d.details})`)));
      assert.ok(clients.every((c) => c.disconnects.every((d) => d.reason === 'transport close')), `disconnects: ${JSON.stringify(how, null, 1)}`);
      const reconnectsPerClient = clients.map((c) => c.disconnects.length);
      const twice = clients.filter((c) => c.disconnects.length > 1);
      assert.equal(twice.length, 0, `${twice.length} clients were sent away more than once ` +
        `(e.g. ${JSON.stringify(twice.slice(0, 3).map((c) => ({ i: c.i, t: c.transports, d: c.disconnects.map((d) => d.at - t0) })))})`);
      // worker_shutdown_spread 1s: the 500 are not all told to go at once.
      const firsts = clients.map((c) => c.disconnects[0].at);
      const spread = Math.max(...firsts) - Math.min(...firsts);
      assert.ok(spread >= 500, `disconnects spread over ${spread} ms only (worker_shutdown_spread 1s)`);
      assert.ok(drained < 8000, `old workers took ${drained} ms to go`);
      t.diagnostic(`drained in ${drained} ms, disconnects spread over ${spread} ms, retries ${clients.reduce((a, c) => a + c.retries, 0)}, ` +
        `max reconnects ${Math.max(...reconnectsPerClient)}`);

      // Every client is on a new worker (WebSocket ones can be located).
      for (const c of clients.filter((x) => x.s.io.engine.transport.name === 'websocket').slice(0, 20)) {
        assert.ok(newWorkers.includes(await workerOf(srv, c.s)));
      }
      // The added port serves too.
      const s2 = ctx.socket({ url: `http://127.0.0.1:${port2}` }, '/', { auth: { token: token('p2', {}, { secret: settings.secret }) } });
      const hello = once(s2, 'probe:hello');
      await connected(s2);
      assert.deepEqual(await hello, [settings.greeting]);
      const m = await scrape(srv.port);
      assert.equal(m.get('depth_realtime_reloads_total{result="ok"}'), 21);
      assert.equal(m.get('depth_realtime_worker_restarts_total') ?? 0, 0, 'a rolled worker counts as a restart');
      await metricBecomes(srv.port, 'websocket_namespace_sockets{namespace="/"}', N + 1);
    });
});

// ------------------------------------------------------------ refused reloads

test('a pid file that cannot be written: exit 1 with the reason, every handle closed', { timeout: 30000 }, async () => {
  const dir = tmpDir();
  const port = await freePort();
  const conf = writeConf(dir, { port, workers: 1 });
  const text = fs.readFileSync(conf, 'utf8').replace(/^pid .*;$/m, `pid ${path.join(dir, 'no-such-dir', 'dr.pid')};`);
  fs.writeFileSync(conf, text);
  const r = spawnSync(BINARY, ['-c', conf, '-M', MODULES_DIR], { encoding: 'utf8', timeout: 20000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /cannot write pid file ".*no-such-dir\/dr\.pid": No such file or directory/);
  // Under ASan, a loop left open with its listener in it is a leak report.
  assert.doesNotMatch(r.stderr, /Sanitizer|master started/, 'no leak report, no worker started');
});

test('an invalid configuration is refused with FILE:LINE; the running one keeps serving', { timeout: 30000 }, async (t, ctx) => {
  const dir = tmpDir();
  const port = await freePort();
  const srv = await opsServer({ dir, ports: [port], greeting: 'before' });
  ctx.defer(() => srv.stop());
  const clients = await crowd(srv, 12);
  ctx.defer(() => clients.forEach((c) => c.close()));
  const workers = srv.workerPids().sort();

  // 1. A directive the daemon does not know.
  const conf = opsConf(dir, { ports: [port], greeting: 'after', extra: ['probe_greting "typo";'] });
  const line = fs.readFileSync(conf, 'utf8').split('\n').findIndex((l) => l.includes('probe_greting')) + 1;
  const log = await reload(srv, 'failed');
  assert.ok(log.some((l) => l.includes(`${conf}:${line}:`) && l.includes('probe_greting')),
    `no "${conf}:${line}: ... probe_greting" in:\n${log.join('\n')}`);
  let m = await scrape(port);
  assert.equal(m.get('depth_realtime_reloads_total{result="failed"}'), 1);
  assert.equal(m.get('depth_realtime_last_reload_success'), 0);
  const s1 = ctx.socket(srv, '/');
  const hello1 = once(s1, 'probe:hello');
  await connected(s1);
  assert.deepEqual(await hello1, ['before'], 'the refused configuration was applied');
  await echoAll(clients, 'after-invalid');

  // 2. A valid file whose new listen address cannot be bound.
  const blocker = net.createServer();
  await new Promise((r) => blocker.listen(0, '127.0.0.1', r));
  ctx.defer(() => blocker.close());
  opsConf(dir, { ports: [port, blocker.address().port], greeting: 'after' });
  const log2 = await reload(srv, 'failed');
  assert.ok(log2.some((l) => /cannot listen|address already in use/i.test(l)), log2.join('\n'));
  m = await scrape(port);
  assert.equal(m.get('depth_realtime_reloads_total{result="failed"}'), 2);
  // the running listener still accepts new clients
  const s2 = ctx.socket(srv, '/', { transports: ['polling'] });
  const hello2 = once(s2, 'probe:hello');
  await connected(s2);
  assert.deepEqual(await hello2, ['before']);
  await echoAll(clients, 'after-busy');
  assert.deepEqual(srv.workerPids().sort(), workers);
  assert.equal(disconnectCount(clients), 0);

  // 3. Fixed: the next reload applies in place and the result flips back.
  opsConf(dir, { ports: [port], greeting: 'after' });
  await reload(srv, 'in place');
  const s3 = ctx.socket(srv, '/');
  const hello3 = once(s3, 'probe:hello');
  await connected(s3);
  assert.deepEqual(await hello3, ['after']);
  m = await scrape(port);
  assert.equal(m.get('depth_realtime_reloads_total{result="ok"}'), 1);
  assert.equal(m.get('depth_realtime_reloads_total{result="failed"}'), 2);
  assert.equal(m.get('depth_realtime_last_reload_success'), 1);
  assert.equal(disconnectCount(clients), 0);
});

// ---------------------------------------------------------- a killed worker

test('kill -9 of a worker: the master respawns it, its clients reconnect, the restart is counted', { timeout: 30000 }, async (t, ctx) => {
  const srv = await opsServer({});
  ctx.defer(() => srv.stop());
  const clients = await crowd(srv, 60);
  ctx.defer(() => clients.forEach((c) => c.close()));
  // Not in the middle of an upgrade: socket.io-client stays stuck (until its heartbeat
  // times out) when the WebSocket probe dies after the long-poll was paused.
  await waitFor(() => clients.every((c) => c.s.io.engine.transport.name === c.transports.at(-1)), { what: 'upgrades' });
  const workers = srv.workerPids();
  const wsClients = clients.filter((c) => c.s.io.engine.transport.name === 'websocket');
  const where = new Map();
  for (const c of wsClients) where.set(c, await workerOf(srv, c.s));
  const victim = where.get(wsClients[0]);
  const survivor = workers.find((p) => p !== victim);
  const onVictim = wsClients.filter((c) => where.get(c) === victim);
  const onSurvivor = wsClients.filter((c) => where.get(c) === survivor);
  assert.ok(onVictim.length > 5 && onSurvivor.length > 5, `${onVictim.length} / ${onSurvivor.length} WebSocket clients per worker`);

  const from = srv.logs.length;
  process.kill(victim, 'SIGKILL');
  const replacement = await waitFor(() => {
    const w = srv.workerPids();
    return w.length === 2 && !w.includes(victim) ? w.find((p) => p !== survivor) : null;
  }, { ms: 10000, what: 'a new worker pid' });
  // (the log line may reach us after the new process shows up)
  await waitFor(() => srv.logs.slice(from).some((l) => /respawning worker \d/.test(l)), { ms: 3000, what: '"respawning worker" in the log' });
  assert.ok(isAlive(survivor) && srv.workerPids().includes(survivor), 'the other worker was restarted too');
  await waitFor(() => onVictim.every((c) => c.disconnects.length === 1 && c.s.connected),
    { ms: 10000, what: "the killed worker's clients to reconnect" });
  for (const c of onSurvivor) assert.equal(c.disconnects.length, 0, `client ${c.i} on the surviving worker was disconnected`);
  await waitFor(() => clients.every((c) => c.s.connected), { ms: 10000, what: 'every client connected' });
  await echoAll(clients, 'after-kill');
  // the reconnected clients are served by live workers; new ones reach the new worker too
  for (const c of onVictim) assert.ok([replacement, survivor].includes(await workerOf(srv, c.s)));
  let onReplacement = null;
  for (let i = 0; i < 10 && !onReplacement; i++) {
    const s = await ctx.connect(srv, '/', { userId: `late${i}` });
    if (await workerOf(srv, s) === replacement) onReplacement = s;
  }
  assert.ok(onReplacement, 'no new connection reaches the respawned worker');
  assert.deepEqual(await ackAll(onReplacement, 'bench:echo', 'new worker'), ['new worker']);
  const m = await scrape(srv.port);
  assert.equal(m.get('depth_realtime_worker_restarts_total'), 1);
  assert.equal(srv.exitInfo, null, 'the master exited');
});

test('after kill -9 of a worker, the gauges count only the clients still connected', { timeout: 30000 }, async (t, ctx) => {
  const srv = await opsServer({});
  ctx.defer(() => srv.stop());
  const ws = [];
  for (let i = 0; i < 10; i++) ws.push(await ctx.connect(srv, '/chat', { userId: `g${i}` }));
  const owner = new Map();
  for (const s of ws) owner.set(s, await workerOf(srv, s));
  const victim = owner.get(ws[0]);
  const gone = ws.filter((s) => owner.get(s) === victim);
  await metricBecomes(srv.port, 'websocket_namespace_sockets{namespace="/chat"}', 10);
  await metricBecomes(srv.port, 'websocket_connected_clients', 10);  // clients on /chat only: not 0
  await metricBecomes(srv.port, 'depth_realtime_engine_sessions{transport="websocket"}', 10);
  const closed = gone.map((s) => once(s, 'disconnect', 5000));
  process.kill(victim, 'SIGKILL');
  await Promise.all(closed);
  await waitFor(() => srv.workerPids().length === 2 && !srv.workerPids().includes(victim), { ms: 10000, what: 'respawn' });
  const left = 10 - gone.length;
  await metricBecomes(srv.port, 'websocket_namespace_sockets{namespace="/chat"}', left);
  await metricBecomes(srv.port, 'websocket_connected_clients', left);
  await metricBecomes(srv.port, 'depth_realtime_engine_sessions{transport="websocket"}', left);
});

// ------------------------------------------------------------ graceful QUIT

// Quiet: the clients are idle (nothing in flight but each long-poll GET).
// Busy: every client keeps emitting acked messages while the server drains.
for (const busy of [false, true]) {
  test(`QUIT with ${busy ? 'clients sending' : 'idle clients'}: each is told to reconnect ("transport close") and ` +
    'reconnects to the server that took over the port; the master exits 0', { timeout: 30000 }, async (t, ctx) => {
    const port = await freePort();
    const a = await opsServer({
      ports: [port], greeting: 'from A', extraMain: 'worker_shutdown_spread 500ms;\nworker_shutdown_timeout 5s;',
    });
    ctx.defer(() => a.stop());
    const clients = await crowd(a, 30);
    ctx.defer(() => clients.forEach((c) => c.close()));
    await echoAll(clients, 'on-A');
    await waitFor(() => clients.every((c) => c.s.io.engine.transport.name === c.transports.at(-1)), { what: 'upgrades' });
    let stop = false;
    const wrong = [];
    const pumps = !busy ? [] : clients.map(async (c) => {
      for (let n = 0; !stop; n++) {
        if (!c.s.connected) { await sleep(20); continue; }
        const reply = await c.s.timeout(3000).emitWithAck('bench:echo', { u: c.i, n }).catch(() => null);
        if (reply && (reply.u !== c.i || reply.n !== n)) wrong.push([c.i, n, reply]);
        await sleep(30);
      }
    });
    // busy: let the traffic flow; idle: let the long-polls that followed the last answers arrive
    await sleep(300);
    const workersA = a.workerPids();
    const from = a.logs.length;
    process.kill(a.pid, 'SIGQUIT');
    await waitFor(() => a.logs.slice(from).some((l) => /graceful shutdown/.test(l)), { ms: 5000, what: '"graceful shutdown"' });
    // A has closed its listeners at once: B can take the port while A drains.
    const b = await waitFor(() => opsServer({ ports: [port], greeting: 'from B' }).catch(() => null),
      { ms: 5000, every: 50, what: 'server B to start on the same port' });
    ctx.defer(() => b.stop());
    assert.deepEqual(await withTimeout(a.exited, 10000, 'A to exit'), { code: 0, signal: null });
    for (const p of workersA) assert.equal(isAlive(p), false);
    await waitFor(() => clients.every((c) => c.s.connected && c.greetings.at(-1) === 'from B'),
      { ms: 10000, what: 'every client reconnected to B' });
    stop = true;
    await Promise.all(pumps);
    assert.deepEqual(wrong, []);
    const how = tally(clients.flatMap((c) => c.disconnects.map((d) => `${c.transports}: ${d.reason} (${d.details})`)));
    // A long-polling client that must open a new TCP connection in the moment
    // between A closing its port and B taking it meets a refused connection
    // (no server can answer it); that is the only other outcome allowed.
    const refusedInGap = (c, d) => c.transports.length === 1 && c.transports[0] === 'polling' &&
      d.reason === 'transport error' && /ECONNREFUSED/.test(d.details);
    assert.ok(clients.every((c) => c.disconnects.length === 1 &&
      (c.disconnects[0].reason === 'transport close' || (busy && refusedInGap(c, c.disconnects[0])))),
      `disconnects: ${JSON.stringify(how, null, 1)}`);
    await echoAll(clients, 'on-B');
  });
}

// ----------------------------------------------------------------- metrics

test('metrics on their own listener: per-namespace clients, events by name, bytes, messages, broadcasts, acks timed out', { timeout: 30000 }, async (t, ctx) => {
  const mport = await freePort();
  const srv = await opsServer({ extra: [`metrics_listen 127.0.0.1:${mport};`] });
  ctx.defer(() => srv.stop());

  // Health and metrics on the metrics listener, not on the main one.
  const health = await request({ port: mport }, { path: '/healthz' });
  assert.equal(health.status, 200);
  assert.deepEqual(JSON.parse(health.text), { status: 'ok' });
  assert.equal((await request(srv, { path: '/metrics' })).status, 404, '/metrics also served on the main port');
  const m0 = await scrape(mport);
  assert.match(m0.res.headers['content-type'], /^text\/plain; version=0\.0\.4/);

  // 4 WebSocket + 2 polling clients on /chat (across both workers), 3 on /.
  const chat = [];
  for (let i = 0; i < 6; i++) chat.push(await ctx.connect(srv, '/chat', { userId: `c${i}`, transports: [i < 4 ? 'websocket' : 'polling'] }));
  const root = [];
  for (let i = 0; i < 3; i++) root.push(await ctx.connect(srv, '/', { userId: `r${i}` }));
  const owners = new Set();
  for (const s of chat.slice(0, 4)) owners.add(await workerOf(srv, s));
  assert.equal(owners.size, 2, 'clients on both workers (the sums must cover both)');

  for (const s of chat) for (let k = 0; k < 5; k++) await ackAll(s, 'bench:echo', k);   // 30 handled events
  for (const s of root) { s.emit('no:handler', 1); s.emit('no:handler', 2); }           // 6 unhandled
  await ackAll(root[0], 'bench:echo', 'fence');                                          // +1 (after root[0]'s two)
  await ack(chat[0], 'probe:emit', { rooms: ['user:c1'], event: 'ping-c1', args: [] });  // a broadcast
  const ask = once(chat[1], 'probe:answer', 5000);
  chat[1].on('silent', () => {});                                                        // never answers
  chat[1].emit('probe:ask', { event: 'silent', args: [], timeoutMs: 200 });
  assert.equal((await ask)[0].timedOut, true);

  // Unhandled events are counted when they arrive; wait for the last root client's.
  await waitFor(async () => (await scrape(mport)).get('websocket_events_total{event="_other"}') === 6,
    { ms: 5000, what: '6 _other events' }).catch(async () => assert.fail(`_other: ${(await scrape(mport)).get('websocket_events_total{event="_other"}')}`));
  const m = await scrape(mport);
  const text = m.res.text;
  assert.equal(m.get('websocket_connections_total{namespace="/chat"}'), 6);
  assert.equal(m.get('websocket_connections_total{namespace="/"}'), 3);
  assert.equal(m.get('websocket_namespace_sockets{namespace="/chat"}'), 6);
  assert.equal(m.get('websocket_namespace_sockets{namespace="/"}'), 3);
  // the seed's io.engine.clientsCount: one unlabelled series, every Engine.IO client
  assert.equal(m.get('websocket_connected_clients'), 9);
  assert.ok(!/^websocket_connected_clients\{/m.test(text), 'websocket_connected_clients carries a label');
  assert.equal(m.get('websocket_events_total{event="bench:echo"}'), 31);
  assert.equal(m.get('websocket_events_total{event="probe:emit"}'), 1);
  assert.equal(m.get('websocket_events_total{event="probe:ask"}'), 1);
  assert.ok(!text.includes('no:handler'), 'an unhandled event name became a label');
  assert.equal(m.get('depth_realtime_engine_sessions{transport="websocket"}'), 7);
  assert.equal(m.get('depth_realtime_engine_sessions{transport="polling"}'), 2);
  assert.equal(m.get('depth_realtime_acks_timed_out_total'), 1);
  assert.ok(m.get('depth_realtime_broadcasts_total') >= 1);
  // at least: 9 CONNECT replies, 31 acks, the broadcast's delivery, the ask, the answer, probe:emit's and probe:ask's acks
  assert.ok(m.get('depth_realtime_messages_sent_total') >= 9 + 31 + 5, `messages_sent ${m.get('depth_realtime_messages_sent_total')}`);
  assert.ok(m.get('depth_realtime_bytes_received_total') > 1000);
  assert.ok(m.get('depth_realtime_bytes_sent_total') > 1000);
  assert.equal(m.get('depth_realtime_last_reload_success'), 1);
  assert.match(text, /# TYPE websocket_connected_clients gauge/);
  assert.match(text, /# TYPE websocket_namespace_sockets gauge/);
  assert.match(text, /# TYPE websocket_connections_total counter/);
  assert.match(text, /# TYPE websocket_events_total counter/);
  assert.match(text, /# HELP websocket_events_total \S/);
  // every sample line is `name{labels} integer`
  for (const l of text.split('\n').filter((x) => x && !x.startsWith('#'))) {
    assert.match(l, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"\})? -?\d+$/, l);
  }

  // The gauge goes down when clients leave; the counter does not.
  chat[5].disconnect();
  chat[0].disconnect();
  await metricBecomes(mport, 'websocket_namespace_sockets{namespace="/chat"}', 4);
  await metricBecomes(mport, 'websocket_connected_clients', 7);
  await metricBecomes(mport, 'depth_realtime_engine_sessions{transport="polling"}', 1);
  const m2 = await scrape(mport);
  assert.equal(m2.get('websocket_connections_total{namespace="/chat"}'), 6);
  assert.ok(m2.get('depth_realtime_bytes_sent_total') >= m.get('depth_realtime_bytes_sent_total'));

  const ready = await request({ port: mport }, { path: '/readyz' });
  assert.equal(ready.status, 200, `/readyz on the metrics listener: ${ready.status} ${ready.text}`);
});

// --------------------------------------------------------------- event log

test('event log: one JSON line per client event; USR1 reopens it after a rename; a reload switches to sampling', { timeout: 30000 }, async (t, ctx) => {
  const dir = tmpDir();
  const port = await freePort();
  const logPath = path.join(dir, 'events.log');
  const main = `event_log ${logPath} all;`;
  const srv = await opsServer({ dir, ports: [port], extraMain: main });
  ctx.defer(() => srv.stop());
  // one client on each worker
  const byWorker = new Map();
  const userOf = new Map();
  for (let i = 0; i < 20 && byWorker.size < 2; i++) {
    const nsp = byWorker.size ? '/chat' : '/';
    const s = await ctx.connect(srv, nsp, { userId: `ev${i}` });
    userOf.set(s, `ev${i}`);
    const w = await workerOf(srv, s);
    if (!byWorker.has(w)) byWorker.set(w, s);
  }
  assert.equal(byWorker.size, 2);
  const [a, b] = [...byWorker.values()];
  assert.deepEqual([a.nsp, b.nsp], ['/', '/chat']);
  const lines = (file) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '').split('\n').filter(Boolean).map((l) => JSON.parse(l));

  const t0 = Date.now();
  await ackAll(a, 'bench:echo', 1);
  await ackAll(b, 'bench:echo', 2);
  b.emit('some:thing', { x: 1 });                    // no handler: logged all the same
  await ackAll(b, 'bench:echo', 3);
  const got = lines(logPath);
  assert.equal(got.length, 4, JSON.stringify(got));
  const t1 = Date.now();
  for (const l of got) {
    assert.deepEqual(Object.keys(l).sort(), ['event', 'ip', 'namespace', 'socket', 'time', 'userId']);
    assert.match(l.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const ms = Date.parse(l.time);
    assert.ok(ms >= t0 - 1000 && ms <= t1 + 1000, `time ${l.time} not now`);
    assert.equal(l.ip, '127.0.0.1');
  }
  const ofA = got.filter((l) => l.socket === a.id);
  const ofB = got.filter((l) => l.socket === b.id);
  assert.deepEqual(ofA.map((l) => [l.event, l.namespace, l.userId]), [['bench:echo', '/', userOf.get(a)]]);
  assert.deepEqual(ofB.map((l) => [l.event, l.namespace, l.userId]),
    [['bench:echo', '/chat', userOf.get(b)], ['some:thing', '/chat', userOf.get(b)], ['bench:echo', '/chat', userOf.get(b)]]);

  // logrotate: rename, USR1 to the master, new lines go to a new file at the same path.
  const rotated = `${logPath}.1`;
  fs.renameSync(logPath, rotated);
  const before = lines(rotated).length;
  process.kill(srv.pid, 'SIGUSR1');
  // Each worker reopens when the master passes the signal on: emit until both write to the new file.
  let k = 0;
  await waitFor(async () => {
    await Promise.all([ackAll(a, 'bench:echo', `r${k}`), ackAll(b, 'bench:echo', `r${k}`)]);
    k++;
    const now = lines(logPath);
    return now.some((l) => l.socket === a.id) && now.some((l) => l.socket === b.id);
  }, { ms: 5000, every: 20, what: 'both workers to write to the reopened log' });
  const oldCount = lines(rotated).length;
  for (let i = 0; i < 10; i++) await Promise.all([ackAll(a, 'bench:echo', i), ackAll(b, 'bench:echo', i)]);
  assert.equal(lines(rotated).length, oldCount, 'lines still written to the rotated file');
  assert.equal(lines(rotated).length + lines(logPath).length, before + 2 * k + 20, 'a line was lost or doubled');

  // A reload in place switches the event log to sampling 1 in 4.
  opsConf(dir, { ports: [port], extraMain: `event_log ${logPath} sample=0.25;` });
  await reload(srv, 'in place');
  const start = lines(logPath).length;
  await Promise.all([a, b].map(async (s) => { for (let i = 0; i < 200; i++) await ackAll(s, 'bench:echo', i); }));
  const sampled = lines(logPath).length - start;
  assert.ok(sampled >= 60 && sampled <= 140, `${sampled} of 400 events logged with sample=0.25`);
});
