#include "cluster/adapter_wire.h"

#include <algorithm>

#include "sio/sio_packet.h"

namespace dr::cluster::wire {

std::vector<std::string> str_list(const json_t* v) {
  std::vector<std::string> out;
  size_t i;
  json_t* item;
  json_array_foreach(v, i, item) {
    if (json_is_string(item)) out.emplace_back(json_string_value(item), json_string_length(item));
    else if (json_is_integer(item)) out.push_back(std::to_string(json_integer_value(item)));
  }
  return out;
}

Json json_strings(const std::vector<std::string>& items) {
  Json a(json_array());
  for (auto& s : items) json_array_append_new(a.get(), json_stringn(s.data(), s.size()));
  return a;
}

std::vector<std::string> dedup(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (auto& s : in)
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  return out;
}

Json opts_json(const BroadcastOptions& o) {
  Json j(json_object());
  json_object_set_new(j.get(), "rooms", json_strings(o.rooms).release());
  json_object_set_new(j.get(), "except", json_strings(dedup(o.except)).release());
  return j;
}

// A RemoteSocket from a REMOTE_FETCH answer.
RemoteSocket remote_socket(const json_t* j) {
  RemoteSocket r;
  if (const char* id = json_str(j, "id")) r.id = id;
  r.rooms = str_list(json_object_get(j, "rooms"));
  json_t* hs = json_object_get(j, "handshake");
  r.handshake = Json(hs ? json_incref(hs) : json_object());
  json_t* data = json_object_get(j, "data");
  r.data = Json(data ? json_incref(data) : json_null());
  return r;
}

// The [event, ...args] array of a broadcast: the sender's JSON, or decoded
// back from the encoded header (a broadcast relayed by a sibling worker).
Json broadcast_data(const sio::EncodedBroadcast& b) {
  if (b.data) return json_share(b.data.get());
  sio::Decoder d(b.attachments.size());
  sio::Packet p;
  std::string err;
  auto r = d.add_text(b.header, p, err);
  for (size_t i = 0; r == sio::Decoder::Result::NeedMore && i < b.attachments.size(); i++)
    r = d.add_binary(b.attachments[i], p, err);
  if (r != sio::Decoder::Result::Packet) return nullptr;
  return std::move(p.data);
}

}  // namespace dr::cluster::wire
