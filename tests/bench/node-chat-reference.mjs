// Node reference for the chat benchmark (`make bench`, scenario chat): socket.io
// 4.8 with @socket.io/redis-adapter over ioredis, doing what module/chat does for
// chat:join and chat:message: the access check (SISMEMBER of the member set),
// XADD MAXLEN ~ to the conversation's stream, the message broadcast to the room
// as chat:message and message:new, then the ack {data: message}.
//
//   PORT=3000 JWT_SECRET=... REDIS_PORT=6390 node tests/bench/node-chat-reference.mjs
//
// Env: PORT (3000), HOST (127.0.0.1), JWT_SECRET (required), REDIS_PORT (required),
// REDIS_APP_PREFIX (depth:). Prints "listening <host>:<port>" once ready.
import { createAdapter } from "@socket.io/redis-adapter";
import { Redis } from "ioredis";
import { requireToken } from "./node-auth.mjs";
import { createIo, listen } from "./node-serve.mjs";

const PORT = Number(process.env.PORT ?? 3000);
const HOST = process.env.HOST ?? "127.0.0.1";
const SECRET = process.env.JWT_SECRET;
const REDIS_PORT = Number(process.env.REDIS_PORT);
const PREFIX = process.env.REDIS_APP_PREFIX ?? "depth:";
const STREAM_MAXLEN = 10000;
if (!SECRET || !REDIS_PORT) {
  console.error("node-chat-reference: JWT_SECRET and REDIS_PORT are required");
  process.exit(2);
}

const redis = new Redis({ host: "127.0.0.1", port: REDIS_PORT });
const { httpServer, io } = createIo();
io.adapter(createAdapter(redis.duplicate(), redis.duplicate()));

const fail = (ack, code, message, details) => {
  if (typeof ack === "function") ack({ error: { code, message, details } });
};
const conversationOf = (payload) => {
  const id = payload?.conversationId;
  if (typeof id === "string" && id.length > 0) return id;
  return Number.isInteger(id) ? String(id) : null;
};
// Membership as module/chat checks it, on every event: the set, the token's
// conversations claim is not used by the bench, admins pass.
const isMember = async (socket, id) =>
  socket.data.role === "admin" || (await redis.sismember(`${PREFIX}conversation:${id}:members`, socket.data.userId)) === 1;

function setup(nsp) {
  nsp.use(requireToken(SECRET));
  nsp.on("connection", (socket) => {
    socket.join(`user:${socket.data.userId}`);

    socket.on("chat:join", async (payload, ack) => {
      const id = conversationOf(payload);
      if (!id) return fail(ack, "INVALID_DATA", "Invalid data", "conversationId: is required");
      try {
        if (!(await isMember(socket, id))) return fail(ack, "FORBIDDEN", "Forbidden", "not a member of this conversation");
      } catch {
        return fail(ack, "SOCKET_ERROR", "Internal error", "Redis unavailable: cannot check access");
      }
      socket.join(`conversation:${id}`);
      if (typeof ack === "function") ack({ data: { conversationId: id } });
    });

    socket.on("chat:message", async (payload, ack) => {
      const id = conversationOf(payload);
      if (!id) return fail(ack, "INVALID_DATA", "Invalid data", "conversationId: is required");
      if (typeof payload.content !== "string") return fail(ack, "INVALID_DATA", "Invalid data", "content: is required");
      const type = typeof payload.type === "string" ? payload.type : "text";
      const metadata = payload.metadata && typeof payload.metadata === "object" ? payload.metadata : {};
      const createdAt = new Date().toISOString();
      let messageId;
      try {
        if (!(await isMember(socket, id))) return fail(ack, "FORBIDDEN", "Forbidden", "not a member of this conversation");
        messageId = await redis.xadd(`${PREFIX}chat:${id}`, "MAXLEN", "~", STREAM_MAXLEN, "*",
          "conversationId", id, "senderId", socket.data.userId, "content", payload.content, "type", type,
          "metadata", JSON.stringify(metadata), "createdAt", createdAt);
      } catch {
        return fail(ack, "SOCKET_ERROR", "Internal error", "Redis unavailable: the message was not stored");
      }
      const message = { id: messageId, conversationId: id, senderId: socket.data.userId, content: payload.content,
        type, metadata, createdAt };
      nsp.to(`conversation:${id}`).emit("chat:message", message);
      nsp.to(`conversation:${id}`).emit("message:new", message);
      if (typeof ack === "function") ack({ data: message });
    });
  });
}

setup(io.of("/"));
setup(io.of("/chat"));

listen(httpServer, io, HOST, PORT);
