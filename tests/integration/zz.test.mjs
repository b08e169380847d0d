import { test, startServer, ackAll, rawPollingSession, pollPost, pollGet, records } from './lib/harness.mjs';
import assert from 'node:assert/strict';
import { before, after } from 'node:test';
let srv;
before(async () => { srv = await startServer(); });
after(() => srv?.stop());
test('raw big post', async () => {
  const { sid } = await rawPollingSession(srv);
  const big = 'x'.repeat(200*1024);
  const p = await pollPost(srv, sid, `421["bench:echo","${big}"]`);
  console.log('post', p.status, p.text.slice(0,100));
  const g = await pollGet(srv, sid);
  console.log('get', g.status, g.text.length);
});
test('client big', async (t, ctx) => {
  const s = await ctx.connect(srv, '/', { transports: ['polling'] });
  const [back] = await ackAll(s, 'bench:echo', 'x'.repeat(200*1024));
  assert.equal(back.length, 200*1024);
});
