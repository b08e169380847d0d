#include "ip_table.h"

#include <depth-realtime/module.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ratelimit {
namespace {

IpEntry* g_ip_table = nullptr;  // in this worker, once init_worker found the zone (zero-filled when made)

size_t ip_hash(std::string_view ip) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (char ch : ip) h = (h ^ uint8_t(ch)) * 16777619u;
  return h % kIpEntries;
}

bool process_alive(int32_t pid) {
  if (pid == getpid()) return true;
  return kill(pid, 0) == 0 || errno != ESRCH;
}

}  // namespace

bool attach_ip_table(std::span<std::byte> zone) {
  if (zone.size() != kIpZoneSize) return false;
  g_ip_table = reinterpret_cast<IpEntry*>(zone.data());
  return true;
}

bool IpCounts::acquire(const std::string& ip, uint64_t max, const std::string*& counted) {
  counted = nullptr;
  IpEntry* e = own(ip);
  if (!e) return true;  // the table is full: not limited rather than refused
  e->count.fetch_add(1);
  if (max && total(ip) > int64_t(max)) {
    release(ip);
    return false;
  }
  counted = &mine_.find(ip)->first;
  return true;
}

void IpCounts::release(const std::string& ip) {
  auto it = mine_.find(ip);
  if (it == mine_.end()) return;
  IpEntry* e = it->second;
  if (e->count.fetch_sub(1) <= 1) {
    e->count.store(0);
    e->state.store(3);
    mine_.erase(it);
  }
}

int64_t IpCounts::total(const std::string& ip) const {
  if (!g_ip_table || ip.size() >= sizeof(IpEntry::ip)) return 0;
  int64_t sum = 0;
  size_t start = ip_hash(ip);
  for (size_t i = 0; i < kIpEntries; i++) {
    IpEntry& e = g_ip_table[(start + i) % kIpEntries];
    uint32_t st = e.state.load();
    if (st == 0) break;  // the end of this IP's probe sequence
    if (st != 2 || strncmp(e.ip, ip.c_str(), sizeof e.ip) != 0) continue;
    int32_t pid = e.pid.load();
    if (!process_alive(pid)) {
      uint32_t in_use = 2;
      e.state.compare_exchange_strong(in_use, 3);  // a dead worker's share
      continue;
    }
    sum += e.count.load();
  }
  return sum;
}

IpEntry* IpCounts::own(const std::string& ip) {
  if (auto it = mine_.find(ip); it != mine_.end()) return it->second;
  if (!g_ip_table || ip.size() >= sizeof(IpEntry::ip)) return nullptr;
  size_t start = ip_hash(ip);
  for (size_t i = 0; i < kIpEntries; i++) {
    IpEntry& e = g_ip_table[(start + i) % kIpEntries];
    uint32_t st = e.state.load();
    if ((st == 0 || st == 3) && e.state.compare_exchange_strong(st, 1)) {
      e.pid.store(getpid());
      e.count.store(0);
      memset(e.ip, 0, sizeof e.ip);
      memcpy(e.ip, ip.data(), ip.size());
      e.state.store(2);
      mine_.emplace(ip, &e);
      return &e;
    }
  }
  if (!full_warned_) {
    dr::log(dr::LogLevel::Warn, "ratelimit: the connection table is full; new IPs are not limited");
    full_warned_ = true;
  }
  return nullptr;
}

}  // namespace ratelimit
