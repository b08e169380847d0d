// A hung worker (issue 9): the master heartbeats every worker over its channel;
// one whose loop stops answering for worker_heartbeat_timeout (here: stopped
// with SIGSTOP) gets no new connections, is killed and replaced, and the
// master says so. Clients that connected meanwhile get through (those caught
// by the hung worker are cut when it is killed and reconnect to a live one);
// a session of the hung worker is unknown afterwards (the normal 400).
import assert from 'node:assert/strict';
import {
  test, waitFor, withTimeout, workerOf, isAlive, pollingHandshake, pollPost,
} from './lib/harness.mjs';

const TIMEOUT_MS = 1000;

// slot -> pid, from the master's "started worker N (pid P)" lines.
function startedWorkers(srv) {
  const out = new Map();
  for (const m of srv.logText().matchAll(/started worker (\d+) \(pid (\d+)\)/g)) out.set(Number(m[1]), Number(m[2]));
  return out;
}

// A polling session whose sid names worker id `id` (the sid's first byte).
async function sessionOf(srv, id) {
  for (let i = 0; i < 40; i++) {
    const { sid } = await pollingHandshake(srv);
    if (Buffer.from(sid, 'base64url')[0] === id) return sid;
  }
  throw new Error(`no polling session landed on worker ${id}`);
}

const connects = (s, ms) => withTimeout(new Promise((resolve) => {
  if (s.connected) resolve(s);
  else s.once('connect', () => resolve(s));
}), ms, `connect of ${s.auth?.token ? 'a client' : s.id}`);

test('a worker stopped with SIGSTOP is noticed within the heartbeat timeout, gets no new connections and is replaced', { timeout: 60000 }, async (t, ctx) => {
  const srv = await ctx.startServer({ workers: 2, extraMain: `worker_heartbeat_timeout ${TIMEOUT_MS}ms;` });
  await waitFor(() => startedWorkers(srv).size === 2, { what: 'both workers started' });
  const victim = startedWorkers(srv).get(0);
  const survivor = startedWorkers(srv).get(1);
  const hungSid = await sessionOf(srv, 0);
  const liveSid = await sessionOf(srv, 1);
  // Alive workers keep answering: nobody is killed while idle for a few timeouts.
  await new Promise((r) => setTimeout(r, 3 * TIMEOUT_MS));
  assert.deepEqual(srv.workerPids().sort(), [victim, survivor].sort(), 'no worker replaced while all answer');

  const from = srv.logs.length;
  process.kill(victim, 'SIGSTOP');
  ctx.defer(() => { try { process.kill(victim, 'SIGCONT'); } catch { /* killed */ } });
  const stoppedAt = Date.now();

  // Opened during the hang: every one connects within a few seconds of the timeout.
  const during = Array.from({ length: 8 }, (_, i) => ctx.socket(srv, '/', {
    userId: `during${i}`, reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, timeout: 3000,
  }));
  await Promise.all(during.map((s) => connects(s, TIMEOUT_MS + 5000)));
  const took = Date.now() - stoppedAt;

  // The master noticed, said why, killed the hung worker and started another in its slot.
  await waitFor(() => srv.logs.slice(from).some((l) => new RegExp(`worker 0 \\(pid ${victim}\\) has not answered for [\\d.]+s \\(worker_heartbeat_timeout\\): it is hung`).test(l)),
    { ms: 5000, what: 'the hang in the master log' });
  const replacement = await waitFor(() => {
    const w = srv.workerPids();
    return w.length === 2 && !w.includes(victim) && w.includes(survivor) ? w.find((p) => p !== survivor) : null;
  }, { ms: 5000, what: 'a new worker pid in slot 0' });
  assert.equal(isAlive(victim), false, 'the hung worker was killed');
  await waitFor(() => srv.logs.slice(from).some((l) => /respawning worker 0/.test(l)), { ms: 3000, what: '"respawning worker 0"' });
  assert.equal(startedWorkers(srv).get(0), replacement);
  for (const s of during) assert.ok([survivor, replacement].includes(await workerOf(srv, s)));
  assert.ok(took < TIMEOUT_MS + 5000, `clients connected ${took} ms after the stop`);

  // New connections now: all of them go to live workers, the replacement included.
  const after = [];
  for (let i = 0; i < 6; i++) after.push(await ctx.connect(srv, '/', { userId: `after${i}` }));
  const owners = new Set();
  for (const s of after) owners.add(await workerOf(srv, s));
  assert.deepEqual([...owners].sort(), [survivor, replacement].sort());

  // The hung worker's session is gone (the normal 400); the other worker's stays.
  const gone = await pollPost(srv, hungSid, '6');
  assert.equal(gone.status, 400);
  assert.equal(gone.text, JSON.stringify({ code: 1, message: 'Session ID unknown' }));
  const kept = await pollPost(srv, liveSid, '6');
  assert.equal(kept.status, 200, kept.text);
  assert.equal(srv.exitInfo, null, 'the master exited');
});

test('worker_heartbeat_timeout 0 turns the watchdog off: a stopped worker is left alone', { timeout: 30000 }, async (t, ctx) => {
  const srv = await ctx.startServer({ workers: 2, extraMain: 'worker_heartbeat_timeout 0;' });
  const [victim] = srv.workerPids();
  process.kill(victim, 'SIGSTOP');
  ctx.defer(() => { try { process.kill(victim, 'SIGCONT'); } catch { /* gone */ } });
  await new Promise((r) => setTimeout(r, 2500));
  assert.ok(isAlive(victim) && srv.workerPids().includes(victim));
  assert.doesNotMatch(srv.logText(), /has not answered/);
  process.kill(victim, 'SIGCONT');
});
