// The adapter seam: every broadcast goes through it. The local adapter
// delivers on this worker and relays the encoded packet to the other workers
// of this machine through the master; the Redis adapter (next) adds other
// machines and Node servers.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "depth-realtime/module.h"

namespace dr::sio {

// A broadcast as it travels: the options and the packet encoded once
// (Socket.IO text header + binary attachments).
struct EncodedBroadcast {
  BroadcastOptions opts;
  std::string header;
  std::vector<std::string> attachments;
  // {"event":...,"data":...} when the event is batchable (server batching),
  // for the recipients that asked for batches.
  std::string batch_item;
  // Connection state recovery: the offset appended to the event ("" = not
  // recorded). `data` is [event, ...args] as JSON when the sender had it.
  std::string offset;
  Json data;

  std::string serialize() const;
  bool parse(std::string_view bytes);
};

class Adapter {
 public:
  virtual ~Adapter() = default;
  // Delivers to local members and to the rest of the cluster (unless opts.local).
  virtual void broadcast(const EncodedBroadcast& b) = 0;
  // A broadcast that arrived from elsewhere: deliver to local members only.
  virtual void on_remote(std::string_view bytes) = 0;

  // Connection state recovery (the Redis adapter): the offset for the next
  // recordable event ("" = recovery off), and the recording of an event sent
  // to one socket only (broadcast() records the others).
  virtual bool recovers() const { return false; }
  virtual std::string next_offset() { return {}; }
  virtual void record(const EncodedBroadcast&) {}
};

// Local delivery is the Socket.IO server's; relaying is the worker's channel.
class LocalAdapter : public Adapter {
 public:
  using Deliver = std::function<void(const EncodedBroadcast&)>;
  using Relay = std::function<void(std::string bytes)>;
  LocalAdapter(Deliver deliver, Relay relay) : deliver_(std::move(deliver)), relay_(std::move(relay)) {}
  void broadcast(const EncodedBroadcast& b) override;
  void on_remote(std::string_view bytes) override;

 private:
  Deliver deliver_;
  Relay relay_;  // empty with a single worker
};

}  // namespace dr::sio
