#include "window.h"

#include <algorithm>
#include <climits>

namespace ratelimit {

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

int64_t first_bucket(int64_t now, int64_t window, int64_t bucket) { return floor_div(now - window, bucket); }

void prune(UserState& u, int64_t now, int64_t window, int64_t bucket) {
  while (!u.local.empty() && u.local.front() <= now - window) u.local.pop_front();
  if (u.bucket_ms != bucket) {
    u.bucket_ms = bucket;
    u.unsent.clear();
    u.sent.clear();
    u.others.clear();
    u.share = 0;  // the lease was in the keys of the old width
    u.lease_until = 0;
  }
  int64_t first = first_bucket(now, window, bucket);
  for (auto* m : {&u.unsent, &u.sent}) m->erase(m->begin(), m->lower_bound(first));
  u.others.erase(u.others.begin(), u.others.lower_bound(first));
}

int64_t others_count(const UserState& u) {
  int64_t n = 0;
  for (auto& [b, c] : u.others) n += c;
  return n;
}

int64_t retry_after(const UserState& u, int64_t now, int64_t window, int64_t bucket, int64_t k) {
  auto li = u.local.begin();
  auto oi = u.others.begin();
  int64_t left = oi != u.others.end() ? oi->second : 0;
  int64_t at = now + window;
  while (k > 0) {
    while (oi != u.others.end() && left <= 0) {
      if (++oi != u.others.end()) left = oi->second;
    }
    int64_t lt = li != u.local.end() ? *li + window : INT64_MAX;
    int64_t ot = oi != u.others.end() ? (oi->first + 1) * bucket + window : INT64_MAX;
    if (lt == INT64_MAX && ot == INT64_MAX) break;
    if (lt <= ot) {
      at = lt;
      ++li;
      --k;
    } else {
      int64_t take = std::min(k, left);
      at = ot;
      k -= take;
      left -= take;
    }
  }
  return std::clamp<int64_t>(at - now, 1, window);
}

}  // namespace ratelimit
