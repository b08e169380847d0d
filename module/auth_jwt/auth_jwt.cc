// auth_jwt: authenticates every namespace CONNECT with the JWT in `auth.token`.
//
// libjwt 1.10 verifies a token with whatever algorithm the token itself names
// (and skips verification for "none"), so the header's "alg" is checked here
// against the configured allow-list first, and the key is chosen by that
// algorithm's family: the HMAC secret only ever verifies HS*, the public key
// only RS*/ES*. libjwt then checks the signature; the claims (exp, nbf, iss,
// aud, user id, role) are checked here on what it decoded.

#include <depth-realtime/module.h>
#include <depth-realtime/redis.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

// ------------------------------------------------------------------ codes

enum Code : size_t { kTokenRequired, kInvalidToken, kUserNotFound, kAuthFailed, kForbidden, kCodeCount };

struct CodeText {
  const char* code;
  const char* message;
};
constexpr std::array<CodeText, kCodeCount> kCodes{{
    {"TOKEN_REQUIRED", "Token required"},
    {"INVALID_TOKEN", "Invalid token"},
    {"USER_NOT_FOUND", "User not found"},  // auth_jwt_user_key
    {"AUTH_FAILED", "Authentication failed"},
    {"FORBIDDEN", "Forbidden"},
}};

// Real tokens are a few hundred bytes; this bounds what an unauthenticated
// client can make the worker decode.
constexpr size_t kMaxTokenBytes = 64 * 1024;
// A secret or key file larger than this is a wrong path, not a key.
constexpr size_t kMaxKeyFileBytes = 1024 * 1024;
constexpr size_t kMaxUserIdLength = 128;

// ------------------------------------------------------------------- RAII

struct JwtDeleter {
  void operator()(jwt_t* j) const { jwt_free(j); }
};
using JwtPtr = std::unique_ptr<jwt_t, JwtDeleter>;
struct FreeDeleter {
  void operator()(char* p) const { free(p); }
};
using CString = std::unique_ptr<char, FreeDeleter>;
struct FileDeleter {
  void operator()(FILE* f) const { fclose(f); }
};
struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

// ------------------------------------------------------------ configuration

enum class Family { None, Hmac, Rsa, Ec };

Family family_of(jwt_alg_t alg) {
  switch (alg) {
    case JWT_ALG_HS256: case JWT_ALG_HS384: case JWT_ALG_HS512: return Family::Hmac;
    case JWT_ALG_RS256: case JWT_ALG_RS384: case JWT_ALG_RS512: return Family::Rsa;
    case JWT_ALG_ES256: case JWT_ALG_ES384: case JWT_ALG_ES512: return Family::Ec;
    default: return Family::None;
  }
}

std::array<std::string, kCodeCount> default_messages() {
  std::array<std::string, kCodeCount> m;
  for (size_t i = 0; i < kCodeCount; ++i) m[i] = kCodes[i].message;
  return m;
}

struct AuthConf : dr::ModuleConfBase<AuthConf> {
  bool enabled = true;
  std::optional<std::string> secret;        // HMAC secret, for HS*
  std::string public_key;                   // PEM, for RS* / ES*; empty = none
  int public_key_type = EVP_PKEY_NONE;      // EVP_PKEY_RSA or EVP_PKEY_EC
  std::vector<jwt_alg_t> algorithms{JWT_ALG_HS256};
  std::string user_claim = "userId";
  std::string role_claim = "role";
  uint64_t leeway_ms = 0;
  std::string issuer;                       // empty: not checked
  std::string audience;                     // empty: not checked
  std::string require_role;                 // empty: any role
  std::string user_room = "user:";          // empty: off
  // Claims kept on the socket as JSON text under "claim:<name>" (access lists
  // the app modules check, e.g. a `projects` array).
  std::vector<std::string> access_claims{"conversations", "projects"};
  std::string user_key;                     // Redis key pattern of existing users ({id}); empty: no lookup
  std::array<std::string, kCodeCount> messages = default_messages();
};

bool read_small_file(const std::string& path, std::string& out, std::string& err) {
  std::unique_ptr<FILE, FileDeleter> f(fopen(path.c_str(), "rb"));
  if (!f) {
    err = "cannot open \"" + path + "\": " + strerror(errno);
    return false;
  }
  out.clear();
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f.get())) > 0) {
    out.append(buf, n);
    if (out.size() > kMaxKeyFileBytes) {
      err = "\"" + path + "\" is larger than 1m, expected a key";
      return false;
    }
  }
  if (ferror(f.get())) {
    err = "cannot read \"" + path + "\": " + strerror(errno);
    return false;
  }
  return true;
}

bool set_secret_file(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  std::string text;
  if (!read_small_file(a.at(0), text, err)) return false;
  // `echo secret > file` leaves a newline that is not part of the secret.
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  static_cast<AuthConf*>(c)->secret = std::move(text);
  return true;
}

bool set_public_key_file(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  std::string pem;
  if (!read_small_file(a.at(0), pem, err)) return false;
  // Parsed now so that a wrong file fails the config, not every CONNECT.
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::unique_ptr<EVP_PKEY, PkeyDeleter> key(
      bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  int type = key ? EVP_PKEY_get_base_id(key.get()) : EVP_PKEY_NONE;
  if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC) {
    err = "expected an RSA or EC public key (\"-----BEGIN PUBLIC KEY-----\") in \"" + a.at(0) + "\"";
    return false;
  }
  auto* conf = static_cast<AuthConf*>(c);
  conf->public_key = std::move(pem);
  conf->public_key_type = type;
  return true;
}

bool set_algorithms(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  std::vector<jwt_alg_t> algs;
  for (const std::string& name : a) {
    jwt_alg_t alg = jwt_str_alg(name.c_str());
    if (strcasecmp(name.c_str(), "none") == 0) {
      err = "\"none\" is never accepted: unsigned tokens would let anyone in";
      return false;
    }
    if (family_of(alg) == Family::None) {
      err = "unknown algorithm \"" + name + "\", expected HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384 or ES512";
      return false;
    }
    if (std::find(algs.begin(), algs.end(), alg) == algs.end()) algs.push_back(alg);
  }
  static_cast<AuthConf*>(c)->algorithms = std::move(algs);
  return true;
}

bool set_user_room(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  const std::string& v = a.at(0);
  if (v.empty()) {
    err = "expected a room prefix or off";
    return false;
  }
  static_cast<AuthConf*>(c)->user_room = v == "off" ? "" : v;
  return true;
}

bool set_message(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  for (size_t i = 0; i < kCodeCount; ++i) {
    if (a.at(0) != kCodes[i].code) continue;
    if (a.at(1).empty()) {
      err = "expected a non-empty message";
      return false;
    }
    static_cast<AuthConf*>(c)->messages[i] = a.at(1);
    return true;
  }
  err = "unknown code \"" + a.at(0) + "\", expected TOKEN_REQUIRED, INVALID_TOKEN, USER_NOT_FOUND, AUTH_FAILED or FORBIDDEN";
  return false;
}

bool set_claim(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err,
               std::string AuthConf::*field) {
  if (a.at(0).empty()) {
    err = "expected a claim name";
    return false;
  }
  static_cast<AuthConf*>(c)->*field = a.at(0);
  return true;
}
bool set_user_claim(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_claim(c, a, err, &AuthConf::user_claim);
}
bool set_role_claim(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_claim(c, a, err, &AuthConf::role_claim);
}

constexpr unsigned S = dr::kConfServer;
constexpr unsigned N = dr::kConfNamespace;

bool set_user_key(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  auto* conf = static_cast<AuthConf*>(c);
  if (a[0] == "off") {
    conf->user_key.clear();
    return true;
  }
  if (a[0].find("{id}") == std::string::npos) {
    err = "expected a key pattern holding {id} (e.g. user:{id}) or off";
    return false;
  }
  conf->user_key = a[0];
  return true;
}

const dr::Directive kDirectives[] = {
    {"auth_jwt", S | N, 1, 1, dr::set_flag<&AuthConf::enabled>, "on", true,
     "Require a valid JWT in auth.token to connect (off: let every CONNECT through)."},
    {"auth_jwt_secret", S, 1, 1, dr::set_str<&AuthConf::secret>, "none", true,
     "HMAC secret for HS256/HS384/HS512, e.g. \"${JWT_SECRET}\"."},
    {"auth_jwt_secret_file", S, 1, 1, set_secret_file, "none", true,
     "Read the HMAC secret from a file at config load (trailing newline stripped)."},
    {"auth_jwt_public_key_file", S, 1, 1, set_public_key_file, "none", true,
     "PEM public key (RSA or EC) for RS*/ES* tokens, read at config load."},
    {"auth_jwt_algorithms", S, 1, -1, set_algorithms, "HS256", true,
     "Accepted \"alg\" values; \"none\" is never accepted."},
    {"auth_jwt_user_claim", S, 1, 1, set_user_claim, "userId", true,
     "Claim holding the user id (non-empty string <= 128 chars, or non-negative integer)."},
    {"auth_jwt_role_claim", S, 1, 1, set_role_claim, "role", true,
     "Claim holding the role; absent = ordinary user."},
    {"auth_jwt_leeway", S, 1, 1, dr::set_msec<&AuthConf::leeway_ms>, "0", true,
     "Clock skew allowed when checking exp and nbf."},
    {"auth_jwt_issuer", S, 1, 1, dr::set_str<&AuthConf::issuer>, "not checked", true,
     "Required value of the iss claim."},
    {"auth_jwt_audience", S, 1, 1, dr::set_str<&AuthConf::audience>, "not checked", true,
     "Required value of the aud claim (a string, or one element of an array)."},
    {"auth_jwt_require_role", N, 1, 1, dr::set_str<&AuthConf::require_role>, "any role", true,
     "Only tokens with this role may connect to the namespace; others get FORBIDDEN."},
    {"auth_jwt_user_room", S, 1, 1, set_user_room, "user:", true,
     "After authentication the socket joins PREFIX<userId>; off: no room."},
    {"auth_jwt_access_claims", S | N, 1, -1, dr::set_str_list<&AuthConf::access_claims>, "conversations projects", true,
     "Claims kept with the socket for the access checks of the app modules (a token's `projects` array grants those projects)."},
    {"auth_jwt_user_key", S | N, 1, 1, set_user_key, "off", true,
     "Check that the user exists: EXISTS of this key (with redis_app_prefix; {id} = the user id), e.g. user:{id}. "
     "Missing: USER_NOT_FOUND; Redis unavailable: AUTH_FAILED."},
    {"auth_jwt_message", S, 2, 2, set_message, "English texts", true,
     "Message sent with a CONNECT_ERROR code (TOKEN_REQUIRED, INVALID_TOKEN, USER_NOT_FOUND, AUTH_FAILED, FORBIDDEN)."},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

// Also run in each worker for every namespace: check_conf only sees the
// server level, and a namespace may turn auth on by itself.
bool check_auth_conf(const AuthConf& c, std::string& err) {
  if (!c.enabled) return true;
  if (c.algorithms.empty()) {
    err = "auth_jwt_algorithms lists no algorithm";
    return false;
  }
  for (jwt_alg_t alg : c.algorithms) {
    switch (family_of(alg)) {
      case Family::Hmac:
        if (!c.secret) {
          err = std::string("auth_jwt is on but no HMAC secret is configured for ") + jwt_alg_str(alg) +
                ": set auth_jwt_secret or auth_jwt_secret_file (or auth_jwt off)";
          return false;
        }
        if (c.secret->empty()) {
          err = "auth_jwt_secret is empty (is JWT_SECRET set?)";
          return false;
        }
        break;
      case Family::Rsa:
      case Family::Ec: {
        int want = family_of(alg) == Family::Rsa ? EVP_PKEY_RSA : EVP_PKEY_EC;
        if (c.public_key_type != want) {
          err = std::string("auth_jwt_algorithms ") + jwt_alg_str(alg) + " needs an " +
                (want == EVP_PKEY_RSA ? "RSA" : "EC") + " key in auth_jwt_public_key_file";
          return false;
        }
        break;
      }
      case Family::None:
        err = "auth_jwt_algorithms holds an unusable algorithm";
        return false;
    }
  }
  return true;
}

// ----------------------------------------------------------- verification

struct Verdict {
  bool ok = false;
  Code code = kAuthFailed;
  std::string why;  // for the log only; never built from token content
  std::string user_id;
  std::string role;
  std::vector<std::pair<std::string, std::string>> claims;  // access claims, as JSON text
};

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

// Checks the claims of a token whose signature is already verified.
Verdict check_claims(const json_t* claims, const AuthConf& conf, int64_t now_ms) {
  if (!json_is_object(claims)) return refuse(kInvalidToken, "payload is not an object");
  const double now = static_cast<double>(now_ms) / 1000.0;
  const double leeway = static_cast<double>(conf.leeway_ms) / 1000.0;

  // As jsonwebtoken: expired from the second `exp` names on, plus leeway.
  if (const json_t* exp = json_object_get(claims, "exp")) {
    if (!json_is_number(exp)) return refuse(kInvalidToken, "exp is not a number");
    if (now >= json_number_value(exp) + leeway) return refuse(kInvalidToken, "expired");
  }
  if (const json_t* nbf = json_object_get(claims, "nbf")) {
    if (!json_is_number(nbf)) return refuse(kInvalidToken, "nbf is not a number");
    if (json_number_value(nbf) - leeway > now) return refuse(kInvalidToken, "not yet valid (nbf)");
  }
  if (!conf.issuer.empty()) {
    const char* iss = json_string_value(json_object_get(claims, "iss"));
    if (!iss || conf.issuer != iss) return refuse(kInvalidToken, "wrong issuer");
  }
  if (!conf.audience.empty() && !audience_matches(json_object_get(claims, "aud"), conf.audience)) {
    return refuse(kInvalidToken, "wrong audience");
  }

  std::optional<std::string> id = usable_user_id(json_object_get(claims, conf.user_claim.c_str()));
  if (!id) return refuse(kInvalidToken, "no usable user id claim");

  Verdict v;
  v.ok = true;
  v.user_id = std::move(*id);
  // A role of another type counts as no role: an ordinary user.
  const json_t* role = json_object_get(claims, conf.role_claim.c_str());
  if (json_is_string(role)) v.role.assign(json_string_value(role), json_string_length(role));
  for (const std::string& name : conf.access_claims)
    if (const json_t* c = json_object_get(claims, name.c_str())) v.claims.emplace_back(name, dr::json_text(c));
  return v;
}

Verdict verify_token_unguarded(const json_t* token, const AuthConf& conf, int64_t now_ms) {
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
      std::find(conf.algorithms.begin(), conf.algorithms.end(), alg) == conf.algorithms.end()) {
    return refuse(kInvalidToken, "alg not allowed");
  }

  const std::string* key = family == Family::Hmac ? (conf.secret ? &*conf.secret : nullptr)
                                                  : &conf.public_key;
  if (!key || key->empty()) return refuse(kAuthFailed, "no key for an allowed alg");

  jwt_t* raw = nullptr;
  int rc = jwt_decode(&raw, text.data(), reinterpret_cast<const unsigned char*>(key->data()),
                      static_cast<int>(key->size()));
  JwtPtr jwt(raw);
  if (rc == ENOMEM) return refuse(kAuthFailed, "out of memory");
  if (rc != 0 || !jwt) return refuse(kInvalidToken, "bad signature or format");
  // libjwt parsed the same header; make sure it verified with the alg we allowed.
  if (jwt_get_alg(jwt.get()) != alg) return refuse(kInvalidToken, "alg mismatch");

  CString claims_text(jwt_get_grants_json(jwt.get(), nullptr));
  if (!claims_text) return refuse(kInvalidToken, "no claims");
  dr::Json claims(json_loads(claims_text.get(), 0, nullptr));
  if (!claims) return refuse(kAuthFailed, "cannot re-read claims");
  return check_claims(claims.get(), conf, now_ms);
}

// The whole decision, without the daemon: `token` is the value of auth.token
// (nullptr when absent), `now_ms` the time in ms since the epoch. Never throws.
Verdict verify_token(const json_t* token, const AuthConf& conf, int64_t now_ms) noexcept {
  try {
    return verify_token_unguarded(token, conf, now_ms);
  } catch (...) {
    Verdict v;
    v.code = kAuthFailed;
    return v;  // `why` stays empty: building it could throw again
  }
}

// ------------------------------------------------------------ the hook

dr::ConnectError connect_error(const AuthConf& conf, Code code) {
  dr::Json data(json_object());
  if (data) json_object_set_new(data.get(), "code", json_string(kCodes[code].code));
  return dr::ConnectError{conf.messages[code], std::move(data)};
}

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void authenticate(dr::Worker& w, const dr::Module& self, dr::Socket& socket, const dr::ConnectNext& next) {
  const auto* conf = static_cast<const AuthConf*>(w.conf(self, socket.nsp()));
  try {
    if (!conf) {
      dr::log(dr::LogLevel::Error, "auth_jwt: no configuration for the namespace");
      AuthConf fallback;
      next(connect_error(fallback, kAuthFailed));
      return;
    }
    if (!conf->enabled) {
      next(std::nullopt);
      return;
    }
    Verdict v = verify_token(json_object_get(socket.auth(), "token"), *conf, now_ms());
    if (v.ok && !conf->require_role.empty() && v.role != conf->require_role) {
      v.ok = false;
      v.code = kForbidden;
      v.why = "role not allowed";
    }
    if (!v.ok) {
      dr::logf(dr::LogLevel::Info, "auth_jwt: %s refused for %s: %s (%s)", socket.nsp().c_str(),
               socket.handshake().address.c_str(), kCodes[v.code].code, v.why.c_str());
      w.metric_add("depth_realtime_auth_failures_total", dr::metric_label("code", kCodes[v.code].code));
      next(connect_error(*conf, v.code));
      return;
    }
    auto admit = [](const AuthConf* conf, dr::Socket& socket, const Verdict& v) {
      socket.set("userId", v.user_id);
      socket.set("role", v.role);
      for (auto& [name, value] : v.claims) socket.set("claim:" + name, value);
      if (!conf->user_room.empty()) socket.join(conf->user_room + v.user_id);
    };
    if (conf->user_key.empty()) {
      admit(conf, socket, v);
      next(std::nullopt);
      return;
    }
    // The user lookup: EXISTS <prefix>user:<id>, answered later.
    std::string key = conf->user_key;
    key.replace(key.find("{id}"), 4, v.user_id);
    dr::redis::command({"EXISTS", dr::redis::key(key)},
                       [&w, &self, weak = socket.weak(), next, v = std::move(v), admit](dr::redis::Reply r) {
                         auto s = weak.lock();
                         if (!s) return;
                         // Looked up again: a reload may have replaced the conf meanwhile.
                         const auto* conf = static_cast<const AuthConf*>(w.conf(self, s->nsp()));
                         if (!conf) return next(connect_error(AuthConf(), kAuthFailed));
                         Code code = r.error() ? kAuthFailed : r.as_int() > 0 ? kCodeCount : kUserNotFound;
                         if (code != kCodeCount) {
                           dr::logf(dr::LogLevel::Info, "auth_jwt: %s refused: %s (%s)", s->nsp().c_str(),
                                    kCodes[code].code, r.error() ? r.str.c_str() : "no such user");
                           w.metric_add("depth_realtime_auth_failures_total", dr::metric_label("code", kCodes[code].code));
                           next(connect_error(*conf, code));
                           return;
                         }
                         admit(conf, *s, v);
                         next(std::nullopt);
                       });
  } catch (...) {
    // Only the first next() counts, so a second call after a throw is harmless.
    try {
      AuthConf fallback;
      w.metric_add("depth_realtime_auth_failures_total", dr::metric_label("code", kCodes[kAuthFailed].code));
      next(connect_error(conf ? *conf : fallback, kAuthFailed));
    } catch (...) {
    }
  }
}

// ------------------------------------------------------------ lifecycle

std::unique_ptr<dr::ModuleConf> create_conf() { return std::make_unique<AuthConf>(); }

bool check_conf(dr::ModuleConf* conf, std::string& err) {
  return check_auth_conf(*static_cast<AuthConf*>(conf), err);
}

void exit_worker(dr::Worker&, const dr::Module&) {}

bool init_worker(dr::Worker& w, const dr::Module& self) {
  w.metric_declare("depth_realtime_auth_failures_total", dr::MetricType::Counter,
                   "Namespace CONNECTs refused by auth_jwt, by error code");
  for (const std::string& nsp : w.namespaces()) {
    const auto* conf = static_cast<const AuthConf*>(w.conf(self, nsp));
    std::string err;
    if (conf && !check_auth_conf(*conf, err)) {
      dr::logf(dr::LogLevel::Crit, "auth_jwt: namespace %s: %s", nsp.c_str(), err.c_str());
      return false;
    }
  }
  w.use_connect("", [&w, &self](dr::Socket& socket, dr::ConnectNext next) {
    authenticate(w, self, socket, next);
  });
  return true;
}

const dr::Module kModule{
    dr::kModuleAbi, DR_MODULE_SIGNATURE, "auth_jwt", kDirectives,
    create_conf,    check_conf,          init_worker, exit_worker,
};

}  // namespace

DR_MODULE_EXPORT(kModule)
