#include "cluster/redis_adapter.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstring>

#include "cluster/adapter_wire.h"
#include "sio/msgpack_json.h"
#include "cluster/redis_api.h"
#include "core/uv_util.h"

namespace dr::cluster {
namespace {

using namespace wire;

constexpr char kAlphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";
constexpr int64_t kOffsetClockMarginMs = 10000;  // node clocks vs Redis' stream ids
constexpr size_t kMaxMissedPackets = 10000;       // more: a fresh connection instead
constexpr uint64_t kMissedBytesPerOutputBuffer = 4;  // and more than 4 × max_output_buffer of them
constexpr size_t kResyncChunk = 500;

// Heartbeat of this node, and purge of the nodes silent for the TTL (and of
// this node's own stale entries with 'reset'). Redis' clock decides.
// KEYS[1]: the nodes key (for a cluster's routing: every key it touches has
// the membership's hash tag). ARGV: membership prefix, uid, ttl ms, 'reset' |
// 'beat'. Returns {added, purged}.
const char kHeartbeatScript[] = R"(
local prefix, me, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nodes = prefix .. 'nodes'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function purge(node)
  local idx = prefix .. 'node:' .. node
  for _, m in ipairs(redis.call('SMEMBERS', idx)) do
    local cut = string.find(m, '\n', 1, true)
    if cut then redis.call('HDEL', string.sub(m, cut + 1), string.sub(m, 1, cut - 1)) end
  end
  redis.call('DEL', idx)
end
if ARGV[4] == 'reset' then purge(me) end
local added = redis.call('ZADD', nodes, now, me)
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', now - ttl)
for _, n in ipairs(dead) do
  if n ~= me then
    purge(n)
    redis.call('ZREM', nodes, n)
  end
end
return {added, #dead}
)";

// Connection state recovery lookup: the session, then the packets recorded
// after `offset`. KEYS[1]: the session key (for a cluster's routing; with a
// cluster the stream shares its slot). ARGV: session key, stream key, first
// stream id to scan, offset, max packets, max bytes. Returns nil (unknown session or offset, too many
// packets) or {session, packet...}; a found session is consumed.
const char kRecoverScript[] = R"(
local session = redis.call('GET', ARGV[1])
if not session then return nil end
local start, found, out, max = ARGV[3], false, {session}, tonumber(ARGV[5])
local bytes, max_bytes = 0, tonumber(ARGV[6])
while true do
  local batch = redis.call('XRANGE', ARGV[2], start, '+', 'COUNT', 512)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    local f = e[2]
    if found then
      out[#out + 1] = f[4]
      bytes = bytes + #f[4]
    elseif f[2] == ARGV[4] then
      found = true
    end
  end
  if #out > max + 1 or bytes > max_bytes then return nil end
  start = '(' .. batch[#batch][1]
end
if not found then return nil end
redis.call('DEL', ARGV[1])
return out
)";

// A session record written unless a later generation of it is stored (a
// recovery elsewhere took the session over: this writer is stale). KEYS[1]
// (for a cluster's routing) and ARGV[1]: the session key; then ARGV:
// generation, record, ttl ms. Returns 1 when written.
const char kStoreSessionScript[] = R"(
local cur = redis.call('GET', ARGV[1])
if cur then
  local ok, s = pcall(cjson.decode, cur)
  if ok and type(s) == 'table' and (tonumber(s.gen) or 0) > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', ARGV[1], ARGV[3], 'PX', ARGV[4])
return 1
)";

// What this node missed while its subscriber was away (see catch_up.h): the
// stream entries after the anchor or, when the anchor is not there (Redis
// restarted empty, or it was trimmed), from the cutoff on. ARGV: stream key,
// first stream id to scan for the anchor, anchor offset ('' = none), cutoff
// stream id, max entries. Returns {more, offset, payload, ...}.
const char kCatchUpScript[] = R"(
local key, start, anchor, from, max = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
while anchor ~= '' do
  local batch = redis.call('XRANGE', key, start, '+', 'COUNT', 512)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    if e[2][2] == anchor then
      from, anchor = '(' .. e[1], ''
      break
    end
  end
  start = '(' .. batch[#batch][1]
end
local out = {0}
for i, e in ipairs(redis.call('XRANGE', key, from, '+', 'COUNT', max + 1)) do
  if i > max then
    out[1] = 1
    break
  end
  out[#out + 1] = e[2][2]
  out[#out + 1] = e[2][4]
end
return out
)";

// A recordable broadcast whose MULTI ... EXEC got no answer: recorded and
// published unless the stream has its offset already (KEYS[1]: the stream,
// for a cluster's routing). ARGV: stream key, channel ('': the caller
// publishes: a cluster's channel and stream are on different slots),
// offset, stored entry, message, MINID, first stream id to scan. Returns 1
// when published, 0 when it was there.
const char kRepublishScript[] = R"(
local key, start = ARGV[1], ARGV[7]
while true do
  local batch = redis.call('XRANGE', key, start, '+', 'COUNT', 512)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    if e[2][2] == ARGV[3] then return 0 end
  end
  start = '(' .. batch[#batch][1]
end
redis.call('XADD', key, 'MINID', '~', ARGV[6], '*', 'o', ARGV[3], 'p', ARGV[4])
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[5]) end
return 1
)";

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

std::string yeast(uint64_t v) {
  std::string out;
  do {
    out.insert(out.begin(), kAlphabet[v % 64]);
    v /= 64;
  } while (v);
  return out;
}

int64_t unyeast(std::string_view s) {
  int64_t v = 0;
  for (char c : s) {
    const char* p = strchr(kAlphabet, c);
    if (!p || !c) return -1;
    v = v * 64 + (p - kAlphabet);
  }
  return v;
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
      refresh_timer_(server.timers(), [this] { refresh_sessions(); }) {
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
  RAND_bytes(b, sizeof b);
  std::string id(6, 'A');
  for (int i = 0; i < 6; i++) id[i] = kAlphabet[b[i] & 63];
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
          .catch_up = CatchUp([this](const sio::EncodedBroadcast& b) { server_.deliver(b); },
                              [this](std::string_view offset) { return foreign(offset); })};
    n.catch_up.set_unordered(sharded_);
    if (sharded_) {  // one channel for everything, one for the answers to this node
      n.request = n.response = n.bcast;
      n.specific = n.bcast + uid_ + "#";
    }
    for (auto* ch : {&n.bcast, &n.request, &n.response, &n.specific}) link_.subscribe(*ch);
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
// one EVAL per namespace with local sockets, once every SUBSCRIBE is confirmed.
void RedisAdapter::catch_up(Nsp& n) {
  if (!n.catch_up.due()) return;
  if (!recovers() || n.ns->socket_count() == 0) return n.catch_up.skip();  // nothing recorded, or nobody to tell
  if (!link_.commands_up()) return n.catch_up.wait(now_ms());              // again when it is back
  CatchUp::Read rd = n.catch_up.begin();
  std::string max = std::to_string(CatchUp::kMaxEntries);
  std::string key = stream_key(n.name);
  if (!link_.command({"EVAL", kCatchUpScript, "1", key, key, rd.start, rd.anchor, rd.cutoff, max},
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

// [uid, {type: 2, data, nsp}, {rooms, except, flags}] as the Node adapter writes it.
std::string RedisAdapter::encode(const sio::EncodedBroadcast& b) {
  Json data = broadcast_data(b);
  if (!data) return {};
  Packer pk;
  pk.array(3);
  pk.str(uid_);
  pk.map(3);
  pk.str("type");
  pk.integer(2);
  pk.str("data");
  pk.json(data.get(), b.attachments);
  pk.str("nsp");
  pk.str(b.opts.nsp);
  pk.map(3);
  pk.str("rooms");
  pk.str_array(b.opts.rooms);
  pk.str("except");
  pk.str_array(dedup(b.opts.except));
  pk.str("flags");
  pk.map(b.opts.is_volatile ? 1 : 0);
  if (b.opts.is_volatile) {
    pk.str("volatile");
    pk.boolean(true);
  }
  return std::move(pk.out());
}

void RedisAdapter::broadcast(const sio::EncodedBroadcast& b) {
  server_.deliver(b);
  if (b.opts.local) return;
  // This process's other workers: always through the master, never waiting
  // for their Redis subscriptions.
  if (relay_) relay_(b.serialize());
  // The other nodes: as soon as a PUBLISH can leave, our own subscriber
  // connection back or not.
  if (!link_.commands_up()) return;
  Nsp* n = sharded_ ? find(b.opts.nsp) : nullptr;
  if (sharded_ && !n) return;
  std::string msg = sharded_ ? encode_sharded(b) : encode(b);
  if (msg.empty()) return;
  std::string channel = bcast_channel(b.opts.nsp);
  if (sharded_) channel = sharded_channel(*n, b.opts);
  else if (b.opts.rooms.size() == 1) channel += b.opts.rooms[0] + "#";
  metrics::add(m_published_);
  if (b.offset.empty() || !recovers()) {
    publish(channel, msg);
    return;
  }
  if (!unconfirmed_.empty()) republish();  // first, in their order
  send_recorded({stream_key(b.opts.nsp), std::move(channel), b.offset, b.serialize(), std::move(msg), now_ms()}, false);
}

void RedisAdapter::send_recorded(Recorded r, bool again) {
  std::string minid = std::to_string(std::max<int64_t>(0, now_ms() - int64_t(window())));
  uint64_t seq = ++recorded_seq_;
  const Recorded& e = unanswered_.emplace_back(seq, std::move(r)).second;
  // Answers (or their absence, when the connection is lost) come in order.
  auto answered = [this, seq](redisReply* reply) {
    while (!unanswered_.empty() && unanswered_.front().first < seq) unanswered_.pop_front();
    if (unanswered_.empty() || unanswered_.front().first != seq) return;
    if (!reply) {
      unconfirmed_.push_back(std::move(unanswered_.front().second));
      want_service();
    }
    unanswered_.pop_front();
  };
  bool sent;
  if (sharded_ && !again) {
    // A cluster: the stream and the channel are on different slots. Recorded
    // first, published at once after (catch-up and recovery dedupe by offset).
    sent = link_.command({"XADD", e.key, "MINID", "~", minid, "*", "o", e.offset, "p", e.stored}, answered);
    if (sent) publish(e.channel, e.msg);
  } else if (!again) {
    // Recorded and published atomically: the stream's order is the order
    // subscribers see, which recovery and catch-up rely on.
    sent = link_.commands({{"MULTI"},
                           {"XADD", e.key, "MINID", "~", minid, "*", "o", e.offset, "p", e.stored},
                           {"PUBLISH", e.channel, e.msg},
                           {"EXEC"}},
                          [timer = timed_publish(), answered](redisReply* reply) {
                            timer(reply);
                            answered(reply);
                          });
  } else {
    std::string start = std::to_string(std::max<int64_t>(0, offset_ms(e.offset) - CatchUp::kClockMarginMs));
    if (sharded_)
      sent = link_.command({"EVAL", kRepublishScript, "1", e.key, e.key, "", e.offset, e.stored, e.msg, minid, start},
                           [this, answered, channel = e.channel, msg = e.msg](redisReply* reply) {
                             if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1)
                               publish(channel, msg);
                             answered(reply);
                           });
    else
      sent = link_.command({"EVAL", kRepublishScript, "1", e.key, e.key, e.channel, e.offset, e.stored, e.msg, minid,
                            start},
                           answered);
  }
  if (!sent) unanswered_.pop_back();  // dropped (and counted) by the link
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

// [uid, ...] with the uid a fixstr starting with our daemon's tag: a sibling
// worker's, which the relay delivered already. (Checked on the bytes: this is
// every sibling broadcast, and it needs no decoding.)
bool RedisAdapter::from_sibling(std::string_view body) const {
  if (siblings_.empty() || body.size() < 2 + siblings_.size()) return false;
  auto at = [&](size_t i) { return uint8_t(body[i]); };
  if (at(0) != 0x93 || (at(1) & 0xe0) != 0xa0 || (at(1) & 0x1f) < siblings_.size()) return false;
  return body.substr(2, siblings_.size()) == siblings_;
}

void RedisAdapter::on_broadcast(Nsp& n, std::string_view channel, std::string_view body) {
  if (from_sibling(body)) return;
  // A room channel whose last local member just left: nothing to do.
  std::string_view room = channel.substr(n.bcast.size());
  if (!room.empty()) {
    if (room.back() == '#') room.remove_suffix(1);
    if (!n.ns->has_room(std::string(room))) return;
  }
  Unpacked u;
  if (!u.parse(body)) return;
  const msgpack_object& root = u.root();
  if (root.type != MSGPACK_OBJECT_ARRAY || root.via.array.size < 3) return;
  const msgpack_object* el = root.via.array.ptr;
  if (as_str(&el[0]) == std::string_view(uid_)) return;  // our own: delivered already
  const msgpack_object& packet = el[1];
  const msgpack_object& opts = el[2];
  auto nsp = as_str(map_get(packet, "nsp"));
  if ((nsp ? *nsp : std::string_view("/")) != n.name) return;
  const msgpack_object* data = map_get(packet, "data");
  if (!data || data->type != MSGPACK_OBJECT_ARRAY || data->via.array.size == 0) return;

  sio::Packet p;
  p.type = sio::PacketType::Event;
  p.nsp = n.name;
  if (auto id = as_int(map_get(packet, "id")); id && *id >= 0) p.id = uint64_t(*id);
  p.data = to_json(*data, p.attachments);
  const msgpack_object* flags = map_get(opts, "flags");
  deliver_remote(n, std::move(p), flags && as_true(map_get(*flags, "volatile")), as_rooms(map_get(opts, "rooms")),
                 as_rooms(map_get(opts, "except")));
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

// -------------------------------------------------------------- requests

void RedisAdapter::respond(const Nsp& n, const json_t* request, Json response) {
  // To the requester's own channel: the other nodes need not read it.
  const char* uid = json_str(request, "uid");
  publish_json(uid ? n.response + uid + "#" : n.response, response.get());
}

void RedisAdapter::on_request(Nsp& n, std::string_view body) {
  std::vector<std::string> attachments;
  Json req = decode_body(body, attachments);
  if (!json_is_object(req.get())) return;
  const char* uid = json_str(req.get(), "uid");
  if (uid && uid_ == uid) return;  // ours: applied locally already
  json_t* rid = json_object_get(req.get(), "requestId");
  const json_t* opts = json_object_get(req.get(), "opts");
  BroadcastOptions o;
  o.nsp = n.name;
  o.rooms = str_list(json_object_get(opts, "rooms"));
  o.except = str_list(json_object_get(opts, "except"));
  auto answer = [&](const char* key, Json value) {
    Json res(json_object());
    json_object_set(res.get(), "requestId", rid);
    if (key) json_object_set_new(res.get(), key, value.release());
    respond(n, req.get(), std::move(res));
  };

  switch (json_integer_value(json_object_get(req.get(), "type"))) {
    case kSockets: {
      BroadcastOptions sel;
      sel.nsp = n.name;
      sel.rooms = str_list(json_object_get(req.get(), "rooms"));
      std::vector<std::string> ids;
      for (auto* s : local_.select(sel)) ids.push_back(s->id());
      answer("sockets", json_strings(ids));
      return;
    }
    case kAllRooms:
      answer("rooms", json_strings(local_.room_names(n.name)));
      return;
    case kRemoteJoin:
    case kRemoteLeave:
    case kRemoteDisconnect: {
      int type = int(json_integer_value(json_object_get(req.get(), "type")));
      if (!opts) {
        // Legacy single-socket form: only the node that has the socket acts and answers.
        const char* sid = json_str(req.get(), "sid");
        sio::SocketImpl* s = sid ? n.ns->socket(sid) : nullptr;
        if (!s) return;
        const char* room = json_str(req.get(), "room");
        if (type == kRemoteJoin && room) s->join(room);
        else if (type == kRemoteLeave && room) s->leave(room);
        answer(nullptr, nullptr);
        if (type == kRemoteDisconnect) s->disconnect(json_is_true(json_object_get(req.get(), "close")));
        return;
      }
      if (type == kRemoteDisconnect) local_.disconnect_sockets(o, json_is_true(json_object_get(req.get(), "close")));
      else if (type == kRemoteJoin) local_.sockets_join(o, str_list(json_object_get(req.get(), "rooms")));
      else local_.sockets_leave(o, str_list(json_object_get(req.get(), "rooms")));
      return;
    }
    case kRemoteFetch: {
      Json list(json_array());
      for (auto& r : local_.fetch_local(o)) json_array_append_new(list.get(), describe_json(r).release());
      answer("sockets", std::move(list));
      return;
    }
    case kServerSideEmit: {
      json_t* data = json_object_get(req.get(), "data");
      if (!json_is_array(data)) return;
      ServerAck ack;
      if (json_is_string(rid)) {
        // Acks of server-side events always go to the common channel (as Node does).
        ack = [this, channel = n.response, id = std::string(json_string_value(rid))](Json reply) {
          Json res(json_object());
          json_object_set_new(res.get(), "type", json_integer(kServerSideEmit));
          json_object_set_new(res.get(), "requestId", json_string(id.c_str()));
          json_object_set_new(res.get(), "data", reply ? reply.release() : json_null());
          publish_json(channel, res.get());
        };
      }
      local_.dispatch_server_event(n.name, json_share(data), std::move(attachments), std::move(ack));
      return;
    }
    case kBroadcast: {
      const json_t* packet = json_object_get(req.get(), "packet");
      const json_t* data = json_object_get(packet, "data");
      if (!json_is_array(data) || !json_is_string(rid)) return;
      const json_t* timeout = json_object_get(json_object_get(opts, "flags"), "timeout");
      uint64_t ms = json_is_integer(timeout) && json_integer_value(timeout) > 0 ? uint64_t(json_integer_value(timeout))
                                                                                 : conf_.requests_timeout;
      std::string request_id = json_string_value(rid);
      std::string requester = uid ? uid : "";
      std::string channel = requester.empty() ? n.response : n.response + requester + "#";
      size_t count = local_.deliver_with_ack(o, data, attachments, ms, [this, channel, request_id](Payload reply) {
        // {type: 9, requestId, packet: <the client's first ack argument>}, msgpack
        Packer pk;
        pk.map(3);
        pk.str("type");
        pk.integer(kBroadcastAck);
        pk.str("requestId");
        pk.str(request_id);
        pk.str("packet");
        json_t* first = json_array_get(reply.args.get(), 0);
        if (first) pk.json(first, reply.attachments);
        else pk.nil();
        publish(channel, pk.out());
      });
      Json res(json_object());
      json_object_set_new(res.get(), "type", json_integer(kBroadcastClientCount));
      json_object_set(res.get(), "requestId", rid);
      json_object_set_new(res.get(), "clientCount", json_integer(json_int_t(count)));
      publish_json(channel, res.get());
      return;
    }
    default:
      return;  // unknown types are ignored
  }
}

void RedisAdapter::on_response(std::string_view body) {
  std::vector<std::string> attachments;
  Json res = decode_body(body, attachments);
  const char* rid = json_str(res.get(), "requestId");
  if (!rid) return;
  auto it = pending_.find(rid);
  if (it == pending_.end()) return;  // someone else's, or too late
  Pending& p = *it->second;
  json_int_t type = json_integer_value(json_object_get(res.get(), "type"));
  switch (p.type) {
    case kRemoteFetch:
    case kSockets: {
      size_t i;
      json_t* s;
      json_array_foreach(json_object_get(res.get(), "sockets"), i, s) p.sockets.push_back(remote_socket(s));
      p.got++;
      break;
    }
    case kAllRooms:
      for (auto& r : str_list(json_object_get(res.get(), "rooms"))) p.rooms.insert(r);
      p.got++;
      break;
    case kServerSideEmit: {
      json_t* data = json_object_get(res.get(), "data");
      p.replies.push_back(Json(data ? json_incref(data) : json_null()));
      p.got++;
      break;
    }
    case kBroadcast:
      if (type == kBroadcastClientCount) {
        p.clients += size_t(std::max<json_int_t>(0, json_integer_value(json_object_get(res.get(), "clientCount"))));
        p.got++;
      } else if (type == kBroadcastAck) {
        const json_t* packet = json_object_get(res.get(), "packet");
        p.acks.push_back(payload_of(packet ? packet : json_null(), attachments));
      }
      break;
    default:
      return;
  }
  check(rid);
}

RedisAdapter::Pending* RedisAdapter::add_pending(const std::string& id, std::unique_ptr<Pending> p) {
  p->timeout = std::make_unique<CallbackTimer>(server_.timers(), [this, id] { finish(id, "timeout"); });
  p->timeout->arm_in(std::max<int64_t>(0, p->deadline - now_ms()));
  return pending_.emplace(id, std::move(p)).first->second.get();
}

void RedisAdapter::check(const std::string& id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Pending& p = *it->second;
  if (p.expected == SIZE_MAX || p.got < p.expected) return;
  if (p.type == kBroadcast && p.acks.size() < p.clients) return;
  finish(id, {});
}

void RedisAdapter::finish(const std::string& id, std::string error) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  std::unique_ptr<Pending> p = std::move(it->second);
  pending_.erase(it);
  try {
    p->done(*p, std::move(error));
  } catch (const std::exception& e) {
    logf(LogLevel::Error, "cluster request callback: %s", e.what());
  }
}

void RedisAdapter::numsub(const std::string& channel, std::function<void(size_t)> cb) {
  // A cluster: the subscribers of the channel's shard (its master; the Node
  // adapter sums every master's count, the same with no replicas subscribed).
  bool sent = link_.command({"PUBSUB", sharded_ ? "SHARDNUMSUB" : "NUMSUB", channel}, [cb](redisReply* r) {
    size_t n = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->element[1]->type == REDIS_REPLY_INTEGER)
      n = size_t(std::max<long long>(0, r->element[1]->integer));
    cb(n);
  });
  if (!sent) server_.timers().post([cb] { cb(0); });
}

void RedisAdapter::fetch_sockets(const BroadcastOptions& opts, FetchCallback cb) {
  Nsp* n = find(opts.nsp);
  if (!n || opts.local || !ready()) return local_.fetch_sockets(opts, std::move(cb));
  numsub(n->request, [this, opts, cb = std::move(cb), request = n->request](size_t count) {
    auto p = std::make_unique<Pending>();
    p->type = kRemoteFetch;
    p->sockets = local_.fetch_local(opts);
    p->got = 1;  // ourselves
    p->expected = std::max<size_t>(count, 1);
    p->deadline = now_ms() + int64_t(conf_.requests_timeout);
    p->done = [cb](Pending& p, std::string error) {
      cb(error.empty() ? error : "timeout reached while waiting for fetchSockets response", std::move(p.sockets));
    };
    std::string id = new_id();
    add_pending(id, std::move(p));
    if (count > 1 && sharded_) {
      Json fields(json_object());
      json_object_set_new(fields.get(), "opts", opts_json(opts).release());
      if (Nsp* n = find(opts.nsp)) request_sharded(*n, kRemoteFetch, &id, std::move(fields));
    } else if (count > 1) {
      Json req(json_object());
      json_object_set_new(req.get(), "uid", json_string(uid_.c_str()));
      json_object_set_new(req.get(), "requestId", json_string(id.c_str()));
      json_object_set_new(req.get(), "type", json_integer(kRemoteFetch));
      json_object_set_new(req.get(), "opts", opts_json(opts).release());
      publish_json(request, req.get());
    }
    check(id);
  });
}

void RedisAdapter::all_rooms(const std::string& nsp, std::function<void(std::string, std::vector<std::string>)> cb) {
  Nsp* n = find(nsp);
  // The sharded adapter's protocol has no allRooms request: this node's rooms.
  if (!n || !ready() || sharded_) return local_.all_rooms(nsp, std::move(cb));
  numsub(n->request, [this, nsp, cb = std::move(cb), request = n->request](size_t count) {
    auto p = std::make_unique<Pending>();
    p->type = kAllRooms;
    for (auto& r : local_.room_names(nsp)) p->rooms.insert(r);
    p->got = 1;
    p->expected = std::max<size_t>(count, 1);
    p->deadline = now_ms() + int64_t(conf_.requests_timeout);
    p->done = [cb](Pending& p, std::string error) {
      cb(error.empty() ? error : "timeout reached while waiting for allRooms response",
         std::vector<std::string>(p.rooms.begin(), p.rooms.end()));
    };
    std::string id = new_id();
    add_pending(id, std::move(p));
    if (count > 1) {
      Json req(json_object());
      json_object_set_new(req.get(), "uid", json_string(uid_.c_str()));
      json_object_set_new(req.get(), "requestId", json_string(id.c_str()));
      json_object_set_new(req.get(), "type", json_integer(kAllRooms));
      publish_json(request, req.get());
    }
    check(id);
  });
}

void RedisAdapter::server_count(const std::string& nsp, std::function<void(size_t)> cb) {
  Nsp* n = find(nsp);
  if (!n || !ready()) return local_.server_count(nsp, std::move(cb));
  numsub(n->request, [cb = std::move(cb)](size_t count) { cb(std::max<size_t>(count, 1)); });
}

// socketsJoin / socketsLeave / disconnectSockets: applied here at once, then
// published for the other nodes (which ignore our uid when it comes back).
void RedisAdapter::remote_op(const BroadcastOptions& opts, int type, const char* key, Json value) {
  Nsp* n = find(opts.nsp);
  if (!n || opts.local || !ready()) return;
  if (sharded_) {
    Json fields(json_object());
    json_object_set_new(fields.get(), "opts", opts_json(opts).release());
    json_object_set_new(fields.get(), key, value.release());
    return request_sharded(*n, type, nullptr, std::move(fields));
  }
  Json req(json_object());
  json_object_set_new(req.get(), "uid", json_string(uid_.c_str()));
  json_object_set_new(req.get(), "type", json_integer(type));
  json_object_set_new(req.get(), "opts", opts_json(opts).release());
  json_object_set_new(req.get(), key, value.release());
  publish_json(n->request, req.get());
}

void RedisAdapter::sockets_join(const BroadcastOptions& opts, const std::vector<std::string>& rooms) {
  local_.sockets_join(opts, rooms);
  remote_op(opts, kRemoteJoin, "rooms", json_strings(rooms));
}

void RedisAdapter::sockets_leave(const BroadcastOptions& opts, const std::vector<std::string>& rooms) {
  local_.sockets_leave(opts, rooms);
  remote_op(opts, kRemoteLeave, "rooms", json_strings(rooms));
}

void RedisAdapter::disconnect_sockets(const BroadcastOptions& opts, bool close) {
  local_.disconnect_sockets(opts, close);
  remote_op(opts, kRemoteDisconnect, "close", Json(json_boolean(close)));
}

void RedisAdapter::on_server_event(const std::string& nsp, const std::string& event, ServerEventHandler h) {
  local_.on_server_event(nsp, event, std::move(h));
}

namespace {
// {"uid","requestId"?,"type":6,"data":[event, ...args]}
Json server_event_request(const std::string& uid, const std::string* id, const std::string& event, const Payload& args) {
  Json req(json_object());
  json_object_set_new(req.get(), "uid", json_string(uid.c_str()));
  if (id) json_object_set_new(req.get(), "requestId", json_string(id->c_str()));
  json_object_set_new(req.get(), "type", json_integer(kServerSideEmit));
  Json data(json_array());
  json_array_append_new(data.get(), json_stringn(event.data(), event.size()));
  json_array_extend(data.get(), args.args.get());
  json_object_set_new(req.get(), "data", data.release());
  return req;
}
}  // namespace

void RedisAdapter::server_side_emit(const std::string& nsp, const std::string& event, Payload args) {
  Nsp* n = find(nsp);
  if (!n || !ready()) return;
  Json req = server_event_request(uid_, nullptr, event, args);
  if (sharded_) return request_sharded(*n, kServerSideEmit, nullptr, std::move(req), args.attachments);
  publish_json(n->request, req.get());
}

void RedisAdapter::server_side_emit_with_ack(const std::string& nsp, const std::string& event, Payload args,
                                             uint64_t timeout_ms, ServerAcks cb) {
  Nsp* n = find(nsp);
  if (!n || !ready()) return local_.server_side_emit_with_ack(nsp, event, std::move(args), timeout_ms, std::move(cb));
  auto shared_args = std::make_shared<Payload>(std::move(args));
  numsub(n->request, [this, event, shared_args, timeout_ms, cb = std::move(cb), request = n->request,
                      request_nsp = n->name](size_t count) {
    size_t expected = count > 0 ? count - 1 : 0;  // the other nodes
    auto p = std::make_unique<Pending>();
    p->type = kServerSideEmit;
    p->expected = expected;
    p->deadline = now_ms() + int64_t(timeout_ms ? timeout_ms : conf_.requests_timeout);
    p->done = [cb, expected](Pending& p, std::string error) {
      if (!error.empty())
        error = "timeout reached: only " + std::to_string(p.replies.size()) + " responses received out of " +
                std::to_string(expected);
      cb(std::move(error), std::move(p.replies));
    };
    std::string id = new_id();
    add_pending(id, std::move(p));
    if (expected > 0 && sharded_) {
      if (Nsp* n = find(request_nsp))
        request_sharded(*n, kServerSideEmit, &id, server_event_request(uid_, &id, event, *shared_args),
                        shared_args->attachments);
    } else if (expected > 0) {
      publish_json(request, server_event_request(uid_, &id, event, *shared_args).get());
    }
    check(id);
  });
}

void RedisAdapter::broadcast_with_ack(const BroadcastOptions& opts, const std::string& event, Payload args,
                                      uint64_t timeout_ms, BroadcastAcks cb) {
  if (!timeout_ms) timeout_ms = conf_.requests_timeout;
  Json data(json_array());
  json_array_append_new(data.get(), json_stringn(event.data(), event.size()));
  json_array_extend(data.get(), args.args.get());
  std::string id = new_id();
  auto p = std::make_unique<Pending>();
  p->type = kBroadcast;
  p->got = 1;  // our own delivery is one server report
  p->deadline = now_ms() + int64_t(timeout_ms);
  p->done = [cb](Pending& p, std::string error) { cb(!error.empty(), std::move(p.acks)); };
  Pending* pp = add_pending(id, std::move(p));
  pp->clients = local_.deliver_with_ack(opts, data.get(), args.attachments, timeout_ms, [this, id](Payload reply) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    it->second->acks.push_back(std::move(reply));
    check(id);
  });
  Nsp* n = find(opts.nsp);
  if (!n || opts.local || !ready()) {
    pp->expected = 1;
    server_.timers().post([this, id] { check(id); });  // never inside the call
    return;
  }
  if (sharded_) return broadcast_with_ack_sharded(*n, opts, id, data.get(), args.attachments, timeout_ms);
  // {uid, requestId, type: 7, packet: {type: 2, data, nsp}, opts: {rooms, except, flags: {timeout}}}, msgpack
  Packer pk;
  pk.map(5);
  pk.str("uid");
  pk.str(uid_);
  pk.str("requestId");
  pk.str(id);
  pk.str("type");
  pk.integer(kBroadcast);
  pk.str("packet");
  pk.map(3);
  pk.str("type");
  pk.integer(2);
  pk.str("data");
  pk.json(data.get(), args.attachments);
  pk.str("nsp");
  pk.str(opts.nsp);
  pk.str("opts");
  pk.map(3);
  pk.str("rooms");
  pk.str_array(opts.rooms);
  pk.str("except");
  pk.str_array(dedup(opts.except));
  pk.str("flags");
  pk.map(1);
  pk.str("timeout");
  pk.integer(int64_t(timeout_ms));
  publish(n->request, pk.out());
  numsub(n->request, [this, id](size_t count) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    it->second->expected = std::max<size_t>(count, 1);
    check(id);
  });
}

// ---------------------------------------------------- shared membership

void RedisAdapter::heartbeat(bool reset) {
  heartbeat_timer_.arm_in(int64_t(std::max<uint64_t>(conf_.node_ttl / 3, 100)));
  std::string ttl = std::to_string(conf_.node_ttl);
  link_.command({"EVAL", kHeartbeatScript, "1", nodes_key(), members_prefix_, uid_, ttl, reset ? "reset" : "beat"},
                [this, reset](redisReply* r) {
                  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2) return;
                  long long added = r->element[0]->integer, purged = r->element[1]->integer;
                  if (purged > 0)
                    logf(LogLevel::Notice, "cluster: removed the membership of %lld node(s) silent for %llums", purged,
                         (unsigned long long)conf_.node_ttl);
                  // Purged by the others (we were cut off too long): write it all again.
                  if (added && !reset && synced_) {
                    logf(LogLevel::Warn, "cluster: node %s had been declared dead; restoring its membership",
                         uid_.c_str());
                    resync();
                  }
                });
}

// Writes this node's whole membership again (after a reconnect: Redis may
// have restarted, or the others may have purged us).
void RedisAdapter::resync() {
  heartbeat(true);  // drops our stale entries first (same connection: in order)
  std::string idx = node_key(uid_);
  std::vector<std::string> index;
  for (auto& n : nsps_) {
    std::vector<std::string> names = n.ns->room_names();
    for (auto& room : names) {
      if (n.ns->socket(room)) continue;  // a socket's own room: not shared
      std::string key = presence_key(n.name, room);
      std::vector<std::string> args{"HSET", key};
      for (auto* s : n.ns->members(room)) {
        const std::string* user = s->get("userId");
        args.push_back(s->id());
        args.push_back(uid_ + "\t" + (user ? *user : ""));
        index.push_back(s->id() + "\n" + key);
        if (args.size() >= 2 + 2 * kResyncChunk) {
          link_.command(std::vector<std::string_view>(args.begin(), args.end()));
          args.resize(2);
        }
      }
      if (args.size() > 2) link_.command(std::vector<std::string_view>(args.begin(), args.end()));
    }
  }
  for (size_t i = 0; i < index.size(); i += kResyncChunk) {
    std::vector<std::string_view> args{"SADD", idx};
    for (size_t j = i; j < std::min(index.size(), i + kResyncChunk); j++) args.push_back(index[j]);
    link_.command(args);
  }
  synced_ = true;
}

void RedisAdapter::presence_add(sio::SocketImpl& s, const std::string& room) {
  if (!link_.ready()) return;  // written again when the link is back
  const std::string* user = s.get("userId");
  std::string key = presence_key(s.nsp(), room);
  link_.command({"HSET", key, s.id(), uid_ + "\t" + (user ? *user : "")});
  link_.command({"SADD", node_key(uid_), s.id() + "\n" + key});
}

void RedisAdapter::presence_remove(sio::SocketImpl& s, const std::string& room) {
  if (!link_.ready()) return;
  std::string key = presence_key(s.nsp(), room);
  link_.command({"HDEL", key, s.id()});
  link_.command({"SREM", node_key(uid_), s.id() + "\n" + key});
}

void RedisAdapter::joined(sio::SocketImpl& s, const std::string& room, bool first) {
  Nsp* n = find(s.nsp());
  if (!n) return;
  if (first) link_.subscribe(room_channel(*n, room));
  presence_add(s, room);
  session_changed(s);
}

void RedisAdapter::left(sio::SocketImpl& s, const std::string& room, bool last) {
  Nsp* n = find(s.nsp());
  if (!n) return;
  if (last) link_.unsubscribe(room_channel(*n, room));
  presence_remove(s, room);
  session_changed(s);  // not while disconnecting: disconnected() writes it whole
}

void RedisAdapter::connected(sio::SocketImpl& s) {
  Nsp* n = find(s.nsp());
  if (!n) return;
  link_.subscribe(room_channel(*n, s.id()));
  if (!recovers() || s.pid().empty()) return;
  std::string id = session_id(s.nsp(), s.id());
  Tracked& t = tracked_[id];
  t.gen = claiming_ && *claiming_ == id ? claimed_gen_ : 0;
  dirty_sessions_.insert(std::move(id));
}

void RedisAdapter::disconnected(sio::SocketImpl& s, std::string_view reason) {
  if (Nsp* n = find(s.nsp())) link_.unsubscribe(room_channel(*n, s.id()));
  std::string id = session_id(s.nsp(), s.id());
  dirty_sessions_.erase(id);
  Tracked t;
  if (auto it = tracked_.find(id); it != tracked_.end()) {
    t = it->second;
    tracked_.erase(it);
  }
  if (!recovers() || s.pid().empty() || !link_.ready()) return;
  if (recoverable(reason)) return write_session(s, t, true);  // waits for its client for the recovery window
  // Closed on purpose (by the client, a kick): nothing to resume. What is left
  // is a stub of the same generation, so that a node still holding a stale
  // connection of this session cannot bring the session back either.
  Json stub(json_object());
  json_object_set_new(stub.get(), "gen", json_integer(json_int_t(t.gen)));
  json_object_set_new(stub.get(), "closed", json_true());
  store_session(s.nsp(), s.pid(), t.gen, json_text(stub.get()), window());
}

void RedisAdapter::room_members(const std::string& nsp, const std::string& room, PresenceCallback cb) {
  if (!ready()) {
    auto members = local_.members_local(nsp, room, uid_);
    server_.timers().post([cb = std::move(cb), members]() mutable {
      cb("redis is not connected: this worker's members only", std::move(members));
    });
    return;
  }
  bool sent = link_.command({"HGETALL", presence_key(nsp, room)}, [cb](redisReply* r) {
    std::vector<Member> out;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
      cb("redis did not answer", std::move(out));
      return;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
      std::string_view v(r->element[i + 1]->str, r->element[i + 1]->len);
      size_t tab = v.find('\t');
      Member m;
      m.socket_id.assign(r->element[i]->str, r->element[i]->len);
      m.node = std::string(v.substr(0, tab));
      if (tab != std::string_view::npos) m.user_id = std::string(v.substr(tab + 1));
      out.push_back(std::move(m));
    }
    cb({}, std::move(out));
  });
  if (!sent) {
    auto members = local_.members_local(nsp, room, uid_);
    server_.timers().post([cb, members]() mutable { cb("redis is too slow: this worker's members only", members); });
  }
}

// ------------------------------------------- connection state recovery

uint64_t RedisAdapter::window() const { return server_.config().core.recovery_window; }

bool RedisAdapter::recovers() const { return window() > 0; }

// Socket.IO's offsets ("yeast": the time in ms in base 64), made unique in
// the cluster by this node's uid and a counter.
std::string RedisAdapter::next_offset() {
  if (!recovers()) return {};
  int64_t ms = now_ms();
  if (ms != offset_ms_) {
    offset_ms_ = ms;
    offset_seq_ = 0;
  }
  return yeast(uint64_t(ms)) + "." + uid_ + yeast(offset_seq_++);
}

void RedisAdapter::record(const sio::EncodedBroadcast& b) {
  if (b.offset.empty() || !recovers() || !link_.ready()) return;
  std::string minid = std::to_string(std::max<int64_t>(0, now_ms() - int64_t(window())));
  link_.command({"XADD", stream_key(b.opts.nsp), "MINID", "~", minid, "*", "o", b.offset, "p", b.serialize()});
}

void RedisAdapter::recovery_done(bool recovered) { metrics::add(recovered ? m_recovered_ : m_not_recovered_); }

// A live session is refreshed at this interval and lives recovery_window
// past it: a client of a worker killed at any moment has at least the window.
uint64_t RedisAdapter::refresh_interval() const { return std::max<uint64_t>(window() / 2, 1000); }

std::string RedisAdapter::session_id(std::string_view nsp, std::string_view sid) {
  std::string id(nsp);
  id += '\n';
  id += sid;
  return id;
}

void RedisAdapter::session_changed(sio::SocketImpl& s) {
  if (!s.connected()) return;  // connecting: connected() writes it; disconnecting: disconnected()
  std::string id = session_id(s.nsp(), s.id());
  if (tracked_.count(id)) dirty_sessions_.insert(std::move(id));
}

// The sessions that changed this loop turn: one write each, however many
// rooms they joined or left.
void RedisAdapter::write_sessions() {
  if (dirty_sessions_.empty()) return;
  std::set<std::string> todo;
  todo.swap(dirty_sessions_);
  for (auto& id : todo) {
    auto it = tracked_.find(id);
    if (it == tracked_.end()) continue;
    size_t cut = id.find('\n');
    Nsp* n = find(std::string_view(id).substr(0, cut));
    sio::SocketImpl* s = n ? n->ns->socket(std::string_view(id).substr(cut + 1)) : nullptr;
    if (s && s->connected()) write_session(*s, it->second, false);
  }
}

// Refreshes, spread as the writes were: each session refresh_interval() after
// its last write. Entries superseded by a later write are skipped.
void RedisAdapter::refresh_sessions() {
  int64_t now = now_ms();
  while (!refreshes_.empty() && refreshes_.front().first <= now) {
    std::string id = std::move(refreshes_.front().second);
    int64_t due = refreshes_.front().first;
    refreshes_.pop_front();
    auto it = tracked_.find(id);
    if (it == tracked_.end() || it->second.refresh_at != due) continue;
    dirty_sessions_.insert(std::move(id));
  }
  if (!refreshes_.empty()) refresh_timer_.arm_in(std::max<int64_t>(0, refreshes_.front().first - now));
}

// The link is back (Redis may have restarted empty): every session again.
void RedisAdapter::resync_sessions() {
  for (auto& [id, t] : tracked_) dirty_sessions_.insert(id);
}

void RedisAdapter::write_session(sio::SocketImpl& s, Tracked& t, bool parked) {
  if (!link_.commands_up()) return;  // all written again when the link is back
  Json session(json_object());
  json_object_set_new(session.get(), "nsp", json_string(s.nsp().c_str()));
  json_object_set_new(session.get(), "sid", json_string(s.id().c_str()));
  json_object_set_new(session.get(), "pid", json_string(s.pid().c_str()));
  json_object_set_new(session.get(), "gen", json_integer(json_int_t(t.gen)));
  json_object_set_new(session.get(), "rooms", json_strings(s.rooms()).release());
  Json data(json_object());
  for (auto& [k, v] : s.data()) json_object_set_new(data.get(), k.c_str(), json_stringn(v.data(), v.size()));
  json_object_set_new(session.get(), "data", data.release());
  json_object_set_new(session.get(), "connectKeys", json_strings(s.connect_keys()).release());
  int64_t now = now_ms();
  if (parked) {
    json_object_set_new(session.get(), "disconnectedAt", json_integer(json_int_t(now)));
    store_session(s.nsp(), s.pid(), t.gen, json_text(session.get()), window());
    return;
  }
  store_session(s.nsp(), s.pid(), t.gen, json_text(session.get()), window() + refresh_interval());
  t.refresh_at = now + int64_t(refresh_interval());
  refreshes_.emplace_back(t.refresh_at, session_id(s.nsp(), s.id()));
  if (!refresh_timer_.armed()) refresh_timer_.arm_in(int64_t(refresh_interval()));
}

void RedisAdapter::store_session(const std::string& nsp, const std::string& pid, uint64_t gen,
                                 const std::string& record, uint64_t ttl, RedisLink::Reply reply) {
  metrics::add(m_session_writes_);
  std::string key = session_key(nsp, pid);
  link_.command({"EVAL", kStoreSessionScript, "1", key, key, std::to_string(gen), record, std::to_string(ttl)},
                std::move(reply));
}

void RedisAdapter::save_sessions(std::function<void()> done) {
  dirty_sessions_.clear();
  if (!recovers() || !link_.commands_up()) return done();
  size_t saved = 0;
  for (auto& n : nsps_) {
    for (auto* s : n.ns->select({}, {})) {
      auto it = tracked_.find(session_id(n.name, s->id()));
      if (it == tracked_.end() || s->pid().empty()) continue;
      write_session(*s, it->second, true);
      saved++;
    }
  }
  logf(LogLevel::Notice, "cluster: node %s saved %zu session(s) for recovery", uid_.c_str(), saved);
  // Answers come in order: the PING's is the last.
  if (!link_.command({"PING"}, [done](redisReply*) { done(); })) done();
}

namespace {

// A stored session from its JSON; nullopt unless it is whole and of `nsp`.
std::optional<sio::StoredSession> parse_session(std::string_view text, const std::string& nsp) {
  Json j = json_parse(text);
  const char* n = json_str(j.get(), "nsp");
  const char* sid = json_str(j.get(), "sid");
  const char* pid = json_str(j.get(), "pid");
  if (!n || nsp != n || !sid || !pid) return std::nullopt;
  sio::StoredSession s;
  s.sid = sid;
  s.pid = pid;
  s.rooms = str_list(json_object_get(j.get(), "rooms"));
  const char* key;
  json_t* value;
  json_object_foreach(json_object_get(j.get(), "data"), key, value) {
    if (json_is_string(value)) s.data.emplace_back(key, json_string_value(value));
  }
  // A session stored before connectKeys existed: all of its data counts as the hooks'.
  if (json_t* keys = json_object_get(j.get(), "connectKeys")) s.connect_keys = str_list(keys);
  else
    for (auto& [k, v] : s.data) s.connect_keys.push_back(k);
  return s;
}

}  // namespace

bool RedisAdapter::find_session(const std::string& nsp, const std::string& pid, FoundSession cb) {
  if (!recovers() || !link_.ready() || !find(nsp)) return false;
  return link_.command({"GET", session_key(nsp, pid)}, [this, nsp, cb = std::move(cb)](redisReply* r) {
    if (!r || r->type != REDIS_REPLY_STRING) return cb(std::nullopt);
    auto session = parse_session(std::string_view(r->str, r->len), nsp);
    // Its stale connection is still here (not timed out yet): the sid must
    // stay one socket's on this worker, so this CONNECT starts fresh.
    Nsp* n = find(nsp);
    if (session && n && n->ns->socket(session->sid)) return cb(std::nullopt);
    cb(std::move(session));
  });
}

bool RedisAdapter::claim_session(const std::string& nsp, const std::string& pid, const std::string& sid,
                                 const std::string& offset, ClaimedSession cb) {
  if (!recovers() || !link_.ready()) return false;
  int64_t ms = unyeast(std::string_view(offset).substr(0, offset.find('.')));
  std::string start = ms > kOffsetClockMarginMs ? std::to_string(ms - kOffsetClockMarginMs) : "-";
  // The missed packets are bounded in bytes too (they are the namespace's,
  // before the rooms are filtered here): past that, a fresh connection.
  uint64_t max_bytes = kMissedBytesPerOutputBuffer * server_.config().core.max_output_buffer;
  std::string key = session_key(nsp, pid);  // with a cluster, on the stream's slot
  return link_.command({"EVAL", kRecoverScript, "1", key, key, stream_key(nsp), start, offset,
                        std::to_string(kMaxMissedPackets), std::to_string(max_bytes)},
                       [this, nsp, sid, cb = std::move(cb)](redisReply* r) {
                         if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
                             r->element[0]->type != REDIS_REPLY_STRING)
                           return cb(std::nullopt);
                         std::string_view text(r->element[0]->str, r->element[0]->len);
                         auto session = parse_session(text, nsp);
                         if (!session || session->sid != sid) return cb(std::nullopt);
                         std::vector<sio::EncodedBroadcast> missed;
                         for (size_t i = 1; i < r->elements; i++) {
                           if (r->element[i]->type != REDIS_REPLY_STRING) continue;
                           sio::EncodedBroadcast b;
                           if (b.parse(std::string_view(r->element[i]->str, r->element[i]->len)))
                             missed.push_back(std::move(b));
                         }
                         // The socket connects inside cb: connected() takes the next generation.
                         Json j = json_parse(text);
                         std::string id = session_id(nsp, sid);
                         claiming_ = &id;
                         claimed_gen_ = uint64_t(json_integer_value(json_object_get(j.get(), "gen"))) + 1;
                         cb(std::move(missed));
                         claiming_ = nullptr;
                       });
}

}  // namespace dr::cluster
