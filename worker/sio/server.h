// Socket.IO v5 on top of Engine.IO sessions: namespaces, the CONNECT
// handshake with the modules' hooks, events and acks both ways, rooms, and
// broadcasts encoded once for all their recipients.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "eio/session.h"
#include "sio/adapter.h"
#include "sio/shared_text.h"
#include "sio/sio_packet.h"

namespace dr::sio {

class Client;
class Namespace;
class Server;
class SocketImpl;

// Told about local membership changes of a namespace: the Redis adapter keeps
// its subscriptions and the shared membership from these.
class RoomObserver {
 public:
  virtual ~RoomObserver() = default;
  // A named room (not a socket's own) gained its first local member / lost its last.
  virtual void joined(SocketImpl& s, const std::string& room, bool first) = 0;
  virtual void left(SocketImpl& s, const std::string& room, bool last) = 0;
  // The socket connected (hooks passed) / disconnected (its rooms are already left).
  virtual void connected(SocketImpl& s) = 0;
  virtual void disconnected(SocketImpl& s, std::string_view reason) = 0;
};

// The local members of a named room. Most rooms have one or two (a user's
// own room, "user:<id>"): they are kept inline, without a hash set and its
// bucket array; a room that grows past them gets a set. The inline ones are
// the non-null entries of few_, first: no count beside them.
class RoomMembers {
 public:
  bool insert(SocketImpl* s);  // false: a member already
  bool erase(SocketImpl* s);   // false: not a member
  bool empty() const { return size() == 0; }
  size_t size() const { return many_ ? many_->size() : size_t(few_[0] != nullptr) + size_t(few_[1] != nullptr); }
  template <class F>
  void for_each(F&& f) const {
    if (many_) {
      for (SocketImpl* s : *many_) f(s);
    } else {
      for (SocketImpl* s : few_)
        if (s) f(s);
    }
  }

 private:
  static constexpr uint32_t kFew = 2;
  SocketImpl* few_[kFew] = {};
  std::unique_ptr<std::unordered_set<SocketImpl*>> many_;
};

// A named room (not a socket's own) that local sockets joined, connected or
// not yet: one allocation with its name after it. It lives while a socket
// lists it (refs), its connected ones being its members.
class Room {
 public:
  std::string_view name() const { return {reinterpret_cast<const char*>(this + 1), name_size_}; }
  RoomMembers members;

 private:
  friend class RoomIndex;
  friend class SocketImpl;
  explicit Room(size_t name_size) : name_size_(uint32_t(name_size)) {}
  ~Room() = default;
  static Room* make(std::string_view name);
  static void destroy(Room* r);
  Room* next_ = nullptr;   // in its bucket
  uint32_t refs_ = 0;      // sockets listing it, and operations in progress on it
  uint32_t name_size_ : 31;
  uint32_t orphaned_ : 1 = 0;  // its namespace is gone: the last ref frees it, no index to leave
};

// A namespace's rooms by name: a chained hash table through the rooms
// themselves (no node, no key beside them: a one-member room is one allocation).
class RoomIndex {
 public:
  RoomIndex() = default;
  RoomIndex(const RoomIndex&) = delete;
  RoomIndex& operator=(const RoomIndex&) = delete;
  ~RoomIndex();  // rooms still listed by sockets are orphaned, freed by their last ref
  Room* find(std::string_view name) const;
  Room* acquire(std::string_view name);  // found or made, with one ref more
  static void ref(Room* r) { r->refs_++; }
  void release(Room* r);  // one ref less: the last unlinks and frees it
  template <class F>
  void for_each(F&& f) const {
    for (Room* head : buckets_)
      for (Room* r = head; r; r = r->next_) f(*r);
  }

 private:
  size_t bucket_of(std::string_view name) const { return std::hash<std::string_view>{}(name) & (buckets_.size() - 1); }
  std::vector<Room*> buckets_;  // a power of two of them
  size_t size_ = 0;
};

// A socket's rooms in joining order, in one word: empty, one room, or
// (tagged) a vector of them.
class RoomList {
 public:
  RoomList() = default;
  RoomList(const RoomList&) = delete;
  RoomList& operator=(const RoomList&) = delete;
  ~RoomList() { delete many(); }
  size_t size() const { return many() ? many()->size() : bits_ ? 1 : 0; }
  Room* operator[](size_t i) const { return many() ? (*many())[i] : one(); }
  void push_back(Room* r);
  void erase_at(size_t i);
  std::vector<Room*> copy() const;  // to walk while handlers may change the list

 private:
  static constexpr uintptr_t kMany = 1;
  std::vector<Room*>* many() const { return bits_ & kMany ? reinterpret_cast<std::vector<Room*>*>(bits_ & ~kMany) : nullptr; }
  Room* one() const { return reinterpret_cast<Room*>(bits_); }
  uintptr_t bits_ = 0;
};

class SocketImpl final : public Socket, public std::enable_shared_from_this<SocketImpl> {
 public:
  SocketImpl(Namespace& ns, Client& client, std::string id, Json auth);
  ~SocketImpl() override;

  const std::string& id() const override { return id_; }
  const std::string& nsp() const override;
  const Handshake& handshake() const override;
  const json_t* auth() const override;
  bool connected() const override { return connected_; }
  void set(std::string_view key, std::string value) override;
  const std::string* get(std::string_view key) const override;
  void emit(std::string_view event, Payload args, bool is_volatile) override;
  void emit_with_ack(std::string_view event, Payload args, uint64_t timeout_ms, AckCallback cb) override;
  void ack(uint64_t ack_id, Payload reply) override;
  void join(std::string_view room) override;
  void leave(std::string_view room) override;
  bool in_room(std::string_view room) const override;
  std::vector<std::string> rooms() const override;
  void disconnect(bool close_connection) override;
  std::weak_ptr<Socket> weak() override { return weak_from_this(); }
  std::shared_ptr<void> delay_next_events() override;
  void release_hold();  // the last copy of a delay_next_events() token is gone
  Resume defer(Event& ev) override;
  const std::string& client_id() const override;
  std::string_view transport() const override;
  std::shared_ptr<void>& context_slot(uint32_t index) override;
  const void* context_value(uint32_t index) const override;

  // ---- for the cluster adapter (worker/cluster/)
  Namespace& ns() { return ns_; }
  const std::vector<std::pair<std::string, std::string>>& data() const override;
  std::string_view pid() const { return pid_.view(); }  // connection state recovery session id
  // Starts the CONNECT: the modules' hooks, then the CONNECT reply.
  void start_connect() { run_connect_hooks(0); }
  // Connection state recovery, unlike Socket.IO's, runs the CONNECT hooks:
  // identity comes from the token, so a session id alone resumes nothing.
  // With `session` found, the hooks run under its socket id; then, only if
  // they pass and name the session's user, the room guards vet its rooms,
  // the session is claimed, the missed packets of the rooms kept are sent
  // and the socket connects with its id, pid, rooms and data. Anything else
  // is a fresh connection. Nothing of the session shows before that.
  void begin_recovery(StoredSession session, std::string offset);
  // The data keys the CONNECT hooks set (kept with a stored session).
  std::vector<std::string> connect_keys() const;
  // A server -> client ack under an id chosen by the caller (broadcasts with
  // acks share one id among their recipients).
  void expect_ack(uint64_t id, int64_t deadline, AckCallback cb);
  bool writable() const;  // for volatile packets

 private:
  friend class Client;
  friend class Namespace;
  friend class Server;
  friend class SocketTable;
  void run_connect_hooks(size_t index);
  void connect_now();  // every hook agreed
  // Connection state recovery after the hooks (see begin_recovery).
  void confirm_recovery();
  void rooms_checked(std::vector<std::string> kept);
  void finish_recovery(const std::vector<std::string>& kept, const std::vector<EncodedBroadcast>& missed);
  void abandon_recovery(const char* why);
  void on_event(Packet& p, size_t wire_bytes);
  // Middleware, then handlers; a malformed item (INVALID_DATA details) only the Limit phase.
  // `from`: the first middleware to run (a deferred event resumes after the one that deferred it).
  void dispatch(Event& ev, const std::string& malformed = {}, size_t from = 0);
  // Events wait in the inbox while a handler holds the socket (see Socket::hold).
  // `wire_bytes`: what the event took on the wire, counted against max_output_buffer.
  void enqueue(Event ev, std::string error = {}, size_t wire_bytes = 0);
  void pump();
  void on_batch(Event& ev, size_t wire_bytes);
  void batch_answer(uint64_t batch, size_t index, Json answer, std::vector<std::string> attachments = {});
  // Server batching: items wait here until the server's next batch flush.
  void queue_batch_item(const std::string& item);
  void flush_batch();
  void on_ack(Packet& p);
  // Leaves every room, fails pending acks, runs disconnect handlers.
  void on_disconnect(std::string_view reason);
  void expire_ack(uint64_t id);

  Server& server() const;  // its namespace's
  Namespace& ns_;
  Client* client_;  // null once disconnected (detach())
  // Off its client: the client id is the client's while attached, a copy kept
  // in rare_ after (a socket seldom outlives its disconnect).
  void detach();
  std::string id_;
  // The CONNECT's auth: parsed while the CONNECT runs, then only its text
  // (shared by the client's sockets that sent the same), read again if a
  // module asks for it later (fetch_sockets does).
  mutable Json auth_;
  SharedText auth_text_;
  int holds_ = 0;
  // The rooms joined, but for the socket's own (named after its id), which
  // is not stored: `own_room_at_` is where it stands in rooms() (kNotJoined:
  // not in it). One string and one vector buffer less per socket.
  static constexpr uint32_t kNotJoined = UINT32_MAX;
  uint32_t own_room_at_ = kNotJoined;
  // data_'s first connect_keys_ keys are those the CONNECT hooks set.
  uint32_t connect_keys_ = 0;
  uint16_t context_count_ = 0;  // slots made in contexts_
  // Bits, beside the counts: sizeof(SocketImpl) stays one malloc size class lower.
  bool connected_ : 1 = false;
  bool gone_ : 1 = false;           // disconnected, or refused
  bool wants_batches_ : 1 = false;  // auth.batch was true
  bool pumping_ : 1 = false;
  bool resumed_ : 1 = false;        // rare_->resumed is set
  RoomList rooms_;
  int room_at(std::string_view room) const;  // in rooms_, or -1
  void release_room(Room* r);  // a ref of rooms_'s or of a walk over them
  // What set() keeps, shared by the client's sockets whose hooks set the same
  // (a namespace socket of one token has the same userId and role as its
  // siblings): copied on a write while shared.
  using Data = std::vector<std::pair<std::string, std::string>>;
  std::shared_ptr<Data> data_;
  Data& own_data();
  void share_data();  // with a sibling whose data is the same
  // By socket slot, as far as the last one used (context_count_ of them).
  std::unique_ptr<std::shared_ptr<void>[]> contexts_;
  // Server -> client acks awaiting answers (made on the first one: most
  // sockets never wait for any).
  struct Acks {
    std::map<uint64_t, AckCallback> pending;
    uint64_t next = 0;  // the id of the next emit_with_ack
  };
  Acks& acks();
  // A client `batch` with an ack: its items get ack ids of their own (far above
  // any id a JavaScript client can use) whose answers are collected here.
  struct Batch {
    uint64_t client_ack;
    size_t pending;
    std::vector<Json> answers;
    std::vector<std::string> attachments;  // of every answer, placeholders renumbered
  };
  // What batching keeps (client and server side), made on first use: an idle
  // socket carries one pointer of it.
  struct Batching {
    std::map<uint64_t, Batch> batches;
    std::map<uint64_t, std::pair<uint64_t, size_t>> items;  // item ack id -> (batch, index)
    uint64_t next_item_ack = uint64_t(1) << 62;
    std::string buf;  // server batching: items, comma-separated
  };
  Batching& batching();
  struct Queued {
    Event ev;
    std::string error;  // INVALID_DATA details of a malformed batch item instead of a dispatch
    size_t bytes;
  };
  struct Inbox {
    std::deque<Queued> queue;
    size_t bytes = 0;  // on the wire
  };
  // The middleware running now and its event's INVALID_DATA details (for
  // defer()); on dispatch()'s stack, chained from the server's innermost
  // (a dispatch may run inside another's middleware: a released hold).
  struct Dispatching {
    const SocketImpl* socket;
    size_t index;
    const std::string* malformed;
    const Dispatching* outer;
  };
  const Dispatching* dispatching() const;  // this socket's innermost, or null
  SocketImpl* next_by_id_ = nullptr;  // in its namespace's SocketTable bucket
  SharedText pid_;  // recovery session id (with connection state recovery): one word without it
  struct Recovery {
    StoredSession session;
    std::string offset;
    // Recorded broadcasts delivered on this worker while the claim is in
    // flight: one recorded after the claim ran is not among the missed
    // packets, and the socket is in no room yet. Bounded like its output.
    struct Held {
      BroadcastHeader header;
      std::vector<std::string> attachments;
      std::vector<std::string> rooms;
      std::vector<std::string> except;
    };
    std::vector<Held> held;
    size_t held_bytes = 0;
    bool held_overflow = false;
  };
  void keep_for_claim(const EncodedBroadcast& b);
  // What few sockets use, behind one pointer made on first use: acks the
  // server waits for, batching, events waiting behind a hold (only while they
  // wait: a deque allocates when made), a session a CONNECT may resume (only
  // while it may).
  struct Rare {
    std::unique_ptr<Acks> acks;
    std::unique_ptr<Batching> batching;
    std::unique_ptr<Inbox> inbox;
    std::unique_ptr<Recovery> recovery;
    // After a recovery, the offsets of the missed packets it was sent: a copy
    // still on its way (a sibling's broadcast relayed through the master, a
    // Pub/Sub message read after the claim's reply) is not sent again. Kept
    // for kResumedMs, then freed at the next delivery.
    struct Resumed {
      std::unordered_set<std::string> offsets;
      int64_t until = 0;
    };
    std::unique_ptr<Resumed> resumed;
    std::string client_id;  // once detached
  };
  static constexpr int64_t kResumedMs = 10000;
  // A broadcast with this header was among the missed packets of its recovery.
  bool sent_at_resume(std::string_view header);
  std::unique_ptr<Rare> rare_;
  Rare& rare();
  Acks* acks_if() const { return rare_ ? rare_->acks.get() : nullptr; }
  Batching* batching_if() const { return rare_ ? rare_->batching.get() : nullptr; }
  Inbox* inbox_if() const { return rare_ ? rare_->inbox.get() : nullptr; }
  Recovery* recovery_if() const { return rare_ ? rare_->recovery.get() : nullptr; }
};

// A namespace's connected sockets by id: a chained hash table through the
// sockets themselves (no node a socket: 8 bytes in it and a bucket slot).
class SocketTable {
 public:
  SocketImpl* find(std::string_view id) const;
  // False, and nothing changed, if a socket of that id is in already.
  bool insert(SocketImpl* s);
  void erase(SocketImpl* s);  // if it is in
  size_t size() const { return size_; }
  template <class F>
  void for_each(F&& f) const {  // f(SocketImpl*); f must not insert or erase
    for (SocketImpl* head : buckets_)
      for (SocketImpl* s = head; s; s = s->next_by_id_) f(s);
  }

 private:
  size_t bucket_of(std::string_view id) const { return std::hash<std::string_view>{}(id) & (buckets_.size() - 1); }
  std::vector<SocketImpl*> buckets_;  // a power of two of them, or none
  size_t size_ = 0;
};

class Namespace {
 public:
  Namespace(Server& server, std::string name) : server_(server), name_(std::move(name)) {}
  const std::string& name() const { return name_; }
  Server& server() const { return server_; }

  std::vector<ConnectHook> connect_hooks;
  std::vector<EventMiddleware> middleware;  // the Limit phase first
  size_t limit_middleware = 0;             // how many of them are of the Limit phase
  std::unordered_map<std::string, std::vector<EventHandler>> handlers;
  std::vector<ConnectionHandler> connection_handlers;
  std::vector<DisconnectHandler> disconnect_handlers;
  std::vector<RoomHandler> room_handlers;
  std::vector<ConnectionHandler> transport_handlers;
  std::vector<RoomGuard> room_guards;  // asked about a recovered session's rooms
  std::vector<SentHandler> sent_handlers;  // told of events sent to local sockets

  // Tells the sent handlers about an event (`data` [event, ...args], or null:
  // read from `header`) that reached these sockets. After a delivery walk.
  void report_sent(const std::vector<std::weak_ptr<SocketImpl>>& to, const json_t* data, std::string_view header,
                   const std::vector<std::string>& attachments);

  // Sends the encoded packet to every local member the options select.
  void deliver(const EncodedBroadcast& b, std::span<const eio::OutRef> packets);
  size_t socket_count() const { return sockets_.size(); }
  // Metrics: this namespace's series, and one per event name that has a
  // handler (client-chosen names must not grow the label set).
  metrics::Entry* connections_total = nullptr;
  metrics::Entry* connected = nullptr;
  metrics::Entry* room_count = nullptr;  // named rooms with members on this worker
  metrics::Entry* event_counter(const std::string& name);
  std::vector<SocketImpl*> members(std::string_view room) const;

  // ---- for the cluster adapter
  RoomObserver* observer = nullptr;
  // Local sockets a broadcast with these rooms / except would reach.
  std::vector<SocketImpl*> select(const std::vector<std::string>& rooms, const std::vector<std::string>& except) const;
  // Names of the rooms with local members, sockets' own rooms included.
  std::vector<std::string> room_names() const;
  bool has_room(const std::string& room) const;
  SocketImpl* socket(std::string_view id) const;

 private:
  friend class SocketImpl;
  // The room named after a socket's own id is not indexed: sockets_ answers
  // for it (one hash node less per socket).
  void index_add(SocketImpl* s, Room* room);
  void index_remove(SocketImpl* s, Room* room);
  void room_changed(SocketImpl& s, const std::string& room, bool joined);
  template <class F>
  void for_members(const std::string& room, F&& f) const;
  // Membership must not change while it is walked (a send that ends a client
  // is posted for later, see Connection::send): debug builds check it.
  struct Walk {
    explicit Walk(const Namespace& ns) : ns(ns) { ns.walking_++; }
    ~Walk() { ns.walking_--; }
    const Namespace& ns;
  };
  void check_not_walking() const;
  mutable int walking_ = 0;
  // Sockets whose recovery claim is in flight (see SocketImpl::Recovery::held).
  void keep_for_claims(const EncodedBroadcast& b);
  void end_claim(const SocketImpl* s);
  std::vector<std::weak_ptr<SocketImpl>> claiming_;

  Server& server_;
  std::string name_;
  SocketTable sockets_;  // the connected ones
  RoomIndex rooms_;
  std::unordered_map<std::string, metrics::Entry*> event_counters_;  // names with handlers only
};

// The Socket.IO side of one Engine.IO session.
class Client final : public eio::SessionHandler {
  friend class SocketImpl;

 public:
  Client(Server& server, eio::Session& session);
  ~Client() override;
  void on_message(bool binary, std::string_view data) override;
  void on_close(std::string_view reason) override;
  void on_upgrade() override;

  // `data_text`: the JSON text of p.data when the caller has it (the JSON
  // parser then sends it instead of encoding p.data; msgpack ignores it).
  void send(const Packet& p, bool is_volatile = false, std::string_view data_text = {});
  void send_encoded(std::span<const eio::OutRef> packets, bool is_volatile);
  eio::Session& session() { return session_; }
  const std::string& id() const { return id_; }  // what Socket::client_id() shows
  void remove(const std::string& nsp);
  void close_all();
  // The auth of a connected socket as text, shared by those whose CONNECT carried the same.
  SharedText auth_text(const json_t* auth);

 private:
  // `connect_text`: a CONNECT's JSON as the client sent it (a text packet), or empty.
  void handle(Packet& p, size_t wire_bytes, std::string_view connect_text);
  Server& server_;
  eio::Session& session_;
  const std::string id_;  // the session id's first 12 characters, shared by its sockets
  const bool msgpack_;  // the server's parser when the client came (a reload changing it starts new workers)
  // Of the packet being decoded (its attachments come as more messages); 32
  // bits, beside msgpack_: Client stays within a 128-byte malloc chunk.
  uint32_t packet_bytes_ = 0;
  Decoder decoder_;  // of the json parser
  // One per namespace joined, in joining order (as Socket.IO's client keeps
  // them); a few at most, so a vector: no tree node per socket.
  std::vector<std::shared_ptr<SocketImpl>> sockets_;
  std::shared_ptr<SocketImpl> socket_for(std::string_view nsp) const;
};

class Server {
 public:
  Server(const Config& cfg, Timers& timers);
  ~Server();
  Timers& timers() const { return ack_timer_.timers(); }  // the worker's facility

  void set_adapter(std::unique_ptr<Adapter> a) { adapter_ = std::move(a); }
  Adapter& adapter() { return *adapter_; }
  std::unique_ptr<eio::SessionHandler> make_client(eio::Session& s);

  Namespace* find(std::string_view name);
  std::vector<Namespace*> all();

  void broadcast(const BroadcastOptions& opts, std::string_view event, Payload args);
  // Delivery of a broadcast on this worker (from here or from elsewhere).
  void deliver(const EncodedBroadcast& b);

  const Config& config() const { return *cfg_; }
  // The Engine.IO messages of a packet under the server's parser.
  std::vector<eio::OutRef> wire(const Packet& p) const;
  // The one message of a packet without attachments (any packet under msgpack).
  eio::OutRef message(const Packet& p) const;
  // Same, of a header this server encoded and its attachments (a broadcast's,
  // turned into messages once for all its recipients).
  std::vector<eio::OutRef> wire(std::string_view header, const std::vector<std::string>& attachments) const;
  // Same, of a broadcast without an ack id.
  std::vector<eio::OutRef> wire(const EncodedBroadcast& b) const;
  void set_config(const Config& cfg) { cfg_ = &cfg; }  // a reload applied in place
  std::string new_socket_id();
  // An event name as a JSON string, shared (see event_names_).
  Json event_name(std::string_view name);
  void schedule_ack_timeout(int64_t deadline, std::weak_ptr<SocketImpl> s, uint64_t id);
  // A socket's first server-batch item: the batch leaves server_batch_interval after it.
  void batch_pending(std::weak_ptr<SocketImpl> s);
  uint64_t sockets_connected = 0;

  // ---- for the cluster adapter
  // Sends `b` (whose header carries ack id `ack_id`) to the local members it
  // selects, each answer going to `on_ack`; returns how many got it.
  size_t deliver_with_ack(const EncodedBroadcast& b, uint64_t ack_id, int64_t deadline,
                          const std::function<void(bool timed_out, Payload reply)>& on_ack);
  // {"event":...,"data":...} when server batching takes this event, else "".
  std::string batch_item_for(std::string_view event, const Payload& args) const { return batch_item(event, args); }
 private:
  const Config* cfg_;
  std::vector<std::unique_ptr<Namespace>> namespaces_;
  std::unique_ptr<Adapter> adapter_;
  std::multimap<int64_t, std::pair<std::weak_ptr<SocketImpl>, uint64_t>> ack_timeouts_;
  Timer ack_timer_;  // for the earliest of ack_timeouts_
  void arm_ack_timer();
  void expire_acks();
  std::vector<std::weak_ptr<SocketImpl>> batch_pending_;
  Timer batch_timer_;
  void flush_batches();
  std::string batch_item(std::string_view event, const Payload& args) const;
  std::vector<std::pair<std::string, Json>> event_names_;  // bounded, found by a short scan
  friend class SocketImpl;
  const SocketImpl::Dispatching* dispatching_ = nullptr;  // the innermost dispatch (see SocketImpl::defer)
};

// Encodes a Socket.IO packet as Engine.IO message packets (header + attachments).
std::vector<eio::OutRef> encode_packets(const Packet& p);
std::vector<eio::OutRef> encode_packets(std::string_view header, const std::vector<std::string>& attachments);

}  // namespace dr::sio
