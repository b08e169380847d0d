#include "cluster/redis_cluster.h"

#include <strings.h>

#include <cstring>

#include <algorithm>
#include <cstdlib>

#include "depth-realtime/module.h"

namespace dr::cluster {
namespace {

uint16_t crc16(std::string_view s) {
  uint16_t crc = 0;
  for (unsigned char c : s) {
    crc ^= uint16_t(c) << 8;
    for (int i = 0; i < 8; i++) crc = (crc & 0x8000) ? uint16_t((crc << 1) ^ 0x1021) : uint16_t(crc << 1);
  }
  return crc;
}

bool iequals(std::string_view a, const char* b) {
  return a.size() == strlen(b) && strncasecmp(a.data(), b, a.size()) == 0;
}

bool starts(const redisReply* r, std::string_view prefix) {
  return r && r->type == REDIS_REPLY_ERROR && std::string_view(r->str, r->len).substr(0, prefix.size()) == prefix;
}

}  // namespace

uint16_t key_slot(std::string_view key) {
  size_t open = key.find('{');
  if (open != std::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return crc16(key) % kClusterSlots;
}

std::optional<std::string_view> routing_key(const std::vector<std::string_view>& argv) {
  if (argv.size() < 2) return std::nullopt;
  std::string_view cmd = argv[0];
  if (iequals(cmd, "EVAL") || iequals(cmd, "EVALSHA") || iequals(cmd, "EVAL_RO") || iequals(cmd, "EVALSHA_RO") ||
      iequals(cmd, "FCALL") || iequals(cmd, "FCALL_RO")) {
    if (argv.size() < 4 || std::strtoll(std::string(argv[2]).c_str(), nullptr, 10) <= 0) return std::nullopt;
    return argv[3];
  }
  if (iequals(cmd, "XREAD") || iequals(cmd, "XREADGROUP")) {
    for (size_t i = 1; i + 1 < argv.size(); i++)
      if (iequals(argv[i], "STREAMS")) return argv[i + 1];
    return std::nullopt;
  }
  if (iequals(cmd, "PUBSUB")) {  // SHARDNUMSUB counts the subscribers of the channel's shard
    if (argv.size() >= 3 && iequals(argv[1], "SHARDNUMSUB")) return argv[2];
    return std::nullopt;
  }
  if (iequals(cmd, "PING") || iequals(cmd, "WAIT") || iequals(cmd, "SCRIPT") || iequals(cmd, "CLUSTER") ||
      iequals(cmd, "INFO") || iequals(cmd, "TIME") || iequals(cmd, "MULTI") || iequals(cmd, "EXEC") ||
      iequals(cmd, "ASKING") || iequals(cmd, "AUTH") || iequals(cmd, "ROLE"))
    return std::nullopt;
  return argv[1];  // GET, SET, XADD, HSET, SPUBLISH, PUBLISH (any node would do), ...
}

// A command as sent, kept (copied) so that it can be sent again elsewhere.
struct RedisCluster::Sent {
  std::vector<std::vector<std::string>> cmds;  // one, or a MULTI ... EXEC
  std::optional<std::string> key;
  RedisLink::Reply reply;
  int64_t deadline = 0;
  std::string ask;  // ASK: the node to send it to once, after ASKING
  bool transaction = false;
};

RedisCluster::RedisCluster(uv_loop_t* loop, Timers& timers, const CoreConf::Redis& conf, RedisLink::Message on_message,
                           std::function<void()> changed)
    : loop_(loop),
      timers_(timers),
      conf_(conf),
      on_message_(std::move(on_message)),
      changed_(std::move(changed)),
      refresh_timer_(timers, [this] {
        refresh_timer_.arm_in(kRefreshMs);
        refresh();
      }) {}

RedisCluster::~RedisCluster() {
  *alive_ = false;
  for (auto& [addr, n] : nodes_) n->link.reset();
}

RedisCluster::Node& RedisCluster::node(const std::string& host, int port) {
  std::string addr = host + ":" + std::to_string(port);
  auto it = nodes_.find(addr);
  if (it != nodes_.end()) return *it->second;
  auto n = std::make_unique<Node>();
  n->addr = addr;
  CoreConf::Redis c = conf_;
  c.cluster_nodes.clear();
  c.sentinels.clear();
  c.host = host;
  c.port = port;
  c.db = 0;
  Node* np = n.get();
  n->link = std::make_unique<RedisLink>(loop_, timers_, c, on_message_, [this, np](bool) { node_state(*np); });
  n->link->shard_mode([this, np](std::string_view ch) { lost_channel(*np, ch); },
                      [this](std::string_view ch) {
                        if (moving_.erase(std::string(ch)) && moving_.empty() && changed_) changed_();
                      });
  n->link->on_subscriber([this, np](bool subscribed) {
    np->subscribed = subscribed;
    if (changed_) changed_();
  });
  nodes_.emplace(addr, std::move(n));
  np->link->start();
  return *np;
}

void RedisCluster::start() {
  for (auto& seed : conf_.cluster_nodes) node(seed.host, seed.port);
  refresh_timer_.arm_in(kRefreshMs);
}

bool RedisCluster::ready() const {
  if (!mapped_) return false;
  for (Node* n : masters_)
    if (!n->link->ready()) return false;
  return true;
}

bool RedisCluster::commands_up() const {
  if (!mapped_) return false;
  for (Node* n : masters_)
    if (!n->link->commands_up()) return false;
  return true;
}

bool RedisCluster::subscribed() const {
  if (!ready()) return false;
  for (Node* n : masters_)
    if (!n->subscribed) return false;
  return moving_.empty();
}

RedisCluster::Node* RedisCluster::owner(std::string_view key) { return slots_[key_slot(key)]; }

RedisCluster::Node* RedisCluster::any_up() {
  for (Node* n : masters_)
    if (n->link->commands_up()) return n;
  for (auto& [addr, n] : nodes_)
    if (n->link->commands_up()) return n.get();
  return nullptr;
}

void RedisCluster::node_state(Node& n) {
  // A node came up before the slot map was known, or one was lost (it may
  // have failed over): ask for the map again.
  if (!mapped_ || !n.link->commands_up()) refresh();
  if (changed_) changed_();
}

void RedisCluster::refresh(Node* ask) {
  if (refreshing_) return;
  Node* n = ask && ask->link->commands_up() ? ask : any_up();
  if (!n) return;  // node_state() asks when one is up
  refreshing_ = true;
  bool sent = n->link->command({"CLUSTER", "SLOTS"}, [this, n, alive = alive_](redisReply* r) {
    if (!*alive) return;
    refreshing_ = false;
    refreshed(*n, r);
  });
  if (!sent) refreshing_ = false;
}

void RedisCluster::refreshed(Node& asked, redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY) {
    if (r && r->type == REDIS_REPLY_ERROR)
      logf(LogLevel::Warn, "redis: CLUSTER SLOTS refused by %s: %s", asked.addr.c_str(), r->str);
    return;
  }
  std::array<Node*, kClusterSlots> slots{};
  std::set<Node*> masters;
  size_t covered = 0;
  for (size_t i = 0; i < r->elements; i++) {
    redisReply* e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
        e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY ||
        e->element[2]->elements < 2)
      continue;
    long long from = e->element[0]->integer, to = e->element[1]->integer;
    redisReply* m = e->element[2];
    if (from < 0 || to >= kClusterSlots || from > to || m->element[1]->type != REDIS_REPLY_INTEGER) continue;
    std::string host = m->element[0]->type == REDIS_REPLY_STRING ? std::string(m->element[0]->str, m->element[0]->len)
                                                                : std::string();
    if (host.empty() || host == "?") host = asked.link->where().substr(0, asked.link->where().rfind(':'));
    Node& owner = node(host, int(m->element[1]->integer));
    masters.insert(&owner);
    for (long long s = from; s <= to; s++) slots[size_t(s)] = &owner;
    covered += size_t(to - from + 1);
  }
  bool was_mapped = mapped_;
  bool moved = slots != slots_;
  slots_ = slots;
  masters_ = std::move(masters);
  mapped_ = covered == kClusterSlots;
  refreshed_at_ = timers_.now();
  if (!mapped_)
    logf(LogLevel::Warn, "redis: the cluster serves %zu of %u slots (asked %s)", covered, unsigned(kClusterSlots),
         asked.addr.c_str());
  else if (!was_mapped)
    logf(LogLevel::Info, "redis: cluster of %zu master(s) mapped (asked %s)", masters_.size(), asked.addr.c_str());
  else if (moved)
    logf(LogLevel::Notice, "redis: the cluster's slot map changed (%zu master(s))", masters_.size());
  place_channels();
  if (changed_) changed_();
}

// Each channel subscribed on its slot's master, and only there.
void RedisCluster::place_channels() {
  for (auto& [ch, at] : channels_) {
    Node* want = owner(ch);
    if (want == at) continue;
    if (at) {
      at->link->unsubscribe(ch);
      moving_.insert(ch);
    }
    at = want;
    if (at) at->link->subscribe(ch);
  }
}

void RedisCluster::lost_channel(Node& from, std::string_view channel) {
  // The shard dropped it (its slot moved): where it lives now, after a
  // refresh asked of that shard (it knows; another node may not yet).
  auto it = channels_.find(std::string(channel));
  if (it == channels_.end()) return;
  it->second = nullptr;
  moving_.insert(it->first);
  if (changed_) changed_();
  refresh(&from);
}

void RedisCluster::subscribe(const std::string& channel) {
  auto [it, added] = channels_.emplace(channel, nullptr);
  if (!added) return;
  it->second = owner(channel);
  if (it->second) it->second->link->subscribe(channel);
}

void RedisCluster::unsubscribe(const std::string& channel) {
  auto it = channels_.find(channel);
  if (it == channels_.end()) return;
  if (it->second) it->second->link->unsubscribe(channel);
  moving_.erase(channel);
  channels_.erase(it);
}

void RedisCluster::flush() {
  for (Node* n : masters_) n->link->flush();
}

uint64_t RedisCluster::dropped() const {
  uint64_t d = dropped_;
  for (auto& [addr, n] : nodes_) d += n->link->dropped();
  return d;
}

size_t RedisCluster::pending_bytes() const {
  size_t b = 0;
  for (auto& [addr, n] : nodes_) b += n->link->pending_bytes();
  return b;
}

bool RedisCluster::command(const std::vector<std::string_view>& argv, RedisLink::Reply reply) {
  return commands({argv}, std::move(reply));
}

bool RedisCluster::commands(const std::vector<std::vector<std::string_view>>& cmds, RedisLink::Reply reply) {
  auto s = std::make_shared<Sent>();
  s->cmds.reserve(cmds.size());
  for (auto& c : cmds) {
    s->cmds.emplace_back(c.begin(), c.end());
    if (!s->key)
      if (auto k = routing_key(c)) s->key = std::string(*k);
  }
  s->transaction = cmds.size() > 1;
  s->reply = std::move(reply);
  s->deadline = timers_.now() + int64_t(conf_.command_timeout);
  Node* n = s->key ? owner(*s->key) : any_up();
  if (!n || !mapped_) {
    dropped_++;
    return false;
  }
  std::vector<std::vector<std::string_view>> views;
  for (auto& c : s->cmds) views.emplace_back(c.begin(), c.end());
  return n->link->commands(views, [this, s, alive = alive_](redisReply* r) {
    if (*alive) redirected(s, r);
  });
}

// Sends it again (to the slot's owner, or the ASK target) from the retry.
void RedisCluster::dispatch(std::shared_ptr<Sent> s) {
  Node* n = nullptr;
  std::vector<std::vector<std::string_view>> views;
  if (!s->ask.empty()) {
    auto it = nodes_.find(s->ask);
    n = it == nodes_.end() ? nullptr : it->second.get();
    views.push_back({"ASKING"});
  } else {
    n = s->key ? owner(*s->key) : any_up();
  }
  for (auto& c : s->cmds) views.emplace_back(c.begin(), c.end());
  if (n && n->link->commands_up() &&
      n->link->commands(views, [this, s, alive = alive_](redisReply* r) {
        if (*alive) redirected(s, r);
      })) {
    s->ask.clear();
    return;
  }
  retry(std::move(s), kRetryMs * 2);  // not connected yet: wait for it, within the deadline
}

void RedisCluster::retry(std::shared_ptr<Sent> s, int64_t delay_ms) {
  if (timers_.now() + delay_ms > s->deadline) {
    if (s->reply) s->reply(nullptr);  // no answer in time: its outcome is unknown
    return;
  }
  timers_.after(delay_ms, [this, s, alive = alive_]() mutable {
    if (*alive) dispatch(std::move(s));
  });
}

void RedisCluster::redirected(std::shared_ptr<Sent> s, redisReply* r) {
  // MOVED <slot> <host>:<port>: the slot lives there now (the command did not run).
  // ASK <slot> <host>:<port>: this key is being migrated there; ask it once.
  bool moved = starts(r, "MOVED "), ask = starts(r, "ASK ");
  if ((moved || ask) && !s->transaction) {
    std::string_view text(r->str, r->len);
    size_t sp = text.rfind(' '), colon = text.rfind(':');
    if (sp != std::string_view::npos && colon != std::string_view::npos && colon > sp) {
      std::string host(text.substr(sp + 1, colon - sp - 1));
      int port = std::atoi(std::string(text.substr(colon + 1)).c_str());
      Node& target = node(host.empty() ? "127.0.0.1" : host, port);
      if (moved) {
        slots_[key_slot(*s->key)] = &target;
        refresh();
      } else {
        s->ask = target.addr;
      }
      if (timers_.now() < s->deadline) {
        if (target.link->commands_up()) return dispatch(std::move(s));
        return retry(std::move(s), kRetryMs);
      }
    }
  }
  // A transaction whose slot moved (EXECABORT after a MOVED or ASK), or a
  // multi-key command or script caught in a migration: again once it is over.
  if (starts(r, "EXECABORT") || starts(r, "TRYAGAIN") || starts(r, "CLUSTERDOWN") || starts(r, "MOVED ") ||
      starts(r, "ASK ")) {
    if (timers_.now() + kRetryMs <= s->deadline) {
      refresh();
      return retry(std::move(s), kRetryMs);
    }
  }
  if (s->reply) s->reply(r);
}

}  // namespace dr::cluster
