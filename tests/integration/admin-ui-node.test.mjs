// The Socket.IO Admin UI protocol, held against the real thing: the same client
// actions are run against a Node socket.io server instrumented by the
// @socket.io/admin-ui package (0.5.1) and against the daemon, and the events a
// dashboard receives from each (names, payload shapes, order) must be the same.
// Also with `parser msgpack;` and the dashboard's msgpack option.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { after, before, describe } from 'node:test';
import { Server } from 'socket.io';
import adminUi from '@socket.io/admin-ui';
import msgpackParser from 'socket.io-msgpack-parser';
import { test, io, Manager, token, connected } from './lib/harness.mjs';

const { instrument } = adminUi;
const MODULES = ['auth_jwt.so', 'admin.so'];
const UI_LINES = [
  'namespace /admin-ui { auth_jwt off; }',
  'admin_ui_namespace /admin-ui;',
  'admin_ui_auth off;',
  'recovery_window 0;',  // as Node's default: no offsets appended to events
];
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

// The reference: a Node app that authenticates as auth_jwt does (the token's
// userId, role and `projects` claim into socket.data, the user room joined).
async function nodeServer({ parser } = {}) {
  const httpServer = http.createServer();
  const nio = new Server(httpServer, parser ? { parser } : {});
  const auth = (socket, next) => {
    const claims = JSON.parse(Buffer.from(socket.handshake.auth.token.split('.')[1], 'base64url'));
    socket.data.userId = String(claims.userId);
    socket.data.role = claims.role ?? '';
    if (claims.projects) socket.data['claim:projects'] = claims.projects;
    socket.join(`user:${claims.userId}`);
    next();
  };
  nio.of('/').use(auth);
  nio.of('/chat').use(auth);
  instrument(nio, { auth: false, namespaceName: '/admin-ui', mode: 'development' });
  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${httpServer.address().port}`,
    close: () => new Promise((resolve) => { nio.close(); resolve(); }),
  };
}

// Records everything a dashboard socket receives, with waits for what must come.
function dashboard(url, opts) {
  const s = io(`${url}/admin-ui`, { transports: ['websocket'], forceNew: true, reconnection: false, ...opts });
  const got = [];
  s.onAny((event, ...args) => got.push([event, args]));
  const wait = (event, pred = () => true, ms = 5000) => new Promise((resolve, reject) => {
    const deadline = Date.now() + ms;
    const poll = () => {
      const hit = got.find(([e, a]) => e === event && pred(a));
      if (hit) return resolve(hit[1]);
      if (Date.now() > deadline) {
        return reject(new Error(`${url}: no dashboard event "${event}" matching ${pred} in ${ms} ms; got ` +
          JSON.stringify(got.filter(([e]) => e !== 'server_stats').map(([e, a]) => [e, ...a.slice(0, 3)]))));
      }
      setTimeout(poll, 5);
    };
    poll();
  });
  return { s, got, wait };
}

// The same client actions against either server; returns what the dashboard got.
async function scenario(url, { parser } = {}) {
  const opened = [];
  const client = (nsp, userId, extra = {}) => {
    const c = io(`${url}${nsp}`, {
      transports: ['websocket'], forceNew: true, reconnection: false, ...(parser ? { parser } : {}),
      auth: { token: token(userId, extra) },
    });
    opened.push(c);
    return c;
  };
  const dash = dashboard(url, parser ? { parser } : {});
  opened.push(dash.s);
  try {
    await connected(dash.s);
    await dash.wait('all_sockets');
    const names = new Map([[dash.s.id, 'DASH']]);
    const clients = new Map([[dash.s.io.engine.id.slice(0, 12), 'DASH-CLIENT']]);
    const known = (label, s) => { names.set(s.id, label); clients.set(s.io.engine.id.slice(0, 12), `${label}-CLIENT`); };

    // A connects, sends, gets an emit, joins and leaves a room, and leaves.
    const a = client('/chat', 'ui-a', { projects: ['room-a', 'room-b'] });
    await connected(a);
    known('A', a);
    await dash.wait('socket_connected', ([x]) => x.id === a.id);
    a.emit('hello', { a: 1 }, 'two');
    await dash.wait('event_received', ([, id]) => id === a.id);
    const notice = new Promise((resolve) => a.once('notice', resolve));
    dash.s.emit('emit', '/chat', a.id, 'notice', { n: 1 });
    await notice;
    await dash.wait('event_sent', ([, id]) => id === a.id);
    dash.s.emit('join', '/chat', 'room-x', a.id);
    await dash.wait('room_joined', ([, room, id]) => room === 'room-x' && id === a.id);
    dash.s.emit('leave', '/chat', 'room-x', a.id);
    await dash.wait('room_left', ([, room, id]) => room === 'room-x' && id === a.id);
    const aId = a.id;  // the client forgets it on disconnect
    a.disconnect();
    await dash.wait('room_left', ([, room, id]) => room === aId && id === aId);
    await dash.wait('room_left', ([, room, id]) => room === 'user:ui-a' && id === aId);

    // B: two namespaces on one connection, closed from the dashboard (close = true).
    const m = new Manager(url, { transports: ['websocket'], forceNew: true, reconnection: false, ...(parser ? { parser } : {}) });
    const bRoot = m.socket('/', { auth: { token: token('ui-b') } });
    opened.push(bRoot);
    await connected(bRoot);
    known('B/', bRoot);
    await dash.wait('socket_connected', ([x]) => x.id === bRoot.id);
    const bChat = m.socket('/chat', { auth: { token: token('ui-b') } });
    opened.push(bChat);
    await connected(bChat);
    names.set(bChat.id, 'B/chat');
    await dash.wait('socket_connected', ([x]) => x.id === bChat.id);
    const bIds = [bRoot.id, bChat.id];
    dash.s.emit('_disconnect', '/', true, bRoot.id);
    for (const b of bIds) await dash.wait('room_left', ([, room, id]) => room === b && id === b);

    // C: one namespace socket disconnected by the dashboard (close = false).
    const c = client('/chat', 'ui-c');
    await connected(c);
    known('C', c);
    await dash.wait('socket_connected', ([x]) => x.id === c.id);
    const cId = c.id;
    dash.s.emit('_disconnect', '/chat', false, cId);
    await dash.wait('room_left', ([, room, id]) => room === cId && id === cId);

    // D: the client's transport goes.
    const d = client('/chat', 'ui-d');
    await connected(d);
    known('D', d);
    await dash.wait('socket_connected', ([x]) => x.id === d.id);
    const dId = d.id;
    d.io.engine.close();
    await dash.wait('room_left', ([, room, id]) => room === dId && id === dId);
    await dash.wait('server_stats', () => true, 4000);  // every 2 s on both
    return { got: dash.got, names, clients };
  } finally {
    for (const s of opened) { try { s.disconnect(); s.io.engine?.close(); } catch { /* gone */ } }
  }
}

// What may differ between two servers: ids, times, addresses, header values.
function normalize({ got, names, clients }) {
  const id = (x) => names.get(x) ?? (typeof x === 'string' && x.length === 20 ? 'OTHER' : x);
  const socket = (s) => ({
    ...s,
    id: id(s.id),
    clientId: clients.get(s.clientId) ?? 'OTHER-CLIENT',
    handshake: Object.keys(s.handshake).sort(),
    rooms: s.rooms.map(id),
  });
  const ts = (x) => (typeof x === 'string' && ISO.test(x)) || x instanceof Date ? 'TS' : x;
  const out = [];
  for (const [event, args] of got) {
    if (event === 'server_stats') continue;  // on a timer: compared by shape below
    // Node reports socket.data set by its middleware as socket_updated before
    // socket_connected; the daemon's data is complete at socket_connected.
    if (event === 'socket_updated' && 'data' in args[0]) continue;
    switch (event) {
      case 'all_sockets': out.push([event, args[0].map(socket).filter((s) => s.id === 'DASH')]); break;
      case 'socket_connected': out.push([event, socket(args[0]), ts(args[1])]); break;
      case 'room_joined': case 'room_left': out.push([event, args[0], id(args[1]), id(args[2]), ts(args[3])]); break;
      case 'socket_disconnected': out.push([event, args[0], id(args[1]), args[2], ts(args[3])]); break;
      case 'event_received': case 'event_sent': out.push([event, args[0], id(args[1]), args[2], ts(args[3])]); break;
      default: out.push([event, ...args]);
    }
  }
  return out;
}

function statsShape(got) {
  const st = got.find(([e]) => e === 'server_stats')?.[1][0];
  assert.ok(st, 'no server_stats');
  return Object.fromEntries(Object.entries(st).map(([k, v]) => [k, Array.isArray(v) ? 'array' : typeof v]));
}

describe('the dashboard gets from the daemon what it gets from Node', () => {
  for (const mode of ['json', 'msgpack']) {
    test(`${mode} parser: the same events, payloads and order`, { timeout: 40000 }, async (t, ctx) => {
      const parser = mode === 'msgpack' ? msgpackParser : undefined;
      const node = await nodeServer({ parser });
      ctx.defer(() => node.close());
      const srv = await ctx.startServer({
        workers: 1, modules: MODULES, probe: false,
        extraServer: [...UI_LINES, ...(parser ? ['parser msgpack;'] : [])].join('\n'),
      });
      const fromNode = await scenario(node.url, { parser });
      const fromUs = await scenario(srv.url, { parser });
      const want = normalize(fromNode);
      const have = normalize(fromUs);
      // Spot checks first, for a readable failure; then the whole sequence.
      const a = have.find(([e, s]) => e === 'socket_connected' && s.id === 'A');
      assert.deepEqual(a?.[1].data, { userId: 'ui-a', role: '', 'claim:projects': ['room-a', 'room-b'] });
      assert.deepEqual(have.filter(([e]) => e === 'socket_disconnected').map((x) => x[3]),
        want.filter(([e]) => e === 'socket_disconnected').map((x) => x[3]));
      assert.deepEqual(have, want);
      assert.deepEqual(statsShape(fromUs.got), statsShape(fromNode.got));
    });
  }
});
