// The classic adapter's pub/sub messages as bytes, as @socket.io/redis-adapter
// writes them with notepack.io: broadcasts [uid, packet, opts], and the msgpack
// request and answers of a broadcast with acks. Kept apart from the adapter so
// that what goes on the wire can be read in one place. (The JSON requests are
// built where they are sent; the sharded format is sharded_adapter.cc's.)
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "depth-realtime/cluster.h"
#include "sio/adapter.h"
#include "sio/sio_packet.h"

namespace dr::cluster::wire {

// [uid, {type: 2, data, nsp}, {rooms, except, flags}]; "" when the
// broadcast's data cannot be read back.
std::string encode_broadcast(std::string_view uid, const sio::EncodedBroadcast& b);

// A broadcast another node published.
struct ReceivedBroadcast {
  sio::Packet packet;  // an event of the namespace: data, attachments, id
  bool is_volatile = false;
  std::vector<std::string> rooms, except;
};
// False unless `body` is [uid, packet, opts] with the packet's data a
// non-empty array, of namespace `nsp` and not sent by `own_uid` (checked
// before the data is decoded: our own come back to us).
bool decode_broadcast(std::string_view body, std::string_view own_uid, std::string_view nsp, ReceivedBroadcast& out);

// The uid of [uid, ...], read on the bytes ("" when `body` is not a msgpack
// array starting with a string): every broadcast a node receives is checked
// (its own, its siblings') before anything is decoded.
std::string_view raw_uid(std::string_view body);

// {uid, requestId, type: 7, packet: {type: 2, data, nsp},
//  opts: {rooms, except, flags: {timeout}}}
std::string encode_ack_broadcast(std::string_view uid, std::string_view request_id, const json_t* data,
                                 const std::vector<std::string>& attachments, const BroadcastOptions& opts,
                                 uint64_t timeout_ms);
// {type: 9, requestId, packet: <the client's first ack argument>}
std::string encode_broadcast_ack(std::string_view request_id, const Payload& reply);

}  // namespace dr::cluster::wire
