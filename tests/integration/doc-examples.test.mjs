// The examples of README.md and docs/*.md, run as written (issue 15): every
// fenced block marked `js test` or `sh test` runs against the daemon started
// with the shipped conf/depth-realtime.conf (modules-enabled/ as shipped, a
// real redis-server), the way `make run` starts it: LISTEN_ADDRESS=localhost,
// so `http://localhost:PORT` must answer whichever address the resolver gives.
// The one change made to a block: the port 3000 of `http://localhost:3000`
// becomes the test's free port (and in a sh block, which runs in the source
// tree, `build/depth-realtime` and `build/modules` the build under test). The block's environment has API_KEY and TOKEN,
// made by the command its document gives (`TOKEN=$(make -s token USER=42 ...)`).
// A ```text block right after an example is its output, compared exactly.
// Every ```js block of README.md and docs/*.md must be marked `test`, so none can
// drift; one that cannot run outside a browser may be ```js no-test, with its
// reason in an HTML comment (<!-- ... -->) right above it.
import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, before, after } from 'node:test';
import { test, freePort, startServer, startRedis, tmpDir, withTimeout, SOURCE_DIR, BINARY, MODULES_DIR } from './lib/harness.mjs';

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
// How a document says its examples run: `TOKEN=$(make -s token ARGS) node FILE`.
const tokenArgs = (doc) => /TOKEN=\$\(make -s token ([^)]+)\)/.exec(fs.readFileSync(path.join(SOURCE_DIR, doc), 'utf8'))?.[1];

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
  let redis, srv, dir;
  const tokens = new Map(); // make token's arguments → the token
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
    for (const args of new Set(EXAMPLES.map((e) => tokenArgs(e.doc)).filter(Boolean))) {
      const made = spawnSync('make', ['-s', '--no-print-directory', 'token', ...args.split(/\s+/)],
        { cwd: SOURCE_DIR, env: { ...process.env, JWT_SECRET: SECRET }, encoding: 'utf8' });
      assert.equal(made.status, 0, `make token ${args}: ${made.stderr}`);
      assert.match(made.stdout.trim(), /^[\w-]+\.[\w-]+\.[\w-]+$/, `make token ${args} prints one JWT`);
      tokens.set(args, made.stdout.trim());
    }
  });
  after(async () => { await srv?.stop(); await redis?.stop(); });

  test('README.md and docs/client-api.md have runnable examples, and every js block of the docs is one', () => {
    for (const doc of ['README.md', 'docs/client-api.md']) {
      assert.ok(EXAMPLES.some((e) => e.doc === doc && e.lang === 'js'), `no \`js test\` block in ${doc}`);
    }
    const unmarked = [], unexplained = [];
    for (const doc of DOCS) {
      const text = fs.readFileSync(path.join(SOURCE_DIR, doc), 'utf8').split('\n');
      for (const b of blocks(path.join(SOURCE_DIR, doc))) {
        if (/^(js|javascript|mjs)$/.test(b.info)) unmarked.push(`${doc}:${b.line}`);
        if (b.info === 'js no-test' && !/^<!--.+-->$/.test(text[b.line - 2] ?? '')) unexplained.push(`${doc}:${b.line}`);
      }
    }
    assert.deepEqual(unmarked, [], 'js blocks not marked `js test` (or `js no-test` with a reason)');
    assert.deepEqual(unexplained, [], '`js no-test` blocks without an <!-- reason --> line right above');
  });

  test('each document with examples says how to run them (TOKEN=$(make -s token ...))', () => {
    const silent = [...new Set(EXAMPLES.map((e) => e.doc))].filter((doc) => !tokenArgs(doc));
    assert.deepEqual(silent, [], 'documents with examples that do not say which token they take');
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
      let source = ex.body.replaceAll('http://localhost:3000', `http://localhost:${srv.port}`);
      if (ex.lang === 'sh') source = source.replaceAll('build/depth-realtime', path.resolve(BINARY)).replaceAll('build/modules', path.resolve(MODULES_DIR));
      const file = path.join(dir, `example-${ex.line}.${ex.lang === 'js' ? 'mjs' : 'sh'}`);
      fs.writeFileSync(file, source);
      const r = await run(ex.lang === 'js' ? process.execPath : 'bash', ex.lang === 'js' ? [file] : ['-eo', 'pipefail', file],
        { cwd: ex.lang === 'js' ? dir : SOURCE_DIR, env: { TOKEN: tokens.get(tokenArgs(ex.doc)), API_KEY } });
      assert.equal(r.code, 0, `exit ${r.code} ${r.signal ?? ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
      if (ex.output !== undefined) assert.equal(r.stdout, ex.output, `the output shown in ${ex.doc} after line ${ex.line}`);
    });
  }
});
