// ratelimit: the event limit, a middleware of the Limit phase. Admitted from
// the worker's lease while it lasts; otherwise the event waits (deferred) for a
// lease, bounded in number and time, or is refused with RATE_LIMITED.
#include <depth-realtime/redis.h>

#include <algorithm>

#include "state.h"
#include "window.h"

namespace ratelimit {
namespace {

// Whose budget an event uses: the user, or the IP of a socket without one.
std::string subject_of(const State& st, const dr::Socket& s) {
  const std::string* user = s.get("userId");
  if (user && !user->empty()) return "u:" + *user;
  const RateConf* server = conf_of(st);
  return "ip:" + client_ip(s, server ? *server : RateConf());
}

}  // namespace

std::string budget_of(const State& st, const RateConf& conf, const dr::Socket& s) {
  return conf.zone + '|' + std::to_string(conf.window_ms) + '|' + subject_of(st, s);
}

namespace {

void refuse_waiters(State& st, UserState& u, int64_t retry_ms);

// {code, message, retryAfterMs}: to the ack when the client asked for one,
// else the `error` event.
void send_rate_limited(dr::Socket& s, const dr::Event& ev, const std::string& message, int64_t retry_ms) {
  dr::Json err(json_object());
  json_object_set_new(err.get(), "code", json_string("RATE_LIMITED"));
  json_object_set_new(err.get(), "message", json_stringn(message.data(), message.size()));
  json_object_set_new(err.get(), "retryAfterMs", json_integer(json_int_t(retry_ms)));
  dr::send_error_object(s, ev, std::move(err));
}

// The event is refused: RATE_LIMITED, the metric, and past `limit` refusals
// within one window the socket goes (persistent abuse). Refusals because no
// lease came in time (Redis slow) are not the client's doing: not counted.
void refuse(State& st, dr::Socket& s, const dr::Event& ev, const RateConf& conf, int64_t retry_ms,
            bool abuse = true) {
  const int64_t now = wall_ms(), window = conf.window();
  st.w->metric_add(kMetric, dr::metric_label("kind", "event"));
  send_rate_limited(s, ev, conf.message, retry_ms);
  if (!abuse) return;
  auto& refused = st.refusals[socket_key(s)];
  while (!refused.empty() && refused.front() <= now - window) refused.pop_front();
  refused.push_back(now);
  if (refused.size() > conf.limit) {
    const std::string* user = s.get("userId");
    dr::logf(dr::LogLevel::Info, "ratelimit: %s socket %s of user %s disconnected: %zu events refused within %lld ms",
             s.nsp().c_str(), s.id().c_str(), user ? user->c_str() : "-", refused.size(), (long long)window);
    st.refusals.erase(socket_key(s));
    s.disconnect();
  }
}

enum class Verdict { Admit, Refuse, Wait };

// Admits from the lease while it lasts, else: Redis away -> this worker's
// own count and the cluster's last known; Redis said nothing is left a
// moment ago -> refused; otherwise the event waits for a lease.
Verdict decide(State& st, const std::string& key, UserState& u, const RateConf& conf) {
  const int64_t now = wall_ms(), mono = st.w->now_ms();
  const int64_t limit = int64_t(conf.limit);
  prune(u, now, conf.window(), conf.bucket());
  u.limit = conf.limit;
  u.window_ms = conf.window();
  auto admit = [&] {
    u.local.push_back(now);
    if (dr::redis::configured()) u.unsent[floor_div(now, u.bucket_ms)]++;
    ensure_timer(st);
    return Verdict::Admit;
  };
  if (int64_t(u.local.size()) >= limit) return Verdict::Refuse;  // this worker alone fills the window
  if (u.share > 0 && mono >= u.lease_until) u.share = 0;          // the lease is over (the tick gives it back)
  if (u.share > 0) {
    u.share--;
    u.last_use = mono;
    admit();
    // Ask for more before the share runs out, or the lease ends. Not for
    // small shares (near the limit): a share asked for ahead would sit here
    // while the user's next event comes to another worker.
    const RateConf* server = conf_of(st);
    int64_t ttl = lease_ttl(server ? *server : conf, u.window_ms);
    if (u.last_grant >= 4 && (u.share * 2 < u.last_grant || u.lease_until - mono < ttl / 4))
      request_lease(st, key, u, kRenew);
    // Near the limit Redis hears of a used share at once: another worker's
    // event may be waiting for what it thinks this one still holds.
    else if (u.near && u.share == 0)
      request_lease(st, key, u, kReport);
    return Verdict::Admit;
  }
  if (!dr::redis::configured() || !dr::redis::ready() || u.failing)
    return int64_t(u.local.size()) + others_count(u) < limit ? admit() : Verdict::Refuse;
  if (mono < u.denied_until) return Verdict::Refuse;
  return Verdict::Wait;
}

int64_t retry_of(const UserState& u, const RateConf& conf) {
  int64_t used = int64_t(u.local.size()) + others_count(u);
  return retry_after(u, wall_ms(), conf.window(), conf.bucket(), std::max<int64_t>(1, used - int64_t(conf.limit) + 1));
}


}  // namespace

bool on_event(State& st, dr::Socket& s, dr::Event& ev) {
  const RateConf* conf = conf_of(st, s.nsp());
  if (!conf || !conf->enabled) return true;
  const std::string key = budget_of(st, *conf, s);
  UserState& u = st.users[key];
  switch (decide(st, key, u, *conf)) {
    case Verdict::Admit:
      return true;
    case Verdict::Refuse:
      refuse(st, s, ev, *conf, retry_of(u, *conf));
      return false;
    case Verdict::Wait:
      break;
  }
  // Waiting is bounded: in number, and in time (a request slower than
  // ratelimit_lease_wait gets the events refused until it is answered).
  const RateConf* server = conf_of(st);
  const int64_t wait_ms = int64_t(server ? server->lease_wait_ms : 250);
  if (u.waiters.size() >= kMaxWaiters || (u.requesting && st.w->now_ms() - u.request_sent >= wait_ms)) {
    refuse(st, s, ev, *conf, wait_ms, false);
    return false;
  }
  dr::Event reply_to;
  reply_to.name = ev.name;
  reply_to.ack_id = ev.ack_id;
  u.waiters.push_back(Waiter{s.defer(ev), s.weak(), std::move(reply_to)});
  if (!u.wait_timer) {
    u.wait_timer = st.w->timeout([&st, key] {
      auto it = st.users.find(key);
      if (it == st.users.end()) return;
      const RateConf* server = conf_of(st);
      refuse_waiters(st, it->second, int64_t(server ? server->lease_wait_ms : 250));
    });
  }
  if (!u.wait_timer->armed()) u.wait_timer->arm_in(uint64_t(wait_ms));
  request_lease(st, key, u, kRenew);
  return false;
}

// Decides the waiting events again (a lease came, or Redis failed). A socket
// gone meanwhile drops its event. What the resumed events trigger (handlers,
// the next queued events, a disconnect) may add waiters: they are new ones.
void settle_waiters(State& st, const std::string& key, UserState& u) {
  if (u.waiters.empty()) return;
  std::vector<Waiter> waiting = std::move(u.waiters);
  u.waiters.clear();
  for (Waiter& w : waiting) {
    auto s = w.socket.lock();
    const RateConf* conf = s ? conf_of(st, s->nsp()) : nullptr;
    if (!s || !s->connected() || !conf || !conf->enabled) continue;  // its Resume goes: the event with it
    switch (decide(st, key, u, *conf)) {
      case Verdict::Admit:
        w.resume(true);
        break;
      case Verdict::Refuse:
        refuse(st, *s, w.reply_to, *conf, retry_of(u, *conf));
        w.resume(false);
        break;
      case Verdict::Wait:
        u.waiters.push_back(std::move(w));
        break;
    }
  }
  // The bound runs from the first waiter's arrival: a later one may be refused sooner.
  if (u.waiters.empty()) {
    if (u.wait_timer) u.wait_timer->cancel();
  } else {
    request_lease(st, key, u, kRenew);
    const RateConf* server = conf_of(st);
    if (u.wait_timer && !u.wait_timer->armed()) u.wait_timer->arm_in(server ? server->lease_wait_ms : 250);
  }
}

namespace {

// Past ratelimit_lease_wait: refused rather than kept waiting.
void refuse_waiters(State& st, UserState& u, int64_t retry_ms) {
  std::vector<Waiter> waiting = std::move(u.waiters);
  u.waiters.clear();
  for (Waiter& w : waiting) {
    auto s = w.socket.lock();
    const RateConf* conf = s ? conf_of(st, s->nsp()) : nullptr;
    if (!s || !s->connected() || !conf) continue;
    refuse(st, *s, w.reply_to, *conf, retry_ms, false);
    w.resume(false);
  }
}

}  // namespace
}  // namespace ratelimit
