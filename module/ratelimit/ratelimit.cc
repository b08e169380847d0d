// ratelimit: a per-user limit on client events, and a per-IP limit on client
// connections (contract §4 and §8 "Rate limit").
//
// Events. The middleware runs in the Limit phase, before validation, on every
// event a socket receives (each item of a client `batch` is dispatched, and so
// counted, on its own; malformed ones too). A user may send `limit` events in
// any `window` (sliding), summed over all their sockets, namespaces, workers
// and nodes. Namespaces share one budget per user when they have the same
// `ratelimit_zone` (by default all are in the zone "default") and the same
// window; each applies its own count to its events. An event over the limit
// is dropped and answered with RATE_LIMITED and `retryAfterMs`, the time until
// the oldest counted event leaves the window; refused events use no budget. A
// socket refused more than `limit` times within one window is disconnected.
// Sockets without a user id (auth off) are limited per client IP.
//
// Exact across workers and nodes, without a Redis round trip per event:
// budget leases (the script and its keys: lease.h). A worker takes a share of
// the user's budget left in the window from Redis (one EVAL), admits from it
// locally until it is used or `ratelimit_lease` is over, and asks again
// before it runs out; the share is half of what is left over the workers
// holding one, so near the limit every worker asks for each event, and no
// worker can admit past it. While a worker waits for a lease, the user's
// event waits (Socket::defer: the socket's next events wait behind it) for at
// most `ratelimit_lease_wait`, then it is refused; a worker told that nothing
// is left refuses without asking again for `ratelimit_sync_interval`. The
// requests report the events admitted, per time bucket (window / 10); this
// worker's own events count at their exact times (one worker alone is
// exact), the others' until their bucket's end leaves the window, so
// retryAfterMs may be up to a bucket longer than exact when other workers'
// events decide it. The rest of a share goes back when the user's last socket
// here leaves or the lease is over; near the limit at once (a used one is
// reported at once), and an event that finds the rest held by another worker
// asks again a few ms later. Without Redis, or while it is away, each
// worker limits on its own (its counts reach Redis when it is back). Buckets
// are wall-clock aligned: the nodes' clocks should agree (NTP).
//
// Connections. `ratelimit_connections_per_ip` bounds the Engine.IO
// connections of one client IP (a connection counts from its first namespace
// CONNECT until its last namespace socket is gone; more namespaces over the
// same connection are free) across all the workers of a node: the counts live
// in a table shared by the node's processes (a shared zone the master makes
// in init_master, before it forks the workers, kept across reloads), one
// share per process so that a crashed worker's share is dropped. Over the limit
// the CONNECT is refused with CONNECT_ERROR {code: RATE_LIMITED}. Behind a
// reverse proxy the client IP comes from X-Forwarded-For when the peer is one
// of `ratelimit_trusted_proxies`.

#include <depth-realtime/module.h>
#include <depth-realtime/redis.h>

#include "lease.h"

#include <arpa/inet.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace {

constexpr const char* kMetric = "depth_realtime_rate_limited_total";
constexpr int64_t kBucketsPerWindow = 10;
// A CONNECT still waiting for the other hooks after this long is forgotten.
constexpr int64_t kPendingConnectMs = 120000;
// Events of one user waiting for a lease on one worker (one per socket: the
// socket's next events wait behind it); more are refused.
constexpr size_t kMaxWaiters = 1024;

int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------- addresses

using Addr = std::array<uint8_t, 16>;  // IPv4 as ::ffff:a.b.c.d

bool parse_addr(std::string_view text, Addr& out) {
  std::string s(text);
  in_addr v4;
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    out.fill(0);
    out[10] = out[11] = 0xff;
    memcpy(out.data() + 12, &v4, 4);
    return true;
  }
  return inet_pton(AF_INET6, s.c_str(), out.data()) == 1;
}

bool is_v4(const Addr& a) {
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return memcmp(a.data(), prefix, 12) == 0;
}

// One spelling per address, so that ::ffff:1.2.3.4 and 1.2.3.4 count together.
std::string addr_text(const Addr& a) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (is_v4(a)) inet_ntop(AF_INET, a.data() + 12, buf, sizeof buf);
  else inet_ntop(AF_INET6, a.data(), buf, sizeof buf);
  return buf;
}

struct Cidr {
  Addr addr{};
  int bits = 128;

  bool contains(const Addr& a) const {
    int full = bits / 8, rest = bits % 8;
    if (memcmp(addr.data(), a.data(), size_t(full)) != 0) return false;
    if (rest == 0) return true;
    uint8_t mask = uint8_t(0xff << (8 - rest));
    return (addr[size_t(full)] & mask) == (a[size_t(full)] & mask);
  }
};

// -------------------------------------------------------------- configuration

struct RateConf : dr::ModuleConfBase<RateConf> {
  bool enabled = true;
  uint64_t limit = 100;
  uint64_t window_ms = 60000;
  std::string zone = "default";
  std::string message = "Rate limit exceeded";
  // Server level:
  uint64_t connections_per_ip = 0;  // 0: off
  std::string connections_message = "Too many connections";
  std::vector<Cidr> trusted_proxies;
  uint64_t sync_interval_ms = 100;
  uint64_t lease_ms = 10000;
  uint64_t lease_wait_ms = 250;

  int64_t window() const { return int64_t(window_ms); }
  int64_t bucket() const { return std::max<int64_t>(1, window() / kBucketsPerWindow); }
};

bool set_events(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  uint64_t limit = 0, window = 0;
  if (!dr::conf_parse_uint({a[0]}, limit, err) || limit < 1 || limit > 1000000) {
    err = "invalid count \"" + a[0] + "\", expected a number of events from 1 to 1000000";
    return false;
  }
  if (!dr::conf_parse_msec({a[1]}, window, err) || window < 100 || window > 86400000) {
    err = "invalid window \"" + a[1] + "\", expected a time from 100ms to 24h, e.g. 60s";
    return false;
  }
  auto* conf = static_cast<RateConf*>(c);
  conf->limit = limit;
  conf->window_ms = window;
  return true;
}

bool set_text(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err, std::string RateConf::*field) {
  if (a[0].empty()) {
    err = "expected a non-empty text";
    return false;
  }
  static_cast<RateConf*>(c)->*field = a[0];
  return true;
}
bool set_message(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_text(c, a, err, &RateConf::message);
}
bool set_connections_message(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_text(c, a, err, &RateConf::connections_message);
}
bool set_zone(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  // It is part of Redis keys: plain names only.
  bool ok = !a[0].empty() && a[0].size() <= 64 && std::all_of(a[0].begin(), a[0].end(), [](char ch) {
    return isalnum(static_cast<unsigned char>(ch)) || strchr("_-.:/", ch);
  });
  if (!ok) {
    err = "invalid zone \"" + a[0] + "\", expected up to 64 letters, digits and _ - . : /";
    return false;
  }
  static_cast<RateConf*>(c)->zone = a[0];
  return true;
}

bool set_connections_per_ip(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* conf = static_cast<RateConf*>(c);
  if (a[0] == "off") {
    conf->connections_per_ip = 0;
    return true;
  }
  uint64_t n = 0;
  if (!dr::conf_parse_uint(a, n, err) || n < 1 || n > 1000000) {
    err = "invalid value \"" + a[0] + "\", expected a number of connections from 1 to 1000000, or off";
    return false;
  }
  conf->connections_per_ip = n;
  return true;
}

bool set_trusted_proxies(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* conf = static_cast<RateConf*>(c);
  conf->trusted_proxies.clear();
  if (a.size() == 1 && a[0] == "off") return true;
  for (const std::string& item : a) {
    Cidr cidr;
    size_t slash = item.find('/');
    if (!parse_addr(std::string_view(item).substr(0, slash), cidr.addr)) {
      err = "invalid address \"" + item + "\", expected an IP address or ADDRESS/BITS, e.g. 10.0.0.0/8";
      return false;
    }
    int max_bits = is_v4(cidr.addr) ? 32 : 128;
    if (slash != std::string::npos) {
      uint64_t bits = 0;
      std::string e;
      if (!dr::conf_parse_uint({item.substr(slash + 1)}, bits, e) || bits > uint64_t(max_bits)) {
        err = "invalid prefix length in \"" + item + "\", expected 0 to " + std::to_string(max_bits);
        return false;
      }
      cidr.bits = int(bits);
    } else {
      cidr.bits = max_bits;
    }
    if (is_v4(cidr.addr)) cidr.bits += 96;
    conf->trusted_proxies.push_back(cidr);
  }
  return true;
}

bool set_sync_interval(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  uint64_t ms = 0;
  if (!dr::conf_parse_msec(a, ms, err) || ms < 10 || ms > 10000) {
    err = "invalid interval \"" + a[0] + "\", expected a time from 10ms to 10s";
    return false;
  }
  static_cast<RateConf*>(c)->sync_interval_ms = ms;
  return true;
}

bool set_msec_in(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err, uint64_t RateConf::*field,
                 uint64_t lo, uint64_t hi, const char* range) {
  uint64_t ms = 0;
  if (!dr::conf_parse_msec(a, ms, err) || ms < lo || ms > hi) {
    err = "invalid time \"" + a[0] + "\", expected " + range;
    return false;
  }
  static_cast<RateConf*>(c)->*field = ms;
  return true;
}
bool set_lease(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_msec_in(c, a, err, &RateConf::lease_ms, 100, 600000, "a time from 100ms to 10m");
}
bool set_lease_wait(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_msec_in(c, a, err, &RateConf::lease_wait_ms, 1, 10000, "a time from 1ms to 10s");
}

constexpr unsigned S = dr::kConfServer;
constexpr unsigned N = dr::kConfNamespace;

const dr::Directive kDirectives[] = {
    {"ratelimit", S | N, 1, 1, dr::set_flag<&RateConf::enabled>, "on", true,
     "Limit the events of each user (off: no event limit in this server or namespace)."},
    {"ratelimit_events", S | N, 2, 2, set_events, "100 60s", true,
     "COUNT WINDOW: an event is refused when its user already sent COUNT in the last WINDOW (sliding), over all their "
     "sockets, workers and nodes and the namespaces of the zone; every received event counts (each batch item, invalid "
     "ones too), refused ones do not."},
    {"ratelimit_zone", S | N, 1, 1, set_zone, "default", true,
     "Namespaces with the same zone and the same window share one budget per user; a namespace naming a zone of "
     "its own gets a budget of its own."},
    {"ratelimit_message", S | N, 1, 1, set_message, "Rate limit exceeded", true,
     "Message of the RATE_LIMITED error sent for a refused event."},
    {"ratelimit_connections_per_ip", S, 1, 1, set_connections_per_ip, "off", true,
     "At most this many Engine.IO connections per client IP on this node (counted over its workers); "
     "more are refused with CONNECT_ERROR code RATE_LIMITED."},
    {"ratelimit_connections_message", S, 1, 1, set_connections_message, "Too many connections", true,
     "Message of the CONNECT_ERROR sent for a connection over ratelimit_connections_per_ip."},
    {"ratelimit_trusted_proxies", S, 1, -1, set_trusted_proxies, "off", true,
     "Addresses or ADDRESS/BITS of reverse proxies: for their connections the client IP is the last untrusted "
     "address of X-Forwarded-For."},
    {"ratelimit_sync_interval", S, 1, 1, set_sync_interval, "100ms", true,
     "How often each worker gives back the budget leases that are over, or idle near the limit (and reports what it "
     "counted while Redis was away); a worker told that a user has nothing left refuses without asking again this long."},
    {"ratelimit_lease", S, 1, 1, set_lease, "10s", true,
     "How long a worker may use a lease of a user's budget before it asks Redis again (at most the window); "
     "the lease of a worker that crashed counts as used until then, plus 1s."},
    {"ratelimit_lease_wait", S, 1, 1, set_lease_wait, "250ms", true,
     "How long a user's events may wait for a lease from Redis; past it they are refused with RATE_LIMITED."},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

// ------------------------------------------------------ node-wide IP counts

// Open connections per client IP, in a shared zone that the master makes
// (init_master) and every worker finds by name. Each process owns its own entry per IP, so the share of a
// worker that died without cleaning up can be told apart and dropped. Reads
// race with writers of other processes; a count may be off by a connection
// that is arriving at that very moment, never by more.
struct IpEntry {
  std::atomic<uint32_t> state;  // 0 never used, 1 being claimed, 2 in use, 3 free again
  std::atomic<int32_t> pid;
  std::atomic<int32_t> count;
  char ip[52];
};
static_assert(sizeof(IpEntry) == 64);
constexpr size_t kIpEntries = 16384;

constexpr std::string_view kIpZone = "ratelimit:connections";
constexpr size_t kIpZoneSize = sizeof(IpEntry) * kIpEntries;

IpEntry* g_ip_table = nullptr;  // in this worker, once init_worker found the zone (zero-filled when made)

size_t ip_hash(std::string_view ip) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (char ch : ip) h = (h ^ uint8_t(ch)) * 16777619u;
  return h % kIpEntries;
}

bool process_alive(int32_t pid) {
  if (pid == getpid()) return true;
  return kill(pid, 0) == 0 || errno != ESRCH;
}

class IpCounts {
 public:
  // One more connection from `ip` unless the node then holds more than `max`
  // (0: no maximum). Counting first and checking after means two workers
  // admitting at once cannot both slip past the limit.
  bool acquire(const std::string& ip, uint64_t max) {
    IpEntry* e = own(ip);
    if (!e) return true;  // the table is full: not limited rather than refused
    e->count.fetch_add(1);
    if (max && total(ip) > int64_t(max)) {
      release(ip);
      return false;
    }
    return true;
  }

  void release(const std::string& ip) {
    auto it = mine_.find(ip);
    if (it == mine_.end()) return;
    IpEntry* e = it->second;
    if (e->count.fetch_sub(1) <= 1) {
      e->count.store(0);
      e->state.store(3);
      mine_.erase(it);
    }
  }

  // Connections from `ip` over the live processes of the node.
  int64_t total(const std::string& ip) const {
    if (!g_ip_table || ip.size() >= sizeof(IpEntry::ip)) return 0;
    int64_t sum = 0;
    size_t start = ip_hash(ip);
    for (size_t i = 0; i < kIpEntries; i++) {
      IpEntry& e = g_ip_table[(start + i) % kIpEntries];
      uint32_t st = e.state.load();
      if (st == 0) break;  // the end of this IP's probe sequence
      if (st != 2 || strncmp(e.ip, ip.c_str(), sizeof e.ip) != 0) continue;
      int32_t pid = e.pid.load();
      if (!process_alive(pid)) {
        uint32_t in_use = 2;
        e.state.compare_exchange_strong(in_use, 3);  // a dead worker's share
        continue;
      }
      sum += e.count.load();
    }
    return sum;
  }

 private:
  IpEntry* own(const std::string& ip) {
    if (auto it = mine_.find(ip); it != mine_.end()) return it->second;
    if (!g_ip_table || ip.size() >= sizeof(IpEntry::ip)) return nullptr;
    size_t start = ip_hash(ip);
    for (size_t i = 0; i < kIpEntries; i++) {
      IpEntry& e = g_ip_table[(start + i) % kIpEntries];
      uint32_t st = e.state.load();
      if ((st == 0 || st == 3) && e.state.compare_exchange_strong(st, 1)) {
        e.pid.store(getpid());
        e.count.store(0);
        memset(e.ip, 0, sizeof e.ip);
        memcpy(e.ip, ip.data(), ip.size());
        e.state.store(2);
        mine_.emplace(ip, &e);
        return &e;
      }
    }
    if (!full_warned_) {
      dr::log(dr::LogLevel::Warn, "ratelimit: the connection table is full; new IPs are not limited");
      full_warned_ = true;
    }
    return nullptr;
  }

  std::unordered_map<std::string, IpEntry*> mine_;  // this process's entries
  bool full_warned_ = false;
};

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
  std::string ip;
  size_t sockets = 0;  // its namespace sockets, connected or connecting
};

struct Tracked {
  const void* session;
  std::weak_ptr<dr::Socket> socket;
  bool connected = false;
  int64_t since = 0;
  std::string budget;  // of its events, once connected ("" with ratelimit off)
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
  std::unordered_map<std::string, Tracked> tracked;   // socket -> its session
  std::unordered_set<std::string> unconnected;         // tracked sockets whose CONNECT is not through yet
  bool redis_warned = false;
};

std::shared_ptr<State> g_state;

const RateConf* conf_of(const State& st, std::string_view nsp = {}) {
  return static_cast<const RateConf*>(st.w->conf(*st.self, nsp));
}

std::string socket_key(const dr::Socket& s) { return s.nsp() + ' ' + s.id(); }

// The client's IP: the peer, or behind trusted proxies the last address of
// X-Forwarded-For that is not one of them.
std::string client_ip(const dr::Socket& s, const RateConf& conf) {
  const dr::Handshake& hs = s.handshake();
  Addr peer;
  if (!parse_addr(hs.address, peer)) return hs.address;
  auto trusted = [&](const Addr& a) {
    return std::any_of(conf.trusted_proxies.begin(), conf.trusted_proxies.end(),
                       [&](const Cidr& c) { return c.contains(a); });
  };
  Addr client = peer;
  const std::string* xff = hs.header("x-forwarded-for");
  if (xff && trusted(peer)) {
    std::string_view list(*xff);
    while (!list.empty()) {
      size_t comma = list.rfind(',');
      std::string_view item = comma == std::string_view::npos ? list : list.substr(comma + 1);
      list = comma == std::string_view::npos ? std::string_view() : list.substr(0, comma);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      Addr a;
      if (!parse_addr(item, a)) break;  // not an address: trust nothing further left
      client = a;
      if (!trusted(a)) break;
    }
  }
  return addr_text(client);
}

// Whose budget an event uses: the user, or the IP of a socket without one.
std::string subject_of(const State& st, const dr::Socket& s) {
  const std::string* user = s.get("userId");
  if (user && !user->empty()) return "u:" + *user;
  const RateConf* server = conf_of(st);
  return "ip:" + client_ip(s, server ? *server : RateConf());
}

// The budget an event of `s` uses: zone|window|subject, e.g. "default|60000|u:42".
std::string budget_of(const State& st, const RateConf& conf, const dr::Socket& s) {
  return conf.zone + '|' + std::to_string(conf.window_ms) + '|' + subject_of(st, s);
}

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// The oldest bucket that still counts: buckets count until their end leaves the window.
int64_t first_bucket(int64_t now, int64_t window, int64_t bucket) { return floor_div(now - window, bucket); }

// Drops what left the window; a new bucket width (reload) starts the buckets over.
void prune(UserState& u, int64_t now, int64_t window, int64_t bucket) {
  while (!u.local.empty() && u.local.front() <= now - window) u.local.pop_front();
  if (u.bucket_ms != bucket) {
    u.bucket_ms = bucket;
    u.unsent.clear();
    u.sent.clear();
    u.others.clear();
    u.share = 0;  // the lease was in the keys of the old width
    u.lease_until = 0;
  }
  int64_t first = first_bucket(now, window, bucket);
  for (auto* m : {&u.unsent, &u.sent}) m->erase(m->begin(), m->lower_bound(first));
  u.others.erase(u.others.begin(), u.others.lower_bound(first));
}

int64_t others_count(const UserState& u) {
  int64_t n = 0;
  for (auto& [b, c] : u.others) n += c;
  return n;
}

// Milliseconds until `k` of the counted events have left the window: this
// worker's at their exact time, the others' at the end of their bucket.
int64_t retry_after(const UserState& u, int64_t now, int64_t window, int64_t bucket, int64_t k) {
  auto li = u.local.begin();
  auto oi = u.others.begin();
  int64_t left = oi != u.others.end() ? oi->second : 0;
  int64_t at = now + window;
  while (k > 0) {
    while (oi != u.others.end() && left <= 0) {
      if (++oi != u.others.end()) left = oi->second;
    }
    int64_t lt = li != u.local.end() ? *li + window : INT64_MAX;
    int64_t ot = oi != u.others.end() ? (oi->first + 1) * bucket + window : INT64_MAX;
    if (lt == INT64_MAX && ot == INT64_MAX) break;
    if (lt <= ot) {
      at = lt;
      ++li;
      --k;
    } else {
      int64_t take = std::min(k, left);
      at = ot;
      k -= take;
      left -= take;
    }
  }
  return std::clamp<int64_t>(at - now, 1, window);
}

// {code, message, retryAfterMs}: to the ack when the client asked for one,
// else the `error` event.
void send_rate_limited(dr::Socket& s, const dr::Event& ev, const std::string& message, int64_t retry_ms) {
  dr::Json err(json_object());
  json_object_set_new(err.get(), "code", json_string("RATE_LIMITED"));
  json_object_set_new(err.get(), "message", json_stringn(message.data(), message.size()));
  json_object_set_new(err.get(), "retryAfterMs", json_integer(json_int_t(retry_ms)));
  dr::send_error_object(s, ev, std::move(err));
}

// ---------------------------------------------------------------- events

void ensure_timer(State& st);
void request_lease(State& st, const std::string& key, UserState& u, int mode);
enum LeaseMode { kRenew, kReport, kReturn };  // get more / only report / report and give the share back

int64_t lease_ttl(const RateConf& server, int64_t window) { return std::min<int64_t>(int64_t(server.lease_ms), window); }

// The event is refused: RATE_LIMITED, the metric, and past `limit` refusals
// within one window the socket goes (persistent abuse). Refusals because no
// lease came in time (Redis slow) are not the client's doing: not counted.
void refuse(State& st, dr::Socket& s, const dr::Event& ev, const RateConf& conf, int64_t retry_ms,
            bool abuse = true) {
  const int64_t now = wall_ms(), window = conf.window();
  st.w->metric_add(kMetric, dr::metric_label("kind", "event"));
  send_rate_limited(s, ev, conf.message, retry_ms);
  if (!abuse) return;
  auto& refused = st.refusals[socket_key(s)];
  while (!refused.empty() && refused.front() <= now - window) refused.pop_front();
  refused.push_back(now);
  if (refused.size() > conf.limit) {
    const std::string* user = s.get("userId");
    dr::logf(dr::LogLevel::Info, "ratelimit: %s socket %s of user %s disconnected: %zu events refused within %lld ms",
             s.nsp().c_str(), s.id().c_str(), user ? user->c_str() : "-", refused.size(), (long long)window);
    st.refusals.erase(socket_key(s));
    s.disconnect();
  }
}

enum class Verdict { Admit, Refuse, Wait };

// Admits from the lease while it lasts, else: Redis away -> this worker's
// own count and the cluster's last known; Redis said nothing is left a
// moment ago -> refused; otherwise the event waits for a lease.
Verdict decide(State& st, const std::string& key, UserState& u, const RateConf& conf) {
  const int64_t now = wall_ms(), mono = st.w->now_ms();
  const int64_t limit = int64_t(conf.limit);
  prune(u, now, conf.window(), conf.bucket());
  u.limit = conf.limit;
  u.window_ms = conf.window();
  auto admit = [&] {
    u.local.push_back(now);
    if (dr::redis::configured()) u.unsent[floor_div(now, u.bucket_ms)]++;
    ensure_timer(st);
    return Verdict::Admit;
  };
  if (int64_t(u.local.size()) >= limit) return Verdict::Refuse;  // this worker alone fills the window
  if (u.share > 0 && mono >= u.lease_until) u.share = 0;          // the lease is over (the tick gives it back)
  if (u.share > 0) {
    u.share--;
    u.last_use = mono;
    admit();
    // Ask for more before the share runs out, or the lease ends. Not for
    // small shares (near the limit): a share asked for ahead would sit here
    // while the user's next event comes to another worker.
    const RateConf* server = conf_of(st);
    int64_t ttl = lease_ttl(server ? *server : conf, u.window_ms);
    if (u.last_grant >= 4 && (u.share * 2 < u.last_grant || u.lease_until - mono < ttl / 4))
      request_lease(st, key, u, kRenew);
    // Near the limit Redis hears of a used share at once: another worker's
    // event may be waiting for what it thinks this one still holds.
    else if (u.near && u.share == 0)
      request_lease(st, key, u, kReport);
    return Verdict::Admit;
  }
  if (!dr::redis::configured() || !dr::redis::ready() || u.failing)
    return int64_t(u.local.size()) + others_count(u) < limit ? admit() : Verdict::Refuse;
  if (mono < u.denied_until) return Verdict::Refuse;
  return Verdict::Wait;
}

int64_t retry_of(const UserState& u, const RateConf& conf) {
  int64_t used = int64_t(u.local.size()) + others_count(u);
  return retry_after(u, wall_ms(), conf.window(), conf.bucket(), std::max<int64_t>(1, used - int64_t(conf.limit) + 1));
}

void refuse_waiters(State& st, UserState& u, int64_t retry_ms);

bool on_event(State& st, dr::Socket& s, dr::Event& ev) {
  const RateConf* conf = conf_of(st, s.nsp());
  if (!conf || !conf->enabled) return true;
  const std::string key = budget_of(st, *conf, s);
  UserState& u = st.users[key];
  switch (decide(st, key, u, *conf)) {
    case Verdict::Admit:
      return true;
    case Verdict::Refuse:
      refuse(st, s, ev, *conf, retry_of(u, *conf));
      return false;
    case Verdict::Wait:
      break;
  }
  // Waiting is bounded: in number, and in time (a request slower than
  // ratelimit_lease_wait gets the events refused until it is answered).
  const RateConf* server = conf_of(st);
  const int64_t wait_ms = int64_t(server ? server->lease_wait_ms : 250);
  if (u.waiters.size() >= kMaxWaiters || (u.requesting && st.w->now_ms() - u.request_sent >= wait_ms)) {
    refuse(st, s, ev, *conf, wait_ms, false);
    return false;
  }
  dr::Event reply_to;
  reply_to.name = ev.name;
  reply_to.ack_id = ev.ack_id;
  u.waiters.push_back(Waiter{s.defer(ev), s.weak(), std::move(reply_to)});
  if (!u.wait_timer) {
    u.wait_timer = st.w->timeout([&st, key] {
      auto it = st.users.find(key);
      if (it == st.users.end()) return;
      const RateConf* server = conf_of(st);
      refuse_waiters(st, it->second, int64_t(server ? server->lease_wait_ms : 250));
    });
  }
  if (!u.wait_timer->armed()) u.wait_timer->arm_in(uint64_t(wait_ms));
  request_lease(st, key, u, kRenew);
  return false;
}

// Decides the waiting events again (a lease came, or Redis failed). A socket
// gone meanwhile drops its event. What the resumed events trigger (handlers,
// the next queued events, a disconnect) may add waiters: they are new ones.
void settle_waiters(State& st, const std::string& key, UserState& u) {
  if (u.waiters.empty()) return;
  std::vector<Waiter> waiting = std::move(u.waiters);
  u.waiters.clear();
  for (Waiter& w : waiting) {
    auto s = w.socket.lock();
    const RateConf* conf = s ? conf_of(st, s->nsp()) : nullptr;
    if (!s || !s->connected() || !conf || !conf->enabled) continue;  // its Resume goes: the event with it
    switch (decide(st, key, u, *conf)) {
      case Verdict::Admit:
        w.resume(true);
        break;
      case Verdict::Refuse:
        refuse(st, *s, w.reply_to, *conf, retry_of(u, *conf));
        w.resume(false);
        break;
      case Verdict::Wait:
        u.waiters.push_back(std::move(w));
        break;
    }
  }
  // The bound runs from the first waiter's arrival: a later one may be refused sooner.
  if (u.waiters.empty()) {
    if (u.wait_timer) u.wait_timer->cancel();
  } else {
    request_lease(st, key, u, kRenew);
    const RateConf* server = conf_of(st);
    if (u.wait_timer && !u.wait_timer->armed()) u.wait_timer->arm_in(server ? server->lease_wait_ms : 250);
  }
}

// Past ratelimit_lease_wait: refused rather than kept waiting.
void refuse_waiters(State& st, UserState& u, int64_t retry_ms) {
  std::vector<Waiter> waiting = std::move(u.waiters);
  u.waiters.clear();
  for (Waiter& w : waiting) {
    auto s = w.socket.lock();
    const RateConf* conf = s ? conf_of(st, s->nsp()) : nullptr;
    if (!s || !s->connected() || !conf) continue;
    refuse(st, *s, w.reply_to, *conf, retry_ms, false);
    w.resume(false);
  }
}

// ------------------------------------------------------------ leases

void lease_done(const std::weak_ptr<State>& weak, const std::string& key, int64_t bucket_ms, int64_t sent_at,
                int64_t ttl, int mode, std::map<int64_t, int64_t>& inflight, const dr::redis::Reply& r) {
  auto st = weak.lock();
  if (!st) return;
  auto it = st->users.find(key);
  if (it == st->users.end()) return;
  UserState& u = it->second;
  u.requesting = false;
  ratelimit::LeaseGrant grant;
  bool ok = ratelimit::parse_grant(r, grant);
  if (!ok && !st->redis_warned) {
    dr::logf(dr::LogLevel::Warn, "ratelimit: cannot lease event budgets from Redis (%s); limiting per worker meanwhile",
             r.error() ? r.str.c_str() : "unexpected reply");
    st->redis_warned = true;
  } else if (ok && st->redis_warned) {
    dr::log(dr::LogLevel::Notice, "ratelimit: event budgets are leased from Redis again");
    st->redis_warned = false;
  }
  if (u.bucket_ms != bucket_ms) {
    // A reload changed the window meanwhile: these buckets and this lease are gone.
  } else if (!ok) {
    u.failing = true;
    for (auto& [b, n] : inflight) u.unsent[b] += n;  // reported again with the next request
  } else {
    u.failing = false;
    for (auto& [b, n] : inflight) u.sent[b] += n;
    if (grant.fresh) u.share = 0;  // Redis kept nothing for this worker (it lost its data)
    u.share += grant.units;
    // Redis moved the lease's expiry on whenever it holds something for us;
    // the worker stops using it earlier than Redis drops it.
    if (u.share > 0) u.lease_until = sent_at + ttl;
    u.near = grant.left < std::max<int64_t>(int64_t(u.limit) / 4, 8);
    if (mode == kRenew) {
      u.last_grant = grant.units;
      const RateConf* server = conf_of(*st);
      const int64_t interval = int64_t(server ? server->sync_interval_ms : 100), mono = st->w->now_ms();
      u.denied_until = 0;
      // Nothing left but what other workers hold (maybe used, not reported
      // yet): the waiting events ask again shortly.
      if (grant.units == 0 && grant.held_by_others > 0 && !u.waiters.empty()) {
        const int64_t delay = std::max<int64_t>(5, interval / 10);
        u.retry_at = mono + delay;
        if (!u.retry_timer) {
          u.retry_timer = st->w->timeout([&st = *st, key] {
            auto it = st.users.find(key);
            if (it != st.users.end() && !it->second.waiters.empty()) request_lease(st, key, it->second, kRenew);
          });
        }
        u.retry_timer->arm_in(uint64_t(delay));
      } else if (grant.units == 0) {
        u.denied_until = mono + interval;
      }
    }
    for (size_t i = 0; i < grant.totals.size(); i++) {
      int64_t b = grant.first_bucket + int64_t(i);
      auto mine = u.sent.find(b);
      int64_t others = grant.totals[i] - (mine != u.sent.end() ? mine->second : 0);
      if (others > 0) u.others[b] = others;
      else u.others.erase(b);
    }
  }
  settle_waiters(*st, key, u);
  // The user's last socket here left while this was in flight: give it back now.
  if (!u.requesting && u.share > 0 && !st->present.count(key)) request_lease(*st, key, u, kReturn);
  // Near the limit a share taken earlier, far from it, would sit here while
  // the user's events come to another worker: it goes back (every event asks).
  if (!u.requesting && u.near && u.share > 0 && u.waiters.empty()) request_lease(*st, key, u, kReturn);
  ensure_timer(*st);
}

// One EVAL (lease.h): report this worker's new events, and keep, renew or
// give back its share. One request per user at a time.
void request_lease(State& st, const std::string& key, UserState& u, int mode) {
  if (u.requesting || !dr::redis::ready() || !u.bucket_ms || !u.window_ms) return;
  const RateConf* server = conf_of(st);
  const int64_t now = wall_ms(), mono = st.w->now_ms();
  if (mode == kRenew && mono < u.retry_at) return;  // the tick asks then
  const int64_t ttl = lease_ttl(server ? *server : RateConf(), u.window_ms);
  prune(u, now, u.window_ms, u.bucket_ms);
  if (mode == kReturn || mono >= u.lease_until) u.share = 0;
  ratelimit::LeaseRequest req;
  req.id = st.lease_id;
  req.budget = key;
  req.now_ms = now;
  req.window_ms = u.window_ms;
  req.bucket_ms = u.bucket_ms;
  req.limit = int64_t(u.limit);
  req.want = mode != kRenew ? 0 : u.waiters.empty() ? int64_t(u.limit) : int64_t(u.waiters.size());
  req.keep = u.share;
  req.ttl_ms = ttl;
  req.mine_exact = int64_t(u.local.size());
  req.report = std::move(u.unsent);
  u.unsent.clear();
  req.mine = u.sent;
  for (auto& [b, n] : req.report) req.mine[b] += n;
  u.requesting = true;
  u.request_sent = mono;
  std::vector<std::string> cmd = ratelimit::lease_command(req);  // before the report moves into the callback
  dr::redis::command(std::move(cmd), [weak = std::weak_ptr<State>(g_state), key, bucket = u.bucket_ms, mono, ttl, mode,
                                      inflight = std::move(req.report)](dr::redis::Reply r) mutable {
    lease_done(weak, key, bucket, mono, ttl, mode, inflight, r);
  });
}

// ------------------------------------------------------------ connections

void release_socket(State& st, const std::string& key) {
  auto it = st.tracked.find(key);
  if (it == st.tracked.end()) return;
  auto s = st.sessions.find(it->second.session);
  if (s != st.sessions.end() && --s->second.sockets == 0) {
    st.ips.release(s->second.ip);
    st.sessions.erase(s);
  }
  // The user's last socket here: the rest of the share goes back at once.
  const std::string budget = it->second.budget;
  st.unconnected.erase(key);
  st.tracked.erase(it);
  if (budget.empty()) return;
  auto p = st.present.find(budget);
  if (p == st.present.end() || --p->second > 0) return;
  st.present.erase(p);
  auto u = st.users.find(budget);
  if (u != st.users.end() && (u->second.share > 0 || !u->second.unsent.empty()))
    request_lease(st, budget, u->second, kReturn);
}

// Counts the socket's connection for its IP; false when that is one too many.
bool track_socket(State& st, dr::Socket& s, bool connected, uint64_t max) {
  const void* session = &s.handshake();
  auto it = st.sessions.find(session);
  if (it == st.sessions.end()) {
    const RateConf* server = conf_of(st);
    std::string ip = client_ip(s, server ? *server : RateConf());
    if (!st.ips.acquire(ip, max)) return false;
    it = st.sessions.emplace(session, Session{std::move(ip), 0}).first;
  }
  it->second.sockets++;
  st.tracked[socket_key(s)] = Tracked{session, s.weak(), connected, wall_ms(), {}};
  if (!connected) {
    st.unconnected.insert(socket_key(s));
    ensure_timer(st);
  }
  return true;
}

void on_connect(State& st, dr::Socket& s, const dr::ConnectNext& next) {
  if (st.tracked.count(socket_key(s))) return next(std::nullopt);
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
  auto it = st.tracked.find(socket_key(s));
  if (it == st.tracked.end()) {
    track_socket(st, s, true, 0);  // a socket the hook did not see (it ran under another id): it counts, unrefused
    it = st.tracked.find(socket_key(s));
  }
  it->second.connected = true;
  st.unconnected.erase(it->first);
  // Counted per budget, so that the last socket to leave gives the share back.
  const RateConf* conf = conf_of(st, s.nsp());
  if (conf && conf->enabled && it->second.budget.empty()) {
    it->second.budget = budget_of(st, *conf, s);
    st.present[it->second.budget]++;
  }
}

// -------------------------------------------------------------------- tick

// Runs every sync interval while users have counts or leases here, or
// CONNECTs are pending; an idle worker has no timer armed. It visits only
// those, never every connected socket. A lease over (its time is up) or kept
// while Redis failed goes back with the events it covered.
void tick(State& st) {
  const int64_t now = wall_ms(), mono = st.w->now_ms();
  const RateConf* server = conf_of(st);
  const int64_t interval = int64_t(server ? server->sync_interval_ms : 100);
  // CONNECTs that a later hook refused (or whose client left) never connect.
  std::vector<std::string> gone;
  for (const std::string& key : st.unconnected) {
    auto t = st.tracked.find(key);
    if (t == st.tracked.end() || t->second.socket.expired() || now - t->second.since > kPendingConnectMs)
      gone.push_back(key);
  }
  for (const std::string& key : gone) {
    release_socket(st, key);
    st.unconnected.erase(key);
  }
  for (auto it = st.users.begin(); it != st.users.end();) {
    UserState& u = it->second;
    if (u.window_ms) prune(u, now, u.window_ms, u.bucket_ms);
    if (!u.requesting && dr::redis::ready()) {
      bool over = mono >= u.lease_until;
      // Near the limit a share unused for an interval goes back: the user's
      // events may be on another worker now.
      bool idle = u.near && u.share > 0 && mono - u.last_use >= interval;
      if ((over || idle) && (u.share > 0 || !u.unsent.empty())) request_lease(st, it->first, u, kReturn);
      else if (u.failing) request_lease(st, it->first, u, kReport);
      else if (!u.waiters.empty() && mono >= u.retry_at) request_lease(st, it->first, u, kRenew);
    }
    bool idle = !u.requesting && u.waiters.empty() && u.share == 0 && u.local.empty() && u.unsent.empty() &&
                u.others.empty();
    it = idle ? st.users.erase(it) : std::next(it);
  }
}

void ensure_timer(State& st) {
  if (!st.timer || st.timer->armed()) return;
  const RateConf* server = conf_of(st);
  st.timer->arm_in(server ? server->sync_interval_ms : 100);  // the interval of the configuration in force
}

void on_timer(State& st) {
  try {
    tick(st);
  } catch (const std::exception& e) {
    dr::logf(dr::LogLevel::Error, "ratelimit: %s", e.what());
  }
  if (!st.users.empty() || !st.unconnected.empty()) ensure_timer(st);
}

// ------------------------------------------------------------ lifecycle

std::unique_ptr<dr::ModuleConf> create_conf() { return std::make_unique<RateConf>(); }

// In the master, before the workers fork (and on each reload: the same size
// keeps the table and the counts of the connections open).
bool init_master(dr::MasterContext& m, const dr::Module&, std::string& err) {
  return m.shared_zone(kIpZone, kIpZoneSize, err);
}

bool init_worker(dr::Worker& w, const dr::Module& self) {
  auto zone = w.shared_zone(kIpZone);
  if (zone.size() != kIpZoneSize) {
    dr::log(dr::LogLevel::Crit, "ratelimit: no shared connection table");
    return false;
  }
  g_ip_table = reinterpret_cast<IpEntry*>(zone.data());
  g_state = std::make_shared<State>();
  State& st = *g_state;
  st.w = &w;
  st.self = &self;
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  st.lease_id = std::string(host) + ':' + std::to_string(getpid()) + ':' + std::to_string(wall_ms());

  w.metric_declare(kMetric, dr::MetricType::Counter,
                   "Client events and connections refused by the rate limits, by kind");
  // Both series exist from the start, at 0.
  w.metric_add(kMetric, dr::metric_label("kind", "event"), 0);
  w.metric_add(kMetric, dr::metric_label("kind", "connection"), 0);

  w.use_event("", [&st](dr::Socket& s, dr::Event& ev) { return on_event(st, s, ev); }, dr::EventPhase::Limit);
  w.use_connect("", [&st](dr::Socket& s, dr::ConnectNext next) { on_connect(st, s, next); }, dr::ConnectPhase::Limit);
  w.on_connection("", [&st](dr::Socket& s) { on_connection(st, s); });
  w.on_disconnect("", [&st](dr::Socket& s, std::string_view) {
    release_socket(st, socket_key(s));
    st.refusals.erase(socket_key(s));
  });

  st.timer = w.timeout([&st] { on_timer(st); });
  return true;
}

void exit_worker(dr::Worker&, const dr::Module&) {
  if (!g_state) return;
  g_state->timer.reset();
  auto users = std::move(g_state->users);  // their wait timers and waiting events go before the worker
  g_state->users.clear();
}

const dr::Module kModule{
    dr::kModuleAbi, DR_MODULE_SIGNATURE, "ratelimit", kDirectives, create_conf, nullptr,
    init_worker,    exit_worker,         init_master,
};

}  // namespace

DR_MODULE_EXPORT(kModule)
