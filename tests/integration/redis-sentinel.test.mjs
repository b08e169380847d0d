// Redis Sentinel (issue 14, part 1): `redis sentinel=... master=NAME` finds
// the master through the sentinels, follows a failover (the master killed
// with -9, the replica promoted) with no restart, and with
// `redis_wait_replicas` an ack promises what a failover keeps: every acked
// message is in the new master's stream. Real redis-server and
// redis-sentinel processes on loopback.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import {
  test, request, waitFor, freePort, tmpDir, writeConf, testConfig, startRedis, token, workerOf,
} from './lib/harness.mjs';
import { ChatTraffic, CHAT_MODULES, withAck } from './lib/chat-traffic.mjs';
import { startSentinelTopology, cli, info } from './lib/redis-topology.mjs';

const readyz = async (srv) => (await request(srv, { path: '/readyz' })).status;
// Workers of `srv` whose two Redis connections are up.
const redisUp = async (srv) => Number(/^redis_up (-?\d+)/m.exec((await request(srv, { path: '/metrics' })).text)?.[1] ?? 0);

// The ids in a stream on `port`.
async function streamIds(port, key) {
  const out = await cli(port, '--no-raw', 'XRANGE', key, '-', '+');
  return new Set([...out.matchAll(/"(\d+-\d+)"/g)].map((m) => m[1]));
}

describe('Redis Sentinel', () => {
  test('-t checks the sentinel syntax, with file:line', async () => {
    const dir = tmpDir();
    const port = await freePort();
    const conf = (redis) => writeConf(dir, { port, modules: CHAT_MODULES, probe: false, extraServer: redis });
    let r = testConfig(conf('redis sentinel=127.0.0.1:26379,127.0.0.1:26380 master=mymaster password=a sentinel_password=b;\nredis_wait_replicas 1 500ms;'));
    assert.equal(r.code, 0, r.stderr);
    r = testConfig(conf('redis sentinel=127.0.0.1:26379;'));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /depth-realtime\.conf:\d+: "redis sentinel=\.\.\." needs master=NAME/);
    r = testConfig(conf('redis sentinel=127.0.0.1:26379,:1 master=m;'));
    assert.match(r.stderr, /depth-realtime\.conf:\d+: invalid sentinel address ":1"/);
    r = testConfig(conf('redis sentinel=127.0.0.1:26379 master=m bogus=1;'));
    assert.match(r.stderr, /invalid parameter "bogus=1", expected master=NAME/);
    r = testConfig(conf('redis 127.0.0.1:6379;\nredis_wait_replicas 1 5s;'));
    assert.match(r.stderr, /depth-realtime\.conf:\d+: redis_wait_replicas' TIMEOUT must be shorter than redis_command_timeout/);
    r = testConfig(conf('redis cluster=127.0.0.1:7000;\nredis_wait_replicas 1 500ms;'));
    assert.match(r.stderr, /depth-realtime\.conf:\d+: redis_wait_replicas is not supported with "redis cluster=\.\.\." yet/);
    r = testConfig(conf('redis 127.0.0.1:6379;\nredis_wait_replicas 0 1s;'));
    assert.match(r.stderr, /must be greater than 0/);
  });

  test('no sentinel answers: the daemon serves, /readyz is 503, a clear log line', { timeout: 30000 }, async (t, ctx) => {
    const ports = [await freePort(), await freePort()];
    const srv = await ctx.startServer({
      workers: 1, modules: CHAT_MODULES, probe: false,
      extraServer: `redis sentinel=${ports.map((p) => `127.0.0.1:${p}`).join(',')} master=mymaster;\nredis_connect_timeout 1s;`,
    });
    assert.equal(await readyz(srv), 503);
    await waitFor(() => /none of the 2 sentinels told where master mymaster is/.test(srv.logText()), { what: 'the log line' });
    // The client's answer tells the truth: nothing was stored.
    const s = await ctx.connect(srv, '/chat', { auth: { token: token('u1', { conversations: ['c1'] }) } });
    const r = await withAck(s, 'chat:message', { conversationId: 'c1', content: 'hi' });
    assert.equal(r.error?.code, 'SOCKET_ERROR');
    assert.match(r.error.details, /Redis unavailable/);
  });

  test('failover: the master killed with -9, the replica promoted; every acked message is on the new master, delivery resumes, /readyz back to 200',
    { timeout: 120000 }, async (t, ctx) => {
      const topo = await startSentinelTopology({ t });
      const extraServer = [
        topo.directive(),
        'redis_wait_replicas 1 500ms;',
        'redis_connect_timeout 1s;',
        'redis_node_ttl 3s;',
      ].join('\n');
      const A = await ctx.startServer({ workers: 2, modules: CHAT_MODULES, probe: false, extraServer });
      const B = await ctx.startServer({ workers: 2, modules: CHAT_MODULES, probe: false, extraServer });
      for (const srv of [A, B]) {
        await waitFor(async () => (await redisUp(srv)) === 2, { ms: 10000, what: 'both workers on the master' });
        assert.equal(await readyz(srv), 200);
      }
      assert.match(A.logText(), new RegExp(`redis: master mymaster is at 127\\.0\\.0\\.1:${topo.master.port} \\(was not known\\)`));

      const conv = `c-${Date.now()}`;
      const traffic = new ChatTraffic(ctx, conv, { every: 40 });
      const owners = new Set();
      for (let i = 0; i < 6; i++) {
        const srv = i % 2 ? B : A;
        const m = await traffic.add(srv, `m${i}`);
        owners.add(`${srv.port}/${await workerOf(srv, m.s)}`);
      }
      t.diagnostic(`members on ${owners.size} workers of 2 daemons`);
      traffic.start();
      await waitFor(() => traffic.acked.size >= 40, { what: '40 messages acked before the failover' });

      const oldPort = topo.master.port;
      const killedAt = Date.now();
      await topo.master.kill();
      const newPort = await topo.waitSwitched(oldPort);
      const switchedAt = Date.now();
      assert.equal(newPort, topo.replica.port, 'the replica was promoted');
      for (const srv of [A, B]) {
        await waitFor(async () => (await readyz(srv)) === 200 && (await redisUp(srv)) === 2,
          { ms: 15000, every: 50, what: `${srv.port}: both workers on the new master` });
      }
      const readyAt = Date.now();
      // One node is left: nothing can be on a replica, and the acks say so
      // rather than "stored".
      const probe = traffic.members[0].s;
      const r = await withAck(probe, 'chat:message', { conversationId: conv, content: 'alone', clientMessageId: 'alone-1' });
      assert.equal(r.error?.code, 'SOCKET_ERROR', JSON.stringify(r));
      assert.match(r.error.details, /stored on the Redis master, confirmed on 0 of 1 replicas/);
      // The old master comes back (empty); the sentinels make it a replica of
      // the new one, and acks resume.
      await topo.master.start();
      await waitFor(async () => Number(await info(newPort, 'replication', 'connected_slaves')) >= 1,
        { ms: 20000, every: 100, what: 'the old master a replica of the new one' });
      const replicaAt = Date.now();
      await waitFor(() => traffic.ackedSince(replicaAt) >= 40, { ms: 15000, what: '40 messages acked after the failover' });
      await traffic.stop();
      let again;
      await waitFor(async () => {
        again = await withAck(probe, 'chat:message', { conversationId: conv, content: 'alone', clientMessageId: 'alone-1' });
        return !!again.data;
      }, { ms: 10000, every: 200, what: 'a retry of the unconfirmed message confirmed' });
      assert.ok((await streamIds(newPort, `depth:chat:${conv}`)).has(again.data.id), "the retry answers the stored entry");

      // Every acked message is on the new master.
      const ids = await streamIds(newPort, `depth:chat:${conv}`);
      const lost = [...traffic.acked.keys()].filter((id) => !ids.has(id));
      assert.deepEqual(lost, [], `${lost.length} of ${traffic.acked.size} acked messages are not on the new master`);
      // Delivery resumed across both daemons: every member connected all
      // along got every acked message once.
      const { acked, deliveries } = await traffic.assertDelivered();
      assert.match(A.logText(), new RegExp(`master mymaster switched to 127\\.0\\.0\\.1:${newPort}|master mymaster is at 127\\.0\\.0\\.1:${newPort}`));
      assert.equal(await readyz(A), 200);
      assert.equal(await readyz(B), 200);
      // The node heartbeats and the subscriptions are on the new master.
      const numsub = (await cli(newPort, 'PUBSUB', 'NUMSUB', 'socket.io-request#/chat#')).split('\n')[1];
      assert.equal(Number(numsub), 4, 'all four workers subscribed on the new master');
      t.diagnostic(`failover: sentinels switched ${switchedAt - killedAt} ms after the kill, daemons ready ` +
        `${readyAt - switchedAt} ms later, acks confirmed again ${replicaAt - readyAt} ms after that (old master back as a replica); ` +
        `${acked} acked (${traffic.ackedSince(replicaAt)} after), ${deliveries} deliveries, ` +
        `${traffic.refused} refused, ${traffic.unanswered} unanswered`);
    });
});

describe('redis_wait_replicas', () => {
  test('a message the replica does not confirm is acked as an error that says so; a retry with the same clientMessageId confirms it once',
    { timeout: 60000 }, async (t, ctx) => {
      const dir = tmpDir();
      const master = await startRedis({ t, args: ['--dir', dir] });
      const replica = await startRedis({ t, args: ['--dir', dir, '--replicaof', '127.0.0.1', String(master.port)] });
      await waitFor(async () => (await info(replica.port, 'replication', 'master_link_status')) === 'up',
        { ms: 10000, what: 'the replica in sync' });
      const srv = await ctx.startServer({
        workers: 1, modules: CHAT_MODULES, probe: false,
        extraServer: `redis 127.0.0.1:${master.port};\nredis_wait_replicas 1 300ms;`,
      });
      await waitFor(async () => (await readyz(srv)) === 200, { what: 'ready' });
      const conv = `w-${Date.now()}`;
      const auth = (u) => ({ auth: { token: token(u, { conversations: [conv] }) } });
      const sender = await ctx.connect(srv, '/chat', auth('u1'));
      const other = await ctx.connect(srv, '/chat', auth('u2'));
      for (const s of [sender, other]) assert.ok((await withAck(s, 'chat:join', { conversationId: conv })).data);
      const got = [];
      other.on('chat:message', (m) => got.push(m.id));

      let r = await withAck(sender, 'chat:message', { conversationId: conv, content: 'one', clientMessageId: 'k1' });
      assert.ok(r.data?.id, JSON.stringify(r));

      // The replica stops acknowledging (SIGSTOP): WAIT gives up after 300 ms.
      replica.child.kill('SIGSTOP');
      t.after(() => { try { replica.child.kill('SIGCONT'); } catch { /* gone */ } });
      const t0 = Date.now();
      r = await withAck(sender, 'chat:message', { conversationId: conv, content: 'two', clientMessageId: 'k2' });
      const waited = Date.now() - t0;
      assert.equal(r.error?.code, 'SOCKET_ERROR', JSON.stringify(r));
      assert.equal(r.error.retry, true);
      assert.equal(r.error.clientMessageId, 'k2');
      assert.match(r.error.details, /stored on the Redis master, confirmed on 0 of 1 replicas within 300ms; send it again with the same clientMessageId/);
      assert.ok(waited >= 280, `answered after ${waited} ms, before WAIT's timeout`);
      // A comment without a key says the same, and what a retry would do.
      r = await withAck(sender, 'chat:message', { conversationId: conv, content: 'three' });
      assert.match(r.error?.details ?? '', /confirmed on 0 of 1 replicas.*a failover now may lose it/);
      const onMaster = await streamIds(master.port, `depth:chat:${conv}`);
      assert.equal(onMaster.size, 3, 'stored on the master all the same');

      replica.child.kill('SIGCONT');
      // A client retries the same key until the ack is a success (for a
      // second after a WAIT fell short, the answer comes without waiting).
      await waitFor(async () => {
        r = await withAck(sender, 'chat:message', { conversationId: conv, content: 'two', clientMessageId: 'k2' });
        if (!r.data) assert.match(r.error?.details ?? '', /confirmed on 0 of 1 replicas/);
        return !!r.data;
      }, { ms: 10000, every: 200, what: 'the retry confirmed' });
      assert.ok(r.data?.id, JSON.stringify(r));
      assert.ok(onMaster.has(r.data.id), 'the retry answers the entry stored before');
      assert.equal((await streamIds(master.port, `depth:chat:${conv}`)).size, 3, 'stored once');
      await waitFor(() => (replica && info(replica.port, 'replication', 'master_link_status').then((s) => s === 'up')), { what: 'replica back' });
      assert.equal((await streamIds(replica.port, `depth:chat:${conv}`)).size, 3, 'the replica has them all');
      // The room heard each message once (the unconfirmed ones too: they are stored).
      await waitFor(() => got.length === 3, { what: 'three deliveries' });
      assert.equal(new Set(got).size, 3);
    });
});
