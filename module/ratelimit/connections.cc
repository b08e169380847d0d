// ratelimit: connections per client IP (ratelimit_connections_per_ip), in
// the node's shared table (ip_table.h), from a connection's first namespace
// CONNECT until its last namespace socket is gone.
#include "state.h"

namespace ratelimit {

// ------------------------------------------------------------ connections

void release_socket(State& st, const dr::Socket* key) {
  auto it = st.tracked.find(key);
  if (it == st.tracked.end()) return;
  auto s = st.sessions.find(it->second.session);
  if (s != st.sessions.end() && --s->second.sockets == 0) {
    if (s->second.ip) st.ips.release(*s->second.ip);
    st.sessions.erase(s);
  }
  const std::string* counted = it->second.budget;
  st.unconnected.erase(key);
  st.tracked.erase(it);
  if (!counted) return;
  auto p = st.present.find(*counted);
  if (p == st.present.end() || --p->second > 0) return;
  // The user's last socket here: the rest of the share goes back at once.
  const std::string budget = p->first;  // a copy: the key goes with the entry
  st.present.erase(p);
  auto u = st.users.find(budget);
  if (u != st.users.end() && (u->second.share > 0 || !u->second.unsent.empty()))
    request_lease(st, budget, u->second, kReturn);
}

namespace {

// Counts the socket's connection for its IP; false when that is one too many.
bool track_socket(State& st, dr::Socket& s, bool connected, uint64_t max) {
  const void* session = &s.handshake();
  auto it = st.sessions.find(session);
  if (it == st.sessions.end()) {
    const RateConf* server = conf_of(st);
    std::string ip = client_ip(s, server ? *server : RateConf());
    const std::string* counted;
    if (!st.ips.acquire(ip, max, counted)) return false;
    it = st.sessions.emplace(session, Session{counted, 0}).first;
  }
  it->second.sockets++;
  st.tracked[&s] = Tracked{session, nullptr};
  if (!connected) {
    st.unconnected[&s] = Unconnected{s.weak(), wall_ms()};
    ensure_timer(st);
  }
  return true;
}

// Is `s` tracked? A connected socket's entry goes with its disconnect; one
// left at its address by an unconnected socket gone without (its CONNECT
// refused by a later hook, not yet swept) is released.
bool tracked(State& st, dr::Socket& s) {
  if (!st.tracked.count(&s)) return false;
  auto u = st.unconnected.find(&s);
  if (u == st.unconnected.end() || u->second.socket.lock().get() == &s) return true;
  release_socket(st, &s);
  return false;
}

}  // namespace

void on_connect(State& st, dr::Socket& s, const dr::ConnectNext& next) {
  if (tracked(st, s)) return next(std::nullopt);
  const RateConf* server = conf_of(st);
  uint64_t max = server ? server->connections_per_ip : 0;
  if (track_socket(st, s, false, max)) return next(std::nullopt);
  st.w->metric_add(kMetric, dr::metric_label("kind", "connection"));
  dr::logf(dr::LogLevel::Info, "ratelimit: %s refused for %s: more than %llu connections from that IP",
           s.nsp().c_str(), client_ip(s, *server).c_str(), (unsigned long long)max);
  dr::Json data(json_object());
  json_object_set_new(data.get(), "code", json_string("RATE_LIMITED"));
  next(dr::ConnectError{server->connections_message, std::move(data)});
}

void on_connection(State& st, dr::Socket& s) {
  if (!tracked(st, s)) track_socket(st, s, true, 0);  // a socket the hook did not see: it counts, unrefused
  auto it = st.tracked.find(&s);
  st.unconnected.erase(&s);
  // Counted per budget, so that the last socket to leave gives the share back.
  const RateConf* conf = conf_of(st, s.nsp());
  if (conf && conf->enabled && !it->second.budget) {
    auto p = st.present.try_emplace(budget_of(st, *conf, s), 0).first;
    p->second++;
    it->second.budget = &p->first;
  }
}

}  // namespace ratelimit
