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

Expiry::Expiry(Worker& w, SettingsFn settings) : w_(w), settings_(std::move(settings)) {
  timer_ = w_.timeout([this] { fire_due(); });
}

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

  auto [at, fresh] = entries_.try_emplace(key_of(s));
  Entry& e = at->second;
  e.key = &at->first;
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
  arm(e);
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
  if (list.empty()) erase(it);
}

void Expiry::erase(std::unordered_map<std::string, Entry>::iterator it) {
  due_remove(it->second);
  entries_.erase(it);
  due_rearm();
}

bool Expiry::expired(Socket& s) const {
  if (entries_.empty()) return false;
  auto it = entries_.find(key_of(s));
  return it != entries_.end() && it->second.life.exp && w_.now_ms() >= it->second.life.deadline;
}

void Expiry::expire(Socket& s) { expire_key(key_of(s)); }

std::optional<int64_t> Expiry::refreshed(Socket& s, std::optional<double> exp) {
  auto [at, fresh] = entries_.try_emplace(key_of(s));
  Entry& e = at->second;
  e.key = &at->first;
  if (fresh) e.sockets.push_back(s.weak());
  e.life = life_of(exp);
  e.warned = false;
  arm(e);
  if (!exp) return std::nullopt;
  return epoch_ms(*exp);
}

// An entry waits for the warning, then for the deadline; none without exp.
void Expiry::arm(Entry& e) {
  if (!e.life.exp) {
    due_remove(e);
  } else {
    if (e.due_at == kNotDue) {
      due_.push_back(&e);
      due_place(uint32_t(due_.size() - 1), &e);
    }
    due_up(e.due_at);
    due_down(e.due_at);
  }
  due_rearm();
}

// The timer ran: every entry due by now, earliest first.
void Expiry::fire_due() {
  int64_t now = w_.now_ms();
  while (!due_.empty() && due_.front()->due() <= now) {
    Entry& e = *due_.front();
    due_remove(e);  // first: fire() may arm it again or erase it
    fire(e);
  }
  due_rearm();
}

void Expiry::fire(Entry& e) {
  if (!e.life.exp) return;
  if (w_.now_ms() >= e.life.deadline) return expire_key(*e.key);
  if (!e.warned) {
    e.warned = true;
    // A copy: an emit never closes synchronously, but the list is ours to keep intact.
    std::vector<std::weak_ptr<Socket>> list = e.sockets;
    for (auto& weak : list)
      if (auto s = weak.lock(); s && s->connected()) warn(*s, e.life);
  }
  arm(e);
}

void Expiry::due_place(uint32_t i, Entry* e) {
  due_[i] = e;
  e->due_at = i;
}

void Expiry::due_up(size_t i) {
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (due_[parent]->due() <= due_[i]->due()) return;
    Entry* p = due_[parent];
    due_place(uint32_t(parent), due_[i]);
    due_place(uint32_t(i), p);
    i = parent;
  }
}

void Expiry::due_down(size_t i) {
  for (;;) {
    size_t least = i;
    for (size_t c = 2 * i + 1; c <= 2 * i + 2 && c < due_.size(); c++)
      if (due_[c]->due() < due_[least]->due()) least = c;
    if (least == i) return;
    Entry* p = due_[least];
    due_place(uint32_t(least), due_[i]);
    due_place(uint32_t(i), p);
    i = least;
  }
}

void Expiry::due_remove(Entry& e) {
  if (e.due_at == kNotDue) return;
  uint32_t i = e.due_at;
  e.due_at = kNotDue;
  Entry* last = due_.back();
  due_.pop_back();
  if (last == &e) return;
  due_place(i, last);
  due_up(i);
  due_down(last->due_at);
}

void Expiry::due_rearm() {
  if (due_.empty()) {
    timer_->cancel();
    return;
  }
  timer_->arm_in(static_cast<uint64_t>(std::max<int64_t>(0, due_.front()->due() - w_.now_ms())));
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
  erase(it);
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
