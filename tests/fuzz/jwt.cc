// JWT verification as module/auth_jwt runs it (module/auth_jwt/token.h).
// The first input byte picks what the rest is:
//   'S'  HEADER "\n" CLAIMS: JSON texts the target signs itself (HMAC-SHA256
//        with the test secret), so that mutated claims get past the signature
//        and reach the claim checks;
//   'J'  a JSON value passed as auth.token (null, a number, ...);
//   else the whole input is the token text.
// Each input is checked under two rule sets (defaults; issuer, audience,
// leeway, several algorithms and an EC key). Properties: an accepted token
// has a user id, an allowed alg, and for HS256 a signature that is the HMAC
// of its first two segments.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "depth-realtime/json.h"
#include "fuzz_check.h"
#include "token.h"

using namespace dr::auth_jwt;

namespace {

constexpr char kSecret[] = "fuzz-secret";
constexpr int64_t kNowMs = 1800000000000;  // fixed: the run is deterministic
// A P-256 key made for this target (its private half was not kept).
constexpr char kEcPublicKey[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEu1w2nzkqumGOWLx2zJeWGoMTOkcS\n"
    "Iyr5dIK906BefGfs9Da7WIHjh8JLKQDCKvr3tKcop12oLr3cBHs3eMaRig==\n"
    "-----END PUBLIC KEY-----\n";

std::string b64url(std::string_view bytes) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(a[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(a[(acc << (6 - bits)) & 63]);
  return out;
}

std::string hs256(std::string_view signing_input) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), kSecret, int(sizeof kSecret - 1), reinterpret_cast<const unsigned char*>(signing_input.data()),
       signing_input.size(), mac, &len);
  return b64url(std::string_view(reinterpret_cast<char*>(mac), len));
}

const TokenRules& plain_rules() {
  static const TokenRules r = [] {
    TokenRules t;
    t.secret = kSecret;
    return t;
  }();
  return r;
}

const TokenRules& strict_rules() {
  static const TokenRules r = [] {
    TokenRules t;
    t.secret = kSecret;
    t.public_key = kEcPublicKey;
    t.algorithms = {JWT_ALG_HS256, JWT_ALG_HS512, JWT_ALG_ES256};
    t.issuer = "dr";
    t.audience = "app";
    t.leeway_ms = 30000;
    t.user_claim = "sub";
    t.access_claims = {"projects", "conversations", "sub"};
    return t;
  }();
  return r;
}

void check(const json_t* token, const TokenRules& rules) {
  Verdict v = verify_token(token, rules, kNowMs);
  if (!v.ok) {
    FUZZ_CHECK(v.code < kCodeCount, "a refusal without a code");
    return;
  }
  FUZZ_CHECK(json_is_string(token), "accepted a token that is not a string");
  FUZZ_CHECK(!v.user_id.empty(), "accepted without a user id");
  std::string_view text(json_string_value(token), json_string_length(token));
  size_t dot1 = text.find('.'), dot2 = text.find('.', dot1 + 1);
  FUZZ_CHECK(dot2 != std::string_view::npos, "accepted a token without three segments");
  // The alg the header names (libjwt read the same header).
  std::string header_json;
  {
    std::string b64(text.substr(0, dot1));
    std::replace(b64.begin(), b64.end(), '-', '+');
    std::replace(b64.begin(), b64.end(), '_', '/');
    while (b64.size() % 4) b64.push_back('=');
    std::string raw(b64.size(), '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(raw.data()),
                            reinterpret_cast<const unsigned char*>(b64.data()), int(b64.size()));
    FUZZ_CHECK(n >= 0, "accepted a header that is not base64url");
    header_json = raw.substr(0, size_t(n));
  }
  dr::Json header(json_loads(header_json.c_str(), 0, nullptr));
  const char* alg = dr::json_str(header.get(), "alg");
  FUZZ_CHECK(alg != nullptr, "accepted a header without alg");
  jwt_alg_t a = jwt_str_alg(alg);
  FUZZ_CHECK(std::find(rules.algorithms.begin(), rules.algorithms.end(), a) != rules.algorithms.end(),
             "accepted an alg the rules do not allow");
  if (a == JWT_ALG_HS256)
    FUZZ_CHECK(text.substr(dot2 + 1) == hs256(text.substr(0, dot2)), "accepted an HS256 token with a wrong signature");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  dr::Json token;
  if (in[0] == 'S') {
    std::string_view rest = in.substr(1);
    size_t nl = rest.find('\n');
    if (nl == std::string_view::npos) return 0;
    std::string signing_input = b64url(rest.substr(0, nl)) + "." + b64url(rest.substr(nl + 1));
    std::string t = signing_input + "." + hs256(signing_input);
    token = dr::Json(json_stringn(t.data(), t.size()));
  } else if (in[0] == 'J') {
    token = dr::json_parse(in.substr(1));
  } else {
    token = dr::Json(json_stringn(in.data(), in.size()));  // null when not UTF-8, as jansson would refuse it
  }
  if (in[0] == 'J' || json_is_string(token.get())) {
    check(token.get(), plain_rules());
    check(token.get(), strict_rules());
  }
  return 0;
}
