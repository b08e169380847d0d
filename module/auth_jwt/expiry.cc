// Token lifetimes on live connections (see expiry.h).
#include "expiry.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <string_view>
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

namespace {

const std::string* user_of(Socket& s) { return s.get("userId"); }

bool same_user(Socket& a, Socket& b) {
  const std::string* x = user_of(a);
  const std::string* y = user_of(b);
  return (x ? std::string_view(*x) : std::string_view()) == (y ? std::string_view(*y) : std::string_view());
}

enum class Match { Yes, No, Dead };

// Is this the lifetime of `s`: `s` is in it, or its first live socket has the
// client and the user of `s` (all of its sockets do)? Dead: none is alive.
Match match(const std::vector<std::weak_ptr<Socket>>& sockets, Socket& s) {
  const std::weak_ptr<Socket> self = s.weak();
  for (const auto& w : sockets) {
    if (!w.owner_before(self) && !self.owner_before(w)) return Match::Yes;
    if (auto p = w.lock()) return p->client_id() == s.client_id() && same_user(*p, s) ? Match::Yes : Match::No;
  }
  return Match::Dead;
}

}  // namespace

uint32_t Expiry::key_of(Socket& s) {
  const std::string* user = user_of(s);
  size_t h = std::hash<std::string_view>()(s.client_id());
  h ^= std::hash<std::string_view>()(user ? std::string_view(*user) : std::string_view()) + 0x9e3779b97f4a7c15ULL +
       (h << 6) + (h >> 2);
  return static_cast<uint32_t>(h ^ (uint64_t(h) >> 32));
}

// The lifetime of `s`'s user on `s`'s connection. Others under the same key
// are another user's or connection's; one whose sockets all went without a
// disconnect is dropped on the way.
Expiry::Entries::iterator Expiry::find(Socket& s) {
  auto [it, end] = entries_.equal_range(key_of(s));
  while (it != end) {
    switch (match(it->second.sockets, s)) {
      case Match::Yes:
        return it;
      case Match::No:
        ++it;
        break;
      case Match::Dead:
        erase(it++);
        break;
    }
  }
  return entries_.end();
}

Expiry::Entries::iterator Expiry::find(Entry& e) {
  auto [it, end] = entries_.equal_range(e.key);
  for (; it != end; ++it)
    if (&it->second == &e) return it;
  return entries_.end();
}

Expiry::Entry& Expiry::find_or_add(Socket& s, bool& fresh) {
  auto it = find(s);
  fresh = it == entries_.end();
  if (fresh) {
    uint32_t key = key_of(s);
    it = entries_.emplace(key, Entry{});
    it->second.key = key;
    it->second.sockets.push_back(s.weak());
  }
  return it->second;
}

// The one conversion from the wall clock (exp) to the facility's clock.
Expiry::Life Expiry::life_of(std::optional<double> exp) const {
  Life life;
  if (!exp) return life;
  life.exp_ms = epoch_ms(*exp);
  Settings st = settings_();
  int64_t left = life.exp_ms - wall_ms();  // may be negative: then due at once
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

  bool fresh;
  Entry& e = find_or_add(s, fresh);
  if (!fresh) e.sockets.push_back(s.weak());
  // Another namespace of the same user with a token of its own: the later
  // lifetime holds for all (the client holds a valid token until then).
  bool later = p.life.has_exp() && e.life.has_exp() && p.life.deadline > e.life.deadline;
  if (fresh || !p.life.has_exp() || later) {
    e.life = p.life;
  } else if (e.warned()) {
    warn(s, e.life);  // the others were told already
  }
  arm(e);
}

void Expiry::disconnected(Socket& s) {
  pending_.erase(&s);
  auto it = find(s);
  if (it == entries_.end()) return;
  auto& list = it->second.sockets;
  const std::weak_ptr<Socket> self = s.weak();
  std::erase_if(list, [&self](const std::weak_ptr<Socket>& w) {
    return w.expired() || (!w.owner_before(self) && !self.owner_before(w));
  });
  if (list.empty()) erase(it);
}

void Expiry::erase(Entries::iterator it) {
  due_remove(it->second);
  entries_.erase(it);
  due_rearm();
}

bool Expiry::expired(Socket& s) {
  if (entries_.empty()) return false;
  auto it = find(s);
  return it != entries_.end() && it->second.life.has_exp() && w_.now_ms() >= it->second.life.deadline;
}

void Expiry::expire(Socket& s) {
  if (auto it = find(s); it != entries_.end()) expire_entry(it);
}

std::optional<int64_t> Expiry::refreshed(Socket& s, std::optional<double> exp) {
  bool fresh;
  Entry& e = find_or_add(s, fresh);
  e.life = life_of(exp);
  arm(e);
  if (!exp) return std::nullopt;
  return epoch_ms(*exp);
}

// An entry waits for the warning, then for the deadline; none without exp.
void Expiry::arm(Entry& e) {
  if (!e.life.has_exp()) {
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
  if (!e.life.has_exp()) return;
  if (w_.now_ms() >= e.life.deadline) {
    if (auto it = find(e); it != entries_.end()) expire_entry(it);
    return;
  }
  if (!e.warned()) {
    e.life.warn_at = kWarned;
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
  json_object_set_new(body.get(), "expiresAt", json_integer(json_int_t(life.exp_ms)));
  s.emit("auth:expiring", Payload::of(std::move(body)));
}

void Expiry::expire_entry(Entries::iterator it) {
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
