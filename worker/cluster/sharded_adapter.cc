// The Redis adapter's sharded wire format (`redis cluster=`), as
// @socket.io/redis-adapter's createShardedAdapter speaks it: socket.io-adapter's
// ClusterAdapter messages {uid, nsp, type, data} (JSON, or msgpack when they
// carry binary) over SPUBLISH / SSUBSCRIBE. Everything else of the adapter is
// shared with the classic format: membership (redis_adapter_presence.cc),
// recovery (redis_adapter_recovery.cc), requests' bookkeeping
// (redis_adapter_requests.cc).
#include <algorithm>

#include "cluster/adapter_wire.h"
#include "sio/msgpack_json.h"
#include "cluster/redis_adapter.h"

namespace dr::cluster {
namespace {

using namespace wire;

// socket.io-adapter's MessageType (cluster-adapter.ts).
enum ClusterType {
  kBroadcastMsg = 3,
  kSocketsJoinMsg = 4,
  kSocketsLeaveMsg = 5,
  kDisconnectSocketsMsg = 6,
  kFetchSocketsMsg = 7,
  kFetchSocketsResponse = 8,
  kServerSideEmitMsg = 9,
  kServerSideEmitResponse = 10,
  kBroadcastClientCountMsg = 11,
  kBroadcastAckMsg = 12,
};

// Node's socket ids are 20 characters: a broadcast to one of those goes on
// the namespace's channel, to any other single room on the room's own.
bool looks_like_socket_id(const std::string& room) { return room.size() == 20; }

// {rooms, except, flags}.
Json cluster_opts(const BroadcastOptions& o, Json flags) {
  Json j = opts_json(o);
  json_object_set_new(j.get(), "flags", flags ? flags.release() : json_object());
  return j;
}

}  // namespace

std::string RedisAdapter::sharded_channel(const Nsp& n, const BroadcastOptions& opts) const {
  if (opts.rooms.size() == 1 && !looks_like_socket_id(opts.rooms[0])) return room_channel(n, opts.rooms[0]);
  return n.bcast;
}

void RedisAdapter::publish_sharded(const std::string& channel, const std::string& nsp, int type, Json data,
                                   const std::vector<std::string>& attachments) {
  Json msg(json_object());
  json_object_set_new(msg.get(), "uid", json_stringn(uid_.data(), uid_.size()));
  json_object_set_new(msg.get(), "nsp", json_stringn(nsp.data(), nsp.size()));
  json_object_set_new(msg.get(), "type", json_integer(type));
  if (data) json_object_set_new(msg.get(), "data", data.release());
  if (attachments.empty()) {
    publish(channel, json_text(msg.get()));
    return;
  }
  Packer pk;  // binary: msgpack, placeholders become `bin` items
  pk.json(msg.get(), attachments);
  publish(channel, pk.out());
}

std::string RedisAdapter::encode_sharded(const sio::EncodedBroadcast& b) {
  Json data = broadcast_data(b);
  if (!data) return {};
  Json packet(json_object());
  json_object_set_new(packet.get(), "type", json_integer(2));
  json_object_set_new(packet.get(), "data", data.release());
  json_object_set_new(packet.get(), "nsp", json_stringn(b.opts.nsp.data(), b.opts.nsp.size()));
  Json flags(json_object());
  if (b.opts.is_volatile) json_object_set_new(flags.get(), "volatile", json_true());
  BroadcastOptions o;
  o.rooms = b.opts.rooms;
  o.except = b.opts.except;
  Json body(json_object());
  json_object_set_new(body.get(), "packet", packet.release());
  json_object_set_new(body.get(), "opts", cluster_opts(o, std::move(flags)).release());
  Json msg(json_object());
  json_object_set_new(msg.get(), "uid", json_stringn(uid_.data(), uid_.size()));
  json_object_set_new(msg.get(), "nsp", json_stringn(b.opts.nsp.data(), b.opts.nsp.size()));
  json_object_set_new(msg.get(), "type", json_integer(kBroadcastMsg));
  json_object_set_new(msg.get(), "data", body.release());
  if (b.attachments.empty()) return json_text(msg.get());
  Packer pk;
  pk.json(msg.get(), b.attachments);
  return std::move(pk.out());
}

// The classic request (its type and fields) as a cluster message.
void RedisAdapter::request_sharded(Nsp& n, int type, const std::string* id, Json fields,
                                   const std::vector<std::string>& attachments) {
  Json data(json_object());
  int ctype = 0;
  auto move = [&](const char* from, const char* to) {
    if (json_t* v = json_object_get(fields.get(), from)) json_object_set(data.get(), to, v);
  };
  switch (type) {
    case kRemoteFetch:
      ctype = kFetchSocketsMsg;
      move("opts", "opts");
      break;
    case kRemoteJoin:
    case kRemoteLeave:
      ctype = type == kRemoteJoin ? kSocketsJoinMsg : kSocketsLeaveMsg;
      move("opts", "opts");
      move("rooms", "rooms");
      break;
    case kRemoteDisconnect:
      ctype = kDisconnectSocketsMsg;
      move("opts", "opts");
      move("close", "close");
      break;
    case kServerSideEmit:
      ctype = kServerSideEmitMsg;
      move("data", "packet");
      break;
    default:
      return;
  }
  if (json_t* o = json_object_get(data.get(), "opts"); o && !json_object_get(o, "flags"))
    json_object_set_new(o, "flags", json_object());
  if (id) json_object_set_new(data.get(), "requestId", json_stringn(id->data(), id->size()));
  publish_sharded(n.bcast, n.name, ctype, std::move(data), attachments);
}

void RedisAdapter::broadcast_with_ack_sharded(Nsp& n, const BroadcastOptions& opts, const std::string& id,
                                              const json_t* data, const std::vector<std::string>& attachments,
                                              uint64_t timeout_ms) {
  Json packet(json_object());
  json_object_set_new(packet.get(), "type", json_integer(2));
  json_object_set(packet.get(), "data", const_cast<json_t*>(data));
  json_object_set_new(packet.get(), "nsp", json_stringn(opts.nsp.data(), opts.nsp.size()));
  Json flags(json_object());
  json_object_set_new(flags.get(), "timeout", json_integer(json_int_t(timeout_ms)));
  Json body(json_object());
  json_object_set_new(body.get(), "packet", packet.release());
  json_object_set_new(body.get(), "requestId", json_stringn(id.data(), id.size()));
  json_object_set_new(body.get(), "opts", cluster_opts(opts, std::move(flags)).release());
  // With an ack, never a room's channel: every node counts its clients.
  publish_sharded(n.bcast, n.name, kBroadcastMsg, std::move(body), attachments);
  numsub(n.bcast, [this, id](size_t count) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    it->second->expected = std::max<size_t>(count, 1);
    check(id);
  });
}

void RedisAdapter::on_sharded(Nsp& n, std::string_view channel, std::string_view body) {
  // A room channel whose last local member just left: nothing to do.
  std::string_view rest = channel.substr(n.bcast.size());
  bool for_us = rest.size() == uid_.size() + 1 && rest.substr(0, uid_.size()) == uid_;
  if (!rest.empty() && !for_us) {
    std::string_view room = rest;
    if (room.back() == '#') room.remove_suffix(1);
    if (!n.ns->has_room(std::string(room))) return;
  }
  // [uid, packet, opts] (msgpack): a classic PUBLISH, from
  // @socket.io/redis-emitter with a cluster client.
  if (!body.empty() && uint8_t(body[0]) == 0x93) return on_broadcast(n, channel, body);
  std::vector<std::string> attachments;
  Json msg = decode_body(body, attachments);
  if (!json_is_object(msg.get())) return;
  const char* uid = json_str(msg.get(), "uid");
  if (!uid || uid_ == uid) return;  // ours: applied locally already
  // A sibling worker's: the relay brought it already.
  if (!siblings_.empty() && std::string_view(uid).substr(0, siblings_.size()) == siblings_) return;
  const char* nsp = json_str(msg.get(), "nsp");
  if (!nsp || n.name != nsp) return;
  int type = int(json_integer_value(json_object_get(msg.get(), "type")));
  const json_t* data = json_object_get(msg.get(), "data");
  if (type >= kFetchSocketsResponse && type != kServerSideEmitMsg)
    return on_sharded_response(type, data, attachments);

  const json_t* jopts = json_object_get(data, "opts");
  BroadcastOptions o;
  o.nsp = n.name;
  o.rooms = str_list(json_object_get(jopts, "rooms"));
  o.except = str_list(json_object_get(jopts, "except"));
  const json_t* rid = json_object_get(data, "requestId");
  std::string reply_to = n.bcast + uid + "#";
  switch (type) {
    case kBroadcastMsg: {
      const json_t* packet = json_object_get(data, "packet");
      const json_t* args = json_object_get(packet, "data");
      if (!json_is_array(args) || json_array_size(args) == 0) return;
      if (!json_is_string(rid)) {
        sio::Packet p;
        p.type = sio::PacketType::Event;
        p.nsp = n.name;
        const json_t* pid = json_object_get(packet, "id");
        if (json_is_integer(pid) && json_integer_value(pid) >= 0) p.id = uint64_t(json_integer_value(pid));
        p.data = json_share(const_cast<json_t*>(args));
        p.attachments = std::move(attachments);
        const json_t* flags = json_object_get(jopts, "flags");
        deliver_remote(n, std::move(p), json_is_true(json_object_get(flags, "volatile")), std::move(o.rooms),
                       std::move(o.except));
        return;
      }
      const json_t* timeout = json_object_get(json_object_get(jopts, "flags"), "timeout");
      uint64_t ms = json_is_integer(timeout) && json_integer_value(timeout) > 0 ? uint64_t(json_integer_value(timeout))
                                                                                 : conf_.requests_timeout;
      std::string request_id = json_string_value(rid);
      size_t count = local_.deliver_with_ack(
          o, args, attachments, ms, [this, reply_to, request_id, nsp = n.name](Payload reply) {
            Json d(json_object());
            json_object_set_new(d.get(), "requestId", json_string(request_id.c_str()));
            json_t* first = json_array_get(reply.args.get(), 0);
            json_object_set(d.get(), "packet", first ? first : json_null());
            publish_sharded(reply_to, nsp, kBroadcastAckMsg, std::move(d), reply.attachments);
          });
      Json d(json_object());
      json_object_set_new(d.get(), "requestId", json_string(request_id.c_str()));
      json_object_set_new(d.get(), "clientCount", json_integer(json_int_t(count)));
      publish_sharded(reply_to, n.name, kBroadcastClientCountMsg, std::move(d));
      return;
    }
    case kSocketsJoinMsg:
      local_.sockets_join(o, str_list(json_object_get(data, "rooms")));
      return;
    case kSocketsLeaveMsg:
      local_.sockets_leave(o, str_list(json_object_get(data, "rooms")));
      return;
    case kDisconnectSocketsMsg:
      local_.disconnect_sockets(o, json_is_true(json_object_get(data, "close")));
      return;
    case kFetchSocketsMsg: {
      if (!json_is_string(rid)) return;
      Json list(json_array());
      for (auto& r : local_.fetch_local(o)) json_array_append_new(list.get(), describe_json(r).release());
      Json d(json_object());
      json_object_set(d.get(), "requestId", const_cast<json_t*>(rid));
      json_object_set_new(d.get(), "sockets", list.release());
      publish_sharded(reply_to, n.name, kFetchSocketsResponse, std::move(d));
      return;
    }
    case kServerSideEmitMsg: {
      const json_t* packet = json_object_get(data, "packet");
      if (!json_is_array(packet)) return;
      ServerAck ack;
      if (json_is_string(rid)) {
        ack = [this, reply_to, id = std::string(json_string_value(rid)), nsp = n.name](Json reply) {
          Json d(json_object());
          json_object_set_new(d.get(), "requestId", json_string(id.c_str()));
          json_object_set_new(d.get(), "packet", reply ? reply.release() : json_null());
          publish_sharded(reply_to, nsp, kServerSideEmitResponse, std::move(d));
        };
      }
      local_.dispatch_server_event(n.name, json_share(const_cast<json_t*>(packet)), std::move(attachments),
                                   std::move(ack));
      return;
    }
    default:
      return;  // heartbeats and unknown types: nothing to do
  }
}

void RedisAdapter::on_sharded_response(int type, const json_t* data, const std::vector<std::string>& attachments) {
  const char* rid = json_str(data, "requestId");
  if (!rid) return;
  auto it = pending_.find(rid);
  if (it == pending_.end()) return;  // someone else's, or too late
  Pending& p = *it->second;
  switch (type) {
    case kFetchSocketsResponse: {
      if (p.type != kRemoteFetch) return;
      size_t i;
      json_t* s;
      json_array_foreach(json_object_get(data, "sockets"), i, s) p.sockets.push_back(remote_socket(s));
      p.got++;
      break;
    }
    case kServerSideEmitResponse: {
      if (p.type != kServerSideEmit) return;
      json_t* packet = json_object_get(data, "packet");
      p.replies.push_back(Json(packet ? json_incref(packet) : json_null()));
      p.got++;
      break;
    }
    case kBroadcastClientCountMsg:
      if (p.type != kBroadcast) return;
      p.clients += size_t(std::max<json_int_t>(0, json_integer_value(json_object_get(data, "clientCount"))));
      p.got++;
      break;
    case kBroadcastAckMsg: {
      if (p.type != kBroadcast) return;
      const json_t* packet = json_object_get(data, "packet");
      p.acks.push_back(payload_of(packet ? packet : json_null(), attachments));
      break;
    }
    default:
      return;
  }
  check(rid);
}

}  // namespace dr::cluster
