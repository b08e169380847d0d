// The adapter seam: every broadcast goes through it. The local adapter
// delivers on this worker and relays the encoded packet to the other workers
// of this machine through the master; the Redis adapter (next) adds other
// machines and Node servers.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "depth-realtime/module.h"

namespace dr::eio {
struct OutPacket;
}

namespace dr::sio {

// A broadcast's Socket.IO header, held as the Engine.IO text message its
// local recipients get ("4" before it): delivery hands them this very
// message, not a copy of it made for the delivery. Read as the header text.
class BroadcastHeader {
 public:
  BroadcastHeader() = default;
  BroadcastHeader& operator=(std::string_view header);  // copied, after the message type
  // `message` is the Engine.IO message: "4" followed by the header.
  static BroadcastHeader of_message(std::string message);

  std::string_view view() const;
  operator std::string_view() const { return view(); }
  size_t size() const { return view().size(); }
  bool empty() const { return view().empty(); }
  // The text message (null until a header is set).
  const std::shared_ptr<const eio::OutPacket>& message() const { return message_; }

 private:
  std::shared_ptr<const eio::OutPacket> message_;
};

// A broadcast as it travels: the options and the packet encoded once
// (Socket.IO text header + binary attachments).
struct EncodedBroadcast {
  BroadcastOptions opts;
  BroadcastHeader header;
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

  // For a broadcast kept to be used again (Server::broadcast): `opts`
  // copied in over the last ones, the strings and vectors keeping their
  // capacity (a copy of the options allocated the rooms' list every time);
  // release() then lets go of what the last one held but the options.
  void assign_options(const BroadcastOptions& from);
  void release();
};

// A disconnected socket's session, waiting for its client (connection state
// recovery). `connect_keys`: the data keys its CONNECT hooks set, which a
// recovery takes from the hooks again, never from the store.
struct StoredSession {
  std::string sid;
  std::string pid;
  std::vector<std::string> rooms;
  std::vector<std::pair<std::string, std::string>> data;
  std::vector<std::string> connect_keys;
  const std::string* get(std::string_view key) const {
    for (auto& [k, v] : data)
      if (k == key) return &v;
    return nullptr;
  }
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
  // The session of `pid` in `nsp`, looked up without taking it (nullopt: none).
  // `cb` runs later; false: no lookup possible now (then it never runs).
  using FoundSession = std::function<void(std::optional<StoredSession>)>;
  virtual bool find_session(const std::string& /*nsp*/, const std::string& /*pid*/, FoundSession) { return false; }
  // Takes the session over (no other CONNECT can then) and reads what was
  // recorded for the namespace after `offset`; nullopt when it is gone or no
  // longer `sid`'s, or the offset is unknown or too old. `cb` runs later;
  // false: not possible now (then it never runs).
  // Counts a CONNECT that carried a session id: resumed, or started fresh.
  virtual void recovery_done(bool /*recovered*/) {}
  using ClaimedSession = std::function<void(std::optional<std::vector<EncodedBroadcast>> missed)>;
  virtual bool claim_session(const std::string& /*nsp*/, const std::string& /*pid*/, const std::string& /*sid*/,
                             const std::string& /*offset*/, ClaimedSession) {
    return false;
  }
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
