// Connection state recovery through Redis: recordable broadcasts go to the
// namespace's stream (redis_adapter.cc), and each connected socket's session
// is kept under its pid (written when it changes, refreshed before it
// expires, parked at a disconnect) so that its client may resume on any node;
// a recovery claims the session with the packets it missed in one script.
#include <algorithm>
#include <charconv>

#include "cluster/adapter_wire.h"
#include "cluster/lua_scripts.h"
#include "cluster/offset.h"
#include "cluster/recovery_lua.h"
#include "cluster/redis_adapter.h"
#include "core/uv_util.h"
#include "depth-realtime/json.h"

namespace dr::cluster {
namespace {

using namespace wire;

constexpr int64_t kOffsetClockMarginMs = 10000;      // node clocks vs Redis' stream ids
constexpr size_t kMaxMissedPackets = 10000;          // more: a fresh connection instead
constexpr uint64_t kMissedBytesPerOutputBuffer = 4;  // and more than 4 × max_output_buffer of them

// A C string's view: what json_string(x.c_str()) and a jansson key see.
std::string_view c_string(std::string_view s) { return s.substr(0, s.find('\0')); }

void append_integer(std::string& out, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// "key":"value" (after a comma unless first), left out as jansson leaves out
// a value it refuses.
void append_string_member(std::string& out, bool& first, std::string_view key, std::string_view value) {
  size_t at = out.size();
  if (!first) out += ',';
  out += '"';
  out += key;
  out += "\":";
  if (!json_append_string(value, out)) return out.resize(at);
  first = false;
}

void append_string_array(std::string& out, std::span<const std::string> items) {
  out += '[';
  bool first = true;
  for (auto& item : items) {
    size_t at = out.size();
    if (!first) out += ',';
    if (!json_append_string(item, out)) {
      out.resize(at);
      continue;
    }
    first = false;
  }
  out += ']';
}

}  // namespace

std::string session_record(std::string_view nsp, std::string_view sid, std::string_view pid, uint64_t gen,
                           std::span<const std::string> rooms,
                           std::span<const std::pair<std::string, std::string>> data,
                           std::span<const std::string> connect_keys, std::optional<int64_t> disconnected_at) {
  size_t size = 128 + nsp.size() + sid.size() + pid.size();  // the keys and numbers: one allocation
  for (auto& r : rooms) size += r.size() + 3;
  for (auto& [k, v] : data) size += k.size() + v.size() + 6;
  for (auto& k : connect_keys) size += k.size() + 3;
  std::string out;
  out.reserve(size);
  out += '{';
  bool first = true;
  append_string_member(out, first, "nsp", c_string(nsp));
  append_string_member(out, first, "sid", c_string(sid));
  append_string_member(out, first, "pid", c_string(pid));
  out += first ? "\"gen\":" : ",\"gen\":";
  append_integer(out, int64_t(gen));
  out += ",\"rooms\":";
  append_string_array(out, rooms);
  // An object's keys as jansson kept them: cut at a NUL, UTF-8 only, and a
  // key set again keeps its place with the last value.
  out += ",\"data\":{";
  bool first_key = true;
  for (size_t i = 0; i < data.size(); i++) {
    std::string_view key = c_string(data[i].first);
    if (!json_utf8_valid(key) || !json_utf8_valid(data[i].second)) continue;
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++) seen = c_string(data[j].first) == key && json_utf8_valid(data[j].second);
    if (seen) continue;  // written at its first place
    const std::string* value = &data[i].second;
    for (size_t j = i + 1; j < data.size(); j++)
      if (c_string(data[j].first) == key && json_utf8_valid(data[j].second)) value = &data[j].second;
    if (!first_key) out += ',';
    first_key = false;
    json_append_string(key, out);
    out += ':';
    json_append_string(*value, out);
  }
  out += "},\"connectKeys\":";
  append_string_array(out, connect_keys);
  if (disconnected_at) {
    out += ",\"disconnectedAt\":";
    append_integer(out, *disconnected_at);
  }
  out += '}';
  return out;
}

std::string closed_session_record(uint64_t gen) {
  std::string out = "{\"gen\":";
  append_integer(out, int64_t(gen));
  out += ",\"closed\":true}";
  return out;
}

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

void RedisAdapter::mark_dirty(sio::SocketImpl* s, Tracked& t) {
  if (t.dirty) return;
  t.dirty = true;
  dirty_sessions_.push_back(s);
}

void RedisAdapter::session_changed(sio::SocketImpl& s) {
  if (!s.connected()) return;  // connecting: connected() writes it; disconnecting: disconnected()
  if (auto it = tracked_.find(&s); it != tracked_.end()) mark_dirty(&s, it->second);
}

// The sessions that changed this loop turn: one write each, however many
// rooms they joined or left. A socket listed that has gone since is no
// longer in tracked_ (or is another one, made at its address: listed too).
void RedisAdapter::write_sessions() {
  if (dirty_sessions_.empty()) return;
  std::vector<sio::SocketImpl*> todo;
  todo.swap(dirty_sessions_);
  for (sio::SocketImpl* s : todo) {
    auto it = tracked_.find(s);
    if (it == tracked_.end() || !it->second.dirty) continue;
    it->second.dirty = false;
    if (s->connected()) write_session(*s, it->second, false);
  }
  if (dirty_sessions_.empty()) {  // nothing listed meanwhile: the buffer keeps its room for the next turn
    todo.clear();
    dirty_sessions_.swap(todo);
  }
}

// Refreshes, spread as the writes were: each session refresh_interval() after
// its last write. Entries superseded by a later write, or of a socket gone,
// are skipped.
void RedisAdapter::refresh_sessions() {
  int64_t now = now_ms();
  while (!refreshes_.empty() && refreshes_.front().first <= now) {
    auto [due, s] = refreshes_.front();
    refreshes_.pop_front();
    auto it = tracked_.find(s);
    if (it == tracked_.end() || it->second.refresh_at != due) continue;
    mark_dirty(s, it->second);
  }
  if (!refreshes_.empty()) refresh_timer_.arm_in(std::max<int64_t>(0, refreshes_.front().first - now));
}

// The link is back (Redis may have restarted empty): every session again.
void RedisAdapter::resync_sessions() {
  for (auto& [s, t] : tracked_) mark_dirty(s, t);
}

void RedisAdapter::write_session(sio::SocketImpl& s, Tracked& t, bool parked) {
  if (!link_.commands_up()) return;  // all written again when the link is back
  int64_t now = now_ms();
  std::string record = session_record(s.nsp(), s.id(), s.pid(), t.gen, s.rooms(), s.data(), s.connect_keys(),
                                      parked ? std::optional<int64_t>(now) : std::nullopt);
  if (parked) {
    store_session(s.nsp(), s.pid(), t.gen, record, window());
    return;
  }
  store_session(s.nsp(), s.pid(), t.gen, record, window() + refresh_interval());
  t.refresh_at = now + int64_t(refresh_interval());
  refreshes_.emplace_back(t.refresh_at, &s);
  if (!refresh_timer_.armed()) refresh_timer_.arm_in(int64_t(refresh_interval()));
}

void RedisAdapter::store_session(const std::string& nsp, std::string_view pid, uint64_t gen,
                                 const std::string& record, uint64_t ttl, RedisLink::Reply reply) {
  metrics::add(m_session_writes_);
  std::string key = session_key(nsp, pid);
  link_.command({"EVAL", lua::kStoreSessionScript, "1", key, key, std::to_string(gen), record, std::to_string(ttl)},
                std::move(reply));
}

void RedisAdapter::save_sessions(std::function<void()> done) {
  for (sio::SocketImpl* s : dirty_sessions_)
    if (auto it = tracked_.find(s); it != tracked_.end()) it->second.dirty = false;
  dirty_sessions_.clear();
  if (!recovers() || !link_.commands_up()) return done();
  size_t saved = 0;
  for (auto& n : nsps_) {
    for (auto* s : n.ns->select({}, {})) {
      auto it = tracked_.find(s);
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
  if (!recovers() || !find(nsp)) return false;
  if (link_.ready()) return send_find(nsp, pid, std::move(cb));
  // Not linked yet (a worker that just started, Redis reconnecting): a client
  // resuming now waits a little for it rather than losing its session.
  auto shared = std::make_shared<FoundSession>(std::move(cb));
  return wait_for_link([this, nsp, pid, shared](bool ready) {
    if (!ready || !send_find(nsp, pid, [shared](std::optional<sio::StoredSession> s) { (*shared)(std::move(s)); }))
      (*shared)(std::nullopt);
  });
}

bool RedisAdapter::send_find(const std::string& nsp, const std::string& pid, FoundSession cb) {
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
  return claim(nsp, pid, sid, offset, std::move(cb), false);
}

bool RedisAdapter::claim(const std::string& nsp, const std::string& pid, const std::string& sid,
                         const std::string& offset, ClaimedSession cb, bool again) {
  if (!recovers() || !find(nsp)) return false;
  if (link_.ready()) return send_claim(nsp, pid, sid, offset, std::move(cb), again);
  // Lost since the lookup: as there, a while for it to come back. Unclaimed,
  // the session stays in Redis, but the fresh connection has a new pid.
  auto shared = std::make_shared<ClaimedSession>(std::move(cb));
  return wait_for_link([this, nsp, pid, sid, offset, shared, again](bool ready) {
    auto relay = [shared](std::optional<std::vector<sio::EncodedBroadcast>> missed) { (*shared)(std::move(missed)); };
    if (!ready || !send_claim(nsp, pid, sid, offset, relay, again)) (*shared)(std::nullopt);
  });
}

bool RedisAdapter::send_claim(const std::string& nsp, const std::string& pid, const std::string& sid,
                              const std::string& offset, ClaimedSession cb, bool again) {
  Nsp* n = find(nsp);
  if (!n) return false;
  int64_t ms = parse_base64_number(std::string_view(offset).substr(0, offset.find('.')));
  std::string start = ms > kOffsetClockMarginMs ? std::to_string(ms - kOffsetClockMarginMs) : "-";
  // The missed packets are bounded in bytes too (they are the namespace's,
  // before the rooms are filtered here): past that, a fresh connection.
  uint64_t max_bytes = kMissedBytesPerOutputBuffer * server_.config().core.max_output_buffer;
  std::string key = session_key(nsp, pid);  // with a cluster, on the stream's slot
  return link_.command({"EVALSHA", lua::sha(lua::kRecoverScript), "1", key, key, n->stream, start, offset,
                        std::to_string(kMaxMissedPackets), std::to_string(max_bytes)},
                       [this, nsp, pid, sid, offset, again, cb = std::move(cb)](redisReply* r) mutable {
                         // No answer (the link went, or it timed out): the script may not
                         // have run. Once more; if it had, the session is gone and the
                         // retry says so.
                         // Posted: the link tells its callbacks before it is marked down.
                         if (!r && !again) {
                           auto shared = std::make_shared<ClaimedSession>(std::move(cb));
                           server_.timers().post([this, nsp, pid, sid, offset, shared] {
                             auto relay = [shared](auto missed) { (*shared)(std::move(missed)); };
                             if (!claim(nsp, pid, sid, offset, relay, true)) (*shared)(std::nullopt);
                           });
                           return;
                         }
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
                         claiming_ = Claiming{&nsp, &sid, uint64_t(json_integer_value(json_object_get(j.get(), "gen"))) + 1};
                         cb(std::move(missed));
                         claiming_.reset();
                       });
}

// A lookup or claim waits for the link this long at most: a reachable Redis
// links a starting worker within milliseconds, and the link's first retries
// (200, 400, 800 ms) fall inside it; longer would hold every resuming
// client's CONNECT through a real outage, which ends in a fresh one anyway.
bool RedisAdapter::wait_for_link(std::function<void(bool ready)> go) {
  if (waiting_for_link_.size() >= kMaxWaitingForLink) return false;  // the caller starts fresh at once
  int64_t wait = std::min<int64_t>(kMaxLinkWaitMs, int64_t(conf_.connect_timeout));
  waiting_for_link_.push_back({server_.timers().now() + wait, std::move(go)});
  if (!wait_timer_.armed()) wait_timer_.arm_at(waiting_for_link_.front().deadline);
  return true;
}

// The link is ready: every waiting request goes to Redis. Else those past
// their deadline answer "not found". A callback may connect or close a
// socket, and ask again: the list is taken first.
void RedisAdapter::serve_waiting() {
  if (link_.ready()) {
    std::deque<WaitingForLink> all;
    all.swap(waiting_for_link_);
    for (auto& w : all) w.go(true);
  } else {
    int64_t now = server_.timers().now();
    std::vector<std::function<void(bool)>> expired;
    while (!waiting_for_link_.empty() && waiting_for_link_.front().deadline <= now) {
      expired.push_back(std::move(waiting_for_link_.front().go));
      waiting_for_link_.pop_front();
    }
    if (!expired.empty())
      logf(LogLevel::Info, "cluster: node %s gave up waiting for redis on %zu session lookup(s); fresh connections",
           uid_.c_str(), expired.size());
    for (auto& go : expired) go(false);
  }
  if (!waiting_for_link_.empty() && !wait_timer_.armed()) wait_timer_.arm_at(waiting_for_link_.front().deadline);
}

}  // namespace dr::cluster
