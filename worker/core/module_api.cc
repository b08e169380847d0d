// Definitions of the small helpers the public module API declares.
#include "depth-realtime/module.h"

namespace dr {
namespace {

const std::string* find(const std::vector<std::pair<std::string, std::string>>& list, std::string_view name) {
  for (auto& [k, v] : list)
    if (k == name) return &v;
  return nullptr;
}

}  // namespace

const std::string* Handshake::header(std::string_view name) const { return find(headers, name); }
const std::string* Handshake::query_param(std::string_view name) const { return find(query, name); }
const std::string* HttpRequest::header(std::string_view name) const { return find(headers, name); }
const std::string* HttpRequest::query_param(std::string_view name) const { return find(query, name); }

}  // namespace dr
