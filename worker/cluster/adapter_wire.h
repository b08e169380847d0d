// What the classic (pubsub_codec.h, redis_adapter*.cc) and the sharded
// (sharded_adapter.cc) wire formats of the Redis adapter share: request
// types, JSON helpers.
#pragma once

#include <string>
#include <vector>

#include "depth-realtime/cluster.h"
#include "depth-realtime/json.h"
#include "sio/adapter.h"

namespace dr::cluster::wire {

// Request types of @socket.io/redis-adapter.
enum RequestType {
  kSockets = 0,
  kAllRooms = 1,
  kRemoteJoin = 2,
  kRemoteLeave = 3,
  kRemoteDisconnect = 4,
  kRemoteFetch = 5,
  kServerSideEmit = 6,
  kBroadcast = 7,
  kBroadcastClientCount = 8,
  kBroadcastAck = 9,
};


std::vector<std::string> str_list(const json_t* v);
Json json_strings(const std::vector<std::string>& items);
std::vector<std::string> dedup(const std::vector<std::string>& in);
// {rooms, except} of broadcast options.
Json opts_json(const BroadcastOptions& o);
// A RemoteSocket from a fetchSockets answer ({id, handshake, rooms, data}).
RemoteSocket remote_socket(const json_t* j);
// The [event, ...args] array of a broadcast: the sender's JSON, or decoded
// back from the encoded header (a broadcast relayed by a sibling worker).
Json broadcast_data(const sio::EncodedBroadcast& b);

}  // namespace dr::cluster::wire
