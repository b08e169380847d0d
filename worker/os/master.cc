#include "os/master.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#ifdef DR_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "core/log.h"
#include "core/metrics.h"
#include "core/shared_zones.h"
#include "core/timers.h"
#include "core/uv_util.h"
#include "os/channel.h"
#include "os/router.h"
#include "os/worker_main.h"

namespace dr {
namespace {

std::string g_daemon_tag;

void notify(const char* state) {
#ifdef DR_HAVE_SYSTEMD
  sd_notify(0, state);
#else
  (void)state;
#endif
}

// Signal handlers only write the signal number to a pipe; the loop acts on it.
int g_signal_pipe[2] = {-1, -1};
void on_signal(int sig) {
  int saved = errno;
  char c = char(sig);
  ssize_t ignored = write(g_signal_pipe[1], &c, 1);
  (void)ignored;
  errno = saved;
}
const int kSignals[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGCHLD};

struct WorkerProc {
  pid_t pid = -1;
  int slot = 0;
  int id = 0;  // unique among live workers, old generations included; named by session ids
  int generation = 0;
  int64_t started_ms = 0;
  int64_t answered_ms = 0;  // its loop last answered a heartbeat
  int quick_failures = 0;  // deaths soon after start, for backoff
  std::unique_ptr<Channel> channel;
  bool retiring = false;   // told to stop (reload or shutdown)
  bool hung = false;       // killed for not answering: gets nothing more
};

class Master;

// What a module's init_master sees: the configuration about to be started.
class ModuleMaster final : public MasterContext {
 public:
  explicit ModuleMaster(const Config& cfg) : cfg_(cfg) {}
  const ModuleConf* conf(const Module& m, std::string_view nsp) const override { return cfg_.module_conf(m, nsp); }
  std::vector<std::string> namespaces() const override {
    std::vector<std::string> out;
    for (auto& ns : cfg_.namespaces) out.push_back(ns.name);
    return out;
  }
  bool shared_zone(std::string_view name, size_t size, std::string& err) override {
    return zones::declare(name, size, err);
  }

 private:
  const Config& cfg_;
};

// The zones of a configuration, the core's first, then the modules' init_master
// hooks; the caller commits them, or aborts them on false.
bool declare_zones(const Config& cfg, std::string& err) {
  zones::begin();
  if (!zones::declare(metrics::kZone, metrics::zone_size(), err)) return false;
  ModuleMaster ctx(cfg);
  for (auto& m : cfg.modules) {
    if (!m.module->init_master) continue;
    std::string e;
    if (!m.module->init_master(ctx, *m.module, e)) {
      err = "module \"" + std::string(m.module->name) + "\": " + (e.empty() ? "init_master failed" : e);
      return false;
    }
  }
  return true;
}

// What a listening handle's data points to: which listener it is travels with
// every connection to the worker, which serves each kind its own routes.
struct ListenerTag {
  Master* master;
  Listener kind;
  bool ssl;
  std::string key;  // kind + address: a reload keeps a listener whose key stays
};

class Master {
 public:
  void on_accept(uv_tcp_t* listener);
  Master(std::unique_ptr<Config> cfg, MasterOptions opts) : cfg_(std::move(cfg)), opts_(std::move(opts)) {}
  int run();

 private:
  bool bind_listeners(const Config& cfg, std::vector<std::unique_ptr<uv_tcp_t>>& out);
  bool bind_one(const ListenAddress& a, Listener kind, std::vector<std::unique_ptr<uv_tcp_t>>& out);
  static bool localhost_bound(const Config& cfg, const std::vector<std::unique_ptr<uv_tcp_t>>& bound);
  void close_listeners();
  bool spawn(int slot);
  void on_worker_message(WorkerProc& from, ChannelMsg type, std::string_view body, std::unique_ptr<uv_tcp_t> h);
  void start_heartbeat();
  void heartbeat();
  void hand_to_worker(int slot_hint, std::string_view body, std::unique_ptr<uv_tcp_t> h);
  void hand_to_id(int id, std::string_view body, std::unique_ptr<uv_tcp_t> h);
  void handle_signal(int sig);
  void reap();
  void respawn_dead();  // a worker in each slot left without one
  void close_timers();
  int finish(int code);
  void reload();
  void signal_workers(int sig, bool retiring_only = false);
  void maybe_exit();
  WorkerProc* current(int slot);

  std::shared_ptr<Config> cfg_;
  MasterOptions opts_;
  uv_loop_t loop_{};
  std::vector<std::unique_ptr<uv_tcp_t>> listeners_;
  std::vector<std::unique_ptr<WorkerProc>> procs_;  // current and retiring workers
  std::unique_ptr<uv_poll_t> signal_poll_;
  // On timers_ (made in run(), once the loop exists).
  std::unique_ptr<CallbackTimer> respawn_timer_;
  std::unique_ptr<CallbackTimer> kill_timer_;  // workers that do not stop in time
  std::unique_ptr<CallbackTimer> heartbeat_timer_;
  uint64_t heartbeat_every_ = 0;
  int64_t last_heartbeat_ms_ = 0;
  std::vector<std::unique_ptr<ListenerTag>> tags_;
  std::unique_ptr<Timers> timers_;  // on loop_, once it exists
  std::unique_ptr<Router> router_;  // plain-HTTP connections to the worker of their session
  size_t next_worker_ = 0;
  int next_id_ = 0;
  int generation_ = 0;
  bool stopping_ = false;
  bool kill_scheduled_ = false;
  int exit_code_ = 0;
};

bool Master::bind_listeners(const Config& cfg, std::vector<std::unique_ptr<uv_tcp_t>>& out) {
  for (auto& a : cfg.core.listen)
    if (!bind_one(a, Listener::Main, out)) return false;
  for (auto& a : cfg.core.metrics_listen)
    if (!bind_one(a, Listener::Metrics, out)) return false;
  return localhost_bound(cfg, out);
}

// `localhost:PORT` is served as long as one of its loopbacks is bound (a
// machine without IPv6 has no ::1); with neither it is an error.
bool Master::localhost_bound(const Config& cfg, const std::vector<std::unique_ptr<uv_tcp_t>>& bound) {
  auto has = [&](const std::string& key) {
    return std::any_of(bound.begin(), bound.end(),
                       [&](auto& h) { return h && static_cast<ListenerTag*>(h->data)->key == key; });
  };
  auto check = [&](const std::vector<ListenAddress>& list, const std::string& kind) {
    for (auto a : list) {
      if (!a.localhost) continue;
      a.host = "127.0.0.1";
      std::string v4 = kind + a.text();
      a.host = "::1";
      if (has(v4) || has(kind + a.text())) continue;
      logf(LogLevel::Crit, "cannot listen on localhost:%d: neither 127.0.0.1 nor [::1] can be bound", a.port);
      return false;
    }
    return true;
  };
  return check(cfg.core.listen, "main ") && check(cfg.core.metrics_listen, "metrics ");
}

bool Master::bind_one(const ListenAddress& a, Listener kind, std::vector<std::unique_ptr<uv_tcp_t>>& out) {
  auto h = make_handle<uv_tcp_t>();
  uv_tcp_init(&loop_, h.get());
  tags_.push_back(std::make_unique<ListenerTag>(
      ListenerTag{this, kind, a.ssl, (kind == Listener::Metrics ? "metrics " : "main ") + a.text()}));
  h->data = tags_.back().get();
  auto bind_to = [&](const std::string& host) {
    struct sockaddr_storage ss;
    int rc = host.find(':') != std::string::npos
                 ? uv_ip6_addr(host.c_str(), a.port, reinterpret_cast<sockaddr_in6*>(&ss))
                 : uv_ip4_addr(host.c_str(), a.port, reinterpret_cast<sockaddr_in*>(&ss));
    return rc == 0 ? uv_tcp_bind(h.get(), reinterpret_cast<sockaddr*>(&ss), 0) : rc;
  };
  int rc = bind_to(a.host);
  if (rc == UV_EAFNOSUPPORT && a.host == "::") {
    // A kernel without IPv6 (ipv6.disable=1): all its addresses are IPv4 ones.
    logf(LogLevel::Warn, "cannot listen on %s: %s; listening on 0.0.0.0:%d instead", a.text().c_str(),
         uv_strerror(rc), a.port);
    rc = bind_to("0.0.0.0");
  }
  if (rc == 0)
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(h.get()), 4096, [](uv_stream_t* s, int status) {
      if (status == 0) static_cast<ListenerTag*>(s->data)->master->on_accept(reinterpret_cast<uv_tcp_t*>(s));
    });
  if (rc != 0 && a.localhost && (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT)) {
    // This machine lacks this loopback; localhost_bound() wants the other one.
    logf(LogLevel::Warn, "not listening on %s (localhost): %s", a.text().c_str(), uv_strerror(rc));
    close_handle(std::move(h));
    return true;
  }
  if (rc != 0) {
    logf(LogLevel::Crit, "cannot listen on %s: %s", a.text().c_str(), uv_strerror(rc));
    close_handle(std::move(h));
    return false;
  }
  logf(LogLevel::Notice, "listening on %s%s", a.text().c_str(), kind == Listener::Metrics ? " (metrics)" : "");
  out.push_back(std::move(h));
  return true;
}

void Master::close_listeners() {
  for (auto& l : listeners_) close_handle(std::move(l));
  listeners_.clear();
}

WorkerProc* Master::current(int slot) {
  for (auto& p : procs_)
    if (p->slot == slot && !p->retiring && !p->hung && p->pid > 0) return p.get();
  return nullptr;
}

// Closes, in a new worker, every descriptor it inherited but must not hold:
// client and listening sockets (else connections outlive their worker) and the
// master's own plumbing.
void close_inherited(int keep_fd, uv_loop_t* master_loop) {
  std::vector<int> fds;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      int fd = atoi(e->d_name);
      if (fd > 2 && fd != keep_fd && fd != dirfd(d) && fd != logging::fd()) fds.push_back(fd);
    }
    closedir(d);
  }
  for (int fd : fds) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    bool inet_or_unix = getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 &&
                        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6 || ss.ss_family == AF_UNIX);
    if (inet_or_unix || fd == g_signal_pipe[0] || fd == g_signal_pipe[1] || fd == uv_backend_fd(master_loop))
      close(fd);
  }
}

bool Master::spawn(int slot) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    logf(LogLevel::Crit, "socketpair failed: %s", strerror(errno));
    return false;
  }
  // An id no live worker has: a draining old worker keeps its sessions
  // reachable while the new one in its slot takes new ones.
  int id = next_id_;
  for (int tries = 0; tries < 256; tries++, id = (id + 1) % 256) {
    bool used = false;
    for (auto& p : procs_)
      if (p->pid > 0 && p->id == id) used = true;
    if (!used) break;
  }
  next_id_ = (id + 1) % 256;
  pid_t pid = fork();
  if (pid < 0) {
    logf(LogLevel::Crit, "fork failed: %s", strerror(errno));
    close(sv[0]);
    close(sv[1]);
    return false;
  }
  if (pid == 0) {
    for (int s : kSignals) signal(s, SIG_DFL);
    close_inherited(sv[1], &loop_);
    logging::set_slot(slot);
    metrics::after_fork();
    _exit(worker_main(*cfg_, slot, id, sv[1], opts_.conf_path, opts_.load));
  }
  close(sv[1]);
  auto proc = std::make_unique<WorkerProc>();
  proc->pid = pid;
  proc->slot = slot;
  proc->id = id;
  proc->generation = generation_;
  proc->started_ms = now_ms();
  proc->answered_ms = proc->started_ms;
  proc->channel = std::make_unique<Channel>();
  WorkerProc* raw = proc.get();
  proc->channel->open(
      &loop_, sv[0],
      [this, raw](ChannelMsg t, std::string_view body, std::unique_ptr<uv_tcp_t> h) {
        on_worker_message(*raw, t, body, std::move(h));
      },
      [] {});
  // Keep the failure count of the slot's previous worker for the backoff.
  for (auto& p : procs_)
    if (p->slot == slot && p->pid < 0) proc->quick_failures = p->quick_failures;
  std::erase_if(procs_, [slot](auto& p) { return p->slot == slot && p->pid < 0; });
  procs_.push_back(std::move(proc));
  logf(LogLevel::Notice, "started worker %d (pid %d)", slot, int(pid));
  return true;
}

void Master::hand_to_worker(int slot_hint, std::string_view body, std::unique_ptr<uv_tcp_t> h) {
  WorkerProc* target = slot_hint >= 0 ? current(slot_hint) : nullptr;
  if (!target) {
    int n = cfg_->core.workers();
    for (int i = 0; i < n && !target; i++) target = current(int(next_worker_++ % n));
  }
  if (!target) {
    close_handle(std::move(h));
    return;
  }
  target->channel->send(ChannelMsg::Connection, body, std::move(h));
}

// A request for a session: to the worker that holds it, draining or not.
void Master::hand_to_id(int id, std::string_view body, std::unique_ptr<uv_tcp_t> h) {
  for (auto& p : procs_)
    if (p->pid > 0 && !p->hung && p->id == id && p->channel && p->channel->is_open()) {
      p->channel->send(ChannelMsg::Connection, body, std::move(h));
      return;
    }
  // Gone: any worker answers "Session ID unknown", without passing it on again.
  std::string marked(body);
  if (marked.size() >= 4) {
    uint32_t kind;
    memcpy(&kind, marked.data(), 4);
    kind |= kNoHandoff;
    memcpy(marked.data(), &kind, 4);
  }
  hand_to_worker(-1, marked, std::move(h));
}

void Master::on_accept(uv_tcp_t* listener) {
  auto client = make_handle<uv_tcp_t>();
  uv_tcp_init(&loop_, client.get());
  if (uv_accept(reinterpret_cast<uv_stream_t*>(listener), reinterpret_cast<uv_stream_t*>(client.get())) != 0) {
    close_handle(std::move(client));
    return;
  }
  auto* tag = static_cast<ListenerTag*>(listener->data);
  uint32_t kind = uint32_t(tag->kind) | (tag->ssl ? kListenerSsl : 0);
  int slot = -1;
  if (tag->ssl) {
    // A TLS connection cannot move to the worker owning its long-polling
    // session once encrypted, so one client address always goes to one worker.
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uint32_t h = 2166136261u;
    if (uv_tcp_getpeername(client.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      const uint8_t* p = ss.ss_family == AF_INET6
                             ? reinterpret_cast<const uint8_t*>(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr)
                             : reinterpret_cast<const uint8_t*>(&reinterpret_cast<sockaddr_in*>(&ss)->sin_addr);
      int n = ss.ss_family == AF_INET6 ? 16 : 4;
      for (int i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    }
    slot = int(h % uint32_t(cfg_->core.workers()));
  } else if (tag->kind == Listener::Main && cfg_->core.workers() > 1) {
    return router_->route(std::move(client));
  }
  hand_to_worker(slot, std::string_view(reinterpret_cast<const char*>(&kind), 4), std::move(client));
}

void Master::on_worker_message(WorkerProc& from, ChannelMsg type, std::string_view body, std::unique_ptr<uv_tcp_t> h) {
  switch (type) {
    case ChannelMsg::Handoff: {
      // A request for a session another worker owns: pass the connection on.
      uint32_t target = 0;
      if (body.size() < 4 || !h) {
        if (h) close_handle(std::move(h));
        return;
      }
      memcpy(&target, body.data(), 4);
      hand_to_id(int(target), body.substr(4), std::move(h));
      return;
    }
    case ChannelMsg::Broadcast:
      // To every other worker, the other generation's of the same slot included.
      for (auto& p : procs_)
        if (p.get() != &from && p->pid > 0 && !p->hung && p->channel && p->channel->is_open())
          p->channel->send(ChannelMsg::Broadcast, body);
      return;
    case ChannelMsg::Heartbeat:
      from.answered_ms = now_ms();
      return;
    default:
      if (h) close_handle(std::move(h));
  }
}

// Each worker's loop echoes the heartbeat; one that has not for
// worker_heartbeat_timeout is hung (stopped, or its loop blocked): it gets no
// more connections, is killed, and reap() starts another in its slot.
void Master::start_heartbeat() {
  uint64_t timeout = cfg_->core.worker_heartbeat_timeout;
  uint64_t every = timeout ? std::clamp<uint64_t>(timeout / 4, 50, 1000) : 0;
  if (every == heartbeat_every_) return;
  heartbeat_every_ = every;
  if (!every) {
    heartbeat_timer_->cancel();
    return;
  }
  last_heartbeat_ms_ = 0;
  heartbeat_timer_->arm_in(int64_t(every));
}

void Master::heartbeat() {
  if (heartbeat_every_) heartbeat_timer_->arm_in(int64_t(heartbeat_every_));
  int64_t now = now_ms();
  int64_t timeout = int64_t(cfg_->core.worker_heartbeat_timeout);
  // The master itself was held up (suspended, stopped): nobody could answer.
  bool master_late = last_heartbeat_ms_ && now - last_heartbeat_ms_ > timeout / 2;
  last_heartbeat_ms_ = now;
  if (stopping_ || !timeout) return;
  for (auto& p : procs_) {
    if (p->pid <= 0 || p->hung || !p->channel || !p->channel->is_open()) continue;
    if (master_late) p->answered_ms = now;
    if (now - p->answered_ms > timeout) {
      p->hung = true;
      logf(LogLevel::Crit,
           "worker %d (pid %d) has not answered for %.1fs (worker_heartbeat_timeout): it is hung; killing it, "
           "new connections go to the other workers",
           p->slot, int(p->pid), double(now - p->answered_ms) / 1000);
      kill(p->pid, SIGKILL);  // reap() replaces it
      continue;
    }
    p->channel->send(ChannelMsg::Heartbeat, {});
  }
}

void Master::signal_workers(int sig, bool retiring_only) {
  for (auto& p : procs_)
    if (p->pid > 0 && (!retiring_only || p->retiring)) kill(p->pid, sig);
}

void Master::reload() {
  notify("RELOADING=1");
  metrics::set(metrics::core().last_reload_time, now_ms() / 1000);
  logf(LogLevel::Notice, "reloading configuration from %s", opts_.conf_path.c_str());
  std::string err;
  auto fresh = load_config(opts_.conf_path, opts_.load, err);
  if (!fresh || !declare_zones(*fresh, err)) {
    zones::abort();
    logf(LogLevel::Error, "reload failed, keeping the running configuration: %s", err.c_str());
    metrics::add(metrics::core().reloads_failed);
    metrics::set(metrics::core().last_reload_success, 0);
    notify("READY=1\nSTATUS=reload failed: invalid configuration");
    return;
  }
  // New listeners first; if one cannot be bound, nothing changes.
  auto addresses = [](const Config& c) {
    std::string s;
    for (auto& a : c.core.listen) s += a.text() + " ";
    s += "| ";
    for (auto& a : c.core.metrics_listen) s += a.text() + " ";
    return s;
  };
  bool same_listen = addresses(*fresh) == addresses(*cfg_);
  if (!same_listen) {
    // Addresses that stay keep their socket (no moment where the port is
    // closed); only new ones are bound and removed ones closed.
    std::vector<std::unique_ptr<uv_tcp_t>> fresh_listeners;
    bool ok = true;
    auto keep_or_bind = [&](const ListenAddress& a, Listener kind) {
      std::string key = (kind == Listener::Metrics ? "metrics " : "main ") + a.text();
      for (auto& l : listeners_)
        if (l && static_cast<ListenerTag*>(l->data)->key == key) {
          fresh_listeners.push_back(std::move(l));
          return;
        }
      if (ok) ok = bind_one(a, kind, fresh_listeners);
    };
    for (auto& a : fresh->core.listen) keep_or_bind(a, Listener::Main);
    for (auto& a : fresh->core.metrics_listen) keep_or_bind(a, Listener::Metrics);
    if (ok) ok = localhost_bound(*fresh, fresh_listeners);
    if (!ok) {
      // Give the kept ones back, close the new ones.
      for (auto& l : fresh_listeners) {
        auto* tag = static_cast<ListenerTag*>(l->data);
        bool was_running = false;
        for (auto& a : cfg_->core.listen) was_running |= tag->key == "main " + a.text();
        for (auto& a : cfg_->core.metrics_listen) was_running |= tag->key == "metrics " + a.text();
        if (was_running) listeners_.push_back(std::move(l));
        else close_handle(std::move(l));
      }
      std::erase_if(listeners_, [](auto& l) { return !l; });
      zones::abort();
      logf(LogLevel::Error, "reload failed, keeping the running configuration: cannot listen");
      metrics::add(metrics::core().reloads_failed);
      metrics::set(metrics::core().last_reload_success, 0);
      notify("READY=1\nSTATUS=reload failed: cannot listen");
      return;
    }
    for (auto& l : listeners_)
      if (l) close_handle(std::move(l));
    listeners_ = std::move(fresh_listeners);
  }
  if (!logging::open(fresh->core.error_log, fresh->core.log_level, err))
    logf(LogLevel::Error, "%s", err.c_str());
  // Workers already running cannot map zones made after they forked.
  bool in_place = same_listen && !zones::changed() && fresh->restart_fingerprint == cfg_->restart_fingerprint &&
                  fresh->core.workers() == cfg_->core.workers();
  zones::commit();
  metrics::attach();
  cfg_ = std::move(fresh);
  router_->set_path(cfg_->core.path);
  start_heartbeat();
  if (in_place) {
    // Nothing needs new workers: each re-reads the configuration and applies
    // it without closing a connection.
    for (auto& p : procs_)
      if (p->pid > 0 && !p->retiring && p->channel) p->channel->send(ChannelMsg::Reload, {});
    logf(LogLevel::Notice, "configuration reloaded in place");
    metrics::add(metrics::core().reloads_ok);
    metrics::set(metrics::core().last_reload_success, 1);
    notify("READY=1\nSTATUS=configuration reloaded");
    return;
  }
  generation_++;
  // New workers take over; the old ones drain and exit.
  for (auto& p : procs_)
    if (p->pid > 0) p->retiring = true;
  signal_workers(SIGQUIT, true);
  for (int i = 0; i < cfg_->core.workers(); i++) spawn(i);
  logf(LogLevel::Notice, "configuration reloaded (generation %d)", generation_);
  metrics::add(metrics::core().reloads_ok);
  metrics::set(metrics::core().last_reload_success, 1);
  notify("READY=1\nSTATUS=configuration reloaded");
}

void Master::reap() {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    WorkerProc* p = nullptr;
    for (auto& q : procs_)
      if (q->pid == pid) p = q.get();
    if (!p) continue;
    bool fatal = WIFEXITED(status) && WEXITSTATUS(status) == kExitFatal;
    if (WIFSIGNALED(status))
      logf(p->retiring || stopping_ ? LogLevel::Notice : LogLevel::Crit, "worker %d (pid %d) killed by signal %d",
           p->slot, int(pid), WTERMSIG(status));
    else
      logf(p->retiring || stopping_ ? LogLevel::Notice : LogLevel::Error, "worker %d (pid %d) exited with code %d",
           p->slot, int(pid), WEXITSTATUS(status));
    p->pid = -1;
    metrics::release(pid);  // its clients are gone: so are its gauge shares
    if (p->channel) p->channel->close();
    if (p->retiring || stopping_) {
      std::erase_if(procs_, [pid_gone = p](auto& q) { return q.get() == pid_gone; });
      continue;
    }
    // An unexpected death: respawn, backing off when it keeps dying at start.
    p->quick_failures = now_ms() - p->started_ms < 2000 ? p->quick_failures + 1 : 0;
    if (fatal || p->quick_failures >= 5) {
      logf(LogLevel::Crit, "worker %d cannot start, stopping", p->slot);
      exit_code_ = 1;
      handle_signal(SIGTERM);
      return;
    }
    uint64_t delay = p->quick_failures ? (100u << std::min(p->quick_failures, 5)) : 0;
    logf(LogLevel::Notice, "respawning worker %d%s", p->slot, delay ? " after a delay" : "");
    metrics::add(metrics::core().worker_restarts);
    respawn_timer_->arm_in(int64_t(delay));
  }
}

// The router and the timers, then the facility's uv_timer (closed by the next uv_run).
void Master::close_timers() {
  router_.reset();
  respawn_timer_.reset();
  kill_timer_.reset();
  heartbeat_timer_.reset();
  timers_.reset();
}

void Master::respawn_dead() {
  if (stopping_) return;
  for (int i = 0; i < cfg_->core.workers(); i++) {
    bool dead = true;
    for (auto& q : procs_)
      if (q->slot == i && !q->retiring && q->pid > 0) dead = false;
    if (dead) spawn(i);
  }
}

void Master::maybe_exit() {
  if (!stopping_) return;
  for (auto& p : procs_)
    if (p->pid > 0) return;
  uv_stop(&loop_);
}

void Master::handle_signal(int sig) {
  switch (sig) {
    case SIGCHLD:
      reap();
      maybe_exit();
      return;
    case SIGHUP:
      if (!stopping_) reload();
      return;
    case SIGUSR1:
      logging::reopen();
      signal_workers(SIGUSR1);
      return;
    case SIGQUIT:
    case SIGTERM:
    case SIGINT: {
      bool graceful = sig == SIGQUIT;
      if (!stopping_) logf(LogLevel::Notice, "%s", graceful ? "graceful shutdown" : "shutting down");
      stopping_ = true;
      notify("STOPPING=1");
      close_listeners();
      signal_workers(graceful ? SIGQUIT : SIGTERM);
      // Workers that do not exit in time are killed.
      if (!kill_scheduled_) {
        kill_scheduled_ = true;
        kill_timer_->arm_in(graceful ? int64_t(cfg_->core.worker_shutdown_timeout) + 2000 : 5000);
      }
      maybe_exit();
      return;
    }
  }
}

int Master::run() {
  if (uv_loop_init(&loop_) != 0) return 1;
  timers_ = std::make_unique<Timers>(&loop_);
  respawn_timer_ = std::make_unique<CallbackTimer>(*timers_, [this] { respawn_dead(); });
  kill_timer_ = std::make_unique<CallbackTimer>(*timers_, [this] {
    log(LogLevel::Warn, "workers did not stop in time, killing them");
    signal_workers(SIGKILL);
  });
  heartbeat_timer_ = std::make_unique<CallbackTimer>(*timers_, [this] { heartbeat(); });
  router_ = std::make_unique<Router>(&loop_, *timers_, [this](int worker, std::string bytes, std::unique_ptr<uv_tcp_t> h) {
    uint32_t kind = uint32_t(Listener::Main);
    std::string body(reinterpret_cast<const char*>(&kind), 4);
    body += bytes;
    if (worker >= 0) hand_to_id(worker, body, std::move(h));
    else hand_to_worker(-1, body, std::move(h));
  });
  router_->set_path(cfg_->core.path);
  std::string err;
  bool zoned = declare_zones(*cfg_, err);
  if (zoned) {
    zones::commit();
    metrics::attach();
    metrics::declare_core();
    metrics::set(metrics::core().last_reload_success, 1);
  } else {
    zones::abort();
    logf(LogLevel::Crit, "%s", err.c_str());
  }
  if (!zoned || !bind_listeners(*cfg_, listeners_)) return finish(1);

  if (pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    logf(LogLevel::Crit, "pipe2() failed: %s", strerror(errno));
    return finish(1);
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int s : kSignals) sigaction(s, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  signal_poll_ = make_handle<uv_poll_t>();
  uv_poll_init(&loop_, signal_poll_.get(), g_signal_pipe[0]);
  signal_poll_->data = this;
  uv_poll_start(signal_poll_.get(), UV_READABLE, [](uv_poll_t* p, int, int) {
    char sigs[64];
    ssize_t n;
    while ((n = read(g_signal_pipe[0], sigs, sizeof sigs)) > 0)
      for (ssize_t i = 0; i < n; i++) static_cast<Master*>(p->data)->handle_signal(sigs[i]);
  });

  if (!cfg_->core.pid_file.empty()) {
    FILE* f = fopen(cfg_->core.pid_file.c_str(), "w");
    if (!f) {
      logf(LogLevel::Crit, "cannot write pid file \"%s\": %s", cfg_->core.pid_file.c_str(), strerror(errno));
      return finish(1);
    }
    fprintf(f, "%d\n", int(getpid()));
    fclose(f);
  }

  logf(LogLevel::Notice, "depth-realtime %s master started, %d workers", DR_VERSION, cfg_->core.workers());
  for (int i = 0; i < cfg_->core.workers(); i++)
    if (!spawn(i)) {
      if (!cfg_->core.pid_file.empty()) unlink(cfg_->core.pid_file.c_str());
      signal_workers(SIGKILL);  // those spawned already: a master that failed to start leaves none behind
      return finish(1);
    }
  start_heartbeat();
  notify("READY=1\nSTATUS=serving");
  uv_run(&loop_, UV_RUN_DEFAULT);

  if (!cfg_->core.pid_file.empty()) unlink(cfg_->core.pid_file.c_str());
  logf(LogLevel::Notice, "master exiting");
  return finish(exit_code_);
}

// Every handle closed and libuv let finish, so the loop is released cleanly,
// on the way out of a run and of a start that failed half-way alike.
int Master::finish(int code) {
  close_listeners();
  close_timers();
  if (signal_poll_) close_handle(std::move(signal_poll_));
  procs_.clear();  // their channels close
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  for (int& fd : g_signal_pipe)
    if (fd >= 0) close(std::exchange(fd, -1));
  return code;
}

}  // namespace

const std::string& daemon_tag() { return g_daemon_tag; }

int run_master(std::unique_ptr<Config> cfg, const MasterOptions& opts) {
  // Before any fork: every worker inherits it.
  static constexpr char kAlphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";
  uint8_t b[8] = {};
  if (getrandom(b, sizeof b, 0) != sizeof b) {
    uint64_t x = uv_hrtime() ^ (uint64_t(getpid()) << 32);
    memcpy(b, &x, sizeof b);
  }
  g_daemon_tag.clear();
  for (uint8_t c : b) g_daemon_tag += kAlphabet[c & 63];
  Master m(std::move(cfg), opts);
  return m.run();
}

}  // namespace dr
