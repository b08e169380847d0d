#include "conf.h"

#include <cctype>
#include <cstring>

namespace ratelimit {
namespace {

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
    if (!parse_cidr(item, cidr, err)) return false;
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

}  // namespace

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

}  // namespace ratelimit
