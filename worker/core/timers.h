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
#include <list>
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

// A timer that owns its callback, for code that keeps a function rather than
// embedding a Timer in an object (cluster requests, modules). It may be
// re-armed or destroyed from its own callback; a callback's exception is
// logged, never let out into libuv.
class CallbackTimer {
 public:
  CallbackTimer(Timers& timers, std::function<void()> fn) : fn_(std::move(fn)), timer_(timers, fire, this) {}
  ~CallbackTimer() {
    if (gone_) *gone_ = true;
  }
  CallbackTimer(const CallbackTimer&) = delete;
  CallbackTimer& operator=(const CallbackTimer&) = delete;

  void arm_at(int64_t deadline) { timer_.arm_at(deadline); }
  void arm_in(int64_t ms) { timer_.arm_in(ms); }
  void cancel() { timer_.cancel(); }
  bool armed() const { return timer_.armed(); }
  int64_t deadline() const { return timer_.deadline(); }

 private:
  static void fire(void* self);
  std::function<void()> fn_;
  bool* gone_ = nullptr;  // set while the callback runs: tells it the owner went
  Timer timer_;
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

  // Runs `fn` from the loop once the current event is handled, never inside
  // the call that posts it (nginx's posted events): a callback that must not
  // run inside the operation that asked for it, a close found mid-loop.
  void post(std::function<void()> fn);
  // Runs `fn` once, `ms` from now; the facility owns it (no cancelling: for
  // deadlines whose callback checks whether it still matters).
  void after(int64_t ms, std::function<void()> fn);

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

  void run_posted();

  struct OneShot {
    OneShot(Timers& t, std::function<void()> f) : fn(std::move(f)), timer(t, fire, this) {}
    static void fire(void* self);
    std::function<void()> fn;
    Timer timer;
    std::list<OneShot>::iterator self;
  };
  Clock clock_;
  std::vector<Timer*> heap_;
  std::vector<std::function<void()>> posted_;
  Timer posted_timer_{*this, [](void* t) { static_cast<Timers*>(t)->run_posted(); }, this};
  std::list<OneShot> one_shots_;
  uint64_t next_order_ = 0;
  uv_loop_t* loop_ = nullptr;
  UvHandle<uv_timer_t> uv_timer_;
  int64_t loop_timer_at_ = 0;  // the deadline the uv_timer is armed for (0: not armed)
  bool running_ = false;       // inside run_due(): it re-arms the uv_timer once at its end
};

}  // namespace dr
