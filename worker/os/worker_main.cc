// A worker process: one libuv loop serving HTTP, Engine.IO and Socket.IO for
// the connections the master hands it, and the modules' hooks.
#include "os/worker_main.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "cluster/backend.h"
#include "cluster/redis_adapter.h"
#include "cluster/redis_api.h"
#include "core/event_log.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/module_timeout.h"
#include "core/shared_zones.h"
#include "core/timers.h"
#include "core/uv_util.h"
#include "eio/session.h"
#include "http/connection.h"
#include "os/channel.h"
#include "os/master.h"
#include "sio/server.h"

namespace dr {
namespace {

constexpr uint64_t kDrainStepMs = 10;  // the finest slice of a drain spread

struct Route {
  Listener where;
  std::string method;
  std::string path;
  HttpHandler handler;
};

class WorkerRuntime final : public Worker, public http::ConnectionOwner {
 public:
  WorkerRuntime(const Config& cfg, int slot, int id, std::string conf_path, LoadOptions load)
      : cfg_(&cfg),
        slot_(slot),
        conf_path_(std::move(conf_path)),
        load_(std::move(load)),
        loop_ready_(uv_loop_init(&loop_) == 0),
        timers_(&loop_),
        eio_(cfg.core, id, cfg.core.workers(), timers_, [this](eio::Session& s) { return sio_.make_client(s); }),
        sio_(cfg, timers_) {
    set_limits();
  }

  int run(int channel_fd);

  // ---- Worker (the module API)
  uv_loop_t* loop() override { return &loop_; }
  int slot() const override { return slot_; }
  int64_t now_ms() const override { return timers_.now(); }
  std::unique_ptr<Timeout> timeout(std::function<void()> fn) override {
    return std::make_unique<ModuleTimeout>(timers_, std::move(fn));
  }
  std::unique_ptr<Timeout> timeout_fn(void (*fn)(void*), void* arg) override {
    return std::make_unique<ModuleFnTimeout>(timers_, fn, arg);
  }
  void post(std::function<void()> fn) override { timers_.post(std::move(fn)); }
  const ModuleConf* conf(const Module& m, std::string_view nsp) const override { return cfg_->module_conf(m, nsp); }
  std::vector<std::string> namespaces() const override {
    std::vector<std::string> out;
    for (auto& ns : cfg_->namespaces) out.push_back(ns.name);
    return out;
  }
  // Sorted here, by phase, then in registration order: a hook goes after
  // every hook of its phase and before those of later phases.
  void use_connect(std::string_view nsp, ConnectHook hook, ConnectPhase phase) override {
    for (auto* ns : select(nsp)) {
      auto& phases = connect_phases_[ns];
      auto at = std::upper_bound(phases.begin(), phases.end(), phase) - phases.begin();
      phases.insert(phases.begin() + at, phase);
      ns->connect_hooks.insert(ns->connect_hooks.begin() + at, hook);
    }
  }
  void use_event(std::string_view nsp, EventMiddleware mw, EventPhase phase) override {
    for (auto* ns : select(nsp)) {
      auto& phases = event_phases_[ns];
      auto at = std::upper_bound(phases.begin(), phases.end(), phase) - phases.begin();
      phases.insert(phases.begin() + at, phase);
      ns->middleware.insert(ns->middleware.begin() + at, mw);
      if (phase == EventPhase::Limit) ns->limit_middleware++;
    }
  }
  void on_connection(std::string_view nsp, ConnectionHandler h) override {
    for (auto* ns : select(nsp)) ns->connection_handlers.push_back(h);
  }
  void on(std::string_view nsp, std::string_view event, EventHandler h) override {
    for (auto* ns : select(nsp)) ns->handlers[std::string(event)].push_back(h);
  }
  void on_disconnect(std::string_view nsp, DisconnectHandler h) override {
    for (auto* ns : select(nsp)) ns->disconnect_handlers.push_back(h);
  }
  void on_room(std::string_view nsp, RoomHandler h) override {
    for (auto* ns : select(nsp)) ns->room_handlers.push_back(h);
  }
  void on_transport(std::string_view nsp, ConnectionHandler h) override {
    for (auto* ns : select(nsp)) ns->transport_handlers.push_back(h);
  }
  void on_room_check(std::string_view nsp, RoomGuard guard) override {
    for (auto* ns : select(nsp)) ns->room_guards.push_back(guard);
  }
  void on_event_sent(std::string_view nsp, SentHandler h) override {
    for (auto* ns : select(nsp)) ns->sent_handlers.push_back(h);
  }
  void broadcast(const BroadcastOptions& opts, std::string_view event, Payload args) override {
    sio_.broadcast(opts, event, std::move(args));
  }
  std::vector<std::weak_ptr<Socket>> local_sockets(std::string_view nsp, std::string_view room) override {
    std::vector<std::weak_ptr<Socket>> out;
    if (auto* ns = sio_.find(nsp))
      for (auto* s : ns->members(room)) out.push_back(s->weak());
    return out;
  }
  void route(Listener where, std::string_view method, std::string_view path, HttpHandler h) override {
    routes_.push_back({where, std::string(method), std::string(path), std::move(h)});
  }
  void metric_declare(std::string_view name, MetricType type, std::string_view help) override {
    metrics::declare(name, type, help);
  }
  void metric_add(std::string_view name, std::string_view label, int64_t delta) override {
    metrics::add(metrics::get(name, label), delta);
  }
  std::vector<MetricSample> metric_read(std::string_view name) const override { return metrics::read(name); }
  std::span<std::byte> shared_zone(std::string_view name) override { return zones::find(name); }

  // ---- http::ConnectionOwner
  int owner_slot(std::string_view url) override { return eio_.owner_slot(url); }
  void on_request(http::Connection& c, http::Request& req) override;
  void on_ws_message(http::Connection& c, bool binary, std::string_view data) override {
    eio_.on_ws_message(c, binary, data);
  }
  void on_closed(http::Connection& c) override { eio_.on_connection_closed(c); }
  void hand_off(http::Connection& c, int slot, std::string bytes) override;
  void mark_dirty(http::Connection& c) override {
    c.dirty = true;
    dirty_.push_back(&c);
  }
  Timers& timers() override { return timers_; }
  void destroy(http::Connection& c) override {
    size_t i = c.owner_index;
    if (i >= conns_.size() || conns_[i].get() != &c) return;
    dead_.push_back(std::move(conns_[i]));
    if (i + 1 < conns_.size()) {  // the last one takes its place
      conns_[i] = std::move(conns_.back());
      conns_[i]->owner_index = uint32_t(i);
    }
    conns_.pop_back();
  }
  // The connection at `index`, if it is still the one with `serial`.
  http::Connection* live_connection(size_t index, uint64_t serial) {
    return index < conns_.size() && conns_[index]->serial == serial ? conns_[index].get() : nullptr;
  }

 private:
  std::vector<sio::Namespace*> select(std::string_view nsp) {
    if (nsp.empty()) return sio_.all();
    if (auto* ns = sio_.find(nsp)) return {ns};
    logf(LogLevel::Warn, "a module registered a hook for the undeclared namespace \"%.*s\"", int(nsp.size()),
         nsp.data());
    return {};
  }
  void accept(std::unique_ptr<uv_tcp_t> tcp, std::string_view body);
  void before_poll();
  void drain_step();
  void on_signal(int sig);
  void stop_gracefully();
  void stop_fast();
  void set_limits();
  void reload_in_place();

  const Config* cfg_;
  std::vector<std::unique_ptr<Config>> configs_;  // reloaded ones; kept, modules may hold pointers into them
  int slot_;
  std::string conf_path_;
  LoadOptions load_;
  tls::Context tls_ctx_;  // for listeners marked ssl; rebuilt on reload
  uv_loop_t loop_{};
  bool loop_ready_;  // initialised first: the timer facility lives on it
  Timers timers_;  // every session's and connection's deadlines, on one uv_timer
  http::Limits limits_;
  eio::Server eio_;
  sio::Server sio_;
  Channel channel_;
  std::vector<std::unique_ptr<http::Connection>> conns_;  // each knows its index
  std::vector<http::Connection*> dirty_;
  std::vector<http::Connection*> flushing_;  // before_poll's: the dirty_ of the turn being flushed
  std::vector<std::unique_ptr<http::Connection>> dead_;
  std::vector<Route> routes_;
  std::unordered_map<sio::Namespace*, std::vector<ConnectPhase>> connect_phases_;  // of each connect_hooks entry
  std::unordered_map<sio::Namespace*, std::vector<EventPhase>> event_phases_;      // of each middleware entry
  UvHandle<uv_prepare_t> prepare_;
  std::vector<std::unique_ptr<uv_signal_t>> signals_;
  cluster::RedisAdapter* redis_ = nullptr;       // owned by sio_, when Redis is configured
  std::unique_ptr<cluster::LocalBackend> local_backend_;  // the cluster API without Redis
  bool stopping_ = false;
  CallbackTimer drain_timer_{timers_, [this] { drain_step(); }};
  CallbackTimer stop_timer_{timers_, [this] { uv_stop(&loop_); }};  // worker_shutdown_timeout
  size_t drain_per_step_ = 0;
  int64_t drain_step_ms_ = 0;
  // A fast stop waits this long at most for Redis to take the sessions.
  static constexpr int64_t kFastStopWaitMs = 500;
  Timer fast_stop_{timers_, [](void* self) { uv_stop(&static_cast<WorkerRuntime*>(self)->loop_); }, this};
};

// `body`: the listener kind (u32) and the bytes another worker already read.
// Connections read their limits through a reference, so new values reach
// existing connections at once.
void WorkerRuntime::set_limits() {
  const CoreConf& c = cfg_->core;
  limits_.max_header = c.client_max_header_size;
  limits_.max_body = c.max_payload;
  limits_.max_ws_message = c.max_payload;
  limits_.max_output = c.max_output_buffer;
  limits_.header_timeout = c.client_header_timeout;
  limits_.body_timeout = c.client_body_timeout;
  limits_.keepalive_timeout = c.keepalive_timeout;
  limits_.text_errors_path = c.path;
}

void WorkerRuntime::reload_in_place() {
  std::string err;
  auto fresh = load_config(conf_path_, load_, err);
  if (!fresh) {
    logf(LogLevel::Error, "worker %d: reload failed, keeping the running configuration: %s", slot_, err.c_str());
    return;
  }
  if (fresh->restart_fingerprint != cfg_->restart_fingerprint) {
    logf(LogLevel::Warn, "worker %d: the configuration changed again since the master read it; not applied", slot_);
    return;
  }
  configs_.push_back(std::move(fresh));
  cfg_ = configs_.back().get();
  if (!logging::open(cfg_->core.error_log, cfg_->core.log_level, err))
    logf(LogLevel::Error, "worker %d: %s", slot_, err.c_str());
  if (!event_log::open(cfg_->core.event_log, cfg_->core.event_log_sample, err))
    logf(LogLevel::Error, "worker %d: %s", slot_, err.c_str());
  set_limits();
  if (cfg_->core.has_ssl()) {
    // New connections get the re-read certificate; open ones keep theirs.
    if (auto ctx = tls::make_context(cfg_->core, err)) tls_ctx_ = ctx;
    else logf(LogLevel::Error, "worker %d: %s; keeping the previous certificate", slot_, err.c_str());
  }
  eio_.set_conf(cfg_->core);
  sio_.set_config(*cfg_);
  logf(LogLevel::Info, "worker %d: configuration applied in place", slot_);
}

void WorkerRuntime::accept(std::unique_ptr<uv_tcp_t> tcp, std::string_view body) {
  // (A stopping worker still takes the requests of its own sessions, which
  // other workers pass it: refusing them would cut clients off mid-request.)
  if (body.size() < 4) {
    close_handle(std::move(tcp));
    return;
  }
  uint32_t kind;
  memcpy(&kind, body.data(), 4);
  auto c = std::make_unique<http::Connection>(*this, limits_, std::move(tcp));
  c->listener = (kind & 0xff) == uint32_t(Listener::Metrics) ? Listener::Metrics : Listener::Main;
  c->may_hand_off = !(kind & kNoHandoff);
  if (kind & kListenerSsl) {
    if (!tls_ctx_) {
      close_handle(c->release_tcp());
      return;
    }
    c->use_tls(tls_ctx_);
  }
  http::Connection* raw = c.get();
  raw->owner_index = uint32_t(conns_.size());
  conns_.push_back(std::move(c));
  raw->start(body.substr(4));
  if (stopping_) raw->drain(1000);
}

void WorkerRuntime::hand_off(http::Connection& c, int slot, std::string bytes) {
  std::string body(8, '\0');
  uint32_t s = uint32_t(slot), kind = uint32_t(c.listener);
  memcpy(body.data(), &s, 4);
  memcpy(body.data() + 4, &kind, 4);
  body += bytes;
  auto tcp = c.release_tcp();
  channel_.send(ChannelMsg::Handoff, body, std::move(tcp));
  destroy(c);
}

void WorkerRuntime::on_request(http::Connection& c, http::Request& req) {
  // The metrics listener serves operations routes only; without one, the main
  // listener serves them too.
  bool ops = c.listener == Listener::Metrics || cfg_->core.metrics_listen.empty();
  if (c.listener == Listener::Main && eio_.matches(req.path)) {
    eio_.handle_request(c, req);
    return;
  }
  if (req.upgrade) {
    c.respond(400, "text/plain", "Bad Request");
    return;
  }
  if (req.path == "/healthz") {
    if (req.method != "GET" && req.method != "HEAD") {
      c.respond(405, "application/json", R"({"error":{"code":"METHOD_NOT_ALLOWED","message":"Method not allowed"}})",
                {{"Allow", "GET, HEAD"}});
      return;
    }
    c.respond(200, "application/json", R"({"status":"ok"})");
    return;
  }
  if (req.path == "/readyz") {
    if (req.method != "GET" && req.method != "HEAD") {
      c.respond(405, "application/json", R"({"error":{"code":"METHOD_NOT_ALLOWED","message":"Method not allowed"}})",
                {{"Allow", "GET, HEAD"}});
      return;
    }
    // Not ready while the configured Redis is away (this worker's link).
    if (redis_ && !redis_->ready()) c.respond(503, "application/json", R"({"status":"not ready","redis":"down"})");
    else c.respond(200, "application/json", R"({"status":"ready"})");
    return;
  }
  if (ops && req.path == "/metrics") {
    if (req.method != "GET") {
      c.respond(405, "application/json", R"({"error":{"code":"METHOD_NOT_ALLOWED","message":"Method not allowed"}})");
      return;
    }
    c.respond(200, "text/plain; version=0.0.4; charset=utf-8", metrics::render());
    return;
  }
  bool path_known = false;
  for (auto& r : routes_) {
    if (r.path != req.path) continue;
    if (r.where == Listener::Metrics ? !ops : c.listener != Listener::Main) continue;
    path_known = true;
    if (r.method != req.method) continue;
    HttpRequest hr;
    hr.method = req.method;
    hr.path = req.path;
    hr.query = req.query;
    hr.headers = req.headers;
    hr.body = std::move(req.body);
    hr.address = c.address();
    // The answer may come later; the connection may be gone by then (and its
    // place taken by another: the serial tells).
    size_t index = c.owner_index;
    uint64_t serial = c.serial;
    HttpRespond respond = [this, index, serial](HttpResponse res) {
      http::Connection* conn = live_connection(index, serial);
      if (!conn || conn->closed()) return;
      conn->respond(res.status, res.content_type, res.body, res.headers);
    };
    try {
      r.handler(hr, respond);
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "route %s %s: %s", req.method.c_str(), req.path.c_str(), e.what());
      respond({500, "application/json", {}, R"({"error":{"code":"INTERNAL","message":"Internal error"}})"});
    }
    return;
  }
  if (path_known) {
    c.respond(405, "application/json", R"({"error":{"code":"METHOD_NOT_ALLOWED","message":"Method not allowed"}})");
    return;
  }
  c.respond(404, "application/json", R"({"error":{"code":"NOT_FOUND","message":"Not found"}})");
}

// Just before the loop polls: answer long-polls that got data, then write
// everything queued this turn, one write per connection.
// A flush may close a connection (a posted close, a write error), and the
// disconnect handlers that runs may queue more output: go round until
// nothing is left, so that nothing waits for the next wake-up.
void WorkerRuntime::before_poll() {
  for (int round = 0; round < 8; round++) {
    if (redis_) redis_->flush();  // Redis first: a join's SUBSCRIBE leaves before its ack
    eio_.flush();
    event_log::flush();  // an event is logged before its answer leaves
    // Two lists that keep their capacity: marking a connection dirty does
    // not allocate once they have grown to the turn's usual count.
    flushing_.swap(dirty_);
    for (auto* c : flushing_)
      if (!c->closed()) c->flush();
    flushing_.clear();
    if (dirty_.empty() && !eio_.flush_pending()) break;
  }
  dead_.clear();
  if (stopping_ && conns_.empty()) uv_stop(&loop_);  // a graceful stop ends with its last connection
}

// Clients are told to reconnect a slice at a time across the spread window,
// so that they do not all come back to the other workers at once.
void WorkerRuntime::stop_gracefully() {
  if (stopping_) return;
  stopping_ = true;
  stop_timer_.arm_in(int64_t(cfg_->core.worker_shutdown_timeout));
  size_t polling = eio_.close_polling("server shutting down");
  size_t sessions = eio_.session_count() - std::min(polling, eio_.session_count());
  logf(LogLevel::Notice, "worker %d: graceful stop, %zu sessions", slot_, sessions + polling);
  uint64_t spread = std::min(cfg_->core.worker_shutdown_spread, cfg_->core.worker_shutdown_timeout);
  uint64_t steps = std::clamp<uint64_t>(spread / kDrainStepMs, 1, std::max<size_t>(sessions, 1));
  drain_step_ms_ = int64_t(spread / steps);
  drain_per_step_ = std::max<size_t>(1, (sessions + steps - 1) / steps);
  drain_step();
  for (auto& c : conns_) c->drain(1000);
}

void WorkerRuntime::drain_step() {
  eio_.close_some("server shutting down", drain_per_step_);
  if (eio_.session_count()) drain_timer_.arm_in(drain_step_ms_);
}

// SIGTERM (systemctl stop / restart): no drain, but the clients' sessions
// are written for recovery_window first, so a restart loses none of them.
void WorkerRuntime::stop_fast() {
  if (fast_stop_.armed()) return;
  if (!redis_) {
    uv_stop(&loop_);
    return;
  }
  fast_stop_.arm_in(kFastStopWaitMs);
  redis_->save_sessions([this] { uv_stop(&loop_); });
}

void WorkerRuntime::on_signal(int sig) {
  switch (sig) {
    case SIGTERM:
      stop_fast();
      break;
    case SIGQUIT:
      stop_gracefully();
      break;
    case SIGUSR1:
      logging::reopen();
      event_log::reopen();
      break;
  }
}

int WorkerRuntime::run(int channel_fd) {
  if (!loop_ready_) return kExitFatal;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, SIG_IGN);  // the master decides; a terminal's ^C reaches it too
  signal(SIGHUP, SIG_IGN);
  for (int sig : {SIGTERM, SIGQUIT, SIGUSR1}) {
    auto h = make_handle<uv_signal_t>();
    uv_signal_init(&loop_, h.get());
    h->data = this;
    uv_signal_start(h.get(), [](uv_signal_t* s, int signum) { static_cast<WorkerRuntime*>(s->data)->on_signal(signum); },
                    sig);
    signals_.push_back(std::move(h));
  }

  std::string err;
  if (!event_log::open(cfg_->core.event_log, cfg_->core.event_log_sample, err)) {
    logf(LogLevel::Crit, "%s", err.c_str());
    return kExitFatal;
  }

  if (cfg_->core.has_ssl() && !(tls_ctx_ = tls::make_context(cfg_->core, err))) {
    logf(LogLevel::Crit, "%s", err.c_str());
    return kExitFatal;
  }

  bool several = cfg_->core.workers() > 1;
  auto relay = several ? sio::LocalAdapter::Relay([this](std::string bytes) { channel_.send(ChannelMsg::Broadcast, bytes); })
                       : sio::LocalAdapter::Relay();
  if (cfg_->core.redis.configured()) {
    // Every worker is a node of the Redis cluster; its siblings here get broadcasts over the relay.
    auto a = std::make_unique<cluster::RedisAdapter>(&loop_, sio_, cfg_->core.redis, relay, daemon_tag());
    redis_ = a.get();
    sio_.set_adapter(std::move(a));
    redis_->start();
  } else {
    sio_.set_adapter(std::make_unique<sio::LocalAdapter>([this](const sio::EncodedBroadcast& b) { sio_.deliver(b); },
                                                         relay));
    local_backend_ = std::make_unique<cluster::LocalBackend>(timers_, sio_);
    cluster::install(local_backend_.get());
    cluster::install_redis_api(timers_, nullptr, cfg_->core.redis.app_prefix);  // commands answer "unavailable"
  }

  if (!channel_.open(
          &loop_, channel_fd,
          [this](ChannelMsg type, std::string_view body, std::unique_ptr<uv_tcp_t> h) {
            if (type == ChannelMsg::Connection && h) accept(std::move(h), body);
            else if (type == ChannelMsg::Broadcast) sio_.adapter().on_remote(body);
            else if (type == ChannelMsg::Reload) reload_in_place();
            else if (type == ChannelMsg::Heartbeat) channel_.send(ChannelMsg::Heartbeat, body);  // from the loop: alive
            else if (h) close_handle(std::move(h));
          },
          [this] {
            // The master is gone: nobody will hand us work or stop us.
            log(LogLevel::Warn, "lost the master, exiting");
            uv_stop(&loop_);
          }))
    return kExitFatal;

  for (auto& m : cfg_->modules) {
    if (m.module->init_worker && !m.module->init_worker(*this, *m.module)) {
      logf(LogLevel::Crit, "module \"%s\" failed to start", m.module->name);
      return kExitFatal;
    }
  }

  uv_prepare_init(&loop_, prepare_.get());
  prepare_.initialized = true;
  prepare_.get()->data = this;
  uv_prepare_start(prepare_.get(), [](uv_prepare_t* p) { static_cast<WorkerRuntime*>(p->data)->before_poll(); });

  uv_run(&loop_, UV_RUN_DEFAULT);

  for (auto& m : cfg_->modules)
    if (m.module->exit_worker) m.module->exit_worker(*this, *m.module);
  return 0;
}

}  // namespace

int worker_main(const Config& cfg, int slot, int id, int channel_fd, const std::string& conf_path,
                const LoadOptions& load) {
  auto w = std::make_unique<WorkerRuntime>(cfg, slot, id, conf_path, load);
  int code = w->run(channel_fd);
  // The process ends here: the loop's handles need no orderly teardown.
  (void)w.release();
  return code;
}

}  // namespace dr
