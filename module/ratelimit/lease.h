// ratelimit: the budget lease, one atomic Redis script per request.
//
// A user's budget (zone|window|subject) lives in two hashes under one hash tag,
// so that both are in one Redis Cluster slot:
//   <prefix>ratelimit:{<budget>}:<bucket_ms>:b  bucket -> events counted in it
//   <prefix>ratelimit:{<budget>}:<bucket_ms>:l  lease id -> "held expiry_ms"
// `held` is what a worker may still admit (its share, reserved); its events
// come back in later requests as counts per bucket. A bucket counts until its
// end leaves the window. A lease not renewed by its expiry (a worker that
// crashed) is dropped and its units count as events at its expiry, later
// than any it admitted, so that the limit holds without knowing them.
//
// One request: report new events, keep `keep` units of the current share,
// and (want) get more. Refused because other workers hold what is left, a
// worker asks again a little later: they give idle shares back near the limit. The grant is half of what is left in the window over
// the leases alive (at least 1 while anything is left), so far from the limit
// one lease covers many events; near it (under a quarter of the limit, or 8,
// left) no more than the worker's waiting events need, so every worker must
// ask and none sits on units another one's events wait for. What is
// left never goes below zero: no worker can admit past the limit.
#pragma once

#include <depth-realtime/redis.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ratelimit {

struct LeaseRequest {
  std::string id;      // this worker's lease
  std::string budget;  // zone|window|subject
  int64_t now_ms = 0;  // wall clock, as the buckets
  int64_t window_ms = 0;
  int64_t bucket_ms = 0;
  int64_t limit = 0;
  int64_t want = 0;    // units wanted: 0 none; near the limit at most this many are granted
  int64_t keep = 0;    // units of the current share this worker keeps
  int64_t ttl_ms = 0;  // how long the worker may use the share
  // This worker's events in the window, exact: the script counts them so
  // rather than by their buckets (what keeps one worker's limit exact).
  int64_t mine_exact = 0;
  std::map<int64_t, int64_t> report;  // bucket -> events not reported yet
  std::map<int64_t, int64_t> mine;    // bucket -> this worker's events in Redis, the report included
};

struct LeaseGrant {
  int64_t units = 0;
  bool fresh = false;     // Redis had no lease of this worker: nothing was kept
  int64_t first_bucket = 0;
  // Events per bucket from first_bucket on, everyone's (for retryAfterMs and
  // the per-worker fallback).
  std::vector<int64_t> totals;
  int64_t held_by_others = 0;  // units other workers' leases hold now
  int64_t left = 0;            // of the limit, neither counted nor held (after this grant)
};

// Redis keeps a lease this long after the worker stops using it, so that a
// late return still finds it.
constexpr int64_t kLeaseGraceMs = 1000;

std::string buckets_key(const std::string& budget, int64_t bucket_ms);
std::string leases_key(const std::string& budget, int64_t bucket_ms);

// The EVAL command of a request.
std::vector<std::string> lease_command(const LeaseRequest& req);
// false: not the script's answer (an error, Redis away).
bool parse_grant(const dr::redis::Reply& r, LeaseGrant& out);

}  // namespace ratelimit
