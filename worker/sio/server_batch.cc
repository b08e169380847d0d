// Server batching (`server_batch_events`): for a client that connected with
// auth.batch true, the events a rule names are coalesced per socket and leave
// as one `batch` event server_batch_interval after the first of them, instead
// of one message each.
#include "sio/server.h"

namespace dr::sio {

void SocketImpl::queue_batch_item(const std::string& item) {
  std::string& buf = batching().buf;
  if (buf.empty()) server().batch_pending(weak_from_this());
  else buf.push_back(',');
  buf += item;
  // Bounded: past max_output_buffer it leaves now, and the connection's own
  // bound decides whether this client keeps up.
  if (buf.size() > server().config().core.max_output_buffer) flush_batch();
}

void SocketImpl::flush_batch() {
  Batching* batching = batching_if();
  if (!batching || batching->buf.empty() || gone_ || !client_) return;
  std::string header = "2";
  if (ns_.name() != "/") header += ns_.name() + ",";
  header += "[\"batch\",[" + batching->buf + "]]";
  batching->buf.clear();
  client_->send_encoded(server().wire(header, {}), false);
}

// {"event":E,"data":D} when a server_batch_events rule takes this event.
std::string Server::batch_item(std::string_view event, const Payload& args) const {
  json_t* data = json_array_get(args.args.get(), 0);
  for (auto& r : cfg_->core.server_batch_events) {
    if (r.event != event) continue;
    if (!r.field.empty()) {
      const char* v = json_string_value(json_object_get(data, r.field.c_str()));
      if (!v || r.value != v) continue;
    }
    Json item(json_object());
    json_object_set_new(item.get(), "event", json_stringn(event.data(), event.size()));
    json_object_set(item.get(), "data", data ? data : json_null());
    return json_text(item.get());
  }
  return {};
}

void Server::batch_pending(std::weak_ptr<SocketImpl> s) {
  batch_pending_.push_back(std::move(s));
  if (!batch_timer_.armed()) batch_timer_.arm_in(int64_t(cfg_->core.server_batch_interval));
}

void Server::flush_batches() {
  auto pending = std::move(batch_pending_);
  batch_pending_.clear();
  for (auto& w : pending)
    if (auto s = w.lock()) s->flush_batch();
}

}  // namespace dr::sio
