// What connection state recovery costs Redis (`make bench`, tests/bench/run.sh):
// the Redis commands (INFO commandstats) and recovery session writes (the
// daemon's recovery_session_writes_total) per connect, per join, per leave,
// per event joining several rooms at once, and per disconnect.
//   node tests/bench/recovery-cost.mjs --port P --redis-port R [--clients 100] [--rooms 5]
// JWT_SECRET signs the clients' tokens. Prints one JSON object.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import http from 'node:http';
import { io } from 'socket.io-client';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const port = Number(args.port);
const redisPort = Number(args['redis-port']);
const clients = Number(args.clients ?? 100);
const rooms = Number(args.rooms ?? 5);
const secret = process.env.JWT_SECRET;
if (!port || !redisPort || !secret) {
  console.error('usage: JWT_SECRET=S node recovery-cost.mjs --port P --redis-port R [--clients N] [--rooms J]');
  process.exit(2);
}

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function token(userId) {
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ userId, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${head}.${crypto.createHmac('sha256', secret).update(head).digest('base64url')}`;
}

const redis = (...a) => execFileSync('redis-cli', ['-p', String(redisPort), ...a], { encoding: 'utf8' });
// Calls per command since the last reset, without our own INFO / CONFIG.
function commandStats() {
  const out = {};
  for (const line of redis('INFO', 'commandstats').split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (m && !/^(info|config)/.test(m[1])) out[m[1]] = Number(m[2]);
  }
  return out;
}

function metric(name) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        let sum = 0;
        for (const line of body.split('\n')) if (line.startsWith(name)) sum += Number(line.split(' ').pop());
        resolve(sum);
      });
    }).on('error', reject);
  });
}

// Runs `step`, then reports per `count` operations what Redis was asked.
// Writes are sent before the clients' answers leave, but Redis may still be
// executing them: wait until the counters stop moving.
async function measure(count, step) {
  redis('CONFIG', 'RESETSTAT');
  const w0 = await metric('recovery_session_writes_total');
  await step();
  let before = -1;
  let stats = commandStats();
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 50));
    stats = commandStats();
    const total = Object.values(stats).reduce((a, b) => a + b, 0);
    if (total === before) break;
    before = total;
  }
  const writes = (await metric('recovery_session_writes_total')) - w0;
  const per = (v) => +(v / count).toFixed(3);
  const byCommand = Object.fromEntries(Object.entries(stats).filter(([, v]) => v > 0).map(([k, v]) => [k, per(v)]));
  const commands = Object.values(stats).reduce((a, b) => a + b, 0);
  return { operations: count, redis_commands: per(commands), session_writes: per(writes), by_command: byCommand };
}

const ack = (s, ev, arg) => s.timeout(10000).emitWithAck(ev, arg);
const sockets = [];
const result = { clients, rooms_per_client: rooms };

result.connect = await measure(clients, async () => {
  for (let i = 0; i < clients; i++) {
    const s = io(`http://127.0.0.1:${port}/`, { transports: ['websocket'], forceNew: true, reconnection: false,
      auth: { token: token(`bench-rc-${i}`) } });
    await new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); });
    sockets.push(s);
  }
});
result.join = await measure(clients * rooms, async () => {
  for (const [i, s] of sockets.entries()) for (let r = 0; r < rooms; r++) await ack(s, 'bench:join', { room: `rc-${i}-${r}` });
});
result.leave = await measure(clients * rooms, async () => {
  for (const [i, s] of sockets.entries()) for (let r = 0; r < rooms; r++) await ack(s, 'bench:leave', { room: `rc-${i}-${r}` });
});
// One event joining `rooms` rooms: the session is written once.
result.join_several_in_one_event = await measure(clients, async () => {
  for (const [i, s] of sockets.entries())
    await ack(s, 'bench:join', { rooms: Array.from({ length: rooms }, (_, r) => `rc-b-${i}-${r}`) });
});
result.disconnect = await measure(clients, async () => {
  for (const s of sockets) {
    const gone = new Promise((resolve) => s.once('disconnect', resolve));
    s.io.engine.close();  // a transport close: the session waits for its client
    await gone;
  }
  await new Promise((r) => setTimeout(r, 200));  // the server sees the closes
});
console.log(JSON.stringify(result));
process.exit(0);
