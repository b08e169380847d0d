// The statistics object of this node (this depth-realtime process: the master
// and its workers), shared by `admin:stats` and `GET /api/v1/stats`:
//
//   {connections, namespaces: {"/chat": {sockets, rooms}, ...}, eventsPerSecond,
//    redis: {status}, node: {pid, uptimeSeconds}, workers: [{pid, connections, sockets}]}
//
// connections: client connections (Engine.IO sessions) open now; sockets:
// namespace connections; rooms: named rooms with members, summed over the
// workers (a room with members on two workers counts twice); eventsPerSecond:
// client events received per second over the last 10 s; redis.status:
// "ready", "down" or "off"; node.pid: the master's.
#pragma once

#include <depth-realtime/module.h>

namespace dr::app {

// Starts the once-a-second sampling behind eventsPerSecond (idempotent; call
// from init_worker). `stats_stop` from exit_worker.
void stats_start(Worker& w);
void stats_stop();
Json node_stats(Worker& w);

}  // namespace dr::app
