#include "cluster/redis_api.h"

#include <cstdlib>
#include <map>
#include <optional>
#include <memory>

#include "cluster/backend.h"
#include "cluster/redis_cluster.h"
#include "cluster/replica_wait.h"
#include "cluster/redis_link.h"
#include "depth-realtime/redis.h"

namespace dr::cluster {
namespace {

struct Api {
  RedisLink* link = nullptr;
  Timers* timers = nullptr;  // replies are posted, never given inside the call
  std::string prefix = "depth:";
  std::unique_ptr<ReplicaWait> wait;  // redis_wait_replicas (null: off)
  // Without redis_wait_replicas, redis::replicated's callbacks, answered
  // together by one timer of their own: posting each (a function wrapping
  // the module's, in the posted list) made two allocations a write.
  std::vector<std::function<void(redis::Replication)>> confirmed, running;
  std::unique_ptr<CallbackTimer> confirm_timer;
};
Api g_api;

void run_confirmed() {
  std::swap(g_api.confirmed, g_api.running);  // callbacks may ask again: for the next turn
  for (auto& cb : g_api.running) {
    try {
      cb(redis::Replication{});
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "redis replicated callback: %s", e.what());
    } catch (...) {
      logf(LogLevel::Error, "redis replicated callback: unknown exception");
    }
  }
  g_api.running.clear();  // the capacity stays
}

// A null `r`: no reply. `sent` says whether the command had left (then
// the connection went before its answer) or was refused.
redis::Reply convert(const redisReply* r, bool sent = true) {
  redis::Reply out;
  if (!r) {
    out.type = redis::Reply::Type::Error;
    out.str = redis::kUnavailable;
    out.unanswered = sent;
    return out;
  }
  switch (r->type) {
    case REDIS_REPLY_ERROR:
      out.type = redis::Reply::Type::Error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = redis::Reply::Type::Status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = redis::Reply::Type::Integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      out.type = redis::Reply::Type::String;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = redis::Reply::Type::Array;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; i++) out.elements.push_back(convert(r->element[i]));
      break;
    default:  // REDIS_REPLY_NIL
      break;
  }
  return out;
}

void unavailable(redis::Callback cb) {
  if (!cb) return;
  if (!g_api.timers) return;
  g_api.timers->post([cb = std::move(cb)] { cb(convert(nullptr, false)); });
}

RedisLink::Reply adapt(redis::Callback cb) {
  if (!cb) return {};
  return [cb = std::move(cb)](redisReply* r) {
    try {
      cb(convert(r));
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "redis callback: %s", e.what());
    }
  };
}

}  // namespace

redis::Reply module_reply(const redisReply* r) { return convert(r); }

void install_redis_api(Timers& timers, RedisLink* link, std::string app_prefix) {
  g_api.link = link;
  g_api.timers = &timers;
  g_api.prefix = std::move(app_prefix);
  // With a link only: its owner uninstalls it before the timers go.
  if (link) g_api.confirm_timer = std::make_unique<CallbackTimer>(timers, run_confirmed);
}

void uninstall_redis_api() {
  g_api.wait.reset();
  g_api.confirm_timer.reset();
  // Callbacks not run yet still run, later, as posted ones.
  for (auto& cb : g_api.confirmed)
    if (g_api.timers) g_api.timers->post([cb = std::move(cb)] { cb(redis::Replication{}); });
  g_api.confirmed.clear();
  g_api.link = nullptr;
  g_api.timers = nullptr;
}

void set_wait_replicas(uint64_t replicas, uint64_t timeout_ms) {
  g_api.wait.reset();
  if (replicas && g_api.timers)
    g_api.wait = std::make_unique<ReplicaWait>(*g_api.timers, g_api.link, replicas, timeout_ms);
}

}  // namespace dr::cluster

namespace dr::redis {

long long Reply::as_int(long long fallback) const {
  if (type == Type::Integer) return integer;
  if (type != Type::String || str.empty()) return fallback;
  char* end = nullptr;
  long long v = std::strtoll(str.c_str(), &end, 10);
  return end && *end == '\0' ? v : fallback;
}

bool configured() { return cluster::g_api.link != nullptr; }
bool ready() { return cluster::g_api.link && cluster::g_api.link->ready(); }

void command(std::span<const std::string_view> argv, Callback cb) {
  auto* link = cluster::g_api.link;
  if (!link || !link->module_command(argv, cb)) cluster::unavailable(std::move(cb));
}

void command(std::vector<std::string> argv, Callback cb) {
  constexpr size_t kOnStack = 32;  // most commands: no vector of views
  std::string_view small[kOnStack];
  std::vector<std::string_view> large;
  std::span<const std::string_view> views;
  if (argv.size() <= kOnStack) {
    for (size_t i = 0; i < argv.size(); i++) small[i] = argv[i];
    views = std::span<const std::string_view>(small, argv.size());
  } else {
    large.assign(argv.begin(), argv.end());
    views = large;
  }
  command(views, std::move(cb));
}

bool cluster() { return cluster::g_api.link && cluster::g_api.link->cluster(); }

std::string tag(std::string_view id) {
  if (!cluster()) return std::string(id);
  std::string t = "{";
  t += id;
  t += '}';
  return t;
}

namespace {

// A cluster's transaction over several slots: one MULTI ... EXEC per slot,
// their replies put back in the commands' order.
void transaction_by_slot(std::vector<std::vector<std::string>> commands, Callback cb) {
  std::map<uint16_t, std::vector<size_t>> groups;
  for (size_t i = 0; i < commands.size(); i++) {
    std::vector<std::string_view> argv(commands[i].begin(), commands[i].end());
    auto k = cluster::routing_key(argv);
    groups[k ? cluster::key_slot(*k) : 0].push_back(i);
  }
  struct Gather {
    Reply out;
    size_t left = 0;
    Callback cb;
  };
  auto g = std::make_shared<Gather>();
  g->out.type = Reply::Type::Array;
  g->out.elements.resize(commands.size());
  g->left = groups.size();
  g->cb = std::move(cb);
  for (auto& [slot, idx] : groups) {
    std::vector<std::vector<std::string>> part;
    for (size_t i : idx) part.push_back(std::move(commands[i]));
    transaction(std::move(part), [g, idx = idx](Reply r) {
      for (size_t j = 0; j < idx.size(); j++) {
        if (r.type == Reply::Type::Array && j < r.elements.size()) g->out.elements[idx[j]] = std::move(r.elements[j]);
        else if (r.error()) g->out.elements[idx[j]] = r;
        else {
          g->out.elements[idx[j]].type = Reply::Type::Error;
          g->out.elements[idx[j]].str = "unexpected reply from Redis";
        }
      }
      if (--g->left == 0 && g->cb) g->cb(std::move(g->out));
    });
  }
}

}  // namespace

void transaction(std::vector<std::vector<std::string>> commands, Callback cb) {
  auto* link = cluster::g_api.link;
  if (link && link->cluster() && commands.size() > 1) {
    std::optional<uint16_t> first;
    bool one_slot = true;
    for (auto& c : commands) {
      std::vector<std::string_view> argv(c.begin(), c.end());
      auto k = cluster::routing_key(argv);
      if (!k) continue;
      uint16_t s = cluster::key_slot(*k);
      if (first && *first != s) one_slot = false;
      first = s;
    }
    if (!one_slot) return transaction_by_slot(std::move(commands), std::move(cb));
  }
  std::vector<std::vector<std::string_view>> cmds;
  cmds.reserve(commands.size() + 2);
  cmds.push_back({"MULTI"});
  for (auto& c : commands) cmds.emplace_back(c.begin(), c.end());
  cmds.push_back({"EXEC"});
  if (!link || !link->commands(cmds, cluster::adapt(cb))) cluster::unavailable(std::move(cb));
}

std::string Replication::details() const {
  std::string s = "stored on the Redis master, ";
  if (replicas < 0) s += "but Redis did not answer whether its replicas have it";
  else
    s += "confirmed on " + std::to_string(replicas) + " of " + std::to_string(wanted) + " replicas" +
         (timeout_ms ? " within " + std::to_string(timeout_ms) + "ms" : " (they were missing a moment ago)");
  return s;
}

void replicated(std::function<void(Replication)> cb) {
  if (!cb) return;
  if (cluster::g_api.wait) return cluster::g_api.wait->wait(std::move(cb));
  auto& api = cluster::g_api;
  if (!api.timers) return;
  if (!api.confirm_timer) return api.timers->post([cb = std::move(cb)] { cb(Replication{}); });
  api.confirmed.push_back(std::move(cb));
  if (!api.confirm_timer->armed()) api.confirm_timer->arm_at(api.timers->now());
}

std::string key(std::string_view suffix) {
  const std::string& prefix = cluster::g_api.prefix;
  std::string k;
  k.reserve(prefix.size() + suffix.size());  // one allocation at most
  k += prefix;
  k += suffix;
  return k;
}

}  // namespace dr::redis
