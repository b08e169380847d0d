// What both Node reference servers do once set up: listen, say where (run.sh
// waits for the "listening" line), and close on SIGTERM/SIGINT without waiting
// long for slow closes.
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
