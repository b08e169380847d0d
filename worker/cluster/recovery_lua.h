// The Lua of connection state recovery and of the recovery stream: each runs
// where the keys are, so that reading a session with the packets after its
// offset, writing a session, reading back what a node missed and publishing
// a broadcast again are each one atomic step.
#pragma once

namespace dr::cluster::lua {

// Connection state recovery lookup: the session, then the packets recorded
// after `offset`. KEYS[1]: the session key (for a cluster's routing; with a
// cluster the stream shares its slot). ARGV: session key, stream key, first
// stream id to scan, offset, max packets, max bytes. Returns nil (unknown session or offset, too many
// packets) or {session, packet...}; a found session is consumed.
inline constexpr char kRecoverScript[] = R"(
local session = redis.call('GET', ARGV[1])
if not session then return nil end
local start, found, out, max = ARGV[3], false, {session}, tonumber(ARGV[5])
local bytes, max_bytes = 0, tonumber(ARGV[6])
while true do
  local batch = redis.call('XRANGE', ARGV[2], start, '+', 'COUNT', 512)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    local f = e[2]
    if found then
      out[#out + 1] = f[4]
      bytes = bytes + #f[4]
    elseif f[2] == ARGV[4] then
      found = true
    end
  end
  if #out > max + 1 or bytes > max_bytes then return nil end
  start = '(' .. batch[#batch][1]
end
if not found then return nil end
redis.call('DEL', ARGV[1])
return out
)";

// A session record written unless a later generation of it is stored (a
// recovery elsewhere took the session over: this writer is stale). KEYS[1]
// (for a cluster's routing) and ARGV[1]: the session key; then ARGV:
// generation, record, ttl ms. Returns 1 when written.
inline constexpr char kStoreSessionScript[] = R"(
local cur = redis.call('GET', ARGV[1])
if cur then
  local ok, s = pcall(cjson.decode, cur)
  if ok and type(s) == 'table' and (tonumber(s.gen) or 0) > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', ARGV[1], ARGV[3], 'PX', ARGV[4])
return 1
)";

// What this node missed while its subscriber was away (see catch_up.h): the
// stream entries after the anchor or, when the anchor is not there (Redis
// restarted empty, or it was trimmed), from the cutoff on. ARGV: stream key,
// first stream id to scan for the anchor, anchor offset ('' = none), cutoff
// stream id, max entries. Returns {more, offset, payload, ...}.
inline constexpr char kCatchUpScript[] = R"(
local key, start, anchor, from, max = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
while anchor ~= '' do
  local batch = redis.call('XRANGE', key, start, '+', 'COUNT', 512)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    if e[2][2] == anchor then
      from, anchor = '(' .. e[1], ''
      break
    end
  end
  start = '(' .. batch[#batch][1]
end
local out = {0}
for i, e in ipairs(redis.call('XRANGE', key, from, '+', 'COUNT', max + 1)) do
  if i > max then
    out[1] = 1
    break
  end
  out[#out + 1] = e[2][2]
  out[#out + 1] = e[2][4]
end
return out
)";

// A recordable broadcast whose kRecordScript got no answer: recorded and
// published unless the stream has its offset already (KEYS[1]: the stream,
// for a cluster's routing). ARGV: stream key, channel ('': the caller
// publishes: a cluster's channel and stream are on different slots),
// offset, stored entry, message, MINID, first stream id to scan. Returns 1
// when published, 0 when it was there.
inline constexpr char kRepublishScript[] = R"(
local key, start = ARGV[1], ARGV[7]
while true do
  local batch = redis.call('XRANGE', key, start, '+', 'COUNT', 512)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    if e[2][2] == ARGV[3] then return 0 end
  end
  start = '(' .. batch[#batch][1]
end
redis.call('XADD', key, 'MINID', '~', ARGV[6], '*', 'o', ARGV[3], 'p', ARGV[4])
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[5]) end
return 1
)";

// A recordable broadcast, recorded and published in one atomic step (one
// command and one reply, where MULTI, XADD, PUBLISH, EXEC took four of each):
// the stream's order is the order subscribers see. KEYS[1]: the stream.
// ARGV: MINID, offset, stored packet, channel, message. Returns PUBLISH's count.
inline constexpr char kRecordScript[] = R"(
redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*', 'o', ARGV[2], 'p', ARGV[3])
return redis.call('PUBLISH', ARGV[4], ARGV[5])
)";

}  // namespace dr::cluster::lua
