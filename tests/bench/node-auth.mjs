// The HS256 token check of the Node references (node-reference.mjs,
// node-chat-reference.mjs): the auth_jwt module's rules with node:crypto only.
import { createHmac, timingSafeEqual } from "node:crypto";

export class AuthError extends Error {
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
export function verifyToken(token, SECRET) {
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

// A namespace middleware: socket.data.userId and role, or CONNECT_ERROR.
export function requireToken(secret) {
  return (socket, next) => {
    try {
      const user = verifyToken(socket.handshake.auth?.token, secret);
      socket.data.userId = user.userId;
      socket.data.role = user.role;
      next();
    } catch (err) {
      next(err instanceof AuthError ? err : new AuthError("Authentication failed", "AUTH_FAILED"));
    }
  };
}
