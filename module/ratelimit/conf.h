// ratelimit: its configuration and directive table.
#pragma once

#include <depth-realtime/module.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "addresses.h"

namespace ratelimit {

constexpr int64_t kBucketsPerWindow = 10;

struct RateConf : dr::ModuleConfBase<RateConf> {
  bool enabled = true;
  uint64_t limit = 100;
  uint64_t window_ms = 60000;
  std::string zone = "default";
  std::string message = "Rate limit exceeded";
  // Server level:
  uint64_t connections_per_ip = 0;  // 0: off
  std::string connections_message = "Too many connections";
  std::vector<Cidr> trusted_proxies;
  uint64_t sync_interval_ms = 100;
  uint64_t lease_ms = 10000;
  uint64_t lease_wait_ms = 250;

  int64_t window() const { return int64_t(window_ms); }
  int64_t bucket() const { return std::max<int64_t>(1, window() / kBucketsPerWindow); }
};

extern const dr::Directive kDirectives[];

}  // namespace ratelimit
