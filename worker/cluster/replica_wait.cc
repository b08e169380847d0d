#include "cluster/replica_wait.h"

#include <algorithm>
#include <string>

#include "cluster/backend.h"
#include "cluster/redis_link.h"
#include "depth-realtime/module.h"

namespace dr::cluster {

ReplicaWait::ReplicaWait(Timers& timers, RedisLink* link, uint64_t replicas, uint64_t timeout_ms)
    : timers_(timers), link_(link), replicas_(replicas), timeout_ms_(timeout_ms) {}

redis::Replication ReplicaWait::result(long long replicas) const {
  redis::Replication rep;
  rep.wanted = (long long)replicas_;
  rep.timeout_ms = (long long)timeout_ms_;
  rep.replicas = replicas;
  rep.confirmed = replicas >= rep.wanted;
  return rep;
}

void ReplicaWait::wait(Done cb) {
  if (!cb) return;
  if (timers_.now() < short_until_) {  // replicas missing a moment ago: do not block the connection
    redis::Replication rep = result(std::min(last_count_, (long long)replicas_ - 1));
    rep.timeout_ms = 0;  // not waited for
    timers_.post([cb = std::move(cb), rep] { cb(rep); });
    return;
  }
  if (in_flight_) {
    next_.push_back(std::move(cb));
    return;
  }
  std::vector<Done> group;
  group.push_back(std::move(cb));
  send(std::move(group));
}

void ReplicaWait::send(std::vector<Done> group) {
  std::string n = std::to_string(replicas_), t = std::to_string(timeout_ms_);
  auto shared = std::make_shared<std::vector<Done>>(std::move(group));
  bool sent = link_ && link_->command({"WAIT", n, t}, [this, alive = alive_, shared](redisReply* r) {
    if (!*alive) return;
    in_flight_ = false;
    long long count = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (count >= 0 && count < (long long)replicas_) {
      short_until_ = timers_.now() + kProbeEveryMs;
      last_count_ = count;
    } else if (count >= 0) {
      short_until_ = 0;
    }
    answer(*shared, count);
    // The writes of those who came meanwhile: the next WAIT, or "not
    // confirmed" at once if this one fell short.
    if (next_.empty()) return;
    std::vector<Done> rest;
    rest.swap(next_);
    if (short_until_) answer(rest, count);
    else send(std::move(rest));
  });
  if (sent) {
    in_flight_ = true;
    return;
  }
  // Refused (Redis away or too much pending): the writes are on the master, no more is known.
  for (auto& cb : *shared) timers_.post([cb = std::move(cb), rep = result(-1)] { cb(rep); });
}

void ReplicaWait::answer(std::vector<Done>& group, long long replicas) {
  redis::Replication rep = result(replicas);
  for (auto& cb : group) {
    try {
      cb(rep);
    } catch (const std::exception& e) {
      logf(LogLevel::Error, "redis callback: %s", e.what());
    }
  }
}

}  // namespace dr::cluster
