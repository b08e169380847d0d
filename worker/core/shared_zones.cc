#include "core/shared_zones.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>

namespace dr::zones {
namespace {

// One mapping, unmapped with its last owner (the running set, the declarations).
class Mapping {
 public:
  Mapping(void* addr, size_t size) : addr_(addr), size_(size) {}
  ~Mapping() { munmap(addr_, size_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::byte* data() const { return static_cast<std::byte*>(addr_); }

 private:
  void* addr_;
  size_t size_;
};

struct Zone {
  size_t size;  // as declared (the mapping is rounded up to pages)
  std::shared_ptr<Mapping> mapping;
};
using Set = std::map<std::string, Zone, std::less<>>;

Set g_running;
Set g_declared;

}  // namespace

void begin() { g_declared.clear(); }

bool declare(std::string_view name, size_t size, std::string& err) {
  if (auto it = g_declared.find(name); it != g_declared.end()) {
    if (it->second.size == size) return true;
    err = "shared zone \"" + std::string(name) + "\" declared with two sizes";
    return false;
  }
  if (auto it = g_running.find(name); it != g_running.end() && it->second.size == size) {
    g_declared.emplace(std::string(name), it->second);
    return true;
  }
  size_t page = size_t(sysconf(_SC_PAGESIZE));
  size_t mapped = (std::max<size_t>(size, 1) + page - 1) / page * page;
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    err = "cannot map shared zone \"" + std::string(name) + "\": " + strerror(errno);
    return false;
  }
  g_declared.emplace(std::string(name), Zone{size, std::make_shared<Mapping>(p, mapped)});
  return true;
}

bool changed() {
  if (g_declared.size() != g_running.size()) return true;
  for (auto& [name, z] : g_declared) {
    auto it = g_running.find(name);
    if (it == g_running.end() || it->second.mapping != z.mapping) return true;
  }
  return false;
}

void commit() {
  g_running = std::move(g_declared);
  g_declared.clear();
}

void abort() { g_declared.clear(); }

std::span<std::byte> find(std::string_view name) {
  auto it = g_running.find(name);
  if (it == g_running.end()) return {};
  return {it->second.mapping->data(), it->second.size};
}

}  // namespace dr::zones
