// ratelimit: the budget leases from Redis (the script: lease.h), and the
// tick that gives back leases that are over or idle near the limit.
#include <depth-realtime/redis.h>

#include <algorithm>

#include "lease.h"
#include "state.h"
#include "window.h"

namespace ratelimit {

int64_t lease_ttl(const RateConf& server, int64_t window) { return std::min<int64_t>(int64_t(server.lease_ms), window); }

namespace {

// ------------------------------------------------------------ leases

void lease_done(const std::weak_ptr<State>& weak, const std::string& key, int64_t bucket_ms, int64_t sent_at,
                int64_t ttl, int mode, std::map<int64_t, int64_t>& inflight, const dr::redis::Reply& r) {
  auto st = weak.lock();
  if (!st) return;
  auto it = st->users.find(key);
  if (it == st->users.end()) return;
  UserState& u = it->second;
  u.requesting = false;
  ratelimit::LeaseGrant grant;
  bool ok = ratelimit::parse_grant(r, grant);
  if (!ok && !st->redis_warned) {
    dr::logf(dr::LogLevel::Warn, "ratelimit: cannot lease event budgets from Redis (%s); limiting per worker meanwhile",
             r.error() ? r.str.c_str() : "unexpected reply");
    st->redis_warned = true;
  } else if (ok && st->redis_warned) {
    dr::log(dr::LogLevel::Notice, "ratelimit: event budgets are leased from Redis again");
    st->redis_warned = false;
  }
  if (u.bucket_ms != bucket_ms) {
    // A reload changed the window meanwhile: these buckets and this lease are gone.
  } else if (!ok) {
    u.failing = true;
    for (auto& [b, n] : inflight) u.unsent[b] += n;  // reported again with the next request
  } else {
    u.failing = false;
    for (auto& [b, n] : inflight) u.sent[b] += n;
    if (grant.fresh) u.share = 0;  // Redis kept nothing for this worker (it lost its data)
    u.share += grant.units;
    // Redis moved the lease's expiry on whenever it holds something for us;
    // the worker stops using it earlier than Redis drops it.
    if (u.share > 0) u.lease_until = sent_at + ttl;
    u.near = grant.left < std::max<int64_t>(int64_t(u.limit) / 4, 8);
    if (mode == kRenew) {
      u.last_grant = grant.units;
      const RateConf* server = conf_of(*st);
      const int64_t interval = int64_t(server ? server->sync_interval_ms : 100), mono = st->w->now_ms();
      u.denied_until = 0;
      // Nothing left but what other workers hold (maybe used, not reported
      // yet): the waiting events ask again shortly.
      if (grant.units == 0 && grant.held_by_others > 0 && !u.waiters.empty()) {
        const int64_t delay = std::max<int64_t>(5, interval / 10);
        u.retry_at = mono + delay;
        if (!u.retry_timer) {
          u.retry_timer = st->w->timeout([&st = *st, key] {
            auto it = st.users.find(key);
            if (it != st.users.end() && !it->second.waiters.empty()) request_lease(st, key, it->second, kRenew);
          });
        }
        u.retry_timer->arm_in(uint64_t(delay));
      } else if (grant.units == 0) {
        u.denied_until = mono + interval;
      }
    }
    for (size_t i = 0; i < grant.totals.size(); i++) {
      int64_t b = grant.first_bucket + int64_t(i);
      auto mine = u.sent.find(b);
      int64_t others = grant.totals[i] - (mine != u.sent.end() ? mine->second : 0);
      if (others > 0) u.others[b] = others;
      else u.others.erase(b);
    }
  }
  settle_waiters(*st, key, u);
  // The user's last socket here left while this was in flight: give it back now.
  if (!u.requesting && u.share > 0 && !st->present.count(key)) request_lease(*st, key, u, kReturn);
  // Near the limit a share taken earlier, far from it, would sit here while
  // the user's events come to another worker: it goes back (every event asks).
  if (!u.requesting && u.near && u.share > 0 && u.waiters.empty()) request_lease(*st, key, u, kReturn);
  ensure_timer(*st);
}

}  // namespace

// One EVAL (lease.h): report this worker's new events, and keep, renew or
// give back its share. One request per user at a time.
void request_lease(State& st, const std::string& key, UserState& u, int mode) {
  if (u.requesting || !dr::redis::ready() || !u.bucket_ms || !u.window_ms) return;
  const RateConf* server = conf_of(st);
  const int64_t now = wall_ms(), mono = st.w->now_ms();
  if (mode == kRenew && mono < u.retry_at) return;  // the tick asks then
  const int64_t ttl = lease_ttl(server ? *server : RateConf(), u.window_ms);
  prune(u, now, u.window_ms, u.bucket_ms);
  if (mode == kReturn || mono >= u.lease_until) u.share = 0;
  ratelimit::LeaseRequest req;
  req.id = st.lease_id;
  req.budget = key;
  req.now_ms = now;
  req.window_ms = u.window_ms;
  req.bucket_ms = u.bucket_ms;
  req.limit = int64_t(u.limit);
  req.want = mode != kRenew ? 0 : u.waiters.empty() ? int64_t(u.limit) : int64_t(u.waiters.size());
  req.keep = u.share;
  req.ttl_ms = ttl;
  req.mine_exact = int64_t(u.local.size());
  req.report = std::move(u.unsent);
  u.unsent.clear();
  req.mine = u.sent;
  for (auto& [b, n] : req.report) req.mine[b] += n;
  u.requesting = true;
  u.request_sent = mono;
  std::vector<std::string> cmd = ratelimit::lease_command(req);  // before the report moves into the callback
  dr::redis::command(std::move(cmd), [weak = std::weak_ptr<State>(g_state), key, bucket = u.bucket_ms, mono, ttl, mode,
                                      inflight = std::move(req.report)](dr::redis::Reply r) mutable {
    lease_done(weak, key, bucket, mono, ttl, mode, inflight, r);
  });
}

// -------------------------------------------------------------------- tick

namespace {

// Runs every sync interval while users have counts or leases here, or
// CONNECTs are pending; an idle worker has no timer armed. It visits only
// those, never every connected socket. A lease over (its time is up) or kept
// while Redis failed goes back with the events it covered.
void tick(State& st) {
  const int64_t now = wall_ms(), mono = st.w->now_ms();
  const RateConf* server = conf_of(st);
  const int64_t interval = int64_t(server ? server->sync_interval_ms : 100);
  // CONNECTs that a later hook refused (or whose client left) never connect.
  std::vector<const dr::Socket*> gone;
  for (const auto& [key, u] : st.unconnected) {
    if (!st.tracked.count(key) || u.socket.expired() || now - u.since > kPendingConnectMs) gone.push_back(key);
  }
  for (const dr::Socket* key : gone) {
    release_socket(st, key);
    st.unconnected.erase(key);
  }
  for (auto it = st.users.begin(); it != st.users.end();) {
    UserState& u = it->second;
    if (u.window_ms) prune(u, now, u.window_ms, u.bucket_ms);
    if (!u.requesting && dr::redis::ready()) {
      bool over = mono >= u.lease_until;
      // Near the limit a share unused for an interval goes back: the user's
      // events may be on another worker now.
      bool idle = u.near && u.share > 0 && mono - u.last_use >= interval;
      if ((over || idle) && (u.share > 0 || !u.unsent.empty())) request_lease(st, it->first, u, kReturn);
      else if (u.failing) request_lease(st, it->first, u, kReport);
      else if (!u.waiters.empty() && mono >= u.retry_at) request_lease(st, it->first, u, kRenew);
    }
    bool idle = !u.requesting && u.waiters.empty() && u.share == 0 && u.local.empty() && u.unsent.empty() &&
                u.others.empty();
    it = idle ? st.users.erase(it) : std::next(it);
  }
}

}  // namespace

void ensure_timer(State& st) {
  if (!st.timer || st.timer->armed()) return;
  const RateConf* server = conf_of(st);
  st.timer->arm_in(server ? server->sync_interval_ms : 100);  // the interval of the configuration in force
}

void on_timer(State& st) {
  try {
    tick(st);
  } catch (const std::exception& e) {
    dr::logf(dr::LogLevel::Error, "ratelimit: %s", e.what());
  }
  if (!st.users.empty() || !st.unconnected.empty()) ensure_timer(st);
}

}  // namespace ratelimit
