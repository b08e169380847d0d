// Token verification for auth_jwt (see token.h). libjwt 1.10 verifies a
// token with whatever algorithm the token itself names (and skips
// verification for "none"), so the header's "alg" is checked here against the
// allow-list first, and the key is chosen by that algorithm's family: the HMAC
// secret only ever verifies HS*, the public key only RS*/ES*. libjwt then
// checks the signature; the claims are checked here on what it decoded.
#include "token.h"

#include <depth-realtime/json.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string_view>

namespace dr::auth_jwt {
namespace {

// Real tokens are a few hundred bytes; this bounds what an unauthenticated
// client can make the worker decode.
constexpr size_t kMaxTokenBytes = 64 * 1024;
constexpr size_t kMaxUserIdLength = 128;

struct JwtDeleter {
  void operator()(jwt_t* j) const { jwt_free(j); }
};
using JwtPtr = std::unique_ptr<jwt_t, JwtDeleter>;

Verdict refuse(Code code, const char* why) {
  Verdict v;
  v.code = code;
  v.why = why;
  return v;
}

// Strict base64url (RFC 7515: no padding, no other characters).
bool base64url_decode(std::string_view in, std::string& out) {
  auto value = [](char ch) -> int {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '-') return 62;
    if (ch == '_') return 63;
    return -1;
  };
  if (in.size() % 4 == 1) return false;
  out.clear();
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char ch : in) {
    int v = value(ch);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return true;
}

// Length as JavaScript counts it (UTF-16 code units), the seed's notion of "chars".
size_t js_length(std::string_view utf8) {
  size_t n = 0;
  for (unsigned char ch : utf8) {
    if ((ch & 0xc0) != 0x80) ++n;  // a leading byte starts a code point
    if (ch >= 0xf0) ++n;           // outside the BMP: a surrogate pair
  }
  return n;
}

// A usable user id: non-empty string of at most 128 chars, or a non-negative
// integer, which becomes its decimal string.
std::optional<std::string> usable_user_id(const json_t* v) {
  if (json_is_string(v)) {
    std::string_view s(json_string_value(v), json_string_length(v));
    if (s.empty() || js_length(s) > kMaxUserIdLength) return std::nullopt;
    if (s.find('\0') != std::string_view::npos) return std::nullopt;
    return std::string(s);
  }
  if (json_is_integer(v)) {
    json_int_t i = json_integer_value(v);
    if (i < 0) return std::nullopt;
    return std::to_string(i);
  }
  // 42.0 is the integer 42 to a JavaScript issuer.
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (d < 0 || d > 9007199254740991.0 || std::floor(d) != d) return std::nullopt;
    return std::to_string(static_cast<long long>(d));
  }
  return std::nullopt;
}

bool audience_matches(const json_t* aud, const std::string& want) {
  if (json_is_string(aud)) return want == json_string_value(aud);
  if (!json_is_array(aud)) return false;
  size_t i;
  json_t* item;
  json_array_foreach(aud, i, item) {
    if (json_is_string(item) && want == json_string_value(item)) return true;
  }
  return false;
}

// The checks that depend on the clock. As jsonwebtoken: expired from the
// second `exp` names on, plus leeway; not valid before `nbf`, less leeway.
const char* outside_validity(std::optional<double> exp, std::optional<double> nbf, const TokenRules& rules,
                             int64_t now_ms) {
  const double now = static_cast<double>(now_ms) / 1000.0;
  const double leeway = static_cast<double>(rules.leeway_ms) / 1000.0;
  if (exp && now >= *exp + leeway) return "expired";
  if (nbf && *nbf - leeway > now) return "not yet valid (nbf)";
  return nullptr;
}

// Checks the claims of a token whose signature is already verified.
Verdict check_claims(const json_t* claims, const TokenRules& rules, int64_t now_ms) {
  if (!json_is_object(claims)) return refuse(kInvalidToken, "payload is not an object");
  std::optional<double> exp_at, nbf_at;
  if (const json_t* exp = json_object_get(claims, "exp")) {
    if (!json_is_number(exp)) return refuse(kInvalidToken, "exp is not a number");
    exp_at = json_number_value(exp);
  }
  if (const json_t* nbf = json_object_get(claims, "nbf")) {
    if (!json_is_number(nbf)) return refuse(kInvalidToken, "nbf is not a number");
    nbf_at = json_number_value(nbf);
  }
  if (const char* why = outside_validity(exp_at, nbf_at, rules, now_ms)) return refuse(kInvalidToken, why);
  if (!rules.issuer.empty()) {
    const char* iss = json_string_value(json_object_get(claims, "iss"));
    if (!iss || rules.issuer != iss) return refuse(kInvalidToken, "wrong issuer");
  }
  if (!rules.audience.empty() && !audience_matches(json_object_get(claims, "aud"), rules.audience)) {
    return refuse(kInvalidToken, "wrong audience");
  }

  std::optional<std::string> id = usable_user_id(json_object_get(claims, rules.user_claim.c_str()));
  if (!id) return refuse(kInvalidToken, "no usable user id claim");

  Verdict v;
  v.ok = true;
  v.user_id = std::move(*id);
  v.exp = exp_at;
  v.nbf = nbf_at;
  // A role of another type counts as no role: an ordinary user.
  const json_t* role = json_object_get(claims, rules.role_claim.c_str());
  if (json_is_string(role)) v.role.assign(json_string_value(role), json_string_length(role));
  for (const std::string& name : rules.access_claims)
    if (const json_t* c = json_object_get(claims, name.c_str())) v.claims.emplace_back(name, dr::json_text(c));
  return v;
}

Verdict verify_token_unguarded(const json_t* token, const TokenRules& rules, int64_t now_ms) {
  if (!token || json_is_null(token) || (json_is_string(token) && json_string_length(token) == 0)) {
    return refuse(kTokenRequired, "no token");
  }
  if (!json_is_string(token)) return refuse(kInvalidToken, "token is not a string");
  std::string_view text(json_string_value(token), json_string_length(token));
  if (text.size() > kMaxTokenBytes) return refuse(kInvalidToken, "token too long");
  if (text.find('\0') != std::string_view::npos) return refuse(kInvalidToken, "NUL in token");

  // header.payload.signature
  size_t dot1 = text.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : text.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || text.find('.', dot2 + 1) != std::string_view::npos) {
    return refuse(kInvalidToken, "not three segments");
  }
  std::string header_json;
  if (!base64url_decode(text.substr(0, dot1), header_json)) {
    return refuse(kInvalidToken, "header is not base64url");
  }
  dr::Json header(json_loadb(header_json.data(), header_json.size(), JSON_REJECT_DUPLICATES, nullptr));
  if (!json_is_object(header.get())) return refuse(kInvalidToken, "header is not a JSON object");
  // We understand no JWS extensions, so a token that makes one critical is refused (RFC 7515 4.1.11).
  if (json_object_get(header.get(), "crit")) return refuse(kInvalidToken, "crit header");
  const char* alg_name = dr::json_str(header.get(), "alg");
  if (!alg_name) return refuse(kInvalidToken, "no alg");
  jwt_alg_t alg = jwt_str_alg(alg_name);
  Family family = family_of(alg);  // None for "none" and unknown names
  if (family == Family::None ||
      std::find(rules.algorithms.begin(), rules.algorithms.end(), alg) == rules.algorithms.end()) {
    return refuse(kInvalidToken, "alg not allowed");
  }

  const std::string* key = family == Family::Hmac ? (rules.secret ? &*rules.secret : nullptr)
                                                  : &rules.public_key;
  if (!key || key->empty()) return refuse(kAuthFailed, "no key for an allowed alg");

  jwt_t* raw = nullptr;
  int rc = jwt_decode(&raw, text.data(), reinterpret_cast<const unsigned char*>(key->data()),
                      static_cast<int>(key->size()));
  JwtPtr jwt(raw);
  if (rc == ENOMEM) return refuse(kAuthFailed, "out of memory");
  if (rc != 0 || !jwt) return refuse(kInvalidToken, "bad signature or format");
  // libjwt parsed the same header; make sure it verified with the alg we allowed.
  if (jwt_get_alg(jwt.get()) != alg) return refuse(kInvalidToken, "alg mismatch");

  // The claims are the payload libjwt verified: read once, here.
  std::string claims_json;
  if (!base64url_decode(text.substr(dot1 + 1, dot2 - dot1 - 1), claims_json))
    return refuse(kInvalidToken, "payload is not base64url");
  dr::Json claims(json_loadb(claims_json.data(), claims_json.size(), 0, nullptr));
  if (!claims) return refuse(kInvalidToken, "payload is not JSON");
  return check_claims(claims.get(), rules, now_ms);
}

// Tokens that passed lately, by their text, with the rules they passed under.
// Direct-mapped by the text's hash: a newer token takes an older one's slot.
// Only what passed is kept, so a client cannot fill it with refusals.
class PassedTokens {
 public:
  const Verdict* find(std::string_view token, const TokenRules& rules) const {
    const auto& e = slots_[slot(token)];
    return e && e->token == token && *e->rules == rules ? &e->verdict : nullptr;
  }
  void keep(std::string_view token, const TokenRules& rules, const Verdict& v) {
    auto& e = slots_[slot(token)];
    if (!e) e = std::make_unique<Entry>();
    e->token.assign(token);
    // One copy of the rules for the entries kept under them, not one each.
    if (!last_rules_ || *last_rules_ != rules) last_rules_ = std::make_shared<const TokenRules>(rules);
    e->rules = last_rules_;
    e->verdict = v;
  }

 private:
  static constexpr size_t kSlots = 256;
  struct Entry {
    std::string token;
    std::shared_ptr<const TokenRules> rules;
    Verdict verdict;
  };
  std::shared_ptr<const TokenRules> last_rules_;
  static size_t slot(std::string_view token) { return std::hash<std::string_view>()(token) % kSlots; }
  std::array<std::unique_ptr<Entry>, kSlots> slots_;
};

Verdict verify_remembered(const json_t* token, const TokenRules& rules, int64_t now_ms) {
  static PassedTokens passed;  // each worker is one thread
  std::string_view text = json_is_string(token) ? std::string_view(json_string_value(token), json_string_length(token))
                                                : std::string_view();
  if (!text.empty()) {
    if (const Verdict* v = passed.find(text, rules)) {
      if (const char* why = outside_validity(v->exp, v->nbf, rules, now_ms)) return refuse(kInvalidToken, why);
      return *v;
    }
  }
  Verdict v = verify_token_unguarded(token, rules, now_ms);
  if (v.ok) passed.keep(text, rules, v);
  return v;
}

}  // namespace

Family family_of(jwt_alg_t alg) {
  switch (alg) {
    case JWT_ALG_HS256: case JWT_ALG_HS384: case JWT_ALG_HS512: return Family::Hmac;
    case JWT_ALG_RS256: case JWT_ALG_RS384: case JWT_ALG_RS512: return Family::Rsa;
    case JWT_ALG_ES256: case JWT_ALG_ES384: case JWT_ALG_ES512: return Family::Ec;
    default: return Family::None;
  }
}

Verdict verify_token(const json_t* token, const TokenRules& rules, int64_t now_ms) noexcept {
  try {
    return verify_remembered(token, rules, now_ms);
  } catch (...) {
    Verdict v;
    v.code = kAuthFailed;
    return v;  // `why` stays empty: building it could throw again
  }
}

}  // namespace dr::auth_jwt
