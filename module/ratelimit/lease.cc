#include "lease.h"

namespace ratelimit {

namespace {

// KEYS: buckets, leases. ARGV: id now window bucket limit want (units, 0:
// none) keep ttl grace
// mine_exact, then the report (n, bucket count ...) and this worker's buckets
// (n, bucket count ...). The times of leases are Redis's (TIME): one clock
// for every node's leases; the buckets are the nodes' wall clocks.
constexpr const char* kScript = R"lua(
local id = ARGV[1]
local now, window, bucket = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local limit, want, keep = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local ttl, grace, mine_exact = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local t = redis.call('TIME')
local rnow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local first, last = math.floor((now - window) / bucket), math.floor(now / bucket)
local i = 11
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2
end
local mine = {}
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  mine[tonumber(ARGV[i])] = tonumber(ARGV[i + 1]); i = i + 2
end
local held, alive, fresh = 0, 1, 1
local leases = redis.call('HGETALL', KEYS[2])
for j = 1, #leases, 2 do
  local h, e = string.match(leases[j + 1], '^(%d+) (%d+)$')
  h, e = tonumber(h) or 0, tonumber(e) or 0
  local b = math.floor(e / bucket)
  if e <= rnow then
    redis.call('HDEL', KEYS[2], leases[j])
    if h > 0 then redis.call('HINCRBY', KEYS[1], b, h) end
  elseif leases[j] == id then
    fresh = 0
  else
    held = held + h
    alive = alive + 1
  end
end
local totals, used = {}, mine_exact
local counts = redis.call('HGETALL', KEYS[1])
for j = 1, #counts, 2 do
  local b, c = tonumber(counts[j]), tonumber(counts[j + 1])
  if b < first then
    redis.call('HDEL', KEYS[1], counts[j])
  else
    totals[b] = c
    used = used + c - math.min(mine[b] or 0, c)
    if b > last then last = b end
  end
end
if fresh == 1 then keep = 0 end
local free = limit - used - held - keep
local grant = 0
if want > 0 and free > 0 then
  grant = math.ceil(free / (2 * alive))
  -- Near the limit only what the worker's waiting events need: a share
  -- kept here would be missing where the user's next event comes.
  if free < math.max(limit / 4, 8) then grant = math.min(grant, want) end
end
if keep + grant > 0 then
  redis.call('HSET', KEYS[2], id, (keep + grant) .. ' ' .. (rnow + ttl + grace))
  redis.call('PEXPIRE', KEYS[2], ttl + 2 * grace)
else
  redis.call('HDEL', KEYS[2], id)
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], window + 2 * bucket + ttl + grace) end
local out = {}
for b = first, last do out[#out + 1] = totals[b] or 0 end
return {grant, fresh, first, out, held, free - grant}
)lua";

void append_map(std::vector<std::string>& argv, const std::map<int64_t, int64_t>& m) {
  argv.push_back(std::to_string(m.size()));
  for (auto& [b, n] : m) {
    argv.push_back(std::to_string(b));
    argv.push_back(std::to_string(n));
  }
}

std::string key_of(const std::string& budget, int64_t bucket_ms, const char* what) {
  return dr::redis::key("ratelimit:{" + budget + "}:" + std::to_string(bucket_ms) + ":" + what);
}

}  // namespace

std::string buckets_key(const std::string& budget, int64_t bucket_ms) { return key_of(budget, bucket_ms, "b"); }
std::string leases_key(const std::string& budget, int64_t bucket_ms) { return key_of(budget, bucket_ms, "l"); }

std::vector<std::string> lease_command(const LeaseRequest& r) {
  std::vector<std::string> argv{"EVAL",
                                kScript,
                                "2",
                                buckets_key(r.budget, r.bucket_ms),
                                leases_key(r.budget, r.bucket_ms),
                                r.id,
                                std::to_string(r.now_ms),
                                std::to_string(r.window_ms),
                                std::to_string(r.bucket_ms),
                                std::to_string(r.limit),
                                std::to_string(r.want),
                                std::to_string(r.keep),
                                std::to_string(r.ttl_ms),
                                std::to_string(kLeaseGraceMs),
                                std::to_string(r.mine_exact)};
  append_map(argv, r.report);
  append_map(argv, r.mine);
  return argv;
}

bool parse_grant(const dr::redis::Reply& r, LeaseGrant& out) {
  using T = dr::redis::Reply::Type;
  if (r.type != T::Array || r.elements.size() != 6 || r.elements[3].type != T::Array) return false;
  for (size_t i : {0, 1, 2, 4, 5})
    if (r.elements[i].type != T::Integer) return false;
  out.held_by_others = r.elements[4].integer;
  out.left = r.elements[5].integer;
  out.units = r.elements[0].integer;
  out.fresh = r.elements[1].integer != 0;
  out.first_bucket = r.elements[2].integer;
  out.totals.clear();
  for (auto& e : r.elements[3].elements) out.totals.push_back(e.as_int(0));
  return true;
}

}  // namespace ratelimit
