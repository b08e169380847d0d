// The Lua of the adapter's shared membership (redis_adapter_presence.cc): one
// script, so that a heartbeat and the purge of silent nodes are atomic and
// judged by Redis' clock, not by the nodes' own.
#pragma once

namespace dr::cluster::lua {

// Heartbeat of this node, and purge of the nodes silent for the TTL (and of
// this node's own stale entries with 'reset'). Redis' clock decides.
// KEYS[1]: the nodes key (for a cluster's routing: every key it touches has
// the membership's hash tag). ARGV: membership prefix, uid, ttl ms, 'reset' |
// 'beat'. Returns {added, purged}.
inline constexpr char kHeartbeatScript[] = R"(
local prefix, me, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nodes = prefix .. 'nodes'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function purge(node)
  local idx = prefix .. 'node:' .. node
  for _, m in ipairs(redis.call('SMEMBERS', idx)) do
    local cut = string.find(m, '\n', 1, true)
    if cut then redis.call('HDEL', string.sub(m, cut + 1), string.sub(m, 1, cut - 1)) end
  end
  redis.call('DEL', idx)
end
if ARGV[4] == 'reset' then purge(me) end
local added = redis.call('ZADD', nodes, now, me)
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', now - ttl)
for _, n in ipairs(dead) do
  if n ~= me then
    purge(n)
    redis.call('ZREM', nodes, n)
  end
end
return {added, #dead}
)";

}  // namespace dr::cluster::lua
