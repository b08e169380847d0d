// What both Node reference servers share: a socket.io 4.8 server with
// depth-realtime's defaults (ping 25 s / 60 s, 1 MB payloads), and once set up,
// listening, saying where (run.sh waits for the "listening" line), and closing
// on SIGTERM/SIGINT without waiting long for slow closes.
import { createServer } from "node:http";
import { Server } from "socket.io";

export function createIo() {
  const httpServer = createServer();
  const io = new Server(httpServer, {
    pingInterval: 25000,
    pingTimeout: 60000,
    maxHttpBufferSize: 1e6,
    serveClient: false,
  });
  return { httpServer, io };
}

export function listen(httpServer, io, host, port) {
  httpServer.listen(port, host, () => {
    console.log(`listening ${host}:${httpServer.address().port}`);
  });
  const shutdown = () => {
    io.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}
