// Redis topologies beyond one server, on free loopback ports, for the
// Sentinel (and Cluster) tests: real redis-server and redis-sentinel processes.
//   const topo = await startSentinelTopology({ t });
//   topo.master / topo.replica (startRedis() handles), topo.sentinels[i].port,
//   topo.directive() ("redis sentinel=... master=NAME;"), topo.masterPort(),
//   topo.waitSwitched(fromPort) (the sentinels agree on a new master)
//   const cl = await startClusterTopology({ t });   // 3 masters, no replicas
//   cl.nodes[i] (startRedis() handles), cl.directive() ("redis cluster=...;"),
//   cl.slotOf(key), cl.portOf(key), cl.moveSlot(slot, toPort) (a live migration),
//   cl.cli(key, ...args) (redis-cli -c on the key's master)
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { startRedis, freePort, tmpDir, waitFor, withTimeout, redisCliStrict } from './harness.mjs';

const live = new Set();
process.on('exit', () => {
  for (const c of live) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
});

// redis-cli against a port (an ERR reply rejects); resolves its stdout.
export const cli = redisCliStrict;

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

// CRC16 (XMODEM) of the key's hash tag, as Redis Cluster computes slots.
export function slotOf(key) {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const b of Buffer.from(key, 'utf8')) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

// `masters` redis-server processes with cluster mode on, joined by
// `redis-cli --cluster create` (no replicas), in a tmp dir of their own.
export async function startClusterTopology({ t, masters = 3 } = {}) {
  const dir = tmpDir('dr-rcluster-');
  const nodes = [];
  for (let i = 0; i < masters; i++) {
    const port = await freePort();
    nodes.push(await startRedis({
      port,
      args: ['--dir', dir, '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, `nodes-${port}.conf`),
        '--cluster-node-timeout', '3000'],
    }));
  }
  await new Promise((resolve, reject) => {
    const p = spawn('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`),
      '--cluster-replicas', '0', '--cluster-yes'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (c) => { out += c; });
    p.stderr.on('data', (c) => { out += c; });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`redis-cli --cluster create: ${out}`))));
  });
  await waitFor(async () => {
    for (const n of nodes) {
      const out = await cli(n.port, 'CLUSTER', 'INFO').catch(() => '');
      if (!/cluster_state:ok/.test(out) || !/cluster_slots_ok:16384/.test(out) || !new RegExp(`cluster_known_nodes:${masters}\\b`).test(out)) return false;
    }
    return true;
  }, { ms: 20000, every: 100, what: 'the cluster state ok' }).catch(async (e) => {
    throw new Error(`${e.message}: ${await cli(nodes[0].port, 'CLUSTER', 'INFO').catch(() => '')}`);
  });
  const ids = new Map();  // port -> node id
  for (const n of nodes) ids.set(n.port, (await cli(n.port, 'CLUSTER', 'MYID')).trim());
  const cl = {
    dir,
    nodes,
    ports: nodes.map((n) => n.port),
    slotOf,
    directive(extra = '') {
      return `redis cluster=${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}${extra ? ` ${extra}` : ''};`;
    },
    // The port of the master serving `key`'s slot, as the cluster says now.
    async portOf(key) {
      const slot = slotOf(key);
      const out = await cli(nodes[0].port, '--no-raw', 'CLUSTER', 'SLOTS');
      // "1) 1) (integer) 0\n 2) (integer) 5460\n 3) 1) "127.0.0.1"\n 2) (integer) 7000"...
      const nums = [...out.matchAll(/\(integer\) (\d+)/g)].map((m) => Number(m[1]));
      for (let i = 0; i + 2 < nums.length; i += 3) {
        if (slot >= nums[i] && slot <= nums[i + 1]) return nums[i + 2];
      }
      throw new Error(`slot ${slot} of ${key} is not served`);
    },
    // redis-cli -c (follows MOVED) on the key's master.
    async cli(key, ...args) { return cli(await cl.portOf(key), '-c', ...args); },
    // Migrates `slot` (and its keys) to the master on `toPort`, live, as
    // `redis-cli --cluster reshard` does it: IMPORTING / MIGRATING, MIGRATE
    // the keys in batches, then SETSLOT NODE everywhere.
    async moveSlot(slot, toPort) {
      const fromPort = await cl.portOf(keyInSlot(slot));
      if (fromPort === toPort) return;
      const src = ids.get(fromPort);
      const dst = ids.get(toPort);
      await cli(toPort, 'CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', src);
      await cli(fromPort, 'CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', dst);
      for (;;) {
        const keys = (await cli(fromPort, 'CLUSTER', 'GETKEYSINSLOT', String(slot), '100')).split('\n').filter(Boolean);
        if (!keys.length) break;
        await cli(fromPort, 'MIGRATE', '127.0.0.1', String(toPort), '', '0', '5000', 'KEYS', ...keys);
      }
      for (const port of [toPort, fromPort, ...cl.ports.filter((p) => p !== toPort && p !== fromPort)]) {
        await cli(port, 'CLUSTER', 'SETSLOT', String(slot), 'NODE', dst);
      }
    },
    async stop() { await Promise.all(nodes.map((n) => n.stop())); },
  };
  if (t) t.after(() => cl.stop());
  return cl;
}

// Some key of `slot` ("k<n>"), for asking who serves it.
const slotKeys = new Map();
export function keyInSlot(slot) {
  if (slotKeys.has(slot)) return slotKeys.get(slot);
  for (let i = 0; ; i++) {
    if (slotOf(`k${i}`) === slot) {
      slotKeys.set(slot, `k${i}`);
      return `k${i}`;
    }
  }
}
