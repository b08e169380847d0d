// The access claims of a socket's token (auth_jwt_access_claims), as auth_jwt
// verified them at CONNECT, parsed once: the modules that decide access
// (module/common's check_access) read them from the socket slot kAccessClaimsSlot
// instead of parsing the claim's JSON text on every check. What fetch_sockets
// and the admin UI show is unchanged: the socket's data ("claim:<name>").
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "depth-realtime/module.h"

namespace dr {

struct AccessClaims {
  // Each claim the token has, with the ids it grants (strings; numbers as
  // their decimal text, as schema::id_string reads them).
  std::vector<std::pair<std::string, std::vector<std::string>>> claims;

  // The ids `claim` grants; null when the token has no such claim.
  const std::vector<std::string>* ids(std::string_view claim) const {
    for (auto& [name, ids] : claims)
      if (name == claim) return &ids;
    return nullptr;
  }
};

inline constexpr std::string_view kAccessClaimsSlot = "auth_jwt.access_claims";

}  // namespace dr
