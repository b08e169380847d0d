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
  local mine = node .. '\t'
  for _, m in ipairs(redis.call('SMEMBERS', idx)) do
    local cut = string.find(m, '\n', 1, true)
    if cut then
      local key, sid = string.sub(m, cut + 1), string.sub(m, 1, cut - 1)
      local v = redis.call('HGET', key, sid)
      -- not an entry another node wrote since (the socket resumed there)
      if v and string.sub(v, 1, #mine) == mine then redis.call('HDEL', key, sid) end
    end
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

// A socket of this node left a room: its entry goes, unless another node
// wrote it since (the socket resumed there while this node held its stale
// connection). KEYS[1]: the room's presence hash, KEYS[2]: this node's index.
// ARGV: socket id, this node's uid.
inline constexpr char kPresenceLeaveScript[] = R"(
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2] + 1) == ARGV[2] .. '\t' then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('SREM', KEYS[2], ARGV[1] .. '\n' .. KEYS[1])
)";

}  // namespace dr::cluster::lua
