// Black-box harness for the integration tests: writes a configuration, runs the
// real daemon (master + workers), and talks to it with the official
// socket.io-client, with `ws`, and with raw HTTP / TCP.
//
// Environment (set by tests/CMakeLists.txt):
//   DR_BINARY     the depth-realtime executable
//   DR_MODULES    directory holding auth_jwt.so and bench.so (-M)
//   DR_BUILD_DIR  the CMake build tree (cmake --install source, probe cache)
//   DR_SOURCE_DIR the source tree (tests/modules/probe/probe.cc)
//   DR_KEEP_TMP=1 keep temporary directories; DR_TEST_VERBOSE=1 always print server logs

import { spawn, execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test as nodeTest } from 'node:test';
import { io, Manager } from 'socket.io-client';
import WebSocket from 'ws';

export { io, Manager, WebSocket };

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const SOURCE_DIR = process.env.DR_SOURCE_DIR || path.resolve(HERE, '../../..');
export const BUILD_DIR = process.env.DR_BUILD_DIR || path.join(SOURCE_DIR, 'build');
export const BINARY = process.env.DR_BINARY || path.join(BUILD_DIR, 'depth-realtime');
export const MODULES_DIR = process.env.DR_MODULES || path.join(BUILD_DIR, 'modules');

export const SECRET = 'integration-test-secret';
export const GREETING = 'hi there';
export const ALLOWED_ORIGINS = ['http://localhost:3000', 'http://example.com'];

const VERBOSE = process.env.DR_TEST_VERBOSE === '1';

// ------------------------------------------------------------------ basics

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Rejects with `what` if `promise` has not settled within `ms`.
export function withTimeout(promise, ms, what = 'operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Polls `fn` until it returns a truthy value (returned) or `ms` passes (throws).
export async function waitFor(fn, { ms = 5000, every = 25, what = 'condition' } = {}) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await sleep(every);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const tmpDirs = [];
export function tmpDir(prefix = 'dr-it-') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
}

// --------------------------------------------------------------------- JWT

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// makeJwt({userId: 'alice', role: 'admin'}, {expiresIn: 3600})
// options: secret, alg (header alg: HS256/HS384/HS512/none/RS256...), signAlg (HMAC
// used to sign, default from alg), expiresIn / notBeforeIn (seconds from now; negative
// allowed), iat, header (extra header fields), signature (override text),
// noExp (omit exp).
export function makeJwt(claims = {}, opts = {}) {
  const alg = opts.alg ?? 'HS256';
  const header = { alg, typ: 'JWT', ...(opts.header || {}) };
  const now = Math.floor(Date.now() / 1000);
  const payload = { iat: opts.iat ?? now, ...claims };
  if (!opts.noExp && !('exp' in claims)) payload.exp = now + (opts.expiresIn ?? 3600);
  if (opts.notBeforeIn !== undefined) payload.nbf = now + opts.notBeforeIn;
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  if (opts.signature !== undefined) return `${signingInput}.${opts.signature}`;
  if (alg === 'none' && !opts.signAlg) return `${signingInput}.`;
  const signAlg = opts.signAlg ?? alg;
  const bits = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[signAlg] ?? 'sha256';
  const sig = crypto.createHmac(bits, opts.secret ?? SECRET).update(signingInput).digest();
  return `${signingInput}.${b64url(sig)}`;
}

export const token = (userId = 'alice', extra = {}, opts = {}) => makeJwt({ userId, ...extra }, opts);

// ------------------------------------------------------------- processes

// Every process we started, so that nothing survives the test run.
const livePids = new Set();
const liveServers = new Set();

function killEverything() {
  for (const srv of liveServers) {
    for (const pid of [srv.pid, ...(srv._knownWorkers || [])]) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
  for (const pid of livePids) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  if (process.env.DR_KEEP_TMP !== '1') {
    for (const d of tmpDirs) {
      try { fs.rmSync(d, { recursive: true, force: true }); } catch { /* ignore */ }
    }
  }
}
process.on('exit', killEverything);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { killEverything(); process.exit(128 + os.constants.signals[sig]); });
}

// Direct children of `pid` (Linux /proc).
export function childPids(pid) {
  const out = [];
  try {
    const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
    if (kids) return kids.split(/\s+/).map(Number);
    return [];
  } catch { /* fall back to a scan */ }
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(d));
    } catch { /* raced */ }
  }
  return out;
}

export function isAlive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

// Which process (master or a worker) holds the server side of the TCP
// connection whose client end is 127.0.0.1:`clientPort`. null if none found.
export function connectionOwner(srv, clientPort) {
  const inodes = new Set();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text;
    try { text = fs.readFileSync(file, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const lport = parseInt(f[1].split(':')[1], 16);
      const rport = parseInt(f[2].split(':')[1], 16);
      if (lport === srv.port && rport === clientPort) inodes.add(f[9]);
    }
  }
  if (inodes.size === 0) return null;
  for (const pid of [...srv.workerPids(), srv.pid]) {
    let fds;
    try { fds = fs.readdirSync(`/proc/${pid}/fd`); } catch { continue; }
    for (const fd of fds) {
      try {
        const link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
        const m = /^socket:\[(\d+)\]$/.exec(link);
        if (m && inodes.has(m[1])) return pid;
      } catch { /* closed meanwhile */ }
    }
  }
  return null;
}

// Local (client-side) TCP port of an official client's WebSocket transport.
export function clientWsPort(socket) {
  const t = socket.io.engine?.transport;
  const raw = t?.ws?._socket;
  return raw?.localPort ?? null;
}

// The worker pid serving an official client connected over WebSocket.
export async function workerOf(srv, socket) {
  const port = clientWsPort(socket);
  if (!port) throw new Error('client has no WebSocket transport (cannot locate its worker)');
  return waitFor(() => {
    const owner = connectionOwner(srv, port);
    return owner && owner !== srv.pid ? owner : null;
  }, { ms: 3000, what: `a worker owning client port ${port}` });
}

// ----------------------------------------------------------- probe module

function mtimeKey(files) {
  return files.map((f) => `${path.relative(SOURCE_DIR, f)}@${fs.statSync(f).mtimeMs}`).join('|');
}

function publicHeaders() {
  const dir = path.join(SOURCE_DIR, 'include', 'depth-realtime');
  return fs.readdirSync(dir).sort().map((f) => path.join(dir, f));
}

export const PROBE_SOURCE = path.join(SOURCE_DIR, 'tests', 'modules', 'probe', 'probe.cc');

// Builds tests/modules/probe/probe.cc out of tree, against the headers that
// `cmake --install` puts in a temporary prefix and nothing else.
//   {fresh: true}  build into a new temp dir, ignoring the cache
// Returns {so, includeDir, prefix, deps: [header paths the compiler read], cached}.
export function buildProbe({ fresh = false } = {}) {
  if (!fs.existsSync(PROBE_SOURCE)) throw new Error(`probe module source missing: ${PROBE_SOURCE}`);
  // The build's layout-changing flags (ASan), so that the probe's module
  // signature matches the daemon's (tests/CMakeLists.txt sets them).
  const extraFlags = (process.env.DR_MODULE_CXXFLAGS ?? '').split(/\s+/).filter(Boolean);
  const key = `${mtimeKey([PROBE_SOURCE, ...publicHeaders()])}|${extraFlags.join(' ')}`;
  const cacheDir = path.join(BUILD_DIR, 'probe-module');
  const cacheSo = path.join(cacheDir, 'probe.so');
  const cacheMeta = path.join(cacheDir, 'probe.json');
  if (!fresh) {
    try {
      const meta = JSON.parse(fs.readFileSync(cacheMeta, 'utf8'));
      if (meta.key === key && fs.existsSync(cacheSo)) return { ...meta, so: cacheSo, cached: true };
    } catch { /* build it */ }
  }

  const work = tmpDir('dr-probe-');
  const prefix = path.join(work, 'prefix');
  // DESTDIR keeps absolute install destinations (the module dir) inside the
  // temp dir too; the headers land in <stage><prefix>/include.
  const stage = path.join(work, 'stage');
  const inst = spawnSync('cmake', ['--install', BUILD_DIR, '--prefix', prefix], {
    env: { ...process.env, DESTDIR: stage }, encoding: 'utf8', timeout: 120000,
  });
  if (inst.status !== 0) throw new Error(`cmake --install ${BUILD_DIR} failed (${inst.error?.message ?? `exit ${inst.status}`}):\n${inst.stdout}\n${inst.stderr}`);
  const includeDir = path.join(stage + prefix, 'include');
  for (const h of ['module.h', 'json.h']) {
    if (!fs.existsSync(path.join(includeDir, 'depth-realtime', h))) {
      throw new Error(`cmake --install did not install include/depth-realtime/${h} under ${includeDir}`);
    }
  }
  const pc = spawnSync('pkg-config', ['--cflags', 'jansson', 'libuv'], { encoding: 'utf8' });
  if (pc.status !== 0) throw new Error(`pkg-config failed: ${pc.stderr}`);
  const out = path.join(work, 'probe.so');
  const depFile = path.join(work, 'probe.d');
  const args = ['-std=c++20', '-shared', '-fPIC', ...extraFlags, `-I${includeDir}`,
    ...pc.stdout.trim().split(/\s+/).filter(Boolean),
    '-MD', '-MF', depFile, PROBE_SOURCE, '-o', out];
  const cc = spawnSync('g++', args, { encoding: 'utf8', cwd: work, timeout: 180000 });
  if (cc.status !== 0) throw new Error(`g++ ${args.join(' ')} failed (${cc.error?.message ?? `exit ${cc.status}`}):\n${cc.stderr}`);
  const deps = fs.readFileSync(depFile, 'utf8').replace(/\\\n/g, ' ').split(':').slice(1).join(':')
    .trim().split(/\s+/).filter((p) => p && p !== PROBE_SOURCE).map((p) => path.resolve(work, p));
  const meta = { key, includeDir, prefix, deps, compile: ['g++', ...args].join(' ') };
  if (fresh) return { ...meta, so: out, cached: false };

  fs.mkdirSync(cacheDir, { recursive: true });
  const tmpSo = `${cacheSo}.${process.pid}.tmp`;
  fs.copyFileSync(out, tmpSo);
  fs.renameSync(tmpSo, cacheSo);
  fs.writeFileSync(`${cacheMeta}.${process.pid}.tmp`, JSON.stringify(meta));
  fs.renameSync(`${cacheMeta}.${process.pid}.tmp`, cacheMeta);
  return { ...meta, so: cacheSo, cached: false };
}

let probeMemo = null;
export function probeSo() {
  if (!probeMemo) probeMemo = buildProbe().so;
  return probeMemo;
}

// ------------------------------------------------------------------ server

// The server block every test starts from; `extraServer` lines are appended.
export function defaultServerBlock({ port, probe = true, secret = SECRET, extraServer = '' }) {
  return [
    `    listen 127.0.0.1:${port};`,
    '    path /socket.io/;',
    `    cors_origins ${ALLOWED_ORIGINS.join(' ')};`,
    secret ? `    auth_jwt_secret ${secret};` : '',
    '    namespace /;',
    '    namespace /chat;',
    '    namespace /admin { auth_jwt_require_role admin; }',
    probe ? `    probe_greeting "${GREETING}";` : '',
    extraServer ? extraServer.split('\n').map((l) => `    ${l.trim()}`).join('\n') : '',
  ].filter(Boolean).join('\n');
}

export function writeConf(dir, {
  port, workers = 2, extraMain = '', extraServer = '', probe = true, secret = SECRET,
  modules = ['auth_jwt.so', 'bench.so'], serverBlock,
}) {
  const lines = [
    `worker_processes ${workers};`,
    'error_log stderr info;',
    `pid ${path.join(dir, 'dr.pid')};`,
    ...modules.map((m) => `load_module ${m};`),
  ];
  if (probe) lines.push(`load_module ${typeof probe === 'string' ? probe : probeSo()};`);
  if (extraMain) lines.push(extraMain);
  lines.push('server {', serverBlock ?? defaultServerBlock({ port, probe, secret, extraServer }), '}', '');
  const file = path.join(dir, 'depth-realtime.conf');
  fs.writeFileSync(file, lines.join('\n'));
  return file;
}

// Runs `DR_BINARY -t -c conf -M modules`; resolves {code, stdout, stderr}.
export function testConfig(confPath, { env = {}, modulesDir = MODULES_DIR, timeoutMs = 10000 } = {}) {
  const r = spawnSync(BINARY, ['-t', '-c', confPath, '-M', modulesDir], {
    env: { ...process.env, ...env }, encoding: 'utf8', timeout: timeoutMs,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, error: r.error };
}

function httpGetOnce(port, pathname, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// Starts the daemon with a generated configuration and waits for /healthz.
//   {workers=2, extraServer, extraMain, modules, probe=true, secret, env, conf (path:
//    use this file instead of generating one), port, healthPort (where /healthz is
//    served, if not on `port`), t (a test context: stop in t.after)}
export async function startServer(opts = {}) {
  const dir = opts.dir ?? tmpDir();
  const port = opts.port ?? await freePort();
  const confPath = opts.conf ?? writeConf(dir, { ...opts, port });
  const logs = [];
  const t0 = Date.now();
  const child = spawn(BINARY, ['-c', confPath, '-M', opts.modulesDir ?? MODULES_DIR], {
    env: { ...process.env, ...(opts.env || {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  livePids.add(child.pid);
  const onData = (stream) => (chunk) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line) logs.push(`[+${String(Date.now() - t0).padStart(6)}ms ${stream}] ${line}`);
    }
  };
  child.stdout.on('data', onData('out'));
  child.stderr.on('data', onData('err'));
  let exitInfo = null;
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    exitInfo = { code, signal };
    livePids.delete(child.pid);
    resolve(exitInfo);
  }));

  const srv = {
    port,
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    confPath,
    dir,
    logs,
    child,
    exited,
    stopping: false,
    _knownWorkers: [],
    get exitInfo() { return exitInfo; },
    workerPids() {
      if (exitInfo) return [];
      const w = childPids(child.pid);
      for (const p of w) if (!this._knownWorkers.includes(p)) this._knownWorkers.push(p);
      return w;
    },
    logText() { return logs.join('\n'); },
    async stop(signal = 'SIGTERM', { timeoutMs = 5000 } = {}) {
      if (exitInfo) { liveServers.delete(srv); return exitInfo; }
      srv.stopping = true;
      this.workerPids();
      try { child.kill(signal); } catch { /* gone */ }
      let res = await withTimeout(exited, timeoutMs, 'exit').catch(() => null);
      if (!res) {
        logs.push(`[harness] master ${child.pid} ignored ${signal} for ${timeoutMs} ms: SIGKILL`);
        try { child.kill('SIGKILL'); } catch { /* gone */ }
        res = await exited;
      }
      // Workers must not outlive the master.
      await waitFor(() => srv._knownWorkers.every((p) => !isAlive(p)), { ms: 3000, what: 'workers to exit' })
        .catch(() => {
          logs.push(`[harness] workers still alive after master exit: ${srv._knownWorkers.filter(isAlive)}`);
          for (const p of srv._knownWorkers) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
        });
      liveServers.delete(srv);
      return res;
    },
  };
  liveServers.add(srv);
  if (opts.t) opts.t.after(() => srv.stop());

  const deadline = Date.now() + (opts.startTimeoutMs ?? 15000);
  let last = 'not tried';
  for (;;) {
    if (exitInfo) {
      liveServers.delete(srv);
      throw new Error(`server exited during start-up (${JSON.stringify(exitInfo)})\n` +
        `--- conf ${confPath}\n${fs.readFileSync(confPath, 'utf8')}\n--- logs\n${srv.logText()}`);
    }
    try {
      const r = await httpGetOnce(opts.healthPort ?? port, '/healthz', 1000);
      if (r.status === 200) break;
      last = `status ${r.status}`;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) {
      await srv.stop('SIGKILL');
      throw new Error(`server not healthy within ${opts.startTimeoutMs ?? 15000} ms (${last})\n--- logs\n${srv.logText()}`);
    }
    await sleep(50);
  }
  // Wait until the workers are up too (the master answers nothing itself).
  const want = opts.workers ?? 2;
  if (typeof want === 'number') {
    await waitFor(() => srv.workerPids().length >= want, { ms: 5000, what: `${want} worker processes` })
      .catch((e) => { throw new Error(`${e.message}\n--- logs\n${srv.logText()}`); });
  }
  return srv;
}

function dumpLogs(title, servers) {
  for (const srv of servers) {
    const tail = srv.logs.slice(-200);
    process.stderr.write(`\n----- server logs (pid ${srv.pid}, port ${srv.port}) for "${title}"` +
      `${srv.exitInfo ? ` exited ${JSON.stringify(srv.exitInfo)}` : ''} -----\n` +
      `${tail.join('\n')}\n----- end of server logs -----\n`);
  }
}

// ------------------------------------------------------------------ tests

// node:test's test() with a bounded timeout, cleanup of the clients it opened,
// and the server logs printed when it fails.
//   test('name', async (t, ctx) => { const s = await ctx.connect(srv, '/'); ... })
export function test(name, opts, fn) {
  if (typeof opts === 'function') { fn = opts; opts = {}; }
  // node:test reports this file as the location; remember the real one.
  const frame = new Error().stack.split('\n')[2] ?? '';
  const where = (/\(?(?:file:\/\/)?([^()\s]+:\d+:\d+)\)?\s*$/.exec(frame)?.[1] ?? frame.trim());
  return nodeTest(name, { timeout: 20000, ...opts }, async (t) => {
    const ctx = new Scope(t);
    t.after(async () => {
      if (!t.passed) process.stderr.write(`\n##### FAILED: "${name}" (${where})\n`);
      if (!t.passed || VERBOSE) dumpLogs(name, new Set([...liveServers, ...ctx.servers]));
      await ctx.cleanup();
    });
    await fn(t, ctx);
  });
}

// Clients (and servers) opened in one test, closed when it ends.
export class Scope {
  constructor(t) {
    this.t = t;
    this.sockets = new Set();
    this.closers = [];
    this.servers = new Set();
  }

  async startServer(opts = {}) {
    const srv = await startServer(opts);
    this.servers.add(srv);
    this.closers.push(() => srv.stop());
    return srv;
  }

  defer(fn) { this.closers.push(fn); }

  // An official client socket (not yet connected). Defaults: WebSocket only,
  // no reconnection, a fresh Manager, a valid token for user "alice".
  socket(srv, nsp = '/', opts = {}) {
    const { userId = 'alice', role, ...rest } = opts;
    const auth = 'auth' in opts ? opts.auth : { token: token(userId, role ? { role } : {}) };
    const s = io(srv.url + nsp, {
      transports: ['websocket'], forceNew: true, reconnection: false, timeout: 5000,
      ...rest, auth,
    });
    this.track(s);
    return s;
  }

  track(s) {
    this.sockets.add(s);
    return s;
  }

  // Connected socket; throws the connect_error (with .data) if refused.
  async connect(srv, nsp = '/', opts = {}) {
    const s = this.socket(srv, nsp, opts);
    await connected(s);
    return s;
  }

  // The connect_error a socket gets (throws if it connects instead).
  async connectError(srv, nsp = '/', opts = {}) {
    const s = this.socket(srv, nsp, opts);
    return refused(s);
  }

  async cleanup() {
    for (const s of this.sockets) {
      try { s.disconnect(); } catch { /* ignore */ }
      try { s.io.engine?.close(); } catch { /* ignore */ }
      try { s.io._close?.(); } catch { /* ignore */ }
    }
    this.sockets.clear();
    for (const fn of this.closers.reverse()) {
      try { await fn(); } catch { /* ignore */ }
    }
    this.closers = [];
  }
}

// ---------------------------------------------------------------- clients

export function connected(s, ms = 5000) {
  if (s.connected) return Promise.resolve(s);
  return withTimeout(new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('connect_error', (err) => {
      const e = new Error(`connect_error on ${s.nsp}: ${err.message} ${JSON.stringify(err.data ?? null)}`);
      e.data = err.data;
      e.original = err;
      reject(e);
    });
  }), ms, `connect on ${s.nsp}`);
}

export function refused(s, ms = 5000) {
  return withTimeout(new Promise((resolve, reject) => {
    s.once('connect', () => reject(new Error(`expected connect_error on ${s.nsp}, but it connected`)));
    s.once('connect_error', (err) => resolve(err));
  }), ms, `connect_error on ${s.nsp}`);
}

// Resolves with the listener arguments (an array) of the next `event`.
export function once(emitter, event, ms = 5000) {
  return withTimeout(new Promise((resolve) => {
    const fn = (...args) => resolve(args);
    if (typeof emitter.once === 'function') emitter.once(event, fn);
    else emitter.addEventListener(event, fn, { once: true });
  }), ms, `event "${event}"`);
}

// Emits and waits for the ack; resolves with the first ack argument.
export async function ack(s, event, ...args) {
  return withTimeout(s.timeout(5000).emitWithAck(event, ...args), 6000, `ack of "${event}"`);
}

// Emits and resolves with *all* ack arguments as an array.
export function ackAll(s, event, ...args) {
  return withTimeout(new Promise((resolve, reject) => {
    s.timeout(5000).emit(event, ...args, (err, ...reply) => (err ? reject(err) : resolve(reply)));
  }), 6000, `ack of "${event}"`);
}

// Records every `event` a socket receives, so tests can check what arrived and
// what did not: call fence() to know that everything sent before has arrived.
export class Inbox {
  constructor(s, events) {
    this.s = s;
    this.got = [];
    this.waiters = [];
    this.onAny = (event, ...args) => {
      if (events && !events.includes(event)) return;
      this.got.push({ event, args });
      this.waiters = this.waiters.filter((w) => !w());
    };
    s.onAny(this.onAny);
  }

  of(event) { return this.got.filter((m) => m.event === event).map((m) => m.args); }

  // Resolves the first received `event` (args array) matching `pred`.
  wait(event, pred = () => true, ms = 5000) {
    return withTimeout(new Promise((resolve) => {
      const check = () => {
        const m = this.got.find((x) => x.event === event && pred(x.args));
        if (m) { resolve(m.args); return true; }
        return false;
      };
      if (!check()) this.waiters.push(check);
    }), ms, `event "${event}"`);
  }

  clear() { this.got = []; }
}

// ------------------------------------------------------------- raw HTTP

// One HTTP request on a fresh connection (agent: false unless given).
// Resolves {status, headers, body (Buffer), text}.
export function request(srv, { method = 'GET', path: p = '/', headers = {}, body, agent = false, timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: srv.port, method, path: p, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const b = Buffer.concat(chunks);
        resolve({ status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders, body: b, text: b.toString('utf8') });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`HTTP ${method} ${p} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// Writes `bytes` on a new TCP connection; resolves {data (Buffer), text, closed,
// error} when the server closes it or after `ms`.
export function rawTcp(srv, bytes, { ms = 3000, endAfterWrite = false } = {}) {
  return new Promise((resolve) => {
    const chunks = [];
    let done = false;
    const sock = net.connect(srv.port, '127.0.0.1');
    const finish = (closed, error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const data = Buffer.concat(chunks);
      resolve({ data, text: data.toString('latin1'), closed, error });
    };
    const timer = setTimeout(() => finish(false), ms);
    sock.on('connect', () => {
      for (const b of [].concat(bytes)) sock.write(b);
      if (endAfterWrite) sock.end();
    });
    sock.on('data', (c) => chunks.push(c));
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('error', (e) => finish(true, e));
  });
}

// A TCP proxy to `target` (a server), which the test may switch to another;
// drop() cuts every connection through it, as a network would. strand()
// cuts only the clients' side: the server keeps a silent connection it has
// not noticed is dead (a half-open one) until dropStranded().
export function switchableProxy(target) {
  const pairs = new Set();
  const stranded = new Set();
  const p = {
    target,
    port: 0,
    server: net.createServer((client) => {
      const up = net.connect(p.target.port, '127.0.0.1');
      const pair = { client, up };
      pairs.add(pair);
      client.pipe(up);
      up.pipe(client);
      pair.close = () => { client.destroy(); up.destroy(); pairs.delete(pair); };
      for (const s of [client, up]) { s.on('error', () => pair.close()); s.on('close', () => pair.close()); }
    }),
    drop() { for (const pair of [...pairs]) pair.close(); },
    strand() {
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        pair.close = () => {};
        pair.client.unpipe(pair.up);
        pair.up.unpipe(pair.client);
        pair.up.removeAllListeners('data');
        pair.up.resume();  // what the server still sends goes nowhere
        pair.client.destroy();
        stranded.add(pair.up);
      }
    },
    dropStranded() { for (const up of stranded) up.destroy(); stranded.clear(); },
    close() { p.drop(); p.dropStranded(); p.server.close(); },
  };
  return new Promise((resolve) => p.server.listen(0, '127.0.0.1', () => { p.port = p.server.address().port; resolve(p); }));
}

export const EIO_PATH = '/socket.io/';
export const RS = '\x1e';

export function eioUrl(query = {}) {
  const q = new URLSearchParams({ EIO: '4', transport: 'polling', ...query });
  return `${EIO_PATH}?${q}`;
}

// Polling handshake; resolves {sid, open (parsed), raw response}.
export async function pollingHandshake(srv, { headers = {}, agent = false } = {}) {
  const r = await request(srv, { path: eioUrl({ t: rnd() }), headers, agent });
  if (r.status !== 200 || r.text[0] !== '0') throw new Error(`bad handshake: ${r.status} ${r.text}`);
  const open = JSON.parse(r.text.slice(1));
  return { sid: open.sid, open, res: r };
}

export const rnd = () => crypto.randomBytes(6).toString('base64url');

export function pollGet(srv, sid, opts = {}) {
  return request(srv, { path: eioUrl({ sid, t: rnd() }), timeoutMs: opts.timeoutMs ?? 5000, agent: opts.agent ?? false, headers: opts.headers });
}

export function pollPost(srv, sid, body, opts = {}) {
  return request(srv, {
    method: 'POST', path: eioUrl({ sid, t: rnd() }), body, agent: opts.agent ?? false,
    headers: { 'content-type': 'text/plain;charset=UTF-8', ...(opts.headers || {}) },
    timeoutMs: opts.timeoutMs ?? 5000,
  });
}

// A raw polling Socket.IO session connected to `nsp` with a token.
// Returns {sid, open, post(body), get(), packets: collected via get()}.
export async function rawPollingSession(srv, { nsp = '/', tok = token('raw-user') } = {}) {
  const { sid, open } = await pollingHandshake(srv);
  const prefix = nsp === '/' ? '' : `${nsp},`;
  const p = await pollPost(srv, sid, `40${prefix}${JSON.stringify({ token: tok })}`);
  if (p.status !== 200) throw new Error(`POST 40 failed: ${p.status} ${p.text}`);
  // Read until the CONNECT reply shows up.
  const seen = [];
  for (let i = 0; i < 10; i++) {
    const g = await pollGet(srv, sid);
    if (g.status !== 200) throw new Error(`GET failed: ${g.status} ${g.text}`);
    const pk = g.text.split(RS);
    seen.push(...pk);
    if (pk.some((x) => x.startsWith(`40${prefix}{`))) break;
    if (pk.some((x) => x.startsWith(`44${prefix}`))) throw new Error(`CONNECT refused: ${g.text}`);
  }
  if (!seen.some((x) => x.startsWith(`40${prefix}{`))) throw new Error(`no CONNECT reply; got ${JSON.stringify(seen)}`);
  return { sid, open, seen };
}

// ------------------------------------------------------------- raw WebSocket

// A raw Engine.IO WebSocket. `next()` resolves the next message
// ({text} or {binary: Buffer}); `closed` resolves {code, reason} on close.
export function rawWs(srv, { query = {}, headers = {}, maxPayload } = {}) {
  const q = new URLSearchParams({ EIO: '4', transport: 'websocket', ...query });
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}${EIO_PATH}?${q}`, { headers, maxPayload, perMessageDeflate: false });
  const queue = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    const m = isBinary ? { binary: Buffer.from(data) } : { text: data.toString('utf8') };
    const w = waiters.shift();
    if (w) w(m); else queue.push(m);
  });
  ws.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('error', (e) => { ws.lastError = e; });
  ws.opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
  });
  ws.next = (ms = 5000) => withTimeout(new Promise((resolve) => {
    const m = queue.shift();
    if (m) resolve(m); else waiters.push(resolve);
  }), ms, 'a WebSocket message');
  // Next text message that is not a ping (answering pings with `3` on the way).
  ws.nextText = async (ms = 5000, { answerPings = true } = {}) => {
    const end = Date.now() + ms;
    for (;;) {
      const m = await ws.next(Math.max(1, end - Date.now()));
      if (m.text === '2' && answerPings) { ws.send('3'); continue; }
      return m;
    }
  };
  // First text message matching `pred` (others are skipped, pings answered).
  ws.until = async (pred, ms = 5000) => {
    const end = Date.now() + ms;
    for (;;) {
      const m = await ws.nextText(Math.max(1, end - Date.now()));
      if (m.text !== undefined && pred(m.text)) return m.text;
    }
  };
  ws.pending = queue;
  return ws;
}

// Raw WebSocket with the Engine.IO open done and namespace `nsp` connected.
export async function rawSioWs(srv, { nsp = '/', tok = token('raw-user') } = {}) {
  const ws = rawWs(srv);
  await withTimeout(ws.opened, 5000, 'WebSocket open');
  const open = await ws.nextText();
  if (!open.text?.startsWith('0{')) throw new Error(`expected open packet, got ${JSON.stringify(open)}`);
  ws.open = JSON.parse(open.text.slice(1));
  const prefix = nsp === '/' ? '' : `${nsp},`;
  ws.send(`40${prefix}${JSON.stringify({ token: tok })}`);
  for (;;) {
    const m = await ws.nextText();
    if (m.text?.startsWith(`40${prefix}{`)) { ws.sioSid = JSON.parse(m.text.slice(2 + prefix.length)).sid; break; }
    if (m.text?.startsWith(`44${prefix}`)) throw new Error(`CONNECT refused: ${m.text}`);
  }
  return ws;
}

// Whether the server closed a raw WebSocket within `ms` (resolves {code, reason}
// or null if still open).
export async function closedWithin(ws, ms = 5000) {
  return withTimeout(ws.closed, ms, 'close').catch(() => null);
}

// Parses an Engine.IO polling payload into records.
export const records = (text) => (text === '' ? [] : text.split(RS));

// ------------------------------------------------------------------- Redis

// redis-cli against a port; resolves its stdout. The strict one rejects a
// reply starting with ERR too (redis-cli exits 0 on a command error).
export function redisCli(port, ...args) { return runRedisCli(port, args, false); }
export function redisCliStrict(port, ...args) { return runRedisCli(port, args, true); }
function runRedisCli(port, args, strict) {
  return new Promise((resolve, reject) => {
    const p = spawn('redis-cli', ['-p', String(port), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (c) => { out += c; });
    p.stderr.on('data', (c) => { err += c; });
    p.on('error', reject);
    const failed = (text) => /Could not connect/.test(text) || (strict && /^ERR/.test(text));
    p.on('exit', (code) => (code === 0 && !failed(err + out) ? resolve(out)
      : reject(new Error(`redis-cli -p ${port} ${args.join(' ')}: ${err || out}`))));
  });
}

// A private redis-server on a free loopback port, no persistence.
//   const r = await startRedis({t}); r.port, r.url, r.cli(...args), r.stop(),
//   r.kill() (SIGKILL), r.restart() (same port, empty), r.logText()
export async function startRedis(opts = {}) {
  const port = opts.port ?? await freePort();
  const logs = [];
  const r = {
    port,
    url: `redis://127.0.0.1:${port}`,
    child: null,
    logs,
    logText() { return logs.join('\n'); },
    async start() {
      const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
        '--appendonly', 'no', ...(opts.args ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] });
      livePids.add(child.pid);
      child.stdout.on('data', (c) => logs.push(...c.toString('utf8').split('\n').filter(Boolean)));
      child.stderr.on('data', (c) => logs.push(...c.toString('utf8').split('\n').filter(Boolean)));
      child.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
        livePids.delete(child.pid);
        resolve({ code, signal });
      }));
      r.child = child;
      await waitFor(() => r.cli('PING').then((out) => out.trim() === 'PONG'), { ms: 5000, what: `redis-server on ${port}` });
      return r;
    },
    async stop(signal = 'SIGTERM') {
      const child = r.child;
      if (!child) return;
      r.child = null;
      try { child.kill(signal); } catch { /* gone */ }
      await withTimeout(child.exited, 5000, 'redis-server exit').catch(() => child.kill('SIGKILL'));
    },
    kill() { return r.stop('SIGKILL'); },
    async restart() { await r.stop(); return r.start(); },
    // redis-cli against this server; resolves its stdout.
    cli: (...args) => redisCli(port, ...args),
  };
  await r.start();
  if (opts.t) opts.t.after(() => r.stop());
  return r;
}

// The `redis` directive (and a short node TTL) for a server on `redis`.
export function redisLines(redis, { nodeTtl = '3s', extra = [] } = {}) {
  return [`redis 127.0.0.1:${redis.port};`, `redis_node_ttl ${nodeTtl};`, ...extra].join('\n');
}

// `s` (connected, with connection state recovery) joins `room` through the
// probe module; resolves once Redis holds its session with that room, so a
// cut from now on leaves a session to resume. Returns {id, pid}.
export async function joinStored(redis, s, room) {
  await ack(s, 'probe:join', { room });
  const pid = s._pid;
  await waitFor(async () => {
    const text = (await redis.cli('GET', `depth:recovery:session:${pid}`)).trim();
    return text && JSON.parse(text).rooms?.includes(room);
  }, { what: `the session of ${s.id} with ${room}` });
  return { id: s.id, pid };
}

// Waits until at least `n` nodes listen on the namespace of `room`: a node
// takes every room's broadcasts through one pattern per namespace,
// PSUBSCRIBEd before its request channel on the same connection, so a node
// counted on the request channel has the pattern too (joins need no wait).
export async function waitSubscribed(redis, room, n, { nsp = '/', key = 'socket.io', ms = 5000 } = {}) {
  const channel = `${key}-request#${nsp}#`;
  await waitFor(async () => Number((await redis.cli('PUBSUB', 'NUMSUB', channel)).split('\n')[1]) >= n,
    { ms, every: 10, what: `${n} node(s) subscribed to ${channel} (for ${room})` });
}
