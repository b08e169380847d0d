// dr_loadgen: a load generator for Socket.IO v5 servers (Engine.IO v4 over WebSocket).
//
// One process, one libuv loop, non-blocking throughout. Every connection is a
// hand-written RFC 6455 client that speaks just enough Engine.IO / Socket.IO to
// authenticate with a self-signed HS256 JWT, join namespaces, answer heartbeats
// and exchange acknowledged events. A Fleet owns the connections; a Scenario
// drives the fleet and prints one JSON object on stdout. Progress goes to stderr.
//
//   dr_loadgen idle --port 3000 --secret S --connections 10000 --server-pid-tree PID
//   dr_loadgen echo --port 3000 --secret S --connections 200 --rate 50 --duration 10
//   dr_loadgen fanout --port 3000 --port2 3001 --secret S --connections 1000 --rate 20 --duration 10
//   dr_loadgen chat --port 3000 --secret S --conversations 50 --members 20 --rate 0 --duration 10
//
// Adding a scenario: derive from ScenarioBase, implement start() and report(),
// react to Fleet callbacks (on_ready, on_established, on_sio, on_lost), and add
// it to make_scenario().
//
// Loopback only: the tool refuses any other destination.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

// ------------------------------------------------------------------ helpers

uint64_t now_ns() { return uv_hrtime(); }
double seconds_between(uint64_t a_ns, uint64_t b_ns) { return double(b_ns - a_ns) / 1e9; }

bool quiet = false;

void progress(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void progress(const char* fmt, ...) {
  if (quiet) return;
  va_list ap;
  va_start(ap, fmt);
  std::fputs("loadgen: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
}

std::string base64(std::string_view in, bool url) {
  static constexpr char kStd[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  static constexpr char kUrl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const char* a = url ? kUrl : kStd;
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = uint8_t(in[i]) << 16 | uint8_t(in[i + 1]) << 8 | uint8_t(in[i + 2]);
    out += a[v >> 18];
    out += a[(v >> 12) & 63];
    out += a[(v >> 6) & 63];
    out += a[v & 63];
  }
  size_t rest = in.size() - i;
  if (rest > 0) {
    uint32_t v = uint8_t(in[i]) << 16 | (rest == 2 ? uint8_t(in[i + 1]) << 8 : 0);
    out += a[v >> 18];
    out += a[(v >> 12) & 63];
    if (rest == 2) out += a[(v >> 6) & 63];
    if (!url) out.append(rest == 1 ? "==" : "=");  // base64url (JWT) has no padding
  }
  return out;
}

std::string sha1(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr);
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), md, &len);
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string json_escape(std::string_view s) {
  std::string out;
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (ch < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", ch);
          out += buf;
        } else {
          out += char(ch);
        }
    }
  }
  return out;
}

// Mask keys and Sec-WebSocket-Key need to be unpredictable-ish, not secret:
// a fast xorshift is enough and keeps OpenSSL's RNG out of the hot path.
class Rng {
 public:
  Rng() : s_(uv_hrtime() ^ (uint64_t(getpid()) << 32) ^ 0x9e3779b97f4a7c15ULL) {}
  uint64_t next() {
    s_ ^= s_ << 13;
    s_ ^= s_ >> 7;
    s_ ^= s_ << 17;
    return s_;
  }

 private:
  uint64_t s_;
};
Rng rng;

// HS256 token with the claims the daemon's auth_jwt module and the Node
// reference both read: userId, role, iat, exp.
std::string make_jwt(std::string_view secret, std::string_view user_id, int64_t ttl_s = 3600) {
  const int64_t now = int64_t(std::time(nullptr));
  static const std::string header = base64(R"({"alg":"HS256","typ":"JWT"})", true);
  std::string claims = "{\"userId\":\"" + json_escape(user_id) + "\",\"role\":\"user\",\"iat\":" +
                       std::to_string(now) + ",\"exp\":" + std::to_string(now + ttl_s) + "}";
  std::string signing_input = header + "." + base64(claims, true);
  return signing_input + "." + base64(hmac_sha256(secret, signing_input), true);
}

// Milliseconds of CPU this process has used (to show the loadgen is not the bottleneck).
double self_cpu_ms() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

// --------------------------------------------------------------- JSON output

class JsonObject {
 public:
  JsonObject& str(std::string_view key, std::string_view v) {
    return raw(key, "\"" + json_escape(v) + "\"");
  }
  JsonObject& integer(std::string_view key, int64_t v) { return raw(key, std::to_string(v)); }
  JsonObject& boolean(std::string_view key, bool v) { return raw(key, v ? "true" : "false"); }
  // A figure that may be unknown (no server pids, nothing measured): null then.
  JsonObject& number(std::string_view key, std::optional<double> v, int decimals = 3) {
    if (!v || !std::isfinite(*v)) return raw(key, "null");
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, *v);
    return raw(key, buf);
  }
  JsonObject& raw(std::string_view key, std::string_view json) {
    if (!body_.empty()) body_ += ',';
    body_ += '"';
    body_ += json_escape(key);
    body_ += "\":";
    body_ += json;
    return *this;
  }
  std::string text() const { return "{" + body_ + "}"; }

 private:
  std::string body_;
};

// ----------------------------------------------------------------- options

struct Options {
  std::string scenario;
  std::string host = "127.0.0.1";
  int port = 0;
  std::string path = "/socket.io/";
  size_t connections = 0;  // 0: the scenario's default
  uint32_t concurrency = 200;
  std::vector<std::string> namespaces{"/", "/chat"};
  std::string secret;
  double settle_s = 5;
  uint32_t sources = 1;  // 127.0.0.1.. source addresses: ~28k connections each to one port
  uint32_t source_first = 1;
  double handshake_timeout_s = 15;
  double max_seconds = 900;
  std::vector<pid_t> server_pids;
  pid_t server_pid_tree = 0;
  // echo
  double rate = 20;  // events per second per connection; 0 = closed loop
  uint32_t window = 1;
  double duration_s = 10;
  size_t payload_bytes = 64;
  std::string echo_nsp = "/";
  uint32_t max_outstanding = 1000;
  double drain_s = 5;
  // fanout
  int port2 = 0;  // a second server (another process of the cluster); 0: all on --port
  std::string room = "bench-fanout";
  // chat
  uint32_t conversations = 50;
  uint32_t members = 20;     // per conversation; connections = conversations x members
  uint32_t senders = 1;      // per conversation (its first members)
  uint64_t messages = 0;     // closed loop: stop after this many (0: --duration)
  std::string chat_nsp = "/chat";
  // every scenario
  uint64_t user_offset = 0;  // user ids are u<offset + index>: unique over several loadgens
  std::string malloc_count_dir;  // DR_MALLOC_COUNT_DIR of the server (libdr_malloc_count.so)
  std::vector<pid_t> redis_pids;  // chat: Redis CPU per message
};

void usage() {
  std::fputs(
      "usage: dr_loadgen SCENARIO --port N --secret S [options]\n"
      "scenarios:\n"
      "  idle   open N connections, hold them, sample the server, close\n"
      "  echo   M connections send acked bench:echo events for D seconds\n"
      "  fanout N connections over --port and --port2 join one room; one of them\n"
      "         broadcasts bench:msg to it at --rate per second for D seconds\n"
      "  chat   C conversations x M members join with chat:join; S senders per\n"
      "         conversation send acked chat:message (stored, broadcast to the room)\n"
      "options:\n"
      "  --host H                 loopback address (127.0.0.1, ::1, localhost)\n"
      "  --port N                 server port (required)\n"
      "  --path P                 Engine.IO path (/socket.io/)\n"
      "  --secret S               HS256 secret (default: $JWT_SECRET)\n"
      "  --connections N          idle: 10000, echo: 100\n"
      "  --concurrency N          handshakes in flight at once (200)\n"
      "  --namespaces LIST        comma list of namespaces to join (/,/chat)\n"
      "  --handshake-timeout SEC  per connection (15)\n"
      "  --settle SEC             idle: hold time before sampling (5); the server's CPU over it\n"
      "                           is its idle cost (cover a ping interval to include pings)\n"
      "  --sources N              IPv4: bind connections to N source addresses (beyond ~28k)\n"
      "  --source-first K         the first of them is 127.0.0.K (1)\n"
      "  --max-seconds SEC        hard limit for the whole run (900)\n"
      "  --server-pids LIST       comma list of server pids to sample\n"
      "  --server-pid-tree PID    sample PID and all its descendants\n"
      "  --rate R                 echo: events/s per connection, 0 = closed loop (20)\n"
      "  --window W               echo closed loop: acks outstanding per connection (1)\n"
      "  --duration SEC           echo: measured sending time (10)\n"
      "  --payload BYTES          echo: padding in each event (64)\n"
      "  --echo-nsp NSP           echo: namespace to send on (/)\n"
      "  --max-outstanding N      echo: per connection, beyond it sends are skipped (1000)\n"
      "  --port2 N                fanout: second server; connections alternate between the two\n"
      "  --room NAME              fanout: the room (bench-fanout)\n"
      "  --conversations C        chat: conversations b0..b<C-1> (50)\n"
      "  --members M              chat: members per conversation (20)\n"
      "  --senders S              chat: senders per conversation (1)\n"
      "  --rate R                 chat: messages/s in total, 0 = closed loop (--window per sender)\n"
      "  --messages K             chat/echo closed loop: stop after K messages instead of --duration\n"
      "  --chat-nsp NSP           chat: namespace (/chat)\n"
      "  --user-offset N          user ids u<N + index> (0): unique over several loadgens\n"
      "  --malloc-count-dir DIR   the servers' libdr_malloc_count.so counters: allocations per event\n"
      "  --redis-pids LIST        chat: redis-server pids, their CPU over the measured time\n"
      "  --quiet                  no progress on stderr\n",
      stderr);
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  while (true) {
    size_t p = s.find(sep);
    std::string_view part = s.substr(0, p);
    if (!part.empty()) out.emplace_back(part);
    if (p == std::string_view::npos) break;
    s.remove_prefix(p + 1);
  }
  return out;
}

template <class T>
bool parse_number(std::string_view s, T& out) {
  if constexpr (std::is_floating_point_v<T>) {
    std::string tmp(s);
    char* end = nullptr;
    double v = std::strtod(tmp.c_str(), &end);
    if (tmp.empty() || *end || !std::isfinite(v) || v < 0) return false;
    out = T(v);
    return true;
  } else {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
  }
}

bool parse_options(int argc, char** argv, Options& o) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i], value;
    if (name.rfind("--", 0) != 0) {
      if (!o.scenario.empty()) {
        std::fprintf(stderr, "loadgen: unexpected argument %s\n", name.c_str());
        return false;
      }
      o.scenario = name;
      continue;
    }
    if (name == "--help" || name == "-h") return false;
    if (name == "--quiet") {
      quiet = true;
      continue;
    }
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      std::fprintf(stderr, "loadgen: %s needs a value\n", name.c_str());
      return false;
    }
    bool ok = true;
    if (name == "--scenario") o.scenario = value;
    else if (name == "--host") o.host = value;
    else if (name == "--port") ok = parse_number(value, o.port) && o.port > 0 && o.port < 65536;
    else if (name == "--path") o.path = value;
    else if (name == "--secret") o.secret = value;
    else if (name == "--connections") ok = parse_number(value, o.connections) && o.connections > 0;
    else if (name == "--concurrency") ok = parse_number(value, o.concurrency) && o.concurrency > 0;
    else if (name == "--namespaces") {
      o.namespaces = split(value, ',');
      ok = !o.namespaces.empty() && o.namespaces.size() <= 32;
      for (auto& n : o.namespaces) ok = ok && n[0] == '/' && n.find_first_of(",\"\\") == std::string::npos;
    }
    else if (name == "--handshake-timeout") ok = parse_number(value, o.handshake_timeout_s) && o.handshake_timeout_s > 0;
    else if (name == "--settle") ok = parse_number(value, o.settle_s);
    else if (name == "--sources") ok = parse_number(value, o.sources);
    else if (name == "--source-first") ok = parse_number(value, o.source_first);
    else if (name == "--max-seconds") ok = parse_number(value, o.max_seconds) && o.max_seconds > 0;
    else if (name == "--server-pids") {
      for (auto& p : split(value, ',')) {
        pid_t pid = 0;
        ok = ok && parse_number(std::string_view(p), pid) && pid > 0;
        o.server_pids.push_back(pid);
      }
    }
    else if (name == "--redis-pids") {
      for (auto& p : split(value, ',')) {
        pid_t pid = 0;
        ok = ok && parse_number(std::string_view(p), pid) && pid > 0;
        o.redis_pids.push_back(pid);
      }
    }
    else if (name == "--server-pid-tree") ok = parse_number(value, o.server_pid_tree) && o.server_pid_tree > 0;
    else if (name == "--rate") ok = parse_number(value, o.rate) && o.rate <= 100000;
    else if (name == "--window") ok = parse_number(value, o.window) && o.window > 0 && o.window <= 10000;
    else if (name == "--duration") ok = parse_number(value, o.duration_s) && o.duration_s > 0 && o.duration_s <= 3600;
    else if (name == "--payload") ok = parse_number(value, o.payload_bytes) && o.payload_bytes <= 900000;
    else if (name == "--echo-nsp") {
      o.echo_nsp = value;
      ok = !value.empty() && value[0] == '/' && value.find_first_of(",\"\\") == std::string::npos;
    }
    else if (name == "--max-outstanding") ok = parse_number(value, o.max_outstanding) && o.max_outstanding > 0;
    else if (name == "--drain") ok = parse_number(value, o.drain_s);
    else if (name == "--port2") ok = parse_number(value, o.port2) && o.port2 > 0 && o.port2 < 65536;
    else if (name == "--room") ok = !(o.room = value).empty() && value.find_first_of("\"\\") == std::string::npos;
    else if (name == "--conversations") ok = parse_number(value, o.conversations) && o.conversations > 0;
    else if (name == "--members") ok = parse_number(value, o.members) && o.members > 0;
    else if (name == "--senders") ok = parse_number(value, o.senders) && o.senders > 0;
    else if (name == "--messages") ok = parse_number(value, o.messages);
    else if (name == "--chat-nsp") {
      o.chat_nsp = value;
      ok = !value.empty() && value[0] == '/' && value.find_first_of(",\"\\") == std::string::npos;
    }
    else if (name == "--user-offset") ok = parse_number(value, o.user_offset);
    else if (name == "--malloc-count-dir") ok = !(o.malloc_count_dir = value).empty();
    else {
      std::fprintf(stderr, "loadgen: unknown option %s\n", name.c_str());
      return false;
    }
    if (!ok) {
      std::fprintf(stderr, "loadgen: bad value for %s: %s\n", name.c_str(), value.c_str());
      return false;
    }
  }
  if (o.scenario.empty() || o.port == 0) {
    std::fputs("loadgen: a scenario and --port are required\n", stderr);
    return false;
  }
  if (o.secret.empty()) {
    if (const char* s = std::getenv("JWT_SECRET")) o.secret = s;
  }
  if (o.secret.empty()) {
    std::fputs("loadgen: --secret (or JWT_SECRET) is required\n", stderr);
    return false;
  }
  if (o.path.empty() || o.path[0] != '/') o.path.insert(0, "/");
  if (o.path.back() != '/') o.path += '/';
  return true;
}

// Resolves the host to a loopback socket address, or explains why not.
bool loopback_address(const Options& o, sockaddr_storage& out, std::string& host_header, std::string& err) {
  std::string host = o.host == "localhost" ? "127.0.0.1" : o.host;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::memset(&out, 0, sizeof out);
  in_addr a4{};
  in6_addr a6{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    if ((ntohl(a4.s_addr) >> 24) != 127) {
      err = "refusing non-loopback host " + o.host;
      return false;
    }
    uv_ip4_addr(host.c_str(), o.port, reinterpret_cast<sockaddr_in*>(&out));
    host_header = host + ":" + std::to_string(o.port);
    return true;
  }
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    bool v4_loop = IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    if (!IN6_IS_ADDR_LOOPBACK(&a6) && !v4_loop) {
      err = "refusing non-loopback host " + o.host;
      return false;
    }
    uv_ip6_addr(host.c_str(), o.port, reinterpret_cast<sockaddr_in6*>(&out));
    host_header = "[" + host + "]:" + std::to_string(o.port);
    return true;
  }
  err = "host must be a loopback address (127.0.0.1, ::1 or localhost), got " + o.host;
  return false;
}

// ------------------------------------------------------------ server probe

// Reads a server's memory and CPU from /proc. With a tree root, the process
// set is resolved at every sample, so workers forked later are counted.
class ServerProbe {
 public:
  struct Sample {
    uint64_t rss_kb = 0;
    uint64_t cpu_ticks = 0;
    size_t processes = 0;
    uint64_t allocs = 0;       // heap allocations so far (libdr_malloc_count.so), summed
    uint64_t alloc_bytes = 0;
    size_t counted = 0;        // processes with a counter file
  };

  ServerProbe(std::vector<pid_t> pids, pid_t tree_root, std::string malloc_count_dir)
      : pids_(std::move(pids)), root_(tree_root), malloc_dir_(std::move(malloc_count_dir)) {}

  bool enabled() const { return root_ > 0 || !pids_.empty(); }

  std::optional<Sample> sample() const {
    if (!enabled()) return std::nullopt;
    Sample s;
    for (pid_t pid : processes()) {
      auto rss = read_rss_kb(pid);
      auto cpu = read_cpu_ticks(pid);
      if (!rss || !cpu) continue;  // exited meanwhile
      s.rss_kb += *rss;
      s.cpu_ticks += *cpu;
      ++s.processes;
      if (auto a = read_alloc_counters(pid)) {
        s.allocs += a->first;
        s.alloc_bytes += a->second;
        ++s.counted;
      }
    }
    if (s.processes == 0) return std::nullopt;
    return s;
  }

  static double ticks_to_ms(uint64_t ticks) { return double(ticks) * 1000.0 / double(sysconf(_SC_CLK_TCK)); }

 private:
  std::vector<pid_t> processes() const {
    std::set<pid_t> all(pids_.begin(), pids_.end());
    if (root_ > 0) {
      std::vector<pid_t> todo{root_};
      while (!todo.empty()) {
        pid_t p = todo.back();
        todo.pop_back();
        if (!all.insert(p).second && p != root_) continue;
        for (pid_t c : children(p)) todo.push_back(c);
      }
    }
    return {all.begin(), all.end()};
  }

  // /proc/<pid>/task/*/children needs CONFIG_PROC_CHILDREN; without it, scan
  // every process's parent pid instead.
  static std::vector<pid_t> children(pid_t pid) {
    namespace fs = std::filesystem;
    std::vector<pid_t> out;
    std::error_code ec;
    bool have_children_files = false;
    for (auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
      std::ifstream f(task.path() / "children");
      if (!f) continue;
      have_children_files = true;
      pid_t c;
      while (f >> c) out.push_back(c);
    }
    if (have_children_files) return out;
    for (auto& entry : fs::directory_iterator("/proc", ec)) {
      pid_t c = 0;
      std::string name = entry.path().filename();
      if (!parse_number(std::string_view(name), c)) continue;
      auto fields = stat_fields(c);
      if (fields.size() > 1 && fields[1] == std::to_string(pid)) out.push_back(c);
    }
    return out;
  }

  // Fields of /proc/<pid>/stat after the command name: [0] = state (field 3).
  static std::vector<std::string> stat_fields(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(f, line)) return {};
    size_t close = line.rfind(')');
    if (close == std::string::npos) return {};
    std::istringstream rest(line.substr(close + 1));
    std::vector<std::string> out;
    for (std::string t; rest >> t;) out.push_back(t);
    return out;
  }

  static std::optional<uint64_t> read_cpu_ticks(pid_t pid) {
    auto f = stat_fields(pid);
    if (f.size() < 13) return std::nullopt;  // utime = field 14, stime = field 15
    uint64_t ut = 0, st = 0;
    if (!parse_number(std::string_view(f[11]), ut) || !parse_number(std::string_view(f[12]), st)) return std::nullopt;
    return ut + st;
  }

  static std::optional<uint64_t> read_rss_kb(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(f, line);) {
      if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
    }
    return std::nullopt;
  }

  // The counter file of libdr_malloc_count.so: magic, calls, bytes (uint64 each).
  std::optional<std::pair<uint64_t, uint64_t>> read_alloc_counters(pid_t pid) const {
    if (malloc_dir_.empty()) return std::nullopt;
    std::ifstream f(malloc_dir_ + "/" + std::to_string(pid), std::ios::binary);
    uint64_t v[3] = {};
    if (!f.read(reinterpret_cast<char*>(v), sizeof v) || v[0] != 0x6d616c6c6f63636eULL) return std::nullopt;
    return std::pair(v[1], v[2]);
  }

  std::vector<pid_t> pids_;
  pid_t root_;
  std::string malloc_dir_;
};

// Heap allocations between two samples, per event (null without counters).
void add_alloc_figures(JsonObject& j, const std::optional<ServerProbe::Sample>& a,
                       const std::optional<ServerProbe::Sample>& b, size_t events, std::string_view per) {
  if (!a || !b || a->counted == 0 || b->counted != a->counted || events == 0) return;
  j.integer("allocs_counted_events", int64_t(events))
      .number(std::string("allocs_per_") + std::string(per), double(b->allocs - a->allocs) / double(events), 1)
      .number(std::string("alloc_bytes_per_") + std::string(per), double(b->alloc_bytes - a->alloc_bytes) / double(events), 0);
}

// ---------------------------------------------------------------- histogram

// Log-linear histogram of microsecond values: each power of two is split in
// 32 steps (about 3% resolution). Fixed size, no allocation per sample.
class Histogram {
 public:
  void add(uint64_t v) {
    ++counts_[index(v)];
    ++count_;
    max_ = std::max(max_, v);
  }
  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  std::optional<double> percentile(double p) const {
    if (count_ == 0) return std::nullopt;
    uint64_t rank = std::max<uint64_t>(1, uint64_t(std::ceil(p / 100.0 * double(count_))));
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return double(std::min(value(i), max_));
    }
    return double(max_);
  }

 private:
  static constexpr unsigned kSubBits = 5;
  static constexpr uint64_t kSub = 1u << kSubBits;
  static size_t index(uint64_t v) {
    if (v < kSub) return size_t(v);
    unsigned shift = unsigned(std::bit_width(v)) - 1 - kSubBits;
    return size_t((shift + 1) * kSub + ((v >> shift) - kSub));
  }
  static uint64_t value(size_t i) {  // midpoint of bucket i
    if (i < kSub) return i;
    unsigned shift = unsigned(i / kSub) - 1;
    uint64_t low = (i % kSub + kSub) << shift;
    return low + ((uint64_t(1) << shift) >> 1);
  }
  std::array<uint64_t, 64 * kSub> counts_{};
  uint64_t count_ = 0;
  uint64_t max_ = 0;
};

// ------------------------------------------------------------- libuv RAII

// The loop outlives every handle; at destruction it runs once more so that
// pending close callbacks free their handles.
class Loop {
 public:
  Loop() { uv_loop_init(&loop_); }
  ~Loop() {
    uv_run(&loop_, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop_) != 0) progress("warning: handles still open at exit");
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;
  uv_loop_t* get() { return &loop_; }

 private:
  uv_loop_t loop_;
};

// A uv handle with a callback. uv_close is asynchronous, so the handle's
// memory is handed to the close callback, which frees it.
template <class H>
class Handle {
 public:
  Handle() : box_(std::make_unique<Box>()) { box_->handle.data = box_.get(); }
  ~Handle() {
    if (!box_) return;
    uv_close(reinterpret_cast<uv_handle_t*>(&box_->handle),
             [](uv_handle_t* h) { std::unique_ptr<Box> owned(static_cast<Box*>(h->data)); });
    box_.release();  // owned by the close callback now
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

 protected:
  struct Box {
    H handle;
    std::function<void()> cb;
  };
  static void invoke(H* h) {
    auto cb = static_cast<Box*>(h->data)->cb;  // a copy: the callback may replace itself
    if (cb) cb();
  }
  std::unique_ptr<Box> box_;
};

class Timer : public Handle<uv_timer_t> {
 public:
  explicit Timer(uv_loop_t* loop) { uv_timer_init(loop, &box_->handle); }
  void start(uint64_t timeout_ms, uint64_t repeat_ms, std::function<void()> cb) {
    box_->cb = std::move(cb);
    uv_timer_start(&box_->handle, &invoke, timeout_ms, repeat_ms);
  }
  void stop() { uv_timer_stop(&box_->handle); }
};

class Signal : public Handle<uv_signal_t> {
 public:
  explicit Signal(uv_loop_t* loop) { uv_signal_init(loop, &box_->handle); }
  void start(int signum, std::function<void()> cb) {
    box_->cb = std::move(cb);
    uv_signal_start(&box_->handle, [](uv_signal_t* h, int) { invoke(h); }, signum);
    uv_unref(reinterpret_cast<uv_handle_t*>(&box_->handle));  // never keeps the loop alive
  }
};

// ----------------------------------------------------------- Socket.IO wire

// A decoded Socket.IO packet (the Engine.IO "4" already removed).
struct SioPacket {
  char type = 0;             // '0'..'6'
  std::string_view nsp = "/";
  int64_t ack_id = -1;       // -1: none
  std::string_view data;     // JSON text, may be empty
};

bool parse_sio(std::string_view s, SioPacket& p) {
  if (s.empty() || s[0] < '0' || s[0] > '6') return false;
  p.type = s[0];
  size_t i = 1;
  if (p.type == '5' || p.type == '6') {  // "<attachments>-"
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i >= s.size() || s[i] != '-') return false;
    ++i;
  }
  if (i < s.size() && s[i] == '/') {
    size_t comma = s.find(',', i);
    size_t end = comma == std::string_view::npos ? s.size() : comma;
    p.nsp = s.substr(i, end - i);
    i = comma == std::string_view::npos ? s.size() : comma + 1;
  }
  if (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    int64_t id = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') id = id * 10 + (s[i++] - '0');
    p.ack_id = id;
  }
  p.data = s.substr(i);
  return true;
}

// Engine.IO message text for a Socket.IO packet: "4" type [nsp ","] [ack id] [data].
std::string sio_text(char type, std::string_view nsp, int64_t ack_id, std::string_view data) {
  std::string s;
  s.reserve(4 + nsp.size() + 20 + data.size());
  s += '4';
  s += type;
  if (nsp != "/") {
    s += nsp;
    s += ',';
  }
  if (ack_id >= 0) s += std::to_string(ack_id);
  s += data;
  return s;
}

// ------------------------------------------------------------- connections

enum class ConnState : uint8_t {
  Idle,        // not started yet
  Connecting,  // TCP connect in progress
  Upgrading,   // HTTP upgrade sent, waiting for 101
  Opening,     // waiting for the Engine.IO open packet
  Joining,     // CONNECT sent for every namespace, waiting for the replies
  Ready,       // every namespace connected
  Closing,
  Closed,
};

class Fleet;

// Per-connection state, kept small: the 10000-connection scenario holds
// 10000 of these. Scenario-specific state lives in the scenario, by index.
struct Conn {
  uv_tcp_t tcp;  // tcp.data points back here
  uv_connect_t connect_req;
  Fleet* fleet = nullptr;
  uint32_t index = 0;
  ConnState state = ConnState::Idle;
  uint8_t frag_opcode = 0;
  uint32_t joined_mask = 0;   // bit i: namespaces[i] acknowledged
  uint64_t started_ms = 0;    // uv_now when the handshake began
  std::array<char, 28> expected_accept{};
  bool corked = false;  // inside a read callback: writes gather in `out`
  std::string rbuf;  // unparsed input; empty (no allocation) most of the time
  std::string frag;  // a fragmented WebSocket message being reassembled
  std::string out;   // corked writes
};

struct FleetConfig {
  sockaddr_storage addr{};
  std::string host_header;
  std::string path;
  std::vector<std::string> namespaces;
  std::string secret;
  uint32_t concurrency = 200;
  uint64_t handshake_timeout_ms = 15000;
  uint32_t sources = 1;  // IPv4 only: source address 127.0.0.(first + index % sources)
  uint32_t source_first = 1;
  uint64_t user_offset = 0;
};

// What a scenario hears from its fleet.
class FleetListener {
 public:
  virtual ~FleetListener() = default;
  virtual void on_ready(Conn&) {}
  virtual void on_established() = 0;  // every connection is ready or has failed
  virtual void on_sio(Conn&, const SioPacket&) {}  // packets of ready connections
  virtual void on_lost(Conn&) {}      // a ready connection went away
};

// Opens `count` connections with at most `concurrency` handshakes in flight,
// keeps them alive (pings, WebSocket control frames) and reports to a listener.
class Fleet {
 public:
  Fleet(uv_loop_t* loop, FleetConfig cfg, size_t count, FleetListener& listener)
      : loop_(loop), cfg_(std::move(cfg)), conns_(count), listener_(listener), sweeper_(loop) {
    for (size_t i = 0; i < count; ++i) {
      conns_[i].fleet = this;
      conns_[i].index = uint32_t(i);
    }
    all_joined_mask_ = cfg_.namespaces.size() >= 32 ? ~0u : (1u << cfg_.namespaces.size()) - 1;
  }
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Handles must be closed before their memory goes: if a scenario did not
  // close everything, do it here and let the loop finish the closes.
  ~Fleet() {
    for (auto& c : conns_) close_conn(c);
    while (open_handles_ > 0 && uv_run(loop_, UV_RUN_ONCE) != 0) {
    }
  }

  void open() {
    start_ns_ = now_ns();
    sweeper_.start(250, 250, [this] { sweep_timeouts(); });
    launch_more();
    check_settled();
  }

  // Closes every connection (WebSocket close frame, then the socket); `done`
  // runs once every handle is closed.
  void close_all(std::function<void()> done) {
    closing_all_ = true;
    on_all_closed_ = std::move(done);
    sweeper_.stop();
    for (auto& c : conns_) {
      if (c.state == ConnState::Opening || c.state == ConnState::Joining || c.state == ConnState::Ready) {
        try_send_now(c, ws_frame(0x8, std::string_view("\x03\xe8", 2)));  // 1000: normal closure
      }
      close_conn(c);
    }
    maybe_all_closed();
  }

  // Sends one Engine.IO text packet as a WebSocket text frame.
  void send_text(Conn& c, std::string_view eio_packet) { send_raw(c, ws_frame(0x1, eio_packet)); }

  size_t size() const { return conns_.size(); }
  Conn& conn(size_t i) { return conns_[i]; }
  size_t ready() const { return ready_; }
  size_t failed() const { return failed_; }
  size_t lost() const { return lost_; }
  size_t alive() const { return ready_ - lost_; }
  bool conn_ready(size_t i) const { return conns_[i].state == ConnState::Ready; }
  bool established() const { return settled_; }
  double establish_seconds() const { return settled_ ? seconds_between(start_ns_, settled_ns_) : 0; }
  const std::map<std::string, size_t>& failure_reasons() const { return reasons_; }
  const std::string& first_error() const { return first_error_; }
  const std::string& first_lost() const { return first_lost_; }
  const FleetConfig& config() const { return cfg_; }

  // Stops establishing: connections not started yet count as failed.
  void give_up(std::string_view reason) {
    for (size_t i = next_; i < conns_.size(); ++i) {
      ++failed_;
      ++reasons_[std::string(reason)];
    }
    next_ = conns_.size();
    for (auto& c : conns_) {
      if (c.state >= ConnState::Connecting && c.state < ConnState::Ready) fail(c, reason, "gave up");
    }
    check_settled();
  }

 private:
  // ---- connection lifecycle

  void launch_more() {
    if (launching_) return;  // a synchronous failure below re-enters; the loop continues
    launching_ = true;
    while (in_flight_ < cfg_.concurrency && next_ < conns_.size() && !closing_all_) start(conns_[next_++]);
    launching_ = false;
  }

  void start(Conn& c) {
    ++in_flight_;
    c.started_ms = uv_now(loop_);
    if (int rc = uv_tcp_init(loop_, &c.tcp); rc != 0) {
      c.state = ConnState::Closed;  // nothing to close
      count_failure(c, "connect", uv_strerror(rc));
      return;
    }
    ++open_handles_;
    c.tcp.data = &c;
    c.connect_req.data = &c;
    c.state = ConnState::Connecting;
    uv_tcp_nodelay(&c.tcp, 1);
    if ((cfg_.sources > 1 || cfg_.source_first != 1) && cfg_.addr.ss_family == AF_INET) {
      sockaddr_in src{};
      src.sin_family = AF_INET;
      src.sin_addr.s_addr = htonl((127u << 24) | uint32_t(cfg_.source_first + c.index % cfg_.sources));
      if (int brc = uv_tcp_bind(&c.tcp, reinterpret_cast<const sockaddr*>(&src), 0); brc != 0)
        return fail(c, "bind", uv_strerror(brc));
    }
    int rc = uv_tcp_connect(&c.connect_req, &c.tcp, reinterpret_cast<const sockaddr*>(&cfg_.addr),
                            [](uv_connect_t* req, int status) {
                              auto& c = *static_cast<Conn*>(req->data);
                              c.fleet->on_connect(c, status);
                            });
    if (rc != 0) fail(c, "connect", uv_strerror(rc));
  }

  void on_connect(Conn& c, int status) {
    if (status == UV_ECANCELED || c.state != ConnState::Connecting) return;
    if (status < 0) return fail(c, "connect", uv_strerror(status));
    c.state = ConnState::Upgrading;
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c.tcp),
                  [](uv_handle_t*, size_t, uv_buf_t* buf) {
                    // One buffer for every read: callbacks run one at a time on this
                    // loop, and leftovers are copied into the connection's rbuf.
                    static char shared[64 * 1024];
                    *buf = uv_buf_init(shared, sizeof shared);
                  },
                  [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                    auto& c = *static_cast<Conn*>(s->data);
                    c.fleet->on_read(c, n, buf->base);
                  });
    std::string raw_key(16, '\0');
    for (size_t i = 0; i < 16; i += 8) {
      uint64_t r = rng.next();
      std::memcpy(&raw_key[i], &r, 8);
    }
    std::string key = base64(raw_key, false);
    std::string accept = base64(sha1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"), false);
    std::memcpy(c.expected_accept.data(), accept.data(), c.expected_accept.size());
    send_raw(c, "GET " + cfg_.path + "?EIO=4&transport=websocket HTTP/1.1\r\n"
                "Host: " + cfg_.host_header + "\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Key: " + key + "\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "\r\n");
  }

  void on_read(Conn& c, ssize_t n, const char* data) {
    if (n == 0) return;
    if (n < 0) return fail(c, "closed", n == UV_EOF ? "connection closed by server" : uv_strerror(int(n)));
    // Everything this input makes us send (pongs, acks answered by new events)
    // leaves in one write after it is parsed: one syscall instead of one per frame.
    c.corked = true;
    parse_input(c, n, data);
    c.corked = false;
    if (!c.out.empty() && alive(c)) {
      std::string out;
      out.swap(c.out);
      send_raw(c, std::move(out));
    }
  }

  void parse_input(Conn& c, ssize_t n, const char* data) {
    if (c.rbuf.empty()) {
      size_t used = consume(c, data, size_t(n));
      if (alive(c) && used < size_t(n)) c.rbuf.assign(data + used, size_t(n) - used);
    } else {
      c.rbuf.append(data, size_t(n));
      size_t used = consume(c, c.rbuf.data(), c.rbuf.size());
      if (!alive(c)) return;
      c.rbuf.erase(0, used);
      if (c.rbuf.empty() && c.rbuf.capacity() > 4096) std::string().swap(c.rbuf);  // idle conns stay small
    }
  }

  static bool alive(const Conn& c) { return c.state >= ConnState::Upgrading && c.state <= ConnState::Ready; }

  // Parses as much as is complete; returns the bytes used.
  size_t consume(Conn& c, const char* data, size_t len) {
    size_t pos = 0;
    if (c.state == ConnState::Upgrading) {
      std::string_view in(data, len);
      size_t end = in.find("\r\n\r\n");
      if (end == std::string_view::npos) {
        if (len > 16384) fail(c, "upgrade", "response headers too long");
        return 0;
      }
      if (!check_upgrade(c, in.substr(0, end))) return len;
      c.state = ConnState::Opening;
      pos = end + 4;
    }
    while (pos < len && alive(c)) {
      size_t used = parse_frame(c, data + pos, len - pos);
      if (used == 0) break;
      pos += used;
    }
    return pos;
  }

  bool check_upgrade(Conn& c, std::string_view head) {
    size_t eol = head.find("\r\n");
    std::string_view status = head.substr(0, eol);
    if (status.size() < 12 || status.substr(0, 5) != "HTTP/" || status.substr(9, 3) != "101") {
      fail(c, "upgrade", std::string(status.substr(0, 80)));
      return false;
    }
    bool accept_ok = false;
    while (eol != std::string_view::npos) {
      head.remove_prefix(eol + 2);
      eol = head.find("\r\n");
      std::string_view line = head.substr(0, eol);
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      std::string name(line.substr(0, colon));
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
      if (name != "sec-websocket-accept") continue;
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
      accept_ok = value == std::string_view(c.expected_accept.data(), c.expected_accept.size());
    }
    if (!accept_ok) fail(c, "upgrade", "missing or wrong Sec-WebSocket-Accept");
    return accept_ok;
  }

  // ---- WebSocket framing (RFC 6455)

  static constexpr uint64_t kMaxMessage = 16u << 20;

  // Returns the bytes of one complete frame, 0 if more input is needed.
  size_t parse_frame(Conn& c, const char* p, size_t avail) {
    if (avail < 2) return 0;
    const uint8_t b0 = uint8_t(p[0]), b1 = uint8_t(p[1]);
    const bool fin = b0 & 0x80;
    const uint8_t opcode = b0 & 0x0f;
    const bool masked = b1 & 0x80;
    uint64_t len = b1 & 0x7f;
    size_t head = 2;
    if (len == 126) {
      if (avail < 4) return 0;
      len = uint64_t(uint8_t(p[2])) << 8 | uint8_t(p[3]);
      head = 4;
    } else if (len == 127) {
      if (avail < 10) return 0;
      len = 0;
      for (int i = 2; i < 10; ++i) len = len << 8 | uint8_t(p[i]);
      head = 10;
    }
    if (b0 & 0x70) {  // no extension was negotiated, so RSV bits must be clear
      fail(c, "protocol", "RSV bits set");
      return avail;
    }
    if (len > kMaxMessage || c.frag.size() + len > kMaxMessage) {
      fail(c, "protocol", "frame too large");
      return avail;
    }
    uint8_t mask[4] = {};
    if (masked) {  // servers must not mask, but tolerate it
      if (avail < head + 4) return 0;
      std::memcpy(mask, p + head, 4);
      head += 4;
    }
    if (avail < head + len) return 0;
    std::string_view payload(p + head, size_t(len));
    std::string unmasked;
    if (masked) {
      unmasked.assign(payload);
      for (size_t i = 0; i < unmasked.size(); ++i) unmasked[i] ^= char(mask[i & 3]);
      payload = unmasked;
    }
    on_frame(c, fin, opcode, payload);
    return head + size_t(len);
  }

  void on_frame(Conn& c, bool fin, uint8_t opcode, std::string_view payload) {
    switch (opcode) {
      case 0x8:  // close: answer with the same status, then drop the socket
        try_send_now(c, ws_frame(0x8, payload.substr(0, 2)));
        return fail(c, "closed", "WebSocket close from server");
      case 0x9:
        return send_raw(c, ws_frame(0xA, payload));
      case 0xA:
        return;
      case 0x1:
      case 0x2:
        if (!c.frag.empty() || c.frag_opcode != 0) return fail(c, "protocol", "new message inside a fragmented one");
        if (fin) return on_message(c, opcode == 0x1, payload);
        c.frag_opcode = opcode;
        c.frag.assign(payload);
        return;
      case 0x0: {
        if (c.frag_opcode == 0) return fail(c, "protocol", "continuation without a start");
        c.frag.append(payload);
        if (!fin) return;
        std::string whole;
        whole.swap(c.frag);
        bool text = c.frag_opcode == 0x1;
        c.frag_opcode = 0;
        return on_message(c, text, whole);
      }
      default:
        return fail(c, "protocol", "unknown WebSocket opcode");
    }
  }

  // Client frames are always masked (RFC 6455 5.3).
  static std::string ws_frame(uint8_t opcode, std::string_view payload) {
    std::string f;
    f.reserve(14 + payload.size());
    f += char(0x80 | opcode);
    if (payload.size() < 126) {
      f += char(0x80 | payload.size());
    } else if (payload.size() <= 0xffff) {
      f += char(0x80 | 126);
      f += char(payload.size() >> 8);
      f += char(payload.size() & 0xff);
    } else {
      f += char(0x80 | 127);
      for (int shift = 56; shift >= 0; shift -= 8) f += char((uint64_t(payload.size()) >> shift) & 0xff);
    }
    const uint32_t key32 = uint32_t(rng.next());
    char mask[4];
    std::memcpy(mask, &key32, 4);
    f.append(mask, 4);
    const size_t start = f.size();
    f.append(payload);
    // XOR eight bytes at a time: big echo payloads are masked in the hot path.
    const uint64_t key64 = uint64_t(key32) << 32 | key32;
    char* d = f.data() + start;
    size_t i = 0;
    for (; i + 8 <= payload.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, d + i, 8);
      w ^= key64;
      std::memcpy(d + i, &w, 8);
    }
    for (; i < payload.size(); ++i) d[i] ^= mask[i & 3];
    return f;
  }

  // ---- Engine.IO / Socket.IO

  void on_message(Conn& c, bool text, std::string_view msg) {
    if (!text || msg.empty()) return;  // binary attachments: not used by the scenarios
    switch (msg[0]) {
      case '0':
        if (c.state == ConnState::Opening) join_namespaces(c);
        return;
      case '2':  // heartbeat: answer at once, "2probe" gets "3probe"
        return send_text(c, "3" + std::string(msg.substr(1)));
      case '1':
        return fail(c, "closed", "Engine.IO close packet");
      case '4':
        return on_sio_text(c, msg.substr(1));
      default:
        return;  // '3' pong, '6' noop
    }
  }

  void join_namespaces(Conn& c) {
    std::string auth = "{\"token\":\"" + make_jwt(cfg_.secret, "u" + std::to_string(cfg_.user_offset + c.index)) + "\"}";
    std::string frames;
    for (const auto& nsp : cfg_.namespaces) frames += ws_frame(0x1, sio_text('0', nsp, -1, auth));
    c.state = ConnState::Joining;
    send_raw(c, std::move(frames));  // all CONNECTs leave in one write
  }

  void on_sio_text(Conn& c, std::string_view text) {
    SioPacket p;
    if (!parse_sio(text, p)) return fail(c, "protocol", "bad Socket.IO packet: " + std::string(text.substr(0, 80)));
    switch (p.type) {
      case '0': {
        if (c.state != ConnState::Joining) return;
        int i = namespace_index(p.nsp);
        if (i < 0) return;
        if (p.data.find("\"sid\"") == std::string_view::npos)
          return fail(c, "protocol", "CONNECT reply without sid");
        c.joined_mask |= 1u << i;
        if (c.joined_mask == all_joined_mask_) become_ready(c);
        return;
      }
      case '4':  // CONNECT_ERROR: the server refused our token
        return fail(c, "auth", std::string(p.nsp) + " " + std::string(p.data.substr(0, 200)));
      case '1':
        return fail(c, "closed", "server DISCONNECT on " + std::string(p.nsp));
      default:
        if (c.state == ConnState::Ready) listener_.on_sio(c, p);
        return;
    }
  }

  int namespace_index(std::string_view nsp) const {
    for (size_t i = 0; i < cfg_.namespaces.size(); ++i)
      if (cfg_.namespaces[i] == nsp) return int(i);
    return -1;
  }

  void become_ready(Conn& c) {
    c.state = ConnState::Ready;
    --in_flight_;
    ++ready_;
    listener_.on_ready(c);
    launch_more();
    check_settled();
  }

  // ---- writing

  struct WriteReq {
    uv_write_t req;
    std::string data;
  };

  // Most writes complete at once with uv_try_write; the rest is queued
  // (libuv keeps order: try_write refuses while a queued write is pending).
  void send_raw(Conn& c, std::string data) {
    if (!alive(c)) return;
    if (c.corked) {
      c.out += data;
      return;
    }
    auto* stream = reinterpret_cast<uv_stream_t*>(&c.tcp);
    uv_buf_t buf = uv_buf_init(data.data(), unsigned(data.size()));
    int n = uv_try_write(stream, &buf, 1);
    if (n == int(data.size())) return;
    if (n < 0 && n != UV_EAGAIN) return fail(c, "write", uv_strerror(n));
    if (n > 0) data.erase(0, size_t(n));
    auto req = std::make_unique<WriteReq>();
    req->data = std::move(data);
    req->req.data = req.get();
    buf = uv_buf_init(req->data.data(), unsigned(req->data.size()));
    int rc = uv_write(&req->req, stream, &buf, 1, [](uv_write_t* r, int status) {
      std::unique_ptr<WriteReq> owned(static_cast<WriteReq*>(r->data));
      auto& c = *static_cast<Conn*>(r->handle->data);
      if (status < 0 && status != UV_ECANCELED) c.fleet->fail(c, "write", uv_strerror(status));
    });
    if (rc != 0) return fail(c, "write", uv_strerror(rc));
    req.release();  // owned by the write callback now
  }

  // Best effort, for goodbyes: no queueing.
  void try_send_now(Conn& c, std::string data) {
    if (!alive(c)) return;
    uv_buf_t buf = uv_buf_init(data.data(), unsigned(data.size()));
    uv_try_write(reinterpret_cast<uv_stream_t*>(&c.tcp), &buf, 1);
  }

  // ---- failure and closing

  void fail(Conn& c, std::string_view reason, std::string detail) {
    if (c.state == ConnState::Idle || c.state >= ConnState::Closing) return;
    const bool was_ready = c.state == ConnState::Ready;
    close_conn(c);
    if (was_ready) {
      ++lost_;
      if (first_lost_.empty()) first_lost_ = std::string(reason) + ": " + detail;
      listener_.on_lost(c);
      return;
    }
    count_failure(c, reason, std::move(detail));
  }

  void count_failure(Conn&, std::string_view reason, std::string detail) {
    --in_flight_;
    ++failed_;
    ++reasons_[std::string(reason)];
    if (first_error_.empty()) first_error_ = std::string(reason) + ": " + detail;
    launch_more();
    check_settled();
  }

  void close_conn(Conn& c) {
    if (c.state == ConnState::Idle || c.state >= ConnState::Closing) return;
    c.state = ConnState::Closing;
    uv_close(reinterpret_cast<uv_handle_t*>(&c.tcp), [](uv_handle_t* h) {
      auto& c = *static_cast<Conn*>(h->data);
      c.state = ConnState::Closed;
      std::string().swap(c.rbuf);
      std::string().swap(c.frag);
      std::string().swap(c.out);
      --c.fleet->open_handles_;
      c.fleet->maybe_all_closed();
    });
  }

  void maybe_all_closed() {
    if (!closing_all_ || open_handles_ != 0 || !on_all_closed_) return;
    auto done = std::move(on_all_closed_);
    on_all_closed_ = nullptr;
    done();
  }

  void check_settled() {
    if (settled_ || ready_ + failed_ < conns_.size()) return;
    settled_ = true;
    settled_ns_ = now_ns();
    sweeper_.stop();
    listener_.on_established();
  }

  void sweep_timeouts() {
    const uint64_t now = uv_now(loop_);
    for (auto& c : conns_) {
      if (c.state >= ConnState::Connecting && c.state < ConnState::Ready &&
          now - c.started_ms > cfg_.handshake_timeout_ms) {
        fail(c, "timeout", "handshake not finished in time (state " + std::to_string(int(c.state)) + ")");
      }
    }
  }

 private:
  uv_loop_t* loop_;
  FleetConfig cfg_;
  std::vector<Conn> conns_;  // never resized: handles point into it
  FleetListener& listener_;
  Timer sweeper_;
  uint32_t all_joined_mask_ = 0;
  size_t next_ = 0, in_flight_ = 0, ready_ = 0, failed_ = 0, lost_ = 0, open_handles_ = 0;
  bool launching_ = false, settled_ = false, closing_all_ = false;
  uint64_t start_ns_ = 0, settled_ns_ = 0;
  std::map<std::string, size_t> reasons_;
  std::string first_error_, first_lost_;
  std::function<void()> on_all_closed_;
};

// Send times of one connection's acked events, by ack id (ids are sequential).
struct AckTimes {
  uint64_t next_id = 0;          // ack id of the next event
  uint64_t first_id = 0;         // ack id of sent_ns.front()
  std::deque<uint64_t> sent_ns;  // send time per outstanding id, 0 = acked

  uint64_t sent(uint64_t now) {
    const uint64_t id = next_id++;
    if (sent_ns.empty()) first_id = id;
    sent_ns.push_back(now);
    return id;
  }
  // The send time of an outstanding id (forgotten then), or nothing.
  std::optional<uint64_t> acked(uint64_t id) {
    if (id < first_id || id - first_id >= sent_ns.size() || sent_ns[id - first_id] == 0) return std::nullopt;
    const uint64_t t = sent_ns[id - first_id];
    sent_ns[id - first_id] = 0;
    while (!sent_ns.empty() && sent_ns.front() == 0) {
      sent_ns.pop_front();
      ++first_id;
    }
    return t;
  }
  size_t outstanding() const {
    size_t n = 0;
    for (uint64_t t : sent_ns) n += t != 0;
    return n;
  }
  size_t pending_slots() const { return sent_ns.size(); }
  void clear() { sent_ns.clear(); }
};

// ---------------------------------------------------------------- scenarios

struct Context {
  uv_loop_t* loop;
  const Options& opt;
  FleetConfig fleet;
  const ServerProbe& probe;
  const ServerProbe& redis_probe;  // --redis-pids
};

class Scenario : public FleetListener {
 public:
  virtual void start() = 0;
  // Ends early (deadline, signal): close everything and report what there is.
  virtual void abort(std::string_view why) = 0;
  virtual std::string report() const = 0;
  // False when the scenario could not run at all (nothing connected).
  virtual bool ran() const = 0;
};

// What every scenario shares: a fleet, the server probe, a clean finish.
class ScenarioBase : public Scenario {
 public:
  ScenarioBase(Context& ctx, size_t connections)
      : ctx_(ctx), fleet_(ctx.loop, ctx.fleet, connections, *this), phase_timer_(ctx.loop) {}

  void abort(std::string_view why) override {
    if (finishing_) return;
    aborted_ = std::string(why);
    progress("aborting: %s", aborted_.c_str());
    if (!fleet_.established()) fleet_.give_up("aborted");
    finish();
  }

  bool ran() const override { return fleet_.ready() > 0; }

 protected:
  // Common head of every report.
  JsonObject report_head(std::string_view name) const {
    JsonObject j;
    j.str("scenario", name)
        .integer("connections", int64_t(fleet_.size()))
        .integer("established", int64_t(fleet_.ready()))
        .integer("failures", int64_t(fleet_.failed()))
        .number("connect_seconds", fleet_.established() ? std::optional(fleet_.establish_seconds()) : std::nullopt)
        .raw("namespaces", namespaces_json());
    return j;
  }

  void report_tail(JsonObject& j) const {
    std::string reasons = "{";
    for (auto& [k, v] : fleet_.failure_reasons()) {
      if (reasons.size() > 1) reasons += ',';
      reasons += "\"" + json_escape(k) + "\":" + std::to_string(v);
    }
    reasons += "}";
    j.raw("failure_reasons", reasons);
    if (!fleet_.first_error().empty()) j.str("first_error", fleet_.first_error());
    j.integer("lost_after_connect", int64_t(fleet_.lost()));
    if (!fleet_.first_lost().empty()) j.str("first_lost", fleet_.first_lost());
    j.number("loadgen_cpu_ms", self_cpu_ms(), 1);
    j.boolean("aborted", !aborted_.empty());
    if (!aborted_.empty()) j.str("abort_reason", aborted_);
  }

  std::string namespaces_json() const {
    std::string s = "[";
    for (auto& n : ctx_.fleet.namespaces) s += (s.size() > 1 ? ",\"" : "\"") + json_escape(n) + "\"";
    return s + "]";
  }

  void log_established() const {
    progress("established %zu/%zu in %.2fs (%zu failed%s%s)", fleet_.ready(), fleet_.size(),
             fleet_.establish_seconds(), fleet_.failed(), fleet_.first_error().empty() ? "" : ", first: ",
             fleet_.first_error().c_str());
  }

  void finish() {
    if (finishing_) return;
    finishing_ = true;
    phase_timer_.stop();
    on_finish();
    fleet_.close_all([this] {
      progress("all connections closed");
      uv_stop(ctx_.loop);
    });
  }
  virtual void on_finish() {}

  // The measured window of a load scenario: what was sent in [start, end)
  // counts, and the servers' and this process's CPU at both ends give the
  // cost of it.
  struct Window {
    uint64_t start_ns = UINT64_MAX, end_ns = 0;
    std::optional<ServerProbe::Sample> cpu_start, cpu_end;
    double loadgen_cpu_start_ms = 0, loadgen_cpu_ms = 0;
    bool contains(uint64_t sent_ns) const { return sent_ns >= start_ns && sent_ns < end_ns; }
    std::optional<double> server_cpu_ms() const {
      if (!cpu_start || !cpu_end) return std::nullopt;
      return ServerProbe::ticks_to_ms(cpu_end->cpu_ticks - cpu_start->cpu_ticks);
    }
  };
  void open_window(double seconds) {
    window_.cpu_start = ctx_.probe.sample();
    window_.loadgen_cpu_start_ms = self_cpu_ms();
    window_.start_ns = now_ns();
    window_.end_ns = window_.start_ns + uint64_t(seconds * 1e9);
  }
  // The first close counts (a scenario may close it when drained or at its end).
  void close_window() {
    if (window_.cpu_end) return;
    window_.cpu_end = ctx_.probe.sample();
    window_.loadgen_cpu_ms = self_cpu_ms() - window_.loadgen_cpu_start_ms;
  }

  Context& ctx_;
  Fleet fleet_;
  Timer phase_timer_;
  Window window_;
  bool finishing_ = false;
  std::string aborted_;
};

// idle: N connections with every namespace joined, held; the server's memory
// and CPU per connection.
class IdleScenario : public ScenarioBase {
 public:
  explicit IdleScenario(Context& ctx) : ScenarioBase(ctx, ctx.opt.connections ? ctx.opt.connections : 10000) {}

  void start() override {
    before_ = ctx_.probe.sample();
    progress("idle: opening %zu connections (%u in flight, namespaces %s)", fleet_.size(),
             ctx_.fleet.concurrency, namespaces_json().c_str());
    cpu_self_start_ = self_cpu_ms();
    fleet_.open();
  }

  void on_established() override {
    after_connect_ = ctx_.probe.sample();
    loadgen_cpu_connect_ms_ = self_cpu_ms() - cpu_self_start_;
    log_established();
    if (finishing_) return;
    if (fleet_.ready() == 0) return finish();
    settle_start_ms_ = uv_now(ctx_.loop);
    phase_timer_.start(uint64_t(ctx_.opt.settle_s * 1000), 0, [this] {
      after_settle_ = ctx_.probe.sample();
      settled_s_ = double(uv_now(ctx_.loop) - settle_start_ms_) / 1000.0;
      alive_at_sample_ = fleet_.alive();
      sampled_ = true;
      progress("held %zu connections for %.1fs; closing", alive_at_sample_, ctx_.opt.settle_s);
      finish();
    });
  }

  std::string report() const override {
    JsonObject j = report_head("idle");
    std::optional<double> rss_before, rss_after, rss_per_conn, cpu_ms, cpu_per_conn;
    const size_t n = fleet_.ready();
    if (before_) rss_before = double(before_->rss_kb);
    if (after_settle_) rss_after = double(after_settle_->rss_kb);
    if (before_ && after_settle_ && n > 0)
      rss_per_conn = (double(after_settle_->rss_kb) - double(before_->rss_kb)) * 1024.0 / double(n);
    if (before_ && after_connect_) cpu_ms = ServerProbe::ticks_to_ms(after_connect_->cpu_ticks - before_->cpu_ticks);
    if (cpu_ms && n > 0) cpu_per_conn = *cpu_ms * 1000.0 / double(n);
    // What holding them costs: the server's CPU over the settle time, per
    // connection per second (heartbeats, timers, anything that visits them).
    std::optional<double> idle_cpu_ms, idle_per_conn_s;
    if (after_connect_ && after_settle_) {
      idle_cpu_ms = ServerProbe::ticks_to_ms(after_settle_->cpu_ticks - after_connect_->cpu_ticks);
      if (n > 0 && settled_s_ > 0) idle_per_conn_s = *idle_cpu_ms * 1000.0 / double(n) / settled_s_;
    }
    j.number("rss_before_kb", rss_before, 0)
        .number("rss_after_kb", rss_after, 0)
        .number("rss_per_conn_bytes", rss_per_conn, 0)
        .number("cpu_connect_ms", cpu_ms, 1)
        .number("cpu_per_conn_us", cpu_per_conn, 1)
        .number("settle_seconds", ctx_.opt.settle_s, 1)
        .number("idle_cpu_ms", idle_cpu_ms, 1)
        .number("idle_cpu_per_conn_per_s_us", idle_per_conn_s, 3)
        .number("held_at_sample", sampled_ ? std::optional(double(alive_at_sample_)) : std::nullopt, 0)
        .number("server_processes", after_settle_ ? std::optional(double(after_settle_->processes)) : std::nullopt, 0)
        .number("loadgen_cpu_connect_ms", loadgen_cpu_connect_ms_, 1);
    report_tail(j);
    return j.text();
  }

 private:
  std::optional<ServerProbe::Sample> before_, after_connect_, after_settle_;
  double cpu_self_start_ = 0, loadgen_cpu_connect_ms_ = 0;
  size_t alive_at_sample_ = 0;
  bool sampled_ = false;
  uint64_t settle_start_ms_ = 0;
  double settled_s_ = 0;
};

// echo: M connections send `bench:echo` with an ack, either at a fixed rate
// (open loop: latency under a known load) or with a fixed window of
// outstanding acks (closed loop: the server's throughput).
class EchoScenario : public ScenarioBase {
 public:
  explicit EchoScenario(Context& ctx)
      : ScenarioBase(ctx, ctx.opt.connections ? ctx.opt.connections : 100),
        per_conn_(fleet_.size()),
        tick_(ctx.loop) {
    const auto& o = ctx.opt;
    nsp_ = o.echo_nsp;  // main() made sure the fleet joins it
    pad_.assign(o.payload_bytes, 'x');
    interval_ns_ = o.rate > 0 ? uint64_t(1e9 / o.rate) : 0;
  }

  void start() override {
    before_ = ctx_.probe.sample();
    progress("echo: opening %zu connections", fleet_.size());
    fleet_.open();
  }

  void on_established() override {
    log_established();
    if (finishing_) return;
    if (fleet_.ready() == 0) return finish();
    const auto& o = ctx_.opt;
    if (o.rate > 0)
      progress("echo: %g events/s per connection for %.1fs on %s", o.rate, o.duration_s, nsp_.c_str());
    else
      progress("echo: closed loop, window %u, for %.1fs on %s", o.window, o.duration_s, nsp_.c_str());
    open_window(o.duration_s);
    measuring_ = true;
    for (size_t i = 0; i < fleet_.size(); ++i) {
      Conn& c = fleet_.conn(i);
      if (c.state != ConnState::Ready) continue;
      if (interval_ns_ > 0) {
        // Spread the first sends over one interval so connections do not fire in lockstep.
        per_conn_[i].next_send_ns = window_.start_ns + rng.next() % interval_ns_;
      } else {
        for (uint32_t w = 0; w < o.window; ++w) send_echo(c);
      }
    }
    // A 2 ms tick: smooth enough for the rate, and latency is timed from the
    // actual send, so the tick never shows up in the figures.
    if (interval_ns_ > 0) tick_.start(2, 2, [this] { send_due(); });
    phase_timer_.start(uint64_t(o.duration_s * 1000), 0, [this] { end_measure(); });
  }

  void on_sio(Conn& c, const SioPacket& p) override {
    if (p.type != '3' || p.nsp != nsp_ || p.ack_id < 0) return;
    auto& st = per_conn_[c.index];
    const auto sent = st.acks.acked(uint64_t(p.ack_id));
    if (!sent) {
      ++unexpected_acks_;
      return;
    }
    const uint64_t now = now_ns();
    latency_us_.add((now - *sent) / 1000);
    --outstanding_;
    ++acked_;
    if (now <= window_.end_ns) ++acked_in_window_;
    if (p.data.empty() || p.data[0] != '[' || p.data.size() < pad_.size()) ++bad_acks_;
    if (measuring_ && interval_ns_ == 0 && (ctx_.opt.messages == 0 || sent_ < ctx_.opt.messages)) send_echo(c);
    if (measuring_ && ctx_.opt.messages > 0 && outstanding_ == 0) end_measure();
    if (draining_ && outstanding_ == 0) finish();
  }

  void on_lost(Conn& c) override {
    auto& st = per_conn_[c.index];
    outstanding_ -= st.acks.outstanding();
    st.acks.clear();
    if (draining_ && outstanding_ == 0) finish();
  }

  std::string report() const override {
    JsonObject j = report_head("echo");
    const double secs = measured_s_ > 0 ? measured_s_ : ctx_.opt.duration_s;
    std::optional<double> cpu_ms, cpu_per_ack;
    cpu_ms = window_.server_cpu_ms();
    if (cpu_ms && acked_in_window_ > 0) cpu_per_ack = *cpu_ms * 1000.0 / double(acked_in_window_);
    auto ms = [&](double p) -> std::optional<double> {
      auto v = latency_us_.percentile(p);
      return v ? std::optional(*v / 1000.0) : std::nullopt;
    };
    j.str("mode", interval_ns_ > 0 ? "rate" : "closed_loop")
        .number("rate_per_conn", ctx_.opt.rate, 2)
        .integer("window", interval_ns_ > 0 ? 0 : ctx_.opt.window)
        .number("offered_per_sec", interval_ns_ > 0 ? std::optional(ctx_.opt.rate * double(fleet_.ready())) : std::nullopt, 1)
        .integer("payload_bytes", int64_t(ctx_.opt.payload_bytes))
        .number("duration_seconds", secs, 1)
        .integer("sent", int64_t(sent_))
        .number("sent_per_sec", measured_ ? std::optional(double(sent_) / secs) : std::nullopt, 1)
        .integer("acked", int64_t(acked_))
        .integer("acked_in_window", int64_t(acked_in_window_))
        .number("acks_per_sec", measured_ ? std::optional(double(acked_in_window_) / secs) : std::nullopt, 1)
        .integer("unacked", int64_t(outstanding_))
        .integer("skipped_sends", int64_t(skipped_))
        .integer("unexpected_acks", int64_t(unexpected_acks_))
        .integer("bad_acks", int64_t(bad_acks_))
        .number("latency_p50_ms", ms(50))
        .number("latency_p90_ms", ms(90))
        .number("latency_p99_ms", ms(99))
        .number("latency_max_ms", latency_us_.count() ? std::optional(double(latency_us_.max()) / 1000.0) : std::nullopt)
        .number("cpu_echo_ms", cpu_ms, 1)
        .number("cpu_per_ack_us", cpu_per_ack, 2)
        .number("rss_before_kb", before_ ? std::optional(double(before_->rss_kb)) : std::nullopt, 0)
        .number("rss_after_kb", window_.cpu_end ? std::optional(double(window_.cpu_end->rss_kb)) : std::nullopt, 0)
        .number("loadgen_cpu_echo_ms", measured_ ? std::optional(window_.loadgen_cpu_ms) : std::nullopt, 1);
    add_alloc_figures(j, window_.cpu_start, drained_, acked_, "ack");
    report_tail(j);
    return j.text();
  }

 private:
  struct PerConn {
    uint64_t next_send_ns = 0;
    AckTimes acks;
  };

  void send_due() {
    const uint64_t now = now_ns();
    if (now >= window_.end_ns) return;
    for (size_t i = 0; i < fleet_.size(); ++i) {
      Conn& c = fleet_.conn(i);
      if (c.state != ConnState::Ready) continue;
      auto& st = per_conn_[i];
      // Bounded catch-up after a stall; beyond max_outstanding the server is
      // not keeping up, and the sends are skipped (and counted) instead.
      for (int burst = 0; st.next_send_ns <= now && burst < 64; ++burst) {
        st.next_send_ns += interval_ns_;
        if (st.acks.pending_slots() >= ctx_.opt.max_outstanding) {
          ++skipped_;
          continue;
        }
        send_echo(c);
      }
      if (st.next_send_ns <= now) {  // still behind: the loadgen could not keep up
        const uint64_t missed = (now - st.next_send_ns) / interval_ns_ + 1;
        skipped_ += missed;
        st.next_send_ns += missed * interval_ns_;
      }
    }
  }

  void send_echo(Conn& c) {
    auto& st = per_conn_[c.index];
    const uint64_t id = st.acks.sent(now_ns());
    std::string args = "[\"bench:echo\",{\"seq\":" + std::to_string(id) + ",\"pad\":\"" + pad_ + "\"}]";
    ++outstanding_;
    ++sent_;
    fleet_.send_text(c, sio_text('2', nsp_, int64_t(id), args));
  }

  void on_finish() override {
    measuring_ = false;
    tick_.stop();
    if (measured_ && outstanding_ == 0) drained_ = ctx_.probe.sample();  // every event answered: allocations are whole
  }

  void end_measure() {
    if (!measuring_) return;
    measuring_ = false;
    measured_ = true;
    tick_.stop();
    phase_timer_.stop();
    measured_s_ = seconds_between(window_.start_ns, now_ns());
    close_window();
    progress("echo: %zu sent, %zu acked in the window; draining %zu", sent_, acked_in_window_, outstanding_);
    if (outstanding_ == 0) return finish();
    draining_ = true;
    phase_timer_.start(uint64_t(ctx_.opt.drain_s * 1000), 0, [this] { finish(); });
  }

  std::vector<PerConn> per_conn_;
  Timer tick_;
  std::string nsp_, pad_;
  uint64_t interval_ns_ = 0;
  bool measuring_ = false, measured_ = false, draining_ = false;
  double measured_s_ = 0;
  size_t sent_ = 0, acked_ = 0, acked_in_window_ = 0, outstanding_ = 0, skipped_ = 0;
  size_t unexpected_acks_ = 0, bad_acks_ = 0;
  Histogram latency_us_;
  std::optional<ServerProbe::Sample> before_, drained_;
};

// fanout: N connections, alternating between two servers (two processes of
// one cluster, e.g. sharing a Redis), join one room; connection 0 broadcasts
// `bench:msg` {t, seq, pad} to it with bench:broadcast at a fixed rate. Every
// member should get every message once: delivered messages per second, the
// latency from the publisher's send to each delivery, and the servers' CPU
// time per delivered message.
class FanoutScenario : public ScenarioBase {
 public:
  explicit FanoutScenario(Context& ctx)
      : ScenarioBase(ctx, first_half(ctx)),
        fleet2_(ctx.loop, second_config(ctx), total(ctx) - first_half(ctx), *this),
        tick_(ctx.loop) {
    pad_.assign(ctx.opt.payload_bytes, 'x');
    interval_ns_ = uint64_t(1e9 / (ctx.opt.rate > 0 ? ctx.opt.rate : 20));
  }

  void start() override {
    progress("fanout: opening %zu + %zu connections", fleet_.size(), fleet2_.size());
    fleet_.open();
    if (fleet2_.size()) fleet2_.open();
    else ++established_;
  }

  void on_ready(Conn& c) override {
    // Joins the room; the ack (id 0) counts it as a member.
    fleet(c).send_text(c, sio_text('2', "/", 0, "[\"bench:join\",{\"room\":\"" + ctx_.opt.room + "\"}]"));
  }

  void on_established() override {
    if (++established_ < 2) return;
    log_established();
    progress("fanout: %zu joined, waiting for the rest", joined_);
    maybe_start();
  }

  void on_sio(Conn&, const SioPacket& p) override {
    if (p.type == '3' && p.ack_id == 0 && !measuring_ && !published_) {  // bench:join answered
      ++joined_;
      return maybe_start();
    }
    if (p.type != '2' || p.data.rfind("[\"bench:msg\"", 0) != 0) return;
    size_t t = p.data.find("\"t\":");
    if (t == std::string_view::npos) return;
    uint64_t sent = 0;
    std::from_chars(p.data.data() + t + 4, p.data.data() + p.data.size(), sent);
    const uint64_t now = now_ns();
    ++received_;
    if (window_.contains(sent)) {
      ++delivered_;
      latency_us_.add((now - sent) / 1000);
    }
    if (draining_ && received_ >= expected_total()) finish();
  }

  void on_lost(Conn&) override {}

  std::string report() const override {
    JsonObject j = report_head("fanout");
    const double secs = ctx_.opt.duration_s;
    std::optional<double> cpu_ms, cpu_per_msg;
    cpu_ms = window_.server_cpu_ms();
    if (cpu_ms && delivered_ > 0) cpu_per_msg = *cpu_ms * 1000.0 / double(delivered_);
    auto ms = [&](double p) -> std::optional<double> {
      auto v = latency_us_.percentile(p);
      return v ? std::optional(*v / 1000.0) : std::nullopt;
    };
    const size_t members = joined_at_start_;
    j.integer("port2", ctx_.opt.port2)
        .integer("connections_total", int64_t(fleet_.size() + fleet2_.size()))
        .integer("connections_first", int64_t(fleet_.ready()))
        .integer("connections_second", int64_t(fleet2_.ready()))
        .integer("members", int64_t(members))
        .number("publish_rate", 1e9 / double(interval_ns_), 1)
        .integer("payload_bytes", int64_t(ctx_.opt.payload_bytes))
        .number("duration_seconds", secs, 1)
        .integer("published", int64_t(published_))
        .integer("expected_deliveries", int64_t(published_ * members))
        .integer("delivered", int64_t(delivered_))
        .number("delivered_ratio", published_ && members ? std::optional(double(delivered_) / double(published_ * members)) : std::nullopt, 4)
        .number("delivered_per_sec", measured_ ? std::optional(double(delivered_) / secs) : std::nullopt, 0)
        .number("latency_p50_ms", ms(50))
        .number("latency_p90_ms", ms(90))
        .number("latency_p99_ms", ms(99))
        .number("latency_max_ms", latency_us_.count() ? std::optional(double(latency_us_.max()) / 1000.0) : std::nullopt)
        .number("cpu_servers_ms", cpu_ms, 1)
        .number("cpu_per_delivered_us", cpu_per_msg, 3)
        .number("rss_after_kb", window_.cpu_end ? std::optional(double(window_.cpu_end->rss_kb)) : std::nullopt, 0)
        .number("loadgen_cpu_measure_ms", measured_ ? std::optional(window_.loadgen_cpu_ms) : std::nullopt, 1)
        .integer("lost_second", int64_t(fleet2_.lost()))
        .integer("failures_second", int64_t(fleet2_.failed()));
    report_tail(j);
    return j.text();
  }

 private:
  static size_t total(const Context& ctx) { return ctx.opt.connections ? ctx.opt.connections : 1000; }
  static size_t first_half(const Context& ctx) { return ctx.opt.port2 ? (total(ctx) + 1) / 2 : total(ctx); }
  static FleetConfig second_config(const Context& ctx) {
    FleetConfig f = ctx.fleet;
    if (f.addr.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&f.addr)->sin6_port = htons(uint16_t(ctx.opt.port2));
    else reinterpret_cast<sockaddr_in*>(&f.addr)->sin_port = htons(uint16_t(ctx.opt.port2));
    return f;
  }
  Fleet& fleet(Conn& c) { return c.fleet == &fleet2_ ? fleet2_ : fleet_; }
  uint64_t expected_total() const { return published_ * joined_at_start_; }

  void maybe_start() {
    if (started_ || established_ < 2 || joined_ < fleet_.ready() + fleet2_.ready()) return;
    started_ = true;
    if (joined_ == 0 || fleet_.conn(0).state != ConnState::Ready) return finish();
    joined_at_start_ = joined_;
    // Subscriptions to the room are asynchronous on the servers: let them settle.
    phase_timer_.start(uint64_t(ctx_.opt.settle_s * 1000), 0, [this] { begin(); });
    progress("fanout: %zu members; publishing in %.1fs", joined_, ctx_.opt.settle_s);
  }

  void begin() {
    const auto& o = ctx_.opt;
    progress("fanout: %.1f messages/s to %zu members for %.1fs", 1e9 / double(interval_ns_), joined_at_start_,
             o.duration_s);
    open_window(o.duration_s);
    next_send_ns_ = window_.start_ns;
    measuring_ = true;
    tick_.start(1, 1, [this] { publish_due(); });
    phase_timer_.start(uint64_t(o.duration_s * 1000), 0, [this] { end_measure(); });
  }

  void publish_due() {
    const uint64_t now = now_ns();
    Conn& c = fleet_.conn(0);
    while (measuring_ && next_send_ns_ <= now && now < window_.end_ns && c.state == ConnState::Ready) {
      next_send_ns_ += interval_ns_;
      std::string args = "[\"bench:broadcast\",{\"room\":\"" + ctx_.opt.room + "\",\"payload\":{\"t\":" +
                         std::to_string(now_ns()) + ",\"seq\":" + std::to_string(published_) + ",\"pad\":\"" + pad_ +
                         "\"}}]";
      fleet_.send_text(c, sio_text('2', "/", -1, args));
      ++published_;
    }
  }

  void end_measure() {
    measuring_ = false;
    measured_ = true;
    tick_.stop();
    progress("fanout: %zu published, %zu delivered; draining", published_, delivered_);
    draining_ = true;
    phase_timer_.start(uint64_t(ctx_.opt.drain_s * 1000), 0, [this] {
      close_window();
      finish();
    });
    if (received_ >= expected_total()) {
      close_window();
      finish();
    }
  }

  void on_finish() override {
    measuring_ = false;
    tick_.stop();
    if (measured_) close_window();
    fleet2_.close_all([] {});
  }

  Fleet fleet2_;
  Timer tick_;
  std::string pad_;
  uint64_t interval_ns_ = 0, next_send_ns_ = 0;
  int established_ = 0;
  size_t joined_ = 0, joined_at_start_ = 0;
  bool started_ = false, measuring_ = false, measured_ = false, draining_ = false;
  uint64_t published_ = 0, received_ = 0, delivered_ = 0;
  Histogram latency_us_;

};

// chat: C conversations x M members on the chat namespace. Every member joins
// its conversation (chat:join, acked); then the first S members of each send
// acked chat:message events: at --rate messages/s in total (round robin over
// the senders: latency at a known load), or closed loop with --window
// messages outstanding per sender (saturation). The server checks access,
// stores the message (XADD) and broadcasts chat:message (and message:new) to
// the whole room. Reported: messages/s, ack and delivery latency, the
// servers' CPU per message and per delivery, allocations per message.
// Membership is the caller's job: conversation b<k> holds users
// u<offset + k*M> .. u<offset + k*M + M-1>.
class ChatScenario : public ScenarioBase {
 public:
  explicit ChatScenario(Context& ctx)
      : ScenarioBase(ctx, size_t(ctx.opt.conversations) * ctx.opt.members),
        per_conn_(fleet_.size()),
        tick_(ctx.loop) {
    const auto& o = ctx.opt;
    nsp_ = o.chat_nsp;  // main() made sure the fleet joins it
    pad_.assign(o.payload_bytes, 'x');
    interval_ns_ = o.rate > 0 ? uint64_t(1e9 / o.rate) : 0;
    for (size_t i = 0; i < fleet_.size(); ++i)
      if (i % o.members < std::min(o.senders, o.members)) senders_.push_back(i);
  }

  static std::string conversation_of(const Options& o, size_t index) { return "b" + std::to_string(index / o.members); }

  void start() override {
    progress("chat: opening %zu connections (%u conversations x %u members)", fleet_.size(),
             ctx_.opt.conversations, ctx_.opt.members);
    fleet_.open();
  }

  void on_ready(Conn& c) override {
    auto& st = per_conn_[c.index];
    const uint64_t id = st.acks.sent(now_ns());  // id 0: the join
    fleet_.send_text(c, sio_text('2', nsp_, int64_t(id),
                                 "[\"chat:join\",{\"conversationId\":\"" + conversation_of(ctx_.opt, c.index) + "\"}]"));
  }

  void on_established() override {
    log_established();
    established_ = true;
    maybe_start();
  }

  void on_sio(Conn& c, const SioPacket& p) override {
    auto& st = per_conn_[c.index];
    if (p.type == '3' && p.ack_id >= 0) return on_ack(c, st, uint64_t(p.ack_id), p.data);
    if (p.type != '2' || p.nsp != nsp_) return;
    if (p.data.rfind("[\"message:new\"", 0) == 0) {
      ++aliases_;
      return;
    }
    if (p.data.rfind("[\"chat:message\"", 0) != 0) return;
    ++received_;
    const size_t t = p.data.find("\"content\":\"");
    if (t == std::string_view::npos) return;
    uint64_t sent = 0;
    std::from_chars(p.data.data() + t + 11, p.data.data() + p.data.size(), sent);
    if (window_.contains(sent)) {
      ++delivered_;
      delivery_us_.add((now_ns() - sent) / 1000);
    }
    if (draining_) finish_if_drained();
  }

  void on_lost(Conn& c) override {
    auto& st = per_conn_[c.index];
    if (st.joined) outstanding_ -= st.acks.outstanding();
    st.acks.clear();
    if (draining_) finish_if_drained();
  }

  std::string report() const override {
    JsonObject j = report_head("chat");
    const double secs = measured_s_;
    std::optional<double> cpu_ms, per_msg, per_delivery;
    cpu_ms = window_.server_cpu_ms();
    if (cpu_ms && acked_in_window_ > 0) per_msg = *cpu_ms * 1000.0 / double(acked_in_window_);
    if (cpu_ms && delivered_ > 0) per_delivery = *cpu_ms * 1000.0 / double(delivered_);
    auto ms = [](const Histogram& h, double p) -> std::optional<double> {
      auto v = h.percentile(p);
      return v ? std::optional(*v / 1000.0) : std::nullopt;
    };
    const auto& o = ctx_.opt;
    j.str("mode", interval_ns_ > 0 ? "rate" : "closed_loop")
        .integer("conversations", o.conversations)
        .integer("members", o.members)
        .integer("joined", int64_t(joined_))
        .integer("join_refused", int64_t(join_refused_))
        .integer("senders", int64_t(senders_.size()))
        .number("rate_total", interval_ns_ > 0 ? std::optional(o.rate) : std::nullopt, 1)
        .integer("window", interval_ns_ > 0 ? 0 : o.window)
        .integer("payload_bytes", int64_t(o.payload_bytes))
        .number("duration_seconds", measured_ ? std::optional(secs) : std::nullopt, 2)
        .integer("sent", int64_t(sent_))
        .integer("acked", int64_t(acked_))
        .integer("acked_in_window", int64_t(acked_in_window_))
        .integer("ack_errors", int64_t(ack_errors_))
        .number("messages_per_sec", measured_ && secs > 0 ? std::optional(double(acked_in_window_) / secs) : std::nullopt, 1)
        .integer("unacked", int64_t(outstanding_))
        .integer("skipped_sends", int64_t(skipped_))
        .integer("delivered", int64_t(delivered_))
        .integer("expected_deliveries", int64_t(expected_deliveries_))
        .number("delivered_ratio", expected_deliveries_ ? std::optional(double(delivered_) / double(expected_deliveries_)) : std::nullopt, 4)
        .integer("received_total", int64_t(received_))
        .integer("aliases_received", int64_t(aliases_))
        .number("ack_p50_ms", ms(ack_us_, 50))
        .number("ack_p99_ms", ms(ack_us_, 99))
        .number("delivery_p50_ms", ms(delivery_us_, 50))
        .number("delivery_p99_ms", ms(delivery_us_, 99))
        .number("delivery_max_ms", delivery_us_.count() ? std::optional(double(delivery_us_.max()) / 1000.0) : std::nullopt)
        .number("cpu_servers_ms", cpu_ms, 1)
        .number("cpu_per_message_us", per_msg, 2)
        .number("cpu_per_delivery_us", per_delivery, 3)
        .number("loadgen_cpu_measure_ms", measured_ ? std::optional(window_.loadgen_cpu_ms) : std::nullopt, 1);
    if (redis_start_ && redis_end_) {
      const double redis_ms = ServerProbe::ticks_to_ms(redis_end_->cpu_ticks - redis_start_->cpu_ticks);
      j.number("redis_cpu_ms", redis_ms, 1)
          .number("redis_cpu_per_message_us", acked_in_window_ ? std::optional(redis_ms * 1000.0 / double(acked_in_window_)) : std::nullopt, 2);
    }
    if (!first_ack_error_.empty()) j.str("first_ack_error", first_ack_error_);
    add_alloc_figures(j, window_.cpu_start, drained_, acked_, "message");
    report_tail(j);
    return j.text();
  }

 private:
  struct PerConn {
    AckTimes acks;
    bool joined = false;
  };

  void on_ack(Conn& c, PerConn& st, uint64_t id, std::string_view data) {
    const auto sent = st.acks.acked(id);
    if (!sent) return;
    const bool ok = data.find("\"error\"") == std::string_view::npos;
    if (!st.joined) {  // the join
      st.joined = true;
      if (ok) ++joined_;
      else {
        ++join_refused_;
        if (first_ack_error_.empty()) first_ack_error_ = "chat:join: " + std::string(data.substr(0, 200));
      }
      return maybe_start();
    }
    const uint64_t now = now_ns();
    ack_us_.add((now - *sent) / 1000);
    --outstanding_;
    ++acked_;
    if (now <= window_.end_ns) ++acked_in_window_;
    if (!ok) {
      ++ack_errors_;
      if (first_ack_error_.empty()) first_ack_error_ = "chat:message: " + std::string(data.substr(0, 200));
    }
    if (measuring_ && interval_ns_ == 0) {
      if ((ctx_.opt.messages == 0 || sent_ < ctx_.opt.messages) && now < window_.end_ns) send_message(c.index);
      else if (outstanding_ == 0) end_measure();
    }
    if (draining_) finish_if_drained();
  }

  // Every message answered and delivered (a room hears of it before the
  // sender's ack comes, but its frames may arrive after).
  void finish_if_drained() {
    if (outstanding_ == 0 && delivered_ >= expected_deliveries_) finish();
  }

  void maybe_start() {
    if (started_ || !established_ || joined_ + join_refused_ < fleet_.ready()) return;
    started_ = true;
    if (joined_ == 0) return finish();
    progress("chat: %zu joined (%zu refused); sending in %.1fs", joined_, join_refused_, ctx_.opt.settle_s);
    phase_timer_.start(uint64_t(ctx_.opt.settle_s * 1000), 0, [this] { begin(); });
  }

  bool can_send(size_t i) const {
    return fleet_.conn_ready(i) && per_conn_[i].joined;
  }

  void begin() {
    const auto& o = ctx_.opt;
    if (interval_ns_ > 0)
      progress("chat: %.1f messages/s over %zu senders for %.1fs", o.rate, senders_.size(), o.duration_s);
    else
      progress("chat: closed loop, window %u per sender, %zu senders, %s", o.window, senders_.size(),
               o.messages ? (std::to_string(o.messages) + " messages").c_str() : (std::to_string(o.duration_s) + "s").c_str());
    redis_start_ = ctx_.redis_probe.sample();
    open_window(o.duration_s);
    next_send_ns_ = window_.start_ns;
    measuring_ = true;
    if (interval_ns_ > 0) {
      tick_.start(1, 1, [this] { send_due(); });
    } else {
      for (uint32_t w = 0; w < o.window; ++w)
        for (size_t i : senders_)
          if (can_send(i) && (o.messages == 0 || sent_ < o.messages)) send_message(i);
    }
    phase_timer_.start(uint64_t(o.duration_s * 1000), 0, [this] { end_measure(); });
  }

  void send_due() {
    const uint64_t now = now_ns();
    if (now >= window_.end_ns || senders_.empty()) return;
    for (int burst = 0; next_send_ns_ <= now && burst < 1000; ++burst) {
      next_send_ns_ += interval_ns_;
      const size_t i = senders_[next_sender_++ % senders_.size()];
      if (!can_send(i) || per_conn_[i].acks.pending_slots() >= ctx_.opt.max_outstanding) {
        ++skipped_;
        continue;
      }
      send_message(i);
    }
    if (next_send_ns_ <= now) {  // still behind: the loadgen could not keep up
      const uint64_t missed = (now - next_send_ns_) / interval_ns_ + 1;
      skipped_ += missed;
      next_send_ns_ += missed * interval_ns_;
    }
  }

  void send_message(size_t i) {
    auto& st = per_conn_[i];
    const uint64_t now = now_ns();
    const uint64_t id = st.acks.sent(now);
    // The send time leads the content: every delivery carries it back.
    std::string args = "[\"chat:message\",{\"conversationId\":\"" + conversation_of(ctx_.opt, i) +
                       "\",\"content\":\"" + std::to_string(now) + " " + pad_ + "\"}]";
    ++outstanding_;
    ++sent_;
    expected_deliveries_ += members_joined(i);
    fleet_.send_text(fleet_.conn(i), sio_text('2', nsp_, int64_t(id), args));
  }

  // Members of i's conversation in the room now (the sender included).
  size_t members_joined(size_t i) const {
    const size_t m = ctx_.opt.members, first = i / m * m;
    size_t n = 0;
    for (size_t k = first; k < first + m && k < fleet_.size(); ++k) n += can_send(k);
    return n;
  }

  void end_measure() {
    if (!measuring_) return;
    measuring_ = false;
    measured_ = true;
    tick_.stop();
    phase_timer_.stop();
    measured_s_ = seconds_between(window_.start_ns, now_ns());
    close_window();
    redis_end_ = ctx_.redis_probe.sample();
    progress("chat: %zu sent, %zu acked in %.2fs; draining %zu", sent_, acked_in_window_, measured_s_, outstanding_);
    draining_ = true;
    finish_if_drained();
    if (finishing_) return;
    phase_timer_.start(uint64_t(ctx_.opt.drain_s * 1000), 0, [this] { finish(); });
  }

  void on_finish() override {
    measuring_ = false;
    tick_.stop();
    if (measured_ && outstanding_ == 0) drained_ = ctx_.probe.sample();
  }

  std::vector<PerConn> per_conn_;
  std::vector<size_t> senders_;
  Timer tick_;
  std::string nsp_, pad_;
  uint64_t interval_ns_ = 0, next_send_ns_ = 0, next_sender_ = 0;
  bool established_ = false, started_ = false, measuring_ = false, measured_ = false, draining_ = false;
  double measured_s_ = 0;
  size_t joined_ = 0, join_refused_ = 0, outstanding_ = 0, skipped_ = 0;
  uint64_t sent_ = 0, acked_ = 0, acked_in_window_ = 0, ack_errors_ = 0;
  uint64_t received_ = 0, aliases_ = 0, delivered_ = 0, expected_deliveries_ = 0;
  std::string first_ack_error_;
  Histogram ack_us_, delivery_us_;
  std::optional<ServerProbe::Sample> drained_, redis_start_, redis_end_;
};

std::unique_ptr<Scenario> make_scenario(Context& ctx) {
  if (ctx.opt.scenario == "idle") return std::make_unique<IdleScenario>(ctx);
  if (ctx.opt.scenario == "echo") return std::make_unique<EchoScenario>(ctx);
  if (ctx.opt.scenario == "fanout") return std::make_unique<FanoutScenario>(ctx);
  if (ctx.opt.scenario == "chat") return std::make_unique<ChatScenario>(ctx);
  return nullptr;
}

// The machine allows 20000 files per process; take all of it.
rlim_t raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!parse_options(argc, argv, opt)) {
    usage();
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);  // a peer that goes away must not kill the run

  const ServerProbe probe(opt.server_pids, opt.server_pid_tree, opt.malloc_count_dir);
  const ServerProbe redis_probe(opt.redis_pids, 0, "");
  Context ctx{nullptr, opt, {}, probe, redis_probe};
  std::string err;
  if (!loopback_address(opt, ctx.fleet.addr, ctx.fleet.host_header, err)) {
    std::fprintf(stderr, "loadgen: %s\n", err.c_str());
    return 2;
  }
  // The echo namespace must be joined too.
  if (opt.scenario == "echo" &&
      std::find(opt.namespaces.begin(), opt.namespaces.end(), opt.echo_nsp) == opt.namespaces.end())
    opt.namespaces.push_back(opt.echo_nsp);
  if (opt.scenario == "chat" &&
      std::find(opt.namespaces.begin(), opt.namespaces.end(), opt.chat_nsp) == opt.namespaces.end())
    opt.namespaces.push_back(opt.chat_nsp);
  ctx.fleet.path = opt.path;
  ctx.fleet.namespaces = opt.namespaces;
  ctx.fleet.secret = opt.secret;
  ctx.fleet.concurrency = opt.concurrency;
  ctx.fleet.user_offset = opt.user_offset;
  ctx.fleet.source_first = std::clamp<uint32_t>(opt.source_first, 1, 254);
  ctx.fleet.sources = std::clamp<uint32_t>(opt.sources, 1, 255 - ctx.fleet.source_first);
  ctx.fleet.handshake_timeout_ms = uint64_t(opt.handshake_timeout_s * 1000);

  const rlim_t nofile = raise_nofile();
  const size_t wanted = opt.scenario == "chat" ? size_t(opt.conversations) * opt.members
                        : opt.connections ? opt.connections
                                          : (opt.scenario == "idle" ? 10000 : opt.scenario == "fanout" ? 1000 : 100);
  if (wanted + 64 > nofile) {
    std::fprintf(stderr, "loadgen: %zu connections need more open files than the limit (%llu)\n", wanted,
                 static_cast<unsigned long long>(nofile));
    return 2;
  }
  if (opt.server_pid_tree > 0 && kill(opt.server_pid_tree, 0) != 0) {
    std::fprintf(stderr, "loadgen: no process %d to sample\n", int(opt.server_pid_tree));
    return 2;
  }

  Loop loop;
  ctx.loop = loop.get();
  std::string report;
  bool ran = false;
  {
    std::unique_ptr<Scenario> scenario = make_scenario(ctx);
    if (!scenario) {
      std::fprintf(stderr, "loadgen: unknown scenario %s (idle, echo, fanout, chat)\n", opt.scenario.c_str());
      return 2;
    }
    // Bounded in time whatever happens: the deadline and signals end the run
    // through the same clean path (close everything, report what was measured).
    Timer deadline(loop.get());
    deadline.start(uint64_t(opt.max_seconds * 1000), 0, [&] { scenario->abort("deadline reached"); });
    Signal sigint(loop.get()), sigterm(loop.get());
    sigint.start(SIGINT, [&] { scenario->abort("interrupted"); });
    sigterm.start(SIGTERM, [&] { scenario->abort("terminated"); });

    scenario->start();
    uv_run(loop.get(), UV_RUN_DEFAULT);
    report = scenario->report();
    ran = scenario->ran();
  }
  std::printf("%s\n", report.c_str());
  std::fflush(stdout);
  return ran ? 0 : 1;
}
