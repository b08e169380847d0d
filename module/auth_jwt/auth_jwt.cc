// auth_jwt: authenticates every namespace CONNECT with the JWT in `auth.token`
// (the token checks themselves are in token.cc), and holds live sockets to
// their token's exp, with `auth:refresh` to extend it (expiry.cc).

#include <depth-realtime/access_claims.h>
#include <depth-realtime/module.h>
#include <depth-realtime/redis.h>
#include <depth-realtime/validate.h>

#include "expiry.h"
#include "token.h"

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

using namespace dr::auth_jwt;

// ------------------------------------------------------------------ codes

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
    {"TOKEN_EXPIRED", "Token expired"},  // a live socket's, at exp
}};

// A secret or key file larger than this is a wrong path, not a key.
constexpr size_t kMaxKeyFileBytes = 1024 * 1024;

// ------------------------------------------------------------------- RAII

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

std::array<std::string, kCodeCount> default_messages() {
  std::array<std::string, kCodeCount> m;
  for (size_t i = 0; i < kCodeCount; ++i) m[i] = kCodes[i].message;
  return m;
}

struct AuthConf : dr::ModuleConfBase<AuthConf> {
  bool enabled = true;
  TokenRules token;                         // what verify_token checks
  int public_key_type = EVP_PKEY_NONE;      // EVP_PKEY_RSA or EVP_PKEY_EC
  std::string require_role;                 // empty: any role
  std::string user_room = "user:";          // empty: off
  std::string user_key;                     // Redis key pattern of existing users ({id}); empty: no lookup
  std::array<std::string, kCodeCount> messages = default_messages();
  bool expiry = true;                       // auth_jwt_expiry
  uint64_t refresh_before_ms = 60000;       // auth_jwt_refresh_before
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
  static_cast<AuthConf*>(c)->token.secret = std::move(text);
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
  conf->token.public_key = std::move(pem);
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
  static_cast<AuthConf*>(c)->token.algorithms = std::move(algs);
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
  err = "unknown code \"" + a.at(0) + "\", expected TOKEN_REQUIRED, INVALID_TOKEN, USER_NOT_FOUND, AUTH_FAILED, FORBIDDEN or TOKEN_EXPIRED";
  return false;
}

bool set_claim(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err,
               std::string TokenRules::*field) {
  if (a.at(0).empty()) {
    err = "expected a claim name";
    return false;
  }
  static_cast<AuthConf*>(c)->token.*field = a.at(0);
  return true;
}
bool set_user_claim(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_claim(c, a, err, &TokenRules::user_claim);
}
bool set_role_claim(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return set_claim(c, a, err, &TokenRules::role_claim);
}

// dr::set_* write fields of the conf itself; these reach into its TokenRules.
template <auto Field>
bool set_rule_str(dr::ModuleConf* c, const std::vector<std::string>& a, std::string&) {
  static_cast<AuthConf*>(c)->token.*Field = a.at(0);
  return true;
}
bool set_leeway(dr::ModuleConf* c, const std::vector<std::string>& a, std::string& err) {
  return dr::conf_parse_msec(a, static_cast<AuthConf*>(c)->token.leeway_ms, err);
}
bool set_access_claims(dr::ModuleConf* c, const std::vector<std::string>& a, std::string&) {
  static_cast<AuthConf*>(c)->token.access_claims = a;
  return true;
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
    {"auth_jwt_secret", S, 1, 1, set_rule_str<&TokenRules::secret>, "none", true,
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
    {"auth_jwt_leeway", S, 1, 1, set_leeway, "0", true,
     "Clock skew allowed when checking exp and nbf."},
    {"auth_jwt_issuer", S, 1, 1, set_rule_str<&TokenRules::issuer>, "not checked", true,
     "Required value of the iss claim."},
    {"auth_jwt_audience", S, 1, 1, set_rule_str<&TokenRules::audience>, "not checked", true,
     "Required value of the aud claim (a string, or one element of an array)."},
    {"auth_jwt_require_role", N, 1, 1, dr::set_str<&AuthConf::require_role>, "any role", true,
     "Only tokens with this role may connect to the namespace; others get FORBIDDEN."},
    {"auth_jwt_user_room", S, 1, 1, set_user_room, "user:", true,
     "After authentication the socket joins PREFIX<userId>; off: no room."},
    {"auth_jwt_access_claims", S | N, 1, -1, set_access_claims, "conversations projects", true,
     "Claims kept with the socket for the access checks of the app modules (a token's `projects` array grants those projects)."},
    {"auth_jwt_user_key", S | N, 1, 1, set_user_key, "off", true,
     "Check that the user exists: EXISTS of this key (with redis_app_prefix; {id} = the user id), e.g. user:{id}. "
     "Missing: USER_NOT_FOUND; Redis unavailable: AUTH_FAILED."},
    {"auth_jwt_message", S, 2, 2, set_message, "English texts", true,
     "Message sent with an error code (TOKEN_REQUIRED, INVALID_TOKEN, USER_NOT_FOUND, AUTH_FAILED, FORBIDDEN; TOKEN_EXPIRED at a live socket's exp)."},
    {"auth_jwt_expiry", S, 1, 1, dr::set_flag<&AuthConf::expiry>, "on", false,
     "Hold connected sockets to their token's exp: warn with auth:expiring, accept auth:refresh, disconnect with "
     "TOKEN_EXPIRED at exp + leeway (off: a socket outlives its token)."},
    {"auth_jwt_refresh_before", S, 1, 1, dr::set_msec<&AuthConf::refresh_before_ms>, "60s", true,
     "How long before exp auth:expiring {expiresAt} is sent (at once when less is left)."},
    {nullptr, 0, 0, 0, nullptr, nullptr, false, nullptr},
};

// Also run in each worker for every namespace: check_conf only sees the
// server level, and a namespace may turn auth on by itself.
bool check_auth_conf(const AuthConf& c, std::string& err) {
  if (!c.enabled) return true;
  if (c.token.algorithms.empty()) {
    err = "auth_jwt_algorithms lists no algorithm";
    return false;
  }
  for (jwt_alg_t alg : c.token.algorithms) {
    switch (family_of(alg)) {
      case Family::Hmac:
        if (!c.token.secret) {
          err = std::string("auth_jwt is on but no HMAC secret is configured for ") + jwt_alg_str(alg) +
                ": set auth_jwt_secret or auth_jwt_secret_file (or auth_jwt off)";
          return false;
        }
        if (c.token.secret->empty()) {
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

// Live token lifetimes; null with auth_jwt_expiry off.
std::unique_ptr<Expiry> g_expiry;

// The access claims, parsed once at CONNECT for the access checks (access_claims.h).
dr::SocketSlot<dr::AccessClaims> g_claims_slot;

void keep_access_claims(dr::Socket& socket, const Verdict& v) {
  if (v.claims.empty() || !g_claims_slot) return;
  auto& kept = socket.context(g_claims_slot).claims;
  for (auto& [name, text] : v.claims) {
    std::vector<std::string> ids;
    dr::Json list = dr::json_parse(text);
    size_t i;
    json_t* item;
    json_array_foreach(list.get(), i, item) {
      if (auto id = dr::schema::id_string(item)) ids.push_back(std::move(*id));
    }
    kept.emplace_back(name, std::move(ids));
  }
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
    Verdict v = verify_token(json_object_get(socket.auth(), "token"), conf->token, now_ms());
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
      for (auto& [name, value] : v.claims) socket.set("claim:" + name, value);  // what fetch_sockets shows
      keep_access_claims(socket, v);
      if (!conf->user_room.empty()) socket.join(conf->user_room + v.user_id);
      if (g_expiry) g_expiry->admitted(socket, v.exp);
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

// ------------------------------------------------------------ refresh

// Why a refresh token does not do for this socket (nullptr: it does). The
// refresh only extends the lifetime: identity, role and access claims must be
// those the socket was admitted with (changed rights need a new CONNECT).
const char* refresh_mismatch(const AuthConf& conf, dr::Socket& s, const Verdict& v) {
  const std::string* user = s.get("userId");
  if (!user || *user != v.user_id) return "the token names another user";
  const std::string* role = s.get("role");
  if (!role || *role != v.role) return "the token's role differs: reconnect";
  for (const std::string& name : conf.token.access_claims) {
    const std::string* had = s.get("claim:" + name);
    const std::string* now = nullptr;
    for (auto& [n, value] : v.claims)
      if (n == name) now = &value;
    if ((had == nullptr) != (now == nullptr) || (had && *had != *now)) return "the token's access claims differ: reconnect";
  }
  return nullptr;
}

void refresh_refused(dr::Worker& w, const AuthConf& conf, dr::Socket& s, const dr::Event& ev, const char* why) {
  dr::logf(dr::LogLevel::Info, "auth_jwt: %s refresh refused for %s: %s", s.nsp().c_str(),
           s.handshake().address.c_str(), why);
  w.metric_add("depth_realtime_auth_refreshes_total", dr::metric_label("result", "refused"));
  dr::send_error(s, ev, kCodes[kInvalidToken].code, conf.messages[kInvalidToken], why);
}

void refresh_accepted(dr::Worker& w, dr::Socket& s, const dr::Event& ev, const Verdict& v) {
  if (!g_expiry) return;
  std::optional<int64_t> at = g_expiry->refreshed(s, v.exp);
  w.metric_add("depth_realtime_auth_refreshes_total", dr::metric_label("result", "ok"));
  dr::ack_data(s, ev, dr::Json(json_pack("{s:o}", "expiresAt", at ? json_integer(json_int_t(*at)) : json_null())));
}

// auth:refresh {token}: verified as a CONNECT token is, user lookup included.
void refresh(dr::Worker& w, const dr::Module& self, dr::Socket& s, const dr::Event& ev) {
  const auto* conf = static_cast<const AuthConf*>(w.conf(self, s.nsp()));
  if (!conf) return;
  const json_t* body = json_array_get(ev.args.args.get(), 0);
  Verdict v = verify_token(json_is_object(body) ? json_object_get(body, "token") : nullptr, conf->token, now_ms());
  if (!v.ok) return refresh_refused(w, *conf, s, ev, v.code == kTokenRequired ? "no token" : "the token does not verify");
  if (!conf->require_role.empty() && v.role != conf->require_role) return refresh_refused(w, *conf, s, ev, "role not allowed");
  if (const char* why = refresh_mismatch(*conf, s, v)) return refresh_refused(w, *conf, s, ev, why);
  if (conf->user_key.empty()) return refresh_accepted(w, s, ev, v);
  std::string key = conf->user_key;
  key.replace(key.find("{id}"), 4, v.user_id);
  // The socket's next events wait for the answer (the hold).
  dr::redis::command({"EXISTS", dr::redis::key(key)}, [&w, &self, weak = s.weak(), hold = s.delay_next_events(), ack_id = ev.ack_id,
                                                        v = std::move(v)](dr::redis::Reply r) {
    auto s = weak.lock();
    if (!s || !s->connected()) return;
    dr::Event reply;
    reply.name = "auth:refresh";
    reply.ack_id = ack_id;
    const auto* conf = static_cast<const AuthConf*>(w.conf(self, s->nsp()));
    if (!conf) return;
    if (r.error()) return refresh_refused(w, *conf, *s, reply, "user lookup failed");
    if (r.as_int() <= 0) return refresh_refused(w, *conf, *s, reply, "no such user");
    refresh_accepted(w, *s, reply, v);
  });
}

// After the rate limits (an auth:refresh counts as any event: each costs a
// token check and perhaps a user lookup), before validation and handlers:
// nothing reaches a handler after exp, whether or not the timer has run yet;
// auth:refresh is answered here, before the namespaces' event tables (which
// do not list it).
bool on_event(dr::Worker& w, const dr::Module& self, dr::Socket& s, dr::Event& ev) {
  if (!g_expiry || !s.get("userId")) return true;
  if (g_expiry->expired(s)) {
    // Ended from the loop, not inside this event's dispatch.
    w.post([weak = s.weak()] {
      if (auto p = weak.lock(); p && g_expiry) g_expiry->expire(*p);
    });
    return false;
  }
  if (ev.name != "auth:refresh") return true;
  refresh(w, self, s, ev);
  return false;
}

// ------------------------------------------------------------ lifecycle

std::unique_ptr<dr::ModuleConf> create_conf() { return std::make_unique<AuthConf>(); }

bool check_conf(dr::ModuleConf* conf, std::string& err) {
  return check_auth_conf(*static_cast<AuthConf*>(conf), err);
}

void exit_worker(dr::Worker&, const dr::Module&) { g_expiry.reset(); }

bool init_worker(dr::Worker& w, const dr::Module& self) {
  g_claims_slot = dr::socket_slot<dr::AccessClaims>(dr::kAccessClaimsSlot);
  if (!g_claims_slot) return false;
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
  }, dr::ConnectPhase::Identify);
  const auto* main = static_cast<const AuthConf*>(w.conf(self));
  if (main && main->expiry) {
    w.metric_declare("depth_realtime_auth_expired_total", dr::MetricType::Counter,
                     "Sockets disconnected because their token expired (TOKEN_EXPIRED)");
    w.metric_declare("depth_realtime_auth_refreshes_total", dr::MetricType::Counter,
                     "auth:refresh requests, by result");
    g_expiry = std::make_unique<Expiry>(w, [&w, &self] {
      Expiry::Settings st;
      // Looked up each time: a reload may change these in place.
      if (const auto* c = static_cast<const AuthConf*>(w.conf(self))) {
        st.refresh_before_ms = c->refresh_before_ms;
        st.leeway_ms = c->token.leeway_ms;
        st.expired_message = c->messages[kTokenExpired];
      }
      return st;
    });
    w.on_connection("", [](dr::Socket& s) {
      if (g_expiry) g_expiry->connected(s);
    });
    w.on_disconnect("", [](dr::Socket& s, std::string_view) {
      if (g_expiry) g_expiry->disconnected(s);
    });
    w.use_event("", [&w, &self](dr::Socket& s, dr::Event& ev) { return on_event(w, self, s, ev); },
                dr::EventPhase::Identity);
  }
  return true;
}

const dr::Module kModule{
    dr::kModuleAbi, DR_MODULE_SIGNATURE, "auth_jwt", kDirectives,
    create_conf,    check_conf,          init_worker, exit_worker,
};

}  // namespace

DR_MODULE_EXPORT(kModule)
