// ratelimit: what a worker keeps (users' windows and leases, tracked
// connections), and the functions its files share.
#pragma once

#include <depth-realtime/module.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "conf.h"
#include "ip_table.h"

namespace ratelimit {

constexpr const char* kMetric = "depth_realtime_rate_limited_total";
// A CONNECT still waiting for the other hooks after this long is forgotten.
constexpr int64_t kPendingConnectMs = 120000;
// Events of one user waiting for a lease on one worker (one per socket: the
// socket's next events wait behind it); more are refused.
constexpr size_t kMaxWaiters = 1024;

inline int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// ------------------------------------------------------------ worker state

// An event waiting for a lease (its socket is held meanwhile).
struct Waiter {
  dr::Socket::Resume resume;
  std::weak_ptr<dr::Socket> socket;
  dr::Event reply_to;  // its name and ack id, to refuse it
};

// One user's events in one zone, as this worker knows them.
struct UserState {
  std::deque<int64_t> local;          // times of the events admitted here, oldest first
  int64_t bucket_ms = 0;              // width of the buckets below; a change (reload) resets them
  std::map<int64_t, int64_t> unsent;  // bucket -> events admitted here, not yet reported to Redis
  std::map<int64_t, int64_t> sent;    // bucket -> events admitted here and counted in Redis
  std::map<int64_t, int64_t> others;  // bucket -> events (and leases) of the other workers and nodes
  uint64_t limit = 0;                 // of the last event's namespace, for the tick
  int64_t window_ms = 0;
  // The lease: `share` units this worker may admit until `lease_until`
  // (the worker's clock, Worker::now_ms), reserved for it in Redis.
  int64_t share = 0;
  int64_t last_grant = 0;
  int64_t lease_until = 0;
  int64_t denied_until = 0;  // Redis said nothing is left: refused without asking until then
  int64_t retry_at = 0;      // other workers held what is left: waiting events ask again then
  int64_t last_use = 0;      // when the share was last used
  bool near = false;         // little was left at the last grant (under a quarter of the limit, or 8)
  bool requesting = false;   // a lease request is in flight
  int64_t request_sent = 0;
  bool failing = false;      // the last request failed: per-worker limits until one succeeds
  std::vector<Waiter> waiters;
  std::unique_ptr<dr::Timeout> wait_timer;
  std::unique_ptr<dr::Timeout> retry_timer;  // at retry_at
};

// A client connection (Engine.IO session) that counts for its IP.
struct Session {
  const std::string* ip;  // as IpCounts keeps it while counted; null: not counted
  size_t sockets = 0;     // its namespace sockets, connected or connecting
};

// A namespace socket, by its address. Kept small: one per connected socket.
struct Tracked {
  const void* session;
  // Its budget, once connected: the key in State::present, which lives while
  // a tracked socket counts in it (null with ratelimit off).
  const std::string* budget = nullptr;
};

// A tracked socket whose CONNECT is not through yet: a later hook may refuse
// it, and then no disconnect comes. `socket` tells it from a dead one's
// leftover at a reused address.
struct Unconnected {
  std::weak_ptr<dr::Socket> socket;
  int64_t since = 0;
};

struct State {
  dr::Worker* w = nullptr;
  const dr::Module* self = nullptr;
  std::string lease_id;                // this worker's name in the leases of Redis
  std::unique_ptr<dr::Timeout> timer;  // armed only while there is something to return or to expire
  std::unordered_map<std::string, UserState> users;               // by budget_of()
  std::unordered_map<std::string, size_t> present;                // budget -> its connected sockets here
  std::unordered_map<std::string, std::deque<int64_t>> refusals;  // socket -> times of its refused events
  IpCounts ips;
  std::unordered_map<const void*, Session> sessions;  // by the session's handshake
  std::unordered_map<const dr::Socket*, Tracked> tracked;  // socket -> its session
  std::unordered_map<const dr::Socket*, Unconnected> unconnected;
  bool redis_warned = false;
};

extern std::shared_ptr<State> g_state;

inline const RateConf* conf_of(const State& st, std::string_view nsp = {}) {
  return static_cast<const RateConf*>(st.w->conf(*st.self, nsp));
}

inline std::string socket_key(const dr::Socket& s) { return s.nsp() + ' ' + s.id(); }

inline std::string client_ip(const dr::Socket& s, const RateConf& conf) {
  return client_address(s.handshake(), conf.trusted_proxies);
}

// events.cc: the Limit phase middleware.
bool on_event(State& st, dr::Socket& s, dr::Event& ev);
// A lease came or Redis failed: the waiting events are decided again.
void settle_waiters(State& st, const std::string& key, UserState& u);
// The budget an event of `s` uses: zone|window|subject, e.g. "default|60000|u:42".
std::string budget_of(const State& st, const RateConf& conf, const dr::Socket& s);

// sync.cc: the leases from Redis, and the tick.
enum LeaseMode { kRenew, kReport, kReturn };  // get more / only report / report and give the share back
void request_lease(State& st, const std::string& key, UserState& u, int mode);
int64_t lease_ttl(const RateConf& server, int64_t window);
void ensure_timer(State& st);
void on_timer(State& st);

// connections.cc: connections per IP.
void release_socket(State& st, const dr::Socket* key);
void on_connect(State& st, dr::Socket& s, const dr::ConnectNext& next);
void on_connection(State& st, dr::Socket& s);

}  // namespace ratelimit
