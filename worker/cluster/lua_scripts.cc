#include "cluster/lua_scripts.h"

#include <openssl/sha.h>

#include <array>
#include <cstdio>

#include "cluster/presence_lua.h"
#include "cluster/recovery_lua.h"

namespace dr::cluster::lua {
namespace {

Script make(std::string_view body) {
  Script s{body, {}};
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(body.data()), body.size(), digest);
  for (size_t i = 0; i < SHA_DIGEST_LENGTH; i++) snprintf(s.sha + 2 * i, 3, "%02x", digest[i]);
  return s;
}

const std::array<Script, 6>& table() {
  static const std::array<Script, 6> all{make(kHeartbeatScript), make(kRecoverScript), make(kStoreSessionScript),
                                         make(kCatchUpScript),    make(kRepublishScript), make(kRecordScript)};
  return all;
}

}  // namespace

std::span<const Script> scripts() { return table(); }

std::string_view sha(const char* body) {
  for (auto& s : table())
    if (s.body.data() == body) return s.sha;
  return {};
}

std::string_view body_of(std::string_view sha) {
  for (auto& s : table())
    if (sha == s.sha) return s.body;
  return {};
}

}  // namespace dr::cluster::lua
