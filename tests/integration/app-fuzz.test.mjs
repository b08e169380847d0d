// Fuzz-style, for the application modules: thousands of random and malformed
// payloads to every event of every namespace (and to the HTTP API), with the
// whole application loaded as the shipped conf loads it and a real Redis.
// Whatever comes in, every answer has the contract's shape ({data} or
// {error: {code, message}} with a known code), the workers stay up (same
// pids), and clients that were connected all along keep being served.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before } from 'node:test';
import {
  test, startServer, startRedis, redisLines, token, request, withTimeout, io, connected, freePort, SECRET,
} from './lib/harness.mjs';

const API_KEY = 'fuzz-api-key';
const CODES = new Set(['INVALID_DATA', 'FORBIDDEN', 'NOT_FOUND', 'RATE_LIMITED', 'SOCKET_ERROR']);

let redis;
let srv;
let workers;
before(async () => {
  redis = await startRedis();
  await redis.cli('SADD', 'depth:conversation:c1:members', 'fuzzer', 'witness');
  await redis.cli('SADD', 'depth:project:p1:members', 'fuzzer', 'witness');
  const port = await freePort();
  srv = await startServer({
    workers: 2,
    port,
    probe: false,
    modules: ['auth_jwt.so', 'ratelimit.so', 'chat.so', 'projects.so', 'notifications.so', 'admin.so', 'api.so'],
    serverBlock: [
      `    listen 127.0.0.1:${port};`,
      '    path /socket.io/;',
      `    auth_jwt_secret ${SECRET};`,
      '    client_batch on;',
      '    server_batch_events user:typing project:update[kind=progress];',
      '    max_payload 256k;',
      `    api_key ${API_KEY};`,
      '    ratelimit off;',
      ...redisLines(redis).split('\n').map((l) => `    ${l}`),
      '    namespace /;',
      '    namespace /chat;',
      '    namespace /projects;',
      '    namespace /notifications;',
      '    namespace /admin { auth_jwt_require_role admin; }',
    ].join('\n'),
  });
  workers = srv.workerPids().sort();
});
after(async () => {
  await srv?.stop();
  await redis?.stop();
});

// Deterministic randomness, so a failure can be replayed.
function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

const IDS = ['c1', 'p1', 'x', '', 'c2', 42, 0, -1, 1.5, 'a'.repeat(129), 'a'.repeat(128), '1714567890123-0', '0-0', 'n1',
  '99999999999999999999-1', 'user:1', '$binary'];
const FIELDS = ['conversationId', 'projectId', 'content', 'type', 'metadata', 'isTyping', 'messageId', 'before', 'limit',
  'status', 'progress', 'milestone', 'comment', 'attachments', 'userId', 'notificationId', 'socketId', 'message', 'rooms',
  'updatedBy', 'senderId', 'event', 'data'];

function randomValue(r, depth = 0) {
  const k = Math.floor(r() * (depth > 2 ? 7 : 10));
  switch (k) {
    case 0: return null;
    case 1: return r() < 0.5;
    case 2: return [0, -1, 1, 100, 101, 50.5, 1e308, -0, 2 ** 53, Math.floor(r() * 1e6)][Math.floor(r() * 10)];
    case 3: return IDS[Math.floor(r() * IDS.length)];
    case 4: return crypto.randomBytes(Math.floor(r() * 40)).toString(r() < 0.5 ? 'latin1' : 'base64');
    case 5: return '😀مرحبا\u0000\u001e"\\\ud800'.slice(0, Math.floor(r() * 12));
    case 6: return r() < 0.2 ? 'x'.repeat(10001 + Math.floor(r() * 3)) : crypto.randomBytes(Math.floor(r() * 16));
    case 7: return Array.from({ length: Math.floor(r() * (r() < 0.1 ? 15 : 4)) }, () => randomValue(r, depth + 1));
    default: {
      const o = {};
      for (let i = Math.floor(r() * 5); i > 0; i--) o[FIELDS[Math.floor(r() * FIELDS.length)]] = randomValue(r, depth + 1);
      // (no {_placeholder, num} look-alikes: the client would send an invalid
      // packet and be disconnected, as Node's parser does; fuzz.test.mjs has those)
      return o;
    }
  }
}

// A payload close to valid: the event's own fields with good values, some mutated.
const GOOD = {
  conversationId: 'c1', projectId: 'p1', content: 'hi', type: 'text', metadata: {}, isTyping: true,
  messageId: '1714567890123-0', limit: 5, status: 'ok', progress: 50, milestone: 'm', comment: 'c', attachments: [],
  userId: 'fuzzer', notificationId: 'n1', message: 'hello', rooms: ['r1'],
};
function nearlyValid(r, fields) {
  const o = {};
  for (const f of fields) if (r() < 0.9) o[f] = GOOD[f];
  for (const f of fields) if (r() < 0.3) o[f] = randomValue(r);
  if (r() < 0.2) o[FIELDS[Math.floor(r() * FIELDS.length)]] = randomValue(r);
  return o;
}

const EVENTS = {
  '/': [['private:message', []], ['anything', []]],
  '/chat': [
    ['chat:join', ['conversationId']], ['conversation:join', ['conversationId']], ['chat:leave', ['conversationId']],
    ['chat:message', ['conversationId', 'content', 'type', 'metadata']], ['message:send', ['conversationId', 'content']],
    ['chat:typing', ['conversationId', 'isTyping']], ['chat:read', ['conversationId', 'messageId']],
    ['chat:history', ['conversationId', 'before', 'limit']], ['message:edit', ['conversationId', 'messageId', 'content']],
    ['chat:unknown', []]],
  '/projects': [
    ['project:join', ['projectId']], ['project:leave', ['projectId']], ['project:statusUpdate', ['projectId', 'status']],
    ['project:progress', ['projectId', 'progress', 'milestone']], ['project:comment', ['projectId', 'comment', 'attachments']],
    ['project:nope', []]],
  '/notifications': [
    ['notifications:subscribe', ['userId']], ['notifications:unsubscribe', ['userId']],
    ['notification:read', ['notificationId']]],
  '/admin': [['admin:stats', []], ['admin:announce', ['message', 'rooms']], ['admin:kick', ['socketId']], ['admin:what', []]],
};

function client(nsp, userId, extra = {}) {
  const s = io(srv.url + nsp, {
    transports: ['websocket'], forceNew: true, reconnection: false, timeout: 5000,
    auth: { token: token(userId, extra) },
  });
  return connected(s);
}

// Every answer the contract allows: {data} or {error: {code, message, details?}}.
function checkAnswer(ev, answer) {
  assert.ok(answer && typeof answer === 'object', `${ev}: answer ${JSON.stringify(answer)}`);
  if ('error' in answer) {
    assert.ok(CODES.has(answer.error?.code), `${ev}: unknown error ${JSON.stringify(answer)}`);
    assert.equal(typeof answer.error.message, 'string');
    if (answer.error.code === 'SOCKET_ERROR') assert.fail(`${ev}: internal failure ${JSON.stringify(answer)}`);
  } else {
    assert.ok('data' in answer, `${ev}: neither data nor error: ${JSON.stringify(answer)}`);
  }
}

// Clients connected all along, one per app namespace, that must keep being served.
async function connectWitnesses(t) {
  const witnesses = {
    chat: await client('/chat', 'witness'),
    projects: await client('/projects', 'witness'),
    notifications: await client('/notifications', 'witness'),
    admin: await client('/admin', 'witness', { role: 'admin' }),
  };
  t.after(() => Object.values(witnesses).forEach((s) => s.disconnect()));
  return witnesses;
}

async function assertServing(witnesses) {
  assert.deepEqual(srv.workerPids().sort(), workers, 'a worker died');
  const { chat, projects, notifications, admin } = witnesses;
  const sent = await chat.timeout(5000).emitWithAck('chat:message', { conversationId: 'c1', content: 'still here' });
  assert.equal(sent.data.content, 'still here');
  assert.deepEqual((await projects.timeout(5000).emitWithAck('project:join', { projectId: 'p1' })).data, { projectId: 'p1' });
  assert.deepEqual((await notifications.timeout(5000).emitWithAck('notifications:subscribe', { userId: 'witness' })).data,
    { userId: 'witness' });
  assert.equal(typeof (await admin.timeout(5000).emitWithAck('admin:stats')).data.connections, 'number');
  const res = await request(srv, { path: '/api/v1/stats', headers: { authorization: `Bearer ${API_KEY}` } });
  assert.equal(res.status, 200);
}

test('random and nearly valid payloads to every event of every namespace', { timeout: 120000 }, async (t) => {
  const witnesses = await connectWitnesses(t);
  const r = prng(20261126);
  let answered = 0;
  let sent = 0;
  for (const [nsp, events] of Object.entries(EVENTS)) {
    const s = await client(nsp, 'fuzzer', nsp === '/admin' ? { role: 'admin' } : {});
    const pending = [];
    for (let i = 0; i < 700; i++) {
      const [ev, fields] = events[Math.floor(r() * events.length)];
      const args = r() < 0.6 ? [nearlyValid(r, fields)] : Array.from({ length: Math.floor(r() * 3) }, () => randomValue(r));
      const name = r() < 0.1 ? 'batch' : ev;
      const payload = name === 'batch'
        ? [r() < 0.8 ? Array.from({ length: Math.floor(r() * 5) }, () => ({ event: ev, data: args[0] })) : randomValue(r)]
        : args;
      sent++;
      if (r() < 0.7) {
        pending.push(withTimeout(s.timeout(10000).emitWithAck(name, ...payload), 12000, name).then((a) => {
          checkAnswer(name, a);
          if (name === 'batch' && Array.isArray(a.data)) a.data.forEach((item) => checkAnswer(`batch item ${ev}`, item));
          answered++;
        }));
      } else {
        s.emit(name, ...payload);
      }
      if (pending.length >= 100) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
    assert.ok(s.connected, `the fuzzing client on ${nsp} stays connected`);
    s.disconnect();
  }
  assert.ok(answered > 2000, `answered ${answered} of ${sent}`);
  await assertServing(witnesses);
});

test('random HTTP API requests: JSON answers with the documented statuses, never a crash', { timeout: 60000 }, async (t) => {
  const witnesses = await connectWitnesses(t);
  const r = prng(7);
  const paths = ['/api/v1/emit', '/api/v1/notifications', '/api/v1/disconnect', '/api/v1/stats', '/api/v1/nope', '/api/v2/emit'];
  for (let i = 0; i < 600; i++) {
    const p = paths[Math.floor(r() * paths.length)];
    const method = ['POST', 'POST', 'GET', 'PUT', 'DELETE'][Math.floor(r() * 5)];
    let body;
    if (method !== 'GET') {
      const v = r() < 0.5
        ? { namespace: ['/', '/chat', '/nope', 5][Math.floor(r() * 4)], rooms: randomValue(r), event: randomValue(r), data: randomValue(r),
          userIds: randomValue(r), notification: randomValue(r), userId: IDS[Math.floor(r() * IDS.length)] }
        : randomValue(r);
      body = r() < 0.1 ? JSON.stringify(v).slice(0, 5) : JSON.stringify(v) ?? 'null';
    }
    const auth = r() < 0.9 ? { authorization: `Bearer ${API_KEY}` } : {};
    const res = await request(srv, { method, path: p, body, headers: { 'content-type': 'application/json', ...auth } });
    assert.ok([200, 400, 401, 404, 405, 413].includes(res.status), `${method} ${p} ${body}: ${res.status} ${res.body}`);
    const parsed = JSON.parse(res.body);
    assert.ok(res.status === 200 ? 'data' in parsed : typeof parsed.error?.code === 'string', res.body);
  }
  await assertServing(witnesses);
});
