// The Redis adapter itself (redis_adapter.h): its lifecycle, broadcasts out
// and in, the catch-up after a subscriber gap, and the room observer that
// keeps subscriptions, presence and sessions in step. Requests, presence and
// session recovery are in redis_adapter_{requests,presence,recovery}.cc, the
// wire bytes in pubsub_codec.cc.
#include "cluster/redis_adapter.h"

#include <algorithm>

#include "cluster/lua_scripts.h"
#include "cluster/offset.h"
#include "cluster/pubsub_codec.h"
#include "cluster/recovery_lua.h"
#include "cluster/redis_api.h"
#include "core/random_bytes.h"
#include "core/uv_util.h"

namespace dr::cluster {
namespace {

using namespace wire;

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// A glob matching `s` literally (Redis' patterns: * ? [ ] \ are special).
std::string glob_literal(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// Socket.IO's recoverable disconnect reasons (ours: "forced close" is a kick).
bool recoverable(std::string_view reason) {
  return reason == "transport close" || reason == "transport error" || reason == "ping timeout" ||
         reason == "server shutting down";
}

}  // namespace

// ------------------------------------------------------------ lifecycle

RedisAdapter::RedisAdapter(uv_loop_t* loop, sio::Server& server, const CoreConf::Redis& conf, Relay relay,
                           const std::string& daemon_tag)
    : loop_(loop),
      server_(server),
      conf_(conf),
      sharded_(conf.cluster()),
      members_prefix_(conf.app_prefix + (conf.cluster() ? "{membership}" : "")),
      relay_(std::move(relay)),
      siblings_(daemon_tag),
      // Without a relay (one worker), not tagged: what it publishes reaches the
      // workers of another generation (a reload changing worker_processes) only
      // through Redis, so they must not drop it.
      uid_((relay_ ? siblings_ : std::string()) + new_id()),
      link_(
          loop, server.timers(), conf, [this](std::string_view ch, std::string_view body) { on_message(ch, body); },
          [this](bool up) { on_state(up); }),
      local_(server.timers(), server),
      heartbeat_timer_(server.timers(), [this] {
        if (link_.ready()) heartbeat(false);  // else resync() beats when the link is back
      }),
      service_timer_(server.timers(), [this] { service(); }),
      refresh_timer_(server.timers(), [this] { refresh_sessions(); }),
      wait_timer_(server.timers(), [this] { serve_waiting(); }) {
  link_.on_subscriber([this](bool subscribed) { on_subscriber(subscribed); });
  request_prefix_ = conf_.key_prefix + "-request#";
  response_prefix_ = conf_.key_prefix + "-response#";
  bcast_prefix_ = conf_.key_prefix + "#";
  install_redis_api(server.timers(), &link_, conf_.app_prefix);
  set_wait_replicas(conf_.wait_replicas, conf_.wait_timeout);
}

RedisAdapter::~RedisAdapter() {
  uninstall_redis_api();
  for (auto& n : nsps_)
    if (n.ns) n.ns->observer = nullptr;
}

std::string RedisAdapter::new_id() const {
  uint8_t b[6];
  random_bytes(b, sizeof b);
  std::string id(6, 'A');
  for (int i = 0; i < 6; i++) id[i] = kBase64Digits[b[i] & 63];
  return id;
}

void RedisAdapter::start() {
  metrics::declare("redis_up", MetricType::Gauge, "Workers whose connections to Redis are up");
  metrics::declare("redis_commands_dropped_total", MetricType::Counter,
                   "Redis commands dropped because Redis was away or too slow");
  metrics::declare("cluster_messages_published_total", MetricType::Counter, "Broadcasts published to Redis");
  metrics::declare("cluster_messages_received_total", MetricType::Counter,
                   "Broadcasts received from other nodes through Redis");
  metrics::declare("recovery_total", MetricType::Counter, "Connection state recovery attempts, by result");
  m_up_ = metrics::get("redis_up");
  m_dropped_ = metrics::get("redis_commands_dropped_total");
  m_published_ = metrics::get("cluster_messages_published_total");
  metrics::declare("redis_publish_latency_microseconds_sum", MetricType::Counter,
                   "Time from PUBLISH to Redis' answer, summed (divide by _count for the mean)");
  metrics::declare("redis_publish_latency_microseconds_count", MetricType::Counter, "PUBLISH answers timed");
  m_publish_us_sum_ = metrics::get("redis_publish_latency_microseconds_sum");
  m_publish_count_ = metrics::get("redis_publish_latency_microseconds_count");
  m_received_ = metrics::get("cluster_messages_received_total");
  metrics::declare("cluster_messages_caught_up_total", MetricType::Counter,
                   "Broadcasts from other processes read back from the recovery stream after a resubscribe");
  m_caught_up_ = metrics::get("cluster_messages_caught_up_total");
  m_recovered_ = metrics::get("recovery_total", metrics::label("result", "recovered"));
  m_not_recovered_ = metrics::get("recovery_total", metrics::label("result", "fresh"));
  metrics::declare("recovery_session_writes_total", MetricType::Counter,
                   "Recovery session records written to Redis (connect, join, leave, refresh, disconnect, stop)");
  m_session_writes_ = metrics::get("recovery_session_writes_total");

  for (auto* ns : server_.all()) {
    std::string name = ns->name();
    Nsp n{.name = name,
          .ns = ns,
          .bcast = bcast_channel(name),
          .request = request_prefix_ + name + "#",
          .response = response_prefix_ + name + "#",
          .specific = response_prefix_ + name + "#" + uid_ + "#",
          .stream = stream_key(name),
          .catch_up = CatchUp([this](const sio::EncodedBroadcast& b) { server_.deliver(b); },
                              [this](std::string_view offset) { return foreign(offset); })};
    n.catch_up.set_unordered(sharded_);
    if (sharded_) {  // one channel for everything, one for the answers to this node
      n.request = n.response = n.bcast;
      n.specific = n.bcast + uid_ + "#";
      for (auto* ch : {&n.bcast, &n.specific}) link_.subscribe(*ch);
    } else {
      // The namespace's broadcasts, to every room or to one, as Node's
      // adapter takes them: one pattern, filtered here by the room's local
      // members (on_broadcast), instead of a channel per room and socket.
      link_.psubscribe(glob_literal(n.bcast) + "*");
      for (auto* ch : {&n.request, &n.response, &n.specific}) link_.subscribe(*ch);
    }
    ns->observer = this;
    nsps_.push_back(std::move(n));
  }
  install(this);
  logf(LogLevel::Info, "cluster: node %s, redis %s, %schannels %s#<nsp>#", uid_.c_str(), conf_.text().c_str(),
       sharded_ ? "sharded " : "", conf_.key_prefix.c_str());
  link_.start();
}

void RedisAdapter::on_state(bool up) {
  metrics::add(m_up_, up ? 1 : -1);
  if (!up) {
    synced_ = false;
    logf(LogLevel::Warn, "cluster: node %s is cut off from redis; delivering on this machine only", uid_.c_str());
    return;
  }
  logf(LogLevel::Notice, "cluster: node %s joined the cluster through redis %s", uid_.c_str(), link_.where().c_str());
  resync();
  resync_sessions();
  if (!waiting_for_link_.empty()) wait_timer_.arm_in(0);  // from the loop, not inside the link's state change
  for (auto& n : nsps_) catch_up(n);  // subscribed before the commands connection was back
  want_service();
}

void RedisAdapter::on_subscriber(bool subscribed) {
  int64_t now = now_ms();
  for (auto& n : nsps_) {
    if (!subscribed) {
      n.catch_up.lost(now);
      continue;
    }
    n.catch_up.subscribed();
    catch_up(n);
  }
  want_service();
}

// The broadcasts other processes published while our subscriber was away:
// one script per namespace with local sockets, once every SUBSCRIBE is confirmed.
void RedisAdapter::catch_up(Nsp& n) {
  if (!n.catch_up.due()) return;
  if (!recovers() || n.ns->socket_count() == 0) return n.catch_up.skip();  // nothing recorded, or nobody to tell
  if (!link_.commands_up()) return n.catch_up.wait(now_ms());              // again when it is back
  CatchUp::Read rd = n.catch_up.begin();
  std::string max = std::to_string(CatchUp::kMaxEntries);
  const std::string& key = n.stream;
  if (!link_.command({"EVALSHA", lua::sha(lua::kCatchUpScript), "1", key, key, rd.start, rd.anchor, rd.cutoff, max},
                     [this, nsp = n.name](redisReply* r) { caught_up(nsp, r); }))
    n.catch_up.failed();  // too much pending: service() tries again
}

void RedisAdapter::caught_up(const std::string& nsp, redisReply* r) {
  Nsp* n = find(nsp);
  if (!n) return;
  if (!r) {
    n->catch_up.failed();  // the connection was lost: again when it is back
    return want_service();
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_INTEGER) {
    logf(LogLevel::Warn, "cluster: could not read back what %s missed on %s: %s", uid_.c_str(), nsp.c_str(),
         r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    return n->catch_up.skip();
  }
  std::vector<CatchUp::Entry> entries;
  entries.reserve(r->elements / 2);
  for (size_t i = 1; i + 1 < r->elements; i += 2) {
    redisReply* o = r->element[i];
    redisReply* p = r->element[i + 1];
    if (o->type != REDIS_REPLY_STRING || p->type != REDIS_REPLY_STRING) continue;
    entries.push_back({std::string(o->str, o->len), std::string(p->str, p->len)});
  }
  bool more = r->element[0]->integer != 0;
  size_t got = n->catch_up.read(entries);
  if (got) {
    metrics::add(m_caught_up_, int64_t(got));
    logf(LogLevel::Notice, "cluster: node %s delivered %zu broadcast(s) on %s that came while its subscriber was away",
         uid_.c_str(), got, nsp.c_str());
  }
  if (more)
    logf(LogLevel::Warn,
         "cluster: node %s missed more than %zu broadcasts on %s; the rest are left to connection state recovery "
         "and history",
         uid_.c_str(), CatchUp::kMaxEntries, nsp.c_str());
}

// An offset ("<ms>.<uid><seq>") published by another process: not ours, not a
// sibling's (the relay brought those).
bool RedisAdapter::foreign(std::string_view offset) const {
  size_t dot = offset.find('.');
  if (dot == std::string_view::npos) return false;
  std::string_view who = offset.substr(dot + 1);
  return !starts_with(who, uid_) && (siblings_.empty() || !starts_with(who, siblings_));
}

void RedisAdapter::flush() {
  write_sessions();
  link_.flush();
  if (link_.dropped() != dropped_reported_) {
    metrics::add(m_dropped_, int64_t(link_.dropped() - dropped_reported_));
    dropped_reported_ = link_.dropped();
  }
}

void RedisAdapter::want_service() {
  if (service_timer_.armed()) return;
  bool busy = !unconfirmed_.empty();
  for (auto& n : nsps_) busy = busy || n.catch_up.busy();
  if (busy) service_timer_.arm_in(kServiceMs);
}

void RedisAdapter::service() {
  int64_t now = now_ms();  // catch-ups compare offsets: the wall clock
  for (auto& n : nsps_) {
    n.catch_up.tick(now);
    catch_up(n);
  }
  if (!unconfirmed_.empty()) republish();
  want_service();
}

RedisAdapter::Nsp* RedisAdapter::find(std::string_view nsp) {
  for (auto& n : nsps_)
    if (n.name == nsp) return &n;
  return nullptr;
}

std::string RedisAdapter::presence_key(const std::string& nsp, const std::string& room) const {
  return members_prefix_ + "presence:" + nsp + "#" + room;
}

// The time from sending a PUBLISH to Redis' answer, as a Prometheus summary
// (sum and count): what a broadcast waits before other nodes can have it.
RedisLink::Reply RedisAdapter::timed_publish() {
  uint64_t start = uv_hrtime();
  return [this, start](redisReply* reply) {
    if (!reply) return;
    metrics::add(m_publish_us_sum_, int64_t((uv_hrtime() - start) / 1000));
    metrics::add(m_publish_count_);
  };
}

bool RedisAdapter::publish(const std::string& channel, std::string_view body) {
  return link_.command({sharded_ ? "SPUBLISH" : "PUBLISH", channel, body}, timed_publish());
}

void RedisAdapter::publish_json(const std::string& channel, const json_t* body) {
  publish(channel, json_text(body));
}

// ------------------------------------------------------------ broadcasts

void RedisAdapter::broadcast(const sio::EncodedBroadcast& b) {
  // This process's other workers: always through the master, never waiting
  // for their Redis subscriptions, and before our own deliveries (the pipe
  // write leaves now, so their share of the fan-out runs beside ours).
  if (!b.opts.local && relay_) relay_(b.serialize());
  server_.deliver(b);
  if (b.opts.local) return;
  // The other nodes: as soon as a PUBLISH can leave, our own subscriber
  // connection back or not.
  if (!link_.commands_up()) return;
  Nsp* n = find(b.opts.nsp);
  if (sharded_ && !n) return;
  std::string msg = sharded_ ? encode_sharded(b) : encode_broadcast(uid_, b);
  if (msg.empty()) return;
  std::string channel;
  if (sharded_) channel = sharded_channel(*n, b.opts);
  else {
    std::string other = n ? std::string() : bcast_channel(b.opts.nsp);
    std::string_view bcast = n ? std::string_view(n->bcast) : other;
    channel = b.opts.rooms.size() == 1 ? room_channel(bcast, b.opts.rooms[0]) : std::string(bcast);
  }
  metrics::add(m_published_);
  // (A namespace not served here has no stream of ours to record in.)
  if (b.offset.empty() || !recovers() || !n) {
    publish(channel, msg);
    return;
  }
  if (!unconfirmed_.empty()) republish();  // first, in their order
  send_recorded({n, std::move(channel), b.offset, b.serialize(), std::move(msg), now_ms()}, false);
}

void RedisAdapter::send_recorded(Recorded r, bool again) {
  std::string minid = std::to_string(std::max<int64_t>(0, now_ms() - int64_t(window())));
  uint64_t seq = ++recorded_seq_;
  Recorded& e = unanswered_.emplace_back(seq, std::move(r)).second;
  // Captures that fit in std::function's own room: no allocation per broadcast.
  auto answered = [this, seq](redisReply* reply) { recorded_answered(seq, reply); };
  bool sent;
  if (sharded_ && !again) {
    // A cluster: the stream and the channel are on different slots. Recorded
    // first, published at once after (catch-up and recovery dedupe by offset).
    sent = link_.command({"XADD", e.nsp->stream, "MINID", "~", minid, "*", "o", e.offset, "p", e.stored}, answered);
    if (sent) publish(e.channel, e.msg);
  } else if (!again) {
    // Recorded and published atomically: the stream's order is the order
    // subscribers see, which recovery and catch-up rely on. Timed as a PUBLISH.
    e.published_at = uv_hrtime();
    sent = link_.command({"EVAL", lua::kRecordScript, "1", e.nsp->stream, minid, e.offset, e.stored, e.channel, e.msg},
                         answered);
  } else {
    e.published_at = 0;  // a second try is not a publish to time
    std::string start = std::to_string(std::max<int64_t>(0, offset_ms(e.offset) - CatchUp::kClockMarginMs));
    if (sharded_)
      sent = link_.command(
          {"EVAL", lua::kRepublishScript, "1", e.nsp->stream, e.nsp->stream, "", e.offset, e.stored, e.msg, minid, start},
          [this, answered, channel = e.channel, msg = e.msg](redisReply* reply) {
            if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) publish(channel, msg);
            answered(reply);
          });
    else
      sent = link_.command(
          {"EVAL", lua::kRepublishScript, "1", e.nsp->stream, e.nsp->stream, e.channel, e.offset, e.stored, e.msg, minid, start},
          answered);
  }
  if (!sent) unanswered_.pop_back();  // dropped (and counted) by the link
}

// Answers (or their absence, when the connection is lost) come in order.
void RedisAdapter::recorded_answered(uint64_t seq, redisReply* reply) {
  while (!unanswered_.empty() && unanswered_.front().first < seq) unanswered_.pop_front();
  if (unanswered_.empty() || unanswered_.front().first != seq) return;
  Recorded& e = unanswered_.front().second;
  if (reply && e.published_at) {  // as timed_publish() times a PUBLISH
    metrics::add(m_publish_us_sum_, int64_t((uv_hrtime() - e.published_at) / 1000));
    metrics::add(m_publish_count_);
  }
  if (!reply) {
    unconfirmed_.push_back(std::move(unanswered_.front().second));
    want_service();
  }
  unanswered_.pop_front();
}

// What Redis had not answered when the commands connection was lost: it may
// never have run (Redis stopped, the bytes were not sent), so it is sent again
// (in the stream's order) unless the stream has it; older than the recovery
// window, it is given up.
void RedisAdapter::republish() {
  if (!link_.commands_up()) return;
  std::deque<Recorded> list = std::move(unconfirmed_);
  unconfirmed_.clear();
  int64_t oldest = now_ms() - int64_t(window());
  size_t again = 0;
  for (auto& r : list) {
    if (r.at < oldest) continue;
    send_recorded(std::move(r), true);
    again++;
  }
  if (again)
    logf(LogLevel::Notice, "cluster: node %s publishing again %zu broadcast(s) Redis had not answered when it went away",
         uid_.c_str(), again);
}

void RedisAdapter::on_remote(std::string_view bytes) {
  sio::EncodedBroadcast b;
  if (b.parse(bytes)) server_.deliver(b);
}

void RedisAdapter::on_message(std::string_view channel, std::string_view body) {
  if (sharded_) {
    for (auto& n : nsps_)
      if (starts_with(channel, n.bcast)) return on_sharded(n, channel, body);
    return;
  }
  if (starts_with(channel, request_prefix_)) {
    for (auto& n : nsps_)
      if (channel == n.request) return on_request(n, body);
    return;
  }
  if (starts_with(channel, response_prefix_)) return on_response(body);
  if (!starts_with(channel, bcast_prefix_)) return;
  for (auto& n : nsps_)
    if (starts_with(channel, n.bcast)) return on_broadcast(n, channel, body);
}

// [uid, ...] with the uid starting with our daemon's tag: a sibling worker's,
// which the relay delivered already.
bool RedisAdapter::from_sibling(std::string_view uid) const {
  return !siblings_.empty() && starts_with(uid, siblings_);
}

// Every broadcast of the namespace comes here (one pattern): what is not for
// us is dropped on the bytes, before anything is decoded or allocated.
void RedisAdapter::on_broadcast(Nsp& n, std::string_view channel, std::string_view body) {
  std::string_view uid = raw_uid(body);
  if (uid == uid_ || from_sibling(uid)) return;  // delivered already
  // A room's channel: nothing to do without a member here.
  std::string_view room = channel.substr(n.bcast.size());
  if (!room.empty()) {
    if (room.back() == '#') room.remove_suffix(1);
    room_scratch_.assign(room);  // has_room() takes a string: no allocation once grown
    if (!n.ns->has_room(room_scratch_)) return;
  }
  ReceivedBroadcast r;
  if (!decode_broadcast(body, uid_, n.name, r)) return;  // not for us, or our own (delivered already)
  deliver_remote(n, std::move(r.packet), r.is_volatile, std::move(r.rooms), std::move(r.except));
}

void RedisAdapter::deliver_remote(Nsp& n, sio::Packet p, bool is_volatile, std::vector<std::string> rooms,
                                  std::vector<std::string> except) {
  sio::EncodedBroadcast b;
  b.opts.is_volatile = is_volatile;
  // Our nodes append a recordable broadcast's offset last (catch-up dedupes by it).
  std::string offset;
  if (size_t args = json_array_size(p.data.get()); args >= 2 && !b.opts.is_volatile && recovers()) {
    json_t* last = json_array_get(p.data.get(), args - 1);
    if (json_is_string(last)) offset.assign(json_string_value(last), json_string_length(last));
    if (offset_ms(offset) < 0) offset.clear();
  }
  b.opts.nsp = n.name;
  b.opts.rooms = std::move(rooms);
  b.opts.except = std::move(except);
  b.header = sio::encode(p);
  b.attachments = std::move(p.attachments);
  const char* event = json_string_value(json_array_get(p.data.get(), 0));
  if (event && !p.id && b.attachments.empty() && !server_.config().core.server_batch_events.empty()) {
    Json args(json_array());
    for (size_t i = 1; i < json_array_size(p.data.get()); i++)
      json_array_append(args.get(), json_array_get(p.data.get(), i));
    b.batch_item = server_.batch_item_for(event, Payload(std::move(args)));
  }
  metrics::add(m_received_);
  n.catch_up.live(std::move(b), std::move(offset));
}

// --------------------------------------------------------- room observer

// Room channels are subscribed with sharded Pub/Sub only (it has no
// patterns); the classic adapter's pattern covers every room.
void RedisAdapter::joined(sio::SocketImpl& s, const std::string& room, bool first) {
  Nsp* n = find(s.nsp());
  if (!n) return;
  if (first && sharded_) link_.subscribe(room_channel(*n, room));
  presence_add(s, room);
  session_changed(s);
}

void RedisAdapter::left(sio::SocketImpl& s, const std::string& room, bool last) {
  Nsp* n = find(s.nsp());
  if (!n) return;
  if (last && sharded_) link_.unsubscribe(room_channel(*n, room));
  presence_remove(s, room);
  session_changed(s);  // not while disconnecting: disconnected() writes it whole
}

void RedisAdapter::connected(sio::SocketImpl& s) {
  Nsp* n = find(s.nsp());
  if (!n) return;
  if (sharded_) link_.subscribe(room_channel(*n, s.id()));
  if (!recovers() || s.pid().empty()) return;
  Tracked& t = tracked_[&s];
  t = {};
  if (claiming_ && *claiming_->nsp == s.nsp() && *claiming_->sid == s.id()) t.gen = claiming_->gen;
  mark_dirty(&s, t);
}

void RedisAdapter::disconnected(sio::SocketImpl& s, std::string_view reason) {
  if (Nsp* n = find(s.nsp()); n && sharded_) link_.unsubscribe(room_channel(*n, s.id()));
  // Its entries in dirty_sessions_ and refreshes_ stay, to be skipped.
  Tracked t;
  if (auto it = tracked_.find(&s); it != tracked_.end()) {
    t = it->second;
    tracked_.erase(it);
  }
  if (!recovers() || s.pid().empty() || !link_.ready()) return;
  if (recoverable(reason)) return write_session(s, t, true);  // waits for its client for the recovery window
  // Closed on purpose (by the client, a kick): nothing to resume. What is left
  // is a stub of the same generation, so that a node still holding a stale
  // connection of this session cannot bring the session back either.
  store_session(s.nsp(), s.pid(), t.gen, closed_session_record(t.gen), window());
}

}  // namespace dr::cluster
