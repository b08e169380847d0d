// Token lifetimes on live connections (auth_jwt_expiry): a socket is warned
// `auth:expiring` before its token's exp and disconnected at exp (+ leeway)
// unless the client refreshed. The unit of a lifetime is one user on one
// Engine.IO connection: every namespace socket of that user there shares it,
// and one Timeout on the worker's timer facility serves them all.
#pragma once

#include <depth-realtime/module.h>

#include <cstddef>
#include <algorithm>
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
  // One per lifetime, found by key, and placed in due_ while it has an exp.
  struct Entry {
    std::vector<std::weak_ptr<Socket>> sockets;
    Life life;
    bool warned = false;
    uint32_t due_at = kNotDue;         // its place in due_
    const std::string* key = nullptr;  // its key in entries_
    // The warning's time, or the deadline once warned.
    int64_t due() const { return warned ? life.deadline : std::min(life.warn_at, life.deadline); }
  };
  static constexpr uint32_t kNotDue = UINT32_MAX;
  struct Pending {
    std::weak_ptr<Socket> socket;
    Life life;
  };

  static std::string key_of(Socket& s);
  Life life_of(std::optional<double> exp) const;
  void arm(Entry& e);
  void fire(Entry& e);
  void fire_due();
  void expire_key(const std::string& key);
  void erase(std::unordered_map<std::string, Entry>::iterator it);
  static void warn(Socket& s, const Life& life);

  // due_: the entries with an exp, a min-heap on Entry::due (each knows its
  // place), under one Timeout for the earliest: no timer and no callback per
  // connection.
  void due_place(uint32_t i, Entry* e);
  void due_up(size_t i);
  void due_down(size_t i);
  void due_remove(Entry& e);
  void due_rearm();

  Worker& w_;
  SettingsFn settings_;
  std::unordered_map<std::string, Entry> entries_;      // client id + '\n' + user id
  std::unordered_map<const Socket*, Pending> pending_;  // admitted, not yet connected
  std::vector<Entry*> due_;
  std::unique_ptr<Timeout> timer_;  // for due_'s first
};

}  // namespace dr::auth_jwt
