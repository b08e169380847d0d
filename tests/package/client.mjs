// Connects the official socket.io-client to an installed depth-realtime (used
// by tests/package/run.sh against the service booted in systemd-nspawn).
//
//   node tests/package/client.mjs URL SECRET
//
// Checks: a CONNECT without a token is refused with TOKEN_REQUIRED, one with an
// HS256 token signed with SECRET connects over WebSocket and gets a socket id.
// Prints one line per check; exit 0 when both pass.
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// socket.io-client lives in tests/node_modules (npm ci in tests/).
const require = createRequire(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'package.json'));
const { io } = require('socket.io-client');

const [url, secret] = process.argv.slice(2);
if (!url || !secret) {
  console.error('usage: client.mjs URL SECRET');
  process.exit(2);
}

const b64url = (s) => Buffer.from(s).toString('base64url');
function token(payload) {
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`;
}

function attempt(opts) {
  return new Promise((resolve) => {
    const socket = io(url, { reconnection: false, timeout: 5000, ...opts });
    const done = (r) => { clearTimeout(timer); socket.close(); resolve(r); };
    const timer = setTimeout(() => done({ error: 'timeout' }), 8000);
    socket.on('connect', () => done({ id: socket.id, transport: socket.io.engine.transport.name }));
    socket.on('connect_error', (err) => done({ error: err.message, code: err.data?.code }));
  });
}

let ok = true;
const anon = await attempt({});
if (anon.code === 'TOKEN_REQUIRED') console.log('client: no token -> connect_error TOKEN_REQUIRED (ok)');
else { ok = false; console.log('client: no token -> unexpected', JSON.stringify(anon)); }

const now = Math.floor(Date.now() / 1000);
const authed = await attempt({ auth: { token: token({ userId: 'pkgtest', role: 'user', iat: now, exp: now + 300 }) } });
if (authed.id) {
  console.log(`client: token -> connected, sid ${authed.id} (ok)`);
} else { ok = false; console.log('client: token -> unexpected', JSON.stringify(authed)); }

const ws = await attempt({ transports: ['websocket'], auth: { token: token({ userId: 'pkgtest', iat: now, exp: now + 300 }) } });
if (ws.id && ws.transport === 'websocket') console.log(`client: websocket only -> connected, sid ${ws.id} (ok)`);
else { ok = false; console.log('client: websocket only -> unexpected', JSON.stringify(ws)); }

process.exit(ok ? 0 : 1);
