// Tokens expire on live connections (auth_jwt_expiry, auth_jwt_refresh_before):
// auth:expiring before exp, auth:refresh to extend the lifetime of every socket of
// the user on the connection, TOKEN_EXPIRED and a server disconnect at exp, and no
// event reaching a handler after it. Lifetimes are a few seconds (exp = now + 3 s,
// refresh_before 2 s) and every wait is for an event, never a fixed sleep.
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import {
  test, startServer, ack, once, makeJwt, Manager, waitFor, startRedis, redisLines, connected, refused,
} from './lib/harness.mjs';

// A token for `userId` that expires `seconds` (whole) from the next second on: its
// lifetime is between seconds and seconds + 1.
function shortToken(userId, seconds, extra = {}, opts = {}) {
  const exp = Math.ceil(Date.now() / 1000) + seconds;
  return { tok: makeJwt({ userId, exp, ...extra }, opts), exp };
}

// Sockets of one Engine.IO connection (a Manager), WebSocket only.
function manager(srv, ctx) {
  const m = new Manager(srv.url, { transports: ['websocket'], reconnection: false, timeout: 5000, forceNew: true });
  ctx.defer(() => m._close?.());
  return m;
}
function sock(ctx, m, nsp, tok) {
  return ctx.track(m.socket(nsp, { auth: { token: tok } }));
}

// Records when the TOKEN_EXPIRED error and the disconnect arrive.
function watchEnd(s) {
  const end = { error: null, errorAt: 0, reason: null, at: 0 };
  end.done = new Promise((resolve) => {
    s.on('error', (e) => { if (!end.error) { end.error = e; end.errorAt = Date.now(); } });
    s.once('disconnect', (reason) => { end.reason = reason; end.at = Date.now(); resolve(end); });
  });
  return end;
}

describe('token expiry on live connections', () => {
  let srv;
  before(async () => { srv = await startServer({ workers: 2, extraServer: 'auth_jwt_refresh_before 2s;' }); });
  after(() => srv?.stop());

  test('auth:expiring before exp, then TOKEN_EXPIRED and "io server disconnect" at exp', async (t, ctx) => {
    const { tok, exp } = shortToken('exp-a', 2);
    const s = sock(ctx, manager(srv, ctx), '/chat', tok);
    const expiring = once(s, 'auth:expiring', 4000);
    const end = watchEnd(s);
    await connected(s);
    const [warn] = await expiring;
    const warnedAt = Date.now();
    assert.deepEqual(warn, { expiresAt: exp * 1000 });
    // refresh_before 2 s: warned at exp - 2 s (some slack for the loop and the wire)
    assert.ok(warnedAt >= exp * 1000 - 2000 - 50 && warnedAt <= exp * 1000 - 2000 + 500,
      `warned ${exp * 1000 - warnedAt} ms before exp`);
    await end.done;
    assert.equal(end.reason, 'io server disconnect');
    assert.deepEqual(end.error, { code: 'TOKEN_EXPIRED', message: 'Token expired' });
    assert.ok(end.errorAt <= end.at, 'the error came before the disconnect');
    assert.ok(end.at >= exp * 1000 - 50, `disconnected ${exp * 1000 - end.at} ms before exp`);
    assert.ok(end.at <= exp * 1000 + 500, `disconnected ${end.at - exp * 1000} ms after exp`);
    // Connecting again with the same token (the client keeps its pid: a recovery try) is refused.
    s.connect();
    const err = await refused(s);
    assert.equal(err.data?.code, 'INVALID_TOKEN');
  });

  test('less than refresh_before left at CONNECT: auth:expiring at once', async (t, ctx) => {
    const { tok, exp } = shortToken('exp-b', 1);  // 1 to 2 s left, refresh_before 2 s
    const s = sock(ctx, manager(srv, ctx), '/', tok);
    const expiring = once(s, 'auth:expiring', 2000);
    const t0 = Date.now();
    await connected(s);
    const [warn] = await expiring;
    assert.deepEqual(warn, { expiresAt: exp * 1000 });
    assert.ok(Date.now() - t0 < 500, `warned ${Date.now() - t0} ms after CONNECT`);
  });

  test('auth:refresh on one namespace extends every socket of the user on that connection', async (t, ctx) => {
    const { tok, exp } = shortToken('exp-c', 2);
    const m = manager(srv, ctx);
    const root = sock(ctx, m, '/', tok);
    const chat = sock(ctx, m, '/chat', tok);
    const rootWarned = once(root, 'auth:expiring', 4000);
    const chatWarned = once(chat, 'auth:expiring', 4000);
    await Promise.all([connected(root), connected(chat)]);
    // The control: the same user and token on another connection, never refreshed.
    const other = sock(ctx, manager(srv, ctx), '/chat', tok);
    const otherEnd = watchEnd(other);
    await connected(other);
    const ends = [watchEnd(root), watchEnd(chat)];

    await Promise.all([rootWarned, chatWarned]);
    const fresh = shortToken('exp-c', 60);
    const reply = await ack(chat, 'auth:refresh', { token: fresh.tok });
    assert.deepEqual(reply, { data: { expiresAt: fresh.exp * 1000 } });

    await otherEnd.done;  // the old exp has passed
    assert.equal(otherEnd.reason, 'io server disconnect');
    assert.equal(otherEnd.error?.code, 'TOKEN_EXPIRED');
    assert.ok(otherEnd.at >= exp * 1000 - 50);
    for (const s of [root, chat]) {
      assert.equal(s.connected, true, `${s.nsp} was disconnected`);
      assert.deepEqual(await ack(s, 'bench:echo', { n: 1 }), { n: 1 }, `${s.nsp} still served`);
    }
    assert.deepEqual(ends.map((e) => e.reason), [null, null]);
  });

  test('a bad, expired or other-user refresh token is INVALID_TOKEN and the old expiry stands', async (t, ctx) => {
    const { tok, exp } = shortToken('exp-d', 2);
    const s = sock(ctx, manager(srv, ctx), '/chat', tok);
    const end = watchEnd(s);
    await connected(s);
    const tries = [
      ['another user', makeJwt({ userId: 'someone-else', exp: exp + 60 })],
      ['wrong signature', makeJwt({ userId: 'exp-d', exp: exp + 60 }, { secret: 'not-the-secret' })],
      ['expired', makeJwt({ userId: 'exp-d' }, { expiresIn: -10 })],
      ['another role', makeJwt({ userId: 'exp-d', role: 'admin', exp: exp + 60 })],
      ['not a string', 42],
      ['no token', undefined],
    ];
    for (const [label, bad] of tries) {
      const reply = await ack(s, 'auth:refresh', bad === undefined ? {} : { token: bad });
      assert.equal(reply.error?.code, 'INVALID_TOKEN', `${label}: ${JSON.stringify(reply)}`);
      assert.equal(typeof reply.error.message, 'string');
      assert.equal(reply.data, undefined, label);
    }
    await end.done;
    assert.equal(end.reason, 'io server disconnect');
    assert.equal(end.error?.code, 'TOKEN_EXPIRED');
    assert.ok(end.at >= exp * 1000 - 50 && end.at <= exp * 1000 + 500, `disconnected ${end.at - exp * 1000} ms after exp`);
  });

  test('no event reaches a handler after exp', async (t, ctx) => {
    const { tok, exp } = shortToken('exp-e', 1);
    const s = sock(ctx, manager(srv, ctx), '/chat', tok);
    const end = watchEnd(s);
    await connected(s);
    // A steady stream of acked events across exp; every answer must be for an event
    // handled before exp (sent back, so received, before exp plus the way back).
    const answered = [];
    let n = 0;
    const timer = setInterval(() => {
      const i = n++;
      s.emit('bench:echo', { i }, () => answered.push({ i, at: Date.now() }));
    }, 10);
    try { await end.done; } finally { clearInterval(timer); }
    assert.ok(answered.length > 10, `only ${answered.length} answers before exp`);
    const late = answered.filter((a) => a.at > exp * 1000 + 250);
    assert.deepEqual(late, [], 'answers to events after exp');
    assert.ok(answered.every((a) => a.at <= end.at), 'an answer after the disconnect');
  });
});

describe('token expiry with a user lookup (auth_jwt_user_key, real Redis)', () => {
  let srv, redis;
  before(async () => {
    redis = await startRedis();
    srv = await startServer({
      workers: 1,
      extraServer: `${redisLines(redis)}\nauth_jwt_refresh_before 2s;\nauth_jwt_user_key "user:{id}";`,
    });
  });
  after(async () => { await srv?.stop(); await redis?.stop(); });

  test('a refresh is answered only while the user exists', async (t, ctx) => {
    await redis.cli('SET', 'depth:user:exp-f', '1');
    const { tok } = shortToken('exp-f', 30);
    const s = sock(ctx, manager(srv, ctx), '/chat', tok);
    await connected(s);
    const fresh = shortToken('exp-f', 60);
    assert.deepEqual(await ack(s, 'auth:refresh', { token: fresh.tok }), { data: { expiresAt: fresh.exp * 1000 } });
    await redis.cli('DEL', 'depth:user:exp-f');
    const reply = await ack(s, 'auth:refresh', { token: shortToken('exp-f', 90).tok });
    assert.equal(reply.error?.code, 'INVALID_TOKEN');
  });
});

describe('auth_jwt_expiry off', () => {
  let srv;
  before(async () => { srv = await startServer({ workers: 1, extraServer: 'auth_jwt_expiry off;' }); });
  after(() => srv?.stop());

  test('a socket outlives its token and gets no auth:expiring', async (t, ctx) => {
    const { tok, exp } = shortToken('exp-g', 1);
    const s = sock(ctx, manager(srv, ctx), '/', tok);
    const events = [];
    s.onAny((e) => events.push(e));
    await connected(s);
    // Past exp by the clock (the one wait here: nothing is to happen).
    await waitFor(() => Date.now() > exp * 1000 + 300, { ms: 4000, what: 'exp to pass' });
    assert.deepEqual(await ack(s, 'bench:echo', { n: 2 }), { n: 2 });
    assert.equal(s.connected, true);
    assert.deepEqual(events.filter((e) => e === 'auth:expiring' || e === 'error'), []);
  });
});
