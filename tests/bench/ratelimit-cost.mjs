// What the exact rate limit (budget leases, module/ratelimit/lease.h) costs
// (`make bench`, tests/bench/run.sh): two depth-realtime processes (2 workers
// each) on one private redis-server, one user with sockets on both.
//   far:      Redis commands (INFO commandstats, all but INFO) per 1,000
//             admitted events of a user far from the limit (goal <= 20), and
//             the ack latency of those events
//   at limit: the ack latency of the events admitted in the last quarter of
//             the budget (every worker asks Redis for each), alternating
//             between the nodes, and of the refusals past the limit
//   node tests/bench/ratelimit-cost.mjs --build BUILD [--events 4000]
// JWT_SECRET signs the clients' tokens. Prints one JSON object.
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { io } from 'socket.io-client';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const build = args.build;
const events = Number(args.events ?? 4000);
const secret = process.env.JWT_SECRET;
if (!build || !secret) {
  console.error('usage: JWT_SECRET=S node ratelimit-cost.mjs --build BUILD [--events N]');
  process.exit(2);
}
const NEAR_LIMIT = 400;

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function token(userId) {
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ userId, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${head}.${crypto.createHmac('sha256', secret).update(head).digest('base64url')}`;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}
async function until(fn, what, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    try { if (await fn()) return; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const children = [];
function cleanup() {
  for (const c of children) { try { c.kill('SIGTERM'); } catch { /* gone */ } }
}
process.on('exit', cleanup);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-bench-ratelimit-'));
const redisPort = await freePort();
children.push(spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
  { stdio: 'ignore' }));
const redis = (...a) => execFileSync('redis-cli', ['-p', String(redisPort), ...a], { encoding: 'utf8' });
await until(() => redis('PING').trim() === 'PONG', 'redis-server');

function commands() {
  let n = 0;
  for (const line of redis('INFO', 'commandstats').split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (m && !/^(info|config)/.test(m[1])) n += Number(m[2]);
  }
  return n;
}
const evals = () => Number(/^cmdstat_eval:calls=(\d+)/m.exec(redis('INFO', 'commandstats'))?.[1] ?? 0);

async function daemon(name) {
  const port = await freePort();
  const conf = path.join(dir, `${name}.conf`);
  fs.writeFileSync(conf, `worker_processes 2;
error_log stderr warn;
pid ${path.join(dir, `${name}.pid`)};
load_module auth_jwt.so;
load_module ratelimit.so;
load_module bench.so;
server {
    listen 127.0.0.1:${port};
    auth_jwt_secret "${secret}";
    redis 127.0.0.1:${redisPort};
    recovery_window 0;
    ratelimit_events 1000000 60s;
    namespace /;
    namespace /near { ratelimit_events ${NEAR_LIMIT} 60s; }
}
`);
  const child = spawn(path.join(build, 'depth-realtime'), ['-c', conf, '-M', path.join(build, 'modules')],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(child);
  await until(() => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
    s.on('error', () => resolve(false));
  }), `depth-realtime ${name}`);
  return `http://127.0.0.1:${port}`;
}

const urls = [await daemon('a'), await daemon('b')];
const sockets = [];
async function connect(url, nsp, user) {
  const s = io(url + nsp, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: token(user) } });
  sockets.push(s);
  await new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); });
  return s;
}
const echo = (s) => {
  const t0 = process.hrtime.bigint();
  return s.timeout(10000).emitWithAck('bench:echo', 1).then((r) => ({ r, us: Number(process.hrtime.bigint() - t0) / 1000 }));
};
const pct = (xs, p) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return +s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))].toFixed(1);
};
const lat = (xs) => ({ n: xs.length, p50_us: pct(xs, 50), p99_us: pct(xs, 99) });

// Far from the limit: 4 sockets (2 per node, spread over the workers by the
// master), 8 acked events in flight each, `events` admitted in all; the
// commands include each worker's first lease.
const far = [];
for (const url of urls) for (let i = 0; i < 2; i++) far.push(await connect(url, '/', 'bench-far'));
const c0 = commands(), e0 = evals();  // the first leases count too
const farLat = [];
let admitted = 0;
let refused = 0;
await Promise.all(far.map(async (s) => {
  const inflight = new Set();
  for (let i = 0; i < events / far.length; i++) {
    const p = echo(s).then(({ r, us }) => {
      if (Array.isArray(r) || r === 1) { admitted++; farLat.push(us); } else refused++;
      inflight.delete(p);
    });
    inflight.add(p);
    if (inflight.size >= 8) await Promise.race(inflight);
  }
  await Promise.all(inflight);
}));
await sleep(200);
const farCommands = commands() - c0, farEvals = evals() - e0;

// At the limit: one socket per node, one event at a time, alternating.
const near = [await connect(urls[0], '/near', 'bench-near'), await connect(urls[1], '/near', 'bench-near')];
const early = [];
const last = [];
const refusals = [];
let nearAdmitted = 0;
const n0 = evals();
for (let i = 0; i < NEAR_LIMIT + 40; i++) {
  const { r, us } = await echo(near[i % 2]);
  if (r && r.error) refusals.push(us);
  else {
    nearAdmitted++;
    if (nearAdmitted <= NEAR_LIMIT / 4) early.push(us);
    else if (nearAdmitted > (NEAR_LIMIT * 3) / 4) last.push(us);
  }
}
const nearEvals = evals() - n0;

for (const s of sockets) s.close();
cleanup();
const out = {
  far: {
    limit: 1000000,
    admitted,
    refused,
    redis_commands: farCommands,
    redis_commands_per_1000_events: +(farCommands * 1000 / Math.max(1, admitted)).toFixed(2),
    lease_requests_per_1000_events: +(farEvals * 1000 / Math.max(1, admitted)).toFixed(2),
    latency: lat(farLat),
  },
  at_limit: {
    limit: NEAR_LIMIT,
    admitted: nearAdmitted,
    lease_requests: nearEvals,
    first_quarter: lat(early),
    last_quarter: lat(last),
    refused: lat(refusals),
    added_p50_us: last.length && early.length ? +(pct(last, 50) - pct(early, 50)).toFixed(1) : null,
    added_p99_us: last.length && early.length ? +(pct(last, 99) - pct(early, 99)).toFixed(1) : null,
  },
};
console.log(JSON.stringify(out));
process.exit(0);
