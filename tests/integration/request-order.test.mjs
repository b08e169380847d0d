// Requests of one long-polling session keep their order across workers: with
// 2 workers, a poll and a close sent together on fresh TCP connections reach
// the session's worker in the order they were sent, whichever worker the
// master would have given each (the master reads a new connection's request
// line and hands it to the worker of its session, so no request takes a
// detour through another worker that a later one could overtake).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe } from 'node:test';
import {
  test, startServer, rawPollingSession, pollGet, pollPost, eioUrl, rnd,
} from './lib/harness.mjs';

// A request on a new connection: `written` once its bytes are handed to the
// kernel, `answer` the whole response (the server closes the connection).
function rawRequest(srv, text) {
  const sock = net.connect(srv.port, '127.0.0.1');
  const written = new Promise((resolve, reject) => {
    sock.on('connect', () => sock.write(text, resolve));
    sock.on('error', reject);
  });
  const answer = new Promise((resolve, reject) => {
    const chunks = [];
    sock.on('data', (c) => chunks.push(c));
    sock.on('end', () => resolve(Buffer.concat(chunks).toString()));
    sock.on('error', reject);
  });
  return { written, answer };
}

let srv;
before(async () => { srv = await startServer({ workers: 2 }); });
after(() => srv?.stop());

describe('one session, two workers', () => {
  test('a poll then a close, sent together, 30 times: the poll is answered, never "Session ID unknown"', async () => {
    for (let i = 0; i < 30; i++) {
      const { sid } = await rawPollingSession(srv);
      // The poll's bytes are written before the close's connection is opened:
      // that is the order sent (two HTTP clients racing could send either first).
      const poll = rawRequest(srv, `GET ${eioUrl({ sid, t: rnd() })} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      await poll.written;
      const p = await pollPost(srv, sid, '1');
      const g = await poll.answer;
      assert.equal(p.status, 200, `round ${i}: the close: ${p.status} ${p.text}`);
      assert.match(g, /^HTTP\/1\.1 200/, `round ${i}: the poll sent before the close got ${g.split('\r\n')[0]} ${g.slice(g.indexOf('\r\n\r\n') + 4)}`);
      // The closed session is gone at once.
      const late = await pollGet(srv, sid);
      assert.equal(late.status, 400, `round ${i}: after the close: ${late.status} ${late.text}`);
    }
  });

  test('a request sent a byte at a time still reaches its session', async () => {
    const { sid } = await rawPollingSession(srv);
    const text = await new Promise((resolve, reject) => {
      const sock = net.connect(srv.port, '127.0.0.1');
      const chunks = [];
      sock.on('connect', async () => {
        const body = '42["probe:whoami"]';
        const req = `POST ${eioUrl({ sid, t: rnd() })} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n`
          + `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
        for (const ch of req) { sock.write(ch); await new Promise((r) => setImmediate(r)); }
      });
      sock.on('data', (c) => chunks.push(c));
      sock.on('end', () => resolve(Buffer.concat(chunks).toString()));
      sock.on('error', reject);
    });
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.match(text, /\r\n\r\nok$/);
  });
});
