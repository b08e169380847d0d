// Steady acked chat traffic in one conversation, for the failure tests: every
// member sends chat:message at a fixed pace and records what was acked (stored)
// and what it received, and when it was connected, so that a test can assert
// "every acked message reached every member connected all along".
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { token, withTimeout, waitFor, sleep } from './harness.mjs';

export const CHAT_MODULES = ['auth_jwt.so', 'chat.so'];

export class ChatTraffic {
  constructor(ctx, conversationId, { every = 50, ackTimeout = 3000 } = {}) {
    this.ctx = ctx;
    this.conversationId = conversationId;
    this.every = every;
    this.ackTimeout = ackTimeout;
    this.members = [];
    this.acked = new Map();  // message id -> {sender, sentAt, ackedAt}
    this.refused = 0;        // answered with an error (not stored)
    this.unanswered = 0;     // no ack in time: unknown, not counted
    this.running = false;
    this.loops = [];
  }

  // A member on `srv` (reconnecting, and joining again after each reconnect).
  async add(srv, userId) {
    const s = io(`${srv.url}/chat`, {
      transports: ['websocket'], forceNew: true, timeout: 3000,
      reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 500,
      auth: { token: token(userId, { conversations: [this.conversationId] }) },
    });
    this.ctx.track(s);
    const m = { userId, s, srv, got: new Map(), joinedAt: null, disconnects: [] };
    s.on('chat:message', (msg) => {
      if (msg?.conversationId === this.conversationId) m.got.set(msg.id, (m.got.get(msg.id) ?? 0) + 1);
    });
    s.on('disconnect', () => { m.disconnects.push(Date.now()); m.joinedAt = null; });
    s.on('connect', () => {
      s.timeout(5000).emitWithAck('chat:join', { conversationId: this.conversationId })
        .then((r) => { if (r?.data && s.connected) m.joinedAt = Date.now(); })
        .catch(() => {});
    });
    await waitFor(() => m.joinedAt !== null, { ms: 5000, what: `${userId} joined` });
    this.members.push(m);
    return m;
  }

  start() {
    this.running = true;
    this.loops = this.members.map((m, i) => this.#loop(m, i));
  }

  async stop() {
    this.running = false;
    await Promise.all(this.loops);
  }

  async #loop(m, i) {
    let n = 0;
    await sleep((this.every * i) / this.members.length);  // spread the senders over the period
    while (this.running) {
      const next = Date.now() + this.every;
      if (m.joinedAt !== null) {
        const sentAt = Date.now();
        const content = `${m.userId}-${n++}`;
        m.s.timeout(this.ackTimeout).emitWithAck('chat:message', { conversationId: this.conversationId, content })
          .then((r) => {
            if (r?.data?.id) this.acked.set(r.data.id, { sender: m.userId, content, sentAt, ackedAt: Date.now() });
            else this.refused++;
          })
          .catch(() => { this.unanswered++; });
      }
      await sleep(Math.max(0, next - Date.now()));
    }
    await sleep(this.ackTimeout + 100);  // the acks still under way
  }

  // Members connected (joined) from before `t` until now, with no disconnect.
  continuousSince(t) {
    return this.members.filter((m) => m.joinedAt !== null && m.joinedAt <= t && !m.disconnects.some((d) => d >= t));
  }

  ackedSince(t) { return [...this.acked].filter(([, a]) => a.ackedAt >= t).length; }

  // Waits until every member connected all along since a message was sent has
  // it, then asserts each got each such message exactly once. Returns counts.
  async assertDelivered({ ms = 10000 } = {}) {
    const owed = () => {
      const out = [];
      for (const [id, a] of this.acked)
        for (const m of this.continuousSince(a.sentAt)) if ((m.got.get(id) ?? 0) !== 1) out.push({ member: m.userId, id, got: m.got.get(id) ?? 0, ...a });
      return out;
    };
    await waitFor(() => owed().length === 0, { ms, what: 'every acked message at every continuous member' }).catch(() => {});
    const missing = owed();
    assert.deepEqual(missing.slice(0, 20), [], `${missing.length} deliveries missing or duplicated out of ${this.deliveriesOwed()}`);
    for (const m of this.members)
      for (const [id, n] of m.got) assert.ok(n <= 1, `${m.userId} got ${id} ${n} times`);
    return { acked: this.acked.size, deliveries: this.deliveriesOwed() };
  }

  deliveriesOwed() {
    let n = 0;
    for (const [, a] of this.acked) n += this.continuousSince(a.sentAt).length;
    return n;
  }

  // The whole chat:history of the conversation (oldest first), paged as a
  // client pages it, through member `m`.
  async history(m = this.members[0]) {
    const all = [];
    let before;
    for (;;) {
      const r = await withAck(m.s, 'chat:history', { conversationId: this.conversationId, limit: 200, ...(before ? { before } : {}) });
      assert.ok(Array.isArray(r?.data), `chat:history: ${JSON.stringify(r)}`);
      all.push(...r.data);
      if (r.data.length < 200) return all.reverse();
      before = r.data.at(-1).id;
    }
  }

  close() {
    for (const m of this.members) m.s.close();
  }
}

export const withAck = (s, event, data, ms = 5000) => withTimeout(s.timeout(ms).emitWithAck(event, data), ms + 1000, `ack of ${event}`);
