#include "core/config.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "core/log.h"
#include "core/tls_context.h"

namespace dr {

namespace {

// Where a module's DR_MODULE_SIGNATURE differs from the daemon's: "was built
// with _GLIBCXX_USE_CXX11_ABI=0, this daemon with 1" for the first item that
// differs (items are "NAME=value" separated by spaces), nullopt when equal.
std::optional<std::string> signature_difference(std::string_view theirs, std::string_view ours) {
  if (theirs == ours) return std::nullopt;
  auto items = [](std::string_view sig) {
    std::vector<std::pair<std::string_view, std::string_view>> out;
    for (size_t i = 0; i < sig.size();) {
      size_t end = sig.find(' ', i);
      if (end == std::string_view::npos) end = sig.size();
      std::string_view item = sig.substr(i, end - i);
      size_t eq = item.find('=');
      if (!item.empty()) out.emplace_back(item.substr(0, eq), eq == std::string_view::npos ? "" : item.substr(eq + 1));
      i = end + 1;
    }
    return out;
  };
  const auto mine = items(ours);
  const auto other = items(theirs);
  for (const auto& item : mine) {
    std::string_view name = item.first, value = item.second;  // (clang 14 cannot capture bindings)
    auto it = std::find_if(other.begin(), other.end(), [&](const auto& o) { return o.first == name; });
    if (it == other.end()) break;  // another signature format: say it whole
    if (it->second != value)
      return "was built with " + std::string(name) + "=" + std::string(it->second) + ", this daemon with " +
             std::string(value);
  }
  return "was built for another version (signature \"" + std::string(theirs) + "\", this daemon's \"" +
         std::string(ours) + "\")";
}

// The difference of a module that did not load, when it loads without binding
// its calls (not when it was linked -z now). Its static constructors run; a
// module whose constructors call into the API is not one this path can read.
std::optional<std::string> lazy_signature_difference(const std::string& path) {
  void* h = dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL);
  if (!h) return std::nullopt;
  std::optional<std::string> diff;
  if (auto entry = reinterpret_cast<const Module* (*)()>(dlsym(h, "dr_module_entry"))) {
    const Module* m = entry();
    if (m) diff = signature_difference(m->signature ? m->signature : "", DR_MODULE_SIGNATURE);
  }
  dlclose(h);
  return diff;
}

}  // namespace

// ----------------------------------------------------------- value parsers

bool conf_parse_flag(const std::vector<std::string>& a, bool& out, std::string& err) {
  if (a.at(0) == "on") out = true;
  else if (a.at(0) == "off") out = false;
  else {
    err = "invalid value \"" + a[0] + "\", expected \"on\" or \"off\"";
    return false;
  }
  return true;
}

bool conf_parse_size(const std::vector<std::string>& a, uint64_t& out, std::string& err) {
  auto v = conf::parse_size(a.at(0));
  if (!v) {
    err = "invalid size \"" + a[0] + "\", expected a number with an optional k, m or g suffix";
    return false;
  }
  out = *v;
  return true;
}

bool conf_parse_msec(const std::vector<std::string>& a, uint64_t& out, std::string& err) {
  auto v = conf::parse_msec(a.at(0));
  if (!v) {
    err = "invalid time \"" + a[0] + "\", expected e.g. 500ms, 25s, 2m, 1h";
    return false;
  }
  out = *v;
  return true;
}

bool conf_parse_uint(const std::vector<std::string>& a, uint64_t& out, std::string& err) {
  const std::string& s = a.at(0);
  uint64_t v = 0;
  bool ok = !s.empty() && s.size() <= 19;
  for (char c : s) {
    if (c < '0' || c > '9') ok = false;
    else v = v * 10 + (c - '0');
  }
  if (!ok) {
    err = "invalid number \"" + s + "\", expected a non-negative integer";
    return false;
  }
  out = v;
  return true;
}

std::string ListenAddress::text() const {
  std::string s = host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port)
                                                      : host + ":" + std::to_string(port);
  return ssl ? s + " ssl" : s;
}

std::string CoreConf::Redis::text() const {
  if (cluster()) {
    std::string s = "cluster";
    for (auto& n : cluster_nodes) s += (&n == &cluster_nodes[0] ? " " : ",") + n.host + ":" + std::to_string(n.port);
    return s;
  }
  if (sentinel())
    return "master " + master_name + (host.empty() ? " (not known yet)" : " at " + host + ":" + std::to_string(port));
  return unix_path.empty() ? host + ":" + std::to_string(port) : "unix:" + unix_path;
}

bool CoreConf::has_ssl() const {
  for (auto& l : listen)
    if (l.ssl) return true;
  for (auto& l : metrics_listen)
    if (l.ssl) return true;
  return false;
}

int CoreConf::workers() const {
  if (worker_processes > 0) return worker_processes;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? int(n) : 1;
}

void ModuleHandleDeleter::operator()(void* h) const {
  if (h) dlclose(h);
}

// ------------------------------------------------------- core directives

namespace {

bool set_worker_processes(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* core = static_cast<CoreConf*>(c);
  if (a[0] == "auto") {
    core->worker_processes = 0;
    return true;
  }
  uint64_t n;
  if (!conf_parse_uint(a, n, err) || n < 1 || n > 256) {
    err = "invalid value \"" + a[0] + "\", expected \"auto\" or a number from 1 to 256";
    return false;
  }
  core->worker_processes = int(n);
  return true;
}

bool set_error_log(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* core = static_cast<CoreConf*>(c);
  core->error_log = a[0];
  if (a.size() > 1 && !logging::parse_level(a[1], core->log_level)) {
    err = "invalid log level \"" + a[1] + "\", expected debug, info, notice, warn, error or crit";
    return false;
  }
  return true;
}

bool parse_listen(const std::string& s, ListenAddress& out, std::string& err) {
  std::string host = "0.0.0.0", port = s;
  if (!s.empty() && s[0] == '[') {  // [::1]:3000
    auto close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      err = "invalid listen address \"" + s + "\", expected [IPv6]:PORT";
      return false;
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else if (auto colon = s.rfind(':'); colon != std::string::npos) {
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host == "*" || host.empty()) host = "0.0.0.0";
    if (host == "localhost") host = "127.0.0.1";
  }
  uint64_t p = 0;
  std::string e;
  if (!conf_parse_uint({port}, p, e) || p < 1 || p > 65535) {
    err = "invalid port in \"" + s + "\", expected [ADDRESS:]PORT with a port from 1 to 65535";
    return false;
  }
  out.host = host;
  out.port = int(p);
  return true;
}

// `listen ADDR:PORT [ssl]`
bool parse_listen_args(const std::vector<std::string>& a, ListenAddress& addr, std::string& err) {
  if (!parse_listen(a[0], addr, err)) return false;
  if (a.size() > 1) {
    if (a[1] != "ssl") {
      err = "invalid parameter \"" + a[1] + "\", expected \"ssl\"";
      return false;
    }
    addr.ssl = true;
  }
  return true;
}

bool set_ssl_protocols(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  bool v12 = false, v13 = false;
  for (auto& p : a) {
    if (p == "TLSv1.2") v12 = true;
    else if (p == "TLSv1.3") v13 = true;
    else {
      err = "unsupported protocol \"" + p + "\", expected TLSv1.2 and/or TLSv1.3";
      return false;
    }
  }
  static_cast<CoreConf*>(c)->ssl_tls13_only = v13 && !v12;
  return true;
}

// `localhost:PORT` is both loopbacks, 127.0.0.1 and [::1]: resolvers hand out
// either first (Debian maps localhost to ::1 before 127.0.0.1).
bool is_localhost(const std::string& s) { return s.rfind("localhost:", 0) == 0; }

void add_listener(std::vector<ListenAddress>& to, const std::string& text, ListenAddress addr) {
  addr.localhost = is_localhost(text);
  to.push_back(addr);
  if (addr.localhost) {
    addr.host = "::1";
    to.push_back(addr);
  }
}

bool set_listen(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  ListenAddress addr;
  if (!parse_listen_args(a, addr, err)) return false;
  add_listener(static_cast<CoreConf*>(c)->listen, a[0], addr);
  return true;
}

// server_batch_events EVENT | EVENT[FIELD=VALUE] ...
// Additive: the server block and each module's conf (modules-enabled/, read
// at the top level) add their own rules, so a module's batching comes and
// goes with the module.
bool set_server_batch_events(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* core = static_cast<CoreConf*>(c);
  for (auto& arg : a) {
    CoreConf::BatchRule r;
    auto open = arg.find('[');
    r.event = arg.substr(0, open);
    if (open != std::string::npos) {
      auto eq = arg.find('=', open);
      if (arg.back() != ']' || eq == std::string::npos || eq == open + 1) {
        err = "invalid \"" + arg + "\", expected EVENT or EVENT[FIELD=VALUE]";
        return false;
      }
      r.field = arg.substr(open + 1, eq - open - 1);
      r.value = arg.substr(eq + 1, arg.size() - eq - 2);
    }
    if (r.event.empty()) {
      err = "invalid \"" + arg + "\", expected EVENT or EVENT[FIELD=VALUE]";
      return false;
    }
    core->server_batch_events.push_back(r);
  }
  return true;
}

// event_log off | PATH [all | sample=RATE]
bool set_event_log(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* core = static_cast<CoreConf*>(c);
  core->event_log = a[0];
  core->event_log_sample = 1.0;
  if (a.size() > 1 && a[1] != "all") {
    char* end = nullptr;
    double r = a[1].rfind("sample=", 0) == 0 ? strtod(a[1].c_str() + 7, &end) : -1;
    if (r <= 0 || r > 1 || !end || *end) {
      err = "invalid \"" + a[1] + "\", expected \"all\" or \"sample=RATE\" with 0 < RATE <= 1";
      return false;
    }
    core->event_log_sample = r;
  }
  if (a[0] == "off" && a.size() > 1) {
    err = "\"event_log off\" takes no more arguments";
    return false;
  }
  return true;
}

// parser json | msgpack
bool set_parser(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* core = static_cast<CoreConf*>(c);
  if (a[0] == "json") core->parser = CoreConf::Parser::Json;
  else if (a[0] == "msgpack") core->parser = CoreConf::Parser::Msgpack;
  else {
    err = "unknown parser \"" + a[0] + "\", expected \"json\" or \"msgpack\"";
    return false;
  }
  return true;
}

bool set_metrics_listen(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  if (a.size() == 1 && a[0] == "off") {  // e.g. ${METRICS_PORT:-off}: served on the main listener
    static_cast<CoreConf*>(c)->metrics_listen.clear();
    return true;
  }
  ListenAddress addr;
  if (!parse_listen_args(a, addr, err)) return false;
  add_listener(static_cast<CoreConf*>(c)->metrics_listen, a[0], addr);
  return true;
}

bool set_path(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  std::string p = a[0];
  if (p.empty() || p[0] != '/') {
    err = "invalid path \"" + p + "\", expected it to start with \"/\"";
    return false;
  }
  if (p.back() != '/') p.push_back('/');  // as Socket.IO does with its `path` option
  static_cast<CoreConf*>(c)->path = p;
  return true;
}

bool set_transports(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* core = static_cast<CoreConf*>(c);
  core->allow_polling = core->allow_websocket = false;
  for (auto& t : a) {
    if (t == "polling") core->allow_polling = true;
    else if (t == "websocket") core->allow_websocket = true;
    else {
      err = "unknown transport \"" + t + "\", expected \"polling\" and/or \"websocket\"";
      return false;
    }
  }
  return true;
}

// Origins may be given as several arguments and/or comma-separated (CLIENT_URL).
bool set_cors_origins(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* core = static_cast<CoreConf*>(c);
  core->cors_origins.clear();
  for (auto& arg : a) {
    size_t start = 0;
    while (start <= arg.size()) {
      size_t comma = arg.find(',', start);
      std::string o = arg.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      while (!o.empty() && o.back() == ' ') o.pop_back();
      while (!o.empty() && o.front() == ' ') o.erase(0, 1);
      while (!o.empty() && o.back() == '/') o.pop_back();  // "http://x/" and "http://x" are one origin
      if (!o.empty()) {
        if (o != "*" && o.find("://") == std::string::npos) {
          err = "invalid origin \"" + o + "\", expected scheme://host[:port]";
          return false;
        }
        core->cors_origins.push_back(o);
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return true;
}

// sentinel=HOST[:PORT],HOST[:PORT],... (port 26379 by default); cluster=... (6379)
bool parse_sentinels(const std::string& list, std::vector<CoreConf::Redis::Endpoint>& out, std::string& err,
                     const char* what = "sentinel", const char* port = ":26379") {
  out.clear();
  size_t start = 0;
  for (;;) {
    size_t comma = list.find(',', start);
    std::string addr = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    ListenAddress la;
    std::string e;
    if (addr.empty() || addr[0] == ':' ||
        !parse_listen(addr.find(':') == std::string::npos ? addr + port : addr, la, e)) {
      err = std::string("invalid ") + what + " address \"" + addr + "\", expected " + what +
            "=HOST[:PORT],HOST[:PORT],...";
      return false;
    }
    out.push_back({la.host, la.port});
    if (comma == std::string::npos) return true;
    start = comma + 1;
  }
}

// redis HOST:PORT | unix:/PATH [password=SECRET] [db=N]
// redis sentinel=HOST:PORT,... master=NAME [password=SECRET] [sentinel_password=SECRET] [db=N]
// redis cluster=HOST:PORT,... [password=SECRET]
bool set_redis(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto& r = static_cast<CoreConf*>(c)->redis;
  const std::string& addr = a[0];
  r.host.clear();
  r.unix_path.clear();
  r.sentinels.clear();
  r.master_name.clear();
  r.cluster_nodes.clear();
  bool sentinel = addr.rfind("sentinel=", 0) == 0;
  bool cluster = addr.rfind("cluster=", 0) == 0;
  if (cluster) {
    if (!parse_sentinels(addr.substr(8), r.cluster_nodes, err, "cluster", ":6379")) return false;
  } else if (sentinel) {
    if (!parse_sentinels(addr.substr(9), r.sentinels, err)) return false;
  } else if (a.size() > 3) {
    err = "too many parameters: expected HOST[:PORT] [password=SECRET] [db=N]";
    return false;
  } else if (addr == "off") {
    if (a.size() > 1) {
      err = "\"redis off\" takes no more arguments";
      return false;
    }
    return true;
  } else if (addr.rfind("unix:", 0) == 0) {
    r.unix_path = addr.substr(5);
    if (r.unix_path.empty()) {
      err = "invalid address \"" + addr + "\", expected unix:/path/to/redis.sock";
      return false;
    }
  } else {
    ListenAddress la;
    std::string e;
    if (addr.empty() || addr[0] == ':' || !parse_listen(addr.find(':') == std::string::npos ? addr + ":6379" : addr, la, e)) {
      err = "invalid address \"" + addr + "\", expected HOST[:PORT], unix:/path or sentinel=HOST:PORT,...";
      return false;
    }
    r.host = la.host;
    r.port = la.port;
  }
  for (size_t i = 1; i < a.size(); i++) {
    if (a[i].rfind("password=", 0) == 0) {
      r.password = a[i].substr(9);
    } else if (a[i].rfind("db=", 0) == 0 && !cluster) {  // a cluster has database 0 only
      if (!conf_parse_uint({a[i].substr(3)}, r.db, err)) return false;
    } else if (sentinel && a[i].rfind("master=", 0) == 0) {
      r.master_name = a[i].substr(7);
    } else if (sentinel && a[i].rfind("sentinel_password=", 0) == 0) {
      r.sentinel_password = a[i].substr(18);
    } else {
      err = "invalid parameter \"" + a[i] + "\", expected " +
            (sentinel  ? "master=NAME, password=SECRET, sentinel_password=SECRET or db=N"
             : cluster ? "password=SECRET (a Redis Cluster has database 0 only)"
                       : "password=SECRET or db=N");
      return false;
    }
  }
  if (sentinel && r.master_name.empty()) {
    err = "\"redis sentinel=...\" needs master=NAME (the name the sentinels monitor)";
    return false;
  }
  return true;
}

// redis_wait_replicas N TIMEOUT | off
bool set_redis_wait_replicas(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto& r = static_cast<CoreConf*>(c)->redis;
  if (a[0] == "off" && a.size() == 1) {
    r.wait_replicas = r.wait_timeout = 0;
    return true;
  }
  if (a.size() != 2) {
    err = "expected N TIMEOUT (e.g. 1 500ms) or off";
    return false;
  }
  uint64_t n = 0, ms = 0;
  if (!conf_parse_uint({a[0]}, n, err) || !conf_parse_msec({a[1]}, ms, err)) return false;
  if (n == 0 || ms == 0) {
    err = "N and TIMEOUT must be greater than 0 (WAIT 0 would wait for ever); use \"off\" to turn it off";
    return false;
  }
  r.wait_replicas = n;
  r.wait_timeout = ms;
  return true;
}

bool set_redis_db(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return conf_parse_uint(a, static_cast<CoreConf*>(c)->redis.db, err);
}
bool set_redis_password(ModuleConf* c, const std::vector<std::string>& a, std::string&) {
  static_cast<CoreConf*>(c)->redis.password = a[0];
  return true;
}
bool set_redis_key_prefix(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  if (a[0].empty() || a[0].find_first_of("*?[\\") != std::string::npos) {
    err = "invalid prefix \"" + a[0] + "\": it must be non-empty, without * ? [ or \\";
    return false;
  }
  static_cast<CoreConf*>(c)->redis.key_prefix = a[0];
  return true;
}
bool set_redis_app_prefix(ModuleConf* c, const std::vector<std::string>& a, std::string&) {
  static_cast<CoreConf*>(c)->redis.app_prefix = a[0];
  return true;
}
template <uint64_t CoreConf::Redis::*Field>
bool set_redis_msec(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return conf_parse_msec(a, static_cast<CoreConf*>(c)->redis.*Field, err);
}
bool set_redis_max_pending(ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return conf_parse_size(a, static_cast<CoreConf*>(c)->redis.max_pending, err);
}

constexpr unsigned M = kConfMain, S = kConfServer;

const Directive core_directives[] = {
    {"worker_processes", M, 1, 1, set_worker_processes, "auto", false,
     "number of worker processes; auto = one per CPU core"},
    {"error_log", M, 1, 2, set_error_log, "stderr info", true,
     "where the error log goes (stderr or a file) and its minimum level"},
    {"pid", M, 1, 1, set_str<&CoreConf::pid_file>, "(none)", false, "file the master writes its pid to"},
    {"worker_shutdown_timeout", M, 1, 1, set_msec<&CoreConf::worker_shutdown_timeout>, "10s", true,
     "how long a gracefully stopping worker waits for its clients before it exits"},
    {"worker_heartbeat_timeout", M, 1, 1, set_msec<&CoreConf::worker_heartbeat_timeout>, "10s", true,
     "a worker whose loop does not answer the master's heartbeat for this long is killed and replaced; 0: off"},
    {"event_log", M | S, 1, 2, set_event_log, "off", true,
     "JSON lines of client events (userId, event, time, ip): off, or PATH [all | sample=RATE]"},
    {"worker_shutdown_spread", M, 1, 1, set_msec<&CoreConf::worker_shutdown_spread>, "5s", true,
     "a stopping worker closes its sessions gradually over this time, so clients do not reconnect all at once"},
    {"listen", S, 1, 2, set_listen, "0.0.0.0:3000", false,
     "[ADDRESS:]PORT [ssl] to accept clients on ([::] is both families, or 0.0.0.0 with a warning on a kernel without IPv6; localhost both loopbacks); repeatable"},
    {"metrics_listen", S, 1, 2, set_metrics_listen, "(on listen)", false,
     "[ADDRESS:]PORT [ssl] of the metrics listener (/metrics, /healthz, /readyz); repeatable; off: on the main listener"},
    {"ssl_certificate", S, 1, 1, set_str<&CoreConf::ssl_certificate>, "(none)", true,
     "PEM certificate chain for listeners marked ssl; re-read on reload"},
    {"ssl_certificate_key", S, 1, 1, set_str<&CoreConf::ssl_certificate_key>, "(none)", true,
     "PEM private key of ssl_certificate; re-read on reload"},
    {"ssl_protocols", S, 1, 2, set_ssl_protocols, "TLSv1.2 TLSv1.3", true, "TLS versions accepted"},
    {"ssl_ciphers", S, 1, 1, set_str<&CoreConf::ssl_ciphers>, "(OpenSSL defaults)", true,
     "TLS 1.2 cipher list (OpenSSL syntax)"},
    {"path", S, 1, 1, set_path, "/socket.io/", false, "URL path of the Engine.IO endpoint"},
    {"ping_interval", S, 1, 1, set_msec<&CoreConf::ping_interval>, "25s", true,
     "interval between server pings (Engine.IO pingInterval)"},
    {"ping_timeout", S, 1, 1, set_msec<&CoreConf::ping_timeout>, "60s", true,
     "how long to wait for the pong before closing (pingTimeout)"},
    {"upgrade_timeout", S, 1, 1, set_msec<&CoreConf::upgrade_timeout>, "10s", true,
     "time allowed for the polling to WebSocket upgrade"},
    {"connect_timeout", S, 1, 1, set_msec<&CoreConf::connect_timeout>, "45s", true,
     "a session that joins no namespace within this time is closed"},
    {"max_payload", S, 1, 1, set_size<&CoreConf::max_payload>, "1000000", true,
     "largest message or polling body accepted (maxHttpBufferSize)"},
    {"transports", S, 1, 2, set_transports, "polling websocket", true, "allowed transports"},
    {"cors_origins", S, 1, -1, set_cors_origins, "(none)", true,
     "allowed CORS origins (space or comma separated); the exact origin is echoed"},
    {"cors_credentials", S, 1, 1, set_flag<&CoreConf::cors_credentials>, "on", true,
     "send Access-Control-Allow-Credentials: true to allowed origins"},
    {"client_header_timeout", S, 1, 1, set_msec<&CoreConf::client_header_timeout>, "10s", true,
     "time allowed to send the request headers"},
    {"client_body_timeout", S, 1, 1, set_msec<&CoreConf::client_body_timeout>, "10s", true,
     "time allowed to send the request body"},
    {"keepalive_timeout", S, 1, 1, set_msec<&CoreConf::keepalive_timeout>, "75s", true,
     "idle keep-alive HTTP connections are closed after this"},
    {"client_max_header_size", S, 1, 1, set_size<&CoreConf::client_max_header_size>, "16k", true,
     "largest request line plus headers (431 beyond)"},
    {"max_output_buffer", S, 1, 1, set_size<&CoreConf::max_output_buffer>, "4m", true,
     "a client whose unsent output (a connection's, a long-polling session's queue, events waiting for a handler) grows past this is closed"},
    {"client_batch", S, 1, 1, set_flag<&CoreConf::client_batch>, "off", true,
     "accept the client event \"batch\" [{event, data}, ...]: each item handled as if sent alone"},
    {"parser", S, 1, 1, set_parser, "json", false,
     "Socket.IO packet encoding of every client: json (socket.io-parser) or msgpack (socket.io-msgpack-parser)"},
    {"server_batch_events", M | S, 1, -1, set_server_batch_events, "(none)", true,
     "events coalesced per socket into one \"batch\" event for clients that connect with auth.batch: true; "
     "repeatable, each adds its rules (a module's conf may declare its own)"},
    {"server_batch_interval", S, 1, 1, set_msec<&CoreConf::server_batch_interval>, "100ms", true,
     "how long server batching collects events before sending them"},
    {"websocket_compression", S, 1, 1, set_flag<&CoreConf::websocket_compression>, "on", false,
     "permessage-deflate (without context takeover) when the client offers it"},
    {"http_compression", S, 1, 1, set_flag<&CoreConf::http_compression>, "on", true,
     "gzip or deflate long-polling responses when the client accepts it"},
    {"compression_threshold", S, 1, 1, set_size<&CoreConf::compression_threshold>, "1024", true,
     "smallest message or polling response that is compressed"},
    {"compression_level", S, 1, 1, set_uint<&CoreConf::compression_level>, "6", true,
     "zlib level, 1 (fast) to 9 (small)"},
    {"redis", S, 1, 5, set_redis, "off", false,
     "HOST[:PORT] | unix:/PATH | sentinel=HOST:PORT,... master=NAME [password=SECRET] [sentinel_password=SECRET] "
     "[db=N] | cluster=HOST:PORT,... [password=SECRET]: the Redis that joins the workers and nodes into one cluster"},
    {"redis_wait_replicas", S, 1, 2, set_redis_wait_replicas, "off", false,
     "N TIMEOUT: a chat message or comment is acked as stored once WAIT says N replicas have it"},
    {"redis_password", S, 1, 1, set_redis_password, "(none)", false, "AUTH password for redis (empty: none)"},
    {"redis_db", S, 1, 1, set_redis_db, "0", false, "database number for the keys the daemon keeps (SELECT)"},
    {"redis_key_prefix", S, 1, 1, set_redis_key_prefix, "socket.io", false,
     "channel prefix of the adapter (the `key` option of @socket.io/redis-adapter and the emitter)"},
    {"redis_app_prefix", S, 1, 1, set_redis_app_prefix, "depth:", false,
     "prefix of the keys the daemon keeps in Redis (membership, nodes, recovery)"},
    {"redis_connect_timeout", S, 1, 1, set_redis_msec<&CoreConf::Redis::connect_timeout>, "5s", false,
     "time allowed to connect to Redis before retrying"},
    {"redis_command_timeout", S, 1, 1, set_redis_msec<&CoreConf::Redis::command_timeout>, "5s", false,
     "a Redis command unanswered this long drops the connection (then it reconnects)"},
    {"redis_requests_timeout", S, 1, 1, set_redis_msec<&CoreConf::Redis::requests_timeout>, "5s", false,
     "how long cluster requests (fetchSockets, allRooms, serverSideEmit acks) wait for the other nodes"},
    {"redis_node_ttl", S, 1, 1, set_redis_msec<&CoreConf::Redis::node_ttl>, "15s", false,
     "nodes heartbeat every third of this; one silent this long is dead and its room membership is removed"},
    {"redis_max_pending", S, 1, 1, set_redis_max_pending, "16m", false,
     "bytes of commands that may wait for a slow Redis; beyond it commands are dropped (and counted)"},
    {"recovery_window", S, 1, 1, set_msec<&CoreConf::recovery_window>, "120s", true,
     "connection state recovery (with redis): a client back within this time gets the events it missed; 0 = off"},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

// ------------------------------------------------------------ applying

struct Applier {
  Config& cfg;
  const LoadOptions& opts;
  std::string& err;

  bool fail(const conf::Node& n, const std::string& msg) {
    err = n.where() + ": " + msg;
    return false;
  }

  // Finds `name` in the core table or a module's; `owner` -1 = core.
  const Directive* find(const std::string& name, int& owner) {
    for (const Directive* d = core_directives; d->name; d++)
      if (name == d->name) {
        owner = -1;
        return d;
      }
    for (size_t i = 0; i < cfg.modules.size(); i++)
      for (const Directive* d = cfg.modules[i].module->directives; d && d->name; d++)
        if (name == d->name) {
          owner = int(i);
          return d;
        }
    return nullptr;
  }

  bool load_module(const conf::Node& n) {
    if (n.args.size() != 1) return fail(n, "\"load_module\" takes one argument: the module file");
    std::string path = n.args[0];
    if (path.empty() || path[0] != '/') path = opts.module_dir + "/" + path;
    dlerror();
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      std::string error = dlerror();
      // A module built with another std::string ABI, say, usually fails here
      // on a symbol the daemon names differently: open it lazily (calls not
      // bound) to read its signature and say which build setting differs.
      if (auto diff = lazy_signature_difference(path)) return fail(n, "module \"" + path + "\" " + *diff);
      return fail(n, "cannot load module: " + error);
    }
    LoadedModule lm;
    lm.handle.reset(h);
    lm.path = path;
    cfg.restart_fingerprint += "load_module " + path + "\n";
    auto entry = reinterpret_cast<const Module* (*)()>(dlsym(h, "dr_module_entry"));
    if (!entry) return fail(n, "\"" + path + "\" is not a depth-realtime module (no dr_module_entry)");
    lm.module = entry();
    if (!lm.module) return fail(n, "\"" + path + "\" is not a depth-realtime module (dr_module_entry returned null)");
    if (auto diff = signature_difference(lm.module->signature ? lm.module->signature : "", DR_MODULE_SIGNATURE))
      return fail(n, "module \"" + path + "\" " + *diff);
    if (lm.module->abi != kModuleAbi)
      return fail(n, "module \"" + path + "\" was built with module ABI " + std::to_string(lm.module->abi) +
                         ", this daemon with " + std::to_string(kModuleAbi));
    for (auto& other : cfg.modules)
      if (strcmp(other.module->name, lm.module->name) == 0)
        return fail(n, std::string("module \"") + lm.module->name + "\" is already loaded");
    if (lm.module->create_conf) lm.conf = lm.module->create_conf();
    cfg.modules.push_back(std::move(lm));
    return true;
  }

  ModuleConf* conf_of(int owner, NamespaceConf* ns) {
    if (owner < 0) return &cfg.core;
    if (ns) return ns->module_confs[owner].get();
    return cfg.modules[owner].conf.get();
  }

  bool apply(const conf::Node& n, unsigned ctx, NamespaceConf* ns) {
    if (n.name == "load_module") {
      if (ctx != kConfMain) return fail(n, "\"load_module\" is only allowed at the top level");
      return true;  // done in the first pass
    }
    if (n.name == "server") {
      if (ctx != kConfMain || !n.is_block) return fail(n, "\"server\" is a block at the top level: server { ... }");
      if (server_seen) return fail(n, "only one \"server\" block is supported");
      server_seen = true;
      if (!n.args.empty()) return fail(n, "\"server\" takes no arguments");
      for (auto& c : n.children)
        if (c.name != "namespace" && !apply(c, kConfServer, nullptr)) return false;
      // Namespaces after the server level, so they start from its final values.
      for (auto& c : n.children)
        if (c.name == "namespace" && !apply_namespace(c)) return false;
      return true;
    }
    if (n.name == "namespace") return fail(n, "\"namespace\" is only allowed inside \"server\"");
    if (n.is_block) return fail(n, "\"" + n.name + "\" is not a block");
    int owner;
    const Directive* d = find(n.name, owner);
    if (!d) return fail(n, "unknown directive \"" + n.name + "\"");
    if (!(d->contexts & ctx)) {
      std::string where;
      if (d->contexts & kConfMain) where += " the top level";
      if (d->contexts & kConfServer) where += std::string(where.empty() ? "" : " or") + " \"server\"";
      if (d->contexts & kConfNamespace) where += std::string(where.empty() ? "" : " or") + " \"namespace\"";
      return fail(n, "\"" + n.name + "\" is not allowed here, only in" + where);
    }
    int argc = int(n.args.size());
    if (argc < d->min_args || (d->max_args >= 0 && argc > d->max_args)) {
      std::string want = d->min_args == d->max_args ? std::to_string(d->min_args)
                         : d->max_args < 0 ? "at least " + std::to_string(d->min_args)
                                           : std::to_string(d->min_args) + " to " + std::to_string(d->max_args);
      return fail(n, "invalid number of arguments in \"" + n.name + "\": expected " + want + ", got " +
                         std::to_string(argc));
    }
    ModuleConf* target = conf_of(owner, ns);
    if (!target) return fail(n, "module of \"" + n.name + "\" has no configuration");
    std::string e;
    if (!d->set(target, n.args, e)) return fail(n, e);
    cfg.set_at[n.name] = n.where();
    if (!d->reload_in_place) {
      cfg.restart_fingerprint += (ns ? ns->name : std::string("-")) + " " + n.name;
      for (auto& a : n.args) cfg.restart_fingerprint += " " + a;
      cfg.restart_fingerprint += "\n";
    }
    return true;
  }

  bool apply_namespace(const conf::Node& n) {
    if (n.args.size() != 1 || n.args[0].empty() || n.args[0][0] != '/' ||
        n.args[0].find(',') != std::string::npos)
      return fail(n, "\"namespace\" takes one name starting with \"/\" (and without commas)");
    if (cfg.find_namespace(n.args[0])) return fail(n, "namespace \"" + n.args[0] + "\" is declared twice");
    NamespaceConf ns;
    ns.name = n.args[0];
    for (auto& m : cfg.modules) ns.module_confs.push_back(m.conf ? m.conf->clone() : nullptr);
    cfg.namespaces.push_back(std::move(ns));
    cfg.restart_fingerprint += "namespace " + n.args[0] + "\n";
    for (auto& c : n.children) {
      if (c.name == "namespace") return fail(c, "namespaces do not nest");
      if (!apply(c, kConfNamespace, &cfg.namespaces.back())) return false;
    }
    return true;
  }

  bool server_seen = false;
};

}  // namespace

std::string Config::where(std::string_view directive, const std::string& fallback) const {
  auto it = set_at.find(directive);
  return it != set_at.end() ? it->second : fallback;
}

const NamespaceConf* Config::find_namespace(std::string_view name) const {
  for (auto& ns : namespaces)
    if (ns.name == name) return &ns;
  return nullptr;
}

const ModuleConf* Config::module_conf(const Module& m, std::string_view nsp) const {
  for (size_t i = 0; i < modules.size(); i++) {
    if (modules[i].module != &m) continue;
    if (!nsp.empty())
      if (auto* ns = find_namespace(nsp)) return ns->module_confs[i].get();
    return modules[i].conf.get();
  }
  return nullptr;
}

std::unique_ptr<Config> load_config(const std::string& path, const LoadOptions& opts, std::string& err) {
  std::vector<conf::Node> nodes;
  if (!conf::parse_file(path, nodes, err)) return nullptr;
  auto cfg = std::make_unique<Config>();
  cfg->file = path;
  Applier ap{*cfg, opts, err};
  // Modules first: their directives may appear anywhere after.
  for (auto& n : nodes)
    if (n.name == "load_module" && !ap.load_module(n)) return nullptr;
  for (auto& n : nodes)
    if (!ap.apply(n, kConfMain, nullptr)) return nullptr;
  if (!ap.server_seen) {
    err = path + ": no \"server\" block: nothing to serve";
    return nullptr;
  }
  if (cfg->core.listen.empty()) cfg->core.listen.push_back({"0.0.0.0", 3000});
  if (cfg->namespaces.empty()) {  // Socket.IO always has "/"
    NamespaceConf ns;
    ns.name = "/";
    for (auto& m : cfg->modules) ns.module_confs.push_back(m.conf ? m.conf->clone() : nullptr);
    cfg->namespaces.push_back(std::move(ns));
  }
  if (cfg->core.ping_interval == 0 || cfg->core.ping_timeout == 0) {
    err = path + ": ping_interval and ping_timeout must be greater than 0";
    return nullptr;
  }
  if (cfg->core.has_ssl()) {
    // Load the certificate now, so -t and a reload catch a bad one.
    std::string e;
    if (cfg->core.ssl_certificate.empty() || cfg->core.ssl_certificate_key.empty()) {
      err = cfg->where("listen", path) + ": a listener is marked ssl but ssl_certificate or ssl_certificate_key is missing";
      return nullptr;
    }
    if (!tls::make_context(cfg->core, e)) {
      // The message names the directive at fault: point at its line.
      const char* at = e.find("ssl_ciphers") != std::string::npos           ? "ssl_ciphers"
                       : e.find("ssl_certificate_key") != std::string::npos ? "ssl_certificate_key"
                                                                             : "ssl_certificate";
      err = cfg->where(at, path) + ": " + e;
      return nullptr;
    }
  }
  if (cfg->core.redis.node_ttl < 1000 || cfg->core.redis.connect_timeout == 0 ||
      cfg->core.redis.command_timeout == 0 || cfg->core.redis.requests_timeout == 0) {
    err = path + ": redis_node_ttl must be at least 1s, and the redis timeouts greater than 0";
    return nullptr;
  }
  // WAIT blocks the worker's commands connection: it must give up first.
  if (cfg->core.redis.wait_replicas && cfg->core.redis.wait_timeout >= cfg->core.redis.command_timeout) {
    err = cfg->where("redis_wait_replicas", path) + ": redis_wait_replicas' TIMEOUT must be shorter than redis_command_timeout (" +
          std::to_string(cfg->core.redis.command_timeout) + "ms)";
    return nullptr;
  }
  // WAIT counts the replicas of the one master a connection writes to; a
  // cluster's writes spread over several masters (not supported yet).
  if (cfg->core.redis.cluster() && cfg->core.redis.wait_replicas) {
    err = cfg->where("redis_wait_replicas", path) + ": redis_wait_replicas is not supported with \"redis cluster=...\" yet";
    return nullptr;
  }
  if (cfg->core.redis.cluster() && cfg->core.redis.db) {
    err = cfg->where("redis_db", path) + ": a Redis Cluster has database 0 only";
    return nullptr;
  }
  if (cfg->core.compression_level < 1 || cfg->core.compression_level > 9) {
    err = path + ": compression_level must be from 1 to 9";
    return nullptr;
  }
  if (!cfg->core.allow_polling && !cfg->core.allow_websocket) {
    err = path + ": no transport is allowed";
    return nullptr;
  }
  for (auto& m : cfg->modules) {
    if (!m.module->check_conf) continue;
    std::string e;
    if (!m.module->check_conf(m.conf.get(), e)) {
      err = path + ": module \"" + m.module->name + "\": " + e;
      return nullptr;
    }
    for (size_t i = 0; i < cfg->modules.size(); i++)
      if (&cfg->modules[i] == &m)
        for (auto& ns : cfg->namespaces)
          if (ns.module_confs[i] && !m.module->check_conf(ns.module_confs[i].get(), e)) {
            err = path + ": module \"" + m.module->name + "\" in namespace \"" + ns.name + "\": " + e;
            return nullptr;
          }
  }
  return cfg;
}

std::string directive_reference(const Config& cfg) {
  auto ctx_text = [](unsigned c) {
    std::string s;
    if (c & kConfMain) s += "main ";
    if (c & kConfServer) s += "server ";
    if (c & kConfNamespace) s += "namespace ";
    if (!s.empty()) s.pop_back();
    return s;
  };
  auto table = [&](const char* owner, const Directive* d, std::string& out) {
    for (; d && d->name; d++)
      out += std::string(d->name) + "\t" + owner + "\t" + ctx_text(d->contexts) + "\t" +
             (d->default_text ? d->default_text : "") + "\t" + (d->reload_in_place ? "reload" : "restart") +
             "\t" + (d->help ? d->help : "") + "\n";
  };
  std::string out = "directive\tmodule\tcontext\tdefault\tapplied by\tdescription\n";
  table("core", core_directives, out);
  for (auto& m : cfg.modules) table(m.module->name, m.module->directives, out);
  return out;
}

}  // namespace dr
