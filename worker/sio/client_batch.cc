// Client batching (`client_batch on`): the event `batch [{event, data}, ...]`
// handled item by item, each as if it had been sent alone, and, with an ack,
// the items' answers gathered into one answer to the client.
#include "core/event_log.h"
#include "core/metrics.h"
#include "sio/server.h"

namespace dr::sio {

// `batch [{event, data}, ...]`: each item is handled as if sent alone; with an
// ack, the answer is {data: [each item's answer]} once every item answered.
void SocketImpl::on_batch(Event& ev, size_t wire_bytes) {
  json_t* items = json_array_get(ev.args.args.get(), 0);
  size_t n = json_array_size(items);
  if (!json_is_array(items) || n < 1 || n > 100) {
    enqueue(std::move(ev), "batch: must be an array of 1 to 100 items", wire_bytes);
    return;
  }
  std::optional<uint64_t> batch;
  if (ev.ack_id) {
    batch = batching().next_item_ack++;
    batching().batches[*batch] = Batch{*ev.ack_id, n, std::vector<Json>(n), {}};
  }
  for (size_t i = 0; i < n; i++) {
    json_t* item = json_array_get(items, i);
    const char* name = json_string_value(json_object_get(item, "event"));
    Event sub;
    sub.name = name ? name : "";
    if (batch) {
      sub.ack_id = batching().next_item_ack++;
      batching().items[*sub.ack_id] = {*batch, i};
    }
    if (!json_is_object(item) || !name || sub.name == "batch" || is_reserved_event(sub.name)) {
      std::string details = "batch[" + std::to_string(i) + "]: " +
                            (sub.name == "batch" ? std::string("a batch cannot hold a batch")
                                                 : std::string("must be {event, data} with an event name"));
      enqueue(std::move(sub), std::move(details), std::exchange(wire_bytes, 0));
      continue;
    }
    json_t* data = json_object_get(item, "data");
    Json args(json_array());
    json_array_append_new(args.get(), data ? json_incref(data) : json_null());
    // Placeholders inside `data` keep pointing into the envelope's attachments.
    sub.args = Payload(std::move(args), ev.args.attachments);
    metrics::add(ns_.event_counter(sub.name));
    if (event_log::enabled() && client_)
      event_log::record(ns_.name(), sub.name, get("userId"), client_->session().handshake()->address, id_);
    enqueue(std::move(sub), {}, std::exchange(wire_bytes, 0));  // the envelope is counted once
  }
}

// Binary placeholders of one answer point into its own attachments; in the
// combined answer they follow the attachments of the answers before it.
static void shift_placeholders(json_t* v, size_t offset) {
  if (json_is_object(v)) {
    json_t* num = json_object_get(v, "num");
    if (json_is_true(json_object_get(v, "_placeholder")) && json_is_integer(num)) {
      json_integer_set(num, json_integer_value(num) + json_int_t(offset));
      return;
    }
    const char* key;
    json_t* child;
    json_object_foreach(v, key, child) shift_placeholders(child, offset);
  } else if (json_is_array(v)) {
    size_t i;
    json_t* child;
    json_array_foreach(v, i, child) shift_placeholders(child, offset);
  }
}

void SocketImpl::batch_answer(uint64_t batch, size_t index, Json answer, std::vector<std::string> attachments) {
  Batching* batching = batching_if();
  if (!batching) return;
  auto it = batching->batches.find(batch);
  if (it == batching->batches.end()) return;
  Batch& b = it->second;
  if (index < b.answers.size() && !b.answers[index]) {
    if (!attachments.empty()) {
      shift_placeholders(answer.get(), b.attachments.size());
      for (auto& a : attachments) b.attachments.push_back(std::move(a));
    }
    b.answers[index] = std::move(answer);
    b.pending--;
  }
  if (b.pending) return;
  Json list(json_array());
  for (auto& a : b.answers) json_array_append_new(list.get(), a ? a.release() : json_null());
  Json data(json_object());
  json_object_set_new(data.get(), "data", list.release());
  uint64_t client_ack = b.client_ack;
  Payload reply = Payload::of(std::move(data));
  reply.attachments = std::move(b.attachments);
  batching->batches.erase(it);
  ack(client_ack, std::move(reply));
}

}  // namespace dr::sio
