// `listen localhost:PORT` (what `make run` uses) on a machine without IPv6:
// it serves on 127.0.0.1 and says that [::1] is missing; only when neither
// loopback can be bound does it refuse to start. `listen [::]:PORT` (the
// shipped conf) on a kernel with no IPv6 at all serves on 0.0.0.0. The daemon runs in a network
// namespace of its own (unshare --net) whose loopback lacks ::1 (and, for the
// second case, 127.0.0.1 too). Needs root, unshare, nsenter, ip and curl;
// skipped where they are missing.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import {
  test, freePort, tmpDir, writeConf, defaultServerBlock, waitFor, withTimeout, BINARY, MODULES_DIR, BUILD_DIR,
  startServer, request,
} from './lib/harness.mjs';

const have = (cmd, ...args) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
const why = process.getuid?.() !== 0 ? 'needs root (network namespaces)'
  : !have('unshare', '--net', 'true') ? 'unshare --net is not permitted here'
    : !have('ip', '-V') ? 'no ip (iproute2)'
      : !have('curl', '--version') ? 'no curl'
        : !have('nsenter', '--version') ? 'no nsenter' : '';

// Starts the daemon with `listen localhost:PORT` in a new network namespace
// after `setup` (shell) ran there: {proc, port, stderr(), exited}.
async function daemonInNetns(setup) {
  const dir = tmpDir('dr-lh-');
  const port = await freePort();
  const block = defaultServerBlock({ port, probe: false }).replace(`listen 127.0.0.1:${port};`, `listen localhost:${port};`);
  const conf = writeConf(dir, { port, workers: 1, probe: false, serverBlock: block });
  const proc = spawn('unshare', ['--net', 'sh', '-ec', `${setup}\nexec "$@"`, 'sh', BINARY, '-c', conf, '-M', MODULES_DIR],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  running.add(proc);
  exited.then(() => running.delete(proc));
  return { proc, port, stderr: () => err, exited };
}
const running = new Set();
after(() => { for (const p of running) p.kill('SIGKILL'); });

const NO_IPV6 = 'echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6\nip link set lo up';

test('listen localhost:PORT without IPv6: serves on 127.0.0.1, warns about [::1]', { skip: why || false, timeout: 30000 }, async () => {
  const d = await daemonInNetns(NO_IPV6);
  const warning = new RegExp(`\\[warn\\].* not listening on \\[::1\\]:${d.port} \\(localhost\\): address not available`);
  await waitFor(() => warning.test(d.stderr()) || d.proc.exitCode !== null, { ms: 10000, what: 'the [::1] warning' });
  assert.match(d.stderr(), warning);
  assert.match(d.stderr(), new RegExp(`listening on 127\\.0\\.0\\.1:${d.port}\\n`));
  assert.doesNotMatch(d.stderr(), /cannot listen/);
  // A client in the same namespace asks for localhost, as the README does.
  let body;
  await waitFor(() => {
    const r = spawnSync('nsenter', [`--net=/proc/${d.proc.pid}/ns/net`, 'curl', '-s', '--max-time', '2',
      `http://localhost:${d.port}/healthz`], { encoding: 'utf8' });
    body = r.stdout;
    return r.status === 0;
  }, { ms: 10000, what: 'GET http://localhost/healthz in the namespace' });
  assert.equal(body, '{"status":"ok"}');
  d.proc.kill('SIGTERM');
  assert.equal((await withTimeout(d.exited, 10000, 'the daemon to stop')).code, 0);
});

test('listen localhost:PORT with neither loopback address: a clear error, exit 1', { skip: why || false, timeout: 30000 }, async () => {
  const d = await daemonInNetns(`${NO_IPV6}\nip addr del 127.0.0.1/8 dev lo`);
  const { code } = await withTimeout(d.exited, 10000, 'the daemon to give up');
  assert.equal(code, 1, d.stderr());
  assert.match(d.stderr(), new RegExp(`cannot listen on localhost:${d.port}: neither 127\\.0\\.0\\.1 nor \\[::1\\] can be bound`));
});

// A kernel booted with ipv6.disable=1 has no AF_INET6 sockets at all (a
// sysctl that disables IPv6 still lets [::] be bound): the daemon runs with
// tests/support/no_ipv6.c preloaded, which refuses them as that kernel does.
const NO_IPV6_LIB = path.join(BUILD_DIR, 'tests', 'libdr_no_ipv6.so');

test('listen [::]:PORT on a kernel without IPv6: serves on 0.0.0.0, says so', {
  skip: fs.existsSync(NO_IPV6_LIB) ? false : `no ${NO_IPV6_LIB}`, timeout: 30000,
}, async () => {
  const port = await freePort();
  const block = defaultServerBlock({ port }).replace(`listen 127.0.0.1:${port};`, `listen [::]:${port};`);
  const asan = [process.env.ASAN_OPTIONS, 'verify_asan_link_order=0'].filter(Boolean).join(':');
  const srv = await startServer({ port, workers: 1, serverBlock: block, env: { LD_PRELOAD: NO_IPV6_LIB, ASAN_OPTIONS: asan } });
  try {
    assert.match(srv.logText(), new RegExp(`\\[warn\\].* cannot listen on \\[::\\]:${port}: address family not supported[^\\n]*; listening on 0\\.0\\.0\\.0:${port} instead`));
    const r = await request(srv, { path: '/healthz' });
    assert.equal(r.text, '{"status":"ok"}');
  } finally {
    await srv.stop();
  }
});
