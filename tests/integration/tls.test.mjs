// TLS in the daemon (issue 5): wss:// and https:// long-polling and the upgrade
// with the official client, certificate checks by -t, and a new certificate
// taken by a SIGHUP reload without disconnecting anyone.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { after, before } from 'node:test';
import {
  test, startServer, writeConf, testConfig, tmpDir, freePort, token, connected, ackAll, once, waitFor, io,
  Inbox, ALLOWED_ORIGINS, SECRET,
} from './lib/harness.mjs';

// A self-signed certificate and its key in `dir`: {cert, key, fingerprint256}.
function makeCert(dir, name) {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '2',
    '-keyout', key, '-out', cert], { stdio: 'pipe' });
  return { cert, key, fingerprint256: new crypto.X509Certificate(fs.readFileSync(cert)).fingerprint256 };
}

// Main listener in plain HTTP (the harness checks /healthz there), a second one
// in TLS, and a TLS metrics listener.
function tlsConf(dir, { port, tlsPort, metricsPort, cert, key }) {
  return writeConf(dir, {
    port,
    serverBlock: [
      `    listen 127.0.0.1:${port};`,
      `    listen 127.0.0.1:${tlsPort} ssl;`,
      `    metrics_listen 127.0.0.1:${metricsPort} ssl;`,
      `    ssl_certificate ${cert};`,
      `    ssl_certificate_key ${key};`,
      `    cors_origins ${ALLOWED_ORIGINS.join(' ')};`,
      `    auth_jwt_secret ${SECRET};`,
      '    namespace /;',
      '    namespace /chat;',
      '    probe_greeting "over tls";',
    ].join('\n'),
  });
}

// The certificate a new TLS connection is given, and the protocol agreed.
function peer(port, opts = {}) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts }, () => {
      const res = { fingerprint256: s.getPeerCertificate().fingerprint256, protocol: s.getProtocol() };
      s.destroy();
      resolve(res);
    });
    s.on('error', reject);
  });
}

function httpsGet(port, p) {
  return new Promise((resolve, reject) => {
    https.get({ host: '127.0.0.1', port, path: p, rejectUnauthorized: false, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

// SIGHUP; waits for the master's verdict and, when applied in place, for every worker.
async function reload(srv, expect, { workers = 2 } = {}) {
  const from = srv.logs.length;
  const since = () => srv.logs.slice(from);
  process.kill(srv.pid, 'SIGHUP');
  const outcome = await waitFor(() => {
    const l = since();
    if (l.some((x) => /configuration reloaded in place/.test(x))) return 'in place';
    if (l.some((x) => /configuration reloaded \(generation/.test(x))) return 'restart';
    if (l.some((x) => /reload failed, keeping the running configuration/.test(x))) return 'failed';
    return null;
  }, { ms: 10000, what: 'the outcome of the reload' });
  assert.equal(outcome, expect, since().join('\n'));
  if (expect === 'in place') {
    await waitFor(() => since().filter((x) => /configuration applied in place/.test(x)).length >= workers,
      { ms: 10000, what: 'every worker to apply the configuration' });
  }
  return since();
}

let dir;
let srv;
let tlsPort;
let metricsPort;
let certA;
let certB;
let liveCert;   // the files named in the conf: certA's, then overwritten with certB's

before(async () => {
  dir = tmpDir('dr-tls-');
  certA = makeCert(dir, 'a');
  certB = makeCert(dir, 'b');
  liveCert = { cert: path.join(dir, 'live.crt'), key: path.join(dir, 'live.key') };
  fs.copyFileSync(certA.cert, liveCert.cert);
  fs.copyFileSync(certA.key, liveCert.key);
  const port = await freePort();
  tlsPort = await freePort();
  metricsPort = await freePort();
  const conf = tlsConf(dir, { port, tlsPort, metricsPort, ...liveCert });
  srv = await startServer({ dir, conf, port, workers: 2 });
});
after(() => srv?.stop());

const tlsUrl = () => `https://127.0.0.1:${tlsPort}`;

// An official client over TLS (self-signed certificate: not verified).
function tlsClient(ctx, nsp, transports, userId = 'tls-user') {
  return ctx.track(io(`${tlsUrl()}${nsp}`, {
    transports, forceNew: true, reconnection: false, timeout: 5000, rejectUnauthorized: false,
    auth: { token: token(userId) },
  }));
}

const blob = (n) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7) & 0xff));

for (const [label, transports] of [['wss:// (WebSocket only)', ['websocket']], ['https:// long-polling only', ['polling']]]) {
  test(`${label}: connect, greeting, acks with text and binary, server events`, async (t, ctx) => {
    const s = tlsClient(ctx, '/chat', transports, `u-${transports[0]}`);
    const hello = once(s, 'probe:hello');
    await connected(s);
    assert.equal(s.io.engine.transport.name, transports[0]);
    assert.deepEqual(await hello, ['over tls']);
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => ackAll(s, 'bench:echo', i, `n${i}`)));
    replies.forEach((r, i) => assert.deepEqual(r, [i, `n${i}`]));
    // larger than one TLS record (16 KB), binary and a compressible text
    const big = blob(100 * 1024);
    const [back] = await ackAll(s, 'bench:echo', big);
    assert.ok(Buffer.from(back).equals(big));
    const text = 'x'.repeat(200 * 1024);
    assert.deepEqual(await ackAll(s, 'bench:echo', text), [text]);
    const inbox = new Inbox(s, ['to-me']);
    await ackAll(s, 'probe:emit', { rooms: [s.id], event: 'to-me', args: [1, { two: 2 }] });
    assert.deepEqual(await inbox.wait('to-me'), [1, { two: 2 }]);
  });
}

test('https:// polling, then the upgrade to wss://', async (t, ctx) => {
  const s = tlsClient(ctx, '/', ['polling', 'websocket']);
  await connected(s);
  if (s.io.engine.transport.name !== 'websocket') await once(s.io.engine, 'upgrade');
  assert.equal(s.io.engine.transport.name, 'websocket');
  assert.deepEqual(await ackAll(s, 'bench:echo', 'upgraded'), ['upgraded']);
});

test('TLS and plain clients share rooms; 30 TLS clients at once', async (t, ctx) => {
  const plain = ctx.track(io(`${srv.url}/`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: token('plain') } }));
  await connected(plain);
  const many = Array.from({ length: 30 }, (_, i) => tlsClient(ctx, '/', [['websocket'], ['polling'], ['polling', 'websocket']][i % 3], `many${i}`));
  await Promise.all(many.map((s) => connected(s)));
  await Promise.all(many.map((s) => ackAll(s, 'probe:join', { room: 'mixed' })));
  const inboxes = many.map((s) => new Inbox(s, ['hello-all']));
  await ackAll(plain, 'probe:emit', { rooms: ['mixed'], event: 'hello-all', args: ['from plain'] });
  await Promise.all(inboxes.map((ib) => ib.wait('hello-all')));
  await Promise.all(many.map((s, i) => ackAll(s, 'bench:echo', i).then((r) => assert.deepEqual(r, [i]))));
});

test('the certificate served, TLS 1.2 and 1.3, plain HTTP on the TLS port refused, metrics over https', async () => {
  const p13 = await peer(tlsPort);
  assert.equal(p13.fingerprint256, certA.fingerprint256);
  assert.equal(p13.protocol, 'TLSv1.3');
  assert.equal((await peer(tlsPort, { maxVersion: 'TLSv1.2' })).protocol, 'TLSv1.2');
  // plain HTTP to the TLS listener gets no HTTP answer, and harms nobody
  const r = await new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: tlsPort, path: '/healthz', agent: false, timeout: 3000 },
      (res) => resolve({ status: res.statusCode }));
    req.on('error', (e) => resolve({ error: e.code ?? e.message }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
  assert.ok(r.error || r.status >= 400, `plain HTTP on the TLS port: ${JSON.stringify(r)}`);
  const m = await httpsGet(metricsPort, '/metrics');
  assert.equal(m.status, 200);
  assert.match(m.body, /^websocket_connections_total\{namespace="\/chat"\} \d+$/m);
  assert.equal((await httpsGet(metricsPort, '/healthz')).status, 200);
});

test('-t refuses a missing certificate, a missing key and a key that does not match, naming the file', async () => {
  const d = tmpDir('dr-tls-t-');
  const base = { port: await freePort(), tlsPort: await freePort(), metricsPort: await freePort() };
  const cases = [
    [{ cert: path.join(d, 'nope.crt'), key: certA.key }, 'nope.crt', /no such file/i, 'ssl_certificate '],
    [{ cert: certA.cert, key: path.join(d, 'nope.key') }, 'nope.key', /no such file/i, 'ssl_certificate_key '],
    [{ cert: certA.cert, key: certB.key }, 'b.key', /mismatch|match/i, 'ssl_certificate_key '],
  ];
  for (const [files, name, why, directive] of cases) {
    const conf = tlsConf(d, { ...base, ...files });
    const r = testConfig(conf);
    assert.notEqual(r.code, 0, `-t accepted ${JSON.stringify(files)}`);
    // file:line of the directive at fault
    const line = fs.readFileSync(conf, 'utf8').split('\n').findIndex((l) => l.trim().startsWith(directive)) + 1;
    assert.ok(r.stderr.includes(`${conf}:${line}:`), `the message does not name ${conf}:${line}: ${r.stderr}`);
    assert.ok(r.stderr.includes(name), `the message does not name ${name}: ${r.stderr}`);
    assert.match(r.stderr, why);
  }
  assert.equal(testConfig(tlsConf(d, { ...base, cert: certB.cert, key: certB.key })).code, 0);
});

test('a reload re-reads the certificate: new connections get the new one, open ones stay; a bad one is refused', async (t, ctx) => {
  const ws = tlsClient(ctx, '/', ['websocket'], 'stays-ws');
  const poll = tlsClient(ctx, '/', ['polling'], 'stays-polling');
  await Promise.all([connected(ws), connected(poll)]);
  let drops = 0;
  for (const s of [ws, poll]) s.on('disconnect', () => { drops++; });
  assert.equal((await peer(tlsPort)).fingerprint256, certA.fingerprint256);

  // Renewal: same paths, new files.
  fs.copyFileSync(certB.cert, liveCert.cert);
  fs.copyFileSync(certB.key, liveCert.key);
  await reload(srv, 'in place');
  assert.equal((await peer(tlsPort)).fingerprint256, certB.fingerprint256, 'new connections still get the old certificate');
  assert.equal((await peer(metricsPort)).fingerprint256, certB.fingerprint256, 'the metrics listener kept the old certificate');
  for (const s of [ws, poll]) assert.deepEqual(await ackAll(s, 'bench:echo', 'after renewal'), ['after renewal']);
  const fresh = tlsClient(ctx, '/', ['polling', 'websocket'], 'fresh');
  await connected(fresh);
  assert.deepEqual(await ackAll(fresh, 'bench:echo', 'fresh'), ['fresh']);

  // A reload naming a missing key is refused; the running certificate stays.
  tlsConf(dir, { port: srv.port, tlsPort, metricsPort, cert: liveCert.cert, key: path.join(dir, 'gone.key') });
  const log = await reload(srv, 'failed');
  assert.ok(log.some((l) => l.includes('gone.key')), log.join('\n'));
  assert.equal((await peer(tlsPort)).fingerprint256, certB.fingerprint256);
  tlsConf(dir, { port: srv.port, tlsPort, metricsPort, ...liveCert });
  for (const s of [ws, poll]) assert.deepEqual(await ackAll(s, 'bench:echo', 'still here'), ['still here']);
  assert.equal(drops, 0, 'a TLS client was disconnected by a reload');
});
