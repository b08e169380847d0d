// The Redis adapter: every worker is one node of a cluster that shares one
// Redis, wire-compatible with @socket.io/redis-adapter (classic pub/sub) and
// @socket.io/redis-emitter (see shared/protocols/redis-adapter.md):
//
//  - broadcasts are delivered locally and published as [uid, packet, opts]
//    (msgpack) on <key>#<nsp># or, for exactly one room, <key>#<nsp>#<room>#;
//    like Node's adapter, a node PSUBSCRIBEs to <key>#<nsp>#* once per
//    namespace and drops, on the bytes, what is its own or a sibling's or for
//    a room without a local member: Redis holds no channel per room, user or
//    socket, and a join needs no round trip (sharded Pub/Sub, which has no
//    patterns, still subscribes per room: sharded_adapter.cc);
//  - requests and responses (fetchSockets, socketsJoin/Leave, disconnectSockets,
//    serverSideEmit with acks, broadcasts with acks, allRooms) on
//    <key>-request#<nsp># and <key>-response#<nsp>#[<uid>#];
//  - shared membership: <app>presence:<nsp>#<room> (socket id -> node and
//    user), each node's entries listed in <app>node:<uid>, heartbeats in the
//    sorted set <app>nodes; a node silent for redis_node_ttl is purged by the
//    others;
//  - connection state recovery: recordable events get an offset and go to the
//    stream <app>recovery:<nsp> (trimmed to the window) atomically with their
//    PUBLISH; a disconnected socket's session waits in
//    <app>recovery:session:<pid>, so a client may resume on any node. A
//    connected socket's session is kept there too (written at connect, join
//    and leave, refreshed before it expires), so that the clients of a worker
//    that crashed or was stopped fast resume as well.
//
// The other workers of this process get every broadcast through the master
// (the relay), with Redis or without: Redis carries it to the other nodes
// only, and a worker drops what Redis brings from a sibling (its uid starts
// with the daemon's tag). So when Redis comes back, no broadcast between
// siblings is lost while their subscriptions are being restored one by one.
// What other processes published while this worker's subscriber was away is
// read back from the recovery stream once it is subscribed again (catch_up.h).
//
// One class, one file per concern: redis_adapter.cc (lifecycle, broadcasts,
// catch-up, room observer), redis_adapter_requests.cc, _presence.cc,
// _recovery.cc, sharded_adapter.cc; the bytes in pubsub_codec.h, the Lua in
// presence_lua.h and recovery_lua.h.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "cluster/catch_up.h"
#include "cluster/backend.h"
#include "cluster/redis_link.h"
#include "core/metrics.h"
#include "sio/adapter.h"
#include "sio/server.h"

namespace dr::cluster {

// A session's record as it is stored in Redis (and read back by a recovery):
// {"nsp","sid","pid","gen","rooms","data","connectKeys"[,"disconnectedAt"]},
// written straight into its text, byte for byte as jansson's compact dump of
// that object was: what jansson would refuse (a string that is not UTF-8, a
// key cut at a NUL) is left out or cut as it did.
std::string session_record(std::string_view nsp, std::string_view sid, std::string_view pid, uint64_t gen,
                           std::span<const std::string> rooms,
                           std::span<const std::pair<std::string, std::string>> data,
                           std::span<const std::string> connect_keys, std::optional<int64_t> disconnected_at);
// What a session closed on purpose leaves: {"gen":N,"closed":true}.
std::string closed_session_record(uint64_t gen);

class RedisAdapter final : public sio::Adapter, public sio::RoomObserver, public ClusterBackend {
 public:
  using Relay = std::function<void(std::string bytes)>;  // to this process's other workers
  // `daemon_tag`: shared by this process's workers (see siblings_).
  RedisAdapter(uv_loop_t* loop, sio::Server& server, const CoreConf::Redis& conf, Relay relay,
               const std::string& daemon_tag = {});
  ~RedisAdapter() override;

  void start();
  void flush();  // before the clients' output, each loop turn
  const std::string& uid() const { return uid_; }

  // ---- sio::Adapter
  void broadcast(const sio::EncodedBroadcast& b) override;
  void on_remote(std::string_view bytes) override;
  bool recovers() const override;
  std::string next_offset() override;
  void record(const sio::EncodedBroadcast& b) override;
  bool find_session(const std::string& nsp, const std::string& pid, FoundSession cb) override;
  bool claim_session(const std::string& nsp, const std::string& pid, const std::string& sid, const std::string& offset,
                     ClaimedSession cb) override;
  void recovery_done(bool recovered) override;
  // A fast stop (SIGTERM): every connected socket's session is written to wait
  // recovery_window for its client; `done` runs once Redis has answered them
  // all, or at once when it cannot be asked.
  void save_sessions(std::function<void()> done);

  // ---- sio::RoomObserver
  void joined(sio::SocketImpl& s, const std::string& room, bool first) override;
  void left(sio::SocketImpl& s, const std::string& room, bool last) override;
  void connected(sio::SocketImpl& s) override;
  void disconnected(sio::SocketImpl& s, std::string_view reason) override;

  // ---- ClusterBackend (include/depth-realtime/cluster.h)
  bool configured() const override { return true; }
  bool ready() const override { return link_.ready(); }
  void fetch_sockets(const BroadcastOptions& opts, FetchCallback cb) override;
  void sockets_join(const BroadcastOptions& opts, const std::vector<std::string>& rooms) override;
  void sockets_leave(const BroadcastOptions& opts, const std::vector<std::string>& rooms) override;
  void disconnect_sockets(const BroadcastOptions& opts, bool close) override;
  void all_rooms(const std::string& nsp, std::function<void(std::string, std::vector<std::string>)> cb) override;
  void server_count(const std::string& nsp, std::function<void(size_t)> cb) override;
  void on_server_event(const std::string& nsp, const std::string& event, ServerEventHandler h) override;
  void server_side_emit(const std::string& nsp, const std::string& event, Payload args) override;
  void server_side_emit_with_ack(const std::string& nsp, const std::string& event, Payload args, uint64_t timeout_ms,
                                 ServerAcks cb) override;
  void broadcast_with_ack(const BroadcastOptions& opts, const std::string& event, Payload args, uint64_t timeout_ms,
                          BroadcastAcks cb) override;
  void room_members(const std::string& nsp, const std::string& room, PresenceCallback cb) override;

 private:
  // The channels of one namespace.
  struct Nsp {
    std::string name;
    sio::Namespace* ns = nullptr;
    std::string bcast;     // <key>#<nsp>#
    std::string request;   // <key>-request#<nsp>#
    std::string response;  // <key>-response#<nsp>#
    std::string specific;  // <key>-response#<nsp>#<uid>#
    std::string stream;    // stream_key(name)
    CatchUp catch_up;
  };
  // A request of ours waiting for the other nodes' answers.
  struct Pending {
    int type = 0;
    int64_t deadline = 0;
    size_t expected = SIZE_MAX;  // answers (or server reports) awaited; unknown until NUMSUB answers
    size_t got = 0;
    std::vector<RemoteSocket> sockets;
    std::set<std::string> rooms;
    std::vector<Json> replies;
    size_t clients = 0;  // broadcast with acks: acks awaited
    std::vector<Payload> acks;
    std::function<void(Pending& p, std::string error)> done;
    std::unique_ptr<CallbackTimer> timeout;  // finishes it with "timeout" at `deadline`
  };

  Nsp* find(std::string_view nsp);
  std::string bcast_channel(std::string_view nsp) const { return conf_.key_prefix + "#" + std::string(nsp) + "#"; }
  // <key>#<nsp>#<room>#, in one allocation.
  static std::string room_channel(std::string_view bcast, std::string_view room) {
    std::string c;
    c.reserve(bcast.size() + room.size() + 1);
    c.append(bcast).append(room) += '#';
    return c;
  }
  static std::string room_channel(const Nsp& n, std::string_view room) { return room_channel(n.bcast, room); }
  // Keys. With Redis Cluster, hash-tagged so that each script's keys share a
  // slot: the membership (nodes, node indexes, presence) on one, a
  // namespace's recovery stream and sessions on one (docs/cluster.md).
  std::string presence_key(const std::string& nsp, const std::string& room) const;
  std::string node_key(const std::string& uid) const { return members_prefix_ + "node:" + uid; }
  std::string nodes_key() const { return members_prefix_ + "nodes"; }
  std::string stream_key(const std::string& nsp) const {
    return conf_.app_prefix + "recovery:" + (sharded_ ? "{" + nsp + "}" : nsp);
  }
  std::string session_key(const std::string& nsp, std::string_view pid) const {
    std::string key = conf_.app_prefix + (sharded_ ? "recovery:{" + nsp + "}:session:" : "recovery:session:");
    return key.append(pid);
  }
  std::string new_id() const;

  void on_state(bool ready);
  void on_subscriber(bool subscribed);
  void catch_up(Nsp& n);
  void caught_up(const std::string& nsp, redisReply* r);
  bool foreign(std::string_view offset) const;
  void on_message(std::string_view channel, std::string_view body);
  void on_broadcast(Nsp& n, std::string_view channel, std::string_view body);
  bool from_sibling(std::string_view uid) const;  // of raw_uid()
  void on_request(Nsp& n, std::string_view body);
  void on_response(std::string_view body);
  void respond(const Nsp& n, const json_t* request, Json response);
  // A recordable broadcast sent to Redis: kept until Redis answers, and
  // published again (unless the stream shows it was) when the commands
  // connection was lost first; a module may have acked it already.
  struct Recorded {
    const Nsp* nsp;  // its stream; nsps_ is not changed after start()
    std::string channel, offset, stored, msg;
    int64_t at = 0;
    uint64_t published_at = 0;  // uv_hrtime() when sent with its PUBLISH (0: not timed)
  };
  void send_recorded(Recorded r, bool again);
  void recorded_answered(uint64_t seq, redisReply* reply);
  void republish();
  RedisLink::Reply timed_publish();
  bool publish(const std::string& channel, std::string_view body);
  void publish_json(const std::string& channel, const json_t* body);

  // Requests: NUMSUB of the request channel, then `send` (unless alone).
  void numsub(const std::string& channel, std::function<void(size_t)> cb);
  Pending* add_pending(const std::string& id, std::unique_ptr<Pending> p);
  void check(const std::string& id);
  void finish(const std::string& id, std::string error);
  void remote_op(const BroadcastOptions& opts, int type, const char* key, Json value);

  // Shared membership.
  void heartbeat(bool reset);
  void resync();
  void presence_add(sio::SocketImpl& s, const std::string& room);
  void presence_remove(sio::SocketImpl& s, const std::string& room);

  // Connection state recovery.
  uint64_t window() const;
  // The sessions of connected sockets, kept in Redis while they are
  // connected: written (coalesced: once per loop turn at most) when one
  // connects, joins or leaves, refreshed every refresh_interval(). `gen`
  // orders the writers of one pid: a recovery takes the stored gen + 1, so a
  // node still holding the socket's stale connection cannot overwrite it.
  // Kept by socket, from connected() to disconnected() (as the namespace
  // keeps its sockets): a socket in dirty_sessions_ or refreshes_ is only
  // looked up in tracked_, never dereferenced unless it is still there.
  struct Tracked {
    uint64_t gen = 0;
    int64_t refresh_at = 0;  // the refresh its last write queued
    bool dirty = false;      // listed in dirty_sessions_
  };
  void mark_dirty(sio::SocketImpl* s, Tracked& t);
  void session_changed(sio::SocketImpl& s);
  void write_sessions();
  void refresh_sessions();  // on refresh_timer_, for the refreshes due
  void resync_sessions();
  void write_session(sio::SocketImpl& s, Tracked& t, bool parked);
  void store_session(const std::string& nsp, std::string_view pid, uint64_t gen, const std::string& record,
                     uint64_t ttl, RedisLink::Reply reply = {});
  uint64_t refresh_interval() const;
  // Session lookups and claims that came while the link was not ready (a
  // worker just started, Redis reconnecting): they wait for it, bounded in
  // count and in time, then go to Redis or answer "not found" (the CONNECT
  // starts fresh, as it would have at once). `go(true)`: the link is ready,
  // send it; `go(false)`: give up.
  struct WaitingForLink {
    int64_t deadline;  // on the timers' clock
    std::function<void(bool ready)> go;
  };
  static constexpr size_t kMaxWaitingForLink = 4096;
  static constexpr int64_t kMaxLinkWaitMs = 2000;
  bool wait_for_link(std::function<void(bool ready)> go);
  void serve_waiting();  // on wait_timer_
  bool send_find(const std::string& nsp, const std::string& pid, FoundSession cb);
  // `again`: this is the retry of a claim whose link went before its answer.
  bool claim(const std::string& nsp, const std::string& pid, const std::string& sid, const std::string& offset,
             ClaimedSession cb, bool again);
  bool send_claim(const std::string& nsp, const std::string& pid, const std::string& sid, const std::string& offset,
                  ClaimedSession cb, bool again);

  // Catch-ups and republishing retry every kServiceMs while one is under way;
  // an idle adapter has only its heartbeat armed.
  static constexpr int64_t kServiceMs = 100;
  void want_service();
  void service();

  // ---- sharded Pub/Sub (sharded_adapter.cc), with `redis cluster=`: the
  // channels and messages of @socket.io/redis-adapter's createShardedAdapter
  // (socket.io-adapter's ClusterAdapter: {uid, nsp, type, data}, JSON or,
  // with binary, msgpack) on <key>#<nsp># (everything), <key>#<nsp>#<room>#
  // (a broadcast to one room not named like a socket id) and
  // <key>#<nsp>#<uid>#  (responses to one node).
  std::string sharded_channel(const Nsp& n, const BroadcastOptions& opts) const;
  std::string encode_sharded(const sio::EncodedBroadcast& b);
  void on_sharded(Nsp& n, std::string_view channel, std::string_view body);
  void on_sharded_response(int type, const json_t* data, const std::vector<std::string>& attachments);
  // {uid, nsp, type, data} to `channel`.
  void publish_sharded(const std::string& channel, const std::string& nsp, int type, Json data,
                       const std::vector<std::string>& attachments = {});
  // A classic request (type and fields as on <key>-request#) in the sharded form.
  void request_sharded(Nsp& n, int type, const std::string* id, Json fields,
                       const std::vector<std::string>& attachments = {});
  void broadcast_with_ack_sharded(Nsp& n, const BroadcastOptions& opts, const std::string& id, const json_t* data,
                                  const std::vector<std::string>& attachments, uint64_t timeout_ms);
  // The received broadcast `p` (an event with its data), delivered here.
  void deliver_remote(Nsp& n, sio::Packet p, bool is_volatile, std::vector<std::string> rooms,
                      std::vector<std::string> except);

  uv_loop_t* loop_;
  sio::Server& server_;
  CoreConf::Redis conf_;
  bool sharded_ = false;         // conf_.cluster(): sharded Pub/Sub, hash-tagged keys
  std::string members_prefix_;   // <app>, or <app>{membership} with a cluster
  Relay relay_;
  // The uid prefix of this process's workers that relay: what Redis brings
  // with it, the master has brought already.
  std::string siblings_;
  std::string uid_;
  RedisLink link_;
  LocalBackend local_;
  std::vector<Nsp> nsps_;
  std::string request_prefix_, response_prefix_, bcast_prefix_;
  std::unordered_map<std::string, std::unique_ptr<Pending>> pending_;
  // The recorded broadcasts Redis has not answered, in send order (as it
  // answers): a vector used as a queue, so that its room is kept (a deque
  // allocates and frees a block every few broadcasts).
  struct Unanswered {
    std::vector<std::pair<uint64_t, Recorded>> items;
    size_t head = 0;
    bool empty() const { return head == items.size(); }
    std::pair<uint64_t, Recorded>& front() { return items[head]; }
    std::pair<uint64_t, Recorded>& emplace_back(uint64_t seq, Recorded r) {
      if (head >= 64 && head * 2 >= items.size()) {  // always some in flight: the answered ones go
        items.erase(items.begin(), items.begin() + ptrdiff_t(head));
        head = 0;
      }
      return items.emplace_back(seq, std::move(r));
    }
    void pop_front() {
      items[head].second = Recorded();
      if (++head == items.size()) reset();
    }
    void pop_back() {
      items.pop_back();
      if (head == items.size()) reset();
    }
    void reset() {
      items.clear();
      head = 0;
    }
  };
  Unanswered unanswered_;
  std::deque<Recorded> unconfirmed_;         // the connection was lost before their answer
  uint64_t recorded_seq_ = 0;
  CallbackTimer heartbeat_timer_;
  CallbackTimer service_timer_;
  CallbackTimer refresh_timer_;  // the earliest of refreshes_
  std::deque<WaitingForLink> waiting_for_link_;  // in deadline order
  CallbackTimer wait_timer_;  // the first deadline of waiting_for_link_, or at once when the link is ready
  bool synced_ = false;  // membership written since the link came up
  int64_t offset_ms_ = 0;
  uint64_t offset_seq_ = 0;
  uint64_t dropped_reported_ = 0;
  metrics::Entry* m_up_ = nullptr;
  metrics::Entry* m_dropped_ = nullptr;
  metrics::Entry* m_published_ = nullptr;
  metrics::Entry* m_publish_us_sum_ = nullptr;
  metrics::Entry* m_publish_count_ = nullptr;
  metrics::Entry* m_received_ = nullptr;
  metrics::Entry* m_caught_up_ = nullptr;
  metrics::Entry* m_recovered_ = nullptr;
  metrics::Entry* m_not_recovered_ = nullptr;
  std::unordered_map<sio::SocketImpl*, Tracked> tracked_;         // connected sockets with a pid
  std::vector<sio::SocketImpl*> dirty_sessions_;                   // to write this turn (tracked_ says if still)
  std::deque<std::pair<int64_t, sio::SocketImpl*>> refreshes_;     // (due, socket), in write order
  // The recovery connecting now (inside claim_session's callback): its
  // socket takes the generation after the stored one.
  struct Claiming {
    const std::string* nsp;
    const std::string* sid;
    uint64_t gen;
  };
  std::optional<Claiming> claiming_;
  metrics::Entry* m_session_writes_ = nullptr;
  std::string room_scratch_;  // on_broadcast's room name, kept to stay allocated
};

}  // namespace dr::cluster
