// Connection state recovery through Redis: recordable broadcasts go to the
// namespace's stream (redis_adapter.cc), and each connected socket's session
// is kept under its pid (written when it changes, refreshed before it
// expires, parked at a disconnect) so that its client may resume on any node;
// a recovery claims the session with the packets it missed in one script.
#include <algorithm>

#include "cluster/adapter_wire.h"
#include "cluster/lua_scripts.h"
#include "cluster/offset.h"
#include "cluster/recovery_lua.h"
#include "cluster/redis_adapter.h"
#include "core/uv_util.h"

namespace dr::cluster {
namespace {

using namespace wire;

constexpr int64_t kOffsetClockMarginMs = 10000;      // node clocks vs Redis' stream ids
constexpr size_t kMaxMissedPackets = 10000;          // more: a fresh connection instead
constexpr uint64_t kMissedBytesPerOutputBuffer = 4;  // and more than 4 × max_output_buffer of them

}  // namespace

uint64_t RedisAdapter::window() const { return server_.config().core.recovery_window; }

bool RedisAdapter::recovers() const { return window() > 0; }

// Socket.IO's offsets (the time in ms), made unique in the cluster by this
// node's uid and a counter (offset.h).
std::string RedisAdapter::next_offset() {
  if (!recovers()) return {};
  int64_t ms = now_ms();
  if (ms != offset_ms_) {
    offset_ms_ = ms;
    offset_seq_ = 0;
  }
  return make_offset(ms, uid_, offset_seq_++);
}

void RedisAdapter::record(const sio::EncodedBroadcast& b) {
  Nsp* n = find(b.opts.nsp);
  if (b.offset.empty() || !recovers() || !link_.ready() || !n) return;
  std::string minid = std::to_string(std::max<int64_t>(0, now_ms() - int64_t(window())));
  link_.command({"XADD", n->stream, "MINID", "~", minid, "*", "o", b.offset, "p", b.serialize()});
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
  json_object_set_new(session.get(), "pid", json_stringn(s.pid().data(), s.pid().size()));
  json_object_set_new(session.get(), "gen", json_integer(json_int_t(t.gen)));
  json_object_set_new(session.get(), "rooms", json_strings(s.rooms()).release());
  Json data(json_object());
  for (auto& [k, v] : s.data()) json_object_set_new(data.get(), k.c_str(), json_stringn(v.data(), v.size()));
  json_object_set_new(session.get(), "data", data.release());
  json_object_set_new(session.get(), "connectKeys", json_strings(s.connect_keys()).release());
  int64_t now = now_ms();
  if (parked) {
    json_object_set_new(session.get(), "disconnectedAt", json_integer(json_int_t(now)));
    store_session(s.nsp(), std::string(s.pid()), t.gen, json_text(session.get()), window());
    return;
  }
  store_session(s.nsp(), std::string(s.pid()), t.gen, json_text(session.get()), window() + refresh_interval());
  t.refresh_at = now + int64_t(refresh_interval());
  refreshes_.emplace_back(t.refresh_at, session_id(s.nsp(), s.id()));
  if (!refresh_timer_.armed()) refresh_timer_.arm_in(int64_t(refresh_interval()));
}

void RedisAdapter::store_session(const std::string& nsp, const std::string& pid, uint64_t gen,
                                 const std::string& record, uint64_t ttl, RedisLink::Reply reply) {
  metrics::add(m_session_writes_);
  std::string key = session_key(nsp, pid);
  link_.command({"EVALSHA", lua::sha(lua::kStoreSessionScript), "1", key, key, std::to_string(gen), record, std::to_string(ttl)},
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
  Nsp* n = find(nsp);
  if (!recovers() || !link_.ready() || !n) return false;
  int64_t ms = parse_base64_number(std::string_view(offset).substr(0, offset.find('.')));
  std::string start = ms > kOffsetClockMarginMs ? std::to_string(ms - kOffsetClockMarginMs) : "-";
  // The missed packets are bounded in bytes too (they are the namespace's,
  // before the rooms are filtered here): past that, a fresh connection.
  uint64_t max_bytes = kMissedBytesPerOutputBuffer * server_.config().core.max_output_buffer;
  std::string key = session_key(nsp, pid);  // with a cluster, on the stream's slot
  return link_.command({"EVALSHA", lua::sha(lua::kRecoverScript), "1", key, key, n->stream, start, offset,
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
