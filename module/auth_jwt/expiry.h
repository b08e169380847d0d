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
  bool expired(Socket& s);
  // Ends the lifetime of `s` now: TOKEN_EXPIRED and a disconnect to each of its sockets.
  void expire(Socket& s);
  // A verified refresh token with expiry `exp` replaces the lifetime of every
  // socket sharing `s`'s. Returns the new expiresAt (ms since the epoch), or
  // nullopt when the token has no exp.
  std::optional<int64_t> refreshed(Socket& s, std::optional<double> exp);

 private:
  static constexpr int64_t kNoExp = INT64_MIN;
  static constexpr int64_t kWarned = INT64_MAX;
  // A lifetime: exp as the wall clock names it (ms since the epoch), and the
  // two deadlines on the facility's monotonic clock, converted once.
  struct Life {
    int64_t exp_ms = kNoExp;
    int64_t warn_at = 0;  // kWarned once the warning went out
    int64_t deadline = 0;
    bool has_exp() const { return exp_ms != kNoExp; }
  };
  // One per lifetime (an idle connection holds one: kept small), placed in
  // due_ while it has an exp.
  struct Entry {
    std::vector<std::weak_ptr<Socket>> sockets;
    Life life;
    uint32_t key = 0;             // its key in entries_
    uint32_t due_at = kNotDue;    // its place in due_
    bool warned() const { return life.warn_at == kWarned; }
    // The warning's time, or the deadline once warned.
    int64_t due() const { return std::min(life.warn_at, life.deadline); }
  };
  static constexpr uint32_t kNotDue = UINT32_MAX;
  struct Pending {
    std::weak_ptr<Socket> socket;
    Life life;
  };
  // By a hash of the client id and the user id: no string per lifetime. A
  // hash names no lifetime by itself; find() checks the entry's sockets.
  using Entries = std::unordered_multimap<uint32_t, Entry>;

  static uint32_t key_of(Socket& s);
  Entries::iterator find(Socket& s);
  Entries::iterator find(Entry& e);
  Entry& find_or_add(Socket& s, bool& fresh);
  Life life_of(std::optional<double> exp) const;
  void arm(Entry& e);
  void fire(Entry& e);
  void fire_due();
  void expire_entry(Entries::iterator it);
  void erase(Entries::iterator it);
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
  Entries entries_;
  std::unordered_map<const Socket*, Pending> pending_;  // admitted, not yet connected
  std::vector<Entry*> due_;
  std::unique_ptr<Timeout> timer_;  // for due_'s first
};

}  // namespace dr::auth_jwt
