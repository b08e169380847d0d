// Redis topologies beyond one server, on free loopback ports, for the
// Sentinel (and Cluster) tests: real redis-server and redis-sentinel processes.
//   const topo = await startSentinelTopology({ t });
//   topo.master / topo.replica (startRedis() handles), topo.sentinels[i].port,
//   topo.directive() ("redis sentinel=... master=NAME;"), topo.masterPort(),
//   topo.waitSwitched(fromPort) (the sentinels agree on a new master)
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { startRedis, freePort, tmpDir, waitFor, withTimeout } from './harness.mjs';

const live = new Set();
process.on('exit', () => {
  for (const c of live) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
});

// redis-cli against a port; resolves its stdout.
export function cli(port, ...args) {
  return new Promise((resolve, reject) => {
    const p = spawn('redis-cli', ['-p', String(port), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (c) => { out += c; });
    p.stderr.on('data', (c) => { err += c; });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 && !/Could not connect|^ERR/.test(err + out) ? resolve(out) : reject(new Error(`redis-cli -p ${port} ${args.join(' ')}: ${err || out}`))));
  });
}

// One of a `field:value` INFO section.
export async function info(port, section, field) {
  const text = await cli(port, 'INFO', section);
  return new RegExp(`^${field}:(.*?)\\r?$`, 'm').exec(text)?.[1];
}

// A redis-sentinel watching `masterName` at 127.0.0.1:masterPort.
async function startSentinel({ dir, masterName, masterPort, quorum, downAfterMs, failoverTimeoutMs }) {
  const port = await freePort();
  const conf = path.join(dir, `sentinel-${port}.conf`);
  // Sentinel rewrites its file: it must be its own and writable.
  fs.writeFileSync(conf, [
    `port ${port}`,
    'bind 127.0.0.1',
    `dir ${dir}`,
    `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} ${quorum}`,
    `sentinel down-after-milliseconds ${masterName} ${downAfterMs}`,
    `sentinel failover-timeout ${masterName} ${failoverTimeoutMs}`,
    `sentinel parallel-syncs ${masterName} 1`,
    '',
  ].join('\n'));
  const logs = [];
  const child = spawn('redis-sentinel', [conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => { live.delete(child); resolve({ code, signal }); }));
  for (const s of [child.stdout, child.stderr]) s.on('data', (c) => logs.push(...c.toString('utf8').split('\n').filter(Boolean)));
  const s = {
    port,
    logs,
    cli: (...args) => cli(port, ...args),
    async stop() {
      try { child.kill('SIGTERM'); } catch { /* gone */ }
      await withTimeout(exited, 5000, 'sentinel exit').catch(() => child.kill('SIGKILL'));
    },
  };
  await waitFor(() => s.cli('PING').then((o) => o.trim() === 'PONG'), { ms: 5000, what: `redis-sentinel on ${port}` });
  return s;
}

// 1 master, 1 replica, `sentinels` sentinels (quorum 2), with short
// down-after and failover timeouts so that a failover takes a few seconds.
export async function startSentinelTopology({
  t, masterName = 'mymaster', sentinels = 3, downAfterMs = 1000, failoverTimeoutMs = 3000,
} = {}) {
  const dir = tmpDir('dr-sentinel-');
  // A replica writes the RDB it receives: into our directory, not the cwd.
  const master = await startRedis({ args: ['--dir', dir] });
  const replica = await startRedis({ args: ['--dir', dir, '--replicaof', '127.0.0.1', String(master.port)] });
  await waitFor(async () => (await info(replica.port, 'replication', 'master_link_status')) === 'up',
    { ms: 10000, what: 'the replica in sync' });
  const list = [];
  for (let i = 0; i < sentinels; i++) {
    list.push(await startSentinel({ dir, masterName, masterPort: master.port, quorum: 2, downAfterMs, failoverTimeoutMs }));
  }
  const topo = {
    masterName,
    master,
    replica,
    sentinels: list,
    directive(extra = '') {
      return `redis sentinel=${list.map((s) => `127.0.0.1:${s.port}`).join(',')} master=${masterName}${extra ? ` ${extra}` : ''};`;
    },
    // The master's port as the first sentinel sees it.
    async masterPort(s = list[0]) {
      const out = (await s.cli('SENTINEL', 'get-master-addr-by-name', masterName)).trim().split('\n');
      return Number(out[1]);
    },
    // Every sentinel names a master other than `fromPort`.
    async waitSwitched(fromPort, { ms = 30000 } = {}) {
      await waitFor(async () => {
        const ports = await Promise.all(list.map((s) => topo.masterPort(s).catch(() => fromPort)));
        return ports.every((p) => p !== fromPort && p === ports[0]);
      }, { ms, every: 100, what: `the sentinels to fail over from ${fromPort}` });
      return topo.masterPort();
    },
    async stop() {
      await Promise.all(list.map((s) => s.stop()));
      await Promise.all([master.stop(), replica.stop()]);
    },
  };
  // Failover needs the sentinels to know the replica and each other (hello
  // messages every 2 s).
  await waitFor(async () => {
    for (const s of list) {
      const reps = await s.cli('SENTINEL', 'replicas', masterName);
      const peers = await s.cli('SENTINEL', 'sentinels', masterName);
      if (!reps.includes(String(replica.port))) return false;
      if ((peers.match(/^runid$/gm) ?? []).length < sentinels - 1) return false;
    }
    return true;
  }, { ms: 20000, every: 200, what: 'the sentinels to discover the replica and each other' });
  if (t) t.after(() => topo.stop());
  return topo;
}
