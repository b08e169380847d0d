// depth-realtime cluster API: Socket.IO's server-side operations across every
// node that shares the configured Redis (each worker of each depth-realtime
// process is one node; Node.js servers with @socket.io/redis-adapter are nodes
// too). Without Redis, or while it is away, they act on this worker only.
//
// Like the rest of the module API, everything runs on the worker's loop:
// callbacks are called later, once, on that loop (never from inside the call).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "depth-realtime/export.h"
#include "depth-realtime/module.h"

namespace dr::cluster {

// Redis is configured / connected right now.
DR_API bool configured();
DR_API bool ready();

// A socket anywhere in the cluster, as fetchSockets() describes it.
struct DR_API RemoteSocket {
  std::string id;
  std::vector<std::string> rooms;  // its own id included
  Json handshake;                  // Socket.IO's handshake object
  Json data;                       // socket.data (ours: the keys modules set)
};

// `error` is empty on success; on a timeout it says so and the results hold
// what arrived in time.
using FetchCallback = std::function<void(std::string error, std::vector<RemoteSocket> sockets)>;
DR_API void fetch_sockets(const BroadcastOptions& opts, FetchCallback cb);
// Fire and forget, on every node (this one at once).
DR_API void sockets_join(const BroadcastOptions& opts, const std::vector<std::string>& rooms);
DR_API void sockets_leave(const BroadcastOptions& opts, const std::vector<std::string>& rooms);
DR_API void disconnect_sockets(const BroadcastOptions& opts, bool close);
DR_API void all_rooms(std::string_view nsp, std::function<void(std::string error, std::vector<std::string> rooms)> cb);
// Nodes that serve `nsp` (PUBSUB NUMSUB of its request channel); 1 without Redis.
DR_API void server_count(std::string_view nsp, std::function<void(size_t count)> cb);

// Server-side events between nodes (Socket.IO's serverSideEmit): received
// from the other nodes only, never from oneself. `ack` is empty when the
// sender waits for no answer; only its first call counts.
using ServerAck = std::function<void(Json reply)>;
using ServerEventHandler = std::function<void(const Payload& args, ServerAck ack)>;
DR_API void on_server_event(std::string_view nsp, std::string_view event, ServerEventHandler h);
DR_API void server_side_emit(std::string_view nsp, std::string_view event, Payload args);
// One answer per other node; `error` set (with the answers so far) on timeout.
using ServerAcks = std::function<void(std::string error, std::vector<Json> replies)>;
DR_API void server_side_emit_with_ack(std::string_view nsp, std::string_view event, Payload args, uint64_t timeout_ms,
                               ServerAcks cb);

// A broadcast whose every recipient, on every node, is asked for an ack
// (Socket.IO's io.timeout(ms).emit(..., cb)): the first argument of each
// client's answer, or timed_out with those that came in time.
using BroadcastAcks = std::function<void(bool timed_out, std::vector<Payload> replies)>;
DR_API void broadcast_with_ack(const BroadcastOptions& opts, std::string_view event, Payload args, uint64_t timeout_ms,
                        BroadcastAcks cb);

// Presence from the membership kept in Redis: the sockets in a room of a
// namespace on every depth-realtime node (Node servers do not record theirs),
// with the user id each socket authenticated as (empty if none).
struct DR_API Member {
  std::string socket_id;
  std::string user_id;
  std::string node;
};
using PresenceCallback = std::function<void(std::string error, std::vector<Member> members)>;
DR_API void room_members(std::string_view nsp, std::string_view room, PresenceCallback cb);

}  // namespace dr::cluster
