// The Socket.IO server: sockets, namespaces, clients, broadcasts and acks.
// Batching lives beside it: client_batch.cc (the client's `batch` event) and
// server_batch.cc (events coalesced per socket for clients with auth.batch).
#include "sio/server.h"


#include <algorithm>
#include <cassert>
#include <cstring>
#include <stdexcept>

#include "core/event_log.h"
#include "core/metrics.h"
#include "core/random_bytes.h"
#include "core/uv_util.h"
#include "depth-realtime/validate.h"
#include "sio/msgpack_packet.h"
#include "sio/socket_slots.h"

namespace dr::sio {

// ------------------------------------------------------------- encoding

// Engine.IO's message type, written before a Socket.IO header.
constexpr std::string_view kMessageType = "4";
static_assert(int(eio::PacketType::Message) == 4);

std::vector<eio::OutRef> encode_packets(std::string_view header, const std::vector<std::string>& attachments) {
  std::vector<eio::OutRef> out;
  out.reserve(1 + attachments.size());
  out.push_back(eio::make_text(eio::PacketType::Message, header));
  for (auto& a : attachments) out.push_back(eio::make_binary(a));
  return out;
}

std::vector<eio::OutRef> encode_packets(const Packet& p) {
  std::vector<eio::OutRef> out;
  out.reserve(1 + p.attachments.size());
  // The message's bytes are the header's: encoded in place, not copied after the type.
  auto m = std::make_shared<eio::OutPacket>();
  m->data = encode(p, kMessageType);
  out.push_back(std::move(m));
  for (auto& a : p.attachments) out.push_back(eio::make_binary(a));
  return out;
}

namespace {

// A client's pid and offset are ours (20 characters, a few dozen): longer ones name no session.
constexpr size_t kMaxRecoveryIdLength = 128;

// [event, ...args] as one JSON array: the args' own, when nothing else holds
// it (`args` is then left without one), else a new one.
Json event_array(Json name, Payload& args) {
  if (json_is_array(args.args.get()) && args.args->refcount == 1) {
    json_array_insert_new(args.args.get(), 0, name.release());
    return std::move(args.args);
  }
  Json arr(json_array());
  json_array_append_new(arr.get(), name.release());
  json_array_extend(arr.get(), args.args.get());
  return arr;
}

Json object_with(const char* key, std::string_view value) {
  Json o(json_object());
  json_object_set_new(o.get(), key, json_stringn(value.data(), value.size()));
  return o;
}

}  // namespace

// ---------------------------------------------------------------- socket

SocketImpl::SocketImpl(Namespace& ns, Client& client, std::string id, Json auth)
    : ns_(ns),
      client_(&client),
      id_(std::move(id)),
      auth_(std::move(auth)) {}

SocketImpl::~SocketImpl() {
  for (size_t i = 0; i < rooms_.size(); i++) release_room(rooms_[i]);
}

void SocketImpl::release_room(Room* r) {
  if (!r->orphaned_) return ns_.rooms_.release(r);
  if (--r->refs_ == 0) Room::destroy(r);  // the namespace went first (a worker's exit)
}

int SocketImpl::room_at(std::string_view room) const {
  for (size_t i = 0; i < rooms_.size(); i++)
    if (rooms_[i]->name() == room) return int(i);
  return -1;
}

Server& SocketImpl::server() const { return ns_.server(); }

const std::string& SocketImpl::client_id() const {
  static const std::string none;  // a socket is made attached: only if its client went before the copy
  if (client_) return client_->id();
  return rare_ ? rare_->client_id : none;
}

void SocketImpl::detach() {
  if (!client_) return;
  rare().client_id = client_->id();
  client_ = nullptr;
}

const std::string& SocketImpl::nsp() const { return ns_.name(); }

const json_t* SocketImpl::auth() const {
  if (!auth_ && auth_text_) auth_ = json_parse(auth_text_.view());  // our own text: it parses
  return auth_.get();
}

const Handshake& SocketImpl::handshake() const {
  static const Handshake empty;
  return client_ ? *client_->session().handshake() : empty;
}

std::string_view SocketImpl::transport() const {
  if (client_ && client_->session().transport() == eio::Transport::Polling) return "polling";
  return "websocket";
}

std::shared_ptr<void>& SocketImpl::context_slot(uint32_t index) {
  if (index >= socket_slot_count() || index >= UINT16_MAX) throw std::logic_error("no such socket slot");  // a refused one
  if (context_count_ <= index) {
    auto grown = std::make_unique<std::shared_ptr<void>[]>(index + 1);
    for (uint32_t i = 0; i < context_count_; i++) grown[i] = std::move(contexts_[i]);
    contexts_ = std::move(grown);
    context_count_ = uint16_t(index + 1);
  }
  return contexts_[index];
}

const void* SocketImpl::context_value(uint32_t index) const {
  return index < context_count_ ? contexts_[index].get() : nullptr;
}

const std::vector<std::pair<std::string, std::string>>& SocketImpl::data() const {
  static const Data none;
  return data_ ? *data_ : none;
}

SocketImpl::Data& SocketImpl::own_data() {
  if (!data_) data_ = std::make_shared<Data>();
  else if (data_.use_count() > 1) data_ = std::make_shared<Data>(*data_);
  return *data_;
}

void SocketImpl::share_data() {
  if (!data_ || !client_) return;
  for (auto& other : client_->sockets_) {
    if (other.get() == this || !other->data_ || other->data_ == data_ || *other->data_ != *data_) continue;
    data_ = other->data_;
    return;
  }
}

void SocketImpl::set(std::string_view key, std::string value) {
  if (const std::string* had = get(key); had && *had == value) return;  // shared data stays shared
  for (auto& [k, v] : own_data())
    if (k == key) {
      v = std::move(value);
      return;
    }
  data_->emplace_back(std::string(key), std::move(value));
}

const std::string* SocketImpl::get(std::string_view key) const {
  if (!data_) return nullptr;
  for (auto& [k, v] : *data_)
    if (k == key) return &v;
  return nullptr;
}

void SocketImpl::emit(std::string_view event, Payload args, bool is_volatile) {
  if (gone_ || !client_) return;
  Packet p;
  p.type = PacketType::Event;
  p.nsp = ns_.name();
  p.data = event_array(server().event_name(event), args);
  p.attachments = std::move(args.attachments);
  // Connection state recovery: as Socket.IO routes socket.emit through the
  // adapter, the event gets an offset and is recorded for this socket's room.
  std::string offset = is_volatile ? std::string() : server().adapter().next_offset();
  if (offset.empty()) {
    client_->send(p, is_volatile);
    if (!ns_.sent_handlers.empty()) ns_.report_sent({weak_from_this()}, p.data.get(), {}, p.attachments);
    return;
  }
  json_array_append_new(p.data.get(), json_stringn(offset.data(), offset.size()));
  EncodedBroadcast b;
  b.opts.nsp = ns_.name();
  b.opts.rooms = {id_};
  b.header = BroadcastHeader::of_message(encode(p, kMessageType));
  b.attachments = std::move(p.attachments);
  b.offset = std::move(offset);
  client_->send_encoded(server().wire(b.header, b.attachments), false);
  server().adapter().record(b);
  if (!ns_.sent_handlers.empty()) ns_.report_sent({weak_from_this()}, p.data.get(), {}, b.attachments);
}

void SocketImpl::emit_with_ack(std::string_view event, Payload args, uint64_t timeout_ms, AckCallback cb) {
  if (gone_ || !client_) {
    if (cb) cb(true, Payload());
    return;
  }
  uint64_t id = acks().next++;
  rare_->acks->pending.emplace(id, std::move(cb));
  if (timeout_ms) server().schedule_ack_timeout(now_ms() + int64_t(timeout_ms), weak_from_this(), id);
  Packet p;
  p.type = PacketType::Event;
  p.nsp = ns_.name();
  p.id = id;
  p.data = event_array(server().event_name(event), args);
  p.attachments = std::move(args.attachments);
  client_->send(p);
  if (!ns_.sent_handlers.empty()) ns_.report_sent({weak_from_this()}, p.data.get(), {}, p.attachments);
}

void SocketImpl::ack(uint64_t ack_id, Payload reply) {
  if (gone_ || !client_) return;
  // A reply given as text only (module.h): its args read back where they are needed.
  if (!reply.args && (!reply.text || reply.text->empty() || batching_if() ||
                      server().config().core.parser == CoreConf::Parser::Msgpack)) {
    reply.args = reply.text ? json_parse(*reply.text) : Json();
    if (!json_is_array(reply.args.get())) reply.args = Json(json_array());
  }
  if (Batching* batching = batching_if()) {
    if (auto it = batching->items.find(ack_id); it != batching->items.end()) {
      auto [batch, index] = it->second;
      batching->items.erase(it);
      json_t* first = json_array_get(reply.args.get(), 0);
      batch_answer(batch, index, first ? Json(json_deep_copy(first)) : Json(json_null()), std::move(reply.attachments));
      return;
    }
  }
  Packet p;
  p.type = PacketType::Ack;
  p.nsp = ns_.name();
  p.id = ack_id;
  p.data = std::move(reply.args);
  p.attachments = std::move(reply.attachments);
  client_->send(p, false, reply.text ? std::string_view(*reply.text) : std::string_view());
}

void SocketImpl::join(std::string_view room) {
  if (in_room(room)) return;
  if (room == id_) {
    own_room_at_ = uint32_t(rooms_.size());  // not indexed either: the namespace's sockets_ answers for it
    return;
  }
  Room* r = ns_.rooms_.acquire(room);  // its ref is rooms_'s
  rooms_.push_back(r);
  if (connected_) ns_.index_add(this, r);
}

void SocketImpl::leave(std::string_view room) {
  if (room == id_) {
    own_room_at_ = kNotJoined;
    return;
  }
  int at = room_at(room);
  if (at < 0) return;
  if (own_room_at_ != kNotJoined && uint32_t(at) < own_room_at_) own_room_at_--;
  Room* r = rooms_[at];
  rooms_.erase_at(at);  // first: room handlers may join or leave further rooms
  if (connected_) ns_.index_remove(this, r);
  release_room(r);
}

bool SocketImpl::in_room(std::string_view room) const {
  if (room == id_) return own_room_at_ != kNotJoined;
  return room_at(room) >= 0;
}

std::vector<std::string> SocketImpl::rooms() const {
  std::vector<std::string> out;
  out.reserve(rooms_.size() + 1);
  for (size_t i = 0; i <= rooms_.size(); i++) {
    if (i == own_room_at_) out.push_back(id_);
    if (i < rooms_.size()) out.emplace_back(rooms_[i]->name());
  }
  return out;
}

std::vector<std::string> SocketImpl::connect_keys() const {
  std::vector<std::string> out;
  const Data& d = data();
  for (size_t i = 0; i < connect_keys_ && i < d.size(); i++) out.push_back(d[i].first);
  return out;
}

SocketImpl::Acks& SocketImpl::acks() {
  auto& acks = rare().acks;
  if (!acks) acks = std::make_unique<Acks>();
  return *acks;
}

SocketImpl::Batching& SocketImpl::batching() {
  auto& batching = rare().batching;
  if (!batching) batching = std::make_unique<Batching>();
  return *batching;
}

SocketImpl::Rare& SocketImpl::rare() {
  if (!rare_) rare_ = std::make_unique<Rare>();
  return *rare_;
}

void SocketImpl::disconnect(bool close_connection) {
  if (gone_ || !client_) return;
  if (close_connection) {
    client_->close_all();
    return;
  }
  auto self = shared_from_this();
  Packet p;
  p.type = PacketType::Disconnect;
  p.nsp = ns_.name();
  client_->send(p);
  Client* c = client_;
  on_disconnect("server namespace disconnect");
  c->remove(ns_.name());
}

void SocketImpl::run_connect_hooks(size_t index) {
  if (gone_ || !client_) return;
  if (index < ns_.connect_hooks.size()) {
    auto once = std::make_shared<bool>(false);
    ConnectNext next = [weak = weak_from_this(), index, once](std::optional<ConnectError> err) {
      if (*once) return;
      *once = true;
      auto s = weak.lock();
      if (!s || s->gone_ || !s->client_) return;
      if (!err) {
        s->run_connect_hooks(index + 1);
        return;
      }
      Packet p;
      p.type = PacketType::ConnectError;
      p.nsp = s->ns_.name();
      p.data = object_with("message", err->message);
      if (err->data) json_object_set(p.data.get(), "data", err->data.get());
      s->gone_ = true;
      Client* c = s->client_;
      c->send(p);
      c->remove(s->ns_.name());
    };
    try {
      ns_.connect_hooks[index](*this, next);
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "connect hook on %s: %s", ns_.name().c_str(), e.what());
      next(ConnectError{"Authentication failed", Json(json_pack("{s:s}", "code", "AUTH_FAILED"))});
    }
    return;
  }
  // Every hook agreed. What they set is theirs to set again on a recovery
  // (set() appends new keys: they are data_'s first ones).
  connect_keys_ = uint32_t(data().size());
  if (recovery_if()) {
    confirm_recovery();
    return;
  }
  connect_now();
}

void SocketImpl::connect_now() {
  if (gone_ || !client_ || connected_) return;
  connected_ = true;
  ns_.check_not_walking();
  if (!ns_.sockets_.insert(this)) {  // an id taken (never, but the newest wins)
    ns_.sockets_.erase(ns_.sockets_.find(id_));
    ns_.sockets_.insert(this);
  }
  join(id_);  // every socket is in the room named after its id
  // A copy, each room held: handlers may join or leave rooms meanwhile.
  std::vector<Room*> joined = rooms_.copy();
  for (Room* r : joined) RoomIndex::ref(r);
  for (Room* r : joined)
    if (connected_ && room_at(r->name()) >= 0) ns_.index_add(this, r);
  for (Room* r : joined) release_room(r);
  server().sockets_connected++;
  wants_batches_ = json_is_true(json_object_get(auth_.get(), "batch"));
  metrics::add(ns_.connections_total);
  metrics::add(ns_.connected, 1);
  client_->session().cancel_connect_timeout();
  Packet p;
  p.type = PacketType::Connect;
  p.nsp = ns_.name();
  if (!pid_ && server().adapter().recovers()) pid_ = SharedText(server().new_socket_id());
  // {"sid":..,"pid":..} as text, the bytes jansson would write: an object
  // built only to be encoded costs more than the rest.
  std::string text;
  if (!client_->msgpack_) {
    text.reserve(48);
    text.append("{\"sid\":");
    bool written = json_append_string(id_, text);
    if (pid_) written = written && json_append_string(pid_.view(), text.append(",\"pid\":"));
    text.push_back('}');
    if (!written) text.clear();  // not UTF-8: left to jansson, which leaves it out
  }
  if (text.empty()) {
    p.data = object_with("sid", id_);
    if (pid_) json_object_set_new(p.data.get(), "pid", json_stringn(pid_.view().data(), pid_.view().size()));
  }
  client_->send(p, false, text);
  if (ns_.observer) ns_.observer->connected(*this);
  auto self = shared_from_this();
  try {
    for (auto& h : ns_.connection_handlers) {
      if (gone_) break;
      h(*this);
    }
  } catch (const std::exception& e) {
    logf(LogLevel::Error, "connection handler on %s: %s", ns_.name().c_str(), e.what());
  }
  if (connected_) share_data();
  if (connected_ && client_ && auth_) {  // connected: its auth as text from now on
    if (!auth_text_) auth_text_ = client_->auth_text(auth_.get());  // (set already when it came as another's text)
    auth_.reset();
  }
}

void SocketImpl::on_event(Packet& p, size_t wire_bytes) {
  auto self = shared_from_this();  // a handler may disconnect us
  json_t* first = json_array_get(p.data.get(), 0);
  std::string name = json_is_string(first) ? std::string(json_string_value(first), json_string_length(first))
                                           : std::to_string(json_integer_value(first));
  json_array_remove(p.data.get(), 0);
  // Made from its parts: a default Payload would allocate an array only to drop it.
  Event ev{std::move(name), Payload(std::move(p.data), std::move(p.attachments)), p.id};
  metrics::add(ns_.event_counter(ev.name));
  if (event_log::enabled() && client_)
    event_log::record(ns_.name(), ev.name, get("userId"), client_->session().handshake()->address, id_);
  if (ev.name == "batch" && server().config().core.client_batch) {
    on_batch(ev, wire_bytes);  // only its items count
  } else if (holds_ == 0 && !pumping_ && !inbox_if()) {
    auto self = shared_from_this();
    dispatch(ev);  // the common case: nothing waits, no queue
    return;
  } else {
    enqueue(std::move(ev), {}, wire_bytes);
  }
  pump();
}

// A client that keeps sending while its events wait for a held handler gets
// refused past this many, so that the queue stays bounded.
constexpr size_t kMaxQueuedEvents = 1024;

void SocketImpl::enqueue(Event ev, std::string error, size_t wire_bytes) {
  if (gone_ || !client_) return;
  auto& inbox = rare().inbox;
  if (!inbox) inbox = std::make_unique<Inbox>();
  if (inbox->queue.size() >= kMaxQueuedEvents) {
    send_error(*this, ev, "SOCKET_ERROR", "A connection error occurred", "too many events waiting");
    return;
  }
  if (inbox->bytes + wire_bytes > server().config().core.max_output_buffer) {
    // Bounded in bytes too: 1,024 events of max_payload would be a gigabyte.
    logf(LogLevel::Info, "client %s: %zu bytes of events waiting on %s, closing the session",
         client_->session().handshake()->address.c_str(), inbox->bytes + wire_bytes, ns_.name().c_str());
    metrics::add(metrics::core().slow_closed_events);
    client_->session().post_abort();
    return;
  }
  inbox->bytes += wire_bytes;
  inbox->queue.push_back(Queued{std::move(ev), std::move(error), wire_bytes});
}

void SocketImpl::pump() {
  if (pumping_ || !inbox_if()) return;  // pumping: a handler released its hold inside the loop below
  pumping_ = true;
  auto self = shared_from_this();
  // Looked up each turn: a handler may end the queue (a disconnect).
  for (Inbox* inbox; !gone_ && holds_ == 0 && (inbox = inbox_if()) && !inbox->queue.empty();) {
    Queued q = std::move(inbox->queue.front());
    inbox->queue.pop_front();
    inbox->bytes -= q.bytes;
    dispatch(q.ev, q.error);
  }
  if (Inbox* inbox = inbox_if(); inbox && inbox->queue.empty()) rare_->inbox.reset();  // an idle socket keeps no queue
  pumping_ = false;
}

namespace {
struct HoldToken {
  explicit HoldToken(std::weak_ptr<SocketImpl> s) : socket(std::move(s)) {}
  HoldToken(const HoldToken&) = delete;
  HoldToken& operator=(const HoldToken&) = delete;
  std::weak_ptr<SocketImpl> socket;
  ~HoldToken() {
    if (auto s = socket.lock()) s->release_hold();
  }
};
}  // namespace

std::shared_ptr<void> SocketImpl::delay_next_events() {
  holds_++;
  return std::make_shared<HoldToken>(weak_from_this());
}

namespace {
struct Deferred {
  std::weak_ptr<SocketImpl> socket;
  Event ev;
  std::string malformed;
  size_t next;
  std::shared_ptr<void> hold;  // the socket's next events wait until this goes
};
}  // namespace

Socket::Resume SocketImpl::defer(Event& ev) {
  const Dispatching* now = dispatching();
  const std::string* malformed = now ? now->malformed : nullptr;
  size_t next = now ? now->index + 1 : 0;
  auto d = std::make_shared<Deferred>(
      Deferred{weak_from_this(), std::move(ev), malformed ? *malformed : std::string(), next, delay_next_events()});
  return [d](bool go_on) {
    if (!d->hold) return;  // called already
    auto hold = std::move(d->hold);  // released after the dispatch: what waits behind it follows
    auto s = d->socket.lock();
    if (go_on && s && !s->gone_) s->dispatch(d->ev, d->malformed, d->next);
  };
}

const SocketImpl::Dispatching* SocketImpl::dispatching() const {
  for (const Dispatching* d = server().dispatching_; d; d = d->outer)
    if (d->socket == this) return d;
  return nullptr;
}

void SocketImpl::release_hold() {
  if (holds_ > 0 && --holds_ == 0) {
    try {
      pump();
    } catch (...) {
      // dispatch() catches what handlers throw; nothing may leave a token's destructor
    }
  }
}

// A module's failure is the client's SOCKET_ERROR (contract §4), never the
// worker's: no exception may cross back into libuv. A malformed batch item or
// envelope still passes the Limit phase (rate limits count every received
// event, valid or not) before it is refused as INVALID_DATA.
void SocketImpl::dispatch(Event& ev, const std::string& malformed, size_t from) {
  try {
    for (size_t i = from; i < ns_.middleware.size(); i++) {
      if (i == ns_.limit_middleware && !malformed.empty()) break;
      const Dispatching now{this, i, &malformed, server().dispatching_};
      struct Restore {  // a dispatch inside a middleware (a released hold) leaves it as it was, a throw too
        const Dispatching*& at;
        const Dispatching* was;
        ~Restore() { at = was; }
      } restore{server().dispatching_, std::exchange(server().dispatching_, &now)};
      if (!ns_.middleware[i](*this, ev) || gone_) return;
    }
    if (!malformed.empty()) {
      send_error(*this, ev, "INVALID_DATA", "Invalid data", malformed);
      return;
    }
    auto it = ns_.handlers.find(ev.name);
    if (it == ns_.handlers.end()) return;
    for (auto& h : it->second) {
      if (gone_) break;
      h(*this, ev);
    }
  } catch (const std::exception& e) {
    logf(LogLevel::Error, "event \"%s\" on %s: %s", ev.name.c_str(), ns_.name().c_str(), e.what());
    if (!gone_) send_error(*this, ev, "SOCKET_ERROR", "A connection error occurred", e.what());
  } catch (...) {
    logf(LogLevel::Error, "event \"%s\" on %s: unknown exception", ev.name.c_str(), ns_.name().c_str());
    if (!gone_) send_error(*this, ev, "SOCKET_ERROR", "A connection error occurred");
  }
}

void SocketImpl::on_ack(Packet& p) {
  Acks* acks = acks_if();
  if (!p.id || !acks) return;
  auto it = acks->pending.find(*p.id);
  if (it == acks->pending.end()) return;  // unknown or already answered: ignored, as Node does
  AckCallback cb = std::move(it->second);
  acks->pending.erase(it);
  auto self = shared_from_this();
  if (cb) cb(false, Payload(std::move(p.data), std::move(p.attachments)));
}

void SocketImpl::expire_ack(uint64_t id) {
  Acks* acks = acks_if();
  if (!acks) return;
  auto it = acks->pending.find(id);
  if (it == acks->pending.end()) return;
  AckCallback cb = std::move(it->second);
  acks->pending.erase(it);
  metrics::add(metrics::core().acks_timed_out);
  if (cb) cb(true, Payload());
}

void SocketImpl::on_disconnect(std::string_view reason) {
  if (gone_ && !connected_) {
    detach();
    return;
  }
  auto self = shared_from_this();
  gone_ = true;
  if (rare_) rare_->inbox.reset();
  if (recovery_if()) {  // its claim may be in flight: nothing more kept for it
    rare_->recovery.reset();
    ns_.end_claim(this);
  }
  bool was_connected = connected_;
  connected_ = false;
  if (was_connected) {
    std::vector<Room*> joined = rooms_.copy();  // held, as in connect_now: handlers may change rooms_
    for (Room* r : joined) RoomIndex::ref(r);
    for (Room* r : joined) ns_.index_remove(this, r);
    for (Room* r : joined) release_room(r);
    ns_.check_not_walking();
    ns_.sockets_.erase(this);
    server().sockets_connected--;
    metrics::add(ns_.connected, -1);
    if (ns_.observer) ns_.observer->disconnected(*this, reason);
  }
  std::unique_ptr<Acks> pending = rare_ ? std::move(rare_->acks) : nullptr;
  if (pending)
    for (auto& [id, cb] : pending->pending)
      if (cb) cb(true, Payload());
  if (was_connected) {
    try {
      for (auto& h : ns_.disconnect_handlers) h(*this, reason);
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "disconnect handler on %s: %s", ns_.name().c_str(), e.what());
    }
  }
  detach();
}

// ------------------------------------------------------------- namespace

metrics::Entry* Namespace::event_counter(const std::string& name) {
  auto it = event_counters_.find(name);  // one lookup for a handled name, the common case
  if (it != event_counters_.end()) return it->second;
  if (!handlers.count(name)) return metrics::core().events_other;
  auto* e = metrics::get("websocket_events_total", metrics::label("event", name));
  event_counters_.emplace(name, e);
  return e;
}

SocketImpl* SocketTable::find(std::string_view id) const {
  if (buckets_.empty()) return nullptr;
  for (SocketImpl* s = buckets_[bucket_of(id)]; s; s = s->next_by_id_)
    if (s->id() == id) return s;
  return nullptr;
}

namespace {

// Links `node` into a chained hash table threaded through its nodes' `Next`
// pointers, first doubling the buckets (a power of two, 8 at least) when it
// would hold more than one node a bucket on average. `bucket_of(node)` is
// the node's bucket among `buckets` as they are when it is called.
template <auto Next, class Node, class BucketOf>
void chain_link(std::vector<Node*>& buckets, size_t& size, Node* node, BucketOf bucket_of) {
  auto push = [&](Node* n) {
    Node*& first = buckets[bucket_of(n)];
    n->*Next = first;
    first = n;
  };
  if (size + 1 > buckets.size()) {
    std::vector<Node*> old(std::max<size_t>(8, buckets.size() * 2), nullptr);
    old.swap(buckets);
    for (Node* head : old)
      for (Node* at = head; at;) {
        Node* next = at->*Next;
        push(at);
        at = next;
      }
  }
  push(node);
  size++;
}

}  // namespace

bool SocketTable::insert(SocketImpl* s) {
  if (find(s->id())) return false;
  chain_link<&SocketImpl::next_by_id_>(buckets_, size_, s,
                                       [this](const SocketImpl* at) { return bucket_of(at->id()); });
  return true;
}

void SocketTable::erase(SocketImpl* s) {
  if (!s || buckets_.empty()) return;
  for (SocketImpl** at = &buckets_[bucket_of(s->id())]; *at; at = &(*at)->next_by_id_) {
    if (*at != s) continue;
    *at = s->next_by_id_;
    s->next_by_id_ = nullptr;
    size_--;
    return;
  }
}

void Namespace::check_not_walking() const {
  assert(walking_ == 0 && "room membership changed while a delivery walks it");
}

bool RoomMembers::insert(SocketImpl* s) {
  if (many_) return many_->insert(s).second;
  for (SocketImpl*& slot : few_) {
    if (slot == s) return false;
    if (slot) continue;
    slot = s;
    return true;
  }
  many_ = std::make_unique<std::unordered_set<SocketImpl*>>(std::begin(few_), std::end(few_));
  std::fill(std::begin(few_), std::end(few_), nullptr);
  return many_->insert(s).second;
}

bool RoomMembers::erase(SocketImpl* s) {
  if (many_) return many_->erase(s) > 0;
  if (few_[1] == s) {
    few_[1] = nullptr;
    return true;
  }
  if (few_[0] != s) return false;
  few_[0] = std::exchange(few_[1], nullptr);  // the inline ones stay first
  return true;
}

Room* Room::make(std::string_view name) {
  void* at = ::operator new(sizeof(Room) + name.size());
  Room* r = ::new (at) Room(name.size());
  if (!name.empty()) std::memcpy(static_cast<char*>(at) + sizeof(Room), name.data(), name.size());
  return r;
}

void Room::destroy(Room* r) {
  r->~Room();
  ::operator delete(r);
}

RoomIndex::~RoomIndex() {
  for (Room* head : buckets_)
    for (Room* r = head; r;) {
      Room* next = std::exchange(r->next_, nullptr);
      if (r->refs_ == 0) Room::destroy(r);
      else r->orphaned_ = 1;
      r = next;
    }
}

Room* RoomIndex::find(std::string_view name) const {
  if (buckets_.empty()) return nullptr;
  for (Room* r = buckets_[bucket_of(name)]; r; r = r->next_)
    if (r->name() == name) return r;
  return nullptr;
}

Room* RoomIndex::acquire(std::string_view name) {
  Room* r = find(name);
  if (!r) {
    r = Room::make(name);
    chain_link<&Room::next_>(buckets_, size_, r, [this](const Room* at) { return bucket_of(at->name()); });
  }
  r->refs_++;
  return r;
}

void RoomIndex::release(Room* r) {
  if (--r->refs_ > 0) return;
  for (Room** at = &buckets_[bucket_of(r->name())]; *at; at = &(*at)->next_) {
    if (*at != r) continue;
    *at = r->next_;
    break;
  }
  size_--;
  Room::destroy(r);
}

void RoomList::push_back(Room* r) {
  if (auto* v = many()) {
    v->push_back(r);
  } else if (!bits_) {
    bits_ = reinterpret_cast<uintptr_t>(r);
  } else {
    auto v2 = std::make_unique<std::vector<Room*>>(std::initializer_list<Room*>{one(), r});
    bits_ = reinterpret_cast<uintptr_t>(v2.release()) | kMany;  // owned from here: see ~RoomList
  }
}

void RoomList::erase_at(size_t i) {
  if (auto* v = many()) v->erase(v->begin() + ptrdiff_t(i));
  else bits_ = 0;
}

std::vector<Room*> RoomList::copy() const {
  if (auto* v = many()) return *v;
  if (bits_) return {one()};
  return {};
}

void Namespace::index_add(SocketImpl* s, Room* r) {
  check_not_walking();
  RoomIndex::ref(r);  // held: a handler may make s leave it
  if (r->members.insert(s)) {
    bool first = r->members.size() == 1;
    if (first) metrics::add(room_count, 1);
    const std::string room(r->name());
    if (observer) observer->joined(*s, room, first);
    room_changed(*s, room, true);
  }
  s->release_room(r);
}

void Namespace::index_remove(SocketImpl* s, Room* r) {
  check_not_walking();
  RoomIndex::ref(r);
  if (r->members.erase(s)) {
    bool last = r->members.empty();
    if (last) metrics::add(room_count, -1);
    const std::string room(r->name());
    if (observer) observer->left(*s, room, last);
    room_changed(*s, room, false);
  }
  s->release_room(r);
}

bool Namespace::has_room(const std::string& room) const {
  if (Room* r = rooms_.find(room); r && !r->members.empty()) return true;
  return sockets_.find(room) != nullptr;
}

// The modules' room handlers; what one throws stays here (we are in the
// middle of a membership change).
void Namespace::room_changed(SocketImpl& s, const std::string& room, bool joined) {
  for (auto& h : room_handlers) {
    try {
      h(s, room, joined);
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "room handler on %s: %s", name_.c_str(), e.what());
    } catch (...) {
      logf(LogLevel::Error, "room handler on %s: unknown exception", name_.c_str());
    }
  }
}

template <class F>
void Namespace::for_members(const std::string& room, F&& f) const {
  Walk walk(*this);
  if (Room* r = rooms_.find(room)) r->members.for_each(f);
  if (SocketImpl* s = sockets_.find(room)) f(s);  // its own room
}

std::vector<SocketImpl*> Namespace::members(std::string_view room) const {
  std::vector<SocketImpl*> out;
  if (room.empty()) {
    sockets_.for_each([&](SocketImpl* s) { out.push_back(s); });
  } else {
    for_members(std::string(room), [&](SocketImpl* s) { out.push_back(s); });
  }
  return out;
}

void Namespace::deliver(const EncodedBroadcast& b, std::span<const eio::OutRef> packets) {
  if (!claiming_.empty()) keep_for_claims(b);
  // The recipients, for the sent handlers once the walk is over (only when there are some).
  std::vector<std::weak_ptr<SocketImpl>> sent;
  const bool report = !sent_handlers.empty();
  auto excluded = [&](SocketImpl* s) {
    for (auto& r : b.opts.except)
      if (s->in_room(r)) return true;
    return false;
  };
  auto send = [&](SocketImpl* s) {
    if (!s->client_ || excluded(s)) return;
    if (s->resumed_ && s->sent_at_resume(b.header)) return;
    if (s->wants_batches_ && !b.batch_item.empty()) s->queue_batch_item(b.batch_item);
    else s->client_->send_encoded(packets, b.opts.is_volatile);
    if (report) sent.push_back(s->weak_from_this());
  };
  {
    Walk walk(*this);
    if (b.opts.rooms.empty()) {
      sockets_.for_each(send);
    } else if (b.opts.rooms.size() == 1) {
      for_members(b.opts.rooms[0], send);
    } else {
      std::unordered_set<SocketImpl*> seen;  // each socket once, whatever rooms it is in
      for (auto& r : b.opts.rooms)
        for_members(r, [&](SocketImpl* s) {
          if (seen.insert(s).second) send(s);
        });
    }
  }
  if (!sent.empty()) report_sent(sent, b.data ? b.data.get() : nullptr, b.header, b.attachments);
}

// A recorded broadcast, for the sockets whose session claim is in flight:
// they decide, once they know their rooms and missed packets, whether it is
// theirs and not sent already (SocketImpl::finish_recovery).
void Namespace::keep_for_claims(const EncodedBroadcast& b) {
  if (trailing_offset(b.header).empty()) return;  // not recorded: never a missed packet either
  end_claim(nullptr);  // the sockets gone meanwhile
  for (auto& weak : claiming_)
    if (auto s = weak.lock(); s && s->recovery_if()) s->keep_for_claim(b);
}

void Namespace::end_claim(const SocketImpl* s) {
  std::erase_if(claiming_, [s](const std::weak_ptr<SocketImpl>& w) {
    auto held = w.lock();
    return !held || held.get() == s || !held->recovery_if();
  });
}

void Namespace::report_sent(const std::vector<std::weak_ptr<SocketImpl>>& to, const json_t* data,
                            std::string_view header, const std::vector<std::string>& attachments) {
  Packet decoded;
  if (!data) {
    if (!decode_encoded(header, attachments, decoded) || !decoded.data) return;
    data = decoded.data.get();
  }
  // Shared, not copied: handlers get it const (one that keeps it copies it).
  const Payload sent(json_share(const_cast<json_t*>(data)), attachments);
  auto handlers = sent_handlers;  // a handler may register another
  for (auto& weak : to) {
    auto s = weak.lock();
    if (!s || !s->connected()) continue;
    for (auto& h : handlers) {
      try {
        h(*s, sent);
      } catch (const std::exception& e) {
        logf(LogLevel::Error, "event-sent handler on %s: %s", name_.c_str(), e.what());
      } catch (...) {
        logf(LogLevel::Error, "event-sent handler on %s: unknown exception", name_.c_str());
      }
    }
  }
}

// ---------------------------------------------------------------- client

Client::Client(Server& server, eio::Session& session)
    : server_(server), session_(session), id_(session.sid().substr(0, 12)), msgpack_(server.config().core.parser == CoreConf::Parser::Msgpack) {}
Client::~Client() {
  for (auto& s : sockets_) s->detach();
}

std::shared_ptr<SocketImpl> Client::socket_for(std::string_view nsp) const {
  for (auto& s : sockets_)
    if (s->nsp() == nsp) return s;
  return nullptr;
}

void Client::send(const Packet& p, bool is_volatile, std::string_view data_text) {
  if (!data_text.empty() && !msgpack_) {  // the data's text is known: not encoded again
    auto m = std::make_shared<eio::OutPacket>();
    m->data = encode_with_data(p, data_text, kMessageType);
    if (p.attachments.empty()) {
      if (session_.send(std::move(m), is_volatile)) metrics::add(metrics::core().messages_sent);
      return;
    }
    std::vector<eio::OutRef> packets;
    packets.reserve(1 + p.attachments.size());
    packets.push_back(std::move(m));
    for (auto& a : p.attachments) packets.push_back(eio::make_binary(a));
    return send_encoded(packets, is_volatile);
  }
  if (!p.attachments.empty() && !msgpack_) return send_encoded(server_.wire(p), is_volatile);
  // One message (most packets): no list of them to allocate.
  if (session_.send(server_.message(p), is_volatile)) metrics::add(metrics::core().messages_sent);
}

void Client::send_encoded(std::span<const eio::OutRef> packets, bool is_volatile) {
  for (size_t i = 0; i < packets.size(); i++) {
    // A volatile packet goes whole or not at all.
    if (!session_.send(packets[i], is_volatile && i == 0) && i == 0) return;
  }
  metrics::add(metrics::core().messages_sent);
}

namespace {

// The JSON text of a CONNECT as the client sent it: a client sends the same
// auth with every namespace, and the text matching the auth text of one of
// its sockets shares that text without writing the auth out again.
// "0[/nsp,]{...}": the object's text, or nothing (an ack id, no data).
std::string_view connect_json(std::string_view packet, std::string_view nsp) {
  size_t at = 1;
  if (packet.size() > 1 && packet[1] == '/') {
    if (packet.substr(1, nsp.size()) != nsp || packet.size() <= 1 + nsp.size() || packet[1 + nsp.size()] != ',')
      return {};
    at = nsp.size() + 2;
  }
  return at < packet.size() && packet[at] == '{' ? packet.substr(at) : std::string_view();
}

}  // namespace

void Client::on_message(bool binary, std::string_view data) {
  Packet p;
  std::string err;
  packet_bytes_ = uint32_t(std::min<uint64_t>(uint64_t(packet_bytes_) + data.size(), UINT32_MAX));  // far past any bound
  Decoder::Result r;
  if (msgpack_) {  // one binary message a packet
    if (!binary) err = "a text message under the msgpack parser";
    r = binary && decode_msgpack(data, p, err) ? Decoder::Result::Packet : Decoder::Result::Error;
  } else {
    r = binary ? decoder_.add_binary(data, p, err) : decoder_.add_text(data, p, err);
  }
  if (r == Decoder::Result::NeedMore) return;
  size_t wire_bytes = std::exchange(packet_bytes_, 0);
  if (r == Decoder::Result::Error) {
    logf(LogLevel::Info, "client %s: invalid Socket.IO packet (%s), closing", session_.handshake()->address.c_str(),
         err.c_str());
    session_.close("parse error");
    return;
  }
  bool text_connect = p.type == PacketType::Connect && !binary && !msgpack_;
  handle(p, wire_bytes, text_connect ? connect_json(data, p.nsp) : std::string_view());
}

void Client::handle(Packet& p, size_t wire_bytes, std::string_view connect_text) {
  auto s = socket_for(p.nsp);
  if (p.type == PacketType::Connect) {
    if (s) {
      session_.close("parse error");  // a second CONNECT to the same namespace
      return;
    }
    Namespace* ns = server_.find(p.nsp);
    if (!ns) {
      Packet e;
      e.type = PacketType::ConnectError;
      e.nsp = p.nsp;
      e.data = Json(json_pack("{s:s}", "message", "Invalid namespace"));
      send(e);
      return;
    }
    Json auth = p.data ? std::move(p.data) : Json(json_object());
    s = std::make_shared<SocketImpl>(*ns, *this, server_.new_socket_id(), std::move(auth));
    if (!connect_text.empty())
      for (auto& other : sockets_)
        if (other->auth_text_ && other->auth_text_.view() == connect_text) s->auth_text_ = other->auth_text_;
    sockets_.push_back(s);
    // Connection state recovery: a CONNECT with pid and offset may resume a
    // session, once its hooks pass (see SocketImpl::begin_recovery).
    const char* pid = json_str(s->auth(), "pid");
    const char* offset = json_str(s->auth(), "offset");
    Adapter& adapter = server_.adapter();
    if (pid && offset && adapter.recovers() && strlen(pid) <= kMaxRecoveryIdLength &&
        strlen(offset) <= kMaxRecoveryIdLength) {
      std::weak_ptr<SocketImpl> weak = s;
      bool asked = adapter.find_session(p.nsp, pid, [weak, offset = std::string(offset)](std::optional<StoredSession> found) {
        auto s = weak.lock();
        if (!s) return;
        if (found) return s->begin_recovery(std::move(*found), offset);
        s->server().adapter().recovery_done(false);  // unknown or expired: a fresh connection
        s->start_connect();
      });
      if (asked) return;
    }
    s->run_connect_hooks(0);
    return;
  }
  if (!s || !s->connected()) {
    session_.close("parse error");  // a packet for a namespace it has not joined
    return;
  }
  switch (p.type) {
    case PacketType::Disconnect:
      s->on_disconnect("client namespace disconnect");
      remove(p.nsp);
      return;
    case PacketType::Event:
    case PacketType::BinaryEvent:
      s->on_event(p, wire_bytes);
      return;
    case PacketType::Ack:
    case PacketType::BinaryAck:
      s->on_ack(p);
      return;
    default:
      session_.close("parse error");  // CONNECT_ERROR never comes from a client
  }
}

SharedText Client::auth_text(const json_t* auth) {
  std::string text = json_text(auth);
  for (auto& s : sockets_)  // clients send the same auth with every namespace: one copy
    if (s->auth_text_ && s->auth_text_.view() == text) return s->auth_text_;
  return SharedText(text);
}

void Client::remove(const std::string& nsp) {
  std::erase_if(sockets_, [&](const std::shared_ptr<SocketImpl>& s) { return s->nsp() == nsp; });
}

void Client::close_all() {
  // As Socket.IO's client._disconnect(): every namespace socket is
  // disconnected by the server ("server namespace disconnect", not
  // recoverable), then the connection is closed ("forced close").
  auto sockets = sockets_;  // disconnect handlers may change the list
  for (auto& s : sockets) {
    if (!s->connected()) continue;
    Packet p;
    p.type = PacketType::Disconnect;
    p.nsp = s->nsp();
    send(p);
    s->on_disconnect("server namespace disconnect");
  }
  session_.close("forced close");
}

void Client::on_upgrade() {
  auto sockets = sockets_;  // a handler may disconnect one
  for (auto& s : sockets) {
    if (!s->connected()) continue;
    try {
      for (auto& h : s->ns().transport_handlers) h(*s);
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "transport handler on %s: %s", s->nsp().c_str(), e.what());
    } catch (...) {
      logf(LogLevel::Error, "transport handler on %s: unknown exception", s->nsp().c_str());
    }
  }
}

void Client::on_close(std::string_view reason) {
  auto sockets = std::move(sockets_);
  sockets_.clear();
  for (auto& s : sockets) s->on_disconnect(reason);
}

// ---------------------------------------------------------------- server

Server::Server(const Config& cfg, Timers& timers)
    : cfg_(&cfg),
      ack_timer_(timers, [](void* s) { static_cast<Server*>(s)->expire_acks(); }, this),
      batch_timer_(timers, [](void* s) { static_cast<Server*>(s)->flush_batches(); }, this) {
  for (auto& ns : cfg.namespaces) {
    namespaces_.push_back(std::make_unique<Namespace>(*this, ns.name));
    auto label = metrics::label("namespace", ns.name);
    namespaces_.back()->connections_total = metrics::get("websocket_connections_total", label);
    namespaces_.back()->connected = metrics::get("websocket_namespace_sockets", label);
    namespaces_.back()->room_count = metrics::get("depth_realtime_rooms", label);
  }
}

Server::~Server() = default;

std::unique_ptr<eio::SessionHandler> Server::make_client(eio::Session& s) { return std::make_unique<Client>(*this, s); }

Namespace* Server::find(std::string_view name) {
  for (auto& ns : namespaces_)
    if (ns->name() == name) return ns.get();
  return nullptr;
}

std::vector<Namespace*> Server::all() {
  std::vector<Namespace*> out;
  for (auto& ns : namespaces_) out.push_back(ns.get());
  return out;
}

// Strings are immutable once made and refcounted: the names the server
// sends are made once (the first few dozen; the rest each time).
Json Server::event_name(std::string_view name) {
  constexpr size_t kMaxNames = 64;
  for (auto& [n, j] : event_names_)
    if (n == name) return json_share(j.get());
  Json j(json_stringn(name.data(), name.size()));
  if (j && event_names_.size() < kMaxNames) event_names_.emplace_back(std::string(name), json_share(j.get()));
  return j;
}

std::string Server::new_socket_id() {
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint8_t b[20];
  random_bytes(b, sizeof b);
  std::string id(20, 'A');
  for (int i = 0; i < 20; i++) id[i] = alphabet[b[i] & 63];
  return id;
}

void Server::broadcast(const BroadcastOptions& opts, std::string_view event, Payload args) {
  // One broadcast kept for the next, so that copying the options in does not
  // allocate (see assign_options); one made inside another's delivery gets
  // its own.
  thread_local EncodedBroadcast kept;
  thread_local bool kept_in_use = false;
  EncodedBroadcast fresh;
  const bool reuse = !kept_in_use;
  EncodedBroadcast& b = reuse ? kept : fresh;
  struct Release {
    EncodedBroadcast& b;
    bool reuse;
    ~Release() {
      if (!reuse) return;
      b.release();
      kept_in_use = false;
    }
  } release{b, reuse};
  kept_in_use = true;
  if (args.attachments.empty()) b.batch_item = batch_item(event, args);
  Packet p;
  p.type = PacketType::Event;
  p.nsp = opts.nsp;
  p.data = event_array(event_name(event), args);
  p.attachments = std::move(args.attachments);
  // Connection state recovery: recordable events carry their offset last.
  if (!opts.is_volatile && !opts.local) b.offset = adapter_->next_offset();
  json_t* offset = nullptr;
  if (!b.offset.empty()) {
    offset = json_stringn(b.offset.data(), b.offset.size());
    json_array_append_new(p.data.get(), offset);
  }
  b.assign_options(opts);
  // The args' text, when the sender has it, is not encoded again: the same
  // header as encode(p) gives, built around it (a text header is what the
  // JSON parser sends, what the adapter relays and recovery records).
  b.header = BroadcastHeader::of_message(
      args.text ? encode_event(p, json_array_get(p.data.get(), 0), *args.text, offset, kMessageType)
                : encode(p, kMessageType));
  b.attachments = std::move(p.attachments);
  b.data = std::move(p.data);
  metrics::add(metrics::core().broadcasts);
  adapter_->broadcast(b);
}

void Server::deliver(const EncodedBroadcast& b) {
  Namespace* ns = find(b.opts.nsp);
  if (!ns) return;
  // Encoded once for every recipient. Most broadcasts are one text message:
  // the header's own, no list of messages to make for it.
  if (cfg_->core.parser == CoreConf::Parser::Json && b.attachments.empty() && b.header.message()) {
    ns->deliver(b, {&b.header.message(), 1});
    return;
  }
  ns->deliver(b, wire(b));
}

std::vector<eio::OutRef> Server::wire(const EncodedBroadcast& b) const {
  if (cfg_->core.parser == CoreConf::Parser::Json || !b.data) return wire(b.header, b.attachments);
  // The sender's own broadcast still has its data: msgpack from it, not from the header read back.
  Packet p;
  p.type = PacketType::Event;
  p.nsp = b.opts.nsp;
  p.data = json_share(b.data.get());
  p.attachments = b.attachments;
  return wire(p);
}

std::vector<eio::OutRef> Server::wire(const Packet& p) const {
  if (cfg_->core.parser == CoreConf::Parser::Json) return encode_packets(p);
  return {eio::make_binary(encode_msgpack(p))};
}

eio::OutRef Server::message(const Packet& p) const {
  if (cfg_->core.parser == CoreConf::Parser::Msgpack) return eio::make_binary(encode_msgpack(p));
  assert(p.attachments.empty());
  auto m = std::make_shared<eio::OutPacket>();
  m->data = encode(p, kMessageType);
  return m;
}

std::vector<eio::OutRef> Server::wire(std::string_view header, const std::vector<std::string>& attachments) const {
  if (cfg_->core.parser == CoreConf::Parser::Json) return encode_packets(header, attachments);
  // Broadcasts travel as text headers (between workers, in the recovery
  // store): read back once per broadcast, not once per recipient.
  Packet p;
  if (!decode_encoded(header, attachments, p)) {
    logf(LogLevel::Error, "a packet of this server does not parse, not sent: %.80s", std::string(header).c_str());
    return {};
  }
  return wire(p);
}

// Deadlines are on the wall clock (they come from other nodes too); one timer
// of the facility is armed for the earliest.
void Server::schedule_ack_timeout(int64_t deadline, std::weak_ptr<SocketImpl> s, uint64_t id) {
  ack_timeouts_.emplace(deadline, std::make_pair(std::move(s), id));
  arm_ack_timer();
}

void Server::arm_ack_timer() {
  if (ack_timeouts_.empty()) {
    ack_timer_.cancel();
    return;
  }
  int64_t in = std::max<int64_t>(0, ack_timeouts_.begin()->first - now_ms());
  int64_t at = ack_timer_.timers().now() + in;
  if (!ack_timer_.armed() || at < ack_timer_.deadline()) ack_timer_.arm_at(at);
}

void Server::expire_acks() {
  int64_t now = now_ms();
  while (!ack_timeouts_.empty() && ack_timeouts_.begin()->first <= now) {
    auto [weak, id] = ack_timeouts_.begin()->second;
    ack_timeouts_.erase(ack_timeouts_.begin());
    if (auto s = weak.lock()) s->expire_ack(id);  // may schedule more
  }
  ack_timer_.cancel();
  arm_ack_timer();
}

// ------------------------------------------------ for the cluster adapter

void SocketImpl::begin_recovery(StoredSession session, std::string offset) {
  if (gone_ || !client_ || connected_) return;
  id_ = session.sid;  // the hooks see the id the socket will keep (rate limits key on it)
  auto rec = std::make_unique<Recovery>();
  rec->session = std::move(session);
  rec->offset = std::move(offset);
  rare().recovery = std::move(rec);
  run_connect_hooks(0);
}

// The hooks passed: the token's user must be the session's.
void SocketImpl::confirm_recovery() {
  const std::string* was = rare_->recovery->session.get("userId");
  const std::string* now = get("userId");
  if ((was ? *was : std::string()) != (now ? *now : std::string())) return abandon_recovery("another user's session");
  std::vector<std::string> rooms;  // to vet: the restored ones but its own and those the hooks joined
  for (auto& r : rare_->recovery->session.rooms)
    if (r != id_ && !in_room(r)) rooms.push_back(r);
  if (rooms.empty() || ns_.room_guards.empty()) return rooms_checked(std::move(rooms));
  // Every guard on every room, at once; the last answer goes on.
  struct Checks {
    size_t pending;
    std::vector<std::string> rooms;
    std::vector<bool> allowed;
  };
  auto checks = std::make_shared<Checks>();
  checks->pending = rooms.size() * ns_.room_guards.size() + 1;  // + 1: the loop below
  checks->allowed.assign(rooms.size(), true);
  checks->rooms = std::move(rooms);
  auto answered = [weak = weak_from_this(), checks] {
    if (--checks->pending) return;
    auto s = weak.lock();
    if (!s) return;
    std::vector<std::string> kept;
    for (size_t i = 0; i < checks->rooms.size(); i++)
      if (checks->allowed[i]) kept.push_back(checks->rooms[i]);
    s->rooms_checked(std::move(kept));
  };
  auto self = shared_from_this();
  for (size_t i = 0; i < checks->rooms.size(); i++) {
    for (auto& guard : ns_.room_guards) {
      auto once = std::make_shared<bool>(false);
      RoomVerdict done = [checks, i, once, answered](bool allowed) {
        if (*once) return;
        *once = true;
        if (!allowed) checks->allowed[i] = false;
        answered();
      };
      try {
        guard(*this, checks->rooms[i], done);
      } catch (const std::exception& e) {
        logf(LogLevel::Error, "room guard on %s: %s", ns_.name().c_str(), e.what());
        done(false);
      } catch (...) {
        logf(LogLevel::Error, "room guard on %s: unknown exception", ns_.name().c_str());
        done(false);
      }
    }
  }
  answered();
}

void SocketImpl::rooms_checked(std::vector<std::string> kept) {
  if (gone_ || !client_ || connected_ || !recovery_if()) return;
  const Recovery& rec = *rare_->recovery;
  ns_.claiming_.push_back(weak_from_this());
  bool asked = server().adapter().claim_session(
      ns_.name(), rec.session.pid, rec.session.sid, rec.offset,
      [weak = weak_from_this(), kept = std::move(kept)](std::optional<std::vector<EncodedBroadcast>> missed) {
        auto s = weak.lock();
        if (!s) return;
        if (!missed) return s->abandon_recovery("the session is gone or its offset unknown");
        s->finish_recovery(kept, *missed);
      });
  if (!asked) abandon_recovery("the session store is unavailable");
}

void SocketImpl::keep_for_claim(const EncodedBroadcast& b) {
  Recovery& rec = *rare_->recovery;
  if (rec.held_overflow) return;
  size_t bytes = b.header.size();
  for (auto& a : b.attachments) bytes += a.size();
  if (rec.held_bytes + bytes > server().config().core.max_output_buffer) {
    rec.held_overflow = true;
    std::vector<Recovery::Held>().swap(rec.held);
    return;
  }
  rec.held_bytes += bytes;
  rec.held.push_back({b.header, b.attachments, b.opts.rooms, b.opts.except});
}

void SocketImpl::finish_recovery(const std::vector<std::string>& kept, const std::vector<EncodedBroadcast>& missed) {
  if (gone_ || !client_ || connected_ || !recovery_if()) return;
  if (rare_->recovery->held_overflow) return abandon_recovery("too many broadcasts while its session was claimed");
  auto rec = std::move(rare_->recovery);
  ns_.end_claim(this);
  pid_ = rec->session.pid.empty() ? SharedText() : SharedText(rec->session.pid);
  for (auto& r : kept) join(r);  // not connected yet: only listed, indexed by connect_now
  // Data: what the hooks set now, then the rest of the session's, never what
  // its hooks set then (the claims of an older token).
  const auto& then = rec->session.connect_keys;
  for (auto& [k, v] : rec->session.data)
    if (std::find(then.begin(), then.end(), k) == then.end() && !get(k)) own_data().emplace_back(k, v);
  // The missed packets of the rooms it has now. Socket.IO sends them before
  // the CONNECT reply; the client delivers them after `connect`.
  auto in_any = [&](const std::vector<std::string>& list) {
    for (auto& r : list)
      if (r == id_ || in_room(r)) return true;
    return false;
  };
  std::unique_ptr<Rare::Resumed> resumed;
  for (auto& b : missed) {
    if (!b.opts.rooms.empty() && !in_any(b.opts.rooms)) continue;
    if (in_any(b.opts.except)) continue;
    client_->send_encoded(server().wire(b.header, b.attachments), false);
    if (std::string_view offset = trailing_offset(b.header); !offset.empty()) {
      if (!resumed) resumed = std::make_unique<Rare::Resumed>();
      resumed->offsets.emplace(offset);
    }
  }
  // Then what was delivered here while the claim was in flight and is not
  // among them: recorded after the claim ran, in the order it came. Each
  // once, and a late copy of it is dropped too, as one of a missed packet.
  for (auto& h : rec->held) {
    if (!h.rooms.empty() && !in_any(h.rooms)) continue;
    if (in_any(h.except)) continue;
    if (!resumed) resumed = std::make_unique<Rare::Resumed>();
    if (!resumed->offsets.emplace(trailing_offset(h.header)).second) continue;
    client_->send_encoded(server().wire(h.header, h.attachments), false);
  }
  if (resumed) {
    resumed->until = server().timers().now() + kResumedMs;
    rare().resumed = std::move(resumed);
    resumed_ = true;
  }
  server().adapter().recovery_done(true);
  logf(LogLevel::Debug, "recovery: socket %s on %s resumed, %zu of %zu rooms kept", id_.c_str(), ns_.name().c_str(),
       kept.size(), rec->session.rooms.size());
  connect_now();
}

bool SocketImpl::sent_at_resume(std::string_view header) {
  if (server().timers().now() > rare_->resumed->until) {
    rare_->resumed.reset();
    resumed_ = false;
    return false;
  }
  std::string_view offset = trailing_offset(header);
  return !offset.empty() && rare_->resumed->offsets.count(std::string(offset)) != 0;
}

// A fresh connection after all: new id, new pid, none of the session.
void SocketImpl::abandon_recovery(const char* why) {
  if (gone_ || !client_ || connected_) return;
  logf(LogLevel::Info, "recovery: a CONNECT to %s from %s starts fresh: %s", ns_.name().c_str(),
       client_->session().handshake()->address.c_str(), why);
  if (rare_) rare_->recovery.reset();
  ns_.end_claim(this);
  id_ = server().new_socket_id();
  server().adapter().recovery_done(false);
  connect_now();
}

void SocketImpl::expect_ack(uint64_t id, int64_t deadline, AckCallback cb) {
  if (gone_ || !client_) {
    if (cb) cb(true, Payload());
    return;
  }
  acks().pending[id] = std::move(cb);
  server().schedule_ack_timeout(deadline, weak_from_this(), id);
}

bool SocketImpl::writable() const { return client_ && connected_; }

std::vector<SocketImpl*> Namespace::select(const std::vector<std::string>& rooms,
                                           const std::vector<std::string>& except) const {
  std::vector<SocketImpl*> out;
  auto take = [&](SocketImpl* s) {
    for (auto& r : except)
      if (s->in_room(r)) return;
    out.push_back(s);
  };
  if (rooms.empty()) {
    sockets_.for_each(take);
    return out;
  }
  std::unordered_set<SocketImpl*> seen;
  for (auto& r : rooms)
    for_members(r, [&](SocketImpl* s) {
      if (seen.insert(s).second) take(s);
    });
  return out;
}

std::vector<std::string> Namespace::room_names() const {
  std::vector<std::string> out;
  out.reserve(sockets_.size());
  sockets_.for_each([&](SocketImpl* s) { out.emplace_back(s->id_); });
  rooms_.for_each([&](const Room& r) {
    if (!r.members.empty()) out.emplace_back(r.name());
  });
  return out;
}

SocketImpl* Namespace::socket(std::string_view id) const {
  return sockets_.find(id);
}

size_t Server::deliver_with_ack(const EncodedBroadcast& b, uint64_t ack_id, int64_t deadline,
                                const std::function<void(bool timed_out, Payload reply)>& on_ack) {
  Namespace* ns = find(b.opts.nsp);
  if (!ns) return 0;
  auto packets = wire(b.header, b.attachments);  // encoded once for every recipient
  size_t n = 0;
  std::vector<std::weak_ptr<SocketImpl>> sent;
  for (SocketImpl* s : ns->select(b.opts.rooms, b.opts.except)) {
    if (!s->client_) continue;
    s->expect_ack(ack_id, deadline, on_ack);
    s->client_->send_encoded(packets, b.opts.is_volatile);
    if (!ns->sent_handlers.empty()) sent.push_back(s->weak_from_this());
    n++;
  }
  if (!sent.empty()) ns->report_sent(sent, b.data ? b.data.get() : nullptr, b.header, b.attachments);
  return n;
}

}  // namespace dr::sio
