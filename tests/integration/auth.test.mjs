// auth_jwt: every CONNECT_ERROR case with its exact message and data.code, the
// admin role on /admin, numeric user ids, the user room, the probe greeting.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, startServer, ack, once, makeJwt, token, Manager, Inbox, rnd, SECRET, GREETING,
  startRedis, redisLines, waitFor, tmpDir, writeConf, testConfig,
} from './lib/harness.mjs';

let srv;
before(async () => { srv = await startServer({ workers: 2 }); });
after(() => srv?.stop());

const TOKEN_REQUIRED = { message: 'Token required', code: 'TOKEN_REQUIRED' };
const INVALID = { message: 'Invalid token', code: 'INVALID_TOKEN' };
const FORBIDDEN = { message: 'Forbidden', code: 'FORBIDDEN' };

function assertRefused(err, want, label) {
  assert.equal(err.message, want.message, `${label}: message`);
  assert.equal(err.data?.code, want.code, `${label}: data.code (data ${JSON.stringify(err.data)})`);
}

const now = () => Math.floor(Date.now() / 1000);
const [h64, p64] = makeJwt({ userId: 'alice' }).split('.');

// [label, auth option (undefined = no auth object at all), expected]
const cases = [
  ['no auth object', undefined, TOKEN_REQUIRED],
  ['auth without token', {}, TOKEN_REQUIRED],
  ['token null', { token: null }, TOKEN_REQUIRED],
  ['token ""', { token: '' }, TOKEN_REQUIRED],
  ['other auth fields but no token', { userId: 'alice', role: 'admin' }, TOKEN_REQUIRED],
  ['bad signature (other secret)', { token: makeJwt({ userId: 'alice' }, { secret: 'not-the-secret' }) }, INVALID],
  ['signature tampered', { token: `${h64}.${p64}.${'A'.repeat(43)}` }, INVALID],
  ['payload tampered', { token: (() => { const [a, , c] = makeJwt({ userId: 'alice' }).split('.'); return `${a}.${Buffer.from(JSON.stringify({ userId: 'admin', role: 'admin', exp: now() + 60 })).toString('base64url')}.${c}`; })() }, INVALID],
  ['expired', { token: makeJwt({ userId: 'alice' }, { expiresIn: -60 }) }, INVALID],
  ['not yet valid (nbf in the future)', { token: makeJwt({ userId: 'alice' }, { notBeforeIn: 600 }) }, INVALID],
  ['alg none, no signature', { token: makeJwt({ userId: 'alice' }, { alg: 'none' }) }, INVALID],
  ['alg "None" with an HMAC signature', { token: makeJwt({ userId: 'alice' }, { alg: 'None', signAlg: 'HS256' }) }, INVALID],
  ['alg HS512 (not allowed)', { token: makeJwt({ userId: 'alice' }, { alg: 'HS512' }) }, INVALID],
  ['alg RS256 header, HMAC-signed with the secret', { token: makeJwt({ userId: 'alice' }, { alg: 'RS256', signAlg: 'HS256' }) }, INVALID],
  ['malformed: not a JWT', { token: 'not-a-jwt' }, INVALID],
  ['malformed: two segments', { token: `${h64}.${p64}` }, INVALID],
  ['malformed: four segments', { token: `${makeJwt({ userId: 'alice' })}.x` }, INVALID],
  ['malformed: garbage base64', { token: '!!!.@@@.###' }, INVALID],
  ['malformed: header not JSON', { token: `${Buffer.from('nope').toString('base64url')}.${p64}.sig` }, INVALID],
  ['token is a number', { token: 42 }, INVALID],
  ['token is an object', { token: { userId: 'alice' } }, INVALID],
  ['token is an array', { token: ['a'] }, INVALID],
  ['token is true', { token: true }, INVALID],
  ['no userId claim', { token: makeJwt({ role: 'admin' }) }, INVALID],
  ['userId ""', { token: makeJwt({ userId: '' }) }, INVALID],
  ['userId null', { token: makeJwt({ userId: null }) }, INVALID],
  ['userId negative', { token: makeJwt({ userId: -1 }) }, INVALID],
  ['userId fractional', { token: makeJwt({ userId: 1.5 }) }, INVALID],
  ['userId an object', { token: makeJwt({ userId: { id: 1 } }) }, INVALID],
  ['userId an array', { token: makeJwt({ userId: ['a'] }) }, INVALID],
  ['userId true', { token: makeJwt({ userId: true }) }, INVALID],
  ['userId of 129 chars', { token: makeJwt({ userId: 'u'.repeat(129) }) }, INVALID],
];

describe('CONNECT_ERROR cases on /', () => {
  for (const [label, auth, want] of cases) {
    test(label, async (t, ctx) => {
      const err = await ctx.connectError(srv, '/', { auth });
      assertRefused(err, want, label);
    });
  }
});

describe('every namespace is protected', () => {
  for (const nsp of ['/chat', '/admin']) {
    test(`${nsp}: no token`, async (t, ctx) => {
      assertRefused(await ctx.connectError(srv, nsp, { auth: {} }), TOKEN_REQUIRED, nsp);
    });
    test(`${nsp}: expired token`, async (t, ctx) => {
      assertRefused(await ctx.connectError(srv, nsp, { auth: { token: makeJwt({ userId: 'x', role: 'admin' }, { expiresIn: -5 }) } }), INVALID, nsp);
    });
  }
  test('over polling too', async (t, ctx) => {
    assertRefused(await ctx.connectError(srv, '/', { transports: ['polling'], auth: { token: '' } }), TOKEN_REQUIRED, 'polling');
    assertRefused(await ctx.connectError(srv, '/chat', { transports: ['polling'], auth: { token: 'x.y.z' } }), INVALID, 'polling');
  });
});

describe('accepted connections', () => {
  test('a valid token connects; identity and user room come from the token', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { userId: 'alice' });
    const who = (await ack(s, 'probe:whoami')).data;
    assert.equal(who.sid, s.id);
    assert.equal(who.nsp, '/');
    assert.equal(who.userId, 'alice');
    assert.ok(!who.role, `no role claim means an ordinary user (role ${JSON.stringify(who.role)})`);
    assert.ok(who.rooms.includes('user:alice'), JSON.stringify(who.rooms));
    assert.ok(who.rooms.includes(s.id));
  });

  test('a valid connection receives probe:hello with the configured greeting', async (t, ctx) => {
    const s = ctx.socket(srv, '/', { userId: 'greeted' });
    const hello = once(s, 'probe:hello');
    await once(s, 'connect');
    assert.deepEqual(await hello, [GREETING]);
  });

  test('numeric userId 42 becomes "42" and room user:42', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { auth: { token: makeJwt({ userId: 42 }) } });
    const who = (await ack(s, 'probe:whoami')).data;
    assert.equal(who.userId, '42');
    assert.ok(who.rooms.includes('user:42'), JSON.stringify(who.rooms));
    // and the room is reachable by that name
    const got = once(s, 'to-42');
    await ack(s, 'probe:emit', { rooms: ['user:42'], event: 'to-42', args: ['n'] });
    assert.deepEqual(await got, ['n']);
  });

  test('userId 0 is a valid id', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { auth: { token: makeJwt({ userId: 0 }) } });
    const who = (await ack(s, 'probe:whoami')).data;
    assert.equal(who.userId, '0');
    assert.ok(who.rooms.includes('user:0'));
  });

  test('userId of 128 chars is accepted', async (t, ctx) => {
    const id = 'v'.repeat(128);
    const s = await ctx.connect(srv, '/', { auth: { token: makeJwt({ userId: id }) } });
    assert.equal((await ack(s, 'probe:whoami')).data.userId, id);
  });

  test('a token without exp is accepted', async (t, ctx) => {
    const s = await ctx.connect(srv, '/', { auth: { token: makeJwt({ userId: 'noexp' }, { noExp: true }) } });
    assert.equal((await ack(s, 'probe:whoami')).data.userId, 'noexp');
  });

  test('other auth fields are ignored: identity comes from the token only', async (t, ctx) => {
    const auth = { token: token('bob'), userId: 'mallory', role: 'admin' };
    const s = await ctx.connect(srv, '/', { auth });
    const who = (await ack(s, 'probe:whoami')).data;
    assert.equal(who.userId, 'bob');
    assert.ok(!who.rooms.includes('user:mallory'));
    assertRefused(await ctx.connectError(srv, '/admin', { auth }), FORBIDDEN, 'admin with auth.role');
  });

  test('the same user on two sockets shares the user room', async (t, ctx) => {
    const a = await ctx.connect(srv, '/', { userId: 'carol' });
    const b = await ctx.connect(srv, '/', { userId: 'carol', transports: ['polling'] });
    const ia = new Inbox(a);
    const ib = new Inbox(b);
    const ev = `c-${rnd()}`;
    await ack(a, 'probe:emit', { rooms: ['user:carol'], event: ev, args: [1] });
    await ia.wait(ev);
    await ib.wait(ev);
  });
});

describe('/admin', () => {
  test('role admin connects to /admin', async (t, ctx) => {
    const s = await ctx.connect(srv, '/admin', { userId: 'root', role: 'admin' });
    const who = (await ack(s, 'probe:whoami')).data;
    assert.equal(who.nsp, '/admin');
    assert.equal(who.userId, 'root');
    assert.equal(who.role, 'admin');
    assert.ok(who.rooms.includes('user:root'));
  });

  test('no role → Forbidden', async (t, ctx) => {
    assertRefused(await ctx.connectError(srv, '/admin', { userId: 'plain' }), FORBIDDEN, 'no role');
  });

  test('role user → Forbidden', async (t, ctx) => {
    assertRefused(await ctx.connectError(srv, '/admin', { userId: 'u', role: 'user' }), FORBIDDEN, 'role user');
  });

  test('role "Admin" (case differs) → Forbidden', async (t, ctx) => {
    assertRefused(await ctx.connectError(srv, '/admin', { userId: 'u', role: 'Admin' }), FORBIDDEN, 'role Admin');
  });

  test('a non-admin is refused on /admin but stays connected on / over the same connection', async (t, ctx) => {
    const manager = new Manager(srv.url, { transports: ['websocket'], reconnection: false, timeout: 5000 });
    const auth = { token: token('dave', { role: 'user' }) };
    const root = ctx.track(manager.socket('/', { auth }));
    await once(root, 'connect');
    const admin = ctx.track(manager.socket('/admin', { auth }));
    const [err] = await once(admin, 'connect_error');
    assertRefused(err, FORBIDDEN, 'multiplexed /admin');
    assert.deepEqual(await ack(root, 'bench:echo', 'still ok'), 'still ok');
    assert.equal(root.connected, true);
  });

  test('an admin token is also fine on the other namespaces', async (t, ctx) => {
    const s = await ctx.connect(srv, '/chat', { userId: 'root2', role: 'admin' });
    const who = (await ack(s, 'probe:whoami')).data;
    assert.equal(who.nsp, '/chat');
    assert.equal(who.role, 'admin');
  });
});

test('the secret in use is the configured one (sanity check of the test JWT maker)', async (t, ctx) => {
  const s = await ctx.connect(srv, '/', { auth: { token: makeJwt({ userId: 'sane' }, { secret: SECRET }) } });
  assert.ok(s.connected);
});

describe('user lookup in Redis (auth_jwt_user_key)', () => {
  test('an existing user connects; a missing one gets USER_NOT_FOUND; Redis away: AUTH_FAILED', { timeout: 60000 }, async (t, ctx) => {
    const redis = await startRedis({ t });
    await redis.cli('SET', 'depth:user:alice', '1');
    await redis.cli('SADD', 'depth:user:42', 'x');  // any type: the key exists
    const srv2 = await ctx.startServer({ workers: 2, extraServer: `${redisLines(redis)}\nauth_jwt_user_key "user:{id}";` });
    const s = await ctx.connect(srv2, '/chat', { userId: 'alice' });
    assert.equal((await ack(s, 'probe:whoami')).data.userId, 'alice');
    await ctx.connect(srv2, '/', { auth: { token: token(42) } });
    assertRefused(await ctx.connectError(srv2, '/', { userId: 'bob' }), { message: 'User not found', code: 'USER_NOT_FOUND' }, 'missing user');
    // Still checked per namespace, and bad tokens are refused before any lookup.
    assertRefused(await ctx.connectError(srv2, '/chat', { auth: { token: makeJwt({ userId: 'alice' }, { secret: 'x' }) } }), INVALID, 'bad token');
    await redis.stop();
    await waitFor(async () => {
      const err = await ctx.connectError(srv2, '/', { userId: 'alice' }).catch(() => null);
      return err?.data?.code === 'AUTH_FAILED' && err.message === 'Authentication failed';
    }, { ms: 10000, what: 'AUTH_FAILED while Redis is away' });
    // Connected sockets are not affected.
    assert.equal((await ack(s, 'probe:whoami')).data.userId, 'alice');
  });

  test('-t refuses an auth_jwt_user_key pattern without {id}, with file:line', async (t, ctx) => {
    const d = tmpDir();
    const conf = writeConf(d, { port: 1, extraServer: 'auth_jwt_user_key "user:";' });
    const r = testConfig(conf);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /depth-realtime\.conf:\d+: .*\{id\}/);
  });
});
