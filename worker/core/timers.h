// One timer facility per loop: every deadline of a worker (heartbeats, HTTP
// and upgrade timeouts, ...) sits in one binary heap, and one uv_timer is
// armed for the earliest. Arming, re-arming and cancelling cost O(log n); an
// idle connection costs nothing until its own deadline, where a tick would
// visit every connection every time. The clock is injectable: tests of
// timeouts advance it and call run_due() instead of sleeping.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/uv_util.h"

namespace dr {

class Timers;

// A deadline owned by whoever embeds it (no allocation); cancelled when it
// goes. The callback runs once per arm, from the loop, never inside arm().
class Timer {
 public:
  using Callback = void (*)(void* arg);
  Timer(Timers& timers, Callback cb, void* arg) : timers_(timers), cb_(cb), arg_(arg) {}
  ~Timer() { cancel(); }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void arm_at(int64_t deadline);  // ms on the facility's clock; an armed timer moves
  void arm_in(int64_t ms);
  void cancel();
  bool armed() const { return index_ != kNotArmed; }
  int64_t deadline() const { return deadline_; }
  Timers& timers() const { return timers_; }

 private:
  friend class Timers;
  static constexpr size_t kNotArmed = size_t(-1);
  Timers& timers_;
  Callback cb_;
  void* arg_;
  int64_t deadline_ = 0;
  uint64_t order_ = 0;  // arm order: equal deadlines run first armed, first run
  size_t index_ = kNotArmed;
};

class Timers {
 public:
  using Clock = std::function<int64_t()>;
  // Driven by hand with an injected clock (tests): call run_due().
  explicit Timers(Clock clock);
  // On a loop: the loop's monotonic clock, one uv_timer for the earliest deadline.
  explicit Timers(uv_loop_t* loop);
  Timers(const Timers&) = delete;
  Timers& operator=(const Timers&) = delete;

  int64_t now() const { return clock_(); }
  // Runs the timers due at now(), earliest first; returns how many ran.
  size_t run_due();
  size_t size() const { return heap_.size(); }
  // The earliest deadline (0 when none is armed).
  int64_t next_deadline() const { return heap_.empty() ? 0 : heap_.front()->deadline_; }

 private:
  friend class Timer;
  bool before(const Timer* a, const Timer* b) const {
    return a->deadline_ != b->deadline_ ? a->deadline_ < b->deadline_ : a->order_ < b->order_;
  }
  void place(size_t i, Timer* t) {
    heap_[i] = t;
    t->index_ = i;
  }
  void sift_up(size_t i);
  void sift_down(size_t i);
  void insert(Timer& t);
  void update(Timer& t);
  void remove(Timer& t);
  void rearm_loop_timer();

  Clock clock_;
  std::vector<Timer*> heap_;
  uint64_t next_order_ = 0;
  uv_loop_t* loop_ = nullptr;
  UvHandle<uv_timer_t> uv_timer_;
  int64_t loop_timer_at_ = 0;  // the deadline the uv_timer is armed for (0: not armed)
  bool running_ = false;       // inside run_due(): it re-arms the uv_timer once at its end
};

}  // namespace dr
