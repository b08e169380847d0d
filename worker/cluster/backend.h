// The cluster operations behind include/depth-realtime/cluster.h. The worker
// installs one backend: LocalBackend (this worker only) without Redis, the
// Redis adapter with it. LocalBackend also does the local half of every
// operation for the Redis adapter.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/timers.h"
#include "depth-realtime/cluster.h"
#include "sio/server.h"

namespace dr::cluster {

// What the functions of include/depth-realtime/cluster.h call.
class ClusterBackend {
 public:
  virtual ~ClusterBackend() = default;
  virtual bool configured() const = 0;
  virtual bool ready() const = 0;
  virtual void fetch_sockets(const BroadcastOptions& opts, FetchCallback cb) = 0;
  virtual void sockets_join(const BroadcastOptions& opts, const std::vector<std::string>& rooms) = 0;
  virtual void sockets_leave(const BroadcastOptions& opts, const std::vector<std::string>& rooms) = 0;
  virtual void disconnect_sockets(const BroadcastOptions& opts, bool close) = 0;
  virtual void all_rooms(const std::string& nsp, std::function<void(std::string, std::vector<std::string>)> cb) = 0;
  virtual void server_count(const std::string& nsp, std::function<void(size_t)> cb) = 0;
  virtual void on_server_event(const std::string& nsp, const std::string& event, ServerEventHandler h) = 0;
  virtual void server_side_emit(const std::string& nsp, const std::string& event, Payload args) = 0;
  virtual void server_side_emit_with_ack(const std::string& nsp, const std::string& event, Payload args,
                                         uint64_t timeout_ms, ServerAcks cb) = 0;
  virtual void broadcast_with_ack(const BroadcastOptions& opts, const std::string& event, Payload args,
                                  uint64_t timeout_ms, BroadcastAcks cb) = 0;
  virtual void room_members(const std::string& nsp, const std::string& room, PresenceCallback cb) = 0;
};

// The process's implementation (one worker per process); null before start.
void install(ClusterBackend* backend);

// This worker's sockets: the local half of every operation.
class LocalBackend : public ClusterBackend {
 public:
  LocalBackend(Timers& timers, sio::Server& server);

  bool configured() const override { return false; }
  bool ready() const override { return false; }
  void fetch_sockets(const BroadcastOptions& opts, FetchCallback cb) override;
  void sockets_join(const BroadcastOptions& opts, const std::vector<std::string>& rooms) override;
  void sockets_leave(const BroadcastOptions& opts, const std::vector<std::string>& rooms) override;
  void disconnect_sockets(const BroadcastOptions& opts, bool close) override;
  void all_rooms(const std::string& nsp, std::function<void(std::string, std::vector<std::string>)> cb) override;
  void server_count(const std::string& nsp, std::function<void(size_t)> cb) override;
  void on_server_event(const std::string& nsp, const std::string& event, ServerEventHandler h) override;
  void server_side_emit(const std::string&, const std::string&, Payload) override {}  // no other node
  void server_side_emit_with_ack(const std::string& nsp, const std::string& event, Payload args, uint64_t timeout_ms,
                                 ServerAcks cb) override;
  void broadcast_with_ack(const BroadcastOptions& opts, const std::string& event, Payload args, uint64_t timeout_ms,
                          BroadcastAcks cb) override;
  void room_members(const std::string& nsp, const std::string& room, PresenceCallback cb) override;

  // ---- the pieces the Redis adapter builds on
  std::vector<sio::SocketImpl*> select(const BroadcastOptions& opts) const;
  std::vector<std::weak_ptr<Socket>> select_weak(const BroadcastOptions& opts) const;
  std::vector<RemoteSocket> fetch_local(const BroadcastOptions& opts) const;
  std::vector<std::string> room_names(const std::string& nsp) const;
  std::vector<Member> members_local(const std::string& nsp, const std::string& room, const std::string& node) const;
  // Runs the handlers of a server-side event that came from another node.
  void dispatch_server_event(const std::string& nsp, Json data, std::vector<std::string> attachments, ServerAck ack);
  // Delivers an event with a shared ack id to the local recipients; each
  // answer's first argument goes to `on_reply`. Returns the recipient count.
  size_t deliver_with_ack(const BroadcastOptions& opts, const json_t* data, const std::vector<std::string>& attachments,
                          uint64_t timeout_ms, std::function<void(Payload)> on_reply);
  // Callbacks are posted on it, never run inside the call that asked for them.
  Timers& timers() { return timers_; }
  sio::Server& server() { return server_; }

 private:
  sio::Server& server_;
  Timers& timers_;
  std::map<std::pair<std::string, std::string>, std::vector<ServerEventHandler>> server_events_;
  uint64_t next_ack_id_ = uint64_t(1) << 40;  // above any per-socket id, below 2^53 for JavaScript
};

// {id, handshake, rooms, data} of a local socket, as fetchSockets answers.
RemoteSocket describe(sio::SocketImpl& s);
Json describe_json(const RemoteSocket& r);

}  // namespace dr::cluster
