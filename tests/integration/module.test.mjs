// Modules and configuration: the probe module built out of tree against the
// installed headers only, `-t` on good and bad configurations (FILE:LINE),
// ${VAR} substitution, include, and stopping with SIGTERM / SIGQUIT.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  test, startServer, buildProbe, probeSo, writeConf, testConfig, freePort, tmpDir, request, ack, once,
  SOURCE_DIR, BUILD_DIR, MODULES_DIR, GREETING, SECRET, isAlive,
} from './lib/harness.mjs';

const under = (p, dir) => path.resolve(p).startsWith(path.resolve(dir) + path.sep);

test('probe module: built out of tree against the installed headers only, and its handlers run', { timeout: 60000 }, async (t, ctx) => {
  const b = buildProbe({ fresh: true });
  // The include directory is the install prefix, outside the source and build trees.
  assert.ok(!under(b.includeDir, SOURCE_DIR), `include dir ${b.includeDir} is inside the source tree`);
  assert.ok(!under(b.includeDir, BUILD_DIR), `include dir ${b.includeDir} is inside the build tree`);
  assert.ok(fs.existsSync(path.join(b.includeDir, 'depth-realtime', 'module.h')));
  // Every depth-realtime header the compiler read came from the prefix.
  const drHeaders = b.deps.filter((p) => p.includes(`${path.sep}depth-realtime${path.sep}`));
  assert.ok(drHeaders.some((p) => p.endsWith('/module.h')), `module.h among ${JSON.stringify(drHeaders)}`);
  for (const h of drHeaders) assert.ok(under(h, b.includeDir), `${h} not from the installed prefix ${b.includeDir}`);
  for (const d of b.deps) {
    assert.ok(!under(d, SOURCE_DIR) || d === path.resolve(SOURCE_DIR, 'tests/modules/probe/probe.cc'), `compiler read ${d} from the source tree`);
    assert.ok(!under(d, BUILD_DIR), `compiler read ${d} from the build tree`);
  }
  assert.ok(!b.compile.includes(`-I${SOURCE_DIR}`), b.compile);

  // Loaded by absolute path; its HTTP route, connection handler and event handlers work.
  assert.ok(path.isAbsolute(b.so));
  const srv = await ctx.startServer({ probe: b.so });
  assert.match(fs.readFileSync(srv.confPath, 'utf8'), new RegExp(`load_module ${b.so.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')};`));
  const r = await request(srv, { path: '/probe' });
  assert.equal(r.status, 200);
  assert.equal(r.text, 'probe ok');
  const s = ctx.socket(srv, '/', { userId: 'prober' });
  const hello = once(s, 'probe:hello');
  await once(s, 'connect');
  assert.deepEqual(await hello, [GREETING]);
  const who = (await ack(s, 'probe:whoami')).data;
  assert.equal(who.sid, s.id);
  assert.equal(who.nsp, '/');
  assert.equal(who.userId, 'prober');
});

// ------------------------------------------------------------------ -t

test('-t on a good configuration exits 0', async () => {
  const dir = tmpDir();
  const conf = writeConf(dir, { port: await freePort() });
  const r = testConfig(conf);
  assert.equal(r.code, 0, `exit ${r.code} ${r.signal ?? ''}\n${r.stderr}`);
});

test('-t does not start serving', async () => {
  const dir = tmpDir();
  const port = await freePort();
  const r = testConfig(writeConf(dir, { port }));
  assert.equal(r.code, 0, r.stderr);
  const refused = await new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(false); });
    s.on('error', () => resolve(true));
  });
  assert.ok(refused, 'nothing listens after -t');
});

// Writes `lines` as a configuration; returns {file, line} of the line holding `marker`.
function confWith(dir, name, lines, marker = '#BAD') {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
  const line = lines.findIndex((l) => l.includes(marker)) + 1;
  return { file, line };
}

function baseLines(port, serverExtra = [], mainExtra = []) {
  return [
    '# test configuration',
    'worker_processes 2;',
    'error_log stderr info;',
    'load_module auth_jwt.so;',
    'load_module bench.so;',
    ...mainExtra,
    'server {',
    `    listen 127.0.0.1:${port};`,
    `    auth_jwt_secret ${SECRET};`,
    '    namespace /;',
    ...serverExtra,
    '}',
  ];
}

function expectBad(file, line, what) {
  const r = testConfig(file);
  assert.notEqual(r.code, 0, `${what}: -t exited 0\n${r.stderr}`);
  assert.equal(r.signal, null, `${what}: -t died of ${r.signal}\n${r.stderr}`);
  assert.ok(r.stderr.includes(`${file}:${line}`), `${what}: stderr lacks "${file}:${line}":\n${r.stderr}`);
  return r;
}

test('-t on bad configurations: FILE:LINE on stderr and a non-zero exit', async () => {
  const dir = tmpDir();
  const port = await freePort();
  const cases = [
    ['unknown directive in server', baseLines(port, ['', '    no_such_directive on; #BAD'])],
    ['unknown directive at top level', baseLines(port, [], ['frobnicate yes; #BAD'])],
    ['invalid time value', baseLines(port, ['    ping_interval soon; #BAD'])],
    ['invalid size value', baseLines(port, ['    max_payload lots; #BAD'])],
    ['wrong number of arguments', baseLines(port, ['    ping_timeout 1s 2s; #BAD'])],
    ['namespace-only directive at top level', baseLines(port, [], ['auth_jwt_require_role admin; #BAD'])],
    ['module directive without its module', [
      'worker_processes 1;', 'server {', `    listen 127.0.0.1:${port};`, '    namespace /;',
      '    auth_jwt_secret abc; #BAD', '}']],
    ['module that does not exist', baseLines(port, [], ['load_module no_such_module.so; #BAD'])],
    ['unexpected "}"', [...baseLines(port), '} #BAD']],
    ['invalid worker_processes', ['worker_processes many; #BAD', ...baseLines(port).slice(2)]],
  ];
  for (const [i, [what, lines]] of cases.entries()) {
    const { file, line } = confWith(dir, `bad${i}.conf`, lines);
    expectBad(file, line, what);
  }
});

test('-t: missing ";" at the end of the file and an unclosed block are reported with the file', async () => {
  const dir = tmpDir();
  const port = await freePort();
  for (const [i, lines] of [[...baseLines(port).slice(0, -1)], [...baseLines(port), 'worker_processes 2']].entries()) {
    const file = path.join(dir, `eof${i}.conf`);
    fs.writeFileSync(file, `${lines.join('\n')}\n`);
    const r = testConfig(file);
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+`));
  }
});

test('-t: an error inside an included file names that file and its line', async () => {
  const dir = tmpDir();
  const port = await freePort();
  fs.mkdirSync(path.join(dir, 'conf.d'));
  fs.writeFileSync(path.join(dir, 'conf.d', 'a.conf'), '# fine\nnamespace /fine;\n');
  fs.writeFileSync(path.join(dir, 'conf.d', 'b.conf'), '# comment\n\n    bogus_directive 1;\n');
  const { file } = confWith(dir, 'main.conf', baseLines(port, [`    include ${dir}/conf.d/*.conf;`]));
  const r = testConfig(file);
  assert.notEqual(r.code, 0, r.stderr);
  assert.ok(r.stderr.includes(`${path.join(dir, 'conf.d', 'b.conf')}:3`), `stderr:\n${r.stderr}`);
});

test('-t: a file that is not a module is refused with FILE:LINE', async () => {
  const dir = tmpDir();
  const port = await freePort();
  const src = path.join(dir, 'notamodule.c');
  fs.writeFileSync(src, 'int not_a_module = 1;\n');
  const so = path.join(dir, 'notamodule.so');
  const cc = spawnSync('gcc', ['-shared', '-fPIC', src, '-o', so], { encoding: 'utf8' });
  assert.equal(cc.status, 0, cc.stderr);
  const { file, line } = confWith(dir, 'm.conf', baseLines(port, [], [`load_module ${so}; #BAD`]));
  expectBad(file, line, 'not a module');
});

// --------------------------------------------------------- substitution

function envConf(dir) {
  const lines = [
    'worker_processes ${DR_IT_WORKERS:-2};',
    'error_log stderr info;',
    `pid ${dir}/dr.pid;`,
    'load_module auth_jwt.so;',
    'load_module bench.so;',
    `load_module ${probeSo()};`,
    'server {',
    '    listen 127.0.0.1:${DR_IT_PORT};',
    '    auth_jwt_secret ${DR_IT_SECRET};',
    '    namespace /;',
    '    probe_greeting "${DR_IT_GREETING:-greeting from the default}";',
    '}',
  ];
  const file = path.join(dir, 'env.conf');
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

async function greetingOf(ctx, srv) {
  const s = ctx.socket(srv, '/', { userId: 'env' });
  const hello = once(s, 'probe:hello');
  await once(s, 'connect');
  return (await hello)[0];
}

test('${VAR} and ${VAR:-default} substitution: listen port, secret, greeting', async (t, ctx) => {
  const dir = tmpDir();
  const conf = envConf(dir);
  delete process.env.DR_IT_GREETING;
  const port = await freePort();
  const env = { DR_IT_PORT: String(port), DR_IT_SECRET: SECRET };
  const tr = testConfig(conf, { env });
  assert.equal(tr.code, 0, tr.stderr);
  const srv = await ctx.startServer({ conf, port, env });
  assert.equal(await greetingOf(ctx, srv), 'greeting from the default');
  await srv.stop();

  const port2 = await freePort();
  const srv2 = await ctx.startServer({ conf, port: port2, env: { DR_IT_PORT: String(port2), DR_IT_SECRET: SECRET, DR_IT_GREETING: 'greeting from env' } });
  assert.equal(await greetingOf(ctx, srv2), 'greeting from env');
  assert.equal((await request(srv2, { path: '/healthz' })).status, 200);
});

test('include GLOB inside server adds the included namespaces', async (t, ctx) => {
  const dir = tmpDir();
  const port = await freePort();
  fs.mkdirSync(path.join(dir, 'ns.d'));
  fs.writeFileSync(path.join(dir, 'ns.d', '10-extra.conf'), 'namespace /extra;\n');
  fs.writeFileSync(path.join(dir, 'ns.d', '20-more.conf'), 'namespace /more;\n');
  fs.writeFileSync(path.join(dir, 'ns.d', 'ignored.txt'), 'this is not conf;\n');
  const conf = writeConf(dir, { port, extraServer: `include ${dir}/ns.d/*.conf;` });
  assert.equal(testConfig(conf).code, 0);
  const srv = await ctx.startServer({ conf, port, dir });
  for (const nsp of ['/extra', '/more']) {
    const s = await ctx.connect(srv, nsp);
    assert.equal((await ack(s, 'probe:whoami')).data.nsp, nsp);
  }
  const err = await ctx.connectError(srv, '/ignored');
  assert.equal(err.message, 'Invalid namespace');
});

// -------------------------------------------------------------- signals

for (const signal of ['SIGTERM', 'SIGQUIT']) {
  test(`${signal} stops the master and its workers, and frees the port`, async (t, ctx) => {
    const srv = await ctx.startServer();
    const s = await ctx.connect(srv, '/');
    const workers = srv.workerPids();
    assert.equal(workers.length, 2);
    const gone = once(s, 'disconnect', 15000);
    const res = await srv.stop(signal, { timeoutMs: 12000 });
    assert.deepEqual(res, { code: 0, signal: null }, `exit status after ${signal}`);
    assert.ok(!srv.logText().includes('SIGKILL'), 'had to be killed');
    for (const w of workers) assert.equal(isAlive(w), false, `worker ${w} still alive`);
    await gone;
    const refused = await new Promise((resolve) => {
      const c = net.connect(srv.port, '127.0.0.1');
      c.on('connect', () => { c.destroy(); resolve(false); });
      c.on('error', () => resolve(true));
    });
    assert.ok(refused, 'port closed');
  });
}

test('a relative load_module name resolves in the -M directory', async () => {
  assert.ok(fs.existsSync(path.join(MODULES_DIR, 'auth_jwt.so')), `${MODULES_DIR}/auth_jwt.so`);
  assert.ok(fs.existsSync(path.join(MODULES_DIR, 'bench.so')), `${MODULES_DIR}/bench.so`);
  const dir = tmpDir();
  const conf = writeConf(dir, { port: await freePort(), probe: false });
  const r = testConfig(conf, { modulesDir: tmpDir() });  // empty -M dir: modules not found
  assert.notEqual(r.code, 0, 'modules resolved without the -M directory?');
  assert.match(r.stderr, /:\d+/);
  assert.equal(testConfig(conf).code, 0);
});
