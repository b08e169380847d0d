// The examples of README.md and docs/*.md, run as written (issue 15): every
// fenced block marked `js test` or `sh test` runs against the daemon started
// with the shipped conf/depth-realtime.conf (modules-enabled/ as shipped, a
// real redis-server), the way `make run` starts it: LISTEN_ADDRESS=localhost,
// so `http://localhost:PORT` must answer whichever address the resolver gives.
// The one change made to a block: the port 3000 of `http://localhost:3000`
// becomes the test's free port. The block's environment has TOKEN, made by
// `make token USER=42 CONVERSATIONS=c1` (the README's command), and API_KEY.
// A ```text block right after an example is its output, compared exactly.
// Every ```js block of README.md must be marked `test`, so none can drift.
import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, before, after } from 'node:test';
import { test, freePort, startServer, startRedis, tmpDir, withTimeout, SOURCE_DIR } from './lib/harness.mjs';

const SECRET = 'doc-examples-secret';
const API_KEY = 'doc-examples-api-key';

// Fenced blocks of a Markdown file: {info, body, line, output?}.
function blocks(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const out = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(.*)$/.exec(lines[i]);
    if (!open) continue;
    const start = i;
    const body = [];
    for (i++; i < lines.length && lines[i] !== '```'; i++) body.push(lines[i]);
    out.push({ info: open[1].trim(), body: body.join('\n') + '\n', line: start + 1 });
  }
  // An example's output: a ```text block that is the next block after it.
  for (let k = 0; k + 1 < out.length; k++) {
    if (/ test$/.test(out[k].info) && out[k + 1].info === 'text') out[k].output = out[k + 1].body;
  }
  return out;
}

const DOCS = ['README.md', ...fs.readdirSync(path.join(SOURCE_DIR, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const EXAMPLES = DOCS.flatMap((doc) => blocks(path.join(SOURCE_DIR, doc))
  .filter((b) => /^(js|sh) test$/.test(b.info))
  .map((b) => ({ ...b, doc, lang: b.info.split(' ')[0] })));

function run(cmd, args, { cwd, env, input, ms = 20000 }) {
  return withTimeout(new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
    p.stdin.end(input ?? '');
  }), ms, `${cmd} ${args.join(' ')}`);
}

describe('the examples of README.md and docs/', () => {
  let redis, srv, token, dir;
  before(async () => {
    dir = tmpDir('dr-doc-');
    // Node resolves socket.io-client from the example's folder.
    fs.symlinkSync(path.resolve(SOURCE_DIR, 'tests', 'node_modules'), path.join(dir, 'node_modules'));
    redis = await startRedis();
    const port = await freePort();
    srv = await startServer({
      port,
      conf: path.join(SOURCE_DIR, 'conf', 'depth-realtime.conf'),
      env: { PORT: String(port), JWT_SECRET: SECRET, API_KEY, LISTEN_ADDRESS: 'localhost', REDIS_HOST: '127.0.0.1', REDIS_PORT: String(redis.port) },
    });
    const made = spawnSync('make', ['-s', '--no-print-directory', 'token', 'USER=42', 'CONVERSATIONS=c1'],
      { cwd: SOURCE_DIR, env: { ...process.env, JWT_SECRET: SECRET }, encoding: 'utf8' });
    assert.equal(made.status, 0, `make token: ${made.stderr}`);
    token = made.stdout.trim();
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'make token prints one JWT');
  });
  after(async () => { await srv?.stop(); await redis?.stop(); });

  test('the README has runnable examples, and every js block in it is one', () => {
    assert.ok(EXAMPLES.some((e) => e.doc === 'README.md' && e.lang === 'js'), 'no `js test` block in README.md');
    const unmarked = blocks(path.join(SOURCE_DIR, 'README.md')).filter((b) => b.info === 'js');
    assert.deepEqual(unmarked.map((b) => `README.md:${b.line}`), [], 'js blocks not marked `js test`');
  });

  test('localhost answers over IPv4 and IPv6 (the shipped conf with LISTEN_ADDRESS=localhost)', async () => {
    for (const host of ['127.0.0.1', '[::1]', 'localhost']) {
      const r = await fetch(`http://${host}:${srv.port}/healthz`);
      assert.equal(r.status, 200, host);
      assert.deepEqual(await r.json(), { status: 'ok' }, host);
    }
  });

  for (const ex of EXAMPLES) {
    test(`${ex.doc}:${ex.line} (${ex.lang}) runs as written`, { timeout: 30000 }, async () => {
      const source = ex.body.replaceAll('http://localhost:3000', `http://localhost:${srv.port}`);
      const file = path.join(dir, `example-${ex.line}.${ex.lang === 'js' ? 'mjs' : 'sh'}`);
      fs.writeFileSync(file, source);
      const r = await run(ex.lang === 'js' ? process.execPath : 'bash', ex.lang === 'js' ? [file] : ['-eo', 'pipefail', file],
        { cwd: dir, env: { TOKEN: token, API_KEY } });
      assert.equal(r.code, 0, `exit ${r.code} ${r.signal ?? ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
      if (ex.output !== undefined) assert.equal(r.stdout, ex.output, `the output shown in ${ex.doc} after line ${ex.line}`);
    });
  }
});
