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
// Deciding never waits for Redis. Each worker keeps, per user:
//   - the exact times of the events it admitted itself (at most `limit` in the
//     window), which makes the single-worker case exact;
//   - what the rest of the cluster counted, per time bucket (window / 10).
// Every `ratelimit_sync_interval` (100 ms) Redis transactions carry, for every
// user that sent events since the last sync (or that is past half its budget),
// INCRBY + PEXPIRE of this worker's new counts on the shared bucket keys and an
// MGET of the buckets the window covers; the others' share of a bucket is its
// total minus this worker's. A bucket counts until its end leaves the window
// (never less than the truth, so retryAfterMs may be up to a bucket longer than
// exact when other workers' events decide it, capped at the window).
//
// The trade-off: a worker sees another worker's events once both have synced,
// so a user with sockets on several workers or nodes can exceed the limit by
// what the others admitted in about one to two sync intervals (after an idle
// spell on a worker, by at most one burst there before its first sync). Users
// past half their budget are re-read every interval, so the slack is small
// where it matters. A socket reads its user's totals during its CONNECT (one
// MGET, once auth_jwt has set the user: load ratelimit after auth_jwt), so
// moving to another node does not reset the budget. Without Redis, or while it
// is away, each worker limits on its own (its counts reach Redis when it is
// back). Buckets are wall-clock aligned: the nodes' clocks should agree (NTP).
//
// Connections. `ratelimit_connections_per_ip` bounds the Engine.IO
// connections of one client IP (a connection counts from its first namespace
// CONNECT until its last namespace socket is gone; more namespaces over the
// same connection are free) across all the workers of a node: the counts live
// in a table shared by the node's processes (made by the master when it loads
// the configuration, before it forks the workers, like the metrics table), one
// share per process so that a crashed worker's share is dropped. Over the limit
// the CONNECT is refused with CONNECT_ERROR {code: RATE_LIMITED}. Behind a
// reverse proxy the client IP comes from X-Forwarded-For when the peer is one
// of `ratelimit_trusted_proxies`.

#include <depth-realtime/module.h>
#include <depth-realtime/redis.h>

#include <arpa/inet.h>
#include <signal.h>
#include <sys/mman.h>
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
// Users per sync transaction (a tick sends as many as it needs): Redis
// serves other clients between two.
constexpr size_t kMaxUsersPerSync = 500;
// A CONNECT still waiting for the other hooks after this long is forgotten.
constexpr int64_t kPendingConnectMs = 120000;

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
     "How often each worker sends its event counts to Redis and reads the cluster's (the limit may be exceeded "
     "by what other workers admit in about this long)."},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

// ------------------------------------------------------ node-wide IP counts

// Open connections per client IP, in an anonymous shared mapping that the
// master makes (check_conf runs there before the workers fork) and every
// worker inherits. Each process owns its own entry per IP, so the share of a
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

IpEntry* g_ip_table = nullptr;

bool make_ip_table() {
  if (g_ip_table) return true;
  void* p = mmap(nullptr, sizeof(IpEntry) * kIpEntries, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  g_ip_table = static_cast<IpEntry*>(p);  // zero-filled: every entry unused
  return true;
}

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

// One user's events in one zone, as this worker knows them.
struct UserState {
  std::deque<int64_t> local;          // times of the events admitted here, oldest first
  int64_t bucket_ms = 0;              // width of the buckets below; a change (reload) resets them
  std::map<int64_t, int64_t> unsent;  // bucket -> events admitted here, not yet sent to Redis
  std::map<int64_t, int64_t> sent;    // bucket -> events admitted here and counted in Redis
  std::map<int64_t, int64_t> others;  // bucket -> events the other workers and nodes admitted
  uint64_t limit = 0;                 // of the last event's namespace, for the tick
  int64_t window_ms = 0;
  bool dirty = false;    // used since the last sync: read the totals again
  bool syncing = false;  // a sync is in flight
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
  std::string totals_read;  // the budget whose totals the CONNECT read
};

struct State {
  dr::Worker* w = nullptr;
  const dr::Module* self = nullptr;
  std::unique_ptr<dr::Timeout> timer;  // armed only while there is something to sync or to expire
  std::unordered_map<std::string, UserState> users;               // by budget_of()
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

// depth:ratelimit:{default|60000|u:42}:6000:285000123 = the events of bucket
// 285000123 (6000 ms wide); the braces keep one budget's keys in one Redis
// Cluster slot.
std::string redis_key(const std::string& budget, int64_t bucket_ms, int64_t bucket) {
  return dr::redis::key("ratelimit:{" + budget + "}:" + std::to_string(bucket_ms) + ":" + std::to_string(bucket));
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
  }
  int64_t first = first_bucket(now, window, bucket);
  for (auto* m : {&u.unsent, &u.sent, &u.others}) m->erase(m->begin(), m->lower_bound(first));
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

bool on_event(State& st, dr::Socket& s, dr::Event& ev) {
  const RateConf* conf = conf_of(st, s.nsp());
  if (!conf || !conf->enabled) return true;
  ensure_timer(st);
  const int64_t now = wall_ms(), window = conf->window(), bucket = conf->bucket();
  UserState& u = st.users[budget_of(st, *conf, s)];
  prune(u, now, window, bucket);
  u.dirty = true;
  u.limit = conf->limit;
  u.window_ms = window;
  int64_t used = int64_t(u.local.size()) + others_count(u);
  if (used < int64_t(conf->limit)) {
    u.local.push_back(now);
    if (dr::redis::configured()) u.unsent[floor_div(now, bucket)]++;
    return true;
  }

  st.w->metric_add(kMetric, dr::metric_label("kind", "event"));
  send_rate_limited(s, ev, conf->message, retry_after(u, now, window, bucket, used - int64_t(conf->limit) + 1));
  // Persistent abuse: more refusals than the limit within one window.
  auto& refused = st.refusals[socket_key(s)];
  while (!refused.empty() && refused.front() <= now - window) refused.pop_front();
  refused.push_back(now);
  if (refused.size() > conf->limit) {
    const std::string* user = s.get("userId");
    dr::logf(dr::LogLevel::Info, "ratelimit: %s socket %s of user %s disconnected: %zu events refused within %lld ms",
             s.nsp().c_str(), s.id().c_str(), user ? user->c_str() : "-", refused.size(), (long long)window);
    st.refusals.erase(socket_key(s));
    s.disconnect();
  }
  return false;
}

// ------------------------------------------------------------ Redis sync

// An MGET of the buckets first, first + 1, ...: the others' share of each is
// its total less what this worker has sent.
void apply_totals(UserState& u, int64_t first, const dr::redis::Reply& mget) {
  for (size_t i = 0; i < mget.elements.size(); i++) {
    int64_t b = first + int64_t(i);
    auto mine = u.sent.find(b);
    int64_t others = mget.elements[i].as_int(0) - (mine != u.sent.end() ? mine->second : 0);
    if (others > 0) u.others[b] = others;
    else u.others.erase(b);
  }
}

std::vector<std::string> mget_window(const std::string& user, int64_t now, int64_t window, int64_t bucket) {
  std::vector<std::string> mget{"MGET"};
  for (int64_t b = first_bucket(now, window, bucket); b <= floor_div(now, bucket); b++)
    mget.push_back(redis_key(user, bucket, b));
  return mget;
}

struct SyncItem {
  std::string user;
  int64_t bucket_ms;
  std::map<int64_t, int64_t> inflight;  // bucket -> count sent by this transaction
  int64_t first_bucket;                 // the MGET reads first_bucket, first_bucket + 1, ...
  size_t mget;                          // index of the MGET's reply
};

void sync_done(const std::weak_ptr<State>& weak, std::vector<SyncItem>& items, const dr::redis::Reply& r) {
  auto st = weak.lock();
  if (!st) return;
  bool ok = r.type == dr::redis::Reply::Type::Array;
  for (auto& e : r.elements) ok = ok && !e.error();
  if (!ok && !st->redis_warned) {
    dr::logf(dr::LogLevel::Warn, "ratelimit: cannot sync event counts with Redis (%s); limiting per worker meanwhile",
             r.error() ? r.str.c_str() : "unexpected reply");
    st->redis_warned = true;
  } else if (ok && st->redis_warned) {
    dr::log(dr::LogLevel::Notice, "ratelimit: event counts are synced with Redis again");
    st->redis_warned = false;
  }
  for (auto& item : items) {
    auto it = st->users.find(item.user);
    if (it == st->users.end()) continue;
    UserState& u = it->second;
    u.syncing = false;
    if (u.bucket_ms != item.bucket_ms) continue;  // reset meanwhile: these buckets are gone
    if (!ok || item.mget >= r.elements.size() || r.elements[item.mget].type != dr::redis::Reply::Type::Array) {
      for (auto& [b, n] : item.inflight) u.unsent[b] += n;  // sent again with the next sync
      continue;
    }
    for (auto& [b, n] : item.inflight) u.sent[b] += n;
    apply_totals(u, item.first_bucket, r.elements[item.mget]);
  }
}

void send_sync(std::vector<std::vector<std::string>>& cmds, std::vector<SyncItem>& items) {
  if (items.empty()) return;
  dr::redis::transaction(std::move(cmds), [weak = std::weak_ptr<State>(g_state), items = std::move(items)](
                                              dr::redis::Reply r) mutable { sync_done(weak, items, r); });
  cmds.clear();
  items.clear();
}

void sync(State& st, int64_t now) {
  if (!dr::redis::ready()) return;
  std::vector<std::vector<std::string>> cmds;
  std::vector<SyncItem> items;
  for (auto& [key, u] : st.users) {
    if (u.syncing || !u.bucket_ms) continue;
    bool near_limit = u.limit && (int64_t(u.local.size()) + others_count(u)) * 2 >= int64_t(u.limit);
    if (!u.dirty && u.unsent.empty() && !near_limit) continue;
    SyncItem item{key, u.bucket_ms, std::move(u.unsent), first_bucket(now, u.window_ms, u.bucket_ms), 0};
    u.unsent.clear();
    std::string ttl = std::to_string(u.window_ms + 2 * u.bucket_ms);
    for (auto& [b, n] : item.inflight) {
      std::string k = redis_key(key, u.bucket_ms, b);
      cmds.push_back({"INCRBY", k, std::to_string(n)});
      cmds.push_back({"PEXPIRE", k, ttl});
    }
    item.mget = cmds.size();
    cmds.push_back(mget_window(key, now, u.window_ms, u.bucket_ms));
    u.syncing = true;
    u.dirty = false;
    items.push_back(std::move(item));
    if (items.size() == kMaxUsersPerSync) send_sync(cmds, items);
  }
  send_sync(cmds, items);
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
  st.unconnected.erase(key);
  st.tracked.erase(it);
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

// Before a socket's first event, its user's cluster-wide totals (one MGET,
// the CONNECT waits for it), so that a user moving to another worker or node
// keeps their budget. Redis away: the CONNECT goes on without.
void read_totals(State& st, dr::Socket& s, const dr::ConnectNext& next) {
  const RateConf* conf = conf_of(st, s.nsp());
  auto tracked = st.tracked.find(socket_key(s));
  if (!conf || !conf->enabled || !dr::redis::ready() || tracked == st.tracked.end()) return next(std::nullopt);
  std::string budget = budget_of(st, *conf, s);
  tracked->second.totals_read = budget;
  const int64_t now = wall_ms(), window = conf->window(), bucket = conf->bucket(), limit = int64_t(conf->limit);
  dr::redis::command(mget_window(budget, now, window, bucket),
                     [weak = std::weak_ptr<State>(g_state), budget, now, window, bucket, limit, next](dr::redis::Reply r) {
                       auto st = weak.lock();
                       if (st && r.type == dr::redis::Reply::Type::Array) {
                         UserState& u = st->users[budget];
                         prune(u, wall_ms(), window, bucket);
                         if (!u.limit) u.limit = uint64_t(limit);
                         if (!u.window_ms) u.window_ms = window;
                         apply_totals(u, first_bucket(now, window, bucket), r);
                         ensure_timer(*st);
                       }
                       next(std::nullopt);
                     });
}

void on_connect(State& st, dr::Socket& s, const dr::ConnectNext& next) {
  if (st.tracked.count(socket_key(s))) return next(std::nullopt);
  const RateConf* server = conf_of(st);
  uint64_t max = server ? server->connections_per_ip : 0;
  if (track_socket(st, s, false, max)) return read_totals(st, s, next);
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
  // The hook could not read the totals (recovery, Redis away, or it ran
  // before auth_jwt knew the user): the next sync reads them.
  const RateConf* conf = conf_of(st, s.nsp());
  if (conf && conf->enabled && dr::redis::configured()) {
    std::string budget = budget_of(st, *conf, s);
    if (budget == it->second.totals_read) return;
    UserState& u = st.users[budget];
    prune(u, wall_ms(), conf->window(), conf->bucket());
    u.dirty = true;
    u.limit = conf->limit;
    u.window_ms = conf->window();
    ensure_timer(st);
  }
}

// -------------------------------------------------------------------- tick

// Runs every sync interval while users have counts to sync or to age out, or
// CONNECTs are pending; an idle worker has no timer armed. It visits only
// those, never every connected socket.
void tick(State& st) {
  const int64_t now = wall_ms();
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
  if (dr::redis::configured()) sync(st, now);
  for (auto it = st.users.begin(); it != st.users.end();) {
    UserState& u = it->second;
    if (u.window_ms) prune(u, now, u.window_ms, u.bucket_ms);
    bool idle = !u.syncing && !u.dirty && u.local.empty() && u.unsent.empty() && u.others.empty();
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

bool check_conf(dr::ModuleConf*, std::string& err) {
  // In the master, before the workers fork: they inherit the table.
  if (!make_ip_table()) {
    err = std::string("cannot map the connection table: ") + strerror(errno);
    return false;
  }
  return true;
}

bool init_worker(dr::Worker& w, const dr::Module& self) {
  if (!g_ip_table) {
    dr::log(dr::LogLevel::Warn, "ratelimit: no shared connection table; connections are limited per worker");
    if (!make_ip_table()) return false;
  }
  g_state = std::make_shared<State>();
  State& st = *g_state;
  st.w = &w;
  st.self = &self;

  w.metric_declare(kMetric, dr::MetricType::Counter,
                   "Client events and connections refused by the rate limits, by kind");
  // Both series exist from the start, at 0.
  w.metric_add(kMetric, dr::metric_label("kind", "event"), 0);
  w.metric_add(kMetric, dr::metric_label("kind", "connection"), 0);

  w.use_event("", [&st](dr::Socket& s, dr::Event& ev) { return on_event(st, s, ev); }, dr::EventPhase::Limit);
  w.use_connect("", [&st](dr::Socket& s, dr::ConnectNext next) { on_connect(st, s, next); });
  w.on_connection("", [&st](dr::Socket& s) { on_connection(st, s); });
  w.on_disconnect("", [&st](dr::Socket& s, std::string_view) {
    release_socket(st, socket_key(s));
    st.refusals.erase(socket_key(s));
  });

  st.timer = w.timeout([&st] { on_timer(st); });
  return true;
}

void exit_worker(dr::Worker&, const dr::Module&) {
  if (g_state) g_state->timer.reset();
}

const dr::Module kModule{
    dr::kModuleAbi, DR_MODULE_SIGNATURE, "ratelimit", kDirectives,
    create_conf,    check_conf,          init_worker, exit_worker,
};

}  // namespace

DR_MODULE_EXPORT(kModule)
