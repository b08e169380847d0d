// redis_wait_replicas N TIMEOUT: tells whether the writes a worker sent so
// far are on N replicas (redis::replicated()).
//
// WAIT blocks the connection it is sent on, and it must be the connection of
// the writes it covers (the worker's one commands connection), so it is
// rationed: one WAIT at a time covers everything sent before it (callers
// arriving meanwhile share the next one), and after a WAIT that fell short
// callers are told "not confirmed" at once, without blocking the connection,
// until a probe WAIT a second later finds the replicas back.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/timers.h"
#include "depth-realtime/redis.h"

namespace dr::cluster {

class RedisLink;

class ReplicaWait {
 public:
  using Done = std::function<void(redis::Replication)>;
  ReplicaWait(Timers& timers, RedisLink* link, uint64_t replicas, uint64_t timeout_ms);
  ~ReplicaWait() { *alive_ = false; }
  ReplicaWait(const ReplicaWait&) = delete;
  ReplicaWait& operator=(const ReplicaWait&) = delete;

  void wait(Done cb);

  static constexpr int64_t kProbeEveryMs = 1000;

 private:
  void send(std::vector<Done> group);
  void answer(std::vector<Done>& group, long long replicas);
  redis::Replication result(long long replicas) const;

  Timers& timers_;  // answers are posted on it, never given inside wait()
  RedisLink* link_;
  uint64_t replicas_;
  uint64_t timeout_ms_;
  bool in_flight_ = false;
  std::vector<Done> next_;      // asked while a WAIT was under way: the next one covers them
  int64_t short_until_ = 0;     // after a WAIT fell short: "not confirmed" at once until then
  long long last_count_ = 0;    // what that WAIT counted
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace dr::cluster
