// ratelimit: a user's sliding window, as this worker knows it: its own
// events at their exact times, the others' by bucket (window / 10).
#pragma once

#include <cstdint>

#include "state.h"

namespace ratelimit {

int64_t floor_div(int64_t a, int64_t b);
// The oldest bucket that still counts: buckets count until their end leaves the window.
int64_t first_bucket(int64_t now, int64_t window, int64_t bucket);
// Drops what left the window; a new bucket width (reload) starts the buckets over.
void prune(UserState& u, int64_t now, int64_t window, int64_t bucket);
// The other workers' and nodes' events in the window.
int64_t others_count(const UserState& u);
// Milliseconds until `k` of the counted events have left the window: this
// worker's at their exact time, the others' at the end of their bucket.
int64_t retry_after(const UserState& u, int64_t now, int64_t window, int64_t bucket, int64_t k);

}  // namespace ratelimit
