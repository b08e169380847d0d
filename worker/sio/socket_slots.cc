#include "sio/socket_slots.h"

#include <string>
#include <utility>
#include <vector>

#include "depth-realtime/module.h"

namespace dr {
namespace {

// name -> the type it was first asked for with; the index is the position.
// Asked for in init_worker, a few per module: a short list.
std::vector<std::pair<std::string, std::string>>& slots() {
  static std::vector<std::pair<std::string, std::string>> s;
  return s;
}

}  // namespace

uint32_t detail::socket_slot(std::string_view name, const char* type) {
  auto& s = slots();
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i].first != name) continue;
    if (s[i].second == type) return uint32_t(i);
    logf(LogLevel::Error, "socket slot \"%.*s\" asked for with another type than its first", int(name.size()),
         name.data());
    return UINT32_MAX;
  }
  s.emplace_back(std::string(name), type);
  return uint32_t(s.size() - 1);
}

size_t sio::socket_slot_count() { return slots().size(); }

}  // namespace dr
