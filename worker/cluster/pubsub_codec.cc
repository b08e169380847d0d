#include "cluster/pubsub_codec.h"

#include "cluster/adapter_wire.h"
#include "sio/msgpack_json.h"

namespace dr::cluster::wire {

std::string encode_broadcast(std::string_view uid, const sio::EncodedBroadcast& b) {
  Json data = broadcast_data(b);
  if (!data) return {};
  Packer pk;
  // About the size it will have (the data as JSON text, less its framing):
  // one allocation instead of one per doubling.
  size_t size = 64 + uid.size() + b.header.size() + b.opts.nsp.size();
  for (auto* list : {&b.opts.rooms, &b.opts.except})
    for (auto& r : *list) size += r.size() + 5;
  for (auto& a : b.attachments) size += a.size() + 5;
  pk.out().reserve(size);
  pk.array(3);
  pk.str(uid);
  pk.map(3);
  pk.str("type");
  pk.integer(2);
  pk.str("data");
  pk.json(data.get(), b.attachments);
  pk.str("nsp");
  pk.str(b.opts.nsp);
  pk.map(3);
  pk.str("rooms");
  pk.str_array(b.opts.rooms);
  pk.str("except");
  pk.str_array(dedup(b.opts.except));
  pk.str("flags");
  pk.map(b.opts.is_volatile ? 1 : 0);
  if (b.opts.is_volatile) {
    pk.str("volatile");
    pk.boolean(true);
  }
  return std::move(pk.out());
}

bool decode_broadcast(std::string_view body, std::string_view own_uid, std::string_view nsp, ReceivedBroadcast& out) {
  Unpacked u;
  if (!u.parse(body)) return false;
  const msgpack_object& root = u.root();
  if (root.type != MSGPACK_OBJECT_ARRAY || root.via.array.size < 3) return false;
  const msgpack_object* el = root.via.array.ptr;
  if (as_str(&el[0]) == own_uid) return false;
  const msgpack_object& packet = el[1];
  const msgpack_object& opts = el[2];
  auto packet_nsp = as_str(map_get(packet, "nsp"));
  if ((packet_nsp ? *packet_nsp : std::string_view("/")) != nsp) return false;
  const msgpack_object* data = map_get(packet, "data");
  if (!data || data->type != MSGPACK_OBJECT_ARRAY || data->via.array.size == 0) return false;

  sio::Packet& p = out.packet;
  p.type = sio::PacketType::Event;
  p.nsp = std::string(nsp);
  if (auto id = as_int(map_get(packet, "id")); id && *id >= 0) p.id = uint64_t(*id);
  p.data = to_json(*data, p.attachments);
  const msgpack_object* flags = map_get(opts, "flags");
  out.is_volatile = flags && as_true(map_get(*flags, "volatile"));
  out.rooms = as_rooms(map_get(opts, "rooms"));
  out.except = as_rooms(map_get(opts, "except"));
  return true;
}

std::string_view raw_uid(std::string_view body) {
  auto at = [&](size_t i) { return uint8_t(body[i]); };
  size_t i;
  if (body.size() >= 1 && (at(0) & 0xf0) == 0x90) i = 1;        // fixarray
  else if (body.size() >= 3 && at(0) == 0xdc) i = 3;            // array 16
  else if (body.size() >= 5 && at(0) == 0xdd) i = 5;            // array 32
  else return {};
  if (i >= body.size()) return {};
  size_t len, head;
  uint8_t t = at(i);
  if ((t & 0xe0) == 0xa0) len = t & 0x1f, head = 1;                                  // fixstr
  else if (t == 0xd9 && i + 2 <= body.size()) len = at(i + 1), head = 2;              // str 8
  else if (t == 0xda && i + 3 <= body.size()) len = size_t(at(i + 1)) << 8 | at(i + 2), head = 3;  // str 16
  else return {};
  if (body.size() - i - head < len) return {};
  return body.substr(i + head, len);
}

std::string encode_ack_broadcast(std::string_view uid, std::string_view request_id, const json_t* data,
                                 const std::vector<std::string>& attachments, const BroadcastOptions& opts,
                                 uint64_t timeout_ms) {
  Packer pk;
  pk.map(5);
  pk.str("uid");
  pk.str(uid);
  pk.str("requestId");
  pk.str(request_id);
  pk.str("type");
  pk.integer(kBroadcast);
  pk.str("packet");
  pk.map(3);
  pk.str("type");
  pk.integer(2);
  pk.str("data");
  pk.json(data, attachments);
  pk.str("nsp");
  pk.str(opts.nsp);
  pk.str("opts");
  pk.map(3);
  pk.str("rooms");
  pk.str_array(opts.rooms);
  pk.str("except");
  pk.str_array(dedup(opts.except));
  pk.str("flags");
  pk.map(1);
  pk.str("timeout");
  pk.integer(int64_t(timeout_ms));
  return std::move(pk.out());
}

std::string encode_broadcast_ack(std::string_view request_id, const Payload& reply) {
  Packer pk;
  pk.map(3);
  pk.str("type");
  pk.integer(kBroadcastAck);
  pk.str("requestId");
  pk.str(request_id);
  pk.str("packet");
  json_t* first = json_array_get(reply.args.get(), 0);
  if (first) pk.json(first, reply.attachments);
  else pk.nil();
  return std::move(pk.out());
}

}  // namespace dr::cluster::wire
