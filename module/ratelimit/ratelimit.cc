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
//
// Its files: addresses (client IPs, trusted proxies), conf (the directives),
// ip_table (the node's connections per IP), window (a user's sliding window),
// events (the middleware), sync and lease (the leases from Redis),
// connections (the CONNECT hook); this one ties them to the module API.

#include <depth-realtime/module.h>
#include <unistd.h>

#include "state.h"

namespace ratelimit {
namespace {

// ------------------------------------------------------------ lifecycle

std::unique_ptr<dr::ModuleConf> create_conf() { return std::make_unique<RateConf>(); }

// In the master, before the workers fork (and on each reload: the same size
// keeps the table and the counts of the connections open).
bool init_master(dr::MasterContext& m, const dr::Module&, std::string& err) {
  return m.shared_zone(kIpZone, kIpZoneSize, err);
}

bool init_worker(dr::Worker& w, const dr::Module& self) {
  if (!attach_ip_table(w.shared_zone(kIpZone))) {
    dr::log(dr::LogLevel::Crit, "ratelimit: no shared connection table");
    return false;
  }
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
    release_socket(st, &s);
    if (!st.refusals.empty()) st.refusals.erase(socket_key(s));
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

std::shared_ptr<State> g_state;

}  // namespace ratelimit

DR_MODULE_EXPORT(ratelimit::kModule)

