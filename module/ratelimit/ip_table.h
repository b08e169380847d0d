// ratelimit: open connections per client IP over the processes of a node,
// in a shared zone that the master makes (init_master) and every worker finds
// by name. Each process owns its own entry per IP, so the share of a worker
// that died without cleaning up can be told apart and dropped. Reads race
// with writers of other processes; a count may be off by a connection that is
// arriving at that very moment, never by more.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

namespace ratelimit {

struct IpEntry {
  std::atomic<uint32_t> state;  // 0 never used, 1 being claimed, 2 in use, 3 free again
  std::atomic<int32_t> pid;
  std::atomic<int32_t> count;
  char ip[52];
};
static_assert(sizeof(IpEntry) == 64);
constexpr size_t kIpEntries = 16384;

constexpr std::string_view kIpZone = "ratelimit:connections";
constexpr size_t kIpZoneSize = sizeof(IpEntry) * kIpEntries;

// In a worker: the zone it found (init_worker); false when its size is not the table's.
bool attach_ip_table(std::span<std::byte> zone);

class IpCounts {
 public:
  // One more connection from `ip` unless the node then holds more than `max`
  // (0: no maximum). Counting first and checking after means two workers
  // admitting at once cannot both slip past the limit.
  // `counted`: the IP as this process keeps it until its last release (null
  // when the table is full: then it is not counted).
  bool acquire(const std::string& ip, uint64_t max, const std::string*& counted);
  void release(const std::string& ip);
  // Connections from `ip` over the live processes of the node.
  int64_t total(const std::string& ip) const;

 private:
  IpEntry* own(const std::string& ip);

  std::unordered_map<std::string, IpEntry*> mine_;  // this process's entries
  bool full_warned_ = false;
};

}  // namespace ratelimit
