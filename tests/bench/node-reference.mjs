// Node reference for the benchmarks: a plain socket.io 4.8 server configured like
// depth-realtime's defaults, with the same HS256 auth rules and the bench module's
// events. It is what the seed's Node deployment would be, one process per core.
//
//   PORT=3000 JWT_SECRET=... node tests/bench/node-reference.mjs
//
// Env: PORT (default 3000), HOST (default 127.0.0.1), JWT_SECRET (required).
// Prints "listening <host>:<port>" on stdout once ready.
import { createServer } from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";
import { Server } from "socket.io";

const PORT = Number(process.env.PORT ?? 3000);
const HOST = process.env.HOST ?? "127.0.0.1";
const SECRET = process.env.JWT_SECRET;
if (!SECRET) {
  console.error("node-reference: JWT_SECRET is required");
  process.exit(2);
}

// ---- auth: HS256 JWT, verified with node:crypto only (no jsonwebtoken dependency)

class AuthError extends Error {
  constructor(message, code) {
    super(message);
    this.data = { code }; // sent as CONNECT_ERROR data, like auth_jwt.so
  }
}

function b64urlJson(part) {
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
}

// Returns {userId, role} or throws AuthError (contract section 8: numeric ids
// become their decimal string; a missing role is an ordinary user).
function verifyToken(token) {
  if (token === undefined || token === null || token === "") {
    throw new AuthError("Token required", "TOKEN_REQUIRED");
  }
  const invalid = () => new AuthError("Invalid token", "INVALID_TOKEN");
  if (typeof token !== "string") throw invalid();
  const parts = token.split(".");
  if (parts.length !== 3) throw invalid();
  let header, claims;
  try {
    header = b64urlJson(parts[0]);
    claims = b64urlJson(parts[1]);
  } catch {
    throw invalid();
  }
  if (header?.alg !== "HS256" || typeof claims !== "object" || claims === null) throw invalid();
  const expected = createHmac("sha256", SECRET).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid();
  const now = Date.now() / 1000;
  if (claims.exp !== undefined && !(typeof claims.exp === "number" && now < claims.exp)) throw invalid();
  if (claims.nbf !== undefined && !(typeof claims.nbf === "number" && now >= claims.nbf)) throw invalid();
  let userId = claims.userId;
  if (Number.isInteger(userId) && userId >= 0) userId = String(userId);
  if (typeof userId !== "string" || userId.length === 0 || userId.length > 128) throw invalid();
  return { userId, role: typeof claims.role === "string" ? claims.role : "user" };
}

// ---- server

const httpServer = createServer();
const io = new Server(httpServer, {
  pingInterval: 25000,
  pingTimeout: 60000,
  maxHttpBufferSize: 1e6,
  serveClient: false,
});

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
  nsp.use((socket, next) => {
    try {
      const user = verifyToken(socket.handshake.auth?.token);
      socket.data.userId = user.userId;
      socket.data.role = user.role;
      next();
    } catch (err) {
      next(err instanceof AuthError ? err : new AuthError("Authentication failed", "AUTH_FAILED"));
    }
  });

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

httpServer.listen(PORT, HOST, () => {
  console.log(`listening ${HOST}:${httpServer.address().port}`);
});

function shutdown() {
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref(); // do not wait for slow closes
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
