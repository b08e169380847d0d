#include "cluster/backend.h"

#include <ctime>
#include <memory>

#include "core/uv_util.h"

namespace dr::cluster {

// --------------------------------------------------------------- the API

namespace {
ClusterBackend* g_backend = nullptr;
}  // namespace

void install(ClusterBackend* backend) { g_backend = backend; }

bool configured() { return g_backend && g_backend->configured(); }
bool ready() { return g_backend && g_backend->ready(); }

void fetch_sockets(const BroadcastOptions& opts, FetchCallback cb) {
  if (g_backend) g_backend->fetch_sockets(opts, std::move(cb));
}
void sockets_join(const BroadcastOptions& opts, const std::vector<std::string>& rooms) {
  if (g_backend) g_backend->sockets_join(opts, rooms);
}
void sockets_leave(const BroadcastOptions& opts, const std::vector<std::string>& rooms) {
  if (g_backend) g_backend->sockets_leave(opts, rooms);
}
void disconnect_sockets(const BroadcastOptions& opts, bool close) {
  if (g_backend) g_backend->disconnect_sockets(opts, close);
}
void all_rooms(std::string_view nsp, std::function<void(std::string, std::vector<std::string>)> cb) {
  if (g_backend) g_backend->all_rooms(std::string(nsp), std::move(cb));
}
void server_count(std::string_view nsp, std::function<void(size_t)> cb) {
  if (g_backend) g_backend->server_count(std::string(nsp), std::move(cb));
}
void on_server_event(std::string_view nsp, std::string_view event, ServerEventHandler h) {
  if (g_backend) g_backend->on_server_event(std::string(nsp), std::string(event), std::move(h));
}
void server_side_emit(std::string_view nsp, std::string_view event, Payload args) {
  if (g_backend) g_backend->server_side_emit(std::string(nsp), std::string(event), std::move(args));
}
void server_side_emit_with_ack(std::string_view nsp, std::string_view event, Payload args, uint64_t timeout_ms,
                               ServerAcks cb) {
  if (g_backend) g_backend->server_side_emit_with_ack(std::string(nsp), std::string(event), std::move(args), timeout_ms,
                                              std::move(cb));
}
void broadcast_with_ack(const BroadcastOptions& opts, std::string_view event, Payload args, uint64_t timeout_ms,
                        BroadcastAcks cb) {
  if (g_backend) g_backend->broadcast_with_ack(opts, std::string(event), std::move(args), timeout_ms, std::move(cb));
}
void room_members(std::string_view nsp, std::string_view room, PresenceCallback cb) {
  if (g_backend) g_backend->room_members(std::string(nsp), std::string(room), std::move(cb));
}

// ------------------------------------------------------------ describing

namespace {

Json pairs_object(const std::vector<std::pair<std::string, std::string>>& pairs) {
  Json o(json_object());
  for (auto& [k, v] : pairs) json_object_set_new(o.get(), k.c_str(), json_stringn(v.data(), v.size()));
  return o;
}

Json string_array(const std::vector<std::string>& items) {
  Json a(json_array());
  for (auto& s : items) json_array_append_new(a.get(), json_stringn(s.data(), s.size()));
  return a;
}

}  // namespace

RemoteSocket describe(sio::SocketImpl& s) {
  RemoteSocket r;
  r.id = s.id();
  r.rooms = s.rooms();
  Json hs = handshake_json(s.handshake());  // the API's, as the admin UI shows it
  json_object_set_new(hs.get(), "auth", s.auth() ? json_deep_copy(s.auth()) : json_object());
  r.handshake = std::move(hs);
  r.data = pairs_object(s.data());
  // What the Socket.IO admin UI's instrumentation keeps in socket.data, so that
  // dashboards (ours or Node's) can group sockets by connection.
  json_object_set_new(r.data.get(), "_admin",
                      json_pack("{s:s, s:s%}", "clientId", s.client_id().c_str(), "transport",
                                s.transport().data(), s.transport().size()));
  return r;
}

Json describe_json(const RemoteSocket& r) {
  Json o(json_object());
  json_object_set_new(o.get(), "id", json_string(r.id.c_str()));
  json_object_set(o.get(), "handshake", r.handshake ? r.handshake.get() : json_object());
  json_object_set_new(o.get(), "rooms", string_array(r.rooms).release());
  json_object_set(o.get(), "data", r.data ? r.data.get() : json_object());
  return o;
}

// ------------------------------------------------------------- LocalBackend

LocalBackend::LocalBackend(Timers& timers, sio::Server& server) : server_(server), timers_(timers) {}

std::vector<sio::SocketImpl*> LocalBackend::select(const BroadcastOptions& opts) const {
  sio::Namespace* ns = server_.find(opts.nsp);
  if (!ns) return {};
  return ns->select(opts.rooms, opts.except);
}

std::vector<RemoteSocket> LocalBackend::fetch_local(const BroadcastOptions& opts) const {
  std::vector<RemoteSocket> out;
  for (auto* s : select(opts)) out.push_back(describe(*s));
  return out;
}

std::vector<std::string> LocalBackend::room_names(const std::string& nsp) const {
  sio::Namespace* ns = server_.find(nsp);
  return ns ? ns->room_names() : std::vector<std::string>{};
}

std::vector<Member> LocalBackend::members_local(const std::string& nsp, const std::string& room,
                                            const std::string& node) const {
  std::vector<Member> out;
  sio::Namespace* ns = server_.find(nsp);
  if (!ns) return out;
  for (auto* s : ns->members(room)) {
    const std::string* user = s->get("userId");
    out.push_back({s->id(), user ? *user : std::string(), node});
  }
  return out;
}

void LocalBackend::fetch_sockets(const BroadcastOptions& opts, FetchCallback cb) {
  auto sockets = std::make_shared<std::vector<RemoteSocket>>(fetch_local(opts));  // a posted call must be copyable
  timers_.post([cb = std::move(cb), sockets] { cb({}, std::move(*sockets)); });
}

// The sockets are held weakly: a room or disconnect handler run by one may
// end others of the selection.
std::vector<std::weak_ptr<Socket>> LocalBackend::select_weak(const BroadcastOptions& opts) const {
  std::vector<std::weak_ptr<Socket>> out;
  for (auto* s : select(opts)) out.push_back(s->weak());
  return out;
}

void LocalBackend::sockets_join(const BroadcastOptions& opts, const std::vector<std::string>& rooms) {
  for (auto& w : select_weak(opts))
    for (auto& r : rooms)
      if (auto s = w.lock()) s->join(r);
}

void LocalBackend::sockets_leave(const BroadcastOptions& opts, const std::vector<std::string>& rooms) {
  for (auto& w : select_weak(opts))
    for (auto& r : rooms)
      if (auto s = w.lock()) s->leave(r);
}

void LocalBackend::disconnect_sockets(const BroadcastOptions& opts, bool close) {
  for (auto& w : select_weak(opts))
    if (auto s = w.lock()) s->disconnect(close);
}

void LocalBackend::all_rooms(const std::string& nsp, std::function<void(std::string, std::vector<std::string>)> cb) {
  timers_.post([cb = std::move(cb), rooms = room_names(nsp)]() mutable { cb({}, std::move(rooms)); });
}

void LocalBackend::server_count(const std::string&, std::function<void(size_t)> cb) {
  timers_.post([cb = std::move(cb)] { cb(1); });
}

void LocalBackend::on_server_event(const std::string& nsp, const std::string& event, ServerEventHandler h) {
  server_events_[{nsp, event}].push_back(std::move(h));
}

void LocalBackend::server_side_emit_with_ack(const std::string&, const std::string&, Payload, uint64_t, ServerAcks cb) {
  timers_.post([cb = std::move(cb)] { cb({}, {}); });  // no other node to answer
}

void LocalBackend::dispatch_server_event(const std::string& nsp, Json data, std::vector<std::string> attachments,
                                     ServerAck ack) {
  const char* event = json_string_value(json_array_get(data.get(), 0));
  if (!event) return;
  auto it = server_events_.find({nsp, event});
  if (it == server_events_.end()) return;
  json_array_remove(data.get(), 0);
  Payload args(std::move(data), std::move(attachments));
  // Only the first answer counts, whichever handler gives it.
  auto once = std::make_shared<bool>(false);
  ServerAck first;
  if (ack)
    first = [ack, once](Json reply) {
      if (*once) return;
      *once = true;
      ack(std::move(reply));
    };
  for (auto& h : it->second) {
    try {
      h(args, first);
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "server-side event \"%s\" on %s: %s", event, nsp.c_str(), e.what());
    }
  }
}

size_t LocalBackend::deliver_with_ack(const BroadcastOptions& opts, const json_t* data,
                                  const std::vector<std::string>& attachments, uint64_t timeout_ms,
                                  std::function<void(Payload)> on_reply) {
  sio::Packet p;
  p.type = sio::PacketType::Event;
  p.nsp = opts.nsp;
  p.id = next_ack_id_++;
  p.data = Json(json_deep_copy(data));
  p.attachments = attachments;
  sio::EncodedBroadcast b;
  b.opts = opts;
  b.header = sio::encode(p);
  b.attachments = std::move(p.attachments);
  return server_.deliver_with_ack(b, *p.id, now_ms() + int64_t(timeout_ms), [on_reply](bool timed_out, Payload reply) {
    if (timed_out) return;
    on_reply(payload_of(json_array_get(reply.args.get(), 0), reply.attachments));
  });
}

void LocalBackend::broadcast_with_ack(const BroadcastOptions& opts, const std::string& event, Payload args,
                                  uint64_t timeout_ms, BroadcastAcks cb) {
  struct State {
    size_t expected = 0;
    std::vector<Payload> replies;
    bool done = false;
    BroadcastAcks cb;
    void finish(bool timed_out) {
      if (done) return;
      done = true;
      cb(timed_out, std::move(replies));
    }
  };
  auto st = std::make_shared<State>();
  st->cb = std::move(cb);
  Json data(json_array());
  json_array_append_new(data.get(), json_stringn(event.data(), event.size()));
  json_array_extend(data.get(), args.args.get());
  std::weak_ptr<State> weak = st;
  st->expected = deliver_with_ack(opts, data.get(), args.attachments, timeout_ms, [weak](Payload reply) {
    auto st = weak.lock();
    if (!st || st->done) return;
    st->replies.push_back(std::move(reply));
    if (st->replies.size() == st->expected) st->finish(false);
  });
  if (st->expected == 0) {
    timers_.post([st] { st->finish(false); });
    return;
  }
  timers_.after(int64_t(timeout_ms), [st] { st->finish(true); });  // the state lives until then
}

void LocalBackend::room_members(const std::string& nsp, const std::string& room, PresenceCallback cb) {
  timers_.post([cb = std::move(cb), members = members_local(nsp, room, {})]() mutable { cb({}, std::move(members)); });
}

}  // namespace dr::cluster
