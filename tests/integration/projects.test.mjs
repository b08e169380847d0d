// The projects module (contract §2 "/projects", §4, §5, §8): joining and
// leaving project rooms, status and progress updates, comments stored in a
// Redis Stream, the activity feed, access through the Redis member set, the
// token's `projects` claim or role admin, validation, server batching of
// progress, Redis going away, and two server processes sharing one Redis.
//
// "Did not receive" without sleeping: most tests run one worker, where a
// broadcast reaches the local sockets' outgoing queues before the sender's
// handler returns; so once the sender has its ack, an acked round trip of the
// observer (settle) proves that anything sent to it has arrived.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, startServer, startRedis, redisLines, ack, once, Inbox, rnd, token, waitFor, waitSubscribed, request,
  tmpDir, writeConf, testConfig, freePort,
} from './lib/harness.mjs';

const NSP = '/projects';
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const STREAM_ID = /^\d+-\d+$/;
const EVENTS = ['project:joined', 'user:joined', 'user:left', 'project:update', 'project:comment', 'activity', 'error', 'batch'];

const serverLines = (redis) => [
  redisLines(redis),
  'namespace /projects;',
  'server_batch_events project:update[kind=progress];',
  'client_batch on;',
].join('\n');

const projectsServer = (redis, opts = {}) => ({
  workers: 1, modules: ['auth_jwt.so', 'projects.so'], probe: false, extraServer: serverLines(redis), ...opts,
});

// Received binary may be a Buffer, ArrayBuffer or typed array: compare bytes.
const isBinary = (v) => Buffer.isBuffer(v) || v instanceof ArrayBuffer || ArrayBuffer.isView(v);
function norm(v) {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof ArrayBuffer) return Buffer.from(v);
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  return v;
}

let redis;
let srv;

before(async () => {
  redis = await startRedis();
  srv = await startServer(projectsServer(redis));
});
after(async () => {
  await srv?.stop();
  await redis?.stop();
});

const pid = () => `p-${rnd()}`;
const addMembers = (project, ...users) => redis.cli('SADD', `depth:project:${project}:members`, ...users);

// A connected /projects socket recording what it receives.
async function client(ctx, userId, { claims, role, batch, server = srv } = {}) {
  const extra = { ...(claims ? { projects: claims } : {}), ...(role ? { role } : {}) };
  const auth = { token: token(userId, extra), ...(batch ? { batch: true } : {}) };
  const s = await ctx.connect(server, NSP, { auth });
  s.inbox = new Inbox(s, EVENTS);
  s.userId = userId;
  return s;
}

// An acked round trip of each socket: everything sent to it before has arrived.
const settle = (...sockets) => Promise.all(sockets.map((s) => ack(s, 'project:leave', { projectId: 'settle' })));
// Forgets what the sockets received so far.
async function fresh(...sockets) {
  await settle(...sockets);
  for (const s of sockets) s.inbox.clear();
}

async function joined(s, projectId) {
  const answer = await ack(s, 'project:join', { projectId });
  assert.deepEqual(answer, { data: { projectId } }, `join of ${s.userId}`);
  return answer;
}

const received = (s, event) => s.inbox.of(event).map((args) => args[0]);

// XRANGE of a comment stream as [{id, fields}] (redis-cli prints one value a line).
async function streamEntries(project) {
  const out = (await redis.cli('--json', 'XRANGE', `depth:project:${project}:comments`, '-', '+')).trim();
  return JSON.parse(out || '[]').map(([id, kv]) => {
    const fields = {};
    for (let i = 0; i < kv.length; i += 2) fields[kv[i]] = kv[i + 1];
    return { id, fields };
  });
}

describe('project:join and project:leave', () => {
  test('a member joins: project:joined to it, user:joined and activity to the others (its other device too)', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const bob = await client(ctx, 'bob');
    const alice2 = await client(ctx, 'alice');
    const alice = await client(ctx, 'alice');
    await joined(bob, p);
    await joined(alice2, p);
    await fresh(bob);
    await joined(alice, p);
    await settle(bob, alice2, alice);

    assert.deepEqual(received(alice, 'project:joined'), [{ projectId: p }]);
    for (const other of [bob, alice2]) {
      assert.deepEqual(received(other, 'user:joined'), [{ userId: 'alice', projectId: p }]);
      const acts = received(other, 'activity');
      assert.equal(acts.length, 1);
      assert.match(acts[0].at, ISO);
      assert.deepEqual(acts[0], { projectId: p, userId: 'alice', kind: 'join', at: acts[0].at });
    }
    assert.deepEqual(received(alice, 'user:joined'), []);
    assert.deepEqual(received(alice, 'activity'), []);
  });

  test('re-joining sends project:joined again but no second user:joined or activity', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const bob = await client(ctx, 'bob');
    const alice = await client(ctx, 'alice');
    await joined(bob, p);
    await joined(alice, p);
    await joined(alice, p);
    await settle(bob, alice);
    assert.deepEqual(received(alice, 'project:joined'), [{ projectId: p }, { projectId: p }]);
    assert.equal(received(bob, 'user:joined').length, 1);
    assert.equal(received(bob, 'activity').length, 1);
  });

  test('a non-member is FORBIDDEN (ack, or the error event), joins nothing and receives nothing', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'bob');
    const bob = await client(ctx, 'bob');
    const eve = await client(ctx, 'eve');
    await joined(bob, p);
    assert.deepEqual(await ack(eve, 'project:join', { projectId: p }), {
      error: { code: 'FORBIDDEN', message: 'Forbidden', details: `not a member of project ${p}` },
    });
    const err = once(eve, 'error');
    eve.emit('project:join', { projectId: p });
    assert.deepEqual((await err)[0], { code: 'FORBIDDEN', message: 'Forbidden', details: `not a member of project ${p}` });

    // Room traffic does not reach it.
    await ack(bob, 'project:statusUpdate', { projectId: p, status: 'open' });
    await ack(bob, 'project:comment', { projectId: p, comment: 'hi' });
    await settle(bob, eve);
    assert.equal(received(bob, 'project:update').length, 1);
    assert.deepEqual(received(eve, 'project:joined'), []);
    assert.deepEqual(received(eve, 'project:update'), []);
    assert.deepEqual(received(eve, 'project:comment'), []);
    assert.deepEqual(received(bob, 'user:joined'), []);
    assert.deepEqual(received(bob, 'activity').filter((a) => a.userId === 'eve'), []);
  });

  test('leave: user:left and activity to the others; a socket not in the room is acked and nothing is sent', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const bob = await client(ctx, 'bob');
    const alice = await client(ctx, 'alice');
    await joined(bob, p);
    await joined(alice, p);
    await fresh(bob);

    assert.deepEqual(await ack(alice, 'project:leave', { projectId: p }), { data: { projectId: p } });
    await settle(bob, alice);
    assert.deepEqual(received(bob, 'user:left'), [{ userId: 'alice', projectId: p }]);
    const [act] = received(bob, 'activity');
    assert.match(act.at, ISO);
    assert.deepEqual(received(bob, 'activity'), [{ projectId: p, userId: 'alice', kind: 'leave', at: act.at }]);
    assert.deepEqual(received(alice, 'user:left'), []);
    assert.deepEqual(received(alice, 'activity'), []);

    // Not in the room any more: a second leave (and a stranger's) broadcasts nothing.
    const stranger = await client(ctx, 'stranger');
    await fresh(bob);
    assert.deepEqual(await ack(alice, 'project:leave', { projectId: p }), { data: { projectId: p } });
    assert.deepEqual(await ack(stranger, 'project:leave', { projectId: p }), { data: { projectId: p } });
    // And it no longer receives the room's traffic.
    await ack(bob, 'project:statusUpdate', { projectId: p, status: 'x' });
    await settle(bob, alice);
    assert.deepEqual(received(bob, 'user:left'), []);
    assert.deepEqual(received(bob, 'activity'), []);
    assert.equal(received(bob, 'project:update').length, 1);
    assert.deepEqual(received(alice, 'project:update'), []);
  });

  test('numeric project ids are handled as their decimal string; a join is answered before later events', async (t, ctx) => {
    await addMembers('4242', 'alice');
    const alice = await client(ctx, 'alice');
    // Sent back to back: the status update waits for the join's Redis check.
    const join = ack(alice, 'project:join', { projectId: 4242 });
    const update = ack(alice, 'project:statusUpdate', { projectId: 4242, status: 'review' });
    assert.deepEqual(await join, { data: { projectId: '4242' } });
    const answer = await update;
    assert.equal(answer.data.projectId, '4242');
    await settle(alice);
    assert.deepEqual(alice.inbox.got.map((m) => m.event), ['project:joined', 'project:update']);
    assert.deepEqual(received(alice, 'project:update'), [answer.data]);
  });
});

describe('updates', () => {
  test('statusUpdate: project:update to the whole room (sender included), activity to the others, ack = the update', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const bob = await client(ctx, 'bob');
    const alice = await client(ctx, 'alice');
    await joined(bob, p);
    await joined(alice, p);
    await fresh(bob);
    // Client-sent server fields are ignored.
    const answer = await ack(alice, 'project:statusUpdate', { projectId: p, status: 'in progress', updatedBy: 'mallory', at: 'yesterday', kind: 'x' });
    const update = answer.data;
    assert.match(update.at, ISO);
    assert.deepEqual(update, { projectId: p, kind: 'status', status: 'in progress', updatedBy: 'alice', at: update.at });
    await settle(bob, alice);
    assert.deepEqual(received(alice, 'project:update'), [update]);
    assert.deepEqual(received(bob, 'project:update'), [update]);
    assert.deepEqual(received(bob, 'activity'), [{ projectId: p, userId: 'alice', kind: 'status', at: update.at }]);
    assert.deepEqual(received(alice, 'activity'), []);
  });

  test('progress: with and without milestone (null when absent), bounds 0 and 100', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const bob = await client(ctx, 'bob');
    const alice = await client(ctx, 'alice');
    await joined(bob, p);
    await joined(alice, p);
    await fresh(bob);
    const a1 = (await ack(alice, 'project:progress', { projectId: p, progress: 42.5, milestone: 'beta', updatedBy: 'x' })).data;
    assert.match(a1.at, ISO);
    assert.deepEqual(a1, { projectId: p, kind: 'progress', progress: 42.5, milestone: 'beta', updatedBy: 'alice', at: a1.at });
    const a2 = (await ack(alice, 'project:progress', { projectId: p, progress: 0 })).data;
    assert.deepEqual(a2, { projectId: p, kind: 'progress', progress: 0, milestone: null, updatedBy: 'alice', at: a2.at });
    const a3 = (await ack(alice, 'project:progress', { projectId: p, progress: 100, milestone: null })).data;
    assert.deepEqual(a3, { projectId: p, kind: 'progress', progress: 100, milestone: null, updatedBy: 'alice', at: a3.at });
    await settle(bob, alice);
    assert.deepEqual(received(bob, 'project:update'), [a1, a2, a3]);
    assert.deepEqual(received(alice, 'project:update'), [a1, a2, a3]);
    assert.deepEqual(received(bob, 'activity'), [a1, a2, a3].map((u) => ({ projectId: p, userId: 'alice', kind: 'progress', at: u.at })));
    assert.deepEqual(received(alice, 'activity'), []);
  });

  test('a member need not join to act: its update reaches the room, not itself', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const bob = await client(ctx, 'bob');
    const alice = await client(ctx, 'alice');
    await joined(bob, p);
    await fresh(bob);
    const update = (await ack(alice, 'project:statusUpdate', { projectId: p, status: 'blocked' })).data;
    await settle(bob, alice);
    assert.deepEqual(received(bob, 'project:update'), [update]);
    assert.deepEqual(received(bob, 'activity'), [{ projectId: p, userId: 'alice', kind: 'status', at: update.at }]);
    assert.deepEqual(received(alice, 'project:update'), []);
  });

  test('progress reaches batch:true clients inside `batch`, others one by one; status is never batched', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob', 'carol');
    const batched = await client(ctx, 'bob', { batch: true });
    const plain = await client(ctx, 'carol');
    const alice = await client(ctx, 'alice');
    for (const s of [batched, plain]) await joined(s, p);
    const u1 = (await ack(alice, 'project:progress', { projectId: p, progress: 10 })).data;
    const u2 = (await ack(alice, 'project:progress', { projectId: p, progress: 20, milestone: 'm1' })).data;
    // Both usually share one batch; a flush may fall between them.
    const items = await waitFor(() => {
      const all = received(batched, 'batch').flat();
      return all.length >= 2 && all;
    }, { what: 'two batched progress updates' });
    assert.deepEqual(items, [{ event: 'project:update', data: u1 }, { event: 'project:update', data: u2 }]);
    const status = (await ack(alice, 'project:statusUpdate', { projectId: p, status: 'done' })).data;
    await batched.inbox.wait('project:update');
    await settle(plain);
    assert.deepEqual(received(batched, 'project:update'), [status]);
    assert.deepEqual(received(plain, 'project:update'), [u1, u2, status]);
    assert.deepEqual(received(plain, 'batch'), []);
  });
});

describe('client batch', () => {
  test('each item is handled as if sent alone, in order, each answered in the batch ack', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const bob = await client(ctx, 'bob');
    const alice = await client(ctx, 'alice');
    await joined(bob, p);
    await fresh(bob);
    const answer = await ack(alice, 'batch', [
      { event: 'project:join', data: { projectId: p } },
      { event: 'project:statusUpdate', data: { projectId: p, status: 'a' } },
      { event: 'project:progress', data: { projectId: p, progress: 101 } },
      { event: 'project:comment', data: { projectId: p, comment: 'c' } },
      { event: 'project:comment', data: { projectId: 'elsewhere', comment: 'c' } },
    ]);
    const [update, comment] = [answer.data[1].data, answer.data[3].data];
    assert.deepEqual(answer, {
      data: [
        { data: { projectId: p } },
        { data: { projectId: p, kind: 'status', status: 'a', updatedBy: 'alice', at: update.at } },
        { error: { code: 'INVALID_DATA', message: 'Invalid data', details: 'progress: must be between 0 and 100' } },
        { data: { id: comment.id, projectId: p, userId: 'alice', comment: 'c', attachments: [], createdAt: comment.createdAt } },
        { error: { code: 'FORBIDDEN', message: 'Forbidden', details: 'not a member of project elsewhere' } },
      ],
    });
    await settle(bob, alice);
    assert.deepEqual(alice.inbox.got.map((m) => m.event), ['project:joined', 'project:update', 'project:comment']);
    assert.deepEqual(bob.inbox.got.map((m) => [m.event, m.args[0].kind]),
      [['user:joined', undefined], ['activity', 'join'], ['project:update', 'status'], ['activity', 'status'],
        ['project:comment', undefined], ['activity', 'comment']]);
  });
});

describe('comments', () => {
  test('stored in the stream before the room hears of it; project:comment to all, activity to the others, ack = the comment', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const bob = await client(ctx, 'bob');
    const alice = await client(ctx, 'alice');
    await joined(bob, p);
    await joined(alice, p);
    await fresh(bob);
    const attachments = [{ name: 'spec.pdf', url: 'https://files.example/spec.pdf', size: 1234 }];
    const c = (await ack(alice, 'project:comment', { projectId: p, comment: 'مرحبا — see the spec', attachments, userId: 'mallory', id: '1-1' })).data;
    assert.match(c.id, STREAM_ID);
    assert.match(c.createdAt, ISO);
    assert.deepEqual(c, { id: c.id, projectId: p, userId: 'alice', comment: 'مرحبا — see the spec', attachments, createdAt: c.createdAt });
    await settle(bob, alice);
    assert.deepEqual(received(bob, 'project:comment'), [c]);
    assert.deepEqual(received(alice, 'project:comment'), [c]);
    assert.deepEqual(received(bob, 'activity'), [{ projectId: p, userId: 'alice', kind: 'comment', at: c.createdAt }]);
    assert.deepEqual(received(alice, 'activity'), []);

    // Default attachments [].
    const c2 = (await ack(alice, 'project:comment', { projectId: p, comment: 'second' })).data;
    assert.deepEqual(c2.attachments, []);
    assert.deepEqual(await streamEntries(p), [
      { id: c.id, fields: { projectId: p, userId: 'alice', comment: 'مرحبا — see the spec', attachments: JSON.stringify(attachments), createdAt: c.createdAt } },
      { id: c2.id, fields: { projectId: p, userId: 'alice', comment: 'second', attachments: '[]', createdAt: c2.createdAt } },
    ]);
  });

  test('binary attachments are relayed as binary and stored as {"$binary": base64}', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const bob = await client(ctx, 'bob');
    const alice = await client(ctx, 'alice');
    await joined(bob, p);
    await joined(alice, p);
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x00, 0xff, 0x10]);
    const two = Buffer.from([1, 2]);
    const attachments = [png, { name: 'two.bin', data: two }, 'plain'];
    const answer = await ack(alice, 'project:comment', { projectId: p, comment: 'files', attachments });
    const c = answer.data;
    assert.ok(isBinary(c.attachments[0]), 'the ack carries binary');
    assert.deepEqual(norm(c.attachments), attachments);
    const [got] = await bob.inbox.wait('project:comment');
    assert.ok(isBinary(got.attachments[0]) && isBinary(got.attachments[1].data), 'the room gets binary');
    assert.deepEqual(norm(got), { id: c.id, projectId: p, userId: 'alice', comment: 'files', attachments, createdAt: c.createdAt });
    const [entry] = await streamEntries(p);
    assert.deepEqual(JSON.parse(entry.fields.attachments), [
      { $binary: png.toString('base64') }, { name: 'two.bin', data: { $binary: two.toString('base64') } }, 'plain',
    ]);
  });

  test('the stream is trimmed to projects_comments_maxlen (approximately)', async (t, ctx) => {
    const server = await ctx.startServer(projectsServer(redis, {
      extraServer: `${serverLines(redis)}\nprojects_comments_maxlen 5;\nprojects_comments_key "proj:{id}:log";`,
    }));
    const p = pid();
    const alice = await client(ctx, 'alice', { claims: [p], server });
    for (let i = 0; i < 300; i++) alice.emit('project:comment', { projectId: p, comment: `c${i}` });
    await ack(alice, 'project:comment', { projectId: p, comment: 'last' });
    const len = Number(await redis.cli('XLEN', `depth:proj:${p}:log`));
    assert.ok(len < 301 && len >= 5, `XLEN ${len}`);
    assert.equal(await redis.cli('EXISTS', `depth:project:${p}:comments`), '0\n');
  });
});

describe('access', () => {
  test('non-members get FORBIDDEN for status, progress and comment; nothing is broadcast or stored', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'bob');
    const bob = await client(ctx, 'bob');
    const eve = await client(ctx, 'eve', { claims: ['other-project'] });
    await joined(bob, p);
    await fresh(bob);
    const forbidden = { code: 'FORBIDDEN', message: 'Forbidden', details: `not a member of project ${p}` };
    assert.deepEqual(await ack(eve, 'project:statusUpdate', { projectId: p, status: 's' }), { error: forbidden });
    assert.deepEqual(await ack(eve, 'project:progress', { projectId: p, progress: 5 }), { error: forbidden });
    assert.deepEqual(await ack(eve, 'project:comment', { projectId: p, comment: 'c' }), { error: forbidden });
    // Without an ack: the error event.
    for (const [event, data] of [['project:statusUpdate', { status: 's' }], ['project:progress', { progress: 1 }], ['project:comment', { comment: 'c' }]]) {
      const err = once(eve, 'error');
      eve.emit(event, { projectId: p, ...data });
      assert.deepEqual((await err)[0], forbidden);
    }
    await settle(bob, eve);
    assert.deepEqual(bob.inbox.got, []);
    assert.equal(await redis.cli('XLEN', `depth:project:${p}:comments`), '0\n');
  });

  test('the token claim `projects` grants access (strings and integers), without the Redis set', async (t, ctx) => {
    const p = pid();
    const carol = await client(ctx, 'carol', { claims: [p, 77] });
    const bob = await client(ctx, 'bob', { claims: [p] });
    await joined(bob, p);
    await joined(carol, p);
    assert.deepEqual(await ack(carol, 'project:join', { projectId: 77 }), { data: { projectId: '77' } });
    assert.deepEqual(await ack(carol, 'project:join', { projectId: '77' }), { data: { projectId: '77' } });
    const c = (await ack(carol, 'project:comment', { projectId: p, comment: 'via claim' })).data;
    const u = (await ack(carol, 'project:progress', { projectId: p, progress: 7 })).data;
    await settle(bob);
    assert.deepEqual(received(bob, 'project:comment'), [c]);
    assert.deepEqual(received(bob, 'project:update'), [u]);
    assert.deepEqual((await ack(carol, 'project:join', { projectId: `${p}x` })).error.code, 'FORBIDDEN');
  });

  test('role admin may join and act in any project', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'bob');
    const bob = await client(ctx, 'bob');
    const root = await client(ctx, 'root', { role: 'admin' });
    await joined(bob, p);
    await joined(root, p);
    const u = (await ack(root, 'project:statusUpdate', { projectId: p, status: 'audited' })).data;
    assert.equal(u.updatedBy, 'root');
    const c = (await ack(root, 'project:comment', { projectId: p, comment: 'ok' })).data;
    await settle(bob, root);
    assert.deepEqual(received(bob, 'user:joined'), [{ userId: 'root', projectId: p }]);
    assert.deepEqual(received(bob, 'project:update'), [u]);
    assert.deepEqual(received(bob, 'project:comment'), [c]);
    assert.deepEqual(received(root, 'project:update'), [u]);
  });

  test('projects_members_key: another key pattern for the member sets', async (t, ctx) => {
    const server = await ctx.startServer(projectsServer(redis, {
      extraServer: `${serverLines(redis)}\nprojects_members_key "acl:project:{id}";`,
    }));
    const p = pid();
    await redis.cli('SADD', `depth:acl:project:${p}`, 'dave');
    await addMembers(p, 'erin');
    const dave = await client(ctx, 'dave', { server });
    const erin = await client(ctx, 'erin', { server });
    assert.deepEqual(await ack(dave, 'project:join', { projectId: p }), { data: { projectId: p } });
    assert.equal((await ack(erin, 'project:join', { projectId: p })).error.code, 'FORBIDDEN');
  });
});

describe('configuration', () => {
  test('-t accepts the directives and refuses a key pattern without {id}, naming file:line', async () => {
    const conf = (extra) => writeConf(tmpDir(), {
      port: 1, modules: ['auth_jwt.so', 'projects.so'], probe: false,
      extraServer: `namespace /projects { projects_comments_maxlen 0; }\n${extra}`,
    });
    const good = testConfig(conf('projects_members_key "acl:{id}";\nprojects_access_claim off;\nprojects_comments_key "c:{id}";\nprojects_comments_maxlen 500;'));
    assert.equal(good.code, 0, good.stderr);
    const bad = testConfig(conf('projects_members_key members;'));
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /depth-realtime\.conf:\d+: .*expected a key pattern holding \{id\}/);
  });
});

describe('validation', () => {
  const cases = [
    ['project:progress', { projectId: 'p', progress: 101 }, 'progress: must be between 0 and 100'],
    ['project:progress', { projectId: 'p', progress: -0.5 }, 'progress: must be between 0 and 100'],
    ['project:progress', { projectId: 'p', progress: '50' }, 'progress: must be a number'],
    ['project:progress', { projectId: 'p' }, 'progress: is required'],
    ['project:progress', { projectId: 'p', progress: 5, milestone: '' }, 'milestone: must not be empty'],
    ['project:progress', { projectId: 'p', progress: 5, milestone: 'm'.repeat(257) }, 'milestone: must be at most 256 characters'],
    ['project:join', {}, 'projectId: is required'],
    ['project:join', { projectId: null }, 'projectId: is required'],
    ['project:join', { projectId: '' }, 'projectId: must be an id (string of 1-128 characters or non-negative integer)'],
    ['project:join', { projectId: 'x'.repeat(129) }, 'projectId: must be an id (string of 1-128 characters or non-negative integer)'],
    ['project:join', { projectId: -1 }, 'projectId: must be an id (string of 1-128 characters or non-negative integer)'],
    ['project:leave', { projectId: { a: 1 } }, 'projectId: must be an id (string of 1-128 characters or non-negative integer)'],
    ['project:statusUpdate', { projectId: 'p', status: 's'.repeat(65) }, 'status: must be at most 64 characters'],
    ['project:statusUpdate', { projectId: 'p', status: '' }, 'status: must not be empty'],
    ['project:statusUpdate', { projectId: 'p' }, 'status: is required'],
    ['project:comment', { projectId: 'p', comment: '' }, 'comment: must not be empty'],
    ['project:comment', { projectId: 'p', comment: 'c'.repeat(10001) }, 'comment: must be at most 10000 characters'],
    ['project:comment', { projectId: 'p', comment: 'c', attachments: new Array(11).fill('a') }, 'attachments: must have at most 10 items'],
    ['project:comment', { projectId: 'p', comment: 'c', attachments: 'a' }, 'attachments: must be an array'],
    ['project:comment', 'not an object', 'payload: must be an object'],
    ['project:nope', { projectId: 'p' }, 'event: unknown event "project:nope"'],
    ['chat:message', { conversationId: 'c', content: 'x' }, 'event: unknown event "chat:message"'],
  ];

  test('bad payloads and unknown events are INVALID_DATA with the field and why', async (t, ctx) => {
    const admin = await client(ctx, 'root', { role: 'admin' });
    for (const [event, data, details] of cases) {
      assert.deepEqual(await ack(admin, event, data), { error: { code: 'INVALID_DATA', message: 'Invalid data', details } },
        `${event} ${JSON.stringify(data).slice(0, 80)}`);
    }
    // Limits count JavaScript characters: 64 emoji-free Arabic letters pass, 10 attachments pass.
    assert.ok((await ack(admin, 'project:statusUpdate', { projectId: 'p', status: 'ع'.repeat(64) })).data);
    assert.ok((await ack(admin, 'project:comment', { projectId: 'p', comment: 'c'.repeat(10000), attachments: new Array(10).fill(1) })).data);
    // Without an ack: the error event, and nothing else.
    const err = once(admin, 'error');
    admin.emit('project:progress', { projectId: 'p', progress: 101 });
    assert.deepEqual((await err)[0], { code: 'INVALID_DATA', message: 'Invalid data', details: 'progress: must be between 0 and 100' });
  });

  test('an invalid event changes nothing: no join, no broadcast', async (t, ctx) => {
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const bob = await client(ctx, 'bob');
    const alice = await client(ctx, 'alice');
    await joined(bob, p);
    await fresh(bob);
    assert.equal((await ack(alice, 'project:progress', { projectId: p, progress: 101 })).error.code, 'INVALID_DATA');
    assert.equal((await ack(alice, 'project:comment', { projectId: p, comment: '' })).error.code, 'INVALID_DATA');
    await settle(bob);
    assert.deepEqual(bob.inbox.got, []);
    assert.equal(await redis.cli('XLEN', `depth:project:${p}:comments`), '0\n');
  });
});

describe('Redis unavailable', () => {
  test('comment: SOCKET_ERROR, nothing stored or broadcast; membership checks fail the same way; back when Redis is', async (t, ctx) => {
    const own = await startRedis({ t });
    const server = await ctx.startServer(projectsServer(own));
    const p = pid();
    await own.cli('SADD', `depth:project:${p}:members`, 'bob');
    const alice = await client(ctx, 'alice', { claims: [p], server });
    const bob = await client(ctx, 'bob', { server });
    await joined(bob, p);
    await joined(alice, p);
    await fresh(bob);

    await own.stop();
    await waitFor(async () => (await request(server, { path: '/readyz' })).status === 503, { what: 'readyz 503' });
    assert.deepEqual(await ack(alice, 'project:comment', { projectId: p, comment: 'lost?' }), {
      error: { code: 'SOCKET_ERROR', message: 'A connection error occurred', details: 'comment not stored: Redis unavailable' },
    });
    const err = once(alice, 'error');
    alice.emit('project:comment', { projectId: p, comment: 'lost?' });
    assert.equal((await err)[0].code, 'SOCKET_ERROR');
    // Bob's membership lives in Redis: it cannot be checked.
    assert.deepEqual(await ack(bob, 'project:statusUpdate', { projectId: p, status: 's' }), {
      error: { code: 'SOCKET_ERROR', message: 'A connection error occurred', details: 'Redis unavailable: cannot check access' },
    });
    // Updates need no storage: the claim still grants them, and the room still hears them.
    const u = (await ack(alice, 'project:statusUpdate', { projectId: p, status: 'offline' })).data;
    await settle(bob, alice);
    assert.deepEqual(received(bob, 'project:comment'), []);
    assert.deepEqual(received(alice, 'project:comment'), []);
    assert.deepEqual(received(bob, 'activity'), [{ projectId: p, userId: 'alice', kind: 'status', at: u.at }]);

    await own.start();
    await waitFor(async () => (await request(server, { path: '/readyz' })).status === 200, { ms: 10000, what: 'readyz 200' });
    const c = await waitFor(async () => (await ack(alice, 'project:comment', { projectId: p, comment: 'back' })).data,
      { ms: 10000, what: 'a stored comment' });
    assert.equal(await own.cli('XLEN', `depth:project:${p}:comments`), '1\n');
    await bob.inbox.wait('project:comment', ([x]) => x.id === c.id);
  });
});

describe('two server processes sharing Redis', () => {
  test('joins, updates, comments and activity reach members on the other process', async (t, ctx) => {
    const other = await ctx.startServer(projectsServer(redis, { workers: 2 }));
    const p = pid();
    await addMembers(p, 'alice', 'bob');
    const alice = await client(ctx, 'alice', { server: srv });
    const bob = await client(ctx, 'bob', { server: other });
    await joined(bob, p);
    await waitSubscribed(redis, `project:${p}`, 1, { nsp: NSP });
    await joined(alice, p);
    await waitSubscribed(redis, `project:${p}`, 2, { nsp: NSP });
    await bob.inbox.wait('user:joined');
    assert.deepEqual(received(bob, 'user:joined'), [{ userId: 'alice', projectId: p }]);
    await bob.inbox.wait('activity', ([a]) => a.kind === 'join');

    const u = (await ack(alice, 'project:progress', { projectId: p, progress: 55, milestone: 'rc' })).data;
    const c = (await ack(alice, 'project:comment', { projectId: p, comment: 'from A', attachments: [Buffer.from([9, 8])] })).data;
    const [gotU] = await bob.inbox.wait('project:update');
    assert.deepEqual(gotU, u);
    const [gotC] = await bob.inbox.wait('project:comment');
    assert.deepEqual(norm(gotC), norm(c));
    assert.ok(isBinary(gotC.attachments[0]));
    await bob.inbox.wait('activity', ([a]) => a.kind === 'comment');
    assert.deepEqual(received(bob, 'activity').map((a) => a.kind), ['join', 'progress', 'comment']);

    const s = (await ack(bob, 'project:statusUpdate', { projectId: p, status: 'from B' })).data;
    assert.deepEqual((await alice.inbox.wait('project:update', ([x]) => x.status === 'from B'))[0], s);
    await ack(bob, 'project:leave', { projectId: p });
    assert.deepEqual((await alice.inbox.wait('user:left'))[0], { userId: 'bob', projectId: p });
    await alice.inbox.wait('activity', ([a]) => a.kind === 'leave' && a.userId === 'bob');
  });
});
