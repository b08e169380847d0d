// The module-facing Redis API (include/depth-realtime/redis.h) on top of the
// worker's RedisLink.
#pragma once

#include <cstdint>
#include <string>

#include "core/timers.h"
#include "depth-realtime/redis.h"

struct redisReply;

namespace dr::cluster {

class RedisLink;

// Called once per worker: `link` is null without Redis (every command then
// answers "Redis unavailable"). `uninstall_redis_api` before the link goes.
void install_redis_api(Timers& timers, RedisLink* link, std::string app_prefix);
void uninstall_redis_api();
// redis_wait_replicas N TIMEOUT (0: off), for redis::replicated().
void set_wait_replicas(uint64_t replicas, uint64_t timeout_ms);
// A hiredis reply as modules get it; null: none came (the connection was lost).
redis::Reply module_reply(const redisReply* r);

}  // namespace dr::cluster
