// Token lifetimes on live connections (auth_jwt_expiry): a socket is warned
// `auth:expiring` before its token's exp and disconnected at exp (+ leeway)
// unless the client refreshed. The unit of a lifetime is one user on one
// Engine.IO connection: every namespace socket of that user there shares it,
// and one Timeout on the worker's timer facility serves them all.
#pragma once

#include <depth-realtime/module.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace dr::auth_jwt {

class Expiry {
 public:
  struct Settings {
    uint64_t refresh_before_ms = 60000;
    uint64_t leeway_ms = 0;
    std::string expired_message = "Token expired";
  };
  using SettingsFn = std::function<Settings()>;

  Expiry(Worker& w, SettingsFn settings);
  Expiry(const Expiry&) = delete;
  Expiry& operator=(const Expiry&) = delete;

  // The CONNECT hook admitted `s` with a token whose exp is `exp` (seconds
  // since the epoch; nullopt: none). Counted once the socket is connected.
  void admitted(Socket& s, std::optional<double> exp);
  void connected(Socket& s);
  void disconnected(Socket& s);
  // Is the lifetime of `s` over (by the clock, whether or not its timer ran)?
  bool expired(Socket& s) const;
  // Ends the lifetime of `s` now: TOKEN_EXPIRED and a disconnect to each of its sockets.
  void expire(Socket& s);
  // A verified refresh token with expiry `exp` replaces the lifetime of every
  // socket sharing `s`'s. Returns the new expiresAt (ms since the epoch), or
  // nullopt when the token has no exp.
  std::optional<int64_t> refreshed(Socket& s, std::optional<double> exp);

 private:
  // A lifetime: exp as the wall clock names it, and the two deadlines on the
  // facility's monotonic clock, converted once.
  struct Life {
    std::optional<double> exp;
    int64_t warn_at = 0;
    int64_t deadline = 0;
  };
  struct Entry {
    std::vector<std::weak_ptr<Socket>> sockets;
    Life life;
    bool warned = false;
    std::unique_ptr<Timeout> timer;
  };
  struct Pending {
    std::weak_ptr<Socket> socket;
    Life life;
  };

  static std::string key_of(Socket& s);
  Life life_of(std::optional<double> exp) const;
  void arm(const std::string& key, Entry& e);
  void fire(const std::string& key);
  void expire_key(const std::string& key);
  static void warn(Socket& s, const Life& life);

  Worker& w_;
  SettingsFn settings_;
  std::unordered_map<std::string, Entry> entries_;      // client id + '\n' + user id
  std::unordered_map<const Socket*, Pending> pending_;  // admitted, not yet connected
};

}  // namespace dr::auth_jwt
