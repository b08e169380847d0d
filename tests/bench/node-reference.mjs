// Node reference for the benchmarks: a plain socket.io 4.8 server configured like
// depth-realtime's defaults, with the same HS256 auth rules and the bench module's
// events. It is what the seed's Node deployment would be, one process per core.
//
//   PORT=3000 JWT_SECRET=... node tests/bench/node-reference.mjs
//
// Env: PORT (default 3000), HOST (default 127.0.0.1), JWT_SECRET (required),
// REDIS_PORT (unset: no adapter; set: @socket.io/redis-adapter over ioredis on
// 127.0.0.1:REDIS_PORT, as a cluster node would run).
// Prints "listening <host>:<port>" on stdout once ready.
import { requireToken } from "./node-auth.mjs";
import { createIo, listen } from "./node-serve.mjs";
import { createAdapter } from "@socket.io/redis-adapter";
import { Redis } from "ioredis";

const PORT = Number(process.env.PORT ?? 3000);
const HOST = process.env.HOST ?? "127.0.0.1";
const SECRET = process.env.JWT_SECRET;
if (!SECRET) {
  console.error("node-reference: JWT_SECRET is required");
  process.exit(2);
}

// ---- server

const { httpServer, io } = createIo();

if (process.env.REDIS_PORT) {
  const pub = new Redis({ host: "127.0.0.1", port: Number(process.env.REDIS_PORT) });
  io.adapter(createAdapter(pub, pub.duplicate()));
}

// Same checks and answers as module/bench/bench.cc.
function invalid(socket, ack, details) {
  const error = { code: "INVALID_DATA", message: "Invalid data", details };
  if (typeof ack === "function") ack({ error });
  else socket.emit("error", error);
}
function roomOf(payload) {
  const room = payload?.room;
  return typeof room === "string" && room.length > 0 ? room : null;
}

function setup(nsp) {
  nsp.use(requireToken(SECRET));

  nsp.on("connection", (socket) => {
    socket.join(`user:${socket.data.userId}`);

    // Ack with every argument, unchanged.
    socket.on("bench:echo", (...args) => {
      const ack = typeof args.at(-1) === "function" ? args.pop() : null;
      if (ack) ack(...args);
    });

    socket.on("bench:join", (payload, ack) => {
      const room = roomOf(payload);
      if (!room) return invalid(socket, ack, "room: is required");
      socket.join(room);
      if (typeof ack === "function") ack({ data: { room } });
    });

    socket.on("bench:broadcast", (payload, ack) => {
      const room = roomOf(payload);
      if (!room) return invalid(socket, ack, "room: is required");
      if (payload.payload === undefined) return invalid(socket, ack, "payload: is required");
      nsp.to(room).emit("bench:msg", payload.payload);
      if (typeof ack === "function") ack({ data: true });
    });
  });
}

setup(io.of("/"));
setup(io.of("/chat"));

listen(httpServer, io, HOST, PORT);
