// The token half of auth_jwt: the rules a JWT is checked against and the
// check itself, without the daemon (so the fuzzer in tests/fuzz runs the very
// code the module runs).
#pragma once

#include <jansson.h>
#include <jwt.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace dr::auth_jwt {

// kTokenExpired is never a verify_token verdict: a live socket's token ran out.
enum Code : size_t { kTokenRequired, kInvalidToken, kUserNotFound, kAuthFailed, kForbidden, kTokenExpired, kCodeCount };

enum class Family { None, Hmac, Rsa, Ec };
Family family_of(jwt_alg_t alg);

struct TokenRules {
  std::optional<std::string> secret;        // HMAC secret, for HS*
  std::string public_key;                   // PEM, for RS* / ES*; empty = none
  std::vector<jwt_alg_t> algorithms{JWT_ALG_HS256};
  std::string user_claim = "userId";
  std::string role_claim = "role";
  uint64_t leeway_ms = 0;
  std::string issuer;                       // empty: not checked
  std::string audience;                     // empty: not checked
  // Claims kept on the socket as JSON text under "claim:<name>" (access lists
  // the app modules check, e.g. a `projects` array).
  std::vector<std::string> access_claims{"conversations", "projects"};

  bool operator==(const TokenRules&) const = default;
};

struct Verdict {
  bool ok = false;
  Code code = kAuthFailed;
  std::string why;  // for the log only; never built from token content
  std::string user_id;
  std::string role;
  std::vector<std::pair<std::string, std::string>> claims;  // access claims, as JSON text
  std::optional<double> exp;  // the exp claim (seconds since the epoch), when the token has one
  std::optional<double> nbf;  // the nbf claim, likewise
};

// The whole decision: `token` is the value of auth.token (nullptr when
// absent), `now_ms` the time in ms since the epoch. Never throws. A token
// that passed lately under the same rules is not decoded again (a client's
// namespaces and reconnects send the same one): only exp and nbf are checked
// again, against `now_ms`.
Verdict verify_token(const json_t* token, const TokenRules& rules, int64_t now_ms) noexcept;

}  // namespace dr::auth_jwt
