// Token lifetimes on live connections (see expiry.h).
#include "expiry.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

namespace dr::auth_jwt {
namespace {

// A refused-after-admission socket leaves its pending entry behind; past this
// many, the dead ones are swept.
constexpr size_t kPendingSweepAt = 4096;

int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

int64_t epoch_ms(double exp_seconds) {
  return static_cast<int64_t>(std::llround(exp_seconds * 1000.0));
}

}  // namespace

Expiry::Expiry(Worker& w, SettingsFn settings) : w_(w), settings_(std::move(settings)) {}

std::string Expiry::key_of(Socket& s) {
  const std::string* user = s.get("userId");
  return s.client_id() + '\n' + (user ? *user : std::string());
}

// The one conversion from the wall clock (exp) to the facility's clock.
Expiry::Life Expiry::life_of(std::optional<double> exp) const {
  Life life;
  life.exp = exp;
  if (!exp) return life;
  Settings st = settings_();
  int64_t left = epoch_ms(*exp) - wall_ms();  // may be negative: then due at once
  int64_t now = w_.now_ms();
  life.warn_at = now + left - static_cast<int64_t>(st.refresh_before_ms);
  life.deadline = now + left + static_cast<int64_t>(st.leeway_ms);
  return life;
}

void Expiry::admitted(Socket& s, std::optional<double> exp) {
  if (pending_.size() >= kPendingSweepAt)
    std::erase_if(pending_, [](const auto& p) { return p.second.socket.expired(); });
  pending_[&s] = Pending{s.weak(), life_of(exp)};
}

void Expiry::connected(Socket& s) {
  auto it = pending_.find(&s);
  if (it == pending_.end()) return;  // not admitted by auth_jwt (auth off there)
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (p.socket.lock().get() != &s) return;  // a stale entry for a reused address

  std::string key = key_of(s);
  auto [at, fresh] = entries_.try_emplace(key);
  Entry& e = at->second;
  e.sockets.push_back(s.weak());
  // Another namespace of the same user with a token of its own: the later
  // lifetime holds for all (the client holds a valid token until then).
  bool later = p.life.exp && e.life.exp && p.life.deadline > e.life.deadline;
  if (fresh || !p.life.exp || later) {
    e.life = p.life;
    e.warned = false;
  } else if (e.warned) {
    warn(s, e.life);  // the others were told already
  }
  arm(key, e);
}

void Expiry::disconnected(Socket& s) {
  pending_.erase(&s);
  auto it = entries_.find(key_of(s));
  if (it == entries_.end()) return;
  auto& list = it->second.sockets;
  std::erase_if(list, [&s](const std::weak_ptr<Socket>& w) {
    auto p = w.lock();
    return !p || p.get() == &s;
  });
  if (list.empty()) entries_.erase(it);
}

bool Expiry::expired(Socket& s) const {
  if (entries_.empty()) return false;
  auto it = entries_.find(key_of(s));
  return it != entries_.end() && it->second.life.exp && w_.now_ms() >= it->second.life.deadline;
}

void Expiry::expire(Socket& s) { expire_key(key_of(s)); }

std::optional<int64_t> Expiry::refreshed(Socket& s, std::optional<double> exp) {
  std::string key = key_of(s);
  auto [at, fresh] = entries_.try_emplace(key);
  Entry& e = at->second;
  if (fresh) e.sockets.push_back(s.weak());
  e.life = life_of(exp);
  e.warned = false;
  arm(key, e);
  if (!exp) return std::nullopt;
  return epoch_ms(*exp);
}

// The timer waits for the warning, then for the deadline; none without exp.
void Expiry::arm(const std::string& key, Entry& e) {
  if (!e.life.exp) {
    e.timer.reset();
    return;
  }
  if (!e.timer) e.timer = w_.timeout([this, key] { fire(key); });
  int64_t due = e.warned ? e.life.deadline : std::min(e.life.warn_at, e.life.deadline);
  e.timer->arm_in(static_cast<uint64_t>(std::max<int64_t>(0, due - w_.now_ms())));
}

void Expiry::fire(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  if (!e.life.exp) return;
  if (w_.now_ms() >= e.life.deadline) return expire_key(key);
  if (!e.warned) {
    e.warned = true;
    // A copy: an emit never closes synchronously, but the list is ours to keep intact.
    std::vector<std::weak_ptr<Socket>> list = e.sockets;
    for (auto& weak : list)
      if (auto s = weak.lock(); s && s->connected()) warn(*s, e.life);
  }
  arm(key, e);
}

void Expiry::warn(Socket& s, const Life& life) {
  Json body(json_object());
  json_object_set_new(body.get(), "expiresAt", json_integer(json_int_t(epoch_ms(*life.exp))));
  s.emit("auth:expiring", Payload::of(std::move(body)));
}

void Expiry::expire_key(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  // Out of the table first: each disconnect below comes back through disconnected().
  std::vector<std::weak_ptr<Socket>> list = std::move(it->second.sockets);
  entries_.erase(it);  // its timer too (safe from the timer's own callback)
  std::string message = settings_().expired_message;
  for (auto& weak : list) {
    auto s = weak.lock();
    if (!s || !s->connected()) continue;
    Json err(json_object());
    json_object_set_new(err.get(), "code", json_string("TOKEN_EXPIRED"));
    json_object_set_new(err.get(), "message", json_stringn(message.data(), message.size()));
    s->emit("error", Payload::of(std::move(err)));
    s->disconnect();
    w_.metric_add("depth_realtime_auth_expired_total", {});
  }
}

}  // namespace dr::auth_jwt
